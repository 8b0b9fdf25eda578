"""Per-document metadata fields, typed and columnar: what filters (:mod:`sparsearch.filters`) test.

Documents bring fields from the ``metadata`` object of their BEIR / JSONL line (or the extra
columns of a CSV/TSV file). Each field has one type over the whole index:

=============  ==================================  ===========================================
type           JSON values (CSV: cell text)        stored per segment
=============  ==================================  ===========================================
``keyword``    a string, or a list of strings      ``ptr`` int64 (n+1), ``codes`` int32 into a
               (multi-valued)                      sorted ``dict`` of the segment's strings
``integer``    an integer                          ``values`` int64 + ``present`` bool
``float``      a number (integers widen to float)  ``values`` float64 + ``present`` bool
``date``       ``"yyyy-mm-dd"``                    ``values`` int64 (days since 1970-01-01)
``bool``       ``true`` / ``false``                ``values`` bool + ``present`` bool
=============  ==================================  ===========================================

A ``null``, an empty list (or an empty CSV cell) is a missing value. Types are inferred from
the values (every string a valid ISO date: ``date``; integers mixed with floats: ``float``;
CSV cells: ``true``/``false``, integers, numbers, dates, else ``keyword``) unless declared
(``schema={"year": "integer"}`` or ``"year:integer,source:keyword"``); a field the index
already has keeps its type. Values of two kinds in one field (a string here, a number there)
are an :class:`~sparsearch.errors.InvalidInputError` naming the file, line and field.

This module is pure data (no I/O): :meth:`MetadataBatch.to_arrays` / :meth:`from_arrays` give
the arrays and the header that the index writes as a checksummed array directory (a segment's
``metadata/``; see ``index/builder.py``), and :class:`MetadataStore` reads the segments'
batches as one table over the index's doc numbers.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import numpy as np

from .errors import CorruptIndexError, InvalidInputError

__all__ = ["FIELD_TYPES", "METADATA_FORMAT", "METADATA_VERSION", "Column", "MetadataBatch", "MetadataStore",
           "parse_schema", "build_metadata", "concat_batches", "parse_date", "format_date", "text_value"]

FIELD_TYPES: tuple[str, ...] = ("keyword", "integer", "float", "date", "bool")
METADATA_FORMAT = "sparsearch-metadata"
METADATA_VERSION = 1

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_INT = re.compile(r"^[+-]?\d+$")
_FLOAT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_EPOCH = date(1970, 1, 1).toordinal()
_FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")
#: largest integer a field stores (int64)
_INT_MAX = 2**63 - 1


def parse_date(s: str) -> int | None:
    """Days since 1970-01-01 of an ISO ``yyyy-mm-dd`` date, ``None`` if ``s`` is not one."""
    if not isinstance(s, str) or not _DATE.match(s):
        return None
    try:
        return date.fromisoformat(s).toordinal() - _EPOCH
    except ValueError:
        return None


def format_date(days: int) -> str:
    """The ISO date of a day number (inverse of :func:`parse_date`)."""
    return date.fromordinal(int(days) + _EPOCH).isoformat()


def parse_schema(spec: Mapping[str, str] | str | None) -> dict[str, str]:
    """Declared field types: ``{"year": "integer"}`` or ``"year:integer,source:keyword"``."""
    if spec is None:
        return {}
    if isinstance(spec, str):
        out: dict[str, str] = {}
        for part in filter(None, (p.strip() for p in spec.split(","))):
            name, sep, typ = part.partition(":")
            if not sep:
                raise InvalidInputError(f"schema entry {part!r}: expected NAME:TYPE (types: {', '.join(FIELD_TYPES)})")
            out[name.strip()] = typ.strip()
        spec = out
    if not isinstance(spec, Mapping):
        raise InvalidInputError(f"a schema maps field names to types, got {type(spec).__name__}")
    for name, typ in spec.items():
        _check_name(name)
        if typ not in FIELD_TYPES:
            raise InvalidInputError(f"field {name!r}: unknown type {typ!r}; use one of {', '.join(FIELD_TYPES)}")
    return dict(spec)


def _check_name(name: Any, where: str = "") -> None:
    if not isinstance(name, str) or not _FIELD_NAME.match(name):
        raise InvalidInputError(f"{where + ': ' if where else ''}metadata field name {name!r}: use letters, digits, "
                                f"'_', '.' and '-' (starting with a letter or '_')")


def text_value(s: str) -> "_Text":
    """A CSV/TSV cell: typed from its text (see the module docstring)."""
    return _Text(s)


class _Text(str):
    """A value read from text (a CSV cell): its type is inferred from what it spells."""


# ------------------------------------------------------------------------- columns
@dataclass
class Column:
    """One field over the ``n`` documents of a batch (see the module docstring for the layout)."""

    type: str
    n: int
    ptr: np.ndarray | None = None
    codes: np.ndarray | None = None
    dictionary: np.ndarray | None = None
    values: np.ndarray | None = None
    present: np.ndarray | None = None
    _rows: np.ndarray | None = field(default=None, repr=False)

    @classmethod
    def missing(cls, typ: str, n: int) -> "Column":
        if typ == "keyword":
            return cls(typ, n, ptr=np.zeros(n + 1, np.int64), codes=np.zeros(0, np.int32),
                       dictionary=np.zeros(0, "<U1"))
        return cls(typ, n, values=np.zeros(n, _DTYPES[typ]), present=np.zeros(n, np.bool_))

    @property
    def multi(self) -> bool:
        return self.type == "keyword" and bool(len(self.ptr) > 1 and np.diff(self.ptr).max() > 1)

    def exists(self) -> np.ndarray:
        if self.type == "keyword":
            return np.diff(self.ptr) > 0
        return np.asarray(self.present, np.bool_)

    def rows(self) -> np.ndarray:
        """The document of every keyword code (for "any value matches" masks)."""
        if self._rows is None:
            self._rows = np.repeat(np.arange(self.n, dtype=np.int64), np.diff(self.ptr))
        return self._rows

    def keyword_mask(self, match: np.ndarray) -> np.ndarray:
        """Documents with at least one value whose dictionary entry ``match`` holds."""
        out = np.zeros(self.n, np.bool_)
        if len(self.codes) and match.any():
            out[self.rows()[match[self.codes]]] = True
        return out

    def value(self, j: int) -> Any:
        if self.type == "keyword":
            vals = [str(self.dictionary[c]) for c in self.codes[self.ptr[j]:self.ptr[j + 1]]]
            return None if not vals else vals
        if not self.present[j]:
            return None
        v = self.values[j]
        if self.type == "date":
            return format_date(int(v))
        return bool(v) if self.type == "bool" else int(v) if self.type == "integer" else float(v)

    def take(self, rows: np.ndarray) -> "Column":
        rows = np.asarray(rows, np.int64)
        if self.type != "keyword":
            return Column(self.type, len(rows), values=np.asarray(self.values)[rows],
                          present=np.asarray(self.present)[rows])
        counts = np.diff(self.ptr)[rows]
        ptr = np.zeros(len(rows) + 1, np.int64)
        np.cumsum(counts, out=ptr[1:])
        codes = (np.concatenate([np.asarray(self.codes[self.ptr[r]:self.ptr[r + 1]]) for r in rows])
                 if len(rows) else np.zeros(0, np.int32)).astype(np.int32)
        return Column("keyword", len(rows), ptr=ptr, codes=codes, dictionary=np.asarray(self.dictionary))


_DTYPES = {"integer": np.int64, "float": np.float64, "date": np.int64, "bool": np.bool_}


def _keyword_column(rows: Sequence[list[str] | None]) -> Column:
    n = len(rows)
    ptr = np.zeros(n + 1, np.int64)
    np.cumsum([len(r) if r else 0 for r in rows], out=ptr[1:])
    flat = [v for r in rows if r for v in r]
    if flat:
        dictionary, codes = np.unique(np.array(flat, dtype=str), return_inverse=True)
    else:
        dictionary, codes = np.zeros(0, "<U1"), np.zeros(0, np.int64)
    return Column("keyword", n, ptr=ptr, codes=codes.astype(np.int32), dictionary=dictionary)


def _scalar_column(typ: str, vals: Sequence[Any]) -> Column:
    present = np.array([v is not None for v in vals], np.bool_)
    values = np.array([v if v is not None else 0 for v in vals], _DTYPES[typ]) if vals else np.zeros(0, _DTYPES[typ])
    return Column(typ, len(vals), values=values, present=present)


# ------------------------------------------------------------------------- batches
@dataclass
class MetadataBatch:
    """The metadata of ``n_docs`` documents (one segment): ``{field: Column}``, fields in order."""

    n_docs: int
    columns: dict[str, Column]

    @property
    def schema(self) -> dict[str, str]:
        return {name: c.type for name, c in self.columns.items()}

    def document(self, j: int) -> dict[str, Any]:
        """Fields of document ``j`` (missing ones left out; keywords as lists)."""
        out = {}
        for name, c in self.columns.items():
            v = c.value(j)
            if v is not None:
                out[name] = v
        return out

    def take(self, rows: np.ndarray) -> "MetadataBatch":
        return MetadataBatch(len(rows), {n: c.take(rows) for n, c in self.columns.items()})

    def to_arrays(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Arrays (``c<i>_ptr`` / ``c<i>_codes`` / ``c<i>_dict`` or ``c<i>_values`` / ``c<i>_present``)
        and the header that describes them (format, version, n_docs, fields)."""
        arrays: dict[str, np.ndarray] = {}
        fields_ = []
        for i, (name, c) in enumerate(self.columns.items()):
            fields_.append({"name": name, "type": c.type})
            if c.type == "keyword":
                arrays.update({f"c{i}_ptr": c.ptr, f"c{i}_codes": c.codes, f"c{i}_dict": c.dictionary})
            else:
                arrays.update({f"c{i}_values": np.asarray(c.values, _DTYPES[c.type]), f"c{i}_present": c.present})
        return arrays, {"format": METADATA_FORMAT, "version": METADATA_VERSION, "n_docs": self.n_docs,
                        "fields": fields_}

    @staticmethod
    def array_names(header: dict[str, Any]) -> tuple[str, ...]:
        out: list[str] = []
        for i, f in enumerate(header["fields"]):
            out += ([f"c{i}_ptr", f"c{i}_codes", f"c{i}_dict"] if f["type"] == "keyword"
                    else [f"c{i}_values", f"c{i}_present"])
        return tuple(out)

    @classmethod
    def from_arrays(cls, header: dict[str, Any], arrays: dict[str, np.ndarray], where: str) -> "MetadataBatch":
        """The inverse of :meth:`to_arrays` (shapes checked; :class:`CorruptIndexError` naming ``where``)."""
        if header.get("format") != METADATA_FORMAT or header.get("version") != METADATA_VERSION:
            raise CorruptIndexError(f"{where}: not a sparsearch metadata header (format {header.get('format')!r}, "
                                    f"version {header.get('version')!r})")
        n = int(header["n_docs"])
        cols: dict[str, Column] = {}
        for i, f in enumerate(header["fields"]):
            typ = f["type"]
            if typ not in FIELD_TYPES:
                raise CorruptIndexError(f"{where}: field {f['name']!r} has unknown type {typ!r}")
            if typ == "keyword":
                c = Column(typ, n, ptr=arrays[f"c{i}_ptr"], codes=arrays[f"c{i}_codes"],
                           dictionary=arrays[f"c{i}_dict"])
                ok = (c.ptr.shape == (n + 1,) and int(c.ptr[0]) == 0 and int(c.ptr[-1]) == len(c.codes)
                      and (not len(c.codes) or (int(c.codes.min()) >= 0 and int(c.codes.max()) < len(c.dictionary))))
            else:
                c = Column(typ, n, values=arrays[f"c{i}_values"], present=arrays[f"c{i}_present"])
                ok = c.values.shape == (n,) and c.present.shape == (n,)
            if not ok:
                raise CorruptIndexError(f"{where}: the arrays of field {f['name']!r} do not fit {n} documents")
            cols[f["name"]] = c
        return cls(n, cols)

    @classmethod
    def empty(cls, n: int, schema: Mapping[str, str]) -> "MetadataBatch":
        return cls(n, {name: Column.missing(t, n) for name, t in schema.items()})


