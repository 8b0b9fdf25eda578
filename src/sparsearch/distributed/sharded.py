"""Sharded search: a query batch fans out to shard searchers, their top-k lists merge exactly.

A *shard* is an index directory, or a group of consecutive segments of one (a Ray-built index
has one segment per shard of documents). Each shard searcher holds its shard open (memory-mapped)
and answers ``search`` with its own top-k and the float64 scores its ranking compared; the
coordinator offsets shard-local doc numbers by the shard's base and merges the lists with the
same comparison as :class:`~sparsearch.index.Index` (score descending, then global doc number
ascending). Top-k of a union is the top-k of the per-part top-ks, so the merged results *equal*
those of one index holding every segment: same documents, same order, same scores.

Searchers run in this process (``"inline"``), in one child process each (``"process"``: no Ray
needed), or as Ray actors (``"ray"``: on any node of a cluster).
"""

from __future__ import annotations

import multiprocessing as mp
import threading
import traceback
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ..encoders import load_encoder_of
from ..errors import BackendError, InvalidInputError
from ..evaluation import to_run
from ..index.manifest import read_manifest
from ..index.searcher import Contribution, Index, _merge_topk
from ..searching import ExactParams, check_k, require
from ..vectors import SparseBatch, Vocabulary
from ._ray import require_ray

__all__ = ["ShardSearcher", "ShardedIndex", "group_segments", "BACKENDS"]

BACKENDS = ("inline", "process", "ray")


class ShardSearcher:
    """Searches one shard: an index directory, or the segments ``segments`` of it."""

    def __init__(self, path: str | Path, segments: Sequence[int] | None = None, threads: int | None = None) -> None:
        self.index = Index.open(path, segments=segments)
        self.threads = threads

    def n_docs(self) -> int:
        return self.index.n_docs

    def n_live_docs(self) -> int:
        return self.index.n_live_docs

    def search(self, queries: SparseBatch, k: int, params: ExactParams) -> tuple[np.ndarray, np.ndarray]:
        """Shard top-k: float64 scores (nq, k') and shard-local doc numbers (nq, k'), ``-1`` padded;
        ``params.threads`` (if set) overrides the searcher's own thread count."""
        if params.threads is None and self.threads is not None:
            params = replace(params, threads=self.threads)
        return self.index.search(queries, k, params, dtype=np.float64)

    def doc_ids(self) -> list[str]:
        return self.index.doc_ids

    def explain(self, query: SparseBatch, docnum: int) -> list[Contribution]:
        return self.index.explain(query, docnum)


def group_segments(n_docs: Sequence[int], n_groups: int) -> list[list[int]]:
    """Split segments (their document counts, in order) into ``n_groups`` runs of consecutive
    segments with about equal documents: group ``g`` ends where the running total first reaches
    ``(g + 1) / n_groups`` of all documents, and every group keeps at least one segment."""
    n = len(n_docs)
    if not 1 <= n_groups <= n:
        raise InvalidInputError(f"cannot split {n} segments into {n_groups} shards (rebuild with a smaller shard size "
                         f"for more segments)")
    total = float(sum(n_docs))
    cum = np.cumsum(n_docs)
    groups, start = [], 0
    for g in range(n_groups - 1):
        target = total * (g + 1) / n_groups
        stop = int(np.searchsorted(cum, target, side="left")) + 1
        stop = min(max(stop, start + 1), n - (n_groups - 1 - g))  # leave a segment for every later group
        groups.append(list(range(start, stop)))
        start = stop
    groups.append(list(range(start, n)))
    return groups


def _compact(queries: SparseBatch) -> SparseBatch:
    """The queries over the vocabulary of the terms they use (same weights, same term order): a
    SPLADE query batch carries the tokenizer's 30k terms, which need not cross to every shard."""
    used, inverse = np.unique(queries.indices, return_inverse=True)
    if len(used) == len(queries.vocab):
        return queries
    terms = queries.vocab.terms
    return SparseBatch(queries.indptr, inverse.astype(np.int32), queries.values,
                       Vocabulary(terms[t] for t in used.tolist()), queries.ids, dict(queries.meta))


# --------------------------------------------------------------------------- backends
Future = Callable[[], Any]


class _InlineHandle:
    def __init__(self, path: str, segments: list[int] | None, threads: int | None) -> None:
        self.searcher = ShardSearcher(path, segments, threads)

    def submit(self, method: str, *args: Any) -> Future:
        result = getattr(self.searcher, method)(*args)
        return lambda: result

    def close(self) -> None:
        self.searcher = None  # type: ignore[assignment]


