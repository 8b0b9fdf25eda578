"""The service serving a hybrid index (issue 16): its default fusion, a request's overrides
(validated, 4xx with a message), hits equal to HybridIndex.search with each hit's rank and score
in every representation, highlights from the first sparse representation, timings, fusion with
other indexes, reloads (a new fusion.json, a rebuild), and the web page rendering the ranks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the service needs FastAPI (the 'service' extra)")
pytest.importorskip("httpx", reason="FastAPI's test client needs httpx (the 'test' extra)")

from sparsearch import fusion  # noqa: E402
from sparsearch.encoders import get_encoder  # noqa: E402
from sparsearch.errors import InvalidInputError, MissingExtraError, UnsupportedError  # noqa: E402
from sparsearch.evaluation import to_run  # noqa: E402
from sparsearch.index import Index, build_index  # noqa: E402
from sparsearch.index.dense import DenseIndex  # noqa: E402
from sparsearch.index.hybrid import (DEFAULT_FUSION, HybridIndex, build_hybrid, build_hybrid_from_vectors, make_encoder,  # noqa: E402
                                     save_fusion)
from sparsearch.searching import HybridParams  # noqa: E402
from sparsearch.service import Access, Limits, SearchService, create_app  # noqa: E402
from sparsearch.service.http import STATIC  # noqa: E402

from tests.service.serving import run_page_script  # noqa: E402
from tests.service.test_service import DOCS, local_client  # noqa: E402  (the same eight documents)

REPS = ["bm25", "dense", "bm25-2"]
QUERY = "wolves hunting in packs"


def _texts() -> list[str]:
    return [f"{t} {x}" for t, x in DOCS.values()]


def _rows() -> list[tuple[str, str, str]]:
    return [(i, t, x) for i, (t, x) in DOCS.items()]


@pytest.fixture(scope="module")
def root(tmp_path_factory, torch_one_thread):
    """``hyb``: bm25 + dense (the bundled MiniLM) + bm25 (Robertson) over DOCS; ``plain``: bm25."""
    root = tmp_path_factory.mktemp("hybsvc")
    try:
        dense = make_encoder("dense", cache=False)
        dense.model  # noqa: B018 - loads the model (skip here when the extra is missing)
    except (MissingExtraError, ImportError) as e:
        pytest.skip(f"the dense representation needs the 'dense' extra: {e}")
    build_hybrid(root / "hyb", _texts(), list(DOCS), [("bm25", make_encoder("bm25")), ("dense", dense),
                                                      ("bm25-2", make_encoder("bm25:robertson"))], documents=_rows())
    enc = get_encoder("bm25")
    enc.fit(_texts())
    build_index(enc.encode_documents(_texts(), list(DOCS)), root / "plain", encoder=enc, documents=DOCS)
    return root


@pytest.fixture(scope="module")
def client(root):
    app = create_app({"hyb": root / "hyb", "plain": root / "plain"}, limits=Limits(rate_limit_per_s=0))
    with local_client(app, raise_server_exceptions=False) as c:
        yield c


@pytest.fixture(scope="module")
def hyb(root) -> HybridIndex:
    return HybridIndex.open(root / "hyb")


def _search(client, **body) -> dict:
    r = client.post("/search", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def _expected(idx: HybridIndex, text: str, k: int, params: HybridParams | None = None):
    q = idx.load_encoder().encode_queries([text], ["q"])
    return idx.search_detailed(q, k, params)


def test_hits_equal_the_hybrid_index_with_ranks_per_representation(client, hyb):
    k = len(DOCS)
    res = _search(client, query=QUERY, k=k, indexes=["hyb"])
    scores, docs, per, _ = _expected(hyb, QUERY, k)
    want = [(hyb.doc_ids[d], float(s)) for d, s in zip(docs[0], scores[0]) if d >= 0]
    assert [h["id"] for h in res["hits"]] == [d for d, _ in want]
    assert [h["score"] for h in res["hits"]] == pytest.approx([s for _, s in want], rel=1e-6)
    assert res["fusion"] is None and res["indexes"] == ["hyb"]
    assert res["hybrid"]["hyb"] == {"fusion": DEFAULT_FUSION.fusion, "weights": None, "rrf_k": DEFAULT_FUSION.rrf_k,
                                    "depth": DEFAULT_FUSION.depth, "representations": REPS}
    missing = 0
    for h in res["hits"]:
        assert list(h["representations"]) == REPS
        d = hyb.docnum(h["id"])
        for name, (s, dd) in per.items():
            at = np.flatnonzero(dd[0] == d)
            got = h["representations"][name]
            if len(at):
                assert got["rank"] == int(at[0]) + 1 and got["score"] == pytest.approx(float(s[0, at[0]]), rel=1e-6)
            else:
                assert got == {"rank": None, "score": None}
                missing += 1
    assert missing > 0  # the dense representation returns every document, BM25 only those sharing a term
    assert all(h["representations"]["dense"]["rank"] is not None for h in res["hits"])


def test_title_snippet_and_highlights_come_from_the_shared_store(client):
    res = _search(client, query=QUERY, k=3, indexes=["hyb"], explain=True)
    top = res["hits"][0]
    assert top["id"] == "d3" and top["title"] == "Wolves" and "wolves hunt in packs" in top["snippet"]
    marked = {top["snippet"][a:b].lower() for a, b, _ in top["highlights"]}
    assert {"wolves", "packs"} <= marked  # words mapped to the BM25 representation's stems
    assert [c["term"] for c in top["explanation"]["hyb"]][:1] and {"wolv", "pack"} <= \
        {c["term"] for c in top["explanation"]["hyb"]}


def test_timings_per_representation_and_fusion(client):
    t = _search(client, query=QUERY, k=3, indexes=["hyb"])["timings"]["hyb"]
    assert list(t["representations_ms"]) == REPS and t["fusion_ms"] >= 0
    assert t["encode_ms"] > 0 and t["search_ms"] >= sum(t["representations_ms"].values())


@pytest.mark.parametrize("given,params", [
    ({"fusion": "minmax", "weights": {"dense": 0.0}}, HybridParams(fusion="minmax", weights=(1.0, 0.0, 1.0))),
    ({"fusion": "zscore", "weights": {"bm25": 2, "dense": 1, "bm25-2": 0.5}, "depth": 3},
     HybridParams(fusion="zscore", weights=(2.0, 1.0, 0.5), depth=3)),
    ({"rrf_k": 1, "depth": 2, "weights": {"bm25-2": 3}}, HybridParams(rrf_k=1.0, depth=2, weights=(1.0, 1.0, 3.0))),
    ({"fusion": "rrf", "rrf_k": 0}, HybridParams(fusion="rrf", rrf_k=0.0)),
])
def test_request_overrides_the_fusion(client, hyb, given, params):
    res = _search(client, query=QUERY, k=4, indexes=["hyb"], hybrid=given)
    scores, docs, _, _ = _expected(hyb, QUERY, 4, params)
    assert [h["id"] for h in res["hits"]] == [hyb.doc_ids[d] for d in docs[0] if d >= 0]
    assert [h["score"] for h in res["hits"]] == pytest.approx(scores[0][docs[0] >= 0].tolist(), rel=1e-6)
    used = res["hybrid"]["hyb"]
    assert used["fusion"] == params.fusion and used["depth"] == params.depth and used["rrf_k"] == params.rrf_k
    assert used["weights"] == (None if params.weights is None else dict(zip(REPS, params.weights)))


@pytest.mark.parametrize("body,status,text", [
    ({"hybrid": {"depth": 1001}}, 422, "hybrid.depth"),
    ({"hybrid": {"depth": 0}}, 422, "hybrid.depth"),
    ({"hybrid": {"fusion": "max"}}, 422, "hybrid.fusion"),
    ({"hybrid": {"rrf_k": -1}}, 422, "hybrid.rrf_k"),
    ({"hybrid": {"weights": {"bm25": -1}}}, 422, "hybrid.weights"),
    ({"hybrid": {"weights": {"bm25": "x"}}}, 422, "hybrid.weights"),
    ({"hybrid": {"fuse": "rrf"}}, 422, "hybrid.fuse"),
    ({"hybrid": {"weights": {"nope": 1}}}, 400, "no representation 'nope' (it has bm25, dense, bm25-2)"),
    ({"hybrid": {"weights": {"bm25": 0, "dense": 0, "bm25-2": 0}}}, 400, "sum to 0"),
    ({"hybrid": {"fusion": "rrf"}, "indexes": ["plain"]}, 400, "no searched index is hybrid"),
    ({"mode": "approximate"}, 400, "approximate"),
    ({"query": None, "vector": {"wolv": 1.0}}, 400, "send a 'query' text"),
])
def test_bad_hybrid_requests_are_4xx_with_a_reason(client, body, status, text):
    req = {"query": QUERY, "k": 3, "indexes": ["hyb"], **body}
    r = client.post("/search", json={k: v for k, v in req.items() if v is not None})
    assert r.status_code == status, r.text
    assert text in r.json()["error"], r.text


def test_service_validates_hybrid_options_without_http(root):
    svc = SearchService.open({"hyb": root / "hyb"}, limits=Limits(max_hybrid_depth=50))
    for bad, text in [({"depth": 51}, r"\[1, 50\]"), ({"depth": "9"}, "depth"), ({"weights": [1, 2]}, "weights"),
                      ({"weights": {"bm25": "1"}}, "must be a number"), ({"x": 1}, "no field 'x'"),
                      ({"rrf_k": float("nan")}, "rrf_k")]:
        with pytest.raises(InvalidInputError, match=text):
            svc.search(QUERY, hybrid=bad)
    assert svc.search(QUERY, k=2, hybrid={"depth": 50}).hybrid["hyb"].depth == 50


def test_a_vector_searched_everywhere_skips_the_hybrid_index(client):
    res = _search(client, vector={"wolv": 1.0}, k=3)
    assert res["indexes"] == ["plain"] and any("'hyb'" in w and "query text only" in w for w in res["warnings"])
    assert res["hits"][0]["representations"] == {} and res["hybrid"] == {}


def test_hybrid_fused_with_another_index(client, root, hyb):
    k = 5
    res = _search(client, query=QUERY, k=k)
    assert res["indexes"] == ["hyb", "plain"] and res["fusion"] == "rrf"
    s, d, _, _ = _expected(hyb, QUERY, 100)  # the service fuses each index's top max(k, fusion_depth)
    plain = Index.open(root / "plain")
    runs = [to_run(s, d, hyb.doc_ids, ["q"])["q"], plain.search_run(plain.load_encoder().encode_queries([QUERY]), 100)["0"]]
    want = fusion.ranked(fusion.fuse(runs, "rrf"))[:k]
    assert [h["id"] for h in res["hits"]] == [x for x, _ in want]
    assert [h["score"] for h in res["hits"]] == pytest.approx([x for _, x in want], rel=1e-6)
    top = res["hits"][0]
    assert list(top["representations"]) == [f"hyb/{n}" for n in REPS] and set(top["scores"]) == {"hyb", "plain"}
    assert set(res["timings"]) == {"hyb", "plain"} and res["timings"]["plain"]["representations_ms"] == {}


def test_explain_uses_the_first_sparse_representation(client, hyb):
    r = client.post("/explain", json={"query": QUERY, "doc_id": "d3", "index": "hyb"})
    assert r.status_code == 200, r.text
    e = r.json()
    assert {"wolv", "pack", "hunt"} <= {c["term"] for c in e["contributions"]}
    assert {"wolv", "hunt", "pack"} <= set(e["query_terms"])
    q = hyb.load_encoder().encode_queries([QUERY], ["q"])
    bm25 = hyb.member("bm25").searcher
    s, d = bm25.search(q.parts["bm25"], 1)
    assert hyb.doc_ids[d[0, 0]] == "d3" and e["score"] == pytest.approx(float(s[0, 0]), rel=1e-5)


def test_health_stats_documents_and_no_writes(root):
    app = create_app({"hyb": root / "hyb"}, limits=Limits(rate_limit_per_s=0), access=Access(token="t" * 12))
    with local_client(app, raise_server_exceptions=False) as c:
        h = c.get("/healthz").json()["indexes"]["hyb"]
        assert h["kind"] == "hybrid" and h["documents"] == 8 and h["status"] == "ok"
        assert h["representations"] == [{"name": "bm25", "kind": "sparse"}, {"name": "dense", "kind": "dense"},
                                        {"name": "bm25-2", "kind": "sparse"}]
        st = c.get("/stats")
        assert st.status_code == 200 and str(root) not in st.text
        assert st.json()["indexes"]["hyb"]["kind"] == "hybrid" and set(st.json()["indexes"]["hyb"]["members"]) == set(REPS)
        doc = c.get("/documents/d7").json()
        assert doc["title"] == "Foxes" and doc["stored"] is True
        r = c.post("/documents", json={"documents": [{"id": "x", "text": "new"}]},
                   headers={"Authorization": "Bearer " + "t" * 12})
        assert r.status_code == 400 and "hybrid index, which the service cannot write to" in r.json()["error"]


def _small_hybrid(path: Path, specs: list[str]) -> HybridIndex:
    names = ["bm25", "bm25-2", "bm25-3"][:len(specs)]
    return build_hybrid(path, _texts(), list(DOCS), [(n, make_encoder(s)) for n, s in zip(names, specs)],
                        documents=_rows())


def test_a_new_fusion_setting_and_a_rebuild_are_served_after_reload(tmp_path):
    path = tmp_path / "h"
    _small_hybrid(path, ["bm25", "bm25:robertson"])
    svc = SearchService.open({"h": path}, limits=Limits(reload_interval_s=0, max_hybrid_depth=40))
    assert svc.search(QUERY, k=2).hybrid["h"].fusion == DEFAULT_FUSION.fusion
    save_fusion(path, HybridParams(fusion="minmax", weights=(0.2, 0.8), depth=300))  # tune-fusion --save
    used = svc.search(QUERY, k=2).hybrid["h"]
    assert (used.fusion, used.weights, used.depth) == ("minmax", {"bm25": 0.2, "bm25-2": 0.8}, 40)  # depth bounded
    # a weight the request names replaces the saved one; the others stay
    assert svc.search(QUERY, k=2, hybrid={"weights": {"bm25": 1}}).hybrid["h"].weights == {"bm25": 1.0, "bm25-2": 0.8}
    (path / "fusion.json").unlink()  # its two weights would not fit the rebuild's three representations
    _small_hybrid(path, ["bm25", "bm25:robertson", "bm25"])  # rebuilt with a third representation
    res = svc.search(QUERY, k=2)
    assert res.hybrid["h"].representations == ["bm25", "bm25-2", "bm25-3"] and res.hybrid["h"].fusion == DEFAULT_FUSION.fusion
    assert list(res.hits[0].representations) == ["bm25", "bm25-2", "bm25-3"]
    assert svc.health()["status"] == "ok"


def test_a_directory_that_changes_kind_keeps_the_last_good_state(tmp_path):
    path = tmp_path / "h"
    _small_hybrid(path, ["bm25", "bm25:robertson"])
    svc = SearchService.open({"h": path}, limits=Limits(reload_interval_s=0))
    shutil.rmtree(path)
    enc = get_encoder("bm25")
    enc.fit(_texts())
    build_index(enc.encode_documents(_texts(), list(DOCS)), path, encoder=enc, documents=DOCS)
    assert svc.search(QUERY, k=1).hits[0].representations  # still the hybrid snapshot
    h = svc.health()["indexes"]["h"]
    assert h["status"] == "degraded" and "restart the service" in h["error"]


def test_a_hybrid_without_encoders_or_sparse_representation_says_why(tmp_path):
    build_hybrid_from_vectors(tmp_path / "v", ["a", "b"], [("vec", np.eye(2, 3, dtype=np.float32))])
    svc = SearchService.open({"v": tmp_path / "v"})
    assert svc.served["v"].explains is False and svc.served["v"].hybrid
    with pytest.raises(UnsupportedError, match="'vec' was built from vectors, without an encoder"):
        svc.search(QUERY, indexes=["v"], explain=False)
    with pytest.raises(UnsupportedError, match="explain is not available for 'v'"):
        svc.search(QUERY, indexes=["v"], explain=True)
    with pytest.raises(InvalidInputError, match="no served index has an encoder"):
        svc.search(QUERY)


def test_a_stand_alone_dense_index_is_refused_with_a_reason(tmp_path):
    DenseIndex.build(np.eye(3, 4, dtype=np.float32), ["a", "b", "c"], tmp_path / "dense")
    with pytest.raises(InvalidInputError, match="dense index.*hybrid"):
        SearchService.open({"d": tmp_path / "dense"})


# ------------------------------------------------------------------------------ the web page
def test_page_renders_the_representations(client):
    html = (STATIC / "index.html").read_text()
    assert "function repBadges" in html and "repBadges(h.representations)" in html
    assert 'id="hfusion"' in html and "body.hybrid = {fusion:" in html and "timingText(data.timings)" in html
    page = client.get("/")
    assert page.status_code == 200 and "repBadges" in page.text


def test_page_script_renders_badges_from_the_api(client, tmp_path):
    """The page's own script (run by node against a stub DOM) renders the API's answer: one badge
    per representation with rank and score, and a dash where a representation missed the hit."""
    res = _search(client, query=QUERY, k=len(DOCS), indexes=["hyb"], hybrid={"fusion": "minmax"})
    run = f"\nrender({json.dumps(res)});\nconsole.log(JSON.stringify({{html: els.results.innerHTML, " \
          f"times: timingText({json.dumps(res['timings'])})}}));\n"
    got = run_page_script(tmp_path, run)
    articles = got["html"].split('<article class="hit"')[1:]
    assert len(articles) == len(res["hits"])
    for art, hit in zip(articles, res["hits"]):
        assert art.count('<li class="rep') == len(REPS) and 'aria-label="rank in each representation"' in art
        for name, r in hit["representations"].items():
            if r["rank"] is None:
                assert f'<li class="rep none" title="{name}: not in its top results">{name} –</li>' in art
            else:
                assert f">{name} #{r['rank']}<span class=\"rscore\">{r['score']:.3f}</span>" in art
    assert "fusion" in got["times"] and all(f"{n} " in got["times"] for n in REPS)


def test_cli_serve_takes_a_hybrid_directory_and_names(root, monkeypatch):
    from tests.core.test_cli import cli

    import sparsearch.service as service

    seen = {}
    monkeypatch.setattr(service, "serve", lambda dirs, **kw: seen.update(dirs=dirs, **kw))
    assert cli("serve", str(root / "hyb")).exit_code == 0
    assert seen["dirs"] == [root / "hyb"]
    r = cli("serve", f"h={root / 'hyb'}", str(root / "plain"))
    assert r.exit_code == 0, r.output
    assert seen["dirs"] == {"h": root / "hyb", "plain": root / "plain"}
    r = cli("serve", f"h={root / 'hyb'}", f"h={root / 'plain'}")
    assert r.exit_code == 2 and "given twice" in r.stderr
