"""Approximate (Seismic-style) search: exactness at non-pruning settings, graceful degradation,
persistence, tuning. Small synthetic data, fixed seeds, no timing assertions."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sparsearch.errors import ConflictError, CorruptIndexError, InvalidInputError, NotFoundError, UnsupportedError
from sparsearch.evaluation import recall_at_k
from sparsearch.index import Index, IndexFormatError, build_index
from sparsearch.index import kernels_approx as ka
from sparsearch.index.approximate import (CANDIDATE_DEFAULTS, ApproxBuildParams, ApproximateIndex, FixedPruning,
                                          GlobalPruning, load_settings, save_settings, tune)
from sparsearch.index.updates import add_documents
from sparsearch.searching import ApproxParams, ExactParams
from sparsearch.vectors import SparseBatch, Vocabulary

NO_PRUNING = dict(pruning=FixedPruning(n_postings=10**9), summary_energy=1.0)
EXACT_SETTINGS = ApproxParams(query_cut=1000, heap_factor=1.0)


def build(index, save=False, **kw):
    """An approximate index of ``index`` with these ``ApproxBuildParams`` fields (not saved by default)."""
    return ApproximateIndex.build(index, ApproxBuildParams(**kw), save=save)


def global_pruning(n_postings, **kw):
    return dict(pruning=GlobalPruning(n_postings=n_postings), **kw)


def zipf_batch(n: int, n_terms: int, nnz: int, seed: int, prefix: str = "d") -> SparseBatch:
    """SPLADE-like vectors: Zipf term ids, log-normal weights, ``nnz`` draws per row."""
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, n_terms + 1)
    p = rng.permutation(p / p.sum())
    rows = []
    for _ in range(n):
        t = np.unique(rng.choice(n_terms, size=nnz, p=p))
        rows.append((t, np.exp(rng.normal(-0.3, 0.6, len(t))).astype(np.float32)))
    indptr = np.concatenate([[0], np.cumsum([len(t) for t, _ in rows])])
    return SparseBatch(indptr, np.concatenate([t for t, _ in rows]).astype(np.int32),
                       np.concatenate([v for _, v in rows]), Vocabulary.from_size(n_terms, prefix="t"),
                       [f"{prefix}{i}" for i in range(n)])


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    docs = zipf_batch(3000, 2000, 60, seed=1)
    queries = zipf_batch(120, 2000, 20, seed=2, prefix="q")
    index = build_index(docs, tmp_path_factory.mktemp("approx") / "idx")
    return index, queries


def test_non_pruning_settings_are_exact(corpus):
    index, queries = corpus
    es, ed = index.search(queries, 10)
    ax = build(index, centroid_fraction=0.05, **NO_PRUNING)
    s, d = ax.search(queries, 10, EXACT_SETTINGS)
    assert recall_at_k(d, ed) == 1.0
    np.testing.assert_array_equal(d, ed)
    np.testing.assert_array_equal(s, es)
    s1, d1 = ax.search(queries, 10, ApproxParams(query_cut=1000, heap_factor=1.0, threads=1))  # serial path
    np.testing.assert_array_equal(d1, ed)


def forward_top_k(ax, queries, k):
    """Top-k by brute force over the approximate index's own forward impacts (its per-term grid
    absorbed by the snapped query weights, as the kernels take them), ties by doc number."""
    from sparsearch.index.kernels import snap_rows

    qi, qt, qw = ax.index.prepare_queries(queries)
    qs = snap_rows(qi, ax.query_weights(qt, qw, qi))
    F = np.zeros((ax.n_docs, ax.index.n_terms))
    for doc in range(ax.n_docs):
        lo, hi = ax.fwd_ptr[doc], ax.fwd_ptr[doc + 1]
        F[doc, ax.fwd_terms[lo:hi].astype(np.int64)] = np.asarray(ax.fwd_vals[lo:hi], np.float64) * ax.doc_scale[doc]
    out = []
    for r in range(len(queries)):
        w = np.zeros(ax.index.n_terms)
        keep = qt[qi[r]:qi[r + 1]] >= 0
        np.add.at(w, qt[qi[r]:qi[r + 1]][keep], qs[qi[r]:qi[r + 1]][keep])
        full = F @ w
        out.append(sorted(np.flatnonzero(full > 0).tolist(), key=lambda x: (-full[x], x))[:k])
    return out


def test_non_pruning_settings_are_exact_over_segments_with_their_own_scales(tmp_path):
    """Two segments quantized on different per-term grids (issue 15 item 1): the approximate
    index copies both onto one grid (each term's largest step, which the query weights absorb;
    one document scale) and at non-pruning settings returns the exact top-k of those impacts;
    one segment (one grid): exact search's results, bit for bit."""
    docs = zipf_batch(600, 500, 30, seed=5)
    heavy = zipf_batch(400, 500, 30, seed=6, prefix="e")
    heavy.values *= 3.0  # larger maxima: the second segment gets coarser 8-bit grids
    build_index(docs, tmp_path / "idx")
    add_documents(tmp_path / "idx", heavy)
    index = Index.open(tmp_path / "idx")
    a, b = index.segments
    assert len(index.segments) == 2 and not np.array_equal(a.term_scale, b.term_scale[:a.n_terms])
    queries = zipf_batch(40, 500, 12, seed=7, prefix="q")
    es, ed = index.search(queries, 10)
    ax = build(index, centroid_fraction=0.05, **NO_PRUNING)
    np.testing.assert_array_equal(ax.term_scale[:a.n_terms], np.maximum(a.term_scale, b.term_scale[:a.n_terms]))
    assert len(ax.doc_scale_arg) == 1  # one grid: a single document scale, no per-document load
    s, d = ax.search(queries, 10, ApproxParams(query_cut=1000, heap_factor=1.0, threads=1))
    for r, ref in enumerate(forward_top_k(ax, queries, 10)):
        assert d[r].tolist()[:len(ref)] == ref
    assert recall_at_k(d, ed) >= 0.95  # close to exact search on the segments' own grids
    # vectors ordered by weight on the common grid: a cut as long as any document changes nothing
    sc, dc = ax.search(queries, 10, ApproxParams(query_cut=1000, heap_factor=1.0, forward_cut=10**4, rerank=10))
    np.testing.assert_array_equal(dc, d)
    np.testing.assert_array_equal(sc, s)
    w = (ax.fwd_vals.astype(np.float64) * ax.term_scale[ax.fwd_terms]).astype(np.float32)  # as weight_of rounds
    for doc in range(0, ax.n_docs, 17):
        lo, hi = ax.fwd_ptr[doc], ax.fwd_ptr[doc + 1]
        assert np.all(np.diff(w[lo:hi]) <= 0)
    one = build(Index.open(build_index(docs, tmp_path / "one").path), **NO_PRUNING)
    assert len(one.doc_scale_arg) == 1
    s1, d1 = one.search(queries, 10, ApproxParams(query_cut=1000, heap_factor=1.0, threads=1))
    es1, ed1 = one.index.search(queries, 10)
    np.testing.assert_array_equal(d1, ed1)
    np.testing.assert_array_equal(s1, es1)


