"""Build segments from SparseBatch streams and commit them atomically.

Index directory layout (Lucene-style commit points)::

    INDEX/
      manifest.json        the commit point: format version, segments, vocabulary, encoder
      vocab-<gen>.json     the vocabulary (term id -> term), append-only across generations
      seg-<uuid>/          immutable segments (see segment.py)
      encoder-<gen>/       state of the encoder that produced the document vectors

Every file is written aside and fsynced; a new ``manifest.json`` is then renamed over the old
one. A crash at any point leaves the previous manifest, which only names files that were
complete before, so the previous index stays loadable. Files no manifest names are removed
by the next successful commit.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..vectors import SparseBatch, Vocabulary
from . import kernels
from .segment import IndexFormatError, fsync_dir, read_versioned_json, write_segment_arrays

INDEX_FORMAT = "sparsearch-index"
INDEX_VERSION = 1
QUANTIZATIONS = ("uint8", "float32")
# Doc-id codecs (kernels module docstring): "byte" rounds block widths to 8/16/32 bits for speed.
CODECS = ("byte", "bitpack")

__all__ = ["INDEX_FORMAT", "INDEX_VERSION", "quantize", "build_segment", "commit", "write_lock", "read_manifest",
           "write_json_atomic"]


def quantize(values: np.ndarray, quantization: str, scale: float | None = None) -> tuple[np.ndarray, float]:
    """Map float weights to impacts.

    ``uint8``: linear quantization ``round(w / scale)`` with ``scale = max(w) / 255`` (weights
    that round to 0 are dropped by the inverter). ``float32``: weights kept as they are.
    Returns ``(impacts, scale)``; a score is ``sum(query_weight * impact) * scale``.
    """
    if quantization == "float32":
        return np.asarray(values, np.float32), 1.0
    if quantization != "uint8":
        raise ValueError(f"unknown quantization {quantization!r}; use one of {QUANTIZATIONS}")
    if scale is None:
        mx = float(values.max()) if values.size else 0.0
        scale = mx / 255.0 if mx > 0 else 1.0
    q = np.rint(np.asarray(values, np.float64) / scale)
    return np.clip(q, 0, 255).astype(np.uint8), float(scale)


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
        raise ValueError("no document vectors to index")
    return SparseBatch.concat(chunks)


def build_segment(
    batch: SparseBatch, directory: Path, *, quantization: str = "uint8", scale: float | None = None,
    codec: str = "byte",
) -> dict[str, Any]:
    """Invert, quantize and compress ``batch`` into a new segment directory; returns its metadata.

    ``codec`` is ``"byte"`` (block widths of 8/16/32 bits, fastest) or ``"bitpack"`` (smallest
    widths, ~15% fewer posting bytes); searchers read both.
    """
    if codec not in CODECS:
        raise ValueError(f"unknown codec {codec!r}; use one of {CODECS}")
    if batch.ids is None:
        batch.ids = [str(i) for i in range(len(batch))]
    if len(set(batch.ids)) != len(batch.ids):
        seen: set[str] = set()
        dup = next(i for i in batch.ids if i in seen or seen.add(i))  # type: ignore[func-returns-value]
        raise ValueError(f"duplicate document id {dup!r}")
    if batch.nnz and (batch.values.min() < 0 or not np.isfinite(batch.values).all()):
        raise ValueError("document weights must be finite and non-negative")
    impacts, scale = quantize(batch.values, quantization, scale)
    n_terms = len(batch.vocab)
    post_ptr, post_docs, post_imp = kernels.invert(batch.indptr, batch.indices, impacts, n_terms)
    term_block_ptr, block_last, block_max, block_bits, block_word_ptr, words = kernels.build_blocks(
        post_ptr, post_docs, post_imp, codec == "byte")
    term_max = np.zeros(n_terms, impacts.dtype)
    nonempty = np.diff(term_block_ptr) > 0
    if nonempty.any():
        term_max[nonempty] = np.maximum.reduceat(block_max, term_block_ptr[:-1][nonempty])
    arrays = {"term_post_ptr": post_ptr, "term_block_ptr": term_block_ptr, "term_max": term_max,
              "block_last": block_last, "block_max": block_max, "block_bits": block_bits,
              "block_word_ptr": block_word_ptr, "words": words, "impacts": post_imp}
    meta = {"n_docs": len(batch), "n_terms": n_terms, "n_postings": int(post_ptr[-1]), "quantization": quantization,
            "scale": scale, "block_size": kernels.BLOCK, "codec": codec}
    write_segment_arrays(directory, arrays, meta)
    write_json_atomic(directory / "doc_ids.json", batch.ids, make_dir_durable=True)
    return meta


def write_json_atomic(path: Path, obj: Any, *, make_dir_durable: bool = True) -> None:
    """Write JSON to ``path`` via a fsynced temporary file and an atomic rename."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    if make_dir_durable:
        fsync_dir(path.parent)


