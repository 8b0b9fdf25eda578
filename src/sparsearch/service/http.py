"""The HTTP face of :class:`~sparsearch.service.backend.SearchService` (FastAPI).

Endpoints (OpenAPI at ``/openapi.json``, interactive docs at ``/docs``):

* ``POST /search``: a query text (encoded by each index's own encoder) or a ready sparse vector
  ``{term: weight}``; ``k``; ``mode`` ``exact``, ``approximate`` (``query_cut`` /
  ``heap_factor`` / ``candidates`` / ``forward_cut`` / ``rerank``, the last at most
  ``Limits.max_candidates``; default: the settings
  saved next to the index by ``sparsearch tune --save``)
  or ``anytime`` (``max_postings`` / ``budget_ms``, the latter at most ``Limits.max_budget_ms``);
  the indexes to search and, with several, their fusion (``rrf`` or score interpolation after
  ``minmax`` / ``zscore`` normalisation) with per-index weights. Hits carry title and snippet,
  and with ``explain: true`` (only when asked: left out, it is false) highlight spans and the
  per-term (per-latent) explanation. A hybrid index (several
  representations, e.g. BM25 + dense) fuses its representations with its default fusion, which
  ``hybrid`` overrides (``fusion``, ``weights`` by representation name, ``depth``, ``rrf_k``); its
  hits say their rank and score in each representation (``representations``), and ``timings``
  gives each representation's search time and the fusion's.
* ``GET /documents/{id}``: a stored document.
* ``POST /explain``: the contributions of every matching term/latent to one document's score.
* ``POST /documents`` (a batch of ``{id, title?, text}`` encoded with the index's encoder, or of
  ``{id, vector, title?, text?}``) and ``DELETE /documents/{id}``: one commit each, served at once.
* ``GET /healthz``, ``GET /stats``.
* ``GET /``: the search page (``static/index.html``, no build step); ``GET /docs``: the API
  reference (``static/docs.html``, rendered from ``/openapi.json``, no CDN).

Access (:class:`~sparsearch.service.guard.Access`, checked by the :class:`Guard` middleware before
anything else): the ``Host`` header must name an allowed host (400 otherwise: DNS rebinding);
each client address has a token bucket (``Limits.rate_limit_per_s`` / ``rate_limit_burst``; 429
with ``Retry-After``); writes and any other non-read route need ``Authorization: Bearer TOKEN``
(401), and are disabled (403) when the service has no token; with ``token_for_reads`` the read
routes need it too (``/``, ``/docs``, ``/openapi.json`` and ``/healthz`` stay open).

Robustness: request bodies are bounded (``Limits.max_body_bytes`` -> 413); the request schema is
built from the app's :class:`Limits`, so every bound is checked by pydantic (-> 422 with the field
and the reason) and published in the OpenAPI spec. Errors raised by the service are mapped to a
status by their class in one handler (:data:`STATUS`); an unexpected exception is answered 500
with a message and counted in ``/stats``, and never takes the process down.

Concurrency: searches and explanations run in a fixed pool of ``Limits.workers`` threads fed by a
FIFO queue (requests are served in arrival order, which keeps the latency tail short under load),
at most ``Limits.max_concurrent_searches`` queued or running (429 past it). A cheap search
(:meth:`SearchService.cheap`: no explanation, local indexes whose query needs no neural model)
runs on the event loop's thread instead, counted in flight the same way: handing a 0.5 ms search
to a pool thread made the two threads take turns at the GIL, and the server-side time of such a
search rose to 2-3 ms under load (``Limits.inline_cheap_searches=False`` turns this off). Writes
run one at a time in their own thread (at most ``Limits.max_pending_writes`` waiting); the other
endpoints run in the server's thread pool.

Worker processes: :func:`serve` with ``workers=N`` runs N uvicorn processes on the port, each
listening on a socket of its own (``SO_REUSEPORT``: the kernel spreads connections over them) and
built by :func:`app_from_environment` from the configuration ``serve`` puts in
:data:`CONFIG_ENV` (JSON) and opening the indexes itself (memory-mapped: the page cache is shared).
A write through one worker commits under the index's writer lock (``flock``: exclusive across
processes) and is served by that worker at once, by the others from their next manifest check
(``Limits.reload_interval_s``). Rate limits and caps on work in flight are per worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import inspect
import json
import logging
import os
import socket
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, Any, Literal

import orjson
from fastapi import FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import (BackendError, ConflictError, CorruptIndexError, InvalidInputError, NotFoundError,
                      SparsearchError, StorageError, UnsupportedError)
from ..filters import MAX_FILTER_CHARS
from .backend import (Document, Explanation, Limits, SearchResult, SearchService, ServedIndex, WriteResult,
                      milvus_backends)
from .guard import WILDCARD_BINDS, Access, Gate, RateLimiter

log = logging.getLogger("sparsearch.service")

STATIC = Path(__file__).parent / "static"

__all__ = ["create_app", "serve", "app_from_environment", "app_from_config", "serve_config", "CONFIG_ENV",
           "request_models", "write_model", "STATUS", "BodyLimit", "Guard", "Access"]

#: HTTP status of each error class, first match wins (anything else: 500)
STATUS: tuple[tuple[type[Exception], int], ...] = (
    (BackendError, 503),        # Milvus failed or is unreachable (before NotFoundError: a dropped collection)
    (CorruptIndexError, 503),   # the index on disk is damaged: the server's problem, not the request's
    (StorageError, 503),        # the filesystem refused a write (read-only, permission, disk full)
    (NotFoundError, 404),
    (ConflictError, 409),
    (UnsupportedError, 400),    # a mode or explanation an index cannot give
    (InvalidInputError, 400),   # a request valid by the schema that cannot be answered as asked
)


# ----------------------------------------------------------------------------- request models
class _QueryFields(BaseModel):
    """``query`` xor ``vector`` (the bounds are set per app by :func:`request_models`)."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="after")
    def _one_query(self):
        if (self.query is None) == (self.vector is None):
            raise ValueError("give exactly one of 'query' (text) and 'vector' ({term: weight})")
        if self.query is not None and not self.query.strip():
            raise ValueError("'query' is empty")
        if self.vector is not None and not any(w > 0 for w in self.vector.values()):
            raise ValueError("'vector' has no positive weight")
        return self


