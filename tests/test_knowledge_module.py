"""The knowledge module in the matchers: word->concept assignment against a loop, concept attachment,
CVSE-style consensus with labels from the caption alone, fused scores, block-wise parity."""

from __future__ import annotations

import json

import pytest
import torch

from kgitm.eval.similarity import compute_similarity
from kgitm.knowledge import NoKnowledge
from kgitm.knowledge.module import KnowledgeFusedMatcher, KnowledgeModule
from kgitm.matchers.base import EncodedCaptions, EncodedImages
from kgitm.matchers.scan import SCANMatcher
from kgitm.nn.functional import l2norm

VOCAB = ["dog", "man", "red", "car", "ride"]
D = 16


def _module(mode: str = "both") -> KnowledgeModule:
    torch.manual_seed(0)
    k = KnowledgeModule(NoKnowledge(vocabulary=VOCAB), mode=mode, feature_dim=8, hidden_dim=12)
    k.bind(D)
    return k


def _data(words: list[list[str]], n_img: int = 3, regions: int = 4):
    g = torch.Generator().manual_seed(1)
    L = max(len(w) for w in words)
    mask = torch.tensor([[j < len(w) for j in range(L)] for w in words])
    caps = EncodedCaptions(l2norm(torch.randn(len(words), L, D, generator=g)) * mask.unsqueeze(-1), mask)
    rmask = torch.ones(n_img, regions, dtype=torch.bool)
    rmask[0, -1] = False
    feats = l2norm(torch.randn(n_img, regions, D, generator=g)) * rmask.unsqueeze(-1)
    return EncodedImages(feats, rmask), caps


WORDS = [["a", "red", "dog"], ["the", "man", "rides", "a", "car"], ["nothing", "here"]]


def test_word_concepts_match_a_loop():
    k = _module()
    got = k.word_concepts(WORDS, 5, torch.device("cpu"))
    ref = torch.zeros(3, 5, len(VOCAB))
    for b, ws in enumerate(WORDS):
        for j, w in enumerate(ws):
            hits = k.source.concepts_for_words([w], VOCAB)[0]
            for c in hits:
                ref[b, j, c] = 1.0 / len(hits)
    assert torch.equal(got, ref)
    assert got[1, 2].sum() == 1  # "rides" -> "ride" through the base-form rule


def test_attachment_changes_only_words_with_concepts():
    k = _module("graph")
    images, caps = _data(WORDS)
    out = k.augment_captions(caps, WORDS)
    has = k.word_concepts(WORDS, 5, torch.device("cpu")).sum(-1) > 0
    assert torch.equal(out.features[~has], caps.features[~has])
    assert not torch.allclose(out.features[has], caps.features[has])
    assert torch.isfinite(out.features).all() and torch.equal(out.mask, caps.mask)
    img = k.augment_images(images)
    assert torch.isfinite(img.features).all()
    assert img.features[0, -1].abs().sum() == 0  # a padded region stays padding


def test_consensus_labels_come_from_the_caption_alone():
    k = _module("consensus")
    images, caps = _data(WORDS)
    base = k.consensus_similarity(images, k.augment_captions(caps, WORDS))
    other = [WORDS[0], ["a", "dog", "and", "a", "car"], WORDS[2]]  # another caption changes ...
    changed = k.consensus_similarity(images, k.augment_captions(caps, other))
    assert torch.allclose(base[:, 0], changed[:, 0]) and torch.allclose(base[:, 2], changed[:, 2])  # ... only itself
    assert not torch.allclose(base[:, 1], changed[:, 1])


def test_fused_score_and_block_parity():
    k = _module("consensus")
    images, caps = _data(WORDS * 3)
    caps = k.augment_captions(caps, WORDS * 3)
    fused = KnowledgeFusedMatcher(SCANMatcher("t2i"), k).eval()
    with torch.no_grad():
        whole = fused(images, caps)
        expect = 0.85 * SCANMatcher("t2i")(images, caps) + 0.15 * k.consensus_similarity(images, caps)
        blocks = compute_similarity(fused, images, caps, image_block=2, caption_block=4)
    assert torch.allclose(whole, expect, atol=1e-6)
    assert torch.allclose(blocks, whole, atol=1e-6)


def test_compare_prints_one_table(tmp_path, capsys):
    from kgitm.cli import main

    files = []
    for name, rsum in (("a", 300.0), ("b", 310.5)):
        f = tmp_path / f"{name}.json"
        f.write_text(json.dumps({"name": name, "results": {"i2t_r1": 50.0, "rsum": rsum, "relation_swap_acc": 51.0}}))
        files.append(str(f))
    main(["compare", *files])
    out = capsys.readouterr().out
    assert "310.5" in out and "relation_swap_acc" in out
    with pytest.raises(SystemExit, match="not a kgitm test_results.json"):
        (tmp_path / "bad.json").write_text("{}")
        main(["compare", str(tmp_path / "bad.json")])


def test_propagation_keeps_a_self_share_and_isolated_concepts_intact():
    from kgitm.knowledge.base import ConceptGraph

    class Star(NoKnowledge):  # concept 0 linked to 1 and 2 (weights 1 and 3); 3 and 4 isolated
        def concept_graph(self, vocabulary=None):
            a = torch.zeros(5, 5)
            a[0, 1], a[0, 2], a[1, 0], a[2, 0] = 1.0, 3.0, 1.0, 3.0
            return ConceptGraph(list(vocabulary), adjacency=a)

    k = KnowledgeModule(Star(vocabulary=VOCAB), self_weight=0.4)
    A = k.adjacency
    assert torch.allclose(A.sum(1), torch.ones(5))
    assert torch.allclose(A[0], torch.tensor([0.4, 0.15, 0.45, 0.0, 0.0]))
    assert torch.equal(A[3], torch.eye(5)[3]) and torch.equal(A[4], torch.eye(5)[4])
    with pytest.raises(ValueError, match="self_weight"):
        KnowledgeModule(Star(vocabulary=VOCAB), self_weight=1.5)
