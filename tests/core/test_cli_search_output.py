"""`sparsearch search` shows what was found, not only ids (issue 15 item 11): each hit's title and a
short snippet of its stored text (the window around the query's words), and with --json one JSON
object per query with rank, id, score, title and snippet for scripts."""

import json

from sparsearch.vectors import SparseBatch
from tests.core.test_cli import cli


def test_search_prints_titles_and_snippets(tiny_beir, tmp_path):
    """issue 15 item 11: titles and a snippet under each hit (was: only `1. d6  0.1234`)."""
    assert cli("index", tiny_beir, "-o", tmp_path / "idx").exit_code == 0
    r = cli("search", tmp_path / "idx", "-q", "programming compiler", "-k", "2")
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    first = next(i for i, line in enumerate(lines) if "1. d6" in line)
    assert lines[first].rstrip().endswith("Compilers")
    assert "a compiler translates a programming language into machine code" in lines[first + 1]


def test_snippet_is_a_window_around_the_matches(tmp_path):
    """issue 15 item 11: a long document shows a short window holding the query's words, not its start."""
    long = " ".join(["filler"] * 200) + " the quokka smiles at tourists " + " ".join(["padding"] * 200)
    (tmp_path / "c.jsonl").write_text(json.dumps({"id": "long", "title": "Long one", "text": long}) + "\n"
                                      + json.dumps({"id": "other", "text": "nothing here"}) + "\n")
    assert cli("index", tmp_path / "c.jsonl", "-o", tmp_path / "idx").exit_code == 0
    r = cli("search", tmp_path / "idx", "-q", "quokka", "--json")
    assert r.exit_code == 0, r.output
    hit = json.loads(r.stdout)["hits"][0]
    assert hit["id"] == "long" and hit["title"] == "Long one"
    assert "quokka smiles" in hit["snippet"] and len(hit["snippet"].split()) < 40
    assert hit["snippet"].startswith("…") and hit["snippet"].endswith("…")


def test_search_json_one_object_per_query(tiny_beir, tmp_path):
    """issue 15 item 11: --json prints one JSON object per query with hits: rank, id, score, title, snippet."""
    assert cli("index", tiny_beir, "-o", tmp_path / "idx").exit_code == 0
    r = cli("search", tmp_path / "idx", "-q", "domesticated cats", "-q", "wolves", "-k", "3", "--json", "--explain")
    assert r.exit_code == 0, r.output
    objs = [json.loads(line) for line in r.stdout.splitlines()]
    assert [o["query"] for o in objs] == ["domesticated cats", "wolves"]
    h = objs[0]["hits"][0]
    assert {"rank", "id", "score", "title", "snippet", "explanation"} <= set(h)
    assert (h["rank"], h["id"], h["title"]) == (1, "d1", "Cats") and h["score"] > 0
    assert "cats are small domesticated" in h["snippet"]
    assert [x["rank"] for x in objs[0]["hits"]] == list(range(1, len(objs[0]["hits"]) + 1))


def test_search_json_on_an_index_without_texts(tmp_path):
    """issue 15 item 11: an index of ready vectors has no stored texts: title and snippet are null."""
    SparseBatch.from_dicts([{"a": 1.0}, {"b": 2.0}], ids=["x", "y"]).write_jsonl(tmp_path / "d.jsonl")
    SparseBatch.from_dicts([{"b": 1.0}], ids=["q"]).write_jsonl(tmp_path / "q.jsonl")
    assert cli("index", tmp_path / "d.jsonl", "-o", tmp_path / "i").exit_code == 0
    r = cli("search", tmp_path / "i", "--queries", tmp_path / "q.jsonl", "--json")
    assert r.exit_code == 0, r.output
    obj = json.loads(r.stdout)
    assert obj["query_id"] == "q" and obj["hits"] == [{"rank": 1, "id": "y", "score": obj["hits"][0]["score"],
                                                      "title": None, "snippet": None}]
