"""Acceptance figures on real BEIR collections (skipped, with the reason, when absent)."""

import pytest

from sparsearch.encoders.bm25 import BM25Encoder
from sparsearch.evaluation import evaluate, load_beir
from sparsearch.index import build_index

from tests.conftest import beir_path


@pytest.mark.slow
@pytest.mark.parametrize("name,floor", [("scifact", 0.67), ("nfcorpus", 0.32)])
def test_bm25_quality(tmp_path, name, floor):
    ds = load_beir(beir_path(name))
    enc = BM25Encoder().fit(ds.doc_texts())
    index = build_index(enc.encode_documents(ds.doc_texts(), ds.doc_ids), tmp_path / "idx", encoder=enc)
    run = index.search_run(enc.encode_queries(ds.query_texts(), ds.query_ids), 1000)
    assert evaluate(run, ds.qrels)["nDCG@10"] >= floor
