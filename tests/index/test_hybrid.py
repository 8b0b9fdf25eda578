"""Hybrid index: several representations in one directory, searched together and fused.

The fused results must equal a brute-force fusion (``sparsearch.fusion.rrf`` / ``convex`` over
``{query: {doc: score}}`` runs) of each representation's own exact run cut at the same depth;
the index must commit atomically (see test_crash_safety.py for the SIGKILL test) and refuse
malformed input with one-line errors.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from sparsearch.errors import ConflictError, CorruptIndexError, InvalidInputError, NotFoundError, UnsupportedError
from sparsearch.fusion import convex, fuse_topk, rrf, tune_fusion, weight_grid
from sparsearch.index import ApproximateIndex, Index
from sparsearch.index.dense import DenseIndex
from sparsearch.index.hybrid import (HybridIndex, HybridQueries, build_hybrid, build_hybrid_from_vectors,
                                     load_fusion, make_encoder, member_names, open_searcher, save_fusion,
                                     tune_index_fusion)
from sparsearch.searching import ApproxParams, ExactParams, HybridParams, params_from_dict, params_to_dict
from sparsearch.vectors import SparseBatch, Vocabulary
from tests.core.test_cli import cli

N, V, D = 300, 80, 16


def _sparse(rng: np.random.Generator, n: int, ids: list[str], density: float = 0.08) -> SparseBatch:
    dense = rng.random((n, V)) * (rng.random((n, V)) < density)
    indptr, indices, values = [0], [], []
    for row in dense:
        nz = np.flatnonzero(row)
        indices += nz.tolist()
        values += row[nz].tolist()
        indptr.append(len(indices))
    return SparseBatch(np.array(indptr, np.int64), np.array(indices, np.int32), np.array(values, np.float32),
                       Vocabulary([f"t{i}" for i in range(V)]), ids)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    rng = np.random.default_rng(7)
    ids = [f"d{i:05d}" for i in range(N)]  # zero-padded: id order = doc-number order (ties agree)
    a, b = _sparse(rng, N, ids), _sparse(rng, N, ids, 0.15)
    emb = rng.standard_normal((N, D)).astype(np.float32)
    qids = [f"q{i}" for i in range(25)]
    qa, qb = _sparse(rng, 25, qids, 0.2), _sparse(rng, 25, qids, 0.2)
    qd = rng.standard_normal((25, D)).astype(np.float32)
    path = tmp_path_factory.mktemp("hyb") / "h"
    docs = {i: (f"title {i}", f"text of {i}") for i in ids}
    idx = build_hybrid_from_vectors(path, ids, [("a", a), ("b", b), ("vec", emb)], documents=docs,
                                    quantization="float32")
    return {"idx": idx, "path": path, "ids": ids, "q": HybridQueries({"a": qa, "b": qb, "vec": qd}, qids),
            "parts": (a, b, emb)}


def _runs(idx: HybridIndex, q: HybridQueries, depth: int) -> list[dict]:
    out = []
    for m in idx.members:
        s, d = m.searcher.search(q.parts[m.name], depth, ExactParams())
        out.append({qid: {idx.doc_ids[x]: float(v) for x, v in zip(d[i], s[i]) if x >= 0}
                    for i, qid in enumerate(q.ids)})
    return out


@pytest.mark.parametrize("fusion,weights", [("rrf", None), ("rrf", (0.2, 0.3, 0.5)), ("minmax", None),
                                            ("zscore", (0.5, 0.1, 0.4)), ("minmax", (0.0, 1.0, 1.0))])
@pytest.mark.parametrize("depth", [10, 40, 1000])
def test_hybrid_equals_brute_force_fusion(data, fusion, weights, depth):
    idx, q = data["idx"], data["q"]
    k = 10
    scores, docs = idx.search(q, k, HybridParams(fusion=fusion, weights=weights, depth=depth, rrf_k=60.0))
    runs = _runs(idx, q, max(depth, k))
    w = list(weights) if weights is not None else [1.0] * 3
    ref = rrf(runs, 60.0, w) if fusion == "rrf" else convex(runs, [x / sum(w) for x in w], fusion)
    for i, qid in enumerate(q.ids):
        expect = sorted(ref[qid].items(), key=lambda x: (-x[1], x[0]))[:k]
        got = [(idx.doc_ids[d], float(s)) for d, s in zip(docs[i], scores[i]) if d >= 0]
        assert [d for d, _ in got] == [d for d, _ in expect], (qid, got[:3], expect[:3])
        np.testing.assert_allclose([s for _, s in got], [s for _, s in expect], rtol=1e-5, atol=1e-6)


def test_single_representation_results_pass_through(data, tmp_path):
    a = data["parts"][0]
    idx = build_hybrid_from_vectors(tmp_path / "one", data["ids"], [("a", a)], quantization="float32")
    q = HybridQueries({"a": data["q"].parts["a"]}, data["q"].ids)
    s, d = idx.search(q, 10)
    s2, d2 = Index.open(idx.member("a").searcher.path).search(data["q"].parts["a"], 10)
    np.testing.assert_array_equal(d, d2)
    np.testing.assert_allclose(s, s2)


def test_fuse_topk_pads_and_validates():
    s = np.array([[3.0, 2.0, -np.inf]], np.float32)
    d = np.array([[4, 1, -1]])
    fs, fd = fuse_topk([(s, d), (s[:, :1], d[:, :1])], 5)
    assert fd[0, :2].tolist() == [4, 1] and fd[0, 2:].tolist() == [-1, -1, -1]
    assert np.isneginf(fs[0, 2:]).all()
    with pytest.raises(InvalidInputError):
        fuse_topk([(s, d)], 5, "nope")
    with pytest.raises(InvalidInputError):
        fuse_topk([(s, d), (s, d)], 5, "rrf", [1.0])
    with pytest.raises(InvalidInputError):
        fuse_topk([(s, d), (s[:0], d[:0])], 5)


def test_weight_grid_sums_to_one():
    g = weight_grid(3, 0.25)
    assert len(g) == 15 and all(abs(sum(w) - 1) < 1e-9 for w in g)
    assert weight_grid(1) == [(1.0,)]


def test_open_searcher_dispatches(data):
    assert isinstance(open_searcher(data["path"]), HybridIndex)
    assert isinstance(open_searcher(data["idx"].member("a").searcher.path), Index)
    assert isinstance(open_searcher(data["idx"].member("vec").searcher.path), DenseIndex)
    with pytest.raises(UnsupportedError, match="hybrid"):
        Index.open(data["path"])


def test_stats_and_documents(data):
    st = data["idx"].stats()
    assert st["kind"] == "hybrid" and st["representations"] == ["a", "b", "vec"]
    assert set(st["members"]) == {"a", "b", "vec"} and st["n_docs"] == N
    assert st["members"]["vec"]["kind"] == "dense"


def test_params_check_and_round_trip(data):
    p = HybridParams(fusion="zscore", weights=(1.0, 2.0, 0.5), depth=50, sparse=ApproxParams(query_cut=3))
    assert params_from_dict(json.loads(json.dumps(params_to_dict(p)))) == p
    for bad in (dict(fusion="max"), dict(weights=(-1.0, 1.0, 1.0)), dict(weights=(0.0, 0.0, 0.0)), dict(depth=0),
                dict(rrf_k=float("nan"))):
        with pytest.raises(InvalidInputError):
            HybridParams(**bad).check()
    with pytest.raises(InvalidInputError, match="3 representations"):
        data["idx"].search(data["q"], 10, HybridParams(weights=(1.0, 1.0)))
    with pytest.raises(InvalidInputError, match="HybridQueries"):
        data["idx"].search(data["q"].parts["a"], 10)
    with pytest.raises(InvalidInputError, match="no 'vec' part"):
        data["idx"].search(HybridQueries({"a": data["q"].parts["a"], "b": data["q"].parts["b"]}), 10)


def test_approximate_search_needs_the_members_approximate_indexes(tmp_path, data):
    a, b, _ = data["parts"]
    idx = build_hybrid_from_vectors(tmp_path / "h", data["ids"], [("a", a), ("b", b)])
    q = HybridQueries({"a": data["q"].parts["a"], "b": data["q"].parts["b"]}, data["q"].ids)
    with pytest.raises(NotFoundError, match=f"build-approx {idx.path}"):
        idx.search(q, 10, ApproxParams())
    for m in idx.members:
        ApproximateIndex.build(m.searcher, save=True)
    s, d = HybridIndex.open(idx.path).search(q, 10, ApproxParams(query_cut=50, heap_factor=1.0))
    se, de = idx.search(q, 10)
    assert (d >= 0).all() and np.mean([len(set(x) & set(y)) / 10 for x, y in zip(d, de)]) > 0.8


def test_exact_params_apply_to_sparse_members(data):
    s1, d1 = data["idx"].search(data["q"], 10, ExactParams(exhaustive=True))
    s2, d2 = data["idx"].search(data["q"], 10)
    np.testing.assert_array_equal(d1, d2)


def test_saved_fusion_is_the_default(tmp_path, data):
    idx = build_hybrid_from_vectors(tmp_path / "h", data["ids"], [("a", data["parts"][0]), ("vec", data["parts"][2])])
    assert load_fusion(idx.path) is None
    chosen = HybridParams(fusion="minmax", weights=(0.3, 0.7), depth=50)
    save_fusion(idx.path, chosen, {"split": "train"})
    assert HybridIndex.open(idx.path).default_params() == chosen
    raw = json.loads((idx.path / "fusion.json").read_text())
    raw["params"]["depth"] = 51  # an edit breaks the seal
    (idx.path / "fusion.json").write_text(json.dumps(raw))
    with pytest.raises(CorruptIndexError, match="fusion.json"):
        load_fusion(idx.path)


def test_tune_fusion_prefers_the_informative_representation(tmp_path):
    rng = np.random.default_rng(3)
    n = 200
    ids = [f"d{i:04d}" for i in range(n)]
    good = rng.standard_normal((n, 8)).astype(np.float32)
    good /= np.linalg.norm(good, axis=1, keepdims=True)  # inner product = cosine: doc i is query i's best
    noise = rng.standard_normal((n, 8)).astype(np.float32)
    idx = build_hybrid_from_vectors(tmp_path / "h", ids, [("good", good), ("noise", noise)])
    qv = good[:40] + 0.05 * rng.standard_normal((40, 8)).astype(np.float32)  # query i should find doc i
    q = HybridQueries({"good": qv, "noise": rng.standard_normal((40, 8)).astype(np.float32)},
                      [f"q{i}" for i in range(40)])
    qrels = {f"q{i}": {ids[i]: 1} for i in range(40)}
    params, choice = tune_index_fusion(idx, q, qrels, step=0.25)
    assert params.weights[0] > params.weights[1] and choice.score > 0.9
    assert len(choice.table) == 3 * len(weight_grid(2, 0.25))
    with pytest.raises(InvalidInputError, match="judged"):
        tune_fusion([(np.zeros((1, 1)), np.zeros((1, 1), np.int64))], ids, ["x"], qrels)


def test_build_refuses_bad_input(tmp_path, data):
    a = data["parts"][0]
    with pytest.raises(InvalidInputError, match="repeat"):
        build_hybrid_from_vectors(tmp_path / "x", data["ids"], [("a", a), ("a", a)])
    with pytest.raises(InvalidInputError, match="ids differ"):
        build_hybrid_from_vectors(tmp_path / "x", data["ids"][::-1], [("a", a)])
    with pytest.raises(InvalidInputError, match="name"):
        build_hybrid_from_vectors(tmp_path / "x", data["ids"], [("a/b", a)])
    build_hybrid_from_vectors(tmp_path / "y", data["ids"], [("a", a)])
    with pytest.raises(ConflictError):
        build_hybrid_from_vectors(tmp_path / "y", data["ids"], [("a", a)], overwrite=False)
    assert not any(p.name.startswith("rep-") for p in (tmp_path / "x").glob("*")) if (tmp_path / "x").exists() else True


def test_overwrite_replaces_and_collects_old_representations(tmp_path, data):
    a, b, _ = data["parts"]
    p = tmp_path / "h"
    build_hybrid_from_vectors(p, data["ids"], [("a", a), ("b", b)])
    old = {e.name for e in p.iterdir() if e.name.startswith("rep-")}
    idx = build_hybrid_from_vectors(p, data["ids"], [("a", a)])
    now = {e.name for e in p.iterdir() if e.name.startswith("rep-")}
    assert idx.names == ["a"] and len(now) == 1 and not (now & old)


def test_corrupt_member_manifest_is_named(tmp_path, data):
    p = tmp_path / "h"
    idx = build_hybrid_from_vectors(p, data["ids"], [("a", data["parts"][0]), ("vec", data["parts"][2])])
    f = idx.member("a").searcher.path / "manifest.json"
    f.write_text(f.read_text().replace('"generation": 1', '"generation": 7'))
    with pytest.raises(CorruptIndexError, match="manifest.json"):
        HybridIndex.open(p)


def test_member_names():
    assert member_names(["bm25", "dense", "splade:x", "bm25:robertson"]) == ["bm25", "dense", "splade", "bm25-2"]


def test_text_hybrid_of_two_bm25_variants(tmp_path):
    texts = ["bone density and vitamin d", "heart disease risk", "vitamin c and colds", "the density of bone tissue"]
    ids = ["a", "b", "c", "d"]
    idx = build_hybrid(tmp_path / "t", texts, ids, [("bm25", make_encoder("bm25")),
                                                    ("rob", make_encoder("bm25:robertson"))],
                       documents=[(i, "", t) for i, t in zip(ids, texts)])
    q = idx.load_encoder().encode_queries(["bone density"], ["q"])
    s, d = idx.search(q, 2)
    assert {idx.doc_ids[x] for x in d[0]} == {"a", "d"}
    assert idx.explain(q[0:1], int(d[0, 0]))


CLI = [sys.executable, "-m", "sparsearch.cli"]


def _cli(*args) -> SimpleNamespace:
    """``sparsearch ARGS`` in this process (a subprocess costs ~1.5 s of start-up per command)."""
    r = cli(*args)
    return SimpleNamespace(returncode=r.exit_code, stdout=r.stdout, stderr=r.stderr)


def _tiny_beir(tmp_path: Path) -> Path:
    corpus = tmp_path / "c"
    (corpus / "qrels").mkdir(parents=True)
    docs = [("a", "Bone", "bone density and vitamin d"), ("b", "Heart", "heart disease risk factors"),
            ("c", "Colds", "vitamin c and the common cold"), ("d", "Tissue", "the density of bone tissue")]
    (corpus / "corpus.jsonl").write_text("\n".join(json.dumps({"_id": i, "title": t, "text": x}) for i, t, x in docs))
    (corpus / "queries.jsonl").write_text("\n".join(json.dumps({"_id": q, "text": t}) for q, t in
                                                    [("1", "bone density"), ("2", "heart risk"), ("3", "cold vitamin")]))
    (corpus / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n1\ta\t1\n2\tb\t1\n3\tc\t1\n")
    (corpus / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\n1\td\t1\n2\tb\t1\n")
    return corpus


def test_cli_demo_reports_each_representation_and_the_fusion(tmp_path):
    corpus = _tiny_beir(tmp_path)
    r = subprocess.run([*CLI, "demo", "--data", str(corpus), "--encoder", "bm25", "--encoder", "bm25:robertson",
                        "--workdir", str(tmp_path / "w")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert any(line.split()[:1] == ["bm25"] for line in lines) and any(line.split()[:1] == ["bm25-2"] for line in lines)
    assert any(line.split()[:1] == ["fused"] for line in lines) and "fusion:" in r.stdout
    assert HybridIndex.open(tmp_path / "w" / "c-bm25+bm25-2").names == ["bm25", "bm25-2"]


def test_cli_hybrid_index_search_evaluate_stats(tmp_path):
    """The hybrid commands in process (the console script itself is run by the demo test above)."""
    corpus = _tiny_beir(tmp_path)
    out = tmp_path / "idx"
    r = _cli("index", str(corpus), "--out", str(out), "--encoder", "bm25", "--encoder",
             "bm25:robertson", "--encoder-opt", "bm25.k1=1.2")
    assert r.returncode == 0, r.stderr
    assert "hybrid of bm25, bm25-2" in r.stdout
    r = _cli("search", str(out), "-q", "bone density", "--json", "--fusion", "minmax",
             "--weights", "bm25=1,bm25-2=0")
    assert r.returncode == 0, r.stderr
    hit = json.loads(r.stdout)["hits"][0]
    assert hit["id"] in ("a", "d") and set(hit["representations"]) == {"bm25", "bm25-2"}
    assert hit["title"] in ("Bone", "Tissue") and hit["representations"]["bm25"]["rank"] == 1
    r = _cli("evaluate", str(out), str(corpus))
    assert r.returncode == 0, r.stderr
    assert "fusion:" in r.stdout and "bm25-2" in r.stdout
    r = _cli("stats", str(out))
    assert json.loads(r.stdout)["representations"] == ["bm25", "bm25-2"]
    r = _cli("tune-fusion", str(out), str(corpus), "--split", "test")
    assert r.returncode == 2 and "train or dev" in r.stderr
    r = _cli("tune-fusion", str(out), str(corpus), "--split", "train", "--save", "--step", "0.5")
    assert r.returncode == 0, r.stderr
    assert load_fusion(out) is not None
    r = _cli("search", str(out), "-q", "x", "--weights", "1,2,3")
    assert r.returncode == 2 and "3 numbers for 2 representations" in r.stderr
    r = _cli("index", str(corpus), "--out", str(tmp_path / "i2"), "--encoder", "bm25", "--encoder",
             "bm25", "--encoder-opt", "k1=1.2")
    assert r.returncode == 2 and "bm25.k1" in r.stderr and not (tmp_path / "i2" / "manifest.json").exists()
    more = tmp_path / "more.jsonl"
    more.write_text(json.dumps({"id": "e", "title": "Bones", "text": "bone marrow density scans"}) + "\n")
    r = _cli("add", str(out), str(more))
    assert r.returncode == 0 and "5 documents" in r.stdout, r.stderr
    r = _cli("search", str(out), "-q", "marrow", "--json")
    assert json.loads(r.stdout)["hits"][0]["id"] == "e"
    r = _cli("delete", str(out), "e")
    assert r.returncode == 0 and "deleted 1" in r.stdout, r.stderr
    r = _cli("search", str(out), "-q", "marrow", "--json")
    assert "e" not in [h["id"] for h in json.loads(r.stdout)["hits"]]
    r = _cli("delete", str(out), "nope")
    assert r.returncode == 2 and "nope" in r.stderr
