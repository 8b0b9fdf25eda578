"""Incremental updates of an existing index: add, delete, merge; each change is one commit.

* :func:`add_documents` writes the new vectors as a new segment (the vocabulary grows by
  appending, so existing term ids keep their meaning) and, if given, their texts into the new
  segment's own document store: an add writes O(added documents), never a copy of the index.
* :func:`add_texts` encodes texts with the index's encoder after growing its corpus statistics
  with them (BM25: vocabulary, document frequencies, N, average length), and commits the new
  encoder state with the new segment.
* :func:`delete_documents` writes a new deletion bitmap (``deletes-<uuid>.npy``, one bool per
  document of the segment) for every affected segment; search skips deleted documents.
  The document stores are not touched: the bitmaps hide the deleted rows.
* :func:`merge` rewrites the live documents of all segments into one segment (and its store
  with the live rows, and their metadata fields), dropping the bitmaps.

Metadata fields (:mod:`sparsearch.metadata`) live in the segment of their documents: an add
stores the new documents' fields in the new segment (a field the index has keeps its type; a
value of another type is an error naming its file and line), a delete hides them with the
bitmaps, a merge keeps the live rows.

Every change happens under the index's writer lock and ends with :func:`manifest.commit`, which
renames a new ``manifest.json`` over the old one: a reader that opens the index sees either the
state before or the state after a change, never a mix; a crash before the rename leaves the
previous state. Files the old state named are removed by the commit; a reader that had already
opened them keeps reading them (memory maps and open files survive the unlink), and a reader
that is opening the index while a commit removes its files follows the new commit
(``Index.open``, see :func:`~sparsearch.index.manifest.load_commit`).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import scipy.sparse as sp

from .. import docstore
from ..errors import ConflictError, InvalidInputError, NotFoundError
from ..metadata import concat_batches
from ..vectors import SparseBatch
from .builder import metadata_batch, publish_segment, save_encoder_state
from .manifest import commit
from .searcher import Index
from .segment import common_term_scale
from .storage import Directory

__all__ = ["add_documents", "add_texts", "delete_documents", "merge", "live_vectors"]


def _live_ids(index: Index) -> set[str]:
    live: set[str] = set()
    for seg, dele in zip(index.segments, index.deleted):
        if len(dele):
            live.update(i for i, d in zip(seg.doc_ids, dele.tolist()) if not d)
        else:
            live.update(seg.doc_ids)
    return live


def _check_batch(batch: SparseBatch) -> None:
    if batch.ids is None:
        raise InvalidInputError("add_documents needs document ids (batch.ids)")
    if len(batch) == 0:
        raise InvalidInputError("no documents to add")
    batch.validate()


def add_documents(path: str | os.PathLike, batch: SparseBatch, documents: Any = None, *,
                  replace: bool = False, metadata: Any = None, schema: Any = None) -> dict[str, Any]:
    """Add document vectors (and optionally their ``(id, title, text)``) as a new segment.

    Args:
        batch: the new documents' vectors; ``batch.ids`` are their ids (required). Its
            vocabulary is matched to the index's by term string; new terms are appended.
        documents: texts for the document store (see :func:`sparsearch.docstore.normalize_documents`).
        replace: an id that is already live is deleted first (an upsert); without it such an
            id raises :class:`ConflictError`.
        metadata / schema: the new documents' fields and declared types (as
            :func:`~sparsearch.index.builder.build_index`; default: the fields ``documents`` carry).

    Returns the new manifest. The segment uses the index's quantization with its own scale.
    The index's encoder state is left as it is: vectors made elsewhere say nothing about
    corpus statistics (:func:`add_texts` grows them).
    """
    d = Directory(path)
    _check_batch(batch)
    with d.lock():
        return _add(d, Index.open(d.path), batch, documents, replace, metadata=metadata, schema=schema)


def _add(d: Directory, index: Index, batch: SparseBatch, documents: Any, replace: bool,
         encoder_state: str | None = None, *, metadata: Any = None, schema: Any = None,
         fields_of: Any = None) -> dict[str, Any]:
    """The commit of :func:`add_documents` (writer lock held; ``encoder_state``: a new encoder
    state directory, already published, that the commit names; ``fields_of``: rows carrying the
    metadata, when ``documents`` no longer do)."""
    manifest = index.manifest
    fields = metadata_batch(batch.ids, metadata=metadata, documents=documents if fields_of is None else fields_of,
                            schema=schema, existing=index.metadata.schema)
    live = _live_ids(index)
    clash = [i for i in batch.ids if i in live]
    segments = _split_legacy_store(d, index, [dict(s) for s in manifest["segments"]])
    if clash:
        if not replace:
            raise ConflictError(f"document id {clash[0]!r} is already in the index "
                                f"({len(clash)} clashing ids); delete it first or pass replace=True")
        segments = _mark_deleted(d, index, segments, set(clash))
    vocab = index.vocab.copy()
    n_before = len(vocab)
    remapped = batch.remap(vocab, unknown="add")
    remapped.ids = list(batch.ids)
    name, meta = publish_segment(d, remapped, quantization=manifest.get("quantization", "uint8"),
                                 codec=manifest.get("codec", "byte"), metadata=fields)
    # the new segment's own store: only the new rows are written (O(added documents))
    store = docstore.write_docstore(d.path, documents, ids=remapped.ids) if documents is not None else None
    segments.append({"name": name, "n_docs": meta["n_docs"], "deletes": None, "docstore": store})
    new = _without_legacy_store(manifest, segments)
    if encoder_state is not None:
        new["encoder_state"] = encoder_state
    return commit(d, new, vocab if len(vocab) > n_before else None)


def add_texts(path: str | os.PathLike, documents: Any, *, replace: bool = False, metadata: Any = None,
              schema: Any = None) -> dict[str, Any]:
    """Encode ``documents`` (id, title, text) with the index's encoder and add them with their texts.

    The encoder's corpus statistics grow with the new documents first
    (:meth:`~sparsearch.encoders.base.SparseEncoder.update_statistics`: for BM25 the vocabulary,
    document frequencies, ``N`` and average length; for inference-free SPLADE the query-side
    document frequencies), so a word no earlier document used is indexed and searchable; the
    new documents are weighted with the statistics of their time, themselves included
    (documents indexed earlier keep theirs, as Lucene segments do until merged). The grown
    state is saved as a new ``encoder-<id>`` directory named by the same commit as the
    documents: a reader sees both or neither. Encoders with a fixed vocabulary (SPLADE, sparse
    coding) drop nothing and keep their state. ``metadata`` / ``schema``: as :func:`add_documents`.
    """
    carrier = documents if getattr(documents, "metadata", None) is not None else None  # ingest's rows
    rows = list(docstore.normalize_documents(documents))
    if not rows:
        raise InvalidInputError("no documents to add")
    d = Directory(path)
    with d.lock():  # statistics read, grown and committed under one lock: concurrent adds add up
        index = Index.open(d.path)
        enc = index.load_encoder()
        texts = [(t + " " + x).strip() for _, t, x in rows]
        grown = enc.update_statistics(texts)
        batch = enc.encode_documents(texts, [r[0] for r in rows])
        _check_batch(batch)
        state = save_encoder_state(d, enc) if grown else None
        return _add(d, index, batch, rows, replace, state, metadata=metadata, schema=schema, fields_of=carrier)


def _split_legacy_store(d: Directory, index: Index, segments: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Segment entries with their own document stores. An index written before per-segment
    stores names one store for all its documents (manifest key ``docstore``): it is split by
    segment here, once (O(index)), so that this update and every later one writes only its own
    documents. Rows of ids no segment holds go to the first segment's store."""
    legacy = index.manifest.get("docstore")
    if not legacy:
        return segments
    store = docstore.open_docstore(d.path, {"docstore": legacy})
    assert store is not None
    try:
        held = {i for seg in index.segments for i in seg.doc_ids}
        extras = [i for i in store.ids() if i not in held]
        out = []
        for k, (entry, seg) in enumerate(zip(segments, index.segments)):
            wanted = list(seg.doc_ids) + (extras if k == 0 else [])
            rows = store.get_many(wanted)
            docs = [(i, rows[i]["title"], rows[i]["text"]) for i in dict.fromkeys(wanted) if i in rows]
            out.append(dict(entry, docstore=docstore.write_docstore(d.path, docs, ids=seg.doc_ids) if docs else None))
        return out
    finally:
        store.close()


