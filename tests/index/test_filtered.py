"""Filtered search (issue 17): exact search under a filter equals brute force over the documents
the filter selects (random data, random filters, empty and full selections, deletions, several
segments); the filter masks equal an independent evaluation of the filter on the documents'
fields; approximate, dense and hybrid search keep to the filter; metadata survives build, add,
delete, merge and reopening, and a corrupt metadata file is caught by its checksum."""

from __future__ import annotations

import json
import operator

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sparsearch.errors import CorruptIndexError, InvalidInputError, UnsupportedError
from sparsearch.filters import (And, Cmp, Const, Exists, Has, In, Not, Or, _Date, compile_filter, describe,
                                parse)
from sparsearch.index import ApproximateIndex, Index, build_index
from sparsearch.index.hybrid import HybridQueries, build_hybrid_from_vectors
from sparsearch.index.updates import add_documents, add_texts, delete_documents, merge
from sparsearch.ingest import read_input
from sparsearch.metadata import format_date
from sparsearch.searching import ApproxParams, ExactParams, HybridParams
from sparsearch.vectors import SparseBatch, Vocabulary

V = 40
SOURCES = ["pubmed", "pmc", "arxiv", "web"]
TAGS = ["a", "b", "c", "d"]


def synth(rng, n, prefix, density=0.12):
    m = (rng.random((n, V)) < density) * rng.random((n, V)).astype(np.float32)
    return SparseBatch.from_dense(m, Vocabulary.from_size(V, "t"), [f"{prefix}{i}" for i in range(n)])


def fields(rng, n):
    """Random fields, each missing now and then."""
    out = []
    for _ in range(n):
        d = {"year": int(rng.integers(2000, 2020)), "score": float(np.round(rng.random() * 10, 2)),
             "source": SOURCES[int(rng.integers(len(SOURCES)))],
             "tags": sorted({TAGS[int(j)] for j in rng.integers(0, len(TAGS), int(rng.integers(1, 3)))}),
             "day": format_date(int(rng.integers(16000, 16400))), "ok": bool(rng.random() < 0.5)}
        out.append({k: v for k, v in d.items() if rng.random() > 0.15})
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """An index of three segments (two adds), with deletions in two of them, and its documents'
    vectors and fields by id."""
    rng = np.random.default_rng(17)
    path = tmp_path_factory.mktemp("filtered") / "idx"
    parts = [(synth(rng, n, p), None) for n, p in ((300, "a"), (200, "b"), (40, "c"))]
    parts = [(b, fields(rng, len(b))) for b, _ in parts]
    build_index(parts[0][0], path, metadata=parts[0][1])
    for b, f in parts[1:]:
        add_documents(path, b, metadata=f)
    delete_documents(path, [f"a{i}" for i in range(0, 300, 7)] + [f"b{i}" for i in range(0, 200, 3)])
    index = Index.open(path)
    by_id = {i: f for b, fs in parts for i, f in zip(b.ids, fs)}
    dense = np.vstack([seg.weight_matrix(index.n_terms).toarray() for seg in index.segments])
    return index, [by_id[i] for i in index.doc_ids], dense


# ----------------------------------------------------------------------------- reference
_OPS = {"=": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le, ">": operator.gt,
        ">=": operator.ge}


def _value(v):
    return v.text if isinstance(v, _Date) else v


def reference(node, doc: dict, row: np.ndarray) -> bool:
    """The filter's documented meaning, evaluated on one document's fields and vector."""
    if isinstance(node, And):
        return all(reference(p, doc, row) for p in node.parts)
    if isinstance(node, Or):
        return any(reference(p, doc, row) for p in node.parts)
    if isinstance(node, Not):
        return not reference(node.part, doc, row)
    if isinstance(node, Const):
        return node.value
    if isinstance(node, Has):
        return bool(row[int(node.term[1:])] > 0)
    if node.field not in doc:
        return False
    vals = doc[node.field] if isinstance(doc[node.field], list) else [doc[node.field]]
    if isinstance(node, Exists):
        return True
    if isinstance(node, In):
        hit = any(v in [_value(x) for x in node.values] for v in vals)
        return not hit if node.negate else hit
    if node.op == "!=":
        return not any(v == _value(node.value) for v in vals)
    return any(_OPS[node.op](v, _value(node.value)) for v in vals)


