"""Concept graphs and the interface every knowledge source implements.

A :class:`ConceptGraph` is a weighted graph over a list of concept names (objects, properties,
motions in CVSE's terms) with optional node features; a :class:`KnowledgeSource` maps caption words
and object labels to concept indices and builds a concept graph over a concept vocabulary.

Adjacency convention: ``adjacency[i, j]`` is the weight with which concept ``i`` aggregates concept
``j`` (a GCN layer computes ``adjacency @ X``). :meth:`ConceptGraph.to_pyg` turns it into PyG's
message-passing convention (edge ``j -> i`` with weight ``adjacency[i, j]``), so that an
``aggr="add"`` layer over ``edge_index``/``edge_weight`` reproduces ``adjacency @ X``.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from kgitm.core.io import atomic_write_json, atomic_write_npy
from kgitm.core.lexicon import detachment_candidates

__all__ = [
    "ConceptGraph",
    "ConceptMapper",
    "KnowledgeSource",
    "concept_key",
    "load_vocabulary",
    "unmapped_words",
]

FORMAT_VERSION = 1

def concept_key(word: str) -> str:
    """Normal form used to compare words with concept names: lower case, spaces as ``_``."""
    return "_".join(word.lower().split())


# ---- the graph ------------------------------------------------------------------------------


@dataclass
class ConceptGraph:
    """A weighted concept graph.

    Either ``adjacency`` (dense) or ``edge_index``/``edge_weight`` (sparse, in the adjacency convention:
    edge ``(i, j)`` carries ``adjacency[i, j]``) is given; the other form is derived on request.

    Args:
        concepts: concept names, index order.
        adjacency: dense float32 adjacency.
        edge_index: ``(i, j)`` pairs of the non-zero entries.
        edge_weight: their weights (float32).
        features: optional node features (e.g. GloVe vectors).
        kinds: optional kind of each concept (``OBJ``/``PROP``/``MOT`` for CVSE vocabularies).
        provenance: how the graph was made (source, files, options, missing concepts).

    Shapes:
        adjacency: ``(C, C)``; edge_index: ``(2, E)``; edge_weight: ``(E,)``; features: ``(C, F)``.
    """

    concepts: list[str]
    adjacency: torch.Tensor | None = None
    edge_index: torch.Tensor | None = None
    edge_weight: torch.Tensor | None = None
    features: torch.Tensor | None = None
    kinds: list[str] | None = None
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.concepts = list(self.concepts)
        n = len(self.concepts)
        if len(set(self.concepts)) != n:
            dup = [c for c, k in Counter(self.concepts).items() if k > 1]
            raise ValueError(f"concept names must be unique; repeated: {dup[:10]}")
        if self.adjacency is None and self.edge_index is None:
            raise ValueError("give a dense adjacency or edge_index/edge_weight")
        if self.adjacency is not None:
            self.adjacency = torch.as_tensor(self.adjacency, dtype=torch.float32)
            if tuple(self.adjacency.shape) != (n, n):
                raise ValueError(f"adjacency has shape {tuple(self.adjacency.shape)}, expected ({n}, {n})")
        if self.edge_index is not None:
            self.edge_index = torch.as_tensor(self.edge_index, dtype=torch.long).reshape(2, -1)
            if self.edge_weight is None:
                self.edge_weight = torch.ones(self.edge_index.shape[1])
            self.edge_weight = torch.as_tensor(self.edge_weight, dtype=torch.float32).reshape(-1)
            if self.edge_weight.shape[0] != self.edge_index.shape[1]:
                raise ValueError("edge_weight must have one weight per edge")
            if self.edge_index.numel() and (self.edge_index.min() < 0 or self.edge_index.max() >= n):
                raise ValueError(f"edge_index refers to nodes outside 0..{n - 1}")
        if self.features is not None:
            self.features = torch.as_tensor(self.features, dtype=torch.float32)
            if self.features.ndim != 2 or self.features.shape[0] != n:
                raise ValueError(f"features must have shape ({n}, F), got {tuple(self.features.shape)}")
        if self.kinds is not None and len(self.kinds) != n:
            raise ValueError(f"kinds has {len(self.kinds)} entries for {n} concepts")

    @property
    def num_concepts(self) -> int:
        return len(self.concepts)

    @property
    def index(self) -> dict[str, int]:
        """Concept name -> index."""
        return {c: i for i, c in enumerate(self.concepts)}

    def dense(self) -> torch.Tensor:
        """The ``(C, C)`` float32 adjacency (duplicate sparse edges are summed)."""
        if self.adjacency is not None:
            return self.adjacency
        n = self.num_concepts
        out = torch.zeros(n, n)
        out.index_put_((self.edge_index[0], self.edge_index[1]), self.edge_weight, accumulate=True)
        return out

    def sparse(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(edge_index, edge_weight)`` of the non-zero entries, adjacency convention, row-major order."""
        if self.edge_index is not None:
            return self.edge_index, self.edge_weight
        idx = self.adjacency.nonzero().t().contiguous()
        return idx, self.adjacency[idx[0], idx[1]]

    def to_networkx(self):  # -> networkx.DiGraph
        """A ``networkx.DiGraph``: node ``i`` has attribute ``name`` (and ``kind``), edge ``i -> j`` has
        ``weight = adjacency[i, j]`` (so ``nx.to_numpy_array`` gives back the adjacency)."""
        import networkx as nx

        g = nx.DiGraph()
        for i, name in enumerate(self.concepts):
            attrs = {"name": name}
            if self.kinds is not None:
                attrs["kind"] = self.kinds[i]
            g.add_node(i, **attrs)
        idx, w = self.sparse()
        g.add_weighted_edges_from(zip(idx[0].tolist(), idx[1].tolist(), w.tolist()))
        return g

    def to_pyg(self):  # -> torch_geometric.data.Data
        """``Data(x, edge_index, edge_weight)`` in PyG's message-passing convention: source ``j`` ->
        target ``i`` with weight ``adjacency[i, j]``, so summing messages gives ``adjacency @ x``.
        ``x`` is the feature matrix, or the identity when there are no features."""
        from torch_geometric.data import Data

        idx, w = self.sparse()
        x = self.features if self.features is not None else torch.eye(self.num_concepts)
        return Data(x=x, edge_index=idx.flip(0).contiguous(), edge_weight=w, num_nodes=self.num_concepts)

    # ---- files --------------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """Write the graph to the folder ``path`` (see ``docs/knowledge.md``): ``concepts.json``,
        ``adjacency.npy`` or ``edge_index.npy`` + ``edge_weight.npy``, optional ``features.npy``, and
        ``provenance.json`` last. Every file is written atomically; stale files of the other
        adjacency form are removed."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path / "concepts.json", {"format_version": FORMAT_VERSION, "concepts": self.concepts, "kinds": self.kinds})
        if self.adjacency is not None:
            atomic_write_npy(path / "adjacency.npy", self.adjacency.numpy().astype(np.float32))
            stale = ["edge_index.npy", "edge_weight.npy"]
        else:
            atomic_write_npy(path / "edge_index.npy", self.edge_index.numpy().astype(np.int64))
            atomic_write_npy(path / "edge_weight.npy", self.edge_weight.numpy().astype(np.float32))
            stale = ["adjacency.npy"]
        if self.features is not None:
            atomic_write_npy(path / "features.npy", self.features.numpy().astype(np.float32))
        else:
            stale.append("features.npy")
        for name in stale:
            (path / name).unlink(missing_ok=True)
        atomic_write_json(path / "provenance.json", self.provenance)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "ConceptGraph":
        """Read a folder written by :meth:`save` (or by ``kgitm build-concepts``)."""
        path = Path(path)
        meta_file = path / "concepts.json"
        if not meta_file.is_file():
            raise FileNotFoundError(f"{path}: no concepts.json; not a concept graph folder (build one with `kgitm build-concepts`)")
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{meta_file}: format_version {meta.get('format_version')!r}, this kgitm reads {FORMAT_VERSION}")

        def npy(name: str) -> torch.Tensor | None:
            f = path / name
            return torch.from_numpy(np.load(f, allow_pickle=False)) if f.is_file() else None

        prov_file = path / "provenance.json"
        provenance = json.loads(prov_file.read_text(encoding="utf-8")) if prov_file.is_file() else {}
        adjacency = npy("adjacency.npy")
        edge_index = npy("edge_index.npy") if adjacency is None else None
        if adjacency is None and edge_index is None:
            raise FileNotFoundError(f"{path}: neither adjacency.npy nor edge_index.npy found")
        return cls(
            concepts=meta["concepts"],
            adjacency=adjacency,
            edge_index=edge_index,
            edge_weight=npy("edge_weight.npy") if edge_index is not None else None,
            features=npy("features.npy"),
            kinds=meta.get("kinds"),
            provenance=provenance,
        )


