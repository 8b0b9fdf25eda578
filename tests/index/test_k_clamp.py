"""k is clamped to the live documents on every search path and non-positive k is refused with a
message (issue 15 item 7): the Python API (exact and approximate), the sharded searcher, the
Milvus k check and the command line (``-k 1000000000`` and ``-k 99999999999`` are fast and
return every match; ``-k 0`` is one error line, exit code 2)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from sparsearch.distributed import ShardedIndex
from sparsearch.errors import InvalidInputError
from sparsearch.index import Index, build_index
from sparsearch.index.approximate import ApproxBuildParams, ApproximateIndex, FixedPruning
from sparsearch.index.updates import add_documents, delete_documents
from sparsearch.milvus import _check_k as milvus_check_k
from sparsearch.searching import MAX_K, ApproxParams, check_k
from sparsearch.vectors import SparseBatch, Vocabulary
from tests.core.test_cli import cli

HUGE = (1_000_000_000, 3_000_000_000, 99_999_999_999)


def _index(tmp_path, rng, n=120, V=40):
    m = (rng.random((n, V)) < 0.2) * rng.random((n, V)).astype(np.float32)
    batch = SparseBatch.from_dense(m, Vocabulary.from_size(V, "t"), [f"d{i}" for i in range(n)])
    path = tmp_path / "idx"
    build_index(batch, path, quantization="float32")
    add_documents(path, SparseBatch.from_dicts([{"t1": 1.0}, {"t2": 2.0}], ids=["n1", "n2"]))
    delete_documents(path, [f"d{i}" for i in range(0, n, 3)])
    q = SparseBatch.from_dense((rng.random((5, V)) < 0.3).astype(np.float32), Vocabulary.from_size(V, "t"))
    return path, q


def test_check_k_clamps_then_bounds():
    """issue 15 item 7: a huge k is clamped to the documents (it used to be refused or allocate k slots)."""
    assert check_k(99_999_999_999, 5183) == 5183 and check_k(np.int64(7), 10) == 7 and check_k(3, 0) == 1
    for bad in (0, -1, 1.5, "10", True, None):
        with pytest.raises(InvalidInputError, match="k must be a positive integer"):
            check_k(bad, 100)
    with pytest.raises(InvalidInputError, match=f"at most {MAX_K:,}"):
        check_k(10**9, 10 * MAX_K)  # an index that large: the run depth stays bounded
    assert milvus_check_k(99_999_999_999, 50) == 50
    with pytest.raises(InvalidInputError, match="Milvus"):
        milvus_check_k(20_000, 10**5)


def test_exact_approximate_and_sharded_clamp_to_live_documents(tmp_path, rng):
    """issue 15 item 7: every Python search path takes any k, fast, and returns at most the live documents."""
    path, q = _index(tmp_path, rng)
    idx = Index.open(path)
    live = idx.n_live_docs
    assert live < idx.n_docs
    ref_s, ref_d = idx.search(q, live)
    ApproximateIndex.build(idx, ApproxBuildParams(pruning=FixedPruning(n_postings=200)))
    approx = ApproximateIndex.open(Index.open(path))
    sharded = ShardedIndex.open([path], shards=2)
    try:
        for searcher in (sharded, approx):  # compile the kernels before timing
            searcher.search(q, 10)
        for k in HUGE:
            t0 = time.perf_counter()
            s, d = idx.search(q, k)
            assert s.shape == d.shape == (len(q), live)
            np.testing.assert_array_equal(d, ref_d)
            s2, d2 = sharded.search(q, k)
            assert d2.shape[1] <= live
            np.testing.assert_array_equal(d2[:, :live], ref_d)
            s3, d3 = approx.search(q, k, ApproxParams(query_cut=40, heap_factor=1.0))
            assert d3.shape[1] <= live
            assert time.perf_counter() - t0 < 5
        for k in (0, -3):
            for searcher in (idx, sharded, approx):
                with pytest.raises(InvalidInputError, match="positive integer"):
                    searcher.search(q, k)
    finally:
        sharded.close()


def test_cli_huge_k_is_clamped_and_nonpositive_k_is_a_message(tiny_beir, tmp_path):
    """issue 15 item 7: ``-k 99999999999`` used to be a traceback, ``-k 1000000000`` 26 s and 8 GB."""
    out = tmp_path / "idx"
    assert cli("index", tiny_beir, "--out", out).exit_code == 0
    for k in HUGE:
        t0 = time.perf_counter()
        r = cli("search", out, "-q", "programming language compiler", "-k", str(k))
        assert r.exit_code == 0, r.output
        assert "d6" in r.output and "Traceback" not in r.output
        assert time.perf_counter() - t0 < 10
    for k in ("0", "-5"):
        r = cli("search", out, "-q", "cats", "-k", k)
        assert r.exit_code == 2 and "k must be a positive integer" in r.output, r.output