def test_recall_degrades_gracefully(corpus):
    index, queries = corpus
    _, ed = index.search(queries, 10)
    ax = build(index, **global_pruning(300, centroid_fraction=0.1, summary_energy=0.4))
    # Seismic's heap_factor: a block is skipped below heap_factor x the k-th score (lower scans more)
    r_full = recall_at_k(ax.search(queries, 10, ApproxParams(query_cut=1000, heap_factor=0.5))[1], ed)
    r_mid = recall_at_k(ax.search(queries, 10, ApproxParams(query_cut=8, heap_factor=0.9))[1], ed)
    r_low = recall_at_k(ax.search(queries, 10, ApproxParams(query_cut=2, heap_factor=1.0))[1], ed)
    assert r_full >= 0.9
    assert r_full >= r_mid - 0.02 and r_mid >= r_low - 0.02
    assert 0.1 < r_low < 1.0
    # returned scores are exact dot products of the returned documents
    s, d = ax.search(queries[:5], 10, ApproxParams(query_cut=4, heap_factor=0.8))
    X = docs_matrix(index)
    Q = queries[:5].remap(index.vocab).to_scipy()
    Q.resize((5, X.shape[1]))
    full = (Q @ X.T).toarray()
    for i in range(5):
        ok = d[i] >= 0
        np.testing.assert_allclose(s[i][ok], full[i, d[i][ok]], rtol=1e-5)


def docs_matrix(index):
    return index.segments[0].weight_matrix(index.n_terms)


def _as_version_4_layout(ax: ApproximateIndex, meta: dict) -> None:
    """Store ``ax``'s summary entries as index versions 3 and 4 did (``meta``: its header,
    updated): each component's start relative to its group's first entry (``comp_start``,
    uint16) and each entry's block number as a byte (``ent_block``); and its forward vectors
    by term, as every version before 7 did."""
    from sparsearch.index.storage import crc32_file

    terms, vals = ax.fwd_terms.copy(), ax.fwd_vals.copy()
    for d in range(ax.n_docs):
        a, b = ax.fwd_ptr[d], ax.fwd_ptr[d + 1]
        o = np.argsort(terms[a:b], kind="stable")
        terms[a:b], vals[a:b] = terms[a:b][o], vals[a:b][o]
    del meta["forward_order"]

    bits = np.unpackbits(ax.comp_first.astype("<u8").view(np.uint8), bitorder="little")
    starts = np.flatnonzero(bits)[:-1]
    group = np.repeat(np.arange(len(ax.group_comp_ptr) - 1), np.diff(ax.group_comp_ptr))
    ent_block = np.empty(len(ax.ent_val), np.uint8)
    for g in range(len(ax.group_block_ptr) - 1):
        width = ka.block_number_width(ax.group_block_ptr, g)
        for i, e in enumerate(range(ax.group_ent_ptr[g], ax.group_ent_ptr[g + 1])):
            ent_block[e] = ka.block_number(ax.group_bit_ptr[g] + i * width, (1 << width) - 1, ax.ent_bits)
    for name, arr in (("comp_start", (starts - ax.group_ent_ptr[group]).astype(np.uint16)), ("ent_block", ent_block),
                      ("fwd_terms", terms), ("fwd_vals", vals)):
        f = ax.path / f"{name}.npy"
        np.save(f, arr, allow_pickle=False)
        meta["files"][name] = {"dtype": str(arr.dtype), "shape": [len(arr)], "bytes": f.stat().st_size,
                               "crc32": crc32_file(f)}
    for name in ("comp_first", "comp_sample", "group_bit_ptr", "ent_bits", "block_vals"):  # (block_vals: to version 5)
        del meta["files"][name]
        (ax.path / f"{name}.npy").unlink()