def load_vocabulary(vocabulary: Sequence[str] | str | Path) -> list[str]:
    """A concept vocabulary from a list, a ``concepts.json`` folder or file, a CVSE
    ``category_concepts.json`` (``{word: index}``), or a text file with one concept per line."""
    if not isinstance(vocabulary, (str, Path)):
        return [str(v) for v in vocabulary]
    path = Path(vocabulary)
    if path.is_dir():
        path = path / ("concepts.json" if (path / "concepts.json").is_file() else "category_concepts.json")
    if not path.is_file():
        raise FileNotFoundError(f"concept vocabulary {path} not found")
    if path.suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict) and "concepts" in data:
            return list(data["concepts"])
        if isinstance(data, dict):  # CVSE category_concepts.json
            return [w for w, _ in sorted(data.items(), key=lambda kv: kv[1])]
        return [str(w) for w in data]
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


# ---- word -> concept mapping ----------------------------------------------------------------

class ConceptMapper:
    """Maps words to indices of a concept vocabulary.

    A word maps to the concept spelled the same way (after :func:`concept_key`); otherwise to every
    concept whose name, or whose base form, equals one of the word's base forms. ``lemmatize`` gives
    base forms (default: irregular table + WordNet's detachment rules, kept only when they hit a concept).

    Args:
        vocabulary: concept names.
        lemmatize: ``word -> candidate base forms`` (default: the rule-based candidates).
        lemmatize_concepts: also index concepts by their base forms (only sensible when ``lemmatize``
            returns real lemmas, e.g. WordNet's morphy, so that ``"instrument"`` finds ``"instruments"``).
    """

    def __init__(self, vocabulary: Sequence[str], lemmatize: Any = None, *, lemmatize_concepts: bool = False) -> None:
        self.vocabulary = [concept_key(c) for c in vocabulary]
        self._lemmatize = lemmatize or detachment_candidates
        self.exact: dict[str, int] = {}
        for i, c in enumerate(self.vocabulary):
            self.exact.setdefault(c, i)
        self.by_lemma: dict[str, list[int]] = {}
        for i, c in enumerate(self.vocabulary):
            for lemma in [c, *self._lemmatize(c)] if lemmatize_concepts else [c]:
                self.by_lemma.setdefault(lemma, [])
                if i not in self.by_lemma[lemma]:
                    self.by_lemma[lemma].append(i)
        self._cache: dict[str, list[int]] = {}

    def __call__(self, word: str) -> list[int]:
        key = concept_key(word)
        if key not in self._cache:
            if key in self.exact:
                hits = [self.exact[key]]
            else:
                hits = sorted({i for form in self._lemmatize(key) for i in self.by_lemma.get(form, ())}
                              | set(self.by_lemma.get(key, ())))
            self._cache[key] = hits
        return list(self._cache[key])