# ----------------------------------------------------------------------------- random filters
def _leaf():
    ops = st.sampled_from(["=", "!=", "<", "<=", ">", ">="])
    year = st.integers(1998, 2021)
    day = st.integers(15990, 16410).map(lambda d: _Date(d, format_date(d)))
    return st.one_of(
        st.builds(lambda o, v: Cmp("year", o, v, 1), ops, year),
        st.builds(lambda o, v: Cmp("score", o, v, 1), ops, st.floats(-1, 11).map(lambda x: round(x, 2))),
        st.builds(lambda o, v: Cmp("source", o, v, 1), ops, st.sampled_from(SOURCES + ["zzz", "a"])),
        st.builds(lambda o, v: Cmp("tags", o, v, 1), st.sampled_from(["=", "!="]), st.sampled_from(TAGS + ["x"])),
        st.builds(lambda o, v: Cmp("day", o, v, 1), ops, day),
        st.builds(lambda o, v: Cmp("ok", o, v, 1), st.sampled_from(["=", "!="]), st.booleans()),
        st.builds(lambda v, n: In("source", tuple(v), n, 1), st.lists(st.sampled_from(SOURCES), max_size=3),
                  st.booleans()),
        st.builds(lambda v, n: In("year", tuple(v), n, 1), st.lists(st.integers(2000, 2020), max_size=4),
                  st.booleans()),
        st.builds(lambda f: Exists(f, 1), st.sampled_from(["year", "score", "source", "tags", "day", "ok"])),
        st.builds(lambda t: Has(f"t{t}", 1), st.integers(0, V - 1)),
        st.builds(Const, st.booleans()),
    )


filters = st.recursive(_leaf(), lambda sub: st.one_of(
    st.builds(lambda a: And(tuple(a)), st.lists(sub, min_size=2, max_size=3)),
    st.builds(lambda a: Or(tuple(a)), st.lists(sub, min_size=2, max_size=3)),
    st.builds(Not, sub)), max_leaves=6)


def _same_tree(a, b) -> bool:
    """Trees equal up to the columns (a parsed tree records where each test starts)."""
    return describe(a) == describe(b)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(node=filters)
def test_filter_mask_equals_reference(corpus, node):
    index, docs, dense = corpus
    expr = describe(node)
    assert _same_tree(parse(expr), node)
    mask = index.filter_mask(expr)
    want = np.array([reference(node, d, row) for d, row in zip(docs, dense)])
    np.testing.assert_array_equal(mask, want, err_msg=expr)


def live_mask(index) -> np.ndarray:
    return np.concatenate([~d if len(d) else np.ones(s.n_docs, bool) for d, s in zip(index.deleted, index.segments)])


#: the ways an exact search can take under a filter: (exhaustive, maxscore_min_docs, allowed_cost);
#: the segments here are small, so MaxScore is forced by a zero size threshold, and scoring the
#: allowed documents one by one (kernels._allowed_one) by a tiny cost (a huge one rules it out)
PATHS = {"exhaustive": (True, None, None), "taat": (False, None, 1e12), "maxscore": (False, 0, 1e12),
         "allowed": (False, None, 1e-9), "allowed-maxscore": (False, 0, 1e-9), "chosen": (False, 0, None)}


def search_by(index, path, q, k, expr, threads=1):
    """``index.search`` under ``expr`` the way ``path`` names (the index's settings restored)."""
    exhaustive, min_docs, cost = PATHS[path]
    try:
        if min_docs is not None:
            index.maxscore_min_docs = min_docs
        if cost is not None:
            index.allowed_cost = cost
        return index.search(q, k, ExactParams(filter=expr, exhaustive=exhaustive, threads=threads), dtype=np.float64)
    finally:
        index.__dict__.pop("maxscore_min_docs", None)
        index.__dict__.pop("allowed_cost", None)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(node=filters, k=st.integers(1, 30), path=st.sampled_from(sorted(PATHS)), seed=st.integers(0, 2**16))
