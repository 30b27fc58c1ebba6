"""ConceptNet 5 assertions as knowledge, streamed from the official dump.

The dump (``conceptnet-assertions-5.7.0.csv.gz``, about 10 GB uncompressed) is tab-separated with five
columns: assertion URI, relation (``/r/IsA``), start and end concept URIs (``/c/en/dog/n/...``) and a
JSON object whose ``weight`` is the assertion's strength. It is read line by line (gzip or plain),
so memory holds only the edges between concepts of the requested vocabulary.
"""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from kgitm.knowledge.base import ConceptGraph, KnowledgeSource
from kgitm.core.io import code_fingerprint, file_fingerprint

__all__ = ["Assertion", "ConceptNetKnowledge", "DEFAULT_RELATIONS", "iter_assertions"]

#: relations kept by default: the ones that say something about what co-occurs in a scene
DEFAULT_RELATIONS: tuple[str, ...] = (
    "RelatedTo", "IsA", "PartOf", "HasA", "UsedFor", "CapableOf", "AtLocation", "Synonym", "SimilarTo",
    "HasProperty", "MadeOf", "LocatedNear", "ReceivesAction",
)


@dataclass(frozen=True)
class Assertion:
    """One kept row: relation name without ``/r/``, start and end terms (``hot_dog``), weight."""

    relation: str
    start: str
    end: str
    weight: float


def _term(uri: str, language: str) -> str | None:
    # /c/<lang>/<term>[/<pos>[/...]]
    parts = uri.split("/")
    if len(parts) < 4 or parts[1] != "c" or parts[2] != language:
        return None
    return parts[3]


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return open(path, encoding="utf-8")  # noqa: SIM115


def iter_assertions(
    path: str | Path,
    *,
    language: str = "en",
    relations: Sequence[str] | None = DEFAULT_RELATIONS,
) -> Iterator[Assertion]:
    """Stream the assertions of ``path`` whose both ends are in ``language`` and whose relation is
    listed (``None``: every relation).

    Raises:
        FileNotFoundError: ``path`` is missing.
        ValueError: a row without five tab-separated columns or with unreadable JSON (file and line named).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ConceptNet assertions file {path} not found (download conceptnet-assertions-5.7.0.csv.gz)")
    wanted = None if relations is None else {r.removeprefix("/r/").strip("/") for r in relations}
    with _open_text(path) as f:
        for lineno, line in enumerate(f, 1):
            cols = line.rstrip("\n").split("\t")
            if len(cols) != 5:
                raise ValueError(f"{path}:{lineno}: expected 5 tab-separated columns (uri, relation, start, end, json), got {len(cols)}")
            rel = cols[1].removeprefix("/r/").strip("/")
            if wanted is not None and rel not in wanted:
                continue
            start, end = _term(cols[2], language), _term(cols[3], language)
            if start is None or end is None:
                continue
            try:
                weight = float(json.loads(cols[4]).get("weight", 1.0))
            except (json.JSONDecodeError, AttributeError, TypeError, ValueError) as exc:
                raise ValueError(f"{path}:{lineno}: unreadable JSON info column ({exc})") from exc
            yield Assertion(rel, start, end, weight)


class ConceptNetKnowledge(KnowledgeSource):
    """Edges between concepts that ConceptNet relates, weighted by the assertion weight.

    An assertion links concepts ``i`` and ``j`` when its start and end terms map to them
    (:meth:`concepts_for_words`: same spelling, or same base form). Several assertions between the same
    pair keep the largest weight; the graph is undirected (both directions get the weight) unless
    ``symmetric=False``. With ``normalize=True`` weights are divided by the largest one, into ``(0, 1]``.

    Args:
        path: the assertions dump (``.csv`` or ``.csv.gz``).
        vocabulary: default concept vocabulary (list or file).
        language: language code of both ends (default ``en``).
        relations: relation names kept (default :data:`DEFAULT_RELATIONS`; ``None`` keeps all).
        symmetric: add each edge in both directions (default ``True``).
        normalize: scale weights to a maximum of 1 (default ``True``).
        self_loops: add weight-1 self loops (default ``False``).
    """

    name = "conceptnet"

    def __init__(
        self,
        path: str,
        *,
        vocabulary: list[str] | str | None = None,
        language: str = "en",
        relations: list[str] | None = list(DEFAULT_RELATIONS),  # noqa: B006 - jsonargparse needs a value
        symmetric: bool = True,
        normalize: bool = True,
        self_loops: bool = False,
    ) -> None:
        super().__init__(vocabulary=vocabulary)
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"ConceptNet assertions file {self.path} not found")
        self.language = language
        self.relations = None if relations is None else list(relations)
        self.symmetric = symmetric
        self.normalize = normalize
        self.self_loops = self_loops

    def graph_key(self) -> dict:
        """Options and the assertions file's fingerprint (the graph is cached: a real dump is large)."""
        return {
            "source": self.name, "code": code_fingerprint("kgitm.knowledge.conceptnet", "kgitm.knowledge.base", "kgitm.core.lexicon"), "file": file_fingerprint(self.path), "language": self.language,
            "relations": self.relations, "symmetric": self.symmetric, "normalize": self.normalize,
            "self_loops": self.self_loops, "lemmas": "kgitm.core.lexicon.detachment_candidates",
        }

    def concept_graph(self, vocabulary: Sequence[str] | None = None) -> ConceptGraph:
        vocab = list(vocabulary) if vocabulary is not None else self.vocabulary
        n = len(vocab)
        mapper = self._mapper(vocab)
        best: dict[tuple[int, int], float] = {}
        kept = 0
        for a in iter_assertions(self.path, language=self.language, relations=self.relations):
            si, ei = mapper(a.start), mapper(a.end)
            if not si or not ei:
                continue
            kept += 1
            for i in si:
                for j in ei:
                    if i == j:
                        continue
                    pairs = [(i, j), (j, i)] if self.symmetric else [(i, j)]
                    for p in pairs:
                        if a.weight > best.get(p, 0.0):
                            best[p] = a.weight
        adjacency = np.zeros((n, n), dtype=np.float32)
        for (i, j), w in best.items():
            adjacency[i, j] = w
        if self.normalize and best:
            adjacency /= adjacency.max()
        touched = (adjacency != 0).any(0) | (adjacency != 0).any(1)
        if self.self_loops:
            adjacency += np.eye(n, dtype=np.float32)
        missing = [c for c, t in zip(vocab, touched) if not t]
        return ConceptGraph(
            vocab,
            adjacency=torch.from_numpy(adjacency),
            provenance=self._provenance(
                path=str(self.path), language=self.language, relations=self.relations, symmetric=self.symmetric,
                normalize=self.normalize, self_loops=self.self_loops, assertions_used=kept,
                missing_concepts=missing, num_missing_concepts=len(missing),
            ),
        )
