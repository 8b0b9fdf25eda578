"""Input ids and terms (issue 15 item 3): a repeated id in a BEIR corpus / queries file or in a
vector JSONL, a vector line without an id, and an empty term are refused naming the file and
line, unless an explicit ``on_duplicate`` policy says which record wins."""

from __future__ import annotations

import json

import pytest

from sparsearch.errors import InvalidInputError
from sparsearch.evaluation import load_beir
from sparsearch.vectors import FormatError, SparseBatch, iter_jsonl_chunks, read_jsonl


def _lines(path, objs):
    path.write_text("".join(json.dumps(o) + "\n" for o in objs))
    return path


def test_vector_jsonl_duplicate_id_is_refused_with_file_and_lines(tmp_path):
    """issue 15 item 3: a repeated vector id used to be silently last-wins."""
    p = _lines(tmp_path / "v.jsonl", [{"id": "a", "vector": {"x": 1.0}}, {"id": "b", "vector": {"y": 1.0}},
                                      {"id": "a", "vector": {"z": 2.0}}])
    with pytest.raises(FormatError, match=r"v\.jsonl, line 3: duplicate id 'a' \(first at line 1\)"):
        read_jsonl(p)
    with pytest.raises(FormatError, match="duplicate id"):  # across chunks too
        list(iter_jsonl_chunks(p, chunk_size=1))
    first = read_jsonl(p, on_duplicate="first")
    assert first.ids == ["a", "b"] and first.row_dict(0) == {"x": 1.0}
    last = read_jsonl(p, on_duplicate="last")
    assert last.ids == ["b", "a"] and last.row_dict(1) == {"z": 2.0}
    with pytest.raises(InvalidInputError, match="on_duplicate"):
        read_jsonl(p, on_duplicate="newest")


@pytest.mark.parametrize("obj, problem", [
    ({"vector": {"x": 1.0}}, "missing 'id'"),
    ({"id": None, "vector": {"x": 1.0}}, "must be a string or an integer"),
    ({"id": "", "vector": {"x": 1.0}}, "empty 'id'"),
    ({"id": "a", "vector": {"": 1.0}}, 'empty term ""'),
])
def test_vector_line_without_id_or_with_empty_term_is_refused(tmp_path, obj, problem):
    """issue 15 item 3: a line without an id used to get its line number; "" was a term."""
    p = _lines(tmp_path / "v.jsonl", [{"id": "ok", "vector": {"x": 1.0}}, obj])
    with pytest.raises(FormatError) as e:
        read_jsonl(p)
    assert "v.jsonl, line 2" in str(e.value) and problem in str(e.value)


def test_empty_term_refused_in_python_vectors():
    """issue 15 item 3: the Python constructor refuses "" as well."""
    with pytest.raises(FormatError, match="empty term"):
        SparseBatch.from_dicts([{"": 1.0}], ids=["a"])


def test_beir_duplicate_ids_are_refused_or_resolved_by_policy(tiny_beir):
    """issue 15 item 3: a repeated corpus/queries ``_id`` used to be silently last-wins."""
    with open(tiny_beir / "corpus.jsonl", "a") as f:
        f.write(json.dumps({"_id": "d2", "title": "Impostor", "text": "replaces dogs"}) + "\n")
    with pytest.raises(FormatError, match=r"corpus\.jsonl, line 7: duplicate _id 'd2' \(first at line 2\)"):
        load_beir(tiny_beir)
    assert load_beir(tiny_beir, on_duplicate="first").corpus["d2"]["title"] == "Dogs"
    ds = load_beir(tiny_beir, on_duplicate="last")
    assert ds.corpus["d2"]["title"] == "Impostor" and list(ds.corpus)[:3] == ["d1", "d2", "d3"]
    (tiny_beir / "corpus.jsonl").write_text((tiny_beir / "corpus.jsonl").read_text().rsplit("\n", 2)[0] + "\n")
    with open(tiny_beir / "queries.jsonl", "a") as f:
        f.write(json.dumps({"_id": "q1", "text": "other"}) + "\n")
    with pytest.raises(FormatError, match=r"queries\.jsonl, line 5: duplicate _id 'q1'"):
        load_beir(tiny_beir)


def test_beir_null_id_is_refused(tiny_beir):
    """issue 15 item 3: ``"_id": null`` used to become the id "None"."""
    with open(tiny_beir / "corpus.jsonl", "a") as f:
        f.write(json.dumps({"_id": None, "text": "x"}) + "\n")
    with pytest.raises(FormatError, match="line 7: '_id' must be a string or an integer"):
        load_beir(tiny_beir)