def test_filtered_exact_search_equals_brute_force(corpus, node, k, path, seed):
    index, docs, dense = corpus
    q = synth(np.random.default_rng(seed), 4, "q", density=0.2)
    expr = describe(node)
    allowed = index.filter_mask(expr)
    ok = allowed & live_mask(index)
    scores, got = search_by(index, path, q, k, expr)
    assert got.shape == (4, max(1, min(k, int(ok.sum()))))
    # the reference: every document scored (full-depth exhaustive search, no filter), then only
    # the allowed live ones kept, in the same exact arithmetic and tie order
    every_s, every = index.search(q, index.n_docs, ExactParams(exhaustive=True, threads=1), dtype=np.float64)
    qd = q.to_scipy().toarray()
    for row, row_s, full, full_s, qv in zip(got, scores, every, every_s, qd):
        keep = [(d, s) for d, s in zip(full, full_s) if d >= 0 and ok[d]][:k]
        assert [d for d in row if d >= 0] == [d for d, _ in keep], expr
        np.testing.assert_array_equal(row_s[:len(keep)], [s for _, s in keep])
        # and the scores are the documents' dot products (dequantized weights)
        np.testing.assert_allclose([s for _, s in keep], dense[[d for d, _ in keep]] @ qv, rtol=1e-3, atol=1e-6)
        # no allowed document left out scores above the last one returned
        if keep and len(keep) == k:
            rest = np.setdiff1d(np.flatnonzero(ok), [d for d, _ in keep])
            assert (dense[rest] @ qv <= keep[-1][1] * (1 + 1e-3) + 1e-6).all()


@pytest.mark.parametrize("path", ["allowed-maxscore", "maxscore"])
def test_filtered_batch_on_threads_equals_serial(corpus, path):
    """The batch kernels (queries over threads) give what one query at a time gives."""
    index, _, _ = corpus
    q = synth(np.random.default_rng(5), 9, "q", density=0.2)
    expr = 'year >= 2010 and source in ["pubmed", "web"]'
    one = search_by(index, path, q, 7, expr)
    many = search_by(index, path, q, 7, expr, threads=2)
    np.testing.assert_array_equal(one[1], many[1])
    np.testing.assert_array_equal(one[0], many[0])


def test_filter_plans_are_cached_and_count_the_live_allowed(corpus):
    index, _, _ = corpus
    expr = "year < 2005"
    try:
        index.allowed_cost = 1e-9
        plan = index.plan(expr)
        assert index.plan(expr) is plan
        assert plan.n_allowed == int((index.filter_mask(expr) & live_mask(index)).sum())
        for skip, docs, dele in zip(plan.skips, plan.docs, index.deleted):
            assert docs is not None and (docs == np.flatnonzero(~skip)).all()
            assert (not len(dele) or skip[dele].all()) and (len(skip) or docs.size == len(dele))
        index.allowed_cost = 1e12  # never scored document at a time: no lists kept
        assert all(d is None for d in index.plan(expr).docs)
    finally:
        del index.allowed_cost


@pytest.mark.parametrize("cost", [0.5, 3.0, 24.0])
def test_plan_keeps_allowed_lists_exactly_where_a_query_could_use_them(corpus, cost):
    """A segment's allowed documents are listed (for document-at-a-time scoring) when some query
    would take that way in the kernel (``n_allowed * m * cost <= its postings + n_docs *
    TAAT_DOC_COST``; the single most frequent term is the most favourable query), and only then."""
    from sparsearch.index import kernels

    index, _, _ = corpus
    try:
        index.allowed_cost = cost
        for expr in ("year < 2005", "year < 2010", "ok == true", "true", 'source == "web" and ok == true'):
            plan = index.plan(expr)
            for seg, skip, docs in zip(index.segments, plan.skips, plan.docs):
                n_allowed = seg.n_docs - (int(skip.sum()) if len(skip) else 0)
                df = np.diff(seg.term_post_ptr)
                chosen = [n_allowed * m * cost <= df[t].sum() + seg.n_docs * kernels.TAAT_DOC_COST
                          for m, t in [(1, [j]) for j in range(len(df)) if df[j]] + [(int((df > 0).sum()), df > 0)]]
                assert (docs is not None) == any(chosen), (expr, n_allowed, int(df.max()))
    finally:
        del index.allowed_cost


