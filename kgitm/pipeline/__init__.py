"""The data pipeline: files, graph stores and concept mappings -> typed batches.

Sits between the knowledge layer and the encoders. :class:`~kgitm.pipeline.dataset.CaptionImageDataset`
precomputes every model input of a caption set once (vocabulary ids, caption transforms such as
concept ids and sub-word pieces, scene-graph index tensors, relation-swapped copies);
:class:`~kgitm.pipeline.dataset.Collator` pads them into a :class:`~kgitm.core.batch.Batch`.
:mod:`kgitm.pipeline.diagnostics` reads the SynthScenes diagnostic sets. Plain PyTorch: the Lightning
data module (:mod:`kgitm.lit.datamodule`) only builds loaders from these.
"""

from kgitm.pipeline.dataset import CaptionImageDataset, CaptionSet, CaptionTransform, Collator, SceneGraphLimits

__all__ = ["CaptionImageDataset", "CaptionSet", "CaptionTransform", "Collator", "SceneGraphLimits"]
