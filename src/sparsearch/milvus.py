"""Milvus backend: export an index's vectors into a Milvus collection and search them there.

One code path for the embedded and the clustered Milvus; the URI picks which:

* a path ending in ``.db`` (e.g. ``milvus.db``): **Milvus Lite**, embedded. pymilvus starts a
  local Milvus Lite process (the ``milvus-lite`` package) that keeps its data in that directory.
* ``http(s)://HOST:19530`` (or ``tcp://``, ``unix:``): a **Milvus server or cluster**, with
  ``token`` = ``"user:password"`` or an API key (Zilliz Cloud).

What is exported (:func:`export`) into a collection ``NAME``:

* one row per live document: ``pk`` INT64 (the document's number in the exported index commit,
  so results compare directly with :meth:`sparsearch.index.Index.search`), ``doc_id`` VARCHAR
  (the external id), ``sparse`` SPARSE_FLOAT_VECTOR (the index's dequantized impacts, keyed by
  index term id: exactly the vectors the local index scores, never re-encoded), ``title`` and
  ``text`` VARCHAR when the index has a document store (cut to ``max_text_bytes`` UTF-8 bytes at
  a character boundary), and ``dense`` FLOAT_VECTOR when dense vectors are given (for
  :meth:`MilvusBackend.hybrid_search`), and the documents' metadata fields (:mod:`sparsearch.metadata`)
  as nullable scalar fields ``m_<name>`` (see :func:`_metadata_specs`), which filters translate
  to (:func:`sparsearch.filters.to_milvus`). Documents with no term are not exported: Milvus refuses
  empty sparse vectors, and the local index can never return them either.
* a sidecar collection ``NAME__sparsearch`` with the vocabulary (term id -> term string), the
  encoder config and saved state recorded in the index manifest (so that query text is encoded
  exactly as at index time), the dense encoder's config and the export's provenance, as one
  compressed JSON document cut into VARCHAR chunks. Why a sidecar collection rather than the
  collection's description or properties: it uses only create/insert/query, which Milvus Lite
  and every Milvus server support alike, and it has no size limit that a large vocabulary could
  hit (a description is a short string; properties live in the cluster's metadata store and
  are meant for settings, and a word vocabulary of millions of terms is tens of MB). It is
  written last: a collection without it is an unfinished export and :meth:`MilvusBackend.open`
  says so.

A hybrid index (:class:`~sparsearch.index.hybrid.HybridIndex`) is exported into one collection
with one vector field per representation (``rep_<name>``, see :func:`field_names`): the sparse
ones as above (each over its own vocabulary), the dense ones as FLOAT_VECTOR of the stored vectors
dequantized (``float16`` widened, ``int8`` codes times their row's scale: the values the local
index scores, never re-encoded), and the documents' metadata fields as above (those of the first
sparse representation, which holds them for the hybrid index; none without a sparse one). The
sidecar (format version 2) records every representation's vocabulary, encoder and field, the
metadata fields and the index's default fusion; :class:`MilvusHybridBackend` searches it
(:meth:`MilvusBackend.open` returns one for such a collection), filters included.

Search is by inner product (``metric_type="IP"``). With ``SPARSE_INVERTED_INDEX`` and
``drop_ratio_search=0`` Milvus scores every posting of the query terms, so its top-k equals the
local exact top-k up to float32 rounding and the order of tied scores. Milvus Lite accepts only
``SPARSE_INVERTED_INDEX`` for sparse vectors (it refuses ``SPARSE_WAND``; :func:`export` reports
that as :class:`MilvusBackendError`); a Milvus server also accepts ``SPARSE_WAND``.

>>> backend = export(Index.open("idx"), "milvus.db", "scifact")          # doctest: +SKIP
>>> backend = MilvusBackend.open("milvus.db", "scifact")                 # doctest: +SKIP
>>> scores, docnums = backend.search(backend.load_encoder().encode_queries(["vitamin d"]), k=10)  # doctest: +SKIP
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import re
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from dataclasses import field as _field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from .docstore import open_docstore
from .encoders import load_encoder, pack_state, unpack_state
from .encoders.dense import DenseEncoder
from .errors import (BackendError, ConflictError, CorruptIndexError, InvalidInputError, MissingExtraError,
                     NotFoundError, UnsupportedError)
from .evaluation import to_run
from .filters import to_milvus
from .fusion import fuse_topk
from .index import Index
from .index.dense import DenseIndex, as_float32
from .index.hybrid import HybridEncoder, HybridIndex, HybridQueries, Member, open_searcher
from .index.updates import live_vectors
from .metadata import parse_date
from .searching import ExactParams, HybridParams, check_k, params_from_dict, params_to_dict, require
from .vectors import SparseBatch, Vocabulary

__all__ = ["MilvusBackend", "MilvusHybridBackend", "MilvusBackendError", "CollectionNotFoundError",
           "CollectionExistsError", "export", "list_exported", "uri_kind", "collection_name", "field_names",
           "dense_rows", "META_SUFFIX", "SPARSE_INDEX_TYPES"]

FORMAT = "sparsearch-milvus"
VERSION = 1                    # metadata of an index's export
HYBRID_VERSION = 2             # of a hybrid index's export (older readers refuse it, naming the version)
READ_VERSIONS = (VERSION, HYBRID_VERSION)
#: the sidecar collection holding vocabulary and encoder is named ``collection + META_SUFFIX``
META_SUFFIX = "__sparsearch"
#: sparse index types of Milvus; Milvus Lite builds only the first
SPARSE_INDEX_TYPES = ("SPARSE_INVERTED_INDEX", "SPARSE_WAND")
MAX_VARCHAR = 65535            # Milvus' largest VARCHAR max_length (bytes)
MAX_TOPK = 16384               # Milvus' largest search limit
_CHUNK = 60000                 # characters of metadata per sidecar row (ASCII, < MAX_VARCHAR)
_SEARCH_BATCH = 1000           # queries per search request
_SPARSE_PARAMS = {"metric_type": "IP", "params": {"drop_ratio_search": 0.0}}  # keep every query term
_DENSE_PARAMS = {"metric_type": "IP", "params": {}}
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")


class MilvusBackendError(BackendError):
    """A Milvus operation failed; the message names the URI or collection and the cause."""


class CollectionNotFoundError(MilvusBackendError, NotFoundError):
    """The collection (or the Milvus Lite database) does not exist."""


class CollectionExistsError(MilvusBackendError, ConflictError):
    """Export target exists and ``overwrite`` was not given."""


# ---------------------------------------------------------------------------------- connection
def uri_kind(uri: str) -> str:
    """``"lite"`` for a path ending in ``.db`` (embedded Milvus Lite), ``"server"`` for
    ``http(s)://``, ``tcp://`` or ``unix:`` URIs; anything else raises :class:`MilvusBackendError`."""
    if uri.startswith(("http://", "https://", "tcp://", "unix:")):
        return "server"
    if uri.endswith(".db"):
        return "lite"
    raise MilvusBackendError(f"unsupported Milvus URI {uri!r}: use a path ending in .db (Milvus Lite, embedded) "
                             f"or http(s)://HOST:19530 (a Milvus server or cluster, with a token)")


def collection_name(name: str) -> str:
    """A valid Milvus collection name from any string (e.g. an index directory name): characters
    other than letters, digits and ``_`` become ``_``, a leading digit gets a ``_`` prefix."""
    out = re.sub(r"[^A-Za-z0-9_]", "_", name)[:200] or "sparsearch"
    return "_" + out if out[0].isdigit() else out


def _check_name(name: str) -> None:
    if not _NAME.match(name) or name.endswith(META_SUFFIX):
        raise MilvusBackendError(f"invalid collection name {name!r}: letters, digits and '_' only, starting with a "
                                 f"letter or '_', at most 255 characters, not ending in {META_SUFFIX!r}")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """pymilvus logs every failed call with a traceback; the failures we turn into our own
    errors (refused index types, unreachable servers) are reported once, by the exception.
    Milvus Lite's in-process gRPC server also logs a traceback for a call it does not implement
    (``AllocTimestamp``, which pymilvus tries while creating a collection, then does without),
    and Milvus Lite logs why it could not open a database before pymilvus reports that it failed."""
    logs = [logging.getLogger(n) for n in ("pymilvus.decorators", "grpc._server", "milvus_lite.server_manager")]
    old = [log.level for log in logs]
    for log in logs:
        log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for log, level in zip(logs, old):
            log.setLevel(level)


def _milvus():
    try:
        import pymilvus
    except ImportError as e:
        raise MissingExtraError(f"the Milvus backend needs pymilvus and milvus-lite "
                                 f"(pip install 'sparsearch[milvus]'): {e}") from None
    return pymilvus


