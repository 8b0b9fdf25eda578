"""Approximate top-k retrieval over an :class:`~sparsearch.index.Index`, Seismic-style.

Implements the index and query algorithm of Seismic (Bruch, Nardini, Rulli, Venturini,
"Efficient Inverted Indexes for Approximate Retrieval over Learned Sparse Representations",
SIGIR 2024) over the same document vectors (the index's quantized impacts) and the same doc
numbering as exact search, with the knobs named as in the paper and in ``pyseismic-lsr``:

Build time (:class:`ApproxBuildParams`)
    ``pruning``: :class:`GlobalPruning` or :class:`FixedPruning`, ``n_postings`` (lambda)
        static pruning: a posting list keeps only its highest-weighted postings. With
        ``GlobalPruning`` (Seismic's default) one collection-wide threshold keeps about
        ``n_postings`` postings per list on average, no list longer than
        ``max_fraction * n_postings``; with ``FixedPruning`` every list keeps its top
        ``n_postings`` (the paper's lambda).
    ``centroid_fraction`` (beta)
        every pruned list is partitioned into ``ceil(beta * len)`` blocks by a shallow,
        random-centroid clustering (one assignment pass, documents compared by their
        ``doc_cut`` largest components).
    ``kmeans_iterations``
        Lloyd steps of spherical k-means after that pass (each centroid: the normalised sum of
        its members' sketches, cut to ``doc_cut`` components; every document reassigned).
        0 is Seismic's clustering; 1 (the default) makes tighter blocks, so fewer documents
        are scored for the same recall.
    ``summary_energy`` (alpha)
        each block gets a *summary*: the component-wise maximum of its documents, pruned to
        the largest components that hold an ``alpha`` fraction of its L1 mass, 8-bit
        quantized with a per-block scale.
    ``min_cluster_size``
        smaller clusters are dissolved into their members' second-best centroid.

Query time (:class:`~sparsearch.searching.ApproxParams`)
    ``query_cut``
        only the posting lists of the ``query_cut`` largest query weights are visited.
    ``heap_factor``
        in each visited list, blocks are scanned by decreasing summary score (``<q, summary>``)
        and the scan stops at the first block whose summary score is below ``heap_factor``
        times the k-th best score so far (Seismic's rule); documents of scanned blocks are
        scored exactly (full query, all terms) against the *forward index*.
    ``candidates`` (the *candidate strategy*, when >= 1; ``heap_factor`` is then unused)
        the pruned lists of the ``query_cut`` heaviest query terms are read whole, term at a
        time, adding ``query weight x impact`` to a per-document accumulator (each blocked
        posting stores its impact, ``block_vals``); the ``candidates`` documents with the best
        partial scores (ties: lower doc first) are scored exactly on the forward index, in
        document order. The partial score sees every heavy query term a document holds among
        its highest-weighted postings, where a block summary sees one term's cluster: on
        learned sparse vectors of real text it needs far fewer exact scorings for the same
        recall. It needs neither blocks nor summaries: ``ApproxBuildParams(summaries=False)``
        builds the pruned lists in document order only (no clustering), a fraction of the
        memory and build time, for this strategy alone.
    ``forward_cut`` and ``rerank`` (Seismic's strategy; when ``forward_cut`` >= 1)
        every forward vector is stored heaviest entry first (:func:`kernels_approx.heaviest_first`),
        and a document of a scanned block is scored on its ``forward_cut`` heaviest entries only:
        scoring reads a document's vector at random, and its cost is the cache lines it touches.
        The scan's threshold is the k-th best of these partial scores; the ``rerank`` best are
        scored on their whole vectors at the end for the result.

Storage (all arrays; ``memory_bytes()`` is their total): the forward index (CSR of every
document: ``uint16`` term ids when the vocabulary allows, 8-bit impacts on one per-term grid
``term_scale``, and one scale per document), the blocked lists (``uint32`` doc ids, and next to
each a ``uint64`` locator of the document's forward vector, ``uint32`` in small collections:
offset and length, as Seismic packs them, and the posting's impact, ``block_vals``), and the
summaries grouped by component as in Seismic's quantized summaries, per run of at most 256
blocks of a list (a *summary group*): block numbers bit-packed per group (at most 8 bits), ``uint8`` values, a bit per entry marking
where each component starts, a directory of ``uint16`` component ids or a vocabulary bitmap,
one float scale per block. The forward index is a copy of the postings in document order: the
approximate index is self-contained and needs nothing of the exact segments at query time.

Persistence: building is an explicit step (:meth:`ApproximateIndex.build`, ``sparsearch
build-approx``); search never writes. The arrays go next to the index, in ``INDEX/approx-<id>/``
(published atomically by the storage layer), named by ``INDEX/approximate.json`` (replaced
atomically). The pointer records the index commit it was built from; opening an approximate
index after the exact index changed raises :class:`CorruptIndexError` (any commit also removes
it). Query settings chosen by :func:`tune` can be saved in ``INDEX/settings.json``
(:func:`save_settings`); a search without parameters uses them.

With ``n_postings >= the longest list``, ``summary_energy=1``, ``query_cut >= query length``
and ``heap_factor=1`` the summary scores are upper bounds of every document score in their
block and the search returns the exact top-k (up to ties at the k-th score).

Quantization: an index of per-term scaled segments (segment format 2) is copied onto one
per-term grid, ``term_scale[t]`` = the largest of the segments' scales of ``t``; the query
weights absorb it (``weight x term_scale[term]``, as exact search does per segment) and
``doc_scale`` is 1. When all segments share their grid (one segment, a distributed build, a
merged index) the impacts are the segments' own and scores equal exact search bit for bit;
segments on different grids (added by updates) are re-quantized onto the common one (a
weight moves by at most half a step of its term's grid; none becomes 0). Static pruning
(the global threshold) and the clustering sketches compare the dequantized weights; the
summaries are in grid units, like the forward values they bound. An index of version-1
segments (one scale each) keeps ``term_scale`` empty and a scale per document.
"""

from __future__ import annotations

import math
import os
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Union

import numba as nb
import numpy as np

from ..errors import ConflictError, CorruptIndexError, InvalidInputError, NotFoundError
from ..evaluation import recall_at_k, time_queries, to_run
from ..searching import ApproxParams, ExactParams, check_k, params_from_dict, params_to_dict, require
from ..vectors import SparseBatch
from . import kernels
from . import kernels_approx as ka
from .manifest import read_manifest
from .searcher import Index
from .segment import common_term_scale
from .storage import (Directory, check_seal, file_record, read_arrays, read_json, read_versioned_json, seal,
                      verify_records, write_arrays)

__all__ = ["ApproximateIndex", "ApproxBuildParams", "GlobalPruning", "FixedPruning", "tune", "save_settings",
           "load_settings", "default_params", "CANDIDATE_DEFAULTS", "POINTER", "SETTINGS"]

APPROX_FORMAT = "sparsearch-approximate"
APPROX_VERSION = 6  # 2: forward locators next to the blocked postings; 3: summary groups; 4: term_scale;
#                    5: the succinct component index (comp_first, comp_sample) instead of comp_start,
#                    block numbers bit-packed per group (group_bit_ptr, ent_bits) instead of ent_block;
#                    6: block_vals (each blocked posting's impact), indexes without summaries
READ_VERSIONS = (3, 4, 5, 6)
POINTER = "approximate.json"
HEADER = "segment.json"  # inside approx-<id>/: the arrays' dtypes, shapes, sizes, checksums and the build meta
SETTINGS = "settings.json"
# the order of a forward vector's entries, in the header: by decreasing weight (ties by term);
# headers without it (indexes built before) hold them by term
FORWARD_ORDER = "heaviest_first"
SETTINGS_FORMAT = "sparsearch-settings"
SETTINGS_VERSION = 2  # 2: sealed (a checksum over its content); 1: not (still read)
SUMMARY_ARRAYS = ("term_group_ptr", "group_block_ptr", "group_comp_ptr", "group_term_ptr", "group_word_ptr",
                  "comp_terms", "dir_words", "dir_rank", "comp_first", "comp_sample", "group_ent_ptr",
                  "group_bit_ptr", "ent_bits", "ent_val", "sum_scale")
