"""A new user's own text (issue 15 item 9) and CLI updates (issue 15 item 10, the CLI side).

`sparsearch index` reads a BEIR folder with or without queries/qrels, JSONL documents (told
apart from JSONL vectors), CSV/TSV with a header, a plain text file, and a folder of .txt/.md
files; every malformed record is an error naming file and line, never dropped. `sparsearch add`
/ `delete` / `merge` update an index from the command line.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sparsearch.ingest import ACCEPTED, TextInput, VectorInput, read_input
from sparsearch.vectors import FormatError, SparseBatch
from tests.core.test_cli import cli

DOCS = [("cats", "Cats", "cats are small domesticated carnivorous mammals"),
        ("dogs", "Dogs", "dogs are domesticated descendants of wolves"),
        ("quokka", "Quokka", "the quokka is a small marsupial that smiles")]


def hits(out: str) -> list[str]:
    """Ids of the hits printed by `sparsearch search`, in rank order."""
    return [line.split()[1] for line in out.splitlines() if line.strip()[:1].isdigit() and ". " in line]


def search_ids(idx: Path, q: str, *extra: str) -> list[str]:
    r = cli("search", idx, "-q", q, *extra)
    assert r.exit_code == 0, r.output
    return hits(r.stdout)


def one_line_error(r, *needles: str) -> None:
    assert r.exit_code == 2, r.output
    assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1, r.stderr
    assert "Traceback" not in r.output
    for n in needles:
        assert n in r.stderr, (n, r.stderr)


# ---------------------------------------------------------------- item 9: formats
def test_beir_folder_without_queries_or_qrels(tmp_path):
    """issue 15 item 9: a folder with only corpus.jsonl is a collection (was: 'qrels has no test/dev/train.tsv')."""
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": i, "title": t, "text": x}) + "\n" for i, t, x in DOCS))
    r = cli("index", tmp_path / "c", "-o", tmp_path / "idx")
    assert r.exit_code == 0, r.output
    assert "indexed 3 documents" in r.output
    assert search_ids(tmp_path / "idx", "quokka")[0] == "quokka"


def test_jsonl_documents_are_told_apart_from_vectors(tmp_path):
    """issue 15 item 9: corpus.jsonl passed as a file is read as documents (was: "missing 'vector' field");
    {"id","text","title", metadata...} lines work, and vector lines are still vectors."""
    docs = tmp_path / "corpus.jsonl"
    docs.write_text("".join(json.dumps({"_id": i, "title": t, "text": x}) + "\n" for i, t, x in DOCS))
    assert cli("index", docs, "-o", tmp_path / "a").exit_code == 0
    assert search_ids(tmp_path / "a", "wolves")[0] == "dogs"
    mine = tmp_path / "mine.jsonl"
    mine.write_text("".join(json.dumps({"id": i, "text": x, "title": t, "year": 2024, "tags": ["x"]}) + "\n"
                            for i, t, x in DOCS))
    src = read_input(mine)
    assert isinstance(src, TextInput) and src.ids == ["cats", "dogs", "quokka"] and src.titles[2] == "Quokka"
    vec = tmp_path / "vec.jsonl"
    SparseBatch.from_dicts([{"a": 1.0}], ids=["v"]).write_jsonl(vec)
    assert isinstance(read_input(vec), VectorInput)


def test_csv_and_tsv_with_a_header_and_named_columns(tmp_path):
    """issue 15 item 9: CSV (quoted fields, commas and newlines inside) and TSV with --id/--text/--title-field."""
    (tmp_path / "d.csv").write_text('id,title,text\ncats,Cats,"cats, small and ""domesticated""\nmammals"\n'
                                    'dogs,Dogs,dogs descend from wolves\n')
    assert cli("index", tmp_path / "d.csv", "-o", tmp_path / "c").exit_code == 0
    assert search_ids(tmp_path / "c", "mammals") == ["cats"]
    (tmp_path / "d.tsv").write_text("key\theadline\tbody\tyear\nk1\tCats\tcats purr\t2020\nk2\tDogs\tdogs bark\t2021\n")
    r = cli("index", tmp_path / "d.tsv", "-o", tmp_path / "t", "--id-field", "key", "--text-field", "body",
            "--title-field", "headline")
    assert r.exit_code == 0, r.output
    r = cli("search", tmp_path / "t", "-q", "bark", "--json")
    hit = json.loads(r.stdout)["hits"][0]
    assert (hit["id"], hit["title"]) == ("k2", "Dogs")
    r = cli("index", tmp_path / "d.tsv", "-o", tmp_path / "t2", "--text-field", "nope")
    one_line_error(r, "d.tsv, line 1", "no column 'nope'", "'body'")
    (tmp_path / "nt.csv").write_text("a,b\n1,2\n")
    one_line_error(cli("index", tmp_path / "nt.csv", "-o", tmp_path / "t3"), "no text column", "--text-field")


def test_plain_text_file_one_document_per_line(tmp_path):
    """issue 15 item 9: a .txt file (was: 'malformed JSON'): one document per line, ids = line numbers."""
    (tmp_path / "my.txt").write_text("the cat sat on the mat\n\nquokkas smile at tourists\ndogs bark\n")
    r = cli("index", tmp_path / "my.txt", "-o", tmp_path / "x")
    assert r.exit_code == 0 and "indexed 3 documents" in r.output, r.output
    assert search_ids(tmp_path / "x", "quokkas") == ["3"]  # line 3 (line 2 is blank)


def test_folder_of_text_and_markdown_files(tmp_path):
    """issue 15 item 9: a folder of .txt/.md files, ids = relative paths (hidden files and others skipped)."""
    root = tmp_path / "notes"
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_text("cats purr\nand sleep")
    (root / "sub" / "b.md").write_text("# Dogs\n\ndogs bark loudly")
    (root / "image.png").write_bytes(b"\x89PNG\x00\xff")
    (root / ".hidden.txt").write_text("dogs dogs dogs")
    r = cli("index", root, "-o", tmp_path / "n")
    assert r.exit_code == 0 and "indexed 2 documents" in r.output, r.output
    assert search_ids(tmp_path / "n", "dogs") == ["sub/b.md"]
    (root / "sub" / "bad.txt").write_bytes(b"fine\nnot \xff utf-8\n")
    one_line_error(cli("index", root, "-o", tmp_path / "n2"), "bad.txt, line 2", "not UTF-8")


def test_unknown_input_lists_the_accepted_formats(tmp_path):
    """issue 15 item 9: when nothing matches, one error line lists every accepted format."""
    (tmp_path / "data.bin").write_bytes(b"PK\x03\x04 binary stuff")
    r = cli("index", tmp_path / "data.bin", "-o", tmp_path / "i")
    one_line_error(r, "data.bin", "accepted inputs", "BEIR folder", ".csv or .tsv", ".txt file", "folder of .txt/.md")
    (tmp_path / "empty").mkdir()
    one_line_error(cli("index", tmp_path / "empty", "-o", tmp_path / "i"), "accepted inputs")
    (tmp_path / "odd.jsonl").write_text('{"name": "x"}\n')
    one_line_error(cli("index", tmp_path / "odd.jsonl", "-o", tmp_path / "i"), "odd.jsonl, line 1",
                   "neither a document")
    assert "csv" in ACCEPTED and not (tmp_path / "i").exists()


@pytest.mark.parametrize("line, needle", [
    ('{"_id": "b", "text": 123}', "'text' must be a string, got int"),
    ('{"_id": "b", "title": ["a", "list"], "text": "x"}', "'title' must be a string, got list"),
    ('{"_id": ["b"], "text": "x"}', "'_id' must be a string or an integer"),
    ('{"title": "no id", "text": "x"}', "missing document id"),
    ('{"_id": "", "text": "x"}', "empty document id"),
    ('{"_id": "a", "text": "again"}', "duplicate document id 'a' (first at line 1)"),
    ('{"_id": "b", "text": "x"', "malformed JSON"),
    ('["_id", "b"]', "expected a JSON object"),
    ('{"_id": "b", "vector": {"x": 1}}', "a vector record in a file of text documents"),
])
def test_malformed_beir_records_name_file_and_line(tmp_path, line, needle):
    """issue 15 items 8 and 9: BEIR "text": 123 or a list title (was: TypeError traceback), and every other
    malformed record: one line naming file and line 2, exit 2, and no index left behind."""
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "corpus.jsonl").write_text('{"_id": "a", "title": "A", "text": "fine"}\n' + line + "\n")
    r = cli("index", tmp_path / "c", "-o", tmp_path / "idx")
    one_line_error(r, "corpus.jsonl, line 2", needle)
    assert not (tmp_path / "idx").exists()


def test_malformed_table_and_text_records(tmp_path):
    """issue 15 item 9: a CSV row with the wrong number of columns, a repeated CSV id, a bad UTF-8 line."""
    (tmp_path / "a.csv").write_text("id,text\n1,one\n2,two,extra\n")
    one_line_error(cli("index", tmp_path / "a.csv", "-o", tmp_path / "i"), "a.csv, line 3", "3 columns")
    (tmp_path / "b.csv").write_text('id,text\n1,"one\nstill one"\n1,two\n')
    one_line_error(cli("index", tmp_path / "b.csv", "-o", tmp_path / "i"), "b.csv, line 4", "duplicate document id")
    (tmp_path / "c.txt").write_bytes(b"good line\nbad \xc3\x28 line\n")
    one_line_error(cli("index", tmp_path / "c.txt", "-o", tmp_path / "i"), "c.txt, line 2", "not UTF-8")
    (tmp_path / "blank.txt").write_text("\n  \n")
    one_line_error(cli("index", tmp_path / "blank.txt", "-o", tmp_path / "i"), "no documents")
    with pytest.raises(FormatError, match="a.csv, line 3"):
        read_input(tmp_path / "a.csv")
    assert not (tmp_path / "i").exists()


def test_console_script_indexes_and_searches_a_plain_text_file(tmp_path):
    """issue 15 acceptance: `sparsearch index my.txt --out X && sparsearch search X -q ...` through the
    installed console script, in a subprocess."""
    exe = Path(sys.executable).with_name("sparsearch")
    if not exe.exists():
        pytest.skip(f"no console script next to {sys.executable}")
    (tmp_path / "my.txt").write_text("the cat sat on the mat\nquokkas smile at tourists on rottnest island\n")
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false")
    p = subprocess.run([str(exe), "index", "my.txt", "--out", "X"], cwd=tmp_path, capture_output=True, text=True,
                       timeout=300, env=env)
    assert p.returncode == 0, p.stderr
    p = subprocess.run([str(exe), "search", "X", "-q", "quokka island"], cwd=tmp_path, capture_output=True,
                       text=True, timeout=300, env=env)
    assert p.returncode == 0, p.stderr
    assert hits(p.stdout) == ["2"] and "quokkas smile at tourists" in p.stdout


# ---------------------------------------------------------------- item 10: CLI updates
def test_add_delete_merge_from_the_command_line(tmp_path):
    """issue 15 item 10 (CLI): `sparsearch add IDX FILE` in any input format, `delete IDX ID...`, `merge IDX`."""
    (tmp_path / "my.txt").write_text("cats purr\ndogs bark\nwombats dig burrows\n")
    idx = tmp_path / "idx"
    assert cli("index", tmp_path / "my.txt", "-o", idx).exit_code == 0
    (tmp_path / "more.csv").write_text("id,title,text\nq1,Quokka,cats purr and dig\nw1,Wombat,wombats dig\n")
    r = cli("add", idx, tmp_path / "more.csv")
    assert r.exit_code == 0 and "added 2 documents" in r.output and "5 documents in 2 segments" in r.output, r.output
    assert set(search_ids(idx, "purr")) == {"1", "q1"}
    one_line_error(cli("add", idx, tmp_path / "more.csv"), "'q1' is already in the index", "--replace")
    (tmp_path / "up.jsonl").write_text(json.dumps({"id": "q1", "text": "dogs bark"}) + "\n")
    assert cli("add", idx, tmp_path / "up.jsonl", "--replace").exit_code == 0
    assert set(search_ids(idx, "bark")) == {"2", "q1"} and search_ids(idx, "purr") == ["1"]
    one_line_error(cli("delete", idx, "w1", "nope"), "'nope'")
    assert set(search_ids(idx, "wombats")) == {"3", "w1"}  # nothing was deleted
    r = cli("delete", idx, "w1", "1")
    assert r.exit_code == 0 and "deleted 2 documents" in r.output, r.output
    assert search_ids(idx, "wombats") == ["3"] and search_ids(idx, "purr") == []
    r = cli("merge", idx)
    assert r.exit_code == 0 and "into 1" in r.output and "3 live documents" in r.output, r.output
    assert json.loads(cli("stats", idx).stdout)["n_segments"] == 1
    assert set(search_ids(idx, "bark")) == {"2", "q1"}


def test_add_vectors_and_refuse_texts_on_a_vector_index(tmp_path):
    """issue 15 item 10 (CLI): vectors are added with add_documents; texts into an index without an
    encoder are refused with a clear message."""
    SparseBatch.from_dicts([{"a": 1.0}, {"b": 2.0}], ids=["x", "y"]).write_jsonl(tmp_path / "v.jsonl")
    assert cli("index", tmp_path / "v.jsonl", "-o", tmp_path / "i").exit_code == 0
    SparseBatch.from_dicts([{"c": 1.0}], ids=["z"]).write_jsonl(tmp_path / "w.jsonl")
    r = cli("add", tmp_path / "i", tmp_path / "w.jsonl")
    assert r.exit_code == 0 and "3 documents" in r.output, r.output
    (tmp_path / "t.txt").write_text("some text\n")
    one_line_error(cli("add", tmp_path / "i", tmp_path / "t.txt"), "no encoder", "add vectors")
