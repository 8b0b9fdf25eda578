"""DenseIndex: exact flat inner-product search over stored (float32 / float16 / int8) vectors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sparsearch.encoders.dense import DenseEncoder, topk_rows
from sparsearch.errors import ConflictError, CorruptIndexError, InvalidInputError, NotFoundError, UnsupportedError
from sparsearch.evaluation import recall_at_k
from sparsearch.index import dense as dense_mod
from sparsearch.index.dense import DENSE_FORMAT, DenseIndex, as_float32
from sparsearch.searching import ApproxParams, ExactParams, Searcher

N, D = 3000, 48


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    return unit(rng.normal(size=(N, D))), unit(rng.normal(size=(40, D))), [f"doc{i}" for i in range(N)]


def brute_force(q: np.ndarray, x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Reference top-k: every score, sorted by (-score, doc number)."""
    s = q.astype(np.float32) @ x.astype(np.float32).T
    order = np.lexsort((np.broadcast_to(np.arange(len(x)), s.shape), -s), axis=1)[:, :k]
    return np.take_along_axis(s, order, 1), order


def small_blocks(monkeypatch, index: DenseIndex, rows: int = 257) -> None:
    """Make ``index`` score ``rows`` documents per matrix product (several blocks per search)."""
    monkeypatch.setattr(dense_mod, "MIN_BLOCK_ROWS", rows)
    index.block_bytes = 1


# ------------------------------------------------------------------ exactness
@pytest.mark.parametrize("blocked", [False, True])
def test_float32_equals_brute_force(tmp_path, data, monkeypatch, blocked):
    x, q, ids = data
    index = DenseIndex.build(x, ids, tmp_path / "d")
    if blocked:
        small_blocks(monkeypatch, index)
        assert index.block_rows(len(q)) == 257
    for k in (1, 10, 100):
        s, d = index.search(q, k)
        rs, rd = brute_force(q, x, k)
        assert s.dtype == np.float32 and d.dtype == np.int64 and d.shape == (len(q), k)
        np.testing.assert_array_equal(d, rd)
        np.testing.assert_allclose(s, rs, rtol=1e-5, atol=1e-6)
    # one query at a time gives the same documents, and a (d,) vector is one query
    s1, d1 = index.search(q[3], 10)
    np.testing.assert_array_equal(d1[0], brute_force(q[3:4], x, 10)[1][0])


@pytest.mark.parametrize("quantization", ["float32", "float16", "int8"])
def test_ties_are_broken_by_ascending_docnum(tmp_path, monkeypatch, quantization):
    rng = np.random.default_rng(1)
    basis = np.eye(4, dtype=np.float32)
    x = basis[rng.integers(0, 4, 2000)]  # many exact duplicates: scores tie exactly
    ids = [str(i) for i in range(len(x))]
    index = DenseIndex.build(x, ids, tmp_path / "d", quantization=quantization)
    small_blocks(monkeypatch, index, rows=300)
    q = np.array([[1.0, 0.5, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]], np.float32)
    for k in (5, 700, 2000):
        s, d = index.search(q, k)
        rs, rd = brute_force(q, x, k)
        np.testing.assert_array_equal(d, rd)  # lowest doc numbers first among equal scores, at the k-th too
        np.testing.assert_allclose(s, rs, atol=1e-6)
    np.testing.assert_array_equal(index.search(q[1:], 5)[1][0], np.arange(5))  # all scores 0


def test_topk_rows_keeps_the_lowest_columns_tied_at_the_kth_score():
    scores = np.zeros((3, 50), np.float32)
    scores[1, [40, 45]] = 1.0
    scores[2] = np.arange(50) % 3
    for k in (5, 40):  # a heap (k small next to n), argpartition otherwise
        s, d = topk_rows(scores, k)
        np.testing.assert_array_equal(d[0], np.arange(k))
        np.testing.assert_array_equal(d[1], [40, 45, *range(k - 2)])
        np.testing.assert_array_equal(d[2], [*range(2, 50, 3), *range(1, 50, 3), *range(0, 50, 3)][:k])
        np.testing.assert_array_equal(s[1], [1, 1] + [0] * (k - 2))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_topk_rows_equals_a_full_sort(dtype):
    rng = np.random.default_rng(3)
    for scores in (rng.normal(size=(7, 500)), rng.integers(-3, 4, size=(7, 500))):  # distinct, many ties
        scores = scores.astype(dtype)
        ref = np.lexsort((np.broadcast_to(np.arange(500), scores.shape), -scores), axis=1)
        for k in (1, 3, 62, 63, 64, 200, 499, 500, 900):
            s, d = topk_rows(scores, k)
            assert s.dtype == np.float32 and d.dtype == np.int64 and d.shape == (7, min(k, 500))
            np.testing.assert_array_equal(d, ref[:, :k])
            np.testing.assert_array_equal(s, np.take_along_axis(scores, ref[:, :k], 1).astype(np.float32))
    assert topk_rows(np.zeros((0, 5)), 3)[1].shape == (0, 3)
    assert topk_rows(np.zeros((2, 0)), 3)[1].shape == (2, 0)


