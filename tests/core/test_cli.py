import json

from typer.testing import CliRunner

from sparsearch.cli import app
from sparsearch.vectors import SparseBatch

runner = CliRunner()


def test_index_search_evaluate_stats(tiny_beir, tmp_path):
    out = tmp_path / "idx"
    r = runner.invoke(app, ["index", str(tiny_beir), "--out", str(out), "--encoder-opt", "k1=1.2"])
    assert r.exit_code == 0, r.output
    assert "indexed 6 documents" in r.output
    r = runner.invoke(app, ["search", str(out), "-q", "programming compiler", "-k", "2", "--explain"])
    assert r.exit_code == 0, r.output
    assert "1. d6" in r.output and "compil=" in r.output
    r = runner.invoke(app, ["evaluate", str(out), str(tiny_beir), "--json", str(tmp_path / "r.json"),
                            "--run", str(tmp_path / "run.trec")])
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["quality"]["nDCG@10"] > 0.8 and report["queries"] == 3
    assert (tmp_path / "run.trec").read_text().startswith("q1 Q0 d1 1 ")
    r = runner.invoke(app, ["stats", str(out)])
    assert json.loads(r.output)["n_docs"] == 6


def test_index_ready_vectors_and_query_vectors(tmp_path):
    docs = SparseBatch.from_dicts([{"a": 1.0, "b": 0.5}, {"b": 2.0}], ids=["x", "y"])
    docs.write_jsonl(tmp_path / "docs.jsonl")
    SparseBatch.from_dicts([{"b": 1.0}], ids=["q"]).write_jsonl(tmp_path / "q.jsonl")
    r = runner.invoke(app, ["index", str(tmp_path / "docs.jsonl"), "-o", str(tmp_path / "idx")])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["search", str(tmp_path / "idx"), "--queries", str(tmp_path / "q.jsonl"),
                            "--run", str(tmp_path / "run.trec")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "run.trec").read_text().splitlines()[0].split()[:3] == ["q", "Q0", "y"]
    SparseBatch.from_dicts([{"b": 1.0, "zeta": 2.0}], ids=["q"]).write_jsonl(tmp_path / "q2.jsonl")
    r = runner.invoke(app, ["search", str(tmp_path / "idx"), "--queries", str(tmp_path / "q2.jsonl"), "--strict-vocab"])
    assert r.exit_code == 2 and "unknown token 'zeta'" in r.output


def test_clear_errors(tmp_path):
    r = runner.invoke(app, ["search", str(tmp_path / "nope"), "-q", "x"])
    assert r.exit_code == 2 and "no such index directory" in r.output
    (tmp_path / "bad.jsonl").write_text('{"id": "a", "vector": {"x": -2}}\n')
    r = runner.invoke(app, ["index", str(tmp_path / "bad.jsonl"), "-o", str(tmp_path / "i")])
    assert r.exit_code == 2 and "bad.jsonl, line 1" in r.output and "negative" in r.output
    r = runner.invoke(app, ["index", str(tmp_path / "bad.jsonl"), "-o", str(tmp_path / "i"), "--quantization", "int3"])
    assert r.exit_code == 2 and "unknown quantization" in r.output


def test_approximate_mode_through_the_cli(tiny_beir, tmp_path):
    out = tmp_path / "idx"
    assert runner.invoke(app, ["index", str(tiny_beir), "--out", str(out)]).exit_code == 0
    r = runner.invoke(app, ["search", str(out), "-q", "programming compiler", "-k", "2", "--mode", "approximate",
                            "--query-cut", "5", "--heap-factor", "1.0"])
    assert r.exit_code == 0, r.output
    assert "1. d6" in r.output
    assert list(out.glob("approx-*"))
    r = runner.invoke(app, ["evaluate", str(out), str(tiny_beir), "--mode", "approximate", "--json",
                            str(tmp_path / "r.json")])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "r.json").read_text())["quality"]["nDCG@10"] > 0.8
    # a rebuild commits a new generation: the stale approximate index is collected
    assert runner.invoke(app, ["index", str(tiny_beir), "--out", str(out), "--overwrite"]).exit_code == 0
    assert not list(out.glob("approx-*"))
    r = runner.invoke(app, ["search", str(out), "-q", "x", "--mode", "fuzzy"])
    assert r.exit_code == 2 and "unknown search mode" in r.output


def test_tune_picks_a_setting_that_reaches_the_target(tiny_beir, tmp_path):
    out = tmp_path / "idx"
    assert runner.invoke(app, ["index", str(tiny_beir), "--out", str(out)]).exit_code == 0
    queries = str(tiny_beir / "queries.jsonl")
    r = runner.invoke(app, ["tune", str(out), "--queries", queries, "--target-recall", "1.0", "-k", "3",
                            "--query-cuts", "1,5", "--heap-factors", "0.5,1.0", "--json", str(tmp_path / "t.json")])
    assert r.exit_code == 0, r.output
    t = json.loads((tmp_path / "t.json").read_text())
    assert len(t["grid"]) == 4 and t["met"] and t["recall"] >= 1.0
    assert f"--query-cut {t['query_cut']} --heap-factor {t['heap_factor']}" in r.output
    r = runner.invoke(app, ["tune", str(out), "--queries", queries, "--target-recall", "1.5"])
    assert r.exit_code == 2 and "--target-recall" in r.output
    r = runner.invoke(app, ["tune", str(out), "--queries", queries, "--query-cuts", "a,b"])
    assert r.exit_code == 2 and "comma-separated" in r.output
