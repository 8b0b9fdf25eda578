"""`sparsearch serve --workers N`: N uvicorn worker processes on one port, each opening the index
itself; a write through any worker commits under the index's (cross-process) writer lock and every
worker serves it within ``Limits.reload_interval_s``; the configuration reaches the workers through
the environment, token included, and the token is never logged."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

pytest.importorskip("fastapi", reason="the service needs FastAPI (the 'service' extra)")
pytest.importorskip("uvicorn", reason="serving needs uvicorn (the 'service' extra)")
httpx = pytest.importorskip("httpx", reason="the test talks HTTP with httpx (the 'test' extra)")

from sparsearch.errors import InvalidInputError, NotFoundError  # noqa: E402
from sparsearch.service import Access, Limits  # noqa: E402
from sparsearch.service import http as service_http  # noqa: E402

from .serving import free_port  # noqa: E402
from .test_service import _bm25_index  # noqa: E402

TOKEN = "worker-test-token-5f1c"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _ids(url: str, query: str) -> list[str]:
    """The hit ids of one search over a new connection (so that any worker may answer it)."""
    with httpx.Client(base_url=url, timeout=10) as c:
        r = c.post("/search", json={"query": query, "k": 10})
    assert r.status_code == 200, r.text
    return [h["id"] for h in r.json()["hits"]]


def _all_agree(url: str, query: str, doc_id: str, present: bool, within_s: float = 8.0, n: int = 20) -> None:
    """Within ``within_s``, ``n`` searches in a row all find ``doc_id`` (or all miss it)."""
    deadline = time.monotonic() + within_s
    while True:
        got = [(doc_id in _ids(url, query)) == present for _ in range(n)]
        if all(got):
            return
        assert time.monotonic() < deadline, f"{got.count(False)} of {n} searches disagree after {within_s} s"
        time.sleep(0.2)


def _wait_up(url: str, proc: subprocess.Popen, log) -> None:
    for _ in range(600):
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            log.seek(0)
            pytest.fail(f"serve exited with {proc.returncode}: {log.read()[-2000:]}")
        time.sleep(0.05)
    pytest.fail("serve --workers 2 did not answer within 30 s")


def test_two_workers_serve_every_write_and_stop_cleanly(tmp_path):
    """A document added through one worker is found by every one of 20 searches (whichever
    worker answers) within a few seconds, a delete likewise; SIGTERM stops the supervisor and its
    workers with status 0; the token given in the environment appears in no log line."""
    psutil = pytest.importorskip("psutil", reason="the test follows the worker processes with psutil (the 'test' extra)")
    idx = tmp_path / "idx"
    _bm25_index(idx)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = dict(os.environ, SPARSEARCH_TOKEN=TOKEN, TOKENIZERS_PARALLELISM="false")
    env.pop(service_http.CONFIG_ENV, None)
    with open(tmp_path / "serve.log", "w+") as log:
        proc = subprocess.Popen([sys.executable, "-m", "sparsearch.cli", "serve", str(idx), "--workers", "2",
                                 "--port", str(port), "--rate-limit", "0", "--log-level", "info"],
                                env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait_up(url, proc, log)
            workers = psutil.Process(proc.pid).children()
            assert len(workers) >= 2
            docs = [{"id": "z1", "title": "Zebras", "text": "zebras graze the savanna grass"},
                    {"id": "z2", "title": "Okapis", "text": "okapis browse in the rainforest"}]
            # two writes at once, each on its own connection (so maybe through both workers): the
            # index's writer lock (flock) orders the commits, and neither is lost
            with ThreadPoolExecutor(2) as ex:
                done = list(ex.map(lambda d: httpx.post(url + "/documents", headers=AUTH, timeout=30,
                                                        json={"documents": [d]}), docs))
            assert [r.status_code for r in done] == [200, 200], [r.text for r in done]
            assert len({r.json()["generation"] for r in done}) == 2  # two commits, one after the other
            _all_agree(url, "zebras savanna", "z1", present=True)
            _all_agree(url, "okapis rainforest", "z2", present=True)
            pids: set[int] = set()
            for _ in range(60):  # both workers answer (each /stats over a new connection)
                pids.add(httpx.get(url + "/stats", timeout=10).json()["service"]["pid"])
                if len(pids) == 2:
                    break
            assert len(pids) == 2 and pids <= {w.pid for w in workers}
            r = httpx.delete(url + "/documents/z1", headers=AUTH, timeout=30)
            assert r.status_code == 200 and r.json()["deleted"] == 1, r.text
            _all_agree(url, "zebras savanna", "z1", present=False)
            assert "d3" in _ids(url, "wolves hunt")
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                raise
        log.seek(0)
        out = log.read()
    assert code == 0, out[-2000:]
    _, alive = psutil.wait_procs(workers, timeout=10)  # the workers (and multiprocessing's resource tracker)
    assert not alive
    assert TOKEN not in out and "Started parent process" in out


def test_app_from_environment_builds_the_configured_app(tmp_path, monkeypatch):
    """The worker's factory: the app `serve` described (limits, access with its token), and the
    variable removed so that children of the worker do not inherit the token."""
    idx = tmp_path / "idx"
    _bm25_index(idx)
    access = Access(token=TOKEN, allowed_hosts=("search.example.org",))
    text = service_http.serve_config({"mine": idx}, limits=Limits(max_k=77, rate_limit_per_s=0), access=access)
    monkeypatch.setenv(service_http.CONFIG_ENV, text)
    app = service_http.app_from_environment()
    assert service_http.CONFIG_ENV not in os.environ
    assert app.state.limits.max_k == 77 and app.state.access.token == TOKEN
    assert app.state.access.allowed_hosts == ("search.example.org",) and list(app.state.served) == ["mine"]


def test_bad_worker_configuration_is_one_line_without_the_token(tmp_path, monkeypatch, caplog):
    text = json.dumps({"index_dirs": [str(tmp_path / "nope")], "limits": {"max_k": "x", "nope": 1},
                       "access": {"token": TOKEN, "token_for_reads": False, "allowed_hosts": []}})
    with pytest.raises(InvalidInputError) as e:
        service_http.app_from_config(text)
    assert TOKEN not in str(e.value) and "sparsearch serve" in str(e.value)
    monkeypatch.setenv(service_http.CONFIG_ENV, service_http.serve_config([tmp_path / "nope"],
                                                                          access=Access(token=TOKEN)))
    with pytest.raises(SystemExit) as ex:
        service_http.app_from_environment()  # a worker that cannot start stops the service
    assert ex.value.code == service_http.STARTUP_FAILURE
    assert "no such index directory" in caplog.text and TOKEN not in caplog.text


def test_cli_serve_workers_option(tmp_path, monkeypatch, capsys):
    import sparsearch.service as service
    from sparsearch.cli import main

    seen: dict = {}
    monkeypatch.setattr(service, "serve", lambda dirs, **kw: seen.update(kw, dirs=dirs))
    idx = tmp_path / "idx"
    _bm25_index(idx)
    for argv, code in ((["serve", str(idx)], 0), (["serve", str(idx), "--workers", "3"], 0),
                       (["serve", str(idx), "--workers", "0"], 2),
                       (["serve", str(tmp_path / "x.db"), "--backend", "milvus", "--workers", "2"], 2)):
        seen.clear()
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == code, capsys.readouterr().err
        if code == 0:
            assert seen["workers"] == int(argv[-1]) if "--workers" in argv else seen["workers"] == 1
    err = capsys.readouterr().err
    assert "--workers must be at least 1" in err and "Milvus Lite file" in err
    with pytest.raises(NotFoundError, match="no such index directory"):
        service_http.serve([tmp_path / "nope"], port=free_port(), workers=2)


def test_a_worker_that_cannot_start_stops_the_service(tmp_path):
    """Every worker would fail alike (here: an index directory that is gone): the parent stops them
    all and raises, instead of restarting them for ever."""
    from sparsearch.errors import SparsearchError

    config = service_http.serve_config([str(tmp_path / "gone")], limits=Limits(rate_limit_per_s=0))
    options = {"host": "127.0.0.1", "port": free_port(), "log_level": "warning", "access_log": False}
    t0 = time.monotonic()
    with pytest.raises(SparsearchError, match="could not start"):
        service_http._run_workers(config, 2, options)
    assert time.monotonic() - t0 < 60 and service_http.CONFIG_ENV not in os.environ


def test_a_busy_port_is_one_line():
    """A port another program listens on (without SO_REUSEPORT) is refused before any worker starts."""
    import socket

    port = free_port()
    with socket.socket() as other:
        other.bind(("127.0.0.1", port))
        other.listen()
        with pytest.raises(service_http.StorageError, match=f"cannot listen on 127.0.0.1:{port}"):
            service_http._listening_socket("127.0.0.1", port)