@contextlib.contextmanager
def write_lock(path: Path) -> Iterator[None]:
    """Exclusive writer lock on an index directory (readers never block)."""
    path.mkdir(parents=True, exist_ok=True)
    with open(path / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def read_manifest(path: Path) -> dict[str, Any]:
    """Read and check ``manifest.json`` of an index directory."""
    if not Path(path).is_dir():
        raise IndexFormatError(f"{path}: no such index directory")
    return read_versioned_json(Path(path), "manifest.json", INDEX_FORMAT, INDEX_VERSION, "index")


def new_segment_name() -> str:
    return f"seg-{uuid.uuid4().hex[:16]}"


def commit(path: Path, manifest: dict[str, Any], vocab: Vocabulary | None = None) -> dict[str, Any]:
    """Write a new commit point: the vocabulary (if given) then ``manifest.json``; clean up.

    Call with the write lock held and every segment the manifest names already durable.
    """
    manifest = dict(manifest)
    manifest["format"], manifest["version"] = INDEX_FORMAT, INDEX_VERSION
    manifest["generation"] = int(manifest.get("generation", 0)) + 1
    if vocab is not None:
        name = f"vocab-{manifest['generation']}.json"
        write_json_atomic(path / name, vocab.terms)
        manifest["vocab"] = name
        manifest["n_terms"] = len(vocab)
    manifest["n_docs"] = sum(int(s["n_docs"]) for s in manifest["segments"])
    manifest["committed_at"] = time.time()
    write_json_atomic(path / "manifest.json", manifest)
    _collect_garbage(path, manifest)
    return manifest


def _collect_garbage(path: Path, manifest: dict[str, Any]) -> None:
    """Remove files and directories no longer named by the manifest (and torn temporaries)."""
    keep = {"manifest.json", ".lock", manifest.get("vocab"), manifest.get("encoder_state"), manifest.get("docstore")}
    for s in manifest["segments"]:
        keep.add(s["name"])
        if s.get("deletes"):
            keep.add(s["deletes"])
    keep.update(manifest.get("keep", []))
    for entry in path.iterdir():
        if entry.name in keep:
            continue
        # an approximate index describes one commit: any new commit makes it stale
        if entry.name.startswith(("seg-", "vocab-", "encoder-", "deletes-", ".tmp-", ".manifest.json", "docs-",
                                  "approx-", "approximate.json")):
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)


def _check_target(path: Path, overwrite: bool) -> dict[str, Any] | None:
    """The current manifest of ``path`` (None if new); refuse to clobber foreign directories."""
    if (path / "manifest.json").exists():
        old = read_manifest(path)
        if not overwrite:
            raise FileExistsError(f"{path} already holds an index (use overwrite=True / --overwrite to replace it)")
        return old
    if path.exists() and any(e.name != ".lock" and not e.name.startswith((".tmp-", "seg-", "vocab-", "encoder-", "docs-", "deletes-"))
                             for e in path.iterdir()):
        raise FileExistsError(f"{path} exists and is not a sparsearch index; refusing to write into it")
    return None


