"""kgitm.lit."""