def unmapped_words(source: "KnowledgeSource", words: Iterable[str], vocabulary: Sequence[str] | None = None) -> Counter[str]:
    """How often each word of ``words`` maps to no concept of ``vocabulary`` (default: the source's),
    by its :func:`concept_key`: the coverage report of a caption set."""
    words = list(words)
    hits = source.concepts_for_words(words, vocabulary)
    return Counter(concept_key(w) for w, h in zip(words, hits) if not h)


class KnowledgeSource(ABC):
    """External knowledge over concepts: maps words to concepts and builds concept graphs.

    Subclasses set ``name`` (the registry name used in configs and provenance) and implement
    :meth:`concept_graph`. :meth:`concepts_for_words` is a pure function of its arguments (the data
    pipeline calls it once per distinct word); :func:`unmapped_words` reports coverage.

    Args:
        vocabulary: default concept vocabulary: a list of concept names or a file/folder that
            :func:`load_vocabulary` reads (default ``None``: the source's own, where it has one).
    """

    name: ClassVar[str] = "base"
    #: whether :meth:`lemmatize` returns only real lemmas (then concepts are indexed by them too)
    validated_lemmas: ClassVar[bool] = False

    def __init__(self, *, vocabulary: list[str] | str | None = None) -> None:
        self._vocabulary = load_vocabulary(vocabulary) if vocabulary is not None else None
        #: the file or folder the vocabulary was read from (``None`` for a list): cached graphs go beside it
        self.vocabulary_path: str | None = str(vocabulary) if isinstance(vocabulary, (str, Path)) else None
        self._mappers: dict[tuple[str, ...], ConceptMapper] = {}

    # vocabulary ---------------------------------------------------------------------------

    def default_vocabulary(self) -> list[str] | None:
        """The source's own concept list (``None`` when it has none)."""
        return None

    @property
    def vocabulary(self) -> list[str]:
        vocab = self._vocabulary if self._vocabulary is not None else self.default_vocabulary()
        if vocab is None:
            raise ValueError(f"knowledge source {self.name!r} has no concept vocabulary: pass vocabulary=... "
                             "(a list, a concepts folder built by `kgitm build-concepts`, or category_concepts.json)")
        return vocab

    def lemmatize(self, word: str) -> list[str]:
        """Candidate base forms of ``word`` (rule-based; WordNet-backed sources override this)."""
        return detachment_candidates(word)

    def _mapper(self, vocabulary: Sequence[str]) -> ConceptMapper:
        key = tuple(vocabulary)
        if key not in self._mappers:
            self._mappers[key] = ConceptMapper(vocabulary, self.lemmatize, lemmatize_concepts=self.validated_lemmas)
        return self._mappers[key]

    def concepts_for_words(self, words: Iterable[str], vocabulary: Sequence[str] | None = None) -> list[list[int]]:
        """Concept indices (into ``vocabulary``, default :attr:`vocabulary`) of each word or object label.

        Words that map to nothing get ``[]``.
        """
        mapper = self._mapper(list(vocabulary) if vocabulary is not None else self.vocabulary)
        return [mapper(w) for w in words]

    def graph_key(self) -> dict[str, Any] | None:
        """What the concept graph depends on besides the vocabulary (options, input file
        fingerprints), for :func:`kgitm.knowledge.cache.cached_concept_graph`; ``None`` (the default)
        for sources that are cheap to build, which are then never cached."""
        return None

    @abstractmethod
    def concept_graph(self, vocabulary: Sequence[str] | None = None) -> ConceptGraph:
        """The concept graph over ``vocabulary`` (default :attr:`vocabulary`), in that order.

        Concepts the source knows nothing about become isolated nodes and are listed in
        ``provenance["missing_concepts"]``.
        """

    def _provenance(self, **extra: Any) -> dict[str, Any]:
        return {"source": self.name, **extra}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"
