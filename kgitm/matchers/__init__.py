"""kgitm.matchers."""
