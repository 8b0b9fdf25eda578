"""Distributed encoding and index building on Ray: one segment per shard, same index for any worker count.

Sharding is a function of the corpus and ``shard_size`` alone: shard ``s`` holds documents
``[s * shard_size, (s + 1) * shard_size)`` in corpus order and becomes segment ``s`` of the
index. Workers (Ray actors, one CPU each) only *process* shards, so 1 worker and N workers
write the same segments, and global document numbers are corpus positions as in a one-segment
index. Everything a segment depends on beyond its own documents is made global first:

1. **corpus statistics** (BM25 df/avgdl, inference-free SPLADE df): workers compute
   :meth:`~sparsearch.encoders.SparseEncoder.partial_statistics` per shard and the driver merges
   them in shard order (equal to ``fit`` on the whole corpus); an encoder whose ``fit`` cannot be
   merged (CSR trains a model) is fitted on the driver; SPLADE has nothing to fit.
2. **encoding**: every worker loads the fitted encoder from its ``config()`` and saved state (what
   an index stores anyway, so no pickling of tokenizers or stemmers) and encodes its shards; the
   vectors stay in Ray's object store, the driver only receives per-shard sizes and maxima.
3. **vocabulary and grid**: shard vocabularies are merged in shard order (with a fitted BM25 or a
   tokenizer they are all one vocabulary) and uint8 impacts use one global grid per term,
   ``term_scale[t] = max weight of t over all shards / 255`` (workers report their shards'
   per-term maxima): a segment quantized with its own maxima would score differently from
   the same documents in a one-segment index.
4. **segments**: the worker that encoded a shard inverts and compresses it (its vectors are local
   to it) and writes the segment into the index directory, aside then renamed; the driver
   commits one manifest naming the segments in shard order, with the vocabulary, the encoder
   state and the document store. On a multi-machine cluster the index directory must be a
   shared filesystem (the driver checks that it sees every segment).
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..encoders import load_encoder, pack_state, unpack_state
from ..encoders.base import SparseEncoder
from ..errors import BackendError, InvalidInputError
from ..index.builder import check_documents, check_settings, new_manifest, publish_segment, term_maxima
from ..index.manifest import check_target, commit
from ..index.searcher import Index
from ..index.storage import Directory
from ..vectors import SparseBatch, Vocabulary
from ._ray import ray_session

__all__ = ["plan_shards", "ShardWorker", "build_index_ray", "DEFAULT_SHARD_SIZE"]

DEFAULT_SHARD_SIZE = 10_000

#: vectors of one shard without their vocabulary: (indptr, indices, values, ids)
Vectors = tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]


def plan_shards(n_docs: int, shard_size: int) -> list[tuple[int, int]]:
    """``[start, stop)`` of each shard: runs of ``shard_size`` consecutive documents (the last may be
    shorter). A function of the corpus size and ``shard_size`` only, never of the worker count."""
    if shard_size < 1:
        raise InvalidInputError(f"shard_size must be >= 1, got {shard_size}")
    return [(a, min(a + shard_size, n_docs)) for a in range(0, n_docs, shard_size)]


def _digest(terms: Sequence[str]) -> str:
    """Identity of a vocabulary (SHA-1 over its terms in id order)."""
    h = hashlib.sha1()
    for t in terms:
        h.update(t.encode("utf-8"))
        h.update(b"\x00")
    return f"{len(terms)}:{h.hexdigest()}"


def _limit_threads(n: int) -> None:
    """Pin numba (segment building) and, if loaded, torch (neural encoders) to ``n`` threads: a
    worker owns one slot of the machine, and oversubscribed cores run slower, not faster."""
    import numba

    numba.set_num_threads(max(1, min(n, numba.config.NUMBA_NUM_THREADS)))
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)


class ShardWorker:
    """One worker process (a Ray actor): computes statistics, encodes shards, writes segments.

    Holds the encoder (loaded once per worker: models are not reloaded per shard) and the
    vocabularies it has seen, so that a vocabulary crosses the object store once per worker
    rather than once per shard.
    """

    def __init__(self, threads: int = 1) -> None:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        self.threads = int(threads)
        self.encoder: Any = None
        self._state_dir: tempfile.TemporaryDirectory | None = None
        self._vocabs: dict[str, tuple[Vocabulary, Any]] = {}  # digest -> (vocabulary, boxed object ref)
        _limit_threads(self.threads)

    def load_encoder(self, config: dict[str, Any], state: dict[str, bytes]) -> None:
        """Rebuild the encoder from ``config()`` and :func:`~sparsearch.encoders.pack_state` output
        (empty: unfitted)."""
        directory = None
        if state:
            self._state_dir = tempfile.TemporaryDirectory(prefix="sparsearch-enc-")
            directory = unpack_state(state, self._state_dir.name)
        enc = load_encoder(config, directory)
        if hasattr(enc, "threads"):
            enc.threads = self.threads
        if hasattr(enc, "progress"):
            enc.progress = False
        self.encoder = enc

    def statistics(self, shard: tuple[list[str], list[str]]) -> Any:
        """The encoder's partial corpus statistics of one shard ``(texts, ids)``."""
        return self.encoder.partial_statistics(shard[0])

    def encode(self, shard: tuple[list[str], list[str]]) -> tuple[Vectors, dict[str, Any]]:
        """Encode one shard; returns its vectors (kept in the object store) and a small summary."""
        import ray

        _limit_threads(self.threads)
        t0 = time.perf_counter()
        texts, ids = shard
        batch = self.encoder.encode_documents(texts, ids).validate()
        digest = _digest(batch.vocab.terms)
        if digest not in self._vocabs:
            self._vocabs[digest] = (batch.vocab, [ray.put(batch.vocab.terms)])
        summary = {"n_docs": len(batch), "nnz": batch.nnz, "term_max": term_maxima(batch),
                   "vocab": digest, "vocab_ref": self._vocabs[digest][1], "seconds": time.perf_counter() - t0}
        return (batch.indptr, batch.indices, batch.values, list(batch.ids or [])), summary

    def _vocab(self, digest: str, boxed_ref: list[Any]) -> Vocabulary:
        if digest not in self._vocabs:
            import ray

            self._vocabs[digest] = (Vocabulary(ray.get(boxed_ref[0])), boxed_ref)
        return self._vocabs[digest][0]

    def build(self, vectors: Vectors, vocab: tuple[str, list[Any]], target: tuple[str, list[Any]] | None,
              directory: str, quantization: str, term_scale: np.ndarray | None, codec: str
              ) -> tuple[str, dict[str, Any]]:
        """Invert, quantize (on the global per-term grid ``term_scale``, indexed by global term
        ids) and write one segment into ``directory``.

        ``vocab`` is the shard's vocabulary as ``(digest, [object ref])``; ``target`` the global
        vocabulary when the shard's is not a prefix of it (its term ids are then remapped).
        Returns the segment's name and metadata.
        """
        _limit_threads(self.threads)
        indptr, indices, values, ids = vectors
        batch = SparseBatch(indptr, indices, values, self._vocab(*vocab), ids)
        if target is not None:
            batch = batch.remap(self._vocab(*target), unknown="error")
        return publish_segment(directory, batch, quantization=quantization, codec=codec, term_scale=term_scale)


