"""The foundation layer: containers, tokeniser, vocabulary, box geometry, file helpers, the lemma
table and the WordNet reader. Everything in kgitm may import it; it imports nothing of kgitm.

Defaults shared by every layer live here once (:data:`CAPTIONS_PER_IMAGE`).
"""

#: Captions per image in the precomputed layout (Flickr30K, MS-COCO, SynthScenes): caption ``c``
#: belongs to image ``c // CAPTIONS_PER_IMAGE``. Every default of ``captions_per_image`` is this one.
CAPTIONS_PER_IMAGE = 5