# ------------------------------------------------------------------ quantization
def test_float16_and_int8_are_close_to_float32(tmp_path, data):
    x, q, ids = data
    exact = DenseIndex.build(x, ids, tmp_path / "f32").search(q, 100)
    half = DenseIndex.build(x, ids, tmp_path / "f16", quantization="float16")
    int8 = DenseIndex.build(x, ids, tmp_path / "i8", quantization="int8")
    assert half.vectors.dtype == np.float16 and half.scale is None
    assert int8.vectors.dtype == np.int8 and int8.scale.dtype == np.float32
    assert np.abs(int8.vectors).max() == 127  # the largest component of each vector uses the full range
    assert recall_at_k(half.search(q, 10)[1], exact[1], 10) >= 0.99
    assert recall_at_k(int8.search(q, 10)[1], exact[1], 10) >= 0.95
    assert recall_at_k(int8.search(q, 100)[1], exact[1], 100) >= 0.95
    # int8 scores are scale_i * (q . codes_i), within half a step per component of the exact score
    d = exact[1]
    got = int8.scores_of(q, d)
    codes = np.asarray(int8.vectors[d], np.float32)
    np.testing.assert_allclose(got, np.einsum("qd,qmd->qm", q, codes) * int8.scale[d], rtol=1e-5, atol=1e-6)
    bound = 0.5 * int8.scale[d] * np.abs(q).sum(1, keepdims=True) + 1e-6
    assert np.all(np.abs(got - exact[0]) <= bound)
    np.testing.assert_allclose(half.scores_of(q, d), exact[0], atol=2e-3)
    sizes = [i.stats()["vector_bytes"] for i in (DenseIndex.open(tmp_path / "f32"), half, int8)]
    assert sizes == [N * D * 4, N * D * 2, N * D + N * 4]


def test_float16_conversion_is_exact_for_every_finite_half():
    h = np.arange(1 << 16, dtype=np.uint16).view(np.float16)
    h = h[np.isfinite(h)].reshape(-1, 64)  # zeros of both signs, subnormals, normals
    got = as_float32(h)
    assert got.dtype == np.float32 and got.shape == h.shape
    np.testing.assert_array_equal(got.view(np.uint32), h.astype(np.float32).view(np.uint32))
    np.testing.assert_array_equal(as_float32(np.array([[-127, 0, 5]], np.int8)), [[-127.0, 0.0, 5.0]])


@pytest.mark.parametrize("quantization", ["float16", "int8"])
def test_small_batches_and_large_ones_score_alike(tmp_path, data, monkeypatch, quantization):
    """Up to FUSED_MAX_QUERIES queries: rows converted in cache by numba; more: converted in
    chunks then BLAS (several chunks here). Both are the float32 scores of the stored values."""
    x, q, ids = data
    index = DenseIndex.build(x, ids, tmp_path / "d", quantization=quantization)
    stored = as_float32(np.asarray(index.vectors)) * (index.scale[:, None] if index.scale is not None else 1)
    ref = brute_force(q, stored, 50)
    monkeypatch.setattr(dense_mod, "CONVERT_BYTES", 100 * 4 * D)
    for fused in (0, len(q)):
        monkeypatch.setattr(dense_mod, "FUSED_MAX_QUERIES", fused)
        s, d = index.search(q, 50)
        np.testing.assert_array_equal(d, ref[1])
        np.testing.assert_allclose(s, ref[0], rtol=1e-5, atol=1e-6)


def test_int8_all_zero_vector_scores_zero(tmp_path):
    x = np.array([[0.0, 0.0], [2.0, -254.0]], np.float32)  # scale 2: codes [1, -127], exact
    index = DenseIndex.build(x, ["z", "a"], tmp_path / "d", quantization="int8")
    assert index.scale.tolist() == [0.0, 2.0] and index.vectors.tolist() == [[0, 0], [1, -127]]
    np.testing.assert_array_equal(index.scores_of(np.array([[2.0, 1.0]]), np.array([[0, 1]])), [[0.0, -250.0]])


