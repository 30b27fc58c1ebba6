"""Reading the files of a released image-text matching model: its checkpoint, its vocabulary, its options.

The releases of the field (SCAN, VSE++, GSMN, SGRAF, VSRN, CVSE, VSE-infinity; layouts in
``docs/checkpoints.md``) share one file layout, ``torch.save({'epoch', 'model', 'best_rsum', 'opt',
'Eiters'})``: ``model`` is a list of per-submodule state dicts and ``opt`` the pickled
``argparse.Namespace`` of the training command. This module reads them without running code of the
file's choosing:

- :func:`load_release_checkpoint` uses ``torch.load(weights_only=True)`` with ``argparse.Namespace``
  the only global admitted beyond tensors; anything else (a pickle calling ``os.system``) is refused by
  :class:`~kgitm.core.safe_pickle.UnsafePickleError` naming the file and the global.
- :func:`read_release_vocabulary` reads SCAN's json (``idx2word`` keys are strings) and the VSE++-style
  pickle of ``__main__.Vocabulary`` (through :func:`~kgitm.core.safe_pickle.safe_load`, the class
  replaced by the plain stand-in :class:`PickledVocabulary`).
- :class:`ReleaseOptions` and :class:`ModuleState` make the per-release converters account for every
  option and every state-dict key: an option kgitm cannot honour, an option or key nobody knows, a
  missing key, each is a :class:`ReleaseFormatError` naming it.
"""

from __future__ import annotations

import argparse
import copyreg
import json
import pickle
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
from torch import Tensor

from kgitm.core.io import DataFormatError
from kgitm.core.safe_pickle import UnsafePickleError, refusal, safe_load
from kgitm.core.text import PAD, UNK

__all__ = [
    "ModuleState",
    "PickledVocabulary",
    "ReleaseCheckpoint",
    "ReleaseFormatError",
    "ReleaseOptions",
    "ReleaseVocabulary",
    "fold_weight_norm",
    "load_release_checkpoint",
    "read_release_vocabulary",
]

#: the released vocabularies' first ids (SCAN/VSE++ ``vocab.py``: pad, start, end, unk, then the words)
RELEASE_SPECIALS = ("<pad>", "<start>", "<end>", "<unk>")
#: the keys of a released checkpoint, in the order the releases write them
CHECKPOINT_KEYS = ("epoch", "model", "best_rsum", "opt", "Eiters")


class ReleaseFormatError(DataFormatError):
    """A released file is not what its release writes, or asks for what kgitm cannot do; the message
    names the file, the key or option, and what to do."""


# ------------------------------------------------------------------------------------------ checkpoint


@dataclass
class ReleaseCheckpoint:
    """A released checkpoint, read.

    Attributes:
        path: the file.
        modules: the per-submodule state dicts (``model``), ``module.`` prefixes already stripped.
        options: the training options (``opt``, a plain dict; Python 2 byte strings decoded).
        epoch, best_rsum, iterations: the release's bookkeeping (``epoch``, ``best_rsum``, ``Eiters``),
            kept for the provenance record.
    """

    path: Path
    modules: list[dict[str, Tensor]]
    options: dict[str, Any]
    epoch: Optional[int] = None
    best_rsum: Optional[float] = None
    iterations: Optional[int] = None


_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):  # Python 2 str in a Python 3 read
        return value.decode("utf-8", errors="replace")
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    return value


def strip_data_parallel(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """``state`` with the ``module.`` prefix ``nn.DataParallel`` adds removed from every key that has it."""
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}


