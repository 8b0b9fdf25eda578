"""Numba hot loops: posting inversion, block bit-packing, and block-max MaxScore top-k.

Posting format (per term, documents ascending), as in PISA's block codecs:

* postings are cut into blocks of ``BLOCK`` (128) entries;
* each block stores its last doc id (``block_last``), the largest impact in it
  (``block_max``) and a bit width (``block_bits``);
* doc ids are stored as d-gaps minus one (the first gap is taken from the previous block's
  last doc + 1, or from 0), frame-of-reference packed into ``uint32`` words, least
  significant bits first. The ``"byte"`` codec (default) rounds each block's width up to 0,
  8, 16 or 32 bits, so a gap is one shift and mask away and decoding fuses with scoring at
  about a third of the cost of arbitrary widths (``"bitpack"``, smaller postings);
  both are the same format, and the decoder reads either;
* impacts stay one byte each (8-bit quantization) or float32, uncompressed, so that scoring
  a posting never needs decoding beyond its doc id.

Search is *block-max MaxScore* (Turtle & Flood's MaxScore with the block-max refinement of
Ding & Suel / Chakrabarti et al., PISA's ``block_max_maxscore``), evaluated over doc-id
windows as Lucene's MaxScoreBulkScorer does (see :func:`_maxscore_one`). We choose MaxScore
over WAND because learned sparse queries are long (tens of terms), where WAND's per-posting
pivot selection costs most and MaxScore's essential/non-essential split pays off most
("Wacky Weights", Mackenzie et al. 2021); the window form replaces per-posting cursor
juggling with tight accumulation loops, so that it never loses to exhaustive scoring.

Rank safety: scores are float64 sums of ``query_weight * impact``. Query weights are snapped
to a grid of 2**-s with at most 20 significant bits (``snap_query_weights``), so with 8-bit
impacts every product and every partial sum is an exact binary fraction: pruning bounds and
final scores are computed without rounding, and ties are broken by ascending doc id. The
result equals a brute-force product on the same quantized weights, bit for bit.
"""

from __future__ import annotations

import sys

import numba as nb
import numpy as np
from numba import njit, prange

from .format import BLOCK, SNAP_BITS, WINDOW

LITTLE_ENDIAN = sys.byteorder == "little"  # a compile-time constant for numba


@njit(cache=True)
def snap_inplace(w):
    """Round query weights to a power-of-two grid with <= 20 significant bits, in place.

    The relative error is below 2**-20 of the query's largest weight, far under any
    effectiveness difference, and it makes all score arithmetic exact (module docstring).
    Multiplying and dividing by a power of two is exact, so this is deterministic.
    """
    m = 0.0
    for x in w:
        if x > m:
            m = x
    if m <= 0.0:
        return
    s = SNAP_BITS - np.int64(np.ceil(np.log2(m) + 1e-12))
    p = 2.0 ** s
    for i in range(w.shape[0]):
        w[i] = np.round(w[i] * p) / p if w[i] > 0 else 0.0


@njit(cache=True)
def snap_rows(indptr, weights):
    """Snapped copy of CSR query weights, each row on its own grid (see :func:`snap_inplace`)."""
    out = weights.copy()
    for i in range(indptr.shape[0] - 1):
        snap_inplace(out[indptr[i]:indptr[i + 1]])
    return out


def snap_query_weights(values: np.ndarray) -> np.ndarray:
    """Snapped float64 copy of one query's weights."""
    out = np.asarray(values, dtype=np.float64).copy()
    snap_inplace(out)
    return out


@njit(cache=True)
def scale_snap_rows(q_indptr, q_terms, q_weights, scales, ref_scales):
    """Query weights for a segment of per-term scales: ``w * scales[t]`` (the scale arrays end
    with a 0 that term ids < 0 or beyond them map to), snapped per row to the power-of-two grid
    that keeps ``SNAP_BITS - 1`` significant bits of the row's largest ``w * ref_scales[t]``.

    ``ref_scales`` (the index-wide grid) is at least ``scales`` wherever a term has postings, so
    every segment of one grid snaps alike, and the grid is one bit coarser than
    :func:`snap_inplace`'s, which therefore leaves these weights as they are. Entries outside
    the rows ``q_indptr`` are copied as given.
    """
    out = q_weights.astype(np.float64)
    ns = scales.shape[0] - 1
    nr = ref_scales.shape[0] - 1
    for i in range(q_indptr.shape[0] - 1):
        a = q_indptr[i]
        b = q_indptr[i + 1]
        m = 0.0
        for j in range(a, b):
            t = q_terms[j]
            r = q_weights[j] * ref_scales[t if 0 <= t < nr else nr]
            if r > m:
                m = r
        p = 1.0
        if m > 0.0:
            p = 2.0 ** (SNAP_BITS - 1 - np.int64(np.ceil(np.log2(m) + 1e-12)))
        for j in range(a, b):
            t = q_terms[j]
            w = q_weights[j] * scales[t if 0 <= t < ns else ns]
            out[j] = np.round(w * p) / p if w > 0 else 0.0
    return out


# ---------------------------------------------------------------- inversion
@njit(cache=True)
def invert(indptr, indices, impacts, n_terms):
    """CSR (doc -> terms) to postings (term -> docs), docs ascending within a term.

    Returns ``(term_post_ptr int64 (V+1,), post_docs uint32 (nnz,), post_impacts (nnz,))``.
    Entries whose impact is 0 are dropped (they cannot contribute to a score).
    """
    n_docs = indptr.shape[0] - 1
    df = np.zeros(n_terms, np.int64)
    for j in range(indices.shape[0]):
        if impacts[j] > 0:
            df[indices[j]] += 1
    ptr = np.zeros(n_terms + 1, np.int64)
    for t in range(n_terms):
        ptr[t + 1] = ptr[t] + df[t]
    cursor = ptr[:-1].copy()
    docs = np.empty(ptr[n_terms], np.uint32)
    imps = np.empty(ptr[n_terms], impacts.dtype)
    for d in range(n_docs):
        for j in range(indptr[d], indptr[d + 1]):
            if impacts[j] > 0:
                t = indices[j]
                p = cursor[t]
                docs[p] = d
                imps[p] = impacts[j]
                cursor[t] = p + 1
    return ptr, docs, imps


