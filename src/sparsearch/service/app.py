"""The search service: FastAPI app factory over one or more index directories.

Endpoints (OpenAPI at ``/openapi.json``, interactive docs at ``/docs``):

* ``POST /search``: a query text (encoded by each index's own encoder) or a ready sparse vector
  ``{term: weight}``; ``k``; ``mode`` ``exact`` or ``approximate``; the indexes to search and,
  with several, their fusion (``rrf`` or score interpolation after ``minmax`` / ``zscore``
  normalisation) with per-index weights. Hits carry title, snippet, highlight spans and the
  per-term (per-latent) explanation.
* ``GET /documents/{id}``: a stored document.
* ``POST /explain``: the contributions of every matching term/latent to one document's score.
* ``GET /healthz``, ``GET /stats``.
* ``GET /``: the search page (``static/index.html``, no build step).

Milvus: collections written by :func:`sparsearch.milvus.export` are served with the same API
(:func:`milvus_backends`, ``sparsearch serve --backend milvus URI``): query text is encoded with
the encoder recorded in the collection and Milvus computes the top-k; a collection with dense
vectors is also served as ``NAME-dense``, so that a request searching both is fused like any two
indexes. Approximate mode and explanations are refused there with 400.

Robustness: request bodies are bounded (``Limits.max_body_bytes`` -> 413), every field is
validated by pydantic (-> 422 with the field and the reason), semantic errors (unknown index,
index without encoder, missing approximate index, unknown document) are 4xx with a message;
an unexpected exception is answered 500 with a message and counted in ``/stats``, and never
takes the process down.

Concurrency: searches and explanations run in a fixed pool of ``Limits.workers`` threads fed
by a FIFO queue (requests are served in arrival order, which keeps the latency tail short under
load); the other endpoints run in the server's thread pool. Each index is
served from an immutable *snapshot* (opened Index, its document store, its encoder); when the
index directory gets a new commit (``add_documents``/``delete_documents``/``merge`` from
another process) the next request after ``Limits.reload_interval_s`` opens the new state and
swaps the snapshot atomically: a request sees the old or the new state, never a mix.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..docstore import DocStore
from ..index.segment import IndexFormatError
from ..index.updates import open_index
from ..vectors import FormatError, SparseBatch

log = logging.getLogger("sparsearch.service")

STATIC = Path(__file__).parent / "static"

__all__ = ["create_app", "serve", "Limits", "ServiceError", "milvus_backends"]


@dataclass(frozen=True)
class Limits:
    """Bounds on requests (every one answered 4xx when exceeded)."""

    max_k: int = 1000
    max_query_chars: int = 1000
    max_vector_terms: int = 2048
    max_term_chars: int = 256
    max_body_bytes: int = 256 * 1024
    fusion_depth: int = 100          # per-index depth fused when several indexes are searched
    explain_hits: int = 50           # hits that carry an explanation and highlight spans
    explain_terms: int = 32          # contributions listed per hit
    snippet_words: int = 40
    reload_interval_s: float = 1.0   # how often an index directory is checked for a new commit
    workers: int = max(2, os.cpu_count() or 1)  # threads running searches (FIFO queue: fair under load)


MAX_K = Limits.max_k
MAX_QUERY_CHARS = Limits.max_query_chars
MAX_VECTOR_TERMS = Limits.max_vector_terms

Weight = Annotated[float, Field(ge=0, le=1e9, allow_inf_nan=False)]  # bounded: scores stay finite in float32
Term = Annotated[str, Field(min_length=1, max_length=Limits.max_term_chars)]
IndexName = Annotated[str, Field(min_length=1, max_length=200)]


class ServiceError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


class _QueryFields(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str | None = Field(None, max_length=Limits.max_query_chars,
                              description="Query text, encoded by each index's encoder.")
    vector: dict[Term, Weight] | None = Field(
        None, max_length=Limits.max_vector_terms,
        description="A ready query vector {term: weight} (weights finite, 0 to 1e9), matched to each index's "
                    "vocabulary by term string. Give exactly one of query and vector.")

    @model_validator(mode="after")
    def _one_query(self):
        if (self.query is None) == (self.vector is None):
            raise ValueError("give exactly one of 'query' (text) and 'vector' ({term: weight})")
        if self.query is not None and not self.query.strip():
            raise ValueError("'query' is empty")
        if self.vector is not None and not any(w > 0 for w in self.vector.values()):
            raise ValueError("'vector' has no positive weight")
        return self


class SearchRequest(_QueryFields):
    k: int = Field(10, ge=1, le=Limits.max_k, description="Number of hits.")
    mode: Literal["exact", "approximate"] = Field(
        "exact", description="exact (rank-safe block-max MaxScore) or approximate (the index's Seismic-style "
                             "approximate index; 400 if the index has none for its current commit).")
    indexes: list[IndexName] | None = Field(None, min_length=1, max_length=16,
                                            description="Index names to search (default: all served).")
    fusion: Literal["rrf", "minmax", "zscore"] = Field(
        "rrf", description="How hits of several indexes are fused: reciprocal rank fusion, or a weighted sum of "
                           "per-query min-max / z-score normalised scores.")
    weights: dict[IndexName, Weight] | None = Field(None, max_length=16,
                                                    description="Hybrid weight per index name (default 1 each).")
    rrf_k: float = Field(60.0, gt=0, le=10_000, allow_inf_nan=False)
    explain: bool = Field(True, description="Attach per-term contributions and highlight spans to the hits.")
    approx_query_cut: int = Field(10, ge=1, le=1000)
    approx_heap_factor: float = Field(0.9, gt=0, le=1, allow_inf_nan=False)


class ExplainRequest(_QueryFields):
    doc_id: str = Field(min_length=1, max_length=1000)
    index: IndexName | None = Field(None, description="Index name (optional when one index is served).")


class Contribution(BaseModel):
    term: str
    label: str | None = None
    query_weight: float
    doc_weight: float
    contribution: float


class HitScore(BaseModel):
    score: float
    rank: int


class Hit(BaseModel):
    rank: int
    id: str
    score: float
    title: str | None = None
    snippet: str | None = None
    title_highlights: list[tuple[int, int, float]] = []
    highlights: list[tuple[int, int, float]] = []
    scores: dict[str, HitScore] = {}
    explanation: dict[str, list[Contribution]] = {}


class SearchResponse(BaseModel):
    query: str | None
    k: int
    mode: str
    indexes: list[str]
    fusion: str | None
    took_ms: float
    hits: list[Hit]
    warnings: list[str] = []


class ExplainResponse(BaseModel):
    index: str
    doc_id: str
    score: float
    contributions: list[Contribution]
    query_terms: dict[str, float]
    unmatched_query_terms: list[str]


class Document(BaseModel):
    id: str
    title: str | None
    text: str | None
    index: str
    stored: bool


# ---------------------------------------------------------------------------------- snapshots
@dataclass
class Snapshot:
    """An immutable view of one index commit."""

    index: Any
    docstore: DocStore | None
    generation: int
    key: tuple
    encoder: Any = None
    approx: Any = None
    approx_error: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    encoder_lock: threading.Lock = field(default_factory=threading.Lock)


def _manifest_key(path: Path) -> tuple:
    st = os.stat(path / "manifest.json")
    return st.st_ino, st.st_mtime_ns, st.st_size


class ServedIndex:
    """One index directory; hands out the snapshot of its latest commit."""

    def __init__(self, name: str, path: Path, reload_interval_s: float) -> None:
        self.name, self.path, self.reload_interval_s = name, Path(path), reload_interval_s
        self._lock = threading.Lock()
        self._checked = time.monotonic()
        if not (self.path / "manifest.json").is_file():
            raise IndexFormatError(f"{self.path}: no such index directory (no manifest.json)")
        self._snap = self._open(None)

    def _open(self, old: Snapshot | None) -> Snapshot:
        for attempt in range(20):
            key = _manifest_key(self.path)
            index = open_index(self.path)
            try:
                store = DocStore(self.path / index.manifest["docstore"]) if index.manifest.get("docstore") else None
            except (OSError, sqlite3.Error):
                time.sleep(0.01 * (attempt + 1))  # removed by a commit that raced this open: reopen
                continue
            snap = Snapshot(index, store, int(index.manifest.get("generation", 0)), key)
            if old is not None and old.encoder is not None and \
                    old.index.manifest.get("encoder_state") == index.manifest.get("encoder_state") and \
                    old.index.manifest.get("encoder") == index.manifest.get("encoder"):
                snap.encoder = old.encoder
            return snap
        raise IndexFormatError(f"{self.path}: could not open a consistent state")

    def snapshot(self) -> Snapshot:
        now = time.monotonic()
        if now - self._checked < self.reload_interval_s:
            return self._snap
        with self._lock:
            if now - self._checked >= self.reload_interval_s:
                self._checked = now
                try:
                    if _manifest_key(self.path) != self._snap.key:
                        self._snap = self._open(self._snap)
                except Exception as e:  # keep serving the last good state
                    log.warning("index %s: reload failed, serving generation %s: %s", self.name,
                                self._snap.generation, e)
        return self._snap

    def warm(self) -> None:
        snap = self._snap
        try:
            if snap.index.encoder_config:
                self.encoder(snap)
            if snap.index.n_terms:
                q = SparseBatch.from_dicts([{snap.index.vocab.terms[0]: 1.0}])
                snap.index.search(q, 1, threads=1)
        except Exception as e:  # warming is an optimisation; errors surface on real requests
            log.warning("index %s: warm-up failed: %s", self.name, e)

    # -- per-snapshot lazies
    def encoder(self, snap: Snapshot):
        if snap.encoder is None:
            with snap.lock:
                if snap.encoder is None:
                    if not snap.index.encoder_config:
                        raise ServiceError(400, f"index {self.name!r} has no encoder to encode query text; "
                                                f"send a 'vector' instead")
                    try:
                        snap.encoder = snap.index.load_encoder()
                    except (ImportError, ValueError, OSError) as e:
                        raise ServiceError(400, f"index {self.name!r}: cannot load its encoder "
                                                f"({snap.index.encoder_config.get('name')}): {e}") from None
        return snap.encoder

    def encode_query(self, snap: Snapshot, text: str) -> SparseBatch:
        enc = self.encoder(snap)
        with snap.encoder_lock:
            return enc.encode_queries([text], ["q"])

    # -- what the routes ask of a served index (ServedMilvus answers the same for a collection)
    #: whether /explain and per-hit explanations (term contributions, highlights) are available
    explains = True
    kind = "a local index"

    def can_encode_text(self, snap: Snapshot) -> bool:
        return bool(snap.index.encoder_config)

    def query_vector(self, snap: Snapshot, req: _QueryFields) -> SparseBatch:
        """The request's query as a vector for this index: the given ``vector``, or the text encoded."""
        if req.vector is not None:
            try:
                return SparseBatch.from_dicts([req.vector], ids=["q"])
            except (FormatError, ValueError) as e:
                raise ServiceError(422, f"invalid request: vector: {e}") from None
        assert req.query is not None
        return self.encode_query(snap, req.query)

    def is_empty(self, qv: Any) -> bool:
        return qv.nnz == 0

    def search_run(self, snap: Snapshot, qv: SparseBatch, req: SearchRequest, depth: int) -> dict[str, float]:
        """Top-``depth`` ``{doc_id: score}`` for one query vector, in the request's mode."""
        if req.mode == "approximate":
            ax = self.approximate(snap)
            scores, docs = ax.search(qv, depth, query_cut=req.approx_query_cut,
                                     heap_factor=req.approx_heap_factor, threads=1)
        else:
            scores, docs = snap.index.search(qv, depth, threads=1)
        ids = snap.index.doc_ids
        return {ids[d]: float(s) for d, s in zip(docs[0].tolist(), scores[0].tolist()) if d >= 0}

    def texts(self, snap: Snapshot, doc_ids: Sequence[str]) -> dict[str, dict[str, str]]:
        """Stored ``{"id", "title", "text"}`` of the documents found (missing ones absent)."""
        return snap.docstore.get_many(doc_ids) if snap.docstore is not None else {}

    def document(self, snap: Snapshot, doc_id: str) -> "Document | None":
        """The live document ``doc_id`` (``stored=False`` without a document store), else None."""
        try:
            snap.index.docnum(doc_id)
        except KeyError:
            return None
        d = snap.docstore.get(doc_id) if snap.docstore is not None else None
        if d is not None:
            return Document(id=doc_id, title=d["title"], text=d["text"], index=self.name, stored=True)
        return Document(id=doc_id, title=None, text=None, index=self.name, stored=False)

    def health(self, snap: Snapshot) -> dict[str, Any]:
        return {"generation": snap.generation, "documents": snap.index.n_live_docs}

    def stats(self, snap: Snapshot) -> dict[str, Any]:
        st = snap.index.stats()
        st.update(path=str(self.path), generation=snap.generation,
                  stored_documents=len(snap.docstore) if snap.docstore is not None else 0,
                  approximate=snap.approx is not None)
        return st

    def approximate(self, snap: Snapshot):
        if snap.approx is None and snap.approx_error is None:
            with snap.lock:
                if snap.approx is None and snap.approx_error is None:
                    try:
                        from ..index.approximate import ApproximateIndex

                        if not ApproximateIndex.exists(snap.index):
                            raise IndexFormatError("no approximate index has been built")
                        snap.approx = ApproximateIndex.open(snap.index)
                    except ImportError as e:
                        snap.approx_error = f"approximate search is not available ({e})"
                    except (IndexFormatError, OSError, ValueError) as e:
                        snap.approx_error = str(e)
        if snap.approx is None:
            raise ServiceError(400, f"mode 'approximate' is not available for index {self.name!r}: "
                                    f"{snap.approx_error}. Build it (sparsearch.index.approximate."
                                    f"ApproximateIndex.build) for the current commit, or use mode 'exact'.")
        return snap.approx


