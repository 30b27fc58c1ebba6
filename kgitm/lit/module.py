"""The Lightning task: encoders + matcher + loss, trained and evaluated with the field's protocol.

The module receives its parts as constructor arguments (LightningCLI dependency injection), so a
YAML config swaps text encoder, matcher or loss with ``class_path``/``init_args``.
"""

from __future__ import annotations

from typing import Any, Optional

import lightning as L
import numpy as np
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn

from kgitm.eval.metrics import evaluate_retrieval, pairwise_accuracy
from kgitm.eval.similarity import compute_similarity
from kgitm.graphs.geometry import rotate_boxes
from kgitm.knowledge.module import KnowledgeFusedMatcher, KnowledgeModule
from kgitm.losses import ContrastiveLoss
from kgitm.matchers.base import EncodedCaptions, EncodedImages, Matcher


def rotated_images(images: EncodedImages) -> EncodedImages:
    """The same images with their boxes rotated by 180 degrees (:func:`~kgitm.graphs.geometry.rotate_boxes`):
    features, masks and ``extra`` unchanged, every pairwise direction reversed."""
    if images.boxes is None:
        raise ValueError("rotated images need image boxes (data.require_boxes true and a box-aware image encoder)")
    return EncodedImages(images.features, images.mask, rotate_boxes(images.boxes), images.extra)


def concat_images(parts: list[EncodedImages]) -> EncodedImages:
    """Concatenate encoded image blocks (same region count) along the batch."""
    extra = None
    if parts[0].extra:
        extra = {k: torch.cat([p.extra[k] for p in parts]) for k in parts[0].extra}
    return EncodedImages(
        features=torch.cat([p.features for p in parts]),
        mask=torch.cat([p.mask for p in parts]),
        boxes=None if parts[0].boxes is None else torch.cat([p.boxes for p in parts]),
        extra=extra,
    )


def _pad_to(t: Tensor, dims: tuple[int, ...], size: int) -> Tensor:
    pad: list[int] = []
    for d in range(t.dim() - 1, -1, -1):
        pad += [0, size - t.shape[d]] if d in dims else [0, 0]
    return nn.functional.pad(t, pad)


def concat_captions(parts: list[EncodedCaptions]) -> EncodedCaptions:
    """Concatenate encoded caption blocks, padding the word axis to the longest block."""
    L_max = max(p.features.shape[1] for p in parts)
    adjacency = None
    if parts[0].adjacency is not None:
        adjacency = torch.cat([_pad_to(p.adjacency, (1, 2), L_max) for p in parts])
    extra = None
    if parts[0].extra:
        extra = {}
        for k in parts[0].extra:
            ts = [p.extra[k] for p in parts]
            dims = tuple(range(1, ts[0].dim()))
            widths = [max(t.shape[d] for t in ts) for d in dims] or [0]
            # pad every non-batch axis to the widest block
            padded = []
            for t in ts:
                for d, w in zip(dims, widths):
                    t = _pad_to(t, (d,), w)
                padded.append(t)
            extra[k] = torch.cat(padded)
    return EncodedCaptions(
        features=torch.cat([_pad_to(p.features, (1,), L_max) for p in parts]),
        mask=torch.cat([_pad_to(p.mask, (1,), L_max) for p in parts]),
        adjacency=adjacency,
        extra=extra,
    )


def _select(value: Any, rows: Tensor) -> Any:
    """Rows of a batch entry: tensors and dicts of tensors are indexed, lists picked, the rest kept."""
    if isinstance(value, Tensor):
        return value[rows]
    if isinstance(value, dict):
        return {k: _select(v, rows) for k, v in value.items()}
    if isinstance(value, list):
        return [value[i] for i in rows.tolist()]
    return value


