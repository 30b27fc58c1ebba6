"""``kgitm parse-captions``: parse a caption file (one per line) into scene graphs, one per line.

    kgitm parse-captions INPUT.txt --output OUT.jsonl [--format json|factual] [--spacy-model NAME]
        [--batch-size 256] [--n-process 1]

``json`` lines are :meth:`ParsedCaption.to_json` (both graphs); ``factual`` lines are the scene graph
in FACTUAL notation (an empty line for an empty graph). The output is written to a temporary file
beside ``--output`` and moved into place when complete.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tqdm import tqdm

from kgitm.core.io import atomic_open
from kgitm.graphs.factual import format_factual
from kgitm.graphs.text_parser import DEFAULT_SPACY_MODEL, SpacyModelMissingError, TextGraphParser


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="kgitm parse-captions", description=__doc__.splitlines()[0])
    ap.add_argument("input", type=Path, help="text file, one caption per line")
    ap.add_argument("--output", type=Path, required=True, help="output file, one graph per line")
    ap.add_argument("--format", choices=["json", "factual"], default="json")
    ap.add_argument("--spacy-model", default=DEFAULT_SPACY_MODEL, help="spaCy pipeline name")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--n-process", type=int, default=1)
    args = ap.parse_args(argv)
    if not args.input.is_file():
        print(f"kgitm parse-captions: input file not found: {args.input}", file=sys.stderr)
        return 2
    with open(args.input, encoding="utf-8") as f:
        captions = [line.rstrip("\r\n") for line in f]
    try:
        parser = TextGraphParser(args.spacy_model, batch_size=args.batch_size, n_process=args.n_process)
    except SpacyModelMissingError as e:
        print(f"kgitm parse-captions: {e}", file=sys.stderr)
        return 2
    out = args.output
    empty = 0
    with atomic_open(out, "w") as f:
        for p in tqdm(parser.iter_parse(captions), total=len(captions), desc="parsing", unit="cap"):
            if not p.scene_graph.objects:
                empty += 1
            if args.format == "json":
                f.write(json.dumps(p.to_json(), ensure_ascii=False) + "\n")
            else:
                f.write(format_factual(p.scene_graph) + "\n")
    print(f"{len(captions)} captions -> {out} ({args.format}); {empty} with an empty scene graph")
    return 0
