"""SPLADE document-encoding throughput: fast paths vs a plain transformers forward pass, one run.

    python benchmarks/splade_encoding.py [--data ../shared/data/scifact] [--docs N] [--threads 2]
                                         [--backends plain,torch,onnx,onnx-int8] [--chunk 256]

Every backend encodes the same documents (the first ``--docs`` of the corpus, all by default)
with the same model (bundled SPLADE-tiny unless ``--model``), max length and batch size; the
disk cache is off. Backends run interleaved, chunk by chunk (``--chunk`` documents, the first
backend rotating), so that a noisy shared machine penalises them alike; wall-clock docs/s and
process CPU seconds are both reported. ``plain`` is the baseline: batches in corpus
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


sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from sparsearch.encoders.splade import SpladeEncoder  # noqa: E402
from sparsearch.evaluation import load_beir  # noqa: E402
from sparsearch.vectors import SparseBatch  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("SPARSEARCH_DATA", "../shared/data") + "/scifact")
    ap.add_argument("--model", default=None)
    ap.add_argument("--docs", type=int, default=0, help="first N documents (0: all)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--backends", default="plain,torch,onnx,onnx-int8")
    ap.add_argument("--chunk", type=int, default=256,
                    help="documents per interleaving step (each backend encodes each chunk in turn)")
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
    wall = {b: 0.0 for b in backends}
    cpu = {b: 0.0 for b in backends}
    parts: dict[str, list] = {b: [] for b in backends}
    starts = list(range(0, len(texts), args.chunk))
    for n, s in enumerate(starts):
        chunk = texts[s: s + args.chunk]
        for j in range(len(backends)):  # rotate who goes first: shared-machine noise hits all alike
            b = backends[(n + j) % len(backends)]
            c0, t0 = time.process_time(), time.perf_counter()
            parts[b].append(encs[b].encode_documents(chunk))
            wall[b] += time.perf_counter() - t0
            cpu[b] += time.process_time() - c0
        done = min(s + args.chunk, len(texts))
        print(f"{done}/{len(texts)} docs: " + ", ".join(f"{b} {done / wall[b]:.1f}/s" for b in backends), flush=True)
    out = {b: SparseBatch.concat(parts[b]) for b in backends}
    best = wall
    print(f"\n{len(texts)} documents, max_length {args.max_length}, batch {args.batch_size}, "
          f"{args.threads} threads, torch {torch.__version__}")
    base = best.get("plain")
    ref = out["plain"].to_scipy() if "plain" in out else None
    print(f"{'backend':10s} {'docs/s':>8s} {'speed-up':>9s} {'CPU s':>8s} {'CPU speed-up':>12s}  agreement with plain")
    for b in backends:
        rate = len(texts) / best[b]
        speed = f"{base / best[b]:8.2f}x" if base else "        -"
        speed += f" {cpu[b]:8.1f} " + (f"{cpu['plain'] / cpu[b]:11.2f}x" if base else "           -")
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
