"""Document store kept with an index: ``(id, title, text)`` rows in immutable SQLite files, one
per segment.

Each segment that has texts names its store in its manifest entry (``segments[i]["docstore"]``,
a file ``INDEX/docs-<uuid>.sqlite``) holding the rows of that segment's documents, each with its
doc number in the segment (``num``; ``-1`` for a row whose id the segment does not hold). A store
is written with its segment, published atomically by the storage layer (written aside, fsynced,
renamed) before the manifest that names it is committed, and never modified afterwards, so an
update costs O(changed documents): an add writes one new store with the new rows only; a delete
writes nothing here (the segment's deletion bitmap hides its rows); a merge writes the merged
segment's store with the live rows. :func:`open_docstore` reads them together
(:class:`SegmentedDocStore`: the newest live row of an id wins). Readers open the files
read-only and fetch rows on demand by primary key, so texts are never all held in memory
(SQLite pages are cached by the OS, not by Python).

Indexes written before per-segment stores name one store for the whole index (the manifest key
``docstore``); they are read as they are, and their first update splits that store by segment
(once, O(index)).

>>> name = write_docstore(index_dir, [{"id": "d1", "title": "Cats", "text": "..."}])  # doctest: +SKIP
>>> DocStore(index_dir / name).get("d1")                                            # doctest: +SKIP
{'id': 'd1', 'title': 'Cats', 'text': '...'}
"""

from __future__ import annotations

import contextlib
import os
import queue
import sqlite3
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import CorruptIndexError, InvalidInputError
from .index.storage import Directory, load_npy, verify_records

__all__ = ["DocStore", "SegmentedDocStore", "write_docstore", "write_segment_stores", "normalize_documents", "open_docstore",
           "store_names"]

#: ``num``: the row's doc number in its segment (-1: an id the segment does not hold); stores of
#: indexes written before per-segment stores lack the column
_SCHEMA = ("CREATE TABLE IF NOT EXISTS docs (id TEXT PRIMARY KEY, num INTEGER NOT NULL DEFAULT -1, "
           "title TEXT NOT NULL, text TEXT NOT NULL)")


def normalize_documents(documents: Any) -> Iterable[tuple[str, str, str]]:
    """``(id, title, text)`` tuples from the shapes callers have at hand.

    Accepts ``{id: {"title", "text"}}`` (a BEIR corpus), ``{id: (title, text)}``, ``{id: text}``,
    or an iterable of dicts with ``id`` (or ``_id``), ``title`` and ``text``, or of
    ``(id, title, text)`` tuples.
    """
    if isinstance(documents, Mapping):
        for i, d in documents.items():
            if isinstance(d, Mapping):
                yield str(i), str(d.get("title") or ""), str(d.get("text") or "")
            elif isinstance(d, (tuple, list)) and len(d) == 2:
                yield str(i), str(d[0] or ""), str(d[1] or "")
            else:
                yield str(i), "", str(d or "")
        return
    for d in documents:
        if isinstance(d, Mapping):
            did = d.get("id", d.get("_id"))
            if did is None:
                raise InvalidInputError(f"document without an 'id': {dict(d)!r:.100}")
            yield str(did), str(d.get("title") or ""), str(d.get("text") or "")
        elif isinstance(d, (tuple, list)) and len(d) == 3:
            yield str(d[0]), str(d[1] or ""), str(d[2] or "")
        else:
            raise InvalidInputError(f"cannot read a document from {d!r:.100}; expected a dict or (id, title, text)")


def write_docstore(index_dir: str | os.PathLike, documents: Any = (), *, ids: Sequence[str] | None = None) -> str:
    """Write one new immutable store file into ``index_dir``; returns its name (for the manifest).

    Args:
        documents: the rows (see :func:`normalize_documents`); a repeated id is refused
            (:class:`InvalidInputError`).
        ids: the doc ids of the segment the store belongs to, in doc-number order: each row
            records its id's position there (``num``; ``-1`` for an id the segment lacks).
    """
    name = f"docs-{uuid.uuid4().hex[:16]}.sqlite"
    Directory.of(index_dir).publish(name, lambda tmp: _fill(tmp, documents, ids))
    return name


def write_segment_stores(index_dir: str | os.PathLike, documents: Any,
                         segment_ids: Sequence[Sequence[str]]) -> list[str | None]:
    """One store per segment (``segment_ids``: each segment's doc ids in doc-number order) with
    the rows of its documents; a row whose id no segment holds goes to the first segment's store
    (``num`` -1). Returns the store names (``None`` for a segment without rows)."""
    if len(segment_ids) == 1:
        return [write_docstore(index_dir, documents, ids=segment_ids[0])]
    where = {str(i): k for k, ids in enumerate(segment_ids) for i in ids}
    groups: list[list[tuple[str, str, str]]] = [[] for _ in segment_ids]
    for row in normalize_documents(documents):
        groups[where.get(row[0], 0)].append(row)
    return [write_docstore(index_dir, rows, ids=ids) if rows else None for rows, ids in zip(groups, segment_ids)]


