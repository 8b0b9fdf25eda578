"""Milvus backend against Milvus Lite (embedded): export of an index's vectors, exact recall and
scores against the local index, hybrid search, the CLI export + service round trip, and the
errors (missing or existing collection, bad or unreachable URI, refused index type, vocabulary
mismatch)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("pymilvus", reason="the Milvus backend needs pymilvus (pip install 'sparsearch[milvus]')")
pytest.importorskip("milvus_lite", reason="Milvus Lite tests need milvus-lite (pip install 'sparsearch[milvus]')")

from sparsearch.encoders import get_encoder  # noqa: E402
from sparsearch.errors import InvalidInputError, UnsupportedError  # noqa: E402
from sparsearch.evaluation import recall_at_k  # noqa: E402
from sparsearch.index import Index, build_index  # noqa: E402
from sparsearch.index.updates import add_texts, delete_documents  # noqa: E402
from sparsearch.milvus import _check_k as milvus_check_k
from sparsearch.milvus import (CollectionExistsError, CollectionNotFoundError, MilvusBackend,  # noqa: E402
                               MilvusBackendError, collection_name, export, list_exported)
from sparsearch.searching import ApproxParams, ExactParams  # noqa: E402
from sparsearch.vectors import SparseBatch  # noqa: E402

from tests.core.test_cli import cli  # noqa: E402

WORDS = [f"w{i}" for i in range(300)]
ZIPF = 1 / np.arange(1, len(WORDS) + 1) ** 1.1
ZIPF /= ZIPF.sum()


def _texts(rng: np.random.Generator, n: int, prefix: str) -> dict[str, tuple[str, str]]:
    return {f"{prefix}{i}": (f"title {prefix}{i} " + " ".join(rng.choice(WORDS, 2, p=ZIPF)),
                             " ".join(rng.choice(WORDS, int(rng.integers(5, 80)), p=ZIPF)))
            for i in range(n)}


@pytest.fixture(scope="module")
def index(tmp_path_factory) -> Index:
    """BM25 over 600 synthetic documents, then 40 added (a second segment) and 5 deleted;
    one document has no term at all."""
    rng = np.random.default_rng(11)
    path = tmp_path_factory.mktemp("milvus") / "syn"
    docs = _texts(rng, 600, "d")
    docs["blank"] = ("", "")
    enc = get_encoder("bm25")
    texts = [f"{t} {x}" for t, x in docs.values()]
    enc.fit(texts)
    build_index(enc.encode_documents(texts, list(docs)), path, encoder=enc, documents=docs)
    add_texts(path, [{"id": i, "title": t, "text": x} for i, (t, x) in _texts(rng, 40, "n").items()])
    delete_documents(path, ["d3", "d100", "d599", "n0", "n39"])
    return Index.open(path)


@pytest.fixture(scope="module")
def db(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("lite") / "milvus.db")


@pytest.fixture(scope="module")
def backend(index, db):
    b = export(index, db, "syn", batch_size=128, progress=False)
    yield b
    b.close()


def _queries(index: Index, n: int, seed: int) -> SparseBatch:
    rng = np.random.default_rng(seed)
    texts = [" ".join(rng.choice(WORDS, int(rng.integers(1, 6)), p=ZIPF)) for _ in range(n)]
    return index.load_encoder().encode_queries(texts, [f"q{i}" for i in range(n)])


def test_export_holds_the_live_documents(index, backend):
    st = backend.stats()
    assert st["n_docs"] == index.n_live_docs - 1 and st["skipped_empty_docs"] == 1  # "blank" has no term
    assert backend.vocab == index.vocab and backend.encoder_config == index.encoder_config
    assert st["source"]["generation"] == index.manifest["generation"] and backend.has_text
    assert list_exported(backend.uri) == ["syn"]
    docs = backend.documents(["d5", "n7", "d3", "nope"])  # d3 was deleted
    assert set(docs) == {"d5", "n7"} and docs["n7"]["title"].startswith("title n7")


def test_recall_at_10_is_1_and_scores_match_exact(index, backend):
    qs = _queries(index, 80, seed=5)
    exact_s, exact_d = index.search(qs, 60)
    scores, docs = backend.search(qs, 10)
    strict, tie_aware = recall_at_k(docs, exact_d, 10), recall_at_k(docs, exact_d, 10, exact_scores=exact_s)
    assert tie_aware == 1.0 and strict > 0.9  # strict < 1 only where 8-bit impacts tie at rank 10
    n_valid = (exact_d[:, :10] >= 0).sum(axis=1)
    assert ((docs >= 0).sum(axis=1) == n_valid).all()
    # the same score at every rank (tied documents may swap), and each document's own score
    valid = exact_d[:, :10] >= 0
    # (rtol 1e-4: exact search snaps the scaled query weights, x each term's 8-bit step, to one grid
    # per query, issue 15 item 1; Milvus scores the float dequantized weights)
    np.testing.assert_allclose(scores[valid], exact_s[:, :10][valid], rtol=1e-4)
    lookup = [dict(zip(d.tolist(), s.tolist())) for d, s in zip(exact_d, exact_s)]
    for qi in range(len(qs)):
        for d, s in zip(docs[qi].tolist(), scores[qi].tolist()):
            if d >= 0:
                assert s == pytest.approx(lookup[qi][d], rel=1e-4)  # see above: one snapping grid per query
    deleted = {index.doc_ids.index(i) for i in ("d3", "d100", "d599", "n0", "n39")}
    assert not deleted & set(docs.ravel().tolist())


def test_open_again_encodes_queries_like_the_index(index, backend):
    with MilvusBackend.open(backend.uri, "syn") as b:
        enc = b.load_encoder()
        texts = ["w1 w7 w30", "title w2", "w250 zzz-unknown"]
        q_local = index.load_encoder().encode_queries(texts, ["a", "b", "c"])
        q_milvus = enc.encode_queries(texts, ["a", "b", "c"])
        assert q_local.to_dicts() == q_milvus.to_dicts()
        run = b.search_run(q_milvus, 5)
    local = index.search_run(q_local, 60)
    for q, hits in run.items():
        assert hits and all(local[q][d] == pytest.approx(s, rel=1e-5) for d, s in hits.items())
        kth = sorted(local[q].values(), reverse=True)[len(hits) - 1]
        assert min(hits.values()) == pytest.approx(kth, rel=1e-5)


def test_vocabulary_mismatch_and_unknown_terms(index, backend):
    foreign = SparseBatch.from_dicts([{"w1": 1.0, "notaterm": 2.0}], ids=["q"])
    with pytest.raises(InvalidInputError, match="unknown token 'notaterm'.*collection 'syn'"):
        backend.search(foreign, 10, ExactParams(unknown="error"))
    s1, d1 = backend.search(foreign, 10)  # dropped by default, like the local index
    s2, d2 = backend.search(SparseBatch.from_dicts([{"w1": 1.0}]), 10)
    assert (d1 == d2).all()
    s, d = backend.search(SparseBatch.from_dicts([{"nothing-known": 1.0}]), 5)
    assert (d == -1).all() and (s == 0).all()
    with pytest.raises(ValueError, match="finite"):
        backend.search(SparseBatch(np.array([0, 1]), np.array([0]), np.array([np.inf]), index.vocab), 3)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        backend.search(foreign, 0)
    assert backend.search(foreign, 20000)[1].shape == (1, backend.n_docs)  # clamped first: under Milvus' limit
    with pytest.raises(ValueError, match="Milvus' largest search limit"):
        milvus_check_k(20000, 50000)  # a collection larger than Milvus' limit refuses a deeper search
    assert backend.search(foreign, 5000)[1].shape == (1, backend.n_docs)  # k is clamped to the documents
    with pytest.raises(UnsupportedError, match="exact search, not approximate"):
        backend.search(foreign, 10, ApproxParams())


def test_hybrid_search_fuses_sparse_and_dense(index, db):
    rng = np.random.default_rng(3)
    dense = rng.standard_normal((index.n_docs, 16)).astype(np.float32)
    dense /= np.linalg.norm(dense, axis=1, keepdims=True)
    with export(index, db, "hyb", dense=dense, progress=False) as b:
        assert b.stats()["dense_dim"] == 16
        # a query aimed at document t: its own top terms and its own embedding, so t ranks 1st on both sides
        t = index.docnum("d42")
        qv = _doc_query(index, t)
        scores, docs = b.hybrid_search(qv, dense[[t]], 10, ranker="rrf", rrf_k=60)
        assert docs[0, 0] == t and scores[0, 0] == pytest.approx(2 / 61, rel=1e-5)
        assert (docs >= 0).all() and (np.diff(scores[0]) <= 1e-9).all()
        sparse_top = b.search(qv, 100)[1][0]
        dense_top = np.argsort(-(dense @ dense[t]))[:100]
        fused = docs[0].tolist()
        assert set(fused) <= set(sparse_top.tolist()) | set(dense_top.tolist())
        assert fused != sparse_top[:10].tolist() and fused != dense_top[:10].tolist()  # both sides count
        ws, wd = b.hybrid_search(qv, dense[[t]], 5, ranker="weighted", weights=(0.7, 0.3))
        assert wd[0, 0] == t and (wd >= 0).all()
        run = b.hybrid_search_run(qv, dense[[t]], 3)
        assert list(run["0"])[0] == "d42"
        dr = b.dense_search_run(dense[[t]], 3, ["x"])
        assert list(dr["x"])[0] == "d42" and dr["x"]["d42"] == pytest.approx(1.0, rel=1e-5)
        with pytest.raises(ValueError, match="shape"):
            b.hybrid_search(qv, dense[[t], :8], 5)
        with pytest.raises(ValueError, match="ranker"):
            b.hybrid_search(qv, dense[[t]], 5, ranker="max")
    with MilvusBackend.open(db, "syn") as b, pytest.raises(ValueError, match="no dense vectors"):
        b.hybrid_search(qv, dense[[t]], 5)


def _doc_query(index: Index, docnum: int) -> SparseBatch:
    """The 8 largest weights of a document's vector, as a query."""
    from sparsearch.index.updates import live_vectors

    live = live_vectors(index)
    row = live.ids.index(index.doc_ids[docnum])
    vec = live.row_dict(row)
    return SparseBatch.from_dicts([dict(sorted(vec.items(), key=lambda x: -x[1])[:8])], ids=["0"])