def _dispatch(ray: Any, actors: list[Any], calls: list[tuple[str, tuple, int]], *, pin: list[int] | None = None,
              desc: str = "", progress: bool = False, depth: int = 2) -> tuple[list[Any], list[Any], list[int]]:
    """Run ``calls[i] = (method, args, num_returns)`` on the actors, ``depth`` in flight per actor.

    A call goes to the next actor with room, or to ``pin[i]``. The last return value of every
    call is fetched as soon as it completes (small summaries; a worker's error surfaces at once).
    Returns (object refs per call, fetched last values, actor index per call), in call order.
    """
    n = len(calls)
    refs: list[Any] = [None] * n
    values: list[Any] = [None] * n
    where = [-1] * n
    shared: deque[int] = deque(range(n)) if pin is None else deque()
    queues = [deque(i for i in range(n) if pin[i] == a) for a in range(len(actors))] if pin is not None else None
    pending: dict[Any, tuple[int, int]] = {}
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n, desc=desc, unit="shard")

    def submit(a: int) -> None:
        q = queues[a] if queues is not None else shared
        if not q:
            return
        i = q.popleft()
        method, args, num_returns = calls[i]
        r = getattr(actors[a], method).options(num_returns=num_returns).remote(*args)
        refs[i], where[i] = r, a
        pending[r[-1] if num_returns > 1 else r] = (i, a)

    for _ in range(depth):
        for a in range(len(actors)):
            submit(a)
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            i, a = pending.pop(done[0])
            values[i] = ray.get(done[0])
            if bar is not None:
                bar.update()
            submit(a)
    finally:
        if bar is not None:
            bar.close()
    return refs, values, where


