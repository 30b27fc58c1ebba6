"""kgitm.eval."""
