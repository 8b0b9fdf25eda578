"""The inline fast path: a cheap search (no explanation; local indexes whose query needs no neural
model; nothing to load or open) runs on the event loop's thread, anything else in the search pool;
the answers are the same either way, an inline search counts as in flight, and
``Limits.inline_cheap_searches=False`` turns the fast path off. Also: HTTP explains only when asked."""

from __future__ import annotations

import threading
import types

import pytest

pytest.importorskip("fastapi", reason="the service needs FastAPI (the 'service' extra)")
pytest.importorskip("httpx", reason="FastAPI's test client needs httpx (the 'test' extra)")

from sparsearch.errors import MissingExtraError  # noqa: E402
from sparsearch.index import Index  # noqa: E402
from sparsearch.index.approximate import ApproximateIndex  # noqa: E402
from sparsearch.index.hybrid import build_hybrid, make_encoder  # noqa: E402
from sparsearch.service import Limits, SearchService, create_app  # noqa: E402
from sparsearch.service.backend import ServedMilvus, _model_free, served_index  # noqa: E402

from .serving import run_page_script  # noqa: E402
from .test_service import DOCS, local_client, standard_dirs  # noqa: E402

QUERY = "small mammals hunt mice"
#: the loop thread never reloads in these tests unless asked (a reload due goes to the pool)
STEADY = {"rate_limit_per_s": 0, "reload_interval_s": 3600.0}


def _texts() -> list[str]:
    return [f"{t} {x}" for t, x in DOCS.values()]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """``bm25``, ``bm25b``, ``vec`` (vectors, no encoder), ``shyb`` (hybrid of two BM25s)."""
    root = standard_dirs(tmp_path_factory.mktemp("inline"))
    build_hybrid(root / "shyb", _texts(), list(DOCS), [("bm25", make_encoder("bm25")),
                                                       ("bm25-2", make_encoder("bm25:robertson"))],
                 documents=[(i, t, x) for i, (t, x) in DOCS.items()])
    return root


@pytest.fixture(scope="module")
def dense_root(root, torch_one_thread):
    """``dhyb``: a hybrid index of BM25 and a dense representation (the bundled MiniLM)."""
    try:
        dense = make_encoder("dense", cache=False)
        dense.model  # noqa: B018 - loads the model (skip here when the extra is missing)
    except (MissingExtraError, ImportError) as e:
        pytest.skip(f"the dense representation needs the 'dense' extra: {e}")
    build_hybrid(root / "dhyb", _texts(), list(DOCS), [("bm25", make_encoder("bm25")), ("dense", dense)],
                 documents=[(i, t, x) for i, (t, x) in DOCS.items()])
    return root


class Recorder:
    """Records the thread each ``service.search`` ran on, the gate's count while it ran, and
    how many tasks went to the search pool."""

    def __init__(self, app) -> None:
        self.threads: list[str] = []
        self.inflight: list[int] = []
        self.submitted = 0
        service, pool, gate = app.state.service, app.state.pool, app.state.search_gate
        search, submit = service.search, pool.submit

        def recorded_search(*args, **kwargs):
            self.threads.append(threading.current_thread().name)
            self.inflight.append(gate.inflight)
            return search(*args, **kwargs)

        def counted_submit(*args, **kwargs):
            self.submitted += 1
            return submit(*args, **kwargs)

        service.search = recorded_search
        pool.submit = counted_submit

    def inline(self) -> bool:
        """Whether the last search ran on the loop's thread (not in the pool)."""
        return not self.threads[-1].startswith("sparsearch-search")


def _app(dirs, **limits):
    app = create_app(dirs, limits=Limits(**{**STEADY, **limits}))
    return app, Recorder(app)


def _post(c, body: dict) -> dict:
    r = c.post("/search", json=body)
    assert r.status_code == 200, r.text
    return r.json()


