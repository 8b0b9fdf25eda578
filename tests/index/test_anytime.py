"""Anytime search (score-at-a-time over impact-ordered postings): the exact result without a
budget, budgets respected, filters and deletions honoured, bad parameters refused."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sparsearch.errors import InvalidInputError, UnsupportedError
from sparsearch.index import Index, anytime, build_index
from sparsearch.index.updates import add_documents, delete_documents
from sparsearch.searching import AnytimeParams, ExactParams, params_for_mode, params_from_dict

from tests.index.test_index import random_batch

EXHAUSTIVE = ExactParams(exhaustive=True)


def _index(tmp_path, seed=0, n_docs=600, n_terms=60, density=0.08, segments=1) -> Index:
    rng = np.random.default_rng(seed)
    path = tmp_path / "idx"
    build_index(random_batch(rng, n_docs, n_terms, density), path)
    for s in range(1, segments):  # further segments, their own term scales
        add_documents(path, random_batch(rng, n_docs // 2, n_terms, density, prefix=f"s{s}-"))
    return Index.open(path)


def _queries(seed, n_terms=60, n=12, density=0.15):
    return random_batch(np.random.default_rng(seed + 99), n, n_terms, density, prefix="q")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**31 - 1), k=st.sampled_from([1, 5, 10, 40]), segments=st.integers(1, 3),
       n_docs=st.integers(5, 500), density=st.floats(0.02, 0.4))
def test_without_a_budget_it_is_the_exact_search(tmp_path_factory, seed, k, segments, n_docs, density):
    """Every run processed: the same doc numbers and the same float64 scores, bit for bit, as the
    exhaustive search (sums of snapped weights x integer impacts are exact in any order)."""
    idx = _index(tmp_path_factory.mktemp("a"), seed, n_docs=n_docs, density=density, segments=segments)
    q = _queries(seed)
    want = idx.search(q, k, EXHAUSTIVE, dtype=np.float64)
    for params in (AnytimeParams(), AnytimeParams(max_postings=10**9), AnytimeParams(budget_ms=60_000.0),
                   AnytimeParams(threads=2)):
        got = idx.search(q, k, params, dtype=np.float64)
        np.testing.assert_array_equal(got[1], want[1])
        np.testing.assert_array_equal(got[0], want[0])


def test_max_postings_bounds_the_work_and_gives_partial_scores(tmp_path):
    """A query processes exactly ``min(max_postings, its postings)``; each score returned is a
    partial sum, at most the document's exact score; the heaviest postings come first, so a
    tenth of the postings already finds a good part of the exact top 10 (35% on this uniform
    random data), more than a single posting does."""
    idx = _index(tmp_path, n_docs=3000, n_terms=200, density=0.05)
    q = _queries(1, n_terms=200, n=30, density=0.05)
    exact_s, exact_d = idx.search(q, 3000, EXHAUSTIVE, dtype=np.float64)
    full = {(qi, d): s for qi in range(len(q)) for s, d in zip(exact_s[qi], exact_d[qi]) if d >= 0}
    total = anytime.search(idx, q, 10, AnytimeParams()).postings
    assert (total > 0).all()
    for m in (1, 7, 100, 1000):
        r = anytime.search(idx, q, 10, AnytimeParams(max_postings=m), dtype=np.float64)
        np.testing.assert_array_equal(r.postings, np.minimum(total, m))
        for qi in range(len(q)):
            for s, d in zip(r.scores[qi], r.docnums[qi]):
                if d >= 0:
                    assert 0 < s <= full[(qi, int(d))]
    top = exact_d[:, :10]
    tenth = anytime.search(idx, q, 10, AnytimeParams(max_postings=int(total.mean() // 10))).docnums
    found = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(tenth, top)])
    assert found >= 0.25
    one = anytime.search(idx, q, 10, AnytimeParams(max_postings=1)).docnums
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(one, top)]) < found


def test_time_budget_stops_early(tmp_path):
    idx = _index(tmp_path, n_docs=20000, n_terms=50, density=0.2)  # long posting lists
    q = _queries(2, n_terms=50, n=4, density=0.6)
    full = anytime.search(idx, q, 10, AnytimeParams()).postings
    short = anytime.search(idx, q, 10, AnytimeParams(budget_ms=1e-4))
    assert (short.postings < full).all() and (short.postings >= 1).all()
    assert (np.diff(short.scores, axis=1) <= 0).all()


def test_deleted_and_filtered_documents_are_never_returned(tmp_path):
    idx = _index(tmp_path, n_docs=800, segments=2)
    q = _queries(3)
    gone = [f"d{i}" for i in range(0, 800, 3)] + [f"s1-{i}" for i in range(0, 400, 5)]
    delete_documents(idx.path, gone)
    idx = Index.open(idx.path)
    allowed = np.random.default_rng(4).random(idx.n_docs) < 0.5
    for kw in ({}, {"allowed": allowed}):
        want = idx.search(q, 20, EXHAUSTIVE, dtype=np.float64, **kw)
        got = idx.search(q, 20, AnytimeParams(), dtype=np.float64, **kw)
        np.testing.assert_array_equal(got[1], want[1])
        np.testing.assert_array_equal(got[0], want[0])
        partial = idx.search(q, 20, AnytimeParams(max_postings=50), **kw)[1]
        ids = {idx.doc_ids[d] for d in partial.ravel() if d >= 0}
        assert not ids & set(gone)
        if kw:
            assert all(allowed[d] for d in partial.ravel() if d >= 0)


def test_impact_ordered_layout(tmp_path):
    """Runs hold one impact each, descending per term, doc ids ascending in a run; every nonzero
    posting appears once."""
    idx = _index(tmp_path, segments=2)
    io = idx.impact_ordered()
    assert idx.impact_ordered() is io  # built once
    assert io.n_postings == sum(int((seg.impacts > 0).sum()) for seg in idx.segments)
    for s in range(io.term_run_ptr.shape[0]):
        for t in range(io.term_run_ptr.shape[1] - 1):
            runs = range(io.term_run_ptr[s, t], io.term_run_ptr[s, t + 1])
            imps = [int(io.run_impact[r]) for r in runs]
            assert imps == sorted(imps, reverse=True) and len(set(imps)) == len(imps) and 0 not in imps
            for r in runs:
                docs = io.io_docs[io.run_ptr[r]: io.run_ptr[r + 1]]
                assert (np.diff(docs) > 0).all()
    assert anytime.describe(io)["bytes"] == io.nbytes > 0


def test_parameters_are_checked(tmp_path):
    for bad in ({"max_postings": 0}, {"max_postings": -1}, {"max_postings": True}, {"max_postings": 1.5},
                {"budget_ms": 0}, {"budget_ms": float("nan")}, {"budget_ms": float("inf")}, {"budget_ms": "1"}):
        with pytest.raises(InvalidInputError, match="max_postings|budget_ms"):
            AnytimeParams(**bad).check()
    assert params_for_mode("anytime", max_postings=5, budget_ms=2.0) == AnytimeParams(max_postings=5, budget_ms=2.0)
    assert params_from_dict({"kind": "anytime", "max_postings": 9}) == AnytimeParams(max_postings=9)
    with pytest.raises(InvalidInputError, match="apply to anytime search, not exact"):
        params_for_mode("exact", max_postings=5)
    with pytest.raises(InvalidInputError, match="apply to approximate search, not anytime"):
        params_for_mode("anytime", query_cut=3)
    rng = np.random.default_rng(0)
    build_index(random_batch(rng, 50, 10, 0.3), tmp_path / "f32", quantization="float32")
    with pytest.raises(UnsupportedError, match="anytime search needs 8-bit impacts") as e:
        Index.open(tmp_path / "f32").search(random_batch(rng, 2, 10, 0.5, prefix="q"), 5, AnytimeParams())
    assert "\n" not in str(e.value)
