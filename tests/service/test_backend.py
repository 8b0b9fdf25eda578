"""The service without HTTP (SearchService), the error -> status mapping, and the shape of the
service package (no FastAPI in the backend, no long functions)."""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest

from sparsearch import fusion
from sparsearch.errors import (BackendError, ConflictError, CorruptIndexError, InvalidInputError, NotFoundError,
                               StorageError, UnsupportedError)
from sparsearch.index import Index
from sparsearch.index.approximate import ApproximateIndex, save_settings
from sparsearch.searching import ApproxParams, ExactParams
from sparsearch.service import Limits, SearchResult, SearchService

from .test_service import _bm25_index, _run

SERVICE = Path(__file__).resolve().parents[2] / "src" / "sparsearch" / "service"


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("backend")
    _bm25_index(root / "bm25")
    _bm25_index(root / "bm25b", k1=0.9, b=0.4)
    return root


@pytest.fixture(scope="module")
def service(root):
    return SearchService.open({"bm25": root / "bm25", "bm25b": root / "bm25b"}, warm=False)


def test_search_returns_plain_results_equal_to_the_index(service, root):
    r = service.search("small mammals hunt mice", k=4, indexes=["bm25"])
    assert isinstance(r, SearchResult) and r.fusion is None and r.mode == "exact"
    expected = _run(Index.open(root / "bm25"), "small mammals hunt mice", 4)
    assert [h.id for h in r.hits] == list(expected)
    top = r.hits[0]
    assert top.scores["bm25"].rank == 1 and top.title and top.snippet and top.highlights
    assert sum(c.contribution for c in top.explanation["bm25"]) == pytest.approx(top.score, rel=1e-4)


def test_fused_search_is_fusion_fuse_of_the_runs(service, root):
    q = "dogs wolves foxes"
    r = service.search(q, k=5, fusion="zscore", weights={"bm25": 1.0, "bm25b": 3.0}, explain=False)
    runs = [_run(Index.open(root / n), q, 100) for n in ("bm25", "bm25b")]
    expected = fusion.ranked(fusion.fuse(runs, "zscore", [1.0, 3.0]))[:5]
    assert [(h.id, h.score) for h in r.hits] == [(d, pytest.approx(s)) for d, s in expected]
    assert r.fusion == "zscore" and all(h.explanation == {} for h in r.hits)


def test_errors_are_error_classes_not_statuses(service):
    with pytest.raises(NotFoundError, match="unknown index 'nope'"):
        service.search("cats", indexes=["nope"])
    with pytest.raises(InvalidInputError, match="exactly one"):
        service.search("cats", vector={"cat": 1.0})
    with pytest.raises(InvalidInputError, match="unknown search mode"):
        service.search("cats", mode="fast")
    with pytest.raises(InvalidInputError, match="unknown fusion"):
        service.search("cats", fusion="max")
    with pytest.raises(InvalidInputError, match="all index weights are 0"):
        service.search("cats", indexes=["bm25"], weights={"bm25": 0})
    with pytest.raises(UnsupportedError, match="sparsearch build-approx"):
        service.search("cats", mode="approximate", indexes=["bm25"])
    with pytest.raises(NotFoundError, match="unknown document id 'zzz'"):
        service.document("zzz")
    with pytest.raises(InvalidInputError, match="name one"):
        service.explain("d1", "cats")
    with pytest.raises(NotFoundError, match="no such index directory"):
        SearchService.open([Path("/nonexistent/index")])


def test_explain_document_health_stats(service):
    e = service.explain("d3", "wolves hunt", index="bm25")
    assert {c.term for c in e.contributions} == {"wolv", "hunt"}
    assert e.score == pytest.approx(sum(c.contribution for c in e.contributions))
    assert service.document("d4").title == "Python"
    assert service.health()["indexes"]["bm25"]["documents"] == 8
    st = service.stats()
    assert st["indexes"]["bm25b"]["stored_documents"] == 8 and st["service"]["searches"] >= 1
    assert st["service"]["limits"]["max_k"] == Limits().max_k


def test_approximate_uses_the_saved_settings_unless_given(root, tmp_path):
    path = tmp_path / "a"
    shutil.copytree(root / "bm25", path)
    ApproximateIndex.build(Index.open(path))
    save_settings(path, ApproxParams(query_cut=3, heap_factor=0.5))
    svc = SearchService.open([path])
    served = svc.served["a"]
    snap = served.snapshot()
    assert served.search_params(snap, "approximate", None, None) == ApproxParams(query_cut=3, heap_factor=0.5,
                                                                                 threads=1)
    assert served.search_params(snap, "approximate", 50, None) == ApproxParams(query_cut=50, heap_factor=0.5,
                                                                               threads=1)
    assert served.search_params(snap, "exact", None, None) == ExactParams(threads=1)
    got = svc.search("wolves hunt", k=3, mode="approximate", query_cut=50, heap_factor=1.0)
    exact = svc.search("wolves hunt", k=3)
    assert [h.id for h in got.hits] == [h.id for h in exact.hits] and got.mode == "approximate"
    # the candidate strategy: given, or saved
    got = svc.search("wolves hunt", k=3, mode="approximate", query_cut=50, candidates=1000)
    assert [h.id for h in got.hits] == [h.id for h in exact.hits]
    assert served.search_params(snap, "approximate", None, None, candidates=7).candidates == 7
    with pytest.raises(InvalidInputError, match="candidates must be at most"):
        svc.search("wolves hunt", mode="approximate", candidates=Limits().max_candidates + 1)
    with pytest.raises(InvalidInputError, match="candidates applies to approximate search"):
        svc.search("wolves hunt", candidates=5)
    # a forward cut as long as any document, with a pool of k: the same hits; a strategy given
    # overrides the other one's saved knob
    got = svc.search("wolves hunt", k=3, mode="approximate", query_cut=50, heap_factor=1.0, forward_cut=10**4,
                     rerank=3)
    assert [h.id for h in got.hits] == [h.id for h in exact.hits]
    p = served.search_params(snap, "approximate", None, None, forward_cut=4, rerank=9)
    assert (p.forward_cut, p.rerank, p.candidates) == (4, 9, 0)
    save_settings(path, ApproxParams(query_cut=3, forward_cut=8))
    snap = served.snapshot()
    p = served.search_params(snap, "approximate", None, None, candidates=7)
    assert (p.forward_cut, p.candidates, p.query_cut) == (0, 7, 3)
    with pytest.raises(InvalidInputError, match="rerank must be at most"):
        svc.search("wolves hunt", mode="approximate", forward_cut=4, rerank=Limits().max_candidates + 1)
    with pytest.raises(InvalidInputError, match="forward_cut applies to approximate search"):
        svc.search("wolves hunt", forward_cut=5)


