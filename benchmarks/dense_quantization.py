"""Dense flat index: float32 vs float16 vs int8 storage (issue 16, "dense as a representation").

    python benchmarks/dense_quantization.py [--data /work/shared/data] [--collections scifact,nfcorpus]
                                            [--repeats 5] [--out benchmarks/results/dense_quantization]
                                            [--markdown-only]   (rewrite <out>.md from <out>.json)

For each BEIR collection the document embeddings of the bundled all-MiniLM-L6-v2
(``DenseEncoder().encode_documents(ds.doc_texts())``, read from the encoder's disk cache when
it is warm) are stored three ways in a :class:`~sparsearch.index.dense.DenseIndex` and
searched exactly with the test queries (``encode_queries``, never cached):

* quality on the test qrels (final figures: nothing is chosen here): nDCG@10 and R@100 of the
  top-1000 run;
* agreement with float32: recall@10 of the float16 / int8 top-10 against float32's top-10, and
  the mean / max absolute score error of float32's top-100 documents (``scores_of``);
* size: bytes of the index on disk (``index_bytes``: manifest, ids, headers, vectors) and of
  the stored vectors (+ int8 scales);
* speed: single-query latency at k=10 on one BLAS thread (threadpoolctl, or the
  OMP/OPENBLAS/MKL thread variables set before numpy is imported when it is missing): every
  test query timed one at a time after a warm-up, ``--repeats`` times; p50 / p95 are the
  medians over the repetitions.

Results: ``<out>.json`` and ``<out>.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

try:
    import threadpoolctl
except ImportError:  # limit BLAS through the environment, before numpy starts its pools
    threadpoolctl = None
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from sparsearch.encoders.dense import DenseEncoder  # noqa: E402
from sparsearch.evaluation import evaluate, load_beir, recall_at_k, time_queries, to_run  # noqa: E402
from sparsearch.index.dense import QUANTIZATIONS, DenseIndex  # noqa: E402

K_RUN = 1000
METRICS = ("nDCG@10", "R@100")


def one_thread():
    """Context limiting BLAS to one thread for the timings (a no-op when the environment did it)."""
    if threadpoolctl is not None:
        return threadpoolctl.threadpool_limits(1, user_api="blas")
    return contextlib.nullcontext()


def blas_threads() -> list[int]:
    """Threads of every BLAS pool numpy uses right now (checks that the limit applies)."""
    if threadpoolctl is None:
        return [int(os.environ["OPENBLAS_NUM_THREADS"])]
    return [p["num_threads"] for p in threadpoolctl.threadpool_info() if p.get("user_api") == "blas"]


def latency(index: DenseIndex, queries: np.ndarray, repeats: int) -> dict[str, float]:
    with one_thread():
        threads = blas_threads()
        p50, p95 = [], []
        for r in range(repeats):
            lat = time_queries(lambda i: index.search(queries[i:i + 1], 10), len(queries),
                               warmup=20 if r == 0 else 2) * 1e3
            p50.append(float(np.percentile(lat, 50)))
            p95.append(float(np.percentile(lat, 95)))
    return {"p50_ms": float(np.median(p50)), "p95_ms": float(np.median(p95)), "p50_ms_min": min(p50),
            "p50_ms_per_repeat": p50, "blas_threads": threads}


def run_collection(name: str, data: Path, repeats: int, workdir: Path) -> dict:
    ds = load_beir(data / name, "test")
    enc = DenseEncoder()
    t = time.perf_counter()
    docs = enc.encode_documents(ds.doc_texts())
    t_docs = time.perf_counter() - t
    queries = enc.encode_queries(ds.query_texts(), ds.query_ids)
    print(f"{name}: {docs.shape[0]} docs x {docs.shape[1]} ({t_docs:.1f} s, from the cache when warm), "
          f"{len(queries)} test queries", flush=True)
    out = {"n_docs": int(docs.shape[0]), "dim": int(docs.shape[1]), "n_queries": len(queries),
           "doc_embedding_seconds": t_docs, "encoder": enc.config(), "by_quantization": {}}
    ref = None
    for quant in QUANTIZATIONS:
        t = time.perf_counter()
        index = DenseIndex.build(docs, ds.doc_ids, workdir / f"{name}-{quant}", encoder=enc, quantization=quant)
        t_build = time.perf_counter() - t
        index = DenseIndex.open(index.path)  # as a user would: memory-mapped, verified
        scores, docnums = index.search(queries, K_RUN)
        run = to_run(scores, docnums, index.doc_ids, ds.query_ids)
        row = {**{m: float(v) for m, v in evaluate(run, ds.qrels, METRICS).items()},
               "index_bytes": index.stats()["index_bytes"], "vector_bytes": index.stats()["vector_bytes"],
               "build_seconds": t_build}
        if ref is None:
            ref = (scores, docnums)
        else:
            row["recall@10_vs_float32"] = recall_at_k(docnums[:, :10], ref[1][:, :10], 10)
            err = np.abs(index.scores_of(queries, ref[1][:, :100]) - ref[0][:, :100])
            row["score_abs_error_mean"] = float(err.mean())
            row["score_abs_error_max"] = float(err.max())
        row["latency_k10_1thread"] = latency(index, queries, repeats)
        out["by_quantization"][quant] = row
        print(f"  {quant}: nDCG@10 {row['nDCG@10']:.4f}  R@100 {row['R@100']:.4f}  "
              f"recall@10 vs f32 {row.get('recall@10_vs_float32', 1.0):.4f}  {row['index_bytes']:,} B  "
              f"p50 {row['latency_k10_1thread']['p50_ms']:.3f} ms", flush=True)
    return out


def write_markdown(results: dict, path: Path) -> None:
    lines = [
        "# Dense flat index: float32 vs float16 vs int8 (issue 16)",
        "",
        f"`{results['command']}` ({results['date']}; {results['machine']}). Embeddings: bundled "
        "all-MiniLM-L6-v2 (384-d, unit norm), exact flat inner-product search (`DenseIndex`), "
        "test qrels (final figures; nothing was tuned). Recall@10 vs float32: share of float32's "
        "top-10 found by the quantized index. Score error: |score - float32 score| over float32's "
        "top-100 per query. Latency: single query, k=10, one BLAS thread, p50 (p95) in ms, median of "
        f"{results['repeats']} repetitions over all test queries; load average (1 min) "
        f"{results['load_average_before']:.1f} before, {results['load_average_after']:.1f} after (other jobs "
        "shared the cores when above ~1).",
        "",
        "| collection | storage | nDCG@10 | Δ vs float32 | R@100 | recall@10 vs float32 | score error mean / max "
        "| index bytes | vector bytes | p50 (p95) ms |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results["collections"].items():
        base = r["by_quantization"]["float32"]
        for quant, row in r["by_quantization"].items():
            err = (f"{row['score_abs_error_mean']:.2e} / {row['score_abs_error_max']:.2e}"
                   if "score_abs_error_mean" in row else "-")
            lat = row["latency_k10_1thread"]
            lines.append(
                f"| {name} ({r['n_docs']:,} docs, {r['n_queries']} q) | {quant} | {row['nDCG@10']:.4f} "
                f"| {row['nDCG@10'] - base['nDCG@10']:+.4f} | {row['R@100']:.4f} "
                f"| {row.get('recall@10_vs_float32', 1.0):.4f} | {err} | {row['index_bytes']:,} "
                f"| {row['vector_bytes']:,} | {lat['p50_ms']:.3f} ({lat['p95_ms']:.3f}) |")
    rows = [(q, row, r["by_quantization"]["float32"]) for r in results["collections"].values()
            for q, row in r["by_quantization"].items() if q != "float32"]
    for quant in sorted({q for q, _, _ in rows}):
        mine = [(row, base) for q, row, base in rows if q == quant]
        gap = max(abs(row["nDCG@10"] - base["nDCG@10"]) for row, base in mine)
        rec = min(row["recall@10_vs_float32"] for row, _ in mine)
        size = max(row["vector_bytes"] / base["vector_bytes"] for row, base in mine)
        speed = [row["latency_k10_1thread"]["p50_ms"] / base["latency_k10_1thread"]["p50_ms"] for row, base in mine]
        lines.append(f"\n{quant}: largest |Δ nDCG@10| {gap:.4f}, lowest recall@10 vs float32 {rec:.4f}, "
                     f"vectors at most {size:.0%} of float32's bytes, p50 latency {min(speed):.2f}-{max(speed):.2f}x "
                     "float32's.")
    lines.append("\nfloat16 / int8 rows are converted to float32 in cache while they are multiplied (numba, "
                 "for up to 16 queries at a time), so a query reads the matrix at its stored size: int8 codes "
                 "convert in registers and come out faster than float32; float16's exact bit conversion costs "
                 "more than the bytes it saves.")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("SPARSEARCH_DATA", ROOT.parent / "shared" / "data")))
    ap.add_argument("--collections", default="scifact,nfcorpus")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "dense_quantization")
    ap.add_argument("--markdown-only", action="store_true", help="rewrite <out>.md from <out>.json")
    args = ap.parse_args()
    if args.markdown_only:
        write_markdown(json.loads(args.out.with_suffix(".json").read_text(encoding="utf-8")), args.out.with_suffix(".md"))
        return
    results = {"command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
               "date": time.strftime("%Y-%m-%d"),
               "machine": f"{os.cpu_count()} cores, {platform.machine()}, numpy {np.__version__}",
               "thread_limit": "threadpoolctl" if threadpoolctl is not None else "environment",
               "repeats": args.repeats, "load_average_before": os.getloadavg()[0], "collections": {}}
    with tempfile.TemporaryDirectory(prefix="dense-quant-") as tmp:
        for name in args.collections.split(","):
            results["collections"][name] = run_collection(name, args.data, args.repeats, Path(tmp))
    results["load_average_after"] = os.getloadavg()[0]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    write_markdown(results, args.out.with_suffix(".md"))
    print(f"wrote {args.out.with_suffix('.json')} and .md")


if __name__ == "__main__":
    main()