# ------------------------------------------------------------- bit packing
@njit(cache=True, inline="always")
def _bit_width(x):
    b = 0
    while x > 0:
        b += 1
        x >>= 1
    return b


@njit(cache=True, inline="always")
def _byte_width(bits):
    return 0 if bits == 0 else (8 if bits <= 8 else (16 if bits <= 16 else 32))


@njit(cache=True)
def build_blocks(term_post_ptr, post_docs, post_impacts, byte_aligned=True):
    """Cut every posting list into blocks and bit-pack the doc gaps.

    With ``byte_aligned``, block widths are rounded up to 8, 16 or 32 bits (the ``"byte"``
    codec: faster to decode), else they are the smallest width holding the block's gaps.

    Returns ``(term_block_ptr int64 (V+1,), block_last uint32, block_max, block_bits uint8,
    block_word_ptr int64 (B+1,), words uint32)``.
    """
    n_terms = term_post_ptr.shape[0] - 1
    term_block_ptr = np.zeros(n_terms + 1, np.int64)
    for t in range(n_terms):
        df = term_post_ptr[t + 1] - term_post_ptr[t]
        term_block_ptr[t + 1] = term_block_ptr[t] + (df + BLOCK - 1) // BLOCK
    n_blocks = term_block_ptr[n_terms]
    block_last = np.empty(n_blocks, np.uint32)
    block_max = np.empty(n_blocks, post_impacts.dtype)
    block_bits = np.empty(n_blocks, np.uint8)
    block_word_ptr = np.zeros(n_blocks + 1, np.int64)
    # pass 1: block metadata and sizes
    for t in range(n_terms):
        a = term_post_ptr[t]
        e = term_post_ptr[t + 1]
        prev = np.int64(-1)
        for b in range(term_block_ptr[t], term_block_ptr[t + 1]):
            s = a + (b - term_block_ptr[t]) * BLOCK
            n = min(BLOCK, e - s)
            mx_gap = np.int64(0)
            mx_imp = post_impacts[s]
            for i in range(n):
                d = np.int64(post_docs[s + i])
                gap = d - prev - 1
                prev = d
                if gap > mx_gap:
                    mx_gap = gap
                if post_impacts[s + i] > mx_imp:
                    mx_imp = post_impacts[s + i]
            bits = _bit_width(mx_gap)
            if byte_aligned:
                bits = _byte_width(bits)
            block_last[b] = post_docs[s + n - 1]
            block_max[b] = mx_imp
            block_bits[b] = bits
            block_word_ptr[b + 1] = block_word_ptr[b] + (n * bits + 31) // 32
    # pass 2: pack (one trailing padding word lets the decoder always read two words)
    words = np.zeros(block_word_ptr[n_blocks] + 1, np.uint32)
    for t in range(n_terms):
        a = term_post_ptr[t]
        e = term_post_ptr[t + 1]
        prev = np.int64(-1)
        for b in range(term_block_ptr[t], term_block_ptr[t + 1]):
            s = a + (b - term_block_ptr[t]) * BLOCK
            n = min(BLOCK, e - s)
            bits = np.int64(block_bits[b])
            w0 = block_word_ptr[b]
            bitpos = np.int64(0)
            for i in range(n):
                d = np.int64(post_docs[s + i])
                gap = np.uint64(d - prev - 1)
                prev = d
                if bits == 0:
                    continue
                wi = w0 + (bitpos >> 5)
                off = bitpos & 31
                words[wi] |= np.uint32((gap << np.uint64(off)) & np.uint64(0xFFFFFFFF))
                if off + bits > 32:
                    words[wi + 1] |= np.uint32(gap >> np.uint64(32 - off))
                bitpos += bits
    return term_block_ptr, block_last, block_max, block_bits, block_word_ptr, words


@njit(cache=True, inline="always")
def _gap(words, w0, bits, i):
    """Gap ``i`` of a block whose width is 8, 16 or 32 bits: one load, shift and mask."""
    if bits == 8:
        return np.int64((words[w0 + (i >> 2)] >> np.uint32((i & 3) << 3)) & np.uint32(0xFF))
    if bits == 16:
        return np.int64((words[w0 + (i >> 1)] >> np.uint32((i & 1) << 4)) & np.uint32(0xFFFF))
    return np.int64(words[w0 + i])


@njit(cache=True, inline="always")
def decode_block(words, w0, bits, n, base, out):
    """Unpack ``n`` doc ids of a block into ``out[:n]``; ``base`` = previous block last + 1 (or 0).

    Byte-aligned widths (8/16/32) take a shift-and-mask loop; any other width is read
    branch-free from a 64-bit window over two words (``words`` carries one padding word at
    its end for the last block).
    """
    d = np.int64(base) - 1
    if bits == 0:
        for i in range(n):
            d += 1
            out[i] = d
        return
    if bits == 8 or bits == 16 or bits == 32:
        for i in range(n):
            d += _gap(words, w0, bits, i) + 1
            out[i] = d
        return
    nbits = np.int64(bits)
    mask = np.uint64((1 << nbits) - 1)
    bitpos = np.int64(0)
    for i in range(n):
        wi = w0 + (bitpos >> 5)
        v = (np.uint64(words[wi]) | (np.uint64(words[wi + 1]) << np.uint64(32))) >> np.uint64(bitpos & 31)
        d += np.int64(v & mask) + 1
        out[i] = d
        bitpos += nbits


@njit(cache=True, inline="always")
def _block_base(term_block_ptr_t, b, block_last):
    return np.int64(0) if b == term_block_ptr_t else np.int64(block_last[b - 1]) + 1


