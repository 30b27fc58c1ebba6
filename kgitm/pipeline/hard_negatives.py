"""Relation-swap hard negatives: a training caption with the subject and object of a relation exchanged.

A retrieval loss over in-batch negatives almost never meets "a dog left of a man" as the negative
of "a man left of a dog", so a matcher can reach a high RSUM and still ignore the direction of its
relations. Compositional hard negatives (as in NegCLIP, Yuksekgonul et al., "When and why
vision-language models behave like bags-of-words", ICLR 2023) add exactly those captions: the parser's
scene graph says which words are the subject and the object of a relation, and exchanging their
head-noun spans gives a caption with the same words, the same dependency tree over the same
positions, and the opposite relation.

Only asymmetric relations are swapped (``"next to"`` swapped is still true), only head spans of
equal length (so that every other token keeps its position and the stored dependency edges stay
valid), and only when the two heads differ.
"""

from __future__ import annotations

from typing import Iterable, Optional

from kgitm.graphs.types import SceneGraph

#: Predicates whose subject and object can be exchanged without changing the meaning; a swapped
#: caption with one of them would be a false negative. Lemmas as the text parser writes them.
SYMMETRIC_PREDICATES: tuple[str, ...] = ("next to", "near", "close to", "beside", "by", "with", "and", "opposite")


def relation_swap(
    tokens: list[str],
    scene_graph: Optional[SceneGraph],
    *,
    symmetric: Iterable[str] = SYMMETRIC_PREDICATES,
    only: Optional[Iterable[str]] = None,
    choice: int = 0,
) -> Optional[list[str]]:
    """``tokens`` with the head-noun spans of one swappable relation exchanged, or ``None``.

    Args:
        tokens: the caption's project tokens (the parser's token positions).
        scene_graph: the caption's parsed scene graph (:class:`~kgitm.graphs.types.SceneGraph`).
        symmetric: predicate lemmas never swapped (default :data:`SYMMETRIC_PREDICATES`).
        only: if given, swap only relations with one of these predicate lemmas (e.g. the spatial
            ones, so that the negatives test geometry rather than plausibility: "an office in a
            chair" is rejected by a text prior alone).
        choice: which of the swappable relations to use, modulo their number (the dataset passes the
            caption index, so captions with several relations do not always swap the first).

    Returns:
        The swapped token list (same length), or ``None`` when no relation qualifies: no relation, only
        symmetric predicates, heads of different lengths, identical heads, or spans outside ``tokens``.
    """
    if scene_graph is None:
        return None
    skip = {p.lower() for p in symmetric}
    keep = None if only is None else {p.lower() for p in only}
    swaps = []
    for s, predicate, o in scene_graph.relations:
        if predicate.lower() in skip or (keep is not None and predicate.lower() not in keep) or s == o:
            continue
        (s0, s1), (o0, o1) = scene_graph.objects[s].span, scene_graph.objects[o].span
        if s1 - s0 != o1 - o0 or s1 <= s0 or max(s1, o1) > len(tokens) or min(s0, o0) < 0:
            continue
        if s0 < o1 and o0 < s1:  # overlapping spans
            continue
        if tokens[s0:s1] == tokens[o0:o1]:
            continue
        out = list(tokens)
        out[s0:s1], out[o0:o1] = tokens[o0:o1], tokens[s0:s1]
        swaps.append(out)
    return swaps[choice % len(swaps)] if swaps else None
