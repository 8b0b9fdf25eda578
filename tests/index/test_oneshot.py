"""One-shot search (numpy only, ``sparsearch.index.oneshot``) equals ``Index.search`` bit for bit:
the same doc numbers and float64 scores on random corpora of several segments, with deletions,
both codecs, both impact quantizations, version-1 segments, unknown terms, empty queries and k
beyond the matches; its explanations equal ``Index.explain``; it refuses what it cannot answer
exactly; it checks what it opens. ``sparsearch search`` on a BM25 index takes it without
importing numba or scipy, and prints what the numba path prints."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sparsearch.cli import main
from sparsearch.errors import CorruptIndexError, UnsupportedError
from sparsearch.index import Index, build_index, kernels, oneshot, segment
from sparsearch.index import searcher as searcher_mod
from sparsearch.index.format import load_segments
from sparsearch.index.oneshot import OneShotIndex
from sparsearch.index.updates import add_documents, delete_documents
from sparsearch.searching import ExactParams
from sparsearch.vectors import SparseBatch, Vocabulary
from tests.index.test_quantization import rewrite_as_version_1

EXACT = ExactParams()
EXHAUSTIVE = ExactParams(exhaustive=True)


def docs_batch(rng, n, prefix, n_terms=60, scale=1.0):
    """Documents over ``t0..t{n_terms-1}``, Zipf-like: the first terms fill several blocks of 128,
    the last ones leave gaps of hundreds of documents (wide bit widths); t0 is in every document
    (0-bit blocks) and ``rare`` in the first and last only."""
    p = 0.9 / np.arange(1, n_terms + 1) ** 0.8
    rows = []
    for i in range(n):
        terms = np.flatnonzero(rng.random(n_terms) < p)
        row = {f"t{t}": float(rng.lognormal(0, 1.2) * scale) for t in terms}
        row["t0"] = float(rng.uniform(0.1, 2.0) * scale)
        if i in (0, n - 1):
            row["rare"] = float(rng.uniform(0.5, 3.0))
        rows.append(row)
    return SparseBatch.from_dicts(rows, ids=[f"{prefix}{i}" for i in range(n)])


def query_batch(rng, n_terms=60):
    """Random queries over the index's terms and some it lacks; an empty one, one of unknown
    terms only, one of a single common term (ties: equal impacts), one with repeated weights."""
    rows = []
    for _ in range(12):
        m = int(rng.integers(1, 9))
        rows.append({f"t{t}": float(rng.lognormal(0, 1)) for t in rng.choice(n_terms, m, replace=False)})
        if rng.random() < 0.4:
            rows[-1][f"zz{int(rng.integers(5))}"] = float(rng.uniform(0.5, 5))
    rows += [{}, {"zz1": 2.0, "zz2": 1.0}, {"t0": 1.0}, {"rare": 1.0, "t1": 1.0, "t2": 1.0, "t3": 1.0}]
    return SparseBatch.from_dicts(rows, ids=[f"q{i}" for i in range(len(rows))])


def build_corpus(path, rng, quantization="uint8", codec="byte", sizes=(700, 300, 40), delete=True):
    """An index of several segments (one build, then adds with other weight ranges, so that
    each segment has its own per-term scales), documents deleted in several of them (all of the
    last one)."""
    build_index(docs_batch(rng, sizes[0], "a"), path, quantization=quantization, codec=codec)
    for j, n in enumerate(sizes[1:], 1):
        add_documents(path, docs_batch(rng, n, "abcdefgh"[j], scale=[1.0, 3.0, 0.2][j % 3]))
    if delete:
        ids = [f"a{i}" for i in range(0, sizes[0], 7)] + [f"b{i}" for i in range(0, sizes[1], 5)]
        ids += [f"c{i}" for i in range(sizes[2])] if len(sizes) > 2 else []
        delete_documents(path, ids)
    return path


def assert_same(path, queries, k, params=None):
    """OneShotIndex.search == Index.search: doc numbers, float64 scores, float32 scores."""
    index, one = Index.open(path), OneShotIndex.open(path)
    assert one.supports(params)
    for dtype in (np.float64, np.float32):
        s1, d1 = index.search(queries, k, params, dtype=dtype)
        s2, d2 = one.search(queries, k, params, dtype=dtype)
        assert s2.dtype == s1.dtype and d2.dtype == d1.dtype and s2.shape == s1.shape and d2.shape == d1.shape
        np.testing.assert_array_equal(d2, d1)
        np.testing.assert_array_equal(s2.view(np.uint64 if dtype == np.float64 else np.uint32),
                                      s1.view(np.uint64 if dtype == np.float64 else np.uint32))  # bit for bit
    return index, one, d1


def assert_same_explanations(index, one, queries, docs, n=3):
    for qi in range(len(queries)):
        for d in [int(x) for x in docs[qi][:n] if x >= 0]:
            assert [dataclasses.astuple(c) for c in one.explain(queries[qi:qi + 1], d)] == \
                   [dataclasses.astuple(c) for c in index.explain(queries[qi:qi + 1], d)]


# ------------------------------------------------------------------------------ constants
def test_one_definition_of_the_format_and_its_constants():
    """oneshot, segment, kernels and searcher read the format and constants of index.format."""
    from sparsearch.index import format as fmt
    assert oneshot.BLOCK is fmt.BLOCK and kernels.BLOCK is fmt.BLOCK and oneshot.SNAP_BITS is kernels.SNAP_BITS
    assert segment.ARRAYS is fmt.ARRAYS and segment.SEGMENT_FORMAT is fmt.SEGMENT_FORMAT
    assert Index.maxscore_min_docs == oneshot.TAAT_MAX_DOCS == 2 * kernels.WINDOW
    assert oneshot.Contribution is searcher_mod.Contribution


# --------------------------------------------------------------------- equal to Index.search
@pytest.mark.parametrize("codec", ["byte", "bitpack"])
@pytest.mark.parametrize("quantization", ["uint8", "float32"])
@pytest.mark.parametrize("maxscore_min_docs", [0, None])
def test_equals_index_search_on_segments_with_deletions(tmp_path, monkeypatch, codec, quantization,
                                                        maxscore_min_docs):
    """Several segments, deletions (one segment wholly deleted), unknown terms, empty queries,
    k from 1 to beyond the live documents; Index.search by MaxScore (maxscore_min_docs=0) or
    term at a time (the default for segments this small), exact and exhaustive."""
    if maxscore_min_docs is not None:
        monkeypatch.setattr(Index, "maxscore_min_docs", maxscore_min_docs)
        monkeypatch.setattr(oneshot, "TAAT_MAX_DOCS", maxscore_min_docs)
    rng = np.random.default_rng(11)
    path = build_corpus(tmp_path / "idx", rng, quantization, codec)
    queries = query_batch(rng)
    for k in (1, 7, 10_000):
        for params in (None, EXHAUSTIVE):
            if quantization == "float32" and maxscore_min_docs == 0 and params is None:
                # float32 sums round: MaxScore adds in its own order, which the one-shot search does not follow
                assert not OneShotIndex.open(path).supports(params)
                with pytest.raises(UnsupportedError):
                    OneShotIndex.open(path).search(queries, k, params)
                continue
            index, one, docs = assert_same(path, queries, k, params)
    assert (docs[:, :5] >= 0).any() and (docs == -1).any()  # hits, and rows with fewer than k of them
    qi, qt, qw = index.prepare_queries(queries)
    df = [np.diff(np.asarray(s.term_post_ptr)) for s in index.segments]
    postings = sum(int(d[t]) for d in df for t in qt[(qt >= 0) & (qw > 0)].tolist() if t < len(d))
    assert one.postings(queries) == postings
    assert one.cost(queries) == postings + oneshot.QUERY_COST * len(queries) * len(index.segments)
    assert_same_explanations(index, one, queries, docs)
    blocks = np.concatenate([np.asarray(s.block_bits) for s in index.segments])
    assert {0, 8} <= set(blocks.tolist()) if codec == "byte" else set(blocks.tolist()) - {0, 8, 16, 32}


@pytest.mark.parametrize("quantization", ["uint8", "float32"])
def test_chunks_and_sparse_accumulation_change_nothing(tmp_path, monkeypatch, quantization):
    """Postings decoded a few blocks at a time, accumulated densely or sparsely: the same results."""
    rng = np.random.default_rng(12)
    path = build_corpus(tmp_path / "idx", rng, quantization, sizes=(900, 300))
    queries = query_batch(rng)
    for chunk, ratio in ((128, 0), (384, 10**9), (1 << 18, 10**9), (1 << 18, 0)):
        monkeypatch.setattr(oneshot, "CHUNK", chunk)
        monkeypatch.setattr(oneshot, "SPARSE_RATIO", ratio)  # 0: dense always; 10**9: sparse always
        assert_same(path, queries, 10)
        assert_same(path, queries, 1000, EXHAUSTIVE)


@pytest.mark.parametrize("codec", ["byte", "bitpack"])
@pytest.mark.parametrize("chunk", [256, 1 << 18])
@pytest.mark.parametrize("sparse_ratio", [0, 10**9])
def test_float32_sums_follow_term_at_a_time_order(tmp_path, monkeypatch, codec, chunk, sparse_ratio):
    """float32 impacts of every magnitude: their float64 sums round, and depend on the order of
    the additions (checked below), yet the one-shot scores equal term-at-a-time's bit for bit
    (decoded all at once or two blocks at a time, accumulated densely or sparsely)."""
    monkeypatch.setattr(oneshot, "CHUNK", chunk)
    monkeypatch.setattr(oneshot, "SPARSE_RATIO", sparse_ratio)
    rng = np.random.default_rng(21)
    n, V = 3000, 12
    m = (rng.random((n, V)) < 0.6) * np.exp(rng.uniform(-25, 25, (n, V)))
    docs = SparseBatch.from_dense(m, Vocabulary.from_size(V, "t"), [f"d{i}" for i in range(n)])
    q = (rng.random((20, V)) < 0.7) * np.exp(rng.uniform(-5, 5, (20, V)))
    queries = SparseBatch.from_dense(q, Vocabulary.from_size(V, "t"))
    build_index(docs, tmp_path / "idx", quantization="float32", codec=codec)
    index, one, _ = assert_same(tmp_path / "idx", queries, 50)
    assert_same(tmp_path / "idx", queries, 50, EXHAUSTIVE)
    # the data does tell orders apart: the same products summed backwards differ somewhere
    qi, qt, qw = index.prepare_queries(queries)
    w = kernels.snap_rows(qi, qw)
    dense = docs.to_scipy().toarray().astype(np.float32).astype(np.float64)
    fwd, bwd = np.zeros((20, n)), np.zeros((20, n))
    for r in range(20):
        terms, ws = qt[qi[r]:qi[r + 1]], w[qi[r]:qi[r + 1]]
        for t, x in zip(terms, ws):
            fwd[r] += x * dense[:, t]
        for t, x in zip(terms[::-1], ws[::-1]):
            bwd[r] += x * dense[:, t]
    assert (fwd != bwd).sum() > 100


def test_queries_on_the_index_vocabulary_and_bigger_k_than_matches(tmp_path):
    """Query vectors over the index's own vocabulary object (no mapping by string); k larger
    than the matching documents pads with -1 and 0 as Index.search does."""
    rng = np.random.default_rng(5)
    path = build_corpus(tmp_path / "idx", rng, sizes=(300, 200))
    index = Index.open(path)
    one = OneShotIndex.open(path)
    q = SparseBatch(np.array([0, 2, 3]), np.array([index.vocab.get("rare"), index.vocab.get("t3"),
                                                   index.vocab.get("rare")]), np.array([1.0, 0.25, 2.0]), one.vocab)
    s1, d1 = index.search(q, 50, dtype=np.float64)
    s2, d2 = one.search(q, 50, dtype=np.float64)
    np.testing.assert_array_equal(d2, d1)
    np.testing.assert_array_equal(s2, s1)
    assert (d2[1] >= 0).sum() <= 4 and (d2[1][4:] == -1).all() and (s2[1][4:] == 0).all()


def test_version_1_segments_next_to_per_term_ones(tmp_path, monkeypatch):
    """A version-1 segment (one scale, raw snapped weights, scores x scale) next to a per-term one."""
    monkeypatch.setattr(Index, "maxscore_min_docs", 0)
    rng = np.random.default_rng(8)
    batch = docs_batch(rng, 400, "a")
    build_index(batch, tmp_path / "idx")
    rewrite_as_version_1(tmp_path / "idx", batch)
    add_documents(tmp_path / "idx", docs_batch(rng, 150, "b", scale=2.0))
    delete_documents(tmp_path / "idx", ["a3", "b7"])
    index = Index.open(tmp_path / "idx")
    assert index.segments[0].meta["version"] == 1 and index.segments[1].per_term
    queries = query_batch(rng)
    for k in (1, 10, 600):
        index, one, docs = assert_same(tmp_path / "idx", queries, k)
    assert_same_explanations(index, one, queries, docs)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n_docs=st.integers(1, 700), n_terms=st.integers(1, 40), density=st.floats(0.01, 0.5),
       k=st.sampled_from([1, 3, 10, 50]), codec=st.sampled_from(["byte", "bitpack"]),
       quantization=st.sampled_from(["uint8", "float32"]), seed=st.integers(0, 2**31 - 1))
def test_random_single_segment_indexes(tmp_path_factory, n_docs, n_terms, density, k, codec, quantization, seed):
    rng = np.random.default_rng(seed)
    m = (rng.random((n_docs, n_terms)) < density) * rng.lognormal(0, 1, (n_docs, n_terms))
    docs = SparseBatch.from_dense(m, Vocabulary.from_size(n_terms, "t"), [f"d{i}" for i in range(n_docs)])
    q = (rng.random((6, n_terms + 3)) < 0.3) * rng.integers(1, 4, (6, n_terms + 3))  # 3 unknown terms
    queries = SparseBatch.from_dense(q, Vocabulary.from_size(n_terms + 3, "t"))
    path = tmp_path_factory.mktemp("idx")
    build_index(docs, path, codec=codec, quantization=quantization)
    assert_same(path, queries, k)
    assert_same(path, queries, k, EXHAUSTIVE)


def test_empty_batch_and_bad_k(tmp_path):
    rng = np.random.default_rng(3)
    path = build_corpus(tmp_path / "idx", rng, sizes=(100, 50), delete=False)
    one, index = OneShotIndex.open(path), Index.open(path)
    none = SparseBatch.from_dicts([])
    s, d = one.search(none, 5)
    assert s.shape == d.shape == index.search(none, 5)[1].shape == (0, 5)
    from sparsearch.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="positive integer"):
        one.search(query_batch(rng), 0)
    with pytest.raises(UnsupportedError):
        one.search(query_batch(rng), 5, ExactParams(filter="year > 2000"))


# ----------------------------------------------------------------------------- opening
def test_open_checks_what_it_reads_and_refuses_hybrid_indexes(tmp_path):
    rng = np.random.default_rng(2)
    path = build_corpus(tmp_path / "idx", rng, sizes=(200, 100), delete=False)
    seg = Index.open(path).segments[1].path
    words = seg / "words.npy"
    raw = bytearray(words.read_bytes())
    raw[-5] ^= 0xFF
    words.write_bytes(bytes(raw))
    with pytest.raises(CorruptIndexError, match="words.npy: checksum mismatch"):
        OneShotIndex.open(path)
    OneShotIndex.open(path, verify=False)  # sizes only
    manifest = json.loads((path / "manifest.json").read_text())
    with pytest.raises(UnsupportedError, match="hybrid"):
        load_segments(path, {**manifest, "kind": "hybrid"}, OneShotIndex._open_segment)


# ------------------------------------------------------------------------------- the CLI
_PROBE = r"""
import json, sys
from sparsearch.cli import main
try:
    main(json.loads(sys.argv[1]))