def write_segment_atomic(path: Path, batch: SparseBatch, quantization: str,
                         codec: str = "byte") -> tuple[str, dict[str, Any]]:
    """Build a segment aside (``.tmp-*``), then rename it to its final ``seg-*`` name."""
    name = new_segment_name()
    tmp = path / f".tmp-{name}"
    meta = build_segment(batch, tmp, quantization=quantization, codec=codec)
    os.replace(tmp, path / name)
    fsync_dir(path)
    return name, meta


def save_encoder_state(path: Path, encoder: Any) -> str:
    """Write the encoder's state aside and rename it into ``encoder-<uuid>``; returns the name."""
    name = f"encoder-{uuid.uuid4().hex[:12]}"
    tmp = path / f".tmp-{name}"
    tmp.mkdir()
    encoder.save_state(tmp)
    for f in tmp.rglob("*"):
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
    os.replace(tmp, path / name)
    return name


def new_manifest(path: Path, old: dict[str, Any] | None, segments: list[tuple[str, dict[str, Any]]], *,
                 quantization: str, codec: str, encoder: Any = None, extra: dict[str, Any] | None = None,
                 documents: Any = None) -> dict[str, Any]:
    """The manifest of a freshly built index (to pass to :func:`commit`): its segments
    ``(name, metadata)`` in doc-number order, settings, the encoder's config and saved state,
    the document store (written here) and ``extra`` entries."""
    manifest: dict[str, Any] = {
        "generation": old["generation"] if old else 0,
        "segments": [{"name": name, "n_docs": meta["n_docs"], "deletes": None} for name, meta in segments],
        "quantization": quantization,
        "codec": codec,
        "encoder": encoder.config() if encoder is not None else None,
        "encoder_state": save_encoder_state(path, encoder) if encoder is not None else None,
        **(extra or {}),
    }
    if documents is not None:
        from ..docstore import write_docstore

        manifest["docstore"] = write_docstore(path, documents)
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
):
    """Build an index at ``path`` from document vectors; returns the opened :class:`Index`.

    Args:
        batches: one SparseBatch or a stream of them (ids are the document ids; vocabularies
            of later batches must extend earlier ones, as ``iter_jsonl_chunks`` produces).
        quantization: ``"uint8"`` (linear 8-bit impacts, default) or ``"float32"``.
        codec: doc-id compression, ``"byte"`` (default; byte-aligned block widths, fastest
            to score) or ``"bitpack"`` (smallest widths; ~15% fewer posting bytes, slower).
        encoder: the :class:`~sparsearch.encoders.SparseEncoder` that made the vectors; its
            ``config()`` goes into the manifest and its state next to it, so that queries can
            later be encoded the same way.
        overwrite: replace an existing index at ``path`` (atomically) instead of failing.
        extra: additional manifest entries (e.g. the source collection).
        documents: ``(id, title, text)`` of the documents (e.g. a BEIR ``corpus`` dict), stored
            with the index in a SQLite document store (see :mod:`sparsearch.docstore`).
    """
    from .searcher import Index

    path = Path(path)
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"unknown quantization {quantization!r}; use one of {QUANTIZATIONS}")
    if codec not in CODECS:
        raise ValueError(f"unknown codec {codec!r}; use one of {CODECS}")
    t0 = time.perf_counter()
    path.mkdir(parents=True, exist_ok=True)
    with write_lock(path):
        old = _check_target(path, overwrite)
        batch = _collect(batches, progress)
        batch.validate()
        name, meta = write_segment_atomic(path, batch, quantization, codec)
        manifest = new_manifest(path, old, [(name, meta)], quantization=quantization, codec=codec, encoder=encoder,
                                extra=extra, documents=documents)
        manifest["build_seconds"] = time.perf_counter() - t0
        commit(path, manifest, batch.vocab)
    return Index.open(path)