@functools.lru_cache(maxsize=16)
def request_models(limits: Limits) -> tuple[type[BaseModel], type[BaseModel]]:
    """``(SearchRequest, ExplainRequest)`` with every bound taken from ``limits``: the one place
    requests are validated, and what the OpenAPI spec publishes."""
    weight = Annotated[float, Field(ge=0, le=1e9, allow_inf_nan=False)]  # bounded: scores stay finite in float32
    term = Annotated[str, Field(min_length=1, max_length=limits.max_term_chars)]
    index_name = Annotated[str, Field(min_length=1, max_length=200)]

    class Q(_QueryFields):
        query: str | None = Field(None, max_length=limits.max_query_chars,
                                  description="Query text, encoded by each index's encoder.")
        vector: dict[term, weight] | None = Field(
            None, max_length=limits.max_vector_terms,
            description="A ready query vector {term: weight} (weights finite, 0 to 1e9), matched to each index's "
                        "vocabulary by term string. Give exactly one of query and vector.")

    class HybridFusion(BaseModel):
        """Overrides of a hybrid index's fusion of its representations (each optional: the index's
        default, saved by ``sparsearch tune-fusion``, otherwise)."""

        model_config = ConfigDict(extra="forbid")
        fusion: Literal["rrf", "minmax", "zscore"] | None = Field(
            None, description="Reciprocal rank fusion, or a weighted sum of per-query min-max / z-score normalised "
                              "scores of the representations.")
        weights: dict[index_name, weight] | None = Field(
            None, max_length=limits.max_indexes,
            description="Weight per representation name (a representation not named keeps its default weight).")
        depth: int | None = Field(None, ge=1, le=limits.max_hybrid_depth,
                                  description="Documents each representation returns before fusion.")
        rrf_k: float | None = Field(None, ge=0, le=10_000, allow_inf_nan=False, description="The RRF rank constant.")

    class SearchRequest(Q):
        k: int = Field(min(10, limits.max_k), ge=1, le=limits.max_k, description="Number of hits.")
        mode: Literal["exact", "approximate", "anytime"] = Field(
            "exact", description="exact (rank-safe block-max MaxScore), approximate (the index's Seismic-style "
                                 "approximate index; 400 if the index has none for its current commit) or anytime "
                                 "(impact-ordered postings scored best first until max_postings / budget_ms).")
        indexes: list[index_name] | None = Field(None, min_length=1, max_length=limits.max_indexes,
                                                 description="Index names to search (default: all served).")
        fusion: Literal["rrf", "minmax", "zscore"] = Field(
            "rrf", description="How hits of several indexes are fused: reciprocal rank fusion, or a weighted sum "
                               "of per-query min-max / z-score normalised scores.")
        weights: dict[index_name, weight] | None = Field(None, max_length=limits.max_indexes,
                                                         description="Hybrid weight per index name (default 1 each).")
        rrf_k: float = Field(60.0, gt=0, le=10_000, allow_inf_nan=False)
        explain: bool | None = Field(False, description=(
            "true: attach per-term contributions and highlight spans to the first hits (400 if a searched index "
            "cannot explain); false or left out: none (titles and leading snippets; the fastest search); null: "
            "where the index can explain (a warning for those that cannot)."))
        query_cut: int | None = Field(None, ge=1, le=limits.max_query_cut, description=(
            "approximate mode: visit the posting lists of this many heaviest query terms (default: the index's "
            "saved settings, else 10)."))
        heap_factor: float | None = Field(None, gt=0, le=1, allow_inf_nan=False, description=(
            "approximate mode: skip blocks whose bound is below heap_factor times the k-th score (default: the "
            "index's saved settings, else 0.9)."))
        candidates: int | None = Field(None, ge=0, le=limits.max_candidates, description=(
            "approximate mode: 0, Seismic's block scan; N >= 1, score exactly the N best documents by their "
            "partial scores over the query_cut heaviest terms' lists (default: the index's saved settings, else 0, "
            "or 100 on an approximate index built without summaries)."))
        forward_cut: int | None = Field(None, ge=0, le=1 << 16, description=(
            "approximate mode, Seismic's block scan: score each document on its N heaviest entries, then the "
            "rerank best on their whole vectors (default: the index's saved settings, else 0 = whole vectors)."))
        rerank: int | None = Field(None, ge=1, le=limits.max_candidates, description=(
            "approximate mode with forward_cut: documents scored on their whole vectors at the end (default: the "
            "index's saved settings, else 200)."))
        max_postings: int | None = Field(None, ge=1, le=10**12, description=(
            "anytime mode: stop after this many postings (default: no limit)."))
        budget_ms: float | None = Field(None, gt=0, le=limits.max_budget_ms, allow_inf_nan=False, description=(
            "anytime mode: stop scoring after this many milliseconds (default: no limit)."))
        hybrid: HybridFusion | None = Field(None, description=(
            "Hybrid indexes: how their representations are fused (default: each index's saved or default fusion)."))
        filter: str | None = Field(None, min_length=1, max_length=MAX_FILTER_CHARS, description=(
            'Search only the documents this expression selects, e.g. year >= 2015 and source in ["pubmed", "pmc"] '
            "(metadata fields, has(\"term\"), latent(J) > t, concept(\"word\"); 400 with the column of a syntax "
            "error, or naming an unknown field)."))

    class ExplainRequest(Q):
        doc_id: str = Field(min_length=1, max_length=1000)
        index: index_name | None = Field(None, description="Index name (optional when one index is served).")

    return SearchRequest, ExplainRequest