def load_release_checkpoint(path: str | Path) -> ReleaseCheckpoint:
    """Read a released checkpoint (zip or legacy format, saved on CUDA or not) onto the CPU.

    Only tensors, plain containers and ``argparse.Namespace`` are unpickled
    (``torch.load(weights_only=True)`` under ``torch.serialization.safe_globals``).

    Raises:
        FileNotFoundError: no such file.
        UnsafePickleError: the file asks for another global (nothing of it is run); the message names
            the file and the global.
        ReleaseFormatError: not a checkpoint of the releases' layout.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    if not hasattr(torch.serialization, "safe_globals"):  # torch < 2.5
        raise RuntimeError(f"{path}: reading released checkpoints safely needs torch >= 2.5 (torch.serialization.safe_globals); "
                           f"this is torch {torch.__version__}")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            raw = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = _GLOBAL.search(str(err))
        if found:
            raise UnsafePickleError(refusal(str(path), found.group(1), "tensors, plain containers and argparse.Namespace")) from None
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ReleaseFormatError(f"{path}: not a readable checkpoint ({first})") from None
    except (RuntimeError, EOFError, ValueError) as err:
        raise ReleaseFormatError(f"{path}: not a readable torch checkpoint ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") from None
    if not isinstance(raw, dict) or "model" not in raw or "opt" not in raw:
        keys = sorted(raw) if isinstance(raw, dict) else type(raw).__name__
        raise ReleaseFormatError(
            f"{path}: expected a released checkpoint, a dict with keys {list(CHECKPOINT_KEYS)}, found {keys}; "
            "a kgitm checkpoint needs no conversion"
        )
    modules = raw["model"]
    if not isinstance(modules, (list, tuple)) or not all(isinstance(m, Mapping) for m in modules):
        raise ReleaseFormatError(f"{path}: 'model' must be a list of per-module state dicts, found {type(modules).__name__}")
    opt = raw["opt"]
    if not isinstance(opt, argparse.Namespace):
        raise ReleaseFormatError(f"{path}: 'opt' must be the training options (argparse.Namespace), found {type(opt).__name__}")
    states = []
    for i, m in enumerate(modules):
        bad = [k for k, v in m.items() if not isinstance(v, Tensor)]
        if bad:
            raise ReleaseFormatError(f"{path}: model[{i}] entry {bad[0]!r} is not a tensor")
        states.append(strip_data_parallel({_plain(k): v for k, v in m.items()}))
    return ReleaseCheckpoint(
        path=path,
        modules=states,
        options={_plain(k): _plain(v) for k, v in vars(opt).items()},
        epoch=raw.get("epoch"),
        best_rsum=float(raw["best_rsum"]) if isinstance(raw.get("best_rsum"), (int, float)) else None,
        iterations=raw.get("Eiters"),
    )


# ------------------------------------------------------------------------------------------ vocabulary


class PickledVocabulary:
    """The plain stand-in for a released ``Vocabulary`` class (``__main__.Vocabulary``,
    ``vocab.Vocabulary``): unpickling fills its ``__dict__`` (``word2idx``, ``idx2word``, ``idx``) and runs
    none of the release's code."""


#: what a vocabulary pickle may reference beyond plain containers
_VOCAB_GLOBALS = {
    ("__main__", "Vocabulary"): PickledVocabulary,
    ("vocab", "Vocabulary"): PickledVocabulary,
    # protocol 0/1 pickles of a new-style class: object.__new__(cls) for the admitted class above
    ("copy_reg", "_reconstructor"): copyreg._reconstructor,
    ("copyreg", "_reconstructor"): copyreg._reconstructor,
    ("__builtin__", "object"): object,
    ("builtins", "object"): object,
}


@dataclass
class ReleaseVocabulary:
    """A released vocabulary: ``words[i]`` is id ``i`` (``<pad>, <start>, <end>, <unk>`` first).

    Attributes:
        path: the file it was read from.
        words: the words in id order.
    """

    path: Path
    words: list[str]

    def __len__(self) -> int:
        return len(self.words)

    def kgitm_order(self) -> tuple[list[str], list[int]]:
        """kgitm's id order of the same words and the row of each in the release's.

        kgitm keeps padding and unknown at ids 0 and 1 (:class:`~kgitm.core.text.Vocabulary`), so the
        release's ``<unk>`` (id 3) moves to 1 and ``<start>``, ``<end>`` to 2, 3; every other word keeps its
        id. A converter permutes the word-embedding rows with the second list (``new[i] = old[rows[i]]``):
        the same word gets the same vector, and the model computes what the release computed.
        """
        index = {w: i for i, w in enumerate(self.words)}
        order = [PAD, UNK, *(w for w in self.words if w not in (PAD, UNK))]
        return order, [index[w] for w in order]


