"""kgitm: scene-graph and knowledge-augmented image-text matching.

The package follows the pipeline of the field:
``data`` (precomputed region features, captions, SynthScenes) -> ``graphs`` (text and visual
graphs) -> ``knowledge`` (concept graphs) -> ``encoders`` -> ``matchers`` -> ``eval``.
``lit`` holds the Lightning glue and ``cli`` the command-line entry points.
"""

__version__ = "0.1.0"