class _NewDocumentFields(BaseModel):
    """One document to add: ``text`` (encoded by the index's encoder) or a ``vector``."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="after")
    def _text_or_vector(self):
        if self.vector is None and not (self.text or "").strip():
            raise ValueError("give the document's 'text' (or a ready 'vector' {term: weight})")
        if self.vector is not None and not any(w > 0 for w in self.vector.values()):
            raise ValueError("'vector' has no positive weight")
        return self


@functools.lru_cache(maxsize=16)
def write_model(limits: Limits) -> type[BaseModel]:
    """The body of ``POST /documents``, bounded by ``limits`` (batch size, text length, vector terms)."""
    weight = Annotated[float, Field(ge=0, le=1e9, allow_inf_nan=False)]
    term = Annotated[str, Field(min_length=1, max_length=limits.max_term_chars)]

    class NewDocument(_NewDocumentFields):
        id: str = Field(min_length=1, max_length=1000)
        title: str | None = Field(None, max_length=limits.max_document_chars)
        text: str | None = Field(None, max_length=limits.max_document_chars,
                                 description="Encoded with the index's encoder (and stored), unless a vector is given.")
        vector: dict[term, weight] | None = Field(None, max_length=limits.max_document_terms,
                                                  description="A ready document vector {term: weight}.")

    class AddDocumentsRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        documents: list[NewDocument] = Field(min_length=1, max_length=limits.max_batch_documents, description=(
            "Documents to add in one commit: all with 'text' or all with 'vector'."))
        index: Annotated[str, Field(min_length=1, max_length=200)] | None = Field(
            None, description="Index name (optional when one index is served).")
        replace: bool = Field(False, description="Replace documents whose id is already live (else 409).")

    return AddDocumentsRequest


# --------------------------------------------------------------------------------- counters
class Counters:
    """Request counters shown in ``/stats`` (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.values = {"requests": 0, "client_errors": 0, "server_errors": 0, "refused_host": 0,
                       "rate_limited": 0, "unauthorized": 0, "busy": 0}

    def add(self, name: str) -> None:
        with self._lock:
            self.values[name] += 1

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.values)


def _error(counters: Counters, status: int, message: str, headers: Mapping[str, str] | None = None,
           **extra: Any) -> JSONResponse:
    counters.add("client_errors" if status < 500 else "server_errors")
    return JSONResponse({"error": message, **extra}, status_code=status, headers=dict(headers or {}))


def busy(what: str, cap: int) -> StarletteHTTPException:
    """The 429 answered when ``cap`` operations of a kind are already in flight."""
    return StarletteHTTPException(429, f"the service is busy: {cap} {what} in progress; retry shortly",
                                  headers={"Retry-After": "1"})


