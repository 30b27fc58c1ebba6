"""SceneGraphParser (``sng_parser``, Mao et al.) as a baseline for the benchmark scripts.

Its output (entities with ``lemma_head`` and ``modifiers``; relations with ``subject``/``object``
entity indices and ``lemma_relation``) is converted to the FACTUAL/SPICE tuples that
:mod:`kgitm.graphs.spice` scores: objects ``(lemma_head,)``, attributes ``(lemma_head, is, modifier)``
for ``amod`` and ``nummod`` modifiers (determiners are not attributes), relations
``(subject, lemma_relation, object)``.
"""

from __future__ import annotations


def load_sng(model: str):
    """``sng_parser.Parser`` on the spaCy backend with the given pipeline (loaded by sng_parser itself)."""
    import sng_parser

    return sng_parser.Parser("spacy", model=model)


def sng_tuples(graph: dict) -> list[tuple[str, ...]]:
    ents = graph["entities"]
    out: list[tuple[str, ...]] = []
    for e in ents:
        out.append((e["lemma_head"],))
        for m in e["modifiers"]:
            if m["dep"] in ("amod", "nummod"):
                out.append((e["lemma_head"], "is", m["lemma_span"]))
    for r in graph["relations"]:
        out.append((ents[r["subject"]]["lemma_head"], r["lemma_relation"], ents[r["object"]]["lemma_head"]))
    return out
