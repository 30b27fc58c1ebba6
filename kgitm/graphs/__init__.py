"""kgitm.graphs."""
