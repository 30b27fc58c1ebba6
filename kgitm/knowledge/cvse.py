"""The concept graphs released with CVSE (Wang et al., ECCV 2020), read safely."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from kgitm.knowledge.base import ConceptGraph, KnowledgeSource, concept_key
from kgitm.knowledge.cvse_adjacency import cvse_normalize, load_cvse_counts
from kgitm.core.safe_pickle import safe_load

__all__ = ["CVSEKnowledge", "CVSEFiles", "find_cvse_files"]



class CVSEFiles:
    """Paths of one CVSE data folder (``f30k/``, ``coco/``, or a ``kgitm build-concepts`` output)."""

    def __init__(self, root: Path, categories: Path, vocab: Path, adjacency: Path, glove: Path | None) -> None:
        self.root, self.categories, self.vocab, self.adjacency, self.glove = root, categories, vocab, adjacency, glove


def _one(root: Path, pattern: str, *, required: bool = True) -> Path | None:
    found = sorted(root.glob(pattern))
    if len(found) > 1:
        raise ValueError(f"{root}: several files match {pattern}: {[f.name for f in found]}; keep one per folder")
    if not found:
        if required:
            raise FileNotFoundError(f"{root}: no file matching {pattern} (expected the CVSE release files: "
                                    "category_concepts.json, vocab_*_concepts.pkl, *_adj_concepts.pkl)")
        return None
    return found[0]


def find_cvse_files(root: str | Path) -> CVSEFiles:
    """Locate the CVSE files in ``root`` (the GloVe file is optional)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"CVSE data folder {root} not found")
    return CVSEFiles(
        root,
        _one(root, "category_concepts.json"),
        _one(root, "vocab_*_concepts.pkl"),
        _one(root, "*_adj_concepts.pkl"),
        _one(root, "*_concepts_glove_word2vec.pkl", required=False),
    )


class CVSEKnowledge(KnowledgeSource):
    """CVSE's released concept graph: 300 concepts (objects, properties, motions), caption-level
    co-occurrence normalised with :func:`~kgitm.knowledge.cvse_adjacency.cvse_normalize`, and GloVe
    vectors as node features. Pickles are read with :func:`~kgitm.core.safe_pickle.safe_load`.

    Args:
        root: folder with ``category_concepts.json``, ``vocab_*_concepts.pkl``, ``*_adj_concepts.pkl``
            and optionally ``*_concepts_glove_word2vec.pkl`` (e.g. ``.../cvse/f30k``).
        vocabulary: concept vocabulary (default: the release's 300 concepts in index order).
        threshold: binarisation threshold (default 0.3, the paper's).
        column_mass: column scale (default 0.25).
        cooccurrence: which co-occurrence matrix to normalise: ``adj_all`` (default, what CVSE uses),
            ``adj_O_P`` or ``adj_O_M``.
    """

    name = "cvse"

    def __init__(
        self,
        root: str,
        *,
        vocabulary: list[str] | str | None = None,
        threshold: float = 0.3,
        column_mass: float = 0.25,
        cooccurrence: str = "adj_all",
    ) -> None:
        super().__init__(vocabulary=vocabulary)
        self.files = find_cvse_files(root)
        self.threshold = threshold
        self.column_mass = column_mass
        self.cooccurrence = cooccurrence
        cats = json.loads(self.files.categories.read_text(encoding="utf-8"))
        order = sorted(cats.items(), key=lambda kv: kv[1])
        if [i for _, i in order] != list(range(len(order))):
            raise ValueError(f"{self.files.categories}: indices are not 0..{len(order) - 1}")
        self.concepts = [w for w, _ in order]
        vocab = safe_load(self.files.vocab)
        if not isinstance(vocab, dict) or not {"words", "poss"} <= vocab.keys():
            raise ValueError(f"{self.files.vocab}: expected a dict with 'words', 'counts', 'poss'")
        kind_of = dict(zip(vocab["words"], vocab["poss"]))
        self.kinds = [kind_of.get(w, "") for w in self.concepts]
        data = load_cvse_counts(self.files.adjacency)
        if cooccurrence not in data:
            raise ValueError(f"{self.files.adjacency}: no {cooccurrence!r} matrix (has {sorted(data)})")
        self.counts = data["nums"].astype(np.int64)
        self.cooc = data[cooccurrence].astype(np.int64)
        if self.counts.shape[0] != len(self.concepts):
            raise ValueError(f"{self.files.adjacency}: {self.counts.shape[0]} concepts, {self.files.categories} has {len(self.concepts)}")
        self.glove: np.ndarray | None = None
        if self.files.glove is not None:
            glove = np.asarray(safe_load(self.files.glove), dtype=np.float32)
            if glove.ndim != 2 or glove.shape[0] != len(self.concepts):
                raise ValueError(f"{self.files.glove}: shape {glove.shape}, expected ({len(self.concepts)}, D)")
            self.glove = glove

    def default_vocabulary(self) -> list[str] | None:
        return list(self.concepts)

    def concept_graph(self, vocabulary: Sequence[str] | None = None) -> ConceptGraph:
        """The released graph; for another vocabulary, the statistics of the concepts it shares with
        the release are re-normalised over it, and the others are isolated nodes with zero features."""
        vocab = list(vocabulary) if vocabulary is not None else self.vocabulary
        own = {concept_key(c): i for i, c in enumerate(self.concepts)}
        pos = np.array([own.get(concept_key(c), -1) for c in vocab], dtype=np.int64)
        known = pos >= 0
        if known.all():
            counts, cooc = self.counts[pos], self.cooc[np.ix_(pos, pos)]
        else:
            counts = np.zeros(len(vocab), dtype=np.int64)
            cooc = np.zeros((len(vocab), len(vocab)), dtype=np.int64)
            counts[known] = self.counts[pos[known]]
            cooc[np.ix_(known, known)] = self.cooc[np.ix_(pos[known], pos[known])]
        features = None
        if self.glove is not None:
            features = np.zeros((len(vocab), self.glove.shape[1]), dtype=np.float32)
            features[known] = self.glove[pos[known]]
        missing = [c for c, k in zip(vocab, known) if not k]
        return ConceptGraph(
            vocab,
            adjacency=cvse_normalize(counts, cooc, threshold=self.threshold, column_mass=self.column_mass),
            features=features,
            kinds=[self.kinds[p] if p >= 0 else "" for p in pos],
            provenance=self._provenance(
                root=str(self.files.root), cooccurrence=self.cooccurrence, threshold=self.threshold,
                column_mass=self.column_mass, features="glove" if features is not None else None,
                missing_concepts=missing, num_missing_concepts=len(missing),
            ),
        )
