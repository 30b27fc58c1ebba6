"""Diagnostic sets of the dev and test splits.

Pairs of one image: relation swap (subject and object exchanged) and attribute swap (two objects'
attributes of one group exchanged). Caption sets over all images (the split's own captions with the
category words replaced, evaluated as retrieval): the paraphrase shifts (``PARAPHRASES``; the
``paraphrase_wordnet`` set uses the paraphrases WordNet reaches, ``paraphrase_other`` the others) and
the legacy synonym shift (``render_caption(..., shift=True)``; its words were chosen as WordNet
neighbours, so it is circular for the WordNet source).
"""

from __future__ import annotations

import numpy as np

from .captions import _Captioner, render_caption
from .layout import SceneLayout
from .ontology import ATTRIBUTE_GROUPS, ATTRIBUTES, CATEGORIES, PARAPHRASES, PARAPHRASES_WORDNET, PREDICATES

#: The splits that get diagnostic sets: dev (for decisions) and test (reported once).
DIAGNOSTIC_SPLITS = ("dev", "test")


def paraphrase_nouns(wordnet: bool) -> dict[str, tuple[str, ...]]:
    """Category name -> the paraphrases WordNet reaches (``wordnet=True``) or the others; categories
    without any of that kind are left out (their captions keep the training words)."""
    out = {}
    for name, words in PARAPHRASES.items():
        keep = tuple(w for w in words if (w in PARAPHRASES_WORDNET) == wordnet)
        if keep:
            out[name] = keep
    return out


def _relation_swap(img: SceneLayout, cap: _Captioner, rng: np.random.Generator) -> tuple[str, str, list[str]] | None:
    for s, p, o in img.relations:
        pred = PREDICATES[p]
        if pred.symmetric:
            continue
        S, O = img.objects[s], img.objects[o]
        phrase = pred.surface[int(rng.integers(len(pred.surface)))]
        lead = [[], ["there is"], ["a photo of"]][int(rng.integers(3))]
        tail = cap.scene_suffix(img, rng, 0.5)
        ns, no = cap.np(S, rng, attributes=False), cap.np(O, rng, attributes=False)
        pos = render_caption([*lead, ns, phrase, no, *tail])
        neg = render_caption([*lead, no, phrase, ns, *tail])
        return pos, neg, [CATEGORIES[S.category].name, pred.name, CATEGORIES[O.category].name]
    return None


def _attribute_swap(img: SceneLayout, cap: _Captioner, rng: np.random.Generator) -> tuple[str, str, list[list[str]]] | None:
    obs = img.objects
    cands = []
    for i in range(len(obs)):
        for j in range(len(obs)):
            if i == j:
                continue
            ci, cj = CATEGORIES[obs[i].category], CATEGORIES[obs[j].category]
            for ai in obs[i].attributes:
                for aj in obs[j].attributes:
                    an_i, an_j = ATTRIBUTES[ai], ATTRIBUTES[aj]
                    if (ai != aj and ATTRIBUTE_GROUPS[an_i] == ATTRIBUTE_GROUPS[an_j]
                            and an_i in cj.attributes and an_j in ci.attributes
                            and ai not in obs[j].attributes and aj not in obs[i].attributes):
                        cands.append((i, ai, j, aj))
    if not cands:
        return None
    i, ai, j, aj = cands[int(rng.integers(len(cands)))]
    ni, nj = cap.np(obs[i], rng, attributes=False), cap.np(obs[j], rng, attributes=False)
    rel = next((p for s, p, o in img.relations if (s, o) == (i, j)), None)
    middle = PREDICATES[rel].surface[0] if rel is not None else "and"
    tail = cap.scene_suffix(img, rng, 0.5)

    def text(x: int, y: int) -> str:
        return render_caption([("np", ni[1], (x,), ni[3]), middle, ("np", nj[1], (y,), nj[3]), *tail])

    names = [[CATEGORIES[obs[i].category].name, ATTRIBUTES[ai]], [CATEGORIES[obs[j].category].name, ATTRIBUTES[aj]]]
    return text(ai, aj), text(aj, ai), names
