"""The search service without HTTP: served indexes, their snapshots, and :class:`SearchService`.

``SearchService`` answers what the HTTP routes ask (``service.http`` only translates requests,
responses and errors): :meth:`~SearchService.search` (one or several indexes, fused),
:meth:`~SearchService.explain`, :meth:`~SearchService.document`, :meth:`~SearchService.health`
and :meth:`~SearchService.stats`. Results are plain dataclasses; errors are
:mod:`sparsearch.errors` classes (``NotFoundError`` for an unknown index or document,
``InvalidInputError`` for a request that cannot be answered as asked, ``UnsupportedError`` for a
mode or an explanation an index cannot give, ``BackendError`` when Milvus fails).

Served indexes:

* :class:`ServedIndex`: a local index directory, served from an immutable :class:`Snapshot`
  (opened Index, document store, encoder, approximate index) of its latest commit. When the
  directory gets a new commit (``add_documents``/``delete_documents``/``merge`` from another
  process), the first request after ``Limits.reload_interval_s`` opens the new state and swaps
  the snapshot atomically: a request sees the old or the new state, never a mix.
* :class:`ServedHybrid`: a hybrid index directory (:class:`~sparsearch.index.hybrid.HybridIndex`:
  several representations of one collection, one document store), served from snapshots the same
  way. A query text is encoded for every representation; the search runs each one to the fusion
  depth and fuses them with the index's default fusion (saved by ``sparsearch tune-fusion``, else
  :data:`~sparsearch.index.hybrid.DEFAULT_FUSION`), which a request may override (``hybrid``:
  fusion, weights by representation name, depth, rrf_k). Every hit says where it stood in each
  representation (``representations``: rank and score, ``None`` past the depth); explanations and
  highlights come from the first sparse representation. Read-only (no writes through the service).
* :class:`ServedMilvus` / :class:`ServedMilvusDense`: a collection written by
  :func:`sparsearch.milvus.export` (sparse vectors as ``NAME``, dense ones as ``NAME-dense``);
  see :func:`milvus_backends`. Exact search only, no explanations. :class:`ServedMilvusHybrid`:
  a hybrid index exported to Milvus (one field per representation), served as the local one.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sqlite3
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from ..docstore import DocStore, SegmentedDocStore, open_docstore
from ..errors import (BackendError, CorruptIndexError, InvalidInputError, NotFoundError, SparsearchError,
                      UnsupportedError)
from ..evaluation import to_run
from ..filters import parse as parse_filter
from ..fusion import METHODS as FUSIONS
from ..fusion import fuse, ranked
from ..highlight import highlight_hit, label
from ..index.approximate import ApproximateIndex
from ..index import Index
from ..index import updates
from ..index.dense import DenseIndex
from ..index.hybrid import FUSION_FILE, HybridIndex, HybridQueries, is_hybrid, open_searcher
from ..milvus import MilvusBackend, MilvusHybridBackend, list_exported
from ..searching import MAX_K, ApproxParams, ExactParams, HybridParams, SearchParams, check_k, params_for_mode
from ..vectors import SparseBatch

log = logging.getLogger("sparsearch.service")

__all__ = ["Limits", "SearchService", "SearchResult", "WriteResult", "Hit", "HitScore", "Contribution", "Explanation", "Document",
           "Snapshot", "ServedIndex", "ServedHybrid", "ServedMilvus", "ServedMilvusDense", "ServedMilvusHybrid", "milvus_backends", "FUSIONS",
           "RepresentationRank", "Timing", "HybridUsed", "HybridOptions", "hybrid_params", "served_index"]

@dataclass(frozen=True)
class Limits:
    """Bounds on requests (the HTTP schema is built from them: exceeding one is a 4xx) and the
    service's sizes. Lengths in characters, sizes in bytes, times in seconds."""

    max_k: int = 1000
    max_query_chars: int = 1000
    max_vector_terms: int = 2048
    max_term_chars: int = 256
    max_body_bytes: int = 256 * 1024
    max_indexes: int = 16            # indexes named in one request (and weights given)
    max_query_cut: int = 1000        # approximate mode's query_cut
    max_candidates: int = 100_000    # approximate mode's candidates and rerank (documents scored exactly per query)
    max_budget_ms: float = 1000.0    # anytime mode's budget_ms
    fusion_depth: int = 100          # per-index depth fused when several indexes are searched
    max_hybrid_depth: int = 1000     # documents a hybrid index's representation returns before fusion
    explain_hits: int = 50           # hits that carry an explanation and highlight spans
    explain_terms: int = 32          # contributions listed per hit
    snippet_words: int = 40
    reload_interval_s: float = 1.0   # how often an index directory is checked for a new commit
    workers: int = max(2, os.cpu_count() or 1)  # threads running searches (FIFO queue: fair under load)
    max_concurrent_searches: int = 64  # searches/explanations queued or running; past it 429 (0: no cap)
    rate_limit_per_s: float = 50.0   # requests a second per client address, token bucket (0: no limit)
    rate_limit_burst: int = 100      # requests a client may send at once (the bucket's size)
    max_batch_documents: int = 1000  # documents in one POST /documents
    max_document_chars: int = 100_000  # a document's text (and title)
    max_document_terms: int = 10_000  # terms of a document vector
    max_write_body_bytes: int = 8 * 2 ** 20  # body of POST /documents
    max_pending_writes: int = 4      # writes queued or running (one at a time); past it 429
    keep_alive_s: int = 15           # idle keep-alive connections are closed after this (above the
                                     # 5 s clients such as httpx keep them: no close/reuse race)
    inline_cheap_searches: bool = True  # run a cheap search (SearchService.cheap) on the event loop's
                                     # thread: no pool hop, no GIL hand-off between loop and pool thread


# ------------------------------------------------------------------------------------ results
@dataclass
class Contribution:
    """One term's (latent's) share of a score: ``contribution = query_weight * doc_weight``."""

    term: str
    label: str | None
    query_weight: float
    doc_weight: float
    contribution: float


@dataclass
class HitScore:
    """A hit's score and rank (from 1) in one searched index."""

    score: float
    rank: int


@dataclass
class RepresentationRank:
    """Where a hit stood in one representation of a hybrid index: its rank (from 1) and score in
    that representation's own list, both ``None`` when the representation did not return it
    within the fusion depth."""

    rank: int | None
    score: float | None


@dataclass
class Timing:
    """Time one searched index took, in milliseconds: encoding the query text, searching
    (for a hybrid index: every representation and the fusion), and for a hybrid index each
    representation's search and the fusion on their own."""

    encode_ms: float
    search_ms: float
    representations_ms: dict[str, float] = field(default_factory=dict)
    fusion_ms: float | None = None


@dataclass
class HybridUsed:
    """The fusion a hybrid index was searched with: ``weights`` by representation name (``None``:
    equal), ``depth`` documents taken from each representation."""

    fusion: str
    weights: dict[str, float] | None
    rrf_k: float
    depth: int
    representations: list[str]


@dataclass
class Hit:
    """A search hit. Highlight spans are ``(start, end, weight in (0, 1])`` character offsets
    into ``snippet`` / ``title``; ``scores`` and ``explanation`` are keyed by index name.
    ``representations``: for a hit of a hybrid index, its rank and score in each of the index's
    representations (named ``INDEX/REPRESENTATION`` when several indexes were searched)."""

    rank: int
    id: str
    score: float
    title: str | None = None
    snippet: str | None = None
    title_highlights: list[tuple[int, int, float]] = field(default_factory=list)
    highlights: list[tuple[int, int, float]] = field(default_factory=list)
    scores: dict[str, HitScore] = field(default_factory=dict)
    explanation: dict[str, list[Contribution]] = field(default_factory=dict)
    representations: dict[str, RepresentationRank] = field(default_factory=dict)


@dataclass
class SearchResult:
    """The answer to :meth:`SearchService.search` (``fusion`` is None when one index was searched;
    ``hybrid``: the fusion each searched hybrid index used; ``timings``: per searched index)."""

    query: str | None
    k: int
    mode: str
    indexes: list[str]
    fusion: str | None
    took_ms: float
    hits: list[Hit]
    warnings: list[str] = field(default_factory=list)
    hybrid: dict[str, HybridUsed] = field(default_factory=dict)
    timings: dict[str, Timing] = field(default_factory=dict)


