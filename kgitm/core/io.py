"""File helpers used by every job: one atomic writer, one sha256, stable JSON, the line reader.

Everything kgitm writes goes through :func:`atomic_open` (directly or through the ``atomic_write_*``
shortcuts): the bytes go to a temporary file in the destination's folder, are flushed to disk, and
the file then replaces the destination with :func:`os.replace`. A reader never sees a half-written
file and an interrupted job leaves the previous file (or none) in place, never a truncated one.
"""

from __future__ import annotations

import hashlib
import inspect
import io
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np

__all__ = [
    "DataFormatError",
    "atomic_open",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_npy",
    "atomic_write_text",
    "code_fingerprint",
    "file_fingerprint",
    "json_text",
    "read_lines",
    "sha256_file",
]


class DataFormatError(ValueError):
    """An input file does not have the expected layout; the message names the file (and line or
    index), what was expected and what was found, and the fix."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", *, encoding: str | None = None) -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path`` for writing; on a clean exit it replaces ``path``.

    The file is flushed and fsync'ed before the rename. It gets the destination's permissions when the
    destination exists, else the usual ``0666 & ~umask`` (``mkstemp`` alone would make it private).
    On an exception the temporary file is removed and ``path`` is left as it was. Missing parent
    folders are created.

    Args:
        path: the destination.
        mode: ``"wb"`` (default) or ``"w"`` (text, UTF-8 unless ``encoding`` says otherwise).
        encoding: text encoding for ``mode="w"``.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_open writes whole files: mode must be 'wb' or 'w', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        kwargs = {} if mode == "wb" else {"encoding": encoding or "utf-8", "newline": ""}
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (:func:`atomic_open`)."""
    with atomic_open(path, "wb") as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"object of type {type(obj).__name__} is not JSON serialisable")


def json_text(obj: Any) -> str:
    """Stable JSON: sorted keys, two-space indent, UTF-8 characters kept, trailing newline, so the same
    object always gives the same bytes. NumPy scalars and arrays are converted; NaN and infinity are
    refused (strict JSON)."""
    return json.dumps(obj, sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False, default=_json_default) + "\n"


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as :func:`json_text` atomically; returns the path.

    Raises:
        ValueError: ``obj`` holds NaN or infinity (the message names the file).
    """
    try:
        text = json_text(obj)
    except ValueError as err:
        raise ValueError(f"{path}: cannot write non-finite numbers as JSON ({err})") from err
    atomic_write_text(path, text)
    return Path(path)


def atomic_write_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    """A ``.npy`` file (no pickled objects), written atomically and streamed (no second copy in memory)."""
    with atomic_open(path, "wb") as f:
        np.save(f, np.ascontiguousarray(array), allow_pickle=False)


def sha256_file(path: str | os.PathLike, *, block: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


def read_lines(path: str | os.PathLike, *, what: str = "caption") -> list[str]:
    """One item per line (UTF-8, trailing newline and ``\\r`` stripped; blank lines kept, so line ``i``
    stays item ``i``).

    Args:
        path: the file (``{split}_caps.txt``, ``{split}_ids.txt``, ...).
        what: what a line holds, for the error messages (default ``"caption"``).

    Raises:
        DataFormatError: the file is missing, empty, or not valid UTF-8 (naming the line).
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataFormatError(f"{path}: {what} file not found") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataFormatError(f"{path}:{line}: not valid UTF-8 (byte {e.start}); re-encode the file as UTF-8") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    lines = [ln.rstrip("\r") for ln in lines]
    if not lines:
        raise DataFormatError(f"{path}: empty {what} file; expected one {what} per line")
    return lines


def savefig_atomic(fig: Any, path: str | os.PathLike, **kwargs: Any) -> None:
    """``fig.savefig`` into ``path`` atomically (the format from the file name's suffix)."""
    buf = io.BytesIO()
    fig.savefig(buf, format=Path(path).suffix.lstrip(".") or "png", **kwargs)
    atomic_write_bytes(path, buf.getvalue())


def code_fingerprint(*modules: str) -> str:
    """Hash of the source code of ``modules`` (imported module names), recorded in the provenance of
    artifacts (graph stores, cached concept graphs) so that one built by other code is not read back."""
    h = hashlib.sha256()
    for name in modules:
        try:
            h.update(inspect.getsource(sys.modules[name]).encode())
        except (KeyError, OSError, TypeError):
            h.update(name.encode())
    return h.hexdigest()[:16]


def file_fingerprint(path: str | os.PathLike) -> dict[str, Any]:
    """What identifies an input file cheaply: its resolved path, size and modification time."""
    st = Path(path).stat()
    return {"path": str(Path(path).resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def cache_dir(*parts: str) -> Path:
    """kgitm's cache folder ``$KGITM_CACHE_DIR`` (default ``~/.cache/kgitm``), joined with ``parts``."""
    root = os.environ.get("KGITM_CACHE_DIR") or Path.home() / ".cache" / "kgitm"
    return Path(root).joinpath(*parts)