def _fill(tmp: Path, documents: Any, ids: Sequence[str] | None) -> None:
    nums = {str(i): n for n, i in enumerate(ids)} if ids is not None else {}
    con = sqlite3.connect(tmp)
    try:
        con.execute("PRAGMA journal_mode=OFF")
        con.execute("PRAGMA synchronous=OFF")
        con.execute(_SCHEMA)
        with con:
            for doc_id, title, text in normalize_documents(documents):
                try:
                    con.execute("INSERT INTO docs (id, num, title, text) VALUES (?, ?, ?, ?)",
                                (doc_id, nums.get(doc_id, -1), title, text))
                except sqlite3.IntegrityError:
                    raise InvalidInputError(f"duplicate document id {doc_id!r} in the documents to store") from None
    finally:
        con.close()


class DocStore:
    """Read-only, thread-safe access to a store file.

    ``connections`` SQLite connections are opened up front and lent to one thread at a time,
    so that the store stays readable even after a later commit garbage-collects the file (open
    descriptors survive the unlink; a connection opened afterwards would not find it). Rows are
    read on demand.
    """

    def __init__(self, path: str | os.PathLike, connections: int = 4) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: no document store")
        uri = f"file:{self.path}?mode=ro&immutable=1"
        self._pool: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        self._all: list[sqlite3.Connection] = []
        try:
            for _ in range(max(1, connections)):
                con = sqlite3.connect(uri, uri=True, check_same_thread=False)
                self._all.append(con)
                con.execute("SELECT 1 FROM docs LIMIT 1").fetchall()  # fail early on a corrupt file
                self._pool.put(con)
            cols = {r[1] for r in self._all[0].execute("PRAGMA table_info(docs)")}
        except sqlite3.DatabaseError as e:
            self.close()
            raise CorruptIndexError(f"{self.path}: corrupt document store ({e})") from None
        #: whether rows carry their doc number in the segment (per-segment stores)
        self.numbered = "num" in cols
        self._n: int | None = None

    @contextlib.contextmanager
    def _conn(self) -> Iterator[sqlite3.Connection]:
        con = self._pool.get()
        try:
            yield con
        finally:
            self._pool.put(con)

    def get(self, doc_id: str) -> dict[str, str] | None:
        """The document ``{"id", "title", "text"}`` or ``None``."""
        with self._conn() as con:
            row = con.execute("SELECT id, title, text FROM docs WHERE id = ?", (str(doc_id),)).fetchone()
        return None if row is None else {"id": row[0], "title": row[1], "text": row[2]}

    def get_many(self, doc_ids: Sequence[str]) -> dict[str, dict[str, str]]:
        """Documents by id (missing ids are absent from the result)."""
        out: dict[str, dict[str, str]] = {}
        ids = [str(i) for i in doc_ids]
        with self._conn() as con:
            for a in range(0, len(ids), 500):
                chunk = ids[a:a + 500]
                q = f"SELECT id, title, text FROM docs WHERE id IN ({','.join('?' * len(chunk))})"
                for r in con.execute(q, chunk):
                    out[r[0]] = {"id": r[0], "title": r[1], "text": r[2]}
        return out

    def rows(self, doc_ids: Iterable[str]) -> dict[str, tuple[int, str, str]]:
        """``{id: (num, title, text)}`` of the ids found (``num`` -1 in a store without doc numbers)."""
        out: dict[str, tuple[int, str, str]] = {}
        ids = [str(i) for i in doc_ids]
        num = "num" if self.numbered else "-1"
        with self._conn() as con:
            for a in range(0, len(ids), 500):
                chunk = ids[a:a + 500]
                q = f"SELECT id, {num}, title, text FROM docs WHERE id IN ({','.join('?' * len(chunk))})"
                for r in con.execute(q, chunk):
                    out[r[0]] = (int(r[1]), r[2], r[3])
        return out

    def numbers(self) -> tuple[list[str], np.ndarray]:
        """Every row's id and doc number (``-1`` where unknown), in id order."""
        num = "num" if self.numbered else "-1"
        with self._conn() as con:
            got = con.execute(f"SELECT id, {num} FROM docs ORDER BY id").fetchall()
        return [r[0] for r in got], np.fromiter((r[1] for r in got), np.int64, len(got))

    def ids(self) -> list[str]:
        with self._conn() as con:
            return [r[0] for r in con.execute("SELECT id FROM docs ORDER BY id")]

    def __len__(self) -> int:
        if self._n is None:
            with self._conn() as con:
                self._n = int(con.execute("SELECT COUNT(*) FROM docs").fetchone()[0])
        return self._n

    def __contains__(self, doc_id: object) -> bool:
        with self._conn() as con:
            return con.execute("SELECT 1 FROM docs WHERE id = ?", (str(doc_id),)).fetchone() is not None

    def close(self) -> None:
        for con in self._all:
            con.close()
        self._all.clear()

    def __repr__(self) -> str:
        return f"DocStore({str(self.path)!r})"


