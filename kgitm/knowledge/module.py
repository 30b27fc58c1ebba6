"""Knowledge in the matchers: concept embeddings from a concept graph, attached to the graphs of both
modalities and/or fused as a CVSE-style consensus score. Works with every matcher (VSE++, SCAN, GSMN,
SGM) because it acts on the encoded features and on the similarity, not inside a particular matcher
(the fused score is :class:`kgitm.matchers.fused.KnowledgeFusedMatcher`).

Which concepts a caption's words are is a data transform: the data pipeline maps every word once
through :meth:`KnowledgeModule.concept_index` and hands the module ``(B, L, K)`` concept ids.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Literal, Optional

import torch
from torch import Tensor, nn

from kgitm.core.functional import l2norm, masked_mean
from kgitm.core.types import EncodedCaptions, EncodedImages, WordPieces
from kgitm.knowledge.base import KnowledgeSource, load_vocabulary
from kgitm.knowledge.cache import cached_concept_graph, default_cache_dir
from kgitm.knowledge.mapping import ConceptIndex

log = logging.getLogger(__name__)


class KnowledgeModule(nn.Module):
    """Concept-graph knowledge for image-text matchers.

    A 2-layer GCN (CVSE: LeakyReLU 0.2) over the source's concept graph turns node features (the
    source's vectors, e.g. CVSE's GloVe rows, learned embeddings, or the text encoder's word
    embeddings of the concept names) into concept embeddings ``E`` in the joint space; its first layer
    maps features of any size ``F`` to the hidden size. Two ways to use them:

    - ``"graph"`` (knowledge-augmented graphs): every caption word that the source maps to concepts
      gets a concept node attached; one message from the attached nodes updates the word node,
      ``h_j <- l2norm(h_j + W_t mean_c E_c)``. Regions attach softly to concepts
      (``softmax(scale * v E^T)``), ``v <- l2norm(v + W_v sum_c a_c E_c)``. Graph matchers then
      propagate this along their own edges (GSMN dependency/visual graphs, SGM triples). A word never
      seen in training (synonym shift) still reaches its concept when the source maps it (WordNet).
    - ``"consensus"`` (CVSE, Wang et al. ECCV 2020): pooled image and caption vectors attend over
      ``E`` (softmax with ``scale``); the caption's distribution is mixed with its own concept labels
      (``label_ratio``; from the caption alone, never shared across an image's captions); the final
      score is ``(1 - w) * S_matcher + w * cos(consensus_img, consensus_txt)``.

    Args:
        source: the knowledge source (``none``, ``cooccurrence``, ``wordnet``, ``conceptnet``,
            ``cvse``, ``union``).
        vocabulary: concept vocabulary (list, or a file/folder ``load_vocabulary`` reads); ``None``:
            the source's own.
        mode: ``"graph"``, ``"consensus"`` or ``"both"``.
        node_features: ``"source"`` (the source's vectors; learned where it has none), ``"learned"``,
            or ``"text_encoder"``: the text encoder's input word embeddings of each concept's name (mean
            over its words / sub-word pieces), recomputed at every use so that they train with the
            encoder (the encoder is given to :meth:`bind`). A name without any token in the encoder's
            vocabulary gets a learned vector instead; those concepts are listed in
            ``unknown_concepts`` and logged.
        feature_dim: size of learned node features (default 300, GloVe's); for ``"text_encoder"`` the
            encoder's word embedding size is used.
        hidden_dim: GCN hidden size (default 512, CVSE).
        negative_slope: LeakyReLU slope of the GCN (default 0.2, CVSE).
        scale: softmax scale of concept attention (default 10, CVSE).
        label_ratio: share of the caption's own concept labels in its concept distribution
            (default 0.35, CVSE on Flickr30K).
        consensus_weight: ``w``, the consensus share of the fused score (default 0.15, CVSE).
        max_concepts_per_word: concepts kept per word (default 4; the width ``K`` of the concept ids).
        self_weight: share of a concept's own features in each propagation step; its neighbours share
            the rest in proportion to the edge weights (default 0.5). Like CVSE's identity term, it
            keeps dense graphs (WordNet siblings, co-occurrence) from blurring concepts together.
        cache_dir: where a source's concept graph is stored after the first build
            (:mod:`kgitm.knowledge.cache`; default ``None``: beside the vocabulary folder, else the user
            cache).

    Shapes:
        node features ``X``: ``(C, F)``.
        concept embeddings ``E``: ``(C, D)`` with ``D`` the encoders' size (set by :meth:`bind`).
    """

    def __init__(
        self,
        source: KnowledgeSource,
        *,
        vocabulary: Optional[list[str] | str] = None,
        mode: Literal["graph", "consensus", "both"] = "graph",
        node_features: Literal["source", "learned", "text_encoder"] = "source",
        feature_dim: int = 300,
        hidden_dim: int = 512,
        negative_slope: float = 0.2,
        scale: float = 10.0,
        label_ratio: float = 0.35,
        consensus_weight: float = 0.15,
        max_concepts_per_word: int = 4,
        self_weight: float = 0.5,
        cache_dir: Optional[str] = None,
    ) -> None:
        super().__init__()
        if mode not in ("graph", "consensus", "both"):
            raise ValueError(f"KnowledgeModule: mode must be graph, consensus or both, got {mode!r}")
        if node_features not in ("source", "learned", "text_encoder"):
            raise ValueError(
                f"KnowledgeModule: node_features must be source, learned or text_encoder, got {node_features!r}"
            )
        self.source = source
        self.concepts = load_vocabulary(vocabulary) if vocabulary is not None else source.vocabulary
        where = vocabulary if vocabulary is not None else source.vocabulary_path
        graph = cached_concept_graph(source, self.concepts, cache_dir=cache_dir or default_cache_dir(where))
        self.provenance = graph.provenance
        if not 0.0 <= self_weight <= 1.0:
            raise ValueError(f"KnowledgeModule: self_weight must be in [0, 1], got {self_weight}")
        adj = graph.dense().clone().clamp_min(0.0)
        adj.fill_diagonal_(0.0)
        degree = adj.sum(1, keepdim=True)
        neighbours = adj / degree.clamp_min(1e-12)
        # A_hat = s I + (1 - s) rownorm(A); a concept without neighbours keeps all of its own features
        prop = self_weight * torch.eye(adj.shape[0]) + (1 - self_weight) * neighbours
        prop = torch.where(degree > 0, prop, torch.eye(adj.shape[0]))
        self.register_buffer("adjacency", prop)
        use_source = node_features == "source" and graph.features is not None
        self.register_buffer("node_features", graph.features.clone() if use_source else None)
        self.node_embedding: Optional[nn.Embedding] = None
        self.unknown_embedding: Optional[nn.Embedding] = None
        self.unknown_concepts: list[str] = []
        self._embed_pieces: Optional[Callable[[WordPieces], Tensor]] = None
        in_dim: Optional[int] = None  # text_encoder: the encoder's word size, known at bind
        if use_source:
            in_dim = graph.features.shape[1]
        elif node_features != "text_encoder":
            in_dim = feature_dim  # the learned node features are created in bind()
        self.node_feature_kind = node_features
        self.mode = mode
        self.in_dim = in_dim
        self.hidden_dim = hidden_dim
        self.negative_slope = negative_slope
        self.scale = scale
        self.label_ratio = label_ratio
        self.consensus_weight = consensus_weight
        self.max_concepts_per_word = max_concepts_per_word
        self.embed_dim: Optional[int] = None

    # ------------------------------------------------------------------ construction
    def bind(self, embed_dim: int, *, text_encoder: Optional[nn.Module] = None) -> None:
        """Create the parameters (called once by :class:`~kgitm.models.MatchingModel`, after the
        matcher's :meth:`~kgitm.matchers.base.Matcher.bind`): learned node features, the GCN and the
        attachment layers, in that order.

        Args:
            embed_dim: the encoders' output size ``D``.
            text_encoder: the task's text encoder; needed for ``node_features="text_encoder"``, whose
                input embedding table then gives the node features. It stays owned by the task module
                (not registered here), so its parameters are trained and saved once.
        """
        self.embed_dim = embed_dim
        if self.node_feature_kind == "learned" or (self.node_feature_kind == "source" and self.node_features is None):
            self.node_embedding = nn.Embedding(len(self.concepts), self.in_dim)
        if self.node_feature_kind == "text_encoder":
            self._bind_text_encoder(text_encoder)
        self.gcn1 = nn.Linear(self.in_dim, self.hidden_dim)
        self.gcn2 = nn.Linear(self.hidden_dim, embed_dim)
        if self.mode in ("graph", "both"):
            self.attach_text = nn.Linear(embed_dim, embed_dim)
            self.attach_image = nn.Linear(embed_dim, embed_dim)
        self.reset_parameters()

    def _bind_text_encoder(self, text_encoder: Optional[nn.Module]) -> None:
        if text_encoder is None or not callable(getattr(text_encoder, "word_pieces", None)):
            got = "none" if text_encoder is None else type(text_encoder).__name__
            raise ValueError(
                f"KnowledgeModule: node_features='text_encoder' needs a text encoder with word_pieces/embed_pieces "
                f"(kgitm.encoders.text.TextEncoder), got {got}; MatchingModel passes its own to bind()"
            )
        pieces = text_encoder.word_pieces(self.concepts)
        self.register_buffer("concept_piece_ids", pieces.ids, persistent=False)
        self.register_buffer("concept_piece_owner", pieces.owner, persistent=False)
        self.register_buffer("concept_known", pieces.known, persistent=False)
        unknown = (~pieces.known).nonzero().flatten()
        self.register_buffer("unknown_index", unknown, persistent=False)
        self.unknown_concepts = [self.concepts[i] for i in unknown.tolist()]
        self.in_dim = int(text_encoder.word_dim)
        if self.unknown_concepts:
            self.unknown_embedding = nn.Embedding(len(self.unknown_concepts), self.in_dim)
            shown = ", ".join(self.unknown_concepts[:10]) + (", ..." if len(self.unknown_concepts) > 10 else "")
            log.warning(
                "KnowledgeModule: %d of %d concept names have no token in the %s vocabulary and get learned "
                "node features instead: %s",
                len(self.unknown_concepts), len(self.concepts), type(text_encoder).__name__, shown,
            )
        self._embed_pieces = text_encoder.embed_pieces

    @property
    def num_unknown_concepts(self) -> int:
        """Concepts whose name the text encoder does not know (``node_features="text_encoder"``)."""
        return len(self.unknown_concepts)

    def reset_parameters(self) -> None:
        for emb in (self.node_embedding, self.unknown_embedding):
            if emb is not None:
                nn.init.normal_(emb.weight, std=0.1)
        for name in ("gcn1", "gcn2", "attach_text", "attach_image"):
            layer = getattr(self, name, None)
            if layer is not None:
                nn.init.xavier_uniform_(layer.weight)
                nn.init.zeros_(layer.bias)

    # ------------------------------------------------------------------ concepts
    def concept_features(self) -> Tensor:
        """Node features ``X``, ``(C, F)``: the source's vectors, learned ones, or the text encoder's
        word embeddings of the concept names (learned rows for the names it does not know)."""
        if self.node_embedding is not None:
            return self.node_embedding.weight
        if self.node_features is not None:
            return self.node_features
        if self._embed_pieces is None:
            raise RuntimeError("KnowledgeModule: node_features='text_encoder' but bind() got no text encoder")
        x = self._embed_pieces(WordPieces(self.concept_piece_ids, self.concept_piece_owner, self.concept_known))
        if self.unknown_embedding is not None:
            x = x.index_copy(0, self.unknown_index, self.unknown_embedding.weight.to(x.dtype))
        return x

    def concept_embeddings(self) -> Tensor:
        """``E = A LeakyReLU(A X W1) W2``, l2-normalised rows, ``(C, D)``."""
        h = nn.functional.leaky_relu(self.adjacency @ self.gcn1(self.concept_features()), self.negative_slope)
        return l2norm(self.adjacency @ self.gcn2(h))

    def concept_index(self) -> ConceptIndex:
        """The word -> concept-ids mapping of this module's source and vocabulary, for the data
        pipeline (:class:`~kgitm.knowledge.mapping.ConceptIndex`; ``K = max_concepts_per_word``)."""
        return ConceptIndex(self.source, self.concepts, max_per_word=self.max_concepts_per_word)

    def word_concepts(self, concept_ids: Tensor) -> Tensor:
        """Row-normalised word -> concept assignment from the pipeline's concept ids.

        Shapes:
            concept_ids: ``(M, L, K)`` long, ``-1`` padding. Output: ``(M, L, C)`` (zero rows for words
            without concepts).
        """
        valid = concept_ids >= 0
        out = torch.zeros(*concept_ids.shape[:2], len(self.concepts), device=concept_ids.device)
        out.scatter_add_(2, concept_ids.clamp_min(0), valid.to(out.dtype))
        return out / out.sum(-1, keepdim=True).clamp_min(1.0)

    # ------------------------------------------------------------------ use
    def augment_captions(self, captions: EncodedCaptions, concept_ids: Optional[Tensor]) -> EncodedCaptions:
        """Attach concept nodes to the caption's words (and store its concept labels for the consensus).

        Shapes:
            concept_ids: ``(M, L, K)`` from the data pipeline (:meth:`concept_index`), ``L`` the width of
            ``captions.features``.
        """
        if concept_ids is None:
            raise ValueError(
                "KnowledgeModule needs the captions' concept ids (CaptionInputs.concept_ids): the data pipeline "
                "computes them from model.caption_transforms(); build the dataset with those transforms"
            )
        assign = self.word_concepts(concept_ids)
        extra = dict(captions.extra or {})
        labels = (assign.sum(1) > 0).to(captions.features.dtype)
        extra["concept_labels"] = labels
        features = captions.features
        if self.mode in ("graph", "both"):
            msg = assign @ self.concept_embeddings()
            has = assign.sum(-1, keepdim=True) > 0
            features = torch.where(has, l2norm(features + self.attach_text(msg)), features)
            features = features * captions.mask.unsqueeze(-1).to(features.dtype)
        return EncodedCaptions(features=features, mask=captions.mask, adjacency=captions.adjacency, extra=extra)

    def augment_images(self, images: EncodedImages, details: Optional[dict] = None) -> EncodedImages:
        """Attach concept nodes to regions by soft assignment; ``details`` (when given) receives the
        assignment (``"region_concepts"``, ``(N, R, C)``: each region's weights over the concepts)."""
        if self.mode not in ("graph", "both"):
            return images
        E = self.concept_embeddings()
        attn = torch.softmax(self.scale * images.features @ E.T, dim=-1)
        if details is not None:
            details["region_concepts"] = attn
        features = l2norm(images.features + self.attach_image(attn @ E))
        features = features * images.mask.unsqueeze(-1).to(features.dtype)
        return EncodedImages(features=features, mask=images.mask, boxes=images.boxes, extra=images.extra)

    def consensus_similarity(self, images: EncodedImages, captions: EncodedCaptions, details: Optional[dict] = None) -> Tensor:
        """``cos(consensus_img, consensus_txt)`` for every pair, ``(N, M)``; ``details`` (when given)
        receives the concept distributions (``"image_concepts" (N, C)``, ``"caption_concepts" (M, C)``)."""
        E = self.concept_embeddings()
        v = l2norm(masked_mean(images.features, images.mask, dim=1))
        t = l2norm(masked_mean(captions.features, captions.mask, dim=1))
        a_v = torch.softmax(self.scale * v @ E.T, dim=-1)
        a_t = torch.softmax(self.scale * t @ E.T, dim=-1)
        labels = (captions.extra or {}).get("concept_labels")
        if labels is not None:
            has = labels.sum(-1, keepdim=True) > 0
            mixed = (1 - self.label_ratio) * a_t + self.label_ratio * labels / labels.sum(-1, keepdim=True).clamp_min(1.0)
            a_t = torch.where(has, mixed, a_t)
        if details is not None:
            details.update(image_concepts=a_v, caption_concepts=a_t)
        return l2norm(a_v @ E) @ l2norm(a_t @ E).T