def _describe(v: Any) -> str:
    try:
        s = json.dumps(v, ensure_ascii=False)
    except (TypeError, ValueError):
        s = repr(v)
    return s if len(s) <= 40 else s[:37] + "..."


def _kind(v: Any, where: str, name: str) -> str | None:
    """The type a single value suggests (``None``: missing)."""
    if v is None:
        return None
    if isinstance(v, _Text):
        s = v.strip()
        if not s:
            return None
        if s.lower() in ("true", "false"):
            return "bool"
        if _INT.match(s) and abs(int(s)) <= _INT_MAX:
            return "integer"
        if _FLOAT.match(s):
            return "float"
        return "date" if parse_date(s) is not None else "keyword"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        if abs(v) > _INT_MAX:
            raise InvalidInputError(f"{where}: field {name!r}: integer {v} is out of range (64 bits)")
        return "integer"
    if isinstance(v, float):
        if not math.isfinite(v):
            raise InvalidInputError(f"{where}: field {name!r}: {v} is not a finite number")
        return "float"
    if isinstance(v, str):
        return "date" if parse_date(v) is not None else "keyword"
    if isinstance(v, (list, tuple)):
        if not all(isinstance(x, str) for x in v):
            raise InvalidInputError(f"{where}: field {name!r}: a list holds strings only (multi-valued keyword), "
                                    f"got {_describe(v)}")
        return "keyword" if v else None
    raise InvalidInputError(f"{where}: field {name!r}: unsupported value {_describe(v)} (use a string, number, "
                            f"bool, yyyy-mm-dd date or a list of strings)")