# ------------------------------------------------------------------------------------ Milvus
class ServedMilvus(ServedIndex):
    """A collection exported by :func:`sparsearch.milvus.export`, served with the local API.

    Query text is encoded with the encoder recorded in the collection; Milvus computes the
    top-k. Exact search only: ``mode="approximate"`` and explanations are refused with 400
    (Milvus returns scores, not the per-term contributions they need). An export is a fixed
    snapshot of an index commit, so nothing is reloaded; after re-exporting into the same
    collection, restart the service.
    """

    explains = False
    kind = "Milvus"

    def __init__(self, name: str, backend: Any) -> None:
        self.name, self.backend, self.path = name, backend, f"{backend.uri}#{backend.collection}"
        self.reload_interval_s = float("inf")
        self._lock = threading.Lock()
        self._snap = Snapshot(backend, None, 0, ())

    def snapshot(self) -> Snapshot:
        return self._snap

    def warm(self) -> None:
        try:
            if self.can_encode_text(self._snap):
                self.encoder(self._snap)
            if self.backend.n_terms:
                self.backend.search(SparseBatch.from_dicts([{self.backend.vocab.terms[0]: 1.0}]), 1)
        except Exception as e:  # errors surface on real requests
            log.warning("index %s: warm-up failed: %s", self.name, e)

    def approximate(self, snap: Snapshot):
        raise ServiceError(400, f"mode 'approximate' is not available for index {self.name!r}: it is served from "
                                f"Milvus, which searches exactly (SPARSE_INVERTED_INDEX); use mode 'exact'")

    def _milvus(self, fn, *args: Any, **kwargs: Any):
        from ..milvus import MilvusBackendError

        try:
            return fn(*args, **kwargs)
        except MilvusBackendError as e:
            raise ServiceError(503, f"index {self.name!r}: {e}") from None

    def search_run(self, snap: Snapshot, qv: Any, req: SearchRequest, depth: int) -> dict[str, float]:
        if req.mode == "approximate":
            self.approximate(snap)
        return self._milvus(self.backend.search_run, qv, depth).get("q", {})

    def texts(self, snap: Snapshot, doc_ids: Sequence[str]) -> dict[str, dict[str, str]]:
        return self._milvus(self.backend.documents, doc_ids) if self.backend.has_text else {}

    def document(self, snap: Snapshot, doc_id: str) -> "Document | None":
        d = self._milvus(self.backend.documents, [doc_id]).get(doc_id)
        if d is None:
            return None
        return Document(id=doc_id, title=d.get("title"), text=d.get("text"), index=self.name,
                        stored=self.backend.has_text)

    def health(self, snap: Snapshot) -> dict[str, Any]:
        return {"backend": "milvus", "collection": self.backend.collection, "documents": self.backend.n_docs}

    def stats(self, snap: Snapshot) -> dict[str, Any]:
        return dict(self.backend.stats(), path=self.path, approximate=False)