def _serve_shard(conn: Any, path: str, segments: list[int] | None, threads: int | None) -> None:
    """Child process loop: open the shard, then answer ``(method, args)`` requests until ``None``."""
    try:
        searcher = ShardSearcher(path, segments, threads)
        conn.send(("ok", None))
    except Exception as e:  # report why the shard cannot open, then stop
        _send_error(conn, e)
        return
    while True:
        msg = conn.recv()
        if msg is None:
            break
        method, args = msg
        try:
            conn.send(("ok", getattr(searcher, method)(*args)))
        except Exception as e:
            _send_error(conn, e)


def _send_error(conn: Any, e: Exception) -> None:
    try:
        conn.send(("error", e))
    except Exception:  # an exception that does not pickle: send its text
        conn.send(("error", RuntimeError("".join(traceback.format_exception(e)))))


class _ProcessHandle:
    """A shard searcher in a child process (spawned: numba's threads and forks do not mix)."""

    def __init__(self, path: str, segments: list[int] | None, threads: int | None) -> None:
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve_shard, args=(child, path, segments, threads), daemon=True)
        self.proc.start()
        child.close()
        self._receive()

    def _receive(self) -> Any:
        try:
            status, value = self.conn.recv()
        except EOFError:
            raise BackendError(f"shard searcher process {self.proc.pid} exited (code {self.proc.exitcode})") from None
        if status == "error":
            raise value
        return value

    def submit(self, method: str, *args: Any) -> Future:
        self.conn.send((method, args))
        return self._receive

    def close(self) -> None:
        try:
            self.conn.send(None)
        except (OSError, BrokenPipeError):
            pass
        self.proc.join(timeout=10)
        if self.proc.is_alive():
            self.proc.terminate()
        self.conn.close()


class _RayHandle:
    """A shard searcher as a Ray actor (spread over the cluster's nodes)."""

    def __init__(self, path: str, segments: list[int] | None, threads: int | None, cpus: float | None) -> None:
        self.ray = require_ray()
        options: dict[str, Any] = {"scheduling_strategy": "SPREAD"}
        if cpus is not None:
            options["num_cpus"] = cpus
        self.actor = self.ray.remote(ShardSearcher).options(**options).remote(path, segments, threads)

    def submit(self, method: str, *args: Any) -> Future:
        ref = getattr(self.actor, method).remote(*args)

        def result() -> Any:
            try:
                return self.ray.get(ref)
            except self.ray.exceptions.RayTaskError as e:  # re-raise what the shard raised, not the wrapper
                raise (e.cause if isinstance(e.cause, Exception) else e) from None
            except self.ray.exceptions.ActorDiedError as e:
                cause = getattr(e, "cause", None) or getattr(e, "base_exception", None)
                raise (cause if isinstance(cause, Exception) else e) from None
        return result

    def close(self) -> None:
        self.ray.kill(self.actor)


