"""SGM: cross-modal scene graph matching (Wang et al., WACV 2020).

Both modalities are scene graphs. Each graph is encoded by a message-passing network over its
``(subject, predicate, object)`` triples; the object and relation embeddings of the visual graph are
then matched against those of the textual graph: for every text object its best visual object,
averaged over the caption's objects, and the same for relations.

The graph structure comes as padded index tensors in ``extra`` (see
:mod:`kgitm.graphs.scene_graph_index`); the features are gathered at those indices here.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Optional

import torch
from torch import Tensor, nn
from torch_geometric.nn import MLP, MessagePassing
from torch_geometric.nn.resolver import activation_resolver

from kgitm.core.geometry import box_iou
from kgitm.core.functional import l2norm, masked_mean
from kgitm.core.types import EncodedCaptions, EncodedImages
from kgitm.matchers.base import Details, Matcher, check_single_pair

#: Number of geometry features :func:`relation_geometry` returns per (subject, object) box pair.
RELATION_GEOMETRY_DIM = 5

_IMAGE_KEYS = ("obj_region", "obj_mask", "rel_subj", "rel_obj", "rel_mask")
_CAPTION_KEYS = ("obj_token", "obj_mask", "rel_subj", "rel_obj", "rel_pred_tokens", "rel_pred_mask", "rel_mask")
#: Keys under which :meth:`SGM.prepare_images` / :meth:`SGM.prepare_captions` store the encoded graphs.
OBJECT_EMBEDDING_KEY = "sgm_obj"
RELATION_EMBEDDING_KEY = "sgm_rel"


def relation_geometry(subject_boxes: Tensor, object_boxes: Tensor, *, eps: float) -> Tensor:
    """Geometry of the object box relative to the subject box.

    Features: centre offset divided by the subject size (``dx / w_s``, ``dy / h_s``), log size
    ratios (``log(w_o / w_s)``, ``log(h_o / h_s)``) and the IoU of the two boxes.

    Args:
        subject_boxes: normalised corner boxes of the subjects.
        object_boxes: normalised corner boxes of the objects.
        eps: lower bound on box widths and heights (degenerate boxes stay finite).

    Shapes:
        subject_boxes, object_boxes: ``(..., 4)``. Output: ``(..., 5)``.
    """
    ws = (subject_boxes[..., 2] - subject_boxes[..., 0]).clamp_min(eps)
    hs = (subject_boxes[..., 3] - subject_boxes[..., 1]).clamp_min(eps)
    wo = (object_boxes[..., 2] - object_boxes[..., 0]).clamp_min(eps)
    ho = (object_boxes[..., 3] - object_boxes[..., 1]).clamp_min(eps)
    dx = (object_boxes[..., 0] + object_boxes[..., 2] - subject_boxes[..., 0] - subject_boxes[..., 2]) / (2 * ws)
    dy = (object_boxes[..., 1] + object_boxes[..., 3] - subject_boxes[..., 1] - subject_boxes[..., 3]) / (2 * hs)
    iou = box_iou(subject_boxes, object_boxes)
    return torch.stack([dx, dy, torch.log(wo / ws), torch.log(ho / hs), iou], dim=-1)


class TripleConv(MessagePassing):
    """One round of message passing over ``(subject, predicate, object)`` triples.

    Objects are nodes and relations are directed edges ``subject -> object`` whose edge features
    are the relation embeddings. Each relation is updated from its triple,

    .. math::
        \\mathbf{r}' = \\mathbf{r} + \\mathrm{MLP}([\\mathbf{x}_s, \\mathbf{r}, \\mathbf{x}_o]),

    and with ``update_objects=True`` each object also aggregates (mean) the relations it takes part
    in, with separate weights for its two roles:

    .. math::
        \\mathbf{x}' = \\mathbf{x} + \\sigma\\big(\\mathbf{W}_0 \\mathbf{x}
        + \\mathbf{W}_s\\,\\mathrm{mean}_{(x, r, o)}[\\mathbf{x}_o, \\mathbf{r}']
        + \\mathbf{W}_o\\,\\mathrm{mean}_{(s, r, x)}[\\mathbf{x}_s, \\mathbf{r}']\\big).

    Args:
        channels: embedding size ``D`` of objects and relations.
        update_objects: also update the object embeddings from their relations. (default: ``False``)
        dropout: dropout inside the relation MLP. (default: ``0.0``)
        act: activation (a name understood by PyG's resolver). (default: ``"relu"``)

    Shapes:
        x: ``(V, D)`` objects; edge_index: ``(2, E)`` subject and object node of each relation;
        edge_attr: ``(E, D)`` relations. Output: ``((V, D), (E, D))``.
    """

    def __init__(self, channels: int, *, update_objects: bool = False, dropout: float = 0.0, act: str = "relu"):
        super().__init__(aggr="mean")
        self.channels = channels
        self.update_objects = update_objects
        self.relation_mlp = MLP([3 * channels, channels, channels], act=act, norm=None, dropout=dropout)
        if update_objects:
            self.lin_root = nn.Linear(channels, channels)
            self.lin_as_subject = nn.Linear(2 * channels, channels, bias=False)
            self.lin_as_object = nn.Linear(2 * channels, channels, bias=False)
            self.act = activation_resolver(act)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.relation_mlp.reset_parameters()
        if self.update_objects:
            for lin in (self.lin_root, self.lin_as_subject, self.lin_as_object):
                nn.init.xavier_uniform_(lin.weight)
            nn.init.zeros_(self.lin_root.bias)

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor) -> tuple[Tensor, Tensor]:
        rel = self.edge_updater(edge_index, x=x, edge_attr=edge_attr)
        if self.update_objects:
            # A linear map commutes with the mean, so the role weights apply after aggregation.
            as_object = self.propagate(edge_index, x=x, edge_attr=rel)
            as_subject = self.propagate(edge_index.flip(0), x=x, edge_attr=rel)
            x = x + self.act(self.lin_root(x) + self.lin_as_subject(as_subject) + self.lin_as_object(as_object))
        return x, rel

    def edge_update(self, x_j: Tensor, x_i: Tensor, edge_attr: Tensor) -> Tensor:
        # flow source_to_target: x_j is the subject, x_i the object
        return edge_attr + self.relation_mlp(torch.cat([x_j, edge_attr, x_i], dim=-1))

    def message(self, x_j: Tensor, edge_attr: Tensor) -> Tensor:
        return torch.cat([x_j, edge_attr], dim=-1)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.channels}, update_objects={self.update_objects})"


class SceneGraphEncoder(nn.Module):
    """A stack of :class:`TripleConv` layers over one disjoint graph holding a whole block.

    Args:
        channels: embedding size ``D``.
        num_layers: number of :class:`TripleConv` rounds (``0`` keeps the input embeddings).
        update_objects: see :class:`TripleConv`. (default: ``False``)
        dropout: see :class:`TripleConv`. (default: ``0.0``)
        act: see :class:`TripleConv`. (default: ``"relu"``)

    Shapes:
        x: ``(B, O, D)`` object nodes (padding slots allowed, they stay isolated); rel: ``(E, D)``
        the valid relations in row-major order of ``rel_mask``; rel_subj, rel_obj, rel_mask:
        ``(B, T)``. Output: objects ``(B, O, D)`` and relations ``(B, T, D)`` (zeros at padding).
    """

    def __init__(
        self, channels: int, num_layers: int, *, update_objects: bool = False, dropout: float = 0.0, act: str = "relu"
    ):
        super().__init__()
        self.convs = nn.ModuleList(
            [TripleConv(channels, update_objects=update_objects, dropout=dropout, act=act) for _ in range(num_layers)]
        )

    def reset_parameters(self) -> None:
        for conv in self.convs:
            conv.reset_parameters()

    def forward(
        self, x: Tensor, rel: Tensor, rel_subj: Tensor, rel_obj: Tensor, rel_mask: Tensor
    ) -> tuple[Tensor, Tensor]:
        b, o, d = x.shape
        t = rel_mask.shape[1]
        offset = (torch.arange(b, device=x.device) * o).unsqueeze(1)
        edge_index = torch.stack([(rel_subj + offset)[rel_mask], (rel_obj + offset)[rel_mask]])
        nodes = x.reshape(b * o, d)
        for conv in self.convs:
            nodes, rel = conv(nodes, edge_index, rel)
        slots = rel_mask.reshape(-1).nonzero().squeeze(1)
        dense = rel.new_zeros(b * t, d).index_copy(0, slots, rel)
        return nodes.reshape(b, o, d), dense.reshape(b, t, d)


def _best_match_mean(v: Tensor, v_mask: Tensor, t: Tensor, t_mask: Tensor, details: Details = None) -> Tensor:
    """For every text node its best visual node (max dot product), averaged over the text nodes.

    An image without valid nodes scores 0 against every caption; a caption without valid nodes
    scores 0 against every image. ``details`` (when given) receives the dot products
    (``"similarity"``, ``(N, M, U, V)``, padding included) and each text node's best visual node
    (``"match"``, ``(N, M, U)``).

    Shapes:
        v: ``(N, V, D)``; v_mask: ``(N, V)``; t: ``(M, U, D)``; t_mask: ``(M, U)``. Output: ``(N, M)``.
    """
    n, m = v.shape[0], t.shape[0]
    raw = torch.einsum("nvd,mud->nmuv", v, t)
    sim = raw.masked_fill(~v_mask[:, None, None, :], torch.finfo(raw.dtype).min)
    best = sim.amax(dim=-1)
    if details is not None:
        details.update(similarity=raw, match=sim.argmax(dim=-1))
    best = torch.where(v_mask.any(-1)[:, None, None], best, torch.zeros_like(best))
    mask = t_mask.unsqueeze(0).expand(n, m, -1)
    return masked_mean(best.unsqueeze(-1), mask, dim=-2).squeeze(-1)


class SGM(Matcher):
    """Scene graph matching from `"Cross-modal Scene Graph Matching for Relationship-aware Image-Text
    Retrieval" <https://arxiv.org/abs/1910.05134>`_ (Wang et al., WACV 2020).

    Visual graph: object nodes are the region features at ``obj_region``; a relation node is an MLP
    of its subject and object region features and their box geometry (:func:`relation_geometry`),
    plus a learned embedding of its predicted predicate label when ``num_predicate_labels`` is set
    and ``rel_label`` is given. Text graph: object nodes are the word features at ``obj_token``; a
    relation node is the mean of the word features at its predicate tokens (a learned
    unknown-predicate vector when none was found). Each side is encoded once by its own
    :class:`SceneGraphEncoder` (the whole block as one disjoint PyG graph, relations as edges with
    edge features). With l2-normalised embeddings,

    .. math::
        S = \\frac{1}{|O_t|} \\sum_{u \\in O_t} \\max_{v \\in O_v} \\mathbf{t}_u^\\top \\mathbf{v}_v
        + \\rho\\, \\frac{1}{|R_t|} \\sum_{u \\in R_t} \\max_{v \\in R_v} \\mathbf{t}_u^\\top \\mathbf{v}_v .

    A caption without relations, or an image without relations, gets relation score 0 (the
    object-level score only); a caption without objects scores 0, never NaN.

    Args:
        embed_dim: feature size ``D`` of the regions and words (both sides, after their encoders);
            ``None`` (the default) builds the layers when the model binds its size (:meth:`bind`).
        num_layers: :class:`TripleConv` rounds per graph encoder. (default: ``1``)
        rho: weight of the relation-level score. (default: ``1.0``)
        update_objects: also update objects from their relations. ``False`` follows the paper
            (object nodes keep their features; only relation nodes see their triples), which makes
            the object-level score independent of relation direction. (default: ``False``)
        use_box_geometry: feed :func:`relation_geometry` of the subject and object boxes into the
            visual relation MLP (``images.boxes`` is then required). (default: ``True``)
        num_predicate_labels: size of the predicate label vocabulary of ``rel_label``, or ``None`` to
            ignore predicted labels. (default: ``None``)
        dropout: dropout inside the MLPs. (default: ``0.0``)
        act: activation of the MLPs. (default: ``"relu"``)
        box_eps: lower bound on box sizes in :func:`relation_geometry`. (default: ``1e-6``)

    Shapes:
        images: ``features (N, R, D)``, ``boxes (N, R, 4)`` normalised corners, ``extra`` with
        ``obj_region (N, O_v)``, ``obj_mask (N, O_v)``, ``rel_subj / rel_obj / rel_mask (N, T_v)``,
        optionally ``rel_label (N, T_v)``.
        captions: ``features (M, L, D)``, ``extra`` with ``obj_token (M, O_t)``, ``obj_mask (M, O_t)``,
        ``rel_subj / rel_obj / rel_mask (M, T_t)``, ``rel_pred_tokens / rel_pred_mask (M, T_t, P)``.
        Output: ``(N, M)``.
    """

    def __init__(
        self,
        embed_dim: Optional[int] = None,
        *,
        num_layers: int = 1,
        rho: float = 1.0,
        update_objects: bool = False,
        use_box_geometry: bool = True,
        num_predicate_labels: Optional[int] = None,
        dropout: float = 0.0,
        act: str = "relu",
        box_eps: float = 1e-6,
    ):
        super().__init__()
        self.embed_dim: Optional[int] = None
        self.num_layers = num_layers
        self.rho = rho
        self.update_objects = update_objects
        self.use_box_geometry = use_box_geometry
        self.num_predicate_labels = num_predicate_labels
        self.dropout = dropout
        self.act = act
        self.box_eps = box_eps
        if embed_dim is not None:
            self.bind(embed_dim)

    def bind(self, embed_dim: int) -> None:
        """Build the graph encoders and relation MLP for features of size ``D = embed_dim`` (called by
        :class:`~kgitm.models.MatchingModel` with the encoders' size, or by the constructor when
        ``embed_dim`` is given)."""
        if self.embed_dim is not None:
            if embed_dim != self.embed_dim:
                raise ValueError(
                    f"SGM was built for embed_dim={self.embed_dim} but the encoders give {embed_dim}; "
                    "leave matcher.init_args.embed_dim unset (the model sets it from model.embed_dim)"
                )
            return
        self.embed_dim = embed_dim
        enc = dict(update_objects=self.update_objects, dropout=self.dropout, act=self.act)
        self.visual_encoder = SceneGraphEncoder(embed_dim, self.num_layers, **enc)
        self.text_encoder = SceneGraphEncoder(embed_dim, self.num_layers, **enc)
        geometry_dim = RELATION_GEOMETRY_DIM if self.use_box_geometry else 0
        self.visual_relation = MLP(
            [2 * embed_dim + geometry_dim, embed_dim, embed_dim], act=self.act, norm=None, dropout=self.dropout
        )
        self.unknown_predicate = nn.Parameter(torch.empty(embed_dim))
        self.predicate_embedding = (
            nn.Embedding(self.num_predicate_labels, embed_dim) if self.num_predicate_labels is not None else None
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.visual_encoder.reset_parameters()
        self.text_encoder.reset_parameters()
        self.visual_relation.reset_parameters()
        # unit expected norm, the scale of l2-normalised word features
        nn.init.normal_(self.unknown_predicate, std=self.embed_dim ** -0.5)
        if self.predicate_embedding is not None:
            nn.init.normal_(self.predicate_embedding.weight, std=self.embed_dim ** -0.5)

    # -- encoding, once per side -------------------------------------------------------------

    def _require(self, extra: Optional[dict], keys: tuple[str, ...], side: str) -> dict:
        if self.embed_dim is None:
            raise RuntimeError("SGM has no layers yet: pass embed_dim, or bind(embed_dim) it (MatchingModel does)")
        missing = [k for k in keys if extra is None or k not in extra]
        if missing:
            raise ValueError(
                f"SGM needs {side}.extra keys {missing}; build them with "
                f"kgitm.graphs.scene_graph_index.collate_{'visual' if side == 'images' else 'text'}_scene_graphs "
                "(the data pipeline does this with data.scene_graphs true)"
            )
        return extra

    def prepare_images(self, images: EncodedImages) -> EncodedImages:
        """Encode the visual scene graphs once; the result can be matched against any captions.

        Adds ``extra["sgm_obj"] (N, O_v, D)`` and ``extra["sgm_rel"] (N, T_v, D)`` (l2-normalised).
        Images that already carry them are returned unchanged.
        """
        if images.extra is not None and OBJECT_EMBEDDING_KEY in images.extra:
            return images
        ex = self._require(images.extra, _IMAGE_KEYS, "images")
        feats = images.features
        obj_region, rel_subj, rel_obj, rel_mask = ex["obj_region"], ex["rel_subj"], ex["rel_obj"], ex["rel_mask"]
        x = _gather_rows(feats, obj_region)  # (N, O, D)
        parts = [_gather_rows(x, rel_subj)[rel_mask], _gather_rows(x, rel_obj)[rel_mask]]
        if self.use_box_geometry:
            if images.boxes is None:
                raise ValueError("SGM(use_box_geometry=True) needs images.boxes (N, R, 4) normalised corners")
            obj_boxes = _gather_rows(images.boxes.to(feats.dtype), obj_region)
            parts.append(
                relation_geometry(
                    _gather_rows(obj_boxes, rel_subj)[rel_mask], _gather_rows(obj_boxes, rel_obj)[rel_mask],
                    eps=self.box_eps,
                )
            )
        rel = self.visual_relation(torch.cat(parts, dim=-1))  # (E, D)
        if self.predicate_embedding is not None and "rel_label" in ex:
            label = ex["rel_label"][rel_mask]
            known = (label >= 0).unsqueeze(-1).to(rel.dtype)
            rel = rel + self.predicate_embedding(label.clamp_min(0)) * known
        obj, rel_dense = self.visual_encoder(x, rel, rel_subj, rel_obj, rel_mask)
        return replace(
            images, extra={**ex, OBJECT_EMBEDDING_KEY: l2norm(obj), RELATION_EMBEDDING_KEY: l2norm(rel_dense)}
        )

    def prepare_captions(self, captions: EncodedCaptions) -> EncodedCaptions:
        """Encode the textual scene graphs once; the result can be matched against any images.

        Adds ``extra["sgm_obj"] (M, O_t, D)`` and ``extra["sgm_rel"] (M, T_t, D)`` (l2-normalised).
        Captions that already carry them are returned unchanged.
        """
        if captions.extra is not None and OBJECT_EMBEDDING_KEY in captions.extra:
            return captions
        ex = self._require(captions.extra, _CAPTION_KEYS, "captions")
        words = captions.features
        m, d = words.shape[0], words.shape[-1]
        rel_mask = ex["rel_mask"]
        x = _gather_rows(words, ex["obj_token"])  # (M, O, D)
        tokens, token_mask = ex["rel_pred_tokens"], ex["rel_pred_mask"]
        t, p = tokens.shape[1:]
        pred = _gather_rows(words, tokens.reshape(m, t * p)).reshape(m, t, p, d)
        pred = masked_mean(pred, token_mask, dim=-2)  # (M, T, D)
        known = token_mask.any(-1, keepdim=True)
        rel = torch.where(known, pred, self.unknown_predicate.to(pred.dtype).expand_as(pred))[rel_mask]
        obj, rel_dense = self.text_encoder(x, rel, ex["rel_subj"], ex["rel_obj"], rel_mask)
        return replace(
            captions, extra={**ex, OBJECT_EMBEDDING_KEY: l2norm(obj), RELATION_EMBEDDING_KEY: l2norm(rel_dense)}
        )

    # -- matching ----------------------------------------------------------------------------

    def match(self, images: EncodedImages, captions: EncodedCaptions) -> Tensor:
        """Scores of prepared images against prepared captions (see :meth:`prepare_images`).

        Returns the object-level and relation-level terms through :meth:`match_terms` summed as
        ``S_obj + rho * S_rel``.
        """
        s_obj, s_rel = self.match_terms(images, captions)
        return s_obj + self.rho * s_rel

    def match_terms(
        self, images: EncodedImages, captions: EncodedCaptions, details: Details = None
    ) -> tuple[Tensor, Tensor]:
        """The object-level and relation-level scores ``(S_obj, S_rel)``, each ``(N, M)``; ``details``
        (when given) receives the similarities and best matches of both levels (``"object"``,
        ``"relation"``: see :func:`_best_match_mean`)."""
        vi, tc = images.extra, captions.extra
        obj = rel = None
        if details is not None:
            obj, rel = details.setdefault("object", {}), details.setdefault("relation", {})
        s_obj = _best_match_mean(vi[OBJECT_EMBEDDING_KEY], vi["obj_mask"], tc[OBJECT_EMBEDDING_KEY], tc["obj_mask"], obj)
        s_rel = _best_match_mean(
            vi[RELATION_EMBEDDING_KEY], vi["rel_mask"], tc[RELATION_EMBEDDING_KEY], tc["rel_mask"], rel
        )
        return s_obj, s_rel

    def forward(self, images: EncodedImages, captions: EncodedCaptions) -> Tensor:
        return self.match(self.prepare_images(images), self.prepare_captions(captions))

    def alignments(self, images: EncodedImages, captions: EncodedCaptions) -> dict[str, Tensor]:
        """The correspondences that made one pair's score (see :meth:`Matcher.alignments`), from
        :meth:`match_terms`: ``object_similarity (O_t, O_v)`` (text objects by visual objects, padding
        included: read it with ``caption_object_mask (O_t,)`` and ``image_object_mask (O_v,)``),
        ``object_match (O_t,)`` (each text object's best visual object), the same for relations
        (``relation_similarity (T_t, T_v)``, ``relation_match``, ``caption_relation_mask``,
        ``image_relation_mask``), ``object_score``, ``relation_score`` and ``score`` (``object_score + rho
        * relation_score``)."""
        check_single_pair(images, captions, type(self).__name__)
        images, captions = self.prepare_images(images), self.prepare_captions(captions)
        d: dict = {}
        s_obj, s_rel = self.match_terms(images, captions, d)
        out = {}
        for level, prefix, mask in (("object", "object", "obj_mask"), ("relation", "relation", "rel_mask")):
            out[f"{prefix}_similarity"] = d[level]["similarity"][0, 0]
            out[f"{prefix}_match"] = d[level]["match"][0, 0]
            out[f"caption_{prefix}_mask"] = captions.extra[mask][0]
            out[f"image_{prefix}_mask"] = images.extra[mask][0]
        out.update(object_score=s_obj[0, 0], relation_score=s_rel[0, 0], score=(s_obj + self.rho * s_rel)[0, 0])
        return out

    def pair_memory_bytes(self, images: EncodedImages, captions: EncodedCaptions) -> int:
        """Per pair: the ``O_t x O_v`` and ``T_t x T_v`` score maps and their masked copies.

        Graph encoding is per image and per caption (done once per block), not per pair.
        """
        o_v, t_v = images.extra["obj_mask"].shape[1], images.extra["rel_mask"].shape[1]
        o_t, t_t = captions.extra["obj_mask"].shape[1], captions.extra["rel_mask"].shape[1]
        size = images.features.element_size()
        return size * (2 * (o_t * o_v + t_t * t_v) + 2 * (o_t + t_t))


def _gather_rows(x: Tensor, index: Tensor) -> Tensor:
    """``x[b, index[b, k]]`` for every ``b`` and ``k``.

    Shapes:
        x: ``(B, K, D)``; index: ``(B, J)``. Output: ``(B, J, D)``.
    """
    return x.gather(1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