def _message(e: Exception) -> str:
    return str(getattr(e, "message", None) or e)


def connect(uri: str, token: str | None = None, *, timeout: float = 10.0, create: bool = False):
    """A ``pymilvus.MilvusClient`` for ``uri``.

    For Milvus Lite, ``create=False`` refuses a database path that does not exist (nothing was
    exported there); ``create=True`` makes its parent directories. A server that does not answer
    within ``timeout`` seconds raises :class:`MilvusBackendError`.
    """
    pymilvus = _milvus()
    kind = uri_kind(uri)
    target = uri
    if kind == "lite":
        path = Path(uri).expanduser().resolve()
        if create:
            path.parent.mkdir(parents=True, exist_ok=True)
        elif not path.exists():
            raise CollectionNotFoundError(f"no Milvus Lite database at {path} (export an index there first: "
                                          f"sparsearch export INDEX --milvus {uri})")
        target = str(path)
    try:
        with _quiet():
            return pymilvus.MilvusClient(uri=target, token=token or "", timeout=timeout)
    except Exception as e:  # MilvusException, ConnectionConfigException, grpc errors
        hint = ""
        if kind == "lite":  # the usual cause; Milvus Lite logs the real one and pymilvus says "failed"
            hint = (". A Milvus Lite database is used by one process at a time, until that process exits: "
                    "is another one (e.g. `sparsearch serve`) using it?")
        raise MilvusBackendError(f"cannot connect to Milvus at {uri}: {_message(e)}{hint}") from None


def list_exported(uri: str, token: str | None = None, *, timeout: float = 10.0) -> list[str]:
    """Names of the collections at ``uri`` that sparsearch exported (those with a sidecar)."""
    client = connect(uri, token, timeout=timeout)
    try:
        names = set(client.list_collections())
    finally:
        client.close()
    return sorted(n[: -len(META_SUFFIX)] for n in names if n.endswith(META_SUFFIX) and n[: -len(META_SUFFIX)] in names)


# ------------------------------------------------------------------------------- metadata I/O
def _pack(meta: dict[str, Any], version: int = VERSION) -> list[str]:
    """Header + chunks: the JSON document zlib-compressed and base64-encoded (ASCII)."""
    blob = base64.b64encode(zlib.compress(json.dumps(meta).encode("utf-8"), 6)).decode("ascii")
    chunks = [blob[i:i + _CHUNK] for i in range(0, len(blob), _CHUNK)] or [""]
    header = json.dumps({"format": FORMAT, "version": version, "n_chunks": len(chunks),
                         "sha256": hashlib.sha256(blob.encode("ascii")).hexdigest()})
    return [header] + chunks


def _unpack(rows: Sequence[str], where: str) -> dict[str, Any]:
    try:
        header = json.loads(rows[0])
    except (IndexError, json.JSONDecodeError):
        raise MilvusBackendError(f"{where}: sparsearch metadata is missing or unreadable; re-export") from None
    if header.get("format") != FORMAT:
        raise MilvusBackendError(f"{where}: not a sparsearch export (format {header.get('format')!r})")
    if header.get("version") not in READ_VERSIONS:
        raise MilvusBackendError(f"{where}: export format version {header.get('version')} is not supported "
                                 f"(this sparsearch reads versions {', '.join(map(str, READ_VERSIONS))}); "
                                 f"re-export the index")
    blob = "".join(rows[1:])
    if len(rows) - 1 != header["n_chunks"] or hashlib.sha256(blob.encode("ascii")).hexdigest() != header["sha256"]:
        raise MilvusBackendError(f"{where}: sparsearch metadata is incomplete or corrupt "
                                 f"({len(rows) - 1} of {header['n_chunks']} chunks); re-export with overwrite")
    return json.loads(zlib.decompress(base64.b64decode(blob)).decode("utf-8"))


def _write_meta(client, name: str, meta: dict[str, Any], version: int = VERSION) -> None:
    from pymilvus import DataType

    schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("chunk", DataType.INT64, is_primary=True)
    schema.add_field("data", DataType.VARCHAR, max_length=MAX_VARCHAR)
    # Milvus requires a vector field in every collection; this one is never searched
    schema.add_field("unused", DataType.FLOAT_VECTOR, dim=2)
    params = client.prepare_index_params()
    params.add_index(field_name="unused", index_type="FLAT", metric_type="L2", params={})
    with _quiet():
        client.create_collection(name, schema=schema, index_params=params)
    rows = [{"chunk": i, "data": c, "unused": [0.0, 0.0]} for i, c in enumerate(_pack(meta, version))]
    for a in range(0, len(rows), 200):
        client.insert(name, rows[a:a + 200])
    client.flush(name)
    client.load_collection(name)


def _read_meta(client, name: str, where: str) -> dict[str, Any]:
    client.load_collection(name)
    rows: dict[int, str] = {}
    start = 0
    while True:  # pages of 200 chunks (12 MB), far below Milvus' message and query limits
        got = client.query(name, filter=f"chunk >= {start} and chunk < {start + 200}",
                           output_fields=["chunk", "data"], limit=200)
        rows.update((int(r["chunk"]), r["data"]) for r in got)
        if len(got) < 200:
            break
        start += 200
    return _unpack([rows[i] for i in sorted(rows)], where)


def _encoder_files(index) -> dict[str, str]:
    """The index's saved encoder state as ``{relative path: base64 bytes}`` (JSON-safe)."""
    state = index.manifest.get("encoder_state")
    files = pack_state(Path(index.path) / state) if state else {}
    return {rel: base64.b64encode(data).decode("ascii") for rel, data in files.items()}


def _clip(text: str, max_bytes: int) -> str:
    """``text`` cut to at most ``max_bytes`` UTF-8 bytes, never inside a character."""
    raw = text.encode("utf-8")
    return text if len(raw) <= max_bytes else raw[:max_bytes].decode("utf-8", "ignore")


# ----------------------------------------------------------------------------------- export
@dataclass
class _Plan:
    """What an export writes: the vector fields (``(field, "sparse" | "dense", dim)``), one
    candidate row per document (``ids``, ``pks``), their vectors (``vectors(a, b)``: per row in
    ``[a, b)`` ``{field: vector}``, or None for a document with nothing to store), the metadata
    particular to the kind of index, and the metadata format version."""

    fields: list[tuple[str, str, int | None]]
    ids: list[str]
    pks: np.ndarray
    vectors: Callable[[int, int], list[dict[str, Any] | None]]
    meta: dict[str, Any]
    version: int
    #: the documents' metadata fields as scalar fields (see :func:`_metadata_specs`)
    scalars: list[dict[str, Any]] = _field(default_factory=list)


