"""Similarity loops written like the public code of SCAN, GSMN and SGRAF, the baselines of the speed benchmarks.

SCAN's ``xattn_score_t2i`` / ``xattn_score_i2t``, GSMN's ``TextualGraph`` / ``VisualGraph`` and SGRAF's
``EncoderSimilarity.forward`` score one caption at a time against a set of images, inside ``shard_xattn``'s
(SGRAF: ``shard_attn_scores``') image x caption shards at evaluation
(https://github.com/kuanghuei/SCAN ``model.py``/``evaluation.py``; https://github.com/CrossmodalGroup/GSMN
``model.py``; https://github.com/Paranioar/SGRAF ``model.py``/``evaluation.py``), and over the whole batch in
training (one shard). The functions here do the same steps
with this repository's matcher parameters, so the benchmarks (``bench_similarity.py``,
``bench_train_step.py``) compare the same numbers computed two ways. Written for this repository from
reading the releases, not copied.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kgitm.core.types import EncodedCaptions, EncodedImages
from kgitm.matchers.gsmn import GSMNMatcher
from kgitm.matchers.scan import SCANMatcher
from kgitm.matchers.sgraf import SGRAFMatcher


def _cosine(x1: torch.Tensor, x2: torch.Tensor, dim: int, eps: float = 1e-8) -> torch.Tensor:
    return F.cosine_similarity(x1, x2, dim=dim, eps=eps)


def _func_attention(query, context, smooth, eps=1e-8):
    """SCAN's ``func_attention``: query ``(n, queryL, d)``, context ``(n, sourceL, d)``; the inputs are
    l2-normalised, so the dot product is the cosine (as in the public code)."""
    batch, query_l = query.shape[:2]
    source_l = context.shape[1]
    attn = torch.bmm(context, query.transpose(1, 2))
    attn = F.leaky_relu(attn, 0.1)
    attn = attn / attn.norm(dim=2, keepdim=True).clamp_min(eps)  # over the query items
    attn = attn.transpose(1, 2).reshape(batch * query_l, source_l)
    attn = torch.softmax(attn * smooth, dim=1).view(batch, query_l, source_l)
    return torch.bmm(attn, context), attn  # weighted context (n, queryL, d)


def _shards(n: int, ks: range, shard: int):
    """``shard_xattn``'s tiling: image shards x caption shards of ``shard`` items each."""
    for i0 in range(0, n, shard):
        for c0 in range(ks.start, ks.stop, shard):
            yield slice(i0, min(i0 + shard, n)), range(c0, min(c0 + shard, ks.stop))


def loop_scan(matcher: SCANMatcher, images: EncodedImages, captions: EncodedCaptions, ks: range, shard: int):
    """``shard_xattn`` + ``xattn_score_t2i/i2t``: every region of every image is valid."""
    n = images.features.shape[0]
    lengths = captions.mask.sum(1)
    out = torch.empty(n, len(ks))
    for rows, caps in _shards(n, ks, shard):
        img = images.features[rows]
        ni = img.shape[0]
        for k in caps:
            cap = captions.features[k, : int(lengths[k])].unsqueeze(0).repeat(ni, 1, 1)  # (n, L_k, d)
            if matcher.direction == "t2i":
                context, _ = _func_attention(cap, img, matcher.lambda_softmax)
                row = _cosine(cap, context, dim=2)
            else:
                context, _ = _func_attention(img, cap, matcher.lambda_softmax)
                row = _cosine(img, context, dim=2)
            if matcher.aggregation == "lse":
                row = torch.log(torch.exp(row * matcher.lambda_lse).sum(1)) / matcher.lambda_lse
            else:
                row = row.mean(1)
            out[rows, k - ks.start] = row
    return out


