"""Persistent inverted index: build (atomic), on-disk segments (mmap), numba kernels, search.

>>> from sparsearch.index import build_index, Index
>>> index = build_index(doc_vectors, "my-index", encoder=encoder)   # doctest: +SKIP
>>> scores, docnums = Index.open("my-index").search(query_vectors, k=10)  # doctest: +SKIP
"""

from .builder import build_index, quantize
from .searcher import Contribution, Index
from .segment import IndexFormatError, Segment

__all__ = ["build_index", "quantize", "Index", "Contribution", "Segment", "IndexFormatError"]