def export(index: Any, uri: str, collection: str | None = None, *, token: str | None = None,
           dense: np.ndarray | None = None, dense_encoder: Mapping[str, Any] | None = None,
           index_type: str = "SPARSE_INVERTED_INDEX", index_params: Mapping[str, Any] | None = None,
           batch_size: int = 1000, overwrite: bool = False, max_text_bytes: int = MAX_VARCHAR,
           progress: bool = True, timeout: float = 10.0) -> "MilvusBackend | MilvusHybridBackend":
    """Write the live documents of ``index`` into the Milvus collection ``collection`` at ``uri``.

    Args:
        index: an opened :class:`~sparsearch.index.Index` or
            :class:`~sparsearch.index.hybrid.HybridIndex`, or an index directory. A hybrid index
            is exported with one vector field per representation (see :class:`MilvusHybridBackend`).
        uri: ``path.db`` (Milvus Lite, created if missing) or ``http(s)://HOST:19530``.
        collection: collection name (default: the index directory's name, made valid).
        token: credentials of a Milvus server (``"user:password"`` or an API key).
        dense: optional dense document vectors, float32 (index.n_docs, d), row ``i`` for doc
            number ``i`` (the order of ``index.doc_ids``; rows of deleted documents are ignored),
            stored as FLOAT_VECTOR for hybrid search. Inner product is the dense metric:
            L2-normalise them for cosine. Not for a hybrid index (its dense representations
            are exported from their stored vectors).
        dense_encoder: config of the model that made ``dense``
            (:meth:`sparsearch.encoders.dense.DenseEncoder.config`), stored so that query text
            can be embedded the same way (the service needs it for dense search).
        index_type: Milvus sparse index, ``SPARSE_INVERTED_INDEX`` (exact with
            ``drop_ratio_search=0``; the only one Milvus Lite builds) or ``SPARSE_WAND``.
        index_params: extra build parameters of the sparse index (e.g.
            ``{"inverted_index_algo": "DAAT_MAXSCORE"}``).
        batch_size: rows per insert request.
        overwrite: drop an existing collection of that name first; without it an existing
            collection raises :class:`CollectionExistsError`.
        max_text_bytes: stored title and text are cut to this many UTF-8 bytes (<= 65535).
        progress: show a tqdm progress bar over the inserted documents.
        timeout: seconds to wait for a Milvus server to answer the connection.

    Returns the opened :class:`MilvusBackend` (:class:`MilvusHybridBackend` for a hybrid index).
    Raises :class:`MilvusBackendError` when Milvus refuses the index type (the partial collection
    is dropped) or cannot be reached.
    """
    if not isinstance(index, (Index, HybridIndex, DenseIndex)):
        index = open_searcher(index)
    if isinstance(index, DenseIndex):
        raise InvalidInputError(f"{index.path} is a dense index; export the hybrid index that holds it "
                                f"(sparsearch index --encoder bm25 --encoder dense ...)")
    collection = collection or collection_name(Path(index.path).resolve().name)
    _check_name(collection)
    if index_type not in SPARSE_INDEX_TYPES:
        raise MilvusBackendError(f"unknown sparse index type {index_type!r}; use one of {SPARSE_INDEX_TYPES}")
    if not 1 <= max_text_bytes <= MAX_VARCHAR:
        raise InvalidInputError(f"max_text_bytes must be in [1, {MAX_VARCHAR}], got {max_text_bytes}")
    if batch_size < 1:
        raise InvalidInputError(f"batch_size must be >= 1, got {batch_size}")
    if isinstance(index, HybridIndex):
        if dense is not None:
            raise InvalidInputError("a hybrid index exports the stored vectors of its dense representations; "
                                    "extra dense vectors (--dense) do not apply")
        plan = _hybrid_plan(index)
    else:
        plan = _index_plan(index, dense, dense_encoder)
    return _write(index, uri, collection, plan, token=token, index_type=index_type, index_params=index_params,
                  batch_size=batch_size, overwrite=overwrite, max_text_bytes=max_text_bytes, progress=progress,
                  timeout=timeout)


def _sparse_row(batch: SparseBatch, r: int) -> dict[int, float]:
    lo, hi = batch.indptr[r], batch.indptr[r + 1]
    return dict(zip(batch.indices[lo:hi].tolist(), batch.values[lo:hi].tolist()))


def _index_plan(index: Index, dense: np.ndarray | None, dense_encoder: Mapping[str, Any] | None) -> _Plan:
    """A sparse index: its live documents with at least one term, as ``sparse`` (+ ``dense``)."""
    if dense is not None:
        dense = np.ascontiguousarray(dense, dtype=np.float32)
        if dense.ndim != 2 or dense.shape[0] != index.n_docs or not 2 <= dense.shape[1] <= 32768:
            raise InvalidInputError(f"dense vectors must have shape (index.n_docs={index.n_docs}, d) with 2 <= d <= 32768, "
                             f"got {dense.shape}")
        if not np.isfinite(dense).all():
            raise InvalidInputError("dense vectors must be finite")
    batch = live_vectors(index)
    docnums = np.fromiter((index.docnum(i) for i in batch.ids), np.int64, len(batch))
    lens = np.diff(batch.indptr)

    def vectors(a: int, b: int) -> list[dict[str, Any] | None]:
        return [None if lens[r] == 0 else {"sparse": _sparse_row(batch, r),
                                           **({"dense": dense[docnums[r]].tolist()} if dense is not None else {})}
                for r in range(a, b)]

    fields: list[tuple[str, str, int | None]] = [("sparse", "sparse", None)]
    if dense is not None:
        fields.append(("dense", "dense", int(dense.shape[1])))
    scalars = _metadata_specs(index)

    def rows(a: int, b: int) -> list[dict[str, Any] | None]:
        out = vectors(a, b)
        for r, row in zip(range(a, b), out):
            if row is not None and scalars:
                row.update(_metadata_values(index, scalars, int(docnums[r])))
        return out

    meta = {"vocab": batch.vocab.terms, "encoder": index.encoder_config, "encoder_state": _encoder_files(index),
            "quantization": index.manifest.get("quantization"),
            "dense": None if dense is None else {"dim": int(dense.shape[1]),
                                                 "encoder": dict(dense_encoder) if dense_encoder else None},
            "metadata": scalars}
    return _Plan(fields, batch.ids, docnums, rows, meta, VERSION, scalars)


#: Milvus' largest ARRAY capacity
MAX_CAPACITY = 4096


def _metadata_specs(index: Index) -> list[dict[str, Any]]:
    """The index's metadata fields as Milvus scalar fields: ``{"name", "type", "field", "multi"}``
    (+ ``max_bytes`` and ``capacity`` for keywords). Field ``m_<name>`` (other characters than
    letters, digits and ``_`` as ``_``, made unique); keyword: VARCHAR, or ARRAY of VARCHAR when
    some document holds several values (a missing value: the empty array); integer and date (day
    number): INT64; float: DOUBLE; bool: BOOL; scalars nullable (a missing value: null)."""
    store = index.metadata
    out: list[dict[str, Any]] = []
    taken: set[str] = set()
    for name, typ in sorted(store.schema.items()):
        base = "m_" + re.sub(r"[^A-Za-z0-9_]", "_", name)[:200]
        fname, i = base, 2
        while fname in taken:
            fname, i = f"{base}_{i}", i + 1
        taken.add(fname)
        cols = [p.columns[name] for p in store.parts if p is not None and name in p.columns]
        spec: dict[str, Any] = {"name": name, "type": typ, "field": fname,
                                "multi": typ == "keyword" and any(c.multi for c in cols)}
        if typ == "keyword":
            spec["max_bytes"] = max([len(str(v).encode("utf-8")) for c in cols for v in c.dictionary] + [1])
            spec["capacity"] = max([int(np.diff(c.ptr).max()) for c in cols if c.n] + [1])
            if spec["max_bytes"] > MAX_VARCHAR or spec["capacity"] > MAX_CAPACITY:
                raise InvalidInputError(f"metadata field {name!r} holds a value of {spec['max_bytes']} bytes or "
                                        f"{spec['capacity']} values in one document; Milvus stores at most "
                                        f"{MAX_VARCHAR} bytes and {MAX_CAPACITY} values")
        out.append(spec)
    return out


def _metadata_values(index: Index, specs: Sequence[Mapping[str, Any]], docnum: int) -> dict[str, Any]:
    """One document's metadata as the row values of :func:`_metadata_specs`' fields."""
    doc = index.document_metadata(docnum)
    out: dict[str, Any] = {}
    for sp in specs:
        v = doc.get(sp["name"])
        if sp["type"] == "keyword":
            out[sp["field"]] = (v or []) if sp["multi"] else (v[0] if v else None)
        else:
            out[sp["field"]] = parse_date(v) if v is not None and sp["type"] == "date" else v
    return out


def field_names(names: Sequence[str]) -> list[str]:
    """Milvus field names of a hybrid index's representations: ``rep_`` + the name with other
    characters than letters, digits and ``_`` as ``_`` (``bm25-2`` -> ``rep_bm25_2``), made unique."""
    out: list[str] = []
    for n in names:
        base = "rep_" + re.sub(r"[^A-Za-z0-9_]", "_", n)[:200]
        name, i = base, 2
        while name in out:
            name, i = f"{base}_{i}", i + 1
        out.append(name)
    return out


def dense_rows(index: DenseIndex, a: int, b: int) -> np.ndarray:
    """Stored vectors ``a:b`` of a dense index, dequantized to float32 (int8 codes times their
    row's scale): what its inner products score."""
    x = as_float32(np.asarray(index.vectors[a:b]))
    return x * index.scale[a:b, None] if index.scale is not None else x


