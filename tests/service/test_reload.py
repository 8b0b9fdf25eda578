"""A served index whose manifest gets corrupted keeps being served from its last good snapshot
(issue 15 item 5)."""

from __future__ import annotations

import json
import logging
import os
import time

import pytest

pytest.importorskip("fastapi", reason="the service needs FastAPI (the 'service' extra)")
pytest.importorskip("httpx", reason="FastAPI's test client needs httpx (the 'test' extra)")

from fastapi.testclient import TestClient  # noqa: E402

from sparsearch.service import Limits, SearchService, create_app  # noqa: E402

from .test_service import _bm25_index  # noqa: E402

INTERVAL = 0.05


def _search(c, q="wolves hunt"):
    t = time.perf_counter()
    r = c.post("/search", json={"query": q, "k": 3})
    return r, time.perf_counter() - t


def test_truncated_manifest_serves_last_snapshot_reports_degraded_logs_once(tmp_path, caplog):
    """issue 15 item 5: after ``truncate -s 200 IDX/manifest.json`` every search is answered from
    the last good snapshot at normal speed (no retry loop per request), /healthz and /stats say
    "degraded" with the index and the reason (no server path), the failure is logged once and
    retried at most every reload interval; a good manifest brings the index back."""
    path = tmp_path / "idx"
    _bm25_index(path)
    app = create_app([path], limits=Limits(reload_interval_s=INTERVAL, rate_limit_per_s=0))
    with TestClient(app, base_url="http://localhost") as c:
        good = [h["id"] for h in _search(c)[0].json()["hits"]]
        saved = (path / "manifest.json").read_bytes()
        os.truncate(path / "manifest.json", 200)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="sparsearch.service"):
            t0, took = time.monotonic(), []
            while time.monotonic() - t0 < 1.0:
                r, dt = _search(c)
                assert r.status_code == 200, r.text
                assert [h["id"] for h in r.json()["hits"]] == good
                took.append(dt)
            elapsed = time.monotonic() - t0
            health = c.get("/healthz").json()
            stats = c.get("/stats").json()
        took.sort()
        assert took[len(took) // 2] < 0.1 and took[-1] < 1.0, took[-5:]
        assert health["status"] == "degraded"
        idx = health["indexes"]["idx"]
        assert idx["status"] == "degraded" and "manifest.json" in idx["error"] and idx["generation"] == 1
        assert str(tmp_path) not in json.dumps(health) + json.dumps(stats)
        assert stats["indexes"]["idx"]["status"] == "degraded" and "manifest.json" in stats["indexes"]["idx"]["error"]
        assert idx["reload_attempts"] <= 1 + elapsed / INTERVAL
        logged = [r for r in caplog.records if "cannot open its latest commit" in r.getMessage()]
        assert len(logged) == 1 and logged[0].levelno == logging.ERROR
        # a good manifest comes back: the index is current again (and that is logged once too)
        (path / "manifest.json").write_bytes(saved)
        deadline = time.monotonic() + 5
        while c.get("/healthz").json()["status"] != "ok" and time.monotonic() < deadline:
            time.sleep(INTERVAL)
        assert c.get("/healthz").json()["indexes"]["idx"] == {"status": "ok", "generation": 1, "documents": 8}
        assert "error" not in c.get("/stats").json()["indexes"]["idx"]
        assert [h["id"] for h in _search(c)[0].json()["hits"]] == good


def test_missing_manifest_and_reload_not_blocking(tmp_path):
    """issue 15 item 5: a manifest that disappears is a degraded index too, and the service keeps
    searching; the failure is retried with a pause while the manifest stays the same."""
    path = tmp_path / "idx"
    _bm25_index(path)
    svc = SearchService.open([path], limits=Limits(reload_interval_s=0.0))
    os.replace(path / "manifest.json", tmp_path / "saved.json")
    assert svc.search("wolves", k=2).hits
    h = svc.health()
    assert h["status"] == "degraded" and "manifest.json" in h["indexes"]["idx"]["error"]
    attempts = h["indexes"]["idx"]["reload_attempts"]
    for _ in range(20):
        svc.search("wolves", k=2)
    # interval 0: still not a retry per request (the same missing manifest waits for its pause)
    assert svc.health()["indexes"]["idx"]["reload_attempts"] <= attempts + 1
    os.replace(tmp_path / "saved.json", path / "manifest.json")
    assert svc.served["idx"].refresh() and svc.health()["status"] == "ok"
