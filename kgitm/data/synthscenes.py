"""SynthScenes: a deterministic synthetic image-text retrieval data set in the precomputed layout.

Every image is a small scene (a scene context such as ``kitchen`` or ``street``, 3 to 10 objects with
attributes, one or two relations between pairs of objects) rendered as ``R`` region features and boxes
the way a Faster R-CNN detector would emit them, with ``k`` English captions and a ground-truth
Visual-Genome-style scene graph. The test split carries three diagnostic sets (relation swap,
attribute swap, synonym shift). See ``docs/synthscenes.md`` for the design and the on-disk contract.

Region features are linear sums of prototypes drawn once from the seed:
``region = category + a * attributes + b * relation + noise`` for object regions, scaled copies for
duplicate boxes, scene "stuff" prototypes and weak random categories for distractor boxes. The
relation component is added equally to the subject and the object regions and the sampled
(subject category, object category) pairs are symmetric for every predicate, so the direction of a
relation can only be read from the box layout.

All randomness comes from one ``np.random.SeedSequence(seed)``: one child stream for the
prototypes and one per split for layouts/captions and for feature noise, so a split depends only on
the seed and its own size (changing ``images_train`` does not change the test split).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shutil
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

GENERATOR_VERSION = "1.1"
SPLITS = ("train", "dev", "test")

# --------------------------------------------------------------------------------------------------
# Vocabulary. Every word is a WordNet 3.0 lemma (tests/test_synthscenes.py checks this).
# --------------------------------------------------------------------------------------------------

KINDS = ("person", "animal", "vehicle", "furniture", "object", "plant")


@dataclass(frozen=True)
class Category:
    """An object category.

    Attributes:
        name: canonical (WordNet) name, used in scene graphs and diagnostics triples.
        kind: one of :data:`KINDS`; decides box sizes, attributes and allowed relations.
        train_words: surface words used in train/dev/test captions (first = canonical).
        shift_word: held-out WordNet synonym/hyponym/hypernym used only in the synonym-shift
            captions, or ``None``.
        shift_relation: how ``shift_word`` relates to ``name`` in WordNet.
        attributes: attribute names this category can carry.
    """

    name: str
    kind: str
    train_words: tuple[str, ...]
    shift_word: str | None
    shift_relation: str | None
    attributes: tuple[str, ...]


_COLOURS = ("red", "blue", "green", "yellow", "white", "black", "brown", "gray", "pink")
_ATTR_BY_KIND: dict[str, tuple[str, ...]] = {
    "person": ("tall", "young", "smiling"),
    "animal": ("small", "large", "black", "white", "brown", "gray", "spotted"),
    "vehicle": ("small", "large", "red", "blue", "white", "black", "yellow", "green"),
    "furniture": ("small", "large", "wooden", "metal", "plastic", "red", "blue", "white", "black", "brown", "green"),
    "object": ("small", "large", "plastic", "metal", "striped") + _COLOURS,
    "clothing": ("striped", "red", "blue", "green", "yellow", "white", "black", "pink", "brown"),
    "food": ("small", "large", "fresh"),
    "plant": ("tall", "small", "large", "green"),
}


def _cat(name: str, kind: str, words: Sequence[str], shift: str | None, rel: str | None, akind: str | None = None) -> Category:
    return Category(name, kind, tuple(words), shift, rel, _ATTR_BY_KIND[akind or kind])


CATEGORIES: tuple[Category, ...] = (
    _cat("man", "person", ["man", "guy"], "gentleman", "hyponym"),
    _cat("woman", "person", ["woman", "lady"], "female", "hypernym"),
    _cat("boy", "person", ["boy"], "lad", "hyponym"),
    _cat("girl", "person", ["girl"], "lass", "hyponym"),
    _cat("dog", "animal", ["dog", "puppy"], "pooch", "hyponym"),
    _cat("cat", "animal", ["cat", "kitten"], "feline", "hypernym"),
    _cat("horse", "animal", ["horse", "pony"], "mare", "hyponym"),
    _cat("cow", "animal", ["cow"], "heifer", "hyponym"),
    _cat("sheep", "animal", ["sheep"], "ewe", "hyponym"),
    _cat("bird", "animal", ["bird"], None, None),
    _cat("duck", "animal", ["duck"], "mallard", "hyponym"),
    _cat("car", "vehicle", ["car", "automobile"], "auto", "synonym"),
    _cat("bicycle", "vehicle", ["bicycle", "bike"], "cycle", "synonym"),
    _cat("motorcycle", "vehicle", ["motorcycle", "motorbike"], None, None),
    _cat("bus", "vehicle", ["bus"], "minibus", "hyponym"),
    _cat("truck", "vehicle", ["truck"], "lorry", "hyponym"),
    _cat("boat", "vehicle", ["boat"], "motorboat", "hyponym"),
    _cat("table", "furniture", ["table"], None, None),
    _cat("chair", "furniture", ["chair"], "armchair", "hyponym"),
    _cat("bench", "furniture", ["bench"], "pew", "hyponym"),
    _cat("couch", "furniture", ["couch", "sofa"], "divan", "hyponym"),
    _cat("bed", "furniture", ["bed"], "cot", "hyponym"),
    _cat("cup", "object", ["cup"], "teacup", "hyponym"),
    _cat("bottle", "object", ["bottle"], "flask", "hyponym"),
    _cat("bowl", "object", ["bowl"], None, None),
    _cat("book", "object", ["book"], "volume", "synonym"),
    _cat("ball", "object", ["ball"], "football", "hyponym"),
    _cat("bag", "object", ["bag"], "backpack", "hyponym"),
    _cat("box", "object", ["box"], "crate", "hyponym"),
    _cat("phone", "object", ["phone", "telephone"], "handset", "hyponym"),
    _cat("laptop", "object", ["laptop"], None, None),
    _cat("umbrella", "object", ["umbrella"], "brolly", "hyponym"),
    _cat("kite", "object", ["kite"], None, None),
    _cat("lamp", "object", ["lamp"], "lantern", "hyponym"),
    _cat("clock", "object", ["clock"], "timepiece", "hypernym"),
    _cat("vase", "object", ["vase"], "urn", "hyponym"),
    _cat("pillow", "object", ["pillow"], "cushion", "hypernym"),
    _cat("frisbee", "object", ["frisbee"], None, None),
    _cat("hat", "object", ["hat"], "fedora", "hyponym", "clothing"),
    _cat("shirt", "object", ["shirt"], "jersey", "hyponym", "clothing"),
    _cat("jacket", "object", ["jacket"], "blazer", "hyponym", "clothing"),
    _cat("cake", "object", ["cake"], "cupcake", "hyponym", "food"),
    _cat("sandwich", "object", ["sandwich"], "hamburger", "hyponym", "food"),
    _cat("pizza", "object", ["pizza"], None, None, "food"),
    _cat("banana", "object", ["banana"], None, None, "food"),
    _cat("tree", "plant", ["tree"], None, None),
    _cat("flower", "plant", ["flower"], "blossom", "synonym"),
    _cat("bush", "plant", ["bush", "shrub"], None, None),
)
_CAT_INDEX = {c.name: i for i, c in enumerate(CATEGORIES)}

# Attribute name -> group. Attributes of one group exclude each other on an object and are the
# ones exchanged by the attribute-swap diagnostic. No attribute starts with a vowel, so the article
# before an attributed noun is always "a" and swapping attributes keeps the bag of words.
ATTRIBUTE_GROUPS: dict[str, str] = {
    "small": "size", "large": "size", "tall": "size", "young": "age", "smiling": "expression",
    "fresh": "state", "striped": "pattern", "spotted": "pattern",
    **{c: "colour" for c in _COLOURS}, "wooden": "material", "metal": "material", "plastic": "material",
}
ATTRIBUTES: tuple[str, ...] = tuple(ATTRIBUTE_GROUPS)
_ATTR_INDEX = {a: i for i, a in enumerate(ATTRIBUTES)}
_GROUP_ORDER = ("size", "age", "expression", "state", "pattern", "colour", "material")  # English adjective order


@dataclass(frozen=True)
class Predicate:
    """A relation predicate.

    Attributes:
        name: canonical name (scene graphs, triples).
        geometry: layout rule; inverse predicates (``under``) reuse the rule of their converse
            (``on``) with the roles exchanged.
        inverse: whether ``geometry`` is applied with subject and object exchanged.
        semantic: adds a relation appearance component (equally to both regions).
        symmetric: true when the predicate also holds with the roles exchanged (``next to``);
            symmetric predicates never enter the relation-swap diagnostic.
        kind_pairs: unordered pairs of kinds the predicate may join (sampling is symmetric).
        surface: phrasings used in captions.
        weight: base sampling weight.
    """

    name: str
    geometry: str
    inverse: bool
    semantic: bool
    symmetric: bool
    kind_pairs: tuple[tuple[str, str], ...]
    surface: tuple[str, ...]
    weight: float


_SAME = lambda *ks: tuple((k, k) for k in ks)  # noqa: E731
_ALL_PAIRS = tuple((a, b) for i, a in enumerate(KINDS) for b in KINDS[i:])
_STACK = _SAME("object", "animal", "furniture")
_AGENTS = _SAME("person", "animal")

PREDICATES: tuple[Predicate, ...] = (
    Predicate("on", "on", False, False, False, _STACK, ("on", "on top of"), 0.10),
    Predicate("under", "on", True, False, False, _STACK, ("under", "underneath", "beneath"), 0.08),
    Predicate("above", "above", False, False, False, _STACK + _SAME("plant"), ("above", "over"), 0.06),
    Predicate("below", "above", True, False, False, _STACK + _SAME("plant"), ("below",), 0.05),
    Predicate("left of", "left of", False, False, False, _ALL_PAIRS, ("to the left of", "left of"), 0.10),
    Predicate("right of", "left of", True, False, False, _ALL_PAIRS, ("to the right of", "right of"), 0.10),
    Predicate("in front of", "in front of", False, False, False, _ALL_PAIRS, ("in front of",), 0.08),
    Predicate("behind", "in front of", True, False, False, _ALL_PAIRS, ("behind",), 0.08),
    Predicate("next to", "next to", False, False, True, _ALL_PAIRS, ("next to", "by"), 0.10),
    Predicate("near", "near", False, False, True, _ALL_PAIRS, ("near", "close to"), 0.05),
    Predicate("riding", "riding", False, True, False, _AGENTS, ("riding", "riding on"), 0.04),
    Predicate("holding", "holding", False, True, False, _SAME("person"), ("holding",), 0.05),
    Predicate("carrying", "carrying", False, True, False, _AGENTS, ("carrying",), 0.04),
    Predicate("sitting on", "sitting on", False, True, False, _AGENTS, ("sitting on",), 0.04),
    Predicate("standing on", "standing on", False, True, False, _AGENTS, ("standing on",), 0.03),
)
_PRED_INDEX = {p.name: i for i, p in enumerate(PREDICATES)}


@dataclass(frozen=True)
class Scene:
    """A scene context: categories in decreasing frequency (Zipf weights) and its stuff classes."""

    name: str
    weight: float
    categories: tuple[str, ...]
    stuff: tuple[str, ...]
    phrases: tuple[str, ...]  # locative phrases ("in the kitchen")
    noun_phrase: str  # "a kitchen"


SCENES: tuple[Scene, ...] = (
    Scene("street", 0.20, ("car", "man", "woman", "bicycle", "bus", "truck", "motorcycle", "dog", "bag", "bench",
                          "tree", "boy", "umbrella", "girl", "hat", "phone", "jacket", "bird", "bottle"),
          ("road", "sidewalk", "building", "sky"), ("on the street", "on a street", "in the street"), "a street"),
    Scene("park", 0.16, ("tree", "dog", "man", "woman", "bench", "boy", "girl", "ball", "bicycle", "bird", "frisbee",
                        "kite", "bush", "flower", "duck", "bag", "hat", "cat"),
          ("grass", "path", "sky"), ("in the park", "in a park"), "a park"),
    Scene("kitchen", 0.14, ("table", "cup", "bowl", "bottle", "woman", "man", "chair", "cake", "sandwich", "pizza",
                           "banana", "box", "cat", "clock", "vase", "lamp", "phone", "book", "girl"),
          ("wall", "floor", "cabinet"), ("in the kitchen", "in a kitchen"), "a kitchen"),
    Scene("living room", 0.12, ("couch", "chair", "table", "lamp", "man", "woman", "cat", "dog", "pillow", "book",
                               "laptop", "clock", "vase", "cup", "girl", "boy", "phone", "box"),
          ("wall", "floor", "window", "rug"), ("in the living room", "in a living room"), "a living room"),
    Scene("beach", 0.10, ("man", "woman", "umbrella", "dog", "boat", "ball", "boy", "girl", "bird", "kite", "hat",
                         "bag", "frisbee", "chair", "bottle", "shirt"),
          ("sand", "water", "sky"), ("on the beach", "at the beach"), "a beach"),
    Scene("field", 0.10, ("cow", "sheep", "horse", "tree", "man", "dog", "bush", "flower", "boy", "bird", "truck",
                         "girl", "duck", "ball", "bench"),
          ("grass", "sky", "fence"), ("in a field", "in the field"), "a field"),
    Scene("bedroom", 0.09, ("bed", "pillow", "lamp", "cat", "book", "chair", "woman", "man", "laptop", "clock",
                           "shirt", "jacket", "hat", "bag", "phone", "box"),
          ("wall", "floor", "window", "curtain"), ("in the bedroom", "in a bedroom"), "a bedroom"),
    Scene("office", 0.09, ("table", "chair", "laptop", "phone", "man", "woman", "book", "cup", "lamp", "clock",
                          "bag", "bottle", "box", "jacket"),
          ("wall", "floor", "window"), ("in the office", "in an office"), "an office"),
)
STUFF: tuple[str, ...] = tuple(dict.fromkeys(s for sc in SCENES for s in sc.stuff))
_STUFF_INDEX = {s: i for i, s in enumerate(STUFF)}

# Normalised (width, height) ranges of object boxes per kind.
_BOX_SIZE = {
    "person": ((0.12, 0.25), (0.30, 0.60)),
    "animal": ((0.15, 0.35), (0.15, 0.35)),
    "vehicle": ((0.25, 0.50), (0.20, 0.40)),
    "furniture": ((0.20, 0.45), (0.15, 0.35)),
    "object": ((0.06, 0.16), (0.06, 0.16)),
    "plant": ((0.15, 0.35), (0.25, 0.55)),
}

# --------------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SynthScenesConfig:
    """All knobs of the generator; defaults are the ``small`` preset.

    Args:
        images_train: images in the train split (3000).
        images_dev: images in the dev split (300).
        images_test: images in the test split (300).
        regions: ``R``, region boxes per image, always all filled (12).
        feature_dim: ``D``, region feature size (128).
        captions_per_image: ``k`` captions per image (5).
        seed: the one seed all randomness derives from (0).
        min_objects: fewest annotated objects per image (3).
        max_objects: most annotated objects per image, at most ``regions`` (6).
        two_relations_prob: probability of a second relation pair when there are 4+ objects (0.5).
        symmetric_relation_prob: probability that the first relation uses a symmetric predicate
            (``next to``, ``near``), which the relation-swap set cannot use (0.1).
        attribute_prob: probability that an object has an attribute (0.85).
        second_attribute_prob: probability of a second attribute from another group (0.25).
        attribute_mention_prob: probability that a caption mentions an object's attributes (0.6).
        synonym_prob: probability that a caption uses a training synonym instead of the canonical
            word (0.3).
        zipf_exponent: exponent ``s`` of the within-scene category frequencies ``1 / rank^s`` (1.0).
        kind_share: share of a category prototype common to its kind (dog and cat look alike) (0.5).
        attribute_weight: weight of an attribute prototype in its object's region (0.7).
        relation_weight: weight of a semantic relation's prototype, added to both regions (0.5).
        feature_noise: Gaussian noise norm per region relative to unit prototypes (0.8).
        duplicate_fraction: fraction of free region slots used for duplicate boxes (0.4).
        max_duplicates: most duplicates per object (2).
        duplicate_weight: feature scale of a duplicate relative to its object (0.8).
        duplicate_noise: extra noise factor of duplicates (0.3).
        box_jitter: duplicate box jitter as a fraction of the box size (0.15).
        stuff_fraction: fraction of the remaining slots given to scene stuff regions (0.4).
        distractor_weight: weight of the random category in a distractor region (0.3).
        min_image_size: smallest image side in pixels (400).
        max_image_size: largest image side in pixels (640).
    """

    images_train: int = 3000
    images_dev: int = 300
    images_test: int = 300
    regions: int = 12
    feature_dim: int = 128
    captions_per_image: int = 5
    seed: int = 0
    min_objects: int = 3
    max_objects: int = 6
    two_relations_prob: float = 0.5
    symmetric_relation_prob: float = 0.1
    attribute_prob: float = 0.85
    second_attribute_prob: float = 0.25
    attribute_mention_prob: float = 0.6
    synonym_prob: float = 0.3
    zipf_exponent: float = 1.0
    kind_share: float = 0.5
    attribute_weight: float = 0.7
    relation_weight: float = 0.5
    feature_noise: float = 0.8
    duplicate_fraction: float = 0.4
    max_duplicates: int = 2
    duplicate_weight: float = 0.8
    duplicate_noise: float = 0.3
    box_jitter: float = 0.15
    stuff_fraction: float = 0.4
    distractor_weight: float = 0.3
    min_image_size: int = 400
    max_image_size: int = 640

    def __post_init__(self) -> None:
        if not 2 <= self.min_objects <= self.max_objects <= self.regions:
            raise ValueError(
                f"need 2 <= min_objects ({self.min_objects}) <= max_objects ({self.max_objects}) "
                f"<= regions ({self.regions})"
            )
        if min(self.images_train, self.images_dev, self.images_test) < 1:
            raise ValueError("every split needs at least one image")
        if self.captions_per_image < 1 or self.feature_dim < 1:
            raise ValueError("captions_per_image and feature_dim must be positive")
        if not 1 <= self.min_image_size <= self.max_image_size:
            raise ValueError("need 1 <= min_image_size <= max_image_size")

    def split_sizes(self) -> dict[str, int]:
        return {"train": self.images_train, "dev": self.images_dev, "test": self.images_test}


PRESETS: dict[str, dict] = {
    "tiny": dict(images_train=64, images_dev=16, images_test=16, regions=8, feature_dim=32, max_objects=4),
    "small": dict(),
    "real": dict(images_train=10000, images_dev=1000, images_test=1000, regions=36, feature_dim=2048,
                 max_objects=10, max_duplicates=3),
}


def make_config(preset: str = "small", **overrides) -> SynthScenesConfig:
    """The config of ``preset`` (``tiny``, ``small``, ``real``) with ``overrides`` applied."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    known = {f.name for f in dataclasses.fields(SynthScenesConfig)}
    bad = sorted(set(overrides) - known)
    if bad:
        raise TypeError(f"unknown SynthScenes option(s) {bad}; known: {sorted(known)}")
    return SynthScenesConfig(**{**PRESETS[preset], **overrides})


