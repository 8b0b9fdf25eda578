"""Build an index of 1M synthetic SPLADE-like documents and report time, memory and size.

Documents come from ``synthetic.py`` (Zipf over 30,522 terms, ~120 non-zeros each) in
streamed chunks. Reports build time (generation excluded and included), peak resident memory
of the process, bytes per posting, and exact-search throughput on 200 synthetic queries.

    python benchmarks/build_1m.py [--docs 1000000] [--out /tmp/synth-index]
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from synthetic import documents, queries  # noqa: E402

from sparsearch.index import build_index  # noqa: E402
from sparsearch.searching import params_for_mode  # noqa: E402
from sparsearch.vectors import SparseBatch  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=1_000_000)
    ap.add_argument("--out", type=Path, default=Path("/tmp/sparsearch-synthetic-1m"))
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--codec", choices=["byte", "bitpack"], default="byte",
                    help="doc-id codec: byte-aligned block widths (default, faster) or smallest widths")
    a = ap.parse_args()

    t0 = time.perf_counter()
    batch = SparseBatch.concat(list(documents(a.docs)))
    t_gen = time.perf_counter() - t0
    t1 = time.perf_counter()
    index = build_index(batch, a.out, overwrite=True, codec=a.codec)
    t_build = time.perf_counter() - t1
    st = index.stats()
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"documents:        {st['n_docs']:,} ({st['n_postings'] / st['n_docs']:.1f} non-zeros/doc, "
          f"{st['n_terms']:,} terms)")
    print(f"generation:       {t_gen:.1f} s")
    print(f"index build:      {t_build:.1f} s (generation + build {t_gen + t_build:.1f} s)")
    print(f"peak memory:      {peak_gib:.2f} GiB (whole process, vectors included)")
    print(f"index size:       {st['index_bytes'] / 2**20:.1f} MiB, {st['bytes_per_posting']:.3f} bytes/posting "
          f"(doc gaps, {a.codec} codec + 1-byte impacts + block metadata)")
    q = queries(a.queries)
    for mode in ("exact", "exhaustive"):
        index.search(q[:4], 10, params_for_mode(mode))
        for threads in (1, None):
            params = params_for_mode(mode, threads=threads)
            t = time.perf_counter()
            index.search(q, 10, params)
            dt = time.perf_counter() - t
            print(f"search {mode:<10} threads={threads or 'all'}: {len(q) / dt:,.1f} QPS "
                  f"({1e3 * dt / len(q):.2f} ms/query, ~{q.nnz / len(q):.0f} terms/query)")


if __name__ == "__main__":
    main()
