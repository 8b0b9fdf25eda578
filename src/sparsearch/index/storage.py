"""The storage layer: everything that touches an index directory's files goes through here.

Modelled on tantivy's ``Directory``: one place for

* **atomic writes** (:meth:`Directory.atomic_write`, :meth:`Directory.publish`): data goes to a
  temporary name, is fsynced, renamed over the final name, and the directory entry is fsynced,
  so a crash at any point leaves either the old file or the new one, never a torn one;
* **the writer lock** (:meth:`Directory.lock`): one writer per index; readers never block;
* **checksummed arrays** (:func:`write_arrays` / :func:`read_arrays`): ``.npy`` files described
  by a JSON header with dtype, shape, size and CRC32, verified on open;
* **file records and seals** (:func:`describe_entry` / :func:`verify_records`, :func:`seal` /
  :func:`check_seal`): size + CRC32 of every file a commit names (kept in the manifest), and a
  checksum over a JSON document's canonical content (the manifest, ``approximate.json``,
  ``settings.json``), so that no file an index reads goes unchecked;
* **the registry of managed files** (:data:`MANAGED_PREFIXES`): which names in an index
  directory belong to sparsearch (and may be garbage-collected once no commit names them),
  which are permanent, and which mean "this directory is not ours".

Nothing above this module opens a file for writing or calls ``os.replace``/``fsync`` itself.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import threading
import uuid
import zlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConflictError, CorruptIndexError, InvalidInputError, SparsearchError, StorageError

__all__ = ["Directory", "MANAGED_PREFIXES", "PERMANENT_NAMES", "crc32_file", "fsync_dir", "load_npy",
           "file_record", "describe_entry", "verify_records", "canonical_checksum", "seal", "check_seal",
           "write_arrays", "read_arrays", "read_json", "read_versioned_json", "is_managed", "os_errors"]

#: Names a commit owns: removed by garbage collection once the current manifest names none of
#: them (segments, vocabularies, encoder states, deletion bitmaps, document stores, the
#: approximate index and its pointer, a hybrid index's representations ``rep-*``, and torn
#: temporaries of any of these).
MANAGED_PREFIXES: tuple[str, ...] = ("seg-", "vocab-", "encoder-", "deletes-", "docs-", "approx-",
                                     "approximate.json", ".tmp-", ".manifest.json", "rep-")
#: Names that are never garbage-collected (``fusion.json``: a hybrid index's saved fusion setting).
PERMANENT_NAMES: frozenset[str] = frozenset({"manifest.json", ".lock", "settings.json", "fusion.json"})

_NPY_LOCK = threading.Lock()


def is_managed(name: str) -> bool:
    """Whether ``name`` (an entry of an index directory) is a file sparsearch writes there."""
    return name in PERMANENT_NAMES or name.startswith(MANAGED_PREFIXES)


def crc32_file(path: Path) -> int:
    """CRC32 of a file's bytes, read in 4 MiB chunks."""
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            crc = zlib.crc32(chunk, crc)
    return crc


# ---------------------------------------------------------------- file records and seals
#: the checksummed array header of a directory (a segment's or the approximate index's): the
#: ``.npy`` files it describes under ``"files"`` are covered by its own record
ARRAY_HEADER = "segment.json"


def file_record(path: Path) -> dict[str, int]:
    """``{"bytes", "crc32"}`` of one file."""
    return {"bytes": path.stat().st_size, "crc32": crc32_file(path)}


def _header_arrays(directory: Path) -> set[str]:
    header = directory / ARRAY_HEADER
    if not header.is_file():
        return set()
    try:
        files = json.loads(header.read_text(encoding="utf-8")).get("files", {})
    except (OSError, ValueError, AttributeError):
        return set()
    return {f"{n}.npy" for n, info in files.items() if isinstance(info, dict) and "crc32" in info} \
        if isinstance(files, dict) else set()