# --------------------------------------------------------------------------------------------------
# Geometry
# --------------------------------------------------------------------------------------------------

Box = tuple[float, float, float, float]


def _centre(b: Sequence[float]) -> tuple[float, float]:
    return (b[0] + b[2]) / 2, (b[1] + b[3]) / 2


def _overlap_1d(a1: float, a2: float, b1: float, b2: float) -> float:
    return min(a2, b2) - max(a1, b1)


def _intersects(s: Sequence[float], o: Sequence[float]) -> bool:
    return _overlap_1d(s[0], s[2], o[0], o[2]) > 0 and _overlap_1d(s[1], s[3], o[1], o[3]) > 0


def _area(b: Sequence[float]) -> float:
    return (b[2] - b[0]) * (b[3] - b[1])


def _inside(p: tuple[float, float], b: Sequence[float]) -> bool:
    return b[0] < p[0] < b[2] and b[1] < p[1] < b[3]


def _geometry_holds(geometry: str, s: Sequence[float], o: Sequence[float]) -> bool:
    (scx, scy), (ocx, ocy) = _centre(s), _centre(o)
    if geometry in ("on", "riding", "sitting on", "standing on"):
        return scy < ocy and _intersects(s, o)
    if geometry == "above":
        return s[3] <= o[1] and _overlap_1d(s[0], s[2], o[0], o[2]) > 0
    if geometry == "left of":
        return scx < ocx
    if geometry == "in front of":
        return s[3] > o[3] and _intersects(s, o)
    if geometry == "holding":
        return _inside((ocx, ocy), s) and _area(o) < _area(s) and ocy >= scy
    if geometry == "carrying":
        return _inside((ocx, ocy), s) and _area(o) < _area(s) and ocy < scy
    sw, sh, ow, oh = s[2] - s[0], s[3] - s[1], o[2] - o[0], o[3] - o[1]
    gap = max(o[0] - s[2], s[0] - o[2])
    if geometry == "next to":
        return gap <= 0.5 * max(sw, ow) and abs(scy - ocy) <= 0.5 * max(sh, oh)
    if geometry == "near":
        return gap <= 1.5 * max(sw, ow) and abs(scy - ocy) <= max(sh, oh)
    raise ValueError(f"unknown geometry {geometry!r}")


