"""SGRAF: similarity graph reasoning (SGR) and attention filtration (SAF), vectorised over a block.

Diao et al., "Similarity Reasoning and Filtration for Image-Text Matching", AAAI 2021; public release
github.com/Paranioar/SGRAF (``model.py``, branches ``main`` and ``python3.6`` @a19d1a9, read, not copied).

Every (image, caption) pair gets one *similarity vector* per word (local alignment: the word against
the regions it attends to) and one for the whole pair (global alignment), instead of a scalar; SGR
reasons over these vectors as a fully connected graph and reads the global node, SAF weights them by
a learned gate and sums. The score is a sigmoid of a linear map of the result.

Module and parameter names are the release's ``EncoderSimilarity`` (``v_global_w``, ``t_global_w``,
``sim_tranloc_w``, ``sim_tranglo_w``, ``sim_eval_w``, ``SGR_module.{i}.*``, ``SAF_module.*``; see
``../shared/docs/release-checkpoints.md``), so a released ``sim_enc`` state dict maps onto
``matcher.*`` key for key.
"""

from __future__ import annotations

from typing import Literal, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kgitm.core.functional import l2norm, masked_mean, masked_softmax, scratch_mul
from kgitm.core.types import EncodedCaptions, EncodedImages
from kgitm.matchers.base import Details, Matcher, check_single_pair
from kgitm.matchers.scan import cross_attention

#: keys of the per-block global vectors in ``images.extra`` / ``captions.extra`` (:meth:`SGRAFMatcher.prepare_images`).
_IMAGE_GLOBAL = "sgraf_image_global"
_CAPTION_GLOBAL = "sgraf_caption_global"


class MaskedBatchNorm1d(nn.BatchNorm1d):
    """:class:`torch.nn.BatchNorm1d` whose training statistics count only valid positions.

    In evaluation (with running statistics) it is the per-channel affine map
    ``(x - running_mean) / sqrt(running_var + eps) * weight + bias``, so an item's output never depends
    on the other items of its block. In training the batch mean and (biased) variance of each channel
    are taken over the positions where ``mask`` is true only (all positions without a mask), and the
    running statistics are updated from them as :class:`~torch.nn.BatchNorm1d` does (unbiased
    variance, ``momentum``), for the channels with at least two valid values. A block may use the
    first ``C <= num_features`` channels only (a block whose trailing padding positions were cut).

    Shapes:
        x: ``(B, C, *)`` like :class:`~torch.nn.BatchNorm1d`; mask: bool, broadcastable to ``x``.
        Output: the shape of ``x``.
    """

    def forward(self, x: Tensor, mask: Optional[Tensor] = None) -> Tensor:  # type: ignore[override]
        c = x.shape[1]
        if c > self.num_features:
            raise ValueError(
                f"MaskedBatchNorm1d: input has {c} channels on axis 1 but the layer has {self.num_features}; "
                "for SGRAF's region-position norm raise matcher.init_args.num_regions to the data's region count"
            )
        weight = self.weight[:c] if self.affine else None
        bias = self.bias[:c] if self.affine else None
        if not self.training and self.track_running_stats:
            return F.batch_norm(x, self.running_mean[:c], self.running_var[:c], weight, bias, False, 0.0, self.eps)
        shape = (1, c) + (1,) * (x.dim() - 2)
        dims = [0, *range(2, x.dim())]
        valid = torch.ones_like(x, dtype=torch.bool) if mask is None else mask.expand_as(x)
        count = valid.sum(dims).to(x.dtype)  # (C,)
        mean = x.masked_fill(~valid, 0.0).sum(dims) / count.clamp_min(1.0)
        centred = x - mean.view(shape)
        var = centred.square().masked_fill(~valid, 0.0).sum(dims) / count.clamp_min(1.0)
        if self.training and self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                seen = count > 1
                unbiased = var * count / (count - 1).clamp_min(1.0)
                rm, rv = self.running_mean[:c], self.running_var[:c]
                rm.copy_(torch.where(seen, torch.lerp(rm, mean.to(rm.dtype), factor), rm))
                rv.copy_(torch.where(seen, torch.lerp(rv, unbiased.to(rv.dtype), factor), rv))
        out = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * weight.view(shape) + bias.view(shape)
        return out


