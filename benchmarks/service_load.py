"""Load test of the search service: concurrent clients on loopback for a bounded time.

Starts ``sparsearch.service`` in a subprocess (uvicorn; one worker process, or ``--workers N``
sharing the port) over one or more indexes,
runs ``--clients`` concurrent HTTP clients (asyncio + httpx, keep-alive connections) that send
``POST /search`` with the collection's queries round-robin for ``--duration`` seconds, and
reports throughput (QPS), latency percentiles, errors (non-200 answers and transport errors)
and the server's resident memory (before, during (sampled every second) and after the load).

With ``--bad-fraction F`` that share of the requests is bad, drawn in turn from :data:`BAD`
(malformed JSON, out-of-range fields, unknown index/document/route, oversized body, a foreign
``Host``, a write without token, ...): each must get its own 4xx, the good ones 200, and none a
5xx (``unexpected`` lists any answer outside those).

    python benchmarks/service_load.py                         # SciFact BM25 index (built if missing)
    python benchmarks/service_load.py --index indexes/scifact-bm25 --index indexes/scifact-splade
    python benchmarks/service_load.py --index /tmp/svc-bm25 --duration 60 --bad-fraction 0.3 \
        --out benchmarks/results/service_load_mixed_60s.json

The server's rate limiter is off by default here (``--rate-limit 0``: 32 clients on one address
would otherwise be throttled as one client); the report records the server's limits.
Defaults: 32 clients, 20 s, k=10, explanations and snippets on (what the web page asks for).
Results are printed and written to ``benchmarks/results/service_load.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SPARSEARCH_DATA", ROOT.parent / "shared" / "data"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_index(collection: Path, out: Path) -> Path:
    """A BM25 index of ``collection`` with its documents stored (built once, then reused)."""
    if (out / "manifest.json").exists():
        return out
    from sparsearch.encoders import get_encoder
    from sparsearch.evaluation import load_beir
    from sparsearch.index import build_index

    ds = load_beir(collection, "test")
    enc = get_encoder("bm25")
    texts = ds.doc_texts()
    enc.fit(texts)
    build_index(enc.encode_documents(texts, ds.doc_ids), out, encoder=enc, documents=ds.corpus)
    return out


#: bad requests, one per kind: (name, method, path, request kwargs, statuses expected)
BAD: list[tuple[str, str, str, dict, tuple[int, ...]]] = [
    ("malformed json", "POST", "/search", {"content": b'{"query": "cells", "k": '}, (422,)),
    ("k zero", "POST", "/search", {"json": {"query": "cells", "k": 0}}, (422,)),
    ("k huge", "POST", "/search", {"json": {"query": "cells", "k": 10 ** 12}}, (422,)),
    ("empty query", "POST", "/search", {"json": {"query": "  "}}, (422,)),
    ("query and vector", "POST", "/search", {"json": {"query": "a", "vector": {"a": 1}}}, (422,)),
    ("unknown field", "POST", "/search", {"json": {"query": "cells", "topk": 3}}, (422,)),
    ("unknown index", "POST", "/search", {"json": {"query": "cells", "indexes": ["nope"]}}, (404,)),
    ("unknown mode", "POST", "/search", {"json": {"query": "cells", "mode": "fast"}}, (422,)),
    ("no approximate index", "POST", "/search", {"json": {"query": "cells", "mode": "approximate"}}, (400,)),
    ("vector NaN", "POST", "/search", {"content": b'{"vector": {"cell": NaN}}'}, (422,)),
    ("vector negative", "POST", "/search", {"json": {"vector": {"cell": -1.0}}}, (422,)),
    ("oversized query", "POST", "/search", {"json": {"query": "cells " * 400}}, (422,)),
    ("oversized body", "POST", "/search", {"content": b'{"query": "' + b"a" * 300_000 + b'"}'}, (413,)),
    ("binary garbage", "POST", "/search", {"content": bytes(range(256)) * 4}, (422,)),
    ("deep nesting", "POST", "/search", {"content": b"[" * 5000 + b"]" * 5000}, (400, 422)),
    ("not an object", "POST", "/search", {"json": ["cells"]}, (422,)),
    ("explain unknown doc", "POST", "/explain", {"json": {"query": "cells", "doc_id": "no-such-doc"}}, (404,)),
    ("explain no doc id", "POST", "/explain", {"json": {"query": "cells"}}, (422,)),
    ("unknown document", "GET", "/documents/no-such-doc", {}, (404,)),
    ("wrong method", "GET", "/search", {}, (405,)),
    ("unknown route", "GET", "/no/such/route", {}, (404,)),
    ("foreign host", "POST", "/search", {"json": {"query": "cells"}, "headers": {"host": "rebind.example"}}, (400,)),
    ("write without token", "POST", "/documents", {"json": {"documents": [{"id": "x", "text": "y"}]}}, (401, 403)),
    ("delete without token", "DELETE", "/documents/x", {}, (401, 403)),
]


def worst_latency(per_worker: list[dict]) -> dict:
    """The largest p50 and p99 over the workers' latency summaries (``{"n", "p50", "p99"}``)."""
    return {"n": sum(w.get("n", 0) for w in per_worker),
            **{q: max(w[q] for w in per_worker if w.get(q) is not None) for q in ("p50", "p99")}}