# ------------------------------------------------------------------------------ middleware
#: routes that need no token even with ``token_for_reads`` (and ``/healthz`` is never rate limited)
PUBLIC_PATHS = frozenset({"/", "/docs", "/openapi.json", "/healthz"})
#: POST routes that only read; every other route that is not GET/HEAD writes (or administers)
READ_POSTS = frozenset({"/search", "/explain"})


def route_kind(method: str, path: str) -> str:
    """``"public"``, ``"read"`` or ``"write"`` (writes and admin actions: anything else)."""
    if method in ("GET", "HEAD"):
        return "public" if path in PUBLIC_PATHS else "read"
    return "read" if method == "POST" and path in READ_POSTS else "write"


class Guard:
    """ASGI middleware, outermost: counts requests, then refuses a ``Host`` the service does not
    answer to (400), a client over its rate (429 with ``Retry-After``), and a request without the
    token its route needs (403 when writes are disabled, 401 otherwise), before any body is read."""

    def __init__(self, app: Any, access: Access, limiter: RateLimiter | None, counters: Counters) -> None:
        self.app, self.access, self.limiter, self.counters = app, access, limiter, counters

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        self.counters.add("requests")
        refusal = self.refusal(scope)
        if refusal is None:
            return await self.app(scope, receive, send)
        counter, status, message, headers = refusal
        self.counters.add(counter)
        return await _error(self.counters, status, message, headers)(scope, receive, send)

    def refusal(self, scope) -> tuple[str, int, str, dict[str, str]] | None:
        """``(counter, status, message, headers)`` for a request to refuse, else None."""
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers") or []}
        if not self.access.host_allowed(headers.get("host")):
            return ("refused_host", 400, f"host {headers.get('host', '')[:100]!r} is not served here; start the service "
                    f"with --allowed-host NAME to answer to another host name", {})
        path = scope.get("path", "")
        if self.limiter is not None and path != "/healthz":
            client = (scope.get("client") or ("unknown",))[0]
            wait = self.limiter.take(str(client))
            if wait > 0:
                return ("rate_limited", 429, f"too many requests: at most {self.limiter.rate:g} a second per client "
                        f"(bursts of {self.limiter.burst:g}); retry later", {"Retry-After": RateLimiter.retry_after(wait)})
        kind = route_kind(scope.get("method", "GET"), path)
        if kind == "write" and self.access.token is None:
            return ("unauthorized", 403, "writes are disabled: start the service with a token (--token TOKEN or "
                    "SPARSEARCH_TOKEN=TOKEN) and send it as 'Authorization: Bearer TOKEN'", {})
        if (kind == "write" or (kind == "read" and self.access.token_for_reads)) and \
                not self.access.token_ok(headers.get("authorization")):
            return ("unauthorized", 401, f"this {'write' if kind == 'write' else 'request'} needs the service's "
                    f"token: send 'Authorization: Bearer TOKEN'", {"WWW-Authenticate": 'Bearer realm="sparsearch"'})
        return None


class BodyLimit:
    """ASGI middleware: answers 413 to a body over ``max_bytes`` (``larger[path]`` for the POST
    routes listed there) by its Content-Length, or while reading it, before the app parses anything."""

    def __init__(self, app: Any, max_bytes: int, counters: Counters, larger: Mapping[str, int] | None = None) -> None:
        self.app, self.max_bytes, self.counters, self.larger = app, max_bytes, counters, dict(larger or {})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.larger.get(scope.get("path", ""), self.max_bytes) if scope.get("method") == "POST" \
            else self.max_bytes
        too_big = _declared_too_big(dict(scope.get("headers") or []).get(b"content-length"), limit)
        if not too_big and scope.get("method") in ("POST", "PUT", "PATCH"):
            body = await self._read(receive, limit)
            if body is None:
                return None  # the client went away
            if body is not False:
                return await self.app(scope, _replay(body, receive), send)
            too_big = True
        if too_big:
            resp = _error(self.counters, 413, f"request body larger than {limit} bytes")
            return await resp(scope, receive, send)
        return await self.app(scope, receive, send)

    @staticmethod
    async def _read(receive, limit: int) -> bytes | bool | None:
        """The whole body; False when it grows past ``limit``, None on disconnect."""
        chunks, size, more = [], 0, True
        while more:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return None
            chunk = msg.get("body", b"")
            size += len(chunk)
            if size > limit:
                return False
            chunks.append(chunk)
            more = msg.get("more_body", False)
        return b"".join(chunks)


def _declared_too_big(content_length: bytes | None, max_bytes: int) -> bool:
    if content_length is None:
        return False
    try:
        return int(content_length) > max_bytes
    except ValueError:
        return True


def _replay(body: bytes, receive):
    """A ``receive`` that hands out ``body`` once, then defers to the real one."""
    sent = False

    async def replay():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


