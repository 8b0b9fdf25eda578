"""A service safe to expose (issue 15 item 12): a bearer token for writes (and optionally reads),
a Host allow-list against DNS rebinding, offline /docs, no filesystem path in /stats, a rate
limit per client and a cap on concurrent searches."""

from __future__ import annotations

import json
import re
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

pytest.importorskip("fastapi", reason="the service needs FastAPI (the 'service' extra)")
pytest.importorskip("httpx", reason="FastAPI's test client needs httpx (the 'test' extra)")

from sparsearch.errors import InvalidInputError  # noqa: E402
from sparsearch.service import Access, Limits, create_app  # noqa: E402
from sparsearch.service.guard import RateLimiter, host_name  # noqa: E402

from .test_service import _bm25_index, local_client  # noqa: E402

TOKEN = "s3cret-token-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
NEW = {"documents": [{"id": "n1", "title": "Ocelots", "text": "ocelots are small wild cats that hunt mice"}]}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("sec")
    _bm25_index(root / "bm25")
    return root


def _copy(root, tmp_path):
    import shutil

    shutil.copytree(root / "bm25", tmp_path / "bm25")
    return tmp_path / "bm25"


def test_writes_are_disabled_without_a_token(root):
    """issue 15 item 12: with no token configured, writes answer 403 saying how to enable them."""
    with local_client(create_app([root / "bm25"])) as c:
        for r in (c.post("/documents", json=NEW, headers=AUTH), c.delete("/documents/d1", headers=AUTH)):
            assert r.status_code == 403, r.text
            assert "--token" in r.json()["error"] and "SPARSEARCH_TOKEN" in r.json()["error"]
        assert c.get("/documents/d1").status_code == 200  # nothing was deleted
        assert c.post("/search", json={"query": "cats"}).status_code == 200  # reads stay open


def test_writes_need_the_bearer_token(root, tmp_path):
    """issue 15 item 12: a configured token is required (401 with WWW-Authenticate otherwise)."""
    path = _copy(root, tmp_path)
    with local_client(create_app([path], access=Access(token=TOKEN))) as c:
        for headers in ({}, {"Authorization": "Bearer wrong-token-123"}, {"Authorization": f"Basic {TOKEN}"},
                        {"Authorization": TOKEN}, {"Authorization": f"Bearer {TOKEN}x"}):
            r = c.post("/documents", json=NEW, headers=headers)
            assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer"), (headers, r.text)
            assert c.delete("/documents/d1", headers=headers).status_code == 401
        assert c.post("/documents", content=b"{not json", headers={"content-type": "application/json"}
                      ).status_code == 401  # checked before the body is read
        r = c.post("/documents", json=NEW, headers={"Authorization": f"bearer  {TOKEN} "})
        assert r.status_code == 200, r.text
        assert c.delete("/documents/d1", headers=AUTH).status_code == 200
        assert c.post("/search", json={"query": "cats"}).status_code == 200
        assert c.get("/stats").json()["service"]["unauthorized"] == 11


def test_token_for_reads(root):
    """issue 15 item 12: --token-for-reads makes every read need the token; the page, the API
    reference, the spec and the liveness probe stay open."""
    with local_client(create_app([root / "bm25"], access=Access(token=TOKEN, token_for_reads=True))) as c:
        for method, url, body in (("POST", "/search", {"query": "cats"}), ("GET", "/documents/d1", None),
                                  ("GET", "/stats", None),
                                  ("POST", "/explain", {"query": "cats", "doc_id": "d1"})):
            assert c.request(method, url, json=body).status_code == 401, url
            assert c.request(method, url, json=body, headers=AUTH).status_code == 200, url
        for url in ("/", "/docs", "/openapi.json", "/healthz"):
            assert c.get(url).status_code == 200, url
    with pytest.raises(InvalidInputError, match="needs a token"):
        Access(token_for_reads=True)
    with pytest.raises(InvalidInputError, match="at least 8"):
        Access(token="short")
    assert TOKEN not in repr(Access(token=TOKEN))