def test_each_error_class_has_one_status(root):
    pytest.importorskip("fastapi", reason="the HTTP app needs FastAPI (the 'service' extra)")
    pytest.importorskip("httpx", reason="FastAPI's test client needs httpx (the 'test' extra)")
    from fastapi.testclient import TestClient

    from sparsearch.service import create_app

    app = create_app([root / "bm25"], warm=False)
    errors = {"invalid": InvalidInputError("bad"), "missing": NotFoundError("gone"), "unsupported":
              UnsupportedError("no"), "conflict": ConflictError("exists"), "backend": BackendError("down"),
              "corrupt": CorruptIndexError("broken"), "storage": StorageError("idx/x: cannot write (read-only)"),
              "bug": RuntimeError("oops")}

    def boom(kind: str):
        raise errors[kind]

    app.add_api_route("/boom/{kind}", boom, methods=["GET"])
    want = {"invalid": 400, "missing": 404, "unsupported": 400, "conflict": 409, "backend": 503, "corrupt": 503,
            "storage": 503, "bug": 500}
    with TestClient(app, base_url="http://localhost", raise_server_exceptions=False) as c:
        for kind, status in want.items():
            r = c.get(f"/boom/{kind}")
            assert r.status_code == status and str(errors[kind]) in r.json()["error"], (kind, r.text)
        counters = c.get("/stats").json()["service"]
        assert counters["server_errors"] == 4 and counters["client_errors"] == 4


def _functions(path: Path):
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


def test_service_shape_backend_without_fastapi_and_short_functions():
    highlight = SERVICE.parent / "highlight.py"  # outside the service package: the CLI uses it too
    for path in (SERVICE / "backend.py", highlight):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {(n.module or "").split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert not imported & {"fastapi", "pydantic", "starlette"}, path.name
    long = [f"{p.name}:{f.name} ({f.end_lineno - f.lineno + 1} lines)" for p in [*SERVICE.glob("*.py"), highlight]
            for f in _functions(p) if f.end_lineno - f.lineno + 1 > 80]
    assert not long, long
    assert not (SERVICE / "app.py").exists()


def test_an_approximate_index_built_while_serving_is_found(root, tmp_path):
    path = tmp_path / "later"
    shutil.copytree(root / "bm25", path)
    svc = SearchService.open([path])
    with pytest.raises(UnsupportedError, match="build-approx"):
        svc.search("wolves", mode="approximate")
    ApproximateIndex.build(Index.open(path))
    assert svc.search("wolves", mode="approximate").hits


@pytest.mark.parametrize("explain", [True, False, None])
def test_results_serialize_with_orjson_as_with_the_standard_json(service, explain):
    """The HTTP route writes a SearchResult with orjson: the same JSON document as
    ``json.dumps(dataclasses.asdict(result))``, fused or not, explained or not."""
    import dataclasses
    import json

    import orjson

    for indexes in (["bm25"], None):
        r = service.search("small mammals hunt mice", k=4, indexes=indexes, explain=explain)
        assert json.loads(orjson.dumps(r)) == json.loads(json.dumps(dataclasses.asdict(r), allow_nan=False))


def test_repeated_query_texts_are_encoded_once_per_snapshot(root, monkeypatch):
    """The query-encoding cache: a repeated text is not encoded again, answers stay the same,
    the cache is bounded, and a new snapshot (reload) starts empty."""
    from sparsearch.service import backend as backend_mod

    svc = SearchService.open({"bm25": root / "bm25"}, warm=False)
    served = svc.served["bm25"]
    snap = served.snapshot()
    enc = served.encoder(snap)
    calls = []
    real = enc.encode_queries
    monkeypatch.setattr(enc, "encode_queries", lambda *a, **kw: calls.append(a) or real(*a, **kw))
    first = svc.search("small mammals hunt mice", k=4)
    again = svc.search("small mammals hunt mice", k=4)
    assert len(calls) == 1 and [h.id for h in again.hits] == [h.id for h in first.hits]
    assert [h.score for h in again.hits] == [h.score for h in first.hits]
    svc.search("wolves", k=4)
    assert len(calls) == 2
    monkeypatch.setattr(backend_mod, "QUERY_CACHE", 2)
    for q in ("a cat", "a dog", "a fox"):
        svc.search(q, k=2)
    assert list(snap.queries) == ["a dog", "a fox"]  # the oldest ones left first
    fresh = backend_mod.Snapshot(snap.index, snap.docstore, snap.generation, snap.key)
    assert not fresh.queries
