"""Filters end to end (issue 17): ``sparsearch index`` keeps a BEIR corpus's metadata, ``search``
and ``evaluate`` take ``--filter``, the HTTP service takes a ``filter`` field; bad filters are
one-line errors (exit 2) and 400s that say where the problem is."""

from __future__ import annotations

import json

import pytest

from tests.core.test_cli import cli

DOCS = [
    ("d1", "Cats", "cats are small domesticated carnivorous mammals", {"year": 2001, "kind": ["animal", "pet"]}),
    ("d2", "Dogs", "dogs are domesticated descendants of wolves", {"year": 2012, "kind": ["animal", "pet"]}),
    ("d3", "Wolves", "the wolf is a large canine, wolves hunt", {"year": 2018, "kind": "animal"}),
    ("d4", "Python", "python is a programming language", {"year": 2020, "kind": "software"}),
    ("d5", "Snakes", "pythons are large constricting snakes", {"kind": "animal"}),
]


@pytest.fixture
def collection(tmp_path):
    root = tmp_path / "coll"
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps({"_id": i, "title": t, "text": x, "metadata": m}) + "\n"
                                               for i, t, x, m in DOCS))
    (root / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "domesticated wolves python"}) + "\n")
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td2\t1\nq1\td4\t1\n")
    return root


def _ids(out: str) -> list[str]:
    return [h["id"] for line in out.splitlines() if line.startswith("{") for h in json.loads(line)["hits"]]


def test_cli_search_and_evaluate_with_filter(collection, tmp_path):
    idx = tmp_path / "idx"
    r = cli("index", collection, "-o", idx)
    assert r.exit_code == 0, r.output
    q = "domesticated wolves python snakes"
    r = cli("search", idx, "-q", q, "--json")
    assert set(_ids(r.stdout)) == {"d1", "d2", "d3", "d4", "d5"}
    r = cli("search", idx, "-q", q, "--json", "--filter", 'year >= 2010 and kind = "animal"')
    assert r.exit_code == 0, r.output
    assert _ids(r.stdout) and set(_ids(r.stdout)) == {"d2", "d3"}
    r = cli("search", idx, "-q", q, "--json", "--filter", "not exists(year)")
    assert _ids(r.stdout) == ["d5"]
    r = cli("search", idx, "-q", q, "--json", "--filter", 'has("python")')  # the indexed (stemmed) term
    assert set(_ids(r.stdout)) == {"d4", "d5"}
    r = cli("evaluate", idx, collection, "--json", tmp_path / "rep.json", "--filter", "year > 2015")
    assert r.exit_code == 0, r.output
    # d2 (judged relevant) is filtered out: recall is at most one half
    assert json.loads((tmp_path / "rep.json").read_text())["quality"]["R@100"] <= 0.5


@pytest.mark.parametrize("expr, says", [
    ("year >", "column 7: expected a value"),
    ("yeer > 1", "unknown field 'yeer' (the index's metadata fields: kind, year)"),
    ('year = "x"', "field 'year' is integer: compare it with a number"),
])
def test_cli_bad_filter_is_one_line(collection, tmp_path, expr, says):
    idx = tmp_path / "idx"
    assert cli("index", collection, "-o", idx).exit_code == 0
    r = cli("search", idx, "-q", "cats", "--filter", expr)
    assert r.exit_code == 2 and says in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.output


