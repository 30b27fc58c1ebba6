"""The trivial source (no knowledge) and the union of several sources."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal

import torch

from kgitm.knowledge.base import ConceptGraph, KnowledgeSource

__all__ = ["NoKnowledge", "UnionKnowledge"]


class NoKnowledge(KnowledgeSource):
    """No external knowledge: every concept is an isolated node (the ablation baseline).

    Args:
        vocabulary: concept vocabulary (list or file, see :func:`~kgitm.knowledge.base.load_vocabulary`).
        self_loops: give each concept a self loop of weight 1, i.e. the identity adjacency, so a GCN
            over the graph reduces to a per-node transform (default ``True``); otherwise no edges.
    """

    name = "none"

    def __init__(self, *, vocabulary: list[str] | str | None = None, self_loops: bool = True) -> None:
        super().__init__(vocabulary=vocabulary)
        self.self_loops = self_loops

    def concept_graph(self, vocabulary: Sequence[str] | None = None) -> ConceptGraph:
        vocab = list(vocabulary) if vocabulary is not None else self.vocabulary
        n = len(vocab)
        adjacency = torch.eye(n) if self.self_loops else torch.zeros(n, n)
        return ConceptGraph(vocab, adjacency=adjacency, provenance=self._provenance(self_loops=self.self_loops, missing_concepts=[]))


class UnionKnowledge(KnowledgeSource):
    """Several sources together: a word maps to the union of the concepts each source maps it to, and
    the adjacency is the elementwise max or mean of the sources' adjacencies over the same vocabulary.

    Node features come from the first source whose graph has them. A concept is reported missing
    only when it is missing from every source.

    Args:
        sources: the knowledge sources.
        combine: ``max`` (default) or ``mean`` (zeros of sources without the edge included).
        vocabulary: default concept vocabulary (default: the first source that has one).
    """

    name = "union"

    def __init__(
        self,
        sources: list[KnowledgeSource],
        *,
        combine: Literal["max", "mean"] = "max",
        vocabulary: list[str] | str | None = None,
    ) -> None:
        super().__init__(vocabulary=vocabulary)
        if not sources:
            raise ValueError("UnionKnowledge needs at least one source")
        if combine not in ("max", "mean"):
            raise ValueError(f"combine must be 'max' or 'mean', got {combine!r}")
        self.sources = list(sources)
        self.combine = combine

    def default_vocabulary(self) -> list[str] | None:
        for s in self.sources:
            try:
                return s.vocabulary
            except ValueError:
                continue
        return None

    def concepts_for_words(self, words: Iterable[str], vocabulary: Sequence[str] | None = None) -> list[list[int]]:
        words = list(words)
        vocab = list(vocabulary) if vocabulary is not None else self.vocabulary
        per_source = [s.concepts_for_words(words, vocab) for s in self.sources]
        return [sorted({i for m in per_source for i in m[k]}) for k in range(len(words))]

    def graph_key(self) -> dict | None:
        """The sources' keys, when every one of them has one (else the union is rebuilt each time)."""
        keys = [s.graph_key() for s in self.sources]
        return None if any(k is None for k in keys) else {"source": self.name, "combine": self.combine, "sources": keys}

    def concept_graph(self, vocabulary: Sequence[str] | None = None) -> ConceptGraph:
        vocab = list(vocabulary) if vocabulary is not None else self.vocabulary
        graphs = [s.concept_graph(vocab) for s in self.sources]
        stack = torch.stack([g.dense() for g in graphs])
        adjacency = stack.amax(0) if self.combine == "max" else stack.mean(0)
        features = next((g.features for g in graphs if g.features is not None), None)
        kinds = next((g.kinds for g in graphs if g.kinds is not None), None)
        missing_sets = [set(g.provenance.get("missing_concepts", [])) for g in graphs]
        missing_all = [c for c in vocab if all(c in m for m in missing_sets)]
        return ConceptGraph(
            vocab,
            adjacency=adjacency,
            features=features,
            kinds=kinds,
            provenance=self._provenance(
                combine=self.combine,
                sources=[g.provenance for g in graphs],
                missing_concepts=missing_all,
                num_missing_concepts=len(missing_all),
            ),
        )
