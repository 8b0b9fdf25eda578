"""Exact single-query latency of BM25 on SciFact (k=10, one thread), for comparing revisions.

Builds the index in a temporary directory, warms up on 20 queries, then times every test query
one at a time; prints the median latency of each of 7 repetitions and their minimum. Written
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
            params = ExactParams(threads=1)
            search = lambda q: idx.search(q, 10, params)  # noqa: E731
        else:
            search = lambda q: idx.search(q, 10, threads=1)  # noqa: E731
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


if __name__ == "__main__":
    main()
