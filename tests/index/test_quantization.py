"""8-bit quantization keeps every posting (issue 15 item 1): per-term grids, query weights that
absorb the term's scale, old (version-1) segments still read, approximate and merged indexes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sparsearch.index import Index, build_index
from sparsearch.index import kernels
from sparsearch.index.approximate import ApproxBuildParams, ApproximateIndex, FixedPruning
from sparsearch.index.builder import quantize
from sparsearch.index.segment import ARRAYS_V1, Segment
from sparsearch.index.storage import write_arrays
from sparsearch.index.updates import add_documents, live_vectors, merge
from sparsearch.searching import ApproxParams, ExactParams
from sparsearch.vectors import SparseBatch, Vocabulary, read_jsonl

EXACT_APPROX = dict(pruning=FixedPruning(n_postings=10**9), summary_energy=1.0, centroid_fraction=0.1)
APPROX_ALL = ApproxParams(query_cut=10**6, heap_factor=1.0)


def issue_rows(outlier: float, n: int = 1000, seed: int = 0) -> list[dict]:
    """The issue's file: ``n`` vectors of 6 terms (of t0..t19) with weights in [0.1, 3], then
    ``{"id": "outlier", "vector": {"t1": outlier}}``."""
    rng = np.random.default_rng(seed)
    rows = [{"id": f"d{i}", "vector": {f"t{t}": float(rng.uniform(0.1, 3.0))
                                       for t in rng.choice(20, 6, replace=False)}} for i in range(n)]
    return rows + [{"id": "outlier", "vector": {"t1": outlier}}]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_an_outlier_weight_keeps_every_posting(tmp_path):
    """issue 15 item 1: 1,000 vectors with weights 0.1-3 plus one {"t1": 300} kept 4,981 of
    6,001 postings under one global scale max(w)/255; every one is kept now."""
    batch = read_jsonl(write_jsonl(tmp_path / "v.jsonl", issue_rows(300.0)))
    assert batch.nnz == 6001
    index = build_index(batch, tmp_path / "idx")
    assert index.stats()["n_postings"] == 6001
    seg = index.segments[0]
    assert (np.asarray(seg.impacts) >= 1).all()
    # the outlier coarsens its own term only: the other terms keep their full 8-bit grid
    t1 = index.vocab.id("t1")
    assert seg.term_scale[t1] == pytest.approx(300.0 / 255)
    others = np.delete(np.asarray(seg.term_scale), t1)
    assert others.max() <= 3.0 / 255 + 1e-9
    # a query without t1 scores as on the float weights (within the grid steps of t3, t7)
    f32 = build_index(batch, tmp_path / "f32", quantization="float32")
    q = SparseBatch.from_dicts([{"t3": 1.0, "t7": 0.5}])
    s, d = index.search(q, 10)
    s32, d32 = f32.search(q, 10)
    np.testing.assert_allclose(s, s32, rtol=5e-3)
    assert len(set(d[0].tolist()) & set(d32[0].tolist())) >= 9


def test_a_1e30_weight_keeps_every_posting_and_wins_only_its_own_term(tmp_path):
    """issue 15 item 1: one weight of 1e30 left 1 posting of 601 (all others rounded to 0). Now
    all are kept; the outlier document tops only queries with its term (where it really scores
    highest) and other queries rank as on the float weights."""
    rows = issue_rows(1e30, n=100, seed=3)
    batch = read_jsonl(write_jsonl(tmp_path / "v.jsonl", rows))
    assert batch.nnz == 601
    index = build_index(batch, tmp_path / "idx")
    assert index.stats()["n_postings"] == 601
    f32 = build_index(batch, tmp_path / "f32", quantization="float32")
    out = index.doc_ids.index("outlier")
    for t in range(20):
        q = SparseBatch.from_dicts([{f"t{t}": 1.0, f"t{(t + 5) % 20}": 0.7}])
        s, d = index.search(q, 10)
        s32, d32 = f32.search(q, 10)
        assert np.isfinite(s).all()
        if t in (1, 16):  # the query holds t1: the outlier really scores highest
            assert d[0, 0] == out == d32[0, 0]
        else:
            assert out not in d[0].tolist()
            np.testing.assert_allclose(s[0], s32[0], rtol=0.02)
    # explain and the dequantized weights stay finite and add up
    q = SparseBatch.from_dicts([{"t1": 1.0, "t2": 1.0}])
    s, d = index.search(q, 3)
    parts = index.explain(q, int(d[0, 0]))
    assert sum(c.contribution for c in parts) == pytest.approx(float(s[0, 0]), rel=1e-5)
    W = live_vectors(index).to_scipy()
    assert W.nnz == 601 and W.max() == pytest.approx(1e30, rel=1e-2)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n_docs=st.integers(1, 120), n_terms=st.integers(1, 25), nnz=st.integers(1, 10),
       log_lo=st.floats(-40, 30), span=st.floats(0, 40), seed=st.integers(0, 2**31 - 1),
       codec=st.sampled_from(["byte", "bitpack"]))
def test_no_nonzero_weight_becomes_a_zero_impact(tmp_path_factory, n_docs, n_terms, nnz, log_lo, span, seed, codec):
    """issue 15 item 1 (property): weights spanning up to 40 orders of magnitude, subnormal to
    1e38: every posting is kept, every impact >= 1, each dequantized weight within half a step
    of its term's grid (or one step, the floor), and exact search equals brute force."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n_docs):
        t = np.unique(rng.integers(0, n_terms, nnz))
        w = (10.0 ** rng.uniform(log_lo, min(log_lo + span, 38.0), len(t))).astype(np.float32)
        w[w == 0] = np.float32(1e-45)  # float32 underflow: keep the weight positive
        w = np.minimum(w, np.float32(3e38))
        rows.append((t, w))
    indptr = np.concatenate([[0], np.cumsum([len(t) for t, _ in rows])])
    batch = SparseBatch(indptr, np.concatenate([t for t, _ in rows]).astype(np.int32),
                        np.concatenate([w for _, w in rows]), Vocabulary.from_size(n_terms, "t"),
                        [f"d{i}" for i in range(n_docs)])
    index = build_index(batch, tmp_path_factory.mktemp("q") / "idx", codec=codec)
    seg = index.segments[0]
    assert seg.n_postings == batch.nnz
    assert (np.asarray(seg.impacts) >= 1).all()
    D = seg.weight_matrix(n_terms).toarray()
    ref = batch.to_scipy().toarray().astype(np.float64)
    assert ((D > 0) == (ref > 0)).all()
    step = np.broadcast_to(np.asarray(seg.term_scale), D.shape)
    big = ref >= step / 2
    assert np.all(np.abs(D - ref)[big] <= step[big] * (0.5 + 1e-6))
    assert np.all(D[(ref > 0) & ~big] == step[(ref > 0) & ~big])
    # rank safety on these grids: MaxScore == term-at-a-time == brute force on the stored impacts
    q = SparseBatch.from_dicts([{f"t{i}": 1.0 + i % 3 for i in range(0, n_terms, 2)}, {"t0": 1.0}])
    qi, qt, qw = index.prepare_queries(q)
    qs = kernels.snap_rows(qi, index.segment_weights(seg, qi, qt, qw))
    impacts = seg.impact_matrix(n_terms).toarray()
    k = min(5, n_docs)
    for params in (ExactParams(), ExactParams(exhaustive=True)):
        s, d = index.search(q, k, params, dtype=np.float64)
        for r in range(2):
            w = np.zeros(n_terms)
            np.add.at(w, qt[qi[r]:qi[r + 1]], qs[qi[r]:qi[r + 1]])
            full = impacts @ w
            order = sorted(np.flatnonzero(full > 0).tolist(), key=lambda x: (-full[x], x))[:k]
            assert [x for x in d[r].tolist() if x >= 0] == order
            np.testing.assert_array_equal(s[r][:len(order)], full[order])


