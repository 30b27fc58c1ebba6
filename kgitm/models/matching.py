"""The matching model: encoders + optional knowledge + matcher, usable with no trainer at all.

:class:`MatchingModel` is a plain ``nn.Module`` (open_clip keeps ``CLIP`` apart from its training
task in the same way). It scores a batch (``model(batch)``), any block of encoded images against any
block of encoded captions (:meth:`MatchingModel.score`), and a whole split exactly and block-wise
within a memory budget (:meth:`MatchingModel.encode_split`, :meth:`MatchingModel.similarity`). The
Lightning task (:class:`kgitm.lit.module.MatchingModule`) owns one, plus the loss terms and the
optimiser.

Example (a notebook, plain PyTorch)::

    model = MatchingModel(RegionEncoder(feature_dim=2048, embed_dim=1024),
                          BiGRUTextEncoder(vocab_size=len(vocab), embed_dim=1024), SCANMatcher())
    dataset = CaptionImageDataset(split, captions, vocab, max_words=64, transforms=model.caption_transforms())
    loader = DataLoader(dataset, batch_size=128, collate_fn=dataset.collator())
    encoded = model.encode_split(loader)
    sims = model.similarity(encoded.images, encoded.captions)     # (N_img, N_cap), exact
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch
from torch import Tensor, nn

from kgitm.core.batch import Batch, CaptionInputs, ImageInputs
from kgitm.core.types import EncodedCaptions, EncodedImages, concat_captions, concat_images
from kgitm.eval.distributed import EvalShare
from kgitm.eval.similarity import compute_similarity
from kgitm.knowledge.module import KnowledgeModule
from kgitm.matchers.base import Matcher
from kgitm.matchers.fused import KnowledgeFusedMatcher

__all__ = ["BatchOutput", "EncodedSplit", "MatchingModel", "SplitEncoder"]


@dataclass
class BatchOutput:
    """What :meth:`MatchingModel.forward` computes for a batch: the encodings and the ``(B, B)``
    similarity matrix (images by captions, positives on the diagonal; ``None`` when a caller encoded
    the batch without scoring it)."""

    images: EncodedImages
    captions: EncodedCaptions
    sims: Optional[Tensor]


@dataclass
class EncodedSplit:
    """A whole split, encoded: each image once, every caption, and the image of each caption.

    Shapes:
        images: ``N`` items; captions: ``M`` items; caption_image: ``(M,)`` long.
    """

    images: EncodedImages
    captions: EncodedCaptions
    caption_image: Tensor


class SplitEncoder:
    """Collects the encodings of an evaluation pass over a split, one batch at a time.

    The loader must visit captions in order and not shuffle; each image is encoded once, at its first
    caption. The Lightning task feeds it from its validation/test/predict steps and
    :meth:`MatchingModel.encode_split` from a plain loop, so both run the same code.

    Args:
        model: the model whose encoders are used.
    """

    def __init__(self, model: "MatchingModel") -> None:
        self.model = model
        self._images: dict[int, EncodedImages] = {}
        self._captions: list[EncodedCaptions] = []
        self._caption_image: list[Tensor] = []
        self._caption_index: list[Tensor] = []

    @torch.no_grad()
    def add(self, batch: Batch) -> None:
        """Encode one batch's captions, and the images it holds first."""
        cpu = torch.device("cpu")
        self._captions.append(self.model.encode_captions(batch.captions).to(cpu))
        self._caption_image.append(batch.image_index.cpu())
        self._caption_index.append(batch.caption_index.cpu())
        idx = batch.image_index.tolist()
        first = [b for b, i in enumerate(idx) if i not in self._images and idx.index(i) == b]
        if first:
            rows = torch.tensor(first, device=batch.image_index.device)
            images = self.model.encode_images(batch.images.index(rows)).to(cpu)
            for j, b in enumerate(first):
                self._images[idx[b]] = images.index(slice(j, j + 1))

    def share(self) -> EvalShare:
        """What this process encoded, as it came (for :func:`kgitm.eval.distributed.gather_similarity`,
        which joins the shares of several processes)."""
        order = sorted(self._images)
        empty = torch.zeros(0, dtype=torch.long)
        return EvalShare(
            image_index=torch.tensor(order, dtype=torch.long),
            images=concat_images([self._images[i] for i in order]) if order else None,
            caption_index=torch.cat(self._caption_index) if self._captions else empty,
            caption_image=torch.cat(self._caption_image) if self._captions else empty,
            captions=concat_captions(self._captions) if self._captions else None,
        )

    def result(self) -> EncodedSplit:
        """All images (``0 .. N-1``, in order) and captions seen so far (one process, ordered loader)."""
        order = sorted(self._images)
        if order != list(range(len(order))):
            raise RuntimeError("evaluation images are not contiguous 0..N-1; the evaluation loader must not shuffle")
        caption_index = torch.cat(self._caption_index)
        if not torch.equal(caption_index, torch.arange(len(caption_index))):
            raise RuntimeError("evaluation captions did not come in order 0..M-1; the evaluation loader must not shuffle")
        return EncodedSplit(
            images=concat_images([self._images[i] for i in order]),
            captions=concat_captions(self._captions),
            caption_image=torch.cat(self._caption_image),
        )


