"""Milvus Lite vs sparsearch exact search on the same vectors: recall@10 and single-query latency.

For SciFact (test queries) with BM25 and with SPLADE-tiny vectors: build the sparsearch index,
export it with :func:`sparsearch.milvus.export` into Milvus Lite (``SPARSE_INVERTED_INDEX``,
inner product, ``drop_ratio_search=0``), then for every test query

* recall@10 of Milvus against sparsearch's exact top-10 (rank-safe), strict and tie-aware (a
  document tied with the 10th score counts: with 8-bit impacts ties are common), and the
  largest relative difference between the scores Milvus and sparsearch give a returned document;
* latency of one query at a time (mean, p50, p99): sparsearch ``Index.search`` on one numba
  thread, and ``MilvusBackend.search`` (vocabulary mapping + a pymilvus ``search`` call to the
  Milvus Lite server, which runs in this process), plus the bare pymilvus call on prepared
  vectors to show what the wrapper adds;
* export time (live vectors, insert, flush, index build, sidecar);
* ``SPARSE_WAND``: tried, and reported as refused when Milvus Lite refuses it.

The SPLADE-tiny vectors are the ones ``benchmarks/approx_vs_peers.py`` caches in
``.sparsearch_cache/approx_bench/`` (encoded here with the same code if the cache is empty).
Writes ``benchmarks/results/milvus_vs_exact.{json,md}``. Timed runs share the machine, so run
under the benchmark lock::

    flock /tmp/sparsearch-bench.lock .venv/bin/python benchmarks/milvus_vs_exact.py
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "src"))

from approx_vs_peers import CACHE, largest_collection, real_vectors, timed_loop  # noqa: E402

from sparsearch.evaluation import load_beir, recall_at_k  # noqa: E402
from sparsearch.index import Index, build_index  # noqa: E402
from sparsearch.milvus import MilvusBackendError, export  # noqa: E402
from sparsearch.searching import ExactParams  # noqa: E402
from sparsearch.vectors import SparseBatch  # noqa: E402

DATA = Path(os.environ.get("SPARSEARCH_DATA", ROOT.parent / "shared" / "data"))
RESULTS = ROOT / "benchmarks" / "results"
K = 10
K_TIES = 100  # exact depth used to see documents tied with the 10th score


def bm25_set(data: Path, work: Path) -> tuple[str, Index, SparseBatch]:
    """BM25 (Lucene variant) index of the collection with its texts; test queries encoded by it."""
    from sparsearch.encoders.bm25 import BM25Encoder

    ds = load_beir(data, "test")
    enc = BM25Encoder().fit(ds.doc_texts())
    index = build_index(enc.encode_documents(ds.doc_texts(), ds.doc_ids), work / "bm25", encoder=enc,
                        documents=ds.corpus)
    return f"{ds.name} BM25", index, enc.encode_queries(ds.query_texts(), ds.query_ids)


def splade_set(data: Path, work: Path) -> tuple[str, Index, SparseBatch]:
    """SPLADE-tiny vectors from the approx_vs_peers cache (documents and the test queries)."""
    if largest_collection().resolve() != data.resolve():
        raise SystemExit(f"the approx_vs_peers SPLADE cache holds {largest_collection()}, not {data}")
    _, docs, qs = real_vectors(10**9)
    ds = load_beir(data, "test")
    test = set(ds.query_ids)
    keep = [i for i, q in enumerate(qs.ids) if q in test]
    index = build_index(docs, work / "splade", documents=ds.corpus)
    return f"{ds.name} SPLADE-tiny", index, qs[keep]


def run_set(label: str, index: Index, qs: SparseBatch, work: Path) -> dict[str, Any]:
    import numba

    nq = len(qs)
    print(f"\n=== {label}: {index.n_live_docs} docs, {index.stats()['n_postings'] / index.n_docs:.0f} nnz/doc, "
          f"{nq} queries ({qs.nnz / nq:.1f} nnz)", flush=True)
    rows = [qs[i:i + 1] for i in range(nq)]
    exact_s, exact_d = index.search(qs, K_TIES)  # also compiles the kernels
    numba.set_num_threads(1)
    one_thread = ExactParams(threads=1)
    lat_local, _ = timed_loop(lambda i: index.search(rows[i], K, one_thread), nq)
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)

    db = work / f"{label.replace(' ', '_')}.db"
    t = time.perf_counter()
    backend = export(index, str(db), "bench", index_type="SPARSE_INVERTED_INDEX", progress=False)
    export_s = time.perf_counter() - t
    try:
        lat_milvus, res = timed_loop(lambda i: backend.search(rows[i], K), nq)
        docs = np.concatenate([d for _, d in res])
        scores = np.concatenate([s for s, _ in res])
        prepared = backend.prepare_queries(qs)
        params = {"metric_type": "IP", "params": {"drop_ratio_search": 0.0}}
        lat_map, _ = timed_loop(lambda i: backend.prepare_queries(rows[i]), nq)
        lat_raw, _ = timed_loop(lambda i: backend.client.search(backend.collection, data=[prepared[i]],
                                                                anns_field="sparse", limit=K, search_params=params,
                                                                output_fields=[]) if prepared[i] else None, nq)
    finally:
        backend.close()
    strict = recall_at_k(docs, exact_d, K)
    tie_aware = recall_at_k(docs, exact_d, K, exact_scores=exact_s)
    lookup = [dict(zip(d.tolist(), s.tolist())) for d, s in zip(exact_d, exact_s)]
    rel = [abs(s / lookup[q][d] - 1) for q in range(nq) for d, s in zip(docs[q].tolist(), scores[q].tolist())
           if d >= 0 and d in lookup[q]]
    wand = try_wand(index, work / "wand.db")
    out = {
        "vectors": label, "docs": index.n_live_docs, "exported_docs": backend.n_docs, "queries": nq,
        "query_nnz": qs.nnz / nq, "doc_nnz": index.stats()["n_postings"] / index.n_docs,
        "recall_at_10": strict, "recall_at_10_tie_aware": tie_aware, "max_rel_score_diff": float(max(rel)),
        "sparsearch": _lat(lat_local), "milvus": _lat(lat_milvus), "milvus_raw_client": _lat(lat_raw),
        "term_mapping_us": float(lat_map.mean() * 1e6),
        "ratio_mean": float(lat_milvus.mean() / lat_local.mean()),
        "ratio_p50": float(np.median(lat_milvus) / np.median(lat_local)),
        "export_s": export_s, "index_type": "SPARSE_INVERTED_INDEX", "sparse_wand": wand,
    }
    print(json.dumps(out, indent=1), flush=True)
    return out


def try_wand(index: Index, db: Path) -> str:
    """Export with SPARSE_WAND: ``"built"`` or ``"refused: <Milvus' message>"``."""
    try:
        export(index, str(db), "wand", index_type="SPARSE_WAND", progress=False).close()
        return "built"
    except MilvusBackendError as e:
        return f"refused: {str(e).split(': ', 1)[-1]}"


def _lat(lat_s: np.ndarray) -> dict[str, float]:
    ms = np.asarray(lat_s) * 1e3
    return {"mean_ms": float(ms.mean()), "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}


def report(rows: list[dict[str, Any]], env: dict[str, str]) -> str:
    out = ["# Milvus Lite vs sparsearch exact (same vectors)\n",
           f"{env['machine']}; pymilvus {env['pymilvus']}, milvus-lite {env['milvus_lite']}; k={K}. Milvus: "
           f"SPARSE_INVERTED_INDEX, metric IP, drop_ratio_search=0, exported by `sparsearch.milvus.export` "
           f"(the index's dequantized 8-bit impacts). Latency: one query at a time; sparsearch on one numba "
           f"thread; Milvus = `MilvusBackend.search` (term mapping + pymilvus call); 'bare pymilvus' = the "
           f"pymilvus call alone on prepared vectors, measured in a second pass (the gap between the two Milvus "
           f"columns is mostly the noise of a shared machine: the mapping itself is the µs column). Recall "
           f"against sparsearch exact top-{K}; tie-aware counts a document tied with the {K}th exact score as "
           f"correct.\n",
           f"Command: `{env['command']}`\n",
           "| vectors | docs | queries (nnz) | recall@10 | tie-aware | max rel. score diff | sparsearch mean / p50 "
           "/ p99 ms | Milvus Lite mean / p50 / p99 ms | ratio mean (p50) | bare pymilvus mean ms | mapping µs | "
           "export s | SPARSE_WAND |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        a, b, c = r["sparsearch"], r["milvus"], r["milvus_raw_client"]
        out.append(f"| {r['vectors']} | {r['docs']:,} | {r['queries']} ({r['query_nnz']:.1f}) | "
                   f"{r['recall_at_10']:.4f} | {r['recall_at_10_tie_aware']:.4f} | {r['max_rel_score_diff']:.1e} | "
                   f"{a['mean_ms']:.3f} / {a['p50_ms']:.3f} / {a['p99_ms']:.3f} | "
                   f"{b['mean_ms']:.2f} / {b['p50_ms']:.2f} / {b['p99_ms']:.2f} | "
                   f"{r['ratio_mean']:,.0f}x ({r['ratio_p50']:,.0f}x) | {c['mean_ms']:.2f} | {r['term_mapping_us']:.0f} | "
                   f"{r['export_s']:.1f} | {r['sparse_wand'].split(';')[0].split('. ')[0]} |")
    out.append("\nMilvus Lite 3.x is a pure-Python implementation of the Milvus API that runs in the client's "
               "process (a gRPC server thread; exact term-at-a-time inner product): its latency is that of the "
               "embedded default, not of a Milvus cluster, whose sparse search is C++ (Knowhere).")
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA / "scifact", help="BEIR collection (default: SciFact)")
    ap.add_argument("--sets", nargs="+", default=["bm25", "splade"], choices=["bm25", "splade"])
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    import pymilvus
    from importlib.metadata import version

    env = {"machine": f"{os.cpu_count()} cores ({platform.processor() or platform.machine()}), shared with other jobs",
           "pymilvus": pymilvus.__version__, "milvus_lite": version("milvus-lite"),
           "command": ("flock /tmp/sparsearch-bench.lock .venv/bin/python benchmarks/milvus_vs_exact.py "
                      + " ".join(sys.argv[1:])).rstrip(), "splade_cache": str(CACHE)}
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="milvus-bench-", dir=os.environ.get("TMPDIR", "/tmp")))
    rows = []
    try:
        for s in args.sets:
            label, index, qs = (bm25_set if s == "bm25" else splade_set)(args.data, work)
            rows.append(run_set(label, index, qs, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    md = report(rows, env)
    (args.out / "milvus_vs_exact.md").write_text(md)
    (args.out / "milvus_vs_exact.json").write_text(json.dumps({"environment": env, "results": rows}, indent=1))
    print(md)


if __name__ == "__main__":
    main()
