"""The filter language's parser (issue 17) and the metadata typing rules, without an index."""

from __future__ import annotations

import pytest

from sparsearch.errors import InvalidInputError
from sparsearch.filters import (And, Cmp, Concept, Const, Exists, Has, In, Latent, Not, Or, _Date, describe,
                                parse)
from sparsearch.metadata import build_metadata, parse_schema, text_value
from sparsearch.searching import ApproxParams, ExactParams, HybridParams, params_from_dict, params_to_dict


def test_precedence_and_grouping():
    expr = 'year >= 2015 and source in ["pubmed","pmc"] or not exists(author)'
    t = parse(expr)
    assert isinstance(t, Or) and isinstance(t.parts[0], And) and isinstance(t.parts[1], Not)
    assert t.parts[0].parts[0] == Cmp("year", ">=", 2015, 1)
    assert t.parts[0].parts[1] == In("source", ("pubmed", "pmc"), False, expr.index("source") + 1)
    assert t.parts[1].part == Exists("author", expr.index("author") + 1)
    g = parse('(a = 1 or b != "x") and c = true')
    assert isinstance(g, And) and isinstance(g.parts[0], Or) and g.parts[1] == Cmp("c", "=", True, 25)


@pytest.mark.parametrize("expr, want", [
    ("day >= 2015-01-01", Cmp("day", ">=", _Date(16436, "2015-01-01"), 1)),
    ("2010 <= year < 2015", And((Cmp("year", ">=", 2010, 9), Cmp("year", "<", 2015, 9)))),
    ("x == -1.5e3", Cmp("x", "=", -1500.0, 1)),
    ("s = 'it\\'s'", Cmp("s", "=", "it's", 1)),
    ("`odd name` = 1", Cmp("odd name", "=", 1, 1)),
    ("tag not in []", In("tag", (), True, 1)),
    ("year in [2001, 2002,]", In("year", (2001, 2002), False, 1)),
    ('has("cancer")', Has("cancer", 5)),
    ("latent(12) > 0.1", Latent(12, ">", 0.1, 1)),
    ("latent(3)", Latent(3, ">", 0.0, 1)),
    ('concept("cardiology") >= 0.5', Concept("cardiology", ">=", 0.5, 1)),
    ("TRUE", Const(True)),
    ("NOT a = 1 AND b = 2", And((Not(Cmp("a", "=", 1, 5)), Cmp("b", "=", 2, 15)))),
])
def test_parses(expr, want):
    assert parse(expr) == want


@pytest.mark.parametrize("expr", [
    'year >= 2015 and source in ["pubmed", "pmc"]', "not exists(author)", '(a = 1 or b != "x") and c = false',
    "not (a < 2 or b >= 2020-02-29)", 'has("a\\"b")', "`and` = 1", "latent(4) <= 0.25",
])
def test_describe_round_trips(expr):
    t = parse(expr)
    assert describe(parse(describe(t))) == describe(t)


@pytest.mark.parametrize("expr, col, problem", [
    ("year >", 7, "expected a value"),
    ("year = pubmed", 8, "got the name 'pubmed' (quote strings"),
    ("(a = 1", 7, "expected ')'"),
    ("a = 1 b = 2", 7, "expected 'and', 'or' or the end"),
    ("a = 1 and", 10, "expected a field name"),
    ("a ~ 1", 3, "unexpected character '~'"),
    ('a = "open', 5, "unterminated string"),
    ("d > 2015-02-30", 5, "not a valid date"),
    ("a not = 1", 7, "expected 'in' after 'not'"),
    ("latent(x) > 1", 8, "latent() takes a latent number"),
    ("exists(1)", 8, "exists() takes a field name"),
    ("a in [1 2]", 9, "expected ',' or ']'"),
    ('s = "\\q"', 6, "unknown escape"),
])
def test_syntax_errors_name_the_column(expr, col, problem):
    with pytest.raises(InvalidInputError) as e:
        parse(expr)
    msg = str(e.value)
    assert f"column {col}:" in msg and problem in msg and "\n" not in msg


