"""Atomic updates of a hybrid index: add and delete documents in every representation at once.

A hybrid index (:mod:`sparsearch.index.hybrid`) keeps its representations in ``rep-<name>-<id>/``
directories whose doc numbers must agree (fusion works on doc numbers), and one top-level
document store. An update never touches those directories: it makes a new one per
representation, commits the change there, writes a new store, and then commits one new hybrid
manifest naming them (:func:`sparsearch.index.manifest.commit`, which collects the old ones).
A crash at any point before that commit leaves the previous hybrid index as it was (the new
directories are unnamed and collected by the next commit).

Per representation:

* **sparse** (:class:`~sparsearch.index.Index`): the new directory is a copy of the current one
  whose files are hard links (every file of an index is written once under a fresh name and
  never modified: segments, vocabularies, encoder states, bitmaps, stores; ``manifest.json``
  is replaced by rename, and is copied anyway), falling back to a byte copy where links are
  not possible. The update is then :func:`~sparsearch.index.updates.add_texts` (the member's
  own encoder, its corpus statistics grown as for a single index) or
  :func:`~sparsearch.index.updates.delete_documents`, followed by
  :func:`~sparsearch.index.updates.merge` whenever documents were deleted (including ids
  replaced by an add with ``replace=True``).
* **dense** (:class:`~sparsearch.index.dense.DenseIndex`, built whole): rebuilt with the stored
  vectors of the documents kept (dequantized: exact for float32 and float16, int8 codes
  re-derived from the dequantized values) and the new documents' vectors from the member's
  encoder, with the same quantization.

Doc numbers stay identical across representations because no representation keeps deleted
documents: a dense index cannot mark a row deleted, so sparse representations are compacted
(merged) in the same commit, and every representation's rows follow the first sparse
representation's order (kept documents in their old order, then the new ones). A hybrid search
therefore never sees a deleted document. The cost: a delete rewrites every representation
(O(index)); a merge of several uint8 segments re-quantizes a weight by at most half a step
(see :func:`~sparsearch.index.updates.merge`; exact for float32 and for one segment).
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import docstore
from ..errors import ConflictError, CorruptIndexError, InvalidInputError, NotFoundError
from .dense import DenseIndex, as_float32
from .hybrid import HybridIndex
from .manifest import commit
from .searcher import Index
from .storage import Directory, file_record
from .updates import add_texts, delete_documents, merge

__all__ = ["add_to_hybrid", "delete_from_hybrid"]

#: rows read from the old document store per query while the new one is written
STORE_CHUNK = 2000


def add_to_hybrid(path: str | os.PathLike, documents: Any, *, replace: bool = False) -> dict[str, Any]:
    """Add ``documents`` (``(id, title, text)`` rows, see
    :func:`sparsearch.docstore.normalize_documents`) to every representation of the hybrid
    index at ``path`` and to its store, as one commit; returns the new hybrid manifest.

    Each representation encodes ``title + " " + text`` with its own encoder (as the index was
    built). ``replace``: an id already in the index is replaced (an upsert); without it such an
    id raises :class:`ConflictError` and nothing changes.
    """
    carrier = documents if getattr(documents, "metadata", None) is not None else None  # metadata fields
    rows = list(docstore.normalize_documents(documents))
    if not rows:
        raise InvalidInputError("no documents to add")
    new_ids = [r[0] for r in rows]
    if len(set(new_ids)) != len(new_ids):
        seen: set[str] = set()
        dup = next(i for i in new_ids if i in seen or seen.add(i))
        raise InvalidInputError(f"duplicate document id {dup!r} in the documents to add")
    texts = [(t + " " + x).strip() for _, t, x in rows]
    d = Directory(path)
    with d.lock():
        index = HybridIndex.open(d.path)
        live = set(_live_ids(index))
        clash = [i for i in new_ids if i in live]
        if clash and not replace:
            raise ConflictError(f"document id {clash[0]!r} is already in the index ({len(clash)} clashing ids); "
                                f"delete it first or pass replace=True")

        def sparse(tmp: Path) -> None:
            add_texts(tmp, rows, replace=replace, metadata=carrier)
            if clash:
                merge(tmp)

        def dense(member: DenseIndex, order: list[str]) -> tuple[np.ndarray, list[str]]:
            enc = member.load_encoder()
            added = np.asarray(enc.encode_documents(texts, new_ids), np.float32)
            return _dense_rows(member, order, set(clash), added, new_ids), order

        return _update(d, index, sparse, dense, gone=set(clash), added=rows)


def delete_from_hybrid(path: str | os.PathLike, doc_ids: Iterable[str], *, ignore_missing: bool = False) -> int:
    """Delete documents from every representation of the hybrid index at ``path`` and from its
    store, as one commit; returns how many documents went.

    An id that is not in the index raises :class:`NotFoundError` (nothing is deleted) unless
    ``ignore_missing``; when no id is in the index nothing is committed.
    """
    ids = {str(i) for i in doc_ids}
    d = Directory(path)
    with d.lock():
        index = HybridIndex.open(d.path)
        live = set(_live_ids(index))
        gone = ids & live
        if not ignore_missing and len(gone) < len(ids):
            raise NotFoundError(f"unknown or already deleted document id {sorted(ids - live)[0]!r}")
        if not gone:
            return 0

        def sparse(tmp: Path) -> None:
            delete_documents(tmp, gone)
            merge(tmp)

        def dense(member: DenseIndex, order: list[str]) -> tuple[np.ndarray, list[str]]:
            return _dense_rows(member, order, gone, None, []), order

        _update(d, index, sparse, dense, gone=gone, added=[])
        return len(gone)


# ---------------------------------------------------------------------- internals
def _live_ids(index: HybridIndex) -> list[str]:
    """The live ids of a hybrid index in doc-number order (its first representation's)."""
    s = index.members[0].searcher
    if isinstance(s, Index):
        out: list[str] = []
        for seg, dele in zip(s.segments, s.deleted):
            keep = dele.tolist() if len(dele) else [False] * seg.n_docs
            out.extend(i for i, x in zip(seg.doc_ids, keep) if not x)
        return out
    return list(s.doc_ids)


def _dense_rows(member: DenseIndex, order: list[str], gone: set[str], added: np.ndarray | None,
                added_ids: Sequence[str]) -> np.ndarray:
    """float32 rows of ``member`` for the ids ``order``: the stored (dequantized) vector of a
    kept document, the new vector (``added``, rows of ``added_ids``) of an added one."""
    new = {i: k for k, i in enumerate(added_ids)}
    if added is not None and len(added) != len(added_ids):
        raise InvalidInputError(f"{member.path}: the encoder returned {len(added)} vectors for {len(added_ids)} texts")
    out = np.empty((len(order), member.dim), np.float32)
    old = [(r, member.docnum(i)) for r, i in enumerate(order) if i not in new]
    if old:
        rows, nums = (np.array(x, np.int64) for x in zip(*old))
        x = as_float32(np.asarray(member.vectors[nums]))
        if member.scale is not None:
            x = x * member.scale[nums][:, None]
        out[rows] = x
    fresh = [(r, new[i]) for r, i in enumerate(order) if i in new]
    if fresh:
        assert added is not None
        rows, src = (np.array(x, np.int64) for x in zip(*fresh))
        out[rows] = added[src]
    return out


def _copy_member(src: Path, tmp: Path) -> None:
    """``tmp`` (new) as a copy of the sparse index ``src``: files hard-linked (they are never
    modified once written), ``manifest.json`` copied, the writer lock left out; a byte copy
    where the filesystem refuses links."""

    def link_or_copy(a: str, b: str) -> None:
        if Path(a).name == "manifest.json":
            shutil.copy2(a, b)
            return
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)

    shutil.copytree(src, tmp, copy_function=link_or_copy, ignore=shutil.ignore_patterns(".lock"))


