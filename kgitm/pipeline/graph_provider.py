"""Per-caption and per-image graph structure for the data pipeline, read from the stores written by
``kgitm preprocess`` (never parsed on the fly: a missing or stale store is an error that says how to
build it).

Caption sets map to store folders: a split ``S`` to ``<store>/S/text`` (checked against
``<data>/S_caps.txt``) and a diagnostic set ``N`` to ``<store>/diagnostics/N/text`` (checked against
``<data>/diagnostics/N_caps.txt``); visual scene graphs of split ``S`` live in ``<store>/S/visual``
(the oracle, ``S_scene_graphs.json``) and ``<store>/S/visual_{name}`` (predicted, ``S_scene_graphs_{name}.json``).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from kgitm.core.io import DataFormatError
from kgitm.graphs.preprocess import ORACLE, scene_graph_sources, visual_store_folder
from kgitm.graphs.scene_graph_json import VisualSceneGraph
from kgitm.graphs.store import GraphStore, VisualGraphStore
from kgitm.graphs.types import ParsedCaption


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
        self._visual: dict[tuple[str, str], VisualGraphStore] = {}

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

    def visual_store(self, split: str, source: str = ORACLE) -> VisualGraphStore:
        """The visual scene graphs of ``split`` from ``source`` (``oracle``: ``{split}_scene_graphs.json``;
        any other name: ``{split}_scene_graphs_{name}.json``)."""
        key = (split, source)
        if key not in self._visual:
            folder = visual_store_folder(self.store_root / split, source)
            file = self.data_root / (f"{split}_scene_graphs.json" if source == ORACLE else f"{split}_scene_graphs_{source}.json")
            if not folder.exists():
                found = sorted(scene_graph_sources(self.data_root, split)) if self.data_root.is_dir() else []
                raise DataFormatError(
                    f"{folder}: no {source!r} visual scene-graph store for split {split!r}; build it with "
                    f"`kgitm preprocess --data-root {self.data_root} --splits {split} --out {self.store_root}` "
                    f"(needs {file}; scene-graph sources found there: {', '.join(found) or 'none'})"
                )
            self._visual[key] = VisualGraphStore.load(folder, source_file=file)
        return self._visual[key]

    def _checked(self, name: str, index: int, num_tokens: int) -> GraphStore:
        store = self.text_store(name)
        stored = int(store.num_tokens[index])
        if stored < num_tokens:
            raise DataFormatError(
                f"{store.path or name}: caption {index} has {stored} tokens in the graph store but {num_tokens} in "
                "the caption file; rebuild the store with `kgitm preprocess ... --overwrite`"
            )
        return store

    def adjacency(self, name: str, index: int, num_tokens: int) -> Tensor:
        """The ``(n, n)`` bool dependency adjacency of caption ``index`` of set ``name`` (``n = num_tokens``)."""
        return self._checked(name, index, num_tokens).dependency_adjacency(torch.tensor([index]), max_len=num_tokens)[0]

    def parsed(self, name: str, index: int, num_tokens: int) -> ParsedCaption:
        """The :class:`~kgitm.graphs.types.ParsedCaption` of caption ``index`` of set ``name``."""
        return self._checked(name, index, num_tokens)[index]

    def image(self, split: str, index: int, source: str = ORACLE) -> VisualSceneGraph:
        """The visual scene graph of image ``index`` of ``split`` from ``source``."""
        return self.visual_store(split, source)[index]
