"""How close the document encoders run to this machine's matrix-multiply limit (issue 19).

    python benchmarks/encoder_bound.py [--data ../shared/data/scifact] [--docs 256] [--threads 2]

For the bundled dense model (all-MiniLM-L6-v2) and the bundled SPLADE-tiny it

1. counts the floating-point operations one document costs, from the model's configuration and
   the real token counts of the collection's documents (each model's own tokenizer and
   truncation): per token ``2 x layers x (4 h^2 + 2 h i)`` for the transformer's matrix products
   plus ``2 x layers x 2 x T x h`` for attention over a document of ``T`` tokens; SPLADE adds its
   MLM head per token, ``2 (h^2 + h V)`` (the vocabulary projection, ``V`` = 30,522, is most of it);
2. measures this machine's float32 matrix-multiply rate: the best of torch's products over
   several well-shaped blocks (``--threads`` threads, best of several repetitions each; the
   vocabulary projection's own shape, (tokens x 128) x (128 x 30,522), runs at about half of
   it, its weight matrix being larger than the caches, so a tiled exact implementation could
   do better than torch there, but not better than this rate);
3. divides: the docs/s no exact float32 encoder can exceed here;
4. encodes the first ``--docs`` documents with today's paths (sentence-transformers for the dense
   model, ONNX Runtime exact for SPLADE, caches off) and reports docs/s and their share of the bound.

Writes ``benchmarks/results/encoder_bound.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from sparsearch.encoders.dense import DenseEncoder, bundled_model_path  # noqa: E402
from sparsearch.encoders.splade import SpladeEncoder, bundled_splade_path  # noqa: E402
from sparsearch.evaluation import load_beir  # noqa: E402


def gemm_gflops(m: int, k: int, n: int, reps: int = 7, dtype=None) -> float:
    """Best rate (GFLOP/s) of an (m, k) x (k, n) product (float32 unless ``dtype``) with torch's
    current threads."""
    import torch

    a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
    out = torch.empty(m, n, dtype=dtype)
    torch.matmul(a, b, out=out)
    best = np.inf
    for _ in range(reps):
        t = time.perf_counter()
        torch.matmul(a, b, out=out)
        best = min(best, time.perf_counter() - t)
    return 2.0 * m * k * n / best / 1e9


def machine_gflops() -> float:
    """The best float32 rate over blocks of the shapes these models multiply (BERT layers of width
    384 and 1,536; a 4,096-column block of a 128-wide vocabulary projection)."""
    return max(gemm_gflops(m, k, n) for m, k, n in ((4096, 384, 1536), (4096, 1536, 384), (8192, 384, 1536),
                                                      (4096, 128, 4096), (4096, 384, 384)))


def token_counts(path: str, texts: list[str], max_length: int) -> np.ndarray:
    """Tokens per text (special tokens included, truncated at ``max_length``) by the model's tokenizer."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    ids = tok(texts, truncation=True, max_length=max_length, add_special_tokens=True)["input_ids"]
    return np.array([len(x) for x in ids], np.int64)


def transformer_flops(tokens: np.ndarray, layers: int, h: int, inter: int) -> np.ndarray:
    """FLOPs per document of a BERT body: the matrix products per token, attention per token pair."""
    t = tokens.astype(np.float64)
    return t * 2 * layers * (4 * h * h + 2 * h * inter) + 2 * layers * 2 * t * t * h


def timed_docs_per_s(encode, texts: list[str]) -> float:
    encode(texts[:8])  # load, export, warm up outside the timing
    t = time.perf_counter()
    encode(texts)
    return len(texts) / (time.perf_counter() - t)


def write_report(out: Path, result: dict, md: list[str]) -> None:
    """``out``.json (the figures) and ``out``.md (the table), then the table on stdout."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("SPARSEARCH_DATA", str(ROOT.parent / "shared" / "data")) + "/scifact")
    ap.add_argument("--docs", type=int, default=256, help="documents encoded to measure today's docs/s")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "encoder_bound")
    a = ap.parse_args()

    import torch
    from transformers import AutoConfig

    torch.set_num_threads(a.threads)
    texts = load_beir(a.data, split=None).doc_texts()
    sample = texts[: a.docs]
    rows = []

    # --- dense: all-MiniLM-L6-v2 through sentence-transformers (what DenseEncoder runs today)
    dense = DenseEncoder(cache=False, threads=a.threads)
    dpath, max_len = bundled_model_path(), int(dense.model.max_seq_length)
    cfg = AutoConfig.from_pretrained(dpath)
    h, inter, layers = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
    tok = token_counts(dpath, texts, max_len)
    flops = transformer_flops(tok, layers, h, inter)
    rate = machine_gflops()
    measured = timed_docs_per_s(lambda x: dense.encode_documents(x), sample)
    rows.append({"encoder": "dense all-MiniLM-L6-v2 (sentence-transformers, float32)", "max_tokens": max_len,
                 "mean_tokens": float(tok.mean()), "gflop_per_doc": float(flops.mean() / 1e9),
                 "gemm_gflops": rate, "bound_docs_per_s": rate / (flops.mean() / 1e9), "measured_docs_per_s": measured})

    # --- SPLADE-tiny, ONNX Runtime exact (SpladeEncoder's default backend)
    spath = bundled_splade_path()
    splade = SpladeEncoder(None, backend="onnx", threads=a.threads, cache=False)
    cfg = AutoConfig.from_pretrained(spath)
    h, inter, layers, vocab = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers, cfg.vocab_size
    tok = token_counts(spath, texts, splade.max_length)
    body = transformer_flops(tok, layers, h, inter)
    head = tok.astype(np.float64) * 2 * (h * h + h * vocab)
    flops = body + head
    own = gemm_gflops(4096, h, vocab, reps=5)  # for the record; the bound uses the machine rate above
    measured = timed_docs_per_s(lambda x: splade.encode_documents(x), sample)
    rows.append({"encoder": "SPLADE-tiny (ONNX Runtime, exact float32)", "max_tokens": splade.max_length,
                 "mean_tokens": float(tok.mean()), "gflop_per_doc": float(flops.mean() / 1e9),
                 "vocab_projection_share": float(head.sum() / flops.sum()), "own_shape_gemm_gflops": own,
                 "gemm_gflops": rate, "bound_docs_per_s": rate / (flops.mean() / 1e9), "measured_docs_per_s": measured})
    for r in rows:
        r["share_of_bound"] = r["measured_docs_per_s"] / r["bound_docs_per_s"]
    res = {"machine": f"{platform.processor() or platform.machine()}, {len(os.sched_getaffinity(0))} CPUs, "
                      f"torch {torch.__version__}, {a.threads} threads", "collection": a.data,
           "documents_counted": len(texts), "documents_encoded": len(sample), "rows": rows}
    md = ["# Document encoders against the float32 matrix-multiply limit of this machine", "",
          f"{res['machine']}; token counts over all {len(texts):,} documents of {Path(a.data).name}, "
          f"docs/s measured on the first {len(sample)} (`benchmarks/encoder_bound.py`).", "",
          "| encoder | max tokens | mean tokens | GFLOP/doc | machine GEMM GFLOP/s | bound docs/s | measured docs/s | share of bound |",
          "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['encoder']} | {r['max_tokens']} | {r['mean_tokens']:.0f} | {r['gflop_per_doc']:.2f} | "
                  f"{r['gemm_gflops']:.0f} | {r['bound_docs_per_s']:.1f} | {r['measured_docs_per_s']:.1f} | "
                  f"{r['share_of_bound']:.0%} |")
    write_report(a.out, res, md)


if __name__ == "__main__":
    main()