def _update(d: Directory, index: HybridIndex, sparse: Any, dense: Any, *, gone: set[str],
            added: list[tuple[str, str, str]]) -> dict[str, Any]:
    """Make every representation's new directory (``sparse(tmp)`` updates a copy of a sparse
    one; ``dense(member, order)`` gives a dense one's rows in the doc order ``order``), the new
    store, and commit the hybrid manifest naming them (writer lock held)."""
    t0 = time.perf_counter()
    old = index.manifest
    entries: list[dict[str, Any]] = []
    files: dict[str, Any] = {}
    order: list[str] | None = None
    # sparse representations first: their order (after the update) is the order of all
    for m in index.members:
        if m.kind != "sparse":
            continue
        name = f"rep-{m.name}-{uuid.uuid4().hex[:12]}"
        src = m.searcher.path

        def fill(tmp: Path, src: Path = src) -> None:
            _copy_member(src, tmp)
            sparse(tmp)

        d.publish(name, fill)
        got = Index.open(d / name)
        if got.n_live_docs != got.n_docs:
            raise CorruptIndexError(f"{d / name}: deleted documents left after compaction")  # pragma: no cover
        if order is None:
            order = list(got.doc_ids)
        elif list(got.doc_ids) != order:
            raise CorruptIndexError(f"{d / name}: representation {m.name!r} orders its documents differently "
                                    f"from the others")
        entries.append({"name": m.name, "kind": m.kind, "dir": name})
    if order is None:  # dense representations only: kept documents in their order, then the new ones
        order = [i for i in _live_ids(index) if i not in gone] + [r[0] for r in added]
    for m in index.members:
        if m.kind != "dense":
            continue
        member = m.searcher
        assert isinstance(member, DenseIndex)
        vectors, ids = dense(member, order)
        name = f"rep-{m.name}-{uuid.uuid4().hex[:12]}"
        enc = member.load_encoder() if member.encoder_config else None  # the same config (no model is loaded)
        d.publish(name, lambda tmp: DenseIndex.build(vectors, ids, tmp, encoder=enc, quantization=member.quantization,
                                                     overwrite=False, extra=member.extra))
        entries.append({"name": m.name, "kind": m.kind, "dir": name})
    by_name = {e["name"]: e for e in entries}
    entries = [by_name[m.name] for m in index.members]  # the representations' order is kept
    for e in entries:
        files[f"{e['dir']}/manifest.json"] = file_record(d / e["dir"] / "manifest.json")
    manifest = {k: v for k, v in old.items() if k not in ("files", "checksum", "docstore")}
    manifest.update(members=entries, n_docs=len(order), files=files)
    store = _new_store(d, old, order, added)
    if store is not None:
        manifest["docstore"] = store
    manifest["updated_at"] = time.time()
    manifest["update_seconds"] = time.perf_counter() - t0
    return commit(d, manifest)


def _new_store(d: Directory, manifest: dict[str, Any], order: list[str], added: list[tuple[str, str, str]]
               ) -> str | None:
    """A new top-level store: the current rows of the kept ids and the ``added`` rows, in the
    doc order ``order``; ``None`` when there is no row to store."""
    new = {r[0]: r for r in added}
    store = docstore.open_docstore(d.path, manifest) if manifest.get("docstore") else None
    if store is None and not new:
        return None

    def rows() -> Iterator[tuple[str, str, str]]:
        for a in range(0, len(order), STORE_CHUNK):
            part = order[a:a + STORE_CHUNK]
            got = store.get_many([i for i in part if i not in new]) if store is not None else {}
            for i in part:
                if i in new:
                    yield new[i]
                elif i in got:
                    yield i, got[i]["title"], got[i]["text"]

    try:
        return docstore.write_docstore(d.path, rows(), ids=order)
    finally:
        if store is not None:
            store.close()
