"""Build an index from SparseBatch streams: validate, invert, quantize, compress, commit.

:func:`build_index` writes one segment (published atomically by the storage layer), the
encoder's state and the document store, then commits a manifest naming them
(:mod:`~sparsearch.index.manifest` describes the directory layout and the commit protocol).
:func:`publish_segment` is the one way a segment gets into an index directory (builds,
incremental updates and the distributed builder all use it).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import docstore
from ..errors import InvalidInputError
from ..metadata import MetadataBatch, build_metadata
from ..vectors import SparseBatch
from . import kernels
from .manifest import INDEX_FORMAT, INDEX_VERSION, check_target, commit, read_manifest
from .searcher import METADATA_DIR, Index
from .segment import write_segment
from .storage import Directory, read_json, write_arrays

QUANTIZATIONS = ("uint8", "float32")
# Doc-id codecs (kernels module docstring): "byte" rounds block widths to 8/16/32 bits for speed.
CODECS = ("byte", "bitpack")

__all__ = ["INDEX_FORMAT", "INDEX_VERSION", "QUANTIZATIONS", "CODECS", "build_index", "quantize", "quantize_postings",
           "term_scales", "term_maxima", "check_settings",
           "check_documents", "build_segment", "publish_segment", "new_segment_name", "save_encoder_state",
           "new_manifest", "commit", "read_manifest", "metadata_batch"]


def check_settings(quantization: str, codec: str) -> None:
    """Refuse an unknown quantization or doc-id codec (:class:`InvalidInputError`)."""
    if quantization not in QUANTIZATIONS:
        raise InvalidInputError(f"unknown quantization {quantization!r}; use one of {QUANTIZATIONS}")
    if codec not in CODECS:
        raise InvalidInputError(f"unknown codec {codec!r}; use one of {CODECS}")


def check_documents(ids: Sequence[str], values: np.ndarray | None = None) -> None:
    """Refuse duplicate document ids and weights that are negative, NaN or infinite."""
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        dup = next(i for i in ids if i in seen or seen.add(i))  # type: ignore[func-returns-value]
        raise InvalidInputError(f"duplicate document id {dup!r}")
    if values is not None and len(values) and (values.min() < 0 or not np.isfinite(values).all()):
        raise InvalidInputError("document weights must be finite and non-negative")


def quantize(values: np.ndarray, quantization: str, scale: float | None = None) -> tuple[np.ndarray, float]:
    """One linear 8-bit grid for all ``values`` (the version-1 segment scheme, kept for callers):
    ``round(w / scale)``, ``scale = max(w) / 255``; weights below ``scale / 2`` become 0.
    Segments are quantized per term (:func:`quantize_postings`). ``float32``: weights as they are.
    Returns ``(impacts, scale)``.
    """
    if quantization == "float32":
        return np.asarray(values, np.float32), 1.0
    if quantization != "uint8":
        raise InvalidInputError(f"unknown quantization {quantization!r}; use one of {QUANTIZATIONS}")
    if scale is None:
        mx = float(values.max()) if values.size else 0.0
        scale = mx / 255.0 if mx > 0 else 1.0
    q = np.rint(np.asarray(values, np.float64) / scale)
    return np.clip(q, 0, 255).astype(np.uint8), float(scale)


def term_scales(post_ptr: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Per-term 8-bit step of postings in term order (``post_ptr`` as ``kernels.invert`` makes
    it): ``max weight of the term / 255`` (float64), 0 for a term without postings."""
    counts = np.diff(post_ptr)
    out = np.zeros(len(counts), np.float64)
    nonempty = counts > 0
    if nonempty.any():
        out[nonempty] = np.maximum.reduceat(np.asarray(values), post_ptr[:-1][nonempty]).astype(np.float64) / 255.0
    return out


def term_maxima(batch: SparseBatch) -> np.ndarray:
    """Largest weight of each term of ``batch.vocab`` over the batch (float64, 0 where none):
    what a distributed build merges (a maximum over shards) into one grid per term."""
    post_ptr, _, post_vals = kernels.invert(batch.indptr, batch.indices, np.asarray(batch.values, np.float32),
                                            len(batch.vocab))
    return term_scales(post_ptr, post_vals) * 255.0


_CHUNK = 1 << 20  # postings quantized per numpy pass (bounds the temporaries)
_TINY = np.float32(np.finfo(np.float32).smallest_subnormal)


