"""sparsearch BM25 vs bm25s (numba backend): same corpus, same queries, same machine, one run.

For each collection (default: SciFact, NFCorpus and Cranfield test splits), three systems:

* ``bm25s (numba), own tokenizer``: bm25s as its README sets it up: its tokenizer (stopwords
  "en", tokens of 2+ characters) with PyStemmer's English stemmer, Lucene BM25 at bm25s's
  default k1=1.5, b=0.75.
* ``bm25s (numba), same terms``: bm25s on exactly the terms sparsearch's default analyzer
  produces, with sparsearch's k1/b: identical work and, up to 8-bit quantization, identical
  scores (the speed comparison).
* ``sparsearch exact`` / ``exhaustive``: :class:`BM25Encoder` with its defaults (analyzer,
  k1 and b chosen on train/dev judgements, see ``benchmarks/results/bm25_analyzer.md``), or the
  ``--k1``/``--b`` given.

Each retrieves the top-10 for every test query; we report nDCG@10 (same evaluation code for
all), throughput (queries per second, best of ``--repeats`` runs over the whole query set, batch
on all threads and on one thread), and per-query latency percentiles (one query at a time, one
thread). Query tokenization is timed separately from search for every system.

    python benchmarks/bm25_vs_bm25s.py                                  # the three collections
    python benchmarks/bm25_vs_bm25s.py --data ../shared/data/scifact   # one collection
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

try:
    import bm25s
    import numba
    import Stemmer
except ImportError as e:
    sys.exit(f"needs the bench extra (pip install -e '.[bench]'): {e}")

from sparsearch.encoders.bm25 import DEFAULT_B, DEFAULT_K1, BM25Encoder
from sparsearch.evaluation import LatencyStats, evaluate, load_beir, time_queries
from sparsearch.index import build_index
from sparsearch.searching import ExactParams


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def compare(data: Path, args: argparse.Namespace, n_threads: int) -> None:
    """Print one collection's table."""
    ds = load_beir(data)
    texts, qtexts = ds.doc_texts(), ds.query_texts()
    nq = len(qtexts)
    print(f"{ds.name}: {len(texts):,} docs, {nq} test queries, k={args.k}, {n_threads} cores; sparsearch and "
          f"'same terms' k1={args.k1:g}, b={args.b:g}; bm25s own tokenizer k1=1.5, b=0.75")
    rows = []

    # ------------------------------------------------------------------ bm25s
    enc = BM25Encoder(k1=args.k1, b=args.b)
    stemmer = Stemmer.Stemmer("english")
    own = (lambda xs: bm25s.tokenize(xs, stopwords="en", stemmer=stemmer, show_progress=False, return_ids=False))
    for label, tokenize, k1, b in (("bm25s (numba), own tokenizer", own, 1.5, 0.75),
                                   ("bm25s (numba), same terms", enc.analyzer.analyze_many, args.k1, args.b)):
        t = time.perf_counter()
        retriever = bm25s.BM25(k1=k1, b=b, method="lucene", backend="numba")
        retriever.index(tokenize(texts), show_progress=False)
        bm_build = time.perf_counter() - t
        t = time.perf_counter()
        q_tokens = tokenize(qtexts)
        bm_tok = time.perf_counter() - t
        # bm25s rejects queries whose terms are all unknown; give those an empty result
        known = [i for i, q in enumerate(q_tokens) if any(tok in retriever.vocab_dict for tok in q)]
        q_known = [[tok for tok in q_tokens[i] if tok in retriever.vocab_dict] for i in known]

        def bm_search(threads: int, q_known=q_known, retriever=retriever):
            return retriever.retrieve(q_known, k=args.k, n_threads=threads, show_progress=False,
                                      backend_selection="numba")

        docs_bm, scores_bm = bm_search(n_threads)  # JIT warm-up
        run_bm = {ds.query_ids[i]: {ds.doc_ids[d]: float(s) for d, s in zip(docs_bm[j], scores_bm[j]) if s > 0}
                  for j, i in enumerate(known)}
        bm_all = best_of(lambda: bm_search(n_threads), args.repeats)
        bm_one = best_of(lambda: bm_search(1), args.repeats)
        lat_bm = time_queries(lambda i, q_known=q_known, retriever=retriever: retriever.retrieve(
            [q_known[i]], k=args.k, n_threads=1, show_progress=False, backend_selection="numba"), len(q_known),
            warmup=0)  # warmed up by the batches above
        rows.append((label, evaluate(run_bm, ds.qrels)["nDCG@10"], nq / bm_all, nq / bm_one,
                     LatencyStats.measure(lat_bm).summary(), bm_build, 1e3 * bm_tok / nq))

    # -------------------------------------------------------------- sparsearch
    t = time.perf_counter()
    enc.fit(texts)
    with tempfile.TemporaryDirectory() as tmp:
        index = build_index(enc.encode_documents(texts, ds.doc_ids), Path(tmp) / "idx", encoder=enc)
        ss_build = time.perf_counter() - t
        t = time.perf_counter()
        qv = enc.encode_queries(qtexts, ds.query_ids)
        ss_tok = time.perf_counter() - t
        index.search(qv, args.k)  # warm-up
        run_ss = index.search_run(qv, args.k)
        ss_all = best_of(lambda: index.search(qv, args.k), args.repeats)
        one, exhaustive = ExactParams(threads=1), ExactParams(exhaustive=True)
        ss_one = best_of(lambda: index.search(qv, args.k, one), args.repeats)
        lat_ss = time_queries(lambda i: index.search(qv[i:i + 1], args.k, one), nq, warmup=0)
        ex_all = best_of(lambda: index.search(qv, args.k, exhaustive), args.repeats)
        rows.append(("sparsearch exact", evaluate(run_ss, ds.qrels)["nDCG@10"], nq / ss_all, nq / ss_one,
                     LatencyStats.measure(lat_ss).summary(), ss_build, 1e3 * ss_tok / nq))
        rows.append(("sparsearch exhaustive", evaluate(index.search_run(qv, args.k, exhaustive),
                                                       ds.qrels)["nDCG@10"], nq / ex_all, float("nan"),
                     None, ss_build, 1e3 * ss_tok / nq))

    print(f"\n| system | nDCG@10 | QPS ({n_threads} threads) | QPS (1 thread) | p50 ms | p99 ms | "
          f"build s | query tokenize ms/q |")
    print("|---|---|---|---|---|---|---|---|")
    for name, ndcg, qps_all, qps_one, lat, build, tok in rows:
        p50 = f"{lat['p50_ms']:.3f}" if lat else "-"
        p99 = f"{lat['p99_ms']:.3f}" if lat else "-"
        one = f"{qps_one:,.0f}" if np.isfinite(qps_one) else "-"
        print(f"| {name} | {ndcg:.4f} | {qps_all:,.0f} | {one} | {p50} | {p99} | {build:.2f} | {tok:.3f} |")
    ss = rows[2]
    for bm in rows[:2]:
        print(f"sparsearch exact vs {bm[0]}: throughput {ss[2] / bm[2]:.2f}x ({n_threads} threads), "
              f"{ss[3] / bm[3]:.2f}x (1 thread); single-query p50 latency ratio (bm25s / sparsearch) "
              f"{bm[4]['p50_ms'] / ss[4]['p50_ms']:.2f}x; nDCG@10 {ss[1]:.4f} vs {bm[1]:.4f}")
    print()


def main() -> None:
    root = Path(os.environ.get("SPARSEARCH_DATA", "../shared/data"))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, nargs="+", default=[root / n for n in ("scifact", "nfcorpus", "cranfield")],
                    help="BEIR collection folders (default: scifact, nfcorpus, cranfield under $SPARSEARCH_DATA)")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--k1", type=float, default=DEFAULT_K1, help="sparsearch's (default: BM25Encoder's)")
    ap.add_argument("--b", type=float, default=DEFAULT_B, help="sparsearch's (default: BM25Encoder's)")
    args = ap.parse_args()
    for data in args.data:
        compare(data, args, numba.config.NUMBA_NUM_THREADS)


if __name__ == "__main__":
    main()