def test_query_weights_absorb_the_term_scale(tmp_path):
    """issue 15 item 1: the per-segment weight scaling is one gather (unknown terms -> 0)."""
    batch = SparseBatch.from_dicts([{"a": 1.0, "b": 100.0}, {"a": 2.0}], ids=["x", "y"])
    index = build_index(batch, tmp_path / "idx")
    seg = index.segments[0]
    np.testing.assert_allclose(seg.term_scale, [2 / 255, 100 / 255])
    w = seg.query_weights(np.array([1, 0, -1, 7]), np.array([1.0, 1.0, 5.0, 5.0]))
    np.testing.assert_allclose(w, [100 / 255, 2 / 255, 0.0, 0.0])
    s, d = index.search(SparseBatch.from_dicts([{"a": 1.0, "zzz": 3.0}]), 2)
    assert d[0].tolist() == [1, 0] and s[0] == pytest.approx([2.0, 1.0], rel=1e-2)


# ----------------------------------------------------------------- version-1 segments
def rewrite_as_version_1(index_path, batch):
    """Rewrite the (one) segment of the index of ``batch`` as the previous format wrote it: one
    global scale ``max(w)/255``, weights rounding to 0 dropped, no ``term_scale``, ``"version": 1``."""
    index = Index.open(index_path)
    seg = index.segments[0]
    impacts, scale = quantize(batch.values, "uint8")
    post_ptr, post_docs, post_imp = kernels.invert(batch.indptr, batch.indices, impacts, seg.n_terms)
    tbp, last, bmax, bits, wptr, words = kernels.build_blocks(post_ptr, post_docs, post_imp, True)
    term_max = np.zeros(seg.n_terms, np.uint8)
    ne = np.diff(tbp) > 0
    term_max[ne] = np.maximum.reduceat(bmax, tbp[:-1][ne])
    arrays = dict(zip(ARRAYS_V1, (post_ptr, tbp, term_max, last, bmax, bits, wptr, words, post_imp)))
    meta = {"format": "sparsearch-segment", "version": 1, "n_docs": seg.n_docs, "n_terms": seg.n_terms,
            "n_postings": int(post_ptr[-1]), "quantization": "uint8", "scale": scale, "block_size": kernels.BLOCK,
            "codec": "byte"}
    tmp = seg.path.with_name(seg.path.name + ".v1")
    write_arrays(tmp, arrays, meta)
    shutil.copy(seg.path / "doc_ids.json", tmp / "doc_ids.json")
    shutil.rmtree(seg.path)
    tmp.rename(seg.path)
    # an index of version-1 segments has a version-1 manifest: no file records, no seal (item 4)
    manifest_f = Path(index_path) / "manifest.json"
    manifest = json.loads(manifest_f.read_text())
    manifest_f.write_text(json.dumps({k: v for k, v in manifest.items() if k not in ("files", "checksum")}
                                     | {"version": 1}))
    return scale