def test_errors_name_the_problem(index, backend, db, tmp_path):
    with pytest.raises(CollectionNotFoundError, match="no collection 'nope'.*collections there: .*syn"):
        MilvusBackend.open(db, "nope")
    with pytest.raises(CollectionNotFoundError, match="no Milvus Lite database"):
        MilvusBackend.open(str(tmp_path / "absent.db"), "syn")
    with pytest.raises(CollectionExistsError, match="already exists.*overwrite"):
        export(index, db, "syn", progress=False)
    with pytest.raises(MilvusBackendError, match="unsupported Milvus URI"):
        export(index, str(tmp_path / "x.sqlite"), "syn", progress=False)
    with pytest.raises(MilvusBackendError, match="cannot connect to Milvus at http://127.0.0.1:1"):
        MilvusBackend.open("http://127.0.0.1:1", "syn", timeout=2)
    with pytest.raises(MilvusBackendError, match="refused sparse index type 'SPARSE_WAND'.*Milvus Lite"):
        export(index, db, "wand", index_type="SPARSE_WAND", progress=False)
    assert "wand" not in backend.client.list_collections()  # the refused collection is not left behind
    with pytest.raises(MilvusBackendError, match="invalid collection name"):
        export(index, db, "bad-name", progress=False)
    backend.client.create_collection("plain", dimension=2)  # a collection sparsearch did not write
    with pytest.raises(MilvusBackendError, match="no sparsearch metadata"):
        MilvusBackend.open(db, "plain")
    assert collection_name("scifact-bm25") == "scifact_bm25" and collection_name("1x") == "_1x"