@dataclass
class Explanation:
    """Every matching term's contribution to one document's score for a query."""

    index: str
    doc_id: str
    score: float
    contributions: list[Contribution]
    query_terms: dict[str, float]
    unmatched_query_terms: list[str]


@dataclass
class Document:
    """A live document (``stored=False``: the index keeps no text for it)."""

    id: str
    title: str | None
    text: str | None
    index: str
    stored: bool


@dataclass
class WriteResult:
    """The answer to a write: the index written, what changed and the commit now served."""

    index: str
    added: int
    deleted: int
    generation: int
    documents: int


# ---------------------------------------------------------------------------------- snapshots
@dataclass
class Snapshot:
    """An immutable view of one index commit, with its lazily loaded encoder and approximate index."""

    index: Any
    docstore: DocStore | SegmentedDocStore | None
    generation: int
    key: tuple
    encoder: Any = None
    approx: ApproximateIndex | None = None
    approx_error: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    encoder_lock: threading.Lock = field(default_factory=threading.Lock)
    #: encoded query texts, most recent last (at most QUERY_CACHE): a repeated query is not
    #: encoded again; per snapshot, so a reload (maybe another encoder) starts afresh
    queries: OrderedDict = field(default_factory=OrderedDict)

    def encoded(self, text: str, encode: Callable[[], Any]) -> Any:
        """The query vector of ``text``: cached, or ``encode()``d (under the encoder lock: the
        encoders are not thread-safe) and kept. The cached vectors are never modified."""
        with self.encoder_lock:
            qv = self.queries.get(text)
            if qv is not None:
                self.queries.move_to_end(text)
                return qv
            qv = self.queries[text] = encode()
            if len(self.queries) > QUERY_CACHE:
                self.queries.popitem(last=False)
            return qv


#: encoded query texts kept per served index snapshot
QUERY_CACHE = 1024


#: longest pause before a manifest that failed to open is tried again while it stays the same
FAILED_RETRY_MAX_S = 10.0


@dataclass(frozen=True)
class ReloadFailure:
    """Why a served index's latest commit could not be opened (its last good snapshot is served)."""

    reason: str           # the error, with the index directory written as the index name
    key: tuple            # the manifest (inode, mtime, size) that failed, or why it could not be read
    since: float          # wall-clock time of the first failure
    attempts: int
    retry_at: float       # monotonic time before which the same manifest is not tried again


def redact_paths(text: str, paths: Mapping[str, str]) -> str:
    """``text`` with each directory of ``paths`` (``{directory: name}``) written as its name
    (longest first), so that messages shown to clients name no server path."""
    for p in sorted(paths, key=len, reverse=True):
        if p and p not in (".", "/"):
            text = text.replace(p, paths[p])
    return text


