"""The inputs ``sparsearch index`` and ``sparsearch add`` accept, read into documents or vectors.

:func:`read_input` detects the format of a path (or takes ``fmt``) and returns either
:class:`TextInput` (documents ``(id, title, text)`` to encode) or :class:`VectorInput` (ready
sparse vectors). The formats (:data:`ACCEPTED` says the same to a user):

=========  ==================================================================================
``beir``    a folder holding ``corpus.jsonl`` (``{"_id", "title", "text"}`` lines);
            ``queries.jsonl`` and ``qrels/`` are optional (``evaluate`` needs them)
``jsonl``   a JSONL file of ``{"id", "text"[, "title", "metadata", other fields...]}`` documents
            (``_id`` also names the id; other fields are accepted and not stored)
``vectors`` a JSONL file of ``{"id", "vector": {term: weight}}`` lines, or a ``.npz`` batch
``csv``     a ``.csv`` file with a header row (RFC 4180 quoting); ``tsv``: a ``.tsv`` file with
            a header row, one record per line, no quoting. Columns: ``id_field`` (default
            ``id``/``_id``/``docid``, else the line number), ``text_field`` (default
            ``text``/``body``/``contents``), ``title_field`` (default ``title`` if present)
``text``    a plain text file (``.txt``): one document per non-blank line, its id the line number
``folder``  a folder of ``.txt``/``.md`` files (hidden ones skipped), one document each, its
            id the path relative to the folder
=========  ==================================================================================

Metadata (:mod:`sparsearch.metadata`): the ``metadata`` object of a BEIR / JSONL document line,
and the columns of a CSV/TSV file other than its id, text and title, are the document's fields
(typed when the index is built; CSV cells typed from their text). :meth:`TextInput.rows` carries
them (``rows.metadata``, ``rows.where``) to ``build_index`` / ``add_texts``.

``.jsonl`` files are told apart by their first record: a ``"vector"`` object makes a vector
file, a ``"text"`` (or ``"title"``) a document file. Every record is checked; a malformed one
(bad JSON or UTF-8, a missing or non-string field, an empty or repeated id, a row with the wrong
number of columns) raises :class:`~sparsearch.vectors.FormatError` naming the file and line:
nothing is skipped silently (blank lines are not records, and are counted in
:attr:`TextInput.blank_lines`).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import InvalidInputError, MissingFileError
from .metadata import text_value
from .vectors import FormatError, SparseBatch, iter_jsonl_chunks

__all__ = ["ACCEPTED", "FORMATS", "TextInput", "VectorInput", "DocumentRows", "detect_format", "read_input"]

#: Format names ``fmt`` (CLI ``--format``) takes; ``auto`` detects.
FORMATS: tuple[str, ...] = ("auto", "beir", "jsonl", "vectors", "csv", "tsv", "text", "folder")

#: The accepted inputs, in words (the end of the error raised when a path matches none).
ACCEPTED = ("accepted inputs: a BEIR folder (corpus.jsonl; queries.jsonl and qrels/ optional); a .jsonl file of "
            "{\"id\", \"text\"[, \"title\"]} documents; a .jsonl file of {\"id\", \"vector\": {term: weight}} "
            "vectors or a .npz batch; a .csv or .tsv file with a header row (--id-field, --text-field, "
            "--title-field); a plain .txt file (one document per line, ids = line numbers); a folder of "
            ".txt/.md files (ids = relative paths); --format forces one")

_ID_COLUMNS = ("id", "_id", "docid", "doc_id")
_TEXT_COLUMNS = ("text", "body", "contents", "content")
_FOLDER_SUFFIXES = (".txt", ".md", ".markdown")
_JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson", ".jsonl.gz", ".json.gz", ".ndjson.gz")
_TEXT_SUFFIXES = (".txt", ".text")


class DocumentRows(list):
    """``(id, title, text)`` rows that also carry each document's metadata fields
    (``metadata``: a ``{field: value}`` or ``None`` per row) and where each row was read
    (``where``: ``"FILE, line N"``, for error messages); ``build_index`` and ``add_texts`` store
    the fields. A plain list of rows has none."""

    metadata: list[dict[str, Any] | None] | None = None
    where: list[str] | None = None


@dataclass
class TextInput:
    """Documents to encode: parallel ``ids``, ``titles``, ``texts`` in input order, and their
    metadata fields (``metadata``: one dict or ``None`` per document; ``where``: each one's
    file and line), both ``None`` when the input has no fields."""

    source: Path
    format: str
    ids: list[str] = field(default_factory=list)
    titles: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    blank_lines: int = 0
    metadata: list[dict[str, Any] | None] | None = None
    where: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    def rows(self) -> DocumentRows:
        """``(id, title, text)`` per document (what the document store keeps), carrying the
        metadata (:class:`DocumentRows`)."""
        out = DocumentRows(zip(self.ids, self.titles, self.texts))
        if self.metadata is not None and any(m for m in self.metadata):
            out.metadata, out.where = self.metadata, self.where
        return out

    def encoder_texts(self) -> list[str]:
        """``title + " " + text`` per document: what an encoder sees (as for BEIR collections)."""
        return [(t + " " + x).strip() for t, x in zip(self.titles, self.texts)]

    def _add(self, doc_id: str, title: str, text: str, where: str, seen: dict[str, str],
             metadata: dict[str, Any] | None = None) -> None:
        if doc_id == "":
            raise FormatError(f"{where}: empty document id")
        first = seen.get(doc_id)
        if first is not None:
            raise FormatError(f"{where}: duplicate document id {doc_id!r} (first at {first})")
        seen[doc_id] = where.rsplit(", ", 1)[-1] if ", line " in where else where
        self.ids.append(doc_id)
        self.titles.append(title)
        self.texts.append(text)
        if metadata:
            if self.metadata is None:  # the first document with fields: the ones before have none
                self.metadata, self.where = [None] * (len(self.ids) - 1), [""] * (len(self.ids) - 1)
            self.metadata.append(metadata)
        elif self.metadata is not None:
            self.metadata.append(None)
        if self.metadata is not None:
            self.where.append(where)


@dataclass
class VectorInput:
    """Ready sparse vectors (a JSONL vector file or a ``.npz`` batch)."""

    source: Path
    format: str = "vectors"

    def batches(self, chunk_size: int = 100_000) -> Iterator[SparseBatch]:
        """The vectors in chunks sharing one vocabulary (a ``.npz`` is one chunk)."""
        if self.source.suffix == ".npz":
            yield SparseBatch.load_npz(self.source)
            return
        try:
            yield from iter_jsonl_chunks(self.source, chunk_size)
        except UnicodeDecodeError as e:
            raise FormatError(f"{self.source}, line {_line_of_bad_byte(self.source)}: not UTF-8 text "
                              f"({e.reason})") from None
        except EOFError as e:  # a truncated .gz
            raise FormatError(f"{self.source}: {e}") from None
        except (gzip.BadGzipFile, OSError) as e:
            raise FormatError(f"{self.source}: unreadable ({e})") from None

    def read(self) -> SparseBatch:
        """All vectors as one batch."""
        chunks = list(self.batches())
        if not chunks:
            raise FormatError(f"{self.source}: no vectors")
        return chunks[0] if len(chunks) == 1 else SparseBatch.concat(chunks)


def _opener(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def _line_of_bad_byte(path: Path) -> int:
    """1-based number of the first line of ``path`` that is not UTF-8 (for error messages)."""
    with _opener(path) as f:
        for lineno, raw in enumerate(f, 1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                return lineno
    return 0


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` of every line, decoded as UTF-8 one line at a time (a BOM is
    dropped): a bad byte names its line."""
    try:
        with _opener(path) as f:
            for lineno, raw in enumerate(f, 1):
                if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                    raw = raw[3:]
                try:
                    yield lineno, raw.decode("utf-8").rstrip("\r\n")
                except UnicodeDecodeError as e:
                    raise FormatError(f"{path}, line {lineno}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except (gzip.BadGzipFile, EOFError) as e:
        raise FormatError(f"{path}: unreadable gzip file ({e})") from None


def _read_text(path: Path) -> str:
    """A whole file decoded as UTF-8 (a BOM dropped); a bad byte names its line."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise FormatError(f"{path}, line {line}: not UTF-8 text ({e.reason})") from None


def _first_record(path: Path) -> tuple[int, str] | None:
    for lineno, line in _lines(path):
        if line.strip():
            return lineno, line
    return None


# --------------------------------------------------------------------------- detection
def detect_format(path: str | os.PathLike) -> str:
    """The format of ``path`` (one of :data:`FORMATS` but ``auto``); :class:`FormatError`
    listing :data:`ACCEPTED` when it is none of them."""
    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"no collection, document or vector file at {path}")
    if path.is_dir():
        if (path / "corpus.jsonl").is_file():
            return "beir"
        if next(_folder_files(path), None) is not None:
            return "folder"
        raise FormatError(f"{path}: a folder with neither corpus.jsonl nor .txt/.md files; {ACCEPTED}")
    name = path.name.lower()
    if name.endswith(".npz"):
        return "vectors"
    if name.endswith(".csv"):
        return "csv"
    if name.endswith(".tsv"):
        return "tsv"
    if name.endswith(_TEXT_SUFFIXES):
        return "text"
    first = _first_record(path)
    if first is None:
        raise FormatError(f"{path}: the file is empty; {ACCEPTED}")
    lineno, line = first
    if line.lstrip().startswith("{") or name.endswith(_JSONL_SUFFIXES):
        return _jsonl_kind(path, lineno, line)
    raise FormatError(f"{path}: unknown format (not JSON lines, and the name does not end in "
                      f".txt/.csv/.tsv/.jsonl/.npz); {ACCEPTED}")


def _jsonl_kind(path: Path, lineno: int, line: str) -> str:
    """``vectors`` or ``jsonl`` from the first record of a JSONL file."""
    obj = _parse_json(line, path, lineno)
    if isinstance(obj.get("vector", obj.get("content")), dict):
        return "vectors"
    if "text" in obj or "title" in obj:
        return "jsonl"
    raise FormatError(f"{path}, line {lineno}: neither a document ({{\"id\", \"text\"}}) nor a vector "
                      f"({{\"id\", \"vector\"}}); {ACCEPTED}")


def _parse_json(line: str, path: Path, lineno: int) -> dict[str, Any]:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise FormatError(f"{path}, line {lineno}: malformed JSON ({e.msg} at column {e.colno})") from None
    except RecursionError:
        raise FormatError(f"{path}, line {lineno}: JSON nested too deeply") from None
    if not isinstance(obj, dict):
        raise FormatError(f"{path}, line {lineno}: expected a JSON object, got {type(obj).__name__}")
    return obj


# --------------------------------------------------------------------------- readers
def read_input(path: str | os.PathLike, *, fmt: str = "auto", id_field: str | None = None,
               text_field: str | None = None, title_field: str | None = None) -> TextInput | VectorInput:
    """Read ``path`` in format ``fmt`` (``auto``: :func:`detect_format`); see the module docstring.

    ``id_field`` / ``text_field`` / ``title_field`` name the columns of a CSV/TSV file (or the
    keys of a JSONL document file). Vector files are not read here: iterate
    :meth:`VectorInput.batches`.
    """
    path = Path(path)
    if fmt not in FORMATS:
        raise InvalidInputError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    if not path.exists():
        raise MissingFileError(f"no collection, document or vector file at {path}")
    kind = detect_format(path) if fmt == "auto" else fmt
    if (kind in ("beir", "folder")) != path.is_dir():
        raise FormatError(f"{path}: format {kind} needs a {'folder' if kind in ('beir', 'folder') else 'file'}; "
                          f"{ACCEPTED}")
    fields = (id_field, text_field, title_field)
    if kind in ("csv", "tsv"):
        return _read_table(path, kind, *fields)
    if any(fields) and kind not in ("jsonl", "beir"):
        raise InvalidInputError("--id-field, --text-field and --title-field name columns of a CSV/TSV "
                                f"file or keys of a JSONL document file, and {path} is read as {kind}")
    if kind == "vectors":
        return VectorInput(path)
    if kind == "beir":
        return _read_jsonl_docs(path / "corpus.jsonl", "beir", *fields)
    if kind == "jsonl":
        return _read_jsonl_docs(path, "jsonl", *fields)
    if kind == "text":
        return _read_lines(path)
    return _read_folder(path)


def _string(obj: dict[str, Any], key: str, where: str, *, required: bool) -> str:
    v = obj.get(key)
    if v is None:
        if required and key not in obj:
            raise FormatError(f"{where}: missing {key!r} field")
        return ""
    if not isinstance(v, str):
        raise FormatError(f"{where}: {key!r} must be a string, got {type(v).__name__} {json.dumps(v)[:40]}")
    return v


def _doc_id(v: Any, key: str, where: str) -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, int) and not isinstance(v, bool):
        return str(v)
    if v is None:
        raise FormatError(f"{where}: missing document id (an {key!r} field)")
    raise FormatError(f"{where}: {key!r} must be a string or an integer, got {type(v).__name__}")


def _read_jsonl_docs(path: Path, kind: str, id_field: str | None, text_field: str | None,
                     title_field: str | None) -> TextInput:
    """A BEIR ``corpus.jsonl`` or a JSONL document file; every line checked."""
    out, seen = TextInput(path.parent if kind == "beir" else path, kind), {}
    text_key, title_key = text_field or "text", title_field or "title"
    for lineno, line in _lines(path):
        if not line.strip():
            out.blank_lines += 1
            continue
        where = f"{path}, line {lineno}"
        obj = _parse_json(line, path, lineno)
        if id_field:
            key = id_field
        else:
            key = "_id" if kind == "beir" or "_id" in obj else "id"
        if not isinstance(obj.get(text_key), str) and isinstance(obj.get("vector", obj.get("content")), dict):
            raise FormatError(f"{where}: a vector record in a file of text documents")
        doc_id = _doc_id(obj.get(key), key, where)
        meta = obj.get("metadata")
        if meta is not None and not isinstance(meta, dict):
            raise FormatError(f"{where}: 'metadata' must be a JSON object, got {type(meta).__name__}")
        out._add(doc_id, _string(obj, title_key, where, required=False),
                 _string(obj, text_key, where, required=True), where, seen, meta or None)
    return out


def _columns(header: list[str], path: Path, id_field: str | None, text_field: str | None,
             title_field: str | None) -> tuple[int | None, int, int | None]:
    """Positions of the id, text and title columns in ``header`` (id and title optional)."""
    names = [h.strip() for h in header]
    shown = ", ".join(repr(h) for h in names)

    def pos(given: str | None, defaults: tuple[str, ...], option: str) -> int | None:
        if given is not None:
            if given not in names:
                raise FormatError(f"{path}, line 1: no column {given!r} ({option}); the header has {shown}")
            return names.index(given)
        low = [h.lower() for h in names]
        return next((low.index(d) for d in defaults if d in low), None)

    text = pos(text_field, _TEXT_COLUMNS, "--text-field")
    if text is None:
        raise FormatError(f"{path}, line 1: no text column (looked for {', '.join(_TEXT_COLUMNS)}); the header "
                          f"has {shown}: name one with --text-field")
    return pos(id_field, _ID_COLUMNS, "--id-field"), text, pos(title_field, ("title",), "--title-field")


def _read_table(path: Path, kind: str, id_field: str | None, text_field: str | None,
                title_field: str | None) -> TextInput:
    """A CSV (RFC 4180 quoting) or TSV (no quoting) file with a header row."""
    out, seen = TextInput(path, kind), {}
    text = _read_text(path)
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    dialect: dict[str, Any] = ({"delimiter": ","} if kind == "csv"
                               else {"delimiter": "\t", "quoting": csv.QUOTE_NONE})
    reader = csv.reader(io.StringIO(text, newline=""), strict=True, **dialect)
    try:
        header = next(reader, None)
        if header is None or not any(h.strip() for h in header):
            raise FormatError(f"{path}: no header row (the first line names the columns); {ACCEPTED}")
        id_col, text_col, title_col = _columns(header, path, id_field, text_field, title_field)
        # the other columns are metadata fields, typed from their text (sparsearch.metadata)
        extra = [(j, h.strip()) for j, h in enumerate(header) if j not in (id_col, text_col, title_col) and h.strip()]
        start = reader.line_num + 1
        for row in reader:
            where = f"{path}, line {start}"
            if not row or (len(row) == 1 and not row[0].strip()):
                out.blank_lines += 1
            elif len(row) != len(header):
                raise FormatError(f"{where}: {len(row)} columns, the header has {len(header)}")
            else:
                doc_id = row[id_col].strip() if id_col is not None else str(start)
                meta = {name: text_value(row[j]) for j, name in extra if row[j].strip()}
                out._add(doc_id, row[title_col] if title_col is not None else "", row[text_col], where, seen,
                         meta or None)
            start = reader.line_num + 1
    except csv.Error as e:
        raise FormatError(f"{path}, line {reader.line_num}: malformed {kind.upper()} ({e})") from None
    return out


def _read_lines(path: Path) -> TextInput:
    """A plain text file: one document per non-blank line, its id the line number."""
    out, seen = TextInput(path, "text"), {}
    for lineno, line in _lines(path):
        if not line.strip():
            out.blank_lines += 1
            continue
        out._add(str(lineno), "", line.strip(), f"{path}, line {lineno}", seen)
    return out


def _folder_files(root: Path) -> Iterator[Path]:
    """``.txt``/``.md`` files below ``root`` in sorted order, hidden files and folders skipped
    (symbolic links to folders are not followed)."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in sorted(filenames):
            if not f.startswith(".") and f.lower().endswith(_FOLDER_SUFFIXES):
                yield Path(dirpath) / f


def _read_folder(root: Path) -> TextInput:
    """A folder of ``.txt``/``.md`` files: one document per file, its id the relative path."""
    out, seen = TextInput(root, "folder"), {}
    for f in _folder_files(root):
        rel = f.relative_to(root).as_posix()
        try:
            body = _read_text(f)
        except OSError as e:
            raise FormatError(f"{f}: unreadable ({e.strerror or e})") from None
        out._add(rel, "", body.strip(), str(f), seen)
    if not out.ids:
        raise FormatError(f"{root}: no .txt/.md files; {ACCEPTED}")
    return out
