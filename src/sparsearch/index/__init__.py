"""Persistent inverted index: build (atomic), on-disk segments (mmap), numba kernels, exact and
approximate (Seismic-style) search.

Layers, bottom up (each imports only the ones below it): ``storage`` (atomic writes, lock,
checksummed arrays, managed-file registry) -> ``segment`` / ``manifest`` (one segment; commit
points) -> ``searcher`` (:class:`Index`, exact search) -> ``approximate``
(:class:`ApproximateIndex`) -> ``builder`` / ``updates`` (writing indexes). ``oneshot``
(:class:`~sparsearch.index.oneshot.OneShotIndex`) opens and searches an index with numpy alone,
for a command that runs a few queries and exits.

>>> from sparsearch.index import build_index, Index, ApproximateIndex
>>> index = build_index(doc_vectors, "my-index", encoder=encoder)            # doctest: +SKIP
>>> scores, docnums = Index.open("my-index").search(query_vectors, k=10)    # doctest: +SKIP
>>> approx = ApproximateIndex.build(index)  # saved next to the index         # doctest: +SKIP
>>> scores, docnums = ApproximateIndex.open(index).search(query_vectors, 10)  # doctest: +SKIP

The names below are loaded on first use (PEP 562): importing a submodule that needs no numba
(``storage``, ``manifest``, ``oneshot``) runs this package's code first, and must not pay for
numba and the compiled kernels (``sparsearch search`` from the shell, see ``oneshot``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what the lazy names are, for type checkers and readers
    from ..errors import CorruptIndexError
    from .approximate import (ApproxBuildParams, ApproximateIndex, FixedPruning, GlobalPruning, load_settings,
                              save_settings, tune)
    from .builder import build_index, quantize
    from .manifest import read_manifest
    from .searcher import Contribution, Index, open_index
    from .segment import IndexFormatError, Segment
    from .updates import add_documents, add_texts, delete_documents, live_vectors, merge

# name -> the module (relative to this package) that defines it
_LAZY = {
    "CorruptIndexError": "..errors",
    **dict.fromkeys(("ApproxBuildParams", "ApproximateIndex", "FixedPruning", "GlobalPruning", "load_settings",
                     "save_settings", "tune"), ".approximate"),
    "build_index": ".builder", "quantize": ".builder",
    "read_manifest": ".manifest",
    "Contribution": ".searcher", "Index": ".searcher", "open_index": ".searcher",
    "IndexFormatError": ".segment", "Segment": ".segment",
    **dict.fromkeys(("add_documents", "add_texts", "delete_documents", "live_vectors", "merge"), ".updates"),
}

__all__ = ["build_index", "quantize", "Index", "Contribution", "Segment", "IndexFormatError", "CorruptIndexError",
           "open_index", "read_manifest", "ApproximateIndex", "ApproxBuildParams", "GlobalPruning", "FixedPruning",
           "tune", "save_settings", "load_settings", "add_documents", "add_texts", "delete_documents", "merge",
           "live_vectors"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # once: later look-ups find it without this hook
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