def test_empty_and_full_selections(corpus):
    index, _, _ = corpus
    q = synth(np.random.default_rng(3), 5, "q", density=0.2)
    s, d = index.search(q, 10, ExactParams(filter="false"))
    assert d.shape == (5, 1) and (d == -1).all()
    s, d = index.search(q, 10, ExactParams(filter="year > 3000"))
    assert (d == -1).all()
    full_s, full_d = index.search(q, 10, ExactParams(filter="true"))
    ref_s, ref_d = index.search(q, 10)
    np.testing.assert_array_equal(full_d, ref_d)
    np.testing.assert_array_equal(full_s, ref_s)
    # a deleted document never comes back, whatever the filter selects
    gone = int(index.bases[0])  # a0 was deleted
    assert index.doc_ids[gone] == "a0" and index.filter_mask("true")[gone]
    _, d = index.search(q, index.n_docs, ExactParams(filter="true"))
    assert gone not in d


def test_k_is_clamped_to_the_allowed_live_documents(corpus):
    index, _, _ = corpus
    q = synth(np.random.default_rng(4), 2, "q", density=0.3)
    mask = index.filter_mask('source = "web" and year < 2003')
    n = int((mask & live_mask(index)).sum())
    assert 0 < n < 60
    _, d = index.search(q, 10_000, ExactParams(filter='source = "web" and year < 2003'))
    assert d.shape == (2, n)


def test_approximate_filtered_search(tmp_path):
    rng = np.random.default_rng(5)
    b = synth(rng, 3000, "d", density=0.1)
    meta = [{"bucket": i % 100} for i in range(3000)]
    index = build_index(b, tmp_path / "i", metadata=meta)
    approx = ApproximateIndex.build(index)
    approx.exact_min = 100
    q = synth(rng, 10, "q", density=0.2)
    for expr in ("bucket < 2", "bucket < 50", "bucket >= 0"):
        mask = index.filter_mask(expr)
        es, ed = index.search(q, 10, ExactParams(filter=expr))
        s, d = approx.search(q, 10, ApproxParams(filter=expr))
        assert all(mask[x] for x in d.ravel() if x >= 0)
        recall = np.mean([len(set(a) & set(e)) / len(set(e)) for a, e in zip(d, ed)])
        assert recall >= 0.8, (expr, recall)
        if mask.sum() <= approx.exact_below():  # small selections are searched exactly
            np.testing.assert_array_equal(d, ed)
    # a quarter of the documents: the lists of twice as many query terms are visited
    seen = []
    real = approx.search_prepared
    approx.search_prepared = lambda *a, **kw: seen.append(a[4].query_cut) or real(*a, **kw)
    approx.search(q, 10, ApproxParams(filter="bucket < 25", query_cut=7))
    approx.search(q, 10, ApproxParams(query_cut=7))
    assert seen == [14, 7]
    # exact parameters through the approximate index keep the filter
    _, d = approx.search(q, 10, ExactParams(filter="bucket = 3"))
    assert index.filter_mask("bucket = 3")[d[d >= 0]].all()


