"""Persistent inverted index: build (atomic), on-disk segments (mmap), numba kernels, exact and
approximate (Seismic-style) search.

Layers, bottom up (each imports only the ones below it): ``storage`` (atomic writes, lock,
checksummed arrays, managed-file registry) -> ``segment`` / ``manifest`` (one segment; commit
points) -> ``searcher`` (:class:`Index`, exact search) -> ``approximate``
(:class:`ApproximateIndex`) -> ``builder`` / ``updates`` (writing indexes).

>>> from sparsearch.index import build_index, Index, ApproximateIndex
>>> index = build_index(doc_vectors, "my-index", encoder=encoder)            # doctest: +SKIP
>>> scores, docnums = Index.open("my-index").search(query_vectors, k=10)    # doctest: +SKIP
>>> approx = ApproximateIndex.build(index)  # saved next to the index         # doctest: +SKIP
>>> scores, docnums = ApproximateIndex.open(index).search(query_vectors, 10)  # doctest: +SKIP
"""

from ..errors import CorruptIndexError
from .approximate import (ApproxBuildParams, ApproximateIndex, FixedPruning, GlobalPruning, load_settings,
                          save_settings, tune)
from .builder import build_index, quantize
from .manifest import read_manifest
from .searcher import Contribution, Index, open_index
from .segment import IndexFormatError, Segment
from .updates import add_documents, add_texts, delete_documents, live_vectors, merge

__all__ = ["build_index", "quantize", "Index", "Contribution", "Segment", "IndexFormatError", "CorruptIndexError",
           "open_index", "read_manifest", "ApproximateIndex", "ApproxBuildParams", "GlobalPruning", "FixedPruning",
           "tune", "save_settings", "load_settings", "add_documents", "add_texts", "delete_documents", "merge",
           "live_vectors"]
