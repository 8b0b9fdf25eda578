"""Filters on a Milvus export (issue 17): the metadata fields travel as scalar fields, a filter
translates to a Milvus expression selecting exactly the documents the local filter selects
(random filters; has() refused), and filtered search in Milvus Lite returns what the local
filtered search returns; the same for a hybrid index's export (fused here and by Milvus' RRF),
whose exports from before metadata, or without a sparse representation, refuse filters."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings

pytest.importorskip("pymilvus", reason="the Milvus backend needs pymilvus (pip install 'sparsearch[milvus]')")
pytest.importorskip("milvus_lite", reason="Milvus Lite tests need milvus-lite (pip install 'sparsearch[milvus]')")

from sparsearch.errors import InvalidInputError, UnsupportedError  # noqa: E402
from sparsearch.filters import describe, to_milvus  # noqa: E402
from sparsearch.index.hybrid import HybridQueries, build_hybrid_from_vectors  # noqa: E402
from sparsearch.milvus import MilvusHybridBackend, export  # noqa: E402
from sparsearch.searching import ExactParams, HybridParams  # noqa: E402

from tests.index.test_filtered import corpus, fields, filters, live_mask, synth  # noqa: E402,F401  (corpus: a fixture)

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


# ------------------------------------------------------------------------------ hybrid index
#: more selections than EXPRS: a string expression selecting nothing (counted by Milvus, not folded)
HYBRID_EXPRS = EXPRS + ["year > 3000", 'source = "pubmed" and not (year < 2012)']


@pytest.fixture(scope="module")
def hybrid(tmp_path_factory):
    """A hybrid index whose first representation is dense (so the metadata holder is the second),
    two sparse ones sharing the documents' fields, its queries, and its export."""
    rng = np.random.default_rng(29)
    n = 240
    a, b = synth(rng, n, "d", density=0.12), synth(rng, n, "d", density=0.2)
    emb = rng.standard_normal((n, 8)).astype(np.float32)
    idx = build_hybrid_from_vectors(tmp_path_factory.mktemp("hyb") / "h", a.ids, [("vec", emb), ("s", a), ("s-2", b)],
                                    metadata=fields(rng, n), quantization="float32")
    qids = [f"q{i}" for i in range(6)]
    q = HybridQueries({"vec": rng.standard_normal((6, 8)).astype(np.float32), "s": synth(rng, 6, "q", density=0.25),
                       "s-2": synth(rng, 6, "q", density=0.25)}, qids)
    backend = export(idx, str(tmp_path_factory.mktemp("hlite") / "milvus.db"), "hfiltered", progress=False)
    yield idx, q, backend
    backend.close()


def _same(local: tuple[np.ndarray, np.ndarray], milvus: tuple[np.ndarray, np.ndarray], what: str) -> None:
    """Same shape and padding, scores equal rank by rank (float tolerance), the same documents
    except where their scores tie."""
    (ls, ld), (ms, md) = local, milvus
    assert md.shape == ld.shape, what
    valid = ld >= 0
    assert ((md >= 0) == valid).all(), what
    np.testing.assert_allclose(ms[valid], ls[valid], rtol=1e-5, atol=1e-6, err_msg=what)
    assert (ms[~valid] == ls[~valid]).all(), what  # the padding's scores alike (-inf after a fusion)
    for i in range(len(ld)):
        for j in np.flatnonzero(ld[i] != md[i]):
            tied = np.isclose(ls[i], ls[i, j], rtol=1e-5, atol=1e-6)
            assert md[i, j] in ld[i][tied] or tied[-1], (what, i, j, ld[i], md[i])


def test_a_hybrid_export_carries_the_first_sparse_representations_fields(hybrid):
    idx, _, backend = hybrid
    holder = idx.member("s").searcher
    specs = {sp["name"]: sp for sp in backend.meta["metadata"]}
    assert {n: sp["type"] for n, sp in specs.items()} == holder.metadata.schema and backend.filters
    for doc_id in ("d0", "d17", "d239"):
        row = backend.client.query(backend.collection, filter=f"pk == {idx.docnum(doc_id)}",
                                   output_fields=["doc_id", "m_year", "m_source", "m_tags"])[0]
        doc = holder.document_metadata(holder.docnum(doc_id))
        assert row["doc_id"] == doc_id and row["m_year"] == doc.get("year")
        assert row["m_source"] == (doc["source"][0] if "source" in doc else None)  # a keyword's values are a list
        assert list(row["m_tags"]) == (doc.get("tags") or [])
    for expr in HYBRID_EXPRS:  # Milvus selects exactly what the local mask does
        assert backend.count(backend.milvus_filter(expr)) == int(idx.filter_mask(expr).sum()), expr