def _xavier_(module: nn.Module) -> None:
    """The release's ``init_weights`` for every layer below ``module``: Xavier-uniform weights (bound
    ``sqrt(6 / (fan_in + fan_out))``), zero biases; batch norms to the identity."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm1d):
            m.reset_running_stats()
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class SelfAttentionPooling(nn.Module):
    r"""The release's global vector of an image (``VisualSA``) or a caption (``TextSA``).

    With local features :math:`x_p` and their mean :math:`\bar x` over valid positions,

    .. math::
        w_p = \operatorname{softmax}_p\big(W_c\,[\tanh(\mathrm{BN}_p(W_l x_p)) \odot
        \tanh(\mathrm{BN}(W_g \bar x))] + b_c\big),\qquad g = \frac{\sum_p w_p x_p}{\lVert \sum_p w_p x_p \rVert},

    with dropout after each ``tanh``. The image side has the two batch norms (``BN_p`` over the
    *position* axis, one channel per region slot, as the release's ``BatchNorm1d(36)``; ``BN`` over
    the ``D`` features); the text side has neither (``num_positions=None``).

    Args:
        embed_dim: ``D``.
        num_positions: channels of the position norm (the region slots), or ``None`` for no norms.
        dropout: dropout after each ``tanh`` (the release's ``0.4``).

    Shapes:
        local: ``(B, P, D)``; mask: ``(B, P)``. Output: ``(B, D)``.
    """

    def __init__(self, embed_dim: int, *, num_positions: Optional[int], dropout: float) -> None:
        super().__init__()
        norms = num_positions is not None
        # Sequential holders so that the keys are the release's (embedding_local.0 / .1, ...)
        self.embedding_local = nn.Sequential(nn.Linear(embed_dim, embed_dim), *([MaskedBatchNorm1d(num_positions)] if norms else []))
        self.embedding_global = nn.Sequential(nn.Linear(embed_dim, embed_dim), *([MaskedBatchNorm1d(embed_dim)] if norms else []))
        self.embedding_common = nn.Sequential(nn.Linear(embed_dim, 1))
        self.dropout = nn.Dropout(dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _xavier_(self)

    def forward(self, local: Tensor, mask: Tensor) -> Tensor:
        raw_global = masked_mean(local, mask, dim=1)
        l_emb = self.embedding_local[0](local)
        g_emb = self.embedding_global[0](raw_global)
        if len(self.embedding_local) > 1:
            l_emb = self.embedding_local[1](l_emb, mask.unsqueeze(-1))
            g_emb = self.embedding_global[1](g_emb)
        l_emb = self.dropout(torch.tanh(l_emb))
        g_emb = self.dropout(torch.tanh(g_emb))
        logits = self.embedding_common(l_emb * g_emb.unsqueeze(1)).squeeze(-1)  # (B, P)
        weights = masked_softmax(logits, mask, dim=1)
        return l2norm(torch.einsum("bp,bpd->bd", weights, local))


class GraphReasoning(nn.Module):
    r"""One SGR step over the similarity graph of every pair: fully connected over valid nodes,

    .. math::
        e_{pq} = \operatorname{softmax}_q\big((W_q s_p + b_q)^\top (W_k s_q + b_k)\big),\qquad
        s'_p = \mathrm{ReLU}\big(W_r \textstyle\sum_q e_{pq} s_q + b_r\big),

    computed as :math:`(W_k^\top W_q s_p + W_k^\top b_q)^\top s_q + (W_q s_p + b_q)^\top b_k` inside the
    softmax (the same logits, with a third fewer ``K x K`` products).

    Args:
        sim_dim: size ``K`` of the similarity vectors.

    Shapes:
        nodes: ``(..., V, K)``; mask: broadcastable to ``(..., 1, V)`` (true for valid nodes, the keys);
        queries: optional ``(..., Q, K)`` nodes to update (default all ``nodes``). Output: the shape of
        ``queries``.
    """

    def __init__(self, sim_dim: int) -> None:
        super().__init__()
        self.graph_query_w = nn.Linear(sim_dim, sim_dim)
        self.graph_key_w = nn.Linear(sim_dim, sim_dim)
        self.sim_graph_w = nn.Linear(sim_dim, sim_dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _xavier_(self)

    def forward(self, nodes: Tensor, mask: Tensor, queries: Optional[Tensor] = None) -> Tensor:
        # (W_q s_p + b_q)^T (W_k s_q + b_k) = (W_k^T W_q s_p + W_k^T b_q)^T s_q + (W_q s_p + b_q)^T b_k:
        # one K x K product per node instead of two. The last term is the same for every key q (the
        # softmax over q cancels it); it is kept, at K per node, so that b_k takes part (its gradient
        # is zero up to rounding, as in the release, and distributed training sees every parameter used).
        wk, bk = self.graph_key_w.weight, self.graph_key_w.bias
        wq, bq = self.graph_query_w.weight, self.graph_query_w.bias
        x = nodes if queries is None else queries
        probe = F.linear(x, wk.t() @ wq, wk.t() @ bq)  # (..., Q, K)
        offset = F.linear(x, (wq.t() @ bk).unsqueeze(0), (bq @ bk).unsqueeze(0))  # (..., Q, 1)
        edges = masked_softmax(torch.baddbmm(offset.flatten(0, -3), probe.flatten(0, -3), nodes.flatten(0, -3).transpose(1, 2))
                               .view(*probe.shape[:-1], -1), mask, dim=-1)  # (..., Q, V)
        return F.relu(self.sim_graph_w(edges @ nodes), inplace=True)  # in place: a fresh tensor


class AttentionFiltration(nn.Module):
    r"""SAF: a gate per alignment, l1-normalised over the valid nodes, then a weighted sum,

    .. math::
        a_p = \frac{\sigma(\mathrm{BN}(w_f^\top s_p + b_f))}{\sum_q \sigma(\mathrm{BN}(w_f^\top s_q + b_f))},\qquad
        s = \frac{\sum_p a_p s_p}{\lVert \sum_p a_p s_p \rVert}.

    ``BN`` is the release's ``BatchNorm1d(1)`` over the gate logits (:class:`MaskedBatchNorm1d`): a
    scalar affine map in evaluation; in training its statistics are taken over all valid nodes of all
    pairs of the block (the release's, over all nodes of the pairs of one caption: it runs the filter
    once per caption against all images of the batch, which also updates the running statistics
    once per caption).

    Args:
        sim_dim: size ``K`` of the similarity vectors.
        eps: floor of the l1 and l2 norms (default ``1e-8``).

    Shapes:
        nodes: ``(..., V, K)``; mask: ``(..., V)``. Output: ``(..., K)``.
    """

    def __init__(self, sim_dim: int, *, eps: float = 1e-8) -> None:
        super().__init__()
        self.attn_sim_w = nn.Linear(sim_dim, 1)
        self.bn = MaskedBatchNorm1d(1)
        self.eps = eps
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _xavier_(self)

    def forward(self, nodes: Tensor, mask: Tensor) -> Tensor:
        logits = self.attn_sim_w(nodes)  # (..., V, 1)
        shape = logits.shape
        mask = mask.expand(shape[:-1])
        gate = self.bn(logits.reshape(1, 1, -1), mask.reshape(1, 1, -1)).view(shape[:-1])
        gate = torch.sigmoid(gate).masked_fill(~mask, 0.0)
        gate = gate / gate.sum(-1, keepdim=True).clamp_min(self.eps)
        return l2norm(torch.einsum("...v,...vk->...k", gate, nodes), eps=self.eps)


class SGRAFMatcher(Matcher):
    r"""SGRAF's SGR or SAF matcher: similarity vectors of every pair, reasoned over or filtered.

    From `"Similarity Reasoning and Filtration for Image-Text Matching"
    <https://arxiv.org/abs/2101.01368>`_ (Diao et al., AAAI 2021), as released at
    github.com/Paranioar/SGRAF (``model.py``, ``EncoderSimilarity``). For an image with regions
    :math:`v_r` and a caption with words :math:`e_j`:

    * **Local alignments** (text to image): SCAN's attention of each word over the regions,
      :math:`\alpha_{jr} = \operatorname{softmax}_r(\lambda\, \mathrm{l2}_j(\mathrm{LeakyReLU}(v_r^\top e_j)))`
      (:func:`~kgitm.matchers.scan.cross_attention`; the l2 norm runs over the caption's valid words),
      :math:`a_j = \mathrm{l2}(\sum_r \alpha_{jr} v_r)`, and
      :math:`s_j = \mathrm{l2}(W_l (a_j - e_j)^{2} + b_l)` (``sim_tranloc_w``, squares elementwise).
    * **Global alignment**: :math:`s_0 = \mathrm{l2}(W_g (\bar v - \bar e)^{2} + b_g)` (``sim_tranglo_w``) with
      the self-attention pooled vectors of :class:`SelfAttentionPooling` (``v_global_w``, ``t_global_w``).
    * **SGR** (``module="SGR"``): ``sgr_step`` :class:`GraphReasoning` steps over the nodes
      :math:`[s_0, s_1, \dots, s_L]`, each with its own weights (the release's
      ``nn.ModuleList([GraphReasoning(sim_dim) for i in range(sgr_step)])``); the result is node 0.
      The last step updates node 0 only (the others are never read again).
    * **SAF** (``module="SAF"``): :class:`AttentionFiltration` over the same nodes.
    * **Score**: :math:`\sigma(w_e^\top s + b_e)` (``sim_eval_w``), in :math:`(0, 1)`.

    Where the release and the paper differ, the release is followed: the attention uses the dot
    product of the encoders' features (their cosine when, as in every SGRAF and kgitm recipe, both
    encoders l2-normalise) with a LeakyReLU(0.1) instead of the :math:`[\cdot]_+` of SCAN's formula, and the
    attended vector is l2-normalised before the difference. The release hard-codes the attention's
    :math:`\lambda = 9` (``smooth=9.0``); here it is ``lambda_softmax``.

    Batch norms (the release's ``BatchNorm1d(36)`` over region slots and ``BatchNorm1d(1024)`` in
    ``v_global_w``, ``BatchNorm1d(1)`` in ``SAF_module``) are :class:`MaskedBatchNorm1d`: in
    evaluation per-channel affine maps (a pair's score does not depend on its block); in training
    they use the statistics of the block's valid items (the batch, as in the release, padding
    excluded), so training scores depend on the batch as the release's do (SAF's gate statistics pool
    a whole block here, one caption's pairs in the release: :class:`AttentionFiltration`). The region-slot
    norm needs at most ``num_regions`` region slots (the release: exactly 36, in the detector's
    order); a block with fewer slots uses the first ones.

    Dropout (``dropout``, the release's 0.4) acts inside the two self-attention poolings only.

    Every pair of a block is scored at once (no loop over images or captions); padding (``mask``
    false) is never attended, pooled or used as a node.

    Args:
        module: ``"SGR"`` (graph reasoning) or ``"SAF"`` (attention filtration) (default ``"SGR"``,
            the release's ``--module_name`` default).
        embed_dim: feature size ``D`` of regions and words; ``None`` (the default) builds the layers
            when the model binds its size (:meth:`bind`).
        sim_dim: size ``K`` of the similarity vectors (default ``256``).
        sgr_step: SGR reasoning steps (default ``3``; SAF ignores it).
        lambda_softmax: inverse temperature of the word-to-region attention (default ``9.0``).
        num_regions: region slots of the image pooling's position norm (default ``36``).
        dropout: dropout of the self-attention poolings (default ``0.4``).
        leaky_relu_slope: slope of the LeakyReLU before the attention's normalisation (default ``0.1``).
        eps: floor of every norm (default ``1e-8``).

    Shapes:
        images.features: ``(N, R, D)``, images.mask: ``(N, R)`` with ``R <= num_regions``;
        captions.features: ``(M, L, D)``, captions.mask: ``(M, L)``. Output: ``(N, M)``.
    """

    def __init__(
        self,
        module: Literal["SGR", "SAF"] = "SGR",
        *,
        embed_dim: Optional[int] = None,
        sim_dim: int = 256,
        sgr_step: int = 3,
        lambda_softmax: float = 9.0,
        num_regions: int = 36,
        dropout: float = 0.4,
        leaky_relu_slope: float = 0.1,
        eps: float = 1e-8,
    ) -> None:
        super().__init__()
        if module not in ("SGR", "SAF"):
            raise ValueError(f"SGRAFMatcher: module must be 'SGR' or 'SAF', got {module!r}")
        if module == "SGR" and sgr_step < 1:
            raise ValueError(f"SGRAFMatcher: sgr_step must be at least 1, got {sgr_step}")
        self.module = module
        self.embed_dim: Optional[int] = None
        self.sim_dim = sim_dim
        self.sgr_step = sgr_step
        self.lambda_softmax = lambda_softmax
        self.num_regions = num_regions
        self.dropout = dropout
        self.leaky_relu_slope = leaky_relu_slope
        self.eps = eps
        if embed_dim is not None:
            self.bind(embed_dim)

    def extra_repr(self) -> str:
        return f"module={self.module!r}, embed_dim={self.embed_dim}, sim_dim={self.sim_dim}, sgr_step={self.sgr_step}, lambda_softmax={self.lambda_softmax}"

    def bind(self, embed_dim: int) -> None:
        """Build the layers for features of size ``D = embed_dim`` (called by
        :class:`~kgitm.models.MatchingModel` with the encoders' size, or by the constructor when
        ``embed_dim`` is given)."""
        if self.embed_dim is not None:
            if embed_dim != self.embed_dim:
                raise ValueError(
                    f"SGRAFMatcher was built for embed_dim={self.embed_dim} but the encoders give {embed_dim}; "
                    "leave matcher.init_args.embed_dim unset (the model sets it from model.embed_dim)"
                )
            return
        self.embed_dim = embed_dim
        k = self.sim_dim
        self.v_global_w = SelfAttentionPooling(embed_dim, num_positions=self.num_regions, dropout=self.dropout)
        self.t_global_w = SelfAttentionPooling(embed_dim, num_positions=None, dropout=self.dropout)
        self.sim_tranloc_w = nn.Linear(embed_dim, k)
        self.sim_tranglo_w = nn.Linear(embed_dim, k)
        self.sim_eval_w = nn.Linear(k, 1)
        if self.module == "SGR":
            self.SGR_module = nn.ModuleList([GraphReasoning(k) for _ in range(self.sgr_step)])
        else:
            self.SAF_module = AttentionFiltration(k, eps=self.eps)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The release's initialisation: Xavier-uniform weights and zero biases for every linear
        layer, identity batch norms."""
        if self.embed_dim is not None:
            _xavier_(self)

    def _built(self) -> None:
        if self.embed_dim is None:
            raise RuntimeError("SGRAFMatcher has no layers yet: call bind(embed_dim) (MatchingModel does) or pass embed_dim")

    # ------------------------------------------------------------------ per side
    def image_global(self, images: EncodedImages) -> Tensor:
        """Self-attention pooled global vector of each image, ``(N, D)``."""
        self._built()
        return self.v_global_w(images.features, images.mask)

    def caption_global(self, captions: EncodedCaptions) -> Tensor:
        """Self-attention pooled global vector of each caption, ``(M, D)``."""
        self._built()
        return self.t_global_w(captions.features, captions.mask)

    def prepare_images(self, images: EncodedImages) -> EncodedImages:
        """Adds each image's global vector to ``images.extra`` (computed once per image block)."""
        extra = {**(images.extra or {}), _IMAGE_GLOBAL: self.image_global(images)}
        return EncodedImages(images.features, images.mask, images.boxes, extra)

    def prepare_captions(self, captions: EncodedCaptions) -> EncodedCaptions:
        """Adds each caption's global vector to ``captions.extra``."""
        extra = {**(captions.extra or {}), _CAPTION_GLOBAL: self.caption_global(captions)}
        return EncodedCaptions(captions.features, captions.mask, captions.adjacency, extra)

    # ------------------------------------------------------------------ per pair
    def local_alignments(self, images: EncodedImages, captions: EncodedCaptions, details: Details = None) -> Tensor:
        """Local similarity vector of every word of every caption with every image, ``(N, M, L, K)``
        (rows of padded words hold finite values that are never read); ``details`` (when given) receives
        the attention of every word over the regions (``"attention"``, ``(N, R, M, L)``)."""
        self._built()
        v = images.features.masked_fill(~images.mask.unsqueeze(-1), 0.0)
        e = captions.features.masked_fill(~captions.mask.unsqueeze(-1), 0.0)
        n, r, d = v.shape
        m, l, _ = e.shape
        dots = torch.mm(v.reshape(n * r, d), e.reshape(m * l, d).t()).view(n, r, m, l)
        attention = cross_attention(
            dots,
            captions.mask[None, None],
            images.mask[:, :, None, None],
            temperature=self.lambda_softmax,
            leaky_relu_slope=self.leaky_relu_slope,
            eps=self.eps,
            query_dim=-1,
            context_dim=1,
        )  # (N, R, M, L)
        del dots
        if details is not None:
            details["attention"] = attention
        attended = torch.bmm(attention.view(n, r, m * l).transpose(1, 2), v).view(n, m, l, d)
        del attention
        attended = scratch_mul(attended, 1.0 / torch.linalg.vector_norm(attended, dim=-1, keepdim=True).clamp_min(self.eps))  # l2
        diff = _scratch_squared_difference(attended, e)
        return l2norm(self.sim_tranloc_w(diff), eps=self.eps)

    def global_alignments(self, image_global: Tensor, caption_global: Tensor) -> Tensor:
        """Global similarity vector of every pair, ``(N, M, K)``."""
        diff = (image_global[:, None] - caption_global[None]).square()
        return l2norm(self.sim_tranglo_w(diff), eps=self.eps)

    def similarity_vector(self, nodes: Tensor, node_mask: Tensor) -> Tensor:
        """SGR's reasoned global node or SAF's filtered sum of every pair's alignments.

        Shapes:
            nodes: ``(N, M, V, K)`` with node 0 the global alignment; node_mask: ``(M, V)``.
            Output: ``(N, M, K)``.
        """
        if self.module == "SAF":
            return self.SAF_module(nodes, node_mask.unsqueeze(0))
        key_mask = node_mask[None, :, None, :]
        steps = list(self.SGR_module)
        for step in steps[:-1]:
            nodes = step(nodes, key_mask)
        return steps[-1](nodes, key_mask, queries=nodes[:, :, :1]).squeeze(2)

    def forward(self, images: EncodedImages, captions: EncodedCaptions) -> Tensor:
        return self._score(images, captions)

    def alignments(self, images: EncodedImages, captions: EncodedCaptions) -> dict[str, Tensor]:
        """The local alignments' attention that went into one pair's score (see :meth:`Matcher.alignments`):
        ``word_region_attention (L, R)`` and ``score``."""
        check_single_pair(images, captions, type(self).__name__)
        d: dict = {}
        score = self._score(images, captions, d)
        return {"word_region_attention": d["attention"][0, :, 0, :].t(), "score": score[0, 0]}

    def _score(self, images: EncodedImages, captions: EncodedCaptions, details: Details = None) -> Tensor:
        """The ``(N, M)`` scores; ``details`` (when given) receives the local attention."""
        image_global = (images.extra or {}).get(_IMAGE_GLOBAL)
        caption_global = (captions.extra or {}).get(_CAPTION_GLOBAL)
        if image_global is None:
            image_global = self.image_global(images)
        if caption_global is None:
            caption_global = self.caption_global(captions)
        local = self.local_alignments(images, captions, details)  # (N, M, L, K)
        glob = self.global_alignments(image_global, caption_global)  # (N, M, K)
        nodes = torch.cat([glob.unsqueeze(2), local], dim=2)  # (N, M, 1 + L, K)
        del local
        node_mask = F.pad(captions.mask, (1, 0), value=True)  # (M, 1 + L)
        return torch.sigmoid(self.sim_eval_w(self.similarity_vector(nodes, node_mask))).squeeze(-1)

    def pair_memory_bytes(self, images: EncodedImages, captions: EncodedCaptions) -> int:
        """Peak activation memory per pair in evaluation, the larger of two phases: the local
        alignments (the attended word vectors, ``L x D``, whose squared differences are written in
        place, with either the attention's ``R x L`` maps or the two ``L x K`` projections beside
        them) and the reasoning (about five ``(L + 1) x K`` node tensors: nodes, probes, messages,
        outputs, and the ``(L + 1)^2`` edges, with the global difference, ``D``). Measured by the peak
        resident memory of a 32 x 64 block at ``R = 36, L = 16, D = 1024, K = 256``: 100 KiB per pair
        against 96 KiB estimated (SGR and SAF alike)."""
        r = images.features.shape[1]
        l = captions.features.shape[1]
        d, k = images.features.shape[2], self.sim_dim
        local = l * d + max(5 * r * l, 2 * l * k)
        reasoning = 5 * (l + 1) * k + 3 * (l + 1) ** 2 + d
        return images.features.element_size() * max(local, reasoning)


def _scratch_squared_difference(x: Tensor, y: Tensor) -> Tensor:
    """``(x - y)^2`` elementwise, written into ``x`` when no gradient is recorded (as
    :func:`~kgitm.core.functional.scratch_mul`)."""
    if torch.is_grad_enabled() and (x.requires_grad or y.requires_grad):
        return (x - y).square()
    return x.sub_(y).square_()
