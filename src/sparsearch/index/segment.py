"""One immutable index segment on disk: compressed posting lists with block maxima.

A segment is a directory of ``.npy`` arrays plus ``segment.json`` (format version, sizes,
dtypes, quantization scale and a CRC32 of every array file). Arrays load with
``np.load(mmap_mode="r")`` so that opening a large index costs no reading; the checksums are
verified on open unless ``verify=False``.

Arrays (V = terms known to the segment, B = blocks, P = postings):

====================  ========  =====================================================
``term_post_ptr``     int64     (V+1,) postings of term t are [ptr[t], ptr[t+1])
``term_block_ptr``    int64     (V+1,) blocks of term t
``term_max``          impact    (V,) largest impact of each term (MaxScore bound)
``term_scale``        float32   (V,) weight of one impact unit of term t (version 2; 1 for
                                float32 impacts; any value >= 0 for a term without postings)
``block_last``        uint32    (B,) last doc id of each block (skipping)
``block_max``         impact    (B,) largest impact in each block (block-max bound)
``block_bits``        uint8     (B,) bit width of the packed d-gaps
``block_word_ptr``    int64     (B+1,) packed words of block b
``words``             uint32    bit-packed d-gaps
``impacts``           uint8 or float32 (P,) quantized (or raw) weights, posting order
====================  ========  =====================================================

Quantization (version 2): every term has its own 8-bit grid, ``term_scale[t] = max weight of
t in the segment / 255``, and a weight ``w > 0`` is stored as ``clip(round(w / term_scale[t]),
1, 255)``: no non-zero weight becomes a zero impact, whatever the other terms' weights. The
score of a posting is ``(query_weight * term_scale[t]) * impact``: search multiplies each query
weight by its term's scale once per segment (:meth:`Segment.query_weights`) and the kernels
see plain weights over integer impacts, so MaxScore / block-max bounds stay exact.

Version 1 (still read): one scale per segment, ``meta["scale"] = max weight / 255``, and the
score of a posting ``query_weight * impact * scale`` (weights below ``scale / 2`` were dropped).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from ..errors import CorruptIndexError, UnsupportedError
from . import kernels
from .format import ARRAYS, ARRAYS_V1, SEGMENT_FORMAT, SEGMENT_VERSION, read_segment
from .storage import Directory, write_arrays


__all__ = ["Segment", "IndexFormatError", "SEGMENT_FORMAT", "SEGMENT_VERSION", "ARRAYS", "ARRAYS_V1", "write_segment",
           "common_term_scale"]

#: The name this error had before the error tree (``sparsearch.errors``) existed; kept for callers.
IndexFormatError = CorruptIndexError


def write_segment(directory: Path, arrays: dict[str, np.ndarray], meta: dict[str, Any], doc_ids: list[str]) -> None:
    """Write a new segment directory: the arrays, ``segment.json`` (format, ``meta``, checksums)
    and ``doc_ids.json``. Call it on the temporary directory that ``Directory.publish`` renames
    into place (the storage layer fsyncs every file)."""
    write_arrays(directory, arrays, {"format": SEGMENT_FORMAT, "version": SEGMENT_VERSION, **meta})
    Directory(directory).write_json("doc_ids.json", doc_ids)


def common_term_scale(segments: "list[Segment]", n_terms: int) -> np.ndarray:
    """Each term's largest step over ``segments`` (a version-1 segment counts its one scale for
    the terms it has postings of; 0 for a term no segment has): one grid that holds every
    segment's weights, on which the impacts of a segment already on it stay the same."""
    grid = np.zeros(n_terms, np.float64)
    for seg in segments:
        n = min(seg.n_terms, n_terms)
        own = seg.term_scales(np.arange(n)) * (np.diff(seg.term_post_ptr[:n + 1]) > 0)
        np.maximum(grid[:n], own, out=grid[:n])
    return grid