@pytest.mark.parametrize("fuse", ["local", "milvus"])
def test_filtered_hybrid_search_equals_the_local_hybrid_index(hybrid, fuse):
    idx, q, backend = hybrid
    for i, expr in enumerate(HYBRID_EXPRS):
        allowed = idx.filter_mask(expr)
        extra = [HybridParams(fusion="rrf", depth=15, filter=expr)]
        if fuse == "local":  # fusions Milvus cannot compute, and an exact search's filter moved to the hybrid
            extra += [HybridParams(filter=expr), HybridParams(fusion="zscore", weights=(0.2, 0.5, 0.3), filter=expr),
                      ExactParams(filter=expr)]
        # every Milvus search costs ~0.1 s: the variants take the filters in turn, and all of them the
        # edge cases (nothing or everything selected)
        edge = not allowed.any() or allowed.all()
        cases = [HybridParams(fusion="rrf", filter=expr)] + (extra if edge else [extra[i % len(extra)]])
        for params in cases:
            got = backend.search(q, 10, params, fuse=fuse)
            _same(idx.search(q, 10, params), got, f"{expr} {params}")
            assert allowed[got[1][got[1] >= 0]].all(), expr
            if not allowed.any():  # nothing selected: one column of padding, as locally
                assert got[1].shape == (len(q), 1) and (got[1] == -1).all(), expr
            elif allowed.all():  # everything selected: the unfiltered search
                _same(idx.search(q, 10, replace(params, filter=None)), got, f"{expr} {params}")


def test_filtered_hybrid_detailed_search_and_runs(hybrid):
    idx, q, backend = hybrid
    expr = 'year >= 2010 and source in ["pubmed", "pmc"]'
    params = HybridParams(depth=20, filter=expr)
    _, _, local, _ = idx.search_detailed(q, 10, params)
    _, _, milvus, _ = backend.search_detailed(q, 10, params)
    for name in idx.names:  # every representation searched among the selected documents only
        _same(local[name], milvus[name], name)
    run, want = backend.search_run(q, 5, params), idx.search_run(q, 5, params)
    for qid in q.ids:
        assert run[qid] == pytest.approx(want[qid], rel=1e-5)


def test_hybrid_filter_errors_are_one_line(hybrid, tmp_path):
    idx, q, backend = hybrid
    with pytest.raises(InvalidInputError, match="unknown field 'yaer'"):
        backend.search(q, 5, HybridParams(filter="yaer > 1"))
    with pytest.raises(UnsupportedError, match=r"has\(\) does not translate"):
        backend.search(q, 5, HybridParams(filter='has("t3")'))
    with pytest.raises(InvalidInputError, match="on HybridParams"):
        backend.search(q, 5, HybridParams(sparse=ExactParams(filter="year > 1")))
    # an export made before hybrid exports carried metadata fields: no "metadata" in its sidecar
    old = MilvusHybridBackend(backend.client, backend.uri, backend.collection,
                              {k: v for k, v in backend.meta.items() if k != "metadata"})
    assert not old.filters
    for params in (HybridParams(filter="year > 1"), ExactParams(filter="true")):
        for fuse in ("local", "milvus"):
            with pytest.raises(UnsupportedError, match="without metadata fields; export the index again") as e:
                old.search(q, 5, params, fuse=fuse)
            assert "\n" not in str(e.value)
    _same(idx.search(q, 5, HybridParams(fusion="rrf")), old.search(q, 5, HybridParams(fusion="rrf")), "unfiltered")


def test_a_dense_only_hybrid_export_refuses_filters(tmp_path):
    rng = np.random.default_rng(3)
    ids = [f"d{i}" for i in range(30)]
    emb = rng.standard_normal((30, 4)).astype(np.float32)
    idx = build_hybrid_from_vectors(tmp_path / "h", ids, [("vec", emb)], metadata=[{"year": 2000 + i} for i in range(30)])
    q = HybridQueries({"vec": emb[:3]}, ["a", "b", "c"])
    with pytest.raises(UnsupportedError, match="filters need a sparse representation"):
        idx.search(q, 5, HybridParams(filter="year > 2010"))  # the local index refuses it too
    with export(idx, str(tmp_path / "m.db"), "dense_only", progress=False) as b:
        assert isinstance(b, MilvusHybridBackend) and b.meta["metadata"] is None and not b.filters
        assert not any(f.startswith("m_") for f in (x["name"] for x in b.client.describe_collection("dense_only")["fields"]))
        for params in (HybridParams(filter="year > 2010"), HybridParams(filter="true"), ExactParams(filter="true")):
            with pytest.raises(UnsupportedError, match="filters need a sparse representation") as e:
                b.search(q, 5, params)
            assert "\n" not in str(e.value) and "only vec" in str(e.value)
        _same(idx.search(q, 5), b.search(q, 5), "unfiltered")