def test_persistence_round_trip_and_staleness(tmp_path):
    docs = zipf_batch(800, 500, 30, seed=3)
    queries = zipf_batch(30, 500, 10, seed=4, prefix="q")
    index = build_index(docs, tmp_path / "idx")
    with pytest.raises(NotFoundError, match="build-approx"):  # opening never builds
        ApproximateIndex.open(index)
    assert not (tmp_path / "idx" / "approximate.json").exists()
    params = ApproxBuildParams(pruning=GlobalPruning(n_postings=100), centroid_fraction=0.2)
    ax = ApproximateIndex.build(index, params)
    first_dir = ax.path
    assert ApproximateIndex.exists(index)
    p = ApproxParams(query_cut=5, heap_factor=0.8)
    s, d = ax.search(queries, 10, p)
    re = ApproximateIndex.open(Index.open(tmp_path / "idx"))
    s2, d2 = re.search(queries, 10, p)
    np.testing.assert_array_equal(d, d2)
    np.testing.assert_array_equal(s, s2)
    assert re.params == ax.params == params and re.memory_bytes() == ax.memory_bytes()
    assert re.doc_ids == index.doc_ids
    # rebuilding replaces the old directory atomically (the pointer names only the new one)
    ax3 = ApproximateIndex.build(index, ApproxBuildParams(pruning=FixedPruning(n_postings=50), centroid_fraction=0.2))
    assert not first_dir.exists() and ax3.path.exists()
    assert json.loads((tmp_path / "idx" / "approximate.json").read_text())["dir"] == ax3.path.name
    assert ApproximateIndex.open(index).params == ax3.params
    assert ApproximateIndex.open(index).params.pruning == FixedPruning(n_postings=50)
    # an index saved before kmeans_iterations was a parameter was clustered in Seismic's one pass, and
    # its parameters were flat (pruning a string next to n_postings / max_fraction)
    meta_f = ax3.path / "segment.json"
    meta = json.loads(meta_f.read_text())
    meta["params"] = {"n_postings": 50, "centroid_fraction": 0.2, "summary_energy": 0.4, "min_cluster_size": 2,
                      "max_fraction": 1.5, "doc_cut": 15, "pruning": "global", "seed": 0}
    meta["format"], meta["version"] = "sparsearch-segment", 1  # as earlier versions stamped the header
    meta["kind"], meta["approx_version"] = "sparsearch-approximate", 3
    _as_version_4_layout(ax3, meta)  # and the summary entries as versions 3 and 4 stored them
    meta_f.write_text(json.dumps(meta))
    with pytest.raises(CorruptIndexError, match="segment.json: (size|checksum)"):  # the pointer's record of the header
        ApproximateIndex.open(index)
    ptr_f = tmp_path / "idx" / "approximate.json"  # as version 3 wrote it: no seal, no header record
    ptr = json.loads(ptr_f.read_text())
    ptr_f.write_text(json.dumps({k: v for k, v in ptr.items() if k not in ("checksum", "header")} | {"version": 3}))
    old = ApproximateIndex.open(index)
    assert old.params == ApproxBuildParams(pruning=GlobalPruning(n_postings=50, max_fraction=1.5),
                                           centroid_fraction=0.2, kmeans_iterations=0)
    assert old.stats()["params"]["pruning"] == {"kind": "global", "n_postings": 50, "max_fraction": 1.5}
    for name in ("comp_first", "comp_sample", "group_bit_ptr", "ent_bits", "block_vals"):  # given on opening
        np.testing.assert_array_equal(getattr(old, name), getattr(ax3, name))
    # its vectors are by term: a forward cut is refused (it needs a rebuild), and tune leaves it out
    assert ax3.heaviest_first and not old.heaviest_first and old.stats()["forward_order"] == "term"
    with pytest.raises(InvalidInputError, match="rebuild it.*forward_cut"):
        old.search(queries, 10, ApproxParams(forward_cut=8))
    assert tune(old, queries, 0.5, query_cuts=(3,), heap_factors=(1.0,), candidates=(0,),
                forward_cuts=(0, 8), sample=10)["grid"][0]["forward_cut"] == 0  # (the cut left out)
    # a torn temporary directory is ignored
    (tmp_path / "idx" / ".tmp-0123-approx-dead").mkdir()
    ApproximateIndex.open(index)
    # corrupt array refused
    f = ax3.path / "block_docs.npy"
    raw = bytearray(f.read_bytes())
    raw[-1] ^= 0xFF
    f.write_bytes(bytes(raw))
    with pytest.raises(IndexFormatError, match="checksum"):
        ApproximateIndex.open(index)
    # a new commit of the exact index removes the approximate one (it described the old commit)
    index2 = build_index(zipf_batch(700, 500, 30, seed=5), tmp_path / "idx")
    with pytest.raises(NotFoundError, match="no approximate index"):
        ApproximateIndex.open(index2)
    assert not list((tmp_path / "idx").glob("approx-*"))
    # an approximate index built before a commit is not saved after it
    unsaved = ApproximateIndex.build(index2, params, save=False)
    add_documents(tmp_path / "idx", zipf_batch(5, 500, 30, seed=8, prefix="n"))
    with pytest.raises(ConflictError, match="committed to"):
        unsaved.save()
    index2 = Index.open(tmp_path / "idx")
    # a pointer that names another commit is stale
    ApproximateIndex.build(index2, params)
    stale = build_index(zipf_batch(700, 500, 30, seed=6), tmp_path / "other")
    (tmp_path / "other" / "approximate.json").write_text((tmp_path / "idx" / "approximate.json").read_text())
    with pytest.raises(CorruptIndexError, match="stale"):
        ApproximateIndex.open(stale)


def test_build_params_and_pruning_union():
    assert ApproxBuildParams().pruning == GlobalPruning(n_postings=3500, max_fraction=1.5)
    for p in (ApproxBuildParams(), ApproxBuildParams(pruning=FixedPruning(7), kmeans_iterations=0, seed=3)):
        assert ApproxBuildParams.from_dict(json.loads(json.dumps(p.to_dict()))) == p
    assert ApproxBuildParams.from_dict({"n_postings": 9, "pruning": "fixed"}).pruning == FixedPruning(9)
    for bad in (dict(pruning="global"), dict(pruning=GlobalPruning(0)), dict(pruning=GlobalPruning(5, 0.0)),
                dict(pruning=FixedPruning(-1)), dict(summary_energy=0.0)):
        with pytest.raises(InvalidInputError):
            ApproxBuildParams(**bad).check()
    with pytest.raises(InvalidInputError, match="no 'bogus'"):
        ApproxBuildParams.from_dict({"bogus": 1})


def test_search_params_dispatch_and_saved_settings(corpus, tmp_path):
    index, queries = corpus
    ax = build(index, **global_pruning(300))
    assert ax.default_params == ApproxParams()
    np.testing.assert_array_equal(ax.search(queries, 10)[1], ax.search(queries, 10, ApproxParams())[1])
    # exact parameters: the exact index answers
    for p in (ExactParams(), ExactParams(exhaustive=True, threads=1)):
        np.testing.assert_array_equal(ax.search(queries, 10, p)[1], index.search(queries, 10)[1])
    with pytest.raises(UnsupportedError):
        ax.search(queries, 10, {"query_cut": 3})
    run = ax.search_run(queries[:3], 5, EXACT_SETTINGS)
    assert list(run) == queries.ids[:3] and all(len(r) <= 5 for r in run.values())
    # settings saved next to the index become the default; a commit keeps them
    path = tmp_path / "idx"
    small = build_index(zipf_batch(300, 200, 20, seed=11), path)
    assert load_settings(path) is None
    tuned = ApproxParams(query_cut=3, heap_factor=0.7)
    save_settings(path, tuned, {"recall": 0.9})
    doc = json.loads((path / "settings.json").read_text())
    assert doc["format"] == "sparsearch-settings" and doc["version"] == 2 and doc["tuned"] == {"recall": 0.9}
    assert load_settings(path) == tuned
    assert build(small).default_params == tuned
    small = build_index(zipf_batch(300, 200, 20, seed=12), path)  # a new commit
    assert load_settings(path) == tuned
    with pytest.raises(InvalidInputError):
        save_settings(path, ExactParams())
    (path / "settings.json").write_text(json.dumps({**doc, "approximate": {"kind": "exact"}}))
    with pytest.raises(CorruptIndexError):
        load_settings(path)


