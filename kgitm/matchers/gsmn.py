"""GSMN: graph structured matching of a visual graph and a textual graph, vectorised over a block.

Liu et al., "Graph Structured Network for Image-Text Matching", CVPR 2020. By default this is the
paper's method, not the public release: messages really move between neighbours (the release repeated
each node's own vector), so the dependency edges change the score, and every image uses its own boxes.
``messages="own"`` with ``text_conv_bias=True`` computes what the release computes, for checkpoints
converted from it (``kgitm convert-checkpoint gsmn``).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

from kgitm.core.functional import l2norm, masked_mean, masked_softmax, scratch_mul
from kgitm.core.geometry import polar_pseudo_coordinates
from kgitm.core.types import EncodedCaptions, EncodedImages
from kgitm.matchers.base import Details, Matcher, check_single_pair
from kgitm.matchers.scan import attended_block_cosine, cross_attention

#: keys of the caption-independent (image) and image-independent (caption) precomputations.
_KERNEL_WEIGHTS = "gsmn_kernel_weights"
#: floor added to a squared kernel width (the release's ``1e-14``), so a zero width stays finite
_WIDTH_FLOOR = 1e-14
_TEXT_GRAPH = "gsmn_text_graph"
_GRAM = "gsmn_block_gram"
_BLOCK_NORM = "gsmn_block_norm"
#: captions per chunk of a training forward on a CPU (``train_caption_chunk="auto"``). Measured at Flickr30K
#: shapes (batch 64, up to 16 words, 36 regions, 1 thread; scripts/bench_gsmn_train_chunk.py, steps alternated;
#: docs/benchmarks.md) on two machines: with a 105 MiB L3 the whole batch took 3.22 s per step, chunks of 4, 6
#: and 8 captions 2.81, 2.73 and 2.68 s; with a 32 MiB L3 the whole batch 2.26 s, chunks of 1, 4, 8, 16 and 32
#: 2.51, 1.85, 1.73, 1.66 and 1.68 s. 8 is the best or within 5% of it on both. (A chunk sized to a quarter of
#: the cache, the rule before, gave 6 captions on the first machine and 1 on the second, slower than no chunks.)
TRAIN_CHUNK_CAPTIONS = 8


def _blocks(x: Tensor, num_blocks: int, side: str) -> Tensor:
    d = x.shape[-1]
    if d % num_blocks:
        raise ValueError(
            f"GSMNMatcher: the {side} feature size {d} is not divisible by num_blocks={num_blocks}; "
            "choose num_blocks dividing the embedding size (the paper: 1024 = 16 blocks of 64)"
        )
    return x.unflatten(-1, (num_blocks, d // num_blocks))


def _block_gram(x: Tensor, num_blocks: int, side: str) -> tuple[Tensor, Tensor]:
    """Per-block Gram matrices ``(P, C, B, C)`` and per-block norms ``(P, C, B)`` of ``x (P, C, D)``."""
    xb = _blocks(x, num_blocks, side)  # (P, C, B, d)
    gram = torch.einsum("pibd,pjbd->pibj", xb, xb)
    return gram, xb.norm(dim=-1)


def _mlp(in_dim: int, hidden_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.Tanh(), nn.Linear(hidden_dim, 1))


class GSMNMatcher(Matcher):
    r"""Graph structured matching network (GSMN): node-level then structure-level matching.

    From `"Graph Structured Network for Image-Text Matching" <https://arxiv.org/abs/2004.00277>`_
    (Liu et al., CVPR 2020).

    * **Visual graph**: fully connected over the valid regions of an image (self loops included);
      the edge :math:`(i, j)` is weighted by ``K`` Gaussian kernels of the polar pseudo-coordinates
      :math:`u_{ij} = (\rho, \theta)` of the box centres
      (:func:`~kgitm.core.geometry.polar_pseudo_coordinates`), with learned means :math:`\mu` (the
      angle difference taken around the circle). Two parametrisations (``kernel_style``):

      - ``"release"`` (default; the authors' code, ``layers.py`` ``ImageQueryGraphConvolution``):
        :math:`w_k(u) = \exp(-\frac{(\rho - \mu_{k\rho})^2}{2\sigma_{k\rho}^2}
        - \frac{\Delta\theta^2}{2\sigma_{k\theta}^2})` with learned widths :math:`\sigma` (the
        release names them ``precision_*`` but divides by their square), the angle in radians, means
        :math:`\mu_\rho \sim U(0, 1)`, :math:`\mu_\theta \sim U(-\pi, \pi)` and widths
        :math:`\sigma \sim U(0, 1)`; for every neighbour the ``K`` weights are normalised to sum to
        one over the kernels (the release divides over its kernel axis), so a neighbour's weight is
        shared out among the kernels;
      - ``"precision"`` (kgitm 0.1): :math:`w_k(u) = \exp(-\frac12 \sum_d \tau_{kd}^2 (u_d -
        \mu_{kd})^2)` with precisions :math:`\tau` initialised to ``kernel_precision_init``, the
        angle in units of :math:`\pi`, normalised to sum to one over the valid neighbours for each
        kernel (MoNet's patch operator, as the paper's text reads). Unit precisions make nearly flat
        kernels: on SynthScenes dev layouts (12 regions) a kernel spreads over 11.8 effective
        neighbours (inverse sum of squared weights), against 4.0 with the release's initialisation
        (mean over 10 initialisations).

      The weights depend on the image alone and are computed by :meth:`prepare_images`.
    * **Textual graph** over the valid words: ``"sparse"`` keeps the dependency edges
      (``captions.adjacency``, symmetric) plus self loops and weights them by
      :math:`\operatorname{softmax}_j(\lambda_g \cos(u_i, u_j))` restricted to the edges;
      ``"dense"`` is the same softmax over all valid words.
    * **Node-level matching**: every word attends over the regions with SCAN's attention
      (:func:`~kgitm.matchers.scan.cross_attention`, temperature :math:`\lambda`) and every region over
      the words; a node and its attended vector are compared by the cosine of each of ``B`` blocks of
      ``D / B`` dimensions, giving a ``B``-d matching vector per node
      (:func:`~kgitm.matchers.scan.attended_block_cosine`).
    * **Structure-level matching**: a graph convolution propagates the matching vectors between the
      neighbours of the node's own graph: :math:`\hat x_i = W \sum_j W_{ij} x_j` over the textual graph
      (text-to-image) and :math:`\hat x_i = \Vert_k W_k \sum_j w_k(u_{ij}) x_j` over the visual graph
      (image-to-text, one output chunk per kernel); an MLP
      :math:`W_s \tanh(W_h \hat x_i + b_h) + b_s` maps each node to a score, node scores are
      averaged over the valid nodes, and the pair's score is ``t2i + i2t``.

    Everything runs on the whole ``N x M`` block at once (under autograd on the CPU, on chunks of its
    captions, 8 at a time by default: ``train_caption_chunk``); padded regions and words are never
    neighbours, never attended and never averaged.

    **The public release** (``graph_model.py``, ``layers.py``) feeds each node's *own* matching vector to
    every one of its edges (``vnode_mvector.unsqueeze(2).repeat(...)``): the visual convolution computes
    :math:`\hat x_i = \Vert_k W_k\, x_i \sum_j w_k(u_{ij})` and the textual one, whose edge weights
    are normalised to sum to one, :math:`\hat x_i = \Vert_k (W_k x_i + b_k)` whatever the graph (its
    ``TextQueryGraphConvolution`` receives ``coordinate_dim=2`` as its ``bias`` argument, hence the
    biases). ``messages="own"`` and ``text_conv_bias=True`` reproduce it; the textual graph (dense or
    sparse) then plays no part.

    Args:
        graph: textual graph, ``"sparse"`` (dependency edges; needs ``captions.adjacency``) or
            ``"dense"`` (default ``"sparse"``).
        num_blocks: number ``B`` of blocks of the multi-block cosine; must divide ``D``
            (default ``16``, the paper's 16 blocks of 64 for ``D = 1024``). Keep blocks of 4 or more
            dimensions: the attended vector's block norm comes from a Gram matrix, which loses precision
            when a block's context vectors cancel; against a direct per-pair computation the scores
            differ by up to 2.5e-4 with blocks of 2 and by whole units with blocks of 1 (where each
            block cosine is only a sign), and by under 1e-6 with blocks of 4 or more (random unit
            features, 36 regions; ``scripts/bench_similarity.py``).
        num_kernels: number ``K`` of Gaussian kernels of the visual graph convolution (default ``8``).
        lambda_attention: inverse temperature :math:`\lambda` of the node-level attention (default
            ``20.0``, the paper's Flickr30K value; ``10.0`` on COCO).
        lambda_text_graph: inverse temperature :math:`\lambda_g` of the textual edge weights
            (default ``None``: the same as ``lambda_attention``, as in the authors' code).
        kernel_style: ``"release"`` (default) or ``"precision"`` (see above).
        kernel_precision_init: ``kernel_style="precision"`` only: initial precisions
            :math:`(\tau_\rho, \tau_\theta)` of every Gaussian kernel (default ``(1.0, 1.0)``). Unit precisions make broad kernels: a
            neighbour in the opposite direction keeps 61% of the weight of one at the same distance
            in the kernel's direction, so the convolution starts close to a plain mean; and Adam at
            GSMN's learning rate moves a precision by at most about ``lr`` per step (measured on
            SynthScenes: still within 0.1 of 1 after 1,400 steps). With ``(4.0, 4.0)`` a kernel's
            standard deviation is a quarter of the image side in distance and 45 degrees in angle
            (``configs/grid/gsmn_geometry_synthscenes.yaml``).
        structure_dim: output size of both structure-level graph convolutions; must be divisible by
            ``num_kernels`` (default ``32``).
        mlp_dim: hidden size of the scoring MLPs (default ``32``).
        leaky_relu_slope: slope of the LeakyReLU of the attention (default ``0.1``).
        messages: ``"neighbours"`` (default: the paper's propagation) or ``"own"`` (the public
            release's: every edge carries the node's own matching vector; see above).
        text_conv_bias: give the textual graph convolution a bias (default False; the release has one).
        angle_convention: the pseudo-coordinate angle (:func:`~kgitm.core.geometry.polar_pseudo_coordinates`):
            ``"kgitm"`` (default, ``atan2(dy, dx)``) or ``"gsmn_release"`` (the release's, which its
            kernels' learned means refer to).
        train_caption_chunk: captions scored together under autograd (a training forward; the
            scores and gradients are those of the whole block): ``"auto"`` (default) scores
            :data:`TRAIN_CHUNK_CAPTIONS` captions at a time on a CPU and does not chunk on other
            devices; an integer fixes the chunk; ``None`` scores the whole block at once. Without
            gradients (evaluation) blocks are sized by :func:`kgitm.eval.similarity.compute_similarity`.
        eps: floor of every norm (default ``1e-8``).

    Shapes:
        images.features: ``(N, R, D)``, images.mask: ``(N, R)``, images.boxes: ``(N, R, 4)``
        normalised corners; captions.features: ``(M, L, D)``, captions.mask: ``(M, L)``,
        captions.adjacency: ``(M, L, L)`` bool (sparse graph only). Output: ``(N, M)``.
    """

    def __init__(
        self,
        graph: Literal["sparse", "dense"] = "sparse",
        *,
        num_blocks: int = 16,
        num_kernels: int = 8,
        lambda_attention: float = 20.0,
        lambda_text_graph: float | None = None,
        kernel_style: Literal["release", "precision"] = "release",
        kernel_precision_init: tuple[float, float] = (1.0, 1.0),
        structure_dim: int = 32,
        mlp_dim: int = 32,
        leaky_relu_slope: float = 0.1,
        messages: Literal["neighbours", "own"] = "neighbours",
        text_conv_bias: bool = False,
        angle_convention: Literal["kgitm", "gsmn_release"] = "kgitm",
        train_caption_chunk: int | Literal["auto"] | None = "auto",
        eps: float = 1e-8,
    ) -> None:
        super().__init__()
        if not (train_caption_chunk is None or train_caption_chunk == "auto"
                or (isinstance(train_caption_chunk, int) and train_caption_chunk >= 1)):
            raise ValueError(f"GSMNMatcher: train_caption_chunk must be 'auto', None or a positive integer, got {train_caption_chunk!r}")
        self.train_caption_chunk = train_caption_chunk
        if messages not in ("neighbours", "own"):
            raise ValueError(f"GSMNMatcher: messages must be 'neighbours' or 'own', got {messages!r}")
        if graph not in ("sparse", "dense"):
            raise ValueError(f"GSMNMatcher: graph must be 'sparse' or 'dense', got {graph!r}")
        if structure_dim % num_kernels:
            raise ValueError(
                f"GSMNMatcher: structure_dim={structure_dim} must be divisible by num_kernels={num_kernels}"
            )
        if kernel_style not in ("release", "precision"):
            raise ValueError(f"GSMNMatcher: kernel_style must be 'release' or 'precision', got {kernel_style!r}")
        if len(kernel_precision_init) != 2 or min(kernel_precision_init) <= 0:
            raise ValueError(
                "GSMNMatcher: kernel_precision_init must be two positive precisions (rho, theta), got "
                f"{kernel_precision_init!r}"
            )
        self.graph = graph
        self.kernel_style = kernel_style
        self.kernel_precision_init = tuple(float(t) for t in kernel_precision_init)
        self.num_blocks = num_blocks
        self.num_kernels = num_kernels
        self.lambda_attention = lambda_attention
        self.lambda_text_graph = lambda_attention if lambda_text_graph is None else lambda_text_graph
        self.leaky_relu_slope = leaky_relu_slope
        self.messages = messages
        if angle_convention not in ("kgitm", "gsmn_release"):
            raise ValueError(f"GSMNMatcher: angle_convention must be 'kgitm' or 'gsmn_release', got {angle_convention!r}")
        self.angle_convention = angle_convention
        self.eps = eps
        # Gaussian kernels over (rho, theta) of the visual graph: means and widths (release) or
        # precisions (kgitm 0.1); the parameter names differ so that a checkpoint of one style does
        # not load silently into the other.
        self.kernel_mean = nn.Parameter(torch.empty(num_kernels, 2))
        if kernel_style == "release":
            self.kernel_width = nn.Parameter(torch.empty(num_kernels, 2))
        else:
            self.kernel_precision = nn.Parameter(torch.empty(num_kernels, 2))
        # Structure-level graph convolutions: one weight per kernel (concatenated chunks) on the
        # visual graph, one weight on the textual graph.
        self.visual_conv = nn.Linear(num_blocks, structure_dim, bias=False)
        self.text_conv = nn.Linear(num_blocks, structure_dim, bias=text_conv_bias)
        self.visual_mlp = _mlp(structure_dim, mlp_dim)
        self.text_mlp = _mlp(structure_dim, mlp_dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Kernel means uniform over the range of the pseudo-coordinates (``rho`` in ``[0, 1]``,
        ``theta`` in ``[-pi, pi]`` radians for the release style, ``[-1, 1]`` in units of pi for the
        precision style); widths uniform in ``[0, 1]`` (release) or precisions
        ``kernel_precision_init``; Xavier weights and zero biases."""
        with torch.no_grad():
            nn.init.uniform_(self.kernel_mean[:, 0], 0.0, 1.0)
            if self.kernel_style == "release":
                nn.init.uniform_(self.kernel_mean[:, 1], -math.pi, math.pi)
                nn.init.uniform_(self.kernel_width, 0.0, 1.0)
            else:
                nn.init.uniform_(self.kernel_mean[:, 1], -1.0, 1.0)
                self.kernel_precision.copy_(torch.tensor(self.kernel_precision_init).expand(self.num_kernels, 2))
        for module in (self.visual_conv, self.text_conv, *self.visual_mlp, *self.text_mlp):
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def extra_repr(self) -> str:
        return (
            f"graph={self.graph!r}, num_blocks={self.num_blocks}, num_kernels={self.num_kernels}, "
            f"lambda_attention={self.lambda_attention}, lambda_text_graph={self.lambda_text_graph}, "
            f"kernel_style={self.kernel_style!r}"
            + (f", kernel_precision_init={self.kernel_precision_init}" if self.kernel_style == "precision" else "")
            + (f", messages={self.messages!r}" if self.messages != "neighbours" else "")
            + (f", angle_convention={self.angle_convention!r}" if self.angle_convention != "kgitm" else "")
        )

    # ------------------------------------------------------------------ graphs (one side each)

    def visual_kernel_weights(self, boxes: Tensor, mask: Tensor) -> Tensor:
        r"""Edge weights :math:`w_k(u_{ij})` of the fully connected visual graph, normalised over the
        kernels (release style) or over the neighbours (precision style).

        Shapes:
            boxes: ``(N, R, 4)`` normalised corners; mask: ``(N, R)``. Output: ``(N, R, K, R)``
            indexed ``[n, i, k, j]``; zero where ``j`` is padding.
        """
        coords = polar_pseudo_coordinates(boxes.to(self.kernel_mean.dtype), convention=self.angle_convention)  # (N, R, R, 2), theta / pi
        valid = mask[:, None, None, :].to(coords.dtype)
        if self.kernel_style == "release":
            coords = torch.stack([coords[..., 0], coords[..., 1] * math.pi], dim=-1)  # radians
            diff = (coords.unsqueeze(2) - self.kernel_mean[:, None, :]).abs()  # (N, R, K, R, 2)
            # the angle is circular: the distance from pi to -pi is 0
            diff = torch.stack([diff[..., 0], torch.minimum(diff[..., 1], 2 * math.pi - diff[..., 1])], dim=-1)
            width = self.kernel_width[:, None, :].pow(2) + _WIDTH_FLOOR  # the release's 1e-14 floor
            weights = torch.exp(-0.5 * (diff.pow(2) / width).sum(-1))
            weights = weights / weights.sum(2, keepdim=True).clamp_min(self.eps)  # over the kernels
            return weights * valid
        diff = (coords.unsqueeze(2) - self.kernel_mean[:, None, :]).abs()  # (N, R, K, R, 2)
        # the angle (in units of pi) is circular: the distance from +1 to -1 is 0
        diff = torch.stack([diff[..., 0], torch.minimum(diff[..., 1], 2.0 - diff[..., 1])], dim=-1)
        weights = torch.exp(-0.5 * (diff * self.kernel_precision[:, None, :]).pow(2).sum(-1))
        weights = weights * valid
        return weights / weights.sum(-1, keepdim=True).clamp_min(self.eps)  # over the neighbours

    def text_graph(self, features: Tensor, mask: Tensor, adjacency: Tensor | None) -> Tensor:
        r"""Row-normalised edge weights :math:`W_{ij}` of the textual graph.

        Shapes:
            features: ``(M, L, D)``; mask: ``(M, L)``; adjacency: ``(M, L, L)`` bool or ``None``
            (dense graph). Output: ``(M, L, L)``; rows of padded words are zero.
        """
        u = l2norm(features, eps=self.eps)
        sim = torch.bmm(u, u.transpose(1, 2)) * self.lambda_text_graph
        edges = mask.unsqueeze(1) & mask.unsqueeze(2)
        if self.graph == "sparse":
            if adjacency is None:
                raise ValueError(
                    "GSMNMatcher(graph='sparse') needs captions.adjacency, the (M, L, L) dependency "
                    "edges; parse the captions or use graph='dense'"
                )
            eye = torch.eye(edges.shape[-1], dtype=torch.bool, device=edges.device)
            edges = edges & (adjacency.bool() | adjacency.bool().transpose(1, 2) | eye)
        return masked_softmax(sim, edges, dim=-1)

    def prepare_images(self, images: EncodedImages) -> EncodedImages:
        """Adds the visual-graph kernel weights and the per-block Gram matrices of the regions to
        ``images.extra`` (caption-independent; :func:`kgitm.eval.similarity.compute_similarity` calls
        this once per image block)."""
        if images.boxes is None:
            raise ValueError(
                "GSMNMatcher needs images.boxes, (N, R, 4) box corners normalised by the image size "
                "(kgitm.core.geometry.normalize_boxes)"
            )
        gram, block_norm = _block_gram(images.features, self.num_blocks, "image")
        extra = dict(images.extra or {})
        extra[_KERNEL_WEIGHTS] = self.visual_kernel_weights(images.boxes, images.mask)
        extra[_GRAM] = gram
        extra[_BLOCK_NORM] = block_norm
        return EncodedImages(images.features, images.mask, images.boxes, extra)

    def prepare_captions(self, captions: EncodedCaptions) -> EncodedCaptions:
        """Adds the textual graph and the per-block Gram matrices of the words to ``captions.extra``."""
        gram, block_norm = _block_gram(captions.features, self.num_blocks, "caption")
        extra = dict(captions.extra or {})
        # the release's propagation ignores the textual graph (each node keeps its own vector)
        extra[_TEXT_GRAPH] = None if self.messages == "own" else self.text_graph(captions.features, captions.mask, captions.adjacency)
        extra[_GRAM] = gram
        extra[_BLOCK_NORM] = block_norm
        return EncodedCaptions(captions.features, captions.mask, captions.adjacency, extra)

    # ------------------------------------------------------------------ matching

    def forward(self, images: EncodedImages, captions: EncodedCaptions) -> Tensor:
        chunk = self._train_chunk(images, captions)
        if chunk is None or chunk >= len(captions):
            return self._score(images, captions)
        # Under autograd the whole block's pair tensors are kept for the backward pass; at batch 64
        # and Flickr30K shapes they stream through RAM, while chunks of a few captions stay in the
        # CPU's cache (docs/benchmarks.md, training step). Each side's graph is prepared once.
        images, captions = self.prepare_images(images), self.prepare_captions(captions)
        parts = [self._score(images, captions.index(slice(j, j + chunk))) for j in range(0, len(captions), chunk)]
        return torch.cat(parts, dim=1)

    def _train_chunk(self, images: EncodedImages, captions: EncodedCaptions) -> int | None:
        """Captions per chunk of this forward, or ``None`` for the whole block (see ``train_caption_chunk``)."""
        if self.train_caption_chunk is None or not torch.is_grad_enabled():
            return None
        if self.train_caption_chunk != "auto":
            return int(self.train_caption_chunk)
        return TRAIN_CHUNK_CAPTIONS if images.features.device.type == "cpu" else None

    def alignments(self, images: EncodedImages, captions: EncodedCaptions) -> dict[str, Tensor]:
        """The tensors that made one pair's score (see :meth:`Matcher.alignments`):
        ``word_region_attention (L, R)``, ``region_word_attention (R, L)``, the node-level matching
        ``word_node_match (L,)`` / ``region_node_match (R,)`` (mean over the ``B`` blocks of a node's
        matching vector, also given whole as ``word_matching (L, B)`` / ``region_matching (R, B)``), the
        structure-level node scores ``word_score (L,)`` / ``region_score (R,)`` (their means over the
        valid nodes are ``t2i_score`` and ``i2t_score``), ``text_graph_weights (L, L)`` (not with
        ``messages="own"``, which propagates none) and ``score``."""
        check_single_pair(images, captions, type(self).__name__)
        d: dict = {}
        score = self._score(images, captions, d)
        out = {
            "word_region_attention": d["att_t2i"][0, 0],
            "region_word_attention": d["att_i2t"][0, :, 0, :].t(),
            "word_matching": d["x_t2i"][0, 0],
            "region_matching": d["x_i2t"][0, 0],
            "word_node_match": d["x_t2i"][0, 0].mean(-1),
            "region_node_match": d["x_i2t"][0, 0].mean(-1),
            "word_score": d["node_t2i"][0, 0, :, 0],
            "region_score": d["node_i2t"][0, 0, :, 0],
            "t2i_score": d["t2i"][0, 0],
            "i2t_score": d["i2t"][0, 0],
            "score": score[0, 0],
        }
        if d["text_graph"] is not None:  # messages="own" propagates no textual graph
            out["text_graph_weights"] = d["text_graph"][0]
        return out

    def _score(self, images: EncodedImages, captions: EncodedCaptions, details: Details = None) -> Tensor:
        """The ``(N, M)`` scores; ``details`` (when given) receives the attentions (``att_t2i (N, M, L, R)``,
        ``att_i2t (M, L, N, R)``), the node-level matching vectors (``x_t2i (N, M, L, B)``,
        ``x_i2t (N, M, R, B)``), the node scores (``node_t2i (N, M, L, 1)``, ``node_i2t (N, M, R, 1)``),
        the textual graph (``text_graph (M, L, L)``) and both directions' scores."""
        if not (images.extra and _KERNEL_WEIGHTS in images.extra):
            images = self.prepare_images(images)
        if not (captions.extra and _TEXT_GRAPH in captions.extra):
            captions = self.prepare_captions(captions)
        v, vm = images.features, images.mask
        u, um = captions.features, captions.mask
        n, r, _ = v.shape
        m, l, _ = u.shape
        nb = self.num_blocks

        # Block dot products of every word with every region, (B, M, L, N, R), in the layout one
        # batched GEMM writes. Both directions reduce this, the largest tensor of the block, where it
        # lies: no permuted copies and no temporaries of its size (on the CPU each fresh buffer of
        # that size costs page faults comparable to the arithmetic).
        ub = _blocks(u, nb, "caption").permute(2, 0, 1, 3).reshape(nb, m * l, -1)
        vb = _blocks(v, nb, "image").permute(2, 3, 0, 1).reshape(nb, -1, n * r)
        dots = torch.bmm(ub, vb).view(nb, m, l, n, r)
        del ub, vb
        u_norm = u.norm(dim=-1).clamp_min(self.eps)
        v_norm = v.norm(dim=-1).clamp_min(self.eps)
        cosine = dots.sum(0) / (u_norm[:, :, None, None] * v_norm[None, None])  # (M, L, N, R)
        # words attend over regions (t2i) and regions over words (i2t)
        att_t2i = self._attention(cosine.permute(2, 0, 1, 3), um[None, :, :, None], vm[:, None, None, :])
        att_i2t = self._attention(  # in the layout of cosine (and dots): regions on -1, words on 1
            cosine, vm[None, None], um[:, :, None, None], query_dim=-1, context_dim=1
        )
        del cosine  # att_t2i: (N, M, L, R); att_i2t: (M, L, N, R)
        if details is not None:
            details.update(att_t2i=att_t2i, att_i2t=att_i2t, text_graph=captions.extra[_TEXT_GRAPH])
        # numerators of the block cosines: i2t sums over the words (in evaluation one word at a time,
        # in place), then t2i sums over the regions after weighting dots in place (its last use)
        if torch.is_grad_enabled() and (dots.requires_grad or att_i2t.requires_grad):
            # under autograd one product and one sum: the backward of each word's slice would
            # zero-fill a gradient of the whole of dots, L times (with the loop a training step was
            # slower than the public per-caption code; docs/benchmarks.md, training step)
            num_i2t = (dots * att_i2t.unsqueeze(0)).sum(2)  # (B, M, N, R)
        else:
            num_i2t = dots[:, :, 0] * att_i2t[:, 0]  # (B, M, N, R)
            for j in range(1, l):
                num_i2t.addcmul_(dots[:, :, j], att_i2t[:, j])
        num_t2i = scratch_mul(dots, att_t2i.permute(1, 2, 0, 3)).sum(-1)  # (B, M, L, N)
        del dots

        # Text-to-image: node-level matching vectors, propagated over the textual graph.
        x = attended_block_cosine(
            num_t2i.permute(3, 1, 2, 0),
            att_t2i,
            images.extra[_GRAM],
            captions.extra[_BLOCK_NORM].unsqueeze(0),
            eps=self.eps,
        )  # (N, M, L, B)
        del att_t2i, num_t2i
        if self.messages == "own":
            h = self.text_conv(x)
        else:
            h = torch.einsum("mij,nmjh->nmih", captions.extra[_TEXT_GRAPH], self.text_conv(x))
        node = self.text_mlp(h)  # (N, M, L, 1)
        t2i = masked_mean(node, um.unsqueeze(0), dim=2).squeeze(-1)  # (N, M)
        if details is not None:
            details.update(x_t2i=x, node_t2i=node, t2i=t2i)
        del x, h, node

        # Image-to-text: node-level matching vectors, propagated over the visual graph.
        x = attended_block_cosine(
            num_i2t.permute(1, 2, 3, 0),
            att_i2t,  # (M, L, N, R): the words before the images and regions
            captions.extra[_GRAM],
            images.extra[_BLOCK_NORM].unsqueeze(0),
            eps=self.eps,
            context_first=True,
        ).transpose(0, 1)  # (N, M, R, B)
        del att_i2t, num_i2t
        k = self.num_kernels
        y = self.visual_conv(x).unflatten(-1, (k, -1))  # (N, M, R, K, H / K): W_k x_j
        if self.messages == "own":  # W_k x_i sum_j w_k(u_ij)
            h = (y * images.extra[_KERNEL_WEIGHTS].sum(-1)[:, None, :, :, None]).flatten(-2)
        else:
            h = torch.einsum("nikj,nmjkh->nmikh", images.extra[_KERNEL_WEIGHTS], y).flatten(-2)
        node = self.visual_mlp(h)  # (N, M, R, 1)
        i2t = masked_mean(node, vm.unsqueeze(1), dim=2).squeeze(-1)  # (N, M)
        if details is not None:
            details.update(x_i2t=x, node_i2t=node, i2t=i2t)
        return t2i + i2t

    def _attention(self, cosine: Tensor, query_mask: Tensor, context_mask: Tensor, **dims: int) -> Tensor:
        return cross_attention(
            cosine,
            query_mask,
            context_mask,
            temperature=self.lambda_attention,
            leaky_relu_slope=self.leaky_relu_slope,
            eps=self.eps,
            **dims,
        )

    def pair_memory_bytes(self, images: EncodedImages, captions: EncodedCaptions) -> int:
        """Peak activation memory per pair in evaluation: the block dot products (``B L R``, reduced
        in place), a handful of ``L x R`` attention maps and the structure-level activations
        (``(R + L) H``); measured about 25% below this at ``R = 36, L = 16, D = 1024``."""
        r = images.features.shape[1]
        l = captions.features.shape[1]
        h = max(self.visual_conv.out_features, self.visual_mlp[0].out_features)
        itemsize = images.features.element_size()
        return itemsize * (self.num_blocks * l * r + 8 * l * r + 2 * (r + l) * h)