def _hybrid_plan(index: HybridIndex) -> _Plan:
    """A hybrid index: every document, one field per representation. A document without a term in
    a sparse representation gets a placeholder there (Milvus refuses empty sparse vectors): weight
    1 on the term id ``pad_term`` (the vocabulary's size), which no query holds, so that it never
    matches, as locally; a document with no term anywhere and no dense representation is left out.

    The metadata fields are those of the first sparse representation: it holds them for the hybrid
    index (:meth:`~sparsearch.index.hybrid.HybridIndex.filter_mask` compiles filters there), and
    each row takes the values of the document of the same id there (looked up by id, not assumed
    to have the hybrid doc number, which is the row's ``pk``). A hybrid index without a sparse
    representation has no metadata: its sidecar records ``"metadata": None``, which refuses
    filters as the local index does (an export made before metadata was exported has no key)."""
    n, fields = index.n_docs, field_names(index.names)
    members: list[dict[str, Any]] = []
    vector_fields: list[tuple[str, str, int | None]] = []
    sources: list[tuple[str, Any, np.ndarray | None, int]] = []
    for m, field in zip(index.members, fields):
        if m.kind == "sparse":
            batch = live_vectors(m.searcher)
            row_of = np.full(n, -1, np.int64)
            has_terms = np.diff(batch.indptr) > 0
            at = np.fromiter((m.searcher.docnum(i) for i in batch.ids), np.int64, len(batch))
            row_of[at[has_terms]] = np.flatnonzero(has_terms)
            pad = len(batch.vocab)
            members.append({"name": m.name, "kind": "sparse", "field": field, "vocab": batch.vocab.terms,
                            "pad_term": pad, "encoder": m.searcher.encoder_config,
                            "encoder_state": _encoder_files(m.searcher),
                            "quantization": m.searcher.manifest.get("quantization")})
            sources.append((field, batch, row_of, pad))
            vector_fields.append((field, "sparse", None))
        else:
            members.append({"name": m.name, "kind": "dense", "field": field, "dim": m.searcher.dim,
                            "encoder": m.searcher.encoder_config, "quantization": m.searcher.quantization})
            sources.append((field, m.searcher, None, 0))
            vector_fields.append((field, "dense", m.searcher.dim))
    any_dense = any(row_of is None for _, _, row_of, _ in sources)

    def vectors(a: int, b: int) -> list[dict[str, Any] | None]:
        cols: dict[str, list[Any]] = {}
        for field, src, row_of, _ in sources:
            if row_of is None:
                cols[field] = dense_rows(src, a, b).tolist()
            else:
                cols[field] = [_sparse_row(src, r) if r >= 0 else None for r in row_of[a:b].tolist()]
        out: list[dict[str, Any] | None] = []
        for i in range(b - a):
            if not any_dense and all(cols[f][i] is None for f, *_ in sources):
                out.append(None)
                continue
            out.append({f: cols[f][i] if cols[f][i] is not None else {pad: 1.0} for f, _, _, pad in sources})
        return out

    holder = next((m for m in index.members if m.kind == "sparse"), None)
    scalars = _metadata_specs(holder.searcher) if holder is not None else []
    ids = list(index.doc_ids)
    meta_at = _member_docnums(holder, ids, index.path) if holder is not None and scalars else None

    def rows(a: int, b: int) -> list[dict[str, Any] | None]:
        out = vectors(a, b)
        if holder is not None and meta_at is not None:
            for r, row in zip(range(a, b), out):
                if row is not None:
                    row.update(_metadata_values(holder.searcher, scalars, int(meta_at[r])))
        return out

    meta = {"kind": "hybrid", "members": members, "fusion": params_to_dict(index.default_params()),
            "metadata": scalars if holder is not None else None}
    return _Plan(vector_fields, ids, np.arange(n, dtype=np.int64), rows, meta, HYBRID_VERSION, scalars)


def _member_docnums(member: Member, ids: Sequence[str], path: Path) -> np.ndarray:
    """int64 (len(ids),): each id's doc number in the representation ``member`` (whose own
    numbering is what its metadata is read by); an id it lacks is a corrupt hybrid index."""
    try:
        return np.fromiter((member.searcher.docnum(i) for i in ids), np.int64, len(ids))
    except NotFoundError as e:
        raise CorruptIndexError(f"{path}: representation {member.name!r} lacks a document of the hybrid "
                                f"index ({e})") from None


def _write(index: Any, uri: str, collection: str, plan: _Plan, *, token: str | None, index_type: str,
           index_params: Mapping[str, Any] | None, batch_size: int, overwrite: bool, max_text_bytes: int,
           progress: bool, timeout: float) -> "MilvusBackend | MilvusHybridBackend":
    """Create the collection, insert the plan's rows (with stored title and text) and write the
    sidecar metadata last (see the module docstring)."""
    t0 = time.perf_counter()
    store = open_docstore(index.path, index.manifest)
    id_bytes = max((len(i.encode("utf-8")) for i in plan.ids), default=1)
    if id_bytes > MAX_VARCHAR:
        raise InvalidInputError(f"a document id is {id_bytes} bytes long; Milvus stores at most {MAX_VARCHAR}")

    client = connect(uri, token, timeout=timeout, create=True)
    meta_name = collection + META_SUFFIX
    try:
        found = [n for n in (collection, meta_name) if client.has_collection(n)]
        if found and not overwrite:
            raise CollectionExistsError(f"collection {collection!r} already exists at {uri} (use overwrite=True / "
                                        f"--overwrite to replace it)")
        for n in found:
            client.drop_collection(n)
        _create_collection(client, uri, collection, index_type, dict(index_params or {}), id_bytes,
                           store is not None, max_text_bytes, plan.fields, plan.scalars)
        skipped = 0
        with tqdm(total=len(plan.ids), unit="doc", desc=f"export {collection}", disable=not progress) as bar:
            for a in range(0, len(plan.ids), batch_size):
                b = min(a + batch_size, len(plan.ids))
                texts = store.get_many(plan.ids[a:b]) if store is not None else {}
                rows = []
                for r, vec in zip(range(a, b), plan.vectors(a, b)):
                    if vec is None:
                        skipped += 1
                        continue
                    row: dict[str, Any] = {"pk": int(plan.pks[r]), "doc_id": plan.ids[r], **vec}
                    if store is not None:
                        doc = texts.get(plan.ids[r]) or {"title": "", "text": ""}
                        row["title"] = _clip(doc["title"], max_text_bytes)
                        row["text"] = _clip(doc["text"], max_text_bytes)
                    rows.append(row)
                if rows:
                    client.insert(collection, rows)
                bar.update(b - a)
        client.flush(collection)
        client.load_collection(collection)
        meta = {
            "collection": collection, "n_docs": len(plan.ids) - skipped, "skipped_empty_docs": skipped, **plan.meta,
            "index_type": index_type, "index_params": dict(index_params or {}), "has_text": store is not None,
            "max_text_bytes": max_text_bytes,
            "source": {"path": str(Path(index.path).resolve()), "generation": index.manifest.get("generation"),
                       "n_live_docs": index.n_live_docs},
            "exported_at": time.time(), "export_seconds": time.perf_counter() - t0,
        }
        _write_meta(client, meta_name, meta, plan.version)
    except MilvusBackendError:
        client.close()
        raise
    except Exception as e:
        client.close()
        if type(e).__module__.startswith(("pymilvus", "grpc")):
            raise MilvusBackendError(f"export of {collection!r} to {uri} failed: {_message(e)}") from None
        raise
    finally:
        if store is not None:
            store.close()
    return (MilvusHybridBackend if plan.version == HYBRID_VERSION else MilvusBackend)(client, uri, collection, meta)


def _create_collection(client, uri: str, name: str, index_type: str, index_params: dict[str, Any], id_bytes: int,
                       text: bool, text_bytes: int, vector_fields: Sequence[tuple[str, str, int | None]],
                       scalars: Sequence[Mapping[str, Any]] = ()) -> None:
    """The document collection with its indexes (created empty, so that a refused index type
    fails before any data is sent); a refusal drops it and raises :class:`MilvusBackendError`."""
    from pymilvus import DataType

    schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("pk", DataType.INT64, is_primary=True)
    schema.add_field("doc_id", DataType.VARCHAR, max_length=max(1, id_bytes))
    if text:
        schema.add_field("title", DataType.VARCHAR, max_length=text_bytes)
        schema.add_field("text", DataType.VARCHAR, max_length=text_bytes)
    types = {"integer": DataType.INT64, "date": DataType.INT64, "float": DataType.DOUBLE, "bool": DataType.BOOL}
    for sp in scalars:
        if sp["multi"]:
            schema.add_field(sp["field"], DataType.ARRAY, element_type=DataType.VARCHAR,
                             max_capacity=sp["capacity"], max_length=sp["max_bytes"])
        elif sp["type"] == "keyword":
            schema.add_field(sp["field"], DataType.VARCHAR, max_length=sp["max_bytes"], nullable=True)
        else:
            schema.add_field(sp["field"], types[sp["type"]], nullable=True)
    params = client.prepare_index_params()
    for field, kind, dim in vector_fields:
        if kind == "sparse":
            schema.add_field(field, DataType.SPARSE_FLOAT_VECTOR)
            params.add_index(field_name=field, index_type=index_type, metric_type="IP", params=index_params)
        else:
            schema.add_field(field, DataType.FLOAT_VECTOR, dim=dim)
            params.add_index(field_name=field, index_type="FLAT", metric_type="IP", params={})
    try:
        with _quiet():
            client.create_collection(name, schema=schema, index_params=params)
    except Exception as e:
        with _quiet(), contextlib.suppress(Exception):
            client.drop_collection(name)
        lite = " (Milvus Lite builds only SPARSE_INVERTED_INDEX; SPARSE_WAND needs a Milvus server)" \
            if uri_kind(uri) == "lite" else ""
        raise MilvusBackendError(f"Milvus at {uri} refused sparse index type {index_type!r} with params "
                                 f"{index_params}{lite}: {_message(e)}") from None


