import json
import subprocess
import sys

from typer.testing import CliRunner

from sparsearch.cli import main
from sparsearch.vectors import SparseBatch

runner = CliRunner()


class Result:
    def __init__(self, exit_code: int, output: str, stdout: str, stderr: str) -> None:
        self.exit_code, self.output, self.stdout, self.stderr = exit_code, output, stdout, stderr


def cli(*args: str) -> Result:
    """Run ``sparsearch ARGS`` through :func:`sparsearch.cli.main` (the console script), its one
    SparsearchError handler included, with CliRunner's captured streams."""
    with runner.isolation() as (out, err, both):
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        texts = [s.getvalue().decode() for s in (both, out, err)]
    return Result(code, *texts)


def snapshot(path):
    """Every file and directory under ``path`` with its mtime (ns) and size."""
    return {str(p.relative_to(path)): (p.stat().st_mtime_ns, p.stat().st_size) for p in sorted(path.rglob("*"))}


def test_index_search_evaluate_stats(tiny_beir, tmp_path):
    out = tmp_path / "idx"
    r = cli("index", tiny_beir, "--out", out, "--encoder-opt", "k1=1.2")
    assert r.exit_code == 0, r.output
    assert "indexed 6 documents" in r.output
    r = cli("search", out, "-q", "programming compiler", "-k", "2", "--explain")
    assert r.exit_code == 0, r.output
    assert "1. d6" in r.output and "compil=" in r.output
    r = cli("evaluate", out, tiny_beir, "--json", tmp_path / "r.json", "--run", tmp_path / "run.trec")
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["quality"]["nDCG@10"] > 0.8 and report["queries"] == 3 and report["mode"] == "exact"
    assert (tmp_path / "run.trec").read_text().startswith("q1 Q0 d1 1 ")
    r = cli("stats", out)
    assert json.loads(r.stdout)["n_docs"] == 6
    r = cli("search", out, "-q", "programming compiler", "-k", "100", "--mode", "exhaustive")
    assert r.exit_code == 0 and "1. d6" in r.output  # k beyond the 6 documents is clamped


def test_index_ready_vectors_and_query_vectors(tmp_path):
    docs = SparseBatch.from_dicts([{"a": 1.0, "b": 0.5}, {"b": 2.0}], ids=["x", "y"])
    docs.write_jsonl(tmp_path / "docs.jsonl")
    SparseBatch.from_dicts([{"b": 1.0}], ids=["q"]).write_jsonl(tmp_path / "q.jsonl")
    r = cli("index", tmp_path / "docs.jsonl", "-o", tmp_path / "idx")
    assert r.exit_code == 0, r.output
    r = cli("search", tmp_path / "idx", "--queries", tmp_path / "q.jsonl", "--run", tmp_path / "run.trec")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "run.trec").read_text().splitlines()[0].split()[:3] == ["q", "Q0", "y"]
    SparseBatch.from_dicts([{"b": 1.0, "zeta": 2.0}], ids=["q"]).write_jsonl(tmp_path / "q2.jsonl")
    r = cli("search", tmp_path / "idx", "--queries", tmp_path / "q2.jsonl", "--strict-vocab")
    assert r.exit_code == 2 and "unknown token 'zeta'" in r.stderr
    r = cli("search", tmp_path / "idx", "-q", "b")  # an index of ready vectors has no encoder
    assert r.exit_code == 2 and "pass query vectors" in r.stderr


def test_clear_errors(tmp_path):
    r = cli("search", tmp_path / "nope", "-q", "x")
    assert r.exit_code == 2 and "no such index directory" in r.stderr
    assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1 and "Traceback" not in r.output
    (tmp_path / "bad.jsonl").write_text('{"id": "a", "vector": {"x": -2}}\n')
    r = cli("index", tmp_path / "bad.jsonl", "-o", tmp_path / "i")
    assert r.exit_code == 2 and "bad.jsonl, line 1" in r.stderr and "negative" in r.stderr
    r = cli("index", tmp_path / "bad.jsonl", "-o", tmp_path / "i", "--quantization", "int3")
    assert r.exit_code == 2 and "unknown quantization" in r.stderr
    r = cli("index", tmp_path / "absent", "-o", tmp_path / "i")
    assert r.exit_code == 2 and "absent" in r.stderr
    r = cli("search", tmp_path / "i", "--nonsense-option")  # usage errors stay click's
    assert r.exit_code == 2 and "No such option" in r.output