@njit(cache=True)
def decode_postings(t, term_block_ptr, term_post_ptr, block_last, block_bits, block_word_ptr, words, out):
    """Decode all doc ids of term ``t`` into ``out`` (length >= df)."""
    buf = np.empty(BLOCK, np.int64)
    tb = term_block_ptr[t]
    df = term_post_ptr[t + 1] - term_post_ptr[t]
    for b in range(tb, term_block_ptr[t + 1]):
        i0 = (b - tb) * BLOCK
        n = min(BLOCK, df - i0)
        decode_block(words, block_word_ptr[b], block_bits[b], n, _block_base(tb, b, block_last), buf)
        for i in range(n):
            out[i0 + i] = buf[i]


@njit(cache=True, inline="always")
def _seek_block(blk, e, d, block_last):
    """First block in ``[blk, e)`` whose last doc is ``>= d`` (``e``: none), galloping from ``blk``."""
    if blk >= e or np.int64(block_last[blk]) >= d:
        return blk
    lo = blk + 1
    hi = lo
    step = 1
    while hi < e and np.int64(block_last[hi]) < d:
        lo = hi + 1
        hi += step
        step *= 2
    if hi > e:
        hi = e
    while lo < hi:
        mid = (lo + hi) // 2
        if np.int64(block_last[mid]) < d:
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(cache=True)
def lookup_impacts(terms, doc, term_block_ptr, term_post_ptr, block_last, block_bits, block_word_ptr, words,
                   impacts):
    """Impact of ``doc`` in each term's posting list (0 where absent), float64 (len(terms),)."""
    out = np.zeros(terms.shape[0], np.float64)
    buf = np.empty(BLOCK, np.int64)
    for j in range(terms.shape[0]):
        t = terms[j]
        tb = term_block_ptr[t]
        b = _seek_block(tb, term_block_ptr[t + 1], doc, block_last)  # first block whose last doc >= doc
        if b == term_block_ptr[t + 1]:
            continue
        df = term_post_ptr[t + 1] - term_post_ptr[t]
        i0 = (b - tb) * BLOCK
        n = min(BLOCK, df - i0)
        decode_block(words, block_word_ptr[b], block_bits[b], n, _block_base(tb, b, block_last), buf)
        for i in range(n):
            if buf[i] == doc:
                out[j] = impacts[term_post_ptr[t] + i0 + i]
                break
    return out


# ------------------------------------------------------------------ top-k heap
@njit(cache=True, inline="always")
def _worse(s1, d1, s2, d2):
    """(s1, d1) ranks below (s2, d2): lower score, or equal score and higher doc id."""
    return s1 < s2 or (s1 == s2 and d1 > d2)


@njit(cache=True)
def _heap_push(hs, hd, size, k, s, d):
    """Insert into a min-heap of the k best (root = worst); returns the new size."""
    if size < k:
        i = size
        size += 1
        hs[i] = s
        hd[i] = d
        while i > 0:
            p = (i - 1) // 2
            if _worse(hs[i], hd[i], hs[p], hd[p]):
                hs[i], hs[p] = hs[p], hs[i]
                hd[i], hd[p] = hd[p], hd[i]
                i = p
            else:
                break
        return size
    if not _worse(hs[0], hd[0], s, d):
        return size
    hs[0] = s
    hd[0] = d
    i = 0
    while True:
        l = 2 * i + 1
        r = l + 1
        m = i
        if l < size and _worse(hs[l], hd[l], hs[m], hd[m]):
            m = l
        if r < size and _worse(hs[r], hd[r], hs[m], hd[m]):
            m = r
        if m == i:
            break
        hs[i], hs[m] = hs[m], hs[i]
        hd[i], hd[m] = hd[m], hd[i]
        i = m
    return size


@njit(cache=True)
def _heap_sorted(hs, hd, size, out_s, out_d):
    """Write the heap's entries best-first into out arrays (padding: score 0, doc -1)."""
    order = np.argsort(-hs[:size], kind="mergesort")
    # equal scores: ascending doc id (argsort of -score is stable; fix ties explicitly)
    ss = hs[:size][order]
    dd = hd[:size][order]
    i = 0
    while i < size:
        j = i + 1
        while j < size and ss[j] == ss[i]:
            j += 1
        if j - i > 1:
            dd[i:j] = np.sort(dd[i:j])
        i = j
    for i in range(out_s.shape[0]):
        if i < size:
            out_s[i] = ss[i]
            out_d[i] = dd[i]
        else:
            out_s[i] = 0.0
            out_d[i] = -1


# ------------------------------------------------------ block-max MaxScore


@njit(cache=True, inline="always")
def _accumulate_window(i, t, w, w0, w1, nt, track, blk, blk_end, pos, dec, buf, acc, touched, term_block_ptr,
                       term_post_ptr, block_last, block_bits, block_word_ptr, words, impacts):
    """Add ``w * impact`` of list ``i``'s postings in [w0, w1) to ``acc``.

    With ``track``, first-touched window offsets are appended to ``touched``; returns the
    touched count. Blocks that end inside the window take a loop without per-posting checks.
    """
    tb = term_block_ptr[t]
    base_post = term_post_ptr[t]
    df = term_post_ptr[t + 1] - base_post
    while blk[i] < blk_end[i]:
        b = blk[i]
        n = min(BLOCK, df - (b - tb) * BLOCK)
        last = np.int64(block_last[b])
        if dec[i] != b:
            if last < w0:  # whole block before the window: skip undecoded
                blk[i] = b + 1
                continue
            decode_block(words, block_word_ptr[b], block_bits[b], n, _block_base(tb, b, block_last), buf[i])
            dec[i] = b
            pos[i] = 0
        q = pos[i]
        while q < n and buf[i, q] < w0:
            q += 1
        ip = base_post + (b - tb) * BLOCK
        if last < w1:  # the rest of the block lies inside the window
            if track:
                for qq in range(q, n):
                    jj = buf[i, qq] - w0
                    if acc[jj] == 0.0:
                        touched[nt] = jj
                        nt += 1
                    acc[jj] += w * np.float64(impacts[ip + qq])
            else:
                for qq in range(q, n):
                    acc[buf[i, qq] - w0] += w * np.float64(impacts[ip + qq])
            pos[i] = n
            blk[i] = b + 1
            continue
        while q < n:
            d = buf[i, q]
            if d >= w1:
                break
            jj = d - w0
            if track and acc[jj] == 0.0:
                touched[nt] = jj
                nt += 1
            acc[jj] += w * np.float64(impacts[ip + q])
            q += 1
        pos[i] = q
        break
    return nt


