"""The inverted index: compression round trip, rank-safe top-k, persistence and atomicity."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sparsearch.errors import ConflictError, InvalidInputError, NotFoundError, UnsupportedError
from sparsearch.index import Index, IndexFormatError, build_index
from sparsearch.index import segment as segment_mod
from sparsearch.index.kernels import snap_rows
from sparsearch.searching import ApproxParams, ExactParams
from sparsearch.vectors import SparseBatch, Vocabulary

EXHAUSTIVE = ExactParams(exhaustive=True)


def random_batch(rng, n_docs, n_terms, density, integer=False, prefix="d"):
    m = sp.random(n_docs, n_terms, density=density, format="csr", random_state=rng,
                  data_rvs=(lambda k: rng.integers(1, 4, k).astype(float)) if integer else None)
    return SparseBatch.from_scipy(m, Vocabulary.from_size(n_terms, "t"), [f"{prefix}{i}" for i in range(n_docs)])


def brute_force(index: Index, queries: SparseBatch, k: int):
    """Top-k by scipy on the index's own quantized impacts and snapped query weights (each
    query weight times its term's scale, as the segment's kernels take them), checked against
    the float dot product with the dequantized weights."""
    seg = index.segments[0]
    D = seg.impact_matrix(index.n_terms)
    qi, qt, qw = index.prepare_queries(queries)
    raw = qw
    qw = snap_rows(qi, index.segment_weights(seg, qi, qt, qw))  # snap_rows: as the kernels do
    keep = qt >= 0
    rows = np.repeat(np.arange(len(queries)), np.diff(qi))
    Q = sp.csr_matrix((qw[keep], (rows[keep], qt[keep])), shape=(len(queries), index.n_terms))
    S = (Q @ D.T).toarray() * seg.score_scale
    Q0 = sp.csr_matrix((raw[keep], (rows[keep], qt[keep])), shape=(len(queries), index.n_terms))
    W = seg.weight_matrix(index.n_terms)
    scaled = np.abs(seg.query_weights(qt, raw))  # snapping moves each by <= 2**-21 of the row's largest
    slack = [2.0**-19 * 255 * (b - a) * (scaled[a:b].max() if b > a else 0.0) for a, b in zip(qi[:-1], qi[1:])]
    ref = (Q0 @ W.T).toarray()
    assert np.all(np.abs(S - ref) <= np.array(slack)[:, None] * seg.score_scale + 1e-6 * np.abs(ref))
    out = []
    for row in S:
        docs = np.nonzero(row > 0)[0]
        order = sorted(docs.tolist(), key=lambda d: (-row[d], d))[:k]
        out.append((order, row[order]))
    return out


@pytest.fixture(autouse=True)
def always_maxscore(monkeypatch):
    """Exercise the MaxScore kernel even on collections small enough for term-at-a-time."""
    monkeypatch.setattr(Index, "maxscore_min_docs", 0)


def assert_same_topk(index, queries, k, params=None):
    scores, docs = index.search(queries, k, params)
    for qi, (ref_docs, ref_scores) in enumerate(brute_force(index, queries, k)):
        got = [d for d in docs[qi].tolist() if d >= 0]
        assert got == ref_docs, f"query {qi}: {got} != {ref_docs}"
        np.testing.assert_allclose(scores[qi][: len(got)], ref_scores, rtol=1e-6)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    n_docs=st.integers(1, 700),
    n_terms=st.integers(1, 40),
    density=st.floats(0.01, 0.5),
    k=st.sampled_from([1, 3, 10, 50]),
    integer=st.booleans(),
    codec=st.sampled_from(["byte", "bitpack"]),
    seed=st.integers(0, 2**31 - 1),
)
def test_exact_search_is_rank_safe(tmp_path_factory, n_docs, n_terms, density, k, integer, codec, seed):
    """MaxScore top-k == brute force on the same quantized weights, ties by doc id."""
    rng = np.random.default_rng(seed)
    docs = random_batch(rng, n_docs, n_terms, density, integer)
    queries = random_batch(rng, 8, n_terms, 0.3, integer, prefix="q")
    index = build_index(docs, tmp_path_factory.mktemp("idx"), codec=codec)
    assert_same_topk(index, queries, k)
    assert_same_topk(index, queries, k, EXHAUSTIVE)


@pytest.mark.parametrize("quantization", ["uint8", "float32"])
def test_rank_safe_on_long_lists_with_many_ties(tmp_path, quantization):
    """Thousands of docs (many blocks and windows per list), small integer weights: heavy ties."""
    rng = np.random.default_rng(7)
    n_docs, n_terms = 20_000, 300
    probs = 1.0 / np.arange(1, n_terms + 1)
    probs /= probs.sum()
    rows = np.repeat(np.arange(n_docs), 12)
    cols = rng.choice(n_terms, size=len(rows), p=probs)
    m = sp.csr_matrix((rng.integers(1, 5, len(rows)).astype(float), (rows, cols)), shape=(n_docs, n_terms))
    m.data[:] = np.minimum(m.data, 6)
    docs = SparseBatch.from_scipy(m, Vocabulary.from_size(n_terms, "t"))
    q = sp.csr_matrix((rng.integers(1, 4, 40 * 6).astype(float),
                       (np.repeat(np.arange(40), 6), rng.choice(60, 240))), shape=(40, n_terms))
    queries = SparseBatch.from_scipy(q, Vocabulary.from_size(n_terms, "t"))
    index = build_index(docs, tmp_path / "idx", quantization=quantization)
    for k in (1, 10, 100):
        if quantization == "uint8":
            assert_same_topk(index, queries, k)
        s1, d1 = index.search(queries, k)
        s2, d2 = index.search(queries, k, EXHAUSTIVE)
        np.testing.assert_array_equal(d1, d2)


@pytest.mark.parametrize("codec", ["byte", "bitpack"])
def test_postings_decode_to_the_input(tmp_path, rng, codec):
    """Every gap width: dense lists (0 bits), 8/16-bit and odd widths, and gaps over 2**16."""
    n_docs = 70_000
    m = sp.random(n_docs, 50, density=0.01, format="lil", random_state=rng)
    m[:, 0] = 1.0  # every document: gaps of 0 bits
    m[::200, 1] = 2.0  # gaps of 199
    m[[0, 66_000, 69_999], 2] = 3.0  # gaps over 65,536: 17 bits, or 32 with the byte codec
    docs = SparseBatch.from_scipy(m.tocsr(), Vocabulary.from_size(50, "t"))
    index = build_index(docs, tmp_path / "idx", quantization="float32", codec=codec)
    seg = index.segments[0]
    widths = set(np.asarray(seg.block_bits).tolist())
    assert widths <= {0, 8, 16, 32} if codec == "byte" else widths - {0, 8, 16, 32}
    csc = docs.to_scipy().tocsc()
    for t in range(50):
        d, v = seg.postings(t)
        a, b = csc.indptr[t], csc.indptr[t + 1]
        np.testing.assert_array_equal(d, csc.indices[a:b])
        np.testing.assert_array_equal(v, csc.data[a:b])
    assert 0 < index.stats()["bytes_per_posting"] < 8
    # scoring decodes inside its own loop (term-at-a-time) and through blocks (MaxScore)
    queries = random_batch(rng, 20, 50, 0.2, prefix="q")
    assert_same_topk(index, queries, 10)
    assert_same_topk(index, queries, 10, EXHAUSTIVE)


def test_unknown_codec_is_refused(tmp_path, rng):
    with pytest.raises(ValueError, match="codec"):
        build_index(random_batch(rng, 10, 5, 0.5), tmp_path / "idx", codec="zip")


def test_query_vocabulary_mapping_follows_a_growing_vocabulary(tmp_path, rng):
    """The cached query-term table is extended when the query vocabulary grows."""
    index = build_index(random_batch(rng, 200, 10, 0.5), tmp_path / "idx", quantization="float32")
    vocab = Vocabulary(["t1", "nope"])

    def query(terms):
        ids = [vocab.add(t) for t in terms]
        return SparseBatch(np.array([0, len(ids)]), np.array(ids, np.int32), np.ones(len(ids), np.float32), vocab)

    _, qt, _ = index.prepare_queries(query(["t1", "nope"]))
    assert qt.tolist() == [index.vocab.id("t1"), -1]
    _, qt, _ = index.prepare_queries(query(["t7", "t1", "also-unknown"]))  # vocab grew by two terms
    assert qt.tolist() == [index.vocab.id("t7"), index.vocab.id("t1"), -1]
    with pytest.raises(InvalidInputError, match="also-unknown"):
        index.prepare_queries(query(["also-unknown"]), unknown="error")
    with pytest.raises(InvalidInputError, match="also-unknown"):
        index.search(query(["t1", "also-unknown"]), 5, ExactParams(unknown="error"))
    ref = index.search(SparseBatch.from_dicts([{"t7": 1.0, "t1": 1.0}]), 5)
    np.testing.assert_array_equal(index.search(query(["t7", "t1"]), 5)[1], ref[1])


def test_non_finite_query_weights_are_refused(tmp_path, rng):
    index = build_index(random_batch(rng, 50, 5, 0.5), tmp_path / "idx")
    for bad in (np.inf, np.nan):
        q = SparseBatch(np.array([0, 2]), np.array([0, 1], np.int32), np.array([1.0, bad], np.float32), index.vocab)
        with pytest.raises(ValueError, match="finite"):
            index.search(q, 5)


def test_quantization_error_is_bounded(tmp_path, rng):
    """Per-term grids: a weight moves by at most half a step of its term's grid, or (a weight
    under half a step, stored as one step) by less than one step; none is dropped."""
    docs = random_batch(rng, 500, 30, 0.2)
    docs.values[::7] *= 1e-3  # weights far below their terms' maxima
    index = build_index(docs, tmp_path / "idx")
    seg = index.segments[0]
    D = seg.weight_matrix(30).toarray()
    ref = docs.to_scipy().toarray()
    step = np.broadcast_to(np.asarray(seg.term_scale), D.shape)
    assert ((D > 0) == (ref > 0)).all()  # every posting kept
    big = ref >= step / 2
    assert np.all(np.abs(D - ref)[big] <= step[big] / 2 * (1 + 1e-9))
    assert np.all((D == step)[(ref > 0) & ~big])  # the floor: one step
    assert seg.meta["version"] == segment_mod.SEGMENT_VERSION == 2
    with pytest.raises(UnsupportedError, match="per-term scales"):
        seg.scale


def test_query_terms_matched_by_string_unknown_dropped(tmp_path):
    docs = SparseBatch.from_dicts([{"apple": 1.0}, {"pear": 2.0, "apple": 0.5}], ids=["a", "b"])
    index = build_index(docs, tmp_path / "idx", quantization="float32")
    q = SparseBatch.from_dicts([{"pear": 1.0, "kiwi": 5.0}, {"kiwi": 1.0}])
    scores, ids = index.search(q, 5)
    assert ids.shape == (2, 2)  # k=5 clamped to the 2 documents held
    assert ids[0].tolist() == [1, -1] and scores[0, 0] == pytest.approx(2.0)
    assert ids[1].tolist() == [-1] * 2
    assert index.search_run(q, 5) == {"0": {"b": pytest.approx(2.0)}, "1": {}}


def test_explain_adds_up_to_the_score(tmp_path, rng):
    docs = random_batch(rng, 400, 25, 0.3)
    queries = random_batch(rng, 5, 25, 0.4, prefix="q")
    index = build_index(docs, tmp_path / "idx")
    scores, ids = index.search(queries, 3)
    for qi in range(5):
        for s, d in zip(scores[qi], ids[qi]):
            if d < 0:
                continue
            parts = index.explain(queries[qi:qi + 1], int(d))
            assert sum(c.contribution for c in parts) == pytest.approx(float(s), rel=1e-5)
            assert all(c.contribution == pytest.approx(c.query_weight * c.doc_weight) for c in parts)
            assert [c.contribution for c in parts] == sorted((c.contribution for c in parts), reverse=True)


def test_reopen_with_mmap_gives_same_results(tmp_path, rng):
    docs = random_batch(rng, 1000, 40, 0.1)
    queries = random_batch(rng, 10, 40, 0.3, prefix="q")
    a = build_index(docs, tmp_path / "idx").search(queries, 10)
    b = Index.open(tmp_path / "idx", mmap=True).search(queries, 10)
    np.testing.assert_array_equal(a[1], b[1])
    assert Index.open(tmp_path / "idx").doc_ids == docs.ids


def test_corrupt_truncated_and_wrong_version_are_refused(tmp_path, rng):
    path = tmp_path / "idx"
    build_index(random_batch(rng, 300, 20, 0.2), path)
    seg_dir = next(path.glob("seg-*"))
    words = seg_dir / "words.npy"
    raw = bytearray(words.read_bytes())
    raw[-1] ^= 0xFF
    words.write_bytes(bytes(raw))
    with pytest.raises(IndexFormatError, match="checksum mismatch"):
        Index.open(path)
    words.write_bytes(bytes(raw[:-3]))
    with pytest.raises(IndexFormatError, match="truncated or corrupt"):
        Index.open(path)

    build_index(random_batch(rng, 300, 20, 0.2), path, overwrite=True)
    m = json.loads((path / "manifest.json").read_text())
    m["version"] = 99
    (path / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(IndexFormatError, match="version 99 is not supported"):
        Index.open(path)
    (path / "manifest.json").write_text("{not json")
    with pytest.raises(IndexFormatError, match="corrupt index metadata"):
        Index.open(path)
    with pytest.raises(NotFoundError, match="no such index"):
        Index.open(tmp_path / "missing")


def test_refuses_to_overwrite_or_clobber(tmp_path, rng):
    path = tmp_path / "idx"
    build_index(random_batch(rng, 50, 10, 0.3), path)
    with pytest.raises(ConflictError, match="already holds an index"):
        build_index(random_batch(rng, 50, 10, 0.3), path, overwrite=False)
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("precious")
    with pytest.raises(ConflictError, match="not a sparsearch index"):
        build_index(random_batch(rng, 50, 10, 0.3), foreign)
    assert (foreign / "notes.txt").read_text() == "precious"
    assert sorted(e.name for e in foreign.iterdir()) == [".lock", "notes.txt"]  # nothing else was written
    # leftovers of sparsearch itself (torn temporaries, an approximate index, saved settings) are not foreign
    ours = tmp_path / "ours"
    ours.mkdir()
    for name in (".tmp-0123-seg-x", "approx-abc", "settings.json"):
        (ours / name).mkdir() if not name.endswith(".json") else (ours / name).write_text("{}")
    build_index(random_batch(rng, 50, 10, 0.3), ours)
    assert {".tmp-0123-seg-x", "approx-abc"}.isdisjoint(e.name for e in ours.iterdir())  # collected
    assert (ours / "settings.json").exists()  # permanent


def test_crash_during_rebuild_leaves_previous_index_intact(tmp_path, rng, monkeypatch):
    path = tmp_path / "idx"
    old_docs = random_batch(rng, 500, 30, 0.2)
    queries = random_batch(rng, 5, 30, 0.3, prefix="q")
    before = build_index(old_docs, path).search(queries, 10)
    entries = sorted(e.name for e in path.iterdir())

    real = segment_mod.write_arrays

    def crash_midway(directory, arrays, header, *a):
        real(directory, dict(list(arrays.items())[:3]), header, *a)  # some files written, then "power loss"
        raise KeyboardInterrupt("simulated crash")

    monkeypatch.setattr(segment_mod, "write_arrays", crash_midway)
    with pytest.raises(KeyboardInterrupt):
        build_index(random_batch(rng, 800, 30, 0.2), path, overwrite=True)
    monkeypatch.undo()
    after = Index.open(path).search(queries, 10)
    np.testing.assert_array_equal(before[1], after[1])
    assert sorted(e.name for e in path.iterdir()) == entries  # the half-written segment was removed
    # a process killed mid-write leaves its temporary behind: the next commit collects it
    torn = path / ".tmp-0123456789ab-seg-dead"
    torn.mkdir()
    (torn / "words.npy").write_bytes(b"torn")
    Index.open(path, verify=True)
    build_index(old_docs, path, overwrite=True)
    assert not list(path.glob(".tmp-*"))
    assert len(list(path.glob("seg-*"))) == 1


def test_duplicate_ids_and_bad_weights_rejected(tmp_path):
    b = SparseBatch.from_dicts([{"a": 1.0}, {"a": 2.0}], ids=["x", "x"])
    with pytest.raises(ValueError, match="duplicate document id 'x'"):
        build_index(b, tmp_path / "i1")
    bad = SparseBatch(np.array([0, 1]), np.array([0], np.int32), np.array([np.nan], np.float32), Vocabulary(["a"]))
    with pytest.raises(ValueError, match="finite and non-negative"):
        build_index(bad, tmp_path / "i2")


def test_k_and_params_validation(tmp_path, rng):
    index = build_index(random_batch(rng, 20, 5, 0.5), tmp_path / "idx")
    q = random_batch(rng, 1, 5, 1.0, prefix="q")
    for bad_k in (0, -3, 2.5, True):
        with pytest.raises(InvalidInputError, match="k must be"):
            index.search(q, bad_k)
    assert index.search(q, 10**12)[1].shape == (1, 20)  # clamped to the documents (issue 15 item 7)
    with pytest.raises(UnsupportedError, match="ApproximateIndex"):
        index.search(q, 5, ApproxParams())
    with pytest.raises(UnsupportedError):
        index.search(q, 5, "exhaustive")
    with pytest.raises(InvalidInputError, match="threads"):
        index.search(q, 5, ExactParams(threads=0))
    s, d = index.search(q, 1000)  # k larger than the collection: results are n_docs wide
    assert s.shape == d.shape == (1, 20) and (d >= 0).sum() <= 20
    np.testing.assert_array_equal(index.search(q, 20, ExactParams(threads=1))[1], d)


def test_docnum_and_explain_errors(tmp_path, rng):
    index = build_index(random_batch(rng, 20, 5, 0.5), tmp_path / "idx")
    assert index.docnum("d3") == 3
    with pytest.raises(NotFoundError, match="nope"):
        index.docnum("nope")
    with pytest.raises(InvalidInputError):
        index.explain(random_batch(rng, 1, 5, 1.0, prefix="q"), 20)
    with pytest.raises(InvalidInputError, match="no encoder"):
        index.load_encoder()