def relation_holds(predicate: str, subject_box: Sequence[float], object_box: Sequence[float]) -> bool:
    """Whether the box layout satisfies ``subject predicate object``.

    The rules are invariant to scaling each axis, so pixel or normalised ``x1, y1, x2, y2`` boxes
    both work (y grows downwards). For every non-symmetric predicate at most one of
    ``relation_holds(p, a, b)`` and ``relation_holds(p, b, a)`` is true.
    """
    p = PREDICATES[_PRED_INDEX[predicate]]
    return _geometry_holds(p.geometry, object_box, subject_box) if p.inverse else _geometry_holds(p.geometry, subject_box, object_box)


def _box_size(kind: str, rng: np.random.Generator) -> tuple[float, float]:
    (w0, w1), (h0, h1) = _BOX_SIZE[kind]
    return float(rng.uniform(w0, w1)), float(rng.uniform(h0, h1))


def _layout_pair(geometry: str, s: tuple[float, float], o: tuple[float, float], rng: np.random.Generator) -> tuple[Box, Box]:
    """Boxes ``(S, O)`` in a local frame (object at the origin) satisfying ``geometry``."""
    ws, hs = s
    wo, ho = o
    u = lambda a, b: float(rng.uniform(a, b))  # noqa: E731
    O: Box = (0.0, 0.0, wo, ho)
    if geometry in ("on", "riding", "sitting on", "standing on"):
        lo, hi = {"on": (0.05, 0.25), "standing on": (0.02, 0.15), "sitting on": (0.2, 0.4), "riding": (0.3, 0.45)}[geometry]
        cx, y2 = wo / 2 + u(-0.25, 0.25) * wo, u(lo, hi) * ho
        S: Box = (cx - ws / 2, y2 - hs, cx + ws / 2, y2)
    elif geometry == "above":
        cx, gap = wo / 2 + u(-0.3, 0.3) * wo, u(0.02, 0.08)
        S = (cx - ws / 2, -gap - hs, cx + ws / 2, -gap)
    elif geometry == "left of":
        gap, cy = u(-0.15, 0.1) * min(ws, wo), ho / 2 + u(-0.15, 0.15) * ho
        S = (-gap - ws, cy - hs / 2, -gap, cy + hs / 2)
    elif geometry == "in front of":
        cx, y2 = wo / 2 + u(-0.3, 0.3) * wo, ho + u(0.05, 0.15)
        h = max(hs, (y2 - ho) + 0.3 * ho)
        S = (cx - ws / 2, y2 - h, cx + ws / 2, y2)
    elif geometry in ("holding", "carrying"):
        S = (0.0, 0.0, ws, hs)
        w, h = min(wo, 0.6 * ws), min(ho, 0.45 * hs)
        cx = ws / 2 + u(-0.2, 0.2) * ws
        cy = (u(0.55, 0.75) if geometry == "holding" else u(0.15, 0.35)) * hs
        O = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
    elif geometry in ("next to", "near"):
        gap = (u(0.0, 0.3) if geometry == "next to" else u(0.6, 1.2)) * min(ws, wo)
        cy = ho / 2 + u(-0.15, 0.15) * ho
        x1 = wo + gap if rng.random() < 0.5 else -gap - ws
        S = (x1, cy - hs / 2, x1 + ws, cy + hs / 2)
    else:
        raise ValueError(f"unknown geometry {geometry!r}")
    return S, O