def test_http_filter_field(collection, tmp_path):
    pytest.importorskip("fastapi", reason="the service needs FastAPI (the 'service' extra)")
    pytest.importorskip("httpx", reason="FastAPI's test client needs httpx (the 'test' extra)")
    from fastapi.testclient import TestClient

    from sparsearch.service import Limits, create_app

    idx = tmp_path / "idx"
    assert cli("index", collection, "-o", idx).exit_code == 0
    app = create_app([idx], limits=Limits(rate_limit_per_s=0))
    with TestClient(app, base_url="http://localhost", raise_server_exceptions=False) as c:
        body = {"query": "domesticated wolves python snakes", "k": 10}
        r = c.post("/search", json={**body, "filter": 'kind in ["pet"] or year >= 2020'})
        assert r.status_code == 200, r.text
        assert {h["id"] for h in r.json()["hits"]} == {"d1", "d2", "d4"}
        r = c.post("/search", json={**body, "filter": "year >"})
        assert r.status_code == 400 and "column 7" in r.json()["error"], r.text
        r = c.post("/search", json={**body, "filter": "colour = 1"})
        assert r.status_code == 400 and "unknown field 'colour'" in r.json()["error"], r.text
        r = c.post("/search", json={**body, "filter": ""})
        assert r.status_code == 422, r.text
        r = c.post("/search", json={**body, "filter": 3})
        assert r.status_code == 422, r.text


def test_cli_schema_declares_field_types_on_index_and_add(tmp_path):
    """CSV cells are typed from their text unless declared: "007" is the integer 7, or with
    --schema code:keyword the string "007"; add declares a new field; a bad schema is one line."""
    data = tmp_path / "docs.csv"
    data.write_text("id,text,code,year\nd1,red apples,007,2001\nd2,green apples,7,2002\n")
    idx = tmp_path / "idx"
    r = cli("index", data, "-o", idx, "--schema", "code:keyword, year:integer")
    assert r.exit_code == 0, r.output
    r = cli("search", idx, "-q", "apples", "--json", "--filter", 'code = "007"')
    assert r.exit_code == 0, r.output
    assert _ids(r.stdout) == ["d1"]
    more = tmp_path / "more.csv"
    more.write_text("id,text,code,rank\nd3,apples again,7,1.5\n")
    r = cli("add", idx, more, "--schema", "rank:float")
    assert r.exit_code == 0, r.output
    r = cli("search", idx, "-q", "apples", "--json", "--filter", 'rank >= 1 and code = "7"')
    assert _ids(r.stdout) == ["d3"]
    r = cli("index", data, "-o", tmp_path / "bad", "--schema", "code:text")
    assert r.exit_code == 2 and "unknown type 'text'" in r.output and not (tmp_path / "bad").exists()
    r = cli("add", idx, more, "--schema", "code:integer", "--replace")
    assert r.exit_code == 2 and "declared integer, but the index stores it as keyword" in r.output


def test_cli_explain_names_the_latents_of_a_sparse_coding_index(tmp_path, monkeypatch):
    """A CSR index's hits explain themselves by latent and its label (its first words), and a
    concept filter keeps the documents of that latent."""
    import numpy as np

    from sparsearch.features import FeatureLabels
    from sparsearch.index import Index, build_index
    from sparsearch.vectors import SparseBatch, Vocabulary

    codes = np.array([[2.0, 0, 0.1], [0, 1.5, 0.1], [1.0, 0, 0.2]], np.float32)
    build_index(SparseBatch.from_dense(codes, Vocabulary.from_size(3, "f"), ["heart", "lung", "valve"]),
                tmp_path / "csr")
    labels = FeatureLabels([[("cardiology", 1.0), ("heart", 0.5)], [("pulmonary", 1.0)], [("study", 1.0)]])
    monkeypatch.setattr(Index, "feature_labels", lambda self: labels)
    (tmp_path / "q.jsonl").write_text(json.dumps({"id": "q", "vector": {"f0": 1.0, "f2": 1.0}}) + "\n")
    r = cli("search", tmp_path / "csr", "--queries", tmp_path / "q.jsonl", "--explain", "--json",
            "--filter", 'concept("cardiology")')
    assert r.exit_code == 0, r.output
    hits = json.loads(r.stdout.splitlines()[0])["hits"]
    assert [h["id"] for h in hits] == ["heart", "valve"]
    assert hits[0]["explanation"][0] == {"term": "f0", "label": "cardiology, heart", "contribution": 2.0}
    r = cli("search", tmp_path / "csr", "--queries", tmp_path / "q.jsonl", "--explain")
    assert "f0 (cardiology, heart)=2.000" in r.stdout
