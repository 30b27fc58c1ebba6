"""WordNet as knowledge: synonymy, hypernymy and taxonomy similarity between concepts."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from functools import cached_property
from typing import Literal

import numpy as np
import torch

from kgitm.knowledge.base import ConceptGraph, KnowledgeSource, concept_key
from kgitm.core.io import code_fingerprint, file_fingerprint
from kgitm.core.wordnet import POS_FILES, WordNet

__all__ = ["WordNetKnowledge"]


class WordNetKnowledge(KnowledgeSource):
    """Concepts linked through WordNet 3.0 (read from the WNDB files by :class:`~kgitm.core.wordnet.WordNet`).

    Each concept is lemmatised (morphy) and looked up as noun, verb, adjective and adverb, keeping the
    first ``max_senses`` synsets of each lemma (WordNet orders senses by frequency). Two concepts are
    linked when a synset of one and a synset of the other (same part of speech) meet within
    ``hypernym_depth`` hypernym steps of both: depth 0 links synonyms (a shared synset), depth 1 adds
    direct hypernyms, depth 2 siblings such as dog/cat under carnivore... The edge weight is the best
    ``measure`` similarity over those synset pairs, and edges below ``min_similarity`` are dropped.
    Words map to concepts through morphy too, so ``"geese"`` finds ``"goose"``.

    Args:
        wordnet_dir: WNDB folder (default ``$KGITM_WORDNET_DIR`` or ``/usr/share/wordnet``).
        vocabulary: default concept vocabulary (list or file).
        measure: ``wup`` (Wu-Palmer, default) or ``path`` (``1 / (path length + 1)``).
        hypernym_depth: hypernym steps searched for a common subsumer (default 2).
        max_senses: senses per lemma considered (default 1, the most frequent; ``None``: all).
        min_similarity: drop edges weaker than this (default 0).
        self_loops: add weight-1 self loops (default ``False``).
        map_synonyms: a word that matches no concept by spelling or lemma maps to the concepts that
            share one of its synsets (``"pooch"`` -> ``dog``) (default ``True``).
        map_hypernym_depth: also map it to concepts whose synset is a hypernym of one of its synsets
            within this many steps (``"poodle"`` -> ``dog``; default 1, 0 disables).
        map_max_senses: senses of such a word considered (default 3; ``None``: all).
    """

    name = "wordnet"
    validated_lemmas = True

    def __init__(
        self,
        *,
        wordnet_dir: str | None = None,
        vocabulary: list[str] | str | None = None,
        measure: Literal["wup", "path"] = "wup",
        hypernym_depth: int = 2,
        max_senses: int | None = 1,
        min_similarity: float = 0.0,
        self_loops: bool = False,
        map_synonyms: bool = True,
        map_hypernym_depth: int = 1,
        map_max_senses: int | None = 3,
    ) -> None:
        super().__init__(vocabulary=vocabulary)
        self.map_synonyms = map_synonyms
        self.map_hypernym_depth = map_hypernym_depth
        self.map_max_senses = map_max_senses
        self._synset_index: dict[tuple[str, ...], dict[tuple[str, int], list[int]]] = {}
        if measure not in ("wup", "path"):
            raise ValueError(f"measure must be 'wup' or 'path', got {measure!r}")
        if hypernym_depth < 0:
            raise ValueError(f"hypernym_depth must be >= 0, got {hypernym_depth}")
        self.wordnet_dir = wordnet_dir
        self.measure = measure
        self.hypernym_depth = hypernym_depth
        self.max_senses = max_senses
        self.min_similarity = min_similarity
        self.self_loops = self_loops
        self.wordnet  # fail now, with the install hint, when the files are missing  # noqa: B018

    @cached_property
    def wordnet(self) -> WordNet:
        return WordNet(self.wordnet_dir)

    def lemmatize(self, word: str) -> list[str]:
        """Morphy base forms of ``word`` in every part of speech (real WordNet lemmas only)."""
        key = concept_key(word)
        return [f for p in POS_FILES for f in self.wordnet.morphy_all(key, p) if f != key]

    def _concept_synsets(self, vocab: Sequence[str]) -> dict[tuple[str, int], list[int]]:
        """Synset key -> indices of the concepts having that synset (cached per vocabulary)."""
        key = tuple(vocab)
        if key not in self._synset_index:
            index: dict[tuple[str, int], list[int]] = defaultdict(list)
            for i, c in enumerate(vocab):
                for syn in self.wordnet.synsets(concept_key(c), max_senses=self.max_senses):
                    index[syn.key].append(i)
            self._synset_index[key] = dict(index)
        return self._synset_index[key]

    def concepts_for_words(self, words, vocabulary: Sequence[str] | None = None) -> list[list[int]]:
        """Spelling or lemma first (as every source); then, for words still unmapped, WordNet
        synonyms and hypernyms (see ``map_synonyms`` / ``map_hypernym_depth``)."""
        words = list(words)
        vocab = list(vocabulary) if vocabulary is not None else self.vocabulary
        out = super().concepts_for_words(words, vocab)
        if not self.map_synonyms:
            return out
        index = self._concept_synsets(vocab)
        wn = self.wordnet
        for j, w in enumerate(words):
            if out[j]:
                continue
            hits: list[int] = []
            for syn in wn.synsets(concept_key(w), max_senses=self.map_max_senses):
                hits += index.get(syn.key, [])
                if not hits and self.map_hypernym_depth > 0:
                    for anc, d in wn.ancestors(syn.key).items():
                        if 0 < d <= self.map_hypernym_depth:
                            hits += index.get(anc, [])
            if hits:
                out[j] = sorted(set(hits))
        return out

    def graph_key(self) -> dict:
        """Options and the WordNet files' fingerprints (the graph is cached: building it reads WordNet)."""
        root = self.wordnet.root
        files = sorted(str(p.name) for p in root.glob("*.*") if p.name.split(".")[0] in ("index", "data"))
        return {
            "source": self.name, "code": code_fingerprint("kgitm.knowledge.wordnet_knowledge", "kgitm.core.wordnet"), "measure": self.measure, "hypernym_depth": self.hypernym_depth,
            "max_senses": self.max_senses, "min_similarity": self.min_similarity, "self_loops": self.self_loops,
            "files": [file_fingerprint(root / f) for f in files],
        }

    def _similarity(self, a: tuple[str, int], b: tuple[str, int]) -> float:
        wn = self.wordnet
        return wn.wup_similarity(a, b) if self.measure == "wup" else wn.path_similarity(a, b)

    def concept_graph(self, vocabulary: Sequence[str] | None = None) -> ConceptGraph:
        vocab = list(vocabulary) if vocabulary is not None else self.vocabulary
        n = len(vocab)
        wn = self.wordnet
        # bounded ancestor -> [(concept, synset key)]
        buckets: dict[tuple[str, int], list[tuple[int, tuple[str, int]]]] = defaultdict(list)
        missing = []
        for i, c in enumerate(vocab):
            synsets = wn.synsets(concept_key(c), max_senses=self.max_senses)
            if not synsets:
                missing.append(c)
            for s in synsets:
                for anc, d in wn.ancestors(s.key).items():
                    if d <= self.hypernym_depth and anc[1] >= 0:
                        buckets[anc].append((i, s.key))
        best = np.zeros((n, n), dtype=np.float32)
        seen: set[tuple[tuple[str, int], tuple[str, int]]] = set()
        for members in buckets.values():
            for x in range(len(members)):
                i, a = members[x]
                for y in range(x + 1, len(members)):
                    j, b = members[y]
                    if i == j or a[0] != b[0] or (a, b) in seen:
                        continue
                    seen.add((a, b))
                    sim = self._similarity(a, b)
                    if sim > best[i, j]:
                        best[i, j] = best[j, i] = sim
        best[best < self.min_similarity] = 0.0
        if self.self_loops:
            best += np.eye(n, dtype=np.float32)
        return ConceptGraph(
            vocab,
            adjacency=torch.from_numpy(best),
            provenance=self._provenance(
                wordnet_dir=str(wn.root), measure=self.measure, hypernym_depth=self.hypernym_depth,
                max_senses=self.max_senses, min_similarity=self.min_similarity, self_loops=self.self_loops,
                missing_concepts=missing, num_missing_concepts=len(missing),
            ),
        )