def _fit(boxes: Sequence[Box], rng: np.random.Generator) -> list[Box]:
    """Uniformly scale and translate boxes so that they lie inside the unit square."""
    arr = np.asarray(boxes, dtype=np.float64)
    lo, hi = arr[:, :2].min(0), arr[:, 2:].max(0)
    scale = min(1.0, 0.95 / max(hi[0] - lo[0], 1e-6), 0.95 / max(hi[1] - lo[1], 1e-6))
    size = (hi - lo) * scale
    offset = rng.uniform(0.0, 1.0 - size)
    arr = (arr - np.concatenate([lo, lo])) * scale + np.concatenate([offset, offset])
    return [tuple(float(v) for v in b) for b in np.clip(arr, 0.0, 1.0)]


def _random_box(w: float, h: float, rng: np.random.Generator) -> Box:
    w, h = min(w, 1.0), min(h, 1.0)
    x, y = float(rng.uniform(0, 1 - w)), float(rng.uniform(0, 1 - h))
    return (x, y, x + w, y + h)


# --------------------------------------------------------------------------------------------------
# Scene sampling
# --------------------------------------------------------------------------------------------------


@dataclass
class SceneObject:
    """An annotated object: category index, attribute indices, normalised box."""

    category: int
    attributes: tuple[int, ...]
    box: Box


