"""kgitm.data."""
