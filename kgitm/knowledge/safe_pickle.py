"""Restricted pickle loading for released data files (the CVSE concept graphs).

``pickle.load`` runs whatever code a file asks for, so the project never calls it on files it did not
write itself. :func:`safe_load` uses an unpickler whose ``find_class`` allows only what numpy arrays
and plain containers need; any other global is refused with :class:`UnsafePickleError` before it is
imported, and a truncated or garbled file raises :class:`CorruptPickleError`. Both name the file.
"""

from __future__ import annotations

import _codecs
import builtins
import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

try:  # numpy >= 2 keeps the implementation in numpy._core; numpy.core is a deprecated alias
    from numpy._core import multiarray as _multiarray
    from numpy._core import numeric as _numeric
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core import multiarray as _multiarray  # type: ignore[no-redef]
    from numpy.core import numeric as _numeric  # type: ignore[no-redef]

__all__ = ["ALLOWED_GLOBALS", "CorruptPickleError", "UnsafePickleError", "safe_load", "safe_loads"]

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


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: io.BufferedIOBase, source: str) -> None:
        super().__init__(file, encoding="latin1")
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"{self._source}: refused to load global {module}.{name}; only numpy arrays and plain "
                "containers are accepted (a pickle can run arbitrary code: do not load files you do not trust)"
            ) from None


def _load(file: io.BufferedIOBase, source: str) -> Any:
    try:
        return _RestrictedUnpickler(file, source).load()
    except UnsafePickleError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError,
            AttributeError, UnicodeDecodeError, OverflowError) as exc:
        raise CorruptPickleError(
            f"{source}: not a valid pickle ({type(exc).__name__}: {exc}); the file is truncated or corrupt, "
            "download it again"
        ) from exc


def safe_load(path: str | Path) -> Any:
    """Load a pickle file that may only contain numpy arrays and plain Python containers.

    Args:
        path: the ``.pkl`` file.

    Returns:
        The unpickled object (strings decoded as latin-1, as Python 2-era numpy pickles need).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        UnsafePickleError: the pickle references any other global (nothing is imported or run).
        CorruptPickleError: the file is not a readable pickle.
    """
    path = Path(path)
    with path.open("rb") as f:
        return _load(f, str(path))


def safe_loads(data: bytes, *, source: str = "<bytes>") -> Any:
    """:func:`safe_load` for in-memory bytes; ``source`` names them in error messages."""
    return _load(io.BytesIO(data), source)
