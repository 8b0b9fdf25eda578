"""Exact BM25 search speed on SciFact (k=10), for comparing revisions: single-query latency
(one thread) and batch throughput (all test queries in one call, all threads and one thread).

Builds the index in a temporary directory, warms up on 20 queries, then times every test query
one at a time; prints the median latency of each of 7 repetitions and their minimum, then the
best of 20 batch calls. Written
against both search signatures (typed ``ExactParams`` and the older keywords) so that
``benchmarks/revision_ab.sh`` can run it under either tree.

    python benchmarks/single_query_latency.py
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np

from sparsearch.encoders.bm25 import BM25Encoder
from sparsearch.evaluation import load_beir
from sparsearch.index import build_index

try:
    from sparsearch.searching import ExactParams
except ImportError:  # revisions before the typed search parameters
    ExactParams = None


def main() -> None:
    ds = load_beir(Path(os.environ.get("SPARSEARCH_DATA", "../shared/data")) / "scifact")
    enc = BM25Encoder().fit(ds.doc_texts())
    with tempfile.TemporaryDirectory() as d:
        idx = build_index(enc.encode_documents(ds.doc_texts(), ds.doc_ids), Path(d) / "i", encoder=enc)
        qv = enc.encode_queries(ds.query_texts(), ds.query_ids)
        queries = [qv[i:i + 1] for i in range(len(qv))]
        if ExactParams is not None:
            one, every = ExactParams(threads=1), ExactParams()
            search = lambda q, all_threads=False: idx.search(q, 10, every if all_threads else one)  # noqa: E731
        else:
            search = lambda q, all_threads=False: idx.search(q, 10, threads=None if all_threads else 1)  # noqa: E731
        for q in queries[:20]:
            search(q)
        medians = []
        for _ in range(7):
            lat = np.empty(len(queries))
            for i, q in enumerate(queries):
                t = time.perf_counter()
                search(q)
                lat[i] = time.perf_counter() - t
            medians.append(float(np.median(lat)) * 1e6)
        print("median single-query latency per repetition (us): " + " ".join(f"{m:.1f}" for m in medians))
        print(f"best median: {min(medians):.1f} us")
        for all_threads in (True, False):
            search(qv, all_threads)
            best = min(_timed(lambda: search(qv, all_threads)) for _ in range(20))
            print(f"batch of {len(qv)} queries, {'all threads' if all_threads else '1 thread'}: "
                  f"best {best * 1e3:.3f} ms = {len(qv) / best:,.0f} QPS")


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


if __name__ == "__main__":
    main()