def describe_entry(root: Path, name: str) -> dict[str, dict[str, int]]:
    """Records (:func:`file_record`) of every file of the index entry ``name`` (a file, or a
    directory's files, recursively) keyed by path relative to ``root`` (``/``-separated).

    ``.npy`` arrays that the directory's checksummed header (``segment.json``) describes are
    left out: the header's own record covers them (a chain: manifest -> header -> arrays), so
    they are read, and checksummed, once.
    """
    root = Path(root)
    path = root / name
    if path.is_file():
        return {name: file_record(path)}
    if not path.is_dir():
        raise CorruptIndexError(f"{path}: named by the commit but missing")
    out: dict[str, dict[str, int]] = {}
    covered: dict[Path, set[str]] = {}
    for f in sorted(path.rglob("*")):
        if not f.is_file():
            continue
        if f.name in covered.setdefault(f.parent, _header_arrays(f.parent)):
            continue
        out[f.relative_to(root).as_posix()] = file_record(f)
    # a directory with no file of its own (an encoder that saves no state) is recorded as such,
    # so that "no record" keeps meaning "not covered by the commit"
    return out or {name: {"dir": True}}


def verify_records(root: Path, records: Any, names: Iterable[str], *, full: bool = True) -> None:
    """Check the files of the entries ``names`` against ``records`` (see :func:`describe_entry`):
    each recorded file exists with its size, and (``full``) its CRC32; every entry has records.
    ``records is None`` (an index written before records existed) checks nothing.
    Raises :class:`CorruptIndexError` naming the file."""
    if records is None:
        return
    root = Path(root)
    if not isinstance(records, dict):
        raise CorruptIndexError(f"{root}: the commit's file records are unreadable")
    wanted = {n for n in names if n}
    seen: set[str] = set()
    for rel, rec in records.items():
        top = rel.split("/", 1)[0]
        if top not in wanted:
            continue
        seen.add(top)
        f = root / rel
        if isinstance(rec, dict) and rec.get("dir") is True:
            if not f.is_dir():
                raise CorruptIndexError(f"{f}: missing (the commit records it)")
            continue
        try:
            size = f.stat().st_size
            if not isinstance(rec, dict) or size != rec.get("bytes"):
                raise CorruptIndexError(f"{f}: size {size} differs from the {rec.get('bytes') if isinstance(rec, dict) else '?'} "
                                        f"bytes recorded (truncated or edited)")
            if full and crc32_file(f) != rec.get("crc32"):
                raise CorruptIndexError(f"{f}: checksum mismatch (the file is corrupt or was edited)")
        except FileNotFoundError:
            raise CorruptIndexError(f"{f}: missing (the commit records it)") from None
    missing = wanted - seen
    if missing:
        raise CorruptIndexError(f"{root / sorted(missing)[0]}: the commit records no checksum for it")


def canonical_checksum(doc: dict[str, Any]) -> str:
    """``"crc32:xxxxxxxx"`` of the canonical JSON of ``doc`` without its ``checksum`` key (sorted
    keys, no whitespace): the same for the dict a writer holds and the one a reader parses."""
    body = {k: v for k, v in doc.items() if k != "checksum"}
    data = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return f"crc32:{zlib.crc32(data.encode('utf-8')):08x}"


