"""Run fusion: RRF, min-max / z-score convex interpolation, tuning on dev qrels only."""

from __future__ import annotations

import math

import pytest

import numpy as np

from sparsearch import fusion
from sparsearch.fusion import convex, interpolate, normalize_run, rrf, tune_interpolation, tune_rrf

A = {"q1": {"d1": 3.0, "d2": 2.0, "d3": 1.0}}
B = {"q1": {"d3": 10.0, "d4": 6.0, "d1": 2.0}}


def test_rrf_matches_hand_computation():
    fused = rrf([A, B], k=60)["q1"]
    assert fused["d1"] == pytest.approx(1 / 61 + 1 / 63)
    assert fused["d2"] == pytest.approx(1 / 62)
    assert fused["d3"] == pytest.approx(1 / 63 + 1 / 61)
    assert fused["d4"] == pytest.approx(1 / 62)
    w = rrf([A, B], k=1, weights=[2.0, 1.0])["q1"]
    assert w["d1"] == pytest.approx(2 / 2 + 1 / 4)
    assert w["d4"] == pytest.approx(1 / 3)


def test_rrf_depth_and_tie_break():
    run = {"q": {"b": 1.0, "a": 1.0, "c": 0.5}}
    fused = rrf([run], k=0)["q"]
    assert fused == {"a": 1.0, "b": 0.5, "c": pytest.approx(1 / 3)}  # tie broken by doc id
    assert set(rrf([run], k=0, depth=2)["q"]) == {"a", "b"}


def test_minmax_interpolation_hand_computed():
    # A -> d1 1, d2 .5, d3 0 ; B -> d3 1, d4 .5, d1 0 ; missing docs count 0
    fused = interpolate(A, B, alpha=0.3, norm="minmax")["q1"]
    assert fused["d1"] == pytest.approx(0.3 * 1 + 0.7 * 0)
    assert fused["d2"] == pytest.approx(0.3 * 0.5 + 0.7 * 0)
    assert fused["d3"] == pytest.approx(0.3 * 0 + 0.7 * 1)
    assert fused["d4"] == pytest.approx(0.3 * 0 + 0.7 * 0.5)
    assert interpolate(A, B, 1.0)["q1"]["d1"] == pytest.approx(1.0)


def test_zscore_interpolation_hand_computed():
    za = normalize_run(A, "zscore")["q1"]
    sd = math.sqrt(2 / 3)
    assert za == pytest.approx({"d1": 1 / sd, "d2": 0.0, "d3": -1 / sd})
    zb = normalize_run(B, "zscore")["q1"]
    mu, sdb = 6.0, math.sqrt((16 + 0 + 16) / 3)
    assert zb["d3"] == pytest.approx((10 - mu) / sdb)
    fused = interpolate(A, B, alpha=0.5, norm="zscore")["q1"]
    # d2 is missing from B: it gets B's lowest z-score (d1's)
    assert fused["d2"] == pytest.approx(0.5 * 0.0 + 0.5 * (2 - mu) / sdb)
    assert fused["d4"] == pytest.approx(0.5 * (-1 / sd) + 0.5 * 0.0)
    assert fused["d1"] == pytest.approx(0.5 / sd + 0.5 * (2 - mu) / sdb)


def test_normalisation_edge_cases():
    run = {"q": {"a": 2.0, "b": 2.0}, "empty": {}}
    assert normalize_run(run, "minmax")["q"] == {"a": 1.0, "b": 1.0}
    assert normalize_run(run, "zscore")["q"] == {"a": 0.0, "b": 0.0}
    assert normalize_run(run, "minmax")["empty"] == {}
    with pytest.raises(ValueError, match="unknown normalisation"):
        normalize_run(run, "softmax")
    with pytest.raises(ValueError, match="alpha"):
        interpolate(A, B, 1.5)
    three = convex([A, B, A], [0.25, 0.5, 0.25])["q1"]
    assert three["d1"] == pytest.approx(0.5)


def _runs_where_dev_likes_a():
    """Dev queries: run A is right and B wrong; test queries: the opposite."""
    ra, rb, dev, test = {}, {}, {}, {}
    for i in range(6):
        for split, good_is_a in (("dev", True), ("test", False)):
            q = f"{split}{i}"
            # min-max: A -> x 1, y .9, w 0 ; B -> y 1, x 0, w .5 ; x beats y only for alpha > 10/11
            ra[q] = {"x": 1.0, "y": 0.9, "w": 0.0}
            rb[q] = {"y": 1.0, "x": 0.0, "w": 0.5}
            (dev if split == "dev" else test)[q] = {"x" if good_is_a else "y": 1}
    return ra, rb, dev, test


def test_tuning_uses_only_the_dev_qrels():
    ra, rb, dev, test = _runs_where_dev_likes_a()
    res = tune_interpolation(ra, rb, dev, norm="minmax")
    assert res.best > 10 / 11 and res.score == pytest.approx(1.0)
    assert res.n_queries == len(dev)
    # tuned on the other split the answer flips: the choice follows the qrels it is given
    assert tune_interpolation(ra, rb, test).best < 10 / 11
    assert tune_interpolation(ra, rb, dev, norm="zscore").score == pytest.approx(1.0)
    r = tune_rrf([ra, rb], dev, weights=[1.0, 0.5])
    assert r.score == pytest.approx(1.0)
    with pytest.raises(ValueError, match="none of the dev queries"):
        tune_interpolation({"other": {"x": 1.0}}, {"other": {"y": 1.0}}, dev)
    with pytest.raises(ValueError, match="non-empty"):
        tune_interpolation(ra, rb, {})


def test_fuse_one_query_equals_the_run_fusions():
    rng = np.random.default_rng(7)
    results = [{f"d{j}": float(rng.random()) for j in rng.choice(30, 12, replace=False)} for _ in range(3)]
    w = [1.0, 2.0, 0.5]
    runs = [{"q": r} for r in results]
    assert fusion.fuse(results, "rrf", w, rrf_k=20) == fusion.rrf(runs, k=20, weights=w)["q"]
    for norm in ("minmax", "zscore"):
        assert fusion.fuse(results, norm, w) == fusion.convex(runs, [x / sum(w) for x in w], norm=norm)["q"]
    with pytest.raises(ValueError, match="unknown fusion"):
        fusion.fuse(results, "max")
    assert fusion.ranked({"b": 1.0, "a": 1.0, "c": 2.0}) == [("c", 2.0), ("a", 1.0), ("b", 1.0)]