@njit(cache=True)
def _maxscore_one(q_terms, q_weights, k, deleted, term_block_ptr, term_post_ptr, term_max, block_last,
                  block_max, block_bits, block_word_ptr, words, impacts, out_s, out_d):
    """Exact top-k of one query over one segment: windowed block-max MaxScore.

    Query terms are ordered by upper bound ``ub = weight * max impact``. Once the heap holds
    ``k`` documents with worst score ``theta``, the longest prefix of terms whose bounds sum
    to ``<= theta`` is *non-essential*: a document found only there cannot enter the top-k.
    The doc-id space is swept in windows of ``WINDOW`` documents (as Lucene's
    MaxScoreBulkScorer does): essential lists are scored term-at-a-time into a dense window
    accumulator (cache-resident, no per-posting cursor logic), then each candidate, in doc
    order, probes the non-essential lists with skipping, giving up as soon as its score plus
    the remaining (block-max refined) bounds cannot beat ``theta``. A window whose essential
    block maxima plus the non-essential bounds cannot beat ``theta`` is skipped undecoded.
    Documents are finalised in increasing doc order, so a tie with ``theta`` always loses
    (ties rank by ascending doc id) and every pruning test can use ``<=``.
    """
    m0 = q_terms.shape[0]
    has_deleted = deleted.shape[0] > 0
    n_seg_terms = term_post_ptr.shape[0] - 1
    q_weights = q_weights.copy()
    snap_inplace(q_weights)
    ub_all = np.empty(m0, np.float64)
    for i in range(m0):
        t = q_terms[i]
        if q_weights[i] > 0 and 0 <= t < n_seg_terms and term_post_ptr[t + 1] > term_post_ptr[t]:
            ub_all[i] = q_weights[i] * np.float64(term_max[t])
        else:
            ub_all[i] = -1.0
    order = np.argsort(ub_all, kind="mergesort")
    m = 0
    for i in range(m0):
        if ub_all[i] >= 0:
            m += 1
    terms = np.empty(m, np.int64)
    qw = np.empty(m, np.float64)
    cum = np.empty(m, np.float64)  # cum[i] = ub[0] + ... + ub[i]
    j = 0
    acc_ub = 0.0
    for i in order:
        if ub_all[i] >= 0:
            terms[j] = q_terms[i]
            qw[j] = q_weights[i]
            acc_ub += ub_all[i]
            cum[j] = acc_ub
            j += 1
    hs = np.empty(k, np.float64)
    hd = np.empty(k, np.int64)
    size = 0
    if m == 0:
        _heap_sorted(hs, hd, 0, out_s, out_d)
        return

    blk = np.empty(m, np.int64)       # current block of each cursor (absolute index)
    blk_end = np.empty(m, np.int64)
    pos = np.zeros(m, np.int64)       # next entry inside the decoded block
    dec = np.full(m, -1, np.int64)    # block currently decoded in buf[i]
    buf = np.empty((m, BLOCK), np.int64)
    end_doc = np.int64(0)
    for i in range(m):
        t = terms[i]
        blk[i] = term_block_ptr[t]
        blk_end[i] = term_block_ptr[t + 1]
        last = np.int64(block_last[blk_end[i] - 1]) + 1
        if last > end_doc:
            end_doc = last
    acc = np.zeros(WINDOW, np.float64)
    touched = np.empty(WINDOW, np.int64)
    theta = -1.0
    p = 0  # terms [0, p) are non-essential
    w0 = np.int64(0)
    while w0 < end_doc and p < m:
        # jump over doc ranges no essential list covers
        nxt = end_doc
        for i in range(p, m):
            if blk[i] < blk_end[i]:
                if dec[i] == blk[i]:
                    lo = buf[i, pos[i]]
                else:
                    lo = _block_base(term_block_ptr[terms[i]], blk[i], block_last)
                if lo < nxt:
                    nxt = lo
        if nxt > w0:
            w0 = nxt
        if w0 >= end_doc:
            break
        w1 = w0 + WINDOW
        rest_all = cum[p - 1] if p > 0 else 0.0
        if size == k:
            # block-max bound of the whole window
            ub = rest_all
            for i in range(p, m):
                b = blk[i]
                bm = 0.0
                while b < blk_end[i]:
                    v = np.float64(block_max[b])
                    if v > bm:
                        bm = v
                    if np.int64(block_last[b]) >= w1:
                        break
                    b += 1
                ub += qw[i] * bm
            if ub <= theta:
                for i in range(p, m):
                    b = blk[i]
                    while b < blk_end[i] and np.int64(block_last[b]) < w1:
                        b += 1
                    blk[i] = b
                w0 = w1
                continue
        # essential lists, term-at-a-time into the window accumulator; when their postings in
        # the window will touch most of it anyway, skip tracking and scan the window instead
        est = 0
        for i in range(p, m):
            b = blk[i]
            c = b
            while c < blk_end[i]:
                c += 1
                if np.int64(block_last[c - 1]) >= w1:
                    break
            est += (c - b) * BLOCK
        track = est * 4 < WINDOW
        nt = 0
        for i in range(p, m):
            nt = _accumulate_window(i, terms[i], qw[i], w0, w1, nt, track, blk, blk_end, pos, dec, buf, acc,
                                    touched, term_block_ptr, term_post_ptr, block_last, block_bits, block_word_ptr,
                                    words, impacts)
        if not track:
            nt = WINDOW  # unknown: treat as dense
        pw = p  # lists accumulated in this window need no probing for its candidates
        if pw > 0 and nt > 0:
            # Probing costs per candidate and list; accumulating costs per posting. Take the
            # cheaper for this window (both give exact scores).
            est_post = 0
            for i in range(pw):
                b = blk[i]
                while b < blk_end[i] and np.int64(block_last[b]) < w0:
                    b += 1
                c = b
                while c < blk_end[i]:
                    c += 1
                    if np.int64(block_last[c - 1]) >= w1:
                        break
                est_post += (c - b) * BLOCK
            if est_post <= 4 * nt * pw:
                for i in range(pw):
                    nt = _accumulate_window(i, terms[i], qw[i], w0, w1, nt, track, blk, blk_end, pos, dec, buf,
                                            acc, touched, term_block_ptr, term_post_ptr, block_last, block_bits,
                                            block_word_ptr, words, impacts)
                if not track:
                    nt = WINDOW
                pw = 0
                rest_all = 0.0
        if nt == 0:
            w0 = w1
            continue
        # candidates in doc order: sort a sparse window, scan a dense one
        dense = nt * 8 > WINDOW
        if dense:
            n_cand = min(WINDOW, end_doc - w0)
        else:
            touched[:nt] = np.sort(touched[:nt])
            n_cand = nt
        for c in range(n_cand):
            jj = c if dense else touched[c]
            s = acc[jj]
            if s == 0.0:
                continue
            acc[jj] = 0.0
            d = w0 + jj
            if s + rest_all <= theta or (has_deleted and deleted[d]):  # deleted / filtered out: no probing
                continue
            alive = True
            for i in range(pw - 1, -1, -1):
                if s + cum[i] <= theta:
                    alive = False
                    break
                t = terms[i]
                b = blk[i]
                while b < blk_end[i] and np.int64(block_last[b]) < d:
                    b += 1
                blk[i] = b
                if b >= blk_end[i]:
                    continue
                rest = cum[i - 1] if i > 0 else 0.0
                if s + qw[i] * np.float64(block_max[b]) + rest <= theta:
                    alive = False
                    break
                tb = term_block_ptr[t]
                if dec[i] != b:
                    df = term_post_ptr[t + 1] - term_post_ptr[t]
                    n = min(BLOCK, df - (b - tb) * BLOCK)
                    decode_block(words, block_word_ptr[b], block_bits[b], n, _block_base(tb, b, block_last), buf[i])
                    dec[i] = b
                    pos[i] = 0
                q = pos[i]
                while buf[i, q] < d:
                    q += 1
                pos[i] = q
                if buf[i, q] == d:
                    s += qw[i] * np.float64(impacts[term_post_ptr[t] + (b - tb) * BLOCK + q])
            if alive and s > theta:
                size = _heap_push(hs, hd, size, k, s, d)
                if size == k:
                    theta = hs[0]
                    while p < m and cum[p] <= theta:
                        p += 1
        w0 = w1
    _heap_sorted(hs, hd, size, out_s, out_d)


