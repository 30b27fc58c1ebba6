"""CORA: composing object relations and attributes (Pham et al., CVPR 2024).

A dual encoder whose caption side is built from the caption's scene graph: an **entity composer**
composes every object node with its attribute nodes by graph attention (one small star graph per
object), and a **relation composer** updates the entities with their relation edges and runs graph
attention over the entity graph, whose nodes a GPO pools into the caption vector. The image side is
VSE-infinity's GPO over the region features. Scores are cosines of one image vector and one caption
vector: one matrix product per block.

The graph structure comes as padded index tensors in ``captions.extra`` (see
:mod:`kgitm.graphs.scene_graph_index`; attributes need ``data.scene_graph_limits.attributes > 0``);
the node features are gathered there from the text encoder's word features.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kgitm.core.functional import l2norm, masked_mean, masked_softmax
from kgitm.core.types import EncodedCaptions, EncodedImages
from kgitm.encoders.pooling import GPO, sinusoidal_positions
from kgitm.matchers.base import Matcher

_CAPTION_KEYS = ("obj_token", "obj_mask", "rel_subj", "rel_obj", "rel_pred_tokens", "rel_pred_mask", "rel_mask")
#: Keys under which :meth:`CORA.prepare_images` / :meth:`CORA.prepare_captions` store the embeddings.
IMAGE_EMBEDDING_KEY = "cora_image"
CAPTION_EMBEDDING_KEY = "cora_caption"
ENTITY_EMBEDDING_KEY = "cora_entity"


class GraphAttention(nn.Module):
    """One multi-head graph attention layer over a dense adjacency (CORA's, after GATv2).

    With ``a = W_q x``, ``b = W_k x`` and ``v = W_v x`` split into ``h`` heads,

    .. math::
        e_{ij}^h = \\mathbf{w}_h^\\top \\mathrm{LeakyReLU}(\\mathbf{a}_i^h + \\mathbf{b}_j^h) + c_h, \\qquad
        \\mathbf{x}_i' = \\mathrm{ReLU}\\Big(\\mathrm{LN}\\big(\\mathbf{a}_i
        + \\big\\Vert_h \\textstyle\\sum_{j \\in \\mathcal{N}(i)} \\mathrm{softmax}_j(e_{ij}^h)\\, \\mathbf{v}_j^h\\big)\\Big).

    The residual is ``a = W_q x`` as in the release. A node without neighbours receives no message.

    Args:
        channels: node size ``H`` (divisible by ``heads``).
        heads: attention heads ``h``. (default: ``16``)
        dropout: dropout on the values. (default: ``0.0``)
        negative_slope: LeakyReLU slope. (default: ``0.2``)

    Shapes:
        x: ``(B, n, H)``; adj: ``(B, n, n)`` bool, ``adj[b, i, j]`` true when ``i`` attends to ``j``.
        Output: ``(B, n, H)``.
    """

    def __init__(self, channels: int, *, heads: int = 16, dropout: float = 0.0, negative_slope: float = 0.2) -> None:
        super().__init__()
        if channels % heads:
            raise ValueError(f"GraphAttention: channels ({channels}) must be divisible by heads ({heads})")
        self.channels, self.heads, self.negative_slope = channels, heads, negative_slope
        self.query = nn.Linear(channels, channels)
        self.key = nn.Linear(channels, channels)
        self.value = nn.Linear(channels, channels)
        self.att = nn.Parameter(torch.empty(heads, channels // heads))
        self.att_bias = nn.Parameter(torch.empty(heads))
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(channels)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for lin in (self.query, self.key, self.value):
            lin.reset_parameters()
        # a linear layer's default initialisation per head, as the release
        bound = (self.channels // self.heads) ** -0.5
        nn.init.uniform_(self.att, -bound, bound)
        nn.init.uniform_(self.att_bias, -bound, bound)
        self.norm.reset_parameters()

    def forward(self, x: Tensor, adj: Tensor) -> Tensor:
        b, n, _ = x.shape
        h, dh = self.heads, self.channels // self.heads
        a = self.query(x)
        k = self.key(x).view(b, n, h, dh)
        v = self.dropout(self.value(x)).view(b, n, h, dh)
        pair = F.leaky_relu(a.view(b, n, 1, h, dh) + k.view(b, 1, n, h, dh), self.negative_slope)
        logits = (pair * self.att).sum(-1) + self.att_bias  # (b, i, j, h)
        alpha = masked_softmax(logits, adj.unsqueeze(-1), dim=2)
        out = torch.einsum("bijh,bjhd->bihd", alpha, v).reshape(b, n, self.channels)
        return F.relu(self.norm(a + out))


class GraphAttentionStack(nn.Module):
    """``num_layers`` :class:`GraphAttention` layers with dropout between them (CORA's composers).

    Args:
        channels: node size ``H``.
        num_layers: layers.
        heads: heads per layer. (default: ``16``)
        dropout: dropout between layers. (default: ``0.0``)
        attention_dropout: dropout on each layer's values. (default: ``0.0``)

    Shapes:
        x: ``(B, n, H)``; adj: ``(B, n, n)`` bool. Output: ``(B, n, H)``.
    """

    def __init__(self, channels: int, num_layers: int, *, heads: int = 16, dropout: float = 0.0, attention_dropout: float = 0.0) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            [GraphAttention(channels, heads=heads, dropout=attention_dropout) for _ in range(num_layers)]
        )
        self.dropout = nn.Dropout(dropout)

    def reset_parameters(self) -> None:
        for layer in self.layers:
            layer.reset_parameters()

    def forward(self, x: Tensor, adj: Tensor) -> Tensor:
        for t, layer in enumerate(self.layers):
            x = layer(x, adj)
            if t < len(self.layers) - 1:
                x = self.dropout(x)
        return x


def _phrase_mlp(in_dim: int, out_dim: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, out_dim), nn.ReLU(), nn.Dropout(dropout))


def _reset(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.LayerNorm)):
            m.reset_parameters()


@dataclass
class CoraEmbeddings:
    """The l2-normalised vectors CORA's losses use.

    Shapes:
        image: ``(N, D)``; caption: ``(M, D)``; entity: ``(M, O, D)`` the entity composer's output per
        object slot; entity_mask: ``(M, O)``.
    """

    image: Tensor
    caption: Tensor
    entity: Tensor
    entity_mask: Tensor


class CORA(Matcher):
    """CORA from `"Composing Object Relations and Attributes for Image-Text Matching"
    <https://arxiv.org/abs/2406.11820>`_ (Pham et al., CVPR 2024; github.com/vkhoi/cora_cvpr24).

    Caption side, over its textual scene graph (objects, attributes, relations):

    1. Nodes: a phrase MLP (``Linear + ReLU + Dropout`` to ``H``) of the text encoder's word feature at
       each object head and attribute word; a predicate is the mean of the relation composer's phrase
       MLP over its words (a learned unknown-predicate vector when none was found in the caption).
    2. Entity composer: per object, graph attention (:class:`GraphAttentionStack`, ``entity_layers``)
       over the star graph of the object and its attributes (object <-> attribute edges, a self-loop
       on the object); the object node's output is the entity ``e`` (``Linear`` to ``D`` when ``H != D``).
    3. Relation composer: ``e`` plus a learned map of its slot's sinusoidal position (``graph_pos_dim``),
       layer-normalised; each entity then adds the mean of its relation messages, ``active([p, e_o])``
       for the relations it is the subject of and ``passive([p, e_self])`` for those it is the object
       of (the release's choice), layer-normalised; graph attention (``relation_layers``) over the
       entity graph (self-loops and both directions of every relation); a GPO pools the entities into
       the caption vector.

    Image side: a GPO over the region features. Both vectors are l2-normalised; the score is their
    dot product. A caption without objects scores 0 against every image; an object without
    attributes is composed alone; an entity without relations keeps its composed embedding.

    Args:
        embed_dim: feature size ``D`` of regions and words; ``None`` (the default) builds the layers
            when the model binds its size (:meth:`bind`).
        hidden_dim: node size ``H`` of both composers; ``None``: ``D``. (default: ``None``)
        entity_layers: graph-attention layers of the entity composer. (default: ``1``)
        relation_layers: graph-attention layers of the relation composer. (default: ``2``)
        heads: attention heads. (default: ``16``)
        dropout: dropout of the phrase MLPs, edge MLPs and between layers. (default: ``0.15``)
        attention_dropout: dropout on the relation composer's attention values. (default: ``0.05``)
        graph_pos_dim: size of the entity slot encodings; ``0`` adds none. (default: ``16``)
        gpo_pe_dim: the GPOs' positional-encoding size. (default: ``32``)
        gpo_hidden_dim: the GPOs' bi-GRU size. (default: ``32``)
        gpo_temperature: the GPOs' softmax temperature. (default: ``0.1``)

    Shapes:
        images: ``features (N, R, D)``, ``mask (N, R)``.
        captions: ``features (M, L, D)``, ``extra`` with ``obj_token / obj_mask (M, O)``,
        ``rel_subj / rel_obj / rel_mask (M, T)``, ``rel_pred_tokens / rel_pred_mask (M, T, P)`` and
        optionally ``obj_attr_token / obj_attr_mask (M, O, A)``. Output: ``(N, M)``.
    """

    def __init__(
        self,
        embed_dim: Optional[int] = None,
        *,
        hidden_dim: Optional[int] = None,
        entity_layers: int = 1,
        relation_layers: int = 2,
        heads: int = 16,
        dropout: float = 0.15,
        attention_dropout: float = 0.05,
        graph_pos_dim: int = 16,
        gpo_pe_dim: int = 32,
        gpo_hidden_dim: int = 32,
        gpo_temperature: float = 0.1,
    ) -> None:
        super().__init__()
        if graph_pos_dim % 2:
            raise ValueError(f"CORA: graph_pos_dim must be even (sine and cosine pairs), got {graph_pos_dim}")
        self.embed_dim: Optional[int] = None
        self.hidden_dim = hidden_dim
        self.entity_layers, self.relation_layers, self.heads = entity_layers, relation_layers, heads
        self.dropout, self.attention_dropout, self.graph_pos_dim = dropout, attention_dropout, graph_pos_dim
        self.image_pool = GPO(gpo_pe_dim, gpo_hidden_dim, temperature=gpo_temperature)
        self.caption_pool = GPO(gpo_pe_dim, gpo_hidden_dim, temperature=gpo_temperature)
        self._memo: dict[str, tuple[object, object]] = {}
        if embed_dim is not None:
            self.bind(embed_dim)

    def bind(self, embed_dim: int) -> None:
        """Build the composers for features of size ``D = embed_dim``."""
        if self.embed_dim is not None:
            if embed_dim != self.embed_dim:
                raise ValueError(
                    f"CORA was built for embed_dim={self.embed_dim} but the encoders give {embed_dim}; "
                    "leave matcher.init_args.embed_dim unset (the model sets it from model.embed_dim)"
                )
            return
        self.embed_dim = embed_dim
        h = self.hidden_dim = self.hidden_dim or embed_dim
        # entity composer
        self.entity_phrase = _phrase_mlp(embed_dim, h, self.dropout)
        self.entity_attention = GraphAttentionStack(h, self.entity_layers, heads=self.heads, dropout=self.dropout)
        self.entity_out = nn.Linear(h, embed_dim) if h != embed_dim else nn.Identity()
        # relation composer
        self.entity_in = nn.Linear(embed_dim, h) if h != embed_dim else nn.Identity()
        self.position = nn.Linear(self.graph_pos_dim, h) if self.graph_pos_dim else None
        self.position_dropout = nn.Dropout(self.dropout)
        self.position_norm = nn.LayerNorm(h)
        self.relation_phrase = _phrase_mlp(embed_dim, h, self.dropout)
        self.unknown_predicate = nn.Parameter(torch.empty(h))
        self.active_edge = _phrase_mlp(2 * h, h, self.dropout)
        self.passive_edge = _phrase_mlp(2 * h, h, self.dropout)
        self.edge_norm = nn.LayerNorm(h)
        self.relation_input_dropout = nn.Dropout(self.dropout)
        self.relation_attention = GraphAttentionStack(
            h, self.relation_layers, heads=self.heads, dropout=self.dropout, attention_dropout=self.attention_dropout
        )
        self.caption_out = nn.Linear(h, embed_dim) if h != embed_dim else nn.Identity()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.image_pool.reset_parameters()
        self.caption_pool.reset_parameters()
        if self.embed_dim is None:
            return
        for part in (self.entity_phrase, self.entity_out, self.entity_in, self.position_norm, self.relation_phrase,
                     self.active_edge, self.passive_edge, self.edge_norm, self.caption_out):
            _reset(part)
        if self.position is not None:
            self.position.reset_parameters()
        self.entity_attention.reset_parameters()
        self.relation_attention.reset_parameters()
        nn.init.normal_(self.unknown_predicate, std=self.hidden_dim ** -0.5)

    # -- the caption side --------------------------------------------------------------------

    def _extra(self, captions: EncodedCaptions) -> dict:
        if self.embed_dim is None:
            raise RuntimeError("CORA has no layers yet: pass embed_dim, or bind(embed_dim) it (MatchingModel does)")
        ex = captions.extra
        missing = [k for k in _CAPTION_KEYS if ex is None or k not in ex]
        if missing:
            raise ValueError(
                f"CORA needs captions.extra keys {missing}; build them with "
                "kgitm.graphs.scene_graph_index.collate_text_scene_graphs (the data pipeline does this with "
                "data.scene_graphs true; data.scene_graph_limits.attributes > 0 adds the attributes)"
            )
        return ex

    def compose_entities(self, captions: EncodedCaptions) -> Tensor:
        """The entity composer: every object slot composed with its attributes.

        Shapes:
            Output: ``(M, O, D)`` (not normalised; padding slots hold values that are never used).
        """
        ex = self._extra(captions)
        words = captions.features
        m, o = ex["obj_token"].shape
        x = self.entity_phrase(_gather_rows(words, ex["obj_token"]))  # (M, O, H)
        if "obj_attr_token" in ex:
            a = ex["obj_attr_token"].shape[-1]
            attrs = self.entity_phrase(_gather_rows(words, ex["obj_attr_token"].reshape(m, o * a))).reshape(m, o, a, -1)
            attr_mask = ex["obj_attr_mask"]
        else:
            a = 0
            attrs = x.new_zeros(m, o, 0, x.shape[-1])
            attr_mask = torch.zeros(m, o, 0, dtype=torch.bool, device=x.device)
        nodes = torch.cat([x.unsqueeze(2), attrs], dim=2).reshape(m * o, 1 + a, -1)
        adj = torch.zeros(m * o, 1 + a, 1 + a, dtype=torch.bool, device=x.device)
        flat = attr_mask.reshape(m * o, a)
        adj[:, 0, 0] = True
        adj[:, 0, 1:] = flat
        adj[:, 1:, 0] = flat
        entity = self.entity_attention(nodes, adj)[:, 0]
        return self.entity_out(entity).reshape(m, o, -1)

    def compose_caption(self, captions: EncodedCaptions, entity: Tensor) -> Tensor:
        """The relation composer: entities with their relations, graph attention, GPO.

        Shapes:
            entity: ``(M, O, D)`` from :meth:`compose_entities`. Output: ``(M, D)`` (not normalised).
        """
        ex = self._extra(captions)
        words = captions.features
        obj_mask, rel_mask = ex["obj_mask"], ex["rel_mask"]
        m, o = obj_mask.shape
        t, p = ex["rel_pred_tokens"].shape[1:]
        e = self.entity_in(entity)
        if self.position is not None:
            pos = sinusoidal_positions(o, self.graph_pos_dim, device=e.device, dtype=e.dtype)
            e = e + self.position_dropout(self.position(pos))
        e = self.position_norm(e)
        pred = self.relation_phrase(_gather_rows(words, ex["rel_pred_tokens"].reshape(m, t * p))).reshape(m, t, p, -1)
        token_mask = ex["rel_pred_mask"]
        pred = masked_mean(pred, token_mask, dim=-2)
        pred = torch.where(token_mask.any(-1, keepdim=True), pred, self.unknown_predicate.to(pred.dtype).expand_as(pred))
        subj = F.one_hot(ex["rel_subj"], o).to(e.dtype) * rel_mask.unsqueeze(-1).to(e.dtype)  # (M, T, O)
        obj = F.one_hot(ex["rel_obj"], o).to(e.dtype) * rel_mask.unsqueeze(-1).to(e.dtype)
        # both messages read [predicate, object entity]: the subject hears of its object, the object
        # of itself (the release's passive edge concatenates the receiving entity, not the subject)
        edge = torch.cat([pred, torch.bmm(obj, e)], dim=-1)  # (M, T, 2H)
        active, passive = self.active_edge(edge), self.passive_edge(edge)
        total = subj.transpose(1, 2) @ active + obj.transpose(1, 2) @ passive
        count = (subj.sum(1) + obj.sum(1)).unsqueeze(-1)
        e = self.edge_norm(e + total / count.clamp_min(1.0))
        e = self.relation_input_dropout(e)
        linked = (subj.transpose(1, 2) @ obj) > 0  # (M, O, O) subject -> object
        eye = torch.eye(o, dtype=torch.bool, device=e.device)
        adj = (linked | linked.transpose(1, 2) | eye) & obj_mask.unsqueeze(1) & obj_mask.unsqueeze(2)
        e = self.relation_attention(e, adj)
        caption = self.caption_out(self.caption_pool(e, obj_mask))
        return caption * obj_mask.any(-1, keepdim=True).to(caption.dtype)  # no object: a zero vector, score 0

    def compose(self, captions: EncodedCaptions) -> tuple[Tensor, Tensor]:
        """Both composers on a block, captions with the same number of object slots together.

        Graph attention costs ``O^2`` per caption in the block's object width ``O``, and a block of a
        whole test split is padded to its longest scene graph (on SynthScenes 13 slots where most
        captions have 2 to 4): in evaluation each group's slots are cut to its own count (padding
        slots are never attended, pooled or read, so the vectors are the same; ``tests/test_cora.py``
        checks it). A training batch is composed at once.

        Shapes:
            Output: the captions ``(M, D)`` and their entities ``(M, O, D)`` (not normalised; trimmed
            slots hold zeros, other padding slots values that are never used).
        """
        ex = self._extra(captions)
        obj_mask = ex["obj_mask"]
        m, o = obj_mask.shape
        slots = torch.arange(1, o + 1, device=obj_mask.device)
        counts = (obj_mask.long() * slots).amax(1).clamp_min(1) if o else obj_mask.new_zeros(m, dtype=torch.long)
        rel_mask = ex["rel_mask"]
        if rel_mask.shape[1]:  # a relation naming a slot (even a padding one) keeps it
            named = torch.where(rel_mask, torch.maximum(ex["rel_subj"], ex["rel_obj"]) + 1, 0).amax(1)
            counts = torch.maximum(counts, named)
        widths = counts.unique()
        if self.training or len(widths) <= 1:  # training: one batch, and dropout draws in the same order as ever
            entity = self.compose_entities(captions)
            return self.compose_caption(captions, entity), entity
        order, captions_out, entities_out = [], [], []
        for width in widths.tolist():
            rows = (counts == width).nonzero().squeeze(1)
            group = _cut_object_slots(captions.index(rows), width)
            entity = self.compose_entities(group)
            captions_out.append(self.compose_caption(group, entity))
            entities_out.append(F.pad(entity, (0, 0, 0, o - width)))
            order.append(rows)
        inverse = torch.empty_like(counts)
        inverse[torch.cat(order)] = torch.arange(m, device=counts.device)
        return torch.cat(captions_out)[inverse], torch.cat(entities_out)[inverse]

    # -- prepared blocks ---------------------------------------------------------------------

    def _memoised(self, key: str, item: object, build) -> object:
        """In training, the last block's result is reused when the same block object comes again (the
        loss terms ask for the embeddings of the batch the model just scored)."""
        if self.training and key in self._memo and self._memo[key][0] is item:
            return self._memo[key][1]
        out = build()
        if self.training:
            self._memo[key] = (item, out)
        else:
            self._memo.pop(key, None)
        return out

    def prepare_images(self, images: EncodedImages) -> EncodedImages:
        """Pool the images once: adds ``extra["cora_image"] (N, D)`` (l2-normalised)."""
        if images.extra is not None and IMAGE_EMBEDDING_KEY in images.extra:
            return images

        def build() -> EncodedImages:
            vec = l2norm(self.image_pool(images.features, images.mask))
            return replace(images, extra={**(images.extra or {}), IMAGE_EMBEDDING_KEY: vec})

        return self._memoised("images", images, build)

    def prepare_captions(self, captions: EncodedCaptions) -> EncodedCaptions:
        """Compose the captions once: adds ``extra["cora_caption"] (M, D)`` and
        ``extra["cora_entity"] (M, O, D)`` (both l2-normalised)."""
        if captions.extra is not None and CAPTION_EMBEDDING_KEY in captions.extra:
            return captions

        def build() -> EncodedCaptions:
            caption, entity = self.compose(captions)
            extra = {**captions.extra, CAPTION_EMBEDDING_KEY: l2norm(caption), ENTITY_EMBEDDING_KEY: l2norm(entity)}
            return replace(captions, extra=extra)

        return self._memoised("captions", captions, build)

    def embeddings(self, images: EncodedImages, captions: EncodedCaptions) -> CoraEmbeddings:
        """The vectors of CORA's losses for a block (:class:`CoraEmbeddings`)."""
        vi, tc = self.prepare_images(images).extra, self.prepare_captions(captions).extra
        return CoraEmbeddings(vi[IMAGE_EMBEDDING_KEY], tc[CAPTION_EMBEDDING_KEY], tc[ENTITY_EMBEDDING_KEY], tc["obj_mask"])

    def embed_images(self, images: EncodedImages) -> Tensor:
        """``(N, D)`` l2-normalised image vectors (a shortlist model's image side)."""
        return self.prepare_images(images).extra[IMAGE_EMBEDDING_KEY]

    def embed_captions(self, captions: EncodedCaptions) -> Tensor:
        """``(M, D)`` l2-normalised caption vectors (a shortlist model's caption side)."""
        return self.prepare_captions(captions).extra[CAPTION_EMBEDDING_KEY]

    def forward(self, images: EncodedImages, captions: EncodedCaptions) -> Tensor:
        return self.embed_images(images) @ self.embed_captions(captions).T

    def pair_memory_bytes(self, images: EncodedImages, captions: EncodedCaptions) -> int:
        """Per pair only the score: composing is per caption and pooling per image."""
        return images.features.element_size()


#: caption extras with the object-slot axis at position 1 (cut by :func:`_cut_object_slots`)
_OBJECT_SLOT_KEYS = ("obj_token", "obj_mask", "obj_attr_token", "obj_attr_mask")


def _cut_object_slots(captions: EncodedCaptions, width: int) -> EncodedCaptions:
    """``captions`` with their object slots cut to the first ``width``, which covers every slot that a
    valid relation names (:meth:`CORA.compose`)."""
    extra = {k: (v[:, :width] if k in _OBJECT_SLOT_KEYS else v) for k, v in captions.extra.items()}
    for key in ("rel_subj", "rel_obj"):  # masked relations are never read; keep their slots in range
        extra[key] = torch.where(extra["rel_mask"], extra[key], 0)
    return replace(captions, extra=extra)


def _gather_rows(x: Tensor, index: Tensor) -> Tensor:
    """``x[b, index[b, k]]`` for every ``b`` and ``k``.

    Shapes:
        x: ``(B, K, D)``; index: ``(B, J)``. Output: ``(B, J, D)``.
    """
    return x.gather(1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