def build_index_ray(
    path: str | os.PathLike,
    *,
    texts: Sequence[str] | None = None,
    ids: Sequence[str] | None = None,
    encoder: Any = None,
    vectors: SparseBatch | None = None,
    shard_size: int = DEFAULT_SHARD_SIZE,
    workers: int = 2,
    threads_per_worker: int = 1,
    address: str | None = None,
    quantization: str = "uint8",
    codec: str = "byte",
    overwrite: bool = True,
    documents: Any = None,
    extra: dict[str, Any] | None = None,
    progress: bool = False,
):
    """Encode (or take ready vectors) and build an index with Ray workers; returns the opened Index.

    Give either ``texts`` (+ ``ids``, ``encoder``: fitted here on the whole corpus) or
    ``vectors`` (a SparseBatch with ids). The index has one segment per shard of ``shard_size``
    documents and is the same, bit for bit, for any ``workers``; it scores exactly like the
    one-segment index of :func:`~sparsearch.index.build_index` when the encoder's vectors of a
    document do not depend on the other documents of its shard (BM25; for SPLADE the length-sorted
    batches differ, so weights may differ in the last float bits).

    Args:
        path: index directory (on a cluster: a filesystem every worker writes to).
        shard_size: documents per shard (and per segment); the unit of parallelism. Each segment
            has a term table of ``17 B x vocabulary`` besides its postings, so very small shards of
            a large vocabulary waste space.
        workers: Ray actors, one CPU each.
        threads_per_worker: torch / ONNX Runtime / numba threads inside a worker.
        address: Ray to use (see :func:`~sparsearch.distributed.ray_session`); an already
            initialised Ray is used as it is.
        quantization, codec, overwrite, documents, extra: as for ``build_index``.
        progress: a progress bar per stage (statistics, encoding, segments).
    """
    check_settings(quantization, codec)
    if (texts is None) == (vectors is None):
        raise InvalidInputError("give either texts (with an encoder) or vectors")
    if texts is not None:
        if encoder is None:
            raise InvalidInputError("encoding texts needs an encoder")
        texts = list(texts)
        ids = [str(i) for i in ids] if ids is not None else [str(i) for i in range(len(texts))]
        if len(ids) != len(texts):
            raise InvalidInputError(f"{len(ids)} ids for {len(texts)} texts")
    else:
        assert vectors is not None
        vectors.validate()
        ids = list(vectors.ids) if vectors.ids is not None else [str(i) for i in range(len(vectors))]
    if not ids:
        raise InvalidInputError("no documents to index")
    check_documents(ids)
    if workers < 1:
        raise InvalidInputError(f"workers must be >= 1, got {workers}")
    bounds = plan_shards(len(ids), shard_size)
    path = Path(path)
    t0 = time.perf_counter()
    seconds: dict[str, float] = {}
    with Directory(path).lock(), ray_session(address, num_cpus=workers) as ray:
        old = check_target(path, overwrite)
        cpus = ray.cluster_resources().get("CPU", 0)
        if cpus < workers:  # actors beyond the CPUs would never start, and their shards never finish
            raise InvalidInputError(f"workers={workers} needs {workers} CPUs; the Ray cluster has {cpus:g}")
        Worker = ray.remote(num_cpus=1)(ShardWorker)
        actors = [Worker.options(scheduling_strategy="SPREAD").remote(threads_per_worker) for _ in range(workers)]
        try:
            t = time.perf_counter()
            if texts is not None:
                shards = [ray.put((texts[a:b], ids[a:b])) for a, b in bounds]
                _fit(ray, actors, encoder, texts, shards, progress)
                seconds["statistics"] = time.perf_counter() - t
                t = time.perf_counter()
                state = pack_state(encoder)
                ray.get([a.load_encoder.remote(encoder.config(), state) for a in actors])
                refs, summaries, where = _dispatch(ray, actors, [("encode", (s,), 2) for s in shards],
                                                   desc="encode", progress=progress)
                del shards
                vec_refs = [r[0] for r in refs]
            else:
                assert vectors is not None
                vocab_box = [ray.put(vectors.vocab.terms)]
                digest = _digest(vectors.vocab.terms)
                vec_refs, summaries = [], []
                for a, b in bounds:
                    part = vectors[a:b]
                    vec_refs.append(ray.put((part.indptr, part.indices, part.values, ids[a:b])))
                    summaries.append({"n_docs": b - a, "nnz": part.nnz, "vocab": digest, "vocab_ref": vocab_box,
                                      "term_max": term_maxima(part)})
                where = []
            seconds["encode"] = time.perf_counter() - t
            t = time.perf_counter()
            vocab, targets = _global_vocabulary(ray, summaries)
            # the one-segment arithmetic: each term's largest weight / 255, over the whole corpus
            scale = ray.put(_global_term_maxima(ray, summaries, vocab) / 255.0) if quantization == "uint8" else None
            calls = [("build", (vec_refs[i], (s["vocab"], s["vocab_ref"]), targets[s["vocab"]], str(path),
                                quantization, scale, codec), 1) for i, s in enumerate(summaries)]
            del vec_refs
            _, built, _ = _dispatch(ray, actors, calls, pin=where if texts is not None else None, desc="segments",
                                    progress=progress)
            seconds["segments"] = time.perf_counter() - t
        finally:
            for a in actors:
                ray.kill(a)
        t = time.perf_counter()
        for name, _ in built:
            if not (path / name / "segment.json").exists():
                raise BackendError(f"segment {name} written by a Ray worker is not visible in {path}: on a "
                                   f"multi-machine cluster the index directory must be on a shared filesystem")
        manifest = new_manifest(path, old, built, quantization=quantization, codec=codec, encoder=encoder,
                                extra=extra, documents=documents)
        seconds["commit"] = time.perf_counter() - t
        manifest["distributed"] = {"shard_size": shard_size, "n_shards": len(bounds), "workers": workers,
                                   "threads_per_worker": threads_per_worker, "grid": "per-term, global",
                                   "seconds": seconds}
        manifest["build_seconds"] = time.perf_counter() - t0
        commit(path, manifest, vocab)
    return Index.open(path)