class MatchingModel(nn.Module):
    """Encoders, optional concept-graph knowledge and a matcher: image-text similarity.

    Args:
        image_encoder: :class:`~kgitm.core.batch.ImageInputs` -> :class:`~kgitm.core.types.EncodedImages`
            (e.g. :class:`~kgitm.encoders.image.RegionEncoder`); must have ``embed_dim``.
        text_encoder: :class:`~kgitm.core.batch.CaptionInputs` -> :class:`~kgitm.core.types.EncodedCaptions`
            (:class:`~kgitm.encoders.text.BiGRUTextEncoder` or
            :class:`~kgitm.encoders.text.TransformerTextEncoder`); the same ``embed_dim``.
        matcher: scores blocks of images against blocks of captions; its size-dependent layers are
            built here (:meth:`~kgitm.matchers.base.Matcher.bind`).
        knowledge: optional :class:`~kgitm.knowledge.module.KnowledgeModule`, attached to both
            modalities' graphs and/or fused as a consensus score; bound here to the encoders' size and
            to the text encoder (whose word embeddings can be its node features).

    Shapes:
        ``forward(batch)``: ``(B, B)`` similarities of the batch's images and captions (in
        :class:`BatchOutput`); :meth:`score`: ``(N, M)`` for one block; :meth:`similarity`: ``(N, M)``
        for a whole split.
    """

    def __init__(
        self,
        image_encoder: nn.Module,
        text_encoder: nn.Module,
        matcher: Matcher,
        knowledge: Optional[KnowledgeModule] = None,
    ) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.text_encoder = text_encoder
        self.matcher = matcher
        self.knowledge = knowledge
        dims = {"image_encoder": getattr(image_encoder, "embed_dim", None), "text_encoder": getattr(text_encoder, "embed_dim", None)}
        if None in dims.values() or len(set(dims.values())) != 1:
            raise ValueError(
                f"MatchingModel: the encoders must share one embed_dim, got {dims}; set model.embed_dim once "
                "(kgitm links it into both encoders)"
            )
        self.embed_dim = int(dims["image_encoder"])
        matcher.bind(self.embed_dim)
        if knowledge is not None:
            knowledge.bind(self.embed_dim, text_encoder=text_encoder)

    # ------------------------------------------------------------------ data transforms
    def caption_transforms(self) -> list[Any]:
        """The per-caption transforms the data pipeline must apply for this model
        (:class:`~kgitm.pipeline.dataset.CaptionTransform`): the knowledge's word -> concept ids and the
        text encoder's own (a pretrained tokenizer's pieces)."""
        out: list[Any] = []
        if self.knowledge is not None:
            out.append(self.knowledge.concept_index())
        encoder_transforms = getattr(self.text_encoder, "caption_transforms", None)
        if callable(encoder_transforms):
            out.extend(encoder_transforms())
        return out

    # ------------------------------------------------------------------ encoding and scoring
    @property
    def scorer(self) -> Matcher:
        """The matcher, fused with the knowledge consensus when one is configured (a light wrapper,
        made on each access so that its parameters are registered once, under ``matcher``)."""
        if self.knowledge is None or self.knowledge.mode == "graph":
            return self.matcher
        return KnowledgeFusedMatcher(self.matcher, self.knowledge)

    def encode_images(self, images: ImageInputs, details: Optional[dict] = None) -> EncodedImages:
        """The image encoder's regions, with concept nodes attached when knowledge is configured
        (``details``, when given, receives the regions' concept weights: ``augment_images``)."""
        encoded = self.image_encoder(images)
        return encoded if self.knowledge is None else self.knowledge.augment_images(encoded, details)

    def encode_captions(self, captions: CaptionInputs) -> EncodedCaptions:
        encoded = self.text_encoder(captions)
        return encoded if self.knowledge is None else self.knowledge.augment_captions(encoded, captions.concept_ids)

    def score(self, images: EncodedImages, captions: EncodedCaptions) -> Tensor:
        """``(N, M)`` scores of one block of encoded images against one block of encoded captions."""
        return self.scorer(images, captions)

    def forward(self, batch: Batch) -> BatchOutput:
        images, captions = self.encode_images(batch.images), self.encode_captions(batch.captions)
        return BatchOutput(images, captions, self.scorer(images, captions))

    # ------------------------------------------------------------------ whole splits
    def similarity(
        self,
        images: EncodedImages,
        captions: EncodedCaptions,
        *,
        memory_budget_mb: float = 1024.0,
        device: torch.device | str | None = None,
        progress: bool = False,
    ) -> Tensor:
        """The exact ``(N, M)`` similarity of all images and captions, block by block within the memory
        budget (:func:`kgitm.eval.similarity.compute_similarity`), float32 on the CPU."""
        return compute_similarity(self.scorer, images, captions, memory_budget_mb=memory_budget_mb, device=device, progress=progress)

    @torch.no_grad()
    def encode_split(self, loader: Iterable[Batch], *, device: torch.device | str | None = None) -> EncodedSplit:
        """Encode every caption of an ordered loader and each image once (:class:`SplitEncoder`); the
        encodings are returned on the CPU."""
        device = torch.device(device) if device is not None else next(self.parameters()).device
        encoder = SplitEncoder(self)
        for batch in loader:
            encoder.add(batch.to(device))
        return encoder.result()

    @torch.no_grad()
    def encode_caption_set(self, loader: Iterable[Batch], *, device: torch.device | str | None = None) -> tuple[Tensor, EncodedCaptions]:
        """Encode the captions of a loader over a caption set (a diagnostic set scored against an
        already encoded split): ``(image_index (M,), captions)``, on the CPU."""
        device = torch.device(device) if device is not None else next(self.parameters()).device
        parts, index = [], []
        for batch in loader:
            batch = batch.to(device)
            parts.append(self.encode_captions(batch.captions).to(torch.device("cpu")))
            index.append(batch.image_index.cpu())
        return torch.cat(index), concat_captions(parts)

    @torch.no_grad()
    def pair_scores(
        self, images: EncodedImages, image_index: Tensor, captions: EncodedCaptions, *, chunk: int = 64
    ) -> np.ndarray:
        """Score caption ``p`` against image ``image_index[p]`` only (the diagonal of small blocks).

        Shapes:
            image_index: ``(P,)``; captions: ``P`` items. Output: ``(P,)`` float32.
        """
        device = next(self.parameters()).device
        out = []
        for s in range(0, len(captions), chunk):
            sl = slice(s, s + chunk)
            block = self.scorer(images.index(image_index[sl]).to(device), captions.index(sl).to(device))
            out.append(block.diagonal().float().cpu())
        return torch.cat(out).numpy()
