"""``kgitm build-concepts``: a CVSE-style concept vocabulary and graph from a caption corpus
(:func:`kgitm.knowledge.builder.build_concepts`), or the normalised adjacency of a CVSE file."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from kgitm.core.io import atomic_write_npy
from kgitm.knowledge.builder import DEFAULT_SPACY_MODEL, build_concepts
from kgitm.knowledge.cvse_adjacency import cvse_normalize_file


def _default_name(corpus: str) -> str:
    stem = Path(corpus).name.split(".")[0]
    return re.sub(r"[^a-z0-9]+", "_", stem.lower()).strip("_") or "corpus"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="kgitm build-concepts",
        description=(
            "Choose CVSE-style concepts (objects/properties/motions) from a caption corpus by part of speech "
            "and frequency, count caption-level co-occurrences, and write the project's concept folder plus "
            "CVSE-compatible files. Or, with --normalize-cvse, write the normalised adjacency of a CVSE "
            "*_adj_concepts.pkl file."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("corpus", nargs="?", help="caption file: {split}_caps.txt or any one-caption-per-line file, "
                   "or the Flickr8k token file (image.jpg#k<TAB>caption)")
    p.add_argument("--format", dest="corpus_format", choices=["auto", "lines", "flickr8k"], default="auto",
                   help="corpus layout; auto detects the Flickr8k token format from the first line")
    p.add_argument("--split-file", help="Flickr8k only: keep the captions of the images listed here "
                   "(e.g. Flickr_8k.trainImages.txt: concepts must come from training captions)")
    p.add_argument("--name", help="name of the concept set, used in the CVSE file names and the default "
                   "output folder (default: from the corpus file name)")
    p.add_argument("--output", help="output folder (default graphs/concepts/<name>/); with --normalize-cvse "
                   "the .npy file to write")
    p.add_argument("--objects", type=int, default=210, help="number of object concepts (nouns, NN*)")
    p.add_argument("--properties", type=int, default=60, help="number of property concepts (adjectives, JJ*)")
    p.add_argument("--motions", type=int, default=30, help="number of motion concepts (verbs, VB*)")
    p.add_argument("--spacy-model", default=DEFAULT_SPACY_MODEL, help="spaCy pipeline used for part-of-speech tags")
    p.add_argument("--batch-size", type=int, default=256, help="captions per spaCy nlp.pipe batch")
    p.add_argument("--threshold", type=float, default=0.3, help="CVSE binarisation threshold of the adjacency")
    p.add_argument("--column-mass", type=float, default=0.25, help="CVSE column scale of the binarised adjacency")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="show a progress bar while tagging")
    p.add_argument("--normalize-cvse", metavar="ADJ_PKL", help="instead of building: read this CVSE "
                   "*_adj_concepts.pkl (safely) and write its normalised float32 adjacency to --output (.npy)")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.normalize_cvse:
        if args.corpus or not args.output:
            parser.error("--normalize-cvse takes no corpus and needs --output A.npy")
        adj = cvse_normalize_file(args.normalize_cvse, threshold=args.threshold, column_mass=args.column_mass)
        atomic_write_npy(args.output, adj)
        print(f"wrote {args.output}: {adj.shape[0]}x{adj.shape[1]} float32 normalised adjacency of {args.normalize_cvse}")
        return 0
    if not args.corpus:
        parser.error("give a caption corpus (or --normalize-cvse ADJ_PKL --output A.npy)")
    if args.split_file and not Path(args.split_file).is_file():
        parser.error(f"split file {args.split_file} not found")
    name = args.name or _default_name(args.corpus)
    output = Path(args.output or Path("graphs") / "concepts" / name)
    try:
        graph = build_concepts(
            args.corpus, output=output, name=name, corpus_format=args.corpus_format, split_file=args.split_file,
            objects=args.objects, properties=args.properties, motions=args.motions, spacy_model=args.spacy_model,
            batch_size=args.batch_size, threshold=args.threshold, column_mass=args.column_mass, progress=args.progress,
        )
    except (FileNotFoundError, ValueError, OSError) as exc:
        print(f"kgitm build-concepts: error: {exc}", file=sys.stderr)
        return 2
    sizes = graph.provenance["sizes"]
    status = "up to date, kept" if getattr(graph, "reused", False) else "wrote"
    print(f"{status} {output}: {graph.num_concepts} concepts ({sizes['OBJ']} objects, {sizes['PROP']} properties, "
          f"{sizes['MOT']} motions) from {graph.provenance['num_captions']} captions")
    return 0
