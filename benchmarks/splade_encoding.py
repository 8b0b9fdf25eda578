"""SPLADE document-encoding throughput: fast paths vs a plain transformers forward pass, one run.

    python benchmarks/splade_encoding.py [--data ../shared/data/scifact] [--docs N] [--threads 2]
                                         [--backends plain,torch,onnx,onnx-int8] [--rounds 2]

Every backend encodes the same documents (the first ``--docs`` of the corpus, all by default)
with the same model (bundled SPLADE-tiny unless ``--model``), max length and batch size; the
disk cache is off. Backends run interleaved for ``--rounds`` rounds (the best round counts), so
that a noisy shared machine penalises them alike. ``plain`` is the baseline: batches in corpus
order, padded to their longest text, ``model(**batch).logits`` then log1p(relu) * mask and max
over tokens. Prints docs/s per backend, the speed-up over plain, and the largest weight
difference from the plain output (int8 is approximate by design: it reports the overlap of the
kept terms instead).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from sparsearch.encoders.splade import SpladeEncoder  # noqa: E402
from sparsearch.evaluation import load_beir  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("SPARSEARCH_DATA", "../shared/data") + "/scifact")
    ap.add_argument("--model", default=None)
    ap.add_argument("--docs", type=int, default=0, help="first N documents (0: all)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--backends", default="plain,torch,onnx,onnx-int8")
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    ds = load_beir(args.data)
    texts = ds.doc_texts()
    if args.docs:
        texts = texts[: args.docs]
    backends = args.backends.split(",")
    encs = {b: SpladeEncoder(args.model, backend=b, max_length=args.max_length, batch_size=args.batch_size,
                             threads=args.threads, cache=False) for b in backends}
    for e in encs.values():  # load, export / quantize, warm up outside the timing
        e.encode_documents(texts[:16])
    best: dict[str, float] = {}
    out = {}
    for r in range(args.rounds):
        for b, e in encs.items():
            t0 = time.perf_counter()
            out[b] = e.encode_documents(texts)
            dt = time.perf_counter() - t0
            best[b] = min(best.get(b, float("inf")), dt)
            print(f"round {r + 1} {b:10s} {len(texts) / dt:8.1f} docs/s ({dt:.1f} s)", flush=True)
    print(f"\n{len(texts)} documents, max_length {args.max_length}, batch {args.batch_size}, "
          f"{args.threads} threads, torch {torch.__version__}")
    base = best.get("plain")
    ref = out["plain"].to_scipy() if "plain" in out else None
    print(f"{'backend':10s} {'docs/s':>8s} {'speed-up':>9s}  agreement with plain")
    for b in backends:
        rate = len(texts) / best[b]
        speed = f"{base / best[b]:8.2f}x" if base else "        -"
        agree = ""
        if ref is not None and b != "plain":
            m = out[b].to_scipy()
            diff = abs(m - ref).max()
            a, c = set(zip(*ref.nonzero())), set(zip(*m.nonzero()))
            agree = f"max |dw| {diff:.2e}, term overlap {len(a & c) / max(len(a | c), 1):.4f}"
        print(f"{b:10s} {rate:8.1f} {speed}  {agree}")
        print(f"  mean nnz/doc {out[b].nnz / max(len(texts), 1):.1f}")
    fastest = min((b for b in backends if b != "plain"), key=lambda b: best[b], default=None)
    if base and fastest:
        print(f"\nfastest path: {fastest}, {base / best[fastest]:.2f}x the plain transformers forward pass")


if __name__ == "__main__":
    main()
