"""Dense document-encoding throughput and agreement: float32 vs bfloat16, one run (issue 19).

    python benchmarks/dense_encoding.py [--data ../shared/data/scifact] [--docs N] [--threads 2]
                                        [--chunk 256] [--out benchmarks/results/dense_encoding]

Both paths encode the same documents (the first ``--docs`` of the corpus, all by default) with
the bundled all-MiniLM-L6-v2 through :class:`sparsearch.encoders.dense.DenseEncoder`, caches off:
``float32`` is today's path (sentence-transformers on torch), ``bfloat16`` the same model under
``torch.autocast`` (``precision="bfloat16"``). They run interleaved, chunk by chunk, the first one
rotating, so that shared-machine noise hits both alike. Reported: docs/s and the speed-up, the
cosine between each document's two embeddings (largest and mean ``1 - cos``; the issue calls
outputs within 1e-4 equal), and, when every document was encoded, exact dense retrieval
nDCG@10 / R@100 on the test queries with each path (queries encoded by the same path).
Writes ``OUT.json`` and ``OUT.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from encoder_bound import write_report  # noqa: E402
from sparsearch.encoders.dense import DenseEncoder, DenseSearcher  # noqa: E402
from sparsearch.encoders.splade import bf16_matmul_in_hardware  # noqa: E402
from sparsearch.evaluation import evaluate, load_beir  # noqa: E402

PATHS = ("float32", "bfloat16")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("SPARSEARCH_DATA", str(ROOT.parent / "shared" / "data")) + "/scifact")
    ap.add_argument("--docs", type=int, default=0, help="first N documents (0: all, and retrieval quality)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--chunk", type=int, default=256, help="documents per interleaving step")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "dense_encoding")
    a = ap.parse_args()

    import torch
    from tqdm.auto import tqdm

    torch.set_num_threads(a.threads)
    ds = load_beir(a.data)
    texts = ds.doc_texts()
    texts = texts[: a.docs] if a.docs else texts
    encs = {p: DenseEncoder(None, cache=False, threads=a.threads, precision=p) for p in PATHS}
    for e in encs.values():  # load and warm up outside the timing
        e.encode_documents(texts[:16])
    wall = {p: 0.0 for p in PATHS}
    parts: dict[str, list[np.ndarray]] = {p: [] for p in PATHS}
    starts = list(range(0, len(texts), a.chunk))
    for n, s in enumerate(tqdm(starts, desc="dense encoding, both paths", unit="chunk")):
        for j in range(len(PATHS)):
            p = PATHS[(n + j) % len(PATHS)]
            t0 = time.perf_counter()
            parts[p].append(encs[p].encode_documents(texts[s: s + a.chunk]))
            wall[p] += time.perf_counter() - t0
    emb = {p: np.concatenate(parts[p]) for p in PATHS}
    gap = 1.0 - (emb["float32"] * emb["bfloat16"]).sum(axis=1)
    rows = {p: {"docs_per_s": len(texts) / wall[p], "seconds": wall[p]} for p in PATHS}
    if not a.docs:
        for p in PATHS:
            q = encs[p].encode_queries(ds.query_texts())
            run = DenseSearcher(emb[p], ds.doc_ids).search_run(q, 100, query_ids=ds.query_ids)
            rows[p].update(evaluate(run, ds.qrels, ["nDCG@10", "R@100"]))
    res = {"machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} CPUs, torch {torch.__version__}, "
                      f"{a.threads} threads, bfloat16 in hardware: {bf16_matmul_in_hardware()}",
           "collection": a.data, "documents": len(texts), "paths": rows,
           "speed_up": rows["bfloat16"]["docs_per_s"] / rows["float32"]["docs_per_s"],
           "max_one_minus_cos": float(gap.max()), "mean_one_minus_cos": float(gap.mean())}
    md = ["# Dense document encoding (bundled all-MiniLM-L6-v2): float32 vs bfloat16", "",
          f"{res['machine']}; {len(texts):,} documents of {Path(a.data).name}, both paths interleaved in chunks "
          f"of {a.chunk} (`benchmarks/dense_encoding.py`).", "",
          "| path | docs/s | speed-up | nDCG@10 | R@100 |", "|---|---|---|---|---|"]
    for p in PATHS:
        r = rows[p]
        md.append(f"| {p} | {r['docs_per_s']:.1f} | {r['docs_per_s'] / rows['float32']['docs_per_s']:.2f}x | "
                  f"{r.get('nDCG@10', float('nan')):.4f} | {r.get('R@100', float('nan')):.4f} |")
    md += ["", f"Agreement of the document embeddings: 1 - cos largest {res['max_one_minus_cos']:.2e}, "
               f"mean {res['mean_one_minus_cos']:.2e}."]
    write_report(a.out, res, md)


if __name__ == "__main__":
    main()
