"""SPICE-style scene-graph tuple F1 (Anderson et al., ECCV 2016), used to score caption parsers.

A scene graph becomes a set of tuples: objects ``(name,)``, attributes ``(name, attribute)`` and
relations ``(subject, predicate, object)``. Every element is normalised (lower case, articles
dropped, WordNet lemma by ``morphy``: nouns for objects, verbs for predicate words, verb then
adjective for attributes, number words as digits). A candidate tuple matches a reference tuple of
the same kind when every element matches exactly or through a shared WordNet synset (as SPICE).
Matching is one-to-one per caption: exact matches first, then synonym matches.

Scores: per caption precision = matches / candidate tuples, recall = matches / reference tuples.
The corpus ``f1`` is **micro-averaged** (matches, candidate and reference tuples summed over the
corpus before P/R/F), reported overall and per tuple type; ``macro_f1`` is the mean of per-caption
F1, which is what the SPICE tool reports as its corpus score.

WordNet 3.0 WNDB files (``index.{noun,verb,adj,adv}`` and ``*.exc``) are read from ``wordnet_dir``
(default ``$KGITM_WORDNET_DIR`` or ``/usr/share/wordnet``); without them only exact matches count
(lemmatisation falls back to the words themselves).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from kgitm.core.wordnet import load_wordnet
from kgitm.graphs.types import SceneGraph

TupleT = tuple[str, ...]
_KINDS = ("object", "attribute", "relation")
_ARTICLES = frozenset(("a", "an", "the"))
_NUMBER_WORDS = {
    w: str(i) for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve".split()
    )
}


class TupleNormalizer:
    """Normalises tuple elements and tests synonym matches (memoised)."""

    def __init__(self, wordnet_dir: str | Path | None = None) -> None:
        self.wn = load_wordnet(wordnet_dir)  # None without the WordNet files: exact matches only
        self._cache: dict[tuple[str, str], str] = {}
        self._syn: dict[tuple[str, str], frozenset] = {}

    def _word(self, w: str, order: str) -> str:
        if w in _NUMBER_WORDS:
            return _NUMBER_WORDS[w]
        if self.wn is None or w.isdigit():
            return w
        for p in order:
            b = self.wn.base_form(w, p)
            if b is not None:
                return b
        return w

    def element(self, text: str, role: str) -> str:
        """Normalise ``text`` playing ``role`` (``object``, ``attribute`` or ``predicate``)."""
        key = (text, role)
        r = self._cache.get(key)
        if r is None:
            words = [w for w in text.lower().replace("_", " ").split() if w not in _ARTICLES] or [text.lower()]
            if role == "object":
                phrase = "_".join(words)
                base = self.wn.base_form(phrase, "n") if self.wn is not None and len(words) > 1 else None
                if base:
                    words = base.split("_")
                else:
                    words[-1] = self._word(words[-1], "n")
            elif role == "predicate":
                words = [self._word(w, "v") for w in words]
            else:
                words = [self._word(w, "va") for w in words]
            r = " ".join(words)
            self._cache[key] = r
        return r

    def synsets(self, element: str, role: str) -> frozenset:
        key = (element, role)
        s = self._syn.get(key)
        if s is None:
            s = self.wn.synset_keys(element, "n" if role == "object" else None) if self.wn is not None else frozenset()
            self._syn[key] = s
        return s

    def match(self, a: str, b: str, role: str) -> bool:
        if a == b:
            return True
        if self.synsets(a, role) & self.synsets(b, role):
            return True
        wa, wb = a.split(), b.split()
        if len(wa) > 1 and len(wa) == len(wb):
            return all(x == y or (self.synsets(x, role) & self.synsets(y, role)) for x, y in zip(wa, wb))
        return False

    def tuples(self, sg: SceneGraph | Iterable[TupleT]) -> set[TupleT]:
        """Normalised tuple set of a scene graph, or of raw tuples (FACTUAL ``is`` triples are attributes)."""
        out: set[TupleT] = set()
        if isinstance(sg, SceneGraph):
            names = [o.name for o in sg.objects]
            raw: list[TupleT] = [(n,) for n in names]
            raw += [(names[o], "is", a) for o, a in sg.attributes]
            raw += [(names[s], p, names[o]) for s, p, o in sg.relations]
        else:
            raw = list(sg)
        for t in raw:
            if len(t) == 1:
                out.add((self.element(t[0], "object"),))
            elif len(t) == 3 and t[1] == "is":
                out.add((self.element(t[0], "object"), self.element(t[2], "attribute")))
                out.add((self.element(t[0], "object"),))
            elif len(t) == 3:
                s, o = self.element(t[0], "object"), self.element(t[2], "object")
                out.add((s, self.element(t[1], "predicate"), o))
                out.add((s,))
                out.add((o,))
        return out


def _roles(t: TupleT) -> tuple[str, ...]:
    return ("object",) if len(t) == 1 else ("object", "attribute") if len(t) == 2 else ("object", "predicate", "object")


def count_matches(cand: set[TupleT], ref: set[TupleT], norm: TupleNormalizer) -> int:
    """One-to-one matches between two normalised tuple sets: exact first, then WordNet synonyms."""
    exact = cand & ref
    n = len(exact)
    rest_ref = [r for r in ref if r not in exact]
    for c in cand:
        if c in exact:
            continue
        roles = _roles(c)
        for k, r in enumerate(rest_ref):
            if len(r) == len(c) and all(norm.match(x, y, role) for x, y, role in zip(c, r, roles)):
                n += 1
                rest_ref.pop(k)
                break
    return n


def _prf(tp: int, nc: int, nr: int) -> dict[str, float]:
    p = tp / nc if nc else 0.0
    r = tp / nr if nr else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return {"precision": p, "recall": r, "f1": f, "matches": tp, "candidates": nc, "references": nr}


@dataclass
class SpiceResult:
    """Corpus SPICE-style scores: ``overall`` and ``per_type`` (object/attribute/relation) dicts with
    precision, recall, micro f1 and counts; ``macro_f1`` the mean per-caption F1; ``per_caption``
    the per-caption (precision, recall, f1)."""

    overall: dict[str, float]
    per_type: dict[str, dict[str, float]]
    macro_f1: float
    per_caption: list[tuple[float, float, float]] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"overall": self.overall, "per_type": self.per_type, "macro_f1": self.macro_f1}


def spice_score(
    candidates: Sequence[SceneGraph | Iterable[TupleT]],
    references: Sequence[SceneGraph | Iterable[TupleT]],
    *,
    wordnet_dir: str | Path | None = None,
) -> SpiceResult:
    """Score candidate scene graphs against references (same order).

    Args:
        candidates: predicted scene graphs (or raw tuples).
        references: reference scene graphs (or raw FACTUAL tuples).
        wordnet_dir: WNDB folder (default ``$KGITM_WORDNET_DIR`` or ``/usr/share/wordnet``).
    """
    if len(candidates) != len(references):
        raise ValueError(f"{len(candidates)} candidate graphs but {len(references)} references")
    norm = TupleNormalizer(wordnet_dir)
    tot = {k: [0, 0, 0] for k in _KINDS}
    per_caption = []
    for c, r in zip(candidates, references):
        ct, rt = norm.tuples(c), norm.tuples(r)
        tp_all = nc_all = nr_all = 0
        for kind, size in zip(_KINDS, (1, 2, 3)):
            ck = {t for t in ct if len(t) == size}
            rk = {t for t in rt if len(t) == size}
            tp = count_matches(ck, rk, norm)
            tot[kind][0] += tp
            tot[kind][1] += len(ck)
            tot[kind][2] += len(rk)
            tp_all += tp
            nc_all += len(ck)
            nr_all += len(rk)
        s = _prf(tp_all, nc_all, nr_all)
        per_caption.append((s["precision"], s["recall"], s["f1"]))
    overall = _prf(*(sum(tot[k][i] for k in _KINDS) for i in range(3)))
    per_type = {k: _prf(*tot[k]) for k in _KINDS}
    macro = sum(f for _, _, f in per_caption) / len(per_caption) if per_caption else 0.0
    return SpiceResult(overall, per_type, macro, per_caption)
