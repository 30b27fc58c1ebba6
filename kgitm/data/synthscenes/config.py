"""SynthScenes configuration: :class:`SynthScenesConfig` (every knob of the generator), the size
presets and :func:`make_config`; also the generator version stamped on every data set and the split
names.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

GENERATOR_VERSION = "1.2"  # 1.2: predicted scene graphs (predicted_graphs)
SPLITS = ("train", "dev", "test")


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
        predicted_graphs: also write the simulated scene-graph generator's predictions
            ``{split}_scene_graphs_{predcls,sgcls,sgdet}.json`` next to the ground truth (True).
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
    predicted_graphs: bool = True

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
