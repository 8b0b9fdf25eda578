"""Document store kept with an index: ``(id, title, text)`` rows in one SQLite file.

The store is a file ``INDEX/docs-<uuid>.sqlite`` named by the manifest key ``docstore``. It
is published atomically by the storage layer (written aside, fsynced, renamed) before the
manifest that names it is committed, and never modified afterwards: an update writes a new store (a copy of the old one
plus the changes) and commits a manifest naming it; the old file is garbage-collected by that
commit. Readers open the file read-only and fetch rows on demand by primary key, so texts are
never all held in memory (SQLite pages are cached by the OS, not by Python).

>>> name = write_docstore(index_dir, [{"id": "d1", "title": "Cats", "text": "..."}])  # doctest: +SKIP
>>> DocStore(index_dir / name).get("d1")                                            # doctest: +SKIP
{'id': 'd1', 'title': 'Cats', 'text': '...'}
"""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import sqlite3
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from .errors import InvalidInputError
from .index.storage import Directory

__all__ = ["DocStore", "write_docstore", "normalize_documents"]

_SCHEMA = "CREATE TABLE IF NOT EXISTS docs (id TEXT PRIMARY KEY, title TEXT NOT NULL, text TEXT NOT NULL)"


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


def write_docstore(index_dir: str | os.PathLike, documents: Any = (), *, base: str | os.PathLike | None = None,
                   delete: Iterable[str] = (), keep_only: Iterable[str] | None = None) -> str:
    """Write a new store file into ``index_dir``; returns its name (for the manifest's ``docstore``).

    Args:
        documents: rows to add (see :func:`normalize_documents`); an existing id is replaced.
        base: an existing store to start from (copied, never modified).
        delete: ids to remove from the copy.
        keep_only: if given, the new store holds only these ids (used by merge).
    """
    name = f"docs-{uuid.uuid4().hex[:16]}.sqlite"
    Directory.of(index_dir).publish(name, lambda tmp: _fill(tmp, documents, base, delete, keep_only))
    return name


def _fill(tmp: Path, documents: Any, base, delete: Iterable[str], keep_only: Iterable[str] | None) -> None:
    if base is not None:
        shutil.copyfile(base, tmp)
    con = sqlite3.connect(tmp)
    try:
        con.execute("PRAGMA journal_mode=OFF")
        con.execute("PRAGMA synchronous=OFF")
        con.execute(_SCHEMA)
        with con:
            con.executemany("INSERT OR REPLACE INTO docs (id, title, text) VALUES (?, ?, ?)",
                            normalize_documents(documents))
            con.executemany("DELETE FROM docs WHERE id = ?", ((str(i),) for i in delete))
            if keep_only is not None:
                con.execute("CREATE TEMP TABLE keep (id TEXT PRIMARY KEY)")
                con.executemany("INSERT OR IGNORE INTO keep VALUES (?)", ((str(i),) for i in keep_only))
                con.execute("DELETE FROM docs WHERE id NOT IN (SELECT id FROM keep)")
        if keep_only is not None or delete:
            con.execute("VACUUM")
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
        for _ in range(max(1, connections)):
            con = sqlite3.connect(uri, uri=True, check_same_thread=False)
            con.execute("SELECT 1 FROM docs LIMIT 1").fetchall()  # fail early on a corrupt file
            self._all.append(con)
            self._pool.put(con)
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


def open_docstore(index_dir: str | os.PathLike, manifest: Mapping[str, Any]) -> DocStore | None:
    """The store an index's manifest names, or ``None`` when it has none."""
    name = manifest.get("docstore")
    return DocStore(Path(index_dir) / name) if name else None
