"""A dense representation inside the engine: exact flat inner-product search over a memory-mapped matrix.

:class:`DenseIndex` holds one vector per document (row ``i`` = doc number ``i``) and answers
the :class:`~sparsearch.searching.Searcher` protocol with dense queries (a float (nq, d)
array): every document is scored, block of rows by block of rows, so the top-k is exact for
the stored vectors (ties by ascending doc number) and memory stays bounded whatever the
corpus size (the matrix itself is memory-mapped, never loaded; one block's (nq, rows) scores
take at most ``block_bytes``). Together with a sparse :class:`~sparsearch.index.Index` over
the same documents it makes dense + sparse hybrid search possible without a second system.

Stored precision (``quantization``), a size/quality trade-off measured in
``benchmarks/results/dense_quantization.md``:

* ``float32``: the vectors as given; scores are the float32 inner products (one BLAS
  product per block).
* ``float16``: stored half precision (half the bytes); rows are converted exactly to float32
  (a numba bit shift: numpy's own float16 cast is ~20x slower than the product) and scored in
  float32, so a score is the float32 product of the query and the rounded vector.
* ``int8``: one symmetric scale per vector, ``scale_i = max_j |x_ij| / 127``, codes
  ``rint(x_ij / scale_i)`` in [-127, 127] (a quarter of the bytes, plus 4 per document);
  ``score = scale_i * (q . codes_i)`` in float32.

For float16 / int8, batches of up to ``FUSED_MAX_QUERIES`` queries are scored by numba loops
that convert each row in cache while multiplying it (a query reads the matrix at its stored
size; int8 single queries come out faster than float32); larger batches convert
``CONVERT_BYTES`` of rows at a time into float32 and use BLAS.

On disk (everything through :mod:`~sparsearch.index.storage`; nothing pickled)::

    DENSE/
      manifest.json   the commit point, sealed (storage.seal): {"format": "sparsearch-dense",
                      "version": 1, "generation", "dir": "seg-<id>", "n_docs", "dim",
                      "quantization", "encoder": DenseEncoder.config() or null, "extra": {...},
                      "built_at", "files": size + CRC32 of every file of seg-<id> (its arrays
                      through the CRC32s of segment.json, storage.describe_entry), "checksum"}
      seg-<id>/       segment.json   storage.write_arrays header: dtype, shape, bytes and CRC32
                                     of each array; format, version, n_docs, dim, quantization
                      vectors.npy    (n, d) float32 | float16 | int8, row i = doc number i
                      scale.npy      (n,) float32, int8 only
                      doc_ids.json   external id of every row (a JSON list of strings)
      .lock           the writer lock

A build publishes ``seg-<id>/`` atomically, then replaces ``manifest.json`` atomically and
removes older builds' files: a crash at any point leaves the previous index (or none)
loadable. :meth:`DenseIndex.open` checks the manifest's seal, every file against its
record, and (``verify``) each array's CRC32, raising :class:`CorruptIndexError` naming the
file; it takes no lock and follows a build that replaced the index meanwhile.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numba as nb
import numpy as np

from ..encoders.dense import DenseEncoder, blocked_topk, check_queries
from ..errors import ConflictError, CorruptIndexError, InvalidInputError, NotFoundError, UnsupportedError
from ..evaluation import to_run
from ..searching import ExactParams, check_k, require
from .storage import (ARRAY_HEADER, PERMANENT_NAMES, Directory, check_seal, describe_entry, is_managed, read_arrays,
                      read_json, read_versioned_json, seal, verify_records, write_arrays)

__all__ = ["DENSE_FORMAT", "DENSE_VERSION", "QUANTIZATIONS", "DenseIndex", "as_float32"]

DENSE_FORMAT = "sparsearch-dense"
DENSE_VERSION = 1
#: stored precisions and the dtype of ``vectors.npy`` for each
QUANTIZATIONS: dict[str, np.dtype] = {"float32": np.dtype(np.float32), "float16": np.dtype(np.float16),
                                      "int8": np.dtype(np.int8)}
MANIFEST = "manifest.json"
IDS = "doc_ids.json"
#: bytes a search may use for one block's (nq, rows) scores
BLOCK_BYTES = 64 << 20
#: float16 / int8 rows: batches of up to this many queries are scored by a numba loop that
#: converts each row in cache; larger ones convert CONVERT_BYTES of rows at a time (fits a
#: core's L2) into float32 and use BLAS
FUSED_MAX_QUERIES = 16
CONVERT_BYTES = 512 << 10
MIN_BLOCK_ROWS = 1024
#: rows converted per step while quantizing a build (bounds its temporaries)
BUILD_CHUNK_ROWS = 65_536
#: how many times :meth:`DenseIndex.open` follows a build that replaced the index while it read
OPEN_ATTEMPTS = 20
FLOAT16_MAX = float(np.finfo(np.float16).max)


# ---------------------------------------------------------------- float16
_EXPONENT_SHIFT = np.float32(2.0 ** 112)  # float32 exponent bias (127) - float16's (15) = 112


@nb.njit(cache=True, nogil=True)
def _half_bits(h: np.ndarray, bits: np.ndarray) -> None:  # pragma: no cover - compiled
    """Exponent and mantissa of the float16 bit patterns ``h`` shifted into float32 position,
    the sign bit kept."""
    for i in range(h.size):
        x = np.uint32(h[i])
        bits[i] = ((x & np.uint32(0x7FFF)) << np.uint32(13)) | ((x & np.uint32(0x8000)) << np.uint32(16))


@nb.njit(cache=True, nogil=True)
def _rebias(out: np.ndarray) -> None:  # pragma: no cover - compiled
    for i in range(out.size):
        out[i] *= _EXPONENT_SHIFT


@nb.njit(cache=True, nogil=True)
def _half_bits_to_float(h: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover - compiled
    """float16 bit patterns ``h`` (flat uint16) as float32 values into ``out`` (flat), exactly
    for zeros, subnormals and normal numbers (a DenseIndex stores no inf/NaN): the bits moved
    into float32 position (:func:`_half_bits`), then scaled by 2**112, the difference of the
    exponent biases, which also renormalises subnormals. Two vectorised passes per L1-sized
    chunk (one loop doing both runs ~20x slower)."""
    bits = out.view(np.uint32)
    for a in range(0, h.size, 4096):
        b = min(a + 4096, h.size)
        _half_bits(h[a:b], bits[a:b])
        _rebias(out[a:b])


@nb.njit(cache=True, nogil=True, fastmath=True)
def _dot(qa: np.ndarray, xr: np.ndarray) -> float:  # pragma: no cover - compiled
    """float32 inner product of a query and one stored row (float32 values or int8 codes),
    vectorised (fastmath lets the sum be reordered, as BLAS does)."""
    acc = np.float32(0.0)
    for j in range(xr.size):
        acc += qa[j] * np.float32(xr[j])
    return acc


@nb.njit(cache=True, nogil=True)
def _scores_int8(q: np.ndarray, x: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover - compiled
    """``out[a, i] = q[a] . x[i]`` for int8 codes ``x``, converted in registers (no float32 copy)."""
    for i in range(x.shape[0]):
        for a in range(q.shape[0]):
            out[a, i] = _dot(q[a], x[i])


@nb.njit(cache=True, nogil=True)
def _scores_half(q: np.ndarray, h: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover - compiled
    """``out[a, i] = q[a] . x[i]`` for float16 rows given as bit patterns ``h``: each row is
    converted exactly into one float32 row buffer (cache-resident), then multiplied."""
    row = np.empty(h.shape[1], np.uint32)
    values = row.view(np.float32)
    for i in range(h.shape[0]):
        _half_bits(h[i], row)
        _rebias(values)
        for a in range(q.shape[0]):
            out[a, i] = _dot(q[a], values)


def to_float32(x: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Stored rows ``x`` (float32, float16 or int8 codes) as float32 values into ``out`` (a
    C-contiguous float32 array of the same shape); returns ``out``."""
    if x.dtype == np.float16:
        _half_bits_to_float(np.ascontiguousarray(x).reshape(-1).view(np.uint16), out.reshape(-1))
    else:
        np.copyto(out, x)
    return out


