"""Convert bottom-up-attention (BUTD) TSV region features to the precomputed layout, keeping boxes.

The BUTD Faster R-CNN release (Anderson et al., CVPR 2018) writes one tab-separated row per image:
``image_id, image_w, image_h, num_boxes, boxes, features``, where ``boxes`` (``num_boxes x 4`` pixel
``x1, y1, x2, y2``) and ``features`` (``num_boxes x D``) are base64-encoded float32 bytes. SCAN's
converter keeps only the features; this one also writes the boxes and image sizes GSMN needs:

``{split}_ims.npy``
    float32 ``(N, R, D)`` region features, written through ``np.lib.format.open_memmap`` one image
    at a time (the full array is never held in memory).
``{split}_ims_bbx.npy``
    float32 ``(N, R, 4)`` pixel corner boxes.
``{split}_ims_size.npy``
    float32 ``(N, 2)`` ``(width, height)``: a plain array, not GSMN's pickled dicts.
``{split}_ims_nboxes.npy``
    int64 ``(N,)`` real boxes per image; rows past it are zero padding.
``{split}_ids.txt``
    one image id per line, in row order.

Images are written in the order of ``--ids`` (e.g. a Karpathy split's image ids, one per line) when
given, else in TSV order. Every output is written under a temporary name and renamed when complete,
so an interrupted conversion leaves no half-written file under a final name.

Command::

    kgitm convert-butd feats_0.tsv feats_1.tsv --split test --out data/f30k_precomp \
        [--ids test_ids.txt] [--regions 36]
"""

from __future__ import annotations

import base64
import csv
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

FIELDNAMES = ("image_id", "image_w", "image_h", "num_boxes", "boxes", "features")


class ButdFormatError(ValueError):
    """A BUTD TSV row, or the ids file, does not have the expected content."""


@dataclass
class ButdRecord:
    """One decoded TSV row.

    Shapes:
        boxes: ``(n, 4)`` float32 pixel corners; features: ``(n, D)`` float32.
    """

    image_id: str
    image_w: float
    image_h: float
    boxes: np.ndarray
    features: np.ndarray


def _raise_field_size_limit() -> None:
    limit = sys.maxsize
    while True:  # the C long of some platforms is smaller than sys.maxsize
        try:
            csv.field_size_limit(limit)
            return
        except OverflowError:
            limit //= 10


def _decode(b64: str, rows: int, *, what: str, where: str) -> np.ndarray:
    raw = base64.b64decode(b64)
    if rows == 0:
        return np.zeros((0, 4 if what == "boxes" else 0), dtype=np.float32)
    if what == "boxes" and len(raw) == rows * 4 * 8:  # some re-exports wrote float64 boxes
        return np.frombuffer(raw, dtype=np.float64).reshape(rows, 4).astype(np.float32)
    if len(raw) % (rows * 4):
        raise ButdFormatError(
            f"{where}: {what} field has {len(raw)} bytes, not a multiple of num_boxes ({rows}) x 4 "
            "(float32); is this a bottom-up-attention TSV?"
        )
    arr = np.frombuffer(raw, dtype=np.float32).reshape(rows, -1)
    if what == "boxes" and arr.shape[1] != 4:
        raise ButdFormatError(f"{where}: boxes field decodes to {arr.shape[1]} values per box, expected 4")
    return arr


def iter_butd_tsv(paths: Sequence[str | os.PathLike]) -> Iterator[ButdRecord]:
    """Decode the rows of one or more BUTD TSV files, one image at a time."""
    _raise_field_size_limit()
    for path in paths:
        with open(path, newline="") as f:
            reader = csv.DictReader(f, delimiter="\t", fieldnames=FIELDNAMES)
            for row in reader:
                where = f"{path}, line {reader.line_num}"
                if row.get("features") is None or None in row:
                    raise ButdFormatError(f"{where}: expected the 6 tab-separated fields {', '.join(FIELDNAMES)}")
                try:
                    n = int(row["num_boxes"])
                    w, h = float(row["image_w"]), float(row["image_h"])
                except ValueError as e:
                    raise ButdFormatError(f"{where}: bad number ({e})") from None
                yield ButdRecord(
                    image_id=row["image_id"],
                    image_w=w,
                    image_h=h,
                    boxes=_decode(row["boxes"], n, what="boxes", where=where),
                    features=_decode(row["features"], n, what="features", where=where),
                )


def _scan_ids(paths: Sequence[str | os.PathLike]) -> list[str]:
    """Image ids of all rows, reading only the first field (no base64 decoding)."""
    ids: list[str] = []
    for path in paths:
        with open(path, "rb") as f:
            for line in f:
                if line.strip():
                    ids.append(line.split(b"\t", 1)[0].decode())
    return ids


def read_ids_file(path: str | os.PathLike) -> list[str]:
    """Image ids, one per line (blank lines ignored)."""
    with open(path) as f:
        return [line.strip() for line in f if line.strip()]


