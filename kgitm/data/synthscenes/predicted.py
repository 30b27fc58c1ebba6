"""Predicted scene graphs: a simulated scene-graph generator whose outputs are as wrong as a real one's.

The ground-truth scene graph ``{split}_scene_graphs.json`` is an *oracle*: only the true objects, the
true pairs in the true direction, the true predicates. Real scene-graph matching (SGM, Wang et al.,
WACV 2020) consumes Neural-Motifs predictions (Zellers et al., CVPR 2018), which on Visual Genome
(VG150 classes, VG50 predicates) reach triplet Recall@50 of about 66 (PredCls), 39 (SGCls) and 32
(SGDet). This module simulates such a generator from what SynthScenes knows about an image, and
writes its output in the Motifs-style JSON that :func:`kgitm.graphs.scene_graph_json.read_motifs_predictions`
reads. The three protocols of Scene-Graph-Benchmark (Tang et al., CVPR 2020) are presets
(:data:`SGG_PRESETS`), each an :class:`SGGNoise`:

- ``predcls``: true boxes and true labels given; only the pairs and their predicates are predicted;
- ``sgcls``: true boxes given; labels and relations predicted;
- ``sgdet``: every region row is a proposal (objects, duplicates, stuff, distractors) with a
  jittered box; labels and relations predicted.

**Vocabulary.** Labels are VG150 classes and predicates VG50 predicates (:data:`VG150_CLASSES`,
:data:`VG50_PREDICATES`; index 0 of ``ind_to_classes``/``ind_to_predicates`` is ``__background__`` as in
Motifs' outputs). :data:`LABEL_MAP` and :data:`PREDICATE_MAP` say what each SynthScenes category, stuff
class and predicate is called there: coarser where VG150 has no class (``duck -> bird``), ``near`` for
VG50's missing ``next to``/``left of``/``right of``, ``under`` for ``below``; ``ball`` and ``frisbee``
(no VG150 class) and most stuff are out of the vocabulary, as objects outside the 150 classes are
absent from VG150.

**Object labels** come from appearance: a region's noise-free feature ``sum_s w_s P[row_s]``
(category, attributes, relation, as rendered by :mod:`.features`) is compared with every category and
stuff prototype; ``label_sharpness * similarity + kind_sharpness * (mean similarity to the class's
kind) + label_noise * N(0, 1)`` are the logits of a softmax whose probabilities are summed per VG150
class (out-of-vocabulary classes go to the background). Same-kind categories share a prototype
component and the kind term separates kinds, so the errors are dog/cat and man/boy confusions (on
``small``, sgcls labels 74% of the objects right and over 99% of its errors stay within the kind).

**Relations.** Every ordered pair of objects gets one predicate (graph constraint) and a score. A
ground-truth relation whose two objects are in the vocabulary is *found* with probability
``1 - miss_prob``; a found edge is *flipped* (put on the pair object -> subject) with probability
``flip_prob`` and *mislabelled* with probability ``mislabel_prob``; its relation logit is
``fg_logit`` (plus ``duplicate_logit`` when one of the regions is a duplicate of the object). Every
other pair (and every missed edge) is background: logit ``bg_logit``, predicate sampled from the
predicates whose box rule (:func:`.geometry.relation_matrix`) holds for the pair, weighted by the VG
predicate frequency ``VG_PREDICATE_COUNTS ** prior_power`` and, for semantic predicates, by
``exp(appearance_gain * s)`` where ``s`` is the smaller of the two regions' similarities to the
predicate's prototype (``near`` takes no evidence from the ``left of``/``right of`` rules, which only
order two boxes). A mislabelled edge takes the best other predicate of that distribution, so errors
drift to frequent predicates (``on``, ``near``) as Motifs' do. All
logits get ``score_noise * N(0, 1)``; the triplet score is ``sigmoid(logit) * box_score(s) *
box_score(o)`` (Scene-Graph-Benchmark's ranking), and the best ``max_triplets`` triplets are kept,
sorted by score. In sgdet the pairs of a found edge's duplicate regions carry it too (same predicate
and direction), as a detector's overlapping boxes do, and every other proposal pair is a candidate
spurious edge.

Randomness: one generator per split and preset, spawned by the writer from the split's seed sequence
after the layout and feature streams, so no earlier file changes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .config import SynthScenesConfig
from .features import _ROW_PRED, _ROW_STUFF, RegionLayout, jitter_boxes
from .geometry import relation_matrix
from .layout import SceneLayout
from .ontology import CATEGORIES, PREDICATES, STUFF

PREDICTED_FILE = "{split}_scene_graphs_{preset}.json"
ORACLE_FILE = "{split}_scene_graphs.json"
BACKGROUND = "__background__"  # index 0 of Motifs' class and predicate tables

# The 150 object classes and 50 predicates of VG150 (Xu et al., CVPR 2017), in the order of
# Scene-Graph-Benchmark's VG-SGG-dicts-with-attri.json (ids 1..150 and 1..50 there).
VG150_CLASSES: tuple[str, ...] = (
    "airplane", "animal", "arm", "bag", "banana", "basket", "beach", "bear", "bed", "bench", "bike", "bird", "board",
    "boat", "book", "boot", "bottle", "bowl", "box", "boy", "branch", "building", "bus", "cabinet", "cap", "car",
    "cat", "chair", "child", "clock", "coat", "counter", "cow", "cup", "curtain", "desk", "dog", "door", "drawer",
    "ear", "elephant", "engine", "eye", "face", "fence", "finger", "flag", "flower", "food", "fork", "fruit",
    "giraffe", "girl", "glass", "glove", "guy", "hair", "hand", "handle", "hat", "head", "helmet", "hill", "horse",
    "house", "jacket", "jean", "kid", "kite", "lady", "lamp", "laptop", "leaf", "leg", "letter", "light", "logo",
    "man", "men", "motorcycle", "mountain", "mouth", "neck", "nose", "number", "orange", "pant", "paper", "paw",
    "people", "person", "phone", "pillow", "pizza", "plane", "plant", "plate", "player", "pole", "post", "pot",
    "racket", "railing", "rock", "roof", "room", "screen", "seat", "sheep", "shelf", "shirt", "shoe", "short",
    "sidewalk", "sign", "sink", "skateboard", "ski", "skier", "sneaker", "snow", "sock", "stand", "street",
    "surfboard", "table", "tail", "tie", "tile", "tire", "toilet", "towel", "tower", "track", "train", "tree",
    "truck", "trunk", "umbrella", "vase", "vegetable", "vehicle", "wave", "wheel", "window", "windshield", "wing",
    "wire", "woman", "zebra",
)
VG50_PREDICATES: tuple[str, ...] = (
    "above", "across", "against", "along", "and", "at", "attached to", "behind", "belonging to", "between",
    "carrying", "covered in", "covering", "eating", "flying in", "for", "from", "growing on", "hanging from", "has",
    "holding", "in", "in front of", "laying on", "looking at", "lying on", "made of", "mounted on", "near", "of", "on",
    "on back of", "over", "painted on", "parked on", "part of", "playing", "riding", "says", "sitting on",
    "standing on", "to", "under", "using", "walking in", "walking on", "watching", "wearing", "wears", "with",
)
IND_TO_CLASSES: tuple[str, ...] = (BACKGROUND, *VG150_CLASSES)
IND_TO_PREDICATES: tuple[str, ...] = (BACKGROUND, *VG50_PREDICATES)

# SynthScenes category or stuff class -> its VG150 class; None: VG150 has no class for it (never
# predicted, and dropped from the ground truth when recall is measured, as VG150 drops such objects).
LABEL_MAP: dict[str, str | None] = {
    "man": "man", "woman": "woman", "boy": "boy", "girl": "girl",
    "dog": "dog", "cat": "cat", "horse": "horse", "cow": "cow", "sheep": "sheep", "bird": "bird",
    "duck": "bird",  # no duck in VG150: its hypernym
    "car": "car",
    "bicycle": "bike",  # VG150's name for it
    "motorcycle": "motorcycle", "bus": "bus", "truck": "truck", "boat": "boat",
    "table": "table", "chair": "chair", "bench": "bench",
    "couch": "seat",  # no couch or sofa in VG150; seat is the class its cushions are labelled with
    "bed": "bed", "cup": "cup", "bottle": "bottle", "bowl": "bowl", "book": "book",
    "ball": None,  # no ball (or toy) class in VG150
    "bag": "bag", "box": "box", "phone": "phone", "laptop": "laptop", "umbrella": "umbrella", "kite": "kite",
    "lamp": "lamp", "clock": "clock", "vase": "vase", "pillow": "pillow",
    "frisbee": None,  # no frisbee class in VG150
    "hat": "hat", "shirt": "shirt", "jacket": "jacket",
    "cake": "food",  # VG150 has only the coarse food (and fruit, vegetable)
    "sandwich": "food",  # as cake
    "pizza": "pizza", "banana": "banana", "tree": "tree", "flower": "flower",
    "bush": "plant",  # no bush or shrub in VG150: its hypernym
    # stuff classes (background regions)
    "road": "street",  # VG150 calls roads street
    "sidewalk": "sidewalk", "building": "building",
    "sky": None,  # VG150 has no sky
    "grass": None,  # nor grass
    "path": None,  # nor path
    "wall": None,  # nor wall
    "floor": None,  # nor floor
    "cabinet": "cabinet", "window": "window",
    "rug": None,  # nor rug
    "sand": "beach",  # no sand in VG150; sand regions are the beach
    "water": None,  # no water (wave is a part of it, not the region)
    "fence": "fence", "curtain": "curtain",
}

# SynthScenes predicate -> VG50 predicate.
PREDICATE_MAP: dict[str, str] = {
    "on": "on", "under": "under", "above": "above",
    "below": "under",  # VG50 has no below
    "left of": "near",  # VG50 has no left of / right of: VG annotators' word for side by side is near
    "right of": "near",  # as left of
    "in front of": "in front of", "behind": "behind",
    "next to": "near",  # VG50 has no next to
    "near": "near", "riding": "riding", "holding": "holding", "carrying": "carrying", "sitting on": "sitting on",
    "standing on": "standing on",
}

# Annotations per predicate in VG150's training data (predicate_count of VG-SGG-dicts-with-attri.json),
# for the predicates PREDICATE_MAP uses: the frequency prior of the relation classifier.
VG_PREDICATE_COUNTS: dict[str, int] = {
    "on": 712409, "near": 96589, "above": 47341, "holding": 42722, "behind": 41356, "under": 22596,
    "sitting on": 18643, "standing on": 14185, "in front of": 13715, "riding": 8856, "carrying": 5213,
}

# Box rules that order two boxes without saying they are close: they are no evidence for "near".
NO_NEARNESS_EVIDENCE = ("left of", "right of")
_CHUNK = 256  # images per vectorised chunk (fixed: part of the determinism contract)
_SCORE_DECIMALS = 6  # decimals of the scores written (scores are in [0, 1])
_BOX_DECIMALS = 2  # decimals of the pixel boxes written


@dataclass(frozen=True)
class SGGNoise:
    """Noise parameters of the simulated scene-graph generator for one protocol.

    Args:
        name: protocol name (``predcls``, ``sgcls``, ``sgdet``), used in the file name.
        gt_boxes: objects are the annotated objects with their true boxes (else every region row is a
            proposal with a jittered box).
        gt_labels: objects carry their true (mapped) labels with score 1; needs ``gt_boxes``.
        box_jitter: detector box error: each corner moves by up to this fraction of the box size.
        label_sharpness: logit per unit of similarity to a class's prototype (object classifier).
        kind_sharpness: logit per unit of mean similarity to the prototypes of the class's kind (the
            classifier tells kinds apart better than the categories of one kind).
        label_noise: standard deviation of the Gaussian noise on the classifier's logits.
        miss_prob: probability that a ground-truth relation is not found (left to the background).
        flip_prob: probability that a found relation is predicted object -> subject.
        mislabel_prob: probability that a found relation gets another predicate.
        fg_logit: mean relation logit of a found relation.
        bg_logit: mean relation logit of every other pair.
        duplicate_logit: added to a found relation's logit on a pair with a duplicate region.
        score_noise: standard deviation of the Gaussian noise on every relation logit.
        appearance_gain: weight of a semantic predicate's appearance in the predicate distribution.
        prior_power: exponent of the VG predicate frequencies in the predicate distribution.
        max_triplets: triplets kept per image, best first (saved Motifs outputs keep 50 to 100).
    """

    name: str
    gt_boxes: bool
    gt_labels: bool
    box_jitter: float
    label_sharpness: float
    kind_sharpness: float
    label_noise: float
    miss_prob: float
    flip_prob: float
    mislabel_prob: float
    fg_logit: float
    bg_logit: float
    duplicate_logit: float
    score_noise: float
    appearance_gain: float
    prior_power: float
    max_triplets: int = 50

    def __post_init__(self) -> None:
        if self.gt_labels and not self.gt_boxes:
            raise ValueError(f"SGGNoise {self.name!r}: gt_labels needs gt_boxes (true labels belong to true boxes)")
        for f in ("miss_prob", "flip_prob", "mislabel_prob"):
            if not 0.0 <= getattr(self, f) <= 1.0:
                raise ValueError(f"SGGNoise {self.name!r}: {f} = {getattr(self, f)} is not a probability")
        if self.max_triplets < 1:
            raise ValueError(f"SGGNoise {self.name!r}: max_triplets must be positive")


# Calibrated to Motifs' triplet R@50 on VG150 (66 / 39 / 32) on the dev split of SynthScenes small,
# seeds 0-2 (docs/synthscenes.md has the table): one relation head for the three protocols, the object
# classifier noisier on proposals (sgdet) than on true boxes (sgcls).
PREDCLS = SGGNoise("predcls", gt_boxes=True, gt_labels=True, box_jitter=0.0, label_sharpness=0.0, kind_sharpness=0.0,
                   label_noise=0.0, miss_prob=0.15, flip_prob=0.08, mislabel_prob=0.32, fg_logit=0.5, bg_logit=-0.5,
                   duplicate_logit=0.0, score_noise=1.5, appearance_gain=8.0, prior_power=0.5)
SGCLS = dataclasses.replace(PREDCLS, name="sgcls", gt_labels=False, label_sharpness=3.0, kind_sharpness=12.0,
                            label_noise=1.03)
SGDET = dataclasses.replace(SGCLS, name="sgdet", gt_boxes=False, box_jitter=0.15, label_noise=1.2,
                            duplicate_logit=-1.0)
SGG_PRESETS: dict[str, SGGNoise] = {p.name: p for p in (PREDCLS, SGCLS, SGDET)}

# ------------------------------------------------------------------------------------- index tables

_CLASS_INDEX = {c: i for i, c in enumerate(IND_TO_CLASSES)}


def label_of(name: str) -> int:
    """Index in :data:`IND_TO_CLASSES` of SynthScenes category or stuff ``name`` (0: out of vocabulary)."""
    target = LABEL_MAP[name]
    return _CLASS_INDEX[target] if target else 0


_FINE = tuple(c.name for c in CATEGORIES) + STUFF  # the classifier's classes: categories, then stuff
_FINE_ROWS = np.array([*range(len(CATEGORIES)), *(_ROW_STUFF + k for k in range(len(STUFF)))])
_GROUPS = tuple(dict.fromkeys([c.kind for c in CATEGORIES] + ["stuff"] * len(STUFF)))  # kinds, then stuff
_GROUP_OF = np.array([_GROUPS.index(c.kind) for c in CATEGORIES] + [_GROUPS.index("stuff")] * len(STUFF))
_FINE_CLASS = np.array([label_of(f) for f in _FINE])  # 0: out of vocabulary, the background
_USED = tuple(p for p in VG50_PREDICATES if p in set(PREDICATE_MAP.values()))  # compact predicate axis
_USED_INDEX = {p: v for v, p in enumerate(_USED)}
_USED_TO_IND = np.array([IND_TO_PREDICATES.index(p) for p in _USED])
_PRED_TO_USED = np.array([_USED_INDEX[PREDICATE_MAP[p.name]] for p in PREDICATES])
# evidence[q, v]: box rule of SynthScenes predicate q supports VG predicate v
_EVIDENCE = np.zeros((len(PREDICATES), len(_USED)), dtype=bool)
for _q, _p in enumerate(PREDICATES):
    _EVIDENCE[_q, _PRED_TO_USED[_q]] = _p.name not in NO_NEARNESS_EVIDENCE
# the semantic SynthScenes predicate whose appearance supports VG predicate v (-1: none)
_APPEARANCE = np.full(len(_USED), -1)
for _q, _p in enumerate(PREDICATES):
    if _p.semantic:
        _APPEARANCE[_PRED_TO_USED[_q]] = _q


def predicted_meta() -> dict:
    """What ``meta.json`` records of the predicted scene graphs: files, presets and the vocabulary."""
    return {
        "files": PREDICTED_FILE, "oracle": ORACLE_FILE,
        "presets": {name: dataclasses.asdict(p) for name, p in SGG_PRESETS.items()},
        "label_map": dict(LABEL_MAP), "predicate_map": dict(PREDICATE_MAP),
        "ind_to_classes": list(IND_TO_CLASSES), "ind_to_predicates": list(IND_TO_PREDICATES),
    }


# ------------------------------------------------------------------------------------- prediction


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@dataclass
class _Candidates:
    """The objects of a chunk of images, padded to ``C`` per image.

    ``valid`` ``(n, C)`` marks real candidates (they come first); ``row`` ``(n, C)`` is each one's region
    row; ``depicts`` ``(n, C)`` the annotated object it shows (-1: stuff, distractor, padding);
    ``main`` ``(n, K)`` the candidate of each annotated object's main region (-1: out of vocabulary),
    ``K = max_objects``; ``is_main`` ``(n, C)`` whether a candidate is an object's main region.
    """

    valid: np.ndarray
    row: np.ndarray
    depicts: np.ndarray
    main: np.ndarray
    is_main: np.ndarray


def _candidates(images: Sequence[SceneLayout], regions: Sequence[RegionLayout], in_vocab: list[list[int]],
                cfg: SynthScenesConfig, noise: SGGNoise) -> _Candidates:
    """True objects in the vocabulary (``gt_boxes``), or every region row as a proposal."""
    n = len(images)
    C = cfg.max_objects if noise.gt_boxes else cfg.regions
    valid = np.zeros((n, C), dtype=bool)
    row = np.zeros((n, C), dtype=np.int64)
    depicts = np.full((n, C), -1, dtype=np.int64)
    main = np.full((n, cfg.max_objects), -1, dtype=np.int64)
    for b, (reg, ks) in enumerate(zip(regions, in_vocab)):
        if noise.gt_boxes:
            valid[b, :len(ks)] = True
            row[b, :len(ks)] = [reg.object_region[k] for k in ks]
            depicts[b, :len(ks)] = ks
            main[b, ks] = np.arange(len(ks))
        else:
            valid[b] = True
            row[b] = np.arange(C)
            depicts[b] = reg.depicts
            main[b, ks] = [reg.object_region[k] for k in ks]
    is_main = np.zeros((n, C), dtype=bool)
    has = np.nonzero(main >= 0)
    is_main[has[0], main[has]] = True
    return _Candidates(valid, row, depicts, main, is_main)


def _classify(sim: np.ndarray, noise: SGGNoise, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Labels (ids into :data:`IND_TO_CLASSES`) and their probabilities from appearance similarities.

    Shapes:
        sim: ``(n, C, rows)`` similarity of each candidate to every prototype; returns ``(n, C)`` twice.
    """
    fine = sim[..., _FINE_ROWS]  # (n, C, F)
    group_mean = np.stack([fine[..., _GROUP_OF == g].mean(-1) for g in range(len(_GROUPS))], -1)[..., _GROUP_OF]
    logits = (noise.label_sharpness * fine + noise.kind_sharpness * group_mean
              + noise.label_noise * rng.standard_normal(fine.shape))
    fine_probs = _softmax(logits)
    probs = np.zeros((*fine.shape[:2], len(IND_TO_CLASSES)))
    for f, c in enumerate(_FINE_CLASS):  # summed per VG class; out of vocabulary: the background
        probs[..., c] += fine_probs[..., f]
    labels = 1 + probs[..., 1:].argmax(-1)  # the background is never a label (Motifs' argmax over 1..)
    return labels, np.take_along_axis(probs, labels[..., None], -1)[..., 0]