def _merge_kinds(a: str, b: str, textual: bool) -> str | None:
    """The type of a field holding values of types ``a`` and ``b`` (``None``: a conflict)."""
    if a == b:
        return a
    pair = {a, b}
    if pair == {"integer", "float"}:
        return "float"
    if pair == {"date", "keyword"}:
        return "keyword"
    return "keyword" if textual else None


def _convert(v: Any, typ: str, where: str, name: str, why: str) -> Any:
    """``v`` as a value of type ``typ`` (a keyword: a list of strings; a date: days)."""
    bad = InvalidInputError(f"{where}: field {name!r} is {typ} ({why}), got {_describe(v)}")
    if isinstance(v, _Text):
        s = v.strip()
        if typ == "keyword":
            return [str(v)]
        if typ == "integer" and _INT.match(s) and abs(int(s)) <= _INT_MAX:
            return int(s)
        if typ == "float" and (_FLOAT.match(s) or _INT.match(s)):
            return float(s)
        if typ == "bool" and s.lower() in ("true", "false"):
            return s.lower() == "true"
        if typ == "date" and parse_date(s) is not None:
            return parse_date(s)
        raise bad
    if typ == "keyword":
        if isinstance(v, str):
            return [v]
        if isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v):
            return list(v)
        raise bad
    if typ == "integer" and isinstance(v, int) and not isinstance(v, bool):
        return v
    if typ == "float" and isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v)
    if typ == "bool" and isinstance(v, bool):
        return v
    if typ == "date" and parse_date(v) is not None:
        return parse_date(v)
    raise bad


