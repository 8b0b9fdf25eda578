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

A hybrid index (``hybrid.py``) uses the same commit point with ``"kind": "hybrid"``: no
segments, its representations as complete sub-indexes ``rep-<name>-<id>/`` (``members``) and
one document store; the same commit, garbage collection and safe open apply.

Every file a manifest names is complete and durable before the manifest is written (the
storage layer publishes them atomically); :func:`commit` then renames a new ``manifest.json``
over the old one. A crash at any point leaves the previous manifest, which only names files
that were complete before, so the previous index stays loadable. Files no manifest names are
removed by the next successful commit (:func:`collect_garbage`, driven by the storage layer's
registry of managed names); an approximate index describes one commit, so any commit removes it.

Integrity: every file an index reads is checked. The manifest records size + CRC32 of every
file it names (``files``: ``{"seg-<id>/segment.json": {"bytes", "crc32"}, ...}``; a segment's
``.npy`` arrays are covered by the CRC32s in its recorded ``segment.json``) and is sealed by a
``checksum`` over its own canonical content, so a one-character edit anywhere (an id in
``doc_ids.json``, ``"scale"`` in ``segment.json``, a number in ``manifest.json``) is a
:class:`CorruptIndexError` naming the file. ``Index.open`` checks the manifest, vocabulary,
segments, bitmaps and encoder state it reads (``verify=False``: sizes only, no CRC32);
``docstore.open_docstore`` checks the stores; ``approximate.json`` and ``settings.json`` are
sealed too. A commit reads only the files it adds (records of older entries are carried over).
Indexes written before (manifest version 1: no records, no seal) are still opened, unverified;
their next commit (any update) records and seals everything. A version-2 manifest without its
seal or records is refused.

Readers never lock: :func:`load_commit` reads the manifest and loads what it names; when a
concurrent commit removed some of those files meanwhile, it retries with the newer manifest
(one bounded loop; ``Index.open`` goes through it).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from ..errors import ConflictError, CorruptIndexError, NotFoundError
from ..vectors import Vocabulary
from .storage import (PERMANENT_NAMES, Directory, check_seal, describe_entry, is_managed, read_versioned_json, seal,
                      verify_records)

__all__ = ["INDEX_FORMAT", "INDEX_VERSION", "READ_VERSIONS", "read_manifest", "commit", "collect_garbage",
           "check_target", "load_commit", "named_files", "verify_commit"]

INDEX_FORMAT = "sparsearch-index"
#: 2: the manifest is sealed (``checksum``) and records size + CRC32 of every file it names
#: (``files``); 1: neither (still opened, unverified: see the module docstring)
INDEX_VERSION = 2
READ_VERSIONS = (1, 2)
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
    manifest = read_versioned_json(path, "manifest.json", INDEX_FORMAT, READ_VERSIONS, "index")
    if "checksum" in manifest or manifest["version"] >= 2:
        check_seal(manifest, path / "manifest.json", "index manifest")
        if not isinstance(manifest.get("files"), dict):
            raise CorruptIndexError(f"{path / 'manifest.json'}: the manifest records no file checksums")
    if not isinstance(manifest.get("segments"), list):
        raise CorruptIndexError(f"{path / 'manifest.json'}: the manifest lists no segments")
    return manifest


def verify_commit(path: str | os.PathLike, manifest: dict[str, Any], names: Iterable[str | None], *,
                  full: bool = True) -> None:
    """Check the files of the entries ``names`` (segments, vocabulary, bitmaps, encoder state,
    document stores) against the size + CRC32 the manifest records (``full=False``: sizes only);
    :class:`CorruptIndexError` naming the file. A manifest of version 1 records nothing: nothing
    is checked."""
    verify_records(Path(path), manifest.get("files"), [n for n in names if n], full=full)


def named_files(manifest: dict[str, Any]) -> set[str]:
    """Names of the index directory that ``manifest`` refers to (and so must be kept)."""
    keep = {manifest.get("vocab"), manifest.get("encoder_state"), manifest.get("docstore")}
    for s in manifest["segments"]:
        keep.add(s["name"])
        keep.add(s.get("deletes"))
        keep.add(s.get("docstore"))
    for m in manifest.get("members", []):  # a hybrid index's representations (see hybrid.py)
        keep.add(m["dir"])
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
    if "members" not in manifest:  # a hybrid index counts its documents itself
        manifest["n_docs"] = sum(int(s["n_docs"]) for s in manifest["segments"])
    manifest["committed_at"] = time.time()
    manifest["files"] = _records(d, manifest)
    manifest = seal(manifest)
    d.write_json("manifest.json", manifest)
    collect_garbage(d, manifest)
    return manifest


def _records(d: Directory, manifest: dict[str, Any]) -> dict[str, Any]:
    """Size + CRC32 of every file ``manifest`` names: records of entries an earlier commit
    already named are carried over (names are never reused, files never modified), only new
    entries are read, so a commit costs O(what it adds)."""
    named = named_files(manifest)
    old = manifest.get("files") if isinstance(manifest.get("files"), dict) else {}
    records = {rel: rec for rel, rec in old.items() if rel.split("/", 1)[0] in named}
    have = {rel.split("/", 1)[0] for rel in records}
    for name in sorted(named - have):
        records.update(describe_entry(d.path, name))
    return records


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
    holds anything that is not a sparsearch file (never write into a foreign directory). With
    ``overwrite``, an index whose manifest is corrupt is replaced (rebuilding is the fix).
    """
    d = Directory.of(directory)
    if d.exists("manifest.json"):
        try:
            old = read_manifest(d)
        except CorruptIndexError:
            if not overwrite:
                raise
            old = None
        if not overwrite:
            raise ConflictError(f"{d.path} already holds an index (use overwrite=True / --overwrite to replace it)")
        if old is not None:
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
