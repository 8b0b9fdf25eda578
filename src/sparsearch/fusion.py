"""Hybrid search: fuse runs (BM25, SPLADE, CSR, dense) and tune the fusion on a dev split.

A *run* is ``{query_id: {doc_id: score}}``.

* :func:`rrf`: reciprocal rank fusion, ``score(d) = sum_i w_i / (k + rank_i(d))`` (ranks from 1;
  a document absent from run ``i`` gets nothing from it). Ties within a run are broken by
  doc id, so ranks are deterministic.
* :func:`normalize_run`: per-query ``"minmax"`` (to [0, 1]) or ``"zscore"`` (mean 0, std 1).
* :func:`interpolate` / :func:`convex`: ``alpha * norm(A) + (1 - alpha) * norm(B)`` (or any
  number of runs with weights summing to 1) over the union of retrieved documents; a document
  missing from a run gets that run's lowest normalised score for the query (0 for min-max),
  i.e. it is treated as ranked at the bottom of that run.
* :func:`fuse`: the same fusions for the results of ONE query (``{doc_id: score}`` per searcher),
  as the search service fuses the indexes it serves.
* :func:`fuse_topk`: the same fusions on searchers' ``(scores, docnums)`` arrays (the search
  protocol's output) for a batch of queries: what a hybrid index fuses its representations with.
* :func:`tune_interpolation` / :func:`tune_rrf`: grid search of the weight (or RRF ``k``) on
  *dev* qrels. The tuning functions only ever see the qrels passed to them; evaluate the
  chosen setting on test afterwards with :func:`interpolate` / :func:`rrf`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from .errors import InvalidInputError
from .evaluation import evaluate, to_run

__all__ = ["fuse_topk", "tune_fusion", "weight_grid", "FusionChoice", "normalize_run", "rrf", "interpolate", "convex", "fuse", "ranked", "tune_interpolation", "tune_rrf",
           "TuneResult", "restrict"]

Run = dict[str, dict[str, float]]
NORMS = ("minmax", "zscore", "none")
METHODS = ("rrf", "minmax", "zscore")


def ranked(docs: Mapping[str, float]) -> list[tuple[str, float]]:
    """``(doc_id, score)`` by descending score, ties by ascending doc id (the order every fusion ranks by)."""
    return sorted(docs.items(), key=lambda x: (-x[1], x[0]))



def normalize_run(run: Mapping[str, Mapping[str, float]], method: str = "minmax") -> Run:
    """Per-query score normalisation.

    ``minmax``: ``(s - min) / (max - min)``; a query whose scores are all equal maps to 1.
    ``zscore``: ``(s - mean) / std`` (population std); all-equal scores map to 0.
    ``none``: scores unchanged.
    """
    if method not in NORMS:
        raise InvalidInputError(f"unknown normalisation {method!r}; use one of {NORMS}")
    return {q: _normalize(docs, method) for q, docs in run.items()}


def _normalize(docs: Mapping[str, float], method: str) -> dict[str, float]:
    """One query's ``{doc_id: score}`` normalised (see :func:`normalize_run`)."""
    if not docs or method == "none":
        return {d: float(s) for d, s in docs.items()}
    v = np.fromiter(docs.values(), dtype=np.float64, count=len(docs))
    return dict(zip(docs.keys(), _normalized(v, method).tolist()))


def _normalized(v: np.ndarray, method: str) -> np.ndarray:
    """One list's scores (float64, non-empty) normalised by ``"minmax"`` or ``"zscore"``."""
    if method == "minmax":
        lo, hi = v.min(), v.max()
        return (v - lo) / (hi - lo) if hi > lo else np.ones_like(v)
    mu, sd = v.mean(), v.std()
    return (v - mu) / sd if sd > 0 else np.zeros_like(v)


def restrict(run: Mapping[str, Mapping[str, float]], depth: int | None) -> Run:
    """Keep each query's top ``depth`` documents (all when ``None``)."""
    if depth is None:
        return {q: dict(d) for q, d in run.items()}
    return {q: dict(ranked(d)[:depth]) for q, d in run.items()}


