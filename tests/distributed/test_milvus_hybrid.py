"""A hybrid index exported to Milvus Lite (issue 16): one vector field per representation (sparse
impacts, dense stored vectors dequantized), each representation's list and every fusion equal to
the local hybrid index (tie-aware, float tolerance), Milvus' own RRF where it applies, the
placeholder of documents without a term, and the CLI export + service round trip on text."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("pymilvus", reason="the Milvus backend needs pymilvus (pip install 'sparsearch[milvus]')")
pytest.importorskip("milvus_lite", reason="Milvus Lite tests need milvus-lite (pip install 'sparsearch[milvus]')")

from sparsearch.errors import InvalidInputError, UnsupportedError  # noqa: E402
from sparsearch.index.hybrid import HybridIndex, HybridQueries, build_hybrid_from_vectors, save_fusion  # noqa: E402
from sparsearch.milvus import (MilvusBackend, MilvusBackendError, MilvusHybridBackend, _unpack,  # noqa: E402
                               dense_rows, export, field_names, list_exported)
from sparsearch.searching import ApproxParams, ExactParams, HybridParams  # noqa: E402
from sparsearch.vectors import SparseBatch, Vocabulary  # noqa: E402

from tests.core.test_cli import cli  # noqa: E402

N, V, D = 300, 80, 16
EMPTY_A = [5, 77]   # no term in representation "a" (77: in no sparse representation)


def _sparse(rng: np.random.Generator, n: int, ids: list[str], density: float) -> SparseBatch:
    m = rng.random((n, V)) * (rng.random((n, V)) < density)
    return SparseBatch.from_dense(m, Vocabulary([f"t{i}" for i in range(V)]), ids)


def _build(path, rng, ids, dense_quantization="float32", extra=()):
    a, b = _sparse(rng, N, ids, 0.08), _sparse(rng, N, ids, 0.15)
    rows_a = [{} if i in EMPTY_A else a.row_dict(i) for i in range(N)]
    rows_b = [{} if i == 77 else b.row_dict(i) for i in range(N)]
    a, b = SparseBatch.from_dicts(rows_a, ids=ids), SparseBatch.from_dicts(rows_b, ids=ids)
    emb = rng.standard_normal((N, D)).astype(np.float32)
    docs = {i: (f"title {i}", f"text of {i}") for i in ids}
    return build_hybrid_from_vectors(path, ids, [("a", a), ("b-2", b), ("vec", emb), *extra], documents=docs,
                                     quantization="float32", dense_quantization=dense_quantization)


@pytest.fixture(scope="module")
def hyb(tmp_path_factory):
    rng = np.random.default_rng(17)
    ids = [f"d{i:04d}" for i in range(N)]  # zero-padded: id order = doc-number order
    idx = _build(tmp_path_factory.mktemp("mh") / "hyb", rng, ids)
    qids = [f"q{i}" for i in range(12)]  # every Milvus hit is decoded in Python: keep the runs small
    q = HybridQueries({"a": _sparse(rng, 12, qids, 0.2), "b-2": _sparse(rng, 12, qids, 0.2),
                       "vec": rng.standard_normal((12, D)).astype(np.float32)}, qids)
    return idx, q


@pytest.fixture(scope="module")
def db(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("mhlite") / "milvus.db")


@pytest.fixture(scope="module")
def backend(hyb, db):
    b = export(hyb[0], db, "hyb", batch_size=64, progress=False)
    yield b
    b.close()


def _same_top(local: tuple[np.ndarray, np.ndarray], milvus: tuple[np.ndarray, np.ndarray], rtol: float = 1e-5):
    """Equal scores rank by rank, and the same documents except where their scores tie. (Milvus
    clamps k to the documents exported, which leaves out those without any term: only padding.)"""
    (ls, ld), (ms, md) = local, milvus
    w = md.shape[1]
    assert (ld[:, w:] == -1).all()
    ls, ld = ls[:, :w], ld[:, :w]
    valid = ld >= 0
    assert ((md >= 0) == valid).all()
    # float32 scores near 0 (deep in a list) differ by a few ulps of the larger terms summed into them
    np.testing.assert_allclose(ms[valid], ls[valid], rtol=rtol, atol=1e-5)
    for i in range(len(ld)):
        for j in np.flatnonzero(ld[i] != md[i]):
            tied = np.isclose(ls[i], ls[i, j], rtol=rtol, atol=1e-5)
            assert md[i, j] in ld[i][tied] or tied[-1], (i, j, ld[i], md[i])


def test_export_writes_one_field_per_representation(hyb, backend, db):
    idx, _ = hyb
    st = backend.stats()
    assert st["kind"] == "hybrid" and st["representations"] == ["a", "b-2", "vec"] and st["n_docs"] == N
    assert {n: m["field"] for n, m in st["members"].items()} == {"a": "rep_a", "b-2": "rep_b_2", "vec": "rep_vec"}
    assert st["members"]["vec"]["dim"] == D and st["skipped_empty_docs"] == 0  # the dense field holds every document
    assert isinstance(MilvusBackend.open(db, "hyb"), MilvusHybridBackend) and "hyb" in list_exported(db)
    assert backend.default_params() == idx.default_params()
    assert backend.documents(["d0003"])["d0003"]["title"] == "title d0003"
    # the sidecar is format version 2: an older reader (version 1 only) refuses it by its version
    rows = backend.client.query("hyb__sparsearch", filter="chunk == 0", output_fields=["data"], limit=1)
    header = json.loads(rows[0]["data"])
    assert header["version"] == 2
    bad = [json.dumps({**header, "version": 9})]
    with pytest.raises(MilvusBackendError, match="version 9 is not supported"):
        _unpack(bad, "x")


def test_each_representation_equals_the_local_one(hyb, backend):
    idx, q = hyb
    _, _, local, _ = idx.search_detailed(q, 10, HybridParams(depth=40))
    _, _, milvus, seconds = backend.search_detailed(q, 10, HybridParams(depth=40))
    assert set(seconds) == {"a", "b-2", "vec", "fusion"}
    for name in idx.names:
        _same_top(local[name], milvus[name])
    # documents without a term in "a" carry a placeholder there and never match, as locally; the one
    # without a term anywhere is exported for its dense vector
    assert not set(milvus["a"][1].ravel().tolist()) & set(EMPTY_A)
    assert set(backend.documents(["d0005", "d0077"])) == {"d0005", "d0077"}


@pytest.mark.parametrize("params", [
    HybridParams(), HybridParams(fusion="rrf", weights=(0.2, 0.3, 0.5), depth=10),
    HybridParams(fusion="minmax", depth=40), HybridParams(fusion="zscore", weights=(0.5, 0.1, 0.4), depth=1000),
    HybridParams(fusion="minmax", weights=(0.0, 1.0, 1.0), rrf_k=5.0), HybridParams(fusion="rrf", rrf_k=0.5),
])
def test_fused_results_equal_the_local_hybrid_index(hyb, backend, params):
    idx, q = hyb
    _same_top(idx.search(q, 10, params), backend.search(q, 10, params, fuse="local"))
    _same_top(idx.search(q, 10, params), backend.search(q, 10, params))  # Milvus' own fusion where it applies
    run = backend.search_run(q, 5, params)
    local = idx.search_run(q, 5, params)
    for qid in q.ids:
        assert run[qid] == pytest.approx(local[qid], rel=1e-5)


def test_milvus_fuses_rrf_itself(hyb, backend):
    idx, q = hyb
    p = HybridParams(fusion="rrf", rrf_k=60.0, weights=(2.0, 2.0, 2.0), depth=50)
    assert backend.milvus_ranker(p) is not None
    _same_top(idx.search(q, 10, p), backend.search(q, 10, p, fuse="milvus"))
    for p in (HybridParams(fusion="minmax"), HybridParams(weights=(1.0, 2.0, 1.0)), HybridParams(rrf_k=0.5)):
        assert backend.milvus_ranker(p) is None
        with pytest.raises(UnsupportedError, match="fuse='local'"):
            backend.search(q, 10, p, fuse="milvus")


def test_queries_without_a_known_term_and_bad_input(hyb, backend):
    idx, q = hyb
    none = HybridQueries({"a": SparseBatch.from_dicts([{"zzz": 1.0}]), "b-2": SparseBatch.from_dicts([{"t3": 1.0}]),
                          "vec": q.parts["vec"][:1]}, ["x"])
    rrf = HybridParams(fusion="rrf")  # Milvus fuses by itself only RRF with equal weights
    for fuse in ("local", "milvus"):
        _same_top(idx.search(none, 8, rrf), backend.search(none, 8, rrf, fuse=fuse))
    with pytest.raises(InvalidInputError, match="unknown token 'zzz'"):
        backend.search(none, 5, ExactParams(unknown="error"))
    with pytest.raises(UnsupportedError, match="exact search, not approximate"):
        backend.search(q, 5, HybridParams(sparse=ApproxParams()))
    with pytest.raises(UnsupportedError):
        backend.search(q, 5, ApproxParams())
    with pytest.raises(InvalidInputError, match="3 representations"):
        backend.search(q, 5, HybridParams(weights=(1.0, 1.0)))
    with pytest.raises(InvalidInputError, match="HybridQueries"):
        backend.search(q.parts["a"], 5)
    with pytest.raises(InvalidInputError, match="no 'vec' part"):
        backend.search(HybridQueries({"a": q.parts["a"], "b-2": q.parts["b-2"]}), 5)
    with pytest.raises(InvalidInputError, match="shape"):
        backend.search(HybridQueries({**q.parts, "vec": q.parts["vec"][:, :3]}, q.ids), 5)
    with pytest.raises(InvalidInputError, match="fuse"):
        backend.search(q, 5, fuse="max")
    with pytest.raises(InvalidInputError, match="hybrid index exports"):
        export(idx, backend.uri, "other", dense=np.zeros((N, 4), np.float32), progress=False)
    for dense in (idx.member("vec").searcher, idx.member("vec").searcher.path):
        with pytest.raises(InvalidInputError, match="is a dense index; export the hybrid index"):
            export(dense, backend.uri, "other", progress=False)


@pytest.mark.parametrize("quantization", ["int8", "float16"])
def test_quantized_dense_vectors_are_exported_dequantized(tmp_path, quantization):
    rng = np.random.default_rng(5)
    ids = [f"d{i:04d}" for i in range(N)]
    idx = _build(tmp_path / "h", rng, ids, dense_quantization=quantization)
    vec = idx.member("vec").searcher
    x = dense_rows(vec, 0, N)
    q = rng.standard_normal((4, D)).astype(np.float32)
    np.testing.assert_allclose(q @ x.T, vec.scores_of(q, np.tile(np.arange(N), (4, 1))), rtol=1e-5, atol=1e-5)
    with export(idx, str(tmp_path / "m.db"), "q", progress=False) as b:
        qs = HybridQueries({"a": SparseBatch.from_dicts([{"t1": 1.0}] * 4), "b-2": SparseBatch.from_dicts([{}] * 4),
                            "vec": q}, [str(i) for i in range(4)])
        _, _, local, _ = idx.search_detailed(qs, 10)
        _, _, milvus, _ = b.search_detailed(qs, 10)
        _same_top(local["vec"], milvus["vec"])


def test_field_names_are_valid_and_unique():
    assert field_names(["bm25", "bm25-2", "bm25_2", "splade-doc"]) == ["rep_bm25", "rep_bm25_2", "rep_bm25_2_2",
                                                                      "rep_splade_doc"]


def test_all_sparse_hybrid_leaves_out_documents_without_any_term(tmp_path):
    ids = ["a", "b", "c"]
    vocab = Vocabulary(["x", "y"])
    one = SparseBatch.from_dicts([{"x": 1.0}, {}, {}], ids=ids, vocab=vocab)
    two = SparseBatch.from_dicts([{}, {"y": 2.0}, {}], ids=ids, vocab=vocab)
    idx = build_hybrid_from_vectors(tmp_path / "h", ids, [("one", one), ("two", two)], quantization="float32")
    save_fusion(idx.path, HybridParams(fusion="minmax", weights=(0.25, 0.75)))
    idx = HybridIndex.open(idx.path)
    with export(idx, str(tmp_path / "m.db"), progress=False) as b:
        assert b.n_docs == 2 and b.stats()["skipped_empty_docs"] == 1
        assert b.default_params().fusion == "minmax" and b.default_params().weights == (0.25, 0.75)
        q = HybridQueries({"one": SparseBatch.from_dicts([{"x": 1.0}]), "two": SparseBatch.from_dicts([{"y": 1.0}])})
        _same_top(idx.search(q, 3), b.search(q, 3))


# ------------------------------------------------------------------------ CLI and service
def test_cli_export_and_serve_a_text_hybrid_index(tiny_beir, tmp_path, monkeypatch, torch_one_thread):
    pytest.importorskip("fastapi", reason="serve needs FastAPI (the 'service' extra)")
    from fastapi.testclient import TestClient

    from sparsearch.service import create_app, milvus_backends

    monkeypatch.setenv("SPARSEARCH_CACHE", str(tmp_path / "cache"))
    out, db = tmp_path / "tiny-hyb", str(tmp_path / "m.db")
    r = cli("index", tiny_beir, "--out", out, "--encoder", "bm25", "--encoder", "dense", "--encoder", "bm25:robertson")
    assert r.exit_code == 0, r.output
    r = cli("export", out, "--milvus", db, "--dense")
    assert r.exit_code == 2 and "--dense and --dense-model do not apply" in r.stderr
    r = cli("export", out, "--milvus", db)
    assert r.exit_code == 0, r.output
    assert "exported 6 documents" in r.output and "dense (rep_dense: dense d=384)" in r.output
    assert "bm25-2 (rep_bm25_2:" in r.output and "collection 'tiny_hyb'" in r.output

    served = milvus_backends(db)
    assert [s.name for s in served] == ["tiny_hyb"]
    with TestClient(create_app(backends=served), base_url="http://localhost", raise_server_exceptions=False) as c, \
            TestClient(create_app([out]), base_url="http://localhost", raise_server_exceptions=False) as local:
        for body in ({"query": "programming language compiler", "k": 4},
                     {"query": "wolves and dogs", "k": 6, "hybrid": {"fusion": "minmax", "weights": {"dense": 2}}}):
            got, want = c.post("/search", json=body), local.post("/search", json=body)
            assert got.status_code == 200 and want.status_code == 200, got.text + want.text
            g, w = got.json(), want.json()
            assert [h["id"] for h in g["hits"]] == [h["id"] for h in w["hits"]]
            assert [h["score"] for h in g["hits"]] == pytest.approx([h["score"] for h in w["hits"]], rel=1e-4)
            for gh, wh in zip(g["hits"], w["hits"]):
                assert [r["rank"] for r in gh["representations"].values()] == \
                    [r["rank"] for r in wh["representations"].values()]
                assert list(gh["representations"]) == ["bm25", "dense", "bm25-2"]
            assert g["hybrid"]["tiny_hyb"] == w["hybrid"]["tiny-hyb"] and set(g["timings"]["tiny_hyb"]["representations_ms"]) == \
                {"bm25", "dense", "bm25-2"}
            assert g["hits"][0]["title"] and g["hits"][0]["explanation"] == {}
        health = c.get("/healthz").json()["indexes"]["tiny_hyb"]
        assert health["kind"] == "hybrid" and [x["name"] for x in health["representations"]] == ["bm25", "dense",
                                                                                                "bm25-2"]
        for body, status, text in [
            ({"query": "x", "mode": "approximate"}, 400, "searches exactly"),
            ({"vector": {"compil": 1.0}, "indexes": ["tiny_hyb"]}, 400, "send a 'query' text"),
            ({"query": "x", "hybrid": {"weights": {"nope": 1}}}, 400, "no representation 'nope'"),
            ({"query": "x", "explain": True}, 400, "explain is not available"),
        ]:
            r = c.post("/search", json=body)
            assert r.status_code == status and text in r.json()["error"], (body, r.text)
        st = c.get("/stats").json()["indexes"]["tiny_hyb"]
        assert st["kind"] == "hybrid" and st["backend"] == "milvus" and "uri" not in st
