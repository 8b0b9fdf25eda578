"""Commit points of an index directory: read, commit, garbage-collect, open safely.

Index directory layout (Lucene-style commit points)::

    INDEX/
      manifest.json        the commit point: format version, segments, vocabulary, encoder, store
      vocab-<gen>.json     the vocabulary (term id -> term), append-only across generations
      seg-<id>/            immutable segments (see segment.py)
      deletes-<id>.npy     deletion bitmaps (one bool per document of a segment)
      encoder-<id>/        state of the encoder that produced the document vectors
      docs-<id>.sqlite     document stores, one per segment with texts (see sparsearch.docstore)
      approx-<id>/         the approximate index, named by approximate.json (see approximate.py)
      settings.json        search settings saved by ``sparsearch tune --save`` (survives commits)

Every file a manifest names is complete and durable before the manifest is written (the
storage layer publishes them atomically); :func:`commit` then renames a new ``manifest.json``
over the old one. A crash at any point leaves the previous manifest, which only names files
that were complete before, so the previous index stays loadable. Files no manifest names are
removed by the next successful commit (:func:`collect_garbage`, driven by the storage layer's
registry of managed names); an approximate index describes one commit, so any commit removes it.

Readers never lock: :func:`load_commit` reads the manifest and loads what it names; when a
concurrent commit removed some of those files meanwhile, it retries with the newer manifest
(one bounded loop; ``Index.open`` goes through it).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any, TypeVar

from ..errors import ConflictError, CorruptIndexError, NotFoundError
from ..vectors import Vocabulary
from .storage import PERMANENT_NAMES, Directory, is_managed, read_versioned_json

__all__ = ["INDEX_FORMAT", "INDEX_VERSION", "read_manifest", "commit", "collect_garbage", "check_target",
           "load_commit", "named_files"]

INDEX_FORMAT = "sparsearch-index"
INDEX_VERSION = 1
#: how many times :func:`load_commit` follows a newer commit before giving up
OPEN_ATTEMPTS = 20

T = TypeVar("T")


def read_manifest(path: str | os.PathLike | Directory) -> dict[str, Any]:
    """Read and check ``manifest.json`` of an index directory.

    Raises :class:`NotFoundError` when the directory does not exist, :class:`CorruptIndexError`
    when it holds no (or a corrupt, or an unsupported version of a) manifest.
    """
    path = Directory.of(path).path
    if not path.is_dir():
        raise NotFoundError(f"{path}: no such index directory")
    return read_versioned_json(path, "manifest.json", INDEX_FORMAT, INDEX_VERSION, "index")


def named_files(manifest: dict[str, Any]) -> set[str]:
    """Names of the index directory that ``manifest`` refers to (and so must be kept)."""
    keep = {manifest.get("vocab"), manifest.get("encoder_state"), manifest.get("docstore")}
    for s in manifest["segments"]:
        keep.add(s["name"])
        keep.add(s.get("deletes"))
        keep.add(s.get("docstore"))
    keep.update(manifest.get("keep", []))
    keep.discard(None)
    return keep  # type: ignore[return-value]


def commit(directory: Directory | str | os.PathLike, manifest: dict[str, Any],
           vocab: Vocabulary | None = None) -> dict[str, Any]:
    """Write a new commit point: the vocabulary (if given) then ``manifest.json``; collect garbage.

    Call with the write lock held (``Directory.lock``) and every file the manifest names
    already durable. Stamps format, version, the next generation, ``n_docs`` (from the
    segments) and the commit time; returns the manifest written.
    """
    d = Directory.of(directory)
    manifest = dict(manifest)
    manifest["format"], manifest["version"] = INDEX_FORMAT, INDEX_VERSION
    manifest["generation"] = int(manifest.get("generation", 0)) + 1
    if vocab is not None:
        name = f"vocab-{manifest['generation']}.json"
        d.write_json(name, vocab.terms)
        manifest["vocab"] = name
        manifest["n_terms"] = len(vocab)
    manifest["n_docs"] = sum(int(s["n_docs"]) for s in manifest["segments"])
    manifest["committed_at"] = time.time()
    d.write_json("manifest.json", manifest)
    collect_garbage(d, manifest)
    return manifest


def collect_garbage(directory: Directory | str | os.PathLike, manifest: dict[str, Any]) -> list[str]:
    """Remove the managed files ``manifest`` does not name (older commits' files, torn
    temporaries, the approximate index of an older commit); returns the names removed.

    Only names of the storage layer's registry (``storage.is_managed``) are touched; permanent
    ones (``manifest.json``, ``.lock``, ``settings.json``) never are.
    """
    d = Directory.of(directory)
    keep = named_files(manifest) | PERMANENT_NAMES
    gone = [e for e in d.entries() if e not in keep and is_managed(e)]
    for e in gone:
        d.remove(e)
    return gone


def check_target(directory: Directory | str | os.PathLike, overwrite: bool) -> dict[str, Any] | None:
    """Before building into ``directory``: its current manifest (``None`` if it holds no index).

    Raises :class:`ConflictError` when it holds an index and ``overwrite`` is false, or when it
    holds anything that is not a sparsearch file (never write into a foreign directory).
    """
    d = Directory.of(directory)
    if d.exists("manifest.json"):
        old = read_manifest(d)
        if not overwrite:
            raise ConflictError(f"{d.path} already holds an index (use overwrite=True / --overwrite to replace it)")
        return old
    foreign = [e for e in d.entries() if not is_managed(e)]
    if foreign:
        raise ConflictError(f"{d.path} exists and is not a sparsearch index ({foreign[0]!r} is not ours); "
                            "refusing to write into it")
    return None


def load_commit(path: str | os.PathLike | Directory, load: Callable[[dict[str, Any]], T], *,
                attempts: int = OPEN_ATTEMPTS) -> T:
    """``load(manifest)`` for the current manifest of ``path``, following concurrent commits.

    A reader does not lock: between reading the manifest and opening the files it names, a
    commit may replace the manifest and remove those files. When ``load`` fails with
    :class:`CorruptIndexError` or ``OSError`` and the manifest has changed meanwhile, it is
    retried with the new one (at most ``attempts`` times); when the manifest has not changed,
    the index really is broken and the error is raised at once.
    """
    manifest = read_manifest(path)
    for attempt in range(attempts):
        try:
            return load(manifest)
        except (CorruptIndexError, OSError):
            latest = read_manifest(path)
            if latest == manifest or attempt == attempts - 1:
                raise
            manifest = latest
    raise AssertionError("unreachable")  # pragma: no cover
