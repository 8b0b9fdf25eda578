import math

import numpy as np
import pytest

from sparsearch.evaluation import (LatencyStats, evaluate, load_beir, load_qrels, per_query, read_trec_run,
                                   write_trec_run)
from sparsearch.vectors import FormatError


def test_metrics_match_hand_computation():
    qrels = {"q1": {"a": 1, "c": 2}, "q2": {"x": 1}}
    run = {"q1": {"a": 3.0, "b": 2.0, "c": 1.0}, "q2": {"y": 1.0, "x": 0.5}}
    m = evaluate(run, qrels, ["nDCG@10", "RR@10", "R@1"])
    # trec_eval / BEIR nDCG: linear gains
    dcg1 = 1 / math.log2(2) + 2 / math.log2(4)
    idcg1 = 2 / math.log2(2) + 1 / math.log2(3)
    dcg2 = 1 / math.log2(3)
    assert m["nDCG@10"] == pytest.approx((dcg1 / idcg1 + dcg2 / 1.0) / 2)
    assert m["RR@10"] == pytest.approx((1 + 0.5) / 2)
    assert m["R@1"] == pytest.approx((0.5 + 0) / 2)
    pq = per_query(run, qrels, "RR@10")
    assert pq == {"q1": pytest.approx(1.0), "q2": pytest.approx(0.5)}


def test_empty_query_conventions():
    qrels = {"q1": {"a": 1}, "q2": {"b": 1}}
    run = {"q1": {"a": 1.0}, "q2": {}}
    for m in ("RR@10", "nDCG@10", "R@100"):
        assert evaluate(run, qrels, [m])[m] == pytest.approx(1.0)  # pytrec_eval/BEIR: skipped
        assert evaluate(run, qrels, [m], empty_queries="zero")[m] == pytest.approx(0.5)


def test_beir_loading(tiny_beir):
    ds = load_beir(tiny_beir)
    assert len(ds.corpus) == 6 and ds.query_ids == ["q1", "q2", "q3"]  # q4 is not judged
    assert ds.doc_texts()[0] == "Cats cats are small domesticated carnivorous mammals"
    assert ds.qrels["q3"] == {"d6": 2, "d4": 1}


def test_bad_beir_files_name_the_line(tmp_path, tiny_beir):
    (tiny_beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\n")
    with pytest.raises(FormatError, match="test.tsv, line 2: expected 3 tab-separated fields"):
        load_beir(tiny_beir)
    with open(tiny_beir / "corpus.jsonl", "a") as f:
        f.write("{broken\n")
    with pytest.raises(FormatError, match="corpus.jsonl, line 7: malformed JSON"):
        load_beir(tiny_beir)
    with pytest.raises(FileNotFoundError, match="not a BEIR collection"):
        load_beir(tmp_path / "nothing")


def test_trec_run_roundtrip(tmp_path):
    run = {"q1": {"a": 1.5, "b": 2.5}, "q2": {"c": 0.25}}
    write_trec_run(run, tmp_path / "run.trec")
    lines = (tmp_path / "run.trec").read_text().splitlines()
    assert lines[0].split() == ["q1", "Q0", "b", "1", "2.500000", "sparsearch"]
    assert read_trec_run(tmp_path / "run.trec") == run


def test_latency_stats():
    s = LatencyStats.measure(np.full(100, 0.002), wall_s=0.1).summary()
    assert s["p50_ms"] == pytest.approx(2.0) and s["p99_ms"] == pytest.approx(2.0) and s["qps"] == pytest.approx(1000)


def test_qrels_with_trec_layout(tmp_path):
    p = tmp_path / "q.tsv"
    p.write_text("1\t0\tdocA\t2\n1\t0\tdocB\t0\n")
    assert load_qrels(p) == {"1": {"docA": 2, "docB": 0}}
