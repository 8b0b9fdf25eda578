"""Anytime search of an index: impact-ordered postings, scored best first under a budget.

:class:`ImpactOrdered` regroups an index's postings by impact (built in memory from the
segments when the first anytime search asks for it, about as long as one pass over the postings,
and kept with the opened index, which never changes); :func:`search` runs
:mod:`sparsearch.index.kernels_anytime` over it with an
:class:`~sparsearch.searching.AnytimeParams` budget. ``Index.search`` dispatches here for that
parameter kind, so the CLI (``--mode anytime``) and the service use it as any other mode.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import UnsupportedError
from ..searching import AnytimeParams, check_k
from ..vectors import SparseBatch
from . import kernels, kernels_anytime

#: what the functions here take as ``index``: a :class:`sparsearch.index.Index` (not imported:
#: the searcher imports this module)
IndexLike = Any


@dataclass
class ImpactOrdered:
    """An index's postings in impact order, its segments concatenated (arrays as in
    :mod:`sparsearch.index.kernels_anytime`)."""

    io_docs: np.ndarray       # int32 (P,)
    run_ptr: np.ndarray       # int64 (R + 1,)
    run_impact: np.ndarray    # uint8 (R,)
    term_run_ptr: np.ndarray  # int64 (S, T + 1)

    @classmethod
    def build(cls, index: IndexLike) -> "ImpactOrdered":
        """Regroup every segment's postings (8-bit per-term-scaled segments: the default format)."""
        if index.n_docs >= 2**31:  # doc ids are stored as int32 here
            raise UnsupportedError(f"{index.path}: anytime search holds at most 2**31 - 1 documents, this index "
                                   f"{index.n_docs:,}")
        n_terms = max([seg.n_terms for seg in index.segments], default=0)
        docs, ptrs, imps, trps = [], [], [], []
        n_post = n_runs = 0
        for seg, base in zip(index.segments, index.bases):
            if not seg.per_term:
                raise UnsupportedError(f"{seg.path}: anytime search needs 8-bit impacts with per-term scales (the "
                                       f"default format; this segment is {seg.quantization}, version "
                                       f"{1 if seg.term_scale is None else 2}): rebuild or merge the index")
            d, rp, ri, trp = kernels_anytime.impact_order(
                seg.n_terms, seg.term_block_ptr, seg.term_post_ptr, seg.block_last, seg.block_bits,
                seg.block_word_ptr, seg.words, seg.impacts, int(base))
            docs.append(d)
            ptrs.append(rp + n_post)
            imps.append(ri)
            trps.append(np.concatenate([trp, np.full(n_terms - seg.n_terms, trp[-1], np.int64)]) + n_runs)
            n_post += len(d)
            n_runs += len(ri)
        return cls(np.concatenate(docs) if docs else np.zeros(0, np.int32),
                   np.concatenate([*ptrs, np.array([n_post], np.int64)]),
                   np.concatenate(imps) if imps else np.zeros(0, np.uint8),
                   np.stack(trps) if trps else np.zeros((0, n_terms + 1), np.int64),
                   deleted_mask(index))

    deleted: np.ndarray       # bool (n_docs,) or empty: :func:`deleted_mask`, fixed for an opened index

    def __post_init__(self) -> None:
        self._local = threading.local()

    def workspace(self, n_docs: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """This thread's scratch for one-query-at-a-time search: an all-zero float64 accumulator
        and an int64 list of touched documents, (n_docs,) each, kept between searches (zeroing
        8 MB per query would cost more than a small budget at a million documents), and the
        running cost of the top-k selection per touched document (float64 (1,), in ticks)."""
        ws = getattr(self._local, "ws", None)
        if ws is None or len(ws[0]) != n_docs:
            ws = (np.zeros(n_docs, np.float64), np.empty(n_docs, np.int64), np.zeros(1, np.float64))
            self._local.ws = ws
        return ws

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.io_docs, self.run_ptr, self.run_impact, self.term_run_ptr, self.deleted))

    @property
    def n_postings(self) -> int:
        return len(self.io_docs)