def _without_legacy_store(manifest: dict[str, Any], segments: list[dict[str, Any]]) -> dict[str, Any]:
    """The next manifest: ``segments``, and no index-wide store (see :func:`_split_legacy_store`)."""
    new = dict(manifest, segments=segments)
    new.pop("docstore", None)
    return new


def _mark_deleted(d: Directory, index: Index, segments: list[dict[str, Any]], ids: set[str]) -> list[dict[str, Any]]:
    """New segment entries with the documents ``ids`` marked deleted (new bitmap files,
    ``deletes-<id>.npy``, written atomically)."""
    out = []
    for entry, seg, dele in zip(segments, index.segments, index.deleted):
        hit = np.fromiter((i in ids for i in seg.doc_ids), np.bool_, seg.n_docs)
        mask = dele.copy() if len(dele) else np.zeros(seg.n_docs, np.bool_)
        if (hit & ~mask).any():
            name = f"deletes-{uuid.uuid4().hex[:16]}.npy"
            d.write_npy(name, (mask | hit).astype(np.bool_))
            entry = dict(entry, deletes=name)
        out.append(entry)
    return out


def delete_documents(path: str | os.PathLike, doc_ids: Iterable[str], *, missing: str = "ignore") -> int:
    """Mark documents deleted (new bitmaps, one commit); returns how many live documents went.

    ``missing``: ``"ignore"`` ids that are not live, or ``"error"`` (:class:`NotFoundError`
    naming one).
    """
    if missing not in ("ignore", "error"):
        raise InvalidInputError(f"missing must be 'ignore' or 'error', got {missing!r}")
    d = Directory(path)
    ids = {str(i) for i in doc_ids}
    with d.lock():
        index = Index.open(d.path)
        manifest = index.manifest
        live = _live_ids(index)
        gone = ids & live
        if missing == "error" and len(gone) < len(ids):
            raise NotFoundError(f"unknown or already deleted document id {sorted(ids - live)[0]!r}")
        if not gone:
            return 0
        # the stores stay as they are: the new bitmaps hide the deleted rows (O(deleted documents))
        segments = _mark_deleted(d, index, _split_legacy_store(d, index, [dict(s) for s in manifest["segments"]]),
                                 gone)
        commit(d, _without_legacy_store(manifest, segments))
        return len(gone)


