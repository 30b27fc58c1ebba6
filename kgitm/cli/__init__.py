"""The app layer: the ``kgitm`` command line.

``kgitm fit|validate|test|predict`` is the Lightning CLI (:mod:`kgitm.cli.lightning`, YAML configs in
``configs/``); the other commands are the project's jobs. Each job's argument parsing lives in its own
module here and exposes ``main(argv)``; the work itself is a library function of the layer it belongs
to (``kgitm preprocess`` -> :func:`kgitm.graphs.preprocess.run`). This file only dispatches, so
``kgitm --help`` lists everything in one place.
"""

from __future__ import annotations

import importlib
import sys

LIGHTNING_SUBCOMMANDS = ("fit", "validate", "test", "predict")

# name -> (module with main(argv), one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "synthscenes": ("kgitm.cli.synthscenes", "generate the SynthScenes data set (precomputed layout)"),
    "evaluate": ("kgitm.cli.evaluate", "score a saved similarity matrix (.npy) with the standard protocol"),
    "ensemble": ("kgitm.cli.ensemble", "average several models' similarity matrices (.npy or --run CONFIG CKPT) and evaluate"),
    "inspect-caption": ("kgitm.cli.inspect_caption", "parse one caption; print and draw its dependency and scene graphs"),
    "parse-captions": ("kgitm.cli.parse_captions", "parse a caption file (one per line) into scene graphs (JSON lines or FACTUAL)"),
    "build-concepts": ("kgitm.cli.build_concepts", "build a CVSE-style concept vocabulary + graph from a caption corpus"),
    "explain": ("kgitm.cli.explain", "one pair of a run: its alignments drawn (PNG) and written (JSON), with its score and ranks"),
    "report": ("kgitm.cli.report", "self-contained HTML report of one run (or several side by side): metrics, curves, retrievals, failures"),
    "compare": ("kgitm.cli.compare", "print several test_results.json side by side"),
    "grid": ("kgitm.cli.grid", "run matchers x knowledge sources x seeds; CSV, Markdown table and bar chart"),
    "preprocess": ("kgitm.cli.preprocess", "parse captions into graph stores (+ visual scene graphs); resumable, shardable"),
    "convert-butd": ("kgitm.cli.convert_butd", "bottom-up-attention TSV -> precomputed features + boxes + image sizes"),
    "convert-gsmn-sizes": ("kgitm.cli.convert_gsmn_sizes", "GSMN's pickled image sizes -> plain (N, 2) array (needs --allow-pickle)"),
    "convert-checkpoint": ("kgitm.cli.convert_checkpoint", "a released SCAN / VSE++ / GSMN / SGRAF / VSE-infinity / VSRN checkpoint + vocabulary -> kgitm config.yaml + model.ckpt"),
    "upgrade-config": ("kgitm.cli.upgrade_config", "rewrite a model/experiment config of kgitm 0.1 for this version (loss terms, model.embed_dim)"),
}


def _usage() -> str:
    lines = [
        "usage: kgitm <command> [options]   (kgitm <command> --help for details)",
        "",
        "training and evaluation (Lightning CLI, YAML configs in configs/):",
        "  fit        train a matcher          e.g. kgitm fit --config configs/experiment/vsepp_synthscenes.yaml",
        "  validate   run validation on a checkpoint",
        "  test       retrieval + diagnostic evaluation on the test split",
        "  predict    write the test similarity matrix (.npy)",
        "",
        "jobs:",
    ]
    width = max(len(n) for n in COMMANDS)
    lines += [f"  {n.ljust(width)}   {h}" for n, (_, h) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return
    cmd, rest = argv[0], argv[1:]
    if cmd in LIGHTNING_SUBCOMMANDS:
        from kgitm.cli.lightning import run_lightning_cli

        run_lightning_cli([cmd, *rest])
        return
    if cmd not in COMMANDS:
        print(f"kgitm: unknown command {cmd!r}\n\n{_usage()}", file=sys.stderr)
        raise SystemExit(2)
    module = importlib.import_module(COMMANDS[cmd][0])
    result = module.main(rest)
    if isinstance(result, int) and result:
        raise SystemExit(result)



def config_loaders() -> dict:
    """Loaders for job configs (``configs/<folder>/*.yaml`` other than data/model/trainer/experiment):
    ``folder -> callable(path, data_root)`` that parses and instantiates one config without running
    the job. Used by the test that checks every YAML in ``configs/``."""
    loaders: dict = {}
    loaders["preprocess"] = lambda path, data_root: importlib.import_module("kgitm.cli.preprocess").load_config(path, data_root=data_root)
    loaders["grid"] = lambda path, data_root: importlib.import_module("kgitm.cli.grid").check_grid(path)
    return loaders