def test_console_script_main_in_a_subprocess(tmp_path):
    """`python -m sparsearch.cli` runs main(): one red error line on stderr, status 2."""
    p = subprocess.run([sys.executable, "-m", "sparsearch.cli", "stats", str(tmp_path / "missing")],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stderr
    assert p.stderr.strip().startswith("error: ") and len(p.stderr.strip().splitlines()) == 1
    assert "no such index directory" in p.stderr and not p.stdout


def test_approximate_search_needs_an_explicit_build_and_writes_nothing(tiny_beir, tmp_path):
    out = tmp_path / "idx"
    assert cli("index", tiny_beir, "--out", out).exit_code == 0
    before = snapshot(out)
    r = cli("search", out, "-q", "programming compiler", "--mode", "approximate")
    assert r.exit_code == 2, r.output
    assert "sparsearch build-approx" in r.stderr and str(out) in r.stderr
    r = cli("evaluate", out, tiny_beir, "--mode", "approximate")
    assert r.exit_code == 2 and "sparsearch build-approx" in r.stderr
    assert snapshot(out) == before  # same files, same mtimes: the read path wrote nothing


def test_anytime_mode_through_the_cli(tiny_beir, tmp_path):
    """--mode anytime without a budget gives the exact hits; with one it still answers; its knobs
    are refused with other modes; the index is not written."""
    out = tmp_path / "idx"
    assert cli("index", tiny_beir, "--out", out).exit_code == 0
    before = snapshot(out)
    exact = cli("search", out, "-q", "programming compiler", "-k", "3", "--json")
    full = cli("search", out, "-q", "programming compiler", "-k", "3", "--json", "--mode", "anytime")
    assert full.exit_code == 0, full.output
    assert json.loads(full.stdout)["hits"] == json.loads(exact.stdout)["hits"]
    r = cli("search", out, "-q", "programming compiler", "-k", "2", "--mode", "anytime", "--max-postings", "3",
            "--budget-ms", "5")
    assert r.exit_code == 0, r.output and "1. " in r.output
    r = cli("evaluate", out, tiny_beir, "--mode", "anytime", "--budget-ms", "50", "--json", tmp_path / "r.json")
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "r.json").read_text())["mode"] == "anytime"
    r = cli("search", out, "-q", "programming", "--max-postings", "3")
    assert r.exit_code == 2 and "apply to anytime search, not exact" in r.stderr
    r = cli("search", out, "-q", "programming", "--mode", "anytime", "--budget-ms", "-1")
    assert r.exit_code == 2 and "budget_ms must be a number > 0" in r.stderr
    assert snapshot(out) == before