@dataclass
class Segment:
    """A loaded segment (arrays possibly memory-mapped) with its doc ids."""

    path: Path
    meta: dict[str, Any]
    term_post_ptr: np.ndarray
    term_block_ptr: np.ndarray
    term_max: np.ndarray
    block_last: np.ndarray
    block_max: np.ndarray
    block_bits: np.ndarray
    block_word_ptr: np.ndarray
    words: np.ndarray
    impacts: np.ndarray
    doc_ids: list[str]
    #: per-term scales (version 2); ``None`` for a version-1 segment (one ``scale``)
    term_scale: np.ndarray | None = None

    def __post_init__(self) -> None:
        # the term scales with a trailing 0: unknown terms (id -1 or >= V) map to it
        self._tscale = None if self.term_scale is None else np.append(np.asarray(self.term_scale, np.float64), 0.0)
        # query-weight multipliers: only 8-bit per-term grids (float32 impacts take raw weights)
        self._qscale = self._tscale if self.term_scale is not None and self.quantization == "uint8" else None

    @property
    def query_scales(self) -> np.ndarray | None:
        """What query weights are multiplied by, per term id, then a 0 for unknown terms
        (``None``: a version-1 or float32 segment, whose kernels take the raw weights)."""
        return self._qscale

    @property
    def per_term(self) -> bool:
        """Whether query weights absorb per-term scales here (an 8-bit version-2 segment)."""
        return self._qscale is not None

    @property
    def n_docs(self) -> int:
        return int(self.meta["n_docs"])

    @property
    def n_terms(self) -> int:
        return len(self.term_post_ptr) - 1

    @property
    def n_postings(self) -> int:
        return int(self.term_post_ptr[-1])

    @property
    def scale(self) -> float:
        """The one scale of a version-1 segment (score units per impact unit). A version-2
        segment has one scale per term: use :attr:`term_scale`, :meth:`weight_matrix` or
        :meth:`query_weights`."""
        if self.term_scale is not None:
            raise UnsupportedError(f"{self.path}: segment has per-term scales (term_scale), not one scale")
        return float(self.meta["scale"])

    @property
    def score_scale(self) -> float:
        """What kernel scores of this segment are multiplied by: 1 for per-term scales (the
        query weights carry them), ``scale`` for a version-1 segment."""
        return 1.0 if self.term_scale is not None else float(self.meta["scale"])

    def query_weights(self, terms: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """Query weights as this segment's kernels take them: each multiplied by its term's
        scale (0 for a term the segment does not hold, ``-1`` included), so that a kernel score
        ``sum(weight * impact)`` is the dequantized dot product. A version-1 or float32
        segment: unchanged."""
        if self._qscale is None:
            return weights
        n = len(self._qscale) - 1
        return weights * self._qscale[np.minimum(terms, n)]

    def term_scales(self, terms: np.ndarray) -> np.ndarray:
        """Weight of one impact unit of each term (float64; 0 for terms the segment lacks)."""
        terms = np.asarray(terms, np.int64)
        if self._tscale is None:
            return np.where((terms >= 0) & (terms < self.n_terms), float(self.meta["scale"]), 0.0)
        return self._tscale[np.minimum(terms, len(self._tscale) - 1)]

    @property
    def quantization(self) -> str:
        return str(self.meta["quantization"])

    def nbytes(self) -> int:
        """Bytes of the segment's arrays on disk."""
        return sum(int(f["bytes"]) for f in self.meta["files"].values())

    def posting_bytes(self) -> int:
        """Bytes of the posting data proper (packed doc gaps, impacts, block metadata)."""
        return sum(int(self.meta["files"][n]["bytes"]) for n in
                   ("words", "impacts", "block_last", "block_max", "block_bits", "block_word_ptr"))

    @classmethod
    def open(cls, path: Path, *, mmap: bool = True, verify: bool = True) -> "Segment":
        """Load a segment directory (arrays memory-mapped with ``mmap``; checksums verified with
        ``verify``); :class:`CorruptIndexError` naming the file when anything is off."""
        path = Path(path)
        meta, arrays, doc_ids = read_segment(path, mmap=mmap, verify=verify)
        return cls(path, meta, doc_ids=doc_ids, **arrays)

    # ---------------------------------------------------------------- access
    def postings(self, term: int) -> tuple[np.ndarray, np.ndarray]:
        """(doc ids int64, impacts) of one term, decoded."""
        if term < 0 or term >= self.n_terms:
            return np.empty(0, np.int64), self.impacts[:0]
        a, b = int(self.term_post_ptr[term]), int(self.term_post_ptr[term + 1])
        out = np.empty(b - a, np.int64)
        kernels.decode_postings(term, self.term_block_ptr, self.term_post_ptr, self.block_last, self.block_bits,
                                self.block_word_ptr, self.words, out)
        return out, np.asarray(self.impacts[a:b])

    def impacts_of(self, doc: int, terms: np.ndarray) -> np.ndarray:
        """Impacts of one document for the given term ids (0 where absent), float64."""
        terms = np.asarray(terms, dtype=np.int64)
        known = terms < self.n_terms
        out = np.zeros(len(terms), np.float64)
        if known.any():
            out[known] = kernels.lookup_impacts(terms[known], int(doc), self.term_block_ptr, self.term_post_ptr,
                                                self.block_last, self.block_bits, self.block_word_ptr, self.words,
                                                self.impacts)
        return out

    def impact_matrix(self, n_terms: int | None = None) -> sp.csr_matrix:
        """All postings as a (n_docs, V) CSR matrix of impacts (for tests and forward indexes);
        :meth:`weight_matrix` for the weights they stand for."""
        V = self.n_terms if n_terms is None else n_terms
        rows, cols, vals = [], [], []
        for t in range(self.n_terms):
            d, v = self.postings(t)
            if len(d):
                rows.append(d)
                cols.append(np.full(len(d), t, np.int64))
                vals.append(np.asarray(v, np.float64))
        if not rows:
            return sp.csr_matrix((self.n_docs, V))
        return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                             shape=(self.n_docs, V))

    def weight_matrix(self, n_terms: int | None = None) -> sp.csr_matrix:
        """All postings as a (n_docs, V) CSR matrix of dequantized weights (impact x its term's
        scale, or x the segment's scale for version 1): what merge, exports and tests read."""
        m = self.impact_matrix(n_terms).tocsr()
        if self.term_scale is None:
            return m * float(self.meta["scale"])
        m.data *= self.term_scales(m.indices)
        return m