def build_metadata(records: Sequence[Mapping[str, Any] | None], *, schema: Mapping[str, str] | str | None = None,
                   existing: Mapping[str, str] | None = None, where: Sequence[str] | None = None,
                   ids: Sequence[str] | None = None) -> MetadataBatch:
    """Typed columns of ``records`` (one ``{field: value}`` or ``None`` per document).

    Args:
        schema: declared types (see :func:`parse_schema`); other fields are inferred.
        existing: the types the index already has (an add keeps them).
        where: each record's location (``"FILE, line N"``) for error messages; else ``ids``.
    Every field of ``schema`` and ``existing`` gets a column (missing where absent).
    """
    declared = parse_schema(schema)
    existing = dict(existing or {})
    for name, typ in declared.items():
        if name in existing and existing[name] != typ:
            raise InvalidInputError(f"field {name!r} is declared {typ}, but the index stores it as {existing[name]}")
    n = len(records)

    def loc(i: int) -> str:
        if where is not None:
            return where[i]
        return f"document {ids[i]!r}" if ids is not None else f"document #{i}"

    inferred: dict[str, tuple[str, int, bool]] = {}  # name -> (type, first record of that type, textual)
    for i, rec in enumerate(records):
        if rec is None:
            continue
        if not isinstance(rec, Mapping):
            raise InvalidInputError(f"{loc(i)}: metadata must be a JSON object, got {_describe(rec)}")
        for name, v in rec.items():
            if name not in inferred:
                _check_name(name, loc(i))
            k = _kind(v, loc(i), name)
            if k is None:
                continue
            if name not in inferred:
                inferred[name] = (k, i, isinstance(v, _Text))
                continue
            prev, first, textual = inferred[name]
            merged = _merge_kinds(prev, k, textual and isinstance(v, _Text))
            if merged is None and name not in declared and name not in existing:
                raise InvalidInputError(f"{loc(i)}: field {name!r} holds a {k} value ({_describe(v)}) but "
                                        f"{loc(first)} holds a {prev}; declare its type in the schema")
            if merged is not None and merged != prev:
                inferred[name] = (merged, first, textual)
    types: dict[str, tuple[str, str]] = {}
    for name, typ in existing.items():
        types[name] = (typ, "its type in the index")
    for name, typ in declared.items():
        types.setdefault(name, (typ, "declared"))
    for name, (typ, first, _) in inferred.items():
        if name not in types:
            types[name] = (typ, f"inferred from {loc(first)}")
    columns: dict[str, Column] = {}
    for name, (typ, why) in types.items():
        vals = []
        for i, rec in enumerate(records):
            v = rec.get(name) if rec is not None else None
            k = _kind(v, loc(i), name) if v is not None else None
            vals.append(None if k is None else _convert(v, typ, loc(i), name, why))
        columns[name] = _keyword_column(vals) if typ == "keyword" else _scalar_column(typ, vals)
    return MetadataBatch(n, columns)


