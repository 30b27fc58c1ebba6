"""The Lightning task: a :class:`~kgitm.models.MatchingModel`, its loss terms and its optimiser, trained
and evaluated with the field's protocol.

The task receives the model's parts as constructor arguments (LightningCLI dependency injection), so
a YAML config swaps the text encoder, the matcher, the knowledge source or a loss term with
``class_path``/``init_args``; the model itself knows nothing of Lightning.
"""

from __future__ import annotations

from typing import Any, Optional

import lightning as L
import numpy as np
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn

from kgitm.core import CAPTIONS_PER_IMAGE
from kgitm.core.batch import Batch
from kgitm.core.io import DataFormatError
from kgitm.core.types import EncodedCaptions, EncodedImages
from kgitm.eval.metrics import evaluate_retrieval, pairwise_accuracy
from kgitm.knowledge.module import KnowledgeModule
from kgitm.matchers.base import Matcher
from kgitm.models.losses import LossTerm, RetrievalHinge
from kgitm.eval.distributed import GatheredSplit, gather_similarity
from kgitm.models.matching import MatchingModel, SplitEncoder

#: prefix of the model's parameters in the task's state dict; checkpoints written before the model
#: layer existed (parameters at the top level) are read by adding it (:meth:`MatchingModule.on_load_checkpoint`)
MODEL_PREFIX = "model."
_MODEL_PARTS = ("image_encoder.", "text_encoder.", "matcher.", "knowledge.")
#: key of the vocabulary (``itos``) in a checkpoint
VOCAB_KEY = "kgitm_vocabulary"


