"""kgitm.nn."""
