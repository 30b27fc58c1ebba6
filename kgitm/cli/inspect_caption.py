"""``kgitm inspect-caption``: parse one caption and show its dependency graph and scene graph.

    kgitm inspect-caption "a man riding a horse" [--out-dir DIR] [--spacy-model NAME]

Prints both graphs, and writes ``DIR/caption.png`` (drawing of both graphs) and
``DIR/caption.graphml`` (the scene graph and the dependency graph as one GraphML file, node ids
prefixed ``sg:`` and ``dep:``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kgitm.graphs.inspect_caption import describe, draw, to_graphml
from kgitm.graphs.text_parser import DEFAULT_SPACY_MODEL, SpacyModelMissingError, TextGraphParser


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="kgitm inspect-caption", description=__doc__.splitlines()[0])
    ap.add_argument("caption", help="the caption text (quote it)")
    ap.add_argument("--out-dir", type=Path, default=Path("."), help="where caption.png and caption.graphml go")
    ap.add_argument("--spacy-model", default=DEFAULT_SPACY_MODEL, help="spaCy pipeline name")
    args = ap.parse_args(argv)
    try:
        parser = TextGraphParser(args.spacy_model)
    except SpacyModelMissingError as e:
        print(f"kgitm inspect-caption: {e}", file=sys.stderr)
        return 2
    parsed = parser.parse_one(args.caption)
    print(describe(parsed))
    args.out_dir.mkdir(parents=True, exist_ok=True)
    draw(parsed, args.out_dir / "caption.png")
    to_graphml(parsed, args.out_dir / "caption.graphml")
    print(f"wrote {args.out_dir / 'caption.png'} and {args.out_dir / 'caption.graphml'}")
    return 0
