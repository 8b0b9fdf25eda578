"""SPLADE document-encoding throughput: fast paths vs a plain transformers forward pass, one run.

    python benchmarks/splade_encoding.py [--data ../shared/data/scifact] [--docs N] [--threads 2]
                                         [--backends plain,torch,torch-float32,onnx,onnx-int8]
                                         [--chunk 256]

Every backend encodes the same documents (the first ``--docs`` of the corpus, all by default)
with the same model (bundled SPLADE-tiny unless ``--model``), max length and batch size; the
disk cache is off. Backends run interleaved, chunk by chunk (``--chunk`` documents, the first
backend rotating), so that a noisy shared machine penalises them alike; wall-clock docs/s and
process CPU seconds are both reported. ``plain`` is the baseline: batches in corpus
order, padded to their longest text, ``model(**batch).logits`` then log1p(relu) * mask and max
over tokens. ``torch`` is the default fast path (on a CPU that multiplies bfloat16 natively,
the bfloat16-screened decoder, whose vectors equal float32's); ``torch-float32`` the same path
with the screen off (``screen=False``). Prints docs/s per backend, the speed-up over plain and
over exact ONNX Runtime, the largest weight difference from the plain output (int8 is
approximate by design: it reports the overlap of the kept terms instead), and each backend's
share of this machine's matrix-multiply bound (``encoder_bound.py``'s count of FLOPs per
document over the measured float32 rate; for the screened path also the bound with the
vocabulary projection at the bfloat16 rate).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from encoder_bound import gemm_gflops, machine_gflops, token_counts, transformer_flops  # noqa: E402
from sparsearch.encoders.splade import SpladeEncoder, bf16_matmul_in_hardware, resolve_model  # noqa: E402
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
    ap.add_argument("--backends", default="plain,torch,torch-float32,onnx,onnx-int8")
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
    encs = {b: SpladeEncoder(args.model, backend=b.split("-float32")[0], max_length=args.max_length,
                             batch_size=args.batch_size, threads=args.threads, cache=False,
                             screen=False if b.endswith("-float32") else None) for b in backends}
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
    print(f"{'backend':14s} {'docs/s':>8s} {'speed-up':>9s} {'CPU s':>8s} {'CPU speed-up':>12s}  agreement with plain")
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
        print(f"{b:14s} {rate:8.1f} {speed}  {agree}")
        print(f"  mean nnz/doc {out[b].nnz / max(len(texts), 1):.1f}")
    fastest = min((b for b in backends if b != "plain"), key=lambda b: best[b], default=None)
    if base and fastest:
        print(f"\nfastest path: {fastest}, {base / best[fastest]:.2f}x the plain transformers forward pass")
    if "onnx" in best:
        print("against exact ONNX Runtime: " + ", ".join(f"{b} {best['onnx'] / best[b]:.2f}x" for b in backends))
    print_bound(args, texts, {b: len(texts) / best[b] for b in backends}, encs)


def print_bound(args, texts: list[str], rates: dict[str, float], encs: dict) -> None:
    """Each backend's docs/s as a share of what this machine's matrix products allow."""
    import torch
    from transformers import AutoConfig

    path = resolve_model(args.model)
    cfg = AutoConfig.from_pretrained(path)
    tok = token_counts(path, texts, args.max_length)
    body = transformer_flops(tok, cfg.num_hidden_layers, cfg.hidden_size, cfg.intermediate_size)
    body += tok * 2.0 * cfg.hidden_size ** 2  # the masked-LM head's transform
    proj = tok * 2.0 * cfg.hidden_size * cfg.vocab_size
    f32 = machine_gflops() * 1e9
    bf16 = gemm_gflops(4096, cfg.hidden_size, 4096, dtype=torch.bfloat16) * 1e9
    bound32 = 1.0 / ((body + proj).mean() / f32)
    bound16 = 1.0 / (body.mean() / f32 + proj.mean() / bf16)
    print(f"\nGEMM bound: {(body + proj).mean() / 1e9:.2f} GFLOP/doc ({proj.sum() / (body + proj).sum():.0%} "
          f"vocabulary projection); float32 {f32 / 1e9:.0f} GFLOP/s -> {bound32:.1f} docs/s; projection in "
          f"bfloat16 at {bf16 / 1e9:.0f} GFLOP/s -> {bound16:.1f} docs/s (bfloat16 in hardware: "
          f"{bf16_matmul_in_hardware()})")
    for b, r in rates.items():
        screened = b == "torch" and encs[b]._screened is not None
        share = f"{r / bound32:.0%} of the float32 bound" + (f", {r / bound16:.0%} of the bfloat16-projection "
                                                             f"bound (screened)" if screened else "")
        print(f"  {b:14s} {r:6.1f} docs/s: {share}")


if __name__ == "__main__":
    main()
