"""Restricted pickle loading for released files (CVSE concept graphs, released vocabularies).

``pickle.load`` runs whatever code a file asks for, so the project never calls it on files it did not
write itself. :func:`safe_load` uses an unpickler whose ``find_class`` allows only what numpy arrays
and plain containers need (:data:`ALLOWED_GLOBALS`), plus whatever named stand-ins a caller adds with
``extra`` (a released ``__main__.Vocabulary`` read as a plain attribute holder,
:mod:`kgitm.convert.release`); any other global is refused with :class:`UnsafePickleError` before it
is imported, and a truncated or garbled file raises :class:`CorruptPickleError`. Both name the file.
"""

from __future__ import annotations

import _codecs
import builtins
import io
import pickle
from pathlib import Path
from collections.abc import Mapping
from typing import Any, Optional

import numpy as np

try:  # numpy >= 2 keeps the implementation in numpy._core; numpy.core is a deprecated alias
    from numpy._core import multiarray as _multiarray
    from numpy._core import numeric as _numeric
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core import multiarray as _multiarray  # type: ignore[no-redef]
    from numpy.core import numeric as _numeric  # type: ignore[no-redef]

__all__ = ["ALLOWED_GLOBALS", "CorruptPickleError", "UnsafePickleError", "refusal", "safe_load", "safe_loads"]

#: ``(module, name)`` pairs the unpickler may resolve, and what each resolves to. ``_reconstruct``,
#: ``ndarray`` and ``dtype`` are what numpy arrays need (the CVSE files use nothing else);
#: ``_frombuffer`` is how numpy writes arrays in protocol-5 pickles (it only wraps a byte buffer);
#: ``_codecs.encode`` is how Python 3 writes ``bytes`` in protocol-2 pickles; the builtins are plain
#: data constructors. None of them can import a module or call arbitrary code.
ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _multiarray._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _multiarray._reconstruct,
    ("numpy.core.numeric", "_frombuffer"): _numeric._frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _numeric._frombuffer,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _codecs.encode,
    ("builtins", "set"): builtins.set,
    ("builtins", "frozenset"): builtins.frozenset,
    ("builtins", "complex"): builtins.complex,
    ("builtins", "bytearray"): builtins.bytearray,
    ("__builtin__", "set"): builtins.set,  # Python 2 pickles
    ("__builtin__", "frozenset"): builtins.frozenset,
}


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle asked for a global outside :data:`ALLOWED_GLOBALS`."""


class CorruptPickleError(pickle.UnpicklingError):
    """A file is not a readable pickle (truncated, garbled, or not a pickle at all)."""


def refusal(source: str, global_name: str, accepted: str = "numpy arrays and plain containers") -> str:
    """The one-line message of a refused global (shared with the checkpoint reader of
    :mod:`kgitm.convert.release`, whose pickles go through ``torch.load(weights_only=True)``)."""
    return (
        f"{source}: refused to load global {global_name}; only {accepted} are accepted "
        "(a pickle can run arbitrary code: do not load files you do not trust)"
    )


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: io.BufferedIOBase, source: str, extra: Mapping[tuple[str, str], Any]) -> None:
        super().__init__(file, encoding="latin1")
        self._source = source
        self._extra = extra

    def find_class(self, module: str, name: str) -> Any:
        found = self._extra.get((module, name), ALLOWED_GLOBALS.get((module, name)))
        if found is None:
            extra = ", ".join(sorted({f"{m}.{n}" for m, n in self._extra}))
            raise UnsafePickleError(refusal(self._source, f"{module}.{name}", "numpy arrays, plain containers" + (f" and {extra}" if extra else "")))
        return found


def _load(file: io.BufferedIOBase, source: str, extra: Optional[Mapping[tuple[str, str], Any]] = None) -> Any:
    try:
        return _RestrictedUnpickler(file, source, extra or {}).load()
    except UnsafePickleError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError,
            AttributeError, UnicodeDecodeError, OverflowError) as exc:
        raise CorruptPickleError(
            f"{source}: not a valid pickle ({type(exc).__name__}: {exc}); the file is truncated or corrupt, "
            "download it again"
        ) from exc


def safe_load(path: str | Path, *, extra: Optional[Mapping[tuple[str, str], Any]] = None) -> Any:
    """Load a pickle file that may only contain numpy arrays and plain Python containers.

    Args:
        path: the ``.pkl`` file.
        extra: further ``(module, name) -> object`` globals to admit (default none), e.g. a plain
            stand-in class for a released file's ``__main__.Vocabulary``. Only classes whose
            construction runs no code of the file's choosing belong here.

    Returns:
        The unpickled object (strings decoded as latin-1, as Python 2-era numpy pickles need).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        UnsafePickleError: the pickle references any other global (nothing is imported or run).
        CorruptPickleError: the file is not a readable pickle.
    """
    path = Path(path)
    with path.open("rb") as f:
        return _load(f, str(path), extra)


def safe_loads(data: bytes, *, source: str = "<bytes>", extra: Optional[Mapping[tuple[str, str], Any]] = None) -> Any:
    """:func:`safe_load` for in-memory bytes; ``source`` names them in error messages."""
    return _load(io.BytesIO(data), source, extra)
