"""kgitm: scene-graph and knowledge-augmented image-text matching.

The packages follow the pipeline of the field, each importing only the ones before it
(``docs/architecture.md``):

``core`` (containers, tokeniser, file helpers, lemma table, WordNet reader) -> ``data`` (precomputed
region features and captions, SynthScenes) -> ``graphs`` (text and visual graphs, graph stores) ->
``knowledge`` (concept graphs) -> ``pipeline`` (typed batches) -> ``encoders`` -> ``matchers`` ->
``eval`` (exact metrics, block-wise similarity) -> ``models`` (:class:`~kgitm.models.MatchingModel`,
loss terms) -> ``lit`` (the Lightning task and data module) -> ``cli`` (the ``kgitm`` commands).
"""

__version__ = "0.2.0"
