"""Text and image encoders: output shapes and masks, and the transformer encoder's sub-word pooling
against a plain per-word loop (graph nodes must stay project words)."""

from __future__ import annotations

import pytest
import torch

from kgitm.data.datamodule import collate
from kgitm.data.text import tokenize
from kgitm.encoders.image import RegionEncoder
from kgitm.encoders.text import BiGRUTextEncoder, TransformerTextEncoder, resolve_pretrained

CAPTIONS = ["A skateboarder grinds the handrail.", "two dogs", "an unbelievably photogenic hippopotamus wading"]


def _batch(captions: list[str]) -> dict:
    items = []
    for i, c in enumerate(captions):
        words = tokenize(c)
        items.append(
            {"image": torch.randn(3, 8), "image_index": i, "caption_index": i, "words": words,
             "token_ids": torch.arange(1, len(words) + 1)}
        )
    return collate(items)


def test_bigru_and_regions_shapes_and_masks():
    b = _batch(CAPTIONS)
    caps = BiGRUTextEncoder(vocab_size=20, word_dim=6, embed_dim=10)(b)
    assert caps.features.shape == (3, 5, 10)
    assert torch.all(caps.features[1, 2:] == 0) and torch.equal(caps.mask, b["word_mask"])
    imgs = RegionEncoder(feature_dim=8, embed_dim=10)(b)
    assert imgs.features.shape == (3, 3, 10)
    assert torch.allclose(imgs.features.norm(dim=-1), torch.ones(3, 3), atol=1e-5)


def test_transformer_pools_subwords_into_words():
    try:
        resolve_pretrained("all-MiniLM-L6-v2")
    except RuntimeError as e:
        pytest.skip(str(e))
    torch.manual_seed(0)
    enc = TransformerTextEncoder(model="all-MiniLM-L6-v2", embed_dim=12, normalize=False).eval()
    b = _batch(CAPTIONS)
    with torch.no_grad():
        out = enc(b)
        # reference: run the model, then average each word's pieces one word at a time
        tok = enc.tokenizer(b["words"], is_split_into_words=True, padding=True, return_tensors="pt")
        hidden = enc.model(**tok).last_hidden_state
        for i, words in enumerate(b["words"]):
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