@dataclass
class SceneLayout:
    """One synthetic image before rendering: scene, size, objects and relations.

    ``relations`` holds ``(subject index, predicate index, object index)`` into ``objects``.
    """

    scene: int
    width: int
    height: int
    objects: list[SceneObject] = field(default_factory=list)
    relations: list[tuple[int, int, int]] = field(default_factory=list)


class _Sampler:
    """Precomputed sampling tables (scene category weights, valid category pairs per predicate)."""

    def __init__(self, cfg: SynthScenesConfig) -> None:
        self.cfg = cfg
        self.scene_p = np.array([s.weight for s in SCENES])
        self.scene_p /= self.scene_p.sum()
        self.cat_w = np.zeros((len(SCENES), len(CATEGORIES)))
        for i, sc in enumerate(SCENES):
            for r, name in enumerate(sc.categories):
                self.cat_w[i, _CAT_INDEX[name]] = 1.0 / (r + 1) ** cfg.zipf_exponent
        # per scene, per predicate: unordered category pairs (a < b) with weight w_a * w_b
        self.pairs: list[list[tuple[np.ndarray, np.ndarray]]] = []
        self.pred_w = np.zeros((len(SCENES), len(PREDICATES)))
        for i in range(len(SCENES)):
            row = []
            for j, p in enumerate(PREDICATES):
                allowed = {frozenset(kp) for kp in p.kind_pairs}
                pairs, ws = [], []
                for a in range(len(CATEGORIES)):
                    for b in range(a + 1, len(CATEGORIES)):
                        w = self.cat_w[i, a] * self.cat_w[i, b]
                        if w > 0 and frozenset((CATEGORIES[a].kind, CATEGORIES[b].kind)) in allowed:
                            pairs.append((a, b))
                            ws.append(w)
                arr = np.array(pairs, dtype=np.int64).reshape(-1, 2)
                wts = np.array(ws, dtype=np.float64)
                row.append((arr, wts))
                self.pred_w[i, j] = p.weight if len(pairs) else 0.0
            self.pairs.append(row)
        self.symmetric = np.array([p.symmetric for p in PREDICATES])

    def relation(self, scene: int, used: set[int], rng: np.random.Generator, *, first: bool) -> tuple[int, int, int] | None:
        """``(subject category, predicate, object category)``; the direction is a fair coin."""
        w = self.pred_w[scene].copy()
        if first:
            sym = self.cfg.symmetric_relation_prob
            w[self.symmetric] *= sym / max(w[self.symmetric].sum(), 1e-12)
            w[~self.symmetric] *= (1 - sym) / max(w[~self.symmetric].sum(), 1e-12)
        for _ in range(8):
            pred = int(rng.choice(len(PREDICATES), p=w / w.sum()))
            pairs, pw = self.pairs[scene][pred]
            ok = ~(np.isin(pairs[:, 0], list(used)) | np.isin(pairs[:, 1], list(used)))
            if not ok.any():
                continue
            k = int(rng.choice(np.flatnonzero(ok), p=pw[ok] / pw[ok].sum()))
            a, b = (int(v) for v in pairs[k])
            if rng.random() < 0.5:
                a, b = b, a
            return a, pred, b
        return None

    def attributes(self, cat: int, rng: np.random.Generator) -> tuple[int, ...]:
        cfg = self.cfg
        allowed = CATEGORIES[cat].attributes
        if rng.random() >= cfg.attribute_prob:
            return ()
        first = allowed[int(rng.integers(len(allowed)))]
        attrs = [first]
        if rng.random() < cfg.second_attribute_prob:
            rest = [a for a in allowed if ATTRIBUTE_GROUPS[a] != ATTRIBUTE_GROUPS[first]]
            if rest:
                attrs.append(rest[int(rng.integers(len(rest)))])
        attrs.sort(key=lambda a: _GROUP_ORDER.index(ATTRIBUTE_GROUPS[a]))
        return tuple(_ATTR_INDEX[a] for a in attrs)

    def layout(self, rng: np.random.Generator) -> SceneLayout:
        cfg = self.cfg
        scene = int(rng.choice(len(SCENES), p=self.scene_p))
        img = SceneLayout(scene, int(rng.integers(cfg.min_image_size, cfg.max_image_size + 1)),
                          int(rng.integers(cfg.min_image_size, cfg.max_image_size + 1)))
        n_obj = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
        n_obj = min(n_obj, int((self.cat_w[scene] > 0).sum()))
        n_rel = 1 + int(n_obj >= 4 and rng.random() < cfg.two_relations_prob)
        used: set[int] = set()
        for r in range(n_rel):
            rel = self.relation(scene, used, rng, first=(r == 0))
            if rel is None:
                break
            a, pred, b = rel
            p = PREDICATES[pred]
            for _ in range(16):  # the rules hold by construction; the loop guards float edge cases
                sa, sb = _box_size(CATEGORIES[a].kind, rng), _box_size(CATEGORIES[b].kind, rng)
                if p.inverse:  # under(a, b) == on(b, a)
                    gb, ga = _layout_pair(p.geometry, sb, sa, rng)
                else:
                    ga, gb = _layout_pair(p.geometry, sa, sb, rng)
                ga, gb = _fit([ga, gb], rng)
                if relation_holds(p.name, ga, gb) and (p.symmetric or not relation_holds(p.name, gb, ga)):
                    break
            else:
                raise RuntimeError(f"could not lay out {p.name!r}: the geometry rules and the checker disagree")
            i = len(img.objects)
            img.objects += [SceneObject(a, self.attributes(a, rng), ga), SceneObject(b, self.attributes(b, rng), gb)]
            img.relations.append((i, pred, i + 1))
            used |= {a, b}
        w = self.cat_w[scene].copy()
        w[list(used)] = 0.0
        n_single = max(0, min(n_obj - len(img.objects), int((w > 0).sum())))
        if n_single:
            for c in rng.choice(len(CATEGORIES), size=n_single, replace=False, p=w / w.sum()):
                c = int(c)
                img.objects.append(SceneObject(c, self.attributes(c, rng), _random_box(*_box_size(CATEGORIES[c].kind, rng), rng)))
        return img


# --------------------------------------------------------------------------------------------------
# Regions and features
# --------------------------------------------------------------------------------------------------