CHEAP = [
    {"query": QUERY},                                             # every served index that encodes text
    {"query": QUERY, "indexes": ["bm25"], "k": 3},
    {"query": QUERY, "indexes": ["bm25", "bm25b"], "fusion": "zscore", "weights": {"bm25b": 2}},
    {"query": QUERY, "explain": False, "indexes": ["shyb"], "hybrid": {"fusion": "minmax"}},
    {"vector": {"f1": 1.0, "f3": 0.5}, "indexes": ["vec"], "k": 5},
    {"vector": {"f1": 1.0}},                                      # every index that takes a vector
    {"query": QUERY, "filter": 'has("mice")', "indexes": ["bm25"]},
]


@pytest.mark.parametrize("body", CHEAP)
def test_a_cheap_search_runs_on_the_event_loop_thread(root, body):
    app, rec = _app({n: root / n for n in ("bm25", "bm25b", "vec", "shyb")})
    with local_client(app) as c:
        got = _post(c, body)
    assert rec.threads and rec.inline() and rec.submitted == 0, rec.threads
    assert rec.inflight == [1]  # counted in flight while it runs (the 429 gate)
    assert got["hits"] and all(h["explanation"] == {} and h["highlights"] == [] for h in got["hits"])


@pytest.mark.parametrize("body", [{"query": QUERY, "explain": True}, {"query": QUERY, "explain": None},
                                  {"vector": {"f1": 1.0}, "indexes": ["vec"], "explain": True}])
def test_an_explained_search_goes_to_the_pool(root, body):
    app, rec = _app({n: root / n for n in ("bm25", "bm25b", "vec")})
    with local_client(app) as c:
        got = _post(c, body)
    assert not rec.inline() and rec.submitted == 1 and rec.threads[-1].startswith("sparsearch-search")
    assert rec.inflight == [1]
    assert got["hits"][0]["explanation"]


@pytest.mark.parametrize("body", [{"query": QUERY, "indexes": ["dhyb"]}, {"query": QUERY, "indexes": ["bm25", "dhyb"]},
                                  {"query": QUERY}])
def test_a_search_with_a_dense_query_encoder_goes_to_the_pool(dense_root, body):
    """A hybrid index with a dense representation embeds the query with a neural model: the pool,
    alone or fused with a cheap index, or searched as one of "all"."""
    app, rec = _app({n: dense_root / n for n in ("bm25", "dhyb")})
    with local_client(app) as c:
        got = _post(c, body)
    assert not rec.inline() and rec.submitted == 1 and got["hits"]
    with local_client(app) as c:  # the cheap index alone is still inline next to it
        _post(c, {"query": QUERY, "indexes": ["bm25"]})
    assert rec.inline() and rec.submitted == 1


@pytest.mark.parametrize("body", CHEAP + [{"query": "no such words at all", "indexes": ["bm25"]},
                                          {"query": QUERY, "mode": "exact", "k": 8, "indexes": ["shyb", "bm25"]}])
def test_inline_and_pooled_searches_answer_the_same(root, body):
    dirs = {n: root / n for n in ("bm25", "bm25b", "vec", "shyb")}
    fast, rec = _app(dirs)
    slow, rec_off = _app(dirs, inline_cheap_searches=False)
    with local_client(fast) as a, local_client(slow) as b:
        got, want = _post(a, body), _post(b, body)
    assert rec.inline() and not rec_off.inline() and rec_off.submitted == 1
    for r in (got, want):
        r.pop("took_ms")
        r.pop("timings")
    assert got == want


def test_an_inline_search_is_refused_when_the_searches_in_flight_are_at_the_cap(root):
    app, rec = _app({"bm25": root / "bm25"}, max_concurrent_searches=1)
    gate = app.state.search_gate
    with local_client(app) as c:
        assert gate.enter()  # one search in flight (in the pool, say)
        try:
            r = c.post("/search", json={"query": QUERY})
            assert r.status_code == 429 and r.headers["retry-after"] == "1" and not rec.threads
        finally:
            gate.leave()
        assert c.post("/search", json={"query": QUERY}).status_code == 200 and rec.inline()
    assert gate.inflight == 0


def test_a_reload_due_goes_to_the_pool(root):
    """Opening a new commit verifies its files: the search that checks for one is not run inline."""
    app, rec = _app({"bm25": root / "bm25"}, reload_interval_s=0.0)
    with local_client(app) as c:
        _post(c, {"query": QUERY})
    assert not rec.inline() and rec.submitted == 1