def live_vectors(index: Index) -> SparseBatch:
    """The live documents of an index as float vectors over its vocabulary (dequantized impacts)."""
    mats, ids = [], []
    V = index.n_terms
    for seg, dele in zip(index.segments, index.deleted):
        m = seg.weight_matrix(V)
        keep = ~dele if len(dele) else np.ones(seg.n_docs, np.bool_)
        mats.append(m[np.flatnonzero(keep)])
        ids.extend(i for i, k in zip(seg.doc_ids, keep.tolist()) if k)
    m = sp.vstack(mats).tocsr() if mats else sp.csr_matrix((0, V))
    return SparseBatch.from_scipy(m, index.vocab, ids)


def _merged_store(d: Directory, manifest: dict[str, Any], ids: list[str]) -> str | None:
    """The merged segment's store: the live rows of ``ids`` (the merged doc order), read from the
    current stores in chunks; ``None`` when the index has no texts."""
    store = docstore.open_docstore(d.path, manifest)
    if store is None:
        return None

    def rows() -> Iterator[tuple[str, str, str]]:
        for a in range(0, len(ids), 2000):
            got = store.get_many(ids[a:a + 2000])
            yield from ((i, got[i]["title"], got[i]["text"]) for i in ids[a:a + 2000] if i in got)

    try:
        return docstore.write_docstore(d.path, rows(), ids=ids)
    finally:
        store.close()


def _live_metadata(index: Index) -> Any:
    """The metadata of the live documents in doc-number order (as :func:`live_vectors` orders
    them); ``None`` when the index has no fields."""
    store = index.metadata
    if not store.schema:
        return None
    parts = []
    for s, dele in enumerate(index.deleted):
        batch = store.segment_batch(s)
        parts.append(batch.take(np.flatnonzero(~dele)) if len(dele) else batch)
    return concat_batches(parts, store.schema)


def merge(path: str | os.PathLike) -> dict[str, Any]:
    """Rewrite the live documents of all segments into one segment (one commit); returns the manifest.

    Weights are the dequantized impacts of the old segments, re-quantized per term for the
    merged segment, on each term's largest step over the segments
    (``segment.common_term_scale``): exact for ``float32`` indexes and for segments that share
    their grid (one segment with deletions, a distributed build); otherwise a weight moves by
    at most half a step of its term's grid, and none becomes 0 (an index with version-1
    segments is re-quantized from its weights). A single segment without deletions is left as is.
    """
    d = Directory(path)
    with d.lock():
        index = Index.open(d.path)
        manifest = index.manifest
        if len(index.segments) == 1 and not any(len(x) and x.any() for x in index.deleted):
            return manifest
        batch = live_vectors(index)
        if len(batch) == 0:
            raise InvalidInputError("cannot merge: the index has no live documents")
        # per-term segments: keep each term's largest step (weights already on it stay exact)
        grid = (common_term_scale(index.segments, index.n_terms)
                if all(s.term_scale is not None for s in index.segments) else None)
        name, meta = publish_segment(d, batch, quantization=manifest.get("quantization", "uint8"),
                                     codec=manifest.get("codec", "byte"), term_scale=grid,
                                     metadata=_live_metadata(index))
        new = _without_legacy_store(manifest, [{"name": name, "n_docs": meta["n_docs"], "deletes": None,
                                                "docstore": _merged_store(d, manifest, batch.ids)}])
        new["merged_at"] = time.time()
        return commit(d, new)
