"""Captions: the captioner builds each caption of a scene layout as a list of pieces (literal strings
and noun phrases); :func:`render_caption` turns pieces into text, with the training words or with
the held-out shift words.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from .config import SynthScenesConfig
from .layout import SceneLayout, SceneObject
from .ontology import ATTRIBUTES, CATEGORIES, PREDICATES, SCENES

# A caption is a list of pieces: a literal string, or ("np", category, attribute indices, word choice).
Piece = str | tuple


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def render_caption(
    pieces: Sequence[Piece], *, shift: bool = False, nouns: Mapping[str, Sequence[str]] | None = None, pick: int = 0
) -> str:
    """Text of a caption.

    Args:
        pieces: the caption's pieces.
        shift: use each category's legacy held-out shift word where it has one.
        nouns: category name -> held-out words to use instead of the training words (categories not
            in it keep theirs); noun phrase ``k`` of the caption uses word ``(pick + k) % len(words)``
            of its category's list, so that successive captions cycle through a category's words.
        pick: the caption's offset into the word lists (the writer passes the caption's line).
    """
    out = []
    k = 0
    for p in pieces:
        if isinstance(p, str):
            out.append(p)
            continue
        _, cat, attrs, choice = p
        c = CATEGORIES[cat]
        if nouns is not None and nouns.get(c.name):
            held_out = nouns[c.name]
            noun = held_out[(pick + k) % len(held_out)]
        else:
            noun = c.shift_word if shift and c.shift_word else c.train_words[choice]
        k += 1
        words = [ATTRIBUTES[a] for a in attrs] + [noun]
        out.append(f"{_article(words[0])} {' '.join(words)}")
    return " ".join(out)


class _Captioner:
    def __init__(self, cfg: SynthScenesConfig) -> None:
        self.cfg = cfg

    def np(self, ob: SceneObject, rng: np.random.Generator, *, attributes: bool | None = None) -> tuple:
        c = CATEGORIES[ob.category]
        choice = 0
        if len(c.train_words) > 1 and rng.random() < self.cfg.synonym_prob:
            choice = 1 + int(rng.integers(len(c.train_words) - 1))
        mention = rng.random() < self.cfg.attribute_mention_prob if attributes is None else attributes
        return ("np", ob.category, ob.attributes if mention else (), choice)

    def scene_suffix(self, img: SceneLayout, rng: np.random.Generator, prob: float = 0.5) -> list[str]:
        phrases = SCENES[img.scene].phrases
        return [phrases[int(rng.integers(len(phrases)))]] if rng.random() < prob else []

    def relation_clause(self, img: SceneLayout, rel: tuple[int, int, int], rng: np.random.Generator) -> list[Piece]:
        s, p, o = rel
        pred = PREDICATES[p]
        phrase = pred.surface[int(rng.integers(len(pred.surface)))]
        subj = img.objects[s]
        middle = [phrase]
        if CATEGORIES[subj.category].kind == "vehicle" and not pred.semantic and rng.random() < 0.4:
            middle = ["parked", phrase]
        return [self.np(subj, rng), *middle, self.np(img.objects[o], rng)]

    def caption(self, img: SceneLayout, kind: str, rng: np.random.Generator) -> list[Piece]:
        u = lambda seq: seq[int(rng.integers(len(seq)))]  # noqa: E731
        scene = SCENES[img.scene]
        if kind == "relation":
            rel = img.relations[int(rng.integers(len(img.relations)))]
            clause = self.relation_clause(img, rel, rng)
            form = int(rng.integers(6))
            if form == 0:
                return clause + self.scene_suffix(img, rng)
            if form == 1:
                return [clause[0], "is", *clause[1:]] + self.scene_suffix(img, rng)
            if form == 2:
                return ["there is", *clause] + self.scene_suffix(img, rng)
            if form == 3:
                return ["a photo of", *clause] + self.scene_suffix(img, rng)
            if form == 4:
                return [scene.noun_phrase, "with", *clause]
            return [clause[0], "that is", *clause[1:]] + self.scene_suffix(img, rng)
        if kind == "two_relations":
            a, b = img.relations[:2]
            return self.relation_clause(img, a, rng) + ["and"] + self.relation_clause(img, b, rng) + self.scene_suffix(img, rng, 0.3)
        if kind == "list":
            n = min(len(img.objects), int(rng.integers(2, 4)))
            picks = rng.choice(len(img.objects), size=n, replace=False)
            nps = [self.np(img.objects[int(i)], rng) for i in picks]
            listed = nps[:1] if n == 1 else [*(x for np_ in nps[:-2] for x in (np_, ",")), nps[-2], "and", nps[-1]]
            form = int(rng.integers(4))
            if form == 0:
                return [scene.noun_phrase, "with", *listed]
            if form == 1:
                return ["there is", *listed] + self.scene_suffix(img, rng, 0.7)
            if form == 2:
                return ["a photo of", *listed] + self.scene_suffix(img, rng)
            return listed + self.scene_suffix(img, rng, 0.8)
        # single object
        ob = img.objects[int(rng.integers(len(img.objects)))]
        lead = u([[], ["a photo of"], ["a close up of"], ["there is"]])
        return [*lead, self.np(ob, rng, attributes=True)] + self.scene_suffix(img, rng, 0.9)

    def captions(self, img: SceneLayout, rng: np.random.Generator) -> list[list[Piece]]:
        kinds = ["relation"] if img.relations else ["list"]
        pool = ["relation", "list", "list", "single"] + (["two_relations"] if len(img.relations) > 1 else [])
        if not img.relations:
            pool = ["list", "single"]
        while len(kinds) < self.cfg.captions_per_image:
            kinds.append(pool[int(rng.integers(len(pool)))])
        caps = [self.caption(img, k, rng) for k in kinds]
        return [caps[int(i)] for i in rng.permutation(len(caps))]


def _fix_commas(text: str) -> str:
    return text.replace(" ,", ",")