def rrf(runs: Sequence[Mapping[str, Mapping[str, float]]], k: float = 60.0, weights: Sequence[float] | None = None,
        depth: int | None = None) -> Run:
    """Reciprocal rank fusion of ``runs`` (see module docstring); ``depth`` cuts each run first."""
    if not runs:
        raise InvalidInputError("rrf needs at least one run")
    weights = [1.0] * len(runs) if weights is None else list(weights)
    if len(weights) != len(runs):
        raise InvalidInputError(f"{len(weights)} weights for {len(runs)} runs")
    out: Run = {}
    for run, w in zip(runs, weights):
        for q, docs in run.items():
            _rrf_add(out.setdefault(q, {}), docs, w, k, depth)
    return out


def _rrf_add(acc: dict[str, float], docs: Mapping[str, float], w: float, k: float, depth: int | None) -> None:
    """Add one run's ``w / (k + rank)`` for one query to ``acc``."""
    for r, (d, _) in enumerate(ranked(docs)[:depth] if depth is not None else ranked(docs), 1):
        acc[d] = acc.get(d, 0.0) + w / (k + r)


def convex(runs: Sequence[Mapping[str, Mapping[str, float]]], weights: Sequence[float], norm: str = "minmax",
           depth: int | None = None) -> Run:
    """``sum_i w_i * norm(run_i)`` over the union of documents (missing: the run's minimum)."""
    if len(weights) != len(runs) or not runs:
        raise InvalidInputError(f"{len(weights)} weights for {len(runs)} runs")
    normed = [normalize_run(restrict(r, depth), norm) for r in runs]
    queries: dict[str, None] = {}
    for r in normed:
        queries.update(dict.fromkeys(r))
    return {q: _weighted_sum([r.get(q, {}) for r in normed], weights, norm) for q in queries}


def _weighted_sum(per: Sequence[Mapping[str, float]], weights: Sequence[float], norm: str) -> dict[str, float]:
    """One query's normalised results summed with ``weights`` (a missing document: the run's minimum)."""
    floor = [min(p.values()) if p else 0.0 for p in per]
    if norm == "minmax":
        floor = [0.0] * len(per)
    docs: dict[str, None] = {}
    for p in per:
        docs.update(dict.fromkeys(p))
    return {d: float(sum(w * p.get(d, f) for w, p, f in zip(weights, per, floor))) for d in docs}


def fuse(results: Sequence[Mapping[str, float]], method: str = "rrf", weights: Sequence[float] | None = None, *,
         rrf_k: float = 60.0) -> dict[str, float]:
    """Fuse ONE query's results of several searchers (``{doc_id: score}`` each), as :func:`rrf`
    (``method="rrf"``, constant ``rrf_k``) or :func:`convex` after ``"minmax"`` / ``"zscore"``
    normalisation with ``weights`` scaled to sum to 1 (default: equal weights)."""
    if not results:
        raise InvalidInputError("fuse needs at least one result")
    weights = [1.0] * len(results) if weights is None else [float(w) for w in weights]
    if len(weights) != len(results):
        raise InvalidInputError(f"{len(weights)} weights for {len(results)} results")
    if method == "rrf":
        acc: dict[str, float] = {}
        for docs, w in zip(results, weights):
            _rrf_add(acc, docs, w, rrf_k, None)
        return acc
    if method not in METHODS:
        raise InvalidInputError(f"unknown fusion {method!r}; use one of {METHODS}")
    total = sum(weights)
    if total <= 0:
        raise InvalidInputError("fusion weights sum to 0")
    return _weighted_sum([_normalize(d, method) for d in results], [w / total for w in weights], method)


def interpolate(run_a: Mapping[str, Mapping[str, float]], run_b: Mapping[str, Mapping[str, float]],
                alpha: float, norm: str = "minmax", depth: int | None = None) -> Run:
    """``alpha * norm(run_a) + (1 - alpha) * norm(run_b)`` per query (``0 <= alpha <= 1``)."""
    if not 0.0 <= alpha <= 1.0 or math.isnan(alpha):
        raise InvalidInputError(f"alpha must be in [0, 1], got {alpha}")
    return convex([run_a, run_b], [alpha, 1.0 - alpha], norm, depth)


@dataclass
class TuneResult:
    """Best setting found on the dev qrels and the whole grid (``table``: setting -> metric)."""

    best: float
    score: float
    metric: str
    n_queries: int
    table: dict[float, float] = field(default_factory=dict)


