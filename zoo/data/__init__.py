"""Corpus sources (fetched from pinned registry packages, checksummed, cached), readers for
user files, tokenizers and vocabularies.  Nothing here imports TensorFlow."""