def test_version_1_segments_still_open_and_search_as_before(tmp_path):
    """issue 15 item 1: an index written before per-term scales opens and scores with its one
    scale (snapped raw query weights x impacts x scale, as before); updates add per-term
    segments next to it; merge rewrites it per term; its approximate index stays exact."""
    rng = np.random.default_rng(4)
    batch = SparseBatch.from_dicts([{f"t{t}": float(rng.uniform(0.001, 3)) for t in rng.choice(30, 8, replace=False)}
                                    for _ in range(400)], ids=[f"d{i}" for i in range(400)])
    build_index(batch, tmp_path / "idx")
    scale = rewrite_as_version_1(tmp_path / "idx", batch)
    index = Index.open(tmp_path / "idx")
    seg = index.segments[0]
    assert seg.term_scale is None and seg.meta["version"] == 1 and seg.scale == scale
    assert seg.n_postings < batch.nnz  # the old scheme's losses are on disk already
    queries = SparseBatch.from_dicts([{f"t{t}": float(rng.uniform(0.5, 2)) for t in rng.choice(30, 4)}
                                      for _ in range(20)] + [{"t1": 1.0, "unknown": 9.0}])
    qi, qt, qw = index.prepare_queries(queries)
    qs = kernels.snap_rows(qi, qw)  # version 1: raw weights snapped, unknown terms included
    D = seg.impact_matrix(index.n_terms).toarray()
    s, d = index.search(queries, 10, dtype=np.float64)
    for r in range(len(queries)):
        w = np.zeros(index.n_terms)
        keep = qt[qi[r]:qi[r + 1]] >= 0
        np.add.at(w, qt[qi[r]:qi[r + 1]][keep], qs[qi[r]:qi[r + 1]][keep])
        full = (D @ w) * scale
        order = sorted(np.flatnonzero(full > 0).tolist(), key=lambda x: (-full[x], x))[:10]
        assert [x for x in d[r].tolist() if x >= 0] == order
        np.testing.assert_array_equal(s[r][:len(order)], full[order])
    parts = index.explain(queries[:1], int(d[0, 0]))
    assert sum(c.contribution for c in parts) == pytest.approx(float(s[0, 0]), rel=1e-9)
    # the approximate index of a version-1 index: a scale per document, exact at full settings
    ax = ApproximateIndex.build(index, ApproxBuildParams(**EXACT_APPROX), save=False)
    assert len(ax.term_scale) == 0
    sa, da = ax.search(queries, 10, APPROX_ALL)
    np.testing.assert_array_equal(da, d)
    np.testing.assert_array_equal(sa, s.astype(np.float32))
    # an update adds a per-term segment; both score; merge rewrites everything per term
    add_documents(tmp_path / "idx", SparseBatch.from_dicts([{"t1": 0.001, "t2": 5.0}], ids=["new"]))
    mixed = Index.open(tmp_path / "idx")
    assert mixed.segments[0].term_scale is None and mixed.segments[1].term_scale is not None
    s2, d2 = mixed.search(SparseBatch.from_dicts([{"t1": 1.0}]), 500)
    assert mixed.doc_ids.index("new") in d2[0].tolist()
    ApproximateIndex.build(mixed, ApproxBuildParams(**EXACT_APPROX), save=False).search(queries, 5, APPROX_ALL)
    merge(tmp_path / "idx")
    merged = Index.open(tmp_path / "idx")
    assert len(merged.segments) == 1 and merged.segments[0].meta["version"] == 2
    assert merged.segments[0].n_postings == mixed.segments[0].n_postings + 2