# --------------------------------------------------------------------------------- errors
def _validation_error(counters: Counters, exc: RequestValidationError) -> JSONResponse:
    details = []
    for e in exc.errors()[:20]:
        loc = ".".join(str(x) for x in e.get("loc", ()) if x != "body") or "body"
        details.append({"field": loc, "message": str(e.get("msg", "invalid"))[:300], "type": e.get("type")})
    first = details[0] if details else {"field": "body", "message": "invalid request"}
    return _error(counters, 422, f"invalid request: {first['field']}: {first['message']}", details=details)


async def handle_error(request: Request, exc: Exception) -> JSONResponse:
    """The one exception handler: schema violations 422, framework errors their own status,
    the service's errors by class (:data:`STATUS`), anything else 500 (logged)."""
    counters: Counters = request.app.state.counters
    if isinstance(exc, RequestValidationError):
        return _validation_error(counters, exc)
    if isinstance(exc, StarletteHTTPException):
        if exc.status_code == 429:
            counters.add("busy")
        return _error(counters, exc.status_code, str(exc.detail), exc.headers)
    redact = request.app.state.service.redact  # clients see index names, not server paths
    for cls, status in STATUS:
        if isinstance(exc, cls):
            return _error(counters, status, redact(str(exc)))
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return _error(counters, 500, redact(f"internal error: {type(exc).__name__}: {exc}")[:500])


# --------------------------------------------------------------------------------- routes
async def _gated(pool: ThreadPoolExecutor, gate: Gate, what: str, fn: Callable[..., Any]) -> Any:
    """Run ``fn`` in ``pool`` if ``gate`` lets one more in (429 otherwise); the slot is held until
    ``fn`` returns, even when the client has gone away meanwhile."""
    if not gate.enter():
        raise busy(what, gate.cap)
    try:
        fut = pool.submit(fn)
    except BaseException:
        gate.leave()
        raise
    fut.add_done_callback(lambda _: gate.leave())
    return await asyncio.wrap_future(fut)


async def _in_pool(request: Request, fn: Callable[..., Any]) -> Any:
    """Run ``fn`` in the app's search pool (FIFO), at most ``Limits.max_concurrent_searches`` at once."""
    state = request.app.state
    return await _gated(state.pool, state.search_gate, "searches", fn)


async def _in_writer(request: Request, fn: Callable[..., Any]) -> Any:
    """Run ``fn`` in the app's writer thread (one write at a time), at most
    ``Limits.max_pending_writes`` waiting or running."""
    state = request.app.state
    return await _gated(state.writer, state.write_gate, "writes", fn)


def page() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type="text/html")


def docs_page() -> FileResponse:
    """The API reference, rendered in the browser from ``/openapi.json`` (no external asset)."""
    return FileResponse(STATIC / "docs.html", media_type="text/html")


def healthz(request: Request) -> dict[str, Any]:
    """Liveness: the served indexes and their current commit."""
    return request.app.state.service.health()


def stats(request: Request) -> dict[str, Any]:
    """Index sizes, encoders, commits, and the service's request counters and search latency."""
    out = request.app.state.service.stats()
    # pid: which worker process answered (`serve --workers N`: each has its own counters and latencies)
    out["service"] = {**request.app.state.counters.snapshot(), **out["service"], "pid": os.getpid()}
    return out


def document(request: Request, doc_id: Annotated[str, PathParam(max_length=1000)],
             index: Annotated[str | None, Query(max_length=200)] = None) -> Document:
    """A stored document (live in the index), from the first served index holding it."""
    return request.app.state.service.document(doc_id, index)


def _inline(gate: Gate, what: str, fn: Callable[..., Any]) -> Any:
    """Run ``fn`` here, on the event loop's thread, if ``gate`` lets one more in (429 otherwise):
    it counts as in flight while it runs, like a search in the pool."""
    if not gate.enter():
        raise busy(what, gate.cap)
    try:
        return fn()
    finally:
        gate.leave()


async def search(req: BaseModel, request: Request) -> JSONResponse:
    """Search one or several indexes (fused) with a query text or a sparse query vector."""
    args = req.model_dump()  # explain left out: False (the model's default), no explanations
    state = request.app.state
    run = functools.partial(state.service.search, **args)
    if state.limits.inline_cheap_searches and state.service.cheap(**args):
        # about a millisecond (SearchService.cheap): handing it to a pool thread costs more than
        # that under load, the loop's thread and the pool's taking turns at the GIL
        result = _inline(state.search_gate, "searches", run)
    else:
        result = await _in_pool(request, run)
    # built (and validated) once by the service; a Response skips FastAPI's second validation, and
    # orjson writes the dataclasses directly (dataclasses.asdict + json.dumps took ~0.2 ms a result)
    return Response(orjson.dumps(result), media_type="application/json")


async def explain(req: BaseModel, request: Request) -> Explanation:
    """Per-term (per-latent) contributions to a document's score for a query."""
    return await _in_pool(request, functools.partial(request.app.state.service.explain, **req.model_dump()))


