"""kgitm.knowledge."""