# ---------------------------------------------------------------------------------- backend
class _Collection:
    """What every exported collection offers: the connection, its metadata, stored documents,
    and batched searches of one vector field. :meth:`open` returns the class the export needs:
    :class:`MilvusBackend` (an index) or :class:`MilvusHybridBackend` (a hybrid index)."""

    def __init__(self, client: Any, uri: str, collection: str, meta: dict[str, Any]) -> None:
        self.client, self.uri, self.collection, self.meta = client, uri, collection, meta

    @classmethod
    def open(cls, uri: str, collection: str, *, token: str | None = None, timeout: float = 10.0
             ) -> "MilvusBackend | MilvusHybridBackend":
        """Connect to an exported collection (a hybrid index's export opens as a
        :class:`MilvusHybridBackend`); :class:`CollectionNotFoundError` names the ones there."""
        _check_name(collection)
        client = connect(uri, token, timeout=timeout)
        try:
            if not client.has_collection(collection):
                names = set(client.list_collections())
                have = sorted(n[: -len(META_SUFFIX)] for n in names if n.endswith(META_SUFFIX))
                raise CollectionNotFoundError(
                    f"no collection {collection!r} at {uri} (sparsearch collections there: "
                    f"{', '.join(have) or 'none'}); export one with: sparsearch export INDEX --milvus {uri} "
                    f"--collection {collection}")
            meta_name = collection + META_SUFFIX
            if not client.has_collection(meta_name):
                raise MilvusBackendError(f"collection {collection!r} at {uri} has no sparsearch metadata "
                                         f"({meta_name!r}): not exported by sparsearch, or its export did not "
                                         f"finish; export again with --overwrite")
            meta = _read_meta(client, meta_name, f"{uri} {collection!r}")
            client.load_collection(collection)
        except MilvusBackendError:
            client.close()
            raise
        except Exception as e:
            client.close()
            raise MilvusBackendError(f"cannot open collection {collection!r} at {uri}: {_message(e)}") from None
        kind = MilvusHybridBackend if meta.get("kind") == "hybrid" else MilvusBackend
        return kind(client, uri, collection, meta)

    def close(self) -> None:
        self.client.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def n_docs(self) -> int:
        """Documents in the collection (the exported live documents that have something to search)."""
        return int(self.meta["n_docs"])

    @property
    def n_live_docs(self) -> int:
        return self.n_docs

    @property
    def has_text(self) -> bool:
        return bool(self.meta.get("has_text"))

    def _call(self, what: str, fn, *args: Any, **kwargs: Any):
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            if type(e).__module__.startswith(("pymilvus", "grpc")):
                raise MilvusBackendError(f"Milvus {what} on collection {self.collection!r} at {self.uri} failed: "
                                         f"{_message(e)}") from None
            raise

    # ------------------------------------------------------------------ filters
    @property
    def filters(self) -> bool:
        """Whether the export carries metadata fields to filter on (exports made before them do
        not, nor does a hybrid index's export without a sparse representation)."""
        return self.meta.get("metadata") is not None

    def _refuse_filters(self) -> None:
        """One-line :class:`UnsupportedError` when the export holds no metadata fields."""
        if "metadata" not in self.meta:
            raise UnsupportedError(f"collection {self.collection!r} was exported without metadata fields; export "
                                   f"the index again to filter on them")
        if self.meta["metadata"] is None:
            raise UnsupportedError(f"collection {self.collection!r} holds no metadata fields to filter on")

    def milvus_filter(self, expr: str) -> str | bool:
        """The filter ``expr`` (:mod:`sparsearch.filters`) as a Milvus expression over the exported
        metadata fields (``True`` / ``False``: every / no document); see
        :func:`sparsearch.filters.to_milvus` for what does not translate."""
        self._refuse_filters()
        return to_milvus(expr, {sp["name"]: sp for sp in self.meta["metadata"]})

    def count(self, filter: str | bool = True) -> int:
        """Documents of the collection that the Milvus expression ``filter`` selects."""
        if filter is True:
            return self.n_docs
        if filter is False:
            return 0
        rows = self._call("count", self.client.query, self.collection, filter=filter, output_fields=["count(*)"])
        return int(rows[0]["count(*)"])

    def _search_field(self, field: str, data: Sequence[Any], k: int, search_params: dict[str, Any],
                      fields: list[str], filter: str | bool = True) -> list[list[tuple]]:
        """Top-``k`` hits of each query row of ``data`` in vector field ``field`` (1,000 queries per
        request) among the rows Milvus expression ``filter`` selects (``True``: all, ``False``:
        none); an empty sparse row matches nothing and is not sent."""
        hits: list[list[tuple]] = [[] for _ in data]
        todo = [i for i, r in enumerate(data) if (not isinstance(r, dict) or r) and filter is not False]
        extra = {} if filter is True else {"filter": filter}
        for a in range(0, len(todo), _SEARCH_BATCH):
            part = todo[a:a + _SEARCH_BATCH]
            res = self._call("search", self.client.search, self.collection, data=[data[i] for i in part],
                             anns_field=field, limit=k, search_params=search_params, output_fields=fields, **extra)
            for i, r in zip(part, res):
                hits[i] = _sorted_hits(r, fields)
        return hits

    def documents(self, doc_ids: Sequence[str]) -> dict[str, dict[str, str | None]]:
        """``{"id", "title", "text"}`` of the given ids that are in the collection (missing ones
        absent). Texts as cut at export; ``None`` when the exported index had no document store."""
        out: dict[str, dict[str, str | None]] = {}
        ids = [str(i) for i in doc_ids]
        fields = ["doc_id", "title", "text"] if self.has_text else ["doc_id"]
        for a in range(0, len(ids), 500):
            part = ids[a:a + 500]
            # a JSON list of strings is a valid Milvus string-list literal (quotes and backslashes escaped)
            expr = "doc_id in " + json.dumps(part, ensure_ascii=False)
            rows = self._call("query", self.client.query, self.collection, filter=expr, output_fields=fields,
                              limit=len(part))
            out.update((r["doc_id"], {"id": r["doc_id"], "title": r.get("title"), "text": r.get("text")})
                       for r in rows)
        return out

    def _stats(self) -> dict[str, Any]:
        m = self.meta
        return {"backend": "milvus", "uri": self.uri, "collection": self.collection, "n_docs": self.n_docs,
                "n_live_docs": self.n_docs, "index_type": m["index_type"], "index_params": m.get("index_params"),
                "source": m.get("source"), "skipped_empty_docs": m.get("skipped_empty_docs", 0)}


def _rebuild_encoder(config: Mapping[str, Any], state: Mapping[str, str] | None):
    """A sparse encoder from its recorded config and saved state (``{relative path: base64}``)."""
    files = {rel: base64.b64decode(data) for rel, data in (state or {}).items()}
    with tempfile.TemporaryDirectory(prefix="sparsearch-milvus-") as tmp:
        return load_encoder(dict(config), unpack_state(files, tmp))


def _sparse_rows(queries: SparseBatch, vocab: Vocabulary, unknown: str, collection: str) -> list[dict[int, float]]:
    """Query vectors as Milvus sparse rows ``{term id: weight}`` over ``vocab`` (see
    :meth:`MilvusBackend.prepare_queries`)."""
    if unknown not in ("drop", "error"):
        raise InvalidInputError(f"unknown must be 'drop' or 'error', got {unknown!r}")
    weights = queries.values.astype(np.float64)
    if not np.isfinite(weights.sum()):
        raise InvalidInputError("query weights must be finite (a query vector holds NaN or inf)")
    terms, get = queries.vocab.terms, vocab.get
    used = np.unique(queries.indices)
    lut = dict(zip(used.tolist(), (get(terms[t]) for t in used.tolist())))
    if unknown == "error":
        bad = next((t for t, i in lut.items() if i < 0), None)
        if bad is not None:
            raise InvalidInputError(f"unknown token {terms[bad]!r}: not in the vocabulary of collection "
                                    f"{collection!r} ({len(vocab)} terms); were the queries encoded with "
                                    f"the exported index's encoder?")
    out = []
    for q in range(len(queries)):
        lo, hi = queries.indptr[q], queries.indptr[q + 1]
        row = {}
        for t, w in zip(queries.indices[lo:hi].tolist(), weights[lo:hi].tolist()):
            tid = lut[t]
            if tid >= 0 and w > 0:
                row[tid] = w
        out.append(row)
    return out


