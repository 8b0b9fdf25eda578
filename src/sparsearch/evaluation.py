"""BEIR-format collections, effectiveness metrics and efficiency figures.

* :func:`load_beir`: ``corpus.jsonl`` / ``queries.jsonl`` / ``qrels/<split>.tsv``; a document's
  text is ``title + " " + text`` as BEIR's dense and sparse baselines use it.
* :func:`evaluate`: nDCG@10, R@100, R@1000, MRR@10 (``RR@10``) through ``ir-measures``.
* :func:`write_trec_run` / :func:`read_trec_run`: the 6-column TREC run format.
* :class:`LatencyStats`: per-query latency percentiles and throughput; :func:`time_queries`
  measures single-query latency of any search function the same way everywhere.
* :func:`to_run`: ``(scores, docnums)`` of any searcher -> a run; :func:`recall_at_k` (strict
  or tie-aware) and :func:`same_topk` (tie-aware comparison of two result sets).
* :func:`run_evaluation`: encode a split's queries, search, score and time (CLI ``evaluate``,
  ``demo``).

A *run* is ``{query_id: {doc_id: score}}`` and *qrels* are ``{query_id: {doc_id: grade}}``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InvalidInputError, MissingFileError
from .searching import ExactParams, SearchParams, mode_of
from .vectors import FormatError, check_duplicate_policy, check_id

__all__ = [
    "BeirDataset", "load_beir", "load_qrels", "evaluate", "per_query", "write_trec_run", "read_trec_run",
    "LatencyStats", "DEFAULT_METRICS", "to_run", "recall_at_k", "same_topk", "time_queries", "run_evaluation",
]

Run = dict[str, dict[str, float]]
Qrels = dict[str, dict[str, int]]

DEFAULT_METRICS: tuple[str, ...] = ("nDCG@10", "R@100", "R@1000", "RR@10")


@dataclass
class BeirDataset:
    """A BEIR collection restricted to one qrels split.

    Attributes:
        corpus: ``{doc_id: {"title": str, "text": str}}`` in file order.
        queries: ``{query_id: text}`` for the queries that have judgements in ``split``.
        qrels: ``{query_id: {doc_id: grade}}``.
    """

    name: str
    split: str
    corpus: dict[str, dict[str, str]]
    queries: dict[str, str]
    qrels: Qrels
    path: Path | None = None
    all_queries: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def doc_ids(self) -> list[str]:
        return list(self.corpus)

    @property
    def query_ids(self) -> list[str]:
        return list(self.queries)

    def doc_texts(self) -> list[str]:
        """``title + " " + text`` per document, in corpus order."""
        return [(d.get("title", "") + " " + d.get("text", "")).strip() for d in self.corpus.values()]

    def query_texts(self) -> list[str]:
        return list(self.queries.values())

    def titles_and_bodies(self) -> tuple[list[str], list[str]]:
        """Separate titles and bodies (for self-supervised title/body pairs)."""
        return [d.get("title", "") for d in self.corpus.values()], [d.get("text", "") for d in self.corpus.values()]

    def split_qrels(self, split: str) -> Qrels:
        """Judgements of another split of the same collection (e.g. ``train`` for tuning)."""
        if self.path is None:
            raise InvalidInputError("dataset was not loaded from disk")
        return load_qrels(self.path / "qrels" / f"{split}.tsv")


def _read_jsonl_objects(path: Path) -> Iterable[tuple[int, dict]]:
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise FormatError(f"{path}, line {lineno}: malformed JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(obj, dict) or "_id" not in obj:
                raise FormatError(f"{path}, line {lineno}: expected an object with an '_id' field")
            yield lineno, obj


def _read_keyed_objects(path: Path, on_duplicate: str = "error") -> dict[str, dict]:
    """``{_id: object}`` of a BEIR JSONL file in file order; a repeated ``_id`` raises
    :class:`FormatError` naming the file and both lines (``on_duplicate="error"``), or keeps
    the ``"first"`` / ``"last"`` object (at the position of the first)."""
    check_duplicate_policy(on_duplicate)
    out: dict[str, dict] = {}
    first: dict[str, int] = {}
    for lineno, obj in _read_jsonl_objects(path):
        key = check_id(obj["_id"], f"{path}, line {lineno}", "_id")
        if key in first:
            if on_duplicate == "error":
                raise FormatError(f"{path}, line {lineno}: duplicate _id {key!r} (first at line {first[key]}); "
                                  f"ids must be unique (or choose on_duplicate='first' / 'last')")
            if on_duplicate == "first":
                continue
        first.setdefault(key, lineno)
        out[key] = obj
    return out


def load_qrels(path: str | os.PathLike) -> Qrels:
    """Read a BEIR qrels TSV (``query-id  corpus-id  score``, header optional)."""
    qrels: Qrels = {}
    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"no qrels file {path}")
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            parts = line.rstrip("\n").split("\t")
            if lineno == 1 and parts[0] == "query-id":
                continue
            if not line.strip():
                continue
            if len(parts) == 4:  # TREC qrels: qid 0 docid grade
                parts = [parts[0], parts[2], parts[3]]
            if len(parts) != 3:
                raise FormatError(f"{path}, line {lineno}: expected 3 tab-separated fields, got {len(parts)}")
            try:
                grade = int(float(parts[2]))
            except ValueError:
                raise FormatError(f"{path}, line {lineno}: relevance {parts[2]!r} is not a number") from None
            qrels.setdefault(parts[0], {})[parts[1]] = grade
    return qrels


def load_beir(path: str | os.PathLike, split: str | None = "test", *, on_duplicate: str = "error") -> BeirDataset:
    """Load a BEIR-layout folder; only queries judged in ``qrels/<split>.tsv`` are kept
    (``split=None``: the corpus and all query texts, no judgements, no query kept).

    ``on_duplicate``: a repeated ``_id`` in ``corpus.jsonl`` or ``queries.jsonl`` raises
    :class:`FormatError` naming the file and both lines (``"error"``, the default), or keeps the
    ``"first"`` / ``"last"`` record with that id (:data:`~sparsearch.vectors.DUPLICATE_POLICIES`).
    """
    path = Path(path)
    check_duplicate_policy(on_duplicate)
    for need in ("corpus.jsonl", "queries.jsonl"):
        if not (path / need).exists():
            raise MissingFileError(f"{path} is not a BEIR collection: {need} is missing")
    corpus = {i: {"title": o.get("title") or "", "text": o.get("text") or ""}
              for i, o in _read_keyed_objects(path / "corpus.jsonl", on_duplicate).items()}
    all_queries = {i: o.get("text") or "" for i, o in _read_keyed_objects(path / "queries.jsonl", on_duplicate).items()}
    qrels = {} if split is None else load_qrels(path / "qrels" / f"{split}.tsv")
    missing = [q for q in qrels if q not in all_queries]
    if missing:
        raise FormatError(f"{path}: qrels/{split}.tsv judges {len(missing)} queries absent from queries.jsonl "
                          f"(first: {missing[0]!r})")
    queries = {q: all_queries[q] for q in all_queries if q in qrels}
    return BeirDataset(path.name, split, corpus, queries, qrels, path, all_queries)


def _measures(metrics: Sequence[str]):
    import ir_measures

    return [ir_measures.parse_measure(m) for m in metrics]


def evaluate(
    run: Mapping[str, Mapping[str, float]],
    qrels: Qrels,
    metrics: Sequence[str] = DEFAULT_METRICS,
    *,
    empty_queries: str = "skip",
) -> dict[str, float]:
    """Mean of each metric over judged queries.

    Metric names follow ir-measures: ``nDCG@10``, ``R@100``, ``RR@10`` (MRR@10), ``AP``, ...

    ``empty_queries``: ``"skip"`` averages over the judged queries that retrieved something,
    which is what pytrec_eval (and so BEIR's published tables, Anserini and bm25s) report;
    ``"zero"`` counts a judged query that retrieved nothing as 0 (stricter).
    """
    if empty_queries not in ("skip", "zero"):
        raise InvalidInputError(f"empty_queries must be 'skip' or 'zero', got {empty_queries!r}")
    import ir_measures

    measures = _measures(metrics)
    run = {q: {d: float(s) for d, s in docs.items()} for q, docs in run.items() if q in qrels and docs}
    # ir-measures' providers disagree on queries absent from the run (some skip, some count
    # 0), so aggregate per-query values ourselves under one explicit convention.
    values: dict[str, dict[str, float]] = {str(m): {} for m in measures}
    for r in ir_measures.iter_calc(measures, qrels, run):
        values[str(r.measure)][r.query_id] = float(r.value)
    queries = list(run) if empty_queries == "skip" else list(qrels)
    return {m: (sum(v.get(q, 0.0) for q in queries) / len(queries) if queries else 0.0) for m, v in values.items()}


def per_query(run: Mapping[str, Mapping[str, float]], qrels: Qrels, metric: str = "nDCG@10") -> dict[str, float]:
    """Metric value per judged query (0 for queries missing from the run)."""
    import ir_measures

    (m,) = _measures([metric])
    out = {q: 0.0 for q in qrels}
    run = {q: {d: float(s) for d, s in docs.items()} for q, docs in run.items() if q in qrels}
    for r in ir_measures.iter_calc([m], qrels, run):
        out[r.query_id] = float(r.value)
    return out


def write_trec_run(run: Mapping[str, Mapping[str, float]], path: str | os.PathLike, tag: str = "sparsearch") -> None:
    """Write ``qid Q0 docid rank score tag`` lines, ranks by descending score then doc id."""
    with open(path, "w", encoding="utf-8") as f:
        for qid, docs in run.items():
            ranked = sorted(docs.items(), key=lambda x: (-x[1], x[0]))
            for rank, (did, score) in enumerate(ranked, 1):
                f.write(f"{qid} Q0 {did} {rank} {score:.6f} {tag}\n")


def read_trec_run(path: str | os.PathLike) -> Run:
    run: Run = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 6:
                raise FormatError(f"{path}, line {lineno}: a TREC run line has 6 fields, got {len(parts)}")
            try:
                run.setdefault(parts[0], {})[parts[2]] = float(parts[4])
            except ValueError:
                raise FormatError(f"{path}, line {lineno}: score {parts[4]!r} is not a number") from None
    return run


@dataclass
class LatencyStats:
    """Per-query latencies (seconds) summarised as percentiles (milliseconds) and QPS."""

    latencies_s: np.ndarray
    wall_s: float

    @classmethod
    def measure(cls, latencies_s: Sequence[float], wall_s: float | None = None) -> "LatencyStats":
        lat = np.asarray(latencies_s, dtype=np.float64)
        return cls(lat, float(lat.sum()) if wall_s is None else float(wall_s))

    @property
    def qps(self) -> float:
        return len(self.latencies_s) / self.wall_s if self.wall_s > 0 else float("inf")

    def summary(self) -> dict[str, float]:
        lat_ms = self.latencies_s * 1e3
        pct = np.percentile(lat_ms, [50, 95, 99]) if len(lat_ms) else [float("nan")] * 3
        return {"queries": float(len(lat_ms)), "mean_ms": float(lat_ms.mean()) if len(lat_ms) else float("nan"),
                "p50_ms": float(pct[0]), "p95_ms": float(pct[1]), "p99_ms": float(pct[2]), "qps": self.qps}


# ------------------------------------------------------------------------ search results
def to_run(scores: np.ndarray, docnums: np.ndarray, doc_ids: Sequence[str],
           query_ids: Sequence[str] | None = None) -> Run:
    """``(scores, docnums)`` of a searcher (``-1`` = no hit) as ``{query_id: {doc_id: score}}``.

    ``query_ids`` default to ``"0", "1", ...``; ``doc_ids[d]`` names doc number ``d``.
    """
    qids = list(query_ids) if query_ids is not None else [str(i) for i in range(len(docnums))]
    if len(qids) != len(docnums):
        raise InvalidInputError(f"{len(qids)} query ids for {len(docnums)} result rows")
    run: Run = {}
    for qid, srow, drow in zip(qids, np.asarray(scores).tolist(), np.asarray(docnums).tolist()):
        run[qid] = {doc_ids[d]: float(s) for d, s in zip(drow, srow) if d >= 0}
    return run


def recall_at_k(found: np.ndarray, exact_docs: np.ndarray, k: int = 10, *, exact_scores: np.ndarray | None = None,
                rtol: float = 1e-5) -> float:
    """Mean over queries of |found top-k ∩ exact top-k| / |exact top-k| (doc numbers, ``-1`` padded;
    queries with no exact hit are skipped; 1.0 when none has one).

    With ``exact_scores`` (and ``exact_docs`` deeper than ``k``), recall is *tie-aware*: a found
    document whose exact score equals the k-th exact score (within ``rtol``) also counts, since
    any of the tied documents is a correct k-th result.
    """
    vals = []
    for i, (f, e) in enumerate(zip(np.asarray(found)[:, :k], np.asarray(exact_docs))):
        f, top = f[f >= 0], e[:k][e[:k] >= 0]
        if not len(top):
            continue
        ok = top
        if exact_scores is not None:
            s = np.asarray(exact_scores[i])
            kth = s[len(top) - 1]
            ok = np.union1d(top, e[(e >= 0) & (s >= kth * (1 - rtol))])
        vals.append(np.isin(f, ok).sum() / len(top))
    return float(np.mean(vals)) if vals else 1.0


def same_topk(ref: tuple[np.ndarray, np.ndarray], got: tuple[np.ndarray, np.ndarray], *, rtol: float = 1e-5,
              atol: float = 1e-6) -> tuple[bool, str]:
    """Tie-aware comparison of two ``(scores, docnums)`` results of the same queries (FAISS-style).

    Equal when, per query, the scores agree rank by rank (within ``rtol``/``atol``) and the
    documents scoring strictly above the last (k-th) score are the same set: documents tied at
    the k-th score may differ, since either is a correct answer. Returns ``(equal, reason)``,
    the reason naming the first query that differs.
    """
    rs, rd = (np.asarray(a) for a in ref)
    gs, gd = (np.asarray(a) for a in got)
    if rd.shape[0] != gd.shape[0]:
        return False, f"{rd.shape[0]} vs {gd.shape[0]} queries"
    for q in range(rd.shape[0]):
        rv, gv = rd[q] >= 0, gd[q] >= 0
        if rv.sum() != gv.sum():
            return False, f"query {q}: {rv.sum()} vs {gv.sum()} hits"
        a, b = rs[q][rv].astype(np.float64), gs[q][gv].astype(np.float64)
        if not np.allclose(a, b, rtol=rtol, atol=atol):
            j = int(np.argmax(~np.isclose(a, b, rtol=rtol, atol=atol)))
            return False, f"query {q}, rank {j + 1}: score {a[j]!r} vs {b[j]!r}"
        if len(a):
            last = a[-1]
            above_r = rd[q][rv][a > last + atol + rtol * abs(last)]
            above_g = gd[q][gv][b > last + atol + rtol * abs(last)]
            if set(above_r.tolist()) != set(above_g.tolist()):
                return False, f"query {q}: different documents above the k-th score"
    return True, ""


def time_queries(search: Callable[[int], Any], n: int, *, warmup: int = 2) -> np.ndarray:
    """Latency in seconds of ``search(i)`` for ``i in range(n)``, one call at a time, after
    ``warmup`` untimed calls (compilation, caches). Every benchmark and report times this way."""
    for i in range(min(warmup, n)):
        search(i)
    lat = np.empty(n)
    for i in range(n):
        t = time.perf_counter()
        search(i)
        lat[i] = time.perf_counter() - t
    return lat


def run_evaluation(searcher: Any, ds: BeirDataset, *, k: int = 1000, params: SearchParams | None = None,
                   metrics: Sequence[str] | None = None, run_path: str | os.PathLike | None = None
                   ) -> dict[str, Any]:
    """Encode the split's queries with the index's encoder, search, score the run and time it.

    ``searcher``: an :class:`~sparsearch.index.Index`, or a searcher over one with an ``index``
    attribute (:class:`~sparsearch.index.approximate.ApproximateIndex`): the encoder, sizes and
    build figures reported are that index's. ``params``: the search's parameters (``None``: the
    searcher's defaults, exact for an Index). Returns quality (both empty-query conventions),
    single-query latency at k=10 on one thread, batch QPS, query-encoding time and index sizes.
    """
    metrics = list(metrics or DEFAULT_METRICS)
    index = getattr(searcher, "index", searcher)
    enc = index.load_encoder()
    enc.encode_queries(ds.query_texts()[:2])  # load tokenizers/models outside the timing
    t = time.perf_counter()
    qv = enc.encode_queries(ds.query_texts(), ds.query_ids)
    t_enc = time.perf_counter() - t
    one = replace(params, threads=1) if params is not None else ExactParams(threads=1)
    searcher.search(qv[:2], 10, params)  # compile / warm caches outside the timings
    t = time.perf_counter()
    lists = None
    if hasattr(searcher, "search_detailed"):  # a hybrid index: keep each representation's list too
        scores, docnums, lists, _ = searcher.search_detailed(qv, k, params)
    else:
        scores, docnums = searcher.search(qv, k, params)
    t_batch = time.perf_counter() - t
    run = to_run(scores, docnums, searcher.doc_ids, qv.ids)
    quality = evaluate(run, ds.qrels, metrics)
    strict = evaluate(run, ds.qrels, metrics, empty_queries="zero")
    lat10 = LatencyStats.measure(time_queries(lambda i: searcher.search(qv[i:i + 1], 10, one), len(qv)))
    t = time.perf_counter()
    searcher.search(qv, 10, params)
    batch10 = time.perf_counter() - t
    if run_path:
        write_trec_run(run, run_path)
    st = index.stats()
    manifest = getattr(index, "manifest", {}) or {}
    hybrid = _hybrid_report(searcher, enc, qv, ds, k, params, metrics, lists) if lists is not None else None
    return {
        "collection": ds.name, "split": ds.split, "queries": len(qv), "mode": mode_of(searcher.resolve_params(params) if hasattr(searcher, "resolve_params") else params), "k": k,
        "encoder": st.get("encoder"), "quality": quality, "quality_empty_as_zero": strict,
        "queries_without_results": sum(1 for q in ds.qrels if not run.get(q)),
        "latency_k10_single_thread": lat10.summary(),
        "qps_k10_batch_all_threads": len(qv) / batch10,
        f"qps_k{k}_batch_all_threads": len(qv) / t_batch,
        "query_encoding_ms_per_query": 1e3 * t_enc / max(len(qv), 1),
        "build_seconds": manifest.get("build_seconds"), "encode_seconds": manifest.get("encode_seconds"),
        "index": {k2: v for k2, v in st.items() if k2 not in ("encoder", "members")},
        **({"hybrid": hybrid} if hybrid is not None else {}),
    }


def _hybrid_report(searcher: Any, enc: Any, qv: Any, ds: BeirDataset, k: int, params: SearchParams | None,
                   metrics: Sequence[str], lists: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, Any]:
    """For a hybrid index: each representation's own quality (its top ``k`` of the same search,
    ``lists``), and the single-query time (k=10, 1 thread) split into each representation's search
    and the fusion, plus each representation's query-encoding time."""
    one = replace(params, threads=1) if params is not None else None
    quality = {name: evaluate(to_run(s[:, :k], d[:, :k], searcher.doc_ids, qv.ids), ds.qrels, metrics)
               for name, (s, d) in lists.items()}
    parts: dict[str, list[float]] = {}

    def one_query(i: int) -> None:
        for name, sec in searcher.search_detailed(qv[i:i + 1], 10, one)[3].items():
            parts.setdefault(name, []).append(sec)

    time_queries(one_query, len(qv))
    n = len(qv)
    ms = {name: LatencyStats.measure(np.asarray(v[-n:])).summary() for name, v in parts.items()}
    encoding = getattr(enc, "last_seconds", {}) or {}
    return {"representations": list(lists), "quality_per_representation": quality,
            "latency_k10_single_thread_ms": ms,
            "query_encoding_ms_per_query": {name: 1e3 * sec / max(n, 1) for name, sec in encoding.items()},
            "fusion": _fusion_summary(searcher.resolve_params(params))}


def _fusion_summary(p: Any) -> dict[str, Any]:
    return {"fusion": p.fusion, "weights": None if p.weights is None else list(p.weights), "rrf_k": p.rrf_k,
            "depth": p.depth, "sparse": mode_of(p.sparse)}
