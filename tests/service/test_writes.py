"""Writes through the service (issue 15 item 10, HTTP side): ``POST /documents`` (a batch of
texts encoded with the index's encoder, or of vectors) and ``DELETE /documents/{id}``, one commit
each through ``sparsearch.index.updates``, served at once, bounded in batch and body size."""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the service needs FastAPI (the 'service' extra)")
pytest.importorskip("httpx", reason="FastAPI's test client needs httpx (the 'test' extra)")

from sparsearch.index import Index, build_index  # noqa: E402
from sparsearch.service import Access, Limits, create_app  # noqa: E402
from sparsearch.vectors import SparseBatch, Vocabulary  # noqa: E402

from .test_service import _bm25_index, local_client  # noqa: E402

TOKEN = "write-token-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def served(tmp_path_factory, tmp_path):
    base = tmp_path_factory.getbasetemp() / "writes-base"
    if not base.exists():
        _bm25_index(base / "bm25")
        rng = np.random.default_rng(5)
        m = (rng.random((20, 12)) < 0.4) * rng.random((20, 12))
        build_index(SparseBatch.from_dense(m, Vocabulary.from_size(12, "f"), [f"v{i}" for i in range(20)]),
                    base / "vec", quantization="float32")
    for n in ("bm25", "vec"):
        shutil.copytree(base / n, tmp_path / n)
    return tmp_path


def _client(root, names=("bm25",), **limits):
    app = create_app({n: root / n for n in names}, access=Access(token=TOKEN),
                     limits=Limits(rate_limit_per_s=0, **limits))
    return local_client(app)


def test_add_texts_then_search_and_fetch(served):
    """issue 15 item 10: a batch of texts is encoded with the index's encoder, committed once,
    and searchable and fetchable in the next request."""
    with _client(served) as c:
        before = c.get("/healthz").json()["indexes"]["bm25"]
        docs = [{"id": "n1", "title": "Barn cats", "text": "barn cats hunt mice at night"},
                {"id": "n2", "text": "wolves and foxes hunt rabbits"}]
        r = c.post("/documents", json={"documents": docs}, headers=AUTH)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["index"] == "bm25" and body["added"] == 2 and body["generation"] == before["generation"] + 1
        assert body["documents"] == before["documents"] + 2
        ids = [h["id"] for h in c.post("/search", json={"query": "cats hunt mice", "k": 10}).json()["hits"]]
        assert "n1" in ids
        assert c.get("/documents/n1").json()["title"] == "Barn cats"
        assert c.get("/documents/n2").json()["text"] == "wolves and foxes hunt rabbits"
        assert Index.open(served / "bm25").n_live_docs == before["documents"] + 2
        # the same id again: 409, unless replace
        r = c.post("/documents", json={"documents": [{"id": "n1", "text": "dogs"}]}, headers=AUTH)
        assert r.status_code == 409 and "n1" in r.json()["error"]
        r = c.post("/documents", json={"documents": [{"id": "n1", "text": "loyal dogs"}], "replace": True},
                   headers=AUTH)
        assert r.status_code == 200 and r.json()["documents"] == before["documents"] + 2
        assert c.get("/documents/n1").json()["text"] == "loyal dogs"


def test_delete_document(served):
    """issue 15 item 10: DELETE /documents/{id} commits a deletion the next search sees; an id
    that is not live is 404."""
    with _client(served) as c:
        assert "d3" in [h["id"] for h in c.post("/search", json={"query": "wolves", "k": 10}).json()["hits"]]
        r = c.delete("/documents/d3", headers=AUTH)
        assert r.status_code == 200 and r.json()["deleted"] == 1 and r.json()["documents"] == 7, r.text
        assert "d3" not in [h["id"] for h in c.post("/search", json={"query": "wolves", "k": 10}).json()["hits"]]
        assert c.get("/documents/d3").status_code == 404
        r = c.delete("/documents/d3", headers=AUTH)
        assert r.status_code == 404 and "d3" in r.json()["error"]