@njit(cache=True)
def maxscore_serial(q_indptr, q_terms, q_weights, k, deleted, term_block_ptr, term_post_ptr, term_max, block_last,
                    block_max, block_bits, block_word_ptr, words, impacts, out_s, out_d):
    """:func:`maxscore_batch` on the calling thread (no thread-pool dispatch: single queries)."""
    for qi in range(q_indptr.shape[0] - 1):
        a = q_indptr[qi]
        b = q_indptr[qi + 1]
        _maxscore_one(q_terms[a:b], q_weights[a:b], k, deleted, term_block_ptr, term_post_ptr, term_max,
                      block_last, block_max, block_bits, block_word_ptr, words, impacts, out_s[qi], out_d[qi])


@njit(cache=True, parallel=True)
def maxscore_batch(q_indptr, q_terms, q_weights, k, deleted, term_block_ptr, term_post_ptr, term_max, block_last,
                   block_max, block_bits, block_word_ptr, words, impacts, out_s, out_d):
    """Top-k for a batch of queries (CSR), one query per thread; fills ``out_s``/``out_d`` (nq, k).

    Query weights are raw (they are snapped here); term ids < 0 or unknown to the segment
    are ignored.
    """
    nq = q_indptr.shape[0] - 1
    for qi in prange(nq):
        a = q_indptr[qi]
        b = q_indptr[qi + 1]
        _maxscore_one(q_terms[a:b], q_weights[a:b], k, deleted, term_block_ptr, term_post_ptr, term_max,
                      block_last, block_max, block_bits, block_word_ptr, words, impacts, out_s[qi], out_d[qi])


# ------------------------------------------------- term-at-a-time, dense accumulator
CHUNK = 16  # documents per chunk maximum in dense top-k selection


@njit(cache=True, inline="always")
def _accumulate_list(t, w, term_block_ptr, term_post_ptr, block_bits, block_word_ptr, words, w8, w16, impacts,
                     acc, buf):
    """``acc[doc] += w * impact`` over the posting list of term ``t``.

    Byte-aligned blocks are decoded inside the scoring loop (no buffer round trip), reading
    8- and 16-bit gaps through byte views ``w8``/``w16`` of ``words`` (packing is least
    significant bits first, so on a little-endian host gap ``i`` is element ``i`` of the view).
    """
    tb = term_block_ptr[t]
    p = term_post_ptr[t]
    end = term_post_ptr[t + 1]
    d = np.int64(-1)  # the last doc id decoded: d-gaps chain across blocks
    for b in range(tb, term_block_ptr[t + 1]):
        n = min(BLOCK, end - p)
        bits = block_bits[b]
        w0 = block_word_ptr[b]
        if bits == 8 and LITTLE_ENDIAN:
            o = w0 * 4
            for i in range(n):
                d += np.int64(w8[o + i]) + 1
                acc[d] += w * np.float64(impacts[p + i])
        elif bits == 16 and LITTLE_ENDIAN:
            o = w0 * 2
            for i in range(n):
                d += np.int64(w16[o + i]) + 1
                acc[d] += w * np.float64(impacts[p + i])
        elif bits == 0:
            for i in range(n):
                d += 1
                acc[d] += w * np.float64(impacts[p + i])
        elif bits == 32:
            for i in range(n):
                d += np.int64(words[w0 + i]) + 1
                acc[d] += w * np.float64(impacts[p + i])
        else:
            decode_block(words, w0, bits, n, d + 1, buf)
            for i in range(n):
                acc[buf[i]] += w * np.float64(impacts[p + i])
            d = buf[n - 1]
        p += n


