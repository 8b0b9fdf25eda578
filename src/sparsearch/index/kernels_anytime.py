"""Score-at-a-time kernels (numba): impact-ordered postings and anytime top-k.

Impact-ordered postings (the layout of JASS, Lin & Trotman 2015, "Anytime ranking for
impact-ordered indexes"): the postings of each term regrouped into *runs* of equal quantized
impact, runs in descending impact, doc ids ascending within a run. A query's runs are processed
in descending order of their contribution ``query weight x impact``: the postings that can move
a score most come first, so stopping early (after ``max_postings`` postings, or at a deadline)
returns the best top-k the work done allows, and processing every run gives exactly the
exhaustive (term-at-a-time) result: scores are sums of snapped weights times integer impacts,
exact in float64 in any order (see :mod:`sparsearch.index.kernels`).

Arrays (one index, its segments concatenated; doc ids global, i.e. with each segment's base):

* ``io_docs`` int32 (P,): doc ids, run after run;
* ``run_ptr`` int64 (R + 1,): run ``r`` is ``io_docs[run_ptr[r]:run_ptr[r + 1]]``;
* ``run_impact`` uint8 (R,): its impact;
* ``term_run_ptr`` int64 (S, T + 1): the runs of term ``t`` in segment ``s`` are
  ``term_run_ptr[s, t]:term_run_ptr[s, t + 1]``.

The deadline is read from the CPU's cycle counter (``llvm.readcyclecounter``, the TSC on x86),
a few nanoseconds a read, converted from milliseconds with a rate measured once per process.
"""

from __future__ import annotations

import time

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from .kernels import _heap_push, _heap_sorted, decode_postings

#: postings between two reads of the clock inside a long run
CLOCK_STRIDE = 4096
#: postings processed at least between two reads of the clock (many runs are a few postings)
CLOCK_MIN = 256


@intrinsic
def _cycles(typingctx):
    """The CPU's cycle counter (0 where the platform has none)."""
    def codegen(context, builder, signature, args):
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.IntType(64), []),
                                            "llvm.readcyclecounter")
        return builder.call(fn, [])
    return types.int64(), codegen


@njit(cache=True)
def cycles_now():
    return _cycles()


_TICKS_PER_MS: list[float] = []


def ticks_per_ms() -> float:
    """Cycle-counter ticks per millisecond (measured once, over ~20 ms; 0.0: no usable counter)."""
    if not _TICKS_PER_MS:
        cycles_now()  # compile outside the measurement
        t0, c0 = time.perf_counter(), cycles_now()
        while time.perf_counter() - t0 < 0.02:
            pass
        t1, c1 = time.perf_counter(), cycles_now()
        _TICKS_PER_MS.append(max(0.0, (c1 - c0) / ((t1 - t0) * 1e3)))
    return _TICKS_PER_MS[0]


@njit(cache=True)
def impact_order(n_terms, term_block_ptr, term_post_ptr, block_last, block_bits, block_word_ptr, words, impacts,
                 base):
    """One segment's postings in impact order: ``(io_docs, run_ptr, run_impact, term_run_ptr)``
    as in the module docstring (``run_ptr`` without its final entry; doc ids + ``base``).
    Postings of impact 0 (they add nothing) are left out. A counting sort per term: O(postings)."""
    n_post = term_post_ptr[n_terms]
    cnt = np.zeros(256, np.int64)
    term_run_ptr = np.zeros(n_terms + 1, np.int64)
    max_df = 0
    kept = 0
    for t in range(n_terms):
        cnt[:] = 0
        for p in range(term_post_ptr[t], term_post_ptr[t + 1]):
            cnt[impacts[p]] += 1
        nr = 0
        for v in range(1, 256):
            nr += cnt[v] > 0
            kept += cnt[v]
        term_run_ptr[t + 1] = term_run_ptr[t] + nr
        max_df = max(max_df, term_post_ptr[t + 1] - term_post_ptr[t])
    n_runs = term_run_ptr[n_terms]
    io_docs = np.empty(kept, np.int32)
    run_ptr = np.empty(n_runs, np.int64)
    run_impact = np.empty(n_runs, np.uint8)
    docs = np.empty(max(max_df, 1), np.int64)
    pos = np.zeros(256, np.int64)
    off = 0
    for t in range(n_terms):
        p0 = term_post_ptr[t]
        df = term_post_ptr[t + 1] - p0
        if df == 0:
            continue
        decode_postings(t, term_block_ptr, term_post_ptr, block_last, block_bits, block_word_ptr, words, docs)
        cnt[:] = 0
        for i in range(df):
            cnt[impacts[p0 + i]] += 1
        r = term_run_ptr[t]
        for v in range(255, 0, -1):
            if cnt[v] > 0:
                run_ptr[r] = off
                run_impact[r] = v
                pos[v] = off
                off += cnt[v]
                r += 1
        for i in range(df):
            v = impacts[p0 + i]
            if v > 0:
                io_docs[pos[v]] = docs[i] + base
                pos[v] += 1
    assert off == kept and n_post >= kept
    return io_docs, run_ptr, run_impact, term_run_ptr