def test_host_header_allow_list(root):
    """issue 15 item 12: a Host the service does not answer to (DNS rebinding) is refused with 400;
    loopback names (any port) and configured names are served."""
    with local_client(create_app([root / "bm25"])) as c:
        for host in ("evil.example", "localhost.evil.example", "127.0.0.2", "testserver", "", "local host"):
            r = c.get("/healthz", headers={"host": host})
            assert r.status_code == 400 and "--allowed-host" in r.json()["error"], host
            assert c.post("/search", json={"query": "cats"}, headers={"host": host}).status_code == 400
        for host in ("localhost", "localhost:8000", "LOCALHOST:1", "127.0.0.1:8000", "[::1]:8000", "[::1]"):
            assert c.get("/healthz", headers={"host": host}).status_code == 200, host
    access = Access(allowed_hosts=("search.example.org", "*.corp.example")).with_host("10.0.0.5")
    with local_client(create_app([root / "bm25"], access=access)) as c:
        for host, status in (("search.example.org", 200), ("a.corp.example:443", 200), ("10.0.0.5:8000", 200),
                             ("localhost", 400), ("corp.example", 400), ("evil.example", 400)):
            assert c.get("/healthz", headers={"host": host}).status_code == status, host
    assert Access().with_host("0.0.0.0").allowed_hosts == ("localhost", "127.0.0.1", "::1")
    assert Access(allowed_hosts=("*",)).host_allowed("anything.example")
    assert host_name("[::1]:80") == "::1" and host_name("Example.ORG.:80") == "example.org" and host_name("a:b") is None