def test_hybrid_and_dense_filtered_search(tmp_path):
    rng = np.random.default_rng(6)
    b = synth(rng, 500, "d", density=0.1)
    emb = rng.normal(size=(500, 8)).astype(np.float32)
    meta = [{"group": ["x", "y", "z"][i % 3]} for i in range(500)]
    h = build_hybrid_from_vectors(tmp_path / "h", b.ids, [("s", b), ("v", emb)], metadata=meta)
    q = synth(rng, 6, "q", density=0.2)
    hq = HybridQueries({"s": q, "v": emb[:6]})
    mask = h.filter_mask('group = "y"')
    assert mask.sum() == 167
    _, d = h.search(hq, 20, HybridParams(filter='group = "y"'))
    assert (d >= 0).all() and mask[d].all()
    _, d = h.search(hq, 20, ExactParams(filter='group = "y"'))  # exact parameters: the filter moves to the hybrid
    assert mask[d[d >= 0]].all()
    # dense search over the allowed rows equals brute force over them
    dense = h.members[1].searcher
    s, d = dense.search(emb[:6], 7, allowed=mask)
    rows = np.flatnonzero(mask)
    sc = emb[:6] @ emb[rows].T
    np.testing.assert_array_equal(d, rows[np.argsort(-sc, axis=1, kind="stable")[:, :7]])
    with pytest.raises(UnsupportedError):
        dense.search(emb[:1], 3, ExactParams(filter='group = "y"'))
    with pytest.raises(InvalidInputError, match="on HybridParams"):
        HybridParams(sparse=ExactParams(filter="true")).check()


def test_unknown_field_and_wrong_literal_are_one_line_errors(corpus):
    index, _, _ = corpus
    with pytest.raises(InvalidInputError, match=r"column 1: unknown field 'yaer' \(the index's metadata fields: "):
        index.filter_mask("yaer > 2000")
    with pytest.raises(InvalidInputError, match=r"column 1: field 'source' is keyword: compare it with a quoted"):
        index.filter_mask("source = 3")
    with pytest.raises(InvalidInputError, match=r"field 'year' is integer: compare it with a number"):
        index.filter_mask('year = "x"')
    with pytest.raises(InvalidInputError, match=r"is bool: use = or !="):
        index.filter_mask("ok < true")
    with pytest.raises(InvalidInputError, match="column 7: expected a value"):
        ExactParams(filter="year >").check()


def test_filter_masks_are_cached_per_generation(corpus):
    index, _, _ = corpus
    a = index.filter_mask("year >= 2010")
    assert index.filter_mask("year >= 2010") is a
    assert not a.flags.writeable


# ----------------------------------------------------------------------------- metadata through updates
def test_metadata_round_trip_build_add_delete_merge_reopen(tmp_path):
    src = tmp_path / "c.jsonl"
    src.write_text("".join(json.dumps({"_id": f"d{i}", "text": f"word{i} common", "metadata": m}) + "\n"
                           for i, m in enumerate([{"year": 2001, "src": "a", "when": "2015-03-01"},
                                                  {"year": 2002, "src": ["a", "b"]}, {}, {"ok": True}])))
    from sparsearch.encoders import get_encoder

    docs = read_input(src)
    enc = get_encoder("bm25")
    enc.fit(docs.encoder_texts())
    path = tmp_path / "i"
    build_index(enc.encode_documents(docs.encoder_texts(), docs.ids), path, encoder=enc, documents=docs.rows())
    index = Index.open(path)
    assert index.metadata.schema == {"year": "integer", "src": "keyword", "when": "date", "ok": "bool"}
    assert index.document_metadata(0) == {"year": 2001, "src": ["a"], "when": "2015-03-01"}
    assert index.document_metadata(2) == {}
    more = tmp_path / "more.jsonl"
    more.write_text(json.dumps({"_id": "n1", "text": "new common", "metadata": {"year": 1999, "lang": "en"}}) + "\n")
    add_texts(path, read_input(more).rows())
    delete_documents(path, ["d1"])
    index = Index.open(path)
    assert index.metadata.schema["lang"] == "keyword" and len(index.segments) == 2
    expect = {"d0": {"year": 2001, "src": ["a"], "when": "2015-03-01"}, "d2": {}, "d3": {"ok": True},
              "n1": {"year": 1999, "lang": ["en"]}}
    for i, want in expect.items():
        assert index.document_metadata(index.docnum(i)) == want
    q = index.load_encoder().encode_queries(["common"])
    _, d = index.search(q, 10, ExactParams(filter="year < 2002 or exists(lang)"))
    assert sorted(index.doc_ids[x] for x in d[0] if x >= 0) == ["d0", "n1"]
    merge(path)
    index = Index.open(path)
    assert len(index.segments) == 1 and index.doc_ids == ["d0", "d2", "d3", "n1"]
    assert {i: index.document_metadata(index.docnum(i)) for i in index.doc_ids} == expect
    # an add whose value has another type than the index's field: file, line and field named
    more.write_text(json.dumps({"_id": "n2", "text": "x", "metadata": {"year": "soon"}}) + "\n")
    with pytest.raises(InvalidInputError, match=r"more\.jsonl, line 1: field 'year' is integer \(its type in the index\)"):
        add_texts(path, read_input(more).rows())


