"""Filters on a Milvus export (issue 17): the metadata fields travel as scalar fields, a filter
translates to a Milvus expression selecting exactly the documents the local filter selects
(random filters; has() refused), and filtered search in Milvus Lite returns what the local
filtered search returns."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings

pytest.importorskip("pymilvus", reason="the Milvus backend needs pymilvus (pip install 'sparsearch[milvus]')")
pytest.importorskip("milvus_lite", reason="Milvus Lite tests need milvus-lite (pip install 'sparsearch[milvus]')")

from sparsearch.errors import InvalidInputError, UnsupportedError  # noqa: E402
from sparsearch.filters import describe, to_milvus  # noqa: E402
from sparsearch.milvus import export  # noqa: E402
from sparsearch.searching import ExactParams  # noqa: E402

from tests.index.test_filtered import corpus, filters, live_mask, synth  # noqa: E402,F401  (corpus: a fixture)

EXPRS = ['year >= 2010 and source in ["pubmed", "pmc"]', "not (year < 2005)", 'tags = "a" or ok = true',
         'tags != "b"', 'source not in ["web"]', "day >= 2014-01-01 and score < 5.5", "not exists(year)",
         'ok != true', "2003 <= year < 2006", 'source > "b"', "false", "true", "year in []"]


@pytest.fixture(scope="module")
def backend(corpus, tmp_path_factory):  # noqa: F811
    b = export(corpus[0], str(tmp_path_factory.mktemp("lite") / "milvus.db"), "filtered", progress=False)
    yield b
    b.close()


def selected(backend, expr) -> set[int]:
    """The pks the Milvus translation of ``expr`` selects."""
    m = backend.milvus_filter(expr)
    if isinstance(m, bool):
        m = "pk >= 0" if m else "pk < 0"
    return {r["pk"] for r in backend.client.query(backend.collection, filter=m, output_fields=["pk"], limit=16384)}


def test_export_carries_the_fields(corpus, backend):  # noqa: F811
    index = corpus[0]
    specs = {sp["name"]: sp for sp in backend.meta["metadata"]}
    assert {n: sp["type"] for n, sp in specs.items()} == index.metadata.schema
    assert specs["tags"]["multi"] and not specs["source"]["multi"] and specs["year"]["field"] == "m_year"
    d = index.docnum("a1")
    row = backend.client.query(backend.collection, filter=f"pk == {d}", output_fields=["m_year", "m_tags", "m_day"])[0]
    doc = index.document_metadata(d)
    assert row["m_year"] == doc.get("year") and list(row["m_tags"]) == (doc.get("tags") or [])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(node=filters)
def test_translated_filters_select_what_local_filters_select(corpus, backend, node):  # noqa: F811
    index = corpus[0]
    expr = describe(node)
    try:
        got = selected(backend, expr)
    except UnsupportedError:
        assume(False)  # has(): Milvus holds no postings to test
    exported = selected(backend, "true")
    want = index.filter_mask(expr) & live_mask(index)
    assert got == {int(d) for d in np.flatnonzero(want)} & exported, (expr, backend.milvus_filter(expr))


def test_filtered_search_equals_local_filtered_search(corpus, backend):  # noqa: F811
    index = corpus[0]
    q = synth(np.random.default_rng(4), 12, "q", density=0.2)
    for expr in EXPRS:
        ls, ld = index.search(q, 10, ExactParams(filter=expr))
        ms, md = backend.search(q, 10, ExactParams(filter=expr))
        allowed = index.filter_mask(expr)
        for qi in range(len(q)):
            mine, theirs = ld[qi][ld[qi] >= 0], md[qi][md[qi] >= 0]
            assert len(mine) == len(theirs) and allowed[theirs].all(), expr
            np.testing.assert_allclose(ms[qi][:len(theirs)], ls[qi][:len(mine)], rtol=1e-4)
            # the same documents, but for those tied (8-bit impacts) with the last one kept
            if len(mine):
                last = ls[qi][len(mine) - 1]
                above = set(mine[ls[qi][:len(mine)] > last * (1 + 1e-4)].tolist())
                assert above <= set(theirs.tolist()), expr


def test_what_does_not_translate_says_so(backend):
    with pytest.raises(UnsupportedError, match=r"has\(\) does not translate"):
        backend.milvus_filter('has("t3")')
    with pytest.raises(UnsupportedError, match="multi-valued field 'tags'"):
        backend.milvus_filter('tags < "c"')
    with pytest.raises(InvalidInputError, match="unknown field 'yaer'"):
        backend.search(synth(np.random.default_rng(1), 1, "q"), 5, ExactParams(filter="yaer > 1"))
    with pytest.raises(UnsupportedError, match="without metadata fields"):
        type(backend)(backend.client, backend.uri, backend.collection,
                      {k: v for k, v in backend.meta.items() if k != "metadata"}).milvus_filter("year > 1")


def test_translation_guards_every_comparison_against_null():
    fields = {"year": {"type": "integer", "field": "m_year", "multi": False},
              "tags": {"type": "keyword", "field": "m_tags", "multi": True}}
    assert to_milvus("not (year > 2000)", fields) == "not (m_year is not null and m_year > 2000)"
    assert to_milvus('tags not in ["a"] or false', fields) == \
        '(array_length(m_tags) > 0) and not (array_contains_any(m_tags, ["a"]))'
    assert to_milvus("year in [] or true", fields) is True


def test_a_hybrid_export_refuses_filters_instead_of_ignoring_them():
    from sparsearch.milvus import MilvusHybridBackend
    from sparsearch.searching import HybridParams

    b = MilvusHybridBackend.__new__(MilvusHybridBackend)  # no connection needed to refuse
    b.collection = "h"
    for params in (ExactParams(filter="year > 1"), HybridParams(filter="year > 1")):
        with pytest.raises(UnsupportedError, match="carries no metadata fields"):
            b.resolve_params(params)