# ------------------------------------------------------------------ round trip
def test_round_trip_open(tmp_path, data):
    x, q, ids = data
    enc = DenseEncoder(str(tmp_path), batch_size=8, query_prefix="query: ", cache=False)
    built = DenseIndex.build(x, ids, tmp_path / "d", encoder=enc, quantization="int8", extra={"note": "hi"})
    ref = built.search(q, 20)
    for kw in ({}, {"mmap": False}, {"verify": False}):
        index = DenseIndex.open(tmp_path / "d", **kw)
        got = index.search(q, 20)
        np.testing.assert_array_equal(got[1], ref[1])
        np.testing.assert_array_equal(got[0], ref[0])
    assert isinstance(DenseIndex.open(tmp_path / "d").vectors.base, np.memmap)
    assert not isinstance(DenseIndex.open(tmp_path / "d", mmap=False).vectors.base, np.memmap)
    assert isinstance(index, Searcher)
    assert (index.n_docs, index.n_live_docs, index.dim, len(index)) == (N, N, D, N)
    assert index.doc_ids == ids and index.docnum("doc17") == 17 and index.extra == {"note": "hi"}
    with pytest.raises(NotFoundError):
        index.docnum("nope")
    assert index.manifest["format"] == DENSE_FORMAT and index.manifest["version"] == 1
    st = index.stats()
    assert {k: st[k] for k in ("kind", "n_docs", "n_live_docs", "dim", "quantization")} == \
        {"kind": "dense", "n_docs": N, "n_live_docs": N, "dim": D, "quantization": "int8"}
    assert st["index_bytes"] > st["vector_bytes"] == N * D + 4 * N
    assert st["encoder"] == index.encoder_config == enc.config() and enc.config()["name"] == "dense"
    loaded = index.load_encoder()
    assert isinstance(loaded, DenseEncoder) and loaded.config() == enc.config()
    run = index.search_run(q[:2], 3, ExactParams(), query_ids=["a", "b"])
    assert list(run) == ["a", "b"] and list(run["a"]) == [ids[i] for i in ref[1][0, :3]]
    assert list(index.search_run(q[:2], 3)) == ["0", "1"]


def test_index_without_encoder_refuses_to_load_one(tmp_path, data):
    x, _, ids = data
    index = DenseIndex.open(DenseIndex.build(x[:10], ids[:10], tmp_path / "d").path)
    assert index.encoder_config is None and index.stats()["encoder"] is None
    with pytest.raises(InvalidInputError, match="no encoder"):
        index.load_encoder()


def test_open_missing_and_foreign(tmp_path):
    with pytest.raises(NotFoundError):
        DenseIndex.open(tmp_path / "nothing")
    (tmp_path / "e").mkdir()
    with pytest.raises(CorruptIndexError, match="manifest.json is missing"):
        DenseIndex.open(tmp_path / "e")
    (tmp_path / "e" / "manifest.json").write_text(json.dumps({"format": "sparsearch-index", "version": 2}))
    with pytest.raises(CorruptIndexError, match="not a sparsearch dense index"):
        DenseIndex.open(tmp_path / "e")


# ------------------------------------------------------------------ integrity
def flip_last_byte(path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))


