"""``kgitm ensemble``: average the similarity matrices of several models and evaluate the result
(:func:`kgitm.eval.ensemble.average_similarity`); members are saved matrices or checkpoints run
through ``kgitm predict``."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Optional

import numpy as np

from kgitm.cli.lightning import run_lightning_cli
from kgitm.core import CAPTIONS_PER_IMAGE
from kgitm.core.io import atomic_write_json
from kgitm.eval.ensemble import EnsembleError, Member, average_similarity, load_similarity, normalized_weights
from kgitm.eval.metrics import PROTOCOLS, evaluate_retrieval
from kgitm.eval.report import format_retrieval_table

PROG = "kgitm ensemble"


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
    run_lightning_cli(["predict", "--config", str(config), "--ckpt_path", str(ckpt), "--sims_out", str(sims_out), *extra_args])
    return Path(sims_out)


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
JSON written by --output: {"name", "models": N, "ensemble": metrics, "members": [{"name", "models": 1,
"weight", "source", "results"}], "protocol", "captions_per_image", "weights"} with the metric keys of
`kgitm evaluate`; `kgitm compare` reads it as one row of N models. The table's "models" column says
how many models made each row: 1 for a member, N for the ensemble.

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
    parser.add_argument("--captions-per-image", type=int, default=CAPTIONS_PER_IMAGE, metavar="K", help=f"captions per image k (default: {CAPTIONS_PER_IMAGE})")
    parser.add_argument("--protocol", choices=PROTOCOLS, default="single", help="evaluation protocol, as in `kgitm evaluate` (default: single)")
    parser.add_argument("--fold-images", type=int, default=1000, metavar="N", help="images per fold for --protocol coco1k (default: 1000)")
    parser.add_argument("--output", type=Path, default=None, metavar="RESULTS.json", help="write members' and ensemble metrics as JSON (atomically)")
    parser.add_argument("--sims-out", type=Path, default=None, metavar="AVG.npy", help="also save the averaged matrix (written through a memory map, then moved into place)")
    parser.add_argument("--run-sims-dir", type=Path, default=None, metavar="DIR", help="keep the matrices of --run members here (default: a temporary folder, deleted)")
    return parser


def _run_name(config: str) -> str:
    """A ``--run`` member's name: its config's stem, or its folder's name for a ``config.yaml``
    (``kgitm convert-checkpoint`` folders), or the run's for a run's saved ``RUN/logs/config.yaml``
    (``RUN``'s name, with its parent's for a grid's ``CELL/seedN``)."""
    path = Path(config)
    if path.stem != "config":
        return path.stem
    folder = path.parent.resolve()
    if folder.name != "logs":
        return folder.name
    run = folder.parent
    return f"{run.parent.name}/{run.name}" if run.name.startswith("seed") and run.parent.name else run.name


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
                out = run_dir / f"member{len(members)}_{_run_name(config).replace('/', '_')}.npy"
                predict_similarity(config, ckpt, out, extra_args=extra)
                members.append(Member(_run_name(config), out, {"config": config, "ckpt": ckpt, "args": extra}))
        for m, name in zip(members, _unique_names([m.name for m in members])):
            m.name = name

        tmp_out: Optional[Path] = None
        try:
            matrices = [load_similarity(m.path) for m in members]
            weights = normalized_weights(args.weights, len(members))
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
    counts = {**{m.name: 1 for m in members}, ens_name: len(members)}
    print(format_retrieval_table({**results, ens_name: ensemble}, title=title, models=counts))
    if args.sims_out is not None:
        print(f"averaged matrix written to {args.sims_out}", file=sys.stderr)
    if args.output is not None:
        atomic_write_json(
            args.output,
            {
                "name": f"ensemble({' + '.join(m.name for m in members)})",
                "models": len(members),
                "protocol": args.protocol,
                "captions_per_image": args.captions_per_image,
                "weights": weights.tolist(),
                "members": [
                    {"name": m.name, "models": 1, "weight": float(w), "source": m.source, "results": results[m.name]}
                    for m, w in zip(members, weights)
                ],
                "ensemble": ensemble,
            },
        )
        print(f"wrote {args.output}", file=sys.stderr)
    return 0