except SystemExit as e:
    if e.code not in (0, None):
        raise
print("MODULES=" + json.dumps(sorted(sys.modules)))
"""


def _cli_subprocess(argv):
    r = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(argv)], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    head, _, tail = r.stdout.rpartition("MODULES=")
    return head, set(json.loads(tail))


def _cli_here(capsys, argv):
    capsys.readouterr()
    try:
        main(argv)
    except SystemExit as e:
        assert e.code in (0, None)
    return capsys.readouterr().out


@pytest.mark.parametrize("extra", [[], ["--json", "-k", "3"], ["--mode", "exhaustive"]])
def test_cli_search_of_a_bm25_index_imports_no_numba_and_prints_as_the_numba_path(tiny_beir, tmp_path, capsys,
                                                                                   monkeypatch, extra):
    out = tmp_path / "idx"
    _cli_here(capsys, ["index", str(tiny_beir), "--out", str(out)])
    argv = ["search", str(out), "-q", "programming compiler", "-q", "wolves and dogs", "-q", "zzz", *extra]
    printed, modules = _cli_subprocess(argv)
    assert "numba" not in modules and "scipy" not in modules and "llvmlite" not in modules
    assert "sparsearch.index.oneshot" in modules and "sparsearch.index.searcher" not in modules
    assert "d6" in printed and ("Compilers" in printed)
    # the same command with the one-shot search off: the index is handed over to the numba kernels
    monkeypatch.setattr(oneshot, "MAX_POSTINGS", -1)
    assert _cli_here(capsys, argv) == printed


def test_cli_takes_the_numba_path_for_what_one_shot_does_not_answer(tiny_beir, tmp_path, capsys):
    """--explain, --filter, approximate mode and errors go the normal way (same output as before)."""
    out = tmp_path / "idx"
    _cli_here(capsys, ["index", str(tiny_beir), "--out", str(out)])
    printed, modules = _cli_subprocess(["search", str(out), "-q", "programming compiler", "--explain"])
    assert "numba" in modules and "=" in printed
    r = subprocess.run([sys.executable, "-m", "sparsearch.cli", "search", str(tmp_path / "nope"), "-q", "x"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "no such index directory" in r.stderr