def test_approximate_mode_through_the_cli(tiny_beir, tmp_path):
    out = tmp_path / "idx"
    r = cli("index", tiny_beir, "--out", out, "--approximate")
    assert r.exit_code == 0, r.output
    assert "built the approximate index" in r.output and list(out.glob("approx-*"))
    before = snapshot(out)
    r = cli("search", out, "-q", "programming compiler", "-k", "2", "--mode", "approximate",
            "--query-cut", "5", "--heap-factor", "1.0")
    assert r.exit_code == 0, r.output
    assert "1. d6" in r.output
    r = cli("evaluate", out, tiny_beir, "--mode", "approximate", "--json", tmp_path / "r.json")
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["quality"]["nDCG@10"] > 0.8 and report["mode"] == "approximate"
    # documents scored on their heaviest entries, the best rescored whole
    r = cli("search", out, "-q", "programming compiler", "-k", "2", "--mode", "approximate", "--query-cut", "5",
            "--heap-factor", "1.0", "--forward-cut", "2", "--rerank", "5")
    assert r.exit_code == 0 and "1. d6" in r.output, r.output
    r = cli("search", out, "-q", "programming", "--mode", "approximate", "--forward-cut", "2", "--candidates", "5")
    assert r.exit_code == 2 and "forward_cut applies to Seismic's strategy" in r.stderr
    r = cli("search", out, "-q", "programming", "--forward-cut", "2")
    assert r.exit_code == 2 and "forward_cut applies to approximate search" in r.stderr
    r = cli("search", out, "-q", "programming", "--mode", "approximate", "--rerank", "0")
    assert r.exit_code == 2 and "rerank must be an integer" in r.stderr
    assert snapshot(out) == before
    # build-approx rebuilds with other knobs
    r = cli("build-approx", out, "--n-postings", "2", "--pruning", "fixed", "--kmeans-iterations", "0")
    assert r.exit_code == 0, r.output
    r = cli("build-approx", out, "--pruning", "sometimes")
    assert r.exit_code == 2 and "unknown pruning" in r.stderr
    # an index without summaries serves the candidate strategy only
    assert cli("build-approx", out, "--no-summaries").exit_code == 0
    r = cli("search", out, "-q", "programming compiler", "-k", "2", "--mode", "approximate",
            "--query-cut", "50", "--candidates", "100")
    assert r.exit_code == 0, r.output
    assert "1. d6" in r.output
    r = cli("search", out, "-q", "programming compiler", "-k", "2", "--mode", "approximate")  # its own default
    assert r.exit_code == 0 and "1. d6" in r.output, r.output
    r = cli("search", out, "-q", "programming compiler", "--mode", "approximate", "--candidates", "0")
    assert r.exit_code == 2 and "without summaries" in r.stderr
    r = cli("search", out, "-q", "programming", "--candidates", "10")
    assert r.exit_code == 2 and "candidates applies to approximate search" in r.stderr
    r = cli("search", out, "-q", "programming", "--mode", "approximate", "--candidates", "-3")
    assert r.exit_code == 2 and "candidates must be an integer >= 0" in r.stderr
    # a rebuild commits a new generation: the stale approximate index is collected
    assert cli("index", tiny_beir, "--out", out, "--overwrite").exit_code == 0
    assert not list(out.glob("approx-*"))
    r = cli("search", out, "-q", "x", "--mode", "fuzzy")
    assert r.exit_code == 2 and "unknown search mode" in r.stderr
    r = cli("search", out, "-q", "x", "--query-cut", "3")
    assert r.exit_code == 2 and "approximate" in r.stderr


def test_tune_picks_a_setting_that_reaches_the_target_and_saves_it(tiny_beir, tmp_path):
    out = tmp_path / "idx"
    assert cli("index", tiny_beir, "--out", out).exit_code == 0
    queries = tiny_beir / "queries.jsonl"
    r = cli("tune", out, "--queries", queries)
    assert r.exit_code == 2 and "sparsearch build-approx" in r.stderr
    assert cli("build-approx", out).exit_code == 0
    r = cli("tune", out, "--queries", queries, "--target-recall", "1.0", "-k", "3",
            "--query-cuts", "1,5", "--heap-factors", "0.5,1.0", "--forward-cuts", "0,3", "--rerank", "20",
            "--json", tmp_path / "t.json", "--save")
    assert r.exit_code == 0, r.output
    t = json.loads((tmp_path / "t.json").read_text())
    assert len(t["grid"]) == 4 * 2 + 2 * 6 and t["met"] and t["recall"] >= 1.0  # + 6 candidate settings per cut
    assert (f"--query-cut {t['query_cut']} --heap-factor {t['heap_factor']} --candidates {t['candidates']} "
            f"--forward-cut {t['forward_cut']}") in r.output
    assert {(g["forward_cut"], g["rerank"]) for g in t["grid"] if not g["candidates"]} == {(0, 20), (3, 20)}
    assert (out / "settings.json").exists()
    from sparsearch.index.approximate import load_settings

    saved = load_settings(out)
    assert (saved.query_cut, saved.heap_factor, saved.candidates, saved.forward_cut, saved.rerank) == (
        t["query_cut"], t["heap_factor"], t["candidates"], t["forward_cut"], 20)
    r = cli("evaluate", out, tiny_beir, "--mode", "approximate", "--json", tmp_path / "r.json")
    assert r.exit_code == 0, r.output  # the saved setting is the default
    r = cli("tune", out, "--queries", queries, "--target-recall", "1.5")
    assert r.exit_code == 2 and "--target-recall" in r.stderr
    r = cli("tune", out, "--queries", queries, "--query-cuts", "a,b")
    assert r.exit_code == 2 and "comma-separated" in r.stderr
    r = cli("tune", out, "--queries", queries, "--candidates", "0,-5")
    assert r.exit_code == 2 and "candidates and forward cuts >= 0" in r.stderr
    r = cli("tune", out, "--queries", queries, "--forward-cuts", "0,-1")
    assert r.exit_code == 2 and "candidates and forward cuts >= 0" in r.stderr