def _dev_view(runs, dev_qrels):
    if not dev_qrels:
        raise InvalidInputError("tuning needs non-empty dev qrels")
    qs = set(dev_qrels)
    views = [{q: d for q, d in r.items() if q in qs} for r in runs]
    if not any(views):
        raise InvalidInputError("the runs contain none of the dev queries: run the dev (or train) queries to tune on")
    return views


def _pick(table: dict[float, float], metric: str, n: int, prefer: float) -> TuneResult:
    # best metric; ties go to the setting closest to ``prefer``, then the smaller one
    best = max(table, key=lambda a: (round(table[a], 12), -abs(a - prefer), -a))
    return TuneResult(best, table[best], metric, n, table)


def tune_interpolation(run_a: Mapping[str, Mapping[str, float]], run_b: Mapping[str, Mapping[str, float]],
                       dev_qrels: Mapping[str, Mapping[str, int]], *, norm: str = "minmax",
                       alphas: Sequence[float] | None = None, metric: str = "nDCG@10",
                       depth: int | None = None) -> TuneResult:
    """Grid-search ``alpha`` of :func:`interpolate` on ``dev_qrels`` (only dev queries are scored).

    Pass runs of the dev (or train) queries and their qrels; never the test qrels.
    """

    a, b = _dev_view([run_a, run_b], dev_qrels)
    alphas = np.round(np.linspace(0, 1, 21), 4).tolist() if alphas is None else list(alphas)
    table = {float(al): float(evaluate(interpolate(a, b, al, norm, depth), dict(dev_qrels), (metric,))[metric])
             for al in alphas}
    return _pick(table, metric, len(dev_qrels), 0.5)


def tune_rrf(runs: Sequence[Mapping[str, Mapping[str, float]]], dev_qrels: Mapping[str, Mapping[str, int]], *,
             ks: Sequence[float] = (1, 5, 10, 20, 40, 60, 100), weights: Sequence[float] | None = None,
             metric: str = "nDCG@10", depth: int | None = None) -> TuneResult:
    """Grid-search the RRF constant ``k`` on ``dev_qrels``."""

    views = _dev_view(runs, dev_qrels)
    table = {float(k): float(evaluate(rrf(views, k, weights, depth), dict(dev_qrels), (metric,))[metric]) for k in ks}
    return _pick(table, metric, len(dev_qrels), 60.0)


def _fuse_row(results: Sequence[tuple[np.ndarray, np.ndarray]], qi: int, method: str, weights: np.ndarray,
              rrf_k: float) -> tuple[np.ndarray, np.ndarray]:
    """One query's fused ``(docnums, scores)`` over the union of the lists (unsorted)."""
    docs, contrib, floors = [], [], np.zeros(len(results))
    for m, (s, d) in enumerate(results):
        valid = d[qi] >= 0
        dm, sm = d[qi][valid], s[qi][valid].astype(np.float64)
        if method == "rrf":
            # rank by the list's own order (descending score, ties by docnum: the protocol's order)
            c = weights[m] / (rrf_k + np.arange(1, len(dm) + 1))
        elif len(sm):
            c = weights[m] * _normalized(sm, method)
            # a document this list did not return counts as its lowest normalised score
            floors[m] = c.min()
            c = c - floors[m]
        else:
            c = sm
        docs.append(dm)
        contrib.append(c)
    if not docs:
        return np.zeros(0, np.int64), np.zeros(0)
    alld = np.concatenate(docs).astype(np.int64)
    uniq, inv = np.unique(alld, return_inverse=True)
    fused = np.bincount(inv, weights=np.concatenate(contrib), minlength=len(uniq))
    return uniq, fused + floors.sum()