def edit_text(path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text and len(old) == len(new)
    path.write_text(text.replace(old, new, 1))


@pytest.mark.parametrize("target", ["vectors.npy", "scale.npy", "doc_ids.json", "segment.json", "manifest.json"])
def test_an_edited_byte_is_a_corrupt_index_naming_the_file(tmp_path, data, target):
    x, _, ids = data
    index = DenseIndex.build(x[:50], ids[:50], tmp_path / "d", quantization="int8")
    seg = index.path / index.manifest["dir"]
    if target.endswith(".npy"):
        flip_last_byte(seg / target)
    elif target == "doc_ids.json":
        edit_text(seg / target, '"doc7"', '"doc8"')
    elif target == "segment.json":
        edit_text(seg / target, '"int8"', '"int9"')
    else:
        edit_text(index.path / target, '"n_docs": 50', '"n_docs": 49')
    with pytest.raises(CorruptIndexError, match=target.replace(".", r"\.")):
        DenseIndex.open(index.path)


def test_truncation_and_missing_files_are_caught_without_checksums(tmp_path, data):
    x, _, ids = data
    index = DenseIndex.build(x[:50], ids[:50], tmp_path / "d")
    seg = index.path / index.manifest["dir"]
    vec = seg / "vectors.npy"
    vec.write_bytes(vec.read_bytes()[:-8])
    with pytest.raises(CorruptIndexError, match="vectors.npy"):
        DenseIndex.open(index.path, verify=False)
    (seg / "doc_ids.json").unlink()
    with pytest.raises(CorruptIndexError, match="doc_ids.json"):
        DenseIndex.open(index.path, verify=False)


# ------------------------------------------------------------------ building
def test_overwrite_and_conflict(tmp_path, data):
    x, q, ids = data
    path = tmp_path / "d"
    first = DenseIndex.build(x[:100], ids[:100], path)
    with pytest.raises(ConflictError, match="already holds an index"):
        DenseIndex.build(x[100:200], ids[100:200], path, overwrite=False)
    assert DenseIndex.open(path).doc_ids == ids[:100]
    second = DenseIndex.build(x[100:200], ids[100:200], path)  # overwrite=True is the default
    assert second.manifest["generation"] == first.manifest["generation"] + 1
    assert DenseIndex.open(path).doc_ids == ids[100:200]
    # the older build's files are collected
    assert sorted(p.name for p in path.iterdir()) == sorted([".lock", "manifest.json", second.manifest["dir"]])
    # a directory that is not ours is never written into
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ConflictError, match="not a sparsearch index"):
        DenseIndex.build(x[:5], ids[:5], foreign)
    assert sorted(p.name for p in foreign.iterdir()) == [".lock", "notes.txt"]
    # a corrupt index is replaced by overwrite
    (path / "manifest.json").write_text("{")
    DenseIndex.build(x[:3], ids[:3], path)
    assert DenseIndex.open(path).n_docs == 3


def test_a_failed_build_leaves_the_previous_index(tmp_path, data, monkeypatch):
    x, q, ids = data
    path = tmp_path / "d"
    DenseIndex.build(x[:100], ids[:100], path)
    before = DenseIndex.open(path).search(q, 5)

    def crash(*a, **k):
        raise OSError("disk on fire")

    # while the vectors are written: nothing of the new build remains
    monkeypatch.setattr(dense_mod, "write_arrays", crash)
    with pytest.raises(Exception, match="disk on fire"):
        DenseIndex.build(x[200:300], ids[200:300], path)
    monkeypatch.undo()
    assert len(list(path.glob("seg-*"))) == 1 and not list(path.glob(".tmp-*"))
    # after the vectors are published, before the manifest is written: the old manifest rules
    monkeypatch.setattr(dense_mod, "seal", crash)
    with pytest.raises(OSError, match="disk on fire"):
        DenseIndex.build(x[200:300], ids[200:300], path)
    monkeypatch.undo()
    assert len(list(path.glob("seg-*"))) == 2
    index = DenseIndex.open(path)
    assert index.doc_ids == ids[:100]
    np.testing.assert_array_equal(index.search(q, 5)[1], before[1])
    # the next build collects the orphan
    DenseIndex.build(x[:10], ids[:10], path)
    assert len(list(path.glob("seg-*"))) == 1


def test_open_follows_a_build_that_replaced_the_index(tmp_path, data, monkeypatch):
    x, _, ids = data
    path = tmp_path / "d"
    DenseIndex.build(x[:10], ids[:10], path)
    real_load, calls = dense_mod._load, []

    def load_after_a_rebuild(root, manifest, mmap, verify):
        if not calls:  # another process rebuilds between our manifest read and the file reads
            calls.append(1)
            monkeypatch.setattr(dense_mod, "_load", real_load)
            DenseIndex.build(x[10:30], ids[10:30], path)
            monkeypatch.setattr(dense_mod, "_load", load_after_a_rebuild)
        return real_load(root, manifest, mmap, verify)

    monkeypatch.setattr(dense_mod, "_load", load_after_a_rebuild)
    assert DenseIndex.open(path).doc_ids == ids[10:30]


