"""Compatibility alias: the restricted unpickler lives in :mod:`kgitm.core.safe_pickle` (the converters of
released checkpoints read vocabulary pickles with it too)."""

from kgitm.core.safe_pickle import ALLOWED_GLOBALS, CorruptPickleError, UnsafePickleError, safe_load, safe_loads

__all__ = ["ALLOWED_GLOBALS", "CorruptPickleError", "UnsafePickleError", "safe_load", "safe_loads"]