@njit(cache=True, inline="always")
def _chunk_max(acc, a, e):
    """Largest of ``acc[a:e]`` (and 0); four independent maxima so the loop pipelines."""
    m0 = 0.0
    m1 = 0.0
    m2 = 0.0
    m3 = 0.0
    d = a
    while d + 4 <= e:
        v0 = acc[d]
        v1 = acc[d + 1]
        v2 = acc[d + 2]
        v3 = acc[d + 3]
        m0 = v0 if v0 > m0 else m0
        m1 = v1 if v1 > m1 else m1
        m2 = v2 if v2 > m2 else m2
        m3 = v3 if v3 > m3 else m3
        d += 4
    while d < e:
        v0 = acc[d]
        m0 = v0 if v0 > m0 else m0
        d += 1
    m0 = m1 if m1 > m0 else m0
    m2 = m3 if m3 > m2 else m2
    return m2 if m2 > m0 else m0


@njit(cache=True)
def _dense_topk(acc, n_docs, k, deleted, cmax, sel, cand_s, cand_d, out_s, out_d):
    """Top-``k`` positive entries of ``acc[:n_docs]`` into ``out_s/out_d``; zeroes ``acc``.

    A heap fed document by document costs a branch per document and a sift per improvement.
    Instead: the maximum of every chunk of ``CHUNK`` documents (a tight loop), and
    ``theta``, the ``k``-th largest chunk maximum (a small insertion-sorted buffer):
    ``k`` distinct documents score at least ``theta``, so only documents scoring
    ``>= theta`` in chunks reaching it (typically about ``k`` chunks) are candidates. They
    are collected in doc order and sorted by score with a stable sort, so ties rank by
    ascending doc id as everywhere. Scratch: ``cmax``, ``sel`` (n_chunks,), ``cand_*`` (n_docs,).
    """
    if deleted.shape[0] > 0:
        for d in range(n_docs):
            acc[d] = 0.0 if deleted[d] else acc[d]  # a select, not a branch: vectorized, no mispredictions
    nc = (n_docs + CHUNK - 1) // CHUNK
    for c in range(nc):
        cmax[c] = _chunk_max(acc, c * CHUNK, min(c * CHUNK + CHUNK, n_docs))
    # the k largest chunk maxima, descending, in cand_s[:k]; most chunks fail the first test
    top = cand_s
    for i in range(k):
        top[i] = 0.0
    for c in range(nc):
        m = cmax[c]
        if m > top[k - 1]:
            i = k - 1
            while i > 0 and top[i - 1] < m:
                top[i] = top[i - 1]
                i -= 1
            top[i] = m
    theta = top[k - 1] if top[k - 1] > 0.0 else 5e-324  # results need a positive score
    n_sel = 0
    for c in range(nc):  # branch-free compaction of the chunks that reach theta
        sel[n_sel] = c
        n_sel += cmax[c] >= theta
    n = 0
    for i in range(n_sel):
        c = sel[i]
        for d in range(c * CHUNK, min(c * CHUNK + CHUNK, n_docs)):
            s = acc[d]
            if s >= theta:
                cand_s[n] = -s
                cand_d[n] = d
                n += 1
    acc[:n_docs] = 0.0
    order = np.argsort(cand_s[:n], kind="mergesort")
    for i in range(out_s.shape[0]):
        if i < n:
            out_s[i] = -cand_s[order[i]]
            out_d[i] = cand_d[order[i]]
        else:
            out_s[i] = 0.0
            out_d[i] = -1


@njit(cache=True)
def _taat_one(q_terms, q_weights, k, n_docs, deleted, term_block_ptr, term_post_ptr, block_last, block_bits,
              block_word_ptr, words, w8, w16, impacts, acc, buf, cmax, sel, cand_s, cand_d, out_s, out_d):
    """Term-at-a-time scoring of every posting of one query into the dense accumulator ``acc``
    (all zero on entry and on return), then dense top-k selection."""
    n_seg_terms = term_post_ptr.shape[0] - 1
    qw = q_weights.copy()
    snap_inplace(qw)
    for j in range(q_terms.shape[0]):
        t = q_terms[j]
        w = qw[j]
        if w <= 0 or t < 0 or t >= n_seg_terms:
            continue
        _accumulate_list(t, w, term_block_ptr, term_post_ptr, block_bits, block_word_ptr, words, w8, w16, impacts,
                         acc, buf)
    _dense_topk(acc, n_docs, k, deleted, cmax, sel, cand_s, cand_d, out_s, out_d)