_LISTS = ("fwd_ptr", "fwd_terms", "fwd_vals", "doc_scale", "term_block_ptr", "block_doc_ptr", "block_docs",
          "block_fwd", "block_vals")
ARRAYS = (*_LISTS, *SUMMARY_ARRAYS, "term_scale")
# ascending offsets (their last entry the largest) stored as int32 where they fit
NARROW_POINTERS = ("fwd_ptr", "term_block_ptr", "block_doc_ptr", "term_group_ptr", "group_block_ptr",
                   "group_comp_ptr", "group_term_ptr", "group_word_ptr", "group_ent_ptr", "group_bit_ptr")
# versions 3 to 5 stored no ``block_vals`` (read from the forward index on opening); versions 3
# and 4 stored each component's start relative to its group (``comp_start``), and version 3 no
# ``term_scale``; they are read and given the succinct index on opening
ARRAYS_V5 = tuple(n for n in ARRAYS if n != "block_vals")
ARRAYS_V4 = (tuple(n for n in ARRAYS_V5 if n not in ("comp_first", "comp_sample", "group_bit_ptr", "ent_bits"))
             + ("comp_start", "ent_block"))
ARRAYS_V3 = tuple(n for n in ARRAYS_V4 if n != "term_scale")


# ------------------------------------------------------------------ build parameters
@dataclass(frozen=True)
class GlobalPruning:
    """Seismic's default static pruning: one collection-wide weight threshold keeping about
    ``n_postings`` postings per list on average, no list longer than ``max_fraction * n_postings``."""

    kind = "global"
    n_postings: int = 3500
    max_fraction: float = 1.5

    def check(self) -> "GlobalPruning":
        _check_n_postings(self.n_postings)
        if not self.max_fraction > 0:
            raise InvalidInputError(f"max_fraction must be > 0, got {self.max_fraction}")
        return self


@dataclass(frozen=True)
class FixedPruning:
    """Every posting list keeps its ``n_postings`` highest-weighted postings (the paper's lambda)."""

    kind = "fixed"
    n_postings: int = 3500

    def check(self) -> "FixedPruning":
        _check_n_postings(self.n_postings)
        return self


Pruning = Union[GlobalPruning, FixedPruning]
PRUNINGS: dict[str, type] = {"global": GlobalPruning, "fixed": FixedPruning}


def _check_n_postings(n: int) -> None:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise InvalidInputError(f"n_postings must be an integer >= 1, got {n!r}")


