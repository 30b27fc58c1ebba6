"""Text and image encoders: output shapes and masks, and the transformer encoder's sub-word pooling
against a plain per-word loop (graph nodes must stay project words)."""

from __future__ import annotations

import pytest
import torch

from kgitm.core.text import Vocabulary
from kgitm.encoders.image import RegionEncoder
from kgitm.encoders.text import BiGRUTextEncoder, TransformerTextEncoder, resolve_pretrained
from kgitm.pipeline.dataset import make_batch

CAPTIONS = ["A skateboarder grinds the handrail.", "two dogs", "an unbelievably photogenic hippopotamus wading"]


def _batch(captions: list[str], transforms=()):
    vocab = Vocabulary.build(captions)
    return make_batch(torch.randn(len(captions), 3, 8), captions, vocab, transforms=transforms)


def test_bigru_and_regions_shapes_and_masks():
    b = _batch(CAPTIONS)
    caps = BiGRUTextEncoder(vocab_size=20, word_dim=6, embed_dim=10)(b.captions)
    assert caps.features.shape == (3, 5, 10)
    assert torch.all(caps.features[1, 2:] == 0) and torch.equal(caps.mask, b.captions.word_mask)
    imgs = RegionEncoder(feature_dim=8, embed_dim=10)(b.images)
    assert imgs.features.shape == (3, 3, 10)
    assert torch.allclose(imgs.features.norm(dim=-1), torch.ones(3, 3), atol=1e-5)


def test_transformer_pools_subwords_into_words():
    try:
        resolve_pretrained("all-MiniLM-L6-v2")
    except RuntimeError as e:
        pytest.skip(str(e))
    torch.manual_seed(0)
    enc = TransformerTextEncoder(model="all-MiniLM-L6-v2", embed_dim=12, normalize=False).eval()
    b = _batch(CAPTIONS, transforms=enc.caption_transforms())
    with torch.no_grad():
        out = enc(b.captions)
        # reference: tokenize the batch at once, run the model, then average each word's pieces one word at a time
        tok = enc.tokenizer(b.captions.words, is_split_into_words=True, padding=True, return_tensors="pt")
        hidden = enc.model(**tok).last_hidden_state
        for i, words in enumerate(b.captions.words):
            ids = tok.word_ids(i)
            assert i == 1 or any(ids.count(j) > 1 for j in range(len(words)))  # real sub-word splits
            for j in range(len(words)):
                pieces = [p for p, w in enumerate(ids) if w == j]
                ref = enc.proj(hidden[i, pieces].mean(0))
                assert torch.allclose(out.features[i, j], ref, atol=1e-5), (i, j, words[j])
            assert torch.all(out.features[i, len(words):] == 0)


def test_missing_pretrained_model_is_a_clear_error():
    with pytest.raises(RuntimeError, match="never downloaded"):
        resolve_pretrained("bert-base-uncased")


def test_transformer_encoder_needs_its_pieces_from_the_pipeline():
    try:
        resolve_pretrained("all-MiniLM-L6-v2")
    except RuntimeError as e:
        pytest.skip(str(e))
    enc = TransformerTextEncoder(model="all-MiniLM-L6-v2", embed_dim=12)
    with pytest.raises(ValueError, match="caption_transforms"):
        enc(_batch(CAPTIONS).captions)  # no transforms: no pieces


def _regions(b: int = 3, r: int = 5, f: int = 8, *, seed: int = 0):
    from kgitm.core.batch import ImageInputs

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, r, f, generator=g)
    mask = torch.arange(r)[None] < torch.tensor([r, 2, 4])[:b, None]
    x[~mask] = 0.0
    return ImageInputs(features=x, region_mask=mask)


def test_residual_mlp_branch_is_vse_infinitys_precomp_encoder():
    """``fc(x) + MLP(x)`` with MLP = Linear -> BN -> ReLU -> Linear, BN statistics over the valid regions
    only (garbage in padding changes nothing, in training mode too); the release's key names."""
    torch.manual_seed(0)
    enc = RegionEncoder(feature_dim=8, embed_dim=10, normalize=False, residual_mlp=True).train()
    images = _regions()
    out = enc(images)
    assert {k: tuple(v.shape) for k, v in enc.state_dict().items() if "running" not in k and "tracked" not in k} == {
        "fc.weight": (10, 8), "fc.bias": (10,),
        "mlp.layers.0.weight": (5, 8), "mlp.layers.0.bias": (5,), "mlp.layers.1.weight": (10, 5), "mlp.layers.1.bias": (10,),
        "mlp.bns.0.weight": (5,), "mlp.bns.0.bias": (5,),
    }
    # reference: the valid regions as one (V, F) batch, batch norm written out
    x = images.features[images.region_mask]
    h = enc.mlp.layers[0](x)
    h = (h - h.mean(0)) / torch.sqrt(h.var(0, unbiased=False) + enc.mlp.bns[0].eps) * enc.mlp.bns[0].weight + enc.mlp.bns[0].bias
    ref = enc.fc(x) + enc.mlp.layers[1](h.relu())
    torch.testing.assert_close(out.features[images.region_mask], ref, atol=1e-5, rtol=0)
    assert torch.all(out.features[~images.region_mask] == 0)
    assert not torch.allclose(out.features.norm(dim=-1)[images.region_mask], torch.ones(()))  # normalize=False
    noisy = images.features.clone()
    noisy[~images.region_mask] = 100.0
    from kgitm.core.batch import ImageInputs

    again = enc(ImageInputs(features=noisy, region_mask=images.region_mask))
    torch.testing.assert_close(again.features, out.features, atol=1e-6, rtol=0)
    assert RegionEncoder(8, 10, residual_mlp=True, mlp_hidden_dim=7).mlp.layers[0].out_features == 7
    assert RegionEncoder(8, 10).mlp is None and "mlp.layers.0.weight" not in RegionEncoder(8, 10).state_dict()


def test_bigru_averages_the_two_directions():
    """VSE-infinity's (and SCAN's) text side: each word is (forward + backward) / 2 of a bi-GRU run on the
    caption alone; with ``normalize=False`` the words are left unnormalised for the pooling."""
    b = _batch(CAPTIONS)
    torch.manual_seed(0)
    enc = BiGRUTextEncoder(vocab_size=20, word_dim=6, embed_dim=10, normalize=False).eval()
    with torch.no_grad():
        out = enc(b.captions)
        for i, n in enumerate(b.captions.lengths.tolist()):
            states, _ = enc.gru(enc.embed(b.captions.token_ids[i : i + 1, :n]))
            ref = (states[0, :, :10] + states[0, :, 10:]) / 2
            torch.testing.assert_close(out.features[i, :n], ref, atol=1e-6, rtol=0)