@pytest.mark.parametrize("kwargs, match", [
    ({"ids": ["a", "a", "b"]}, "duplicate document id 'a'"),
    ({"ids": ["a", "b"]}, "2 ids for 3 embeddings"),
    ({"ids": ["a", 2, "c"]}, "must be strings"),
    ({"embeddings": np.array([[1.0, np.nan], [0, 0], [0, 1]])}, "embedding 0 holds a NaN"),
    ({"embeddings": np.array([[1.0, 7e4], [0, 0], [0, 1]]), "quantization": "float16"}, "largest float16"),
    ({"embeddings": np.ones(3)}, r"\(n, d\) array"),
    ({"embeddings": np.array([["a", "b"]] * 3)}, "numeric"),
    ({"quantization": "int4"}, "unknown dense quantization"),
    ({"encoder": "minilm"}, "DenseEncoder or None"),
    ({"extra": {"x": object()}}, "JSON-serialisable"),
])
def test_build_refuses_bad_input(tmp_path, kwargs, match):
    args = {"embeddings": np.eye(3, 2, dtype=np.float32), "ids": ["a", "b", "c"], **kwargs}
    with pytest.raises(InvalidInputError, match=match):
        DenseIndex.build(args.pop("embeddings"), args.pop("ids"), tmp_path / "d", **args)
    assert not (tmp_path / "d" / "manifest.json").exists()


# ------------------------------------------------------------------ search arguments
def test_k_is_clamped_and_checked(tmp_path, data):
    x, q, ids = data
    index = DenseIndex.build(x[:7], ids[:7], tmp_path / "d")
    s, d = index.search(q[:2], 10**9)
    assert d.shape == (2, 7) and sorted(d[0]) == list(range(7))
    for bad in (0, -1, 2.5, "3", True):
        with pytest.raises(InvalidInputError):
            index.search(q[:2], bad)


def test_bad_queries_and_params_are_refused(tmp_path, data):
    x, q, ids = data
    index = DenseIndex.build(x[:7], ids[:7], tmp_path / "d")
    with pytest.raises(InvalidInputError, match=f"query dimension 5 != corpus dimension {D}"):
        index.search(np.ones((2, 5), np.float32))
    with pytest.raises(InvalidInputError, match="NaN or infinite"):
        index.search(np.full((1, D), np.inf))
    with pytest.raises(InvalidInputError, match="numeric"):
        index.search(np.array([["x"] * D]))
    with pytest.raises(InvalidInputError, match="numeric"):
        index.search(np.ones((1, 2, D)))
    with pytest.raises(UnsupportedError, match="dense flat search supports exact search, not approximate"):
        index.search(q, 3, ApproxParams())
    with pytest.raises(InvalidInputError, match="threads"):
        index.search(q, 3, ExactParams(threads=0))
    assert index.search(q, 3, ExactParams(exhaustive=True, threads=1))[1].shape == (len(q), 3)
    assert index.search(np.zeros((0, D), np.float32), 3)[1].shape == (0, 3)


def test_empty_index_pads_with_minus_one(tmp_path):
    index = DenseIndex.open(DenseIndex.build(np.zeros((0, 4), np.float32), [], tmp_path / "d").path)
    s, d = index.search(np.ones((2, 4)), 5)
    assert d.tolist() == [[-1], [-1]] and index.search_run(np.ones((1, 4)), 5) == {"0": {}}


# ------------------------------------------------------------------ scores_of
@pytest.mark.parametrize("quantization", ["float32", "float16", "int8"])
def test_scores_of_matches_search_and_marks_missing(tmp_path, data, quantization):
    x, q, ids = data
    index = DenseIndex.build(x, ids, tmp_path / "d", quantization=quantization)
    s, d = index.search(q, 15)
    np.testing.assert_allclose(index.scores_of(q, d), s, rtol=1e-5, atol=1e-6)
    picked = np.array([[5, -1, 0], [N - 1, 5, -1]])
    got = index.scores_of(q[:2], picked)
    assert got.dtype == np.float32 and got[0, 1] == -np.inf and got[1, 2] == -np.inf
    if quantization == "float32":
        np.testing.assert_allclose(got[0, [0, 2]], q[0] @ x[[5, 0]].T, rtol=1e-5)
        np.testing.assert_allclose(got[1, :2], q[1] @ x[[N - 1, 5]].T, rtol=1e-5)
    assert index.scores_of(q[:2], np.zeros((2, 0), np.int64)).shape == (2, 0)
    with pytest.raises(InvalidInputError, match="doc numbers must be in"):
        index.scores_of(q[:1], np.array([[N]]))
    with pytest.raises(InvalidInputError, match="doc numbers must be in"):
        index.scores_of(q[:1], np.array([[-2]]))
    with pytest.raises(InvalidInputError, match="shape"):
        index.scores_of(q[:2], np.array([[1, 2]]))
    with pytest.raises(InvalidInputError, match="integer"):
        index.scores_of(q[:1], np.array([[1.0]]))