def _blocks(x: torch.Tensor, nb: int) -> torch.Tensor:
    return torch.stack(torch.split(x, x.shape[-1] // nb, dim=-1), dim=-2)


def loop_gsmn(matcher: GSMNMatcher, images: EncodedImages, captions: EncodedCaptions, ks: range, shard: int):
    """GSMN's ``TextualGraph.forward`` + ``VisualGraph.forward`` per caption (with the paper's
    neighbour propagation) inside ``shard_xattn``'s shards: every region valid, each caption against
    all images of its shard at once."""
    n, r, _ = images.features.shape
    nb, kk = matcher.num_blocks, matcher.num_kernels
    lengths = captions.mask.sum(1)
    hk = matcher.visual_conv.out_features // kk
    out = torch.empty(n, len(ks))
    for rows, caps in _shards(n, ks, shard):
        img = images.features[rows]
        ni = img.shape[0]
        kernel = matcher.visual_kernel_weights(images.boxes[rows], images.mask[rows])  # (n, R, K, R), own boxes
        for k in caps:
            lk = int(lengths[k])
            cap_i = captions.features[k, :lk].unsqueeze(0)
            cap = cap_i.repeat(ni, 1, 1)
            # textual graph of this caption
            mask = captions.mask[k : k + 1, :lk]
            adj = None if captions.adjacency is None else captions.adjacency[k : k + 1, :lk, :lk]
            graph = matcher.text_graph(cap_i, mask, adj)[0]  # (L_k, L_k)
            # t2i node-level matching and propagation over the textual graph
            context, _ = _func_attention(cap, img, matcher.lambda_attention)
            x_t = _cosine(_blocks(cap, nb), _blocks(context, nb), dim=-1)  # (n, L_k, B)
            h_t = torch.matmul(graph, matcher.text_conv(x_t))
            t2i = matcher.text_mlp(h_t).squeeze(-1).mean(1)
            # i2t node-level matching and propagation over the visual graph
            context, _ = _func_attention(img, cap, matcher.lambda_attention)
            x_v = _cosine(_blocks(img, nb), _blocks(context, nb), dim=-1)  # (n, R, B)
            y = matcher.visual_conv(x_v).view(ni, r, kk, hk)
            h_v = torch.einsum("nikj,njkh->nikh", kernel, y).reshape(ni, r, -1)
            i2t = matcher.visual_mlp(h_v).squeeze(-1).mean(1)
            out[rows, k - ks.start] = t2i + i2t
    return out


def _l2(x: torch.Tensor, dim: int = -1, eps: float = 1e-8) -> torch.Tensor:
    return x / x.norm(dim=dim, keepdim=True).clamp_min(eps)


def loop_sgraf(matcher: SGRAFMatcher, images: EncodedImages, captions: EncodedCaptions, ks: range, shard: int):
    """SGRAF's ``shard_attn_scores`` + ``EncoderSimilarity.forward``: every region valid; per image shard the
    images' self-attention global vectors, then per caption its global vector and its local alignments
    with all images of the shard at once, every SGR step over every node (or SAF), the sigmoid score."""
    n = images.features.shape[0]
    lengths = captions.mask.sum(1)
    out = torch.empty(n, len(ks))
    for rows, caps in _shards(n, ks, shard):
        img = images.features[rows]
        ni = img.shape[0]
        img_glo = matcher.v_global_w(img, torch.ones(img.shape[:2], dtype=torch.bool, device=img.device))
        for k in caps:
            lk = int(lengths[k])
            cap_i = captions.features[k, :lk].unsqueeze(0)
            cap = cap_i.repeat(ni, 1, 1)  # (n, L_k, d)
            cap_glo = matcher.t_global_w(cap_i, torch.ones(1, lk, dtype=torch.bool, device=cap_i.device))
            context, _ = _func_attention(cap, img, matcher.lambda_softmax)
            sim_loc = _l2(matcher.sim_tranloc_w((_l2(context) - cap) ** 2))
            sim_glo = _l2(matcher.sim_tranglo_w((img_glo - cap_glo) ** 2))
            sim_emb = torch.cat([sim_glo.unsqueeze(1), sim_loc], 1)  # (n, 1 + L_k, K)
            if matcher.module == "SGR":
                for step in matcher.SGR_module:
                    edge = torch.softmax(torch.bmm(step.graph_query_w(sim_emb), step.graph_key_w(sim_emb).transpose(1, 2)), dim=-1)
                    sim_emb = torch.relu(step.sim_graph_w(torch.bmm(edge, sim_emb)))
                sim_vec = sim_emb[:, 0]
            else:
                saf = matcher.SAF_module
                attn = torch.sigmoid(saf.bn(saf.attn_sim_w(sim_emb).transpose(1, 2)))  # (n, 1, 1 + L_k)
                attn = attn / attn.abs().sum(-1, keepdim=True)
                sim_vec = _l2(torch.bmm(attn, sim_emb).squeeze(1))
            out[rows, k - ks.start] = torch.sigmoid(matcher.sim_eval_w(sim_vec)).squeeze(-1)
    return out