# ------------------------------------------------------------ approximate, merge, updates
def test_approximate_index_on_one_grid_is_exact_and_on_several_is_exact_on_its_own(tmp_path):
    """issue 15 item 1: segments on different per-term grids (an update brings a larger weight)
    are re-quantized onto one grid (the largest step of each term) in the approximate index;
    none of them becomes 0, and at non-pruning settings its results are the exact top-k of its
    own impacts; after merge (one grid) they equal exact search bit for bit."""
    rng = np.random.default_rng(8)

    def batch(n, prefix, hi):
        return SparseBatch.from_dicts([{f"t{t}": float(rng.uniform(0.01, hi)) for t in rng.choice(40, 10)}
                                       for _ in range(n)], ids=[f"{prefix}{i}" for i in range(n)])

    build_index(batch(500, "a", 1.0), tmp_path / "idx")
    add_documents(tmp_path / "idx", batch(300, "b", 30.0))
    index = Index.open(tmp_path / "idx")
    a, b = index.segments
    assert not np.array_equal(a.term_scale, b.term_scale[:a.n_terms])
    ax = ApproximateIndex.build(index, ApproxBuildParams(**EXACT_APPROX), save=False)
    assert len(ax.fwd_vals) == a.n_postings + b.n_postings and (np.asarray(ax.fwd_vals) >= 1).all()
    queries = SparseBatch.from_dicts([{f"t{t}": float(rng.uniform(0.2, 2)) for t in rng.choice(40, 5)}
                                      for _ in range(30)])
    s, d = ax.search(queries, 10, APPROX_ALL)
    # brute force on the approximate index's own forward impacts and grid
    qi, qt, qw = index.prepare_queries(queries)
    qs = kernels.snap_rows(qi, ax.query_weights(qt, qw, qi))
    F = np.zeros((index.n_docs, index.n_terms))
    for doc in range(index.n_docs):
        lo, hi = ax.fwd_ptr[doc], ax.fwd_ptr[doc + 1]
        F[doc, ax.fwd_terms[lo:hi].astype(np.int64)] = ax.fwd_vals[lo:hi]
    for r in range(len(queries)):
        w = np.zeros(index.n_terms)
        np.add.at(w, qt[qi[r]:qi[r + 1]], qs[qi[r]:qi[r + 1]])
        full = F @ w
        order = sorted(np.flatnonzero(full > 0).tolist(), key=lambda x: (-full[x], x))[:10]
        assert d[r].tolist()[:len(order)] == order
    # close to exact search on the segments' own grids
    _, de = index.search(queries, 10)
    assert np.mean([len(set(x) & set(y)) / 10 for x, y in zip(d.tolist(), de.tolist())]) >= 0.9
    merge(tmp_path / "idx")
    one = Index.open(tmp_path / "idx")
    ax1 = ApproximateIndex.build(one, ApproxBuildParams(**EXACT_APPROX), save=False)
    np.testing.assert_array_equal(ax1.term_scale, one.segments[0].term_scale)
    s1, d1 = ax1.search(queries, 10, APPROX_ALL)
    se, de = one.search(queries, 10)
    np.testing.assert_array_equal(d1, de)
    np.testing.assert_array_equal(s1, se)


def test_segment_format_records_term_scales(tmp_path):
    """issue 15 item 1: ``term_scale`` is a checksummed segment array (format version 2)."""
    index = build_index(SparseBatch.from_dicts([{"a": 1.0, "b": 2.0}], ids=["x"]), tmp_path / "idx")
    seg_dir = index.segments[0].path
    meta = json.loads((seg_dir / "segment.json").read_text())
    assert meta["version"] == 2 and "term_scale" in meta["files"] and "scale" not in meta
    raw = bytearray((seg_dir / "term_scale.npy").read_bytes())
    raw[-1] ^= 0x01
    (seg_dir / "term_scale.npy").write_bytes(bytes(raw))
    with pytest.raises(Exception, match="checksum mismatch"):
        Segment.open(seg_dir)
