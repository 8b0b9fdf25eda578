"""Numba hot loops of the approximate (Seismic-style) searcher: build and query kernels.

Kept apart from ``kernels.py`` (the exact kernels) only so that the two can be edited
independently; the heap helpers are shared. See :mod:`sparsearch.index.approximate` for the
data layout and the algorithm (Bruch, Nardini, Rulli, Venturini: "Efficient Inverted Indexes
for Approximate Retrieval over Learned Sparse Representations", SIGIR 2024).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from .kernels import _bit_width, _heap_push, _heap_sorted, decode_postings, snap_inplace

MASK32 = np.int64(0xFFFFFFFF)
LAZY_PICKS = 8  # blocks selected one at a time before the rest of a list is sorted
PREFETCH_AHEAD = 4  # documents: enough scoring work to cover a DRAM access
WHOLE = np.int64(1) << 40  # a forward-vector cut that keeps every entry (longer than any vector)


@intrinsic
def _prefetch(typingctx, arr, idx):
    """Software prefetch (LLVM ``llvm.prefetch``, read, high locality) of ``arr[idx]``; never faults."""
    sig = types.void(arr, idx)

    def codegen(context, builder, signature, args):
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [args[1]], wraparound=False)
        i8p = builder.bitcast(ptr, ir.IntType(8).as_pointer())
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [ir.IntType(8).as_pointer(), i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0i8")
        builder.call(fn, [i8p, ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return sig, codegen


def _u64_bit_op(llvm_name: str, flag: bool | None, doc: str):
    """An intrinsic calling the LLVM bit operation ``llvm_name`` on a uint64 (``flag``: the
    constant i1 second argument some of them take, e.g. cttz's is-zero-poison)."""
    def impl(typingctx, x):
        if x != types.uint64:
            return None

        def codegen(context, builder, signature, args):
            extra = [] if flag is None else [ir.Constant(ir.IntType(1), int(flag))]
            fnty = ir.FunctionType(ir.IntType(64), [ir.IntType(64)] + [ir.IntType(1)] * len(extra))
            fn = cgutils.get_or_insert_function(builder.module, fnty, llvm_name)
            return builder.call(fn, [args[0], *extra])

        return types.uint64(x), codegen

    impl.__doc__ = doc
    return intrinsic(impl)


_popcount = _u64_bit_op("llvm.ctpop.i64", None, "Number of set bits of a uint64 (one POPCNT instruction).")
_trailing_zeros = _u64_bit_op("llvm.cttz.i64", False,
                              "Index of the lowest set bit of a non-zero uint64 (one TZCNT instruction).")


COMP_SAMPLE = 32  # components per sampled start (the succinct component index; see comp_range)


@njit(cache=True, inline="always")
def comp_range(c, comp_first, comp_sample):
    """Entries ``[a, b)`` of summary component ``c`` (global ordinal), from the succinct index.

    ``comp_first`` is a bit array over all summary entries (and one sentinel bit past the last):
    bit ``e`` is set where a component starts, so component ``c`` starts at the ``c``-th set bit
    (select) and ends at the next one. ``comp_sample[s]`` is where component ``s * COMP_SAMPLE``
    starts: a select scans at most a few words from there (about 2 entries per component). One
    bit per entry plus a sample per 32 components replaces a 16-bit offset per component (the
    largest array of the summaries).
    """
    one = np.uint64(1)
    pos = np.int64(comp_sample[c // COMP_SAMPLE])
    r = np.uint64(c % COMP_SAMPLE)
    wi = pos >> 6
    word = comp_first[wi] & ~((one << np.uint64(pos & 63)) - one)
    cnt = _popcount(word)
    while r >= cnt:
        r -= cnt
        wi += 1
        word = comp_first[wi]
        cnt = _popcount(word)
    while r > 0:
        word &= word - one
        r -= one
    a = wi * 64 + np.int64(_trailing_zeros(word))
    word &= word - one
    while word == 0:
        wi += 1
        word = comp_first[wi]
    return a, wi * 64 + np.int64(_trailing_zeros(word))


@njit(cache=True)
def component_index(group_comp_ptr, group_ent_ptr, comp_start, n_entries, comp_sample):
    """The succinct component index (``comp_first`` returned, ``comp_sample`` filled) of
    components whose starts are ``group_ent_ptr[g] + comp_start[c]`` (relative offsets per
    summary group, as index versions 3 and 4 stored them)."""
    words = np.zeros((n_entries >> 6) + 1, np.uint64)
    one = np.uint64(1)
    for g in range(group_comp_ptr.shape[0] - 1):
        e0 = group_ent_ptr[g]
        for c in range(group_comp_ptr[g], group_comp_ptr[g + 1]):
            e = e0 + np.int64(comp_start[c])
            words[e >> 6] |= one << np.uint64(e & 63)
            if c % COMP_SAMPLE == 0:
                comp_sample[c // COMP_SAMPLE] = e
    words[n_entries >> 6] |= one << np.uint64(n_entries & 63)  # sentinel: the last component's end
    return words


@njit(cache=True)
def pack_block_numbers(group_block_ptr, group_ent_ptr, ent_block):
    """Bit-pack every entry's block number at its group's width, ``bit_length(blocks - 1)``
    (0 bits in a one-block group, 8 in a group of 129-256 blocks).

    Returns ``(group_bit_ptr int64 (G+1,), ent_bits uint8)``: entry ``e`` of group ``g`` is the
    ``w``-bit field at bit ``group_bit_ptr[g] + (e - group_ent_ptr[g]) * w`` (little-endian);
    ``ent_bits`` has one spare byte so that a field is always read as two bytes.
    """
    G = group_block_ptr.shape[0] - 1
    bit_ptr = np.zeros(G + 1, np.int64)
    for g in range(G):
        n_entries = group_ent_ptr[g + 1] - group_ent_ptr[g]
        bit_ptr[g + 1] = bit_ptr[g] + n_entries * block_number_width(group_block_ptr, g)
    out = np.zeros((bit_ptr[G] + 7) // 8 + 1, np.uint8)
    for g in range(G):
        w = block_number_width(group_block_ptr, g)
        if w == 0:
            continue
        pos = bit_ptr[g]
        for e in range(group_ent_ptr[g], group_ent_ptr[g + 1]):
            v = np.int64(ent_block[e]) << (pos & 7)
            out[pos >> 3] |= np.uint8(v & 0xFF)
            out[(pos >> 3) + 1] |= np.uint8(v >> 8)
            pos += w
    return bit_ptr, out


@njit(cache=True, inline="always")
def block_number_width(group_block_ptr, g):
    """Bits of a block number in group ``g``: ``bit_length(blocks - 1)``."""
    return _bit_width(group_block_ptr[g + 1] - group_block_ptr[g] - 1)


@njit(cache=True, inline="always")
def block_number(pos, mask, ent_bits):
    """The block-number field at bit ``pos`` (``mask``: its width's ones; see pack_block_numbers)."""
    i = pos >> 3
    return ((np.int64(ent_bits[i]) | (np.int64(ent_bits[i + 1]) << 8)) >> (pos & 7)) & mask


LOC_BITS = 24  # a forward locator is (offset << LOC_BITS) | length: lengths below 2**24 entries
LOC_MASK = np.uint64((1 << LOC_BITS) - 1)
# 4-byte locators where they fit: documents of at most 1,023 entries, at most 2**22 entries in all
# (a few tens of thousands of documents); they halve the largest array of the blocked lists
LOC32_BITS = 10
LOC32_MASK = np.uint32((1 << LOC32_BITS) - 1)


def locators_fit_32(max_len: int, n_entries: int) -> bool:
    """Whether 4-byte locators can address a forward index of ``n_entries`` whose longest
    document has ``max_len`` entries."""
    return max_len < 1 << LOC32_BITS and n_entries <= 1 << (32 - LOC32_BITS)


def _unpack_loc(loc):
    """``(offset, length)`` of a forward locator, uint64 or uint32 (compiled per type)."""


@overload(_unpack_loc, inline="always")
def _unpack_loc_impl(loc):
    if loc == types.uint32:
        return lambda loc: (np.int64(loc >> np.uint32(LOC32_BITS)), np.int64(loc & LOC32_MASK))
    return lambda loc: (np.int64(loc >> np.uint64(LOC_BITS)), np.int64(loc & LOC_MASK))


@njit(cache=True)
def forward_locators(block_docs, fwd_ptr, narrow):
    """``(fwd_ptr[d] << LOC_BITS) | (fwd_ptr[d + 1] - fwd_ptr[d])`` for every blocked posting
    ``d`` (uint64; with ``narrow``, uint32 with ``LOC32_BITS``, see :func:`locators_fit_32`):
    where the document's forward vector is, read with the posting itself.

    Seismic stores its postings this way too: scoring then needs no dependent, random load of
    ``fwd_ptr[d]`` before the vector can be fetched, so the prefetch of documents ahead is not
    held up by a cache miss of its own.
    """
    n = block_docs.shape[0]
    out = np.empty(n if not narrow else 0, np.uint64)
    out32 = np.empty(n if narrow else 0, np.uint32)
    for p in range(n):
        d = np.int64(block_docs[p])
        a = fwd_ptr[d]
        if narrow:
            out32[p] = (np.uint32(a) << np.uint32(LOC32_BITS)) | np.uint32(fwd_ptr[d + 1] - a)
        else:
            out[p] = (np.uint64(a) << np.uint64(LOC_BITS)) | np.uint64(fwd_ptr[d + 1] - a)
    return out, out32


@njit(cache=True, inline="always")
def _prefetch_doc(loc, cut, fwd_terms, fwd_vals):
    """Bring the first ``cut`` entries (``WHOLE``: all) of the forward vector at locator ``loc``
    towards the cache while another one is scored (Seismic does the same): the forward index is
    read at random, so this hides DRAM latency."""
    a, m = _unpack_loc(loc)
    m = min(m, cut)
    for o in range(0, m, 32):  # 64-byte lines: 32 uint16 term ids
        _prefetch(fwd_terms, a + o)
    for o in range(0, m, 64):
        _prefetch(fwd_vals, a + o)


# ------------------------------------------------------------------ decoding
@njit(cache=True)
def decode_all(term_block_ptr, term_post_ptr, block_last, block_bits, block_word_ptr, words):
    """Doc ids of every posting of a segment (posting order), uint32 (P,) (doc numbers are
    uint32 in a segment; half the bytes of int64 at billions of postings)."""
    out = np.empty(term_post_ptr[-1], np.uint32)
    for t in range(term_post_ptr.shape[0] - 1):
        a = term_post_ptr[t]
        if term_post_ptr[t + 1] > a:
            decode_postings(t, term_block_ptr, term_post_ptr, block_last, block_bits, block_word_ptr, words,
                            out[a:])
    return out


# --------------------------------------------------------- static pruning
@njit(cache=True, parallel=True)
def prune_lists(post_ptr, post_docs, post_vals, doc_scale, n_keep):
    """Keep the ``n_keep[t]`` highest-scoring postings of every list (ties: lower doc first).

    Scores are ``value * doc_scale[doc]``. Returns ``(ptr int64 (V+1,), docs int64)`` with the
    kept docs of each list in descending score order.
    """
    V = post_ptr.shape[0] - 1
    ptr = np.zeros(V + 1, np.int64)
    for t in range(V):
        ptr[t + 1] = ptr[t] + min(n_keep[t], post_ptr[t + 1] - post_ptr[t])
    out = np.empty(ptr[V], np.int64)
    for t in prange(V):
        a = post_ptr[t]
        n = post_ptr[t + 1] - a
        m = ptr[t + 1] - ptr[t]
        if m == 0:
            continue
        sc = np.empty(n, np.float64)
        for i in range(n):
            sc[i] = -np.float64(post_vals[a + i]) * doc_scale[post_docs[a + i]]
        order = np.argsort(sc, kind="mergesort")  # stable: docs are ascending within a list
        for i in range(m):
            out[ptr[t] + i] = post_docs[a + order[i]]
    return ptr, out


@njit(cache=True, inline="always")
def weight_of(v, t, term_step):
    """The weight an impact ``v`` of term ``t`` stands for: ``v`` times its term's grid step,
    rounded to float32 (as pruning and clustering compare weights), or ``v`` itself without a
    grid (``term_step`` empty)."""
    if term_step.shape[0] == 0:
        return np.float64(v)
    return np.float64(np.float32(np.float64(v) * term_step[t]))


@njit(cache=True, inline="always")
def _posting_score(i, t, post_vals, term_step, doc_scale, post_docs):
    s = doc_scale[0] if doc_scale.shape[0] == 1 else doc_scale[post_docs[i]]
    return weight_of(post_vals[i], t, term_step) * s


@njit(cache=True)
def global_keep(post_ptr, post_vals, term_step, doc_scale, post_docs, n_postings, max_fraction):
    """Per-list budgets for Seismic's *global* static pruning.

    Keeps the ``n_postings * n_nonempty_lists`` highest-weighted postings over the whole
    collection (one global threshold), each list clipped to ``max_fraction * n_postings``.
    A posting's weight is ``weight_of(impact) * doc_scale[doc]`` (``doc_scale`` of length 1:
    one scale for all). The threshold is found by radix selection on the weights' float64 bit
    patterns (non-negative floats order like their bits): four passes over the postings with a
    16-bit histogram each, recomputing the weights, so no array of P weights is ever held
    (billions of postings at 10M documents).
    """
    V = post_ptr.shape[0] - 1
    P = post_ptr[V]
    nonempty = 0
    for t in range(V):
        if post_ptr[t + 1] > post_ptr[t]:
            nonempty += 1
    budget = min(P, np.int64(n_postings) * nonempty)
    keep = np.zeros(V, np.int64)
    cap = max(1, np.int64(max_fraction * n_postings))
    if budget >= P:
        for t in range(V):
            keep[t] = min(cap, post_ptr[t + 1] - post_ptr[t])
        return keep
    rank = P - budget  # the threshold: the weight of this rank, 0 = the smallest
    buf = np.empty(1, np.float64)
    bits = buf.view(np.uint64)
    prefix = np.uint64(0)
    hist = np.zeros(1 << 16, np.int64)
    for shift in (48, 32, 16, 0):
        hi_mask = np.uint64(0) if shift == 48 else ~np.uint64((1 << (shift + 16)) - 1)
        hist[:] = 0
        for t in range(V):
            for i in range(post_ptr[t], post_ptr[t + 1]):
                buf[0] = _posting_score(i, t, post_vals, term_step, doc_scale, post_docs)
                b = bits[0]
                if (b & hi_mask) == prefix:
                    hist[(b >> np.uint64(shift)) & np.uint64(0xFFFF)] += 1
        acc = 0
        for h in range(1 << 16):
            if acc + hist[h] > rank:
                prefix |= np.uint64(h) << np.uint64(shift)
                rank -= acc
                break
            acc += hist[h]
    buf.view(np.uint64)[0] = prefix
    thr = buf[0]
    for t in range(V):
        c = 0
        for i in range(post_ptr[t], post_ptr[t + 1]):
            if _posting_score(i, t, post_vals, term_step, doc_scale, post_docs) >= thr:
                c += 1
        keep[t] = min(cap, c)
    return keep


# -------------------------------------------------------------- clustering
@njit(cache=True, inline="always")
def _xorshift(x):
    x ^= (x << 13) & MASK32
    x ^= x >> 17
    x ^= (x << 5) & MASK32
    return x & MASK32


@njit(cache=True)
def doc_sketches(fwd_ptr, fwd_terms, fwd_vals, term_step, doc_scale, doc_cut):
    """Each document's ``doc_cut`` largest components (Seismic's ``doc_cut``), for clustering,
    by weight (:func:`weight_of`: impacts times their terms' grid steps, computed here rather
    than held as a second copy of the forward index)."""
    n = fwd_ptr.shape[0] - 1
    ptr = np.zeros(n + 1, np.int64)
    for d in range(n):
        ptr[d + 1] = ptr[d] + min(doc_cut, fwd_ptr[d + 1] - fwd_ptr[d])
    st = np.empty(ptr[n], np.int64)
    sv = np.empty(ptr[n], np.float64)
    for d in range(n):
        a = fwd_ptr[d]
        m = fwd_ptr[d + 1] - a
        if m == 0:
            continue
        v = np.empty(m, np.float64)
        for i in range(m):
            v[i] = -weight_of(fwd_vals[a + i], fwd_terms[a + i], term_step)
        order = np.argsort(v, kind="mergesort")
        for i in range(ptr[d + 1] - ptr[d]):
            st[ptr[d] + i] = fwd_terms[a + order[i]]
            sv[ptr[d] + i] = -v[order[i]] * doc_scale[d]
    return ptr, st, sv


@njit(cache=True, inline="always")
def _assign_pass(list_docs, sk_ptr, sk_terms, sk_vals, cent_ptr, cent_t, cent_v, nc, head, assign, second, sizes,
                 keep_unmatched):
    """Assign every doc of a list (``list_docs``; cluster ids into ``assign``) to the centroid
    with the largest inner product with its sketch; record the runner-up in ``second`` and
    count ``sizes``.

    The centroids (``cent_*``, CSR over ``nc`` rows) are indexed by term through ``head`` (all
    -1 on entry and on return). A doc sharing no term with any centroid goes to centroid 0,
    or, with ``keep_unmatched``, stays where it is.
    """
    e = cent_ptr[nc]
    nxt = np.empty(e, np.int64)
    ent_c = np.empty(e, np.int64)
    for ci in range(nc):
        for q in range(cent_ptr[ci], cent_ptr[ci + 1]):
            tt = cent_t[q]
            nxt[q] = head[tt]
            ent_c[q] = ci
            head[tt] = q
    score = np.zeros(nc, np.float64)
    touched = np.empty(nc, np.int64)
    for ci in range(nc):
        sizes[ci] = 0
    for p in range(list_docs.shape[0]):
        d = list_docs[p]
        nt = 0
        for j in range(sk_ptr[d], sk_ptr[d + 1]):
            q = head[sk_terms[j]]
            w = sk_vals[j]
            while q >= 0:
                ci = ent_c[q]
                if score[ci] == 0.0:
                    touched[nt] = ci
                    nt += 1
                score[ci] += w * cent_v[q]
                q = nxt[q]
        best = np.int64(assign[p]) if keep_unmatched and nt == 0 else 0
        bs = -1.0
        sec = 0
        ss = -1.0
        for u in range(nt):
            ci = touched[u]
            s = score[ci]
            if s > bs or (s == bs and ci < best):
                sec, ss = best, bs
                best, bs = ci, s
            elif s > ss or (s == ss and ci < sec):
                sec, ss = ci, s
            score[ci] = 0.0
        assign[p] = best
        second[p] = sec
        sizes[best] += 1
    for q in range(e):
        head[cent_t[q]] = -1


@njit(cache=True, inline="always")
def _mean_centroids(list_docs, sk_ptr, sk_terms, sk_vals, assign, sizes, nc, width, acc, cent_ptr, cent_t, cent_v):
    """Spherical k-means centroids: per cluster, the sum of its members' sketches cut to its
    ``width`` largest components and scaled to unit L2 norm (written into ``cent_*``)."""
    start = np.zeros(nc + 1, np.int64)
    for ci in range(nc):
        start[ci + 1] = start[ci] + sizes[ci]
    fill = start[:nc].copy()
    n = list_docs.shape[0]
    members = np.empty(n, np.int64)
    tot = 0
    for p in range(n):
        d = list_docs[p]
        ci = assign[p]
        members[fill[ci]] = d
        fill[ci] += 1
        tot += sk_ptr[d + 1] - sk_ptr[d]
    touched = np.empty(tot, np.int64)
    e = 0
    for ci in range(nc):
        nt = 0
        for m in range(start[ci], start[ci + 1]):
            d = members[m]
            for j in range(sk_ptr[d], sk_ptr[d + 1]):
                tt = sk_terms[j]
                if acc[tt] == 0.0:
                    touched[nt] = tt
                    nt += 1
                acc[tt] += sk_vals[j]
        vals = np.empty(nt, np.float64)
        for u in range(nt):
            vals[u] = -acc[touched[u]]
            acc[touched[u]] = 0.0
        o = np.argsort(vals, kind="mergesort")
        m = min(width, nt)
        nrm = 0.0
        for u in range(m):
            nrm += vals[o[u]] * vals[o[u]]
        nrm = np.sqrt(nrm) if nrm > 0 else 1.0
        for u in range(m):
            cent_t[e] = touched[o[u]]
            cent_v[e] = -vals[o[u]] / nrm
            e += 1
        cent_ptr[ci + 1] = e


@njit(cache=True, parallel=True)
def cluster_lists(list_ptr, list_docs, sk_ptr, sk_terms, sk_vals, n_terms, centroid_fraction, min_cluster_size,
                  kmeans_iterations, width, seed, n_chunks):
    """Shallow k-means clustering of every pruned posting list (Seismic's blocking, refined).

    For a list of ``n`` docs, ``ceil(centroid_fraction * n)`` docs drawn at random become
    centroids and every doc joins the centroid with the largest inner product between their
    ``doc_cut`` sketches: the one assignment pass of Seismic's "shallow k-means". Then
    ``kmeans_iterations`` Lloyd steps of spherical k-means: every centroid becomes the sum of
    its members' sketches, cut to its ``width`` largest components and scaled to unit norm,
    and every doc is reassigned (tighter blocks make tighter summaries: fewer blocks scanned
    for the same recall). Clusters smaller than ``min_cluster_size`` are then dissolved into
    their members' runner-up centroid. Returns the cluster id of every posting (int32,
    aligned with ``list_docs``; ids need not be consecutive).
    """
    V = list_ptr.shape[0] - 1
    assign = np.zeros(list_docs.shape[0], np.int32)
    for c in prange(n_chunks):
        head = np.full(n_terms, -1, np.int64)
        acc = np.zeros(n_terms, np.float64)
        for t in range(c, V, n_chunks):
            a = list_ptr[t]
            n = list_ptr[t + 1] - a
            if n == 0:
                continue
            nc = min(n, max(1, np.int64(np.ceil(centroid_fraction * n))))
            if nc == 1:
                continue  # all zeros already
            # pick nc distinct positions: partial Fisher-Yates with a per-list xorshift stream
            perm = np.arange(n)
            x = ((np.int64(seed) * 2654435761 + t * 40503 + 1) & MASK32) | 1
            for i in range(nc):
                x = _xorshift(x)
                j = i + x % (n - i)
                perm[i], perm[j] = perm[j], perm[i]
            # the initial centroids: the sketches of the drawn docs
            cent_ptr = np.zeros(nc + 1, np.int64)
            for i in range(nc):
                d = list_docs[a + perm[i]]
                cent_ptr[i + 1] = cent_ptr[i] + sk_ptr[d + 1] - sk_ptr[d]
            cap = max(cent_ptr[nc], nc * width)
            cent_t = np.empty(cap, np.int64)
            cent_v = np.empty(cap, np.float64)
            for i in range(nc):
                d = list_docs[a + perm[i]]
                cent_t[cent_ptr[i]:cent_ptr[i + 1]] = sk_terms[sk_ptr[d]:sk_ptr[d + 1]]
                cent_v[cent_ptr[i]:cent_ptr[i + 1]] = sk_vals[sk_ptr[d]:sk_ptr[d + 1]]
            sizes = np.zeros(nc, np.int64)
            second = np.zeros(n, np.int64)
            seg = assign[a:a + n]
            docs = list_docs[a:a + n]
            for it in range(kmeans_iterations + 1):
                if it > 0:
                    _mean_centroids(docs, sk_ptr, sk_terms, sk_vals, seg, sizes, nc, width, acc, cent_ptr, cent_t,
                                    cent_v)
                _assign_pass(docs, sk_ptr, sk_terms, sk_vals, cent_ptr, cent_t, cent_v, nc, head, seg, second, sizes,
                             it > 0)
            # dissolve clusters below min_cluster_size into each member's runner-up
            if min_cluster_size > 1:
                for p in range(n):
                    ci = seg[p]
                    if sizes[ci] < min_cluster_size and sizes[second[p]] >= min_cluster_size:
                        sizes[ci] -= 1
                        sizes[second[p]] += 1
                        seg[p] = second[p]
    return assign


# --------------------------------------------------------------- summaries
@njit(cache=True, inline="always")
def _block_max(b, block_doc_ptr, block_docs, fwd_ptr, fwd_terms, fwd_vals, doc_scale, mx, touched):
    """Component-wise max of a block's docs into the dense ``mx`` (touched terms listed); returns count."""
    nt = 0
    for p in range(block_doc_ptr[b], block_doc_ptr[b + 1]):
        d = block_docs[p]
        s = doc_scale[d]
        for j in range(fwd_ptr[d], fwd_ptr[d + 1]):
            t = fwd_terms[j]
            v = np.float64(fwd_vals[j]) * s
            if mx[t] == 0.0:
                touched[nt] = t
                nt += 1
            if v > mx[t]:
                mx[t] = v
    return nt


@njit(cache=True, inline="always")
def _quantize_up(v, scale):
    return min(255, np.int64(np.ceil(v / scale * (1.0 + 1e-6))))


@njit(cache=True, inline="always")
def _summary_scale(mx, touched, nt):
    """Per-block float32 scale with headroom: ``q * scale >= max`` holds after rounding, q <= 255."""
    top = 0.0
    for u in range(nt):
        top = max(top, mx[touched[u]])
    return np.float32(top / 255.0 * (1.0 + 4e-6)) if top > 0 else np.float32(1.0)


@njit(cache=True, parallel=True)
def summary_sizes(block_doc_ptr, block_docs, fwd_ptr, fwd_terms, fwd_vals, doc_scale, n_terms, summary_energy,
                  n_chunks):
    """Per block: the alpha cutoff code, how many components at that code to keep, and the
    number of kept components.

    Kept = the largest components whose sum first reaches ``summary_energy`` of the block
    maximum's L1 mass, as Seismic keeps them, decided on the 8-bit codes with a histogram
    (no sorting): every component above the cutoff code, and at the cutoff code only as
    many as the mass still needs (they are equal up to quantization).
    """
    B = block_doc_ptr.shape[0] - 1
    sizes = np.zeros(B, np.int64)
    cutoff = np.zeros(B, np.int64)
    n_at_cut = np.zeros(B, np.int64)
    for c in prange(n_chunks):
        mx = np.zeros(n_terms, np.float64)
        touched = np.empty(n_terms, np.int64)
        cnt = np.zeros(256, np.int64)
        mass = np.zeros(256, np.float64)
        for b in range(c, B, n_chunks):
            nt = _block_max(b, block_doc_ptr, block_docs, fwd_ptr, fwd_terms, fwd_vals, doc_scale, mx, touched)
            if nt == 0:
                continue
            scale = np.float64(_summary_scale(mx, touched, nt))
            total = 0.0
            for u in range(nt):
                v = mx[touched[u]]
                q = _quantize_up(v, scale)
                cnt[q] += 1
                mass[q] += v
                total += v
                mx[touched[u]] = 0.0
            target = summary_energy * total
            acc = 0.0
            n = 0
            q = 255
            while q > 0:
                if cnt[q] > 0 and acc + mass[q] >= target:
                    break
                acc += mass[q]
                n += cnt[q]
                q -= 1
            if q > 0:
                need = min(cnt[q], max(1, np.int64(np.ceil((target - acc) / (mass[q] / cnt[q])))))
            else:
                need = cnt[0]
            cutoff[b] = q
            n_at_cut[b] = need
            sizes[b] = n + need
            for u in range(256):
                cnt[u] = 0
                mass[u] = 0.0
    return sizes, cutoff, n_at_cut


@njit(cache=True, parallel=True)
def fill_summaries(block_doc_ptr, block_docs, fwd_ptr, fwd_terms, fwd_vals, doc_scale, n_terms, cutoff, n_at_cut,
                   sum_ptr, sum_terms, sum_vals, sum_scale, n_chunks):
    """Write each block's pruned summary, 8-bit quantized with a per-block scale (rounded up,
    so that quantization never lowers a summary below the maxima it stands for)."""
    B = block_doc_ptr.shape[0] - 1
    for c in prange(n_chunks):
        mx = np.zeros(n_terms, np.float64)
        touched = np.empty(n_terms, np.int64)
        for b in range(c, B, n_chunks):
            nt = _block_max(b, block_doc_ptr, block_docs, fwd_ptr, fwd_terms, fwd_vals, doc_scale, mx, touched)
            sum_scale[b] = _summary_scale(mx, touched, nt)
            scale = np.float64(sum_scale[b])
            o = sum_ptr[b]
            thr = cutoff[b]
            left_at_cut = n_at_cut[b]
            for u in range(nt):
                t = touched[u]
                q = _quantize_up(mx[t], scale)
                keep = q > thr
                if q == thr and left_at_cut > 0:
                    keep = True
                    left_at_cut -= 1
                if keep and o < sum_ptr[b + 1]:
                    sum_terms[o] = t
                    sum_vals[o] = q
                    o += 1
                mx[t] = 0.0


# -------------------------------------------------------------------- search
@njit(cache=True, inline="always")
def _summary_scores(t, qs_terms, qs_w, term_block_ptr, summaries, ss):
    """``ss[i] = -<q, summary of block i of list t>`` via the list's component-major summary groups.

    A group's directory maps a component to its ordinal in the group: a bitmap over the
    vocabulary with a rank per 64-bit word (dense groups: O(1) a query term), or the sorted
    component ids (sparse groups: binary search, the window shrinking as query terms ascend).
    ``summaries`` is the tuple of the summary arrays (``approximate.SUMMARY_ARRAYS``, in that
    order): one argument, since CPython passes calls of more than 30 arguments as ``*args``,
    which numba cannot inline.
    """
    (term_group_ptr, group_block_ptr, group_comp_ptr, group_term_ptr, group_word_ptr, comp_terms, dir_words,
     dir_rank, comp_first, comp_sample, group_ent_ptr, group_bit_ptr, ent_bits, ent_val, sum_scale) = summaries
    b0 = term_block_ptr[t]
    nb = term_block_ptr[t + 1] - b0
    for i in range(nb):
        ss[i] = 0.0
    one = np.uint64(1)
    for g in range(term_group_ptr[t], term_group_ptr[t + 1]):
        off = group_block_ptr[g] - b0
        c0 = group_comp_ptr[g]
        e0 = group_ent_ptr[g]
        width = block_number_width(group_block_ptr, g)
        mask = (np.int64(1) << width) - 1
        bit0 = group_bit_ptr[g] - e0 * width  # entry e's field is at bit0 + e * width
        w0 = group_word_ptr[g]
        dense = group_word_ptr[g + 1] > w0
        t0 = group_term_ptr[g]
        t1 = group_term_ptr[g + 1]
        lo = t0
        for j in range(qs_terms.shape[0]):
            u = qs_terms[j]
            if dense:
                wi = w0 + (u >> 6)
                word = dir_words[wi]
                bit = np.uint64(u & 63)
                if (word >> bit) & one == 0:
                    continue
                c = c0 + np.int64(dir_rank[wi]) + np.int64(_popcount(word & ((one << bit) - one)))
            else:
                hi = t1
                while lo < hi:
                    mid = (lo + hi) >> 1
                    if np.int64(comp_terms[mid]) < u:
                        lo = mid + 1
                    else:
                        hi = mid
                if lo >= t1:
                    break
                if np.int64(comp_terms[lo]) != u:
                    continue
                c = c0 + (lo - t0)
            a, b = comp_range(c, comp_first, comp_sample)
            w = qs_w[j]
            for e in range(a, b):
                ss[off + block_number(bit0 + e * width, mask, ent_bits)] += w * np.float64(ent_val[e])
    for i in range(nb):
        ss[i] = -ss[i] * np.float64(sum_scale[b0 + i])
    return nb


@njit(cache=True, fastmath=True)
def _forward_dot(loc, cut, qd, fwd_terms, fwd_vals):
    """<q, doc d> over the first ``cut`` entries (``WHOLE``: all) of the forward vector at
    locator ``loc`` (dense query gather).

    Written over slices starting at 0 (no negative-index wraparound to check) and compiled
    with ``fastmath`` so that LLVM vectorizes it with gather instructions (about 2.5x faster
    than the scalar loop). With 8-bit impacts reassociating the sum is exact: every product of
    a snapped query weight and an impact is a multiple of the query grid's unit, and so is
    every partial sum, far below 2**53 units; the score equals exact search's bit for bit
    (float32 impacts may differ in the last bits).
    """
    a, m = _unpack_loc(loc)
    b = a + min(m, cut)
    terms = fwd_terms[a:b]
    vals = fwd_vals[a:b]
    s = 0.0
    for i in range(terms.shape[0]):
        s += qd[terms[i]] * np.float64(vals[i])
    return s


@njit(cache=True, inline="always")
def _dense_query(q_terms, q_weights, qd, V):
    """Snap a query's weights and add them into the dense table ``qd`` (V,) (terms outside
    ``[0, V)`` and weights <= 0 left out); returns its distinct terms ascending (summary
    lookups), their weights, and their order by decreasing weight (the lists to visit)."""
    nq = q_terms.shape[0]
    w = q_weights.copy()
    snap_inplace(w)
    n_ok = 0
    for j in range(nq):
        t = q_terms[j]
        if t >= 0 and t < V and w[j] > 0:
            qd[t] += w[j]
            n_ok += 1
    qs_terms = np.empty(n_ok, np.int64)
    n_ok = 0
    for j in range(nq):
        t = q_terms[j]
        if t >= 0 and t < V and w[j] > 0:
            qs_terms[n_ok] = t
            n_ok += 1
    qs_terms = np.unique(qs_terms)
    qs_w = np.empty(qs_terms.shape[0], np.float64)
    for j in range(qs_terms.shape[0]):
        qs_w[j] = qd[qs_terms[j]]
    return qs_terms, qs_w, np.argsort(-qs_w, kind="mergesort")


@njit(cache=True, inline="always")
def _approx_one(q_terms, q_weights, k, query_cut, heap_factor, forward_cut, rerank, deleted, qd, visited, seen,
                term_block_ptr, block_doc_ptr, block_docs, block_fwd, summaries, fwd_ptr, fwd_terms, fwd_vals,
                doc_scale, out_s, out_d):
    """Seismic query processing for one query; ``qd``/``visited`` are zeroed scratch, left zeroed.

    ``forward_cut`` 0: every document of a scanned block is scored on its whole forward vector.
    ``forward_cut`` m >= 1 (forward vectors stored heaviest entry first): it is scored on its m
    heaviest entries only (fewer cache lines read at random); the block-skipping threshold is
    the k-th best of these partial scores, the ``max(rerank, k)`` best are kept in a pool and
    scored on their whole vectors at the end. Returns the number of documents scored.
    """
    qs_terms, qs_w, order = _dense_query(q_terms, q_weights, qd, term_block_ptr.shape[0] - 1)
    hs = np.empty(k, np.float64)
    hd = np.empty(k, np.int64)
    size = 0
    pooled = forward_cut > 0
    cut_len = forward_cut if pooled else WHOLE
    n_pool = max(rerank, k) if pooled else 0
    ps = np.empty(n_pool, np.float64)
    pd = np.empty(n_pool, np.int64)
    psize = 0
    n_seen = 0
    has_deleted = deleted.shape[0] > 0
    per_doc = doc_scale.shape[0] > 1  # one entry: every document has that scale (one quantization grid)
    cut = min(query_cut, qs_terms.shape[0])
    max_nb = 0
    for oi in range(cut):
        t = qs_terms[order[oi]]
        max_nb = max(max_nb, term_block_ptr[t + 1] - term_block_ptr[t])
    ss = np.empty(max_nb, np.float64)
    for oi in range(cut):
        t = qs_terms[order[oi]]
        b0 = term_block_ptr[t]
        nb = _summary_scores(t, qs_terms, qs_w, term_block_ptr, summaries, ss)
        if nb == 0:
            continue
        border = ss[:0].astype(np.int64)  # block order once sorted (not `order`: query terms')
        for step in range(nb):
            # Most promising block first (Seismic's sorted scan). The first LAZY_PICKS are
            # selected one at a time (often the scan stops there and sorting is wasted work);
            # a scan that goes on sorts the rest (taken blocks, +inf, sort last).
            if step < LAZY_PICKS:
                bi = 0
                bv = ss[0]
                for i in range(1, nb):
                    if ss[i] < bv:
                        bv = ss[i]
                        bi = i
                ss[bi] = np.inf  # taken
            else:
                if step == LAZY_PICKS:
                    border = np.argsort(ss[:nb])
                bi = border[step - LAZY_PICKS]
                bv = ss[bi]
            bs = -bv
            # Seismic's rule: skip a block whose summary score is below heap_factor x the k-th score
            if size == k and bs < heap_factor * hs[0]:
                break
            b = b0 + bi
            pb = block_doc_ptr[b]
            pe = block_doc_ptr[b + 1]
            for p in range(pb, min(pb + PREFETCH_AHEAD, pe)):
                _prefetch_doc(block_fwd[p], cut_len, fwd_terms, fwd_vals)
            for p in range(pb, pe):
                d = block_docs[p]
                if p + PREFETCH_AHEAD < pe:
                    _prefetch_doc(block_fwd[p + PREFETCH_AHEAD], cut_len, fwd_terms, fwd_vals)
                if visited[d]:
                    continue
                visited[d] = True
                seen[n_seen] = d
                n_seen += 1
                if has_deleted and deleted[d]:  # deleted or filtered out: its vector is not read
                    continue
                s = _forward_dot(block_fwd[p], cut_len, qd, fwd_terms, fwd_vals) * (
                    doc_scale[d] if per_doc else doc_scale[0])
                if s > 0:
                    if size < k or s > hs[0] or (s == hs[0] and d < hd[0]):
                        size = _heap_push(hs, hd, size, k, s, d)
                    if pooled and (psize < n_pool or s > ps[0] or (s == ps[0] and d < pd[0])):
                        psize = _heap_push(ps, pd, psize, n_pool, s, d)
    if pooled:  # the pool on whole vectors (every partial score > 0, so every whole one): their top k
        size = _score_whole(pd, psize, qd, fwd_ptr, fwd_terms, fwd_vals, doc_scale, hs, hd)
    for i in range(n_seen):
        visited[seen[i]] = False
    for j in range(qs_terms.shape[0]):
        qd[qs_terms[j]] = 0.0
    _heap_sorted(hs, hd, size, out_s, out_d)
    return n_seen


@njit(cache=True)
def approx_serial(q_indptr, q_terms, q_weights, k, query_cut, heap_factor, forward_cut, rerank, deleted, qd, visited,
                  seen, term_block_ptr, block_doc_ptr, block_docs, block_fwd, summaries, fwd_ptr, fwd_terms, fwd_vals,
                  doc_scale, out_s, out_d):
    """:func:`approx_batch` on the calling thread, with caller-owned zeroed scratch
    (``qd`` float64 (V,), ``visited`` bool (n_docs,), ``seen`` int64 (n_docs,)), left zeroed.
    Returns the number of documents scored (all queries)."""
    scored = 0
    for qi in range(q_indptr.shape[0] - 1):
        a = q_indptr[qi]
        b = q_indptr[qi + 1]
        scored += _approx_one(q_terms[a:b], q_weights[a:b], k, query_cut, heap_factor, forward_cut, rerank, deleted,
                              qd, visited, seen, term_block_ptr, block_doc_ptr, block_docs, block_fwd, summaries,
                              fwd_ptr, fwd_terms, fwd_vals, doc_scale, out_s[qi], out_d[qi])
    return scored


@njit(cache=True, parallel=True)
def approx_batch(q_indptr, q_terms, q_weights, k, query_cut, heap_factor, forward_cut, rerank, deleted, n_docs,
                 term_block_ptr, block_doc_ptr, block_docs, block_fwd, summaries, fwd_ptr, fwd_terms, fwd_vals,
                 doc_scale, out_s, out_d, n_chunks):
    """Approximate top-k for a batch of CSR queries; queries interleaved over ``n_chunks`` workers."""
    V = term_block_ptr.shape[0] - 1
    nq = q_indptr.shape[0] - 1
    for c in prange(n_chunks):
        qd = np.zeros(V, np.float64)
        visited = np.zeros(n_docs, np.bool_)
        seen = np.empty(n_docs, np.int64)
        for qi in range(c, nq, n_chunks):
            a = q_indptr[qi]
            b = q_indptr[qi + 1]
            _approx_one(q_terms[a:b], q_weights[a:b], k, query_cut, heap_factor, forward_cut, rerank, deleted, qd,
                        visited, seen, term_block_ptr, block_doc_ptr, block_docs, block_fwd, summaries, fwd_ptr,
                        fwd_terms, fwd_vals, doc_scale, out_s[qi], out_d[qi])


@njit(cache=True, parallel=True)
def heaviest_first(fwd_ptr, fwd_terms, fwd_vals, term_step):
    """Every forward vector with its entries by decreasing weight (:func:`weight_of`), ties by
    term: new ``(fwd_terms, fwd_vals)``, so
    that a vector's first m entries are its m heaviest (``ApproxParams.forward_cut``)."""
    terms = np.empty_like(fwd_terms)
    vals = np.empty_like(fwd_vals)
    for d in prange(fwd_ptr.shape[0] - 1):
        a = np.int64(fwd_ptr[d])
        b = np.int64(fwd_ptr[d + 1])
        w = np.empty(b - a, np.float64)
        for i in range(b - a):
            w[i] = -weight_of(fwd_vals[a + i], fwd_terms[a + i], term_step)
        o = np.argsort(w, kind="mergesort")  # stable: the terms of equal weights stay ascending
        for i in range(b - a):
            terms[a + i] = fwd_terms[a + o[i]]
            vals[a + i] = fwd_vals[a + o[i]]
    return terms, vals


# ------------------------------------------------------ candidate strategy
@njit(cache=True, parallel=True)
def posting_impacts(term_block_ptr, block_doc_ptr, block_docs, fwd_ptr, fwd_terms, fwd_vals):
    """Impact of list ``t``'s term in the document of every blocked posting of ``t``, read
    from the forward index (a binary search in each document's sorted terms), uint8 (P,); for
    approximate indexes saved before they stored ``block_vals``."""
    out = np.zeros(block_docs.shape[0], fwd_vals.dtype)
    for t in prange(term_block_ptr.shape[0] - 1):
        for p in range(block_doc_ptr[term_block_ptr[t]], block_doc_ptr[term_block_ptr[t + 1]]):
            d = np.int64(block_docs[p])
            lo = np.int64(fwd_ptr[d])
            hi = np.int64(fwd_ptr[d + 1])
            while lo < hi:
                mid = (lo + hi) >> 1
                if np.int64(fwd_terms[mid]) < t:
                    lo = mid + 1
                else:
                    hi = mid
            if lo < fwd_ptr[d + 1] and np.int64(fwd_terms[lo]) == t:
                out[p] = fwd_vals[lo]
    return out


@njit(cache=True, inline="always")
def _locator(fwd_ptr, d):
    """The uint64 forward locator of document ``d`` (as :func:`forward_locators` writes them)."""
    a = np.uint64(fwd_ptr[d])
    return (a << np.uint64(LOC_BITS)) | (np.uint64(fwd_ptr[d + 1]) - a)


@njit(cache=True, inline="always")
def _score_whole(docs, n, qd, fwd_ptr, fwd_terms, fwd_vals, doc_scale, hs, hd):
    """Score the documents ``docs[:n]`` on their whole forward vectors (read through
    ``fwd_ptr``, ``PREFETCH_AHEAD`` documents ahead) into the empty min-heap ``hs``/``hd`` of
    width k (scores > 0 only; ties: lower doc); returns its size."""
    k = hs.shape[0]
    per_doc = doc_scale.shape[0] > 1
    size = 0
    for i in range(min(PREFETCH_AHEAD, n)):
        _prefetch_doc(_locator(fwd_ptr, docs[i]), WHOLE, fwd_terms, fwd_vals)
    for i in range(n):
        if i + PREFETCH_AHEAD < n:
            _prefetch_doc(_locator(fwd_ptr, docs[i + PREFETCH_AHEAD]), WHOLE, fwd_terms, fwd_vals)
        d = docs[i]
        s = _forward_dot(_locator(fwd_ptr, d), WHOLE, qd, fwd_terms, fwd_vals) * (doc_scale[d] if per_doc else doc_scale[0])
        if s > 0:
            if size < k or s > hs[0] or (s == hs[0] and d < hd[0]):
                size = _heap_push(hs, hd, size, k, s, d)
    return size


@njit(cache=True, inline="always")
def _candidates_one(q_terms, q_weights, k, query_cut, n_cand, deleted, qd, acc, seen, term_block_ptr,
                    block_doc_ptr, block_docs, block_vals, fwd_ptr, fwd_terms, fwd_vals, doc_scale, out_s, out_d):
    """The candidate strategy for one query: partial scores over the pruned lists of the
    ``query_cut`` heaviest query terms (term at a time, ``acc``), then the ``n_cand`` best
    documents by partial score scored exactly on the forward index, in document order.

    ``qd`` (V,) float64 and ``acc`` (n_docs,) float64 are zeroed scratch, left zeroed; ``seen``
    (n_docs + 1,) int64 (every posting is written at the next free slot before it is known to be
    new: one slot past the documents). Returns the number of documents scored exactly.
    """
    qs_terms, qs_w, order = _dense_query(q_terms, q_weights, qd, term_block_ptr.shape[0] - 1)
    has_deleted = deleted.shape[0] > 0
    per_doc = doc_scale.shape[0] > 1
    n_seen = 0
    for oi in range(min(query_cut, qs_terms.shape[0])):
        t = qs_terms[order[oi]]
        wt = qs_w[order[oi]]
        for p in range(block_doc_ptr[term_block_ptr[t]], block_doc_ptr[term_block_ptr[t + 1]]):
            d = block_docs[p]
            if (has_deleted and deleted[d]) or block_vals[p] == 0:  # (a 0 would leave the doc looking untouched)
                continue
            a0 = acc[d]
            seen[n_seen] = d  # kept when first touched (every contribution is > 0): no branch to mispredict
            n_seen += a0 == 0.0
            acc[d] = a0 + wt * np.float64(block_vals[p])
    # the n_cand best partial scores (ties: lower doc first), by a min-heap: most documents are
    # refused by one comparison with its root (per-document scales rescale the partial score)
    nc = min(n_cand, n_seen)
    cs = np.empty(nc, np.float64)
    cand = np.empty(nc, np.int64)
    csize = 0
    for i in range(n_seen):
        d = seen[i]
        ps = acc[d] * (doc_scale[d] if per_doc else 1.0)
        acc[d] = 0.0
        if csize < nc or ps > cs[0] or (ps == cs[0] and d < cand[0]):
            csize = _heap_push(cs, cand, csize, nc, ps, d)
    cand.sort()  # document order: the forward index is read front to back
    hs = np.empty(k, np.float64)
    hd = np.empty(k, np.int64)
    size = _score_whole(cand, nc, qd, fwd_ptr, fwd_terms, fwd_vals, doc_scale, hs, hd)
    for j in range(qs_terms.shape[0]):
        qd[qs_terms[j]] = 0.0
    _heap_sorted(hs, hd, size, out_s, out_d)
    return nc


@njit(cache=True)
def candidates_serial(q_indptr, q_terms, q_weights, k, query_cut, n_cand, deleted, qd, acc, seen, term_block_ptr,
                      block_doc_ptr, block_docs, block_vals, fwd_ptr, fwd_terms, fwd_vals, doc_scale, out_s, out_d):
    """The candidate strategy for a batch of CSR queries on the calling thread, with
    caller-owned zeroed scratch (``qd`` float64 (V,), ``acc`` float64 (n_docs,), ``seen`` int64
    (n_docs + 1,)), left zeroed. Returns the number of documents scored exactly (all queries)."""
    scored = 0
    for qi in range(q_indptr.shape[0] - 1):
        a = q_indptr[qi]
        b = q_indptr[qi + 1]
        scored += _candidates_one(q_terms[a:b], q_weights[a:b], k, query_cut, n_cand, deleted, qd, acc, seen,
                                  term_block_ptr, block_doc_ptr, block_docs, block_vals, fwd_ptr, fwd_terms, fwd_vals,
                                  doc_scale, out_s[qi], out_d[qi])
    return scored


@njit(cache=True, parallel=True)
def candidates_batch(q_indptr, q_terms, q_weights, k, query_cut, n_cand, deleted, n_docs, term_block_ptr,
                     block_doc_ptr, block_docs, block_vals, fwd_ptr, fwd_terms, fwd_vals, doc_scale, out_s, out_d,
                     n_chunks):
    """:func:`candidates_serial` with the queries interleaved over ``n_chunks`` workers."""
    V = term_block_ptr.shape[0] - 1
    nq = q_indptr.shape[0] - 1
    for c in prange(n_chunks):
        qd = np.zeros(V, np.float64)
        acc = np.zeros(n_docs, np.float64)
        seen = np.empty(n_docs + 1, np.int64)
        for qi in range(c, nq, n_chunks):
            a = q_indptr[qi]
            b = q_indptr[qi + 1]
            _candidates_one(q_terms[a:b], q_weights[a:b], k, query_cut, n_cand, deleted, qd, acc, seen,
                            term_block_ptr, block_doc_ptr, block_docs, block_vals, fwd_ptr, fwd_terms, fwd_vals,
                            doc_scale, out_s[qi], out_d[qi])


# ------------------------------------------------- component-major summaries
@njit(cache=True)
def summary_groups(term_block_ptr, sum_ptr, max_blocks, max_entries):
    """Split every list's blocks into runs of consecutive blocks, the *summary groups*: at most
    ``max_blocks`` blocks and (unless one block alone has more) ``max_entries`` summary entries each,
    so that a block number within its group fits a byte and an entry offset 16 bits.
    Returns ``group_block_ptr`` int64 (G+1,): group ``g`` holds blocks ``[ptr[g], ptr[g+1])``."""
    V = term_block_ptr.shape[0] - 1
    out = np.empty(term_block_ptr[V] + 1, np.int64)
    G = 0
    for t in range(V):
        b = term_block_ptr[t]
        end = term_block_ptr[t + 1]
        while b < end:
            out[G] = b
            G += 1
            e = b + 1
            while e < end and e - b < max_blocks and sum_ptr[e + 1] - sum_ptr[b] <= max_entries:
                e += 1
            b = e
    out[G] = term_block_ptr[V]
    return out[:G + 1].copy()


@njit(cache=True, parallel=True)
def component_major_sizes(group_block_ptr, sum_ptr, sum_terms, n_terms, n_chunks):
    """Number of distinct summary components of every summary group (``group_block_ptr``)."""
    G = group_block_ptr.shape[0] - 1
    ncomp = np.zeros(G, np.int64)
    for c in prange(n_chunks):
        seen = np.zeros(n_terms, np.bool_)
        touched = np.empty(n_terms, np.int64)
        for g in range(c, G, n_chunks):
            n = 0
            for e in range(sum_ptr[group_block_ptr[g]], sum_ptr[group_block_ptr[g + 1]]):
                u = sum_terms[e]
                if not seen[u]:
                    seen[u] = True
                    touched[n] = u
                    n += 1
            for i in range(n):
                seen[touched[i]] = False
            ncomp[g] = n
    return ncomp


@njit(cache=True, parallel=True)
def component_major_fill(group_block_ptr, sum_ptr, sum_terms, sum_vals, n_terms, comp_ptr, comp_terms, comp_start,
                         ent_block, ent_val, n_chunks):
    """Regroup the summaries of each summary group by component (ascending), blocks ascending inside
    a component; ``ent_block`` is the block's number within its group."""
    G = group_block_ptr.shape[0] - 1
    for c in prange(n_chunks):
        cnt = np.zeros(n_terms, np.int64)
        touched = np.empty(n_terms, np.int64)
        for g in range(c, G, n_chunks):
            b0 = group_block_ptr[g]
            e0 = sum_ptr[b0]
            e1 = sum_ptr[group_block_ptr[g + 1]]
            n = 0
            for e in range(e0, e1):
                u = sum_terms[e]
                if cnt[u] == 0:
                    touched[n] = u
                    n += 1
                cnt[u] += 1
            terms = np.sort(touched[:n])
            o = 0
            c0 = comp_ptr[g]
            for i in range(n):  # cnt becomes the next write position (relative to the group)
                u = terms[i]
                comp_terms[c0 + i] = u
                comp_start[c0 + i] = o
                k = cnt[u]
                cnt[u] = o
                o += k
            for b in range(b0, group_block_ptr[g + 1]):
                for e in range(sum_ptr[b], sum_ptr[b + 1]):
                    u = sum_terms[e]
                    pos = e0 + cnt[u]
                    ent_block[pos] = b - b0
                    ent_val[pos] = sum_vals[e]
                    cnt[u] += 1
            for i in range(n):
                cnt[terms[i]] = 0


@njit(cache=True, parallel=True)
def dense_directories(group_comp_ptr, comp_terms, group_word_ptr, dir_words, dir_rank, n_chunks):
    """Bitmap (one bit per vocabulary term) and per-word rank of every dense group's components."""
    G = group_comp_ptr.shape[0] - 1
    for c in prange(n_chunks):
        for g in range(c, G, n_chunks):
            w0 = group_word_ptr[g]
            w1 = group_word_ptr[g + 1]
            if w1 == w0:
                continue
            for w in range(w0, w1):
                dir_words[w] = 0
            for i in range(group_comp_ptr[g], group_comp_ptr[g + 1]):
                u = np.int64(comp_terms[i])
                dir_words[w0 + (u >> 6)] |= np.uint64(1) << np.uint64(u & 63)
            r = 0
            for w in range(w0, w1):
                dir_rank[w] = r
                r += np.int64(_popcount(dir_words[w]))