def test_vectors_and_index_choice(served):
    """issue 15 item 10: vectors go to an index without encoder; with several indexes served the
    index is named; text for an index without encoder is a clear 400."""
    with _client(served, names=("bm25", "vec")) as c:
        new = {"documents": [{"id": "vnew", "vector": {"f3": 5.0, "f7": 2.0, "brand-new-term": 1.0},
                              "title": "A vector", "text": "stored only"}], "index": "vec"}
        r = c.post("/documents", json=new, headers=AUTH)
        assert r.status_code == 200 and r.json()["index"] == "vec", r.text
        hits = c.post("/search", json={"vector": {"brand-new-term": 1.0}, "indexes": ["vec"]}).json()["hits"]
        assert [h["id"] for h in hits] == ["vnew"] and hits[0]["title"] == "A vector"
        r = c.post("/documents", json={"documents": [{"id": "x", "text": "words"}]}, headers=AUTH)
        assert r.status_code == 400 and "several indexes" in r.json()["error"]
        r = c.post("/documents", json={"documents": [{"id": "x", "text": "words"}], "index": "vec"}, headers=AUTH)
        assert r.status_code == 400 and "no encoder" in r.json()["error"]
        r = c.post("/documents", json={"documents": [{"id": "x", "text": "words"}], "index": "nope"}, headers=AUTH)
        assert r.status_code == 404
        assert c.delete("/documents/v1", headers=AUTH).status_code == 400  # which index?
        assert c.delete("/documents/v1", params={"index": "vec"}, headers=AUTH).status_code == 200


BAD_BATCHES = [
    ("empty batch", {"documents": []}, 422),
    ("no id", {"documents": [{"text": "x"}]}, 422),
    ("empty id", {"documents": [{"id": "", "text": "x"}]}, 422),
    ("no text", {"documents": [{"id": "a"}]}, 422),
    ("blank text", {"documents": [{"id": "a", "text": "  "}]}, 422),
    ("unknown field", {"documents": [{"id": "a", "text": "x", "body": "y"}]}, 422),
    ("text not a string", {"documents": [{"id": "a", "text": 5}]}, 422),
    ("negative weight", {"documents": [{"id": "a", "vector": {"t": -1}}]}, 422),
    ("zero vector", {"documents": [{"id": "a", "vector": {"t": 0}}]}, 422),
    ("too many documents", {"documents": [{"id": f"a{i}", "text": "x"} for i in range(6)]}, 422),
    ("text too long", {"documents": [{"id": "a", "text": "x" * 201}]}, 422),
    ("duplicate ids", {"documents": [{"id": "a", "text": "x"}, {"id": "a", "text": "y"}]}, 400),
    ("texts and vectors", {"documents": [{"id": "a", "text": "x"}, {"id": "b", "vector": {"t": 1}}]}, 400),
]


@pytest.mark.parametrize("name,body,status", BAD_BATCHES, ids=[b[0] for b in BAD_BATCHES])
def test_bad_batches_are_4xx_and_change_nothing(served, name, body, status):
    """issue 15 item 10: the batch is bounded (Limits.max_batch_documents, max_document_chars,
    max_write_body_bytes) and checked whole before anything is written."""
    with _client(served, max_batch_documents=5, max_document_chars=200) as c:
        gen = c.get("/healthz").json()["indexes"]["bm25"]["generation"]
        r = c.post("/documents", json=body, headers=AUTH)
        assert r.status_code == status and r.json()["error"], r.text
        assert c.get("/healthz").json()["indexes"]["bm25"]["generation"] == gen


def test_write_body_limit(served):
    """issue 15 item 10: POST /documents has its own body limit (413 past it); searches keep theirs."""
    with _client(served, max_write_body_bytes=2000, max_body_bytes=1000) as c:
        doc = {"documents": [{"id": "a", "text": "cats " * 300}]}
        assert c.post("/documents", json=doc, headers=AUTH).status_code == 200
        doc = {"documents": [{"id": "b", "text": "cats " * 500}]}
        r = c.post("/documents", json=doc, headers=AUTH)
        assert r.status_code == 413 and "2000" in r.json()["error"]
        assert c.post("/search", json={"query": "cats " * 250}).status_code == 413


def test_concurrent_writes_all_land(served):
    """issue 15 item 10: writes run one at a time; concurrent batches all commit (or are told to
    retry with 429), and the index ends with every accepted document."""
    with _client(served, max_pending_writes=16) as c:
        def add(i):
            return c.post("/documents", json={"documents": [{"id": f"c{i}", "text": f"cats number {i}"}]},
                          headers=AUTH).status_code

        with ThreadPoolExecutor(6) as ex:
            statuses = list(ex.map(add, range(12)))
        assert set(statuses) == {200}, statuses
        assert c.get("/healthz").json()["indexes"]["bm25"]["documents"] == 8 + 12
        assert all(c.get(f"/documents/c{i}").status_code == 200 for i in range(12))
