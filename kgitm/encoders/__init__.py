"""kgitm.encoders."""
