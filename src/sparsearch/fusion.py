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
* :func:`tune_interpolation` / :func:`tune_rrf`: grid search of the weight (or RRF ``k``) on
  *dev* qrels. The tuning functions only ever see the qrels passed to them; evaluate the
  chosen setting on test afterwards with :func:`interpolate` / :func:`rrf`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = ["normalize_run", "rrf", "interpolate", "convex", "tune_interpolation", "tune_rrf", "TuneResult",
           "restrict"]

Run = dict[str, dict[str, float]]
NORMS = ("minmax", "zscore", "none")


def _ranked(docs: Mapping[str, float]) -> list[tuple[str, float]]:
    """Documents by descending score, ties by ascending doc id."""
    return sorted(docs.items(), key=lambda x: (-x[1], x[0]))


def normalize_run(run: Mapping[str, Mapping[str, float]], method: str = "minmax") -> Run:
    """Per-query score normalisation.

    ``minmax``: ``(s - min) / (max - min)``; a query whose scores are all equal maps to 1.
    ``zscore``: ``(s - mean) / std`` (population std); all-equal scores map to 0.
    ``none``: scores unchanged.
    """
    if method not in NORMS:
        raise ValueError(f"unknown normalisation {method!r}; use one of {NORMS}")
    out: Run = {}
    for q, docs in run.items():
        if not docs or method == "none":
            out[q] = {d: float(s) for d, s in docs.items()}
            continue
        v = np.fromiter(docs.values(), dtype=np.float64, count=len(docs))
        if method == "minmax":
            lo, hi = v.min(), v.max()
            nv = (v - lo) / (hi - lo) if hi > lo else np.ones_like(v)
        else:
            mu, sd = v.mean(), v.std()
            nv = (v - mu) / sd if sd > 0 else np.zeros_like(v)
        out[q] = dict(zip(docs.keys(), nv.tolist()))
    return out


def restrict(run: Mapping[str, Mapping[str, float]], depth: int | None) -> Run:
    """Keep each query's top ``depth`` documents (all when ``None``)."""
    if depth is None:
        return {q: dict(d) for q, d in run.items()}
    return {q: dict(_ranked(d)[:depth]) for q, d in run.items()}


def rrf(runs: Sequence[Mapping[str, Mapping[str, float]]], k: float = 60.0, weights: Sequence[float] | None = None,
        depth: int | None = None) -> Run:
    """Reciprocal rank fusion of ``runs`` (see module docstring); ``depth`` cuts each run first."""
    if not runs:
        raise ValueError("rrf needs at least one run")
    weights = [1.0] * len(runs) if weights is None else list(weights)
    if len(weights) != len(runs):
        raise ValueError(f"{len(weights)} weights for {len(runs)} runs")
    out: Run = {}
    for run, w in zip(runs, weights):
        for q, docs in run.items():
            acc = out.setdefault(q, {})
            ranked = _ranked(docs)[:depth] if depth is not None else _ranked(docs)
            for r, (d, _) in enumerate(ranked, 1):
                acc[d] = acc.get(d, 0.0) + w / (k + r)
    return out


def convex(runs: Sequence[Mapping[str, Mapping[str, float]]], weights: Sequence[float], norm: str = "minmax",
           depth: int | None = None) -> Run:
    """``sum_i w_i * norm(run_i)`` over the union of documents (missing: the run's minimum)."""
    if len(weights) != len(runs) or not runs:
        raise ValueError(f"{len(weights)} weights for {len(runs)} runs")
    normed = [normalize_run(restrict(r, depth), norm) for r in runs]
    queries: dict[str, None] = {}
    for r in normed:
        queries.update(dict.fromkeys(r))
    out: Run = {}
    for q in queries:
        per = [r.get(q, {}) for r in normed]
        floor = [min(p.values()) if p else 0.0 for p in per]
        if norm == "minmax":
            floor = [0.0] * len(per)
        docs: dict[str, None] = {}
        for p in per:
            docs.update(dict.fromkeys(p))
        out[q] = {d: float(sum(w * p.get(d, f) for w, p, f in zip(weights, per, floor))) for d in docs}
    return out


def interpolate(run_a: Mapping[str, Mapping[str, float]], run_b: Mapping[str, Mapping[str, float]],
                alpha: float, norm: str = "minmax", depth: int | None = None) -> Run:
    """``alpha * norm(run_a) + (1 - alpha) * norm(run_b)`` per query (``0 <= alpha <= 1``)."""
    if not 0.0 <= alpha <= 1.0 or math.isnan(alpha):
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
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
        raise ValueError("tuning needs non-empty dev qrels")
    qs = set(dev_qrels)
    views = [{q: d for q, d in r.items() if q in qs} for r in runs]
    if not any(views):
        raise ValueError("the runs contain none of the dev queries: run the dev (or train) queries to tune on")
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
    from .evaluation import evaluate

    a, b = _dev_view([run_a, run_b], dev_qrels)
    alphas = np.round(np.linspace(0, 1, 21), 4).tolist() if alphas is None else list(alphas)
    table = {float(al): float(evaluate(interpolate(a, b, al, norm, depth), dict(dev_qrels), (metric,))[metric])
             for al in alphas}
    return _pick(table, metric, len(dev_qrels), 0.5)


def tune_rrf(runs: Sequence[Mapping[str, Mapping[str, float]]], dev_qrels: Mapping[str, Mapping[str, int]], *,
             ks: Sequence[float] = (1, 5, 10, 20, 40, 60, 100), weights: Sequence[float] | None = None,
             metric: str = "nDCG@10", depth: int | None = None) -> TuneResult:
    """Grid-search the RRF constant ``k`` on ``dev_qrels``."""
    from .evaluation import evaluate

    views = _dev_view(runs, dev_qrels)
    table = {float(k): float(evaluate(rrf(views, k, weights, depth), dict(dev_qrels), (metric,))[metric]) for k in ks}
    return _pick(table, metric, len(dev_qrels), 60.0)
