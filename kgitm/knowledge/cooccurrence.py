"""Concept co-occurrence statistics of a caption corpus as knowledge (CVSE's statistical graph)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from kgitm.core.text import tokenize
from kgitm.knowledge.base import ConceptGraph, KnowledgeSource, concept_key, load_vocabulary
from kgitm.core.io import sha256_file
from kgitm.knowledge.corpus import CorpusFormat, count_cooccurrences, read_captions
from kgitm.knowledge.cvse_adjacency import cvse_normalize

__all__ = ["CooccurrenceKnowledge"]


class CooccurrenceKnowledge(KnowledgeSource):
    """Caption-level concept co-occurrence, normalised with CVSE's recipe
    (:func:`~kgitm.knowledge.cvse_adjacency.cvse_normalize`).

    Statistics come either from a concepts folder written by ``kgitm build-concepts``
    (``counts.npy``, ``cooccurrence.npy``; the recommended way: training reads artifacts) or, for
    small corpora, are counted from a caption file on construction, mapping the project's tokens
    (:func:`kgitm.core.text.tokenize`) to concepts with :meth:`concepts_for_words`.

    Args:
        source: a concepts folder, or a caption file (``lines`` or Flickr8k token format).
        vocabulary: concept vocabulary (default: the folder's own concepts; required for a caption file).
        corpus_format: caption file layout (``auto``, ``lines``, ``flickr8k``; default ``auto``).
        split_file: Flickr8k split file restricting the captions to those images (default ``None``).
        threshold: CVSE binarisation threshold (default 0.3).
        column_mass: CVSE column scale (default 0.25).
    """

    name = "cooccurrence"

    def __init__(
        self,
        source: str,
        *,
        vocabulary: list[str] | str | None = None,
        corpus_format: CorpusFormat = "auto",
        split_file: str | None = None,
        threshold: float = 0.3,
        column_mass: float = 0.25,
    ) -> None:
        super().__init__(vocabulary=vocabulary)
        self.source = Path(source)
        self.threshold = threshold
        self.column_mass = column_mass
        self._kinds: list[str] | None = None
        if self.source.is_dir():
            self._concepts = load_vocabulary(self.source)
            meta = json.loads((self.source / "concepts.json").read_text(encoding="utf-8"))
            self._kinds = meta.get("kinds")
            for name in ("counts.npy", "cooccurrence.npy"):
                if not (self.source / name).is_file():
                    raise FileNotFoundError(f"{self.source}: {name} missing; rebuild the folder with `kgitm build-concepts`")
            self._counts = np.load(self.source / "counts.npy", allow_pickle=False)
            self._cooc = np.load(self.source / "cooccurrence.npy", allow_pickle=False)
            self._origin = {"concepts_dir": str(self.source)}
        else:
            if self._vocabulary is None:
                raise ValueError(f"CooccurrenceKnowledge({source!r}): counting a caption file needs a concept vocabulary "
                                 "(vocabulary=...), or build a concepts folder with `kgitm build-concepts`")
            captions = read_captions(self.source, format=corpus_format, split_file=split_file)
            self._concepts = list(self._vocabulary)
            per_caption = ([i for hits in self.concepts_for_words(tokenize(c)) for i in hits] for c in captions)
            self._counts, self._cooc = count_cooccurrences(per_caption, len(self._concepts))
            self._origin = {"corpus": str(self.source), "corpus_sha256": sha256_file(self.source),
                            "split_file": split_file, "num_captions": len(captions)}

    def default_vocabulary(self) -> list[str] | None:
        return list(self._concepts)

    def statistics(self, vocabulary: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """Counts and co-occurrences re-indexed to ``vocabulary``, and the concepts without statistics."""
        vocab = list(vocabulary) if vocabulary is not None else self.vocabulary
        own = {concept_key(c): i for i, c in enumerate(self._concepts)}
        pos = np.array([own.get(concept_key(c), -1) for c in vocab], dtype=np.int64)
        known = pos >= 0
        counts = np.zeros(len(vocab), dtype=np.int64)
        cooc = np.zeros((len(vocab), len(vocab)), dtype=np.int64)
        counts[known] = self._counts[pos[known]]
        cooc[np.ix_(known, known)] = self._cooc[np.ix_(pos[known], pos[known])]
        missing = [c for c, k, n in zip(vocab, known, counts) if not k or n == 0]
        return counts, cooc, missing

    def concept_graph(self, vocabulary: Sequence[str] | None = None) -> ConceptGraph:
        vocab = list(vocabulary) if vocabulary is not None else self.vocabulary
        counts, cooc, missing = self.statistics(vocab)
        adjacency = cvse_normalize(counts, cooc, threshold=self.threshold, column_mass=self.column_mass)
        kinds = self._kinds if self._kinds is not None and vocab == list(self._concepts) else None
        return ConceptGraph(
            vocab,
            adjacency=adjacency,
            kinds=kinds,
            provenance=self._provenance(
                **self._origin, threshold=self.threshold, column_mass=self.column_mass,
                missing_concepts=missing, num_missing_concepts=len(missing),
            ),
        )