# ------------------------------------------------------------------------- the index's table
class MetadataStore:
    """The metadata of a whole index: one :class:`MetadataBatch` (or ``None``: no metadata) per
    segment, addressed by the index's doc numbers."""

    def __init__(self, parts: Sequence[MetadataBatch | None], sizes: Sequence[int], where: str = "index") -> None:
        self.sizes = [int(s) for s in sizes]
        self.bases = np.cumsum([0] + self.sizes).astype(np.int64)
        schema: dict[str, str] = {}
        for p in parts:
            for name, typ in (p.schema.items() if p is not None else ()):
                if schema.setdefault(name, typ) != typ:
                    raise CorruptIndexError(f"{where}: metadata field {name!r} is {schema[name]} in one segment "
                                            f"and {typ} in another")
        self.schema = schema
        self.parts = list(parts)

    @property
    def n_docs(self) -> int:
        return int(self.bases[-1])

    def document(self, docnum: int) -> dict[str, Any]:
        """The fields of one document (by doc number)."""
        if not 0 <= docnum < self.n_docs:
            raise InvalidInputError(f"doc number {docnum} out of range [0, {self.n_docs})")
        s = int(np.searchsorted(self.bases, docnum, side="right") - 1)
        p = self.parts[s]
        return {} if p is None else p.document(docnum - int(self.bases[s]))

    def field_type(self, name: str) -> str | None:
        return self.schema.get(name)

    def mask(self, name: str, per_column: Callable[[Column], np.ndarray]) -> np.ndarray:
        """``per_column(column)`` of each segment concatenated (all ``False`` where a segment lacks the field)."""
        out = np.zeros(self.n_docs, np.bool_)
        for p, a, n in zip(self.parts, self.bases, self.sizes):
            c = p.columns.get(name) if p is not None else None
            if c is not None and n:
                out[a:a + n] = per_column(c)
        return out

    def segment_batch(self, s: int) -> MetadataBatch:
        """Segment ``s``'s batch with every field of the index (missing ones empty)."""
        p = self.parts[s]
        n = self.sizes[s]
        cols = {name: (p.columns[name] if p is not None and name in p.columns else Column.missing(t, n))
                for name, t in self.schema.items()}
        return MetadataBatch(n, cols)


def concat_batches(batches: Sequence[MetadataBatch], schema: Mapping[str, str]) -> MetadataBatch:
    """One batch of several (fields of ``schema``; keyword dictionaries merged)."""
    n = sum(b.n_docs for b in batches)
    cols: dict[str, Column] = {}
    for name, typ in schema.items():
        parts = [b.columns.get(name) or Column.missing(typ, b.n_docs) for b in batches]
        if typ == "keyword":
            rows: list[list[str] | None] = []
            for c in parts:
                d = c.dictionary
                rows += [[str(d[x]) for x in c.codes[c.ptr[j]:c.ptr[j + 1]]] for j in range(c.n)]
            cols[name] = _keyword_column(rows)
        else:
            cols[name] = Column(typ, n, values=np.concatenate([np.asarray(c.values, _DTYPES[typ]) for c in parts])
                                if parts else np.zeros(0, _DTYPES[typ]),
                                present=np.concatenate([np.asarray(c.present) for c in parts])
                                if parts else np.zeros(0, np.bool_))
    return MetadataBatch(n, cols)