def _predicate_weights(boxes: np.ndarray, sim: np.ndarray, noise: SGGNoise) -> tuple[np.ndarray, np.ndarray]:
    """Log-weights of every VG predicate for every ordered pair: ``(allowed, log_any)``.

    ``log_any`` is the frequency prior plus the appearance term; ``allowed`` marks the predicates
    whose box rule holds (all of them for a pair no rule supports).

    Shapes:
        boxes: ``(n, C, 4)``; sim: ``(n, C, rows)``; returns ``(V, n, C, C)`` twice, ``V = len(_USED)``.
    """
    holds = relation_matrix(boxes)  # (Q, n, C, C)
    evidence = np.stack([holds[_EVIDENCE[:, v]].any(0) for v in range(len(_USED))])
    allowed = evidence | ~evidence.any(0, keepdims=True)
    prior = noise.prior_power * np.log([float(VG_PREDICATE_COUNTS[p]) for p in _USED])
    log_any = np.broadcast_to(prior[:, None, None, None], allowed.shape).copy()
    for v, q in enumerate(_APPEARANCE):
        if q >= 0:
            a = sim[..., _ROW_PRED + q]
            log_any[v] += noise.appearance_gain * np.minimum(a[:, :, None], a[:, None, :])
    return allowed, log_any