@dataclass
class AnytimeResult:
    """``scores`` (nq, w) descending, ``docnums`` int64 (nq, w) as ``Index.search`` returns them,
    and ``postings`` int64 (nq,): how many postings each query processed within its budget."""

    scores: np.ndarray
    docnums: np.ndarray
    postings: np.ndarray


def deleted_mask(index: IndexLike) -> np.ndarray:
    """The index's deleted documents as one bool mask over doc numbers (empty: none deleted)."""
    dele = [(int(b), d) for b, d in zip(index.bases, index.deleted) if d.shape[0]]
    if not dele:
        return np.zeros(0, np.bool_)
    mask = np.zeros(index.n_docs, np.bool_)
    for b, d in dele:
        mask[b: b + len(d)] = d
    return mask


def _skip_mask(index: IndexLike, io: "ImpactOrdered", params: AnytimeParams, allowed: np.ndarray | None
               ) -> tuple[np.ndarray, int]:
    """(documents never returned: deleted or filtered out, as a bool mask or an empty array;
    how many documents can be returned). Without a filter: the deletions, computed once."""
    mask = index.allowed_mask(params.filter, allowed)
    if mask is None:
        return io.deleted, index.n_live_docs
    skip = ~mask
    if io.deleted.shape[0]:
        skip |= io.deleted
    return skip, int(index.n_docs - skip.sum())


def search(index: IndexLike, queries: SparseBatch, k: int, params: AnytimeParams, *, dtype: type = np.float32,
           allowed: np.ndarray | None = None) -> AnytimeResult:
    """Anytime top-``k`` of ``queries`` over ``index`` (see :class:`~sparsearch.searching.AnytimeParams`)."""
    params.check()
    budget_ticks = -1
    if params.budget_ms is not None:
        rate = kernels_anytime.ticks_per_ms()
        if rate <= 0:
            raise UnsupportedError("budget_ms needs the CPU's cycle counter, which this platform does not give; "
                                   "bound the work with max_postings instead")
        budget_ticks = max(1, int(params.budget_ms * rate))
    io = index.impact_ordered()
    skip, n_ok = _skip_mask(index, io, params, allowed)
    k = check_k(k, n_ok)
    q_indptr, terms, weights = index.prepare_queries(queries, params.unknown)
    W = np.zeros((0, len(terms)))  # (segments, query entries): each segment's scaled, snapped weights
    if index.segments:
        W = np.ascontiguousarray(np.stack([index.segment_weights(seg, q_indptr, terms, weights)
                                           for seg in index.segments]), np.float64)
    nq = len(q_indptr) - 1
    out_s = np.empty((nq, k), np.float64)
    out_d = np.empty((nq, k), np.int64)
    out_n = np.zeros(nq, np.int64)
    limit = -1 if params.max_postings is None else int(params.max_postings)
    if nq == 1 or params.threads == 1:
        acc, touched, sel_cost = io.workspace(index.n_docs)
        kernels_anytime.anytime_serial(q_indptr, terms, W, k, skip, io.term_run_ptr, io.run_ptr, io.run_impact,
                                       io.io_docs, limit, budget_ticks, acc, touched, sel_cost, out_s, out_d, out_n)
    else:
        kernels.set_threads(params.threads)
        kernels_anytime.anytime_batch(q_indptr, terms, W, k, index.n_docs, skip, io.term_run_ptr, io.run_ptr,
                                      io.run_impact, io.io_docs, limit, budget_ticks, out_s, out_d, out_n,
                                      4 * kernels.n_threads())
    return AnytimeResult(out_s.astype(dtype, copy=False), out_d, out_n)


def describe(io: ImpactOrdered) -> dict[str, Any]:
    """Sizes of the impact-ordered postings (for stats and benchmarks)."""
    return {"postings": io.n_postings, "runs": int(len(io.run_impact)), "bytes": io.nbytes}
