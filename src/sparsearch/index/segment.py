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

import json
import os
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from . import kernels

SEGMENT_FORMAT = "sparsearch-segment"
SEGMENT_VERSION = 1
ARRAYS = ("term_post_ptr", "term_block_ptr", "term_max", "block_last", "block_max", "block_bits",
          "block_word_ptr", "words", "impacts")

__all__ = ["Segment", "IndexFormatError", "SEGMENT_VERSION", "write_segment_arrays", "fsync_dir",
           "read_versioned_json", "load_npy"]


class IndexFormatError(RuntimeError):
    """An index or segment on disk is missing, corrupt, or of an unsupported version."""


def _crc32(path: Path) -> int:
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            crc = zlib.crc32(chunk, crc)
    return crc


_NPY_LOCK = threading.Lock()


def load_npy(path: Path, mmap: bool = False) -> np.ndarray:
    """``np.load`` of one ``.npy`` file, serialised across threads.

    numpy parses the header with ``ast.literal_eval``, and concurrent calls from several
    threads trip a CPython 3.11 bug ("AST constructor recursion depth mismatch"); with
    mmap the call only reads the header, so the lock costs nothing.
    """
    with _NPY_LOCK:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)


def read_versioned_json(directory: Path, name: str, fmt: str, version: int, what: str) -> dict[str, Any]:
    """Load ``directory/name`` and check its ``format`` tag and ``version`` (clear errors otherwise)."""
    path = Path(directory) / name
    if not path.exists():
        raise IndexFormatError(f"{directory}: {name} is missing (not a sparsearch {what}, or a torn write)")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise IndexFormatError(f"{path}: corrupt {what} metadata ({e.msg})") from None
    if not isinstance(doc, dict) or doc.get("format") != fmt:
        found = doc.get("format") if isinstance(doc, dict) else None
        raise IndexFormatError(f"{directory}: not a sparsearch {what} (format {found!r})")
    if doc.get("version") != version:
        raise IndexFormatError(f"{directory}: {what} format version {doc.get('version')} is not supported "
                               f"(this sparsearch reads version {version}); rebuild the index")
    return doc


def fsync_dir(path: Path) -> None:
    """Make a rename or file creation inside ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_segment_arrays(directory: Path, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    """Write arrays and ``segment.json`` into ``directory`` and fsync them all."""
    directory.mkdir(parents=True, exist_ok=False)
    files: dict[str, Any] = {}
    for name, arr in arrays.items():
        path = directory / f"{name}.npy"
        with open(path, "wb") as f:
            np.save(f, np.ascontiguousarray(arr), allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())
        files[name] = {"dtype": str(arr.dtype), "shape": list(arr.shape), "bytes": path.stat().st_size,
                       "crc32": _crc32(path)}
    doc = {"format": SEGMENT_FORMAT, "version": SEGMENT_VERSION, **meta, "files": files}
    with open(directory / "segment.json", "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    fsync_dir(directory)


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
        meta = read_versioned_json(path, "segment.json", SEGMENT_FORMAT, SEGMENT_VERSION, "segment")
        arrays: dict[str, np.ndarray] = {}
        for name in ARRAYS:
            info = meta["files"].get(name)
            f = path / f"{name}.npy"
            if info is None or not f.exists():
                raise IndexFormatError(f"{path}: array file {name}.npy is missing")
            if f.stat().st_size != info["bytes"]:
                raise IndexFormatError(f"{f}: size {f.stat().st_size} != {info['bytes']} recorded (truncated or corrupt)")
            if verify and _crc32(f) != info["crc32"]:
                raise IndexFormatError(f"{f}: checksum mismatch (the file is corrupt)")
            try:
                arr = load_npy(f, mmap)
            except ValueError as e:
                raise IndexFormatError(f"{f}: unreadable array ({e})") from None
            if str(arr.dtype) != info["dtype"] or list(arr.shape) != info["shape"]:
                raise IndexFormatError(f"{f}: dtype/shape {arr.dtype}{arr.shape} differ from the metadata")
            # a plain ndarray view of the mapping: numba dispatches memmap subclasses ~4x slower
            arrays[name] = arr.view(np.ndarray)
        ids_path = path / "doc_ids.json"
        try:
            doc_ids = json.loads(ids_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise IndexFormatError(f"{ids_path}: missing or corrupt document ids ({e})") from None
        if len(doc_ids) != meta["n_docs"]:
            raise IndexFormatError(f"{ids_path}: {len(doc_ids)} ids for {meta['n_docs']} documents")
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