@njit(cache=True)
def _taat_range(q0, q1, q_indptr, q_terms, q_weights, k, n_docs, deleted, term_block_ptr, term_post_ptr,
                block_last, block_bits, block_word_ptr, words, impacts, out_s, out_d):
    """Queries ``q0..q1-1`` one after another, sharing one accumulator and scratch buffers."""
    acc = np.zeros(n_docs, np.float64)
    buf = np.empty(BLOCK, np.int64)
    cmax = np.empty((n_docs + CHUNK - 1) // CHUNK, np.float64)
    sel = np.empty((n_docs + CHUNK - 1) // CHUNK, np.int64)
    cand_s = np.empty(n_docs, np.float64)
    cand_d = np.empty(n_docs, np.int64)
    w8 = words.view(np.uint8)
    w16 = words.view(np.uint16)
    for qi in range(q0, q1):
        a = q_indptr[qi]
        b = q_indptr[qi + 1]
        _taat_one(q_terms[a:b], q_weights[a:b], k, n_docs, deleted, term_block_ptr, term_post_ptr, block_last,
                  block_bits, block_word_ptr, words, w8, w16, impacts, acc, buf, cmax, sel, cand_s, cand_d,
                  out_s[qi], out_d[qi])


@njit(cache=True, parallel=True)
def exhaustive_batch(q_indptr, q_terms, q_weights, k, n_docs, deleted, term_block_ptr, term_post_ptr,
                     block_last, block_bits, block_word_ptr, words, impacts, out_s, out_d, n_runs):
    """Term-at-a-time scoring of every posting into a dense accumulator (no pruning), on all threads.

    The reference the pruned search is measured against, and the faster choice for small
    segments; same arithmetic and tie-breaking as :func:`maxscore_batch`. Queries are cut
    into ``n_runs`` runs (a few per thread), each reusing one accumulator (allocating and
    zeroing one per query would cost as much as scoring a short query).
    """
    nq = q_indptr.shape[0] - 1
    n_runs = max(1, min(nq, n_runs))
    for r in prange(n_runs):
        _taat_range(r * nq // n_runs, (r + 1) * nq // n_runs, q_indptr, q_terms, q_weights, k, n_docs, deleted,
                    term_block_ptr, term_post_ptr, block_last, block_bits, block_word_ptr, words, impacts,
                    out_s, out_d)


@njit(cache=True)
def exhaustive_serial(q_indptr, q_terms, q_weights, k, n_docs, deleted, term_block_ptr, term_post_ptr,
                      block_last, block_bits, block_word_ptr, words, impacts, out_s, out_d):
    """:func:`exhaustive_batch` on the calling thread (no thread-pool dispatch: single queries)."""
    _taat_range(0, q_indptr.shape[0] - 1, q_indptr, q_terms, q_weights, k, n_docs, deleted, term_block_ptr,
                term_post_ptr, block_last, block_bits, block_word_ptr, words, impacts, out_s, out_d)


# ------------------------------------------------ filtered: the allowed documents one by one
#: cost of scoring one (allowed document, query term) pair by :func:`_allowed_one`, in postings
#: that MaxScore or term-at-a-time scoring would read instead (measured: benchmarks/filtered.py)
ALLOWED_COST = 24.0
#: cost of one document of a segment in term-at-a-time scoring beyond its postings (the dense
#: top-k selection and reset: vectorized, about a quarter of a posting's decoding and adding),
#: in postings. At 1.0, queries at 1% selectivity on SciFact went document at a time when that
#: was slower (filtered/unfiltered 1.09-1.11 against 1.03-1.04 at 0.25 and 0.0, same runs)
TAAT_DOC_COST = 0.25


@njit(cache=True)
def _allowed_one(q_terms, q_weights, k, docs, term_block_ptr, term_post_ptr, term_max, block_last, block_max,
                 block_bits, block_word_ptr, words, impacts, out_s, out_d):
    """Exact top-k of one query over the documents ``docs`` (ascending local doc numbers; the
    live documents a filter allows) of one segment, document at a time.

    For a small allowed set this reads far less than MaxScore, which walks every posting of the
    essential lists whatever the filter: each term's cursor gallops over ``block_last`` to the
    block that could hold the document, the block maxima bound its score (once ``k`` documents
    are held, a document whose bound is ``<= theta`` is passed without decoding anything), and
    the terms are probed in decreasing bound order, giving up when the score plus the remaining
    block bounds cannot beat ``theta``. Same arithmetic (snapped weights, float64 sums, the
    terms in one fixed order) and the same ties (ascending doc) as :func:`_maxscore_one`.
    """
    m0 = q_terms.shape[0]
    n_seg_terms = term_post_ptr.shape[0] - 1
    qw0 = q_weights.copy()
    snap_inplace(qw0)
    ub_all = np.empty(m0, np.float64)
    m = 0
    for i in range(m0):
        t = q_terms[i]
        if qw0[i] > 0 and 0 <= t < n_seg_terms and term_post_ptr[t + 1] > term_post_ptr[t]:
            ub_all[i] = -qw0[i] * np.float64(term_max[t])
            m += 1
        else:
            ub_all[i] = 1.0
    order = np.argsort(ub_all, kind="mergesort")  # largest bound first
    terms = np.empty(m, np.int64)
    qw = np.empty(m, np.float64)
    for j in range(m):
        terms[j] = q_terms[order[j]]
        qw[j] = qw0[order[j]]
    hs = np.empty(k, np.float64)
    hd = np.empty(k, np.int64)
    size = 0
    theta = -1.0
    blk = np.empty(m, np.int64)
    blk_end = np.empty(m, np.int64)
    dec = np.full(m, -1, np.int64)
    pos = np.zeros(m, np.int64)
    buf = np.empty((m, BLOCK), np.int64)
    bm = np.empty(m, np.float64)
    rest = np.empty(m + 1, np.float64)  # rest[i] = bm[i] + ... + bm[m - 1]
    for i in range(m):
        blk[i] = term_block_ptr[terms[i]]
        blk_end[i] = term_block_ptr[terms[i] + 1]
    for di in range(docs.shape[0]):
        d = np.int64(docs[di])
        for i in range(m):
            b = _seek_block(blk[i], blk_end[i], d, block_last)
            blk[i] = b
            bm[i] = qw[i] * np.float64(block_max[b]) if b < blk_end[i] else 0.0
        rest[m] = 0.0
        for i in range(m - 1, -1, -1):
            rest[i] = rest[i + 1] + bm[i]
        if rest[0] == 0.0 or (size == k and rest[0] <= theta):
            continue
        s = 0.0
        alive = True
        for i in range(m):
            if bm[i] == 0.0:
                continue
            if size == k and s + rest[i] <= theta:
                alive = False
                break
            t = terms[i]
            b = blk[i]
            tb = term_block_ptr[t]
            n = min(BLOCK, term_post_ptr[t + 1] - term_post_ptr[t] - (b - tb) * BLOCK)
            if dec[i] != b:
                decode_block(words, block_word_ptr[b], block_bits[b], n, _block_base(tb, b, block_last), buf[i])
                dec[i] = b
                pos[i] = 0
            # the first posting >= d (the block's last doc is >= d): binary search from the cursor
            lo = pos[i]
            hi = n - 1
            while lo < hi:
                mid = (lo + hi) // 2
                if buf[i, mid] < d:
                    lo = mid + 1
                else:
                    hi = mid
            pos[i] = lo
            if buf[i, lo] == d:
                s += qw[i] * np.float64(impacts[term_post_ptr[t] + (b - tb) * BLOCK + lo])
        if alive and s > 0.0 and (size < k or s > theta):
            size = _heap_push(hs, hd, size, k, s, d)
            if size == k:
                theta = hs[0]
    _heap_sorted(hs, hd, size, out_s, out_d)


@njit(cache=True)
def _filtered_range(q0, q1, q_indptr, q_terms, q_weights, k, n_docs, deleted, docs, doc_cost, maxscore,
                    term_block_ptr, term_post_ptr, term_max, block_last, block_max, block_bits, block_word_ptr, words,
                    impacts, out_s, out_d):
    """Queries ``q0..q1-1`` under a filter: each by the cheaper exact way for it.

    ``deleted``: the documents to skip (deleted or filtered out); ``docs``: the others,
    ascending. A query whose ``len(docs) x terms x doc_cost`` is at most the postings it
    would read otherwise (its terms' document frequencies, plus ``n_docs x TAAT_DOC_COST``
    for term-at-a-time) is answered by :func:`_allowed_one`; the others by block-max MaxScore
    (``maxscore``) or term-at-a-time scoring, skipping ``deleted``. Called only where some query
    could take the first way (``searcher.filter_plan`` keeps ``docs`` there); elsewhere the plain
    kernels run with ``deleted`` as their skip mask.
    """
    n_seg_terms = term_post_ptr.shape[0] - 1
    n_acc = 0 if maxscore else n_docs  # term-at-a-time scratch
    nc = (n_acc + CHUNK - 1) // CHUNK
    acc = np.zeros(n_acc, np.float64)
    buf = np.empty(BLOCK, np.int64)
    cmax = np.empty(nc, np.float64)
    sel = np.empty(nc, np.int64)
    cand_s = np.empty(n_acc, np.float64)
    cand_d = np.empty(n_acc, np.int64)
    w8 = words.view(np.uint8)
    w16 = words.view(np.uint16)
    for qi in range(q0, q1):
        a = q_indptr[qi]
        b = q_indptr[qi + 1]
        m = 0
        post = 0
        for j in range(a, b):
            t = q_terms[j]
            if q_weights[j] > 0 and 0 <= t < n_seg_terms:
                df = term_post_ptr[t + 1] - term_post_ptr[t]
                if df > 0:
                    m += 1
                    post += df
        if not maxscore:
            post += n_docs * TAAT_DOC_COST
        if np.float64(docs.shape[0]) * m * doc_cost <= post:
            _allowed_one(q_terms[a:b], q_weights[a:b], k, docs, term_block_ptr, term_post_ptr, term_max, block_last,
                         block_max, block_bits, block_word_ptr, words, impacts, out_s[qi], out_d[qi])
        elif maxscore:
            _maxscore_one(q_terms[a:b], q_weights[a:b], k, deleted, term_block_ptr, term_post_ptr, term_max,
                          block_last, block_max, block_bits, block_word_ptr, words, impacts, out_s[qi], out_d[qi])
        else:
            _taat_one(q_terms[a:b], q_weights[a:b], k, n_docs, deleted, term_block_ptr, term_post_ptr, block_last,
                      block_bits, block_word_ptr, words, w8, w16, impacts, acc, buf, cmax, sel, cand_s, cand_d,
                      out_s[qi], out_d[qi])


@njit(cache=True)
def filtered_serial(q_indptr, q_terms, q_weights, k, n_docs, deleted, docs, doc_cost, maxscore, term_block_ptr,
                    term_post_ptr, term_max, block_last, block_max, block_bits, block_word_ptr, words, impacts,
                    out_s, out_d):
    """Top-k of every query under a filter, on the calling thread (see :func:`_filtered_range`)."""
    _filtered_range(0, q_indptr.shape[0] - 1, q_indptr, q_terms, q_weights, k, n_docs, deleted, docs, doc_cost,
                    maxscore, term_block_ptr, term_post_ptr, term_max, block_last, block_max, block_bits,
                    block_word_ptr, words, impacts, out_s, out_d)


@njit(cache=True, parallel=True)
def filtered_batch(q_indptr, q_terms, q_weights, k, n_docs, deleted, docs, doc_cost, maxscore, term_block_ptr,
                   term_post_ptr, term_max, block_last, block_max, block_bits, block_word_ptr, words, impacts,
                   out_s, out_d, n_runs):
    """:func:`filtered_serial` for a batch, in ``n_runs`` runs of queries over the threads."""
    nq = q_indptr.shape[0] - 1
    n_runs = max(1, min(nq, n_runs))
    for r in prange(n_runs):
        _filtered_range(r * nq // n_runs, (r + 1) * nq // n_runs, q_indptr, q_terms, q_weights, k, n_docs, deleted,
                        docs, doc_cost, maxscore, term_block_ptr, term_post_ptr, term_max, block_last, block_max,
                        block_bits, block_word_ptr, words, impacts, out_s, out_d)


def n_threads() -> int:
    """Threads the batch kernels use now."""
    return nb.get_num_threads()


def set_threads(n: int | None) -> None:
    """Use ``n`` threads for batched search (``None``: all cores)."""
    nb.set_num_threads(nb.config.NUMBA_NUM_THREADS if n is None else max(1, min(n, nb.config.NUMBA_NUM_THREADS)))