def test_docs_work_offline(root):
    """issue 15 item 12: /docs references no external URL (FastAPI's page loads Swagger UI from a
    CDN); /redoc (also a CDN page) is gone; the spec is served and names the bearer scheme."""
    with local_client(create_app([root / "bm25"])) as c:
        for url in ("/docs", "/"):
            r = c.get(url)
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
            assert not re.search(r"(https?:)?//[a-z0-9]", r.text, re.I), re.findall(r"\S*//\S+", r.text)[:3]
            for ref in re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)""", r.text):
                assert not re.match(r"[a-z]+:|//", ref, re.I), ref
        assert "openapi.json" in c.get("/docs").text
        assert c.get("/redoc").status_code == 404
        spec = c.get("/openapi.json").json()
        assert spec["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
        assert spec["paths"]["/documents"]["post"]["security"] == [{"bearer": []}]


def test_stats_and_errors_reveal_no_filesystem_path(root, tmp_path):
    """issue 15 item 12: /stats (and /healthz, and error messages) name indexes, not directories."""
    path = _copy(root, tmp_path)
    with local_client(create_app([path])) as c:
        for url in ("/stats", "/healthz"):
            text = c.get(url).text
            assert str(tmp_path) not in text and str(path) not in text and '"path"' not in text, text[:300]
        # a corrupt store: the 503 names the index, not where it lives
        seg = next(path.glob("seg-*"))
        for f in seg.glob("*.npy"):
            f.write_bytes(b"garbage")
        (path / "manifest.json").write_bytes((path / "manifest.json").read_bytes() + b" ")
        c.app.state.served["bm25"].refresh()
        h = c.get("/healthz").json()
        assert h["status"] == "degraded" and str(tmp_path) not in json.dumps(h)


def test_rate_limit_per_client(root):
    """issue 15 item 12: a token bucket per client address; past it 429 with Retry-After;
    /healthz is never limited."""
    limits = Limits(rate_limit_per_s=0.5, rate_limit_burst=3)
    with local_client(create_app([root / "bm25"], limits=limits)) as c:
        assert [c.post("/search", json={"query": "cats"}).status_code for _ in range(3)] == [200] * 3
        r = c.post("/search", json={"query": "cats"})
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1 and "too many requests" in r.json()["error"]
        assert c.get("/documents/d1").status_code == 429
        assert c.get("/healthz").status_code == 200
        assert c.get("/stats", headers={"host": "localhost"}).status_code == 429
    rl = RateLimiter(rate=2, burst=2)
    assert [rl.take("a", now=0.0) for _ in range(2)] == [0.0, 0.0] and rl.take("a", now=0.0) == pytest.approx(0.5)
    assert rl.take("b", now=0.0) == 0.0  # per client
    assert rl.take("a", now=0.5) == 0.0  # refilled
    small = RateLimiter(rate=1, burst=1, max_clients=3)
    for i in range(10):
        small.take(str(i), now=0.0)
    assert len(small._buckets) == 3  # a bounded table


def test_concurrent_searches_are_capped(root):
    """issue 15 item 12: past Limits.max_concurrent_searches in flight, a search is refused at
    once with 429 and Retry-After (not queued without bound); the slot frees when one finishes."""
    app = create_app([root / "bm25"], limits=Limits(max_concurrent_searches=2, rate_limit_per_s=0))
    release, started = threading.Event(), threading.Semaphore(0)
    real = app.state.service.search

    def slow(*args, **kwargs):
        started.release()
        release.wait(10)
        return real(*args, **kwargs)

    app.state.service.search = slow
    with local_client(app) as c, ThreadPoolExecutor(2) as ex:
        # explained: run in the pool (a cheap search would run on the event loop and block it here)
        running = [ex.submit(c.post, "/search", json={"query": "cats", "explain": True}) for _ in range(2)]
        assert started.acquire(timeout=10) and started.acquire(timeout=10)
        r = c.post("/search", json={"query": "cats"})  # a cheap one is refused alike (inline, same gate)
        assert r.status_code == 429 and r.headers["retry-after"] == "1" and "busy" in r.json()["error"]
        release.set()
        assert [f.result().status_code for f in running] == [200, 200]
        assert c.post("/search", json={"query": "cats"}).status_code == 200
        assert c.get("/stats").json()["service"]["busy"] == 1


def test_cli_serve_options_reach_the_service(root, monkeypatch, capsys):
    """issue 15 item 12: `sparsearch serve` takes --token (or SPARSEARCH_TOKEN), --token-for-reads,
    --allowed-host, --rate-limit, --rate-burst, --max-concurrent-searches."""
    import sparsearch.service as service
    from sparsearch.cli import main

    def run(argv):
        with pytest.raises(SystemExit) as e:
            main(argv)
        return e.value.code

    seen = {}
    monkeypatch.setattr(service, "serve", lambda dirs, **kw: seen.update(kw, dirs=dirs))
    assert 0 == run(["serve", str(root / "bm25"), "--token", TOKEN, "--token-for-reads", "--allowed-host", "search.example.org",
          "--allowed-host", "10.1.2.3", "--rate-limit", "0", "--max-concurrent-searches", "7"])
    a, lim = seen["access"], seen["limits"]
    assert a.token == TOKEN and a.token_for_reads and a.allowed_hosts == ("search.example.org", "10.1.2.3")
    assert lim.rate_limit_per_s == 0 and lim.max_concurrent_searches == 7 and lim.rate_limit_burst == 100
    monkeypatch.setenv("SPARSEARCH_TOKEN", "from-the-environment")
    assert run(["serve", str(root / "bm25")]) == 0
    assert seen["access"].token == "from-the-environment" and not seen["access"].token_for_reads
    assert seen["access"].allowed_hosts == ("localhost", "127.0.0.1", "::1")
    monkeypatch.delenv("SPARSEARCH_TOKEN")
    assert run(["serve", str(root / "bm25"), "--token-for-reads"]) == 2
    assert "needs a token" in capsys.readouterr().err