def test_database_held_by_another_process(index, tmp_path):
    held = str(tmp_path / "held.db")
    code = "import sys; from pymilvus import MilvusClient; MilvusClient(sys.argv[1]); print('ready', flush=True); " \
           "sys.stdin.read()"
    holder = subprocess.Popen([sys.executable, "-c", code, held], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        with pytest.raises(MilvusBackendError, match="one process at a time.*another one"):
            export(index, held, "syn", progress=False)
    finally:
        holder.communicate("", timeout=30)


def test_overwrite_replaces_the_collection(index, db):
    small = build_index(SparseBatch.from_dicts([{"w1": 1.0}, {"w2": 2.0}], ids=["a", "b"]),
                        index.path.parent / "small")
    with export(small, db, "tmp", progress=False) as b:
        assert b.n_docs == 2
    with export(index, db, "tmp", overwrite=True, progress=False) as b:
        assert b.n_docs == index.n_live_docs - 1
        assert b.search(SparseBatch.from_dicts([{"w2": 1.0}]), 3)[1][0, 0] >= 0


# ------------------------------------------------------------------------ CLI and service
def test_cli_export_and_serve_round_trip(tiny_beir, tmp_path, monkeypatch, torch_one_thread):
    pytest.importorskip("fastapi", reason="serve needs FastAPI (the 'service' extra)")
    from fastapi.testclient import TestClient

    from sparsearch.service import create_app
    from sparsearch.service import milvus_backends

    monkeypatch.setenv("SPARSEARCH_CACHE", str(tmp_path / "cache"))
    out, db = tmp_path / "tiny-idx", str(tmp_path / "m.db")
    assert cli("index", tiny_beir, "--out", out).exit_code == 0
    r = cli("export", out, "--milvus", db, "--dense")
    assert r.exit_code == 0, r.output
    assert "exported 6 documents" in r.output and "collection 'tiny_idx'" in r.output and "dense d=384" in r.output
    r = cli("export", out, "--milvus", db)
    assert r.exit_code == 2 and "already exists" in r.stderr
    r = cli("export", out, "--milvus", db, "--collection", "wand", "--index-type", "SPARSE_WAND")
    assert r.exit_code == 2 and "refused sparse index type 'SPARSE_WAND'" in r.stderr
    r = cli("serve", db, "--backend", "milvus", "--collection", "nope")
    assert r.exit_code == 2 and "no collection 'nope'" in r.stderr
    r = cli("serve", db, db, "--backend", "milvus")
    assert r.exit_code == 2 and "one Milvus URI" in r.stderr

    served = milvus_backends(db)
    assert [s.name for s in served] == ["tiny_idx", "tiny_idx-dense"]
    with TestClient(create_app(backends=served), base_url="http://localhost", raise_server_exceptions=False) as c, \
            TestClient(create_app([out]), base_url="http://localhost", raise_server_exceptions=False) as local:
        q = {"query": "programming language compiler", "k": 3}
        got = c.post("/search", json=q | {"indexes": ["tiny_idx"], "explain": None})  # null: where it can
        want = local.post("/search", json=q)
        assert got.status_code == 200, got.text
        g, w = got.json(), want.json()
        assert [h["id"] for h in g["hits"]] == [h["id"] for h in w["hits"]] == ["d6", "d4"]
        assert [h["score"] for h in g["hits"]] == pytest.approx([h["score"] for h in w["hits"]], rel=1e-5)
        assert g["hits"][0]["title"] == "Compilers" and "compiler" in g["hits"][0]["snippet"]
        assert g["hits"][0]["explanation"] == {} and any("no explanations" in x for x in g["warnings"])
        # sparse + dense, fused by the service like any two indexes
        h = c.post("/search", json=q | {"explain": False})
        assert h.status_code == 200, h.text
        hb = h.json()
        assert hb["indexes"] == ["tiny_idx", "tiny_idx-dense"] and hb["fusion"] == "rrf"
        assert hb["hits"][0]["id"] == "d6" and set(hb["hits"][0]["scores"]) == {"tiny_idx", "tiny_idx-dense"}
        d = c.post("/search", json={"query": "household pets", "k": 2, "indexes": ["tiny_idx-dense"]})
        assert d.status_code == 200 and d.json()["hits"][0]["id"] in {"d1", "d2"}
        v = c.post("/search", json={"vector": {"compil": 1.0}, "k": 2, "indexes": ["tiny_idx"]})
        assert v.status_code == 200 and v.json()["hits"][0]["id"] == "d6"
        # what Milvus cannot do is a 4xx that says so; validation is the local service's
        for body, status, text in [
            (q | {"explain": True, "indexes": ["tiny_idx"]}, 400, "explain is not available"),
            (q | {"mode": "approximate", "indexes": ["tiny_idx"]}, 400, "searches exactly"),
            ({"vector": {"compil": 1.0}, "indexes": ["tiny_idx-dense"]}, 400, "send a 'query' text"),
            (q | {"k": 1001}, 422, "k"),
            ({"query": "x" * 1001}, 422, "query"),
            (q | {"indexes": ["other"]}, 404, "unknown index"),
        ]:
            r = c.post("/search", json=body)
            assert r.status_code == status and text in r.json()["error"], (body, r.text)
        r = c.post("/explain", json={"query": "compiler", "doc_id": "d6", "index": "tiny_idx"})
        assert r.status_code == 400 and "cannot explain" in r.json()["error"]
        doc = c.get("/documents/d4")
        assert doc.status_code == 200 and doc.json()["title"] == "Python" and doc.json()["stored"] is True
        assert c.get("/documents/nope").status_code == 404
        health = c.get("/healthz").json()
        assert health["indexes"]["tiny_idx"] == {"backend": "milvus", "collection": "tiny_idx", "documents": 6}
        st = c.get("/stats").json()["indexes"]["tiny_idx"]
        assert st["backend"] == "milvus" and st["index_type"] == "SPARSE_INVERTED_INDEX"