def test_bounds():
    with pytest.raises(InvalidInputError, match="empty filter"):
        parse("   ")
    with pytest.raises(InvalidInputError, match="at most"):
        parse("a = 1 or " * 1000 + "a = 1")
    with pytest.raises(InvalidInputError, match="nested more than"):
        parse("(" * 200 + "a = 1" + ")" * 200)
    with pytest.raises(InvalidInputError, match="nested more than"):
        parse("not " * 200 + "a = 1")


def test_params_carry_the_filter():
    p = ExactParams(filter="year > 1")
    assert params_from_dict(params_to_dict(p)) == p
    a = ApproxParams(query_cut=3, filter='s = "x"')
    assert params_from_dict(params_to_dict(a)) == a
    h = HybridParams(filter="true", sparse=ExactParams())
    assert params_from_dict(params_to_dict(h)) == h
    with pytest.raises(InvalidInputError, match="column 5: expected a value"):
        params_from_dict({"kind": "exact", "filter": "a =="})


# ----------------------------------------------------------------------------- metadata typing
def test_types_are_inferred():
    m = build_metadata([{"i": 1, "f": 1, "s": "x", "d": "2020-01-01", "b": True, "l": ["a", "b"]},
                        {"i": 2, "f": 2.5, "s": "2020-01-01", "d": None, "l": []}, None])
    assert m.schema == {"i": "integer", "f": "float", "s": "keyword", "d": "date", "b": "bool", "l": "keyword"}
    assert m.document(0) == {"i": 1, "f": 1.0, "s": ["x"], "d": "2020-01-01", "b": True, "l": ["a", "b"]}
    assert m.document(1) == {"i": 2, "f": 2.5, "s": ["2020-01-01"]}
    assert m.document(2) == {}


def test_text_cells_are_typed_from_their_text():
    rows = [{"n": text_value("7"), "x": text_value("1.5"), "k": text_value("007"), "b": text_value("TRUE")},
            {"n": text_value("8"), "x": text_value("2"), "k": text_value("abc"), "b": text_value("false")}]
    m = build_metadata(rows)
    assert m.schema == {"n": "integer", "x": "float", "k": "keyword", "b": "bool"}
    assert m.document(0)["k"] == ["007"] and m.document(0)["b"] is True


@pytest.mark.parametrize("records, match", [
    ([{"y": 1}, {"y": "a"}], r"document #1: field 'y' holds a keyword value \(\"a\"\) but document #0 holds a"),
    ([{"y": True}, {"y": 2}], "holds a integer value"),
    ([{"y": [1, 2]}], "a list holds strings only"),
    ([{"y": {"a": 1}}], "unsupported value"),
    ([{"y": float("nan")}], "not a finite number"),
    ([{"bad name": 1}], "metadata field name 'bad name'"),
])
def test_conflicts_and_bad_values(records, match):
    with pytest.raises(InvalidInputError, match=match):
        build_metadata(records)


def test_declared_and_existing_types():
    assert parse_schema("year:integer, src:keyword") == {"year": "integer", "src": "keyword"}
    with pytest.raises(InvalidInputError, match="unknown type 'int'"):
        parse_schema("year:int")
    m = build_metadata([{"y": 1}, None], schema={"y": "float", "z": "date"})
    assert m.schema == {"y": "float", "z": "date"} and m.document(0) == {"y": 1.0}
    with pytest.raises(InvalidInputError, match=r"document 'a': field 'y' is integer \(its type in the index\)"):
        build_metadata([{"y": 1.5}], existing={"y": "integer"}, ids=["a"])
    with pytest.raises(InvalidInputError, match="declared float, but the index stores it as integer"):
        build_metadata([{"y": 1}], schema={"y": "float"}, existing={"y": "integer"})