def fuse_topk(results: Sequence[tuple[np.ndarray, np.ndarray]], k: int, method: str = "rrf",
              weights: Sequence[float] | None = None, rrf_k: float = 60.0) -> tuple[np.ndarray, np.ndarray]:
    """Fuse several searchers' results for the same queries into one top-``k``.

    Args:
        results: per searcher ``(scores float (nq, k_i), docnums int (nq, k_i))`` in the search
            protocol's form (rows sorted by descending score, ``-1`` padding); doc numbers must
            name the same documents in every searcher.
        k: fused results per query.
        method: ``"rrf"``: ``sum_i w_i / (rrf_k + rank_i(d))``; ``"minmax"`` / ``"zscore"``:
            ``sum_i w_i * norm_i(s_i(d))`` with per-query normalisation over the list, a document
            missing from list ``i`` getting that list's lowest normalised score, and the weights
            scaled to sum to 1 (as :func:`convex`).
        weights: one per searcher (``None``: equal).

    Returns ``(scores float32 (nq, k), docnums int64 (nq, k))``, descending, ties by ascending
    doc number, ``-1`` / ``-inf`` padding when fewer than ``k`` documents were retrieved.
    """
    if not results:
        raise InvalidInputError("fusion needs at least one result list")
    if method not in METHODS:
        raise InvalidInputError(f"unknown fusion {method!r}; use one of {METHODS}")
    nq = len(results[0][1])
    if any(len(d) != nq or len(s) != nq for s, d in results):
        raise InvalidInputError("every result list must hold the same queries")
    w = np.ones(len(results)) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (len(results),):
        raise InvalidInputError(f"{len(w)} weights for {len(results)} result lists")
    if method != "rrf":
        if w.sum() <= 0:
            raise InvalidInputError("fusion weights sum to 0")
        w = w / w.sum()
    out_s = np.full((nq, k), -np.inf, np.float32)
    out_d = np.full((nq, k), -1, np.int64)
    for qi in range(nq):
        docs, fused = _fuse_row(results, qi, method, w, rrf_k)
        order = np.lexsort((docs, -fused))[:k]
        out_s[qi, :len(order)] = fused[order]
        out_d[qi, :len(order)] = docs[order]
    return out_s, out_d


def weight_grid(n: int, step: float = 0.1) -> list[tuple[float, ...]]:
    """Every weight vector of ``n`` non-negative multiples of ``step`` summing to 1 (``n = 1``: ``[(1.0,)]``)."""
    units = int(round(1 / step))

    def rec(left: int, parts: int) -> list[tuple[int, ...]]:
        if parts == 1:
            return [(left,)]
        return [(i, *rest) for i in range(left + 1) for rest in rec(left - i, parts - 1)]

    return [tuple(round(u / units, 6) for u in combo) for combo in rec(units, n)]


@dataclass
class FusionChoice:
    """The best fusion found on judged queries, and every setting tried (``table``)."""

    fusion: str
    weights: tuple[float, ...]
    rrf_k: float
    score: float
    metric: str
    n_queries: int
    table: list[dict] = field(default_factory=list)


def tune_fusion(lists: Sequence[tuple[np.ndarray, np.ndarray]], doc_ids: Sequence[str], query_ids: Sequence[str],
                qrels: Mapping[str, Mapping[str, int]], *, methods: Sequence[str] = METHODS,
                step: float = 0.1, rrf_ks: Sequence[float] = (60.0,), k: int = 10, metric: str = "nDCG@10"
                ) -> FusionChoice:
    """Grid-search the fusion (method, weights on a ``step`` simplex grid, RRF constant) of several
    searchers' result lists (:func:`fuse_topk` input) on ``qrels``: pass the lists of TRAIN or DEV
    queries and their qrels, never the test ones. Ties in the metric go to the setting with the
    most even weights (the safest on other queries), then to the order tried."""
    qs = [i for i, q in enumerate(query_ids) if q in qrels]
    if not qs:
        raise InvalidInputError("none of the searched queries is judged in the qrels: search the split's queries")
    sel = [(s[qs], d[qs]) for s, d in lists]
    qids = [query_ids[i] for i in qs]
    judged = {q: dict(qrels[q]) for q in qids}
    table = []
    for method in methods:
        for w in weight_grid(len(lists), step):
            for rk in (rrf_ks if method == "rrf" else (60.0,)):
                fused = fuse_topk(sel, k, method, w, rk)
                value = float(evaluate(to_run(*fused, doc_ids, qids), judged, (metric,))[metric])
                table.append({"fusion": method, "weights": list(w), "rrf_k": rk, metric: value})
    even = 1.0 / len(lists)
    best = max(table, key=lambda r: (round(r[metric], 12), -sum(abs(x - even) for x in r["weights"])))
    return FusionChoice(best["fusion"], tuple(best["weights"]), best["rrf_k"], best[metric], metric, len(qids), table)

