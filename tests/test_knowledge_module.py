"""The knowledge module in the matchers: word->concept assignment against a loop, concept attachment,
CVSE-style consensus with labels from the caption alone, fused scores, block-wise parity, and node
features from the text encoder's word embeddings against a hand-computed mean."""

from __future__ import annotations

import json

import pytest
import torch

from kgitm.encoders.text import BiGRUTextEncoder
from kgitm.eval.similarity import compute_similarity
from kgitm.knowledge import NoKnowledge
from kgitm.core.functional import l2norm
from kgitm.core.types import EncodedCaptions, EncodedImages
from kgitm.knowledge.module import KnowledgeModule
from kgitm.matchers.fused import KnowledgeFusedMatcher
from kgitm.matchers.scan import SCANMatcher

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


def _ids(k: KnowledgeModule, words: list[list[str]], width: int = 5) -> torch.Tensor:
    """The concept ids the data pipeline computes for these captions (``(M, width, K)``)."""
    index = k.concept_index()
    return index.collate([index.encode(w) for w in words], width)


def test_word_concepts_match_a_loop():
    k = _module()
    got = k.word_concepts(_ids(k, WORDS))
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
    out = k.augment_captions(caps, _ids(k, WORDS))
    has = k.word_concepts(_ids(k, WORDS)).sum(-1) > 0
    assert torch.equal(out.features[~has], caps.features[~has])
    assert not torch.allclose(out.features[has], caps.features[has])
    assert torch.isfinite(out.features).all() and torch.equal(out.mask, caps.mask)
    img = k.augment_images(images)
    assert torch.isfinite(img.features).all()
    assert img.features[0, -1].abs().sum() == 0  # a padded region stays padding


def test_consensus_labels_come_from_the_caption_alone():
    k = _module("consensus")
    images, caps = _data(WORDS)
    base = k.consensus_similarity(images, k.augment_captions(caps, _ids(k, WORDS)))
    other = [WORDS[0], ["a", "dog", "and", "a", "car"], WORDS[2]]  # another caption changes ...
    changed = k.consensus_similarity(images, k.augment_captions(caps, _ids(k, other)))
    assert torch.allclose(base[:, 0], changed[:, 0]) and torch.allclose(base[:, 2], changed[:, 2])  # ... only itself
    assert not torch.allclose(base[:, 1], changed[:, 1])


def test_fused_score_and_block_parity():
    k = _module("consensus")
    images, caps = _data(WORDS * 3)
    caps = k.augment_captions(caps, _ids(k, WORDS * 3))
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
    # run folders: their results_<split>.json
    run = tmp_path / "run"
    run.mkdir()
    (run / "results_test.json").write_text(json.dumps({"name": "r", "results": {"i2t_r1": 1.0, "rsum": 123.25}}))
    main(["compare", str(run), files[0]])
    assert "123.2" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="no results_dev.json .*it has results_test.json"):
        main(["compare", str(run), "--split", "dev"])


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


# ---- node features from the text encoder's word embeddings ------------------------------------

WORDS_IDS = ["<pad>", "<unk>", "dog", "hot", "ride", "red", "car", "man"]  # id order, as the data module links them
CONCEPTS = ["dog", "hot_dog", "zebra", "zebra_car", "ride"]  # multi-word, unknown, partly unknown


def _text_bound(caplog=None) -> tuple[KnowledgeModule, BiGRUTextEncoder]:
    torch.manual_seed(0)
    enc = BiGRUTextEncoder(len(WORDS_IDS), word_dim=6, embed_dim=D, vocab_words=WORDS_IDS)
    k = KnowledgeModule(NoKnowledge(vocabulary=CONCEPTS), node_features="text_encoder", hidden_dim=12)
    k.bind(D, text_encoder=enc)
    return k, enc


def test_text_encoder_features_are_the_mean_of_the_name_tokens_rows(caplog):
    with caplog.at_level("WARNING", logger="kgitm.knowledge.module"):
        k, enc = _text_bound()
    E, idx = enc.embed.weight, {w: i for i, w in enumerate(WORDS_IDS)}
    ref = torch.stack([
        E[idx["dog"]],
        (E[idx["hot"]] + E[idx["dog"]]) / 2,
        k.unknown_embedding.weight[0],  # "zebra": no known token -> its learned vector
        E[idx["car"]],  # "zebra_car": the known token only
        E[idx["ride"]],
    ])
    assert torch.allclose(k.concept_features(), ref)
    assert k.gcn1.in_features == 6  # the GCN's first layer maps the encoder's word size
    assert k.unknown_concepts == ["zebra"] and k.num_unknown_concepts == 1
    assert "1 of 5 concept names" in caplog.text and "zebra" in caplog.text
    feats, known = enc.embed_words(CONCEPTS)
    assert known.tolist() == [True, True, False, True, True] and torch.all(feats[2] == 0)


def test_text_encoder_features_train_with_the_encoder_embedding_table():
    k, enc = _text_bound()
    target = torch.randn(len(CONCEPTS), D, generator=torch.Generator().manual_seed(2))
    (k.concept_embeddings() * target).sum().backward()
    grad = enc.embed.weight.grad
    used = [WORDS_IDS.index(w) for w in ("dog", "hot", "ride", "car")]
    assert torch.all(grad[used].abs().sum(-1) > 0)
    unused = [i for i in range(len(WORDS_IDS)) if i not in used]  # padding, unknown, red, man
    assert torch.all(grad[unused] == 0)
    assert k.unknown_embedding.weight.grad.abs().sum() > 0
    with torch.no_grad():  # tied, not copied: a changed table changes the concept features
        enc.embed.weight[WORDS_IDS.index("dog")] += 1.0
    assert torch.allclose(k.concept_features()[0], enc.embed.weight[WORDS_IDS.index("dog")])
    # the encoder is not registered inside the knowledge module: its table is saved and trained once
    assert not any(p is enc.embed.weight for p in k.parameters())


def test_text_encoder_features_need_the_encoder_and_its_words():
    k = KnowledgeModule(NoKnowledge(vocabulary=CONCEPTS), node_features="text_encoder")
    with pytest.raises(ValueError, match="needs a text encoder"):
        k.bind(D)
    with pytest.raises(ValueError, match="vocab_words"):
        k.bind(D, text_encoder=BiGRUTextEncoder(len(WORDS_IDS), word_dim=6, embed_dim=D))
    with pytest.raises(ValueError, match="vocab_size"):
        BiGRUTextEncoder(3, vocab_words=WORDS_IDS)


def test_text_encoder_features_from_the_transformer_average_sub_word_pieces():
    from kgitm.encoders.text import TransformerTextEncoder, resolve_pretrained

    try:
        resolve_pretrained("all-MiniLM-L6-v2")
    except RuntimeError as e:
        pytest.skip(str(e))
    enc = TransformerTextEncoder(model="all-MiniLM-L6-v2", embed_dim=D)
    concepts = ["hippopotamus", "hot_dog", "dog"]
    k = KnowledgeModule(NoKnowledge(vocabulary=concepts), node_features="text_encoder", hidden_dim=12)
    k.bind(D, text_encoder=enc)
    table = enc.model.get_input_embeddings().weight
    for c, got in zip(concepts, k.concept_features()):
        ids = enc.tokenizer(c.replace("_", " "), add_special_tokens=False)["input_ids"]
        assert c != "hippopotamus" or len(ids) > 1  # a real sub-word split
        assert torch.allclose(got, table[ids].mean(0), atol=1e-6), c
    assert k.num_unknown_concepts == 0 and k.gcn1.in_features == enc.word_dim
