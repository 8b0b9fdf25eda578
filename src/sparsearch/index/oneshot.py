"""One-shot exact search with numpy alone: open an index and answer a few queries, no numba.

A command that runs a few queries and exits (``sparsearch search INDEX -q TEXT`` from the
shell) spends far more on importing numba and loading its cached kernels (~0.4 s) than on
scoring a query of a few thousand postings (~1 ms). :class:`OneShotIndex` opens an index
directory with the checks :meth:`Index.open <sparsearch.index.searcher.Index.open>` makes (the
manifest's seal, size and CRC32 of every file it reads, segment headers, the vocabulary, the
deletion bitmaps; a concurrent commit is followed the same way) and searches it term at a time
with vectorized numpy: the query terms' blocks are decoded (d-gaps of any width, so both the
``"byte"`` and the ``"bitpack"`` codec, see :mod:`sparsearch.index.kernels`), ``weight x
impact`` is summed per document in float64 and the top ``k`` are selected.

The results are those of :meth:`Index.search <sparsearch.index.searcher.Index.search>`, bit for
bit: the same doc numbers and the same float64 scores (``dtype=np.float64``; the same float32
ones by default):

* the query weights are the ones the kernels score with, computed with the same float64
  operations: per segment times its terms' scales and snapped to the index-wide grid
  (``Index.segment_weights``, ``kernels.scale_snap_rows``), then snapped per query
  (``kernels.snap_inplace``);
* with 8-bit impacts every product and every partial sum is an exact binary fraction (the
  module docstring of :mod:`~sparsearch.index.kernels`), so the order of the additions does not
  matter. float32 impacts round: their sums are taken in the order of term-at-a-time scoring
  (the query's terms in row order, ``np.bincount`` adding in input order), so a float32 segment
  is searched here only where ``Index.search`` scores it term at a time too (``exhaustive``, or a
  segment of at most ``Index.maxscore_min_docs`` documents; :meth:`OneShotIndex.supports`);
* per segment: the live documents with a positive score, the best ``min(k, n_docs)`` by score,
  ties by ascending doc number, then a version-1 segment's one scale; the segments' lists merged
  as ``searcher._merge_topk`` does.

Filters are not handled here (``ExactParams.filter``: use :class:`~sparsearch.index.searcher.Index`).
The work is proportional to the postings of the query terms (:meth:`OneShotIndex.postings`;
decoded :data:`CHUNK` at a time, memory is a float64 per document of a segment beyond that):
past :data:`MAX_POSTINGS` (:meth:`OneShotIndex.cost`) the numba kernels (block-max MaxScore)
answer sooner, and the CLI hands the opened index over to ``Index``.

This module imports neither numba nor scipy (nor ``segment``, ``kernels`` or ``searcher``,
which do): the format, its constants and the loading of a commit come from
:mod:`~sparsearch.index.format`, which those modules share.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CorruptIndexError, UnsupportedError
from ..searching import ExactParams, check_k, require
from ..vectors import SparseBatch
from .format import BLOCK, SNAP_BITS, TAAT_MAX_DOCS, Contribution, OpenedIndex, read_segment

__all__ = ["OneShotIndex", "Contribution", "MAX_POSTINGS"]

#: the cost (:meth:`OneShotIndex.cost`, in postings) up to which a one-shot search beats loading
#: the numba kernels, with room to spare: numpy scores 15-35 million postings a second (one
#: thread), importing numba and loading its cached kernels costs 0.5-0.7 s, and end to end the
#: one-shot search was still ahead at 7 million postings (benchmarks/cli_startup.md)
MAX_POSTINGS = 5_000_000
#: what one query costs per segment beyond its postings (Python and numpy calls), in postings
QUERY_COST = 2_000
#: a segment whose documents outnumber a query's postings this many times is accumulated
#: sparsely (the documents it touches, sorted) rather than in a dense array of its documents
SPARSE_RATIO = 16
#: postings decoded at a time (bounds the temporaries: ~70 bytes a posting)
CHUNK = 1 << 18

_EXACT = ExactParams()
_MASKS = np.array([(1 << b) - 1 for b in range(33)], np.uint64)  # bit width -> mask
_EMPTY_I = np.zeros(0, np.int64)
_EMPTY_F = np.zeros(0, np.float64)


class _Segment:
    """One segment's arrays (memory-mapped) and doc ids, opened as ``Segment.open`` does."""

    def __init__(self, path: Path, meta: dict[str, Any], arrays: dict[str, np.ndarray], doc_ids: list[str]) -> None:
        self.path, self.meta, self.arrays, self.doc_ids = path, meta, arrays, doc_ids
        self.n_docs = int(meta["n_docs"])
        self.post_ptr = arrays["term_post_ptr"]
        self.block_ptr = arrays["term_block_ptr"]
        self.block_last = arrays["block_last"]
        self.block_bits = arrays["block_bits"]
        self.block_word_ptr = arrays["block_word_ptr"]
        self.words = arrays["words"]
        self.impacts = arrays["impacts"]
        self.n_terms = len(self.post_ptr) - 1
        term_scale = arrays.get("term_scale")
        # as Segment: the scales with a trailing 0 for unknown terms; 8-bit per-term grids scale query weights
        self.tscale = None if term_scale is None else np.append(np.asarray(term_scale, np.float64), 0.0)
        self.qscale = self.tscale if term_scale is not None and str(meta["quantization"]) == "uint8" else None
        self.score_scale = 1.0 if term_scale is not None else float(meta["scale"])
        #: 8-bit impacts: exact sums in any order; float32 ones round (summed in term-at-a-time order)
        self.exact = self.impacts.dtype == np.uint8

    @classmethod
    def open(cls, path: Path, *, mmap: bool, verify: bool) -> "_Segment":
        return cls(path, *read_segment(path, mmap=mmap, verify=verify))

    @property
    def per_term(self) -> bool:
        return self.qscale is not None

    def term_scales(self, terms: np.ndarray) -> np.ndarray:
        """``Segment.term_scales``: weight of one impact unit of each term (0 where unknown)."""
        terms = np.asarray(terms, np.int64)
        if self.tscale is None:
            return np.where((terms >= 0) & (terms < self.n_terms), float(self.meta["scale"]), 0.0)
        return self.tscale[np.minimum(terms, len(self.tscale) - 1)]

    def df(self, terms: np.ndarray) -> np.ndarray:
        """Postings of each term (0 for ids outside the segment)."""
        known = (terms >= 0) & (terms < self.n_terms)
        t = np.where(known, terms, 0)
        return np.where(known, self.post_ptr[t + 1] - self.post_ptr[t], 0)

    def decode(self, blk: np.ndarray, first: np.ndarray, nper: np.ndarray) -> tuple[np.ndarray, np.ndarray,
                                                                                    np.ndarray]:
        """Doc ids of the postings of blocks ``blk`` (``first``: the first block of its term;
        ``nper``: its postings), in block order: ``(docs int64, block of each posting (position
        in blk), position in its block)``. Any bit width: a 64-bit window over two words, shifted
        and masked (``words`` ends with a padding word), as ``kernels.decode_block`` reads it."""
        P = int(nper.sum())
        pstart = np.cumsum(nper) - nper
        rep = np.repeat(np.arange(len(blk)), nper)
        pos = np.arange(P, dtype=np.int64) - pstart[rep]
        bits = self.block_bits[blk].astype(np.int64)
        bitpos = pos * bits[rep]
        wi = self.block_word_ptr[blk][rep] + (bitpos >> 5)
        words = self.words
        window = words[wi].astype(np.uint64) | (words[np.minimum(wi + 1, len(words) - 1)].astype(np.uint64)
                                                << np.uint64(32))
        gap1 = ((window >> (bitpos & 31).astype(np.uint64)) & _MASKS[bits][rep]).astype(np.int64) + 1
        cs = np.cumsum(gap1)
        # each block starts after the previous block's last doc (0 for a term's first block)
        base = np.where(first, 0, self.block_last[np.maximum(blk - 1, 0)].astype(np.int64) + 1)
        docs = cs + (base - 1 - (cs[pstart] - gap1[pstart]) if P else base)[rep]
        return docs, rep, pos

    def blocks(self, terms: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Every block of the (known, non-empty) ``terms``, in term order: ``(block ids, first
        block of its term, postings, first posting, term of each block (position in terms))``."""
        tb = self.block_ptr[terms]
        nb = self.block_ptr[terms + 1] - tb
        tr = np.repeat(np.arange(len(terms)), nb)
        jb = np.arange(int(nb.sum()), dtype=np.int64) - (np.cumsum(nb) - nb)[tr]
        df = self.post_ptr[terms + 1] - self.post_ptr[terms]
        nper = np.minimum(BLOCK, df[tr] - jb * BLOCK)
        return tb[tr] + jb, jb == 0, nper, self.post_ptr[terms][tr] + jb * BLOCK, tr

    def impacts_of(self, doc: int, terms: np.ndarray) -> np.ndarray:
        """``Segment.impacts_of``: impacts of one document for ``terms`` (0 where absent), float64."""
        out = np.zeros(len(terms), np.float64)
        for j, t in enumerate(terms.tolist()):
            if not 0 <= t < self.n_terms:
                continue
            tb, te = int(self.block_ptr[t]), int(self.block_ptr[t + 1])
            b = tb + int(np.searchsorted(self.block_last[tb:te], doc))  # first block whose last doc >= doc
            if b == te:
                continue
            blk, first, nper, post0, _ = self.blocks(np.array([t], np.int64))
            i = b - tb
            docs, _, _ = self.decode(blk[i:i + 1], first[i:i + 1], nper[i:i + 1])
            hit = np.flatnonzero(docs == doc)
            if len(hit):
                out[j] = float(self.impacts[post0[i] + hit[0]])
        return out


def _snap_rows(indptr: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``kernels.snap_inplace`` on each row of a copy of ``w``: weights on a power-of-two grid
    with at most ``SNAP_BITS`` significant bits of the row's largest."""
    out = w.copy()
    for a, b in zip(indptr[:-1].tolist(), indptr[1:].tolist()):
        row = out[a:b]
        m = max(float(row.max()), 0.0) if b > a else 0.0
        if m <= 0.0:
            continue
        p = 2.0 ** (SNAP_BITS - int(np.ceil(np.log2(m) + 1e-12)))
        row[:] = np.where(row > 0, np.rint(row * p) / p, 0.0)
    return out


def _scale_snap_rows(indptr: np.ndarray, terms: np.ndarray, w: np.ndarray, scales: np.ndarray,
                     ref: np.ndarray) -> np.ndarray:
    """``kernels.scale_snap_rows`` with ``ref`` given per entry (the reference scale of each
    entry's term, not per term id): ``w x scales[t]`` snapped per row to the grid of ``SNAP_BITS
    - 1`` significant bits of the row's largest ``w x ref``."""
    out = w.astype(np.float64)
    ns = len(scales) - 1
    s = scales[np.where((terms >= 0) & (terms < ns), terms, ns)]
    for a, b in zip(indptr[:-1].tolist(), indptr[1:].tolist()):
        r = w[a:b] * ref[a:b]
        m = max(float(r.max()), 0.0) if b > a else 0.0
        p = 1.0
        if m > 0.0:
            p = 2.0 ** (SNAP_BITS - 1 - int(np.ceil(np.log2(m) + 1e-12)))
        x = w[a:b] * s[a:b]
        out[a:b] = np.where(x > 0, np.rint(x * p) / p, 0.0)
    return out


class OneShotIndex(OpenedIndex):
    """An index directory opened for a few exact searches with numpy (see the module docstring).

    The attributes are those of :class:`~sparsearch.index.searcher.Index` that a search and its
    presentation read (``path``, ``manifest``, ``vocab``, ``doc_ids``, ``load_encoder``, ``n_docs``,
    ``n_live_docs``, ``explain``); ``segments`` hold the arrays as read (``_Segment``).
    """

    @classmethod
    def _open_segment(cls, path: Path, *, mmap: bool, verify: bool) -> _Segment:
        return _Segment.open(path, mmap=mmap, verify=verify)

    # ----------------------------------------------------------------- search
    def supports(self, params: ExactParams | None = None) -> bool:
        """Whether :meth:`search` answers ``params`` (exact parameters without a filter) exactly
        as ``Index.search``: float32 segments only where it scores them term at a time."""
        params = _EXACT if params is None else params
        if not isinstance(params, ExactParams) or params.filter is not None:
            return False
        return params.exhaustive or all(s.exact or s.n_docs <= TAAT_MAX_DOCS for s in self.segments)

    def postings(self, queries: SparseBatch) -> int:
        """Postings a search of ``queries`` reads: its terms' document frequencies, summed over
        the queries and the segments (the cost that :data:`MAX_POSTINGS` bounds)."""
        _, terms, weights = self.prepare_queries(queries)
        terms = terms[weights > 0]
        return sum(int(seg.df(terms).sum()) for seg in self.segments)

    def cost(self, queries: SparseBatch) -> int:
        """What a search of ``queries`` costs, in postings: :meth:`postings` plus
        :data:`QUERY_COST` a query and segment (compare it with :data:`MAX_POSTINGS`)."""
        return self.postings(queries) + QUERY_COST * len(queries) * len(self.segments)

    def _grid(self, terms: np.ndarray) -> np.ndarray:
        """The index-wide reference scale of each entry's term (``Index._grid`` at those ids):
        its largest step over the per-term segments that hold postings of it (0: none)."""
        ref = np.zeros(len(terms), np.float64)
        for seg in self.segments:
            if seg.per_term:
                np.maximum(ref, seg.term_scales(terms) * (seg.df(terms) > 0), out=ref)
        return ref

    def segment_weights(self, seg: _Segment, q_indptr: np.ndarray, terms: np.ndarray, weights: np.ndarray,
                        ref: np.ndarray | None = None) -> np.ndarray:
        """``Index.segment_weights``: the weights ``seg``'s kernels take (before their own snapping)."""
        if not seg.per_term:
            return weights
        return _scale_snap_rows(q_indptr, terms, weights, seg.qscale, self._grid(terms) if ref is None else ref)

    def search(self, queries: SparseBatch, k: int = 10, params: ExactParams | None = None, *,
               dtype: type = np.float32) -> tuple[np.ndarray, np.ndarray]:
        """``Index.search(queries, k, params, dtype=dtype)``, the same arrays; ``params``: exact
        parameters without a filter (threads are not used: numpy, one thread), for which
        :meth:`supports` holds (else :class:`UnsupportedError`)."""
        if params is None:
            params = _EXACT
        else:
            require(params, [ExactParams], "OneShotIndex")
            params.check()
        if not self.supports(params):
            raise UnsupportedError("this search needs sparsearch.index.Index (a filter, or float32 impacts "
                                   "scored by MaxScore)")
        k = check_k(k, self.n_live_docs)
        q_indptr, terms, weights = self.prepare_queries(queries, params.unknown)
        nq = len(q_indptr) - 1
        ref = self._grid(terms) if any(s.per_term for s in self.segments) else None
        per_seg = []
        for seg, base, dele in zip(self.segments, self.bases.tolist(), self.deleted):
            kk = min(k, max(seg.n_docs, 1))
            w = _snap_rows(q_indptr, self.segment_weights(seg, q_indptr, terms, weights, ref))  # as the kernels
            rows = []
            for a, b in zip(q_indptr[:-1].tolist(), q_indptr[1:].tolist()):
                s, d = self._score(seg, dele, terms[a:b], w[a:b], kk)
                if seg.score_scale != 1.0:  # a version-1 segment: one scale for all its impacts
                    s = s * seg.score_scale
                rows.append((s, d + base))
            per_seg.append(rows)
        if not per_seg:  # no segment: Index.search's merge of nothing
            return np.zeros((0, k), dtype), np.full((0, k), -1, np.int64)
        out_s = np.zeros((nq, k), dtype)
        out_d = np.full((nq, k), -1, np.int64)
        for qi in range(nq):
            s = np.concatenate([rows[qi][0] for rows in per_seg])
            d = np.concatenate([rows[qi][1] for rows in per_seg])
            if len(per_seg) > 1:  # merged by score, ties by doc (one segment: its own order)
                order = np.lexsort((d, -s))[:k]
                s, d = s[order], d[order]
            out_s[qi, :len(s)] = s
            out_d[qi, :len(d)] = d
        return out_s, out_d

    @staticmethod
    def _score(seg: _Segment, dele: np.ndarray, terms: np.ndarray, w: np.ndarray, kk: int
               ) -> tuple[np.ndarray, np.ndarray]:
        """Top ``kk`` of one query over one segment: ``(float64 scores descending, local doc
        numbers)``, ties by ascending doc; live documents with a positive score only."""
        df = seg.df(terms)
        keep = (w > 0) & (df > 0)
        terms, w = terms[keep], w[keep]
        if not len(terms):
            return _EMPTY_F, _EMPTY_I
        blk, first, nper, post0, tr = seg.blocks(terms)
        sparse = int(nper.sum()) * SPARSE_RATIO < seg.n_docs
        acc = None if sparse else np.zeros(seg.n_docs, np.float64)
        parts = []
        step = CHUNK // BLOCK
        for i in range(0, len(blk), step):  # blocks in term order, a chunk of postings at a time
            j = slice(i, i + step)
            docs, rep, pos = seg.decode(blk[j], first[j], nper[j])
            if int(docs.max()) >= seg.n_docs or int(docs.min()) < 0:
                raise CorruptIndexError(f"{seg.path}: a posting names a document beyond the segment's {seg.n_docs}")
            contrib = w[tr[j]][rep] * seg.impacts[post0[j][rep] + pos].astype(np.float64)
            # np.add.at and np.bincount add in input order, the query's terms in row order as
            # term-at-a-time scoring does: float32 impacts, whose sums round, get its sums too
            if sparse:
                parts.append((docs, contrib))
            else:
                np.add.at(acc, docs, contrib)
        if sparse:  # few postings in a large segment: the documents they touch, sorted
            cand, inv = np.unique(np.concatenate([d for d, _ in parts]), return_inverse=True)
            scores = np.bincount(inv.reshape(-1), weights=np.concatenate([c for _, c in parts]), minlength=len(cand))
            live = scores > 0
            if len(dele):
                live &= ~dele[cand]
            cand, scores = cand[live], scores[live]
        else:
            if len(dele):
                acc[dele] = 0.0
            cand = np.flatnonzero(acc > 0)
            scores = acc[cand]
        if len(scores) > kk:  # the kk-th best score, then those reaching it
            top = scores >= np.partition(scores, len(scores) - kk)[len(scores) - kk]
            cand, scores = cand[top], scores[top]
        order = np.argsort(-scores, kind="stable")[:kk]  # candidates ascend by doc: ties stay in doc order
        return scores[order], cand[order]

    def _explain_weights(self, seg: _Segment, terms: np.ndarray, weights: np.ndarray) -> np.ndarray:
        indptr = np.array([0, len(terms)])
        return _snap_rows(indptr, self.segment_weights(seg, indptr, terms, weights))

    def segment_parts(self) -> list[tuple[Path, dict[str, Any], dict[str, np.ndarray], list[str]]]:
        """``(path, meta, arrays, doc_ids)`` of every segment as read and verified: what
        ``Segment(path, meta, doc_ids=doc_ids, **arrays)`` is made of, to hand the opened index
        over to :class:`~sparsearch.index.searcher.Index` without reading (and checking) it again."""
        return [(s.path, s.meta, s.arrays, s.doc_ids) for s in self.segments]

    def __repr__(self) -> str:
        return (f"OneShotIndex({str(self.path)!r}, docs={self.n_docs}, terms={self.n_terms}, "
                f"segments={len(self.segments)})")

