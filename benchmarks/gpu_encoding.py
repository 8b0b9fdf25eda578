"""Document-encoding throughput on a GPU (issue 19): the bundled dense model and SPLADE-tiny.

    python benchmarks/gpu_encoding.py [--data ../shared/data/scifact] [--docs 0] [--device cuda]

One short prepared run for a machine with a CUDA device (GPU time is scarce): it encodes the
collection's documents (all, or the first ``--docs``) with

* ``DenseEncoder(device=...)`` (sentence-transformers, float32, ``--dense-batch`` texts a batch),
* ``SpladeEncoder(device=..., backend="torch")`` (the blocked decoder on the GPU, ``--splade-batch``),

caches off, after a warm-up batch each, and reports docs/s, the device's name and memory, and
for SPLADE the mean terms per document (same vectors as on the CPU: ``tests/encoders/test_splade.py``
checks it where a GPU is present). Without a CUDA device it says so in one line and exits 2,
having measured nothing. Writes ``benchmarks/results/gpu_encoding.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def timed(encode, texts: list[str], warm: int = 32) -> tuple[float, object]:
    """docs/s of ``encode(texts)`` after a warm-up on the first ``warm`` texts (CUDA synchronised)."""
    import torch

    encode(texts[:warm])
    torch.cuda.synchronize()
    t = time.perf_counter()
    out = encode(texts)
    torch.cuda.synchronize()
    return len(texts) / (time.perf_counter() - t), out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("SPARSEARCH_DATA", str(ROOT.parent / "shared" / "data")) + "/scifact")
    ap.add_argument("--docs", type=int, default=0, help="first N documents (0: all)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dense-batch", type=int, default=256)
    ap.add_argument("--splade-batch", type=int, default=64)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "gpu_encoding.json")
    a = ap.parse_args()

    import torch

    if not torch.cuda.is_available():
        print(f"gpu_encoding: no CUDA device visible to torch {torch.__version__}: nothing measured", file=sys.stderr)
        return 2
    from sparsearch.encoders.dense import DenseEncoder
    from sparsearch.encoders.splade import SpladeEncoder
    from sparsearch.evaluation import load_beir

    texts = load_beir(a.data, split=None).doc_texts()
    if a.docs:
        texts = texts[: a.docs]
    props = torch.cuda.get_device_properties(torch.device(a.device))
    res = {"device": props.name, "device_memory_gib": round(props.total_memory / 2 ** 30, 1),
           "torch": torch.__version__, "collection": a.data, "documents": len(texts)}
    dense = DenseEncoder(cache=False, device=a.device, batch_size=a.dense_batch)
    res["dense_docs_per_s"], _ = timed(lambda x: dense.encode_documents(x), texts)
    splade = SpladeEncoder(None, backend="torch", device=a.device, batch_size=a.splade_batch, cache=False)
    res["splade_docs_per_s"], batch = timed(lambda x: splade.encode_documents(x), texts)
    res["splade_terms_per_doc"] = batch.nnz / max(len(texts), 1)
    res["peak_gpu_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2 ** 30, 2)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