class ServedMilvusDense(ServedMilvus):
    """The dense vectors of a Milvus collection, served as an index of their own (``NAME-dense``):
    query text is embedded with the dense model recorded at export; searching it together with
    ``NAME`` fuses the two like any two indexes (``fusion``, ``weights``)."""

    def __init__(self, name: str, backend: Any) -> None:
        super().__init__(name, backend)
        self._dense_lock = threading.Lock()

    def can_encode_text(self, snap: Snapshot) -> bool:
        return bool((self.backend.meta.get("dense") or {}).get("encoder"))

    def encoder(self, snap: Snapshot):
        if snap.encoder is None:
            with self._dense_lock:
                if snap.encoder is None:
                    try:
                        enc = self.backend.load_dense_encoder()
                    except (ImportError, ValueError, OSError) as e:
                        raise ServiceError(400, f"index {self.name!r}: cannot load its dense model: {e}") from None
                    enc.cache = False  # one cache file per query text would grow without bound
                    snap.encoder = enc
        return snap.encoder

    def query_vector(self, snap: Snapshot, req: _QueryFields) -> Any:
        if req.vector is not None:
            raise ServiceError(400, f"index {self.name!r} holds dense vectors: send a 'query' text, not a 'vector'")
        enc = self.encoder(snap)
        with snap.encoder_lock:
            return enc.encode_queries([req.query])

    def is_empty(self, qv: Any) -> bool:
        return False

    def warm(self) -> None:
        try:
            self.encoder(self._snap).encode_queries(["warm up"])  # the model loads on first use
        except Exception as e:
            log.warning("index %s: warm-up failed: %s", self.name, e)

    def search_run(self, snap: Snapshot, qv: Any, req: SearchRequest, depth: int) -> dict[str, float]:
        if req.mode == "approximate":
            self.approximate(snap)
        return self._milvus(self.backend.dense_search_run, qv, depth, ["q"]).get("q", {})