# Rows of the prototype table: categories, attributes, predicates, stuff, then one zero row.
_ROW_ATTR = len(CATEGORIES)
_ROW_PRED = _ROW_ATTR + len(ATTRIBUTES)
_ROW_STUFF = _ROW_PRED + len(PREDICATES)
_ROW_ZERO = _ROW_STUFF + len(STUFF)
_SLOTS = 4  # category/stuff, attribute, attribute, relation


def _prototypes(cfg: SynthScenesConfig, rng: np.random.Generator) -> np.ndarray:
    """Unit-norm prototypes ``(rows, D)``; a category shares ``kind_share`` with its kind."""
    D = cfg.feature_dim
    unit = lambda n: (lambda x: x / np.linalg.norm(x, axis=1, keepdims=True))(rng.standard_normal((n, D)))  # noqa: E731
    kind = unit(len(KINDS))
    kind_of = np.array([KINDS.index(c.kind) for c in CATEGORIES])
    cats = cfg.kind_share * kind[kind_of] + math.sqrt(1 - cfg.kind_share**2) * unit(len(CATEGORIES))
    cats /= np.linalg.norm(cats, axis=1, keepdims=True)
    table = np.concatenate([cats, unit(len(ATTRIBUTES)), unit(len(PREDICATES)), unit(len(STUFF)), np.zeros((1, D))])
    return table.astype(np.float32)


@dataclass
class RegionLayout:
    """Regions of one image: normalised boxes ``(R, 4)``, prototype rows/weights ``(R, S)``,
    noise scale ``(R,)`` and the region row of each annotated object."""

    boxes: np.ndarray
    rows: np.ndarray
    weights: np.ndarray
    noise: np.ndarray
    object_region: list[int]


def _jitter(b: Box, j: float, rng: np.random.Generator) -> Box:
    w, h = b[2] - b[0], b[3] - b[1]
    d = rng.uniform(-j, j, size=4) * np.array([w, h, w, h])
    x1, y1, x2, y2 = np.clip(np.asarray(b) + d, 0.0, 1.0)
    x2, y2 = max(x2, min(x1 + 0.01, 1.0)), max(y2, min(y1 + 0.01, 1.0))
    return (float(x1), float(y1), float(x2), float(y2))