def test_cheap_asks_for_nothing_to_load_or_open(root, tmp_path):
    """An encoder not loaded yet, or an approximate index not opened yet, is loaded in the pool;
    afterwards the same search is cheap."""
    import shutil

    shutil.copytree(root / "bm25", tmp_path / "bm25")
    ApproximateIndex.build(Index.open(tmp_path / "bm25"))
    svc = SearchService.open([tmp_path / "bm25"], limits=Limits(**STEADY), warm=False)
    assert not svc.cheap(query=QUERY, explain=False)          # the encoder is loaded by the first search
    assert svc.cheap(vector={"wolves": 1.0}, explain=False)   # a vector needs no encoder
    svc.search(QUERY, explain=False)
    assert svc.cheap(query=QUERY, explain=False)
    assert not svc.cheap(query=QUERY, explain=False, mode="approximate")
    svc.search(QUERY, explain=False, mode="approximate")
    assert svc.cheap(query=QUERY, explain=False, mode="approximate")
    assert not svc.cheap(query=QUERY, explain=True) and not svc.cheap(query=QUERY, explain=None)
    assert svc.cheap(query=QUERY, explain=False, indexes=["no-such-index"])  # refused at once: no work


def test_a_milvus_backend_is_never_cheap(root):
    """A Milvus search is a network round trip: a stub collection makes every search using it
    go to the pool, while the local index alone stays cheap."""
    stub = types.SimpleNamespace(uri="http://milvus.example:19530", collection="c", filters=False,
                                 encoder_config={"name": "bm25"})
    svc = SearchService([served_index("bm25", root / "bm25", 3600.0), ServedMilvus("m", stub)], Limits(**STEADY))
    svc.served["bm25"].warm()
    assert not svc.cheap(query=QUERY, explain=False)
    assert not svc.cheap(query=QUERY, explain=False, indexes=["m"])
    assert svc.cheap(query=QUERY, explain=False, indexes=["bm25"])


def test_query_encoders_without_a_neural_model():
    assert _model_free({"name": "bm25"}) and _model_free({"name": "splade-doc", "model": "x"}) and _model_free(None)
    assert not _model_free({"name": "splade"}) and not _model_free({"name": "csr"})
    assert not _model_free({"name": "dense"})


def test_http_explains_only_when_asked(root):
    """POST /search without ``explain`` attaches no explanation or highlight span; ``true`` does;
    ``null`` explains where the index can. The Python default (True) is unchanged."""
    app, _ = _app({"bm25": root / "bm25"})
    with local_client(app) as c:
        absent = _post(c, {"query": QUERY})["hits"][0]
        asked = _post(c, {"query": QUERY, "explain": True})["hits"][0]
        where = _post(c, {"query": QUERY, "explain": None})["hits"][0]
    assert absent["explanation"] == {} and absent["highlights"] == [] and absent["snippet"]
    assert asked["explanation"]["bm25"] and asked["highlights"]
    assert where["explanation"] == asked["explanation"]
    assert SearchService.open({"bm25": root / "bm25"}).search(QUERY).hits[0].explanation


def test_the_page_asks_for_explanations(tmp_path):
    """The page shows contributions and highlights: it sends ``explain: true`` when every searched
    index can explain, else ``null`` (explained where possible; Milvus cannot)."""
    import json

    from sparsearch.service.http import STATIC

    assert "body.explain = explainFor(" in (STATIC / "index.html").read_text()
    health = {"bm25": {"status": "ok"}, "m": {"backend": "milvus"},
              "hyb": {"kind": "hybrid", "representations": [{"name": "a", "kind": "sparse"}]},
              "dense": {"kind": "hybrid", "representations": [{"name": "d", "kind": "dense"}]}}
    run = f"""
const before = explainFor(["bm25"]);
served = {json.dumps(health)};
console.log(JSON.stringify([before, explainFor(["bm25", "hyb"]), explainFor(["bm25", "m"]), explainFor(["dense"])]));
"""
    assert run_page_script(tmp_path, run) == [None, True, None, None]
