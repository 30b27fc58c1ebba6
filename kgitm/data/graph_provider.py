"""Per-caption and per-image graph structure for the data module, read from the stores written by
``kgitm preprocess`` (never parsed on the fly: a missing or stale store is an error that says how to
build it).

Caption sets map to store folders: a split ``S`` to ``<store>/S/text`` (checked against
``<data>/S_caps.txt``) and a diagnostic set ``N`` to ``<store>/diagnostics/N/text`` (checked against
``<data>/diagnostics/N_caps.txt``); visual scene graphs of split ``S`` live in ``<store>/S/visual``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from kgitm.data.precomp import DataFormatError
from kgitm.graphs.store import GraphStore, VisualGraphStore


class GraphProvider:
    """Lazily opens graph stores and serves the structure of single captions and images.

    Args:
        store_root: the ``--out`` folder of ``kgitm preprocess``.
        data_root: the data folder the stores were built from.
        splits: names of the data splits (everything else is looked up under ``diagnostics/``).
    """

    def __init__(self, store_root: Path, *, data_root: Path, splits: tuple[str, ...]) -> None:
        self.store_root = Path(store_root)
        self.data_root = Path(data_root)
        self.splits = splits
        self._text: dict[str, GraphStore] = {}
        self._visual: dict[str, VisualGraphStore] = {}

    def _locate(self, name: str) -> tuple[Path, Path, str]:
        rel = name if name in self.splits else f"diagnostics/{name}"
        return self.store_root / rel / "text", self.data_root / f"{rel}_caps.txt", rel

    def text_store(self, name: str) -> GraphStore:
        if name not in self._text:
            folder, source, rel = self._locate(name)
            if not folder.exists():
                raise DataFormatError(
                    f"{folder}: no caption graph store for {name!r}; build it with "
                    f"`kgitm preprocess --data-root {self.data_root} --splits {rel} --out {self.store_root}`"
                )
            self._text[name] = GraphStore.load(folder, source_file=source)
        return self._text[name]

    def visual_store(self, split: str) -> VisualGraphStore:
        if split not in self._visual:
            folder = self.store_root / split / "visual"
            source = self.data_root / f"{split}_scene_graphs.json"
            if not folder.exists():
                raise DataFormatError(
                    f"{folder}: no visual scene-graph store for split {split!r}; build it with "
                    f"`kgitm preprocess --data-root {self.data_root} --splits {split} --out {self.store_root}` "
                    f"(needs {source})"
                )
            self._visual[split] = VisualGraphStore.load(folder, source_file=source)
        return self._visual[split]

    def caption(self, name: str, index: int, num_tokens: int, *, scene_graph: bool) -> dict:
        """``{"adjacency": (n, n) bool, "parsed": ParsedCaption | None}`` for caption ``index`` of set ``name``."""
        store = self.text_store(name)
        stored = int(store.num_tokens[index])
        if stored < num_tokens:
            raise DataFormatError(
                f"{store.path if hasattr(store, 'path') else name}: caption {index} has {stored} tokens in the graph store "
                f"but {num_tokens} in the caption file; rebuild the store with `kgitm preprocess ... --overwrite`"
            )
        adj = store.dependency_adjacency(torch.tensor([index]), max_len=num_tokens)[0]
        return {"adjacency": adj, "parsed": store[index] if scene_graph else None}

    def image(self, split: str, index: int) -> Optional[object]:
        return self.visual_store(split)[index]