def hide_paths(value: Any) -> Any:
    """``value`` (JSON-like) with every absolute filesystem path replaced by its last component."""
    if isinstance(value, str):
        return Path(value).name if len(value) > 1 and (value[0] == "/" or value[:1] == "~") else value
    if isinstance(value, Mapping):
        return {k: hide_paths(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [hide_paths(v) for v in value]
    return value


def _manifest_key(path: Path) -> tuple:
    st = os.stat(path / "manifest.json")
    return st.st_ino, st.st_mtime_ns, st.st_size


def _file_key(path: Path) -> tuple:
    """``(inode, mtime, size)`` of an optional file, ``()`` when it does not exist."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return ()
    return st.st_ino, st.st_mtime_ns, st.st_size


#: query encoders that need no neural model: BM25 (analyzer + statistics) and the inference-free
#: query side of splade-doc (tokenizer + IDF table); a query is encoded in microseconds
MODEL_FREE_QUERY_ENCODERS = frozenset({"bm25", "splade-doc"})


def _model_free(config: Mapping[str, Any] | None) -> bool:
    """Whether an index's recorded encoder encodes query text without a neural model (an index
    without an encoder takes vectors only: nothing to encode)."""
    return not config or config.get("name") in MODEL_FREE_QUERY_ENCODERS


def _query_batch(vector: Mapping[str, float]) -> SparseBatch:
    try:
        return SparseBatch.from_dicts([dict(vector)], ids=["q"])
    except ValueError as e:
        raise InvalidInputError(f"invalid request: vector: {e}") from None


class ServedIndex:
    """One local index directory; hands out the snapshot of its latest commit and answers, per
    snapshot, what :class:`SearchService` asks of a served index (the Milvus kinds answer the same)."""

    #: whether per-term explanations (and so highlight spans) are available
    explains = True
    #: whether documents can be added and deleted through the service
    writable = True
    #: whether this is a hybrid index (takes a request's ``hybrid`` fusion settings)
    hybrid = False
    #: whether a request's ``filter`` (sparsearch.filters) can be applied here
    filters = True
    kind = "a local index"
    #: the searcher class :func:`~sparsearch.index.hybrid.open_searcher` must return for this directory
    index_class: type = Index

    def __init__(self, name: str, path: str | os.PathLike, reload_interval_s: float = 1.0) -> None:
        self.name, self.path, self.reload_interval_s = name, Path(path), reload_interval_s
        self._lock = threading.Lock()
        self._checked = time.monotonic()
        #: why the latest commit could not be opened (None: the snapshot is the latest commit)
        self.failure: ReloadFailure | None = None
        if not (self.path / "manifest.json").is_file():
            raise NotFoundError(f"{self.path}: no such index directory (no manifest.json)")
        self._snap = self._open(None)

    def _open(self, old: Snapshot | None) -> Snapshot:
        try:
            return self._open_once(old)
        except (OSError, sqlite3.Error, CorruptIndexError):
            # a commit removed the document store of the state just opened: the next state is whole
            time.sleep(0.01)
            return self._open_once(old)

    def _key(self) -> tuple:
        """What identifies the served state on disk: the manifest's (inode, mtime, size)."""
        return _manifest_key(self.path)

    #: manifest fields that, unchanged, let a new snapshot keep the loaded query encoder
    ENCODER_FIELDS: tuple[str, ...] = ("encoder", "encoder_state")

    def _open_once(self, old: Snapshot | None) -> Snapshot:
        key = self._key()
        index = open_searcher(self.path)  # follows a commit racing the open
        if not isinstance(index, self.index_class):
            raise InvalidInputError(f"{self.path} now holds {_kind_of(index)}, not {self.kind}; restart the "
                                    f"service to serve it")
        store = open_docstore(self.path, index.manifest)  # the segments' stores, read as one
        snap = Snapshot(index, store, int(index.manifest.get("generation", 0)), key)
        if old is not None and old.encoder is not None and all(
                old.index.manifest.get(f) == index.manifest.get(f) for f in self.ENCODER_FIELDS):
            snap.encoder = old.encoder
        return snap

    def snapshot(self) -> Snapshot:
        """The latest commit's snapshot, checked at most every ``reload_interval_s`` by one
        request while the others keep the current one (never blocks on a reload)."""
        if not self.reload_due() or not self._lock.acquire(blocking=False):
            return self._snap
        try:
            if self.reload_due():
                self._reload()
                self._checked = time.monotonic()  # the interval counts from the end of the check
        finally:
            self._lock.release()
        return self._snap

    def refresh(self) -> Snapshot:
        """Open the latest commit now (after a write made through the service)."""
        with self._lock:
            self._reload(force=True)
            self._checked = time.monotonic()
        return self._snap

    def _reload(self, force: bool = False) -> None:
        """Swap in the latest commit if the manifest changed; on failure keep the last good
        snapshot, record why (``failure``: health and stats report it) and log it once. A
        manifest that failed is retried after a growing pause while it stays the same (up to
        ``FAILED_RETRY_MAX_S``), and at the next check once it changes."""
        try:
            key = self._key()
        except OSError as e:  # no manifest: opening fails below, and is retried like any failure
            key = ("unreadable", type(e).__name__)
        try:
            if key == self._snap.key:
                self._recovered()
                return
            f = self.failure
            if f is not None and f.key == key and not force and time.monotonic() < f.retry_at:
                return
            self._snap = self._open(self._snap)
            self._recovered()
        except Exception as e:  # keep serving the last good state
            self._failed(key, e)

    def _failed(self, key: tuple, e: Exception) -> None:
        reason = redact_paths(f"{type(e).__name__}: {e}" if not isinstance(e, SparsearchError) else str(e),
                              {str(self.path): self.name, str(self.path.resolve()): self.name})
        f = self.failure
        same = f is not None and f.key == key
        pause = min(max(self.reload_interval_s, 0.05) * 2 ** (f.attempts if same else 0), FAILED_RETRY_MAX_S)
        if f is None or f.reason != reason:
            log.error("index %s: cannot open its latest commit, still serving generation %s: %s",
                      self.name, self._snap.generation, reason)
        self.failure = ReloadFailure(reason=reason, key=key, since=f.since if f is not None else time.time(),
                                     attempts=(f.attempts + 1) if same else 1, retry_at=time.monotonic() + pause)

    def _recovered(self) -> None:
        if self.failure is not None:
            log.warning("index %s: recovered, serving generation %s", self.name, self._snap.generation)
            self.failure = None

    @property
    def current(self) -> Snapshot:
        """The snapshot served now, without checking for a new commit."""
        return self._snap

    # -- cost
    def reload_due(self) -> bool:
        """Whether the next :meth:`snapshot` checks the directory for a new commit (and may open
        it: every file of a new commit is verified, which is not sub-millisecond work)."""
        return time.monotonic() - self._checked >= self.reload_interval_s

    @property
    def cheap_queries(self) -> bool:
        """Whether query text is encoded here without a neural model (BM25, the IDF query side
        of splade-doc, or no encoder at all: vectors only); a local index searched in-process."""
        return _model_free(self._snap.index.encoder_config)

    def cheap(self, text: bool, mode: str) -> bool:
        """Whether a search here, now, is sure to be cheap (about a millisecond, nothing to load
        or open): a query vector, or ``text`` encoded by a :attr:`cheap_queries` encoder that is
        already loaded; no reload due; in approximate mode, the approximate index already open."""
        snap = self._snap
        if self.reload_due() or (mode == "approximate" and snap.approx is None):
            return False
        if mode == "anytime" and getattr(snap.index, "_impact_ordered", None) is None:  # built on first use
            return False
        return not text or (self.cheap_queries and snap.encoder is not None)

    def warm(self) -> None:
        """Load the encoder and run one search, so that the first request does not pay for them."""
        snap = self._snap
        try:
            if self.can_encode_text(snap):
                self.encoder(snap)
            if snap.index.n_terms:
                self.search_run(snap, _query_batch({snap.index.vocab.terms[0]: 1.0}), 1, ExactParams(threads=1))
        except Exception as e:  # warming is an optimisation; errors surface on real requests
            log.warning("index %s: warm-up failed: %s", self.name, e)

    # -- encoding
    def can_encode_text(self, snap: Snapshot) -> bool:
        return bool(snap.index.encoder_config)

    def _load_encoder(self, snap: Snapshot) -> Any:
        if not self.can_encode_text(snap):
            raise InvalidInputError(f"index {self.name!r} has no encoder to encode query text; send a 'vector' instead")
        try:
            return snap.index.load_encoder()
        except (ImportError, ValueError, OSError, SparsearchError) as e:
            raise UnsupportedError(f"index {self.name!r}: cannot load its encoder "
                                   f"({(snap.index.encoder_config or {}).get('name')}): {e}") from None

    def encoder(self, snap: Snapshot) -> Any:
        """The snapshot's query encoder, loaded once."""
        if snap.encoder is None:
            with snap.lock:
                if snap.encoder is None:
                    snap.encoder = self._load_encoder(snap)
        return snap.encoder

    def query_vector(self, snap: Snapshot, query: str | None, vector: Mapping[str, float] | None) -> Any:
        """The query for this index: ``vector`` as given, or the ``query`` text encoded."""
        if vector is not None:
            return _query_batch(vector)
        enc = self.encoder(snap)
        return snap.encoded(query, lambda: enc.encode_queries([query], ["q"]))

    def is_empty(self, qv: Any) -> bool:
        return qv.nnz == 0

    def accepts_vector(self, snap: Snapshot) -> bool:
        """Whether a ready sparse query vector can be searched here (else only query text)."""
        return True

    # -- searching
    def _open_approximate(self, snap: Snapshot) -> ApproximateIndex:
        return ApproximateIndex.open(snap.index)

    def approximate(self, snap: Snapshot) -> ApproximateIndex:
        """The snapshot's approximate index, opened once (never built here). Its absence is not
        remembered (one built while serving is found); a stale or corrupt one is, per snapshot."""
        if snap.approx is None and snap.approx_error is None:
            with snap.lock:
                if snap.approx is None and snap.approx_error is None:
                    try:
                        snap.approx = self._open_approximate(snap)
                    except NotFoundError as e:
                        self._no_approximate(str(e))
                    except (CorruptIndexError, InvalidInputError) as e:
                        snap.approx_error = str(e)
        if snap.approx is None:
            self._no_approximate(snap.approx_error)
        return snap.approx

    def _no_approximate(self, why: str | None) -> NoReturn:
        raise UnsupportedError(f"mode 'approximate' is not available for index {self.name!r}: {why}; "
                               f"or use mode 'exact'")

    def search_params(self, snap: Snapshot, mode: str, query_cut: int | None, heap_factor: float | None,
                      hybrid: "HybridOptions | None" = None, **budgets: Any) -> SearchParams:
        """Parameters of one single-threaded search in ``mode`` (:data:`~sparsearch.searching.SEARCH_MODES`);
        approximate knobs not given come from the settings saved next to the index
        (``sparsearch tune --save``), else the defaults; ``budgets``: anytime mode's
        ``max_postings`` / ``budget_ms``, approximate mode's ``candidates`` / ``forward_cut`` / ``rerank``.
        ``hybrid`` applies to hybrid indexes only."""
        saved = self.approximate(snap).default_params if mode == "approximate" else None
        return params_for_mode(mode, threads=1, query_cut=query_cut, heap_factor=heap_factor, saved=saved, **budgets)

    def search_run(self, snap: Snapshot, qv: Any, depth: int, params: SearchParams) -> dict[str, float]:
        """Top-``depth`` ``{doc_id: score}`` of one query vector."""
        searcher = self.approximate(snap) if isinstance(params, ApproxParams) else snap.index
        scores, docs = searcher.search(qv, depth, params)
        return to_run(scores, docs, snap.index.doc_ids, ["q"])["q"]

    def search_detailed(self, snap: Snapshot, qv: Any, depth: int, params: SearchParams
                        ) -> tuple[dict[str, float], dict[str, list[tuple[str, float]]] | None, dict[str, float]]:
        """``(run, representations, seconds)``: :meth:`search_run`'s top hits, and for a hybrid
        index each representation's own ranked ``[(doc_id, score)]`` and the seconds each one
        and the fusion took (``None`` and ``{}`` for a single representation)."""
        return self.search_run(snap, qv, depth, params), None, {}

    def used_fusion(self, snap: Snapshot, params: SearchParams) -> "HybridUsed | None":
        """The fusion of a hybrid index's representations a search used (None: not hybrid)."""
        return None

    # -- documents and explanations
    def texts(self, snap: Snapshot, doc_ids: Sequence[str]) -> dict[str, dict[str, str]]:
        """Stored ``{"id", "title", "text"}`` of the documents found (missing ones absent)."""
        return snap.docstore.get_many(doc_ids) if snap.docstore is not None else {}

    def live_docnum(self, snap: Snapshot, doc_id: str) -> int | None:
        try:
            return snap.index.docnum(doc_id)
        except LookupError:
            return None

    def document(self, snap: Snapshot, doc_id: str) -> Document | None:
        """The live document ``doc_id`` (``stored=False`` without a document store), else None."""
        if self.live_docnum(snap, doc_id) is None:
            return None
        d = snap.docstore.get(doc_id) if snap.docstore is not None else None
        if d is None:
            return Document(id=doc_id, title=None, text=None, index=self.name, stored=False)
        return Document(id=doc_id, title=d["title"], text=d["text"], index=self.name, stored=True)

    def highlight_encoder(self, snap: Snapshot) -> Any:
        """The encoder whose terms the explanations name (maps words of a text to them)."""
        return snap.encoder

    def contributions(self, snap: Snapshot, qv: Any, docnum: int, top: int | None) -> list[Contribution]:
        """The largest ``top`` (all: None) term contributions to document ``docnum``'s score."""
        enc = self.highlight_encoder(snap)
        return [Contribution(term=c.term, label=label(enc, c.term) if enc is not None else None,
                             query_weight=c.query_weight, doc_weight=c.doc_weight, contribution=c.contribution)
                for c in snap.index.explain(qv, docnum)[:top]]

    def explained_query(self, snap: Snapshot, qv: Any) -> tuple[Index, SparseBatch]:
        """The index and the sparse query vector the explanations are computed on."""
        return snap.index, qv

    def unmatched_terms(self, snap: Snapshot, qv: Any) -> list[str]:
        """The query's terms the index does not know."""
        index, q = self.explained_query(snap, qv)
        _, terms, _ = index.prepare_queries(q)
        return [q.vocab.terms[i] for i, tid in zip(q.indices.tolist(), terms.tolist()) if tid < 0]

    def status(self) -> dict[str, Any]:
        """``{"status": "ok"}``, or ``"degraded"`` with the error that keeps the latest commit from
        being served and since when (the last good snapshot is served meanwhile)."""
        f = self.failure
        if f is None:
            return {"status": "ok"}
        return {"status": "degraded", "error": f.reason, "failing_since": f.since, "reload_attempts": f.attempts}

    def health(self, snap: Snapshot) -> dict[str, Any]:
        return {**self.status(), "generation": snap.generation, "documents": snap.index.n_live_docs}

    def stats(self, snap: Snapshot) -> dict[str, Any]:
        st = snap.index.stats()
        st.update(generation=snap.generation, stored_documents=len(snap.docstore) if snap.docstore is not None else 0,
                  approximate=snap.approx is not None, **self.status())
        return st


# ------------------------------------------------------------------------------------ hybrid
@dataclass(frozen=True)
class HybridOptions:
    """A request's overrides of a hybrid index's fusion (``None``: the index's default), and the
    service's bound on ``depth`` (a saved default deeper than it is cut to it)."""

    fusion: str | None = None
    weights: Mapping[str, float] | None = None
    depth: int | None = None
    rrf_k: float | None = None
    max_depth: int = 1000

    @classmethod
    def from_request(cls, given: Mapping[str, Any] | None, max_depth: int) -> "HybridOptions":
        """The ``hybrid`` object of a search request (``{fusion?, weights?, depth?, rrf_k?}``)."""
        given = dict(given or {})
        extra = sorted(set(given) - {"fusion", "weights", "depth", "rrf_k"})
        if extra:
            raise InvalidInputError(f"'hybrid' has no field {extra[0]!r}; it takes fusion, weights, depth and rrf_k")
        weights = given.get("weights")
        if weights is not None and not isinstance(weights, Mapping):
            raise InvalidInputError("hybrid weights are given as {representation name: weight}")
        return cls(given.get("fusion"), weights, given.get("depth"), given.get("rrf_k"), max_depth)


def hybrid_params(base: HybridParams, names: Sequence[str], options: HybridOptions | None, *, index: str,
                  sparse: ExactParams | ApproxParams) -> HybridParams:
    """The :class:`HybridParams` of one search of hybrid index ``index`` (representations
    ``names``): its default ``base`` with the request's ``options`` (weights given by name; a
    representation the request does not name keeps its default weight), ``sparse`` for its sparse
    representations, single-threaded, and ``depth`` at most ``options.max_depth``. Bad values are
    an :class:`InvalidInputError` naming the field."""
    o = options or HybridOptions()
    over: dict[str, Any] = {}
    if o.fusion is not None:
        over["fusion"] = o.fusion
    if o.weights is not None:
        unknown = [n for n in o.weights if n not in names]
        if unknown:
            raise InvalidInputError(f"hybrid weights: index {index!r} has no representation {unknown[0]!r} "
                                    f"(it has {', '.join(names)})")
        old = base.weights if base.weights is not None else (1.0,) * len(names)
        over["weights"] = tuple(_number(o.weights.get(n, w), f"hybrid weight of {n!r}") for n, w in zip(names, old))
    if o.rrf_k is not None:
        over["rrf_k"] = _number(o.rrf_k, "hybrid rrf_k")
    if o.depth is not None:
        if isinstance(o.depth, bool) or not isinstance(o.depth, int) or not 1 <= o.depth <= o.max_depth:
            raise InvalidInputError(f"hybrid depth must be an integer in [1, {o.max_depth}], got {o.depth!r}")
        over["depth"] = o.depth
    params = dataclasses.replace(base, sparse=sparse, threads=1, unknown="drop", **over)
    if params.depth > o.max_depth:  # a saved default deeper than the service allows
        params = dataclasses.replace(params, depth=o.max_depth)
    try:
        return params.check()
    except InvalidInputError as e:
        raise InvalidInputError(f"hybrid: {e}") from None


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidInputError(f"{what} must be a number, got {value!r}")
    return float(value)


def _kind_of(index: Any) -> str:
    if isinstance(index, HybridIndex):
        return "a hybrid index"
    if isinstance(index, DenseIndex):
        return "a dense index (serve it as a representation of a hybrid index: sparsearch index --encoder dense ...)"
    return "a local index"


def _ranked_lists(per: Mapping[str, tuple[np.ndarray, np.ndarray]], doc_ids: Sequence[str]
                  ) -> dict[str, list[tuple[str, float]]]:
    """Each representation's first-query ``(scores, docnums)`` as ranked ``[(doc_id, score)]``."""
    return {n: [(doc_ids[d], float(x)) for d, x in zip(dd[0].tolist(), ss[0].tolist()) if d >= 0]
            for n, (ss, dd) in per.items()}


class _HybridServing:
    """What serving a hybrid index takes, from a directory or from Milvus (``snap.index`` has
    ``names`` and ``default_params()``): query text only, encoded for every representation, the
    index's fusion with the request's overrides, the fusion used and each representation's list
    reported. Mixed in before the served class it completes."""

    writable = False
    hybrid = True

    def _representations(self, snap: Snapshot) -> list[tuple[str, str]]:
        """``(name, kind)`` of each representation."""
        raise NotImplementedError

    def accepts_vector(self, snap: Snapshot) -> bool:
        return False

    def query_vector(self, snap: Snapshot, query: str | None, vector: Mapping[str, float] | None) -> HybridQueries:
        if vector is not None:
            raise InvalidInputError(f"index {self.name!r} is a hybrid index ({', '.join(snap.index.names)}): send a "
                                    f"'query' text, not a 'vector'")
        enc = self.encoder(snap)
        return snap.encoded(query, lambda: enc.encode_queries([query], ["q"]))

    def is_empty(self, qv: HybridQueries) -> bool:
        """No representation can match: every part is a sparse vector without a term (a dense
        query always scores)."""
        return all(isinstance(p, SparseBatch) and p.nnz == 0 for p in qv.parts.values())

    def warm(self) -> None:
        snap = self.snapshot()
        try:
            if self.can_encode_text(snap):
                self.search_run(snap, self.query_vector(snap, "warm up", None), 1,
                                self.search_params(snap, "exact", None, None))
        except Exception as e:  # warming is an optimisation; errors surface on real requests
            log.warning("index %s: warm-up failed: %s", self.name, e)

    def search_params(self, snap: Snapshot, mode: str, query_cut: int | None, heap_factor: float | None,
                      hybrid: HybridOptions | None = None, **budgets: Any) -> HybridParams:
        """The index's default fusion with the request's ``hybrid`` overrides; ``mode`` applies to
        the sparse representations (approximate knobs default to the first one's saved settings)."""
        saved = self.approximate(snap).default_params if mode == "approximate" else None
        sparse = params_for_mode(mode, threads=1, query_cut=query_cut, heap_factor=heap_factor, saved=saved, **budgets)
        return hybrid_params(snap.index.default_params(), snap.index.names, hybrid, index=self.name, sparse=sparse)

    def search_run(self, snap: Snapshot, qv: Any, depth: int, params: SearchParams) -> dict[str, float]:
        return self.search_detailed(snap, qv, depth, params)[0]

    def used_fusion(self, snap: Snapshot, params: HybridParams) -> HybridUsed:
        names = snap.index.names
        return HybridUsed(fusion=params.fusion, rrf_k=params.rrf_k, depth=params.depth, representations=names,
                          weights=None if params.weights is None else dict(zip(names, params.weights)))

    def health(self, snap: Snapshot) -> dict[str, Any]:
        return {**super().health(snap), "kind": "hybrid",  # type: ignore[misc]
                "representations": [{"name": n, "kind": k} for n, k in self._representations(snap)]}


class ServedHybrid(_HybridServing, ServedIndex):
    """A hybrid index directory (see the module docstring): one snapshot holds the opened
    :class:`~sparsearch.index.hybrid.HybridIndex` (every representation) and the shared document
    store; a new commit, or a new ``fusion.json`` (``sparsearch tune-fusion --save``), is served
    from the next reload on. Query text only (a vector names no representation), read-only."""

    kind = "a hybrid index"
    index_class = HybridIndex
    ENCODER_FIELDS = ("members",)  # the representations' directories: a rebuild names new ones

    def _key(self) -> tuple:
        return _manifest_key(self.path) + _file_key(self.path / FUSION_FILE)

    def _representations(self, snap: Snapshot) -> list[tuple[str, str]]:
        return [(m.name, m.kind) for m in snap.index.members]

    @property
    def explains(self) -> bool:  # type: ignore[override]
        """Explanations (and highlights) come from the first sparse representation, if any."""
        return _first_sparse(self._snap.index) is not None

    def can_encode_text(self, snap: Snapshot) -> bool:
        return all(m.searcher.encoder_config for m in snap.index.members)

    @property
    def cheap_queries(self) -> bool:  # type: ignore[override]
        """Every representation is sparse with a model-free query encoder (a dense one embeds
        the query with a neural model)."""
        return all(m.kind == "sparse" and _model_free(m.searcher.encoder_config) for m in self._snap.index.members)

    def cheap(self, text: bool, mode: str) -> bool:
        """As for one index, in exact mode only: an approximate search opens the approximate index
        of each sparse representation on first use, not only the first one's."""
        return mode != "approximate" and super().cheap(text, mode)

    def _load_encoder(self, snap: Snapshot) -> Any:
        missing = [m.name for m in snap.index.members if not m.searcher.encoder_config]
        if missing:
            raise UnsupportedError(f"index {self.name!r}: representation {missing[0]!r} was built from vectors, "
                                   f"without an encoder, so query text cannot be encoded for it")
        return super()._load_encoder(snap)

    def _open_approximate(self, snap: Snapshot) -> ApproximateIndex:
        """The first sparse representation's approximate index (its saved settings are the
        defaults); the others' are opened by the search, which says when one is missing."""
        first = _first_sparse(snap.index)
        if first is None:
            raise NotFoundError(f"index {self.name!r} has no sparse representation")
        return ApproximateIndex.open(first.searcher)

    def search_detailed(self, snap: Snapshot, qv: HybridQueries, depth: int, params: HybridParams
                        ) -> tuple[dict[str, float], dict[str, list[tuple[str, float]]], dict[str, float]]:
        try:
            scores, docs, per, seconds = snap.index.search_detailed(qv, depth, params)
        except (NotFoundError, CorruptIndexError) as e:
            if not isinstance(params.sparse, ApproxParams):
                raise
            self._no_approximate(str(e))  # another sparse representation lacks its approximate index
        ids = snap.index.doc_ids
        return to_run(scores, docs, ids, ["q"])["q"], _ranked_lists(per, ids), seconds

    def highlight_encoder(self, snap: Snapshot) -> Any:
        first = _first_sparse(snap.index)
        return None if first is None or snap.encoder is None else snap.encoder.encoders.get(first.name)

    def explained_query(self, snap: Snapshot, qv: HybridQueries) -> tuple[Index, SparseBatch]:
        first = _first_sparse(snap.index)
        if first is None:
            raise UnsupportedError(f"index {self.name!r} has no sparse representation to explain scores with")
        return first.searcher, qv.parts[first.name]


def _first_sparse(index: HybridIndex) -> Any:
    """The first sparse representation (a :class:`~sparsearch.index.hybrid.Member`), or None."""
    return next((m for m in index.members if m.kind == "sparse"), None)


def served_index(name: str, path: str | os.PathLike, reload_interval_s: float = 1.0) -> ServedIndex:
    """The served form of the index directory at ``path``: :class:`ServedHybrid` for a hybrid
    index, :class:`ServedIndex` otherwise (which refuses what it cannot serve, naming it)."""
    path = Path(path)
    cls = ServedHybrid if is_hybrid(path) else ServedIndex
    return cls(name, path, reload_interval_s)


# ------------------------------------------------------------------------------------ Milvus
class ServedMilvus(ServedIndex):
    """A collection exported by :func:`sparsearch.milvus.export`, served with the local API.

    Query text is encoded with the encoder recorded in the collection; Milvus computes the
    top-k. Exact search only: approximate mode and explanations are refused
    (``UnsupportedError``: Milvus returns scores, not the per-term contributions they need). An
    export is a fixed snapshot of an index commit, so nothing is reloaded; after re-exporting
    into the same collection, restart the service.
    """

    explains = False
    writable = False
    kind = "Milvus"

    @property
    def filters(self) -> bool:  # type: ignore[override]
        """An export with metadata fields translates filters to Milvus expressions (one made before
        metadata was exported, or a hybrid export without a sparse representation, does not)."""
        return bool(getattr(self.backend, "filters", False))

    def __init__(self, name: str, backend: MilvusBackend) -> None:
        self.name, self.backend, self.path = name, backend, f"{backend.uri}#{backend.collection}"
        self.reload_interval_s = float("inf")
        self.failure = None
        self._snap = Snapshot(backend, None, 0, ())

    def snapshot(self) -> Snapshot:
        return self._snap

    def cheap(self, text: bool, mode: str) -> bool:
        """Never: each search is a network round trip to Milvus."""
        return False

    def warm(self) -> None:
        try:
            if self.can_encode_text(self._snap):
                self.encoder(self._snap)
            if self.backend.n_terms:
                self.backend.search(_query_batch({self.backend.vocab.terms[0]: 1.0}), 1)
        except Exception as e:  # errors surface on real requests
            log.warning("index %s: warm-up failed: %s", self.name, e)

    def approximate(self, snap: Snapshot) -> ApproximateIndex:
        raise UnsupportedError(f"mode 'approximate' is not available for index {self.name!r}: it is served from "
                               f"Milvus, which searches exactly (SPARSE_INVERTED_INDEX); use mode 'exact'")

    def _call(self, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except BackendError as e:
            raise BackendError(f"index {self.name!r}: {e}") from e

    def search_run(self, snap: Snapshot, qv: Any, depth: int, params: SearchParams) -> dict[str, float]:
        return next(iter(self._call(self.backend.search_run, qv, depth, params).values()), {})

    def texts(self, snap: Snapshot, doc_ids: Sequence[str]) -> dict[str, dict[str, str]]:
        return self._call(self.backend.documents, doc_ids) if self.backend.has_text else {}

    def document(self, snap: Snapshot, doc_id: str) -> Document | None:
        d = self._call(self.backend.documents, [doc_id]).get(doc_id)
        if d is None:
            return None
        return Document(id=doc_id, title=d.get("title"), text=d.get("text"), index=self.name,
                        stored=self.backend.has_text)

    def health(self, snap: Snapshot) -> dict[str, Any]:
        return {"backend": "milvus", "collection": self.backend.collection, "documents": self.backend.n_docs}

    def stats(self, snap: Snapshot) -> dict[str, Any]:
        st = self.backend.stats()
        st.pop("uri", None)  # may be a local file (Milvus Lite) or carry a host name: not for clients
        return dict(st, approximate=False, status="ok")


class ServedMilvusDense(ServedMilvus):
    """The dense vectors of a Milvus collection, served as an index of their own (``NAME-dense``):
    query text is embedded with the dense model recorded at export; searching it together with
    ``NAME`` fuses the two like any two indexes."""

    def can_encode_text(self, snap: Snapshot) -> bool:
        return bool((self.backend.meta.get("dense") or {}).get("encoder"))

    def _load_encoder(self, snap: Snapshot) -> Any:
        try:
            enc = self.backend.load_dense_encoder()
        except (ImportError, ValueError, OSError, SparsearchError) as e:
            raise UnsupportedError(f"index {self.name!r}: cannot load its dense model: {e}") from None
        enc.cache = False  # one cache file per query text would grow without bound
        return enc

    def query_vector(self, snap: Snapshot, query: str | None, vector: Mapping[str, float] | None) -> Any:
        if vector is not None:
            raise InvalidInputError(f"index {self.name!r} holds dense vectors: send a 'query' text, not a 'vector'")
        enc = self.encoder(snap)
        return snap.encoded(query, lambda: enc.encode_queries([query]))

    def is_empty(self, qv: Any) -> bool:
        return False

    def warm(self) -> None:
        try:
            self.encoder(self._snap).encode_queries(["warm up"])  # the model loads on first use
        except Exception as e:
            log.warning("index %s: warm-up failed: %s", self.name, e)

    def search_run(self, snap: Snapshot, qv: Any, depth: int, params: SearchParams) -> dict[str, float]:
        return self._call(self.backend.dense_search_run, qv, depth, ["q"]).get("q", {})


class ServedMilvusHybrid(_HybridServing, ServedMilvus):
    """A hybrid index exported to Milvus (:class:`~sparsearch.milvus.MilvusHybridBackend`), served
    like the local hybrid index: query text encoded for every representation (encoders rebuilt
    from the export), each representation's field searched by Milvus to the fusion depth and the
    lists fused with the export's default fusion or the request's; hits carry their rank in each
    representation. Exact search, no explanations (as every Milvus collection)."""

    def _representations(self, snap: Snapshot) -> list[tuple[str, str]]:
        return [(m["name"], m["kind"]) for m in self.backend.members]

    def can_encode_text(self, snap: Snapshot) -> bool:
        return all(m.get("encoder") for m in self.backend.members)

    def _load_encoder(self, snap: Snapshot) -> Any:
        try:
            return self.backend.load_encoder()
        except (ImportError, ValueError, OSError, SparsearchError) as e:
            raise UnsupportedError(f"index {self.name!r}: cannot load its encoders: {e}") from None

    def search_detailed(self, snap: Snapshot, qv: HybridQueries, depth: int, params: HybridParams
                        ) -> tuple[dict[str, float], dict[str, list[tuple[str, float]]], dict[str, float]]:
        run, lists, seconds = self._call(self.backend.search_detailed_run, qv, depth, params)
        return run.get("q", {}), {n: per.get("q", []) for n, per in lists.items()}, seconds


def milvus_backends(uri: str, collections: Sequence[str] | None = None, *, token: str | None = None,
                    dense: bool = True, timeout: float = 10.0) -> list[ServedIndex]:
    """Served indexes for the collections at ``uri`` (default: every collection sparsearch
    exported there): ``NAME`` for the sparse vectors and, when the collection holds dense
    vectors with a recorded model and ``dense`` is true, ``NAME-dense``; an exported hybrid index
    is served as ``NAME`` (:class:`ServedMilvusHybrid`)."""
    names = list(collections) if collections else list_exported(uri, token, timeout=timeout)
    if not names:
        raise NotFoundError(f"no sparsearch collection at {uri}; export one with: "
                            f"sparsearch export INDEX --milvus {uri}")
    out: list[ServedIndex] = []
    for n in names:
        b = MilvusBackend.open(uri, n, token=token, timeout=timeout)
        if isinstance(b, MilvusHybridBackend):
            out.append(ServedMilvusHybrid(n, b))
            continue
        out.append(ServedMilvus(n, b))
        if dense and (b.meta.get("dense") or {}).get("encoder"):
            out.append(ServedMilvusDense(f"{n}-dense", b))
    return out


# ------------------------------------------------------------------------------ the service
@dataclass
class _Searched:
    """One index's part of a search: its snapshot, the query vector and the top hits; for a
    hybrid index each representation's ``{doc_id: (rank, score)}`` and the fusion used."""

    served: ServedIndex
    snap: Snapshot
    qv: Any
    run: dict[str, float]
    ranks: dict[str, int]
    timing: Timing
    representations: dict[str, dict[str, tuple[int, float]]] | None = None
    fusion: HybridUsed | None = None


def _names(paths: Sequence[Path]) -> list[str]:
    names: list[str] = []
    for p in paths:
        base = p.resolve().name or "index"
        name, n = base, 2
        while name in names:
            name, n = f"{base}-{n}", n + 1
        names.append(name)
    return names


def _check_batch(rows: list[dict[str, Any]]) -> None:
    """A batch to add: not empty, ids given and unique, all texts or all vectors."""
    if not rows:
        raise InvalidInputError("no documents to add")
    seen: set[str] = set()
    for n, d in enumerate(rows):
        did = d.get("id")
        if did is None or str(did) == "":
            raise InvalidInputError(f"document {n}: no 'id'")
        if str(did) in seen:
            raise InvalidInputError(f"document {n}: id {str(did)!r} appears twice in the batch")
        seen.add(str(did))
        if (d.get("vector") is None) != (rows[0].get("vector") is None):
            raise InvalidInputError(f"document {n}: a batch holds documents with 'text' or with 'vector', not both")
        if d.get("vector") is None and not str(d.get("text") or "").strip():
            raise InvalidInputError(f"document {n} ({str(did)!r}): no 'text' (or give a 'vector')")


def _check_query(query: str | None, vector: Mapping[str, float] | None) -> None:
    if (query is None) == (vector is None):
        raise InvalidInputError("give exactly one of 'query' (text) and 'vector' ({term: weight})")
    if query is not None and not query.strip():
        raise InvalidInputError("'query' is empty")
    if vector is not None and not any(w > 0 for w in vector.values()):
        raise InvalidInputError("'vector' has no positive weight")


class SearchService:
    """Searches, explanations and documents over the served indexes (thread-safe).

    ``served``: the :class:`ServedIndex` objects (names unique); see :meth:`open` to serve
    directories. ``limits``: the depths and sizes of :class:`Limits` the service uses
    (``fusion_depth``, ``explain_hits``, ``explain_terms``, ``snippet_words``).
    """

    def __init__(self, served: Sequence[ServedIndex], limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self.served: dict[str, ServedIndex] = {}
        for s in served:
            if s.name in self.served:
                raise InvalidInputError(f"two served indexes are named {s.name!r}")
            self.served[s.name] = s
        if not self.served:
            raise InvalidInputError("serve at least one index directory")
        self.started = time.time()
        self._lock = threading.Lock()
        self._searches = 0
        self._latencies: deque[float] = deque(maxlen=2000)

    @classmethod
    def open(cls, index_dirs: Sequence[str | os.PathLike] | Mapping[str, str | os.PathLike] = (), *,
             limits: Limits | None = None, backends: Sequence[ServedIndex] = (), warm: bool = False
             ) -> "SearchService":
        """Serve ``index_dirs`` (a list, named by directory name, or ``{name: dir}``) and ``backends``
        (e.g. :func:`milvus_backends`); ``warm``: load encoders and run one search per index now."""
        limits = limits or Limits()
        if isinstance(index_dirs, Mapping):
            pairs = [(str(n), Path(p)) for n, p in index_dirs.items()]
        else:
            paths = [Path(p) for p in index_dirs]
            pairs = list(zip(_names(paths), paths))
        service = cls([served_index(n, p, limits.reload_interval_s) for n, p in pairs] + list(backends), limits)
        if warm:
            for s in service.served.values():
                s.warm()
        return service

    # ------------------------------------------------------------------------- search
    def search(self, query: str | None = None, vector: Mapping[str, float] | None = None, k: int = 10,
               mode: str = "exact", indexes: Sequence[str] | None = None, fusion: str = "rrf",
               weights: Mapping[str, float] | None = None, rrf_k: float = 60.0, explain: bool | None = True,
               query_cut: int | None = None, heap_factor: float | None = None,
               hybrid: Mapping[str, Any] | None = None, filter: str | None = None,
               max_postings: int | None = None, budget_ms: float | None = None,
               candidates: int | None = None, forward_cut: int | None = None,
               rerank: int | None = None) -> SearchResult:
        """Search one or several indexes with a query text or a vector ``{term: weight}``.

        ``mode``: ``"exact"``, ``"exhaustive"``, ``"approximate"`` (the index's approximate index; ``query_cut`` /
        ``heap_factor`` / ``candidates`` / ``forward_cut`` / ``rerank`` (at most
        ``Limits.max_candidates``) default to the settings saved next to the index, else
        ApproxParams' defaults) or ``"anytime"`` (impact-ordered postings scored best first until ``max_postings``
        or ``budget_ms``, at most ``Limits.max_budget_ms``, runs out). With several indexes, their top ``max(k, Limits.fusion_depth)`` are fused by
        ``fusion`` (``"rrf"`` with constant ``rrf_k``, or a ``weights``-weighted sum of
        ``"minmax"`` / ``"zscore"`` normalised scores). ``indexes=None`` searches all, leaving out
        (with a warning) those that cannot encode a text query. ``explain``: True attaches
        per-term contributions and highlight spans to the first ``Limits.explain_hits`` hits and
        fails on an index that cannot explain; None does so where available (a warning
        elsewhere); False attaches none (and is what HTTP ``POST /search`` uses when the request
        leaves ``explain`` out).

        A hybrid index is searched with its default fusion of its representations, overridden
        by ``hybrid`` (``{"fusion", "weights": {representation: weight}, "depth", "rrf_k"}``, each
        optional; ``depth`` at most ``Limits.max_hybrid_depth``); its hits carry their rank and
        score in each representation (``Hit.representations``).

        ``filter``: search only the documents this expression selects (:mod:`sparsearch.filters`,
        e.g. ``'year >= 2015 and source in ["pubmed", "pmc"]'``), in every searched index; a
        syntax error, an unknown field or a literal of the wrong type is an
        :class:`InvalidInputError` (HTTP 400) saying where.
        """
        t0 = time.perf_counter()
        _check_query(query, vector)
        k = check_k(k, MAX_K)
        budgets = {"max_postings": max_postings, "budget_ms": budget_ms, "candidates": candidates,
                   "forward_cut": forward_cut, "rerank": rerank}
        params_for_mode(mode, query_cut=query_cut, heap_factor=heap_factor, **budgets)  # refuse bad ones before any work
        if budget_ms is not None and budget_ms > self.limits.max_budget_ms:
            raise InvalidInputError(f"budget_ms must be at most {self.limits.max_budget_ms:g}, got {budget_ms!r}")
        for name, v in (("candidates", candidates), ("rerank", rerank)):
            if v is not None and v > self.limits.max_candidates:
                raise InvalidInputError(f"{name} must be at most {self.limits.max_candidates:,}, got {v!r}")
        if filter is not None:
            parse_filter(filter)
        if fusion not in FUSIONS:
            raise InvalidInputError(f"unknown fusion {fusion!r}; use one of {', '.join(FUSIONS)}")
        options = HybridOptions.from_request(hybrid, self.limits.max_hybrid_depth)
        names, warnings = self._plan(query, indexes, weights, explain)
        if hybrid is not None and not any(self.served[n].hybrid for n in names):
            raise InvalidInputError(f"'hybrid' sets the fusion of a hybrid index's representations, and no searched "
                                    f"index is hybrid ({', '.join(names)})")
        depth = k if len(names) == 1 else max(k, min(self.limits.fusion_depth, self.limits.max_k))
        if filter is not None:
            cannot = [n for n in names if not self.served[n].filters]
            if cannot:
                raise UnsupportedError(f"filters are not available for index {cannot[0]!r} (served from "
                                       f"{self.served[cannot[0]].kind})")
        searched = {n: self._search_one(n, query, vector, mode, query_cut, heap_factor, depth, warnings, options,
                                        filter, budgets)
                    for n in names}
        if len(names) == 1:
            fused, fusion_name = searched[names[0]].run, None
        else:
            w = [1.0 if weights is None else float(weights.get(n, 1.0)) for n in names]
            fused, fusion_name = fuse([searched[n].run for n in names], fusion, w, rrf_k=rrf_k), fusion
        hits = self._hits(ranked(fused)[:k], searched, explain is not False)
        took = time.perf_counter() - t0
        with self._lock:
            self._searches += 1
            self._latencies.append(took)
        return SearchResult(query=query, k=k, mode=mode, indexes=names, fusion=fusion_name,
                            took_ms=round(took * 1e3, 3), hits=hits, warnings=warnings,
                            hybrid={n: p.fusion for n, p in searched.items() if p.fusion is not None},
                            timings={n: p.timing for n, p in searched.items()})

    def cheap(self, query: str | None = None, vector: Mapping[str, float] | None = None,
              indexes: Sequence[str] | None = None, explain: bool | None = True, mode: str = "exact",
              **_: Any) -> bool:
        """Whether :meth:`search` with these arguments is sure to be cheap (about a millisecond),
        so that the HTTP service may run it on its event loop's thread instead of handing it to
        its thread pool (the hand-off, two threads taking turns at the GIL, cost more than the
        search itself under load).

        Cheap: no explanation (``explain`` False: no per-term contributions, no highlight
        spans), and every index the search would use is a local one whose query needs no
        neural model (a ``vector``, or text encoded by BM25 or the IDF query side of
        splade-doc, that encoder already loaded), with nothing to open first (no reload due;
        in approximate mode the approximate index already open). A dense or SPLADE (query
        and document) encoder, or a Milvus backend (network), is never cheap. A request
        :meth:`search` refuses at once (unknown index, say) counts as cheap; the other
        arguments of :meth:`search` are accepted and do not matter.
        """
        if explain is not False:
            return False
        try:
            names = self._pick(indexes)
        except SparsearchError:
            return True  # refused before any work
        text = vector is None
        for n in names:
            s = self.served[n]
            if indexes is None and not (s.can_encode_text(s.current) if text else s.accepts_vector(s.current)):
                continue  # left out of a search of "all" (see _plan)
            if not s.cheap(text, mode):
                return False
        return True

    def _pick(self, names: Sequence[str] | None) -> list[str]:
        if names is None:
            return list(self.served)
        for n in names:
            if n not in self.served:
                raise NotFoundError(f"unknown index {n!r}; served: {', '.join(self.served)}")
        return list(dict.fromkeys(names))

    def _plan(self, query: str | None, indexes: Sequence[str] | None, weights: Mapping[str, float] | None,
              explain: bool | None) -> tuple[list[str], list[str]]:
        """The indexes to search (named, weighted above 0, able to encode the query) and the warnings."""
        names = self._pick(indexes)
        if weights:
            for n, w in weights.items():
                if n not in names:
                    raise InvalidInputError(f"weight given for index {n!r}, which is not searched "
                                            f"(searched: {', '.join(names)})")
                if not w >= 0:
                    raise InvalidInputError(f"weight of index {n!r} must be >= 0, got {w!r}")
            names = [n for n in names if weights.get(n, 1.0) > 0]
            if not names:
                raise InvalidInputError("all index weights are 0")
        warnings: list[str] = []
        if indexes is None and query is not None:
            # searching "all": leave out indexes that cannot encode text (vector-only), and say so
            skip = [n for n in names if not self.served[n].can_encode_text(self.served[n].snapshot())]
            if len(skip) == len(names):
                raise InvalidInputError("no served index has an encoder to encode query text; send a 'vector'")
            names = [n for n in names if n not in skip]
            warnings += [f"index {n!r} has no encoder and was not searched (send a 'vector' for it)" for n in skip]
        elif indexes is None:
            # a vector searched in "all": leave out indexes that take query text only (hybrid, dense)
            skip = [n for n in names if not self.served[n].accepts_vector(self.served[n].snapshot())]
            if len(skip) == len(names):
                raise InvalidInputError("no served index takes a query 'vector' (they encode query text); send a 'query'")
            names = [n for n in names if n not in skip]
            warnings += [f"index {n!r} takes query text only and was not searched with the vector" for n in skip]
        no_explain = [n for n in names if not self.served[n].explains]
        if no_explain and explain:
            raise UnsupportedError(f"explain is not available for {', '.join(map(repr, no_explain))} (served "
                                   f"from {self.served[no_explain[0]].kind}); set 'explain' to false")
        if no_explain and explain is None:
            warnings += [f"index {n!r}: no explanations (served from {self.served[n].kind})" for n in no_explain]
        return names, warnings

    def _search_one(self, name: str, query: str | None, vector: Mapping[str, float] | None, mode: str,
                    query_cut: int | None, heap_factor: float | None, depth: int, warnings: list[str],
                    hybrid: HybridOptions | None = None, filter: str | None = None,
                    budgets: Mapping[str, Any] | None = None) -> _Searched:
        s = self.served[name]
        snap = s.snapshot()
        params = s.search_params(snap, mode, query_cut, heap_factor, hybrid, **(budgets or {}))
        if filter is not None:
            params = dataclasses.replace(params, filter=filter)
        t0 = time.perf_counter()
        qv = s.query_vector(snap, query, vector)
        t1 = time.perf_counter()
        lists, seconds = None, {}
        if s.is_empty(qv):
            warnings.append(f"index {name!r}: the query has no indexable terms")
            run: dict[str, float] = {}
        else:
            run, lists, seconds = s.search_detailed(snap, qv, depth, params)
        t2 = time.perf_counter()
        ranks = {d: r for r, (d, _) in enumerate(ranked(run), 1)}
        fusion = s.used_fusion(snap, params)
        reps = None
        if fusion is not None:
            lists = lists or {}
            reps = {n: {d: (r, x) for r, (d, x) in enumerate(lists.get(n, []), 1)} for n in fusion.representations}
        ms = {n: round(v * 1e3, 3) for n, v in seconds.items()}
        timing = Timing(encode_ms=round((t1 - t0) * 1e3, 3), search_ms=round((t2 - t1) * 1e3, 3),
                        fusion_ms=ms.pop("fusion", None), representations_ms=ms)
        return _Searched(s, snap, qv, run, ranks, timing, reps, fusion)

    def _hits(self, top: list[tuple[str, float]], searched: dict[str, _Searched], explain: bool) -> list[Hit]:
        """The hits for the fused ``top``, with stored text, explanations and highlights."""
        texts: dict[str, dict[str, str]] = {}
        for part in searched.values():
            missing = [d for d, _ in top if d not in texts]
            if missing:
                texts.update(part.served.texts(part.snap, missing))
        hits = []
        qualify = len(searched) > 1  # representations named INDEX/REPRESENTATION
        for rank, (d, score) in enumerate(top, 1):
            hit = Hit(rank=rank, id=d, score=float(score),
                      scores={n: HitScore(p.run[d], p.ranks[d]) for n, p in searched.items() if d in p.run})
            for n, p in searched.items():
                for rep, pos in (p.representations or {}).items():
                    r, x = pos.get(d, (None, None))
                    hit.representations[f"{n}/{rep}" if qualify else rep] = RepresentationRank(r, x)
            explained = explain and rank <= self.limits.explain_hits
            if explained:
                hit.explanation = self._explain_hit(d, searched)
            doc = texts.get(d)
            if doc is not None:
                hit.title = doc["title"]
                encoders = [searched[n].served.highlight_encoder(searched[n].snap) for n in hit.explanation]
                expl = list(hit.explanation.values()) if explained else None
                hit.snippet, hit.highlights, hit.title_highlights = highlight_hit(
                    doc, encoders, expl, self.limits.snippet_words)
            hits.append(hit)
        return hits

    def _explain_hit(self, doc_id: str, searched: dict[str, _Searched]) -> dict[str, list[Contribution]]:
        out = {}
        for n, p in searched.items():
            if doc_id in p.run and p.served.explains:
                dn = p.served.live_docnum(p.snap, doc_id)
                if dn is not None:
                    out[n] = p.served.contributions(p.snap, p.qv, dn, self.limits.explain_terms)
        return out

    # ----------------------------------------------------------- explain and documents
    def explain(self, doc_id: str, query: str | None = None, vector: Mapping[str, float] | None = None,
                index: str | None = None) -> Explanation:
        """Every matching term's (latent's) contribution to document ``doc_id``'s score for a query
        in ``index`` (optional when one index is served)."""
        _check_query(query, vector)
        index = self._one(index)
        s = self.served[index]
        if not s.explains:
            raise UnsupportedError(f"index {index!r} is served from {s.kind}, which cannot explain scores; "
                                   f"explain against the local index directory")
        snap = s.snapshot()
        qv = s.query_vector(snap, query, vector)
        dn = s.live_docnum(snap, doc_id)
        if dn is None:
            raise NotFoundError(f"unknown document id {doc_id!r} in index {index!r}")
        cs = s.contributions(snap, qv, dn, None)
        return Explanation(index=index, doc_id=doc_id, score=float(sum(c.contribution for c in cs)),
                           contributions=cs, query_terms=s.explained_query(snap, qv)[1].row_dict(0),
                           unmatched_query_terms=s.unmatched_terms(snap, qv))

    def _one(self, index: str | None) -> str:
        """The index named (it must be served), or the only one served."""
        if index is None:
            if len(self.served) > 1:
                raise InvalidInputError(f"several indexes are served; name one in 'index' ({', '.join(self.served)})")
            return next(iter(self.served))
        return self._pick([index])[0]

    def document(self, doc_id: str, index: str | None = None) -> Document:
        """A live document, from ``index`` or the first served index holding it."""
        for n in self._pick([index] if index is not None else None):
            d = self.served[n].document(self.served[n].snapshot(), doc_id)
            if d is not None:
                return d
        raise NotFoundError(f"unknown document id {doc_id!r}")

    # ------------------------------------------------------------------------- writes
    def _writable(self, index: str | None) -> ServedIndex:
        s = self.served[self._one(index)]
        if not s.writable:
            raise UnsupportedError(f"index {s.name!r} is served from {s.kind}, which the service cannot write to")
        return s

    def add_documents(self, documents: Sequence[Mapping[str, Any]], index: str | None = None,
                      replace: bool = False) -> WriteResult:
        """Add documents to ``index`` (optional when one index is served) in one commit, and serve it.

        Each document is ``{"id", "title"?, "text"}`` (encoded with the index's own encoder,
        :func:`~sparsearch.index.updates.add_texts`) or ``{"id", "vector": {term: weight},
        "title"?, "text"?}`` (added as given, :func:`~sparsearch.index.updates.add_documents`;
        title and text are stored); a batch holds one kind. An id already live is a
        :class:`ConflictError` unless ``replace`` (an upsert).
        """
        s = self._writable(index)
        rows = [dict(d) for d in documents]
        _check_batch(rows)
        texts = [{"id": str(d["id"]), "title": d.get("title") or "", "text": d.get("text") or ""} for d in rows]
        if rows[0].get("vector") is None:
            if not s.can_encode_text(s.snapshot()):
                raise InvalidInputError(f"index {s.name!r} has no encoder to encode text; send each document's "
                                        f"'vector' instead")
            manifest = updates.add_texts(s.path, texts, replace=replace)
        else:
            try:
                batch = SparseBatch.from_dicts([dict(d["vector"]) for d in rows], ids=[t["id"] for t in texts])
            except ValueError as e:
                raise InvalidInputError(f"invalid document vector: {e}") from None
            stored = texts if any(d.get("text") or d.get("title") for d in rows) else None
            manifest = updates.add_documents(s.path, batch, stored, replace=replace)
        snap = s.refresh()
        return WriteResult(index=s.name, added=len(rows), deleted=0,
                           generation=int(manifest.get("generation", snap.generation)),
                           documents=snap.index.n_live_docs)

    def delete_document(self, doc_id: str, index: str | None = None) -> WriteResult:
        """Delete a live document from ``index`` (optional when one index is served) in one commit."""
        s = self._writable(index)
        updates.delete_documents(s.path, [doc_id], missing="error")
        snap = s.refresh()
        return WriteResult(index=s.name, added=0, deleted=1, generation=snap.generation,
                           documents=snap.index.n_live_docs)

    # ------------------------------------------------------------------ health, stats
    def health(self) -> dict[str, Any]:
        """Liveness: the served indexes and their current commit; ``status`` is ``"degraded"``
        when an index's latest commit cannot be opened (its last good state is served; the index
        says why)."""
        indexes = {n: s.health(s.snapshot()) for n, s in self.served.items()}
        degraded = any(h.get("status") == "degraded" for h in indexes.values())
        return hide_paths({"status": "degraded" if degraded else "ok", "indexes": indexes})

    def redact(self, message: str) -> str:
        """``message`` with each served directory written as its index name."""
        paths: dict[str, str] = {}
        for n, s in self.served.items():
            if isinstance(s.path, Path):
                paths.update({str(s.path): n, str(s.path.resolve()): n})
        return redact_paths(message, paths)

    def stats(self) -> dict[str, Any]:
        """Per index: sizes, encoder, commit, status; for the service: searches, uptime, latency
        (ms), limits. No filesystem path (a model given by path shows its last component)."""
        with self._lock:
            lat = np.asarray(list(self._latencies)) * 1e3
            searches = self._searches
        return {"indexes": hide_paths({n: s.stats(s.snapshot()) for n, s in self.served.items()}),
                "service": {"searches": searches, "uptime_s": time.time() - self.started,
                            "search_latency_ms": {"n": int(lat.size),
                                                  "p50": float(np.percentile(lat, 50)) if lat.size else None,
                                                  "p99": float(np.percentile(lat, 99)) if lat.size else None},
                            "limits": dataclasses.asdict(self.limits)}}

