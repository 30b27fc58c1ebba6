"""Region features: the prototype table drawn once from the seed, the composition of an image's
``R`` region slots (:func:`region_layout`: objects, duplicates, stuff, distractors) and the
vectorised rendering of features from those compositions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .config import SynthScenesConfig
from .geometry import _random_box
from .layout import SceneLayout
from .ontology import ATTRIBUTES, CATEGORIES, KINDS, PREDICATES, SCENES, STUFF, _STUFF_INDEX

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
    noise scale ``(R,)``, the region row of each annotated object, and ``depicts`` ``(R,)``: the
    object a region shows (its main region and its duplicates), -1 for stuff and distractors."""

    boxes: np.ndarray
    rows: np.ndarray
    weights: np.ndarray
    noise: np.ndarray
    object_region: list[int]
    depicts: np.ndarray


_MIN_JITTERED_SIDE = 0.01  # a jittered box keeps at least this normalised width and height


def jitter_boxes(boxes: np.ndarray, j: float, rng: np.random.Generator) -> np.ndarray:
    """Move every corner of normalised boxes by up to ``j`` times the box's width/height, inside the image.

    Draws ``rng.uniform(-j, j)`` for the four corners of each box in order (one box at a time gives
    the same numbers as all at once), clips to ``[0, 1]`` and keeps each side at least
    ``_MIN_JITTERED_SIDE``. Used for duplicate regions and for the simulated detector's boxes.

    Shapes:
        boxes: ``(..., 4)`` ``x1, y1, x2, y2`` in ``[0, 1]``; returns the same shape (float64).
    """
    b = np.asarray(boxes, dtype=np.float64)
    w, h = b[..., 2] - b[..., 0], b[..., 3] - b[..., 1]
    d = rng.uniform(-j, j, size=b.shape) * np.stack([w, h, w, h], axis=-1)
    x1, y1, x2, y2 = np.moveaxis(np.clip(b + d, 0.0, 1.0), -1, 0)
    x2 = np.maximum(x2, np.minimum(x1 + _MIN_JITTERED_SIDE, 1.0))
    y2 = np.maximum(y2, np.minimum(y1 + _MIN_JITTERED_SIDE, 1.0))
    return np.stack([x1, y1, x2, y2], axis=-1)


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
    depicts = np.full(R, -1, dtype=np.int64)
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
        depicts[i] = i
    free = R - n_obj
    n_dup = min(cfg.max_duplicates, int(free * cfg.duplicate_fraction) // max(n_obj, 1))
    r = n_obj
    for d in range(n_dup):
        for i, ob in enumerate(img.objects):
            rows[r], weights[r] = rows[i], weights[i] * cfg.duplicate_weight
            noise[r] = 1.0 + cfg.duplicate_noise
            boxes[r] = jitter_boxes(np.asarray(ob.box), cfg.box_jitter, rng)
            depicts[r] = i
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
    return RegionLayout(boxes[perm], rows[perm], weights[perm], noise[perm], [int(inv[i]) for i in range(n_obj)],
                        depicts[perm])


def _render_features(rows: np.ndarray, weights: np.ndarray, noise: np.ndarray, protos: np.ndarray,
                     cfg: SynthScenesConfig, rng: np.random.Generator) -> np.ndarray:
    """Vectorised ``sum_s w[..., s] * P[rows[..., s]] + noise``; shapes ``(n, R, S)`` -> ``(n, R, D)``."""
    sigma = np.float32(cfg.feature_noise / math.sqrt(cfg.feature_dim))
    out = rng.standard_normal((*rows.shape[:2], cfg.feature_dim), dtype=np.float32)
    out *= (sigma * noise)[..., None]
    for s in range(rows.shape[-1]):
        out += weights[..., s, None] * protos[rows[..., s]]
    return out
