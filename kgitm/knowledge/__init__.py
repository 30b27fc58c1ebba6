"""Knowledge: concept graphs and the sources that build them.

A :class:`~kgitm.knowledge.base.KnowledgeSource` maps caption words / object labels to concept
indices and builds a :class:`~kgitm.knowledge.base.ConceptGraph` over a concept vocabulary. Sources:
``none`` (:class:`NoKnowledge`), ``cooccurrence`` (:class:`CooccurrenceKnowledge`), ``wordnet``
(:class:`WordNetKnowledge`), ``conceptnet`` (:class:`ConceptNetKnowledge`), ``cvse``
(:class:`CVSEKnowledge`) and ``union`` (:class:`UnionKnowledge`). See ``docs/knowledge.md``.
"""

from kgitm.knowledge.base import ConceptGraph, KnowledgeSource, load_vocabulary
from kgitm.knowledge.conceptnet import ConceptNetKnowledge
from kgitm.knowledge.cooccurrence import CooccurrenceKnowledge
from kgitm.knowledge.cvse import CVSEKnowledge
from kgitm.knowledge.cvse_adjacency import cvse_normalize
from kgitm.core.safe_pickle import CorruptPickleError, UnsafePickleError, safe_load
from kgitm.knowledge.simple import NoKnowledge, UnionKnowledge
from kgitm.knowledge.wordnet_knowledge import WordNetKnowledge

__all__ = [
    "CVSEKnowledge",
    "ConceptGraph",
    "ConceptNetKnowledge",
    "CooccurrenceKnowledge",
    "CorruptPickleError",
    "KnowledgeSource",
    "NoKnowledge",
    "UnionKnowledge",
    "UnsafePickleError",
    "WordNetKnowledge",
    "cvse_normalize",
    "load_vocabulary",
    "safe_load",
]
