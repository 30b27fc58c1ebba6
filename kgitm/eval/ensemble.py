"""``kgitm ensemble``: average the similarity matrices of several models and evaluate the result.

The published two-model numbers are ensembles: GSMN reports sparse + dense, SCAN reports
t2i + i2t, each the mean of the two models' test similarity matrices. This command rebuilds those
numbers from saved matrices (``kgitm predict --sims_out``, or any ``.npy`` in the layout of
``kgitm evaluate``) or from checkpoints, which it runs through ``kgitm predict`` itself.

Matrices are read memory-mapped and averaged in chunks of rows, so averaging two COCO 5K matrices
needs one output matrix of memory (none with ``--sims-out``, which is written through a memory map)
rather than three.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from kgitm.eval.metrics import PROTOCOLS, evaluate_retrieval
from kgitm.eval.report import format_retrieval_table, write_json

PROG = "kgitm ensemble"

# Matrix entries per averaging chunk (a float64 accumulator of this size, ~32 MB).
_CHUNK_ELEMENTS = 1 << 22


class EnsembleError(ValueError):
    """A member matrix that cannot be averaged (message: file, what is wrong, what to do)."""


@dataclass
class Member:
    """One model of the ensemble: a name for the table, its matrix file and where it came from."""

    name: str
    path: Path
    source: dict[str, Any] = field(default_factory=dict)


def load_similarity(path: str | os.PathLike[str]) -> np.ndarray:
    """Open a saved similarity matrix memory-mapped (no pickles) and check it is a real 2-D array.

    Args:
        path: a ``.npy`` file written by ``np.save`` (e.g. by ``kgitm predict``).

    Returns:
        A read-only memmap of shape ``(N_img, N_cap)``.

    Raises:
        EnsembleError: missing file, not a plain ``.npy``, not 2-D or not real-valued.
    """
    path = Path(path)
    if not path.is_file():
        raise EnsembleError(f"{path}: no such file; pass the .npy written by `kgitm predict --sims_out` or np.save")
    try:
        sims = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as err:
        raise EnsembleError(f"{path}: cannot read as a plain numeric .npy ({err}); save it with np.save") from err
    if not isinstance(sims, np.ndarray):
        raise EnsembleError(f"{path}: is an .npz archive, expected one .npy array; save the matrix with np.save")
    if sims.ndim != 2:
        raise EnsembleError(f"{path}: expected a 2-D similarity matrix (N_img, N_cap), got shape {sims.shape}")
    if not (np.issubdtype(sims.dtype, np.floating) or np.issubdtype(sims.dtype, np.integer)):
        raise EnsembleError(f"{path}: expected real-valued scores, got dtype {sims.dtype}")
    return sims


def _normalized_weights(weights: Optional[Sequence[float]], count: int) -> np.ndarray:
    if weights is None:
        return np.full(count, 1.0 / count)
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (count,):
        raise EnsembleError(f"got {w.size} weights for {count} matrices; pass one weight per member (--weights)")
    if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise EnsembleError(f"weights must be finite, non-negative and not all zero, got {w.tolist()}")
    return w / w.sum()


def average_similarity(
    matrices: Sequence[np.ndarray],
    weights: Optional[Sequence[float]] = None,
    *,
    names: Optional[Sequence[str]] = None,
    out: Optional[np.ndarray] = None,
    chunk_rows: Optional[int] = None,
) -> np.ndarray:
    """Weighted mean of similarity matrices, computed in chunks of rows.

    ``S = sum_i w_i S_i / sum_i w_i``, accumulated in float64 one chunk of rows at a time (the
    members may be memory-mapped) and stored in ``out``. Every chunk of every member is checked to
    be finite.

    Args:
        matrices: the members' matrices, all the same shape.
        weights: one non-negative weight per member (default: equal weights); they are normalised
            to sum to one.
        names: member names used in error messages (default ``"matrix 0"``, ...).
        out: where to write the mean (e.g. a writable memmap); default a new array of the widest
            member float dtype (at least float32).
        chunk_rows: rows per chunk (default: about 4M entries); changes memory use, not the result.

    Returns:
        ``out`` holding the mean.

    Raises:
        EnsembleError: no members, shapes that differ (naming both members and their shapes), bad
            weights, or a NaN/inf score (naming the member, row and column).

    Shapes:
        matrices: ``(N_img, N_cap)`` each. Output: ``(N_img, N_cap)``.
    """
    if not matrices:
        raise EnsembleError("no similarity matrices to average; pass at least one .npy or --run")
    names = list(names) if names is not None else [f"matrix {i}" for i in range(len(matrices))]
    shape = matrices[0].shape
    for name, mat in zip(names[1:], matrices[1:]):
        if mat.shape != shape:
            raise EnsembleError(
                f"{names[0]} has shape {shape} but {name} has shape {mat.shape}; ensemble members must "
                "score the same images and captions in the same order"
            )
    w = _normalized_weights(weights, len(matrices))
    if out is None:
        out = np.empty(shape, dtype=np.result_type(np.float32, *(m.dtype for m in matrices)))
    elif out.shape != shape:
        raise EnsembleError(f"output has shape {out.shape}, expected {shape}")
    step = chunk_rows or max(1, _CHUNK_ELEMENTS // max(1, shape[1]))
    for r0 in range(0, shape[0], step):
        acc = np.zeros((min(step, shape[0] - r0), shape[1]), dtype=np.float64)
        for name, mat, wi in zip(names, matrices, w):
            block = np.asarray(mat[r0 : r0 + step], dtype=np.float64)
            bad = ~np.isfinite(block)
            if bad.any():
                r, c = np.argwhere(bad)[0]
                raise EnsembleError(
                    f"{name}: entry (row {r0 + int(r)}, col {int(c)}) is {block[r, c]}; every score must "
                    "be finite (NaN usually means a zero-norm embedding or a diverged run)"
                )
            acc += wi * block
        out[r0 : r0 + step] = acc
    return out


def predict_similarity(
    config: str | os.PathLike[str],
    ckpt: str | os.PathLike[str],
    sims_out: str | os.PathLike[str],
    *,
    extra_args: Sequence[str] = (),
) -> Path:
    """Write a checkpoint's test similarity matrix with ``kgitm predict`` (the real CLI path).

    Args:
        config: the run's experiment config (``--config``).
        ckpt: its checkpoint (``--ckpt_path``).
        sims_out: where the ``.npy`` goes (``--sims_out``).
        extra_args: more Lightning CLI arguments, e.g. ``["--data.root", "data/synthscenes"]``.

    Returns:
        ``Path(sims_out)``.
    """
    from kgitm.cli import main as kgitm_main

    argv = sys.argv[:]
    try:
        kgitm_main(["predict", "--config", str(config), "--ckpt_path", str(ckpt), "--sims_out", str(sims_out), *extra_args])
    finally:
        sys.argv = argv  # the Lightning CLI reads (and the launcher rewrites) sys.argv
    return Path(sims_out)


# ------------------------------------------------------------------------------------- command

_DESCRIPTION = """\
Average the similarity matrices of several models (a weighted mean, weights normalised to sum to
one) and score every member and the ensemble with the standard retrieval protocol, as GSMN
(sparse + dense) and SCAN (t2i + i2t) made their published numbers.

