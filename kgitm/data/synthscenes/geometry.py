"""Box geometry of SynthScenes relations: the layout rule of every predicate (:func:`relation_holds`
checks it) and the samplers that build boxes satisfying it, in normalised ``x1, y1, x2, y2`` image
coordinates (y grows downwards).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .ontology import PREDICATES, _PRED_INDEX

Box = tuple[float, float, float, float]


def _geometry_holds(geometry: str, s: Sequence, o: Sequence) -> "bool | np.ndarray":
    """The layout rule ``geometry`` for subject box ``s`` and object box ``o``.

    ``s`` and ``o`` are four components ``x1, y1, x2, y2``, each a number or an array (the arrays
    broadcast against each other), so the one rule serves :func:`relation_holds` (one pair) and
    :func:`relation_matrix` (all pairs of many images); the result is a bool or a bool array.
    """
    sx1, sy1, sx2, sy2 = s
    ox1, oy1, ox2, oy2 = o
    scx, scy, ocx, ocy = (sx1 + sx2) / 2, (sy1 + sy2) / 2, (ox1 + ox2) / 2, (oy1 + oy2) / 2
    x_overlap = np.minimum(sx2, ox2) - np.maximum(sx1, ox1)
    y_overlap = np.minimum(sy2, oy2) - np.maximum(sy1, oy1)
    intersects = (x_overlap > 0) & (y_overlap > 0)
    if geometry in ("on", "riding", "sitting on", "standing on"):
        return (scy < ocy) & intersects
    if geometry == "above":
        return (sy2 <= oy1) & (x_overlap > 0)
    if geometry == "left of":
        return scx < ocx
    if geometry == "in front of":
        return (sy2 > oy2) & intersects
    if geometry in ("holding", "carrying"):
        centre_inside = (sx1 < ocx) & (ocx < sx2) & (sy1 < ocy) & (ocy < sy2)
        smaller = (ox2 - ox1) * (oy2 - oy1) < (sx2 - sx1) * (sy2 - sy1)
        lower = ocy >= scy if geometry == "holding" else ocy < scy
        return centre_inside & smaller & lower
    sw, sh, ow, oh = sx2 - sx1, sy2 - sy1, ox2 - ox1, oy2 - oy1
    gap = np.maximum(ox1 - sx2, sx1 - ox2)
    if geometry == "next to":
        return (gap <= 0.5 * np.maximum(sw, ow)) & (abs(scy - ocy) <= 0.5 * np.maximum(sh, oh))
    if geometry == "near":
        return (gap <= 1.5 * np.maximum(sw, ow)) & (abs(scy - ocy) <= np.maximum(sh, oh))
    raise ValueError(f"unknown geometry {geometry!r}")


def relation_holds(predicate: str, subject_box: Sequence[float], object_box: Sequence[float]) -> bool:
    """Whether the box layout satisfies ``subject predicate object``.

    The rules are invariant to scaling each axis, so pixel or normalised ``x1, y1, x2, y2`` boxes
    both work (y grows downwards). For every non-symmetric predicate at most one of
    ``relation_holds(p, a, b)`` and ``relation_holds(p, b, a)`` is true.
    """
    p = PREDICATES[_PRED_INDEX[predicate]]
    s, o = (object_box, subject_box) if p.inverse else (subject_box, object_box)
    return bool(_geometry_holds(p.geometry, s, o))


def relation_matrix(boxes: np.ndarray) -> np.ndarray:
    """:func:`relation_holds` of every predicate for every ordered pair of boxes, vectorised.

    Args:
        boxes: ``x1, y1, x2, y2`` boxes (pixel or normalised), any leading batch shape.

    Returns:
        ``holds[p, ..., i, j] = relation_holds(PREDICATES[p].name, boxes[..., i, :], boxes[..., j, :])``
        (the diagonal ``i == j`` is computed like any pair).

    Shapes:
        boxes: ``(..., N, 4)``; returns ``(P, ..., N, N)`` bool with ``P = len(PREDICATES)``.
    """
    comp = np.moveaxis(np.asarray(boxes), -1, 0)  # (4, ..., N)
    subj, obj = comp[..., :, None], comp[..., None, :]  # (4, ..., N, 1), (4, ..., 1, N)
    out = np.empty((len(PREDICATES), *comp.shape[1:], comp.shape[-1]), dtype=bool)
    for k, p in enumerate(PREDICATES):
        out[k] = _geometry_holds(p.geometry, obj, subj) if p.inverse else _geometry_holds(p.geometry, subj, obj)
    return out


# Normalised (width, height) ranges of object boxes per kind.
_BOX_SIZE = {
    "person": ((0.12, 0.25), (0.30, 0.60)),
    "animal": ((0.15, 0.35), (0.15, 0.35)),
    "vehicle": ((0.25, 0.50), (0.20, 0.40)),
    "furniture": ((0.20, 0.45), (0.15, 0.35)),
    "object": ((0.06, 0.16), (0.06, 0.16)),
    "plant": ((0.15, 0.35), (0.25, 0.55)),
}


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
