"""Box geometry of SynthScenes relations: the layout rule of every predicate (:func:`relation_holds`
checks it) and the samplers that build boxes satisfying it, in normalised ``x1, y1, x2, y2`` image
coordinates (y grows downwards).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .ontology import PREDICATES, _PRED_INDEX

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