def stored_scales(scales: np.ndarray) -> np.ndarray:
    """Term scales as segments store them: float32 (4 bytes a term), a positive one never
    rounded to 0 (at least the smallest float32); quantization uses exactly these values."""
    scales = np.asarray(scales, np.float64)
    return np.where(scales > 0, np.maximum(scales.astype(np.float32), _TINY), np.float32(0)).astype(np.float32)


def quantize_postings(post_ptr: np.ndarray, values: np.ndarray, quantization: str,
                      scales: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Impacts of positive weights in term order, and each term's scale.

    ``uint8``: every term on its own grid, ``impact = clip(round(w / scales[t]), 1, 255)`` with
    ``scales[t] = max weight of t / 255`` (:func:`term_scales`) unless given (e.g. one grid
    shared by the shards of a distributed build, kept as given for every term; each must be > 0
    where the term has postings, and at least its largest weight / 255 or the weight is clipped
    to 255 steps). A weight > 0
    never becomes 0: one far larger than the rest of its term's weights (an outlier) costs them
    resolution, not their postings. ``float32``: weights as they are, scales 1. Scales are
    returned (and used) as :func:`stored_scales` makes them: float32.
    """
    V = len(post_ptr) - 1
    if quantization == "float32":
        return np.asarray(values, np.float32), np.ones(V, np.float32)
    if quantization != "uint8":
        raise InvalidInputError(f"unknown quantization {quantization!r}; use one of {QUANTIZATIONS}")
    counts = np.diff(post_ptr)
    if scales is None:
        scales = term_scales(post_ptr, values)
    else:
        scales = np.asarray(scales, np.float64)[:V]
        if len(scales) < V or not (np.isfinite(scales) & ((scales > 0) | (counts == 0))).all():
            raise InvalidInputError("term scales must be finite and > 0 for every term with postings")
    scales = stored_scales(scales)
    out = np.empty(len(values), np.uint8)
    t = 0
    while t < V:  # runs of whole terms of about _CHUNK postings
        u = max(t + 1, int(np.searchsorted(post_ptr, post_ptr[t] + _CHUNK, side="right")) - 1)
        u = min(u, V)
        a, b = int(post_ptr[t]), int(post_ptr[u])
        if b > a:
            step = np.repeat(scales[t:u].astype(np.float64), counts[t:u])
            out[a:b] = np.clip(np.rint(np.asarray(values[a:b], np.float64) / step), 1, 255)
        t = u
    return out, scales


def _collect(batches: SparseBatch | Iterable[SparseBatch], progress: bool) -> SparseBatch:
    """Concatenate a stream of batches (vocabularies must extend one another)."""
    if isinstance(batches, SparseBatch):
        return batches
    chunks: list[SparseBatch] = []
    it: Iterator[SparseBatch] = iter(batches)
    if progress:
        from tqdm.auto import tqdm

        it = iter(tqdm(it, desc="collect", unit="batch"))
    for b in it:
        chunks.append(b)
    if not chunks:
        raise InvalidInputError("no document vectors to index")
    return SparseBatch.concat(chunks, release=True)


def metadata_batch(ids: Sequence[str], *, metadata: Any = None, documents: Any = None, schema: Any = None,
                   existing: dict[str, str] | None = None) -> MetadataBatch | None:
    """The metadata columns of the documents ``ids`` (:func:`sparsearch.metadata.build_metadata`),
    ``None`` when there are no fields and no declared schema.

    ``metadata``: one ``{field: value}`` (or ``None``) per id, ``{id: {field: value}}``, or rows
    that carry fields; ``None``: the fields that ``documents`` carry (:class:`sparsearch.ingest.DocumentRows`,
    matched by id; errors name their file and line). ``schema``: declared types;
    ``existing``: the types the index already stores (an add keeps them).
    """
    where = None
    if getattr(metadata, "metadata", None) is not None:  # rows that carry their fields, given as the metadata
        metadata, documents = None, metadata
    if metadata is None and documents is not None and getattr(documents, "metadata", None) is not None:
        at = {str(r[0]): j for j, r in enumerate(documents)}
        recs, locs = documents.metadata, documents.where
        records = [recs[at[i]] if i in at else None for i in ids]
        where = [locs[at[i]] if i in at and locs is not None else f"document {i!r}" for i in ids]
    elif isinstance(metadata, dict):
        records = [metadata.get(i) for i in ids]
    elif metadata is not None:
        records = list(metadata)
        if len(records) != len(ids):
            raise InvalidInputError(f"{len(records)} metadata records for {len(ids)} documents")
    else:
        records = None
    if records is None or not any(records):
        if not schema:
            return None
        records = [None] * len(ids)
    return build_metadata(records, schema=schema, existing=existing, where=where, ids=list(ids))


def build_segment(
    batch: SparseBatch, directory: Path, *, quantization: str = "uint8", term_scale: np.ndarray | None = None,
    codec: str = "byte", metadata: MetadataBatch | None = None,
) -> dict[str, Any]:
    """Invert, quantize and compress ``batch`` into a new segment directory; returns its metadata.

    ``directory`` must not exist (call it through :func:`publish_segment`). ``codec`` is
    ``"byte"`` (block widths of 8/16/32 bits, fastest) or ``"bitpack"`` (smallest widths,
    fewer posting bytes); searchers read both. ``term_scale``: the per-term uint8 steps to use,
    indexed by the batch's term ids (default: each term's largest weight / 255; see
    :func:`quantize_postings`). ``metadata``: the documents' fields, written as the segment's
    checksummed ``metadata/`` arrays (covered by the commit's records like the segment).
    """
    check_settings(quantization, codec)
    if batch.ids is None:
        batch.ids = [str(i) for i in range(len(batch))]
    check_documents(batch.ids, batch.values)
    n_terms = len(batch.vocab)
    # invert the float weights (zeros dropped), then quantize each term on its own grid
    post_ptr, post_docs, post_vals = kernels.invert(batch.indptr, batch.indices,
                                                    np.asarray(batch.values, np.float32), n_terms)
    post_imp, scales = quantize_postings(post_ptr, post_vals, quantization, term_scale)
    del post_vals
    term_block_ptr, block_last, block_max, block_bits, block_word_ptr, words = kernels.build_blocks(
        post_ptr, post_docs, post_imp, codec == "byte")
    term_max = np.zeros(n_terms, post_imp.dtype)
    nonempty = np.diff(term_block_ptr) > 0
    if nonempty.any():
        term_max[nonempty] = np.maximum.reduceat(block_max, term_block_ptr[:-1][nonempty])
    arrays = {"term_post_ptr": post_ptr, "term_block_ptr": term_block_ptr, "term_max": term_max,
              "block_last": block_last, "block_max": block_max, "block_bits": block_bits,
              "block_word_ptr": block_word_ptr, "words": words, "impacts": post_imp, "term_scale": scales}
    meta = {"n_docs": len(batch), "n_terms": n_terms, "n_postings": int(post_ptr[-1]), "quantization": quantization,
            "scaling": "per-term", "block_size": kernels.BLOCK, "codec": codec}
    write_segment(directory, arrays, meta, list(batch.ids))
    if metadata is not None:
        if metadata.n_docs != len(batch):
            raise InvalidInputError(f"metadata of {metadata.n_docs} documents for a segment of {len(batch)}")
        m_arrays, header = metadata.to_arrays()
        write_arrays(directory / METADATA_DIR, m_arrays, header)
    return meta


def new_segment_name() -> str:
    return f"seg-{uuid.uuid4().hex[:16]}"


def publish_segment(directory: Directory | str | os.PathLike, batch: SparseBatch, *, quantization: str,
                    codec: str = "byte", term_scale: np.ndarray | None = None,
                    metadata: MetadataBatch | None = None) -> tuple[str, dict[str, Any]]:
    """Build a segment of ``batch`` and publish it atomically as ``seg-<id>`` in ``directory``;
    returns ``(name, metadata)``. Not yet part of any commit: pass it to a manifest.
    ``term_scale``: per-term uint8 steps shared with other segments (default: the batch's own);
    ``metadata``: the documents' fields (stored in the segment)."""
    name = new_segment_name()
    meta = Directory.of(directory).publish(
        name, lambda tmp: build_segment(batch, tmp, quantization=quantization, term_scale=term_scale, codec=codec,
                                        metadata=metadata))
    return name, meta


def save_encoder_state(directory: Directory | str | os.PathLike, encoder: Any) -> str:
    """Publish the encoder's state (``encoder.save_state(dir)``) as ``encoder-<id>``; returns the name."""
    name = f"encoder-{uuid.uuid4().hex[:12]}"

    def fill(tmp: Path) -> None:
        tmp.mkdir()
        encoder.save_state(tmp)

    Directory.of(directory).publish(name, fill)
    return name


def new_manifest(directory: Directory | str | os.PathLike, old: dict[str, Any] | None,
                 segments: list[tuple[str, dict[str, Any]]], *, quantization: str, codec: str, encoder: Any = None,
                 extra: dict[str, Any] | None = None, documents: Any = None) -> dict[str, Any]:
    """The manifest of a freshly built index (to pass to :func:`commit`): its segments
    ``(name, metadata)`` in doc-number order, settings, the encoder's config and saved state,
    the segments' document stores (written here) and ``extra`` entries."""
    d = Directory.of(directory)
    manifest: dict[str, Any] = {
        "generation": old["generation"] if old else 0,
        "segments": [{"name": name, "n_docs": meta["n_docs"], "deletes": None} for name, meta in segments],
        "quantization": quantization,
        "codec": codec,
        "encoder": encoder.config() if encoder is not None else None,
        "encoder_state": save_encoder_state(d, encoder) if encoder is not None else None,
        **(extra or {}),
    }
    if documents is not None:  # one store per segment, written with it (see sparsearch.docstore)
        ids = [read_json(d / name / "doc_ids.json", "document ids") for name, _ in segments]
        for entry, store in zip(manifest["segments"], docstore.write_segment_stores(d.path, documents, ids)):
            entry["docstore"] = store
    return manifest


def build_index(
    batches: SparseBatch | Iterable[SparseBatch],
    path: str | os.PathLike,
    *,
    quantization: str = "uint8",
    codec: str = "byte",
    encoder: Any = None,
    overwrite: bool = True,
    progress: bool = False,
    extra: dict[str, Any] | None = None,
    documents: Any = None,
    metadata: Any = None,
    schema: Any = None,
) -> Index:
    """Build an index at ``path`` from document vectors; returns the opened :class:`Index`.

    Args:
        batches: one SparseBatch or a stream of them (ids are the document ids; vocabularies
            of later batches must extend earlier ones, as ``iter_jsonl_chunks`` produces).
        quantization: ``"uint8"`` (8-bit impacts on a linear grid per term, default; no
            non-zero weight is dropped) or ``"float32"``.
        codec: doc-id compression, ``"byte"`` (default; byte-aligned block widths, fastest
            to score) or ``"bitpack"`` (smallest widths; fewer posting bytes, slower).
        encoder: the :class:`~sparsearch.encoders.SparseEncoder` that made the vectors; its
            ``config()`` goes into the manifest and its state next to it, so that queries can
            later be encoded the same way.
        overwrite: replace an existing index at ``path`` (atomically) instead of failing.
        extra: additional manifest entries (e.g. the source collection).
        documents: ``(id, title, text)`` of the documents (e.g. a BEIR ``corpus`` dict), stored
            with the index in a SQLite document store (see :mod:`sparsearch.docstore`). Rows
            read by :mod:`sparsearch.ingest` carry the documents' metadata fields.
        metadata: the documents' fields (see :func:`metadata_batch`; default: those ``documents``
            carry), stored typed and columnar for filters (:mod:`sparsearch.filters`).
        schema: declared field types, e.g. ``{"year": "integer"}`` or ``"year:integer"``
            (other fields are inferred; see :mod:`sparsearch.metadata`).
    """
    path = Path(path)
    check_settings(quantization, codec)
    t0 = time.perf_counter()
    d = Directory(path)
    with d.lock():
        old = check_target(d, overwrite)
        batch = _collect(batches, progress)
        batch.validate()
        if batch.ids is None:
            batch.ids = [str(i) for i in range(len(batch))]
        fields = metadata_batch(batch.ids, metadata=metadata, documents=documents, schema=schema)
        name, meta = publish_segment(d, batch, quantization=quantization, codec=codec, metadata=fields)
        manifest = new_manifest(d, old, [(name, meta)], quantization=quantization, codec=codec, encoder=encoder,
                                extra=extra, documents=documents)
        manifest["build_seconds"] = time.perf_counter() - t0
        commit(d, manifest, batch.vocab)
    return Index.open(path)