# --------------------------------------------------------------------------- coordinator
class ShardedIndex:
    """Search several shards as one index: a :class:`~sparsearch.searching.Searcher` for exact
    search (:class:`~sparsearch.searching.ExactParams`), results equal to one index's.

    Global doc numbers run over the shards in order (shard ``i`` starts at ``bases[i]``), so
    with the segment groups of one index they are that index's doc numbers. Not safe to use from
    several threads at once.
    """

    def __init__(self, shards: Sequence[tuple[str | Path, Sequence[int] | None]], *, backend: str = "inline",
                 threads: int | None = None, cpus_per_shard: float | None = None) -> None:
        """Open ``shards`` = ``[(index directory, segment positions or None for all), ...]``.

        Args:
            backend: ``"inline"`` (this process), ``"process"`` (a child process per shard) or
                ``"ray"`` (an actor per shard; Ray must be initialised, see ``ray_session``).
            threads: search threads inside each searcher (``None``: all cores of its machine);
                ``ExactParams.threads`` of a search overrides it.
            cpus_per_shard: Ray CPUs reserved per actor (``None``: Ray's actor default, which
                reserves none while running, so more shards than cores still start).
        """
        if backend not in BACKENDS:
            raise InvalidInputError(f"unknown backend {backend!r}; use one of {BACKENDS}")
        if not shards:
            raise InvalidInputError("no shards to search")
        self.paths = [Path(p) for p, _ in shards]
        self.manifests = [read_manifest(p) for p in self.paths]
        configs = {repr(m.get("encoder")) for m in self.manifests}
        if len(configs) > 1:
            raise InvalidInputError("the shards were built with different encoders; their scores are not comparable")
        self.backend = backend
        self._handles: list[Any] = []
        self._lock = threading.Lock()
        try:
            for p, segs in shards:
                segs = None if segs is None else list(segs)
                if backend == "inline":
                    self._handles.append(_InlineHandle(str(p), segs, threads))
                elif backend == "process":
                    self._handles.append(_ProcessHandle(str(p), segs, threads))
                else:
                    self._handles.append(_RayHandle(str(p), segs, threads, cpus_per_shard))
            sizes = self._fan_out("n_docs")
            #: live documents of all shards (search clamps k to it)
            self.n_live_docs = int(sum(self._fan_out("n_live_docs")))
        except BaseException:
            self.close()
            raise
        self.bases = np.cumsum([0] + sizes).astype(np.int64)
        self._doc_ids: list[str] | None = None
        self._encoder = None

    @classmethod
    def open(cls, paths: Sequence[str | Path], *, shards: int | None = None, **kwargs: Any) -> "ShardedIndex":
        """Shards from index directories: each directory is one shard, or, with one directory and
        ``shards=N``, its segments split into ``N`` groups of about equal documents."""
        paths = [Path(p) for p in paths]
        if shards is None or (len(paths) > 1 and shards == len(paths)):
            return cls([(p, None) for p in paths], **kwargs)
        if len(paths) != 1:
            raise InvalidInputError(f"--shards splits one index; got {len(paths)} index directories (each is a shard)")
        sizes = [int(s["n_docs"]) for s in read_manifest(paths[0])["segments"]]
        return cls([(paths[0], g) for g in group_segments(sizes, shards)], **kwargs)

    def _fan_out(self, method: str, *args: Any) -> list[Any]:
        """Call ``method`` on every shard (all in flight at once), results in shard order."""
        with self._lock:
            futures = [h.submit(method, *args) for h in self._handles]
            return [f() for f in futures]

    # ------------------------------------------------------------- properties
    @property
    def n_shards(self) -> int:
        return len(self._handles)

    @property
    def n_docs(self) -> int:
        return int(self.bases[-1])

    @property
    def manifest(self) -> dict[str, Any]:
        return self.manifests[0]

    @property
    def encoder_config(self) -> dict[str, Any] | None:
        return self.manifest.get("encoder")

    @property
    def doc_ids(self) -> list[str]:
        """External id of every global doc number (fetched from the shards once)."""
        if self._doc_ids is None:
            self._doc_ids = [i for part in self._fan_out("doc_ids") for i in part]
        return self._doc_ids

    def load_encoder(self):
        """The encoder of the (first) shard, to encode queries as the documents were."""
        if self._encoder is None:
            self._encoder = load_encoder_of(self.paths[0], self.manifest)
        return self._encoder

    # ---------------------------------------------------------------- queries
    def search(self, queries: SparseBatch, k: int = 10,
               params: ExactParams | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` over all shards, as :meth:`Index.search <sparsearch.index.Index.search>` returns it.

        Args:
            queries: (nq, V') query vectors, matched to each shard's vocabulary by term.
            k: results per query; the result width is ``min(k, n_live_docs)``.
            params: :class:`~sparsearch.searching.ExactParams` (``None``: defaults); other kinds
                raise :class:`~sparsearch.errors.UnsupportedError`.

        Returns:
            ``scores`` float32 (nq, k') descending and global ``docnums`` int64 (nq, k'), ``-1`` padded.
        """
        params = ExactParams() if params is None else params
        require(params, [ExactParams], "sharded search")
        params.check()
        k = check_k(k, self.n_live_docs)
        parts = self._fan_out("search", _compact(queries), k, params)
        scores = [s for s, _ in parts]
        docs = [np.where(d >= 0, d + base, -1) for (_, d), base in zip(parts, self.bases[:-1])]
        return _merge_topk(scores, docs, k)

    def search_run(self, queries: SparseBatch, k: int = 1000,
                   params: ExactParams | None = None) -> dict[str, dict[str, float]]:
        """:meth:`search` as a run ``{query_id: {doc_id: score}}`` (query ids from ``queries.ids``)."""
        return to_run(*self.search(queries, k, params), self.doc_ids, queries.ids)

    def explain(self, query: SparseBatch, docnum: int) -> list[Contribution]:
        """Per-term contributions of global doc ``docnum`` (asked of the shard that holds it)."""
        if not 0 <= docnum < self.n_docs:
            raise InvalidInputError(f"doc number {docnum} out of range [0, {self.n_docs})")
        s = int(np.searchsorted(self.bases, docnum, side="right") - 1)
        with self._lock:
            return self._handles[s].submit("explain", _compact(query), docnum - int(self.bases[s]))()

    # ---------------------------------------------------------------- lifetime
    def close(self) -> None:
        """Stop the shard searchers (child processes, actors)."""
        for h in self._handles:
            h.close()
        self._handles = []

    def __enter__(self) -> "ShardedIndex":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ShardedIndex({len(self._handles)} shards, docs={self.n_docs}, backend={self.backend!r})"