def _dense_queries(dense_queries: Any, dim: int) -> np.ndarray:
    emb = np.asarray(dense_queries, dtype=np.float32)
    if emb.ndim != 2 or emb.shape[1] != dim:
        raise InvalidInputError(f"dense queries must have shape (nq, {dim}), got {emb.shape}")
    if not np.isfinite(emb).all():
        raise InvalidInputError("dense queries must be finite")
    return emb


class MilvusBackend(_Collection):
    """A collection exported by :func:`export`, searched like a local :class:`~sparsearch.index.Index`
    (a :class:`~sparsearch.searching.Searcher` for exact search only: Milvus scores every posting).

    Doc numbers (``pk``) are those of the exported index commit; :meth:`search` returns them in
    FAISS-style arrays, :meth:`search_run` returns external ids (as Milvus returns them with the
    hits: the backend holds no id table). Thread-safe for searching (the pymilvus client is).
    """

    def __init__(self, client: Any, uri: str, collection: str, meta: dict[str, Any]) -> None:
        super().__init__(client, uri, collection, meta)
        self.vocab = Vocabulary(meta["vocab"])
        self._encoder = None
        self._dense_encoder = None

    export = staticmethod(export)

    def __repr__(self) -> str:
        return f"MilvusBackend({self.uri!r}, {self.collection!r}, docs={self.n_docs}, terms={len(self.vocab)})"

    # ------------------------------------------------------------------ properties
    @property
    def n_terms(self) -> int:
        return len(self.vocab)

    @property
    def encoder_config(self) -> dict[str, Any] | None:
        return self.meta.get("encoder")

    @property
    def has_dense(self) -> bool:
        return self.meta.get("dense") is not None

    def stats(self) -> dict[str, Any]:
        """Sizes and settings of the export (no disk figures: Milvus owns the storage)."""
        m = self.meta
        return {**self._stats(), "n_terms": self.n_terms, "quantization": m.get("quantization"),
                "dense_dim": m["dense"]["dim"] if m.get("dense") else None, "encoder": self.encoder_config}

    def load_encoder(self):
        """The encoder the exported index was built with, rebuilt from its stored config and state."""
        if self._encoder is None:
            if not self.encoder_config:
                raise InvalidInputError(f"collection {self.collection!r}: the exported index has no encoder; "
                                        f"pass query vectors instead of text")
            self._encoder = _rebuild_encoder(self.encoder_config, self.meta.get("encoder_state"))
        return self._encoder

    def load_dense_encoder(self):
        """The dense model recorded at export (:class:`~sparsearch.encoders.dense.DenseEncoder`)."""
        if self._dense_encoder is None:
            dense = self.meta.get("dense")
            if not dense or not dense.get("encoder"):
                raise InvalidInputError(f"collection {self.collection!r} has "
                                 + ("no dense vectors" if not dense else "no recorded dense model")
                                 + "; embed queries yourself and call hybrid_search with them")
            self._dense_encoder = DenseEncoder.from_config(dense["encoder"])
        return self._dense_encoder

    # ------------------------------------------------------------------------ search
    def prepare_queries(self, queries: SparseBatch, unknown: str = "drop") -> list[dict[int, float]]:
        """Query vectors as Milvus sparse rows ``{term id: weight}`` over the stored vocabulary.

        Terms are matched by string. A term the collection's vocabulary lacks is dropped
        (it matches no document), or with ``unknown="error"`` raises
        :class:`~sparsearch.errors.InvalidInputError` naming it: use that for vectors from a fixed
        model vocabulary, where an unknown token means the queries were encoded for another index.
        """
        return _sparse_rows(queries, self.vocab, unknown, self.collection)

    def _sparse_hits(self, rows: list[dict[int, float]], k: int, fields: list[str],
                     filter: str | bool = True) -> list[list[tuple]]:
        return self._search_field("sparse", rows, k, _SPARSE_PARAMS, fields, filter)

    def _filtered(self, params: ExactParams | None, k: int) -> tuple[ExactParams, int, str | bool]:
        """``params`` checked (exact only: Milvus has no approximate mode here), ``params.filter``
        translated (``True``: none) and ``k`` clamped to the documents it selects."""
        params = ExactParams() if params is None else params
        require(params, [ExactParams], "the Milvus backend")
        expr = True if params.filter is None else self.milvus_filter(params.filter)
        return params.check(), _check_k(k, self.count(expr)), expr

    def _dense_hits(self, dense_queries: np.ndarray, k: int, fields: list[str]) -> list[list[tuple]]:
        return self._search_field("dense", self._check_dense(dense_queries).tolist(), k, _DENSE_PARAMS, fields)

    def _check_dense(self, dense_queries: np.ndarray) -> np.ndarray:
        if not self.has_dense:
            raise InvalidInputError(f"collection {self.collection!r} has no dense vectors (export with dense=... / --dense)")
        return _dense_queries(dense_queries, self.meta["dense"]["dim"])

    def search(self, queries: SparseBatch, k: int = 10,
               params: ExactParams | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` documents per query by inner product, computed by Milvus.

        Args:
            queries: (nq, V') sparse query vectors, matched to the stored vocabulary by term.
            k: results per query, 1 to 16384; the result width is ``min(k, n_docs)``.
            params: :class:`~sparsearch.searching.ExactParams`; ``unknown`` is honoured, ``threads``
                and ``exhaustive`` do not apply (Milvus scores every posting of the query terms);
                ``filter`` is translated to a Milvus expression over the exported metadata fields
                (:meth:`milvus_filter`), ``k`` clamped to the documents it selects.

        Returns:
            ``scores`` float32 (nq, k'), descending (ties: ascending doc number) and ``docnums``
            int64 (nq, k'): doc numbers of the exported index commit, ``-1`` padding.
        """
        params, k, expr = self._filtered(params, k)
        return _arrays(self._sparse_hits(self.prepare_queries(queries, params.unknown), k, [], expr), k)

    def search_run(self, queries: SparseBatch, k: int = 1000,
                   params: ExactParams | None = None) -> dict[str, dict[str, float]]:
        """:meth:`search` as a run ``{query_id: {doc_id: score}}`` (query ids from ``queries.ids``)."""
        params, k, expr = self._filtered(params, k)
        return _run(self._sparse_hits(self.prepare_queries(queries, params.unknown), k, ["doc_id"], expr), k,
                    queries.ids)

    def dense_search_run(self, dense_queries: np.ndarray, k: int = 10,
                         query_ids: Sequence[str] | None = None) -> dict[str, dict[str, float]]:
        """Top-``k`` by inner product of the (nq, d) float32 ``dense_queries`` with the dense
        document vectors, as a run ``{query_id: {doc_id: score}}``."""
        k = _check_k(k, self.n_docs)
        return _run(self._dense_hits(dense_queries, k, ["doc_id"]), k, query_ids)

    def _hybrid_hits(self, queries: SparseBatch, dense_queries: np.ndarray, k: int, ranker: str, rrf_k: int,
                     weights: Sequence[float], depth: int | None, unknown: str, fields: list[str]):
        from pymilvus import AnnSearchRequest, RRFRanker, WeightedRanker

        rows = self.prepare_queries(queries, unknown)
        emb = self._check_dense(dense_queries)
        if len(emb) != len(rows):
            raise InvalidInputError(f"{len(rows)} sparse and {len(emb)} dense queries")
        depth = max(k, 100) if depth is None else depth
        _check_k(depth, self.n_docs)
        if ranker == "rrf":
            if not 1 <= int(rrf_k) < 16384:
                raise InvalidInputError(f"rrf_k must be in [1, 16384), got {rrf_k}")
            rank = RRFRanker(int(rrf_k))
        elif ranker == "weighted":
            if len(weights) != 2 or min(weights) < 0 or not any(weights):
                raise InvalidInputError(f"weights must be two non-negative numbers (sparse, dense), "
                                        f"got {list(weights)}")
            rank = WeightedRanker(float(weights[0]), float(weights[1]))
        else:
            raise InvalidInputError(f"unknown ranker {ranker!r}; use 'rrf' or 'weighted'")
        hits: list[list[tuple]] = []
        for a in range(0, len(rows), _SEARCH_BATCH):
            b = min(a + _SEARCH_BATCH, len(rows))
            reqs = [AnnSearchRequest(data=rows[a:b], anns_field="sparse", param=_SPARSE_PARAMS, limit=depth),
                    AnnSearchRequest(data=emb[a:b].tolist(), anns_field="dense", param=_DENSE_PARAMS, limit=depth)]
            res = self._call("hybrid search", self.client.hybrid_search, self.collection, reqs, rank, limit=k,
                             output_fields=fields)
            hits.extend(_sorted_hits(r, fields) for r in res)
        return hits

    def hybrid_search(self, queries: SparseBatch, dense_queries: np.ndarray, k: int = 10, *, ranker: str = "rrf",
                      rrf_k: int = 60, weights: Sequence[float] = (0.5, 0.5), depth: int | None = None,
                      unknown: str = "drop") -> tuple[np.ndarray, np.ndarray]:
        """Sparse + dense search fused by Milvus (one ``hybrid_search`` request per 1,000 queries).

        Args:
            queries: (nq, V') sparse query vectors (as for :meth:`search`).
            dense_queries: float32 (nq, d) query embeddings from the model of the dense
                document vectors (see :meth:`load_dense_encoder`).
            k: fused results per query.
            ranker: ``"rrf"`` (pymilvus ``RRFRanker``: ``sum 1 / (rrf_k + rank)``) or
                ``"weighted"`` (``WeightedRanker``: ``weights[0] * norm(sparse score) +
                weights[1] * norm(dense score)``, Milvus' arctan normalisation).
            depth: candidates taken from each side before fusing (default ``max(k, 100)``).

        Returns ``(scores, docnums)`` float32 / int64 (nq, k') as :meth:`search`, fused scores.
        """
        k = _check_k(k, self.n_docs)
        return _arrays(self._hybrid_hits(queries, dense_queries, k, ranker, rrf_k, weights, depth, unknown, []), k)

    def hybrid_search_run(self, queries: SparseBatch, dense_queries: np.ndarray, k: int = 10,
                          **kwargs: Any) -> dict[str, dict[str, float]]:
        """:meth:`hybrid_search` as a run ``{query_id: {doc_id: fused score}}``."""
        kw = {"ranker": "rrf", "rrf_k": 60, "weights": (0.5, 0.5), "depth": None, "unknown": "drop", **kwargs}
        k = _check_k(k, self.n_docs)
        return _run(self._hybrid_hits(queries, dense_queries, k, fields=["doc_id"], **kw), k, queries.ids)


class MilvusHybridBackend(_Collection):
    """A hybrid index (:class:`~sparsearch.index.hybrid.HybridIndex`) exported by :func:`export`:
    one collection with one vector field per representation, ``rep_<name>`` (see
    :func:`field_names`): SPARSE_FLOAT_VECTOR of a sparse representation's dequantized impacts
    over its own vocabulary, FLOAT_VECTOR of a dense one's stored vectors, dequantized (not
    re-encoded); ``pk`` is the hybrid index's doc number. The sidecar records each
    representation's vocabulary and encoder and the index's default fusion.

    Search follows the hybrid index: queries are :class:`~sparsearch.index.hybrid.HybridQueries`
    (:meth:`load_encoder`), parameters a :class:`~sparsearch.searching.HybridParams` (default:
    the fusion saved with the index when it was exported; sparse representations are searched
    exactly). :meth:`search_detailed` searches each field in Milvus (its top ``depth``) and fuses
    the lists here with :func:`~sparsearch.fusion.fuse_topk`, so every fusion of the local index
    is available and the results equal the local index's up to float rounding and tied scores.
    :meth:`search` lets Milvus fuse (one ``hybrid_search`` request with ``RRFRanker``) when
    Milvus' ranker computes the same thing: RRF with equal weights and an integer ``rrf_k`` in
    [1, 16384). Milvus' ``WeightedRanker`` adds raw (or arctan-normalised) scores, which is none of
    ``minmax`` / ``zscore``, so those fusions, and weighted RRF, are fused here.

    ``HybridParams.filter`` (an :class:`ExactParams`' filter moves there, as locally) is translated
    once per search (:meth:`milvus_filter`, over the metadata fields of the first sparse
    representation) and applied by Milvus to every representation's search before its top
    ``depth``, as the local index applies its mask; ``k`` and ``depth`` are clamped to the
    documents it selects (:meth:`count`). An export made before hybrid exports carried metadata
    fields, or of an index without a sparse representation, refuses filters
    (:class:`UnsupportedError`).
    """

    def __init__(self, client: Any, uri: str, collection: str, meta: dict[str, Any]) -> None:
        super().__init__(client, uri, collection, meta)
        self.members: list[dict[str, Any]] = list(meta["members"])
        self.vocabs = {m["name"]: Vocabulary(m["vocab"]) for m in self.members if m["kind"] == "sparse"}
        self._encoder: HybridEncoder | None = None

    export = staticmethod(export)

    def __repr__(self) -> str:
        return f"MilvusHybridBackend({self.uri!r}, {self.collection!r}, docs={self.n_docs}, {', '.join(self.names)})"

    @property
    def names(self) -> list[str]:
        """The representations, in the hybrid index's order (the order of fusion weights)."""
        return [m["name"] for m in self.members]

    @property
    def encoder_config(self) -> dict[str, Any]:
        return {"name": "hybrid", "members": {m["name"]: m.get("encoder") for m in self.members}}

    def stats(self) -> dict[str, Any]:
        return {**self._stats(), "kind": "hybrid", "encoder": self.encoder_config,
                "fusion": self.meta.get("fusion"), "representations": self.names,
                "members": {m["name"]: {"kind": m["kind"], "field": m["field"], "quantization": m.get("quantization"),
                                        **({"n_terms": len(m["vocab"])} if m["kind"] == "sparse" else
                                           {"dim": m["dim"]})} for m in self.members}}

    def load_encoder(self) -> HybridEncoder:
        """Every representation's encoder, rebuilt from the recorded configs (and saved states)."""
        if self._encoder is None:
            missing = [m["name"] for m in self.members if not m.get("encoder")]
            if missing:
                raise InvalidInputError(f"collection {self.collection!r}: representation {missing[0]!r} was built "
                                        f"without an encoder; pass HybridQueries of vectors instead of text")
            self._encoder = HybridEncoder({
                m["name"]: _rebuild_encoder(m["encoder"], m.get("encoder_state")) if m["kind"] == "sparse"
                else DenseEncoder.from_config(m["encoder"]) for m in self.members})
        return self._encoder

    def default_params(self) -> HybridParams:
        """The fusion saved with the exported index (exact search of the sparse representations)."""
        try:
            params = params_from_dict(self.meta["fusion"])
        except (InvalidInputError, KeyError, TypeError) as e:
            raise MilvusBackendError(f"collection {self.collection!r}: unreadable fusion setting ({e}); "
                                     f"re-export") from None
        return replace(params, sparse=None)

    def resolve_params(self, params: Any) -> HybridParams:
        """The :class:`HybridParams` a search with ``params`` uses: ``None`` is
        :meth:`default_params`, an :class:`ExactParams` the default fusion with its
        ``threads``/``unknown``/``filter`` (as the local hybrid index takes it); approximate search,
        and a filter on an export without metadata fields, are refused (:class:`UnsupportedError`)."""
        if params is None:
            return self.default_params()
        if isinstance(params, ExactParams):
            out = replace(self.default_params(), threads=params.threads, unknown=params.unknown,
                          filter=params.filter).check()
        else:
            require(params, [HybridParams, ExactParams], "the Milvus backend")
            if params.sparse is not None:
                require(params.sparse, [ExactParams], "the Milvus backend")
            if params.weights is not None and len(params.weights) != len(self.members):
                raise InvalidInputError(f"{len(params.weights)} fusion weights for {len(self.members)} "
                                        f"representations ({', '.join(self.names)})")
            out = params.check()
        if out.filter is not None:
            self._refuse_filters()  # before any Milvus call
        return out

    def _refuse_filters(self) -> None:
        if self.meta.get("metadata", []) is None:
            raise UnsupportedError(f"collection {self.collection!r}: filters need a sparse representation (it holds "
                                   f"the metadata fields); the exported hybrid index has only {', '.join(self.names)}")
        super()._refuse_filters()

    def _filtered(self, params: HybridParams, k: int) -> tuple[int, int, str | bool]:
        """``(k, depth, expr)``: ``params.filter`` as a Milvus expression, translated once for every
        representation's search (``True``: no filter; ``False``: it selects no exported document,
        and nothing is sent to Milvus), ``k`` and the fusion depth clamped to the documents it
        selects, as the local hybrid index clamps them to those its mask allows."""
        expr = True if params.filter is None else self.milvus_filter(params.filter)
        n = self.count(expr)
        k = _check_k(k, n)
        return k, _check_k(max(k, params.depth), n), expr if n else False

    def _check_queries(self, queries: Any) -> HybridQueries:
        return HybridQueries.check(queries, self.names, "hybrid collection")

    def _member_hits(self, m: dict[str, Any], part: Any, depth: int, unknown: str, fields: list[str],
                     filter: str | bool = True) -> list[list[tuple]]:
        """One representation's top ``depth`` per query among the rows ``filter`` selects (the
        queries are checked even when it selects none)."""
        if m["kind"] == "sparse":
            rows = _sparse_rows(part, self.vocabs[m["name"]], unknown, self.collection)
            return self._search_field(m["field"], rows, depth, _SPARSE_PARAMS, fields, filter)
        return self._search_field(m["field"], _dense_queries(part, m["dim"]).tolist(), depth, _DENSE_PARAMS, fields,
                                  filter)

    def _detailed(self, queries: Any, k: int, params: Any, fields: list[str]):
        params = self.resolve_params(params)
        queries = self._check_queries(queries)
        k, depth, expr = self._filtered(params, k)
        per, hits, seconds = {}, {}, {}
        for m in self.members:
            t = time.perf_counter()
            hits[m["name"]] = self._member_hits(m, queries.parts[m["name"]], depth, params.unknown, fields, expr)
            per[m["name"]] = _arrays(hits[m["name"]], depth)
            seconds[m["name"]] = time.perf_counter() - t
        t = time.perf_counter()
        if len(self.members) == 1:  # nothing to fuse
            s, d = per[self.names[0]]
            scores, docs = s[:, :k], d[:, :k]
        else:
            scores, docs = fuse_topk([per[n] for n in self.names], k, params.fusion, params.weights, params.rrf_k)
        seconds["fusion"] = time.perf_counter() - t
        return scores, docs, per, seconds, hits

    def search_detailed(self, queries: HybridQueries, k: int = 10, params: Any = None
                        ) -> tuple[np.ndarray, np.ndarray, dict[str, tuple[np.ndarray, np.ndarray]], dict[str, float]]:
        """As :meth:`sparsearch.index.hybrid.HybridIndex.search_detailed`: the fused top-``k``
        (fused here), each representation's own ``(scores, docnums)`` (top ``depth``, from Milvus)
        and the seconds each search and the fusion took."""
        scores, docs, per, seconds, _ = self._detailed(queries, k, params, [])
        return scores, docs, per, seconds

    def search_detailed_run(self, queries: HybridQueries, k: int = 10, params: Any = None
                            ) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, list[tuple[str, float]]]],
                                       dict[str, float]]:
        """:meth:`search_detailed` with document ids: the fused run ``{query_id: {doc_id: score}}``,
        per representation ``{query_id: [(doc_id, score)]}`` ranked, and the seconds."""
        scores, docs, per, seconds, hits = self._detailed(queries, k, params, ["doc_id"])
        ids = {pk: doc_id for rows in hits.values() for row in rows for _, pk, doc_id in row}
        qids = queries.ids or [str(i) for i in range(len(queries))]
        lists = {n: {q: [(doc_id, s) for s, _, doc_id in h] for q, h in zip(qids, rows)} for n, rows in hits.items()}
        return to_run(scores, docs, ids, qids), lists, seconds  # type: ignore[arg-type]

    def milvus_ranker(self, params: HybridParams) -> tuple[Any, float] | None:
        """``(pymilvus RRFRanker, weight)`` when Milvus' own fusion computes ``params`` (RRF, equal
        weights ``weight``, an integer ``rrf_k`` in [1, 16384)), else None."""
        from pymilvus import RRFRanker

        weights = set(params.weights) if params.weights is not None else {1.0}
        if params.fusion != "rrf" or len(weights) != 1 or float(params.rrf_k) != int(params.rrf_k) \
                or not 1 <= params.rrf_k < 16384 or len(self.members) < 2:
            return None
        return RRFRanker(int(params.rrf_k)), float(weights.pop())

    def search(self, queries: HybridQueries, k: int = 10, params: Any = None, *, fuse: str = "auto"
               ) -> tuple[np.ndarray, np.ndarray]:
        """Fused top-``k``: ``(scores float32 (nq, k'), docnums int64 (nq, k'))`` as the hybrid index.

        ``fuse``: ``"milvus"`` (one ``hybrid_search`` request per 1,000 queries, Milvus' RRFRanker;
        :class:`UnsupportedError` for a fusion it cannot compute, see the class docstring),
        ``"local"`` (each field searched by Milvus, fused here), or ``"auto"``: Milvus where it can.
        """
        if fuse not in ("auto", "milvus", "local"):
            raise InvalidInputError(f"fuse must be 'auto', 'milvus' or 'local', got {fuse!r}")
        p = self.resolve_params(params)
        ranker = None if fuse == "local" else self.milvus_ranker(p)
        if ranker is None:
            if fuse == "milvus":
                raise UnsupportedError(f"Milvus' own fusion computes RRF with equal weights and an integer rrf_k in "
                                       f"[1, 16384), not {p.fusion} with weights {p.weights} and rrf_k {p.rrf_k}; "
                                       f"use fuse='local'")
            return self.search_detailed(queries, k, p)[:2]
        return self._milvus_fused(self._check_queries(queries), k, p, *ranker)

    def _milvus_fused(self, queries: HybridQueries, k: int, params: HybridParams, ranker: Any, weight: float
                      ) -> tuple[np.ndarray, np.ndarray]:
        from pymilvus import AnnSearchRequest

        k, depth, expr = self._filtered(params, k)
        data = {}
        for m in self.members:
            part = queries.parts[m["name"]]
            data[m["name"]] = (_sparse_rows(part, self.vocabs[m["name"]], params.unknown, self.collection)
                               if m["kind"] == "sparse" else _dense_queries(part, m["dim"]).tolist())
        extra = {} if isinstance(expr, bool) else {"expr": expr}  # every representation's search filtered
        hits: list[list[tuple]] = [] if expr is not False else [[] for _ in range(len(queries))]
        for a in range(0, len(queries) if expr is not False else 0, _SEARCH_BATCH):
            b = min(a + _SEARCH_BATCH, len(queries))
            reqs = [AnnSearchRequest(data=data[m["name"]][a:b], anns_field=m["field"], limit=depth,
                                     param=_SPARSE_PARAMS if m["kind"] == "sparse" else _DENSE_PARAMS, **extra)
                    for m in self.members]
            res = self._call("hybrid search", self.client.hybrid_search, self.collection, reqs, ranker, limit=k,
                             output_fields=[])
            hits.extend(_sorted_hits(r, []) for r in res)
        scores, docs = _arrays(hits, k)
        scores = scores * np.float32(weight)
        scores[docs < 0] = -np.inf  # padding as fuse_topk's, so as the local hybrid index's
        return scores, docs

    def search_run(self, queries: HybridQueries, k: int = 1000, params: Any = None) -> dict[str, dict[str, float]]:
        """The fused top-``k`` as a run ``{query_id: {doc_id: score}}`` (fused here)."""
        return self.search_detailed_run(queries, k, params)[0]


def _check_k(k: int, n_docs: int) -> int:
    """:func:`~sparsearch.searching.check_k` (clamped to the documents), and at most Milvus' largest
    search limit."""
    clamped = check_k(k, n_docs)
    if clamped > MAX_TOPK:
        raise InvalidInputError(f"k must be at most {MAX_TOPK} (Milvus' largest search limit), got {k}")
    return clamped


def _sorted_hits(result: Sequence[Any], fields: list[str]) -> list[tuple]:
    """``(score, pk, doc_id or None)`` by descending score, ties by ascending pk (the local order)."""
    out = [(float(h["distance"]), int(h["pk"]), h["entity"].get("doc_id") if fields else None) for h in result]
    out.sort(key=lambda x: (-x[0], x[1]))
    return out


def _arrays(hits: list[list[tuple]], k: int) -> tuple[np.ndarray, np.ndarray]:
    scores = np.zeros((len(hits), k), np.float32)
    docs = np.full((len(hits), k), -1, np.int64)
    for i, row in enumerate(hits):
        for j, (s, pk, _) in enumerate(row[:k]):
            scores[i, j], docs[i, j] = s, pk
    return scores, docs


def _run(hits: list[list[tuple]], k: int, qids: Sequence[str] | None) -> dict[str, dict[str, float]]:
    """Hits (with their ``doc_id``) as a run: the pk -> id table is the one Milvus returned."""
    ids = {pk: doc_id for row in hits for _, pk, doc_id in row}
    return to_run(*_arrays(hits, k), ids, qids)  # type: ignore[arg-type]