def _fit(ray: Any, actors: list[Any], encoder: Any, texts: list[str], shards: list[Any], progress: bool) -> None:
    """Fit ``encoder`` on the whole corpus: merged per-shard statistics when its fit allows it,
    else on the driver; encoders that learn nothing are left as they are."""
    if type(encoder).fit is SparseEncoder.fit:
        return
    if not encoder.mergeable_fit():
        encoder.fit(texts)
        return
    ray.get([a.load_encoder.remote(encoder.config(), {}) for a in actors])
    _, parts, _ = _dispatch(ray, actors, [("statistics", (s,), 1) for s in shards], desc="statistics",
                            progress=progress)
    encoder.fit_statistics(parts)


def _global_term_maxima(ray: Any, summaries: list[dict[str, Any]], vocab: Vocabulary) -> np.ndarray:
    """Largest weight of every term of the global ``vocab`` over all shards (their ``term_max``,
    over their own vocabularies, mapped by term string)."""
    out = np.zeros(len(vocab), np.float64)
    ids: dict[str, np.ndarray] = {}
    for s in summaries:
        if s["vocab"] not in ids:
            terms = ray.get(s["vocab_ref"][0])
            ids[s["vocab"]] = np.fromiter((vocab.get(t) for t in terms), np.int64, len(terms))
        m = np.asarray(s["term_max"], np.float64)
        g = ids[s["vocab"]][:len(m)]  # distinct ids: one vocabulary maps each term once
        out[g] = np.maximum(out[g], m)
    return out


def _global_vocabulary(ray: Any, summaries: list[dict[str, Any]]
                       ) -> tuple[Vocabulary, dict[str, tuple[str, list[Any]] | None]]:
    """Merge the shards' vocabularies in shard order (each distinct one fetched once).

    Returns the global vocabulary and, per shard vocabulary digest, ``None`` when its ids are
    already global ids (a prefix of the global vocabulary), else the global vocabulary as
    ``(digest, [object ref])`` to remap onto.
    """
    distinct: dict[str, list[Any]] = {}
    for s in summaries:
        distinct.setdefault(s["vocab"], s["vocab_ref"])
    terms = {d: ray.get(box[0]) for d, box in distinct.items()}
    order = list(distinct)
    vocab = Vocabulary(terms[order[0]])
    for d in order[1:]:
        for t in terms[d]:
            vocab.add(t)
    targets: dict[str, tuple[str, list[Any]] | None] = {}
    global_ref: tuple[str, list[Any]] | None = None
    for d in order:
        if vocab.terms[:len(terms[d])] == terms[d]:
            targets[d] = None
        else:
            if global_ref is None:
                global_ref = (_digest(vocab.terms), [ray.put(vocab.terms)])
            targets[d] = global_ref
    return vocab, targets
