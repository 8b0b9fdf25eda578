"""Load test of the search service: concurrent clients on loopback for a bounded time.

Starts ``sparsearch.service`` in a subprocess (uvicorn, one worker) over one or more indexes,
runs ``--clients`` concurrent HTTP clients (asyncio + httpx, keep-alive connections) that send
``POST /search`` with the collection's queries round-robin for ``--duration`` seconds, and
reports throughput (QPS), latency percentiles, errors (non-200 answers and transport errors)
and the server's resident memory (before, during (sampled every second) and after the load).

    python benchmarks/service_load.py                         # SciFact BM25 index (built if missing)
    python benchmarks/service_load.py --index indexes/scifact-bm25 --index indexes/scifact-splade

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


def load_queries(collection: Path) -> list[str]:
    with open(collection / "queries.jsonl", encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f if line.strip()]


def rss_mb(pid: int) -> float:
    import psutil

    return psutil.Process(pid).memory_info().rss / 2 ** 20


async def run_load(url: str, queries: list[str], clients: int, duration: float, k: int, explain: bool,
                   server_pid: int) -> dict:
    import httpx

    lat: list[float] = []
    statuses: dict[str, int] = {}
    errors: list[str] = []
    rss_series: list[float] = []
    deadline = time.perf_counter() + duration
    counter = iter(range(10 ** 12))

    async def client(c: httpx.AsyncClient):
        while time.perf_counter() < deadline:
            q = queries[next(counter) % len(queries)]
            t = time.perf_counter()
            try:
                r = await c.post("/search", json={"query": q, "k": k, "explain": explain})
                dt = time.perf_counter() - t
                statuses[str(r.status_code)] = statuses.get(str(r.status_code), 0) + 1
                if r.status_code != 200:
                    errors.append(f"{r.status_code}: {r.text[:200]}")
                else:
                    lat.append(dt)
            except Exception as e:  # noqa: BLE001 - counted as an error
                errors.append(f"{type(e).__name__}: {e}")

    async def sampler():
        while time.perf_counter() < deadline:
            rss_series.append(rss_mb(server_pid))
            await asyncio.sleep(1.0)

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30.0) as c:
        t0 = time.perf_counter()
        await asyncio.gather(sampler(), *(client(c) for _ in range(clients)))
        wall = time.perf_counter() - t0
    a = np.asarray(lat) * 1e3
    return {"requests_ok": len(lat), "errors": len(errors), "error_samples": errors[:5], "statuses": statuses,
            "wall_s": wall, "qps": len(lat) / wall,
            "latency_ms": {p: float(np.percentile(a, q)) for p, q in
                           (("p50", 50), ("p90", 90), ("p99", 99), ("max", 100))} if a.size else {},
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
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "service_load.json")
    args = ap.parse_args()

    indexes = args.index or [ensure_index(args.collection, args.workdir / f"{args.collection.name}-bm25")]
    queries = load_queries(args.collection)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    code = ("import sys; from sparsearch.service import serve; "
            f"serve({[str(p) for p in indexes]!r}, host='127.0.0.1', port={port}, log_level='warning')")
    server = subprocess.Popen([sys.executable, "-c", code], env=dict(os.environ, TOKENIZERS_PARALLELISM="false"))
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
        res = asyncio.run(run_load(url, queries, args.clients, args.duration, args.k, args.explain, server.pid))
        rss_after = rss_mb(server.pid)
        stats = httpx.get(url + "/stats", timeout=10).json()
    finally:
        server.terminate()
        server.wait(timeout=30)
    during = res.pop("rss_mb_during")
    half = max(len(during) // 2, 1)
    report = {
        "indexes": [str(p) for p in indexes], "n_docs": {n: s["n_live_docs"] for n, s in stats["indexes"].items()},
        "queries": len(queries), "clients": args.clients, "duration_s": args.duration, "k": args.k,
        "explain": args.explain, **res,
        "rss_mb": {"before": rss_before, "after": rss_after, "max_first_half": max(during[:half], default=None),
                   "max_second_half": max(during[half:], default=None), "samples": during},
        "server_side_latency_ms": stats["service"]["search_latency_ms"],
        "server_errors": {k: stats["service"][k] for k in ("client_errors", "server_errors")},
        "cpu_count": os.cpu_count(),
        # the machine may be shared: other processes' load skews every figure above
        "loadavg_1_5_15": {"before": load_before, "after": os.getloadavg()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    lat = report["latency_ms"]
    print(f"{args.clients} clients x {res['wall_s']:.1f}s on loopback, {len(queries)} queries, k={args.k}, "
          f"explain={args.explain}: {res['qps']:.1f} QPS, p50 {lat.get('p50', float('nan')):.1f} ms, "
          f"p99 {lat.get('p99', float('nan')):.1f} ms, errors {res['errors']}, "
          f"RSS {rss_before:.1f} -> {rss_after:.1f} MB (max first/second half "
          f"{report['rss_mb']['max_first_half']:.1f}/{report['rss_mb']['max_second_half']:.1f} MB); "
          f"load average before {load_before[0]:.1f} on {os.cpu_count()} cores")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
