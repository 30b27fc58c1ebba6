"""SynthScenes: a deterministic synthetic image-text retrieval data set in the precomputed layout.

Every image is a small scene (a scene context such as ``kitchen`` or ``street``, 3 to 10 objects with
attributes, one or two relations between pairs of objects) rendered as ``R`` region features and boxes
the way a Faster R-CNN detector would emit them, with ``k`` English captions, a ground-truth
Visual-Genome-style scene graph (the oracle) and the Neural-Motifs-style scene graphs a simulated
scene-graph generator predicts for it (predcls, sgcls, sgdet). The test split carries three diagnostic sets (relation swap,
attribute swap, synonym shift). See ``docs/synthscenes.md`` for the design and the on-disk contract.

Region features are linear sums of prototypes drawn once from the seed:
``region = category + a * attributes + b * relation + noise`` for object regions, scaled copies for
duplicate boxes, scene "stuff" prototypes and weak random categories for distractor boxes. The
relation component is added equally to the subject and the object regions and the sampled
(subject category, object category) pairs are symmetric for every predicate, so the direction of a
relation can only be read from the box layout.

All randomness comes from one ``np.random.SeedSequence(seed)``: one child stream for the
prototypes and one per split for layouts/captions, for feature noise and (one per protocol) for the
predicted scene graphs, so a split depends only on the seed and its own size (changing ``images_train`` does not change the test split).

Modules, each importing only the ones before it:

- ``ontology``: categories, attributes, predicates, scenes and stuff (the vocabulary tables);
- ``config``: :class:`SynthScenesConfig`, the presets, :func:`make_config`, the generator version;
- ``geometry``: the box rule of every predicate (:func:`relation_holds`) and box samplers;
- ``layout``: scene sampling (:class:`SceneLayout`, :class:`SceneObject`);
- ``features``: prototypes, region slots (:func:`region_layout`) and feature rendering;
- ``captions``: caption pieces, the captioner and :func:`render_caption`;
- ``diagnostics``: the relation-swap and attribute-swap caption pairs;
- ``predicted``: the simulated scene-graph generator (predcls, sgcls, sgdet) and its VG150/VG50
  vocabulary, whose Motifs-style predictions stand in for the ground-truth (oracle) scene graphs;
- ``writer``: the files of a data set, ``meta.json`` and :func:`generate`;
"""

from __future__ import annotations

from .captions import Piece, render_caption
from .config import GENERATOR_VERSION, PRESETS, SPLITS, SynthScenesConfig, make_config
from .features import RegionLayout, region_layout
from .geometry import Box, relation_holds, relation_matrix
from .layout import SceneLayout, SceneObject
from .ontology import (ATTRIBUTE_GROUPS, ATTRIBUTES, CATEGORIES, KINDS, PREDICATES, SCENES, STUFF, Category,
                       Predicate, Scene)
from .predicted import LABEL_MAP, PREDICATE_MAP, SGG_PRESETS, SGGNoise, predict_scene_graphs
from .writer import generate, is_up_to_date, read_meta

__all__ = [
    "ATTRIBUTES", "ATTRIBUTE_GROUPS", "Box", "CATEGORIES", "Category", "GENERATOR_VERSION", "KINDS", "LABEL_MAP",
    "PREDICATES", "PREDICATE_MAP", "PRESETS", "Piece", "Predicate", "RegionLayout", "SCENES", "SGGNoise",
    "SGG_PRESETS", "SPLITS", "STUFF", "Scene", "SceneLayout", "SceneObject", "SynthScenesConfig", "generate",
    "is_up_to_date", "make_config", "predict_scene_graphs", "read_meta", "region_layout", "relation_holds",
    "relation_matrix", "render_caption",
]
