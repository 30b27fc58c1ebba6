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
