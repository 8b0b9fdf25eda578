"""Atomic add/delete on a hybrid index (sparsearch.index.hybrid_updates).

An add must give every sparse representation what ``add_texts`` gives a single index, every
dense one a fresh build over all documents, and fused results equal to fusing those; a delete
must remove the document from every representation (doc numbers kept aligned), from the fused
results and from the store; a failure before the hybrid commit leaves the previous state.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

import sparsearch.index.hybrid_updates as hu
from sparsearch import docstore
from sparsearch.encoders.dense import DenseEncoder
from sparsearch.errors import ConflictError, NotFoundError
from sparsearch.fusion import fuse_topk
from sparsearch.index import Index
from sparsearch.index.builder import build_index
from sparsearch.index.dense import DenseIndex
from sparsearch.index.hybrid import HybridIndex, build_hybrid, make_encoder
from sparsearch.index.hybrid_updates import add_to_hybrid, delete_from_hybrid
from sparsearch.index.updates import add_texts

OLD = [("a", "Bone", "bone density and vitamin d"), ("b", "Heart", "heart disease risk factors"),
       ("c", "Colds", "vitamin c and the common cold"), ("d", "Tissue", "the density of bone tissue"),
       ("e", "Sleep", "sleep quality and heart rate"), ("f", "Diet", "a diet rich in vitamin d")]
NEW = [("g", "Quokka", "the quokka lives on an island"), ("h", "Bones", "bone fractures heal slowly"),
       ("i", "Colds", "zinc and the common cold")]
QUERIES = ["bone density", "heart risk", "vitamin d", "common cold", "quokka island", "bone fractures", "sleep"]


@pytest.fixture
def fake_dense(tmp_path, monkeypatch):
    """A DenseEncoder whose model is a deterministic stand-in (texts -> 8-d vectors)."""
    monkeypatch.setenv("SPARSEARCH_CACHE", str(tmp_path / "cache"))

    def compute(self, texts, progress):
        return np.array([[len(t) / 10, sum(map(ord, t)) % 97 / 50, t.count("o") - 1.5, t.count("e") * 0.3,
                          1, -2, 0.5, len(t.split()) - 4] for t in texts], np.float32).reshape(len(texts), 8)

    monkeypatch.setattr(DenseEncoder, "_compute", compute)
    model = tmp_path / "model"
    model.mkdir()
    return lambda: DenseEncoder(str(model))


def _texts(rows):
    return [(t + " " + x).strip() for _, t, x in rows]


def _build(path, rows, fake_dense, dense_quantization="float32"):
    return build_hybrid(path, _texts(rows), [r[0] for r in rows],
                        [("bm25", make_encoder("bm25")), ("rob", make_encoder("bm25:robertson")),
                         ("vec", fake_dense())],
                        documents=rows, quantization="float32", dense_quantization=dense_quantization)


def _lists(idx: HybridIndex, k: int):
    """Per representation and fused: {query: [(doc id, score)]} over all live documents."""
    q = idx.load_encoder().encode_queries(QUERIES)
    s, d, per, _ = idx.search_detailed(q, k)
    out = {"fused": _named(idx, s, d)}
    out.update({name: _named(idx, *per[name]) for name in idx.names})
    return out, per


def _named(idx, scores, docs):
    return [[(idx.doc_ids[x], float(v)) for v, x in zip(srow, drow) if x >= 0] for srow, drow in zip(scores, docs)]


def _same(a, b, tol=1e-5):
    assert len(a) == len(b)
    for ra, rb in zip(a, b):
        assert [i for i, _ in ra] == [i for i, _ in rb]
        np.testing.assert_allclose([v for _, v in ra], [v for _, v in rb], rtol=tol, atol=tol)


def _entries(path):
    return sorted(p.name for p in path.iterdir())


def test_add_equals_single_index_adds_and_a_fresh_dense_build(tmp_path, fake_dense):
    path = tmp_path / "h"
    _build(path, OLD, fake_dense)
    gen = HybridIndex.open(path).manifest["generation"]
    manifest = add_to_hybrid(path, NEW)
    idx = HybridIndex.open(path)
    assert manifest["generation"] == gen + 1 and idx.n_docs == idx.n_live_docs == 9
    assert idx.doc_ids == [r[0] for r in OLD + NEW]
    for m in idx.members:
        assert m.searcher.doc_ids == idx.doc_ids
    # reference: each sparse representation as a single index updated by add_texts, the dense
    # one built afresh over all documents
    refs = {}
    for name, spec in [("bm25", "bm25"), ("rob", "bm25:robertson")]:
        enc = make_encoder(spec)
        enc.fit(_texts(OLD))
        build_index(enc.encode_documents(_texts(OLD), [r[0] for r in OLD]), tmp_path / name, quantization="float32",
                    encoder=enc)
        add_texts(tmp_path / name, NEW)
        refs[name] = Index.open(tmp_path / name)
    enc = fake_dense()
    refs["vec"] = DenseIndex.build(enc.encode_documents(_texts(OLD + NEW)), [r[0] for r in OLD + NEW],
                                   tmp_path / "vec", encoder=enc)
    got, per = _lists(idx, 9)
    q = idx.load_encoder().encode_queries(QUERIES)
    ref_lists = {}
    for name, ref in refs.items():
        s, d = ref.search(q.parts[name], 9)
        ref_lists[name] = (s, d)
        _same(got[name], _named(ref, s, d))
    params = idx.default_params()
    s, d = fuse_topk([ref_lists[n] for n in idx.names], 9, params.fusion, params.weights, params.rrf_k)
    _same(got["fused"], _named(idx, s, d))
    # the new documents are found, in every representation, with their new words
    for name in ["bm25", "rob"]:
        assert got[name][QUERIES.index("quokka island")][0][0] == "g"
    assert "g" in [i for i, _ in got["fused"][QUERIES.index("quokka island")]]
    assert docstore.open_docstore(path, idx.manifest).get("g")["title"] == "Quokka"
    # one representation directory per member, one store: the old ones were collected
    assert [e for e in _entries(path) if e.startswith(("rep-", "docs-"))] == sorted(
        [m["dir"] for m in idx.manifest["members"]] + [idx.manifest["docstore"]])


def test_delete_removes_the_document_everywhere_and_keeps_the_rest(tmp_path, fake_dense):
    path = tmp_path / "h"
    _build(path, OLD, fake_dense)
    add_to_hybrid(path, NEW)  # two segments per sparse representation
    before, _ = _lists(HybridIndex.open(path), 9)
    assert delete_from_hybrid(path, ["a", "h"]) == 2
    idx = HybridIndex.open(path)
    assert idx.n_docs == idx.n_live_docs == 7 and "a" not in idx.doc_ids and "h" not in idx.doc_ids
    for m in idx.members:
        assert m.searcher.doc_ids == idx.doc_ids
    after, _ = _lists(idx, 7)
    for name in idx.names:  # each representation: the same list without the deleted documents
        _same(after[name], [[(i, v) for i, v in row if i not in ("a", "h")] for row in before[name]])
    assert not any(i in ("a", "h") for row in after["fused"] for i, _ in row)
    store = docstore.open_docstore(path, idx.manifest)
    assert store.get("a") is None and store.get("h") is None and store.get("b")["title"] == "Heart"
    assert len(store) == 7
    # a delete of everything but one document still leaves a searchable index
    assert delete_from_hybrid(path, ["b", "c", "d", "e", "f", "g"]) == 6
    idx = HybridIndex.open(path)
    got, _ = _lists(idx, 5)
    assert {i for row in got["fused"] for i, _ in row} <= {"i"}


def test_int8_dense_rows_survive_a_delete(tmp_path, fake_dense):
    path = tmp_path / "h"
    _build(path, OLD, fake_dense, dense_quantization="int8")
    old = HybridIndex.open(path).member("vec").searcher
    codes = {i: (np.array(old.vectors[n]), float(old.scale[n])) for n, i in enumerate(old.doc_ids)}
    delete_from_hybrid(path, ["c"])
    new = HybridIndex.open(path).member("vec").searcher
    assert new.quantization == "int8" and new.encoder_config == old.encoder_config
    for n, i in enumerate(new.doc_ids):
        np.testing.assert_array_equal(new.vectors[n], codes[i][0])
        assert new.scale[n] == pytest.approx(codes[i][1], rel=1e-6)


def test_replace_conflict_and_unknown_ids(tmp_path, fake_dense):
    path = tmp_path / "h"
    _build(path, OLD, fake_dense)
    gen = HybridIndex.open(path).manifest["generation"]
    with pytest.raises(ConflictError, match="'b'"):
        add_to_hybrid(path, [("b", "Quokka", "a quokka heart")])
    with pytest.raises(NotFoundError, match="'zzz'"):
        delete_from_hybrid(path, ["a", "zzz"])
    assert delete_from_hybrid(path, ["zzz"], ignore_missing=True) == 0
    idx = HybridIndex.open(path)
    assert idx.manifest["generation"] == gen and idx.n_docs == 6  # nothing was committed
    add_to_hybrid(path, [("b", "Quokka", "a quokka heart")], replace=True)
    idx = HybridIndex.open(path)
    assert idx.n_docs == idx.n_live_docs == 6 and idx.doc_ids[-1] == "b"
    for m in idx.members:
        assert m.searcher.doc_ids == idx.doc_ids
    got, _ = _lists(idx, 6)
    assert got["bm25"][QUERIES.index("quokka island")][0][0] == "b"
    assert docstore.open_docstore(path, idx.manifest).get("b")["title"] == "Quokka"
    assert delete_from_hybrid(path, ["a", "zzz"], ignore_missing=True) == 1
    assert HybridIndex.open(path).n_docs == 5


def test_a_failure_before_the_commit_leaves_the_previous_index(tmp_path, fake_dense, monkeypatch):
    path = tmp_path / "h"
    _build(path, OLD, fake_dense)
    before, _ = _lists(HybridIndex.open(path), 6)
    manifest = HybridIndex.open(path).manifest

    def crash(*a, **k):
        raise KeyboardInterrupt("killed before the commit")

    real_commit = hu.commit
    monkeypatch.setattr(hu, "commit", crash)
    for update in (lambda: add_to_hybrid(path, NEW), lambda: delete_from_hybrid(path, ["a"])):
        with pytest.raises(KeyboardInterrupt):
            update()
        idx = HybridIndex.open(path)
        assert idx.manifest == manifest
        _same(_lists(idx, 6)[0]["fused"], before["fused"])
    # the new member directories are copies whose files are links to the current ones
    old_dir = path / manifest["members"][0]["dir"]
    orphans = [p for p in path.iterdir() if p.name.startswith("rep-bm25-") and p != old_dir]
    assert orphans
    seg = next(p for p in old_dir.iterdir() if p.name.startswith("seg-"))
    linked = [o / seg.name for o in orphans if (o / seg.name).exists()]
    assert linked and all(os.path.samefile(x / "segment.json", seg / "segment.json") for x in linked)
    # the next successful update collects them
    monkeypatch.setattr(hu, "commit", real_commit)
    add_to_hybrid(path, NEW)
    idx = HybridIndex.open(path)
    assert [e for e in _entries(path) if e.startswith(("rep-", "docs-", ".tmp-"))] == sorted(
        [m["dir"] for m in idx.manifest["members"]] + [idx.manifest["docstore"]])


def test_without_hard_links_files_are_copied(tmp_path, fake_dense, monkeypatch):
    path = tmp_path / "h"
    _build(path, OLD, fake_dense)

    def no_links(a, b):
        raise OSError("hard links not supported")

    monkeypatch.setattr(os, "link", no_links)
    add_to_hybrid(path, NEW)
    assert delete_from_hybrid(path, ["g"]) == 1
    idx = HybridIndex.open(path)
    assert idx.n_docs == 8 and "g" not in idx.doc_ids
