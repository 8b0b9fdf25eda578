"""Incremental updates: add / delete / merge give the same answers as a fresh build of the same
documents, the vocabulary only grows, the document store follows, and readers running during
updates always see one committed state (old or new), never a mix."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from sparsearch.docstore import DocStore, open_docstore, store_names
from sparsearch.encoders import get_encoder
from sparsearch.errors import ConflictError, CorruptIndexError, NotFoundError
from sparsearch.index import Index, build_index
from sparsearch.index.manifest import load_commit
from sparsearch.index.updates import add_documents, add_texts, delete_documents, live_vectors, merge
from sparsearch.searching import ExactParams
from sparsearch.vectors import SparseBatch, Vocabulary


def synth(rng, n, V, prefix, density=0.03):
    m = (rng.random((n, V)) < density) * rng.random((n, V)).astype(np.float32)
    return SparseBatch.from_dense(m, Vocabulary.from_size(V, "t"), [f"{prefix}{i}" for i in range(n)])


def run_of(index: Index, queries: SparseBatch, k: int = 15):
    scores, docs = index.search(queries, k, ExactParams(threads=1))
    ids = index.doc_ids
    return [[(ids[d], float(s)) for d, s in zip(dr, sr) if d >= 0] for dr, sr in zip(docs, scores)]


def docs_of(batch):
    return {i: (f"title {i}", f"text {i}") for i in batch.ids}


def assert_same_runs(a, b, tol=1e-5):
    assert len(a) == len(b)
    for ra, rb in zip(a, b):
        assert [d for d, _ in ra] == [d for d, _ in rb]
        np.testing.assert_allclose([s for _, s in ra], [s for _, s in rb], rtol=tol, atol=tol)


def test_add_delete_merge_equals_fresh_build(tmp_path, rng):
    a, b = synth(rng, 400, 300, "a"), synth(rng, 250, 360, "b")   # b brings 60 new terms
    q = synth(rng, 20, 360, "q", 0.05)
    path = tmp_path / "inc"
    build_index(a, path, quantization="float32", documents=docs_of(a))
    vocab_before = Index.open(path).vocab
    add_documents(path, b, docs_of(b))
    gone = [f"a{i}" for i in range(0, 400, 5)] + [f"b{i}" for i in range(0, 250, 9)]
    assert delete_documents(path, gone) == len(gone)
    inc = Index.open(path)
    assert len(inc.segments) == 2 and inc.n_live_docs == 650 - len(gone)
    assert vocab_before.is_prefix_of(inc.vocab)  # append-only vocabulary

    live = [i for i in a.ids + b.ids if i not in set(gone)]
    full = SparseBatch.concat([a.remap(inc.vocab), b.remap(inc.vocab)])
    fresh = build_index(full[[(a.ids + b.ids).index(i) for i in live]], tmp_path / "fresh", quantization="float32")
    assert_same_runs(run_of(inc, q), run_of(fresh, q))

    merge(path)
    merged = Index.open(path)
    assert len(merged.segments) == 1 and merged.n_docs == len(live)
    assert not any(len(d) for d in merged.deleted)
    assert_same_runs(run_of(merged, q), run_of(fresh, q))
    store = open_docstore(path, merged.manifest)
    assert len(store) == len(live) and store.get("a0") is None and store.get("a1")["title"] == "title a1"
    # only the files of the last commit remain
    names = {e.name for e in path.iterdir()}
    assert names == {".lock", "manifest.json", merged.manifest["vocab"], *store_names(merged.manifest),
                     merged.manifest["segments"][0]["name"]}


def test_uint8_merge_of_one_segment_with_deletions_is_exact(tmp_path, rng):
    a = synth(rng, 300, 200, "a")
    q = synth(rng, 10, 200, "q", 0.08)
    path = tmp_path / "u8"
    build_index(a, path)  # uint8
    delete_documents(path, ["a3", "a7", "a100"])
    before = run_of(Index.open(path), q)
    merge(path)
    after = Index.open(path)
    assert len(after.segments) == 1
    assert_same_runs(before, run_of(after, q), tol=1e-4)


def test_new_terms_are_searchable_and_ids_unchanged(tmp_path, rng):
    a = synth(rng, 100, 50, "a")
    path = tmp_path / "grow"
    build_index(a, path, quantization="float32")
    new = SparseBatch.from_dicts([{"brand-new": 3.0, "t1": 0.5}], ids=["n1"])
    add_documents(path, new)
    idx = Index.open(path)
    assert idx.vocab.terms[:50] == a.vocab.terms and idx.vocab.id("brand-new") == 50
    q = SparseBatch.from_dicts([{"brand-new": 1.0}])
    s, d = idx.search(q, 3)
    assert idx.doc_ids[d[0, 0]] == "n1" and d[0, 1] == -1 and s[0, 0] == pytest.approx(3.0)
    # explanations see the new segment too
    assert [c.term for c in idx.explain(q, int(d[0, 0]))] == ["brand-new"]


def test_duplicate_ids_upsert_and_missing_deletes(tmp_path, rng):
    a = synth(rng, 50, 40, "a")
    path = tmp_path / "dup"
    build_index(a, path, quantization="float32", documents=docs_of(a))
    again = SparseBatch.from_dicts([{"t0": 9.0}], ids=["a0"])
    with pytest.raises(ConflictError, match="already in the index"):
        add_documents(path, again)
    add_documents(path, again, {"a0": ("new title", "new text")}, replace=True)
    idx = Index.open(path)
    assert idx.n_live_docs == 50 and idx.doc_ids[idx.docnum("a0")] == "a0" and idx.docnum("a0") == 50
    assert open_docstore(path, idx.manifest).get("a0")["title"] == "new title"
    with pytest.raises(NotFoundError, match="zzz"):
        delete_documents(path, ["a1", "zzz"], missing="error")
    assert delete_documents(path, ["zzz"]) == 0
    gen = Index.open(path).manifest["generation"]
    assert delete_documents(path, ["a1", "a1"]) == 1 and Index.open(path).manifest["generation"] == gen + 1
    assert delete_documents(path, ["a1"]) == 0  # already deleted


def test_add_texts_uses_the_index_encoder(tmp_path, tiny_beir):
    from sparsearch.evaluation import load_beir

    ds = load_beir(tiny_beir, "test")
    enc = get_encoder("bm25")
    texts = ds.doc_texts()
    enc.fit(texts)
    path = tmp_path / "bm25"
    build_index(enc.encode_documents(texts, ds.doc_ids), path, encoder=enc, documents=ds.corpus)
    add_texts(path, [{"id": "d7", "title": "Wolves again", "text": "a pack of wolves hunts dogs"}])
    idx = Index.open(path)
    q = idx.load_encoder().encode_queries(["wolves pack"])
    s, d = idx.search(q, 2)
    assert idx.doc_ids[d[0, 0]] == "d7"
    store = open_docstore(path, idx.manifest)
    assert store.get("d7")["title"] == "Wolves again" and store.get("d1")["title"] == "Cats"


def test_live_vectors_roundtrip(tmp_path, rng):
    a = synth(rng, 60, 30, "a")
    path = tmp_path / "lv"
    build_index(a, path, quantization="float32")
    delete_documents(path, ["a2"])
    lv = live_vectors(Index.open(path))
    assert lv.ids == [i for i in a.ids if i != "a2"]
    np.testing.assert_allclose(lv.to_scipy().toarray(), a[[i for i in range(60) if i != 2]].to_scipy().toarray(),
                               rtol=1e-6)


def test_readers_during_updates_see_old_or_new_state(tmp_path, rng):
    """Reader threads open and search while a writer adds, deletes and merges; every answer must be
    the answer of the commit (generation) the reader opened."""
    base = synth(rng, 300, 120, "a")
    q = synth(rng, 8, 150, "q", 0.1)
    path = tmp_path / "live"
    build_index(base, path, quantization="float32")
    expected = {Index.open(path).manifest["generation"]: run_of(Index.open(path), q)}
    stop = threading.Event()
    seen: list[tuple[int, list]] = []
    errors: list[BaseException] = []

    def reader():
        try:
            while not stop.is_set():
                idx = Index.open(path)  # follows a commit that removes files it was opening
                seen.append((idx.manifest["generation"], run_of(idx, q)))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for step in range(6):
            extra = synth(rng, 40, 150, f"s{step}-")
            add_documents(path, extra)
            expected[Index.open(path).manifest["generation"]] = run_of(Index.open(path), q)
            delete_documents(path, [f"a{i}" for i in range(step, 300, 11)] + [f"s{step}-1"])
            expected[Index.open(path).manifest["generation"]] = run_of(Index.open(path), q)
            if step % 3 == 2:
                merge(path)
                expected[Index.open(path).manifest["generation"]] = run_of(Index.open(path), q)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors
    assert seen, "readers made no observation"
    for gen, res in seen:
        assert gen in expected
        assert_same_runs(res, expected[gen])


def test_docstore_inputs_threads_and_unlinked_file(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from sparsearch.docstore import write_docstore

    shapes = [
        {"a": {"title": "A", "text": "alpha"}, "b": {"text": "beta"}},
        {"a": ("A", "alpha"), "b": ("", "beta")},
        [{"_id": "a", "title": "A", "text": "alpha"}, {"id": "b", "text": "beta"}],
        [("a", "A", "alpha"), ("b", None, "beta")],
    ]
    for docs in shapes:
        store = DocStore(tmp_path / write_docstore(tmp_path, docs))
        assert store.get("a") == {"id": "a", "title": "A", "text": "alpha"}
        assert store.get("b")["title"] == "" and len(store) == 2 and "b" in store and "c" not in store
        store.close()
    with pytest.raises(ValueError, match="id"):
        write_docstore(tmp_path, [{"title": "no id"}])
    name = write_docstore(tmp_path, {f"d{i}": ("t", f"text {i}") for i in range(2000)})
    store = DocStore(tmp_path / name)
    (tmp_path / name).unlink()  # a commit garbage-collected it: an open reader keeps working
    with ThreadPoolExecutor(4) as ex:
        got = list(ex.map(lambda i: store.get(f"d{i}")["text"], range(2000)))
    assert got == [f"text {i}" for i in range(2000)]
    assert set(store.get_many(["d1", "d1999", "nope"])) == {"d1", "d1999"}
    assert not any(p.name.startswith(".tmp-") for p in tmp_path.iterdir())


def test_open_follows_a_concurrent_commit_and_fails_fast_on_a_broken_index(tmp_path, rng):
    """``load_commit`` (behind ``Index.open``) retries only when a newer commit appeared."""
    path = tmp_path / "idx"
    build_index(synth(rng, 50, 30, "a"), path)
    gen = Index.open(path).manifest["generation"]
    seen: list[int] = []

    def racing(manifest):
        seen.append(manifest["generation"])
        if len(seen) == 1:  # a writer commits between the read of the manifest and the load
            add_documents(path, synth(rng, 5, 30, "b"))
            raise CorruptIndexError("a file of the old commit is gone")
        return Index.open(path)

    assert load_commit(path, racing).manifest["generation"] == gen + 1 and seen == [gen, gen + 1]
    calls: list[int] = []

    def broken(manifest):
        calls.append(1)
        raise CorruptIndexError("really corrupt")

    with pytest.raises(CorruptIndexError, match="really corrupt"):
        load_commit(path, broken)
    assert calls == [1]  # no newer commit: raised at once, no retries


def test_add_texts_grows_the_vocabulary_and_bm25_statistics(tmp_path, tiny_beir):
    """issue 15 item 2: a document about "quokka" added with add_texts used to be unfindable by
    "quokka" (the word was dropped). The new document is weighted with the statistics of its
    time (those of a fresh fit on all 7 documents), and the grown encoder state is committed
    with it (a new encoder-<id>, the old one collected)."""
    from sparsearch.evaluation import load_beir

    ds = load_beir(tiny_beir, "test")
    enc = get_encoder("bm25")
    texts = ds.doc_texts()
    enc.fit(texts)
    path = tmp_path / "bm25"
    build_index(enc.encode_documents(texts, ds.doc_ids), path, encoder=enc, documents=ds.corpus,
                quantization="float32")
    state_before = Index.open(path).manifest["encoder_state"]
    new = {"id": "d7", "title": "Quokka", "text": "the quokka is a small marsupial that smiles at cats"}
    add_texts(path, [new])
    idx = Index.open(path)
    assert idx.manifest["encoder_state"] != state_before and not (path / state_before).exists()
    grown = idx.load_encoder()
    assert grown.n_docs == 7 and grown.df[grown.vocab.id("quokka")] == 1 and grown.df[grown.vocab.id("cat")] == 2
    s, d = idx.search(grown.encode_queries(["quokka"]), 3)
    assert idx.doc_ids[d[0, 0]] == "d7" and s[0, 0] > 0 and d[0, 1] == -1
    fresh = get_encoder("bm25")
    fresh.fit(texts + ["Quokka " + new["text"]])
    want = fresh.encode_documents(["Quokka " + new["text"]]).row_dict(0)
    got = {c.term: c.doc_weight for c in idx.explain(grown.encode_queries([" ".join(want)]), idx.docnum("d7"))}
    assert got.keys() == want.keys()
    for t, w in want.items():
        assert got[t] == pytest.approx(w, rel=1e-6)


def _files(path):
    return {p.name: p.stat().st_size for p in path.iterdir()}


def test_update_writes_only_the_changed_documents_to_the_store(tmp_path, rng):
    """issue 15 item 10: every update used to copy the whole document store (O(index)); now each
    segment has its own immutable store, an add writes a store of the new rows only (its size
    does not grow with the index) and a delete writes none (the bitmap hides the rows)."""
    new_store_bytes = []
    for n in (200, 3000):
        a = synth(rng, n, 50, "a")
        path = tmp_path / f"n{n}"
        build_index(a, path, quantization="float32",
                    documents={i: (f"title {i}", f"a long text of document {i} " * 20) for i in a.ids})
        before = _files(path)
        add_documents(path, SparseBatch.from_dicts([{"t1": 1.0}], ids=["new"]), {"new": ("New", "one more")})
        after = _files(path)
        added = {k: v for k, v in after.items() if k not in before and k.startswith("docs-")}
        assert len(added) == 1
        new_store_bytes.append(sum(added.values()))
        old_stores = [k for k in before if k.startswith("docs-")]
        assert old_stores and all(after.get(k) == before[k] for k in old_stores)  # kept, not copied
        idx = Index.open(path)
        store = open_docstore(path, idx.manifest)
        assert store.get("new") == {"id": "new", "title": "New", "text": "one more"} and len(store) == n + 1
        store.close()
        before = _files(path)
        delete_documents(path, ["a1", "new"])
        assert not [k for k in _files(path) if k not in before and k.startswith("docs-")]
        store = open_docstore(path, Index.open(path).manifest)
        assert store.get("a1") is None and store.get("new") is None and "a2" in store and len(store) == n - 1
        assert set(store.get_many(["a1", "a2", "new"])) == {"a2"} and "a1" not in store.ids()
        store.close()
    assert new_store_bytes[0] == new_store_bytes[1] < 32 * 1024


def test_index_wide_store_of_an_older_index_is_split_once(tmp_path, rng):
    """issue 15 item 10: an index written with one store for all documents (manifest key
    ``docstore``, no doc numbers) is read as is, and its first update splits it by segment."""
    import json
    import sqlite3

    from sparsearch.index.manifest import commit as commit_manifest
    from sparsearch.index.storage import Directory

    a = synth(rng, 30, 20, "a")
    path = tmp_path / "old"
    build_index(a, path, quantization="float32")
    con = sqlite3.connect(path / "docs-legacy.sqlite")
    con.execute("CREATE TABLE docs (id TEXT PRIMARY KEY, title TEXT NOT NULL, text TEXT NOT NULL)")
    con.executemany("INSERT INTO docs VALUES (?, ?, ?)", [(i, f"title {i}", "x") for i in a.ids + ["extra"]])
    con.commit()
    con.close()
    manifest = json.loads((path / "manifest.json").read_text())
    commit_manifest(Directory(path), dict(manifest, docstore="docs-legacy.sqlite"))
    idx = Index.open(path)
    assert open_docstore(path, idx.manifest).get("a3")["title"] == "title a3"
    delete_documents(path, ["a3"])
    idx = Index.open(path)
    assert "docstore" not in idx.manifest and not (path / "docs-legacy.sqlite").exists()
    store = open_docstore(path, idx.manifest)
    assert store.get("a3") is None and store.get("a4")["title"] == "title a4" and store.get("extra") is not None
    add_documents(path, SparseBatch.from_dicts([{"t1": 1.0}], ids=["a3"]), {"a3": ("again", "y")})
    assert open_docstore(path, Index.open(path).manifest).get("a3")["title"] == "again"
    merge(path)
    store = open_docstore(path, Index.open(path).manifest)
    assert len(store) == 30 and store.get("a3")["title"] == "again" and store.get("extra") is None