def request_body(query: str, k: int, explain: bool | None) -> dict:
    """A search request; ``explain=None`` leaves the field out (the service's default)."""
    return {"query": query, "k": k} if explain is None else {"query": query, "k": k, "explain": explain}


async def run_raw_load(port: int, queries: list[str], clients: int, duration: float, k: int, explain: bool | None,
                       server_pid: int) -> dict:
    """``run_load`` for good requests only, with a minimal HTTP/1.1 keep-alive client on raw asyncio
    streams: the request bytes are made once, a response is read by its Content-Length and its
    status checked, nothing else parsed. httpx spends ~2 ms of CPU per request, more than the
    server, on the 2 cores they share; this client leaves the server most of the machine."""
    head = (f"POST /search HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            "Content-Length: {}\r\n\r\n")
    reqs = []
    for q in queries:
        body = json.dumps(request_body(q, k, explain)).encode()
        reqs.append(head.format(len(body)).encode() + body)
    lat: list[float] = []
    statuses: dict[str, int] = {}
    errors: list[str] = []
    rss_series: list[float] = []
    deadline = time.perf_counter() + duration
    counter = iter(range(10 ** 12))

    async def client():
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while time.perf_counter() < deadline:
                n = next(counter)
                t = time.perf_counter()
                try:
                    writer.write(reqs[n % len(reqs)])
                    header = await reader.readuntil(b"\r\n\r\n")
                    length = next(int(line.split(b":", 1)[1]) for line in header.split(b"\r\n")
                                  if line.lower().startswith(b"content-length:"))
                    body = await reader.readexactly(length)
                except Exception as e:  # noqa: BLE001 - counted as an error (a transport error, no status)
                    errors.append(f"search: {type(e).__name__}: {e}")
                    return
                status = header[9:12].decode()
                statuses[status] = statuses.get(status, 0) + 1
                if status == "200":
                    lat.append(time.perf_counter() - t)
                else:
                    errors.append(f"{status}: {body[:200]!r}")
        finally:
            writer.close()

    async def sampler():
        while time.perf_counter() < deadline:
            rss_series.append(rss_mb(server_pid))
            await asyncio.sleep(1.0)

    t0 = time.perf_counter()
    await asyncio.gather(sampler(), *(client() for _ in range(clients)))
    wall = time.perf_counter() - t0
    a = np.asarray(lat) * 1e3
    pct = (("p50", 50), ("p90", 90), ("p99", 99), ("max", 100))
    return {"requests_ok": len(lat), "errors": len(errors), "error_samples": errors[:5], "statuses": statuses,
            "wall_s": wall, "qps": len(lat) / wall,
            "latency_ms": {p: float(np.percentile(a, q)) for p, q in pct} if a.size else {},
            "requests_total": sum(statuses.values()), "total_rps": sum(statuses.values()) / wall,
            "bad_requests": 0, "bad_fraction_sent": 0.0, "bad_latency_ms": {}, "bad_statuses": {},
            "status_5xx": sum(v for st, v in statuses.items() if st.startswith("5")),
            "unexpected": 0, "unexpected_samples": [], "rss_mb_during": rss_series}


def load_queries(collection: Path) -> list[str]:
    with open(collection / "queries.jsonl", encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f if line.strip()]


def rss_mb(pid: int) -> float:
    """Resident memory of the server: the process and its children (the worker processes of
    ``--workers N``; their shared pages, the memory-mapped index among them, count once each)."""
    import psutil

    proc = psutil.Process(pid)
    total = proc.memory_info().rss
    for child in proc.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.NoSuchProcess:  # a worker that just ended
            pass
    return total / 2 ** 20


def worker_stats(url: str, workers: int) -> list[dict]:
    """``/stats`` of each worker process reached (one per ``pid``), asking over fresh connections
    (the kernel hands each to whichever worker accepts first) up to ``20 * workers`` times."""
    import httpx

    seen: dict[int, dict] = {}
    for _ in range(20 * workers if workers > 1 else 1):
        with httpx.Client(timeout=10) as c:  # a new connection each time
            st = c.get(url + "/stats").json()
        seen.setdefault(st["service"].get("pid", 0), st)
        if len(seen) >= workers:
            break
    return list(seen.values())


async def run_load(url: str, queries: list[str], clients: int, duration: float, k: int, explain: bool | None,
                   server_pid: int, bad_fraction: float = 0.0) -> dict:
    import httpx

    lat: list[float] = []
    bad_lat: list[float] = []
    statuses: dict[str, int] = {}
    bad_statuses: dict[str, dict[str, int]] = {}
    errors: list[str] = []
    unexpected: list[str] = []
    rss_series: list[float] = []
    deadline = time.perf_counter() + duration
    counter = iter(range(10 ** 12))
    # bad kinds come from their own counter, so any len(BAD) consecutive bad requests cover every
    # kind (indexing BAD by the request number skips kinds: which numbers are bad follows another rule)
    bad_counter = iter(range(10 ** 12))

    async def bad(c: httpx.AsyncClient, n: int):
        name, method, path, kwargs, expect = BAD[n % len(BAD)]
        kwargs = dict(kwargs)
        if "content" in kwargs:
            kwargs["headers"] = {"content-type": "application/json", **kwargs.get("headers", {})}
        t = time.perf_counter()
        r = await c.request(method, path, **kwargs)
        bad_lat.append(time.perf_counter() - t)
        per = bad_statuses.setdefault(name, {})
        per[str(r.status_code)] = per.get(str(r.status_code), 0) + 1
        return r, r.status_code in expect, name

    async def good(c: httpx.AsyncClient, n: int):
        t = time.perf_counter()
        r = await c.post("/search", json=request_body(queries[n % len(queries)], k, explain))
        if r.status_code == 200:
            lat.append(time.perf_counter() - t)
        return r, r.status_code == 200, "search"

    async def client(c: httpx.AsyncClient):
        while time.perf_counter() < deadline:
            n = next(counter)
            is_bad = (n * 0.6180339887498949) % 1.0 < bad_fraction  # an even, deterministic spread
            b = next(bad_counter) if is_bad else 0
            kind = BAD[b % len(BAD)][0] if is_bad else "search"
            try:
                r, ok, name = await (bad(c, b) if is_bad else good(c, n))
                statuses[str(r.status_code)] = statuses.get(str(r.status_code), 0) + 1
                if not ok:
                    unexpected.append(f"{name}: {r.status_code}: {r.text[:200]}")
                if r.status_code != 200 and not is_bad:
                    errors.append(f"{r.status_code}: {r.text[:200]}")
            except Exception as e:  # noqa: BLE001 - counted as an error (a transport error, no status)
                errors.append(f"{kind}: {type(e).__name__}: {e}")

    async def sampler():
        while time.perf_counter() < deadline:
            rss_series.append(rss_mb(server_pid))
            await asyncio.sleep(1.0)

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30.0) as c:
        t0 = time.perf_counter()
        await asyncio.gather(sampler(), *(client(c) for _ in range(clients)))
        wall = time.perf_counter() - t0
    a, b = np.asarray(lat) * 1e3, np.asarray(bad_lat) * 1e3
    pct = (("p50", 50), ("p90", 90), ("p99", 99), ("max", 100))
    total = sum(statuses.values())
    return {"requests_ok": len(lat), "errors": len(errors), "error_samples": errors[:5], "statuses": statuses,
            "wall_s": wall, "qps": len(lat) / wall,
            "latency_ms": {p: float(np.percentile(a, q)) for p, q in pct} if a.size else {},
            "requests_total": total, "total_rps": total / wall,
            "bad_requests": len(bad_lat), "bad_fraction_sent": len(bad_lat) / max(total, 1),
            "bad_latency_ms": {p: float(np.percentile(b, q)) for p, q in pct} if b.size else {},
            "bad_statuses": bad_statuses,
            "status_5xx": sum(v for s, v in statuses.items() if s.startswith("5")),
            "unexpected": len(unexpected), "unexpected_samples": unexpected[:5],
            "rss_mb_during": rss_series}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--index", action="append", type=Path, help="index directory (repeatable; default: SciFact BM25)")
    ap.add_argument("--collection", type=Path, default=DATA / "scifact", help="BEIR collection (queries, default index)")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/sparsearch-bench"))
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--no-explain", dest="explain", action="store_false")
    ap.add_argument("--default-explain", dest="explain", action="store_const", const=None,
                    help="leave 'explain' out of the requests: the served revision's default")
    ap.add_argument("--bad-fraction", type=float, default=0.0, help="share of bad requests (e.g. 0.3)")
    ap.add_argument("--rate-limit", type=float, default=0.0,
                    help="the server's requests/s per client (0: off; all clients share one address here)")
    ap.add_argument("--client", choices=("httpx", "raw"), default="httpx",
                    help="load generator: httpx (default; also sends bad requests) or a minimal raw keep-alive "
                         "HTTP/1.1 client (good requests only; leaves the shared cores to the server)")
    ap.add_argument("--workers", type=int, default=1,
                    help="server worker processes sharing the port (`sparsearch serve --workers N`); the server-side "
                         "latencies are then per worker (each answers /stats with its own), reported for every "
                         "worker reached, and RSS is summed over the supervisor and its workers")
    ap.add_argument("--src", type=Path, default=None,
                    help="serve from this src folder (another revision, e.g. a git worktree's src) instead of the "
                         "installed package")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "service_load.json")
    args = ap.parse_args()
    if args.client == "raw" and args.bad_fraction:
        raise SystemExit("--client raw sends good requests only (--bad-fraction needs httpx)")

    indexes = args.index or [ensure_index(args.collection, args.workdir / f"{args.collection.name}-bm25")]
    queries = load_queries(args.collection)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    if args.workers < 1:
        raise SystemExit("--workers must be at least 1")
    # workers=N only when asked: a --src revision from before `serve(workers=...)` still runs with 1
    workers = f", workers={args.workers}" if args.workers > 1 else ""
    code = ("import sys; from sparsearch.service import Limits, serve; "
            f"serve({[str(p) for p in indexes]!r}, host='127.0.0.1', port={port}, log_level='warning', "
            f"limits=Limits(rate_limit_per_s={args.rate_limit!r}){workers})")
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false")
    if args.src is not None:
        env["PYTHONPATH"] = str(args.src.resolve())
    server = subprocess.Popen([sys.executable, "-c", code], env=env)
    try:
        import httpx

        for _ in range(600):
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None:
                raise SystemExit(f"server exited with {server.returncode}")
            time.sleep(0.1)
        for q in queries[:50]:  # warm-up
            httpx.post(url + "/search", json={"query": q, "k": args.k}, timeout=30)
        rss_before = rss_mb(server.pid)
        load_before = os.getloadavg()
        if args.client == "raw":
            res = asyncio.run(run_raw_load(port, queries, args.clients, args.duration, args.k, args.explain,
                                           server.pid))
        else:
            res = asyncio.run(run_load(url, queries, args.clients, args.duration, args.k, args.explain, server.pid,
                                       args.bad_fraction))
        rss_after = rss_mb(server.pid)
        per_worker = worker_stats(url, args.workers)
        stats = per_worker[0]
    finally:
        server.terminate()
        server.wait(timeout=30)
    during = res.pop("rss_mb_during")
    half = max(len(during) // 2, 1)
    report = {
        "indexes": [str(p) for p in indexes], "n_docs": {n: s["n_live_docs"] for n, s in stats["indexes"].items()},
        "queries": len(queries), "clients": args.clients, "duration_s": args.duration, "k": args.k,
        "explain": args.explain, "client": args.client, "src": str(args.src) if args.src else "installed",
        "bad_fraction": args.bad_fraction, "bad_kinds": [b[0] for b in BAD],
        "server_limits": {k: stats["service"]["limits"][k] for k in
                          ("rate_limit_per_s", "rate_limit_burst", "max_concurrent_searches", "workers",
                           "max_body_bytes")},
        "rate_limiter": "off (rate_limit_per_s=0)" if not args.rate_limit else f"{args.rate_limit}/s per client",
        **res,
        "rss_mb": {"before": rss_before, "after": rss_after, "max_first_half": max(during[:half], default=None),
                   "max_second_half": max(during[half:], default=None), "samples": during},
        "workers": args.workers,
        # with several workers, the slowest worker's p50 and p99 (each worker keeps its own latencies);
        # every worker's, with the searches it served, in server_side_latency_ms_per_worker
        "server_side_latency_ms": worst_latency([st["service"]["search_latency_ms"] for st in per_worker]),
        "server_side_latency_ms_per_worker": [{**st["service"]["search_latency_ms"],
                                               "searches": st["service"].get("searches")} for st in per_worker],
        "workers_reached": len(per_worker),
        "server_errors": {k: sum(st["service"][k] for st in per_worker) for k in ("client_errors", "server_errors")},
        "server_counters": {k: v for k, v in stats["service"].items() if isinstance(v, int) and k != "pid"},
        "command": "python " + " ".join(sys.argv),
        "cpu_count": os.cpu_count(),
        # the machine may be shared: other processes' load skews every figure above
        "loadavg_1_5_15": {"before": load_before, "after": os.getloadavg()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    lat = report["latency_ms"]
    print(f"{args.clients} clients x {res['wall_s']:.1f}s on loopback, {args.workers} server worker(s), "
          f"{len(queries)} queries, k={args.k}, "
          f"explain={args.explain}: {res['qps']:.1f} QPS, p50 {lat.get('p50', float('nan')):.1f} ms, "
          f"p99 {lat.get('p99', float('nan')):.1f} ms, errors {res['errors']}, "
          f"bad requests {res['bad_requests']} ({res['bad_fraction_sent']:.0%}), 5xx {res['status_5xx']}, "
          f"unexpected {res['unexpected']}, statuses {res['statuses']}, "
          f"RSS {rss_before:.1f} -> {rss_after:.1f} MB (max first/second half "
          f"{report['rss_mb']['max_first_half']:.1f}/{report['rss_mb']['max_second_half']:.1f} MB); "
          f"load average before {load_before[0]:.1f} on {os.cpu_count()} cores")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