async def add_documents(req: BaseModel, request: Request) -> WriteResult:
    """Add a batch of documents to an index in one commit (needs the service's token): texts are
    encoded with the index's encoder; vectors are added as given. The new commit is served at once."""
    docs = [d.model_dump() for d in req.documents]
    return await _in_writer(request, functools.partial(request.app.state.service.add_documents, docs,
                                                       req.index, req.replace))


async def delete_document(request: Request, doc_id: Annotated[str, PathParam(max_length=1000)],
                          index: Annotated[str | None, Query(max_length=200)] = None) -> WriteResult:
    """Delete a live document from an index in one commit (needs the service's token)."""
    return await _in_writer(request, functools.partial(request.app.state.service.delete_document, doc_id, index))


def _with_body(endpoint: Callable[..., Any], model: type[BaseModel]) -> Callable[..., Any]:
    """``endpoint`` with its ``req`` parameter annotated ``model``: FastAPI reads the body schema
    from the signature, and the schema depends on the app's :class:`Limits`."""

    @functools.wraps(endpoint)
    async def bound(*args: Any, **kwargs: Any) -> Any:
        return await endpoint(*args, **kwargs)

    sig = inspect.signature(endpoint)
    bound.__signature__ = sig.replace(parameters=[  # type: ignore[attr-defined]
        p.replace(annotation=model) if p.name == "req" else p for p in sig.parameters.values()])
    return bound


def _add_routes(app: FastAPI, limits: Limits) -> None:
    search_model, explain_model = request_models(limits)
    app.add_api_route("/", page, methods=["GET"], include_in_schema=False)
    app.add_api_route("/docs", docs_page, methods=["GET"], include_in_schema=False)
    app.add_api_route("/healthz", healthz, methods=["GET"])
    app.add_api_route("/stats", stats, methods=["GET"])
    app.add_api_route("/documents/{doc_id:path}", document, methods=["GET"], response_model=Document)
    app.add_api_route("/explain", _with_body(explain, explain_model), methods=["POST"], response_model=Explanation)
    app.add_api_route("/search", _with_body(search, search_model), methods=["POST"], response_model=SearchResult)
    write = {"openapi_extra": {"security": [{"bearer": []}]}, "response_model": WriteResult}
    app.add_api_route("/documents", _with_body(add_documents, write_model(limits)), methods=["POST"], **write)
    app.add_api_route("/documents/{doc_id:path}", delete_document, methods=["DELETE"], **write)


# ------------------------------------------------------------------------------------ app
@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI):
    yield
    app.state.pool.shutdown(wait=False, cancel_futures=True)
    app.state.writer.shutdown(wait=True)  # a commit in progress completes