def region_layout(img: SceneLayout, cfg: SynthScenesConfig, rng: np.random.Generator) -> RegionLayout:
    """Fill the ``R`` region slots of ``img`` and give each its prototype composition.

    Objects first get one main region each, then every object gets the same number of duplicates
    (jittered boxes, scaled features), the rest are scene stuff and weak random-category
    distractors; the rows are then shuffled so that region order carries no information. A semantic
    relation adds the same component to its subject's and its object's regions, so exchanging the
    roles of a relation does not change any region.
    """
    R = cfg.regions
    n_obj = len(img.objects)
    rows = np.full((R, _SLOTS), _ROW_ZERO, dtype=np.int64)
    weights = np.zeros((R, _SLOTS), dtype=np.float32)
    noise = np.ones(R, dtype=np.float32)
    boxes = np.zeros((R, 4), dtype=np.float64)
    rel_of = {}
    for s, p, o in img.relations:
        if PREDICATES[p].semantic:
            rel_of[s] = rel_of[o] = p
    for i, ob in enumerate(img.objects):
        rows[i, 0], weights[i, 0] = ob.category, 1.0
        for k, a in enumerate(ob.attributes[:2]):
            rows[i, 1 + k], weights[i, 1 + k] = _ROW_ATTR + a, cfg.attribute_weight
        if i in rel_of:
            rows[i, 3], weights[i, 3] = _ROW_PRED + rel_of[i], cfg.relation_weight
        boxes[i] = ob.box
    free = R - n_obj
    n_dup = min(cfg.max_duplicates, int(free * cfg.duplicate_fraction) // max(n_obj, 1))
    r = n_obj
    for d in range(n_dup):
        for i, ob in enumerate(img.objects):
            rows[r], weights[r] = rows[i], weights[i] * cfg.duplicate_weight
            noise[r] = 1.0 + cfg.duplicate_noise
            boxes[r] = _jitter(ob.box, cfg.box_jitter, rng)
            r += 1
    stuff = SCENES[img.scene].stuff
    n_stuff = min(len(stuff), int(round((R - r) * cfg.stuff_fraction)))
    for s in rng.choice(len(stuff), size=n_stuff, replace=False):
        rows[r, 0], weights[r, 0] = _ROW_STUFF + _STUFF_INDEX[stuff[int(s)]], 1.0
        boxes[r] = _random_box(float(rng.uniform(0.5, 1.0)), float(rng.uniform(0.25, 0.6)), rng)
        r += 1
    while r < R:
        rows[r, 0], weights[r, 0] = int(rng.integers(len(CATEGORIES))), cfg.distractor_weight
        boxes[r] = _random_box(float(rng.uniform(0.05, 0.4)), float(rng.uniform(0.05, 0.4)), rng)
        r += 1
    perm = rng.permutation(R)
    inv = np.argsort(perm)
    return RegionLayout(boxes[perm], rows[perm], weights[perm], noise[perm], [int(inv[i]) for i in range(n_obj)])


def _render_features(rows: np.ndarray, weights: np.ndarray, noise: np.ndarray, protos: np.ndarray,
                     cfg: SynthScenesConfig, rng: np.random.Generator) -> np.ndarray:
    """Vectorised ``sum_s w[..., s] * P[rows[..., s]] + noise``; shapes ``(n, R, S)`` -> ``(n, R, D)``."""
    sigma = np.float32(cfg.feature_noise / math.sqrt(cfg.feature_dim))
    out = rng.standard_normal((*rows.shape[:2], cfg.feature_dim), dtype=np.float32)
    out *= (sigma * noise)[..., None]
    for s in range(rows.shape[-1]):
        out += weights[..., s, None] * protos[rows[..., s]]
    return out


# --------------------------------------------------------------------------------------------------
# Captions
# --------------------------------------------------------------------------------------------------

# A caption is a list of pieces: a literal string, or ("np", category, attribute indices, word choice).
Piece = str | tuple


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def render_caption(pieces: Sequence[Piece], *, shift: bool = False) -> str:
    """Text of a caption; ``shift`` uses each category's held-out shift word where it has one."""
    out = []
    for p in pieces:
        if isinstance(p, str):
            out.append(p)
            continue
        _, cat, attrs, choice = p
        c = CATEGORIES[cat]
        noun = c.shift_word if shift and c.shift_word else c.train_words[choice]
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


# --------------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------------

_PROGRESS_MIN_IMAGES = 2000  # splits smaller than this generate in about a second: no progress bar
_FEATURE_CHUNK = 512  # images per feature-synthesis chunk (fixed: part of the determinism contract)


def _scene_graph(img: SceneLayout, image_id: str, boxes_px: np.ndarray, regions: RegionLayout) -> dict:
    objects = []
    for k, ob in enumerate(img.objects):
        x1, y1, x2, y2 = (float(v) for v in boxes_px[regions.object_region[k]])
        objects.append({
            "object_id": k, "names": [CATEGORIES[ob.category].name],
            "attributes": [ATTRIBUTES[a] for a in ob.attributes],
            "x": int(round(x1)), "y": int(round(y1)), "w": int(round(x2 - x1)), "h": int(round(y2 - y1)),
            "region_index": regions.object_region[k],
        })
    rels = [{"relationship_id": n, "subject_id": s, "object_id": o, "predicate": PREDICATES[p].name}
            for n, (s, p, o) in enumerate(img.relations)]
    return {"image_id": image_id, "width": img.width, "height": img.height, "objects": objects, "relationships": rels}


def _write_split(out: Path, split: str, n: int, cfg: SynthScenesConfig, protos: np.ndarray, sampler: "_Sampler",
                 layout_rng: np.random.Generator, feature_rng: np.random.Generator,
                 progress: bool) -> dict:
    from tqdm.auto import tqdm

    cap = _Captioner(cfg)
    R, k = cfg.regions, cfg.captions_per_image
    rows = np.empty((n, R, _SLOTS), dtype=np.int64)
    weights = np.empty((n, R, _SLOTS), dtype=np.float32)
    noise = np.empty((n, R), dtype=np.float32)
    bbx = np.empty((n, R, 4), dtype=np.float32)
    sizes = np.empty((n, 2), dtype=np.float32)
    captions, shift_captions, ids, graphs, rel_swap, attr_swap = [], [], [], [], [], []
    pred_counts = np.zeros(len(PREDICATES), dtype=np.int64)
    for i in tqdm(range(n), desc=f"synthscenes {split}", disable=not progress or n < _PROGRESS_MIN_IMAGES, leave=False):
        img = sampler.layout(layout_rng)
        reg = region_layout(img, cfg, layout_rng)
        scale = np.array([img.width, img.height, img.width, img.height], dtype=np.float64)
        rows[i], weights[i], noise[i] = reg.rows, reg.weights, reg.noise
        bbx[i] = (reg.boxes * scale).astype(np.float32)
        sizes[i] = (img.width, img.height)
        image_id = f"synth_{split}_{i:06d}"
        ids.append(image_id)
        graphs.append(_scene_graph(img, image_id, bbx[i], reg))
        for _, p, _ in img.relations:
            pred_counts[p] += 1
        pieces = cap.captions(img, layout_rng)
        captions += [_fix_commas(render_caption(c)) for c in pieces]
        if split == "test":
            shift_captions += [_fix_commas(render_caption(c, shift=True)) for c in pieces]
            rs = _relation_swap(img, cap, layout_rng)
            if rs:
                rel_swap.append({"image": i, "positive": rs[0], "negative": rs[1], "triple": rs[2]})
            at = _attribute_swap(img, cap, layout_rng)
            if at:
                attr_swap.append({"image": i, "positive": at[0], "negative": at[1], "attributes": at[2]})
    assert len(captions) == k * n

    ims = np.lib.format.open_memmap(out / f"{split}_ims.npy", mode="w+", dtype=np.float32, shape=(n, R, cfg.feature_dim))
    for a in range(0, n, _FEATURE_CHUNK):
        b = min(n, a + _FEATURE_CHUNK)
        ims[a:b] = _render_features(rows[a:b], weights[a:b], noise[a:b], protos, cfg, feature_rng)
    ims.flush()
    del ims
    np.save(out / f"{split}_ims_bbx.npy", bbx)
    np.save(out / f"{split}_ims_size.npy", sizes)
    (out / f"{split}_caps.txt").write_text("\n".join(captions) + "\n", encoding="utf-8")
    (out / f"{split}_ids.txt").write_text("\n".join(ids) + "\n", encoding="utf-8")
    with open(out / f"{split}_scene_graphs.json", "w", encoding="utf-8") as f:
        json.dump(graphs, f, separators=(",", ":"))
    stats = {"images": n, "captions": len(captions),
             "relations": {PREDICATES[j].name: int(c) for j, c in enumerate(pred_counts)}}
    if split == "test":
        diag = out / "diagnostics"
        diag.mkdir(exist_ok=True)
        for name, items in (("relation_swap", rel_swap), ("attribute_swap", attr_swap)):
            with open(diag / f"test_{name}.jsonl", "w", encoding="utf-8") as f:
                f.writelines(json.dumps(x) + "\n" for x in items)
            # the same captions as plain caption files (line p = pair p), so that the graph
            # preprocessing job parses them like any split: `--splits diagnostics/test_relation_swap_positive`
            for side in ("positive", "negative"):
                (diag / f"test_{name}_{side}_caps.txt").write_text(
                    "".join(x[side] + "\n" for x in items), encoding="utf-8"
                )
        (diag / "test_synonym_shift_caps.txt").write_text("\n".join(shift_captions) + "\n", encoding="utf-8")
        stats["diagnostics"] = {
            "relation_swap": len(rel_swap), "attribute_swap": len(attr_swap),
            "synonym_shift_captions": len(shift_captions),
            "synonym_shift_changed": sum(a != b for a, b in zip(captions, shift_captions)),
        }
    return stats


def _vocabulary() -> dict:
    return {
        "categories": [{"name": c.name, "kind": c.kind, "train_words": list(c.train_words),
                        "attributes": list(c.attributes)} for c in CATEGORIES],
        "attributes": [{"name": a, "group": g} for a, g in ATTRIBUTE_GROUPS.items()],
        "relations": [{"name": p.name, "type": "semantic" if p.semantic else "spatial", "symmetric": p.symmetric,
                       "converse_of": None if not p.inverse else next(q.name for q in PREDICATES if q.geometry == p.geometry and not q.inverse),
                       "surface": list(p.surface)} for p in PREDICATES],
        "scenes": [{"name": s.name, "weight": s.weight, "categories": list(s.categories), "stuff": list(s.stuff),
                    "phrases": list(s.phrases)} for s in SCENES],
        "stuff": list(STUFF),
        "synonym_table": [{"concept": c.name, "train_words": list(c.train_words), "shift_words": [c.shift_word],
                           "wordnet_relation": c.shift_relation} for c in CATEGORIES if c.shift_word],
    }


def _config_record(cfg: SynthScenesConfig) -> dict:
    return {"generator_version": GENERATOR_VERSION, **dataclasses.asdict(cfg)}


def read_meta(root: str | Path) -> dict | None:
    """``root/meta.json`` as a dict, or ``None`` when the folder holds no complete data set."""
    path = Path(root) / "meta.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def is_up_to_date(root: str | Path, cfg: SynthScenesConfig) -> bool:
    """Whether ``root`` already holds a complete data set generated with exactly ``cfg``."""
    meta = read_meta(root)
    return meta is not None and meta.get("config") == _config_record(cfg)


def generate(root: str | Path, *, preset: str = "small", seed: int = 0, overwrite: bool = False,
             progress: bool = False, **overrides) -> Path:
    """Generate SynthScenes into ``root`` (atomically) and return ``root``.

    Args:
        root: output folder; created with its parents.
        preset: ``tiny`` (unit tests), ``small`` (default; CPU quickstart) or ``real`` (benchmarks).
        seed: seed of all randomness.
        overwrite: replace an existing data set generated with other parameters.
        progress: show a progress bar.
        **overrides: any :class:`SynthScenesConfig` field.

    Raises:
        FileExistsError: ``root`` holds other data (or a different config) and ``overwrite`` is false.

    Generation happens in a hidden sibling folder that is renamed into place at the end (removed on
    failure); ``meta.json`` is written last. A folder that already holds the same config is left as is.
    """
    cfg = make_config(preset, seed=seed, **overrides)
    root = Path(root)
    if is_up_to_date(root, cfg):
        return root
    if root.exists() and any(root.iterdir()) and not overwrite:
        why = "was generated with different parameters" if read_meta(root) else "is not empty and has no meta.json"
        raise FileExistsError(f"{root} {why}; pass --overwrite (overwrite=True) to replace it or choose another folder")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{root.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        ss = np.random.SeedSequence(cfg.seed)
        proto_ss, *split_ss = ss.spawn(1 + len(SPLITS))
        protos = _prototypes(cfg, np.random.default_rng(proto_ss))
        stats, sampler = {}, _Sampler(cfg)
        for split, sss in zip(SPLITS, split_ss):
            layout_ss, feature_ss = sss.spawn(2)
            stats[split] = _write_split(tmp, split, cfg.split_sizes()[split], cfg, protos, sampler,
                                        np.random.default_rng(layout_ss), np.random.default_rng(feature_ss), progress)
        meta = {
            "name": "SynthScenes", "generator_version": GENERATOR_VERSION, "seed": cfg.seed,
            "config": _config_record(cfg),
            "splits": cfg.split_sizes(), "captions_per_image": cfg.captions_per_image,
            "regions": cfg.regions, "feature_dim": cfg.feature_dim,
            **_vocabulary(),
            "diagnostics": stats["test"].pop("diagnostics"),
            "statistics": stats,
        }
        with open(tmp / "meta.json.part", "w", encoding="utf-8") as f:
            json.dump(meta, f, indent=1)
        os.replace(tmp / "meta.json.part", tmp / "meta.json")
        if root.exists():
            trash = root.parent / f".{root.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(root, trash)
            os.replace(tmp, root)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="kgitm synthscenes",
        description=(
            "Generate SynthScenes, a synthetic image-text retrieval data set in the precomputed layout. "
            "Writes, per split (train, dev, test): {split}_ims.npy (N, R, D) region features, "
            "{split}_caps.txt (k lines per image), {split}_ids.txt, {split}_ims_bbx.npy (N, R, 4) pixel "
            "boxes, {split}_ims_size.npy (N, 2) width/height, {split}_scene_graphs.json; plus "
            "diagnostics/test_relation_swap.jsonl, diagnostics/test_attribute_swap.jsonl, "
            "diagnostics/test_synonym_shift_caps.txt and meta.json (written last). "
            "See docs/synthscenes.md."
        ),
    )
    p.add_argument("--out", default="data/synthscenes", help="output folder (default: %(default)s)")
    p.add_argument("--preset", default="small", choices=sorted(PRESETS),
                   help="size preset: tiny (tests: 64/16/16 images, R=8, D=32), small (default; CPU quickstart: "
                        "3000/300/300, R=12, D=128), real (benchmarks: 10000/1000/1000, R=36, D=2048)")
    p.add_argument("--seed", type=int, default=0, help="seed of all randomness (default: %(default)s)")
    p.add_argument("--images-train", type=int, help="train images (overrides the preset)")
    p.add_argument("--images-dev", type=int, help="dev images (overrides the preset)")
    p.add_argument("--images-test", type=int, help="test images (overrides the preset)")
    p.add_argument("--regions", type=int, help="R, region boxes per image (overrides the preset)")
    p.add_argument("--feature-dim", type=int, help="D, region feature size (overrides the preset)")
    p.add_argument("--captions-per-image", type=int, help="k captions per image (default 5)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing data set in --out generated with other parameters")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``kgitm synthscenes``: generate the data set and print a summary."""
    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    names = ("images_train", "images_dev", "images_test", "regions", "feature_dim", "captions_per_image")
    overrides = {k: getattr(args, k) for k in names if getattr(args, k) is not None}
    try:
        cfg = make_config(args.preset, seed=args.seed, **overrides)
    except (ValueError, TypeError) as e:
        print(f"kgitm synthscenes: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    if is_up_to_date(out, cfg):
        print(f"{out}: up to date (same parameters); nothing to do")
        return 0
    t0 = time.perf_counter()
    try:
        generate(out, preset=args.preset, seed=args.seed, overwrite=args.overwrite, progress=True, **overrides)
    except FileExistsError as e:
        print(f"kgitm synthscenes: {e}", file=sys.stderr)
        return 2
    meta = read_meta(out)
    for split in SPLITS:
        n = meta["splits"][split]
        print(f"{split:5s}: {n} images, {n * cfg.captions_per_image} captions, "
              f"features ({n}, {cfg.regions}, {cfg.feature_dim})")
    d = meta["diagnostics"]
    print(f"diagnostics: {d['relation_swap']} relation-swap pairs, {d['attribute_swap']} attribute-swap pairs, "
          f"{d['synonym_shift_changed']}/{d['synonym_shift_captions']} synonym-shift captions changed")
    print(f"wrote {out} in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