@dataclass(frozen=True)
class ApproxBuildParams:
    """Build parameters of the approximate index, named as in Seismic (see the module docstring).

    Attributes:
        pruning: :class:`GlobalPruning` (default) or :class:`FixedPruning`, with ``n_postings``.
        centroid_fraction: in (0, 1]; blocks per list = ``ceil(centroid_fraction * list length)``.
        summary_energy: in (0, 1]; fraction of a block's L1 mass its summary keeps.
        min_cluster_size: >= 1; smaller clusters are dissolved.
        doc_cut: >= 1; components of a document's sketch used to cluster.
        seed: of the random centroids.
        kmeans_iterations: >= 0 Lloyd steps after the random-centroid pass (0: Seismic's one pass).
        summaries: ``False``: no clustering and no summaries; the pruned lists are kept in
            document order, and the index serves only the candidate strategy
            (``ApproxParams(candidates=N)``), in a fraction of the memory and build time.
    """

    pruning: Pruning = field(default_factory=GlobalPruning)
    centroid_fraction: float = 0.1
    summary_energy: float = 0.4
    min_cluster_size: int = 2
    doc_cut: int = 15
    seed: int = 0
    kmeans_iterations: int = 1
    summaries: bool = True

    def check(self) -> "ApproxBuildParams":
        if not isinstance(self.pruning, (GlobalPruning, FixedPruning)):
            raise InvalidInputError(f"pruning must be GlobalPruning(...) or FixedPruning(...), got {self.pruning!r}")
        self.pruning.check()
        if not 0 < self.centroid_fraction <= 1:
            raise InvalidInputError(f"centroid_fraction must be in (0, 1], got {self.centroid_fraction}")
        if not 0 < self.summary_energy <= 1:
            raise InvalidInputError(f"summary_energy must be in (0, 1], got {self.summary_energy}")
        if self.doc_cut < 1 or self.min_cluster_size < 1:
            raise InvalidInputError("doc_cut and min_cluster_size must be >= 1")
        if self.kmeans_iterations < 0:
            raise InvalidInputError(f"kmeans_iterations must be >= 0, got {self.kmeans_iterations}")
        if not isinstance(self.summaries, bool):
            raise InvalidInputError(f"summaries must be true or false, got {self.summaries!r}")
        return self

    def to_dict(self) -> dict[str, Any]:
        """JSON form: ``{"pruning": {"kind": ..., ...}, "centroid_fraction": ..., ...}``."""
        return {**asdict(self), "pruning": {"kind": self.pruning.kind, **asdict(self.pruning)}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ApproxBuildParams":
        """Inverse of :meth:`to_dict`; also reads the parameters of indexes saved by earlier
        versions (``pruning`` a string next to ``n_postings`` / ``max_fraction``; no
        ``kmeans_iterations``: those were clustered in Seismic's one pass, 0)."""
        d = dict(d)
        pruning = d.pop("pruning", None)
        n_postings, max_fraction = d.pop("n_postings", None), d.pop("max_fraction", None)
        if isinstance(pruning, str) or pruning is None:  # the earlier flat format
            pruning = {"kind": pruning or "global", "n_postings": n_postings, "max_fraction": max_fraction}
            pruning = {k: v for k, v in pruning.items() if v is not None}
            d.setdefault("kmeans_iterations", 0)
        if not isinstance(pruning, dict) or pruning.get("kind") not in PRUNINGS:
            raise InvalidInputError(f"unknown pruning {pruning!r}; use one of {', '.join(PRUNINGS)}")
        pcls = PRUNINGS[pruning["kind"]]
        names = {f.name for f in fields(pcls)}
        pargs = {k: v for k, v in pruning.items() if k in names}
        known = {f.name for f in fields(cls)} - {"pruning"}
        extra = set(d) - known
        if extra:
            raise InvalidInputError(f"approximate build parameters have no {sorted(extra)[0]!r}")
        return cls(pruning=pcls(**pargs), **d).check()


def _check_rows(q_indptr: np.ndarray, terms: np.ndarray, weights: np.ndarray) -> None:
    """Refuse CSR query arrays whose rows ``q_indptr`` reach outside ``terms`` / ``weights`` (the
    kernels index them without bounds checks); rows may cover a part of them."""
    n = len(terms)
    lo = int(q_indptr[0]) if len(q_indptr) else 0
    hi = int(q_indptr[-1]) if len(q_indptr) else 0
    if (len(weights) != n or len(q_indptr) < 2 or lo < 0 or hi > n
            or (bool((np.diff(q_indptr) < 0).any()) if len(q_indptr) > 2 else lo > hi)):
        raise InvalidInputError(f"query rows: row pointers ({len(q_indptr)}, from {lo} to {hi}) outside {n} terms "
                                f"and {len(weights)} weights, or not ascending")


def _n_chunks(threads: int | None) -> int:
    kernels.set_threads(threads)
    return int(nb.get_num_threads())


def _index_identity(index) -> dict[str, Any]:
    return {"generation": index.manifest.get("generation"),
            "segments": [s["name"] for s in index.manifest["segments"]], "n_docs": index.n_docs}


def _common_grid(index) -> np.ndarray | None:
    """The per-term grid of the forward index (``segment.common_term_scale``); ``None`` when every
    segment is of version 1 (the forward index then keeps a scale per document)."""
    if all(seg.term_scale is None for seg in index.segments):
        return None
    return common_term_scale(index.segments, index.n_terms)


def _forward_from_index(index) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """The index's postings in document order: ``(fwd_ptr, fwd_terms, fwd_vals, doc_scale,
    term_scale)`` (``term_scale`` from :func:`_common_grid`; the impacts of a segment on another
    grid are re-quantized onto it, never to 0)."""
    V = index.n_terms
    term_dtype = np.uint16 if V <= 1 << 16 else np.int32
    grid = _common_grid(index)
    ptrs, terms, vals, scales = [np.zeros(1, np.int64)], [], [], []
    off = 0
    for seg in index.segments:
        docs = ka.decode_all(seg.term_block_ptr, seg.term_post_ptr, seg.block_last, seg.block_bits,
                             seg.block_word_ptr, seg.words)
        p, t, v = kernels.invert(seg.term_post_ptr, docs, seg.impacts, seg.n_docs)
        del docs  # (the peak of a build: billions of postings at 10M documents)
        ptrs.append(p[1:] + off)
        off += int(p[-1])
        if grid is None:
            scales.append(np.full(seg.n_docs, seg.scale, np.float64))
        else:
            own = seg.term_scales(np.arange(seg.n_terms))
            ratio = own / np.where(grid[:seg.n_terms] > 0, grid[:seg.n_terms], 1.0)
            if v.dtype == np.uint8 and not np.all(ratio[np.diff(seg.term_post_ptr) > 0] == 1.0):
                v = np.clip(np.rint(v * ratio[t]), 1, 255).astype(np.uint8)
            scales.append(np.ones(seg.n_docs, np.float64))
        terms.append(t.astype(term_dtype, copy=False))
        del t
        vals.append(np.asarray(v))
    # one segment (a fresh build): its arrays as they are, not a copy
    cat = (lambda xs, dt: (xs[0] if len(xs) == 1 else np.concatenate(xs)) if xs else np.zeros(0, dt))
    val_dtype = index.segments[0].impacts.dtype if index.segments else np.uint8
    return (np.concatenate(ptrs), cat(terms, term_dtype), cat(vals, val_dtype), cat(scales, np.float64), grid)


GROUP_BLOCKS = 256  # blocks per summary group: a block's number within its group fits a byte
GROUP_ENTRIES = (1 << 16) - 1  # summary entries per group: an entry offset fits 16 bits
DENSE_DIRECTORIES = True  # a group's directory may be a vocabulary bitmap where that is smaller


def _component_major(term_block_ptr: np.ndarray, sum_ptr: np.ndarray, sum_terms: np.ndarray, sum_vals: np.ndarray,
                     V: int, nch: int) -> dict[str, np.ndarray]:
    """Summaries regrouped by component, as Seismic's quantized summaries are, per *summary group*.

    A list's blocks are split into runs of consecutive blocks (groups: at most ``GROUP_BLOCKS``
    blocks and ``GROUP_ENTRIES`` entries; most lists are one group). List ``t`` owns the groups
    ``term_group_ptr[t]:term_group_ptr[t+1]``; group ``g`` holds the blocks
    ``group_block_ptr[g]:group_block_ptr[g+1]`` and the components
    ``c = group_comp_ptr[g] ... group_comp_ptr[g+1] - 1`` (ascending ids); component ``c`` owns
    the entries ``comp_range(c)`` (:func:`kernels_approx.comp_range`: a bit per entry marks where a
    component starts, ``comp_first``, with the start of every 32nd component sampled,
    ``comp_sample``; about 3 bits per component instead of a 16-bit offset): the block's number
    within the group (bit-packed at the group's width, :func:`kernels_approx.pack_block_numbers`:
    0 bits in a one-block group, 8 in one of 256) and ``ent_val``
    (8-bit value; times ``sum_scale`` of the block). A group's directory (component id ->
    ``c``) is whichever is smaller: its sorted component ids
    (``comp_terms[group_term_ptr[g]:group_term_ptr[g+1]]``, binary-searched) or, as Seismic's
    dense offsets, a bitmap over the vocabulary (``dir_words[group_word_ptr[g]:...]``) with the
    rank of every 64-bit word (``dir_rank``), looked up in O(1). Scoring all the blocks of a list
    then costs one lookup per query term and group, plus the matching entries only. The groups keep the
    per-entry block numbers narrow (at most 8 bits instead of 16 for whole lists of hundreds of blocks).
    """
    group_block_ptr = ka.summary_groups(term_block_ptr, sum_ptr, GROUP_BLOCKS, GROUP_ENTRIES)
    term_group_ptr = np.searchsorted(group_block_ptr[:-1], term_block_ptr, side="left").astype(np.int64)
    ncomp = ka.component_major_sizes(group_block_ptr, sum_ptr, sum_terms, V, nch)
    group_comp_ptr = np.zeros(len(group_block_ptr), np.int64)
    np.cumsum(ncomp, out=group_comp_ptr[1:])
    group_ent_ptr = sum_ptr[group_block_ptr].astype(np.int64)
    per_group = np.diff(group_ent_ptr)
    wide = len(per_group) > 0 and int(per_group.max()) > GROUP_ENTRIES  # one block alone: a vocabulary > 65535
    comp_terms = np.empty(int(group_comp_ptr[-1]), sum_terms.dtype)
    comp_start = np.empty(int(group_comp_ptr[-1]), np.uint32 if wide else np.uint16)
    ent_block = np.empty(len(sum_terms), np.uint8)
    ent_val = np.empty(len(sum_terms), np.uint8)
    ka.component_major_fill(group_block_ptr, sum_ptr, sum_terms, sum_vals, V, group_comp_ptr, comp_terms, comp_start,
                            ent_block, ent_val, nch)
    # directory per group: sorted component ids, or a vocabulary bitmap + per-word ranks where smaller
    n_words = (V + 63) // 64
    rank_dtype = np.uint16 if V < 1 << 16 else np.uint32
    dense = ncomp * comp_terms.itemsize > n_words * (8 + np.dtype(rank_dtype).itemsize)
    if not DENSE_DIRECTORIES:
        dense[:] = False
    group_word_ptr = np.zeros(len(group_block_ptr), np.int64)
    np.cumsum(np.where(dense, n_words, 0), out=group_word_ptr[1:])
    dir_words = np.empty(int(group_word_ptr[-1]), np.uint64)
    dir_rank = np.empty(int(group_word_ptr[-1]), rank_dtype)
    ka.dense_directories(group_comp_ptr, comp_terms, group_word_ptr, dir_words, dir_rank, nch)
    group_term_ptr = np.zeros(len(group_block_ptr), np.int64)
    np.cumsum(np.where(dense, 0, ncomp), out=group_term_ptr[1:])
    comp_terms = comp_terms[np.repeat(~dense, ncomp)]  # ids kept for the sparse groups only
    return {"term_group_ptr": term_group_ptr, "group_block_ptr": group_block_ptr, "group_comp_ptr": group_comp_ptr,
            "group_term_ptr": group_term_ptr, "group_word_ptr": group_word_ptr, "comp_terms": comp_terms,
            "dir_words": dir_words, "dir_rank": dir_rank, "group_ent_ptr": group_ent_ptr,
            "ent_val": ent_val,
            **dict(zip(("group_bit_ptr", "ent_bits"),
                       ka.pack_block_numbers(group_block_ptr, group_ent_ptr, ent_block))),
            **_component_index(group_comp_ptr, group_ent_ptr, comp_start, len(ent_val))}


def _component_index(group_comp_ptr: np.ndarray, group_ent_ptr: np.ndarray, comp_start: np.ndarray,
                     n_entries: int) -> dict[str, np.ndarray]:
    """``comp_first`` (uint64 bit array over the entries + 1 sentinel) and ``comp_sample`` (the
    start of every ``ka.COMP_SAMPLE``-th component; uint32 while the entries allow) of components
    starting at ``group_ent_ptr[g] + comp_start[c]`` (see :func:`kernels_approx.comp_range`)."""
    n_comp = len(comp_start)
    sample = np.empty((n_comp + ka.COMP_SAMPLE - 1) // ka.COMP_SAMPLE, np.uint32 if n_entries < 1 << 32 else np.int64)
    first = ka.component_index(group_comp_ptr, group_ent_ptr, comp_start, np.int64(n_entries), sample)
    return {"comp_first": first, "comp_sample": sample}


class ApproximateIndex:
    """Seismic-style approximate searcher over the documents of an :class:`Index`.

    Implements the :class:`~sparsearch.searching.Searcher` protocol; doc numbers and ids are the
    exact index's (``.index``, ``.doc_ids``). Build it with :meth:`build`, load a saved one with
    :meth:`open`.
    """

    def __init__(self, index: Index, params: ApproxBuildParams, arrays: dict[str, np.ndarray], meta: dict[str, Any],
                 path: Path | None = None) -> None:
        self.index = index
        self.params = params
        self.meta = meta
        self.path = path
        for name in ARRAYS:
            setattr(self, name, arrays[name])
        self._n_docs = len(self.fwd_ptr) - 1
        if len(self.term_scale) not in (0, len(self.term_block_ptr) - 1):
            raise CorruptIndexError(f"{path}: {len(self.term_scale)} term scales for {len(self.term_block_ptr) - 1} "
                                    f"lists (corrupt approximate index)")
        # query-weight multipliers (the grid, then 0 for unknown terms); None: weights as given
        self._qscale = np.append(self.term_scale, 0.0) if len(self.term_scale) else None
        #: the document scales as the kernels take them: one entry when every document shares
        #: one quantization grid (one segment, or segments on one grid), else ``doc_scale``
        #: itself (n_docs,): one scale per document
        self.doc_scale_arg: np.ndarray = self._scale_arg(self.doc_scale)
        # the arrays every search passes to the kernels, in their argument order
        self._common = (self.term_block_ptr, self.block_doc_ptr, self.block_docs, self.block_fwd,
                        tuple(getattr(self, n) for n in SUMMARY_ARRAYS), self.fwd_ptr, self.fwd_terms, self.fwd_vals,
                        self.doc_scale_arg)
        #: whether every forward vector lists its entries heaviest first (built since they are;
        #: ``ApproxParams.forward_cut`` needs it; the other searches read whole vectors)
        self.heaviest_first: bool = meta.get("forward_order") == FORWARD_ORDER
        # ... and those of the candidate strategy
        self._cand_common = (self.term_block_ptr, self.block_doc_ptr, self.block_docs, self.block_vals, self.fwd_ptr,
                             self.fwd_terms, self.fwd_vals, self.doc_scale_arg)
        if len(self.block_vals) != len(self.block_docs) or (
                params.summaries and len(self.block_fwd) != len(self.block_docs)):
            raise CorruptIndexError(f"{path}: {len(self.block_docs)} blocked postings, {len(self.block_vals)} impacts "
                                    f"and {len(self.block_fwd)} locators (corrupt approximate index)")
        self._lock = threading.Lock()
        self._scratch: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._cand_scratch: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._deleted = self._deleted_mask()
        self.last_scored = 0  #: documents scored by the last single-threaded search (all its queries)
        #: query parameters a search without ``params`` uses: the saved settings, else defaults
        self.default_params: ApproxParams = default_params(index.path, params.summaries)

    # ----------------------------------------------------------------- build
    @classmethod
    def build(cls, index: Index, params: ApproxBuildParams | None = None, *, save: bool = True,
              threads: int | None = None) -> "ApproximateIndex":
        """Build from ``index`` with ``params`` (default ``ApproxBuildParams()``); with ``save``
        persist it next to the index (see :meth:`save`). ``threads``: build threads (default all)."""
        params = (params if params is not None else ApproxBuildParams()).check()
        t0 = time.perf_counter()
        nch = _n_chunks(threads)
        V = index.n_terms
        fwd_ptr, fwd_terms, fwd_vals, doc_scale, grid = _forward_from_index(index)
        post_ptr, post_docs, post_vals = kernels.invert(fwd_ptr, fwd_terms, fwd_vals, V)
        pruning = params.pruning
        step = grid if grid is not None else np.zeros(0, np.float64)
        if isinstance(pruning, GlobalPruning):  # one threshold over all lists: on the weights
            keep = ka.global_keep(post_ptr, post_vals, step, cls._scale_arg(doc_scale), post_docs,
                                  pruning.n_postings, pruning.max_fraction)
        else:
            keep = np.full(V, pruning.n_postings, np.int64)
        # (within one list the grid step is one constant: impacts order the postings like weights)
        list_ptr, list_docs = ka.prune_lists(post_ptr, post_docs, post_vals, doc_scale, keep)
        del post_ptr, post_docs, post_vals
        if params.summaries:
            blocks = cls._clustered_blocks(params, list_ptr, list_docs, fwd_ptr, fwd_terms, fwd_vals, doc_scale, step,
                                           V, nch)
        else:
            blocks = cls._plain_lists(list_ptr, list_docs, fwd_terms.dtype, V)
        del list_docs
        block_docs = blocks["block_docs"]
        n = len(block_docs)
        blocks["block_vals"] = ka.posting_impacts(blocks["term_block_ptr"], blocks["block_doc_ptr"], block_docs,
                                                  fwd_ptr, fwd_terms, fwd_vals)
        max_len = int(np.diff(fwd_ptr).max()) if len(fwd_ptr) > 1 else 0  # the longest forward vector
        if max_len >= 1 << ka.LOC_BITS:
            raise InvalidInputError(f"a document has more than {(1 << ka.LOC_BITS) - 1} non-zero entries")
        narrow = ka.locators_fit_32(max_len, int(fwd_ptr[-1]))
        if params.summaries:
            wide_loc, narrow_loc = ka.forward_locators(block_docs, fwd_ptr, narrow)
            blocks["block_fwd"] = narrow_loc if narrow else wide_loc
        else:  # the candidate strategy reads documents through fwd_ptr
            blocks["block_fwd"] = np.zeros(0, np.uint32 if narrow else np.uint64)
        # heaviest entry first (after everything that looks terms up in a vector by binary search)
        fwd_terms, fwd_vals = ka.heaviest_first(fwd_ptr, fwd_terms, fwd_vals, step)
        arrays = {"fwd_ptr": fwd_ptr, "fwd_terms": fwd_terms, "fwd_vals": fwd_vals, "doc_scale": doc_scale,
                  "term_scale": grid if grid is not None else np.zeros(0, np.float64), **blocks}
        for name in NARROW_POINTERS:  # offsets that fit 31 bits as int32: half the bytes, same values
            if len(arrays[name]) and int(arrays[name][-1]) < 1 << 31:
                arrays[name] = arrays[name].astype(np.int32)
        meta = {"params": params.to_dict(), "index": _index_identity(index), "n_docs": index.n_docs,
                "n_terms": V, "n_blocks": len(arrays["block_doc_ptr"]) - 1, "n_list_postings": n,
                "forward_order": FORWARD_ORDER,
                "build_seconds": time.perf_counter() - t0}
        out = cls(index, params, arrays, meta)
        if save:
            out.save()
        return out


    @staticmethod
    def _clustered_blocks(params: ApproxBuildParams, list_ptr, list_docs, fwd_ptr, fwd_terms, fwd_vals, doc_scale,
                          step, V: int, nch: int) -> dict[str, np.ndarray]:
        """Seismic's blocks: every pruned list clustered into blocks, each with its summary
        (``term_block_ptr``, ``block_doc_ptr``, ``block_docs`` and the summary arrays)."""
        sk_ptr, sk_terms, sk_vals = ka.doc_sketches(fwd_ptr, fwd_terms, fwd_vals, step, doc_scale, params.doc_cut)
        assign = ka.cluster_lists(list_ptr, list_docs, sk_ptr, sk_terms, sk_vals, V, params.centroid_fraction,
                                  params.min_cluster_size, params.kmeans_iterations, params.doc_cut, params.seed, nch)
        del sk_ptr, sk_terms, sk_vals
        # blocks: postings of a list grouped by cluster, docs ascending inside a block
        term_of = np.repeat(np.arange(V, dtype=np.int64), np.diff(list_ptr))
        order = np.lexsort((list_docs, assign, term_of))
        term_of, assign = term_of[order], assign[order]
        block_docs = list_docs[order].astype(np.uint32)
        del order
        n = len(block_docs)
        change = np.ones(n, bool)
        if n:
            change[1:] = (term_of[1:] != term_of[:-1]) | (assign[1:] != assign[:-1])
        starts = np.flatnonzero(change)
        block_doc_ptr = np.append(starts, n).astype(np.int64)
        term_block_ptr = np.searchsorted(starts, list_ptr, side="left").astype(np.int64)
        del term_of, assign, change, starts
        sizes, cutoff, n_at_cut = ka.summary_sizes(block_doc_ptr, block_docs, fwd_ptr, fwd_terms, fwd_vals,
                                                   doc_scale, V, params.summary_energy, nch)
        sum_ptr = np.zeros(len(sizes) + 1, np.int64)
        np.cumsum(sizes, out=sum_ptr[1:])
        sum_terms = np.empty(int(sum_ptr[-1]), fwd_terms.dtype)
        sum_vals = np.empty(int(sum_ptr[-1]), np.uint8)
        sum_scale = np.empty(len(sizes), np.float32)
        ka.fill_summaries(block_doc_ptr, block_docs, fwd_ptr, fwd_terms, fwd_vals, doc_scale, V, cutoff,
                          n_at_cut, sum_ptr, sum_terms, sum_vals, sum_scale, nch)
        summaries = _component_major(term_block_ptr, sum_ptr, sum_terms, sum_vals, V, nch)
        del sum_ptr, sum_terms, sum_vals
        return {"term_block_ptr": term_block_ptr, "block_doc_ptr": block_doc_ptr, "block_docs": block_docs,
                **summaries, "sum_scale": sum_scale}

    @staticmethod
    def _plain_lists(list_ptr, list_docs, term_dtype, V: int) -> dict[str, np.ndarray]:
        """The pruned lists without clustering or summaries: one block per non-empty list,
        documents ascending (the candidate strategy adds partial scores in document order)."""
        term_of = np.repeat(np.arange(V, dtype=np.int64), np.diff(list_ptr))
        block_docs = list_docs[np.lexsort((list_docs, term_of))].astype(np.uint32)
        lens = np.diff(list_ptr)
        block_doc_ptr = np.append(np.asarray(list_ptr[:-1])[lens > 0], list_ptr[-1]).astype(np.int64)
        term_block_ptr = np.zeros(V + 1, np.int64)
        np.cumsum(lens > 0, out=term_block_ptr[1:])
        empty = {n: np.zeros(0, np.int64) for n in SUMMARY_ARRAYS}
        empty.update(term_group_ptr=np.zeros(V + 1, np.int64), group_block_ptr=np.zeros(1, np.int64),
                     group_comp_ptr=np.zeros(1, np.int64), group_term_ptr=np.zeros(1, np.int64),
                     group_word_ptr=np.zeros(1, np.int64), group_ent_ptr=np.zeros(1, np.int64),
                     group_bit_ptr=np.zeros(1, np.int64), comp_terms=np.zeros(0, term_dtype),
                     dir_words=np.zeros(0, np.uint64), dir_rank=np.zeros(0, np.uint16),
                     comp_first=np.zeros(1, np.uint64), comp_sample=np.zeros(0, np.uint32),
                     ent_bits=np.zeros(0, np.uint64), ent_val=np.zeros(0, np.uint8), sum_scale=np.zeros(0, np.float32))
        return {"term_block_ptr": term_block_ptr, "block_doc_ptr": block_doc_ptr, "block_docs": block_docs, **empty}

    # ------------------------------------------------------------ persistence
    def save(self) -> Path:
        """Publish the arrays as ``INDEX/approx-<id>`` (atomically), point ``approximate.json``
        at them (replaced atomically), then remove older approximate directories (readers that
        hold their arrays keep their mappings). Runs under the index's writer lock; refuses
        (:class:`ConflictError`) when the index was committed to since the build."""
        d = Directory(self.index.path)
        name = f"approx-{uuid.uuid4().hex[:12]}"
        header = {"format": APPROX_FORMAT, "version": APPROX_VERSION, **self.meta}
        arrays = {n: getattr(self, n) for n in ARRAYS}
        with d.lock():
            if read_manifest(d).get("generation") != self.meta["index"]["generation"]:
                raise ConflictError(f"{d.path}: the index was committed to while its approximate index was built; "
                                    f"rebuild it with `sparsearch build-approx {d.path}`")
            d.publish(name, lambda tmp: write_arrays(tmp, arrays, header, HEADER))
            # sealed, with the record of the arrays' header (which checksums the arrays)
            d.write_json(POINTER, seal({"format": APPROX_FORMAT, "version": APPROX_VERSION, "dir": name,
                                        "index": self.meta["index"], "params": self.meta["params"],
                                        "header": file_record(d / name / HEADER)}))
            for old in d.entries():
                if old.startswith("approx-") and old != name:
                    d.remove(old)
        self.path = d / name
        return self.path

    @classmethod
    def exists(cls, index: Index) -> bool:
        """Whether an approximate index is saved next to ``index`` (current or not)."""
        return Directory(index.path).exists(POINTER)

    @classmethod
    def open(cls, index: Index, *, mmap: bool = True, verify: bool = True) -> "ApproximateIndex":
        """Load the approximate index saved next to ``index``; never builds one.

        Raises :class:`NotFoundError` (naming the build command) when there is none, and
        :class:`CorruptIndexError` when it is stale (built from another commit of the index),
        corrupt, or of an unsupported version.
        """
        root = Path(index.path)
        if not (root / POINTER).exists():
            raise NotFoundError(f"{root} has no approximate index; build it with `sparsearch build-approx {root}`")
        ptr = read_versioned_json(root, POINTER, APPROX_FORMAT, READ_VERSIONS, "approximate index")
        sealed = "checksum" in ptr or ptr["version"] >= 4  # pointers written before seals (version 3) are not
        if sealed:
            check_seal(ptr, root / POINTER, "approximate index pointer")
        if ptr.get("index") != _index_identity(index):
            raise CorruptIndexError(f"{root}: the approximate index was built from another commit of the index "
                                    f"(stale); rebuild it with `sparsearch build-approx {root}`")
        if sealed:  # the header (which checksums the arrays) against its record
            verify_records(root, {f"{ptr['dir']}/{HEADER}": ptr.get("header")}, [ptr["dir"]])
        d = root / ptr["dir"]
        meta = read_json(d / HEADER, "approximate index metadata")
        names = {3: ARRAYS_V3, 4: ARRAYS_V4, 5: ARRAYS_V5}.get(ptr["version"], ARRAYS)
        arrays = read_arrays(d, meta, names, mmap=mmap, verify=verify)
        if "block_vals" not in arrays:  # versions 3 to 5: the postings' impacts from the forward index
            arrays["block_vals"] = ka.posting_impacts(arrays["term_block_ptr"], arrays["block_doc_ptr"],
                                                      arrays["block_docs"], arrays["fwd_ptr"], arrays["fwd_terms"],
                                                      arrays["fwd_vals"])
        arrays.setdefault("term_scale", np.zeros(0, np.float64))  # version 3: no per-term grid
        if "comp_start" in arrays:  # versions 3 and 4
            arrays.update(_component_index(arrays["group_comp_ptr"], arrays["group_ent_ptr"],
                                           arrays.pop("comp_start"), len(arrays["ent_val"])))
            arrays["group_bit_ptr"], arrays["ent_bits"] = ka.pack_block_numbers(
                arrays["group_block_ptr"], arrays["group_ent_ptr"], arrays.pop("ent_block"))
        # indexes saved by earlier versions stamped the header as a segment's ("kind", "approx_version")
        meta = {k: v for k, v in meta.items() if k not in ("files", "format", "version", "kind", "approx_version")}
        try:
            params = ApproxBuildParams.from_dict(meta["params"])
        except (KeyError, TypeError, InvalidInputError) as e:
            raise CorruptIndexError(f"{d / HEADER}: unreadable build parameters ({e})") from None
        meta["params"] = params.to_dict()
        return cls(index, params, arrays, meta, d)

    @staticmethod
    def _scale_arg(doc_scale: np.ndarray) -> np.ndarray:
        """The document scales as the kernels take them: one entry when all documents share it
        (one segment, or segments quantized on one grid), saving a random load per scored document."""
        if len(doc_scale) > 1 and np.all(doc_scale == doc_scale[0]):
            return np.ascontiguousarray(doc_scale[:1])
        return doc_scale

    # ------------------------------------------------------------------ sizes
    @property
    def n_docs(self) -> int:
        return self._n_docs

    @property
    def doc_ids(self) -> list[str]:
        """External id of every doc number (the exact index's)."""
        return self.index.doc_ids

    def memory_bytes(self) -> int:
        """Bytes of all arrays (forward index + blocked lists and their impacts + summaries)."""
        return int(sum(getattr(self, n).nbytes for n in ARRAYS))

    def bytes_per_doc(self) -> float:
        return self.memory_bytes() / max(self.n_docs, 1)

    def stats(self) -> dict[str, Any]:
        fwd = sum(getattr(self, n).nbytes for n in ("fwd_ptr", "fwd_terms", "fwd_vals", "doc_scale", "term_scale"))
        inv = sum(getattr(self, n).nbytes for n in ("term_block_ptr", "block_doc_ptr", "block_docs", "block_fwd",
                                                    "block_vals"))
        summ = sum(getattr(self, n).nbytes for n in SUMMARY_ARRAYS)
        nb_ = len(self.block_doc_ptr) - 1
        return {"n_docs": self.n_docs, "n_blocks": nb_, "n_list_postings": int(self.block_doc_ptr[-1]),
                "docs_per_block": float(self.block_doc_ptr[-1]) / max(nb_, 1),
                "summary_nnz_per_block": float(len(self.ent_val)) / max(nb_, 1),
                "forward_bytes": int(fwd), "lists_bytes": int(inv), "summary_bytes": int(summ),
                "memory_bytes": self.memory_bytes(), "bytes_per_doc": self.bytes_per_doc(),
                "forward_order": FORWARD_ORDER if self.heaviest_first else "term",
                "params": self.params.to_dict(), "build_seconds": self.meta.get("build_seconds")}

    def list_summaries(self, t: int) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
        """The summaries of the blocks of list ``t``, block-major (read back from the groups).

        Returns ``(terms, codes, scales)``: per block (in list order) its component ids, ascending,
        and their 8-bit codes (uint8), and the blocks' scales (float32 (n_blocks,)); a summary
        value is ``code * scale``.
        """
        if not self.params.summaries:
            raise InvalidInputError("this approximate index was built without summaries")
        b0, b1 = int(self.term_block_ptr[t]), int(self.term_block_ptr[t + 1])
        terms: list[list[int]] = [[] for _ in range(b1 - b0)]
        codes: list[list[int]] = [[] for _ in range(b1 - b0)]
        for g in range(int(self.term_group_ptr[t]), int(self.term_group_ptr[t + 1])):
            off = int(self.group_block_ptr[g]) - b0
            c0, c1 = int(self.group_comp_ptr[g]), int(self.group_comp_ptr[g + 1])
            e0, e1 = int(self.group_ent_ptr[g]), int(self.group_ent_ptr[g + 1])
            width = int(ka.block_number_width(self.group_block_ptr, g))
            bit0 = int(self.group_bit_ptr[g]) - e0 * width
            w0, w1 = int(self.group_word_ptr[g]), int(self.group_word_ptr[g + 1])
            if w1 > w0:  # dense directory: the set bits of the bitmap, ascending
                bits = np.unpackbits(np.asarray(self.dir_words[w0:w1]).astype("<u8").view(np.uint8), bitorder="little")
                ids = np.flatnonzero(bits)
            else:
                ids = np.asarray(self.comp_terms[int(self.group_term_ptr[g]):int(self.group_term_ptr[g + 1])])
            if len(ids) != c1 - c0:
                raise CorruptIndexError(f"list {t}, summary group {g}: the directory names {len(ids)} components, "
                                       f"the offsets {c1 - c0} (corrupt index)")
            for c in range(c0, c1):
                a, b = ka.comp_range(c, self.comp_first, self.comp_sample)
                if not e0 <= a <= b <= e1:
                    raise CorruptIndexError(f"list {t}, summary group {g}: component {c} at entries {a}-{b}, "
                                            f"outside the group's {e0}-{e1} (corrupt index)")
                for e in range(a, b):
                    blk = off + int(ka.block_number(bit0 + e * width, (1 << width) - 1, self.ent_bits))
                    terms[blk].append(int(ids[c - c0]))
                    codes[blk].append(int(self.ent_val[e]))
        return ([np.array(x, np.int64) for x in terms], [np.array(x, np.uint8) for x in codes],
                np.asarray(self.sum_scale[b0:b1]))

    # ----------------------------------------------------------------- search
    def _deleted_mask(self) -> np.ndarray:
        dels = getattr(self.index, "deleted", [])
        if not any(len(d) and d.any() for d in dels):
            return np.zeros(0, np.bool_)
        return np.concatenate([d if len(d) else np.zeros(s.n_docs, np.bool_)
                               for d, s in zip(dels, self.index.segments)])

    #: a filtered search that leaves at most ``max(exact_min, exact_fraction x documents)`` live
    #: documents is answered by exact search over them (block pruning loses recall there: on 1M
    #: synthetic documents, recall@10 0.85 at 3% with the default settings; benchmarks/filtered.py)
    exact_min: int = 2000
    exact_fraction: float = 0.05

    def exact_below(self) -> int:
        """The filtered-set size at or below which a filtered search is exact (see :attr:`exact_min`)."""
        return max(int(self.exact_min), int(self.exact_fraction * self.n_docs))

    def search(self, queries: SparseBatch, k: int = 10, params: ApproxParams | ExactParams | None = None, *,
               allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Approximate top-``k`` by dot product; same output convention as ``Index.search``
        (width ``min(k, live documents)``, ``-1`` padded, scores float32 exact dot products).

        ``params``: :class:`~sparsearch.searching.ApproxParams` (``query_cut``, ``heap_factor``,
        ``threads``: one query, or ``threads=1``, runs on the calling thread); ``None``: the
        settings saved by :func:`save_settings` (``default_params``), else ``ApproxParams()``;
        :class:`~sparsearch.searching.ExactParams`: exact search of the underlying index.

        A filter (``params.filter`` and/or an ``allowed`` doc mask) skips the documents it
        leaves out while the forward index is scored (their vectors are not read); when it
        leaves at most :meth:`exact_below` live documents, they are searched exactly instead.
        Otherwise, leaving a fraction ``s`` of the live documents, the query visits the lists of
        its ``ceil(query_cut / sqrt(s))`` heaviest terms: static pruning kept each list's heaviest
        postings over all documents, of which only a fraction ``s`` is allowed, so a list reaches
        fewer allowed documents (1M synthetic, defaults: recall@10 0.92 -> 0.98 at 10%).
        """
        if params is None:
            params = self.default_params
        elif not isinstance(params, ApproxParams):
            if isinstance(params, ExactParams):
                return self.index.search(queries, k, params, allowed=allowed)
            require(params, [ApproxParams, ExactParams], "ApproximateIndex")
        else:
            params.check()
        plan = self.index.plan(params.filter, allowed)  # cached for an expression
        deleted = None
        if plan is None:
            k = check_k(k, self.index.n_live_docs)
        else:
            k = check_k(k, plan.n_allowed)
            if plan.n_allowed <= self.exact_below():  # few documents: exact, and cheap
                return self.index.search(queries, k, ExactParams(threads=params.threads, unknown=params.unknown,
                                                                 filter=params.filter), allowed=allowed)
            deleted = plan.skip_mask()
            cut = math.ceil(params.query_cut / math.sqrt(max(plan.n_allowed, 1) / max(self.index.n_live_docs, 1)))
            params = replace(params, query_cut=cut)
        q_indptr, terms, weights = self.index.prepare_queries(queries, params.unknown)
        return self.search_prepared(q_indptr, terms, weights, k, params, deleted=deleted)

    def query_weights(self, terms: np.ndarray, weights: np.ndarray, q_indptr: np.ndarray | None = None
                      ) -> np.ndarray:
        """Query weights as the kernels take them (CSR rows ``q_indptr``; default one row): times
        their term's grid step (0 for unknown terms), so that ``sum(weight x impact)`` is the
        dequantized dot product, and snapped as exact search snaps them
        (:meth:`Index.segment_weights`); as given for an index without a per-term grid."""
        if self._qscale is None:
            return weights
        rows = np.array([0, len(terms)]) if q_indptr is None else q_indptr
        return kernels.scale_snap_rows(rows, terms, weights, self._qscale, self._qscale)

    def search_run(self, queries: SparseBatch, k: int = 1000, params: ApproxParams | ExactParams | None = None
                   ) -> dict[str, dict[str, float]]:
        """Search and return a run ``{query_id: {doc_id: score}}`` (as ``Index.search_run``)."""
        return to_run(*self.search(queries, k, params), self.doc_ids, queries.ids)

    def search_prepared(self, q_indptr: np.ndarray, terms: np.ndarray, weights: np.ndarray, k: int,
                        params: ApproxParams, *, deleted: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`search` for queries already mapped to index term ids (``Index.prepare_queries``);
        ``k`` >= 1 (results are ``min(k, n_docs)`` wide), ``params`` already checked (its filter
        is not read: pass the documents to skip as ``deleted``, default the index's deletions)."""
        if deleted is None:
            deleted = self._deleted
        _check_rows(q_indptr, terms, weights)
        if not params.candidates and not self.params.summaries:
            raise InvalidInputError("this approximate index was built without summaries (`build-approx "
                                    "--no-summaries`): search it with the candidate strategy (candidates >= 1)")
        if params.forward_cut and not self.heaviest_first:
            raise InvalidInputError("this approximate index was built before forward vectors were stored heaviest "
                                    "entry first: rebuild it (`sparsearch build-approx`) to search with forward_cut")
        weights = self.query_weights(terms, weights, q_indptr)
        nq = len(q_indptr) - 1
        kk = min(k, max(self._n_docs, 1))
        query_cut, heap_factor, threads = int(params.query_cut), float(params.heap_factor), params.threads
        cuts = (query_cut, heap_factor, int(params.forward_cut), int(params.rerank))
        out_s = np.zeros((nq, kk), np.float64)
        out_d = np.empty((nq, kk), np.int64)
        out_d.fill(-1)  # (np.full costs a few microseconds more: this path serves single queries)
        if params.candidates:
            self._search_candidates(q_indptr, terms, weights, kk, query_cut, int(params.candidates), threads,
                                    deleted, out_s, out_d)
            return out_s.astype(np.float32), out_d
        common = (*self._common, out_s, out_d)
        if nq == 1 or threads == 1:
            if self._lock.acquire(blocking=False):
                try:
                    if self._scratch is None:
                        self._scratch = (np.zeros(len(self.term_block_ptr) - 1, np.float64),
                                         np.zeros(self.n_docs, np.bool_), np.empty(self.n_docs, np.int64))
                    self.last_scored = ka.approx_serial(q_indptr, terms, weights, kk, *cuts, deleted,
                                                        *self._scratch, *common)
                finally:
                    self._lock.release()
            else:
                scratch = (np.zeros(len(self.term_block_ptr) - 1, np.float64), np.zeros(self.n_docs, np.bool_),
                           np.empty(self.n_docs, np.int64))
                ka.approx_serial(q_indptr, terms, weights, kk, *cuts, deleted, *scratch, *common)
        else:
            nch = min(_n_chunks(threads), nq)
            ka.approx_batch(q_indptr, terms, weights, kk, *cuts, deleted, self.n_docs, *common, nch)
        return out_s.astype(np.float32), out_d

    def _search_candidates(self, q_indptr, terms, weights, k, query_cut, n_cand, threads, deleted, out_s,
                           out_d) -> None:
        """The candidate strategy (:func:`kernels_approx.candidates_serial`) into ``out_s``/``out_d``."""
        common = (*self._cand_common, out_s, out_d)
        nq = len(q_indptr) - 1
        if nq == 1 or threads == 1:
            fresh = (lambda: (np.zeros(len(self.term_block_ptr) - 1, np.float64), np.zeros(self.n_docs, np.float64),
                              np.empty(self.n_docs + 1, np.int64)))  # (see kernels_approx._candidates_one)
            if self._lock.acquire(blocking=False):
                try:
                    if self._cand_scratch is None:
                        self._cand_scratch = fresh()
                    self.last_scored = ka.candidates_serial(q_indptr, terms, weights, k, query_cut, n_cand, deleted,
                                                            *self._cand_scratch, *common)
                finally:
                    self._lock.release()
            else:
                ka.candidates_serial(q_indptr, terms, weights, k, query_cut, n_cand, deleted, *fresh(), *common)
        else:
            ka.candidates_batch(q_indptr, terms, weights, k, query_cut, n_cand, deleted, self.n_docs, *common,
                                min(_n_chunks(threads), nq))

    def __repr__(self) -> str:
        return (f"ApproximateIndex(docs={self.n_docs}, blocks={len(self.block_doc_ptr) - 1}, "
                f"bytes/doc={self.bytes_per_doc():.1f}, params={self.params})")


# ------------------------------------------------------------------ tuning and saved settings
def tune(approx: ApproximateIndex, queries: SparseBatch, target_recall: float = 0.95, *, k: int = 10,
         query_cuts: tuple[int, ...] = (3, 5, 8, 10, 15, 20, 30),
         heap_factors: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0),
         candidates: tuple[int, ...] = (0, 50, 100, 200, 500, 1000, 2000),
         forward_cuts: tuple[int, ...] = (0, 16, 32), rerank: int = ApproxParams.rerank,
         sample: int = 200, seed: int = 0, repeats: int = 1) -> dict[str, Any]:
    """Fastest ``(query_cut, heap_factor, candidates, forward_cut)`` reaching ``target_recall``
    (recall@k against the exact search of ``approx.index``) on a sample of ``sample`` queries.

    Both strategies are tried: Seismic's (``candidates`` 0, every heap factor and every
    ``forward_cut``, with ``rerank``; not on an index built without summaries; ``forward_cut``
    >= 1 not on one built before vectors were stored heaviest first) and the candidate strategy
    (every other ``candidates`` value, which takes no heap factor: the default is reported).
    Timing is single-threaded: the sample searched as one batch on the calling thread, best of
    ``repeats``. Returns ``{"query_cut", "heap_factor", "candidates", "forward_cut", "rerank",
    "recall", "mean_ms", "met": bool, "target_recall", "grid": [...]}``; when no setting meets
    the target, the most accurate one (``met=False``). ``ApproxParams(**{knob: value})`` of its
    knobs is the setting to use (or to save with :func:`save_settings`).
    """
    n = len(queries)
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(n, size=min(sample, n), replace=False))
    qs = queries[idx]
    _, exact = approx.index.search(qs, k)
    k = exact.shape[1]  # at most the documents held
    q_indptr, terms, weights = approx.index.prepare_queries(qs)
    cuts = tuple(m for m in forward_cuts if m == 0 or approx.heaviest_first)
    settings = [ApproxParams(query_cut=qc, heap_factor=hf, candidates=c, forward_cut=m, rerank=rerank,
                             threads=1).check()
                for qc in query_cuts for c in candidates if c or approx.params.summaries
                for hf in (heap_factors if c == 0 else (ApproxParams.heap_factor,))
                for m in (cuts if c == 0 else (0,))]
    if not settings:
        raise InvalidInputError("tune: no setting to try (an index without summaries needs candidates >= 1)")
    for p in {(p.candidates > 0, p.forward_cut > 0): p for p in settings}.values():  # compile before timing
        approx.search_prepared(q_indptr[:2], terms[:q_indptr[1]], weights[:q_indptr[1]], k, p)
    grid = []
    for params in settings:
        found: list[np.ndarray] = []

        def batch(_: int, p: ApproxParams = params, out: list = found) -> None:
            out.append(approx.search_prepared(q_indptr, terms, weights, k, p)[1])

        lat = time_queries(batch, max(1, repeats), warmup=0)  # best of ``repeats`` batch timings
        grid.append({"query_cut": params.query_cut, "heap_factor": params.heap_factor,
                     "candidates": params.candidates, "forward_cut": params.forward_cut, "rerank": params.rerank,
                     "recall": recall_at_k(found[-1], exact, k),
                     "mean_ms": 1e3 * float(lat.min()) / max(len(idx), 1)})
    ok = [g for g in grid if g["recall"] >= target_recall]
    if ok:
        best = min(ok, key=lambda g: (g["mean_ms"], -g["recall"]))
        return {**best, "met": True, "target_recall": target_recall, "grid": grid}
    best = max(grid, key=lambda g: (g["recall"], -g["mean_ms"]))
    return {**best, "met": False, "target_recall": target_recall, "grid": grid}


def save_settings(index_path: str | os.PathLike, params: ApproxParams, tuned: dict[str, Any] | None = None) -> Path:
    """Save the approximate search settings next to the index, in ``INDEX/settings.json``:
    ``{"format": "sparsearch-settings", "version": 2, "approximate": {"kind": "approximate", ...},
    "tuned": tuned}`` (``tuned``: e.g. what :func:`tune` returned). Written atomically under the
    writer lock; commits keep it. :meth:`ApproximateIndex.search` without parameters uses it."""
    if not isinstance(params, ApproxParams):
        raise InvalidInputError(f"settings hold approximate search parameters, got {type(params).__name__}")
    d = Directory(index_path)
    if not d.path.is_dir():
        raise NotFoundError(f"{d.path}: no such index directory")
    doc = seal({"format": SETTINGS_FORMAT, "version": SETTINGS_VERSION, "approximate": params_to_dict(params.check()),
                "tuned": tuned or {}})
    with d.lock():
        return d.write_json(SETTINGS, doc)


def load_settings(index_path: str | os.PathLike) -> ApproxParams | None:
    """The approximate search settings saved by :func:`save_settings`, or ``None`` when there are none."""
    # version 1 was written before seals
    return load_params_file(index_path, SETTINGS, SETTINGS_FORMAT, (1, SETTINGS_VERSION), "approximate",
                            ApproxParams, unsealed=(1,), what="settings")


#: what a search without parameters uses on an approximate index built without summaries (where
#: Seismic's strategy cannot run) when no settings were saved
CANDIDATE_DEFAULTS = ApproxParams(query_cut=10, candidates=100)


def default_params(index_path: str | os.PathLike, summaries: bool | None = None) -> ApproxParams:
    """The approximate search settings of a search without parameters: those saved by
    :func:`save_settings`, else ``ApproxParams()``, or :data:`CANDIDATE_DEFAULTS` for an
    approximate index built without summaries (``summaries``; ``None``: as the index's saved
    approximate index was built, read from its pointer, which :meth:`ApproximateIndex.open` verifies)."""
    saved = load_settings(index_path)
    if saved is not None:
        return saved
    if summaries is None:
        d = Directory(index_path)
        params = read_json(d / POINTER, "approximate index pointer").get("params", {}) if d.exists(POINTER) else {}
        summaries = not (isinstance(params, dict) and params.get("summaries") is False)
    return ApproxParams() if summaries else CANDIDATE_DEFAULTS


def load_params_file(index_path: str | os.PathLike, name: str, fmt: str, versions: tuple[int, ...], key: str,
                     cls: type, *, unsealed: tuple[int, ...] = (), what: str | None = None) -> Any:
    """The parameter object of kind ``cls`` stored under ``key`` in the sealed settings file ``name``
    of an index directory (``settings.json``, a hybrid's ``fusion.json``), or ``None`` when the
    file does not exist. Versions in ``unsealed`` predate seals; anything unreadable, unsealed or of
    another kind is a :class:`CorruptIndexError` naming the file (``what``: its name in messages)."""
    what = what or f"{key} settings"
    d = Directory(index_path)
    if not d.exists(name):
        return None
    doc = read_versioned_json(d.path, name, fmt, versions, f"{what} file")
    if "checksum" in doc or doc["version"] not in unsealed:
        check_seal(doc, d / name, f"{what} file")
    try:
        params = params_from_dict(doc[key])
    except (KeyError, TypeError, InvalidInputError) as e:
        raise CorruptIndexError(f"{d / name}: unreadable {what} ({e})") from None
    if not isinstance(params, cls):
        raise CorruptIndexError(f"{d / name}: the {what} are of kind {params.kind!r}")
    return params
