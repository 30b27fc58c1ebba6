"""Concept graphs built once and read afterwards.

Building a concept graph can mean reading WordNet's database or a ConceptNet dump. A source that
says what its graph depends on (:meth:`~kgitm.knowledge.base.KnowledgeSource.graph_key`: its options
and the fingerprints of its input files) has the graph stored the first time as a concept-graph folder
(:meth:`~kgitm.knowledge.base.ConceptGraph.save`, provenance included) and read from there by every
later fit and test process. Change an option, the vocabulary or an input file and the key changes:
the graph is rebuilt into a new folder, never read stale.

Folders: ``<cache_dir>/<source>-<key>/``, with ``cache_dir`` the ``graphs/`` folder beside a concept
vocabulary folder (``graphs/concepts/NAME`` -> ``graphs/concepts/NAME/graphs/``), else
``$KGITM_CACHE_DIR/concept_graphs`` (default ``~/.cache/kgitm/concept_graphs``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kgitm.core.io import cache_dir as kgitm_cache_dir
from kgitm.knowledge.base import ConceptGraph, KnowledgeSource

log = logging.getLogger(__name__)

__all__ = ["cached_concept_graph", "default_cache_dir"]


def default_cache_dir(vocabulary: Any) -> Path:
    """Where the graphs over ``vocabulary`` are kept (see the module docstring)."""
    if isinstance(vocabulary, (str, os.PathLike)) and Path(vocabulary).is_dir():
        return Path(vocabulary) / "graphs"
    return kgitm_cache_dir("concept_graphs")


def cached_concept_graph(source: KnowledgeSource, concepts: Sequence[str], *, cache_dir: str | os.PathLike) -> ConceptGraph:
    """``source.concept_graph(concepts)``, read from ``cache_dir`` when it was built before.

    Sources whose :meth:`~kgitm.knowledge.base.KnowledgeSource.graph_key` is ``None`` (cheap to build)
    are built every time. A cache folder that cannot be written (read-only file system) is reported
    once and skipped.
    """
    key = source.graph_key()
    if key is None:
        return source.concept_graph(list(concepts))
    record = {"graph_key": key, "concepts": list(concepts)}
    digest = hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:16]
    folder = Path(cache_dir) / f"{source.name}-{digest}"
    if (folder / "provenance.json").is_file():
        graph = ConceptGraph.load(folder)
        if graph.provenance.get("cache", {}).get("digest") == digest and graph.concepts == list(concepts):
            return graph
    graph = source.concept_graph(list(concepts))
    graph.provenance = {**graph.provenance, "cache": {"digest": digest, "graph_key": key}}
    try:
        graph.save(folder)
    except OSError as err:
        log.warning("concept graph cache %s not written (%s); the graph is rebuilt in every process", folder, err)
    return graph
