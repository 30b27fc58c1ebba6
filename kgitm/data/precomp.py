"""Reader for the precomputed-feature layout every matcher in the field consumes (SCAN's "precomp").

Per split, under one folder:

- ``{split}_ims.npy``       float ``(N, R, D)`` region features, memory-mapped, never fully loaded;
  or ``(N, D)``, one vector per image (VSE++'s precomp release: 4096-d VGG/ResNet features), read as
  ``R = 1`` region;
- ``{split}_caps.txt``      ``k * N`` captions, those of image ``i`` on lines ``k*i .. k*i+k-1``;
- ``{split}_ids.txt``       optional, ``N`` image ids;
- ``{split}_ims_bbx.npy``   optional, ``(N, R, 4)`` pixel corners ``x1, y1, x2, y2``;
- ``{split}_ims_size.npy``  optional, ``(N, 2)`` plain float array ``(width, height)``
  (GSMN's pickled object array is refused; convert it once with ``kgitm convert-gsmn-sizes``).

See ``docs/data.md``. Everything is validated when the split is opened; each problem raises
:class:`DataFormatError` with a one-line message naming the file, what was expected and what was found.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from kgitm.core import CAPTIONS_PER_IMAGE
from kgitm.core.io import DataFormatError, atomic_write_text, cache_dir, file_fingerprint, read_lines


def _load_array(path: Path, *, mmap: bool) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except ValueError as e:
        if "pickle" in str(e).lower():
            raise DataFormatError(
                f"{path}: holds Python objects (a pickle); expected a plain numeric array. "
                "For GSMN's image-size file run `kgitm convert-gsmn-sizes FILE --out FILE --allow-pickle` once."
            ) from None
        raise DataFormatError(f"{path}: not a readable .npy array ({e})") from None
    except OSError as e:
        raise DataFormatError(f"{path}: cannot read ({e})") from None


def _load_features(path: Path) -> np.ndarray:
    """The memory-mapped features, ``(N, R, D)``; a ``(N, D)`` file (one vector per image) is viewed as
    ``(N, 1, D)`` (a view of the same map, nothing is read)."""
    images = _load_array(path, mmap=True)
    return images[:, None, :] if images.ndim == 2 else images


#: bytes read at a time by :func:`scan_finite`
SCAN_CHUNK_BYTES = 64 << 20


def _finite_record(path: Path) -> Path:
    return cache_dir("finite_scans", hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:32] + ".json")


def _rank() -> int:
    """This process's rank in a multi-process job (Lightning's launcher and torchrun set these)."""
    for var in ("RANK", "LOCAL_RANK", "SLURM_PROCID"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return 0


def scan_finite(path: Path, shape: tuple[int, ...], dtype: np.dtype, *, chunk_bytes: int = SCAN_CHUNK_BYTES) -> None:
    """Raise :class:`DataFormatError` naming the image, region and dimension of the first NaN/inf
    feature of the ``.npy`` file ``path``.

    The file is read in chunks with plain reads (through the page cache, not into this process: a
    memory map would keep every page it touched resident, 33 GB for COCO train). A file that passed
    is recorded under :func:`kgitm.core.io.cache_dir` with its size and modification time, and is
    not scanned again until it changes. Under DDP only rank 0 scans.
    """
    if _rank() > 0:  # under DDP rank 0 scans (and records) the file; the job fails there if it is bad
        return
    record = _finite_record(path)
    fingerprint = file_fingerprint(path)
    try:
        if json.loads(record.read_text()) == fingerprint:
            return
    except (OSError, ValueError):
        pass
    _scan_file(path, shape, np.dtype(dtype), chunk_bytes)
    try:
        record.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(record, json.dumps(fingerprint))
    except OSError:  # a read-only cache: scan again next time
        pass


def _scan_file(path: Path, shape: tuple[int, ...], dtype: np.dtype, chunk_bytes: int) -> None:
    per_image = int(np.prod(shape[1:]))
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        _, fortran, _ = header(f)
        if fortran:  # rare; fall back to the memory map, image by image
            data = np.load(path, mmap_mode="r").reshape(shape)  # (N, D) files as (N, 1, D)
            blocks = ((i, np.asarray(data[i : i + 1])) for i in range(shape[0]))
        else:
            step = max(1, chunk_bytes // max(1, per_image * dtype.itemsize))
            blocks = ((start, np.fromfile(f, dtype=dtype, count=min(step, shape[0] - start) * per_image).reshape(-1, *shape[1:]))
                      for start in range(0, shape[0], step))
        for start, block in blocks:
            if not np.isfinite(block).all():
                i, r, d = np.argwhere(~np.isfinite(block))[0][:3]
                raise DataFormatError(
                    f"{path}: non-finite feature (NaN or inf) at image {start + int(i)}, region {int(r)}, dim {int(d)}; "
                    "fix or drop that image"
                )


@dataclass
class PrecompSplit:
    """One split of a data set in the precomputed layout, validated on open.

    Args:
        root: folder holding the split files.
        split: split name (``train``, ``dev``, ``test``, ``testall``, ...).
        captions_per_image: ``k``, the fixed number of captions per image (default
            :data:`kgitm.core.CAPTIONS_PER_IMAGE`, 5).
        captions_file: read captions from this file instead of ``{split}_caps.txt`` (e.g. a
            diagnostic caption set over the same images).
        require_boxes: fail when boxes or image sizes are missing (GSMN, SGM need them).
        check_finite: scan the features for NaN/inf (:func:`scan_finite`; once per file version).

    Attributes:
        images: memory-mapped ``(N, R, D)`` features (``R = 1`` for a file of one vector per image).
        captions: ``k * N`` caption strings.
        boxes: ``(N, R, 4)`` pixel boxes or ``None``; sizes: ``(N, 2)`` or ``None``.
    """

    root: Path
    split: str
    captions_per_image: int = CAPTIONS_PER_IMAGE
    captions_file: Optional[Path] = None
    require_boxes: bool = False
    check_finite: bool = True

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        if self.captions_per_image < 1:
            raise DataFormatError(f"captions_per_image must be >= 1, got {self.captions_per_image}")
        if not self.root.is_dir():
            raise DataFormatError(
                f"{self.root}: data folder not found; point --data.root at a folder in the precomputed layout "
                "(Flickr30K / MS-COCO: the SCAN release's f30k_precomp or coco_precomp, docs/data.md), or generate "
                "SynthScenes there with `kgitm synthscenes --out DIR`"
            )
        ims_path = self.root / f"{self.split}_ims.npy"
        if not ims_path.exists():
            raise DataFormatError(f"{ims_path}: missing; expected the {self.split!r} split's region features here")
        self.images = _load_features(ims_path)
        if self.images.ndim != 3:
            raise DataFormatError(
                f"{ims_path}: expected shape (images, regions, dim) or (images, dim), found {self.images.shape}"
            )
        if not np.issubdtype(self.images.dtype, np.floating):
            raise DataFormatError(f"{ims_path}: expected floating-point features, found dtype {self.images.dtype}")
        n = self.images.shape[0]
        if n == 0:
            raise DataFormatError(f"{ims_path}: holds no images")
        if self.check_finite:
            self._check_finite(ims_path)

        caps_path = Path(self.captions_file) if self.captions_file else self.root / f"{self.split}_caps.txt"
        self.captions_path = caps_path
        self.captions = read_lines(caps_path)
        k = self.captions_per_image
        if len(self.captions) != k * n:
            if len(self.captions) % n == 0:
                hint = f"set captions_per_image={len(self.captions) // n}"
            else:
                hint = "the caption count must be a multiple of the image count"
            raise DataFormatError(
                f"{caps_path}: expected {k} x {n} = {k * n} captions for {n} images in {ims_path.name}, "
                f"found {len(self.captions)}; {hint}"
            )

        ids_path = self.root / f"{self.split}_ids.txt"
        self.ids: Optional[list[str]] = None
        if ids_path.exists():
            ids = read_lines(ids_path, what="image id")
            if len(ids) != n:
                raise DataFormatError(f"{ids_path}: expected {n} image ids (one per image), found {len(ids)}")
            self.ids = ids

        self.boxes: Optional[np.ndarray] = None
        self.sizes: Optional[np.ndarray] = None
        bbx_path = self.root / f"{self.split}_ims_bbx.npy"
        size_path = self.root / f"{self.split}_ims_size.npy"
        if bbx_path.exists():
            boxes = _load_array(bbx_path, mmap=True)
            if boxes.shape != (n, self.images.shape[1], 4):
                raise DataFormatError(
                    f"{bbx_path}: expected shape {(n, self.images.shape[1], 4)} to match {ims_path.name}, "
                    f"found {boxes.shape}"
                )
            self.boxes = boxes
        if size_path.exists():
            sizes = _load_array(size_path, mmap=False)
            if sizes.shape != (n, 2):
                raise DataFormatError(f"{size_path}: expected shape {(n, 2)} (width, height per image), found {sizes.shape}")
            if not np.all(np.isfinite(sizes)) or np.any(sizes <= 0):
                bad = int(np.argwhere(~(np.isfinite(sizes).all(1) & (sizes > 0).all(1)))[0, 0])
                raise DataFormatError(f"{size_path}: image {bad} has a non-positive or non-finite size {sizes[bad].tolist()}")
            self.sizes = sizes.astype(np.float32)
        if (self.boxes is None) != (self.sizes is None):
            missing = size_path if self.sizes is None else bbx_path
            raise DataFormatError(f"{missing}: missing; boxes and image sizes must come together")
        if self.require_boxes and self.boxes is None:
            raise DataFormatError(
                f"{bbx_path}: missing; this model needs boxes ({{split}}_ims_bbx.npy) and image sizes "
                "({split}_ims_size.npy); convert BUTD TSVs with `kgitm convert-butd`"
            )

    def _check_finite(self, path: Path) -> None:
        scan_finite(path, self.images.shape, self.images.dtype)

    def read_images(self, rows: np.ndarray) -> np.ndarray:
        """``(len(rows), R, D)`` float32 copies of the features of images ``rows`` (any order, repeats
        allowed).

        Read with positioned reads of the file, one per image, not through the memory map: pages read
        through a map stay mapped into this process and count as its resident memory (the whole 33 GB
        of COCO train after an epoch); read this way they live in the kernel's page cache only.
        """
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        images = self.images
        if not (isinstance(images, np.memmap) and images.flags.c_contiguous):
            return np.asarray(images[rows], dtype=np.float32)
        if len(rows) and (rows.min() < 0 or rows.max() >= images.shape[0]):
            raise IndexError(f"image index out of range 0..{images.shape[0] - 1} in {self.root / f'{self.split}_ims.npy'}")
        out = np.empty((len(rows), *images.shape[1:]), dtype=images.dtype)
        row_bytes = out[0].nbytes if len(rows) else 0
        fd = self._features_fd()
        for b, i in enumerate(rows.tolist()):
            view = memoryview(out[b]).cast("B")
            got = os.preadv(fd, [view], images.offset + i * row_bytes)
            if got != row_bytes:
                raise DataFormatError(f"{self.root / f'{self.split}_ims.npy'}: short read at image {i} (file truncated?)")
        return out if out.dtype == np.float32 else out.astype(np.float32)

    def _features_fd(self) -> int:
        pid = os.getpid()
        if getattr(self, "_fd", None) is None or self._fd_pid != pid:  # one descriptor per process (workers)
            self._fd = os.open(self.root / f"{self.split}_ims.npy", os.O_RDONLY)
            self._fd_pid = pid
        return self._fd

    def empty_image_fraction(self, sample: int = 1000) -> float:
        """The fraction of (up to ``sample`` evenly spaced) images whose every region is all zeros."""
        n = self.num_images
        rows = np.unique(np.linspace(0, n - 1, num=min(sample, n)).astype(np.int64))
        feats = self.read_images(rows)
        return float((~(feats != 0).any(axis=(1, 2))).mean())

    # A split travels to DataLoader workers (always so under the ``spawn`` start method). A memory map
    # would be pickled as a full in-memory copy (33 GB for COCO train); the workers re-open the files
    # instead, once each, without validating them again.
    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["images"] = None
        state["boxes"] = self.boxes is not None
        state["_fd"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.images = _load_features(self.root / f"{self.split}_ims.npy")
        self.boxes = _load_array(self.root / f"{self.split}_ims_bbx.npy", mmap=True) if state["boxes"] else None

    @property
    def num_images(self) -> int:
        return int(self.images.shape[0])

    @property
    def num_captions(self) -> int:
        return len(self.captions)

    @property
    def num_regions(self) -> int:
        return int(self.images.shape[1])

    @property
    def feature_dim(self) -> int:
        return int(self.images.shape[2])

    def image_of_caption(self, k: int) -> int:
        """Index of the image described by caption ``k``."""
        return k // self.captions_per_image