def milvus_backends(uri: str, collections: Sequence[str] | None = None, *, token: str | None = None,
                    dense: bool = True, timeout: float = 10.0) -> list[ServedIndex]:
    """Served indexes for the collections at ``uri`` (default: every collection sparsearch
    exported there): ``NAME`` for the sparse vectors and, when the collection holds dense
    vectors with a recorded model and ``dense`` is true, ``NAME-dense``."""
    from ..milvus import MilvusBackend, list_exported

    names = list(collections) if collections else list_exported(uri, token, timeout=timeout)
    if not names:
        raise ValueError(f"no sparsearch collection at {uri}; export one with: sparsearch export INDEX --milvus {uri}")
    out: list[ServedIndex] = []
    for n in names:
        b = MilvusBackend.open(uri, n, token=token, timeout=timeout)
        out.append(ServedMilvus(n, b))
        if dense and (b.meta.get("dense") or {}).get("encoder"):
            out.append(ServedMilvusDense(f"{n}-dense", b))
    return out


# ---------------------------------------------------------------------------- highlighting
_WORD = re.compile(r"\w+", re.UNICODE)


def _word_terms(encoder: Any, words: list[str]) -> list[list[str]]:
    """The index terms each word maps to (analyzer stems, wordpieces, or the lowercased word)."""
    try:
        analyzer = getattr(encoder, "analyzer", None)
        if analyzer is not None and hasattr(analyzer, "analyze_many"):
            return analyzer.analyze_many(words)
        tok = getattr(encoder, "tokenizer", None)
        if tok is not None and hasattr(tok, "tokenize"):
            return [tok.tokenize(w.lower()) + [w.lower()] for w in words]
    except Exception:  # highlighting is best effort
        pass
    return [[w.lower()] for w in words]