def test_tune_meets_target_on_sample(corpus):
    index, queries = corpus
    ax = build(index, **global_pruning(300, centroid_fraction=0.1))
    best = tune(ax, queries, target_recall=0.9, sample=60, query_cuts=(2, 5, 10, 40),
                heap_factors=(0.6, 0.8, 1.0), candidates=(0, 20, 200), forward_cuts=(0, 4), rerank=60)
    assert best["met"] and best["recall"] >= 0.9
    rng = np.random.default_rng(0)
    idx = np.sort(rng.choice(len(queries), size=60, replace=False))
    _, ed = index.search(queries[idx], 10)
    knobs = ("query_cut", "heap_factor", "candidates", "forward_cut", "rerank")
    _, d = ax.search(queries[idx], 10, ApproxParams(**{n: best[n] for n in knobs}))
    assert recall_at_k(d, ed) >= 0.9
    # Seismic's strategy with every heap factor and forward cut, the candidate strategy once per query cut
    assert len(best["grid"]) == 4 * 3 * 2 + 4 * 2
    assert sorted({(g["candidates"], g["heap_factor"], g["forward_cut"]) for g in best["grid"] if g["candidates"]}) == [
        (20, 0.9, 0), (200, 0.9, 0)]
    assert {g["forward_cut"] for g in best["grid"]} == {0, 4} and {g["rerank"] for g in best["grid"]} == {60}


def topical_batch(n_topics: int, per_topic: int, seed: int) -> tuple[SparseBatch, np.ndarray]:
    """Documents with planted topics: 8 of their topic's 30 terms and 3 of 40 shared terms
    (term 0, in every document, gives one list over all topics). Returns (docs, topic per doc)."""
    rng = np.random.default_rng(seed)
    n_shared, width = 40, 30
    rows, topic = [], []
    for z in range(n_topics):
        own = n_shared + z * width + np.arange(width)
        for _ in range(per_topic):
            t = np.unique(np.concatenate([[0], rng.choice(own, 8, replace=False),
                                          rng.choice(np.arange(1, n_shared), 3, replace=False)]))
            rows.append((t, rng.uniform(0.2, 1.0, len(t)).astype(np.float32)))
            topic.append(z)
    indptr = np.concatenate([[0], np.cumsum([len(t) for t, _ in rows])])
    docs = SparseBatch(indptr, np.concatenate([t for t, _ in rows]).astype(np.int32),
                       np.concatenate([v for _, v in rows]), Vocabulary.from_size(n_shared + n_topics * width),
                       [f"d{i}" for i in range(len(rows))])
    return docs, np.array(topic)


def block_purity(ax: ApproximateIndex, t: int, topic: np.ndarray) -> float:
    """Fraction of the postings of list ``t`` whose block's most common topic is their own."""
    hit = tot = 0
    for b in range(int(ax.term_block_ptr[t]), int(ax.term_block_ptr[t + 1])):
        z = topic[np.asarray(ax.block_docs[ax.block_doc_ptr[b]:ax.block_doc_ptr[b + 1]], np.int64)]
        hit += np.bincount(z).max()
        tot += len(z)
    return hit / tot


def test_kmeans_iterations_make_purer_blocks(tmp_path):
    """Lloyd steps after Seismic's one random-centroid pass recover planted topics better; the
    blocks still partition every list; 0 iterations is the one pass."""
    docs, topic = topical_batch(12, 40, seed=5)
    index = build_index(docs, tmp_path / "idx")
    kw = global_pruning(10**6, centroid_fraction=0.05, summary_energy=0.4, min_cluster_size=1)
    purity = {}
    for it in (0, 1, 3):
        ax = build(index, kmeans_iterations=it, **kw)
        lst = np.asarray(ax.block_docs[ax.block_doc_ptr[ax.term_block_ptr[0]]:ax.block_doc_ptr[ax.term_block_ptr[1]]])
        assert sorted(lst.tolist()) == list(range(len(docs)))  # term 0's list: every document, once
        purity[it] = block_purity(ax, 0, topic)
    assert purity[1] > purity[0] + 0.05, purity
    assert purity[3] >= purity[1], purity


def test_memory_and_validation(corpus):
    index, queries = corpus
    ax = build(index, **global_pruning(200))
    st_ = ax.stats()
    assert st_["memory_bytes"] == ax.memory_bytes() > 0
    assert ax.bytes_per_doc() == pytest.approx(ax.memory_bytes() / index.n_docs)
    assert st_["n_list_postings"] <= 200 * 1.5 * index.n_terms
    for bad_k in (0, -1):
        with pytest.raises(InvalidInputError, match="k must be"):
            ax.search(queries, bad_k)
    assert ax.search(queries, 10**9)[1].shape[1] <= index.n_live_docs  # clamped (issue 15 item 7)
    with pytest.raises(InvalidInputError):
        ax.search(queries, 10, ApproxParams(heap_factor=0.0))
    with pytest.raises(InvalidInputError):
        ax.search(queries, 10, ApproxParams(query_cut=0))
    with pytest.raises(ValueError):  # InvalidInputError is a ValueError
        build(index, centroid_fraction=0.0)
    with pytest.raises(InvalidInputError, match="kmeans_iterations"):
        build(index, kmeans_iterations=-1)
    # more results asked than documents exist: results are n_docs wide, padded with -1
    small = build_index(zipf_batch(5, 50, 10, seed=9), index.path.parent / "small")
    s, d = build(small).search(zipf_batch(3, 50, 10, seed=8, prefix="q"), 10)
    assert d.shape == s.shape == (3, 5) and (d < 5).all()


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n_docs=st.integers(1, 400), n_terms=st.integers(2, 60), nnz=st.integers(1, 12), k=st.integers(1, 12),
       frac=st.floats(0.01, 1.0), seed=st.integers(0, 10_000))