def _predict_chunk(images: Sequence[SceneLayout], regions: Sequence[RegionLayout], boxes_px: np.ndarray,
                   gram: np.ndarray, cfg: SynthScenesConfig, noise: SGGNoise, rng: np.random.Generator,
                   image_ids: Sequence[str]) -> list[dict]:
    """Predicted scene graphs of a chunk of images (arrays padded to ``C`` candidates per image)."""
    n = len(images)
    in_vocab = [[k for k, ob in enumerate(img.objects) if label_of(CATEGORIES[ob.category].name)] for img in images]
    cand = _candidates(images, regions, in_vocab, cfg, noise)
    C = cand.valid.shape[1]
    take = np.arange(n)[:, None], cand.row
    rows = np.stack([reg.rows for reg in regions])[take]  # (n, C, S)
    weights = np.stack([reg.weights for reg in regions])[take].astype(np.float64)
    sim = weights[..., 0, None] * gram[rows[..., 0]]  # (n, C, rows): <noise-free feature, prototype>
    for slot in range(1, rows.shape[-1]):
        sim += weights[..., slot, None] * gram[rows[..., slot]]

    if noise.gt_boxes:
        boxes = boxes_px[take].astype(np.float64)
    else:
        scale = np.array([[img.width, img.height, img.width, img.height] for img in images], dtype=np.float64)
        boxes = jitter_boxes(np.stack([reg.boxes for reg in regions]), noise.box_jitter, rng) * scale[:, None, :]
    if noise.gt_labels:
        labels = np.zeros((n, C), dtype=np.int64)
        for b, (img, ks) in enumerate(zip(images, in_vocab)):
            labels[b, :len(ks)] = [label_of(CATEGORIES[img.objects[k].category].name) for k in ks]
        box_scores = np.ones((n, C))
    else:
        labels, box_scores = _classify(sim, noise, rng)

    allowed, log_any = _predicate_weights(boxes, sim, noise)
    pred = (np.where(allowed, log_any, -np.inf) + rng.gumbel(size=allowed.shape)).argmax(0)  # (n, C, C)
    logit = noise.bg_logit + noise.score_noise * rng.standard_normal((n, C, C))
    T = max(len(img.relations) for img in images)
    events = rng.random((n, T, 3))  # found, flipped, mislabelled
    alt = rng.gumbel(size=(n, T, len(_USED)))
    for b, img in enumerate(images):
        both_main = cand.is_main[b][:, None] & cand.is_main[b][None, :]
        for t, (s_obj, p, o_obj) in enumerate(img.relations):
            if min(cand.main[b, s_obj], cand.main[b, o_obj]) < 0 or events[b, t, 0] < noise.miss_prob:
                continue  # out of the vocabulary, or missed: the pair stays background
            if events[b, t, 1] < noise.flip_prob:
                s_obj, o_obj = o_obj, s_obj
            v = _PRED_TO_USED[p]
            if events[b, t, 2] < noise.mislabel_prob:  # the best other predicate the boxes allow, else any other
                i, j = cand.main[b, s_obj], cand.main[b, o_obj]
                others = np.arange(len(_USED)) != v
                pool = allowed[:, b, i, j] & others
                v = int((np.where(pool if pool.any() else others, log_any[:, b, i, j], -np.inf) + alt[b, t]).argmax())
            pair = (cand.depicts[b] == s_obj)[:, None] & (cand.depicts[b] == o_obj)[None, :]
            pred[b][pair] = v
            logit[b][pair] += noise.fg_logit - noise.bg_logit + np.where(both_main[pair], 0.0, noise.duplicate_logit)

    score = box_scores[:, :, None] * box_scores[:, None, :] / (1.0 + np.exp(-logit))
    ok = cand.valid[:, :, None] & cand.valid[:, None, :] & ~np.eye(C, dtype=bool)
    score = np.where(ok, score, -1.0).reshape(n, C * C)
    order = np.argsort(-score, axis=1, kind="stable")[:, :noise.max_triplets]  # (n, K) best first
    top_score = np.round(np.take_along_axis(score, order, 1), _SCORE_DECIMALS)  # rounding keeps the order
    top_pred = _USED_TO_IND[np.take_along_axis(pred.reshape(n, C * C), order, 1)]
    boxes, box_scores = np.round(boxes, _BOX_DECIMALS), np.round(box_scores, _SCORE_DECIMALS)
    out = []
    for b in range(n):
        m, keep = int(cand.valid[b].sum()), top_score[b] >= 0
        out.append({
            "image_id": image_ids[b],
            "boxes": boxes[b, :m].tolist(),
            "box_labels": labels[b, :m].tolist(),
            "box_scores": box_scores[b, :m].tolist(),
            "region_index": cand.row[b, :m].tolist(),
            "rel_pairs": np.stack([order[b, keep] // C, order[b, keep] % C], 1).tolist(),
            "rel_labels": top_pred[b, keep].tolist(),
            "rel_scores": top_score[b, keep].tolist(),
        })
    return out


def predict_scene_graphs(images: Sequence[SceneLayout], regions: Sequence[RegionLayout], boxes_px: np.ndarray,
                         protos: np.ndarray, cfg: SynthScenesConfig, noise: SGGNoise, rng: np.random.Generator,
                         image_ids: Sequence[str]) -> dict:
    """The simulated scene-graph generator's output for a split, as Motifs-style JSON content.

    Args:
        images: the split's scene layouts, in order.
        regions: their region layouts (boxes, prototype rows, main regions, what each row depicts).
        boxes_px: the pixel boxes written to ``{split}_ims_bbx.npy``.
        protos: the prototype table of :mod:`.features`.
        cfg: the data set's config (``regions``, ``max_objects``).
        noise: the protocol (:data:`SGG_PRESETS`).
        rng: this split's and protocol's own generator.
        image_ids: the ids written to ``{split}_ids.txt``.

    Returns:
        ``{"ind_to_classes", "ind_to_predicates", "predictions"}``; one prediction per image with
        ``image_id``, ``boxes`` (pixel ``x1, y1, x2, y2``), ``box_labels`` and ``box_scores`` (class
        ids into ``ind_to_classes``, probabilities), ``region_index`` (the region row of each
        object), ``rel_pairs`` (subject, object object indices), ``rel_labels`` (ids into
        ``ind_to_predicates``) and ``rel_scores`` (triplet scores, descending).

    Shapes:
        boxes_px: ``(N, R, 4)``; protos: ``(rows, D)``.
    """
    protos = protos.astype(np.float64)
    gram = np.stack([(protos * row).sum(-1) for row in protos])  # elementwise: no BLAS, same bytes everywhere
    preds: list[dict] = []
    for a in range(0, len(images), _CHUNK):
        b = min(len(images), a + _CHUNK)
        preds += _predict_chunk(images[a:b], regions[a:b], boxes_px[a:b], gram, cfg, noise, rng, image_ids[a:b])
    return {"ind_to_classes": list(IND_TO_CLASSES), "ind_to_predicates": list(IND_TO_PREDICATES), "predictions": preds}