@dataclass
class ConvertSummary:
    """What :func:`convert_butd_tsv` wrote."""

    out_dir: Path
    split: str
    num_images: int
    regions: int
    feature_dim: int
    padded_images: int
    skipped_rows: int


def _tmp(path: Path) -> Path:
    return path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")


def convert_butd_tsv(
    tsv_paths: Sequence[str | os.PathLike],
    *,
    split: str,
    out_dir: str | os.PathLike,
    ids: Sequence[str] | None = None,
    regions: int = 36,
    truncate: bool = False,
    progress: bool = True,
) -> ConvertSummary:
    """Convert BUTD TSV files to the precomputed layout (see the module docstring).

    Args:
        tsv_paths: the TSV files (rows of all files are read in order).
        split: split name used in the output file names.
        out_dir: output folder (created).
        ids: image ids giving the output order and selection; ``None`` keeps every row in TSV order.
            Rows whose id is not listed are skipped; a listed id missing from the TSV is an error.
        regions: ``R``, regions per image; images with fewer boxes are zero-padded. Default 36.
        truncate: keep the first ``R`` boxes of images with more (default False: such an image is an
            error, because it usually means ``--regions`` is wrong).
        progress: show a tqdm progress bar.

    Shapes:
        Writes ``(N, R, D)`` features, ``(N, R, 4)`` boxes, ``(N, 2)`` sizes, ``(N,)`` box counts.
    """
    tsv_paths = [Path(p) for p in tsv_paths]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    all_ids = _scan_ids(tsv_paths)
    seen: dict[str, int] = {}
    for i, image_id in enumerate(all_ids):
        if image_id in seen:
            raise ButdFormatError(f"image id {image_id!r} appears twice in the TSV input (rows {seen[image_id]} and {i})")
        seen[image_id] = i
    if ids is None:
        order = list(all_ids)
    else:
        order = [str(x) for x in ids]
        if len(set(order)) != len(order):
            raise ButdFormatError("the ids list contains duplicates")
        missing = [x for x in order if x not in seen]
        if missing:
            raise ButdFormatError(
                f"{len(missing)} of {len(order)} requested image ids are not in the TSV input "
                f"(first: {missing[0]!r}); check the ids file against {', '.join(map(str, tsv_paths))}"
            )
    if not order:
        raise ButdFormatError("no images to convert (empty TSV input or ids list)")
    slot = {image_id: k for k, image_id in enumerate(order)}
    n = len(order)

    finals = {
        "ims": out / f"{split}_ims.npy",
        "bbx": out / f"{split}_ims_bbx.npy",
        "size": out / f"{split}_ims_size.npy",
        "nboxes": out / f"{split}_ims_nboxes.npy",
        "ids": out / f"{split}_ids.txt",
    }
    tmps = {k: _tmp(p) for k, p in finals.items()}
    feats = None
    bbx = np.zeros((n, regions, 4), dtype=np.float32)
    sizes = np.zeros((n, 2), dtype=np.float32)
    nboxes = np.zeros(n, dtype=np.int64)
    written = np.zeros(n, dtype=bool)
    padded = skipped = 0
    try:
        for rec in tqdm(iter_butd_tsv(tsv_paths), total=len(all_ids), unit="img", disable=not progress, desc=split):
            k = slot.get(rec.image_id)
            if k is None:
                skipped += 1
                continue
            nb = rec.boxes.shape[0]
            if nb > regions:
                if not truncate:
                    raise ButdFormatError(
                        f"image {rec.image_id} has {nb} boxes, more than --regions {regions}; "
                        "raise --regions (images with fewer boxes are zero-padded) or pass --truncate"
                    )
                nb = regions
            if nb > 0:  # a new memmap is zero-filled, so padding needs no writes
                if feats is None:
                    feats = np.lib.format.open_memmap(
                        tmps["ims"], mode="w+", dtype=np.float32, shape=(n, regions, rec.features.shape[1])
                    )
                elif rec.features.shape[1] != feats.shape[2]:
                    raise ButdFormatError(
                        f"image {rec.image_id}: feature dimension {rec.features.shape[1]} differs from {feats.shape[2]}"
                    )
                feats[k, :nb] = rec.features[:nb]
            bbx[k, :nb] = rec.boxes[:nb]
            sizes[k] = (rec.image_w, rec.image_h)
            nboxes[k] = nb
            written[k] = True
            padded += int(nb < regions)
        if feats is None:
            raise ButdFormatError("no image in the selection has any box; cannot infer the feature dimension")
        assert written.all()
        feats.flush()
        del feats
        np.save(tmps["bbx"], bbx)
        np.save(tmps["size"], sizes)
        np.save(tmps["nboxes"], nboxes)
        tmps["ids"].write_text("".join(f"{x}\n" for x in order))
        dim = int(np.load(tmps["ims"], mmap_mode="r").shape[2])
        for key in ("ims", "bbx", "size", "nboxes", "ids"):  # ids last: its presence marks completion
            os.replace(tmps[key], finals[key])
    finally:
        for p in tmps.values():
            if p.exists():
                p.unlink()
    return ConvertSummary(out, split, n, regions, dim, padded, skipped)