def test_non_pruning_settings_exact_property(tmp_path_factory, n_docs, n_terms, nnz, k, frac, seed):
    docs = zipf_batch(n_docs, n_terms, nnz, seed)
    queries = zipf_batch(8, n_terms, max(1, nnz // 2), seed + 1, prefix="q")
    index = build_index(docs, tmp_path_factory.mktemp("h") / "i")
    _, ed = index.search(queries, k)
    ax = build(index, centroid_fraction=frac, min_cluster_size=1 + seed % 3, **NO_PRUNING)
    _, d = ax.search(queries, k, ApproxParams(query_cut=10**6, heap_factor=1.0))
    assert recall_at_k(d, ed, k) == 1.0


def reference_seismic(ax: ApproximateIndex, terms: np.ndarray, weights: np.ndarray, k: int, query_cut: int,
                      heap_factor: float, forward_cut: int = 0, rerank: int = 0) -> tuple[list[int], int]:
    """Seismic's query algorithm in plain Python over the index's arrays (the kernel's specification):
    visit the lists of the ``query_cut`` largest query weights; in each, scan blocks by decreasing
    summary score and stop at the first below ``heap_factor`` x the k-th score; score each new
    document of a scanned block exactly. With ``forward_cut`` m >= 1, a document is scored on the
    first m entries of its forward vector (its m heaviest), the k-th of these partial scores is
    the threshold, and the ``max(rerank, k)`` best by partial score are scored whole for the
    result. Returns (top-k doc numbers, documents scored)."""
    from sparsearch.index.kernels import snap_inplace

    w = ax.query_weights(terms, weights).astype(np.float64)  # x each term's grid step, as the kernel takes them
    snap_inplace(w)
    qd: dict[int, float] = {}
    for t, x in zip(terms.tolist(), w.tolist()):
        if t >= 0 and x > 0:
            qd[t] = qd.get(t, 0.0) + x
    top: list[tuple[float, int]] = []  # (score, -doc): the k best so far
    pool: list[tuple[float, int]] = []  # (partial score, -doc): the max(rerank, k) best (forward_cut >= 1)
    seen: set[int] = set()

    def forward_score(d: int, cut: int | None) -> float:
        a, b = ax.fwd_ptr[d], ax.fwd_ptr[d + 1]
        b = b if cut is None else min(b, a + cut)
        return float(ax.doc_scale[d]) * sum(qd.get(int(u), 0.0) * float(v)
                                            for u, v in zip(ax.fwd_terms[a:b], ax.fwd_vals[a:b]))

    for t in sorted(qd, key=lambda u: (-qd[u], u))[:query_cut]:
        b0, nb = int(ax.term_block_ptr[t]), int(ax.term_block_ptr[t + 1] - ax.term_block_ptr[t])
        ss = np.zeros(nb)
        s_terms, s_codes, s_scales = ax.list_summaries(t)  # block-major, not the kernel's component-major view
        for bi in range(nb):  # components ascending, as the kernel adds them
            for u, code in zip(s_terms[bi].tolist(), s_codes[bi].tolist()):
                if u in qd:
                    ss[bi] += qd[u] * float(code)
        ss = ss * s_scales.astype(np.float64)
        for bi in sorted(range(nb), key=lambda i: (-ss[i], i)):
            if len(top) == k and ss[bi] < heap_factor * top[0][0]:
                break
            for p in range(ax.block_doc_ptr[b0 + bi], ax.block_doc_ptr[b0 + bi + 1]):
                d = int(ax.block_docs[p])
                if d in seen:
                    continue
                seen.add(d)
                s = forward_score(d, forward_cut or None)
                if s > 0:
                    top = sorted(top + [(s, -d)])[-k:]
                    pool = sorted(pool + [(s, -d)])[-max(rerank, k):]
    if forward_cut:
        top = sorted((forward_score(-nd, None), nd) for _, nd in pool)[-k:]
    return [-d for _, d in sorted(top, reverse=True)], len(seen)


@pytest.mark.parametrize("group_blocks,group_entries", [(7, 300), (3, 40)])
def test_summary_groups_are_a_storage_detail(corpus, monkeypatch, group_blocks, group_entries):
    """Lists of more than GROUP_BLOCKS blocks (or GROUP_ENTRIES summary entries) are split into
    summary groups; the split changes neither a summary nor a search result. (3, 40): single
    blocks exceed the entry limit, so offsets need 32 bits."""
    from sparsearch.index import approximate as apx

    index, queries = corpus
    kw = global_pruning(600, centroid_fraction=0.5, summary_energy=0.6, min_cluster_size=1)
    whole = build(index, **kw)
    assert np.diff(whole.term_block_ptr).max() > apx.GROUP_BLOCKS  # the default splits some lists too
    monkeypatch.setattr(apx, "GROUP_BLOCKS", group_blocks)
    monkeypatch.setattr(apx, "GROUP_ENTRIES", group_entries)
    split = build(index, **kw)
    n_blocks, n_entries = np.diff(split.group_block_ptr), np.diff(split.group_ent_ptr)
    assert len(n_blocks) > 2 * len(whole.group_block_ptr)
    assert n_blocks.max() <= group_blocks and ((n_entries <= group_entries) | (n_blocks == 1)).all()
    for ax in (whole, split):  # a start bit per component and the sentinel closing the last one
        bits = np.unpackbits(ax.comp_first.astype("<u8").view(np.uint8), bitorder="little")
        starts = np.flatnonzero(bits)
        assert len(starts) == ax.group_comp_ptr[-1] + 1 and starts[-1] == len(ax.ent_val)
        for c in range(0, len(starts) - 1, 7):
            assert ka.comp_range(c, ax.comp_first, ax.comp_sample) == (starts[c], starts[c + 1])
    for ax in (whole, split):  # block numbers at their group's width: every block of every group named
        for g in range(len(ax.group_block_ptr) - 1):
            nb, e0, e1 = np.diff(ax.group_block_ptr[g:g + 2])[0], ax.group_ent_ptr[g], ax.group_ent_ptr[g + 1]
            width = ka.block_number_width(ax.group_block_ptr, g)
            assert width == (int(nb) - 1).bit_length() and ax.group_bit_ptr[g + 1] - ax.group_bit_ptr[g] == (e1 - e0) * width
            blocks = {ka.block_number(ax.group_bit_ptr[g] + i * width, (1 << width) - 1, ax.ent_bits)
                      for i in range(e1 - e0)}
            assert blocks == set(range(nb))  # (each block's summary has an entry: its largest component)
    for t in range(0, index.n_terms, 37):
        a, b = whole.list_summaries(t), split.list_summaries(t)
        for x, y in zip(a[0] + a[1], b[0] + b[1]):
            np.testing.assert_array_equal(x, y)
    for qc, hf in [(3, 0.8), (1000, 1.0)]:
        p = ApproxParams(query_cut=qc, heap_factor=hf, threads=1)
        s1, d1 = whole.search(queries, 10, p)
        s2, d2 = split.search(queries, 10, p)
        np.testing.assert_array_equal(d1, d2)
        np.testing.assert_array_equal(s1, s2)


def test_dense_and_sparse_directories_agree(corpus, monkeypatch):
    """A summary group's directory is a bitmap over the vocabulary (O(1) lookups) where that is
    smaller than its sorted component ids; both give the same summaries and results."""
    from sparsearch.index import approximate as apx

    index, queries = corpus
    kw = global_pruning(600, centroid_fraction=0.2, summary_energy=0.5)
    mixed = build(index, **kw)
    dense = np.diff(mixed.group_word_ptr) > 0
    assert dense.any() and (~dense).any()
    assert len(mixed.comp_terms) == np.diff(mixed.group_comp_ptr)[~dense].sum()
    monkeypatch.setattr(apx, "DENSE_DIRECTORIES", False)
    sparse = build(index, **kw)
    assert len(sparse.dir_words) == 0 and mixed.memory_bytes() < sparse.memory_bytes()
    for t in range(0, index.n_terms, 23):
        for x, y in zip(mixed.list_summaries(t)[0], sparse.list_summaries(t)[0]):
            np.testing.assert_array_equal(x, y)
    for qc, hf in [(4, 0.7), (1000, 1.0)]:
        p = ApproxParams(query_cut=qc, heap_factor=hf)
        np.testing.assert_array_equal(mixed.search(queries, 10, p)[1], sparse.search(queries, 10, p)[1])


@pytest.mark.parametrize("query_cut,heap_factor,forward_cut,rerank",
                         [(2, 1.0, 0, 200), (4, 0.8, 0, 200), (8, 0.6, 0, 200), (4, 1.0, 3, 5), (8, 0.8, 6, 40)])
def test_pruned_search_follows_seismic_algorithm(corpus, query_cut, heap_factor, forward_cut, rerank):
    """At pruning settings the kernel scans exactly the blocks of the reference algorithm
    (same documents scored, same top-k): its lazy block selection and document prefetching
    change the speed, not the result. So does the forward cut's variant (rerank 5: the pool is
    at least k), serial and parallel."""
    index, queries = corpus
    ax = build(index, **global_pruning(300, centroid_fraction=0.1, summary_energy=0.4))
    q_indptr, terms, weights = index.prepare_queries(queries[:40])
    params = ApproxParams(query_cut=query_cut, heap_factor=heap_factor, forward_cut=forward_cut, rerank=rerank,
                          threads=1)
    _, batch = ax.search_prepared(q_indptr, terms, weights, 10, replace(params, threads=2))
    for i in range(40):
        a, b = q_indptr[i], q_indptr[i + 1]
        _, d = ax.search_prepared(np.array([0, b - a]), terms[a:b], weights[a:b], 10, params)
        ref, n_scored = reference_seismic(ax, terms[a:b], weights[a:b], 10, query_cut, heap_factor, forward_cut,
                                          rerank)
        assert d[0][:len(ref)].tolist() == ref and (d[0][len(ref):] == -1).all()
        assert ax.last_scored == n_scored
        np.testing.assert_array_equal(batch[i], d[0])


def test_forward_vectors_are_stored_heaviest_first(corpus):
    """Each forward vector holds its document's entries by decreasing weight (impact x its
    term's grid step), ties by term, so that its first m entries are its m heaviest."""
    index, _ = corpus
    W = docs_matrix(index).tocsr()
    for summaries in (True, False):
        ax = build(index, summaries=summaries, **global_pruning(200))
        assert ax.heaviest_first and ax.stats()["forward_order"] == "heaviest_first"
        for d in range(0, index.n_docs, 13):
            a, b = ax.fwd_ptr[d], ax.fwd_ptr[d + 1]
            t, v = ax.fwd_terms[a:b].astype(np.int64), ax.fwd_vals[a:b] * ax.term_scale[ax.fwd_terms[a:b]]
            v32 = v.astype(np.float32)  # the weights as kernels_approx.weight_of rounds them
            assert all((v32[i], -t[i]) >= (v32[i + 1], -t[i + 1]) for i in range(len(t) - 1))
            row = W[d]
            np.testing.assert_array_equal(np.sort(t), row.indices)
            np.testing.assert_allclose(v[np.argsort(t)], row.data, rtol=1e-6)


def test_forward_cut_reaches_seismic_and_exact_results(corpus):
    """A forward cut as long as the longest document is Seismic's strategy (same results and
    scores), and with nothing pruned it is exact search; shorter cuts read fewer entries and
    lose little recall when the pool is deep."""
    index, queries = corpus
    es, ed = index.search(queries, 10)
    ax = build(index, **global_pruning(300))
    longest = int(np.diff(ax.fwd_ptr).max())
    for qc, hf in ((3, 0.9), (6, 1.0)):
        s0, d0 = ax.search(queries, 10, ApproxParams(query_cut=qc, heap_factor=hf))
        s1, d1 = ax.search(queries, 10, ApproxParams(query_cut=qc, heap_factor=hf, forward_cut=longest, rerank=10))
        np.testing.assert_array_equal(d0, d1)
        np.testing.assert_array_equal(s0, s1)
    full = build(index, **NO_PRUNING)
    s, d = full.search(queries, 10, replace(EXACT_SETTINGS, forward_cut=longest))
    np.testing.assert_array_equal(d, ed)
    np.testing.assert_array_equal(s, es)
    _, d_whole = ax.search(queries, 10, ApproxParams(query_cut=8, heap_factor=1.0))
    cut = [recall_at_k(ax.search(queries, 10, ApproxParams(query_cut=8, heap_factor=1.0, forward_cut=m,
                                                           rerank=200))[1], d_whole) for m in (2, 8)]
    assert cut[0] < cut[1] and cut[1] > 0.9


def test_forward_cut_skips_deleted_and_filtered_documents_and_is_checked(corpus):
    index, queries = corpus
    ax = build(index, **global_pruning(300))
    p = ApproxParams(query_cut=10, heap_factor=0.9, forward_cut=6, rerank=50)
    _, d = ax.search(queries, 10, p)
    allowed = np.ones(index.n_docs, bool)
    allowed[np.unique(d[d >= 0])[::2]] = False
    _, fd = ax.search(queries, 10, p, allowed=allowed)
    assert (fd >= 0).any() and not np.isin(fd[fd >= 0], np.flatnonzero(~allowed)).any()
    for bad in (dict(forward_cut=-1), dict(forward_cut=True), dict(forward_cut=2.5),
                dict(forward_cut=4, candidates=10), dict(rerank=0), dict(rerank=10**7), dict(rerank=False)):
        with pytest.raises(InvalidInputError, match="forward_cut|rerank"):
            ax.search(queries, 10, ApproxParams(**bad))


@pytest.mark.parametrize("with_grid", [True, False])
@pytest.mark.parametrize("per_doc_scale", [True, False])
def test_global_threshold_by_radix_selection_matches_a_sort(with_grid, per_doc_scale):
    """The global pruning threshold is selected without holding the postings' weights; it must
    be the weight a full sort puts at rank P - budget, ties included."""
    from sparsearch.index import kernels_approx as ka

    rng = np.random.default_rng(3)
    V, n_docs = 40, 300
    df = rng.integers(0, 120, V)
    post_ptr = np.concatenate([[0], np.cumsum(df)]).astype(np.int64)
    P = int(post_ptr[-1])
    post_docs = np.concatenate([np.sort(rng.choice(n_docs, d, replace=False)) for d in df]).astype(np.uint32)
    post_vals = rng.integers(1, 20, P).astype(np.uint8)  # few distinct impacts: many ties
    step = rng.uniform(0.01, 0.2, V) if with_grid else np.zeros(0)
    doc_scale = rng.uniform(0.5, 2.0, n_docs) if per_doc_scale else np.ones(1)
    terms = np.repeat(np.arange(V), df)
    w = (post_vals.astype(np.float32) * step[terms]).astype(np.float32) if with_grid else post_vals
    weights = w.astype(np.float64) * (doc_scale[post_docs] if per_doc_scale else 1.0)
    for n_postings, max_fraction in ((10, 1.5), (30, 1.2), (1, 100.0), (1000, 1.5)):
        keep = ka.global_keep(post_ptr, post_vals, step, doc_scale, post_docs, n_postings, max_fraction)
        budget = min(P, n_postings * int((df > 0).sum()))
        cap = max(1, int(max_fraction * n_postings))
        if budget >= P:
            expect = np.minimum(cap, df)
        else:
            thr = np.sort(weights)[P - budget]
            expect = np.minimum(cap, np.bincount(terms[weights >= thr], minlength=V))
        assert np.array_equal(keep, expect), (n_postings, max_fraction)


def test_sketches_weigh_impacts_by_their_terms_grid():
    """Sketches rank a document's components by weight (impact x its term's grid step), not by
    raw impact: with two terms on different grids the larger weight comes first."""
    from sparsearch.index import kernels_approx as ka

    fwd_ptr = np.array([0, 3], np.int64)
    fwd_terms = np.array([0, 1, 2], np.uint16)
    fwd_vals = np.array([200, 10, 50], np.uint8)
    step = np.array([0.001, 0.5, 0.01])  # weights 0.2, 5.0, 0.5
    ptr, st, sv = ka.doc_sketches(fwd_ptr, fwd_terms, fwd_vals, step, np.ones(1), 2)
    assert st.tolist() == [1, 2] and np.allclose(sv, [5.0, 0.5])
    ptr, st, sv = ka.doc_sketches(fwd_ptr, fwd_terms, fwd_vals, np.zeros(0), np.ones(1), 2)
    assert st.tolist() == [0, 2] and sv.tolist() == [200.0, 50.0]


def test_wide_and_narrow_forward_locators_agree(corpus, monkeypatch):
    """Small collections get 4-byte forward locators; the 8-byte ones (any collection) find the
    same documents with the same scores."""
    from sparsearch.index import approximate as apx

    assert not ka.locators_fit_32(1 << ka.LOC32_BITS, 10) and not ka.locators_fit_32(5, (1 << 22) + 1)
    assert ka.locators_fit_32((1 << ka.LOC32_BITS) - 1, 1 << 22)
    index, queries = corpus
    narrow = build(index, **global_pruning(200))
    assert narrow.block_fwd.dtype == np.uint32
    monkeypatch.setattr(apx.ka, "locators_fit_32", lambda max_len, n: False)
    wide = build(index, **global_pruning(200))
    assert wide.block_fwd.dtype == np.uint64 and wide.memory_bytes() > narrow.memory_bytes()
    for p in (ApproxParams(query_cut=3, heap_factor=0.8), ApproxParams(query_cut=1000, heap_factor=1.0)):
        s1, d1 = narrow.search(queries, 10, p)
        s2, d2 = wide.search(queries, 10, p)
        np.testing.assert_array_equal(d1, d2)
        np.testing.assert_array_equal(s1, s2)


# ------------------------------------------------------------------ the candidate strategy
def reference_candidates(ax: ApproximateIndex, terms: np.ndarray, weights: np.ndarray, k: int, query_cut: int,
                         n_cand: int) -> tuple[np.ndarray, np.ndarray]:
    """The candidate strategy written plainly: partial scores over the pruned lists (read back
    as (doc, impact) pairs) of the ``query_cut`` heaviest terms, the ``n_cand`` best by (partial
    desc, doc asc), scored in full on the forward index; top-k by (score desc, doc asc)."""
    from sparsearch.index.kernels import snap_inplace

    w = ax.query_weights(terms, weights).astype(np.float64)
    snap_inplace(w)
    q = {}
    for t, x in zip(terms, w):
        if 0 <= t < ax.index.n_terms and x > 0:
            q[int(t)] = q.get(int(t), 0.0) + float(x)
    heavy = sorted(q, key=lambda t: (-q[t], t))[:query_cut]
    partial: dict[int, float] = {}
    for t in heavy:
        lo, hi = ax.block_doc_ptr[ax.term_block_ptr[t]], ax.block_doc_ptr[ax.term_block_ptr[t + 1]]
        for d, v in zip(ax.block_docs[lo:hi], ax.block_vals[lo:hi]):
            partial[int(d)] = partial.get(int(d), 0.0) + q[t] * float(v)
    cands = sorted(partial, key=lambda d: (-partial[d], d))[:n_cand]
    scored = []
    for d in cands:
        lo, hi = ax.fwd_ptr[d], ax.fwd_ptr[d + 1]
        s = sum(q.get(int(t), 0.0) * float(v) for t, v in zip(ax.fwd_terms[lo:hi], ax.fwd_vals[lo:hi]))
        if s > 0:
            scored.append((s * float(ax.doc_scale_arg[0]), d))
    scored.sort(key=lambda x: (-x[0], x[1]))
    return np.array([s for s, _ in scored[:k]]), np.array([d for _, d in scored[:k]], np.int64)


@pytest.mark.parametrize("summaries", [True, False])
def test_candidate_strategy_follows_its_reference(corpus, summaries):
    index, queries = corpus
    ax = build(index, summaries=summaries, **global_pruning(120))
    # the stored impacts are the documents' own, list by list
    W = docs_matrix(index).tocsc()
    for t in (0, 1, 7, 500):
        lo, hi = ax.block_doc_ptr[ax.term_block_ptr[t]], ax.block_doc_ptr[ax.term_block_ptr[t + 1]]
        docs = ax.block_docs[lo:hi].astype(np.int64)
        col = W[:, t].toarray().ravel()
        assert np.all(col[docs] > 0) and len(docs) <= 180
        np.testing.assert_allclose(ax.block_vals[lo:hi] * ax.term_scale[t], col[docs], rtol=1e-6)
    qi, qt, qw = index.prepare_queries(queries)
    for query_cut, n_cand in ((1, 5), (3, 20), (8, 60), (30, 3000)):
        p = ApproxParams(query_cut=query_cut, candidates=n_cand)
        s, d = ax.search(queries, 10, p)
        s1, d1 = ax.search(queries, 10, ApproxParams(query_cut=query_cut, candidates=n_cand, threads=1))
        np.testing.assert_array_equal(d, d1)  # the parallel and the serial kernels agree
        for i in range(0, len(queries), 7):
            rs, rd = reference_candidates(ax, qt[qi[i]:qi[i + 1]], qw[qi[i]:qi[i + 1]], 10, query_cut, n_cand)
            np.testing.assert_array_equal(d[i][:len(rd)], rd)
            assert np.all(d[i][len(rd):] == -1)
            np.testing.assert_allclose(s[i][:len(rs)], rs, rtol=1e-6)


def test_candidate_strategy_is_exact_when_nothing_is_cut(corpus):
    index, queries = corpus
    es, ed = index.search(queries, 10)
    for summaries in (True, False):
        ax = build(index, summaries=summaries, **NO_PRUNING)
        s, d = ax.search(queries, 10, ApproxParams(query_cut=1000, candidates=index.n_docs))
        np.testing.assert_array_equal(d, ed)
        np.testing.assert_array_equal(s, es)
    # recall grows with the candidates scored
    ax = build(index, summaries=False, **global_pruning(200))
    recalls = [recall_at_k(ax.search(queries, 10, ApproxParams(query_cut=10, candidates=c))[1], ed)
               for c in (10, 40, 160, 640)]
    assert recalls == sorted(recalls) and recalls[-1] > 0.9 and recalls[0] < recalls[-1]


def test_index_without_summaries(corpus, tmp_path):
    index, queries = corpus
    full = build(index, **global_pruning(200))
    lean = build(index, summaries=False, **global_pruning(200))
    assert lean.memory_bytes() < full.memory_bytes() / 2
    assert lean.stats()["summary_bytes"] <= 4 * (index.n_terms + 16)  # an empty group pointer per list
    assert lean.stats()["n_list_postings"] == full.stats()["n_list_postings"]
    with pytest.raises(InvalidInputError, match="without summaries"):  # Seismic's strategy needs them
        lean.search(queries, 10, ApproxParams(query_cut=5))
    assert lean.default_params == CANDIDATE_DEFAULTS and full.default_params == ApproxParams()
    with pytest.raises(InvalidInputError, match="without summaries"):
        lean.list_summaries(0)
    p = ApproxParams(query_cut=6, candidates=50)
    s, d = lean.search(queries, 10, p)
    s2, d2 = full.search(queries, 10, p)  # the same pruned lists: the same candidates, whatever the blocks
    np.testing.assert_array_equal(d, d2)
    np.testing.assert_array_equal(s, s2)
    # saved and opened again (with its build parameters), and tuned over the candidate strategy only
    docs = zipf_batch(600, 400, 25, seed=11)
    small = build_index(docs, tmp_path / "idx")
    saved = ApproximateIndex.build(small, ApproxBuildParams(pruning=GlobalPruning(n_postings=60), summaries=False))
    again = ApproximateIndex.open(Index.open(tmp_path / "idx"))
    assert again.params.summaries is False and again.memory_bytes() == saved.memory_bytes()
    assert again.default_params == CANDIDATE_DEFAULTS  # from the pointer, no settings saved
    save_settings(tmp_path / "idx", ApproxParams(query_cut=4, candidates=30))
    assert ApproximateIndex.open(Index.open(tmp_path / "idx")).default_params.candidates == 30
    qs = zipf_batch(40, 400, 8, seed=12, prefix="q")
    np.testing.assert_array_equal(again.search(qs, 5, p)[1], saved.search(qs, 5, p)[1])
    r = tune(again, qs, target_recall=0.8, sample=40, query_cuts=(2, 8), heap_factors=(0.7, 1.0),
             candidates=(0, 30, 300))
    assert {g["candidates"] for g in r["grid"]} == {30, 300} and r["candidates"] in (30, 300)
    with pytest.raises(InvalidInputError, match="no setting"):
        tune(again, qs, candidates=(0,))


def test_candidate_strategy_skips_deleted_and_filtered_documents(corpus):
    index, queries = corpus
    ax = build(index, summaries=False, **global_pruning(300))
    p = ApproxParams(query_cut=10, candidates=200)
    _, d = ax.search(queries, 10, p)
    allowed = np.ones(index.n_docs, bool)
    allowed[np.unique(d[d >= 0])[::2]] = False  # half of the documents it returned
    _, fd = ax.search(queries, 10, p, allowed=allowed)
    assert (fd >= 0).any() and not np.isin(fd[fd >= 0], np.flatnonzero(~allowed)).any()


def test_candidates_and_query_rows_are_checked(corpus):
    index, queries = corpus
    ax = build(index, summaries=False, **global_pruning(100))
    for bad in (-1, True, 1.5, 10**7):
        with pytest.raises(InvalidInputError, match="candidates"):
            ax.search(queries, 10, ApproxParams(candidates=bad))
    qi, qt, qw = index.prepare_queries(queries[:3])
    for rows in (np.array([0, len(qt) + 5]), np.array([-1, 3]), np.array([4, 2]), np.array([0, 5, 2, len(qt)])):
        with pytest.raises(InvalidInputError, match="row pointers"):  # would read past the arrays
            ax.search_prepared(rows, qt, qw, 10, ApproxParams(candidates=10))
    with pytest.raises(InvalidInputError, match="row pointers"):
        ax.search_prepared(qi, qt, qw[:-1], 10, ApproxParams(candidates=10))
