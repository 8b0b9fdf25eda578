"""Every file an index reads is verified (issue 15 item 4): the manifest records size + CRC32 of
every file it names and is sealed by a checksum over its own content; the approximate index's
pointer and the saved settings are sealed too. A one-character edit anywhere is refused with
:class:`CorruptIndexError` naming the file (it used to change results with exit code 0)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sparsearch.docstore import open_docstore, store_names
from sparsearch.encoders import get_encoder
from sparsearch.errors import CorruptIndexError
from sparsearch.index import Index, build_index
from sparsearch.index.approximate import (ApproxBuildParams, ApproximateIndex, FixedPruning, load_settings,
                                          save_settings)
from sparsearch.index.manifest import read_manifest
from sparsearch.index.updates import add_documents, delete_documents
from sparsearch.searching import ApproxParams
from sparsearch.vectors import SparseBatch, Vocabulary

TEXTS = {f"d{i}": ("title", f"document {i} about cats dogs and wolves number {i}") for i in range(40)}


def _build(tmp_path, name="idx"):
    enc = get_encoder("bm25")
    texts = [f"{t} {x}" for t, x in TEXTS.values()]
    enc.fit(texts)
    path = tmp_path / name
    build_index(enc.encode_documents(texts, list(TEXTS)), path, encoder=enc, documents=TEXTS)
    return path


def _edit(f, old: str, new: str) -> None:
    """Replace the first ``old`` by ``new`` (same length: a one-character edit that still parses)."""
    text = f.read_text()
    assert old in text and len(old) == len(new)
    f.write_text(text.replace(old, new, 1))


def _flip(f, at: int = -20) -> None:
    raw = bytearray(f.read_bytes())
    raw[at] ^= 0x01
    f.write_bytes(bytes(raw))


def test_one_character_edits_of_index_metadata_are_refused(tmp_path):
    """issue 15 item 4: doc_ids.json, segment.json, vocab-*.json, the encoder state and the
    manifest are checked on open (an edited doc id used to be returned with exit code 0)."""
    path = _build(tmp_path)
    seg = path / read_manifest(path)["segments"][0]["name"]
    state = path / read_manifest(path)["encoder_state"]
    vocab = path / read_manifest(path)["vocab"]
    cases = [(seg / "doc_ids.json", lambda f: _edit(f, '"d7"', '"d9"')),
             (seg / "segment.json", lambda f: _edit(f, '"byte"', '"bytE"')),
             (vocab, lambda f: _edit(f, '"wolv', '"wolf')),
             (state / "bm25_stats.json", lambda f: _edit(f, '"n_docs": 40', '"n_docs": 80')),
             (path / "manifest.json", lambda f: _edit(f, '"codec": "byte"', '"codec": "bytE"'))]
    for f, edit in cases:
        saved = f.read_bytes()
        edit(f)
        with pytest.raises(CorruptIndexError, match=f"{f.name}.*(checksum|size)"):
            Index.open(path)
        f.write_bytes(saved)
        Index.open(path)  # restored: fine again
    _flip(seg / "impacts.npy")  # arrays: through the recorded segment.json's CRC32s
    with pytest.raises(CorruptIndexError, match="impacts.npy: checksum"):
        Index.open(path)


def test_manifest_seal_and_records_are_required(tmp_path):
    """issue 15 item 4: a version-2 manifest without its seal or records is refused."""
    path = _build(tmp_path)
    m = json.loads((path / "manifest.json").read_text())
    for drop in ("checksum", "files"):
        (path / "manifest.json").write_text(json.dumps({k: v for k, v in m.items() if k != drop}))
        with pytest.raises(CorruptIndexError, match="manifest.json"):
            Index.open(path)
    (path / "manifest.json").write_text(json.dumps(m, indent=2))  # whitespace is not content
    Index.open(path)


def test_deletion_bitmaps_and_document_stores_are_checked(tmp_path):
    """issue 15 item 4: bitmaps (Index.open) and stores (open_docstore) against their records."""
    path = _build(tmp_path)
    add_documents(path, SparseBatch.from_dicts([{"cat": 1.0}], ids=["n1"]), {"n1": ("New", "new text")})
    delete_documents(path, ["d3"])
    m = read_manifest(path)
    bitmap = path / next(s["deletes"] for s in m["segments"] if s.get("deletes"))
    saved = bitmap.read_bytes()
    _flip(bitmap, -1)
    with pytest.raises(CorruptIndexError, match="deletes-.*checksum"):
        Index.open(path)
    bitmap.write_bytes(saved)
    store = path / store_names(m)[0]
    _flip(store, store.stat().st_size // 2)
    with pytest.raises(CorruptIndexError, match=f"{store.name}: checksum"):
        open_docstore(path, m)
    store.write_bytes(store.read_bytes()[:-1])
    with pytest.raises(CorruptIndexError, match=f"{store.name}: size"):
        open_docstore(path, m, verify=False)


def test_approximate_pointer_and_settings_are_sealed(tmp_path):
    """issue 15 item 4: approximate.json (and the header it records) and settings.json."""
    path = _build(tmp_path)
    ApproximateIndex.build(Index.open(path), ApproxBuildParams(pruning=FixedPruning(n_postings=20)))
    ApproximateIndex.open(Index.open(path))
    _edit(path / "approximate.json", '"seed": 0', '"seed": 1')
    with pytest.raises(CorruptIndexError, match="approximate.json: approximate index pointer checksum"):
        ApproximateIndex.open(Index.open(path))
    _edit(path / "approximate.json", '"seed": 1', '"seed": 0')
    ptr = json.loads((path / "approximate.json").read_text())
    _edit(path / ptr["dir"] / "segment.json", '"seed": 0', '"seed": 1')
    with pytest.raises(CorruptIndexError, match="segment.json: checksum"):
        ApproximateIndex.open(Index.open(path))
    save_settings(path, ApproxParams(query_cut=5, heap_factor=0.8))
    assert load_settings(path) == ApproxParams(query_cut=5, heap_factor=0.8)
    _edit(path / "settings.json", '"query_cut": 5', '"query_cut": 9')
    with pytest.raises(CorruptIndexError, match="settings.json: settings file checksum"):
        load_settings(path)


def test_old_indexes_open_unverified_and_their_next_commit_records_everything(tmp_path):
    """issue 15 item 4: a manifest of version 1 (no records, no seal) still opens; any update
    then records and seals every file it names (from then on checked)."""
    m = np.zeros((20, 10), np.float32)
    m[np.arange(20), np.arange(20) % 10] = 1.0
    path = tmp_path / "old"
    build_index(SparseBatch.from_dense(m, Vocabulary.from_size(10, "t"), [f"a{i}" for i in range(20)]), path)
    man = json.loads((path / "manifest.json").read_text())
    old = {k: v for k, v in man.items() if k not in ("checksum", "files")} | {"version": 1}
    (path / "manifest.json").write_text(json.dumps(old))
    seg = path / man["segments"][0]["name"]
    _edit(seg / "doc_ids.json", '"a7"', '"a9"')  # not detectable without records: opened as is
    assert "a9" in Index.open(path).doc_ids
    _edit(seg / "doc_ids.json", '"a9"', '"a7"')
    delete_documents(path, ["a1"])
    new = read_manifest(path)
    assert new["version"] == 2 and f"{seg.name}/doc_ids.json" in new["files"] and new["checksum"]
    _edit(seg / "doc_ids.json", '"a7"', '"a9"')
    with pytest.raises(CorruptIndexError, match="doc_ids.json: checksum"):
        Index.open(path)


def test_a_corrupt_index_can_be_replaced_with_overwrite(tmp_path):
    """issue 15 item 4: the fix the messages name (rebuild) works on an index whose manifest is corrupt."""
    path = _build(tmp_path)
    _edit(path / "manifest.json", '"codec": "byte"', '"codec": "bytE"')
    with pytest.raises(CorruptIndexError, match="manifest.json: index manifest checksum"):
        Index.open(path)
    _build(tmp_path)  # overwrite=True is build_index's default
    assert Index.open(path).n_docs == len(TEXTS)


class _StatelessEncoder:
    """An encoder whose state directory stays empty (it saves nothing)."""

    def config(self):
        return {"name": "stateless"}

    def save_state(self, directory):
        pass


def test_an_encoder_without_saved_state_is_recorded_and_verified(tmp_path):
    batch = SparseBatch.from_dicts([{"a": 1.0}, {"b": 2.0}], ids=["x", "y"])
    path = tmp_path / "idx"
    build_index(batch, path, encoder=_StatelessEncoder())
    state = read_manifest(path)["encoder_state"]
    assert not any((path / state).iterdir())
    Index.open(path)  # an empty state directory is part of the commit, not an unrecorded entry
    (path / state).rmdir()
    with pytest.raises(CorruptIndexError, match="missing"):
        Index.open(path)