def as_float32(x: np.ndarray) -> np.ndarray:
    """Stored rows as a new float32 array (``x`` itself when float32)."""
    return x if x.dtype == np.float32 else to_float32(x, np.empty(x.shape, np.float32))


# ---------------------------------------------------------------- build helpers
def _check_embeddings(embeddings: Any, ids: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    emb = np.asarray(embeddings)
    if emb.dtype.kind not in "fiu" or emb.ndim != 2 or emb.shape[1] < 1:
        raise InvalidInputError(f"embeddings must be a numeric (n, d) array with d >= 1, got {emb.dtype} "
                                f"of shape {emb.shape}")
    ids = list(ids)
    if len(ids) != len(emb):
        raise InvalidInputError(f"{len(ids)} ids for {len(emb)} embeddings")
    bad = next((i for i in ids if not isinstance(i, str)), None)
    if bad is not None:
        raise InvalidInputError(f"document ids must be strings, got {bad!r}")
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        dup = next(i for i in ids if i in seen or seen.add(i))
        raise InvalidInputError(f"duplicate document id {dup!r}")
    return emb, ids


def _quantize(emb: np.ndarray, quantization: str) -> dict[str, np.ndarray]:
    """The arrays stored for ``emb`` (see the module docstring), converted chunk by chunk;
    non-finite values (and values float16 cannot hold) are refused."""
    n, d = emb.shape
    vectors = np.empty((n, d), QUANTIZATIONS[quantization])
    scale = np.empty(n, np.float32) if quantization == "int8" else None
    for a in range(0, n, BUILD_CHUNK_ROWS):
        x = np.asarray(emb[a:a + BUILD_CHUNK_ROWS], dtype=np.float32)
        if not np.isfinite(x).all():
            row = a + int(np.flatnonzero(~np.isfinite(x).all(axis=1))[0])
            raise InvalidInputError(f"embedding {row} holds a NaN or infinite value")
        if quantization == "float16" and x.size and np.abs(x).max() > FLOAT16_MAX:
            raise InvalidInputError(f"embeddings exceed {FLOAT16_MAX:g}, the largest float16 value; "
                                    f"use float32 (or int8)")
        if scale is None:
            vectors[a:a + len(x)] = x
            continue
        s = np.abs(x).max(axis=1) / 127.0
        safe = np.where(s > 0, s, 1.0)[:, None]
        vectors[a:a + len(x)] = np.clip(np.rint(x / safe), -127, 127)
        scale[a:a + len(x)] = s
    return {"vectors": vectors} if scale is None else {"vectors": vectors, "scale": scale}


def _check_target(d: Directory, overwrite: bool) -> dict[str, Any] | None:
    """Before building into ``d`` (under its lock): its current manifest when it is a readable
    dense index (``None`` otherwise). :class:`ConflictError` when it holds an index and
    ``overwrite`` is false, or anything that is not a sparsearch file."""
    old = None
    if d.exists(MANIFEST):
        if not overwrite:
            raise ConflictError(f"{d.path} already holds an index (use overwrite=True to replace it)")
        try:
            old = _read_manifest(d.path)
        except CorruptIndexError:  # another kind of index, or a corrupt one: replaced
            old = None
    foreign = [e for e in d.entries() if not is_managed(e)]
    if foreign:
        raise ConflictError(f"{d.path} exists and is not a sparsearch index ({foreign[0]!r} is not ours); "
                            "refusing to write into it")
    return old


# ---------------------------------------------------------------- open helpers
def _read_manifest(root: Path) -> dict[str, Any]:
    """``manifest.json`` of a dense index, its seal and fields checked."""
    path = root / MANIFEST
    m = read_versioned_json(root, MANIFEST, DENSE_FORMAT, DENSE_VERSION, "dense index")
    check_seal(m, path, "dense index manifest")
    name, n, dim = m.get("dir"), m.get("n_docs"), m.get("dim")
    if not (isinstance(name, str) and name.startswith("seg-") and "/" not in name and isinstance(n, int)
            and n >= 0 and isinstance(dim, int) and dim >= 1 and m.get("quantization") in QUANTIZATIONS
            and isinstance(m.get("files"), dict) and isinstance(m.get("extra", {}), dict)
            and isinstance(m.get("encoder"), (dict, type(None)))):
        raise CorruptIndexError(f"{path}: malformed dense index manifest")
    return m


def _load(root: Path, m: dict[str, Any], mmap: bool, verify: bool
          ) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    """The vectors, scales (int8) and ids the manifest ``m`` names, each file checked."""
    name, n, dim, quant = m["dir"], m["n_docs"], m["dim"], m["quantization"]
    verify_records(root, m["files"], [name], full=verify)
    d = root / name
    header = read_json(d / ARRAY_HEADER, "dense vectors metadata")
    if not isinstance(header, dict):
        raise CorruptIndexError(f"{d / ARRAY_HEADER}: malformed dense vectors metadata")
    arrays = read_arrays(d, header, ("vectors", "scale") if quant == "int8" else ("vectors",),
                         mmap=mmap, verify=verify)
    vectors = arrays["vectors"]
    if vectors.dtype != QUANTIZATIONS[quant] or vectors.shape != (n, dim):
        raise CorruptIndexError(f"{d / 'vectors.npy'}: {vectors.dtype}{vectors.shape} where the manifest says "
                                f"{quant} ({n}, {dim})")
    scale = arrays.get("scale")
    if scale is not None and (scale.dtype != np.float32 or scale.shape != (n,)):
        raise CorruptIndexError(f"{d / 'scale.npy'}: {scale.dtype}{scale.shape} where float32 ({n},) is expected")
    ids = read_json(d / IDS, "document ids")
    if not isinstance(ids, list) or len(ids) != n or not all(isinstance(i, str) for i in ids):
        raise CorruptIndexError(f"{d / IDS}: not a list of {n} document ids")
    return vectors, scale, ids


class DenseIndex:
    """Exact flat maximum-inner-product search over stored dense vectors (see the module docstring).

    Build with :meth:`build`, open with :meth:`open`. ``search`` takes a float (nq, d) query
    array and only :class:`~sparsearch.searching.ExactParams` (``threads``, ``unknown`` and
    ``exhaustive`` do not apply: every document is scored; BLAS products use numpy's BLAS
    threads, e.g. ``OPENBLAS_NUM_THREADS``, the numba loops the calling thread, without the
    GIL). Thread-safe for concurrent searches.

    Attributes:
        path: the index directory.
        manifest: its manifest (see the module docstring).
        vectors: the stored (n, d) matrix (memory-mapped by default).
        scale: the int8 per-vector scales (``None`` for float32/float16).
        block_bytes: memory one search step may use for its scores (bounds peak memory).
    """

    def __init__(self, path: Path, manifest: dict[str, Any], vectors: np.ndarray, scale: np.ndarray | None,
                 ids: list[str]) -> None:
        self.path = Path(path)
        self.manifest = manifest
        self.vectors = vectors
        self.scale = scale
        self._ids = ids
        self._docnums: dict[str, int] | None = None
        self._encoder: DenseEncoder | None = None
        self.block_bytes = BLOCK_BYTES

    # ------------------------------------------------------------------- build
    @classmethod
    def build(cls, embeddings: np.ndarray, ids: Sequence[str], path: str | os.PathLike, *,
              encoder: DenseEncoder | None = None, quantization: str = "float32", overwrite: bool = True,
              extra: dict[str, Any] | None = None) -> "DenseIndex":
        """Write a dense index of ``embeddings`` (row ``i`` = document ``ids[i]``) into ``path``
        and open it.

        Args:
            embeddings: float (n, d), finite (any real dtype; stored as ``quantization``).
            ids: n distinct string ids.
            encoder: the :class:`~sparsearch.encoders.dense.DenseEncoder` that produced them
                (its config is stored, for :meth:`load_encoder`), or ``None``.
            quantization: ``"float32"``, ``"float16"`` or ``"int8"``.
            overwrite: replace an index already in ``path`` (else :class:`ConflictError`); a
                directory holding anything that is not a sparsearch file is always refused.
            extra: JSON-serialisable metadata kept in the manifest (``self.extra``).
        """
        if quantization not in QUANTIZATIONS:
            raise InvalidInputError(f"unknown dense quantization {quantization!r}; use one of "
                                    f"{', '.join(QUANTIZATIONS)}")
        if encoder is not None and not isinstance(encoder, DenseEncoder):
            raise InvalidInputError(f"encoder must be a DenseEncoder or None, got {type(encoder).__name__}")
        extra = dict(extra or {})
        try:
            json.dumps(extra, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise InvalidInputError(f"extra must be JSON-serialisable ({e})") from None
        emb, ids = _check_embeddings(embeddings, ids)
        arrays = _quantize(emb, quantization)
        n, dim = emb.shape
        header = {"format": DENSE_FORMAT, "version": DENSE_VERSION, "n_docs": n, "dim": dim,
                  "quantization": quantization}

        def fill(tmp: Path) -> None:
            write_arrays(tmp, arrays, header, ARRAY_HEADER)
            Directory(tmp).write_json(IDS, ids)

        d = Directory(path)
        with d.lock():
            old = _check_target(d, overwrite)
            name = f"seg-{uuid.uuid4().hex[:12]}"
            d.publish(name, fill)
            manifest = seal({**header, "generation": int(old["generation"]) + 1 if old else 1, "dir": name,
                             "encoder": encoder.config() if encoder is not None else None, "extra": extra,
                             "built_at": time.time(), "files": describe_entry(d.path, name)})
            d.write_json(MANIFEST, manifest)
            for e in d.entries():  # older builds and torn temporaries
                if e != name and e not in PERMANENT_NAMES and is_managed(e):
                    d.remove(e)
        out = cls(d.path, manifest, *_load(d.path, manifest, True, False))
        out._encoder = encoder
        return out

    # -------------------------------------------------------------------- open
    @classmethod
    def open(cls, path: str | os.PathLike, *, mmap: bool = True, verify: bool = True) -> "DenseIndex":
        """Open the dense index in ``path``: :class:`NotFoundError` when there is no such
        directory, :class:`CorruptIndexError` naming the file when anything is missing, edited
        or corrupt (``verify=False``: sizes only, no CRC32 of the files). ``mmap``: map the
        matrix instead of reading it."""
        root = Path(path)
        if not root.is_dir():
            raise NotFoundError(f"{root}: no such dense index directory")
        for attempt in range(OPEN_ATTEMPTS):
            manifest = _read_manifest(root)
            try:
                return cls(root, manifest, *_load(root, manifest, mmap, verify))
            except (CorruptIndexError, OSError):
                # a build replaced the index (and removed these files) meanwhile: read the new one
                if attempt == OPEN_ATTEMPTS - 1 or _read_manifest(root) == manifest:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    # --------------------------------------------------------------- properties
    @property
    def n_docs(self) -> int:
        return int(self.manifest["n_docs"])

    @property
    def n_live_docs(self) -> int:
        """Every document is live (a dense index is rebuilt, not updated)."""
        return self.n_docs

    @property
    def dim(self) -> int:
        return int(self.manifest["dim"])

    @property
    def quantization(self) -> str:
        return str(self.manifest["quantization"])

    @property
    def extra(self) -> dict[str, Any]:
        """The ``extra`` metadata given to :meth:`build`."""
        return dict(self.manifest.get("extra") or {})

    @property
    def doc_ids(self) -> list[str]:
        """External id of every doc number."""
        return self._ids

    def __len__(self) -> int:
        return self.n_docs

    def docnum(self, doc_id: str) -> int:
        """The doc number of ``doc_id`` (:class:`NotFoundError` when the index lacks it)."""
        if self._docnums is None:
            self._docnums = {d: i for i, d in enumerate(self._ids)}
            if len(self._docnums) != len(self._ids):
                raise CorruptIndexError(f"{self.path / self.manifest['dir'] / IDS}: duplicate document ids")
        try:
            return self._docnums[doc_id]
        except (KeyError, TypeError):
            raise NotFoundError(f"{self.path}: no document {doc_id!r}") from None

    @property
    def encoder_config(self) -> dict[str, Any] | None:
        """The config of the encoder the vectors came from (``None``: built from vectors only)."""
        return self.manifest.get("encoder")

    def load_encoder(self) -> DenseEncoder:
        """The :class:`~sparsearch.encoders.dense.DenseEncoder` recorded at build, to embed query
        text the same way; :class:`InvalidInputError` when the index was built without one."""
        if self._encoder is None:
            config = self.encoder_config
            if not config:
                raise InvalidInputError(f"{self.path}: dense index has no encoder; pass query vectors instead of text")
            try:
                self._encoder = DenseEncoder.from_config(config)
            except (InvalidInputError, TypeError, ValueError) as e:
                raise CorruptIndexError(f"{self.path / MANIFEST}: unusable encoder config ({e})") from None
        return self._encoder

    def stats(self) -> dict[str, Any]:
        """Sizes: documents, dimension, precision, bytes on disk (``index_bytes``: manifest and
        every file of the build; ``vector_bytes``: the stored vectors and scales), encoder."""
        seg = self.path / self.manifest["dir"]
        on_disk = sum(p.stat().st_size for p in [self.path / MANIFEST, *seg.rglob("*")] if p.is_file())
        vec = self.vectors.nbytes + (self.scale.nbytes if self.scale is not None else 0)
        return {"kind": "dense", "n_docs": self.n_docs, "n_live_docs": self.n_live_docs, "dim": self.dim,
                "quantization": self.quantization, "index_bytes": int(on_disk), "vector_bytes": int(vec),
                "encoder": self.encoder_config}

    # ------------------------------------------------------------------ search
    def _scores(self, q: np.ndarray, rows: slice | np.ndarray) -> np.ndarray:
        """float32 scores (nq, len(rows)) of the stored vectors ``rows`` for queries ``q``.

        float32 rows: one BLAS product. float16 / int8 rows: up to ``FUSED_MAX_QUERIES``
        queries, a numba loop converting each row in cache while it is multiplied (a query
        reads the matrix once, at its stored size); larger batches convert ``CONVERT_BYTES``
        of rows at a time into a float32 buffer and use BLAS (the conversion is then shared
        by all queries)."""
        x = self.vectors[rows]
        if x.dtype == np.float32:
            s = q @ x.T
        elif len(q) <= FUSED_MAX_QUERIES:
            s = np.empty((len(q), len(x)), np.float32)
            if x.dtype == np.int8:
                _scores_int8(q, x, s)
            else:
                _scores_half(q, np.ascontiguousarray(x).view(np.uint16), s)
        else:
            s = np.empty((len(q), len(x)), np.float32)
            step = max(1, CONVERT_BYTES // (4 * self.dim))
            buf = np.empty((min(step, len(x)), self.dim), np.float32)
            for a in range(0, len(x), step):
                part = x[a:a + step]
                s[:, a:a + len(part)] = q @ to_float32(part, buf[:len(part)]).T
        if self.scale is not None:
            s *= self.scale[rows]
        return s

    def block_rows(self, nq: int) -> int:
        """Documents scored per block for ``nq`` queries: their (nq, rows) float32 scores fit
        ``block_bytes`` (at least ``MIN_BLOCK_ROWS``)."""
        return max(MIN_BLOCK_ROWS, int(self.block_bytes) // (4 * max(nq, 1)))

    def search(self, queries: np.ndarray, k: int = 10, params: ExactParams | None = None, *,
               allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` documents per query by inner product: ``(scores float32 (nq, k'), docnums
        int64 (nq, k'))``, descending, ties by ascending doc number; ``k'`` is ``k`` clamped by
        :func:`~sparsearch.searching.check_k` (an empty index pads with doc number ``-1``).
        :class:`InvalidInputError` for a query of another dimension or a non-finite value.
        ``allowed``: a bool mask over doc numbers: only those documents are scored (a hybrid
        index's filter); a filter expression needs the metadata of a sparse representation."""
        if params is not None:
            require(params, [ExactParams], "dense flat search")
            params.check()
            if params.filter is not None:
                raise UnsupportedError("a dense index holds no metadata fields: filter a hybrid index with a sparse "
                                       "representation")
        q = check_queries(queries, self.dim)
        if allowed is None:
            k = check_k(k, self.n_docs)
            return blocked_topk(lambda a, b: self._scores(q, slice(a, b)), self.n_docs, len(q), k,
                                self.block_rows(len(q)))
        allowed = np.asarray(allowed, np.bool_)
        if allowed.shape != (self.n_docs,):
            raise InvalidInputError(f"allowed must be a bool mask of shape ({self.n_docs},), got {allowed.shape}")
        rows = np.flatnonzero(allowed)
        k = check_k(k, len(rows))
        s, d = blocked_topk(lambda a, b: self._scores(q, rows[a:b]), len(rows), len(q), k, self.block_rows(len(q)))
        return s, np.where(d >= 0, rows[np.maximum(d, 0)] if len(rows) else -1, -1)

    def search_run(self, queries: np.ndarray, k: int = 1000, params: ExactParams | None = None,
                   query_ids: Sequence[str] | None = None) -> dict[str, dict[str, float]]:
        """:meth:`search` as a run ``{query_id: {doc_id: score}}``; ``query_ids`` name the query
        rows (default ``"0"``, ``"1"``, ...)."""
        return to_run(*self.search(queries, k, params), self.doc_ids,
                      None if query_ids is None else [str(q) for q in query_ids])

    def scores_of(self, queries: np.ndarray, docnums: np.ndarray) -> np.ndarray:
        """The score of given documents: ``docnums`` int (nq, m), one row per query, ``-1`` for
        no document; returns float32 (nq, m), ``-inf`` where the doc number is ``-1``. Scores
        are :meth:`search`'s (same stored vectors and arithmetic, up to float32 rounding)."""
        q = check_queries(queries, self.dim)
        dn = np.asarray(docnums)
        if dn.ndim != 2 or dn.shape[0] != len(q) or (dn.size and dn.dtype.kind not in "iu"):
            raise InvalidInputError(f"docnums must be an integer array of shape ({len(q)}, m), got {dn.dtype} "
                                    f"of shape {dn.shape}")
        if dn.size and (dn.min() < -1 or dn.max() >= self.n_docs):
            raise InvalidInputError(f"doc numbers must be in [-1, {self.n_docs - 1}], got "
                                    f"{int(dn.min()) if dn.min() < -1 else int(dn.max())}")
        out = np.full(dn.shape, -np.inf, np.float32)
        for i in range(len(q)):
            ok = dn[i] >= 0
            if ok.any():
                out[i, ok] = self._scores(q[i:i + 1], dn[i][ok].astype(np.int64))[0]
        return out

    def __repr__(self) -> str:
        return f"DenseIndex({str(self.path)!r}, docs={self.n_docs}, dim={self.dim}, {self.quantization})"