def seal(doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` with a ``checksum`` over its canonical content (:func:`canonical_checksum`)."""
    return {**{k: v for k, v in doc.items() if k != "checksum"}, "checksum": canonical_checksum(doc)}


def check_seal(doc: dict[str, Any], path: Path, what: str) -> None:
    """Refuse (:class:`CorruptIndexError` naming ``path``) a sealed JSON document whose content
    does not match its checksum (an edit, or corruption that still parses)."""
    if doc.get("checksum") != canonical_checksum(doc):
        raise CorruptIndexError(f"{path}: {what} checksum mismatch (the file was edited or is corrupt)")


def fsync_dir(path: Path) -> None:
    """Make a rename or file creation inside ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def os_errors(path: str | os.PathLike, doing: str) -> Iterator[None]:
    """Turn an ``OSError`` of the filesystem (read-only, no permission, disk full) into a
    :class:`~sparsearch.errors.StorageError` naming ``path``: ``"PATH: cannot DOING (reason)"``."""
    try:
        yield
    except SparsearchError:
        raise
    except OSError as e:
        raise StorageError(f"{path}: cannot {doing} ({e.strerror or e})") from None


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _remove_path(p: Path) -> None:
    """Remove a file or a directory tree (no error if it is already gone)."""
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        p.unlink(missing_ok=True)


def _fsync_tree(path: Path) -> None:
    """fsync every file below ``path`` and every directory (their entries), deepest first."""
    for f in sorted(path.rglob("*"), key=lambda p: -len(p.parts)):
        if f.is_file():
            _fsync_file(f)
        elif f.is_dir():
            fsync_dir(f)
    fsync_dir(path)


def load_npy(path: Path, mmap: bool = False) -> np.ndarray:
    """``np.load`` of one ``.npy`` file (never a pickle), serialised across threads.

    numpy parses the header with ``ast.literal_eval``, and concurrent calls from several
    threads trip a CPython 3.11 bug ("AST constructor recursion depth mismatch"); with
    mmap the call only reads the header, so the lock costs nothing.
    """
    with _NPY_LOCK:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)


def read_json(path: Path, what: str) -> Any:
    """Load one JSON file of an index; :class:`CorruptIndexError` naming it when it is missing or
    unreadable (``what`` says what it holds, for the message)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise CorruptIndexError(f"{path}: {what} is missing or unreadable ({e.strerror or e})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CorruptIndexError(f"{path}: corrupt {what} ({getattr(e, 'msg', e)})") from None


def read_versioned_json(directory: Path, name: str, fmt: str, version: int | tuple[int, ...], what: str
                        ) -> dict[str, Any]:
    """Load ``directory/name`` and check its ``format`` tag and ``version`` (one, or a tuple of the
    versions read; clear errors otherwise)."""
    path = Path(directory) / name
    if not path.exists():
        raise CorruptIndexError(f"{directory}: {name} is missing (not a sparsearch {what}, or a torn write)")
    doc = read_json(path, f"{what} metadata")
    if not isinstance(doc, dict) or doc.get("format") != fmt:
        found = doc.get("format") if isinstance(doc, dict) else None
        raise CorruptIndexError(f"{directory}: not a sparsearch {what} (format {found!r})")
    versions = version if isinstance(version, tuple) else (version,)
    if doc.get("version") not in versions:
        raise CorruptIndexError(f"{directory}: {what} format version {doc.get('version')} is not supported "
                                f"(this sparsearch reads version {' or '.join(map(str, versions))}); "
                                f"rebuild the index")
    return doc


def _write_file(path: Path, write: Callable[[Any], None], mode: str) -> None:
    """Create ``path`` with ``write(fileobj)`` and fsync it (no rename: for files inside a
    directory that is itself published atomically)."""
    kw = {"encoding": "utf-8"} if "b" not in mode else {}
    with open(path, mode, **kw) as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())


def write_arrays(directory: Path, arrays: dict[str, np.ndarray], header: dict[str, Any],
                 header_name: str = "segment.json") -> None:
    """Write ``arrays`` as ``.npy`` files plus a JSON header recording each file's dtype, shape,
    byte size and CRC32 (under ``"files"``), all fsynced, into a new ``directory``.

    Call it on a temporary directory that :meth:`Directory.publish` then renames into place.
    """
    directory.mkdir(parents=True, exist_ok=False)
    files: dict[str, Any] = {}
    for name, arr in arrays.items():
        path = directory / f"{name}.npy"
        _write_file(path, lambda f, a=arr: np.save(f, np.ascontiguousarray(a), allow_pickle=False), "wb")
        files[name] = {"dtype": str(arr.dtype), "shape": list(arr.shape), "bytes": path.stat().st_size,
                       "crc32": crc32_file(path)}
    _write_file(directory / header_name, lambda f: json.dump({**header, "files": files}, f, indent=1), "w")
    fsync_dir(directory)


def read_arrays(directory: Path, header: dict[str, Any], names: tuple[str, ...], *, mmap: bool = True,
                verify: bool = True) -> dict[str, np.ndarray]:
    """Load the arrays ``names`` that ``header["files"]`` describes, checking presence, size,
    dtype, shape and (with ``verify``) CRC32; raises :class:`CorruptIndexError` naming the file."""
    files = header.get("files")
    if not isinstance(files, dict):
        raise CorruptIndexError(f"{directory}: metadata lists no array files")
    out: dict[str, np.ndarray] = {}
    for name in names:
        info, f = files.get(name), directory / f"{name}.npy"
        if info is None or not f.exists():
            raise CorruptIndexError(f"{directory}: array file {name}.npy is missing")
        if not isinstance(info, dict) or not {"bytes", "crc32", "dtype", "shape"} <= set(info):
            raise CorruptIndexError(f"{directory}: malformed metadata of array file {name}.npy")
        if f.stat().st_size != info["bytes"]:
            raise CorruptIndexError(f"{f}: size {f.stat().st_size} != {info['bytes']} recorded (truncated or corrupt)")
        if verify and crc32_file(f) != info["crc32"]:
            raise CorruptIndexError(f"{f}: checksum mismatch (the file is corrupt)")
        try:
            arr = load_npy(f, mmap)
        except ValueError as e:
            raise CorruptIndexError(f"{f}: unreadable array ({e})") from None
        if str(arr.dtype) != info["dtype"] or list(arr.shape) != info["shape"]:
            raise CorruptIndexError(f"{f}: dtype/shape {arr.dtype}{arr.shape} differ from the metadata")
        # a plain ndarray view of the mapping: numba dispatches memmap subclasses ~4x slower
        out[name] = arr.view(np.ndarray)
    return out


class Directory:
    """An index directory seen through the storage layer.

    All writes are atomic (temporary name, fsync, rename, fsync of the directory); a reader
    that opened a file before it was replaced keeps reading the old bytes.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    @classmethod
    def of(cls, where: "Directory | str | os.PathLike") -> "Directory":
        """``where`` as a :class:`Directory` (itself when it already is one)."""
        return where if isinstance(where, Directory) else cls(where)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def exists(self, name: str) -> bool:
        return (self.path / name).exists()

    # ------------------------------------------------------------- atomic writes
    def _tmp_name(self, name: str) -> Path:
        return self.path / f".tmp-{uuid.uuid4().hex[:12]}-{name}"

    def atomic_write(self, name: str, write: Callable[[Any], None], *, binary: bool = False,
                     durable: bool = True) -> Path:
        """Create or replace the file ``name`` with what ``write(fileobj)`` writes, atomically."""
        final, tmp = self.path / name, self._tmp_name(name)
        with os_errors(final, "write it"):
            try:
                _write_file(tmp, write, "wb" if binary else "w")
                os.replace(tmp, final)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            if durable:
                fsync_dir(self.path)
        return final

    def write_json(self, name: str, obj: Any, *, durable: bool = True) -> Path:
        """Atomically write ``obj`` as JSON to ``name``."""
        return self.atomic_write(name, lambda f: json.dump(obj, f), durable=durable)

    def write_npy(self, name: str, arr: np.ndarray) -> Path:
        """Atomically write one array as ``.npy`` to ``name`` (never pickled)."""
        return self.atomic_write(name, lambda f: np.save(f, np.ascontiguousarray(arr), allow_pickle=False),
                                 binary=True)

    def publish(self, name: str, fill: Callable[[Path], Any]) -> Any:
        """Create the directory (or file) ``name`` atomically: ``fill(tmp)`` writes it under a
        temporary name ``tmp``; every file is fsynced and ``tmp`` renamed into place.

        ``fill`` creates ``tmp`` itself (it does not exist yet): a directory with its contents,
        or a single file (e.g. a SQLite database). Returns what ``fill`` returns; on any error
        (or interrupt) ``tmp`` is removed and nothing is published.
        """
        final, tmp = self.path / name, self._tmp_name(name)
        if final.exists():
            raise ConflictError(f"{final} already exists")
        with os_errors(final, "write it"):
            try:
                out = fill(tmp)
                if tmp.is_dir():
                    _fsync_tree(tmp)
                elif tmp.is_file():
                    _fsync_file(tmp)
                else:
                    raise InvalidInputError(f"publishing {name}: nothing was written")
                os.replace(tmp, final)
            except BaseException:
                _remove_path(tmp)
                raise
            fsync_dir(self.path)
        return out

    # ----------------------------------------------------------------- removal
    def remove(self, name: str) -> None:
        """Remove a file or directory of the index (no error if it is already gone)."""
        with os_errors(self.path / name, "remove it"):
            _remove_path(self.path / name)

    def entries(self) -> list[str]:
        return sorted(e.name for e in self.path.iterdir()) if self.path.is_dir() else []

    # -------------------------------------------------------------------- lock
    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive writer lock on the index directory (creating it if needed); readers never block.
        A directory the filesystem does not let us write raises :class:`StorageError`."""
        with os_errors(self.path, "create the index directory"):
            self.path.mkdir(parents=True, exist_ok=True)
        with os_errors(self.path / ".lock", "lock the index for writing"):
            f = open(self.path / ".lock", "w")
        with f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def __repr__(self) -> str:
        return f"Directory({str(self.path)!r})"