def test_conflicting_types_name_file_line_and_field(tmp_path):
    src = tmp_path / "c.jsonl"
    src.write_text(json.dumps({"_id": "a", "text": "x", "metadata": {"year": 2001}}) + "\n"
                   + json.dumps({"_id": "b", "text": "y", "metadata": {"year": "2001"}}) + "\n")
    docs = read_input(src)
    b = synth(np.random.default_rng(0), 2, "z")
    b.ids = ["a", "b"]
    with pytest.raises(InvalidInputError) as e:
        build_index(b, tmp_path / "i", documents=docs.rows())
    msg = str(e.value)
    assert "\n" not in msg and f"{src}, line 2: field 'year'" in msg and "line 1" in msg
    # declared, the string is refused with the same precision
    with pytest.raises(InvalidInputError, match=r"line 2: field 'year' is integer \(declared\)"):
        build_index(b, tmp_path / "i", documents=docs.rows(), schema="year:integer")
    # declared keyword: a number is not a string
    with pytest.raises(InvalidInputError, match=r"line 1: field 'year' is keyword"):
        build_index(b, tmp_path / "i", documents=docs.rows(), schema={"year": "keyword"})


def test_csv_columns_are_typed_fields(tmp_path):
    src = tmp_path / "c.csv"
    src.write_text("id,text,year,price,src,day,flag\n1,alpha,2001,1.5,pmc,2020-01-02,true\n"
                   "2,beta,2002,2,pubmed,2020-02-03,false\n3,gamma,,3,0123,,\n")
    docs = read_input(src)
    b = synth(np.random.default_rng(0), 3, "z")
    b.ids = docs.ids
    index = build_index(b, tmp_path / "i", documents=docs.rows())
    assert index.metadata.schema == {"year": "integer", "price": "float", "src": "keyword", "day": "date",
                                     "flag": "bool"}
    assert index.document_metadata(2) == {"price": 3.0, "src": ["0123"]}
    assert index.filter_mask("day >= 2020-02-01 or not exists(year)").tolist() == [False, True, True]


def test_corrupt_metadata_is_caught_by_its_checksum(tmp_path):
    b = synth(np.random.default_rng(1), 50, "d")
    build_index(b, tmp_path / "i", metadata=[{"year": 2000 + i} for i in range(50)])
    index = Index.open(tmp_path / "i")
    folder = index.segments[0].path / "metadata"
    f = folder / "c0_values.npy"
    data = bytearray(f.read_bytes())
    data[-3] ^= 0x10
    f.write_bytes(bytes(data))
    with pytest.raises(CorruptIndexError, match=r"c0_values\.npy: checksum mismatch"):
        Index.open(tmp_path / "i").filter_mask("year > 2010")
    # an edit of the metadata header is caught when the index opens (the commit records it)
    header = folder / "segment.json"
    header.write_text(header.read_text().replace('"integer"', '"float"  '))
    with pytest.raises(CorruptIndexError, match="segment.json"):
        Index.open(tmp_path / "i")