Members are saved matrices (SIMS.npy, layout of `kgitm evaluate`: images as rows, the k captions of
image i at columns k*i..k*i+k-1) and/or checkpoints (--run CONFIG CKPT, run through
`kgitm predict`). Arguments after `--` are passed to every --run (e.g. -- --data.root DIR).
All members must have the same shape and finite scores.
"""

_EPILOG = """\
JSON written by --output: {"ensemble": metrics, "members": [{"name", "weight", "source",
"results"}], "protocol", "captions_per_image", "weights"} with the metric keys of `kgitm evaluate`.

examples:
  kgitm ensemble runs/gsmn_sparse/sims.npy runs/gsmn_dense/sims.npy --output gsmn_ensemble.json
  kgitm ensemble --run configs/experiment/scan_t2i_synthscenes.yaml t2i.ckpt \\
                 --run configs/experiment/scan_i2t_synthscenes.yaml i2t.ckpt -- --data.root data/synthscenes
"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``kgitm ensemble`` (arguments before ``--``)."""
    parser = argparse.ArgumentParser(
        prog=PROG, description=_DESCRIPTION, epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("sims", nargs="*", type=Path, metavar="SIMS.npy", help="saved similarity matrices (read memory-mapped, no pickles)")
    parser.add_argument(
        "--run", nargs=2, action="append", default=[], metavar=("CONFIG", "CKPT"),
        help="a model to run with `kgitm predict --config CONFIG --ckpt_path CKPT` (repeatable); its "
        "matrix joins the members after the SIMS files",
    )
    parser.add_argument("--weights", nargs="+", type=float, default=None, metavar="W", help="one non-negative weight per member, in order (default: equal)")
    parser.add_argument("--captions-per-image", type=int, default=5, metavar="K", help="captions per image k (default: 5)")
    parser.add_argument("--protocol", choices=PROTOCOLS, default="single", help="evaluation protocol, as in `kgitm evaluate` (default: single)")
    parser.add_argument("--fold-images", type=int, default=1000, metavar="N", help="images per fold for --protocol coco1k (default: 1000)")
    parser.add_argument("--output", type=Path, default=None, metavar="RESULTS.json", help="write members' and ensemble metrics as JSON (atomically)")
    parser.add_argument("--sims-out", type=Path, default=None, metavar="AVG.npy", help="also save the averaged matrix (written through a memory map, then moved into place)")
    parser.add_argument("--run-sims-dir", type=Path, default=None, metavar="DIR", help="keep the matrices of --run members here (default: a temporary folder, deleted)")
    return parser


def _unique_names(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n}#{seen[n]}")
    return out


def _evaluate(name: str, sims: np.ndarray, args: argparse.Namespace) -> dict[str, Any]:
    try:
        return evaluate_retrieval(sims, args.captions_per_image, args.protocol, fold_images=args.fold_images)
    except ValueError as err:
        raise SystemExit(f"{PROG}: {name}: {err}") from err


def main(argv: list[str]) -> int:
    """Run ``kgitm ensemble`` with ``argv`` (the arguments after the command name)."""
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1 :]
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.sims and not args.run:
        parser.error("give at least one SIMS.npy or --run CONFIG CKPT")
    if extra and not args.run:
        parser.error("arguments after `--` are for --run members; there are none")

    with ExitStack() as stack:
        members = [Member(p.stem, p, {"sims": str(p)}) for p in args.sims]
        if args.run:
            run_dir = args.run_sims_dir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="kgitm-ensemble-")))
            run_dir.mkdir(parents=True, exist_ok=True)
            for config, ckpt in args.run:
                out = run_dir / f"member{len(members)}_{Path(config).stem}.npy"
                predict_similarity(config, ckpt, out, extra_args=extra)
                members.append(Member(Path(config).stem, out, {"config": config, "ckpt": ckpt, "args": extra}))
        for m, name in zip(members, _unique_names([m.name for m in members])):
            m.name = name

        tmp_out: Optional[Path] = None
        try:
            matrices = [load_similarity(m.path) for m in members]
            weights = _normalized_weights(args.weights, len(members))
            out_arr = None
            if args.sims_out is not None:
                args.sims_out.parent.mkdir(parents=True, exist_ok=True)
                tmp_out = args.sims_out.with_name(f".{args.sims_out.name}.tmp.npy")
                dtype = np.result_type(np.float32, *(m.dtype for m in matrices))
                out_arr = np.lib.format.open_memmap(tmp_out, mode="w+", dtype=dtype, shape=matrices[0].shape)
            avg = average_similarity(matrices, weights, names=[str(m.path) for m in members], out=out_arr)
            results = {m.name: _evaluate(str(m.path), mat, args) for m, mat in zip(members, matrices)}
            ens_name = "ensemble" if "ensemble" not in results else "ensemble (mean)"
            ensemble = _evaluate(ens_name, avg, args)
            n_img, n_cap = avg.shape
            if tmp_out is not None:
                avg.flush()
                del avg, out_arr
                os.replace(tmp_out, args.sims_out)
                tmp_out = None
        except EnsembleError as err:
            raise SystemExit(f"{PROG}: {err}") from err
        finally:
            if tmp_out is not None:
                tmp_out.unlink(missing_ok=True)

    title = (
        f"{PROG} | protocol {args.protocol} | {n_img} images x {n_cap} captions | "
        f"ensemble = " + " + ".join(f"{w:.3g} {m.name}" for w, m in zip(weights, members))
    )
    print(format_retrieval_table({**results, ens_name: ensemble}, title=title))
    if args.sims_out is not None:
        print(f"averaged matrix written to {args.sims_out}", file=sys.stderr)
    if args.output is not None:
        write_json(
            args.output,
            {
                "protocol": args.protocol,
                "captions_per_image": args.captions_per_image,
                "weights": weights.tolist(),
                "members": [
                    {"name": m.name, "weight": float(w), "source": m.source, "results": results[m.name]}
                    for m, w in zip(members, weights)
                ],
                "ensemble": ensemble,
            },
        )
        print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