def _vocabulary_words(idx2word: Any, word2idx: Any, size: Any, path: Path) -> list[str]:
    if not isinstance(idx2word, Mapping) or not isinstance(word2idx, Mapping):
        raise ReleaseFormatError(f"{path}: expected word2idx and idx2word mappings")
    try:
        by_id = {int(k): _plain(v) for k, v in idx2word.items()}
    except (TypeError, ValueError):
        raise ReleaseFormatError(f"{path}: idx2word keys must be integer ids (or their strings)") from None
    n = len(by_id)
    if sorted(by_id) != list(range(n)):
        missing = next(i for i in range(n + 1) if i not in by_id)
        raise ReleaseFormatError(f"{path}: idx2word ids must be 0..{n - 1}; id {missing} is missing")
    words = [by_id[i] for i in range(n)]
    for i, w in enumerate(words):
        if not isinstance(w, str) or not w or any(c in w for c in "\r\n"):
            raise ReleaseFormatError(f"{path}: word of id {i} is {w!r}; a word must be a non-empty string without line breaks")
        if int(word2idx.get(w, word2idx.get(w.encode("utf-8"), -1))) != i:
            raise ReleaseFormatError(f"{path}: word2idx[{w!r}] is {word2idx.get(w)!r} but idx2word[{i}] is {w!r}; the file is inconsistent")
    if len(set(words)) != n or len(word2idx) != n:
        raise ReleaseFormatError(f"{path}: word2idx has {len(word2idx)} words, idx2word {n} ({len(set(words))} distinct)")
    if size is not None and int(size) != n:
        raise ReleaseFormatError(f"{path}: idx is {size} but the vocabulary has {n} words")
    if tuple(words[:4]) != RELEASE_SPECIALS:
        raise ReleaseFormatError(f"{path}: the first ids must be {list(RELEASE_SPECIALS)}, found {words[:4]}")
    return words


def read_release_vocabulary(path: str | Path) -> ReleaseVocabulary:
    """Read a released vocabulary: SCAN's ``*_vocab.json`` (``{"word2idx", "idx2word", "idx"}``, ``idx2word``
    keys are strings) or a ``*_vocab.pkl`` pickle of ``Vocabulary`` (VSE++, VSRN, CVSE; Python 2 protocol 2).

    The format is read from the content (a pickle starts with its protocol byte), not the name.

    Raises:
        FileNotFoundError: no such file.
        UnsafePickleError: a pickle asks for a global other than the ``Vocabulary`` class (nothing is run).
        ReleaseFormatError: not a vocabulary of the releases' layout (the message says what differs).
    """
    path = Path(path)
    data = path.read_bytes()
    if data[:1] == b"\x80" or path.suffix == ".pkl":
        obj = safe_load(path, extra=_VOCAB_GLOBALS)
        if not isinstance(obj, PickledVocabulary):
            raise ReleaseFormatError(f"{path}: expected a pickled Vocabulary, found {type(obj).__name__}")
        state = vars(obj)
        return ReleaseVocabulary(path, _vocabulary_words(state.get("idx2word"), state.get("word2idx"), state.get("idx"), path))
    try:
        obj = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ReleaseFormatError(f"{path}: neither a vocabulary pickle nor JSON ({err}); the file may be truncated") from None
    if not isinstance(obj, dict) or "idx2word" not in obj or "word2idx" not in obj:
        raise ReleaseFormatError(f"{path}: expected JSON with word2idx, idx2word and idx (SCAN's vocab.py), found {type(obj).__name__}")
    return ReleaseVocabulary(path, _vocabulary_words(obj["idx2word"], obj["word2idx"], obj.get("idx"), path))


# ------------------------------------------------------------------------------------------ accounting


@dataclass
class ReleaseOptions:
    """The training options of a release, each accounted for by a converter.

    A converter reads the options that change the forward with :meth:`get` (the release parser's
    default when the file predates the option) and names the ones that do not (:meth:`ignore`);
    :meth:`finish` refuses any left over: an option nobody knows may change the forward.

    Args:
        options: the checkpoint's options.
        source: the checkpoint, for the messages.
        allowed_unknown: option names the user declared harmless (``--ignore-option``).
    """

    options: dict[str, Any]
    source: Path
    allowed_unknown: Iterable[str] = ()
    _seen: set[str] = field(default_factory=set)

    def get(self, name: str, default: Any) -> Any:
        self._seen.add(name)
        value = self.options.get(name, default)
        return default if value is None and default is not None else value

    def ignore(self, names: Iterable[str]) -> None:
        self._seen.update(names)

    def refuse(self, name: str, value: Any, why: str) -> ReleaseFormatError:
        return ReleaseFormatError(f"{self.source}: option {name}={value!r}: {why}")

    def finish(self) -> None:
        unknown = sorted(set(self.options) - self._seen - set(self.allowed_unknown))
        if unknown:
            raise ReleaseFormatError(
                f"{self.source}: option {unknown[0]}={self.options[unknown[0]]!r} is not an option of this release "
                f"that kgitm knows{f' (also: {unknown[1:]})' if len(unknown) > 1 else ''}; if it does not change the "
                f"forward pass, pass --ignore-option {unknown[0]}"
            )