class SegmentedDocStore:
    """The per-segment stores of one commit read as one store (the :class:`DocStore` API).

    ``parts``: ``(store, deleted)`` per segment in segment order, ``deleted`` the segment's
    deletion bitmap (empty: none deleted). A row is live when its segment holds its id
    undeleted (``num >= 0`` and not ``deleted[num]``) or when it records no doc number
    (``num == -1``: stored text of an id the segment does not hold). The newest live row of an
    id wins (an upsert deletes the old document and adds the new one in a newer segment).
    """

    def __init__(self, path: str | os.PathLike, parts: Sequence[tuple[DocStore, np.ndarray]]) -> None:
        self.path = Path(path)
        self._parts = list(parts)[::-1]  # newest first
        self._n: int | None = None

    @staticmethod
    def _live(num: int, deleted: np.ndarray) -> bool:
        return num < 0 or not (len(deleted) and num < len(deleted) and deleted[num])

    def get(self, doc_id: str) -> dict[str, str] | None:
        """The document ``{"id", "title", "text"}`` or ``None`` (unknown or deleted)."""
        return self.get_many([doc_id]).get(str(doc_id))

    def get_many(self, doc_ids: Sequence[str]) -> dict[str, dict[str, str]]:
        """Live documents by id (missing or deleted ids are absent from the result)."""
        out: dict[str, dict[str, str]] = {}
        todo = list(dict.fromkeys(str(i) for i in doc_ids))
        for store, deleted in self._parts:
            if not todo:
                break
            for i, (num, title, text) in store.rows(todo).items():
                if self._live(num, deleted):
                    out[i] = {"id": i, "title": title, "text": text}
            todo = [i for i in todo if i not in out]
        return out

    def _live_ids(self) -> set[str]:
        live: set[str] = set()
        for store, deleted in self._parts:
            ids, nums = store.numbers()
            gone = np.zeros(len(nums), np.bool_)
            inside = (nums >= 0) & (nums < len(deleted))
            gone[inside] = deleted[nums[inside]]
            live.update(i for i, g in zip(ids, gone.tolist()) if not g)
        return live

    def ids(self) -> list[str]:
        """The live ids, sorted."""
        return sorted(self._live_ids())

    def __len__(self) -> int:
        if self._n is None:
            self._n = len(self._live_ids())
        return self._n

    def __contains__(self, doc_id: object) -> bool:
        return self.get(str(doc_id)) is not None

    def close(self) -> None:
        for store, _ in self._parts:
            store.close()

    def __repr__(self) -> str:
        return f"SegmentedDocStore({str(self.path)!r}, {len(self._parts)} stores)"


def store_names(manifest: Mapping[str, Any]) -> list[str]:
    """The store files a manifest names: one per segment that has texts, or the one store of an
    index written before per-segment stores (the manifest key ``docstore``)."""
    names = [s["docstore"] for s in manifest.get("segments", []) if s.get("docstore")]
    if manifest.get("docstore"):
        names.append(manifest["docstore"])
    return names


def open_docstore(index_dir: str | os.PathLike, manifest: Mapping[str, Any], *, connections: int = 2,
                  verify: bool = True) -> DocStore | SegmentedDocStore | None:
    """The document store of an index's commit (``manifest``), or ``None`` when it has none.

    Per-segment stores are read together (:class:`SegmentedDocStore`, hiding the rows of
    deleted documents by the segments' deletion bitmaps); an index written before them has one
    :class:`DocStore`. Every file is opened here, so the store stays readable after a later
    commit removes the files (``connections`` per file). A missing or corrupt file is a
    :class:`CorruptIndexError` naming it; so is a file whose size or CRC32 (``verify=False``: size
    only) differs from the manifest's record (see :mod:`sparsearch.index.manifest`).
    """
    root = Path(index_dir)
    read = store_names(manifest) + [s["deletes"] for s in manifest.get("segments", [])
                                    if s.get("docstore") and s.get("deletes")]
    verify_records(root, manifest.get("files"), read, full=verify)
    if manifest.get("docstore"):
        return _open_one(root / manifest["docstore"], connections)
    parts: list[tuple[DocStore, np.ndarray]] = []
    try:
        for s in manifest.get("segments", []):
            if not s.get("docstore"):
                continue
            deleted = np.zeros(0, np.bool_)
            if s.get("deletes"):
                try:
                    deleted = load_npy(root / s["deletes"]).astype(np.bool_)
                except (OSError, ValueError) as e:
                    raise CorruptIndexError(f"{root / s['deletes']}: unreadable deletion bitmap ({e})") from None
            parts.append((_open_one(root / s["docstore"], connections), deleted))
    except BaseException:
        for store, _ in parts:
            store.close()
        raise
    return SegmentedDocStore(root, parts) if parts else None


def _open_one(path: Path, connections: int) -> DocStore:
    try:
        return DocStore(path, connections)
    except FileNotFoundError:
        raise CorruptIndexError(f"{path}: the document store the manifest names is missing") from None
