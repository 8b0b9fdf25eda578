"""The :class:`Index`: open an index directory and search it (exact top-k), explain hits.

Implements the :class:`~sparsearch.searching.Searcher` protocol (FAISS's shape):
``index.search(queries, k, params) -> (scores, docnums)`` with arrays of shape
(n_queries, min(k, n_live_docs)); ``docnums`` are positions in ``index.doc_ids`` (``-1`` pads rows
with fewer matching documents). Only documents that share at least one term with the query
are returned (score > 0). Approximate search is :class:`~sparsearch.index.approximate.ApproximateIndex`.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CorruptIndexError, InvalidInputError, NotFoundError, UnsupportedError
from ..evaluation import to_run
from ..features import FeatureLabels
from ..filters import compile_filter
from ..metadata import MetadataBatch, MetadataStore
from ..searching import AnytimeParams, ApproxParams, ExactParams, check_k, require
from ..vectors import SparseBatch, Vocabulary
from . import anytime, kernels
from .format import TAAT_MAX_DOCS, Contribution, OpenedIndex
from .segment import Segment, common_term_scale
from .storage import read_arrays, read_json

__all__ = ["Index", "Contribution", "FilterPlan", "open_index", "METADATA_DIR", "filter_plan"]

_EXACT = ExactParams()
_NO_SKIP = np.zeros(0, np.bool_)
#: a segment's metadata arrays (``sparsearch.metadata``): a checksummed array directory inside it
METADATA_DIR = "metadata"
#: compiled filter masks kept per index (each is one bool per document)
FILTER_CACHE = 32


def load_segment_metadata(seg: Segment, verify: bool = True) -> MetadataBatch | None:
    """The metadata stored in a segment (``None``: it has none), arrays checked against the
    CRC32s of its header (itself covered by the commit's records)."""
    d = seg.path / METADATA_DIR
    if not d.is_dir():
        return None
    header = read_json(d / "segment.json", "metadata header")
    if not isinstance(header, dict) or not isinstance(header.get("fields"), list):
        raise CorruptIndexError(f"{d / 'segment.json'}: malformed metadata header")
    try:
        names = MetadataBatch.array_names(header)
    except (KeyError, TypeError) as e:
        raise CorruptIndexError(f"{d / 'segment.json'}: malformed metadata header ({e})") from None
    batch = MetadataBatch.from_arrays(header, read_arrays(d, header, names, mmap=True, verify=verify), str(d))
    if batch.n_docs != seg.n_docs:
        raise CorruptIndexError(f"{d}: metadata of {batch.n_docs} documents in a segment of {seg.n_docs}")
    return batch


@dataclass(frozen=True)
class FilterPlan:
    """A filter made ready for the kernels, per segment: ``skips`` (deleted or filtered out),
    ``docs`` (the live allowed local doc numbers, ascending; ``None`` where there are too many
    for document-at-a-time scoring ever to be cheaper, see :func:`kernels._filtered_range`),
    and ``n_allowed``, the live documents the filter leaves in the index."""

    skips: tuple[np.ndarray, ...]
    docs: tuple[np.ndarray | None, ...]
    n_allowed: int
    sizes: tuple[int, ...]

    def skip_mask(self) -> np.ndarray:
        """The documents to skip (deleted or filtered out) over all doc numbers (empty: none)."""
        if not any(len(s) for s in self.skips):
            return _NO_SKIP
        if len(self.skips) == 1:
            return self.skips[0]
        return np.concatenate([s if len(s) else np.zeros(n, np.bool_) for s, n in zip(self.skips, self.sizes)])


def _max_df(seg: Segment) -> int:
    """The longest posting list of ``seg`` (its most frequent term's document frequency)."""
    ptr = seg.term_post_ptr
    return int(np.max(np.diff(ptr))) if len(ptr) > 1 else 0


def filter_plan(segments: Sequence[Segment], deleted: Sequence[np.ndarray], allowed: np.ndarray,
                cost: float = kernels.ALLOWED_COST) -> FilterPlan:
    """The :class:`FilterPlan` of the mask ``allowed`` (over the doc numbers of ``segments``);
    ``cost``: of one (document, term) pair scored document at a time, in postings."""
    skips, docs, n, a = [], [], 0, 0
    for seg, dele in zip(segments, deleted):
        skip = ~allowed[a:a + seg.n_docs]
        if len(dele):
            skip |= dele
        a += seg.n_docs
        n_seg = seg.n_docs - int(np.count_nonzero(skip))
        n += n_seg
        # A query of m matching terms goes document at a time when n_seg * m * cost is at most
        # the postings it would read, at most m * max_df (+ n_docs * TAAT_DOC_COST term-at-a-time):
        # past n_seg * cost > max_df + that, no query ever does, and the plain kernels serve it
        few = n_seg * cost <= _max_df(seg) + seg.n_docs * kernels.TAAT_DOC_COST
        docs.append(np.flatnonzero(~skip) if few else None)
        skips.append(skip if n_seg < seg.n_docs else _NO_SKIP)  # nothing to skip: the kernels test nothing
    return FilterPlan(tuple(skips), tuple(docs), n, tuple(seg.n_docs for seg in segments))


class Index(OpenedIndex):
    """A persistent inverted index (one or more immutable segments + a commit manifest)."""

    #: segments with at most this many documents are scored term-at-a-time in exact mode
    maxscore_min_docs: int = TAAT_MAX_DOCS
    #: cost of one (allowed document, query term) pair scored document at a time, in postings
    #: read otherwise: a filtered query takes that way when it is the cheaper (tests force it)
    allowed_cost: float = kernels.ALLOWED_COST

    def __init__(self, path: Path, manifest: dict[str, Any], vocab: Vocabulary, segments: list[Segment],
                 deleted: list[np.ndarray]) -> None:
        super().__init__(path, manifest, vocab, segments, deleted)
        self._doc_index: dict[str, int] | None = None
        # each term's largest step over the per-term segments (+ a trailing 0 for unknown terms):
        # the reference of the one snapping grid of a query, whatever segment scores it
        per_term = [seg for seg in segments if seg.per_term]
        self._grid = np.append(common_term_scale(per_term, len(vocab)), 0.0) if per_term else None
        self._metadata: MetadataStore | None = None
        self._labels: tuple[FeatureLabels | None] | None = None
        self._filters: OrderedDict[tuple[str, int], np.ndarray] = OrderedDict()
        self._plans: dict[tuple[str, float], FilterPlan] = {}
        self._filters_lock = threading.Lock()
        self._impact_ordered: anytime.ImpactOrdered | None = None
        self._impact_lock = threading.Lock()  # its build takes seconds at 1M documents: not under the filters' lock

    # ------------------------------------------------------------------ open
    @classmethod
    def _open_segment(cls, path: Path, *, mmap: bool, verify: bool) -> Segment:
        return Segment.open(path, mmap=mmap, verify=verify)

    # ------------------------------------------------------------- properties
    def docnum(self, doc_id: str) -> int:
        """Doc number of a live document id; :class:`NotFoundError` if unknown or deleted."""
        if self._doc_index is None:
            index: dict[str, int] = {}
            for seg, base, dele in zip(self.segments, self.bases, self.deleted):
                for j, i in enumerate(seg.doc_ids):
                    if not (len(dele) and dele[j]):
                        index[i] = int(base) + j
            self._doc_index = index
        try:
            return self._doc_index[doc_id]
        except KeyError:
            raise NotFoundError(f"unknown document id {doc_id!r}") from None

    # --------------------------------------------------------------- metadata
    @property
    def metadata(self) -> MetadataStore:
        """The documents' metadata fields (:mod:`sparsearch.metadata`), by doc number; read
        (and checksummed) on first use."""
        if self._metadata is None:
            parts = [load_segment_metadata(seg) for seg in self.segments]
            self._metadata = MetadataStore(parts, [s.n_docs for s in self.segments], str(self.path))
        return self._metadata

    def document_metadata(self, docnum: int) -> dict[str, Any]:
        """The metadata fields of one document (by doc number)."""
        return self.metadata.document(docnum)

    def feature_labels(self) -> FeatureLabels | None:
        """The latent labels a sparse-coding encoder saved with the index (``None``: none)."""
        if self._labels is None:
            state = self.manifest.get("encoder_state")
            f = self.path / state / "labels.json" if state else None
            try:
                self._labels = (FeatureLabels.load(f) if f is not None and f.is_file() else None,)
            except (OSError, ValueError, KeyError, TypeError) as e:
                raise CorruptIndexError(f"{f}: unreadable feature labels ({e})") from None
        return self._labels[0]

    def filter_mask(self, expr: str) -> np.ndarray:
        """The documents the filter ``expr`` selects (:mod:`sparsearch.filters`): a read-only bool
        mask over doc numbers (deleted documents included), cached per expression and commit
        generation."""
        key = (expr, int(self.manifest.get("generation", 0)))
        with self._filters_lock:
            mask = self._filters.get(key)
            if mask is not None:
                self._filters.move_to_end(key)
                return mask
        mask = compile_filter(self, expr)
        mask.setflags(write=False)
        with self._filters_lock:
            self._filters[key] = mask
            while len(self._filters) > FILTER_CACHE:
                self._filters.popitem(last=False)
        return mask

    def stats(self) -> dict[str, Any]:
        """Sizes: documents, terms, postings, bytes on disk, bytes per posting."""
        n_post = sum(s.n_postings for s in self.segments)
        total = sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file())
        post_bytes = sum(s.posting_bytes() for s in self.segments)
        return {"n_docs": self.n_docs, "n_live_docs": self.n_live_docs, "n_terms": self.n_terms,
                "n_postings": n_post, "n_segments": len(self.segments), "index_bytes": total,
                "posting_bytes": post_bytes, "bytes_per_posting": post_bytes / max(n_post, 1),
                "quantization": self.manifest.get("quantization"), "encoder": self.encoder_config}

    def impact_ordered(self) -> "anytime.ImpactOrdered":
        """The postings in impact order, for anytime search (built on first use, then kept)."""
        if self._impact_ordered is None:
            with self._impact_lock:
                if self._impact_ordered is None:
                    self._impact_ordered = anytime.ImpactOrdered.build(self)
        return self._impact_ordered

    def segment_weights(self, seg: Segment, q_indptr: np.ndarray, terms: np.ndarray, weights: np.ndarray
                        ) -> np.ndarray:
        """The query weights segment ``seg``'s kernels score with (CSR rows ``q_indptr``).

        Per-term segments: each weight times its term's scale (:meth:`Segment.query_weights`),
        snapped to a grid set by the query and the index (``weight x the term's largest step
        over the segments``), not by the segment: every segment, or shard of segments, of one
        grid scores a document alike, bit for bit, and the kernels' own snapping leaves these
        weights as they are (``kernels.scale_snap_rows``: one pass). Other segments: the raw
        weights (the kernels snap them).
        """
        if not seg.per_term:
            return weights
        return kernels.scale_snap_rows(q_indptr, terms, weights, seg.query_scales, self._grid)

    def plan(self, expr: str | None, allowed: np.ndarray | None = None) -> FilterPlan | None:
        """The filter of a search made ready for the kernels (:class:`FilterPlan`; ``None``: no
        filter), cached with the mask when it comes from an expression alone."""
        if allowed is not None or expr is None:
            mask = self.allowed_mask(expr, allowed)
            return None if mask is None else filter_plan(self.segments, self.deleted, mask, self.allowed_cost)
        # A plain dict read, without the lock (atomic under the GIL): an Index never changes after
        # opening, so a cached plan never goes stale, and a search pays ~0.1 us for its filter
        # instead of a locked LRU update (a few % of a 20-30 us SciFact query).
        key = (expr, self.allowed_cost)
        plan = self._plans.get(key)
        if plan is not None:
            return plan
        plan = filter_plan(self.segments, self.deleted, self.filter_mask(expr), self.allowed_cost)
        with self._filters_lock:
            self._plans[key] = plan
            while len(self._plans) > FILTER_CACHE:  # the oldest first
                del self._plans[next(iter(self._plans))]
        return plan

    def allowed_mask(self, expr: str | None, allowed: np.ndarray | None = None) -> np.ndarray | None:
        """The filter of a search as one mask: ``expr`` compiled (:meth:`filter_mask`) and/or a
        given ``allowed`` mask (bool, ``(n_docs,)``); ``None`` when neither is given."""
        if allowed is not None:
            allowed = np.asarray(allowed)
            if allowed.dtype != np.bool_ or allowed.shape != (self.n_docs,):
                raise InvalidInputError(f"allowed must be a bool mask of shape ({self.n_docs},), got "
                                        f"{allowed.dtype} {allowed.shape}")
        if expr is None:
            return allowed
        mask = self.filter_mask(expr)
        return mask if allowed is None else mask & allowed

    def search(self, queries: SparseBatch, k: int = 10, params: ExactParams | None = None, *,
               dtype: type = np.float32, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` documents per query by dot product (exact, rank-safe).

        Args:
            queries: (nq, V') query vectors; matched to the index vocabulary by term string.
            k: results per query (an integer >= 1; the result width is ``min(k, n_live_docs)``).
            params: :class:`~sparsearch.searching.ExactParams` (default ``ExactParams()``), or
                :class:`~sparsearch.searching.AnytimeParams` (:mod:`sparsearch.index.anytime`:
                impact-ordered postings scored best first until a budget runs out):
                block-max MaxScore (segments of at most two windows are scored term-at-a-time,
                which is exact too) or ``exhaustive`` (score every posting; same results, the
                reference); worker ``threads`` for a batch; what to do with ``unknown`` terms.
                Approximate parameters are refused (:class:`UnsupportedError`): search the
                :class:`~sparsearch.index.approximate.ApproximateIndex` instead.
                ``filter``: an expression (:mod:`sparsearch.filters`) restricting the search to the
                documents it selects; they are skipped inside the kernels exactly as deleted
                ones are, so the top-k stays exact (rank-safe) under the filter.
            dtype: of the returned scores. ``np.float64`` gives the exact scores the ranking
                compares (float32 may round two of them to one value): merge results of
                several indexes or shards exactly with them.
            allowed: a bool mask over doc numbers (``(n_docs,)``): search only these documents
                (and-ed with ``params.filter``); what a hybrid index hands its representations.

        Returns:
            ``scores`` (nq, w) descending (ties: ascending doc number) and ``docnums`` int64
            (nq, w), ``w = min(k, n_live_docs)`` (with a filter: the live documents it selects),
            ``-1`` where fewer than ``w`` documents match.
        """
        if params is None:
            params = _EXACT
        elif isinstance(params, ExactParams):
            params.check()
        elif isinstance(params, AnytimeParams):
            r = anytime.search(self, queries, k, params, dtype=dtype, allowed=allowed)
            return r.scores, r.docnums
        elif isinstance(params, ApproxParams):
            raise UnsupportedError("Index supports exact and anytime search; for approximate search open the "
                                   f"ApproximateIndex of {self.path} (ApproximateIndex.open(index))")
        else:
            require(params, [ExactParams, AnytimeParams], "Index")
        plan = self.plan(params.filter, allowed)
        k = check_k(k, self.n_live_docs if plan is None else plan.n_allowed)
        threads = params.threads
        q_indptr, terms, weights = self.prepare_queries(queries, params.unknown)
        nq = len(q_indptr) - 1
        serial = nq == 1 or threads == 1
        if not serial:
            kernels.set_threads(threads)
        maxscore = not params.exhaustive
        per_seg_s, per_seg_d = [], []
        for si, (seg, base, dele) in enumerate(zip(self.segments, self.bases, self.deleted)):
            kk = min(k, max(seg.n_docs, 1))
            out_s = np.empty((nq, kk), np.float64)  # the kernels write every entry
            out_d = np.empty((nq, kk), np.int64)
            # A segment spanning at most two windows has nothing for MaxScore to skip: score it
            # term-at-a-time (same exact arithmetic and tie-breaking, less bookkeeping).
            w = self.segment_weights(seg, q_indptr, terms, weights)  # x the terms' scales, snapped
            seg_maxscore = maxscore and seg.n_docs > self.maxscore_min_docs
            docs = None
            if plan is not None:
                # The filter joins the deletions (the kernels skip both alike; empty: it leaves
                # every document here, none deleted)
                dele, docs = plan.skips[si], plan.docs[si]
            if maxscore and docs is not None:
                # a query for which the allowed documents are few is scored over them alone,
                # document at a time (the kernel chooses per query)
                args = (q_indptr, terms, w, kk, seg.n_docs, dele, docs, self.allowed_cost, seg_maxscore,
                        seg.term_block_ptr, seg.term_post_ptr, seg.term_max, seg.block_last,
                        seg.block_max, seg.block_bits, seg.block_word_ptr, seg.words, seg.impacts, out_s, out_d)
                if serial:
                    kernels.filtered_serial(*args)
                else:
                    kernels.filtered_batch(*args, 4 * kernels.n_threads())
            elif seg_maxscore:
                run = kernels.maxscore_serial if serial else kernels.maxscore_batch
                run(q_indptr, terms, w, kk, dele, seg.term_block_ptr, seg.term_post_ptr,
                    seg.term_max, seg.block_last, seg.block_max, seg.block_bits,
                    seg.block_word_ptr, seg.words, seg.impacts, out_s, out_d)
            else:
                args = (q_indptr, terms, w, kk, seg.n_docs, dele, seg.term_block_ptr, seg.term_post_ptr,
                        seg.block_last, seg.block_bits, seg.block_word_ptr, seg.words, seg.impacts, out_s, out_d)
                if serial:
                    kernels.exhaustive_serial(*args)
                else:  # a few runs of queries per thread: balanced, and one accumulator per run
                    kernels.exhaustive_batch(*args, 4 * kernels.n_threads())
            if seg.score_scale != 1.0:  # a version-1 segment: one scale for all its impacts
                out_s *= seg.score_scale
            per_seg_s.append(out_s)
            if base:
                out_d[out_d >= 0] += base
            per_seg_d.append(out_d)
        return _merge_topk(per_seg_s, per_seg_d, k, dtype)

    def search_run(self, queries: SparseBatch, k: int = 1000, params: ExactParams | None = None
                   ) -> dict[str, dict[str, float]]:
        """Search and return a run ``{query_id: {doc_id: score}}`` (query ids from ``queries.ids``,
        else ``"0", "1", ...``)."""
        return to_run(*self.search(queries, k, params), self.doc_ids, queries.ids)

    def _explain_weights(self, seg: Segment, terms: np.ndarray, weights: np.ndarray) -> np.ndarray:
        # what the kernels score with
        return kernels.snap_query_weights(self.segment_weights(seg, np.array([0, len(terms)]), terms, weights))

    def __repr__(self) -> str:
        return (f"Index({str(self.path)!r}, docs={self.n_docs}, terms={self.n_terms}, "
                f"segments={len(self.segments)}, quantization={self.manifest.get('quantization')})")


def _merge_topk(scores: Sequence[np.ndarray], docs: Sequence[np.ndarray], k: int,
                dtype: type = np.float32) -> tuple[np.ndarray, np.ndarray]:
    """Merge per-segment (or per-shard) top-k lists (global doc numbers) into one, ties by
    ascending doc; scores are compared as given (float64 for exactness), returned as ``dtype``."""
    nq = scores[0].shape[0] if scores else 0
    if len(scores) == 1 and scores[0].shape[1] == k:
        return scores[0].astype(dtype), docs[0]
    s = np.concatenate(scores, axis=1) if scores else np.zeros((nq, 0))
    d = np.concatenate(docs, axis=1) if docs else np.zeros((nq, 0), np.int64)
    big = np.iinfo(np.int64).max
    out_s = np.zeros((nq, k), dtype)
    out_d = np.full((nq, k), -1, np.int64)
    for i in range(nq):
        valid = d[i] >= 0
        order = np.lexsort((np.where(valid, d[i], big), -np.where(valid, s[i], -np.inf)))[:k]
        order = order[valid[order]]
        out_s[i, :len(order)] = s[i][order]
        out_d[i, :len(order)] = d[i][order]
    return out_s, out_d


def open_index(path: str | os.PathLike, **kw: Any) -> Index:
    """``Index.open(path, **kw)``: kept as a name for callers (``Index.open`` itself follows
    concurrent commits, see :func:`~sparsearch.index.manifest.load_commit`)."""
    return Index.open(path, **kw)