class ModuleState:
    """One released submodule's state dict, consumed key by key: :meth:`take` a key that must be there,
    :meth:`finish` to refuse what is left.

    Args:
        state: the submodule's state dict (``module.`` prefixes stripped).
        name: how the release calls the submodule (``img_enc``), for the messages.
        source: the checkpoint, for the messages.
    """

    def __init__(self, state: Mapping[str, Tensor], name: str, source: Path) -> None:
        self._state = dict(state)
        self.name = name
        self.source = source

    def has(self, key: str) -> bool:
        return key in self._state

    def keys(self) -> list[str]:
        return list(self._state)

    def peek(self, key: str) -> Optional[Tensor]:
        """``key``'s tensor, left in place (``None`` when absent): to read a size before taking the keys."""
        return self._state.get(key)

    def take(self, key: str, shape: Optional[tuple[Optional[int], ...]] = None) -> Tensor:
        """Remove and return ``key``; ``shape`` (``None`` entries free) is checked."""
        if key not in self._state:
            raise ReleaseFormatError(
                f"{self.source}: missing key {self.name}.{key} (the {self.name} state dict has {sorted(self._state)[:8]}"
                f"{' ...' if len(self._state) > 8 else ''})"
            )
        value = self._state.pop(key)
        if shape is not None and (value.dim() != len(shape) or any(s is not None and s != t for s, t in zip(shape, value.shape))):
            want = tuple("*" if s is None else s for s in shape)
            raise ReleaseFormatError(f"{self.source}: key {self.name}.{key} has shape {tuple(value.shape)}, expected {want}")
        return value

    def finish(self) -> None:
        if self._state:
            extra = sorted(self._state)
            raise ReleaseFormatError(
                f"{self.source}: unexpected key {self.name}.{extra[0]}{f' (and {len(extra) - 1} more)' if len(extra) > 1 else ''}; "
                "the checkpoint holds weights this conversion would drop (another release, or options it does not record)"
            )


def open_release(
    checkpoint: ReleaseCheckpoint, release: str, modules: tuple[str, ...], *, training_options: Iterable[str],
    ignore_options: Iterable[str] = (),
) -> tuple[ReleaseOptions, list[ModuleState]]:
    """The start of every converter: the release's options (training-only ones set aside) and its
    submodules' state dicts, named as the release saves them (``("img_enc", "txt_enc")``).

    Raises:
        ReleaseFormatError: the checkpoint holds another number of state dicts than ``modules``.
    """
    src = checkpoint.path
    opt = ReleaseOptions(checkpoint.options, src, ignore_options)
    opt.ignore(tuple(training_options))
    if len(checkpoint.modules) != len(modules):
        raise ReleaseFormatError(
            f"{src}: {release} saves [{', '.join(modules)}]; this checkpoint has {len(checkpoint.modules)} state dicts"
        )
    return opt, [ModuleState(s, n, src) for s, n in zip(checkpoint.modules, modules)]


def fold_weight_norm(state: ModuleState, name: str, *, dim: Optional[int]) -> Optional[Tensor]:
    """The weight of a ``nn.utils.weight_norm`` layer ``name`` as one tensor, ``W = g v / ||v||``, or
    ``None`` when the layer has no weight-norm keys.

    Reads ``name.weight_g``/``name.weight_v`` (the releases) or ``name.parametrizations.weight.original0/1``
    (``torch.nn.utils.parametrizations.weight_norm``). ``dim=None`` is one norm over the whole tensor
    (``g`` a scalar: SCAN's ``--precomp_enc_type weight_norm``); ``dim=0`` one norm per output row
    (GSMN's ``out_1``/``out_2``). At inference the folded layer computes exactly what the release's did.
    """
    for g_key, v_key in ((f"{name}.weight_g", f"{name}.weight_v"),
                         (f"{name}.parametrizations.weight.original0", f"{name}.parametrizations.weight.original1")):
        if state.has(g_key) or state.has(v_key):
            g, v = state.take(g_key), state.take(v_key)
            if dim is None:
                if g.numel() != 1:
                    raise ReleaseFormatError(f"{state.source}: key {state.name}.{g_key} has shape {tuple(g.shape)}, expected a scalar (weight_norm dim=None)")
                return v * (g.reshape(()) / v.norm())
            dims = [d for d in range(v.dim()) if d != dim]
            return v * (g / v.norm(dim=dims, keepdim=True))
    return None
