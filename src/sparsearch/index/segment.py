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
``block_last``        uint32    (B,) last doc id of each block (skipping)
``block_max``         impact    (B,) largest impact in each block (block-max bound)
``block_bits``        uint8     (B,) bit width of the packed d-gaps
``block_word_ptr``    int64     (B+1,) packed words of block b
``words``             uint32    bit-packed d-gaps
``impacts``           uint8 or float32 (P,) quantized (or raw) weights, posting order
====================  ========  =====================================================

The score of a posting is ``query_weight * impact * scale``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from ..errors import CorruptIndexError
from . import kernels
from .storage import Directory, read_arrays, read_json, read_versioned_json, write_arrays

SEGMENT_FORMAT = "sparsearch-segment"
SEGMENT_VERSION = 1
ARRAYS = ("term_post_ptr", "term_block_ptr", "term_max", "block_last", "block_max", "block_bits",
          "block_word_ptr", "words", "impacts")

__all__ = ["Segment", "IndexFormatError", "SEGMENT_FORMAT", "SEGMENT_VERSION", "ARRAYS", "write_segment"]

#: The name this error had before the error tree (``sparsearch.errors``) existed; kept for callers.
IndexFormatError = CorruptIndexError


def write_segment(directory: Path, arrays: dict[str, np.ndarray], meta: dict[str, Any], doc_ids: list[str]) -> None:
    """Write a new segment directory: the arrays, ``segment.json`` (format, ``meta``, checksums)
    and ``doc_ids.json``. Call it on the temporary directory that ``Directory.publish`` renames
    into place (the storage layer fsyncs every file)."""
    write_arrays(directory, arrays, {"format": SEGMENT_FORMAT, "version": SEGMENT_VERSION, **meta})
    Directory(directory).write_json("doc_ids.json", doc_ids)


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
        """Score units per impact unit (1.0 for float impacts)."""
        return float(self.meta["scale"])

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
        meta = read_versioned_json(path, "segment.json", SEGMENT_FORMAT, SEGMENT_VERSION, "segment")
        arrays = read_arrays(path, meta, ARRAYS, mmap=mmap, verify=verify)
        doc_ids = read_json(path / "doc_ids.json", "document ids")
        if not isinstance(doc_ids, list) or len(doc_ids) != meta["n_docs"]:
            n = len(doc_ids) if isinstance(doc_ids, list) else "no list of"
            raise CorruptIndexError(f"{path / 'doc_ids.json'}: {n} ids for {meta['n_docs']} documents")
        if not all(isinstance(i, str) for i in doc_ids):
            raise CorruptIndexError(f"{path / 'doc_ids.json'}: a document id that is not a string")
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
        """All postings as a (n_docs, V) CSR matrix of impacts (for tests and forward indexes)."""
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