class MatchingModule(L.LightningModule):
    """Trains any matcher with the hinge loss and evaluates it exactly.

    Args:
        image_encoder: regions -> :class:`EncodedImages` (e.g. ``RegionEncoder``; its
            ``feature_dim`` is linked from the data).
        text_encoder: words -> :class:`EncodedCaptions` (``BiGRUTextEncoder`` or
            ``TransformerTextEncoder``; ``vocab_size`` and ``vocab_words`` are linked from the data).
        matcher: scores blocks of images against blocks of captions.
        loss: hinge loss on the batch similarity matrix.
        knowledge: optional concept-graph knowledge (:class:`KnowledgeModule`): attached to both
            modalities' graphs and/or fused as a consensus score, for any matcher. Bound here to the
            encoders' size and to the text encoder (whose word embeddings can be its node features).
        optimizer: optimiser factory (default Adam; configs set lr 2e-4).
        lr_scheduler: optional scheduler factory (e.g. StepLR decaying x0.1 once).
        hardest_negative_warmup_epochs: sum over all negatives for this many epochs, then use the
            hardest negative only (when the loss has ``max_violation``).
        eval_memory_budget_mb: memory budget for the block-wise similarity at evaluation.
        relation_swap_weight: weight of the relation-swap hard-negative term (default ``0``: off).
            With ``data.relation_swap_negatives`` every training caption has a copy with the subject
            and object of one relation exchanged (:mod:`kgitm.data.hard_negatives`); the term is
            ``[m - S(i, c) + S(i, swap(c))]_+``, averaged over the pairs used, with the
            loss's margin ``m``.
        relation_swap_pairs: how many of a batch's captions with a swap enter the term (default 8):
            scoring ``n`` swaps costs an ``n x n`` block of the matcher, so a few per batch keep the
            training step's cost close to that of the plain loss.
        rotated_image_weight: weight of the rotated-image hard-negative term (default ``0``: off).
            For the same captions as the relation-swap term (those with a swappable relation, see
            ``data.swap_predicates``), the caption's own image with its boxes rotated by 180 degrees
            (:func:`~kgitm.graphs.geometry.rotate_boxes`) is a negative: every directional relation
            of the caption is false there, while the region features are unchanged, so only box
            geometry can tell the two images apart. The term is ``[m - S(i, c) + S(rot(i), c)]_+``.
    """

    def __init__(
        self,
        image_encoder: nn.Module,
        text_encoder: nn.Module,
        matcher: Matcher,
        loss: Optional[ContrastiveLoss] = None,
        knowledge: Optional[KnowledgeModule] = None,
        *,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: Optional[LRSchedulerCallable] = None,
        hardest_negative_warmup_epochs: int = 0,
        eval_memory_budget_mb: float = 1024.0,
        relation_swap_weight: float = 0.0,
        relation_swap_pairs: int = 8,
        rotated_image_weight: float = 0.0,
    ) -> None:
        super().__init__()
        if rotated_image_weight < 0:
            raise ValueError(f"MatchingModule: rotated_image_weight must be >= 0, got {rotated_image_weight}")
        if relation_swap_weight < 0 or relation_swap_pairs < 1:
            raise ValueError(
                f"MatchingModule: relation_swap_weight must be >= 0 and relation_swap_pairs >= 1, got "
                f"{relation_swap_weight} and {relation_swap_pairs}; set model.relation_swap_weight 0 to turn the term off"
            )
        self.save_hyperparameters(ignore=["image_encoder", "text_encoder", "matcher", "loss", "knowledge"])
        self.image_encoder = image_encoder
        self.text_encoder = text_encoder
        self.matcher = matcher
        self.loss = loss if loss is not None else ContrastiveLoss()
        self.knowledge = knowledge
        if knowledge is not None:
            knowledge.bind(int(image_encoder.embed_dim), text_encoder=text_encoder)
        self.optimizer_factory = optimizer
        self.scheduler_factory = lr_scheduler
        self._eval: dict[str, Any] = {}
        self.test_results: dict[str, float] = {}
        self.predicted_similarity: Optional[np.ndarray] = None

    # ------------------------------------------------------------------ encoding and scoring
    def encode_images(self, batch: dict) -> EncodedImages:
        images = self.image_encoder(batch)
        return images if self.knowledge is None else self.knowledge.augment_images(images)

    def encode_captions(self, batch: dict) -> EncodedCaptions:
        captions = self.text_encoder(batch)
        return captions if self.knowledge is None else self.knowledge.augment_captions(captions, batch["words"])

    def encode(self, batch: dict) -> tuple[EncodedImages, EncodedCaptions]:
        return self.encode_images(batch), self.encode_captions(batch)

    @property
    def scorer(self) -> Matcher:
        """The matcher, fused with the knowledge consensus when one is configured."""
        if self.knowledge is None or self.knowledge.mode == "graph":
            return self.matcher
        return KnowledgeFusedMatcher(self.matcher, self.knowledge)

    # ------------------------------------------------------------------ training
    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        images, captions = self.encode(batch)
        sims = self.scorer(images, captions)
        hardest = self.current_epoch >= self.hparams.hardest_negative_warmup_epochs
        loss = self.loss(sims, batch["image_index"], max_violation=self.loss.max_violation and hardest)
        self.log("train/loss", loss, prog_bar=True, batch_size=sims.shape[0])
        if self.hparams.relation_swap_weight > 0:
            swap = self.relation_swap_loss(batch, images, sims)
            if swap is not None:
                self.log("train/relation_swap_loss", swap, batch_size=sims.shape[0])
                loss = loss + self.hparams.relation_swap_weight * swap
        if self.hparams.rotated_image_weight > 0:
            rotated = self.rotated_image_loss(batch, images, captions, sims)
            if rotated is not None:
                self.log("train/rotated_image_loss", rotated, batch_size=sims.shape[0])
                loss = loss + self.hparams.rotated_image_weight * rotated
        return loss

    def _swap_rows(self, batch: dict, term: str) -> Tensor:
        if "swap_valid" not in batch:
            raise ValueError(
                f"{term} > 0 needs the captions' swappable relations in the batch: set "
                "data.relation_swap_negatives true (and data.graph_store)"
            )
        return batch["swap_valid"].nonzero().flatten()[: self.hparams.relation_swap_pairs]

    def rotated_image_scores(
        self, batch: dict, images: EncodedImages, captions: EncodedCaptions, sims: Optional[Tensor] = None
    ) -> Optional[tuple[Tensor, Tensor]]:
        """Scores ``(S(i, c), S(rot(i), c))`` of the captions of :meth:`relation_swap_loss` on their
        own image and on that image with its boxes rotated by 180 degrees (:func:`rotated_images`);
        ``None`` when no caption of the batch qualifies. ``sims`` is the batch's similarity matrix
        when the caller has it (else the positives are scored here)."""
        rows = self._swap_rows(batch, "rotated_image_weight")
        if rows.numel() == 0:
            return None
        own, caps = images.index(rows), captions.index(rows)
        positive = self.scorer(own, caps).diagonal() if sims is None else sims[rows, rows]
        return positive, self.scorer(rotated_images(own), caps).diagonal()

    def rotated_image_loss(self, batch: dict, images: EncodedImages, captions: EncodedCaptions, sims: Tensor) -> Optional[Tensor]:
        """Hinge ``[m - S(i, c) + S(rot(i), c)]_+`` over :meth:`rotated_image_scores`; ``None`` when
        no caption qualifies."""
        scores = self.rotated_image_scores(batch, images, captions, sims)
        if scores is None:
            return None
        positive, negative = scores
        return (self.loss.margin - positive + negative).clamp_min(0).mean()

    def relation_swap_loss(self, batch: dict, images: EncodedImages, sims: Tensor) -> Optional[Tensor]:
        """Hinge between each caption and its relation-swapped copy on the caption's own image, over
        the first ``relation_swap_pairs`` captions of the batch that have a swap; ``None`` when none
        has one."""
        rows = self._swap_rows(batch, "relation_swap_weight")
        if rows.numel() == 0:
            return None
        sub = {k: _select(v, rows) for k, v in batch.items()}
        sub["token_ids"], sub["words"] = sub["swap_token_ids"], sub["swap_words"]
        swapped = self.scorer(images.index(rows), self.encode_captions(sub)).diagonal()
        positive = sims[rows, rows]
        return (self.loss.margin - positive + swapped).clamp_min(0).mean()

    def configure_optimizers(self) -> Any:
        groups = []
        text_lr = getattr(self.text_encoder, "lr", None)
        pretrained = getattr(self.text_encoder, "model", None)
        special = set()
        if text_lr is not None and pretrained is not None:
            params = [p for p in pretrained.parameters() if p.requires_grad]
            special = {id(p) for p in params}
            if params:
                groups.append({"params": params, "lr": text_lr})
        rest = [p for p in self.parameters() if p.requires_grad and id(p) not in special]
        groups.insert(0, {"params": rest})
        opt = self.optimizer_factory(groups)
        if self.scheduler_factory is None:
            return opt
        return {"optimizer": opt, "lr_scheduler": self.scheduler_factory(opt)}

    # ------------------------------------------------------------------ evaluation (shared)
    def _eval_start(self) -> None:
        self._eval = {"images": {}, "captions": []}

    def _eval_step(self, batch: dict) -> None:
        captions = self.encode_captions(batch)
        self._eval["captions"].append(captions.to(torch.device("cpu")))
        idx = batch["image_index"].tolist()
        first = [b for b, i in enumerate(idx) if i not in self._eval["images"] and idx.index(i) == b]
        if first:
            sel = torch.tensor(first, device=batch["images"].device)
            sub = {k: _select(v, sel) for k, v in batch.items()}
            images = self.encode_images(sub).to(torch.device("cpu"))
            for j, b in enumerate(first):
                self._eval["images"][idx[b]] = images.index(slice(j, j + 1))

    def _eval_matrices(self) -> tuple[EncodedImages, EncodedCaptions]:
        order = sorted(self._eval["images"])
        if order != list(range(len(order))):
            raise RuntimeError("evaluation images are not contiguous 0..N-1; the evaluation loader must not shuffle")
        images = concat_images([self._eval["images"][i] for i in order])
        captions = concat_captions(self._eval["captions"])
        return images, captions

    def similarity(self, images: EncodedImages, captions: EncodedCaptions) -> Tensor:
        """Full ``(N, M)`` similarity, block-wise within the memory budget, on this module's device."""
        return compute_similarity(
            self.scorer,
            images,
            captions,
            memory_budget_mb=self.hparams.eval_memory_budget_mb,
        )

    def _captions_per_image(self) -> int:
        dm = getattr(self.trainer, "datamodule", None)
        return int(dm.hparams.captions_per_image) if dm is not None else 5

    def _complete(self, images: EncodedImages, captions: EncodedCaptions) -> tuple[EncodedImages, EncodedCaptions]:
        """Keep the images whose ``k`` captions were all seen (``limit_*_batches`` can cut an image off)."""
        k = self._captions_per_image()
        n = min(len(images), len(captions) // k)
        if n * k != len(captions) or n != len(images):
            rank_zero_warn(f"evaluating the first {n} images only: the loop stopped inside an image's captions")
            images, captions = images.index(slice(0, n)), captions.index(slice(0, n * k))
        return images, captions

    def _retrieval(self, prefix: str) -> dict[str, float]:
        images, captions = self._complete(*self._eval_matrices())
        sims = self.similarity(images, captions).numpy()
        res = evaluate_retrieval(sims, captions_per_image=self._captions_per_image())
        res = {k: float(v) for k, v in res.items() if not isinstance(v, (list, dict))}
        self.log_dict({f"{prefix}/{k}": v for k, v in res.items()}, sync_dist=False)
        return res

    # ------------------------------------------------------------------ validation
    def on_validation_epoch_start(self) -> None:
        self._eval_start()

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch)

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            self._eval = {}
            return
        self._retrieval("val")
        self._eval = {}

    # ------------------------------------------------------------------ test (+ diagnostics)
    def on_test_epoch_start(self) -> None:
        self._eval_start()

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch)

    def on_test_epoch_end(self) -> None:
        images, _ = self._eval_matrices()
        results = self._retrieval("test")
        dm = getattr(self.trainer, "datamodule", None)
        diag = dm.diagnostic_sets() if dm is not None and hasattr(dm, "diagnostic_sets") else {}
        for name, spec in diag.items():
            if spec["kind"] == "pairs":
                pos_img, pos = self._encode_loader(spec["positive"])
                _, neg = self._encode_loader(spec["negative"])
                acc = pairwise_accuracy(self._pair_scores(images, pos_img, pos), self._pair_scores(images, pos_img, neg))
                results[f"{name}_acc"] = acc
                self.log(f"test/{name}_acc", acc)
            else:
                _, caps = self._encode_loader(spec["loader"])
                sims = self.similarity(images, caps).numpy()
                r = evaluate_retrieval(sims, captions_per_image=self._captions_per_image())
                for key in ("i2t_r1", "t2i_r1", "rsum"):
                    results[f"{name}_{key}"] = float(r[key])
                    self.log(f"test/{name}_{key}", float(r[key]))
        self.test_results = results
        self._eval = {}

    @torch.no_grad()
    def _encode_loader(self, loader) -> tuple[Tensor, EncodedCaptions]:
        parts, img = [], []
        for batch in loader:
            batch = self.transfer_batch_to_device(batch, self.device, 0)
            parts.append(self.encode_captions(batch).to(torch.device("cpu")))
            img.append(batch["image_index"].cpu())
        return torch.cat(img), concat_captions(parts)

    @torch.no_grad()
    def _pair_scores(self, images: EncodedImages, image_index: Tensor, captions: EncodedCaptions, chunk: int = 64) -> np.ndarray:
        """Score caption ``p`` against image ``image_index[p]`` (the diagonal of small blocks)."""
        out = []
        for s in range(0, len(captions), chunk):
            sl = slice(s, s + chunk)
            block = self.scorer(images.index(image_index[sl]).to(self.device), captions.index(sl).to(self.device))
            out.append(block.diagonal().float().cpu())
        return torch.cat(out).numpy()

    # ------------------------------------------------------------------ predict: the similarity matrix
    def on_predict_epoch_start(self) -> None:
        self._eval_start()

    def predict_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch)

    def on_predict_epoch_end(self) -> None:
        images, captions = self._complete(*self._eval_matrices())
        self.predicted_similarity = self.similarity(images, captions).numpy()
        self._eval = {}
