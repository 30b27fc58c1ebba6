"""Scene sampling: a :class:`SceneLayout` (scene, image size, objects with attributes and boxes,
relations) drawn by :class:`_Sampler` from the scenes' Zipf category weights, the predicates'
weights and the geometry rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .config import SynthScenesConfig
from .geometry import Box, _box_size, _fit, _layout_pair, _random_box, relation_holds
from .ontology import ATTRIBUTE_GROUPS, CATEGORIES, PREDICATES, SCENES, _ATTR_INDEX, _CAT_INDEX, _GROUP_ORDER


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