def _openapi(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """The app's OpenAPI spec with the bearer scheme the write routes name."""

    def spec() -> dict[str, Any]:
        if app.openapi_schema is None:
            out = FastAPI.openapi(app)
            out.setdefault("components", {})["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
            app.openapi_schema = out
        return app.openapi_schema

    return spec


def create_app(index_dirs: Sequence[str | os.PathLike] | Mapping[str, str | os.PathLike] = (), *,
               limits: Limits | None = None, title: str = "sparsearch", warm: bool = True,
               backends: Sequence[ServedIndex] = (), access: Access | None = None) -> FastAPI:
    """A FastAPI app serving ``index_dirs`` (a list, named by directory name, or ``{name: dir}``).

    ``backends``: further served indexes, e.g. Milvus collections (:func:`milvus_backends`);
    they answer the same API, and are searched and fused alongside local indexes.
    ``warm``: load each index's encoder and run one search up front, so that the first request
    does not pay for loading the compiled kernels and the model. ``access``: token and allowed
    hosts (default: no token, so no writes; loopback host names only).
    """
    limits, access = limits or Limits(), access or Access()
    service = SearchService.open(index_dirs, limits=limits, backends=backends, warm=warm)
    app = FastAPI(title=title, version="1.0", lifespan=_lifespan, docs_url=None, redoc_url=None,
                  description="Sparse retrieval service: BM25 / SPLADE / CSR indexes, fusion, explanations.")
    app.openapi = _openapi(app)  # type: ignore[method-assign]
    app.state.service, app.state.limits, app.state.counters = service, limits, Counters()
    app.state.served, app.state.access = service.served, access
    app.state.pool = ThreadPoolExecutor(max_workers=limits.workers, thread_name_prefix="sparsearch-search")
    app.state.writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sparsearch-write")
    app.state.search_gate, app.state.write_gate = Gate(limits.max_concurrent_searches), Gate(limits.max_pending_writes)
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes, counters=app.state.counters,
                       larger={"/documents": limits.max_write_body_bytes})
    limiter = RateLimiter(limits.rate_limit_per_s, limits.rate_limit_burst) if limits.rate_limit_per_s > 0 else None
    app.add_middleware(Guard, access=access, limiter=limiter, counters=app.state.counters)  # added last: runs first
    # SparsearchError separately: Starlette re-raises what only the catch-all ``Exception`` handler answered
    for cls in (RequestValidationError, StarletteHTTPException, SparsearchError, Exception):
        app.add_exception_handler(cls, handle_error)
    _add_routes(app, limits)
    return app


#: the environment variable through which :func:`serve` hands its configuration (JSON, the
#: token included) to its worker processes; a worker reads it once and removes it
CONFIG_ENV = "SPARSEARCH_SERVE_CONFIG"
#: the app factory each worker process imports (uvicorn needs an import string for workers)
APP_FACTORY = "sparsearch.service.http:app_from_environment"
#: uvicorn's exit status of a worker that failed before serving (its supervisor then stops)
STARTUP_FAILURE = 3


def serve_config(index_dirs: Sequence[str | os.PathLike] | Mapping[str, str | os.PathLike] = (), *,
                 limits: Limits | None = None, access: Access | None = None,
                 milvus: Mapping[str, Any] | None = None) -> str:
    """The JSON :func:`app_from_config` builds an app from: the index directories (a list, or
    ``{name: dir}``), ``limits``, ``access`` (token included: keep the text out of logs) and
    the Milvus source ``{"uri", "collections"?, "token"?}`` (:func:`milvus_backends`)."""
    a = access or Access()
    dirs: Any = ({str(n): os.fspath(d) for n, d in index_dirs.items()} if isinstance(index_dirs, Mapping)
                 else [os.fspath(d) for d in index_dirs])
    return json.dumps({"index_dirs": dirs, "limits": dataclasses.asdict(limits or Limits()),
                       "access": {"token": a.token, "token_for_reads": a.token_for_reads,
                                  "allowed_hosts": list(a.allowed_hosts)},
                       "milvus": dict(milvus) if milvus else None})


def app_from_config(text: str, *, warm: bool = True) -> FastAPI:
    """The app :func:`serve_config`'s JSON ``text`` describes (bad JSON or settings: one
    :class:`InvalidInputError` line that does not repeat the text, which holds the token)."""
    try:
        cfg = json.loads(text)
        dirs, given, milvus = cfg["index_dirs"], dict(cfg["access"]), cfg.get("milvus")
        limits = Limits(**cfg["limits"])
        access = Access(token=given["token"], token_for_reads=bool(given["token_for_reads"]),
                        allowed_hosts=tuple(given["allowed_hosts"]))
    except (ValueError, TypeError, KeyError) as e:
        if isinstance(e, SparsearchError):
            raise
        raise InvalidInputError(f"the service configuration in ${CONFIG_ENV} is not valid ({type(e).__name__}); "
                                f"start the service with `sparsearch serve`") from None
    backends = milvus_backends(milvus["uri"], milvus.get("collections"), token=milvus.get("token")) if milvus else ()
    return create_app(dirs, limits=limits, backends=backends, access=access, warm=warm)


def app_from_environment() -> FastAPI:
    """The app of one worker process of ``serve(..., workers=N)`` (uvicorn's ``factory``): built
    from :data:`CONFIG_ENV`, which it removes from the environment (child processes of the worker
    do not inherit the token). A configuration or index it cannot serve is logged on one line and
    ends the worker with uvicorn's startup-failure status, which stops the whole service."""
    text = os.environ.pop(CONFIG_ENV, None)
    try:
        if text is None:
            raise InvalidInputError(f"no service configuration in ${CONFIG_ENV}; start the service with "
                                    f"`sparsearch serve ... --workers N`")
        return app_from_config(text)
    except Exception as e:  # it would fail alike on every restart: stop the service instead
        why = str(e) if isinstance(e, SparsearchError) else f"{type(e).__name__}: {e}"
        log.error("worker %d cannot start: %s", os.getpid(), " ".join(why.split()))
        sys.exit(STARTUP_FAILURE)


def _check_dirs(index_dirs: Sequence[str | os.PathLike] | Mapping[str, str | os.PathLike]) -> None:
    """Refuse a directory that is no index before any worker starts (each would fail alike)."""
    for d in (index_dirs.values() if isinstance(index_dirs, Mapping) else index_dirs):
        if not (Path(d) / "manifest.json").is_file():
            raise NotFoundError(f"{d}: no such index directory (no manifest.json)")


def serve(index_dirs: Sequence[str | os.PathLike] | Mapping[str, str | os.PathLike] = (), host: str = "127.0.0.1",
          port: int = 8000, *,
          limits: Limits | None = None, log_level: str = "info", backends: Sequence[ServedIndex] = (),
          access: Access | None = None, workers: int = 1, milvus: Mapping[str, Any] | None = None) -> None:
    """Run the service with uvicorn (blocking); ``index_dirs``, ``backends`` and ``access`` as for
    :func:`create_app` (the bound ``host`` is an allowed host name too); ``milvus``: collections
    to serve too, ``{"uri", "collections"?, "token"?}`` (:func:`milvus_backends`).

    ``workers``: processes sharing the port, each opening the indexes itself (memory-mapped, so
    the page cache is shared) from the configuration in :data:`CONFIG_ENV` (``backends`` must then
    be given as ``milvus``: opened backends cannot be handed to another process). Limits that
    count (rate limit, searches and writes in flight) apply per worker. A write through one worker
    is served by the others from their next manifest check (``Limits.reload_interval_s``).
    """
    import uvicorn  # the 'service' extra

    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise InvalidInputError(f"workers must be a whole number >= 1, got {workers!r}")
    access = (access or Access()).with_host(host)
    if host in WILDCARD_BINDS and "*" not in access.allowed_hosts:
        log.warning("listening on all interfaces: requests are answered only for the host names %s; add "
                    "--allowed-host NAME for each name clients use", ", ".join(access.allowed_hosts))
    limits = limits or Limits()
    common = {"host": host, "port": port, "log_level": log_level, "access_log": False,
              "timeout_keep_alive": limits.keep_alive_s}
    if workers == 1:
        if milvus:
            backends = [*backends, *milvus_backends(milvus["uri"], milvus.get("collections"),
                                                    token=milvus.get("token"))]
        uvicorn.run(create_app(index_dirs, limits=limits, backends=backends, access=access), **common)
        return
    if backends:
        raise InvalidInputError("with several workers each process opens its own backends: give the Milvus "
                                "collections as milvus={'uri', 'collections', 'token'}, not opened backends")
    _check_dirs(index_dirs)
    _run_workers(serve_config(index_dirs, limits=limits, access=access, milvus=milvus), workers, common)


def _listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``(host, port)`` with ``SO_REUSEPORT``: every worker binds its own,
    and the kernel spreads new connections over the listening ones by a hash of each connection."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise StorageError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    return sock


def _worker_main(options: dict[str, Any]) -> None:
    """One worker process: its own ``SO_REUSEPORT`` socket, the app from :data:`CONFIG_ENV`."""
    import uvicorn

    sock = _listening_socket(options["host"], options["port"])
    uvicorn.Server(uvicorn.Config(APP_FACTORY, factory=True, **options)).run(sockets=[sock])


def _run_workers(config: str, workers: int, options: Mapping[str, Any]) -> None:
    """Run ``workers`` processes of :data:`APP_FACTORY` on one port until SIGINT / SIGTERM.

    Each worker listens on a socket of its own bound with ``SO_REUSEPORT`` (not one socket shared
    by all, as uvicorn's own workers do: there the first process to wake accepts a whole burst,
    and 32 keep-alive clients connecting at once went nearly all to one of two workers). The
    parent keeps the port bound (not listening: it takes no connection) so that a busy port fails
    at once, starts a new worker when one dies, and stops them all, with a
    :class:`SparsearchError`, when one could not start (:data:`STARTUP_FAILURE`, logged by it).
    """
    import multiprocessing
    import signal

    import uvicorn

    uvicorn.Config(APP_FACTORY, factory=True, **options)  # sets up uvicorn's loggers: the parent logs as the workers do
    ulog = logging.getLogger("uvicorn.error")
    ctx = multiprocessing.get_context("spawn")  # a fresh interpreter: no thread or lock of ours inherited
    held = _listening_socket(options["host"], options["port"])
    stop, failed = threading.Event(), False
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    os.environ[CONFIG_ENV] = config  # spawned workers inherit it (a replacement too); never logged

    def start() -> Any:
        p = ctx.Process(target=_worker_main, args=(dict(options),), name="sparsearch-worker")
        p.start()
        return p

    procs: list[Any] = []
    try:
        for _ in range(workers):
            procs.append(start())
        ulog.info("Started parent process [%d]: %d worker processes on %s:%d (%s)", os.getpid(), workers,
                  options["host"], options["port"], ", ".join(str(p.pid) for p in procs))
        while not stop.wait(0.5):
            for i, p in enumerate(procs):
                if p.is_alive():
                    continue
                if p.exitcode == STARTUP_FAILURE:
                    failed = True
                    stop.set()
                    break
                ulog.warning("worker %d exited (status %s); starting another", p.pid, p.exitcode)
                procs[i] = start()
    finally:
        os.environ.pop(CONFIG_ENV, None)
        for p in procs:
            if p.is_alive():
                p.terminate()  # SIGTERM: uvicorn finishes the requests in flight
        for p in procs:
            p.join(timeout=max(options.get("timeout_graceful_shutdown") or 0, 10))
            if p.is_alive():
                p.kill()
                p.join()
        held.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if failed:
        raise SparsearchError("the service's worker processes could not start (the reason is logged above)")