_CACHE_MAX = 200_000
_cache_lock = threading.Lock()
_caches: dict[int, tuple[Any, dict[str, tuple[str, ...]]]] = {}


def _term_cache(encoder: Any) -> dict[str, tuple[str, ...]]:
    key = id(encoder)
    with _cache_lock:
        entry = _caches.get(key)
        if entry is None or entry[0] is not encoder:
            if len(_caches) > 64:
                _caches.clear()
            entry = _caches[key] = (encoder, {})
    return entry[1]


def _weights(lows: list[str], encoders: Sequence[Any], term_weight: Sequence[dict[str, float]]) -> np.ndarray:
    """Matched weight of every (lowercased) word: the sum of the weights of the terms it maps to."""
    w = np.zeros(len(lows))
    if not lows:
        return w
    uniq = list(dict.fromkeys(lows))
    per_word = dict.fromkeys(uniq, 0.0)
    for enc, tw in zip(encoders, term_weight):
        if not tw:
            continue
        cache = _term_cache(enc)  # words repeat across documents and requests
        missing = [x for x in uniq if x not in cache]
        if missing:
            if len(cache) > _CACHE_MAX:
                cache.clear()
            for x, terms in zip(missing, _word_terms(enc, missing)):
                cache[x] = tuple(terms)
        for x in uniq:
            for t in cache.get(x, (x,)):
                v = tw.get(t)
                if v is not None:
                    per_word[x] += v
    if any(per_word.values()):
        w[:] = [per_word[x] for x in lows]
    return w


def _highlight(text: str, encoders, term_weight, scale: float, window: int | None):
    """``(snippet, spans)``: a window of ``window`` words with the largest matched weight."""
    text = text[:20000]
    low = text.lower()
    lows = _WORD.findall(low) if len(low) == len(text) else [x.lower() for x in _WORD.findall(text)]
    w = _weights(lows, encoders, term_weight)
    n = len(lows)
    first, last = 0, n
    if window is not None and n > window:
        cs = np.concatenate([[0.0], np.cumsum(w)])
        first = int(np.argmax(cs[window:] - cs[:n - window + 1]))
        last = first + window
    a, b, spans_abs = 0, len(text), []
    hit = np.flatnonzero(w[first:last] > 0) + first
    need = set(hit.tolist()) | {first, last - 1}
    for i, m in enumerate(_WORD.finditer(text)):
        if i >= last:
            break
        if i in need:
            if i == first and first > 0:
                a = m.start()
            if i == last - 1 and last < n:
                b = m.end()
            if w[i] > 0:
                spans_abs.append((m.start(), m.end(), round(float(min(w[i] / scale, 1.0)), 4)))
    prefix = "… " if a > 0 else ""
    snippet = prefix + text[a:b] + (" …" if b < len(text) else "")
    off = len(prefix) - a
    return snippet, [(s + off, e + off, x) for s, e, x in spans_abs if s >= a and e <= b]


def _label(encoder: Any, term: str) -> str | None:
    labels = getattr(encoder, "labels", None)
    if labels is None:
        return None
    try:
        return labels.label(term)
    except Exception:
        return None


# ------------------------------------------------------------------------------------- app
def _names(paths: Sequence[Path]) -> list[str]:
    names: list[str] = []
    for p in paths:
        base = p.resolve().name or "index"
        name, n = base, 2
        while name in names:
            name, n = f"{base}-{n}", n + 1
        names.append(name)
    return names


