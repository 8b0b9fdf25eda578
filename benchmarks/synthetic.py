"""Synthetic SPLADE-like sparse vectors for scale benchmarks.

Term ids follow a Zipf law over a BERT-sized vocabulary (30,522 terms), documents carry
about 120 non-zeros and queries about 30, and weights are log-normal like SPLADE's
log(1 + ReLU) activations. Seeded, streamed in chunks, so 1M documents never sit in memory
twice.

    python benchmarks/synthetic.py --docs 1000000 --out /tmp/synth.npz   # writes a SparseBatch
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import numpy as np

from sparsearch.vectors import SparseBatch, Vocabulary

VOCAB_SIZE = 30_522


def zipf_probabilities(n_terms: int = VOCAB_SIZE, exponent: float = 1.0, seed: int = 0) -> np.ndarray:
    """Zipf probabilities over term ids, randomly permuted so frequent terms are not id 0..k."""
    p = 1.0 / np.arange(1, n_terms + 1) ** exponent
    p /= p.sum()
    return np.random.default_rng(seed).permutation(p)


def sparse_vectors(n: int, mean_nnz: float, seed: int, *, n_terms: int = VOCAB_SIZE, chunk: int = 100_000,
                   prefix: str = "d", vocab: Vocabulary | None = None) -> Iterator[SparseBatch]:
    """Stream ``n`` vectors in chunks of ``chunk`` rows over one shared vocabulary."""
    rng = np.random.default_rng(seed)
    probs = zipf_probabilities(n_terms)
    cdf = np.cumsum(probs)
    vocab = vocab or Vocabulary.from_size(n_terms, prefix="t")
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        # oversample then deduplicate per row: frequent terms repeat inside a document
        draws = rng.poisson(mean_nnz * 1.35, size=m).clip(1)
        rows = np.repeat(np.arange(m, dtype=np.int64), draws)
        terms = np.searchsorted(cdf, rng.random(len(rows)) * cdf[-1]).clip(0, n_terms - 1)
        keys = np.sort(rows * n_terms + terms)  # sort-based dedup: much faster than hashing here
        keys = keys[np.concatenate([[True], keys[1:] != keys[:-1]])]
        r, t = keys // n_terms, keys % n_terms
        w = np.exp(rng.normal(-0.3, 0.6, size=len(keys))).astype(np.float32).clip(0.01, 4.0)
        indptr = np.concatenate([[0], np.cumsum(np.bincount(r, minlength=m))])
        ids = [f"{prefix}{i}" for i in range(start, start + m)]
        yield SparseBatch(indptr, t.astype(np.int32), w, vocab, ids)


def documents(n: int = 1_000_000, seed: int = 42, **kw) -> Iterator[SparseBatch]:
    """SPLADE-like documents, about 120 non-zeros each."""
    return sparse_vectors(n, 120, seed, prefix="d", **kw)


def queries(n: int = 1000, seed: int = 7, **kw) -> SparseBatch:
    """SPLADE-like queries, about 30 non-zeros each."""
    return SparseBatch.concat(list(sparse_vectors(n, 30, seed, prefix="q", **kw)))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=1_000_000)
    ap.add_argument("--out", required=True, help="output .npz (SparseBatch) or .jsonl")
    a = ap.parse_args()
    b = SparseBatch.concat(list(documents(a.docs)))
    print(f"{len(b)} docs, {b.nnz / len(b):.1f} nnz/doc")
    b.save(a.out)