@njit(cache=True, inline="always")
def _above(c1, r1, c2, r2):
    """List head (c1, r1) is processed before (c2, r2): larger contribution, then smaller run id."""
    return c1 > c2 or (c1 == c2 and r1 < r2)


@njit(cache=True, inline="always")
def _sift_down(hc, hr, he, hw, size, i):
    """Restore the max-heap of list heads below position ``i``."""
    while True:
        left = 2 * i + 1
        m = i
        if left < size and _above(hc[left], hr[left], hc[m], hr[m]):
            m = left
        if left + 1 < size and _above(hc[left + 1], hr[left + 1], hc[m], hr[m]):
            m = left + 1
        if m == i:
            return
        hc[i], hc[m] = hc[m], hc[i]
        hr[i], hr[m] = hr[m], hr[i]
        he[i], he[m] = he[m], he[i]
        hw[i], hw[m] = hw[m], hw[i]
        i = m


@njit(cache=True)
def _anytime_one(q_terms, W, a, b, k, skip, term_run_ptr, run_ptr, run_impact, io_docs, max_postings, budget_ticks,
                 acc, touched, hs, hd, out_s, out_d, sel_cost):
    """One query (entries ``a:b``): runs in descending ``weight x impact`` until ``max_postings``
    postings (< 0: no limit) or ``budget_ticks`` cycle-counter ticks (< 0: no limit) are spent,
    then the top ``k`` of the documents touched (``skip``: bool mask of documents never returned,
    or empty). Returns the postings processed. ``acc`` (n_docs,) is all zero on entry and return.

    The budget covers the top-k selection too: scoring stops when the time spent plus the
    documents touched so far times ``sel_cost[0]`` (ticks per touched document that the
    selection took on earlier queries, a running average kept in ``sel_cost``) reaches it.

    The query's lists (one per segment and query term, each already in descending impact) are
    merged lazily through a max-heap of their next runs: no sort of all the query's runs up
    front, so the first posting is scored within microseconds of the start."""
    start = _cycles()
    n_seg = term_run_ptr.shape[0]
    n_terms = term_run_ptr.shape[1] - 1
    cap = n_seg * (b - a)
    hc = np.empty(cap, np.float64)  # contribution of the list's next run
    hr = np.empty(cap, np.int64)    # that run
    he = np.empty(cap, np.int64)    # the list's end (one past its last run)
    hw = np.empty(cap, np.float64)  # the list's query weight
    size = 0
    for s in range(n_seg):
        for j in range(a, b):
            t = q_terms[j]
            if 0 <= t < n_terms and W[s, j] > 0 and term_run_ptr[s, t] < term_run_ptr[s, t + 1]:
                r = term_run_ptr[s, t]
                hc[size] = W[s, j] * np.float64(run_impact[r])
                hr[size] = r
                he[size] = term_run_ptr[s, t + 1]
                hw[size] = W[s, j]
                size += 1
    for i in range(size // 2 - 1, -1, -1):
        _sift_down(hc, hr, he, hw, size, i)
    done = 0
    checked = 0  # postings done at the last read of the clock
    nt = 0
    stop = False
    while size > 0 and not stop:
        c = hc[0]
        r = hr[0]
        p = run_ptr[r]
        end = run_ptr[r + 1]
        if max_postings >= 0 and end - p >= max_postings - done:
            end = p + (max_postings - done)
            stop = True
        while p < end:
            e = min(end, p + CLOCK_STRIDE)
            for q in range(p, e):
                d = io_docs[q]
                if acc[d] == 0.0:
                    touched[nt] = d
                    nt += 1
                acc[d] += c
            done += e - p
            p = e
            if budget_ticks >= 0 and done - checked >= CLOCK_MIN:  # short runs: not a read after each
                checked = done
                if _cycles() - start + nt * sel_cost[0] >= budget_ticks:
                    stop = True
                    break
        if r + 1 < he[0]:  # the list's next run replaces it at the top
            hr[0] = r + 1
            hc[0] = hw[0] * np.float64(run_impact[r + 1])
        else:
            size -= 1
            hc[0], hr[0], he[0], hw[0] = hc[size], hr[size], he[size], hw[size]
        _sift_down(hc, hr, he, hw, size, 0)
    size = 0
    has_skip = skip.shape[0] > 0
    sel_start = _cycles()
    for i in range(nt):
        d = touched[i]
        v = acc[d]
        acc[d] = 0.0
        if has_skip and skip[d]:
            continue
        # most touched documents cannot enter a full heap: test against its root before the call
        if size < k or v > hs[0] or (v == hs[0] and d < hd[0]):
            size = _heap_push(hs, hd, size, k, v, np.int64(d))
    _heap_sorted(hs, hd, size, out_s, out_d)
    if budget_ticks >= 0 and nt > 0:
        per_doc = (_cycles() - sel_start) / nt
        sel_cost[0] = per_doc if sel_cost[0] == 0.0 else 0.5 * (sel_cost[0] + per_doc)
    return done


@njit(cache=True)
def _anytime_range(q0, q1, q_indptr, q_terms, W, k, skip, term_run_ptr, run_ptr, run_impact, io_docs,
                   max_postings, budget_ticks, acc, touched, sel_cost, out_s, out_d, out_n):
    hs = np.empty(k, np.float64)
    hd = np.empty(k, np.int64)
    for qi in range(q0, q1):
        out_n[qi] = _anytime_one(q_terms, W, q_indptr[qi], q_indptr[qi + 1], k, skip, term_run_ptr, run_ptr,
                                 run_impact, io_docs, max_postings, budget_ticks, acc, touched, hs, hd,
                                 out_s[qi], out_d[qi], sel_cost)


@njit(cache=True)
def anytime_serial(q_indptr, q_terms, W, k, skip, term_run_ptr, run_ptr, run_impact, io_docs, max_postings,
                   budget_ticks, acc, touched, sel_cost, out_s, out_d, out_n):
    """Score-at-a-time top-``k`` of every query on the calling thread (budgets per query), with
    the caller's workspace: ``acc`` float64 (n_docs,) all zero (left zero), ``touched`` int64
    (n_docs,), ``sel_cost`` float64 (1,) (see :func:`_anytime_one`; starts at 0)."""
    _anytime_range(0, q_indptr.shape[0] - 1, q_indptr, q_terms, W, k, skip, term_run_ptr, run_ptr, run_impact,
                   io_docs, max_postings, budget_ticks, acc, touched, sel_cost, out_s, out_d, out_n)


@njit(cache=True, parallel=True)
def anytime_batch(q_indptr, q_terms, W, k, n_docs, skip, term_run_ptr, run_ptr, run_impact, io_docs, max_postings,
                  budget_ticks, out_s, out_d, out_n, n_runs):
    """:func:`anytime_serial` on all threads: queries cut into ``n_runs`` runs, one workspace each."""
    nq = q_indptr.shape[0] - 1
    n_runs = max(1, min(nq, n_runs))
    for r in prange(n_runs):
        acc = np.zeros(n_docs, np.float64)
        touched = np.empty(n_docs, np.int64)
        sel_cost = np.zeros(1, np.float64)
        _anytime_range(r * nq // n_runs, (r + 1) * nq // n_runs, q_indptr, q_terms, W, k, skip, term_run_ptr,
                       run_ptr, run_impact, io_docs, max_postings, budget_ticks, acc, touched, sel_cost, out_s, out_d,
                       out_n)