def create_app(index_dirs: Sequence[str | os.PathLike] | dict[str, str | os.PathLike] = (), *,
               limits: Limits | None = None, title: str = "sparsearch", warm: bool = True,
               backends: Sequence[ServedIndex] = ()) -> FastAPI:
    """A FastAPI app serving ``index_dirs`` (a list, named by directory name, or ``{name: dir}``).

    ``backends``: further served indexes, e.g. Milvus collections (:func:`milvus_backends`);
    they answer the same API, and are searched and fused alongside local indexes.
    ``warm``: load each index's encoder and run one search up front, so that the first request
    does not pay for loading the compiled kernels and the model.
    """
    limits = limits or Limits()
    if isinstance(index_dirs, dict):
        pairs = [(str(n), Path(p)) for n, p in index_dirs.items()]
    else:
        paths = [Path(p) for p in index_dirs]
        pairs = list(zip(_names(paths), paths))
    if not pairs and not backends:
        raise ValueError("serve at least one index directory")
    served: dict[str, ServedIndex] = {name: ServedIndex(name, path, limits.reload_interval_s) for name, path in pairs}
    for b in backends:
        if b.name in served:
            raise ValueError(f"two served indexes are named {b.name!r}")
        served[b.name] = b
    if warm:
        for h in served.values():
            h.warm()
    counters = {"requests": 0, "client_errors": 0, "server_errors": 0, "searches": 0}
    latencies: deque[float] = deque(maxlen=2000)
    started = time.time()
    count_lock = threading.Lock()

    pool = ThreadPoolExecutor(max_workers=limits.workers, thread_name_prefix="sparsearch-search")

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        yield
        pool.shutdown(wait=False, cancel_futures=True)

    async def in_pool(fn, *args):
        return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)

    app = FastAPI(title=title, version="1.0", lifespan=lifespan,
                  description="Sparse retrieval service: BM25 / SPLADE / CSR indexes, fusion, explanations.")
    app.state.served = served
    app.state.limits = limits

    # -------------------------------------------------------------- middleware & errors
    class BodyLimit:
        def __init__(self, inner):
            self.inner = inner

        async def __call__(self, scope, receive, send):
            if scope["type"] != "http":
                return await self.inner(scope, receive, send)
            with count_lock:
                counters["requests"] += 1
            headers = dict(scope.get("headers") or [])
            cl = headers.get(b"content-length")
            too_big = False
            if cl is not None:
                try:
                    too_big = int(cl) > limits.max_body_bytes
                except ValueError:
                    too_big = True
            if not too_big and scope.get("method") in ("POST", "PUT", "PATCH"):
                chunks, size, more = [], 0, True
                while more:
                    msg = await receive()
                    if msg["type"] == "http.disconnect":
                        return
                    body = msg.get("body", b"")
                    size += len(body)
                    if size > limits.max_body_bytes:
                        too_big = True
                        break
                    chunks.append(body)
                    more = msg.get("more_body", False)
                if not too_big:
                    data = b"".join(chunks)
                    done = False

                    async def replay():
                        nonlocal done
                        if not done:
                            done = True
                            return {"type": "http.request", "body": data, "more_body": False}
                        return await receive()

                    return await self.inner(scope, replay, send)
            if too_big:
                with count_lock:
                    counters["client_errors"] += 1
                resp = JSONResponse({"error": f"request body larger than {limits.max_body_bytes} bytes"},
                                    status_code=413)
                return await resp(scope, receive, send)
            return await self.inner(scope, receive, send)

    app.add_middleware(BodyLimit)

    def _err(status: int, message: str, **extra: Any) -> JSONResponse:
        with count_lock:
            counters["client_errors" if status < 500 else "server_errors"] += 1
        return JSONResponse({"error": message, **extra}, status_code=status)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        details = []
        for e in exc.errors()[:20]:
            loc = ".".join(str(x) for x in e.get("loc", ()) if x != "body") or "body"
            details.append({"field": loc, "message": str(e.get("msg", "invalid"))[:300], "type": e.get("type")})
        first = details[0] if details else {"field": "body", "message": "invalid request"}
        return _err(422, f"invalid request: {first['field']}: {first['message']}", details=details)

    @app.exception_handler(ServiceError)
    async def _service(request: Request, exc: ServiceError):
        return _err(exc.status, exc.message)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        return _err(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return _err(500, f"internal error: {type(exc).__name__}: {exc}"[:500])

    # ----------------------------------------------------------------------- helpers
    def pick(names: Sequence[str] | None) -> list[str]:
        if names is None:
            return list(served)
        out: list[str] = []
        for n in names:
            if n not in served:
                raise ServiceError(404, f"unknown index {n!r}; served: {', '.join(served)}")
            if n not in out:
                out.append(n)
        return out

    def check_limits(req: _QueryFields) -> None:
        """Limits configured below the schema's defaults (the schema holds the defaults)."""
        if req.query is not None and len(req.query) > limits.max_query_chars:
            raise ServiceError(422, f"invalid request: query: at most {limits.max_query_chars} characters")
        if req.vector is not None and len(req.vector) > limits.max_vector_terms:
            raise ServiceError(422, f"invalid request: vector: at most {limits.max_vector_terms} terms")
        k = getattr(req, "k", None)
        if k is not None and k > limits.max_k:
            raise ServiceError(422, f"invalid request: k: at most {limits.max_k}")

    def contributions(h: ServedIndex, snap: Snapshot, qv: SparseBatch, docnum: int, top: int | None):
        enc = snap.encoder
        out = []
        for c in snap.index.explain(qv, docnum)[:top]:
            out.append(Contribution(term=c.term, label=_label(enc, c.term) if enc is not None else None,
                                    query_weight=c.query_weight, doc_weight=c.doc_weight,
                                    contribution=c.contribution))
        return out

    def live_docnum(snap: Snapshot, doc_id: str) -> int | None:
        try:
            return snap.index.docnum(doc_id)
        except KeyError:
            return None

    # ------------------------------------------------------------------------ routes
    @app.get("/", include_in_schema=False)
    def page():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        """Liveness: the served indexes and their current commit."""
        out = {}
        for n, h in served.items():
            out[n] = h.health(h.snapshot())
        return {"status": "ok", "indexes": out}

    @app.get("/stats")
    def stats() -> dict[str, Any]:
        """Index sizes, encoders, commits, and the service's request counters and search latency."""
        idx = {}
        for n, h in served.items():
            idx[n] = h.stats(h.snapshot())
        lat = np.asarray(list(latencies)) * 1e3
        with count_lock:
            c = dict(counters)
        return {"indexes": idx, "service": {
            **c, "uptime_s": time.time() - started,
            "search_latency_ms": {"n": int(lat.size),
                                  "p50": float(np.percentile(lat, 50)) if lat.size else None,
                                  "p99": float(np.percentile(lat, 99)) if lat.size else None},
            "limits": limits.__dict__}}

    @app.get("/documents/{doc_id:path}", response_model=Document)
    def document(doc_id: Annotated[str, PathParam(max_length=1000)],
                 index: Annotated[str | None, Query(max_length=200)] = None) -> Document:
        """A stored document (live in the index), from the first served index holding it."""
        for n in pick([index] if index is not None else None):
            d = served[n].document(served[n].snapshot(), doc_id)
            if d is not None:
                return d
        raise ServiceError(404, f"unknown document id {doc_id!r}")

    @app.post("/explain", response_model=ExplainResponse)
    async def explain(req: ExplainRequest) -> ExplainResponse:
        """Per-term (per-latent) contributions to a document's score for a query."""
        return await in_pool(explain_sync, req)

    def explain_sync(req: ExplainRequest) -> ExplainResponse:
        check_limits(req)
        if req.index is None:
            if len(served) > 1:
                raise ServiceError(400, f"several indexes are served; name one in 'index' ({', '.join(served)})")
            name = next(iter(served))
        else:
            name = pick([req.index])[0]
        h = served[name]
        if not h.explains:
            raise ServiceError(400, f"index {name!r} is served from {h.kind}, which cannot explain scores; "
                                    f"explain against the local index directory")
        snap = h.snapshot()
        qv = h.query_vector(snap, req)
        dn = live_docnum(snap, req.doc_id)
        if dn is None:
            raise ServiceError(404, f"unknown document id {req.doc_id!r} in index {name!r}")
        cs = contributions(h, snap, qv, dn, None)
        _, terms, _ = snap.index.prepare_queries(qv)
        qdict = qv.row_dict(0)
        unmatched = [qv.vocab.terms[i] for i, tid in zip(qv.indices.tolist(), terms.tolist()) if tid < 0]
        return ExplainResponse(index=name, doc_id=req.doc_id, score=float(sum(c.contribution for c in cs)),
                               contributions=cs, query_terms=qdict, unmatched_query_terms=unmatched)

    @app.post("/search", response_model=SearchResponse)
    async def search(req: SearchRequest) -> SearchResponse:
        """Search one or several indexes (fused) with a query text or a sparse query vector."""
        # the model is built (and so validated) once; returning a Response skips a second validation
        resp = await in_pool(search_sync, req)
        return JSONResponse(resp.model_dump(mode="json"))

    def search_sync(req: SearchRequest) -> SearchResponse:
        check_limits(req)
        t0 = time.perf_counter()
        names = pick(req.indexes)
        weights = {n: 1.0 for n in names}
        if req.weights:
            for n, w in req.weights.items():
                if n not in names:
                    raise ServiceError(400, f"weight given for index {n!r}, which is not searched "
                                            f"(searched: {', '.join(names)})")
                weights[n] = float(w)
            if not any(w > 0 for w in weights.values()):
                raise ServiceError(400, "all index weights are 0")
            names = [n for n in names if weights[n] > 0]
        warnings: list[str] = []
        if req.indexes is None and req.query is not None:
            # searching "all": leave out indexes that cannot encode text (vector-only), and say so
            skip = [n for n in names if not served[n].can_encode_text(served[n].snapshot())]
            if len(skip) == len(names):
                raise ServiceError(400, "no served index has an encoder to encode query text; send a 'vector'")
            names = [n for n in names if n not in skip]
            warnings += [f"index {n!r} has no encoder and was not searched (send a 'vector' for it)" for n in skip]
        no_explain = [n for n in names if not served[n].explains]
        if no_explain and req.explain:
            if "explain" in req.model_fields_set:
                raise ServiceError(400, f"explain is not available for {', '.join(map(repr, no_explain))} (served "
                                        f"from {served[no_explain[0]].kind}); set 'explain' to false")
            warnings += [f"index {n!r}: no explanations (served from {served[n].kind})" for n in no_explain]
        depth = req.k if len(names) == 1 else min(max(req.k, limits.fusion_depth), limits.max_k)
        runs: dict[str, dict[str, float]] = {}
        ctx: dict[str, tuple[ServedIndex, Snapshot, SparseBatch]] = {}
        for n in names:
            h = served[n]
            snap = h.snapshot()
            qv = h.query_vector(snap, req)
            ctx[n] = (h, snap, qv)
            if h.is_empty(qv):
                warnings.append(f"index {n!r}: the query has no indexable terms")
                runs[n] = {}
                continue
            runs[n] = h.search_run(snap, qv, req, depth)
        per_rank = {n: {d: r for r, (d, _) in enumerate(sorted(run.items(), key=lambda x: (-x[1], x[0])), 1)}
                    for n, run in runs.items()}
        if len(names) == 1:
            fused = runs[names[0]]
            fusion_name = None
        else:
            from .. import fusion as fz

            wl = [weights[n] for n in names]
            rl = [{"q": runs[n]} for n in names]
            if req.fusion == "rrf":
                fused = fz.rrf(rl, k=req.rrf_k, weights=wl).get("q", {})
            else:
                tot = sum(wl)
                fused = fz.convex(rl, [w / tot for w in wl], norm=req.fusion).get("q", {})
            fusion_name = req.fusion
        top = sorted(fused.items(), key=lambda x: (-x[1], x[0]))[:req.k]
        hits: list[Hit] = []
        if top:
            docs_text: dict[str, dict[str, str]] = {}
            for n in names:
                missing = [d for d, _ in top if d not in docs_text]
                if missing:
                    docs_text.update(ctx[n][0].texts(ctx[n][1], missing))
            for rank, (d, s) in enumerate(top, 1):
                hit = Hit(rank=rank, id=d, score=float(s),
                          scores={n: HitScore(score=runs[n][d], rank=per_rank[n][d]) for n in names if d in runs[n]})
                doc = docs_text.get(d)
                expl: dict[str, list[Contribution]] = {}
                if req.explain and rank <= limits.explain_hits:
                    for n in names:
                        h, snap, qv = ctx[n]
                        if d in runs[n] and h.explains:
                            dn = live_docnum(snap, d)
                            if dn is not None:
                                expl[n] = contributions(h, snap, qv, dn, limits.explain_terms)
                    hit.explanation = expl
                if doc is not None:
                    hit.title = doc["title"]
                    if req.explain and rank <= limits.explain_hits:
                        encs = [ctx[n][1].encoder for n in expl]
                        tws: list[dict[str, float]] = []
                        for n in expl:
                            tw: dict[str, float] = {}
                            for c in expl[n]:
                                tw[c.term] = tw.get(c.term, 0.0) + c.contribution
                            tot = sum(tw.values()) or 1.0
                            tws.append({t: v / tot for t, v in tw.items()})
                        scale = sum(max(t.values()) for t in tws if t) or 1.0
                        hit.snippet, hit.highlights = _highlight(doc["text"], encs, tws, scale,
                                                                 limits.snippet_words)
                        _, hit.title_highlights = _highlight(doc["title"], encs, tws, scale, None)
                    else:
                        hit.snippet, _ = _highlight(doc["text"], [], [], 1.0, limits.snippet_words)
                hits.append(hit)
        took = time.perf_counter() - t0
        latencies.append(took)
        with count_lock:
            counters["searches"] += 1
        return SearchResponse(query=req.query, k=req.k, mode=req.mode, indexes=names, fusion=fusion_name,
                              took_ms=round(took * 1e3, 3), hits=hits, warnings=warnings)

    return app


def serve(index_dirs: Sequence[str | os.PathLike], host: str = "127.0.0.1", port: int = 8000, *,
          limits: Limits | None = None, log_level: str = "info", backends: Sequence[ServedIndex] = ()) -> None:
    """Run the service with uvicorn (blocking); ``backends`` as for :func:`create_app`."""
    import uvicorn

    app = create_app(index_dirs, limits=limits, backends=backends)
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False)

