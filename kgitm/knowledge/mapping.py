"""Caption words -> concept ids, as the data pipeline needs them (no string work inside models).

:class:`ConceptIndex` wraps a knowledge source's word mapping for one concept vocabulary. The data
pipeline calls :meth:`ConceptIndex.encode` once per caption when it opens a split; the knowledge
module then only reads the ``(L, K)`` id tensors. Results are cached per distinct word.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

from kgitm.core.types import stack_padded
from kgitm.knowledge.base import KnowledgeSource, concept_key

__all__ = ["ConceptIndex"]


class ConceptIndex:
    """Maps words to at most ``max_per_word`` concept indices of ``concepts``.

    Args:
        source: the knowledge source whose mapping is used (spelling, lemmas, and for WordNet
            synonyms and hypernyms of unseen words).
        concepts: the concept vocabulary (index order).
        max_per_word: concepts kept per word (the first ones the source returns).

    A caption transform of the data pipeline (:mod:`kgitm.pipeline.transforms`): it fills
    ``CaptionInputs.concept_ids``.

    Shapes:
        :meth:`encode` output: ``(L, K)`` long with ``K = max_per_word``, ``-1`` padding;
        :meth:`collate` output: ``(B, L, K)``.
    """

    #: the CaptionInputs field this transform fills
    field = "concept_ids"

    def __init__(self, source: KnowledgeSource, concepts: Sequence[str], *, max_per_word: int) -> None:
        if max_per_word < 1:
            raise ValueError(f"max_per_word must be >= 1, got {max_per_word}")
        self.source = source
        self.concepts = list(concepts)
        self.max_per_word = max_per_word
        self._cache: dict[str, list[int]] = {}

    @property
    def num_concepts(self) -> int:
        return len(self.concepts)

    def __call__(self, word: str) -> list[int]:
        """Concept indices of ``word`` (empty when it maps to none)."""
        if word not in self._cache:
            self._fill([word])
        return self._cache[word]

    def _fill(self, words: Iterable[str]) -> None:
        new = [w for w in dict.fromkeys(words) if w not in self._cache]
        if new:
            for w, hits in zip(new, self.source.concepts_for_words(new, self.concepts)):
                self._cache[w] = list(hits)[: self.max_per_word]

    def encode(self, tokens: Sequence[str]) -> Tensor:
        """The concept ids of each token of one caption, ``(L, K)``, ``-1`` where a token has fewer."""
        self._fill(tokens)
        out = torch.full((len(tokens), self.max_per_word), -1, dtype=torch.long)
        for j, t in enumerate(tokens):
            hits = self._cache[t]
            if hits:
                out[j, : len(hits)] = torch.tensor(hits, dtype=torch.long)
        return out

    def collate(self, items: list[Tensor], width: int) -> Tensor:
        """Pad the per-caption ``(n_b, K)`` ids of a batch to ``(B, width, K)`` with ``-1``."""
        return stack_padded(items, width, -1)

    def coverage(self, captions: Iterable[Sequence[str]]) -> tuple[int, Counter[str]]:
        """``(tokens, unmapped)``: the number of tokens of ``captions`` and how often each word that
        maps to no concept occurs (by :func:`~kgitm.knowledge.base.concept_key`)."""
        total, unmapped = 0, Counter()
        for tokens in captions:
            self._fill(tokens)
            total += len(tokens)
            unmapped.update(concept_key(t) for t in tokens if not self._cache[t])
        return total, unmapped
