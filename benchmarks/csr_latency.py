"""Query latency: CSR codes in the inverted index vs exact dense search, 1M synthetic documents.

    python benchmarks/csr_latency.py [--docs 1000000] [--h 1536] [--k 32] [--dim 384]

Both corpora have the shape of the SciFact setup (``benchmarks/csr_scifact.py``):

* sparse: every document and query has exactly ``k`` distinct latents out of ``h``, drawn
  from a skewed (Zipf, exponent ``--zipf``) latent popularity, as trained top-k
  coders give (a few latents fire often, most rarely), or from a measured latent-frequency
  profile (``--profile``, e.g. SciFact's document codes: a handful of latents fire in ~40% of
  documents, the median one in ~0.1%); weights are |N(0, 1)| * 0.2 + 0.05,
  the range of top-k codes of unit-norm embeddings. Indexed with ``build_index`` (uint8) and
  searched exactly (block-max MaxScore), one query at a time.
* dense: ``docs x dim`` float32 unit vectors; exact top-10 per query by one numpy matrix-vector
  product over the whole matrix (:class:`~sparsearch.encoders.dense.DenseSearcher`).

Both run in the same process on the same cores, one query at a time, interleaved (sparse query
i, then dense query i) so that both see the same machine load; the ratios dense / CSR of the
mean, median and p99 latency are printed (and written to ``--out`` as JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from sparsearch.encoders.dense import DenseSearcher
from sparsearch.encoders.sparse_coding import codes_to_batch
from sparsearch.evaluation import LatencyStats, time_queries
from sparsearch.index import build_index
from sparsearch.vectors import SparseBatch, Vocabulary


def synthetic_codes(n: int, h: int, k: int, zipf: float, seed: int, chunk: int = 100_000,
                    vocab: Vocabulary | None = None, perm_seed: int = 1234,
                    profile: np.ndarray | None = None) -> SparseBatch:
    """``n`` vectors with exactly ``k`` distinct latents of ``h``, drawn by Zipf popularity.

    Draws ``4k`` latents per row with replacement and keeps ``k`` of its distinct draws at
    random (rows with fewer than ``k`` distinct draws are redrawn).
    """
    rng = np.random.default_rng(seed)
    if profile is not None:  # measured latent frequencies (e.g. SciFact codes), floored
        p = np.asarray(profile, np.float64)[:h] + 1e-4
        p /= p.sum()
    else:
        p = 1.0 / np.arange(1, h + 1, dtype=np.float64) ** zipf
        p = np.random.default_rng(perm_seed).permutation(p / p.sum())
    cdf = np.cumsum(p)
    cdf[-1] = 1.0
    vocab = vocab or Vocabulary.from_size(h, "f")
    parts = []
    for a in range(0, n, chunk):
        m = min(chunk, n - a)
        idx = np.empty((m, k), np.int64)
        todo = np.arange(m)
        while len(todo):
            draws = np.searchsorted(cdf, rng.random((len(todo), 4 * k))).astype(np.int64)
            srt = np.sort(draws, axis=1)
            dup = np.zeros_like(srt, dtype=bool)
            dup[:, 1:] = srt[:, 1:] == srt[:, :-1]
            srt[dup] = h  # sentinel after every real latent
            srt.sort(axis=1)
            ok = srt[:, k - 1] < h
            # keep k latents chosen uniformly among the distinct draws of the row
            srt = srt[ok]
            keys = rng.random(srt.shape)
            keys[srt == h] = 2.0
            pick = np.argpartition(keys, k - 1, axis=1)[:, :k]
            idx[todo[ok]] = np.take_along_axis(srt, pick, 1)
            todo = todo[~ok]
        val = (np.abs(rng.standard_normal((m, k))) * 0.2 + 0.05).astype(np.float32)
        parts.append(codes_to_batch(idx, val, h, [f"d{a + i}" for i in range(m)], vocab))
    return SparseBatch.concat(parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=1_000_000)
    ap.add_argument("--h", type=int, default=1536)
    ap.add_argument("--k", type=int, default=32, help="non-zeros per document and per query")
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--zipf", type=float, default=0.7)
    ap.add_argument("--profile", type=Path, default=None,
                    help="latent frequencies (.npy, h floats) to draw latents from instead of a Zipf law; "
                         "benchmarks/csr_scifact.py writes latent_freq_k32.npy (SciFact document codes)")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--dense-queries", type=int, default=100, help="queries timed (interleaved sparse/dense)")
    ap.add_argument("--topk", type=int, default=10)
    ap.add_argument("--index", type=Path, default=None, help="index directory (default: a temporary one)")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "csr_latency.json")
    args = ap.parse_args()
    res: dict = {"args": {k: str(v) for k, v in vars(args).items()}}

    t = time.perf_counter()
    profile = np.load(args.profile) if args.profile else None
    if profile is not None:
        args.h = len(profile)
    docs = synthetic_codes(args.docs, args.h, args.k, args.zipf, seed=0, profile=profile)
    queries = synthetic_codes(args.queries, args.h, args.k, args.zipf, seed=1, vocab=docs.vocab, profile=profile)
    queries.ids = [f"q{i}" for i in range(len(queries))]
    print(f"generated {len(docs):,} docs x {args.k} nnz over h={args.h} in {time.perf_counter() - t:.1f}s", flush=True)
    path = args.index or Path(tempfile.mkdtemp(prefix="csr-latency-")) / "index"
    t = time.perf_counter()
    index = build_index(docs, path, quantization="uint8")
    res["build_seconds"] = time.perf_counter() - t
    del docs
    print(f"built {index} in {res['build_seconds']:.1f}s", flush=True)
    rng = np.random.default_rng(2)
    t = time.perf_counter()
    D = np.empty((args.docs, args.dim), np.float32)
    for a in range(0, args.docs, 100_000):
        blk = rng.standard_normal((min(100_000, args.docs - a), args.dim), dtype=np.float32)
        D[a:a + len(blk)] = blk / np.linalg.norm(blk, axis=1, keepdims=True)
    Q = rng.standard_normal((args.queries, args.dim), dtype=np.float32)
    Q /= np.linalg.norm(Q, axis=1, keepdims=True)
    print(f"generated dense {D.shape} ({D.nbytes / 2**30:.2f} GiB) in {time.perf_counter() - t:.1f}s", flush=True)
    searcher = DenseSearcher(D, block=args.docs)

    # warm up (numba compilation of the batch and one-query paths, BLAS, page cache)
    index.search(queries[:5], args.topk)
    time_queries(lambda i: index.search(queries[i:i + 1], args.topk), 3, warmup=0)
    searcher.search(Q[:2], args.topk)
    # interleave one sparse and one dense query so that both see the same machine load: call j
    # is sparse query j // 2 when j is even, dense query j // 2 when it is odd
    n = min(args.queries, args.dense_queries)
    load0 = os.getloadavg()[0]
    lat = time_queries(lambda j: index.search(queries[j // 2:j // 2 + 1], args.topk) if j % 2 == 0
                       else searcher.search(Q[j // 2:j // 2 + 1], args.topk), 2 * n, warmup=0)
    cl, dl = lat[0::2], lat[1::2]
    res["load_average_1min"] = [load0, os.getloadavg()[0]]
    res["csr"] = LatencyStats.measure(cl).summary()
    res["dense"] = LatencyStats.measure(dl).summary()
    t = time.perf_counter()
    index.search(queries, args.topk)
    res["csr_batch_qps"] = len(queries) / (time.perf_counter() - t)
    print("CSR sparse (exact MaxScore, one query at a time):", json.dumps(res["csr"]), flush=True)
    print("dense exact (numpy, one query at a time):", json.dumps(res["dense"]), flush=True)
    print(f"load average during the run: {res['load_average_1min']}", flush=True)
    for key in ("mean_ms", "p50_ms", "p99_ms"):
        res[f"ratio_dense_over_csr_{key}"] = res["dense"][key] / res["csr"][key]
        print(f"latency ratio dense / CSR ({key}): {res[f'ratio_dense_over_csr_{key}']:.2f}x", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