class MatchingModule(L.LightningModule):
    """Trains a :class:`~kgitm.models.MatchingModel` with a sum of loss terms and evaluates it exactly.

    Args:
        image_encoder: regions -> :class:`~kgitm.core.types.EncodedImages` (e.g. ``RegionEncoder``; its
            ``feature_dim`` is linked from the data and its ``embed_dim`` from ``embed_dim``).
        text_encoder: words -> :class:`~kgitm.core.types.EncodedCaptions` (``BiGRUTextEncoder`` or
            ``TransformerTextEncoder``; ``vocab_size`` and ``vocab_words`` are linked from the data,
            ``embed_dim`` from ``embed_dim``).
        matcher: scores blocks of images against blocks of captions.
        knowledge: optional concept-graph knowledge (:class:`~kgitm.knowledge.module.KnowledgeModule`).
        loss: the loss terms (:mod:`kgitm.models.losses`), summed with their weights (default: one
            :class:`~kgitm.models.losses.RetrievalHinge`).
        embed_dim: the joint embedding size ``D``, the one place a config sets it (linked into both
            encoders; the matcher and the knowledge module are built for it).
        optimizer: optimiser factory (default Adam; configs set lr 2e-4).
        lr_scheduler: optional scheduler factory (e.g. StepLR decaying x0.1 once).
        eval_memory_budget_mb: memory budget for the block-wise similarity at evaluation.
    """

    def __init__(
        self,
        image_encoder: nn.Module,
        text_encoder: nn.Module,
        matcher: Matcher,
        knowledge: Optional[KnowledgeModule] = None,
        loss: Optional[list[LossTerm]] = None,
        *,
        embed_dim: int = 1024,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: Optional[LRSchedulerCallable] = None,
        eval_memory_budget_mb: float = 1024.0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["image_encoder", "text_encoder", "matcher", "loss", "knowledge"])
        self.model = MatchingModel(image_encoder, text_encoder, matcher, knowledge)
        if self.model.embed_dim != embed_dim:
            raise ValueError(
                f"MatchingModule: the encoders have embed_dim {self.model.embed_dim} but model.embed_dim is {embed_dim}; "
                "set only model.embed_dim (it is linked into both encoders)"
            )
        terms = list(loss) if loss is not None else [RetrievalHinge()]
        if not terms:
            raise ValueError("MatchingModule: model.loss is empty; give at least one loss term (e.g. RetrievalHinge)")
        names = [t.name for t in terms]
        if len(set(names)) != len(names):
            raise ValueError(f"MatchingModule: two loss terms share a name ({names}); each term is logged as train/<name>_loss")
        self.loss_terms = nn.ModuleList(terms)
        self.optimizer_factory = optimizer
        self.scheduler_factory = lr_scheduler
        self._split_encoder: Optional[SplitEncoder] = None
        self.test_results: dict[str, float] = {}
        #: every protocol's metrics of the last test (``{protocol: metrics}``; coco1k with its folds)
        self.test_protocol_results: dict[str, dict[str, Any]] = {}
        #: protocols for the next test, overriding the data's ``test_protocols`` (``kgitm test --protocol``)
        self.protocol_override: Optional[list[str]] = None
        self.predicted_similarity: Optional[np.ndarray] = None

    # ------------------------------------------------------------------ parts (read-only views)
    @property
    def image_encoder(self) -> nn.Module:
        return self.model.image_encoder

    @property
    def text_encoder(self) -> nn.Module:
        return self.model.text_encoder

    @property
    def matcher(self) -> Matcher:
        return self.model.matcher

    @property
    def knowledge(self) -> Optional[KnowledgeModule]:
        return self.model.knowledge

    def term(self, name: str) -> Optional[LossTerm]:
        """The loss term called ``name`` (``retrieval``, ``relation_swap``, ...), or ``None``."""
        return next((t for t in self.loss_terms if t.name == name), None)

    # ------------------------------------------------------------------ data wiring
    def setup(self, stage: str) -> None:
        """Give the data module the caption transforms this model needs (concept ids, sub-word pieces)."""
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if dm is not None and hasattr(dm, "set_caption_transforms"):
            dm.set_caption_transforms(self.model.caption_transforms())

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """The vocabulary goes into the checkpoint: the model's word ids mean nothing without it."""
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if dm is not None and hasattr(dm, "vocab"):
            checkpoint[VOCAB_KEY] = list(dm.vocab.itos)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse a checkpoint trained with another vocabulary; read checkpoints written before the
        model layer (their parameters lack ``model.``)."""
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        theirs = checkpoint.get(VOCAB_KEY)
        if theirs is not None and dm is not None and hasattr(dm, "vocab") and list(dm.vocab.itos) != list(theirs):
            ours = list(dm.vocab.itos)
            first = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), min(len(ours), len(theirs)))
            raise DataFormatError(
                f"the checkpoint was trained with another vocabulary ({len(theirs)} words; this data gives {len(ours)}, "
                f"first difference at id {first}); evaluate with the run's vocabulary: --data.vocab_file RUN/vocab.txt "
                "(kgitm test finds it when --ckpt_path is inside the run folder)"
            )
        state = checkpoint.get("state_dict", {})
        if state and not any(k.startswith(MODEL_PREFIX) for k in state) and any(k.startswith(_MODEL_PARTS) for k in state):
            state = checkpoint["state_dict"] = {(MODEL_PREFIX + k if k.startswith(_MODEL_PARTS) else k): v for k, v in state.items()}
        mine = set(self.state_dict())
        for theirs, ours, style in (("kernel_precision", "kernel_width", "precision"), ("kernel_width", "kernel_precision", "release")):
            if f"{MODEL_PREFIX}matcher.{theirs}" in state and f"{MODEL_PREFIX}matcher.{ours}" in mine:
                raise ValueError(
                    f"the checkpoint's GSMN kernels are kernel_style {style!r} ({theirs}) but the config builds "
                    f"{'precision' if style == 'release' else 'release'} ones; pass --model.matcher.init_args.kernel_style {style} "
                    "(kgitm upgrade-config writes it into a kgitm 0.1 config)"
                )

    # ------------------------------------------------------------------ training
    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        out = self.model(batch)
        size = out.sims.shape[0]
        total: Optional[Tensor] = None
        for term in self.loss_terms:
            value = term(self.model, batch, out, epoch=self.current_epoch)
            if value is None:
                continue
            self.log(f"train/{term.name}_loss", value, batch_size=size)
            total = term.weight * value if total is None else total + term.weight * value
        if total is None:
            raise RuntimeError("no loss term gave a value for this batch; include a RetrievalHinge in model.loss")
        self.log("train/loss", total, prog_bar=True, batch_size=size)
        return total

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
    def _captions_per_image(self) -> int:
        dm = getattr(self.trainer, "datamodule", None)
        return int(dm.hparams.captions_per_image) if dm is not None else CAPTIONS_PER_IMAGE

    def _eval_start(self) -> None:
        self._split_encoder = SplitEncoder(self.model)

    def _eval_step(self, batch: Batch) -> None:
        self._split_encoder.add(batch)

    def _eval_split(self) -> GatheredSplit:
        """The exact similarity of the split the evaluation loop just encoded, the same on every rank
        (:func:`kgitm.eval.distributed.gather_similarity`: under DDP each rank holds a share), cut to
        the images whose ``k`` captions were all seen (``limit_*_batches`` can stop inside an image)."""
        share = self._split_encoder.share()
        self._split_encoder = None
        split = gather_similarity(share, self.similarity, captions_per_image=self._captions_per_image())
        if split.incomplete:
            rank_zero_warn(f"evaluating the first {len(split.images)} images only: the loop stopped inside an image's captions")
        return split

    def similarity(self, images: EncodedImages, captions: EncodedCaptions) -> Tensor:
        """Full ``(N, M)`` similarity, block-wise within the memory budget."""
        return self.model.similarity(images, captions, memory_budget_mb=self.hparams.eval_memory_budget_mb)

    def _retrieval(self, prefix: str, sims: np.ndarray, res: Optional[dict[str, Any]] = None) -> dict[str, float]:
        """Log (and return) the retrieval metrics of ``sims`` (the single-split protocol unless ``res``
        already holds a protocol's metrics)."""
        if res is None:
            res = evaluate_retrieval(sims, captions_per_image=self._captions_per_image())
        res = {k: float(v) for k, v in res.items() if not isinstance(v, (list, dict))}
        # every rank holds the same full matrix, hence the same values: the mean over ranks is a no-op
        # (and tells Lightning the epoch-level value is the whole split's)
        self.log_dict({f"{prefix}/{k}": v for k, v in res.items()}, sync_dist=True)
        return res

    # ------------------------------------------------------------------ validation
    def on_validation_epoch_start(self) -> None:
        self._eval_start()

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._eval_step(batch)

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            self._split_encoder = None
            return
        self._retrieval("val", self._eval_split().sims)

    # ------------------------------------------------------------------ test (+ diagnostics)
    def on_test_epoch_start(self) -> None:
        self._eval_start()

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._eval_step(batch)

    def _test_protocols(self) -> tuple[list[str], int]:
        dm = getattr(self.trainer, "datamodule", None)
        hp = getattr(dm, "hparams", {}) if dm is not None else {}
        protocols = self.protocol_override or list(hp.get("test_protocols", ("single",)))
        return protocols, int(hp.get("fold_images", 1000))

    def on_test_epoch_end(self) -> None:
        split = self._eval_split()
        protocols, fold_images = self._test_protocols()
        k = self._captions_per_image()
        self.test_protocol_results = {p: evaluate_retrieval(split.sims, k, p, fold_images=fold_images) for p in protocols}
        results = self._retrieval("test", split.sims, self.test_protocol_results[protocols[0]])
        for p in protocols[1:]:
            scalars = {key: float(v) for key, v in self.test_protocol_results[p].items() if not isinstance(v, (list, dict))}
            self.log_dict({f"test_{p}/{key}": v for key, v in scalars.items()}, sync_dist=True)
        dm = getattr(self.trainer, "datamodule", None)
        diag = dm.diagnostic_loaders() if dm is not None and hasattr(dm, "diagnostic_loaders") else {}
        for name, spec in diag.items():
            if spec["kind"] == "pairs":
                pos_img, pos = self.model.encode_caption_set(spec["positive"])
                _, neg = self.model.encode_caption_set(spec["negative"])
                acc = pairwise_accuracy(
                    self.model.pair_scores(split.images, pos_img, pos), self.model.pair_scores(split.images, pos_img, neg)
                )
                results[f"{name}_acc"] = acc
                self.log(f"test/{name}_acc", acc, sync_dist=True)
            else:
                _, caps = self.model.encode_caption_set(spec["loader"])
                sims = self.similarity(split.images, caps).numpy()
                r = evaluate_retrieval(sims, captions_per_image=self._captions_per_image())
                for key in ("i2t_r1", "t2i_r1", "rsum"):
                    results[f"{name}_{key}"] = float(r[key])
                    self.log(f"test/{name}_{key}", float(r[key]), sync_dist=True)
        self.test_results = results

    # ------------------------------------------------------------------ predict: the similarity matrix
    def on_predict_epoch_start(self) -> None:
        self._eval_start()

    def predict_step(self, batch: Batch, batch_idx: int) -> None:
        self._eval_step(batch)

    def on_predict_epoch_end(self) -> None:
        self.predicted_similarity = self._eval_split().sims
