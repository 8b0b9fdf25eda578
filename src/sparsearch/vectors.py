"""Sparse vectors in CSR form with a vocabulary, and their file formats.

A :class:`SparseBatch` holds ``n`` sparse vectors over a vocabulary of ``V`` terms:

* ``indptr``  int64, shape (n + 1,): row ``i`` owns ``indices[indptr[i]:indptr[i+1]]``.
* ``indices`` int32, shape (nnz,): term ids in ``[0, V)``; unique and sorted within a row.
* ``values``  float32, shape (nnz,): non-negative, finite weights.
* ``vocab``   :class:`Vocabulary`: term id -> term string (a wordpiece, a stem, a latent id).
* ``ids``     optional list of ``n`` external ids (document or query ids).

File formats:

* JSONL, one object per line, as Anserini and Seismic exchange learned sparse vectors:
  ``{"id": "doc1", "vector": {"term": 1.5, ...}}`` (``content`` is accepted as a synonym of
  ``vector``, ``_id`` of ``id``). Every line needs an id (a non-empty string or an integer);
  a repeated id is refused unless an explicit ``on_duplicate`` policy (:data:`DUPLICATE_POLICIES`)
  says which line wins; an empty term ``""`` is refused.
* ``.npz``: the CSR arrays, the vocabulary and ids in one compressed numpy archive (fast).

Malformed input raises :class:`FormatError` naming the file and line.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from .errors import InvalidInputError

if TYPE_CHECKING:
    import scipy.sparse as sp

__all__ = ["FormatError", "Vocabulary", "SparseBatch", "read_jsonl", "iter_jsonl_chunks", "DUPLICATE_POLICIES",
           "check_duplicate_policy", "check_id", "Dedup"]

#: what to do with a repeated id in an input file: refuse it (the default), keep the first
#: line with that id, or keep the last one
DUPLICATE_POLICIES: tuple[str, ...] = ("error", "first", "last")


class FormatError(InvalidInputError):
    """Input that does not follow a documented format (names file, line and problem)."""


class Vocabulary:
    """An append-only mapping between term strings and dense integer ids.

    Ids are positions in ``terms``; appending never changes existing ids, which is what lets
    an index grow its vocabulary in place.
    """

    __slots__ = ("terms", "_index")

    def __init__(self, terms: Iterable[str] = ()) -> None:
        self.terms: list[str] = list(terms)
        self._index: dict[str, int] = dict(zip(self.terms, range(len(self.terms))))
        # built in C (an index's vocabulary opens ~5x faster); repeated terms or non-str ones: one at a time
        if len(self._index) != len(self.terms) or not set(map(type, self.terms)) <= {str}:
            given, self.terms, self._index = self.terms, [], {}
            for t in given:
                self.add(t)

    def __len__(self) -> int:
        return len(self.terms)

    def __contains__(self, term: object) -> bool:
        return term in self._index

    def __iter__(self) -> Iterator[str]:
        return iter(self.terms)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self.terms == other.terms

    def __repr__(self) -> str:
        return f"Vocabulary({len(self)} terms)"

    def add(self, term: str) -> int:
        """Return the id of ``term``, appending it if new."""
        tid = self._index.get(term)
        if tid is None:
            if not isinstance(term, str):
                raise TypeError(f"terms must be str, got {type(term).__name__}")
            tid = len(self.terms)
            self.terms.append(term)
            self._index[term] = tid
        return tid

    def get(self, term: str, default: int = -1) -> int:
        """Id of ``term`` or ``default`` when absent."""
        return self._index.get(term, default)

    def id(self, term: str) -> int:
        """Id of ``term``; raises ``KeyError`` naming the unknown token."""
        try:
            return self._index[term]
        except KeyError:
            raise KeyError(f"unknown token {term!r}: not in the vocabulary ({len(self)} terms)") from None

    def term(self, tid: int) -> str:
        return self.terms[tid]

    def is_prefix_of(self, other: "Vocabulary") -> bool:
        """True when every id of ``self`` means the same term in ``other``."""
        return len(self) <= len(other) and other.terms[: len(self)] == self.terms

    def copy(self) -> "Vocabulary":
        return Vocabulary(self.terms)

    @classmethod
    def from_size(cls, size: int, prefix: str = "") -> "Vocabulary":
        """A vocabulary of ``size`` synthetic terms ``f"{prefix}{i}"`` (latent ids, synthetic data)."""
        return cls(f"{prefix}{i}" for i in range(size))


def check_duplicate_policy(on_duplicate: str) -> str:
    """``on_duplicate`` checked against :data:`DUPLICATE_POLICIES` (:class:`InvalidInputError`)."""
    if on_duplicate not in DUPLICATE_POLICIES:
        raise InvalidInputError(f"on_duplicate must be one of {', '.join(DUPLICATE_POLICIES)}, got {on_duplicate!r}")
    return on_duplicate


def check_id(value: object, where: str, field: str = "id") -> str:
    """An id read from a file as a string: a non-empty string or an integer, else :class:`FormatError`
    naming ``where`` (file and line)."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise FormatError(f"{where}: {field!r} must be a string or an integer, got {value!r:.60}")
    out = str(value)
    if not out.strip():
        raise FormatError(f"{where}: empty {field!r}")
    return out


class Dedup:
    """Tracks the ids of one input file and applies a duplicate policy.

    ``keep(id, lineno)`` says whether a line is kept: ``"error"`` raises :class:`FormatError`
    naming both lines, ``"first"`` skips later lines with a seen id; ``"last"`` needs
    ``last_lines`` (id -> its last line, from a first pass) and keeps only that line.
    """

    def __init__(self, path: str | os.PathLike, on_duplicate: str = "error", field: str = "id",
                 last_lines: Mapping[str, int] | None = None) -> None:
        self.path, self.policy, self.field = path, check_duplicate_policy(on_duplicate), field
        self.first: dict[str, int] = {}
        self.last_lines = last_lines
        if on_duplicate == "last" and last_lines is None:
            raise InvalidInputError("on_duplicate='last' needs the last line of every id (a first pass)")

    def keep(self, rid: str, lineno: int) -> bool:
        if self.policy == "last":
            return self.last_lines[rid] == lineno  # type: ignore[index]
        first = self.first.setdefault(rid, lineno)
        if first == lineno:
            return True
        if self.policy == "error":
            raise FormatError(f"{self.path}, line {lineno}: duplicate {self.field} {rid!r} (first at line {first}); "
                              f"ids must be unique (or choose on_duplicate='first' / 'last')")
        return False


_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _check_weight(w: object, where: str) -> float:
    if isinstance(w, bool) or not isinstance(w, (int, float)):
        raise FormatError(f"{where}: weight {w!r} is not a number")
    try:
        f = float(w)
    except OverflowError:
        f = math.inf
    if not math.isfinite(f) or f > _FLOAT32_MAX:  # weights are stored as float32
        raise FormatError(f"{where}: weight {w!r:.40} is not finite in float32 (at most {_FLOAT32_MAX:.4g})")
    if f < 0:
        raise FormatError(f"{where}: weight {w!r} is negative (sparse retrieval weights must be >= 0)")
    return f


@dataclass
class SparseBatch:
    """``n`` sparse vectors in CSR form over a shared vocabulary (see module docstring)."""

    indptr: np.ndarray
    indices: np.ndarray
    values: np.ndarray
    vocab: Vocabulary
    ids: list[str] | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.indptr = np.ascontiguousarray(self.indptr, dtype=np.int64)
        self.indices = np.ascontiguousarray(self.indices, dtype=np.int32)
        self.values = np.ascontiguousarray(self.values, dtype=np.float32)
        if self.indptr.ndim != 1 or len(self.indptr) < 1 or self.indptr[0] != 0:
            raise ValueError("indptr must be 1-D and start at 0")
        if self.indptr[-1] != len(self.indices) or len(self.indices) != len(self.values):
            raise ValueError(
                f"CSR arrays disagree: indptr[-1]={self.indptr[-1]}, "
                f"len(indices)={len(self.indices)}, len(values)={len(self.values)}"
            )
        if np.any(np.diff(self.indptr) < 0):
            raise ValueError("indptr must be non-decreasing")
        if self.ids is not None:
            self.ids = [str(i) for i in self.ids]
            if len(self.ids) != len(self):
                raise ValueError(f"{len(self.ids)} ids for {len(self)} vectors")

    # ------------------------------------------------------------------ basics
    def __len__(self) -> int:
        return len(self.indptr) - 1

    @property
    def nnz(self) -> int:
        return int(self.indptr[-1])

    @property
    def n_terms(self) -> int:
        return len(self.vocab)

    def row(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(term ids int32, weights float32) of vector ``i``."""
        a, b = self.indptr[i], self.indptr[i + 1]
        return self.indices[a:b], self.values[a:b]

    def row_dict(self, i: int) -> dict[str, float]:
        """Vector ``i`` as ``{term: weight}``."""
        idx, val = self.row(i)
        terms = self.vocab.terms
        return {terms[t]: float(w) for t, w in zip(idx.tolist(), val.tolist())}

    def nnz_per_row(self) -> np.ndarray:
        return np.diff(self.indptr)

    def row_ids(self) -> np.ndarray:
        """Row number of every stored weight, int64 shape (nnz,)."""
        return np.repeat(np.arange(len(self), dtype=np.int64), np.diff(self.indptr))

    def validate(self) -> "SparseBatch":
        """Check the invariants (ids in range, sorted unique per row, finite non-negative)."""
        if self.nnz:
            if self.indices.min() < 0 or self.indices.max() >= len(self.vocab):
                raise ValueError(f"term id out of range for a vocabulary of {len(self.vocab)} terms")
            if not np.all(np.isfinite(self.values)) or self.values.min() < 0:
                raise ValueError("weights must be finite and non-negative")
            rows = self.row_ids()
            same_row = rows[1:] == rows[:-1]
            if np.any(same_row & (self.indices[1:] <= self.indices[:-1])):
                raise ValueError("term ids must be strictly increasing within each vector")
        return self

    # -------------------------------------------------------------- converters
    def to_scipy(self) -> sp.csr_matrix:
        """scipy CSR matrix, shape (n, V), float32."""
        import scipy.sparse as sp  # here: a text search from the shell never needs scipy (start-up time)

        return sp.csr_matrix((self.values, self.indices, self.indptr), shape=(len(self), len(self.vocab)))

    @classmethod
    def from_scipy(
        cls, m: sp.spmatrix, vocab: Vocabulary | Sequence[str] | None = None, ids: Sequence[str] | None = None
    ) -> "SparseBatch":
        """Build from any scipy sparse matrix of shape (n, V); explicit zeros are dropped."""
        import scipy.sparse as sp

        m = sp.csr_matrix(m, dtype=np.float32)
        m.eliminate_zeros()
        m.sum_duplicates()
        m.sort_indices()
        if vocab is None:
            vocab = Vocabulary.from_size(m.shape[1])
        elif not isinstance(vocab, Vocabulary):
            vocab = Vocabulary(vocab)
        if len(vocab) < m.shape[1]:
            raise ValueError(f"matrix has {m.shape[1]} columns but the vocabulary {len(vocab)} terms")
        return cls(m.indptr, m.indices, m.data, vocab, list(ids) if ids is not None else None)

    @classmethod
    def from_dense(cls, x: np.ndarray, vocab: Vocabulary | None = None, ids: Sequence[str] | None = None) -> "SparseBatch":
        """From a dense (n, V) array; zeros are dropped."""
        import scipy.sparse as sp

        return cls.from_scipy(sp.csr_matrix(np.asarray(x, dtype=np.float32)), vocab, ids)

    @classmethod
    def from_dicts(
        cls,
        vectors: Iterable[Mapping[str, float]],
        vocab: Vocabulary | None = None,
        ids: Sequence[str] | None = None,
        *,
        grow: bool = True,
    ) -> "SparseBatch":
        """From ``{term: weight}`` mappings.

        With ``grow=False`` the vocabulary is fixed and an unknown term raises ``KeyError``.
        Zero weights are dropped; negative or non-finite weights raise :class:`FormatError`.
        """
        vocab = Vocabulary() if vocab is None else vocab
        indptr = [0]
        indices: list[int] = []
        values: list[float] = []
        for n, vec in enumerate(vectors):
            row: dict[int, float] = {}
            for term, w in vec.items():
                if term == "":
                    raise FormatError(f"vector {n}: empty term \"\" (terms must be non-empty strings)")
                f = _check_weight(w, f"vector {n}, term {term!r}")
                if f == 0.0:
                    continue
                tid = vocab.add(term) if grow else vocab.id(term)
                row[tid] = row.get(tid, 0.0) + f
            for tid in sorted(row):
                indices.append(tid)
                values.append(row[tid])
            indptr.append(len(indices))
        return cls(np.array(indptr), np.array(indices, dtype=np.int32), np.array(values, dtype=np.float32), vocab,
                   list(ids) if ids is not None else None)

    def to_dicts(self) -> list[dict[str, float]]:
        return [self.row_dict(i) for i in range(len(self))]

    # ---------------------------------------------------------------- algebra
    def __getitem__(self, key: slice | Sequence[int] | np.ndarray) -> "SparseBatch":
        """Row subset (slice or integer array), sharing the vocabulary."""
        if isinstance(key, slice) and key.step in (None, 1):
            start, stop, _ = key.indices(len(self))
            stop = max(start, stop)
            a, b = self.indptr[start], self.indptr[stop]
            ids = self.ids[start:stop] if self.ids is not None else None
            return SparseBatch(self.indptr[start:stop + 1] - a, self.indices[a:b], self.values[a:b], self.vocab, ids,
                               dict(self.meta))
        if isinstance(key, slice):
            rows = np.arange(len(self))[key]
        else:
            rows = np.asarray(key, dtype=np.int64)
        m = self.to_scipy()[rows]
        ids = [self.ids[i] for i in rows.tolist()] if self.ids is not None else None
        return SparseBatch(m.indptr, m.indices, m.data, self.vocab, ids, dict(self.meta))

    @staticmethod
    def concat(batches: Sequence["SparseBatch"], *, release: bool = False) -> "SparseBatch":
        """Stack batches over the same vocabulary (or vocabularies that are prefixes of the last).

        ``release`` (``batches`` a list): drop each batch from the list once it is copied, so
        that a stream of chunks is collected in about the memory of the result, not twice it.
        """
        if not batches:
            raise ValueError("nothing to concatenate")
        vocab = max((b.vocab for b in batches), key=len)
        for b in batches:
            if not b.vocab.is_prefix_of(vocab):
                raise ValueError("cannot concatenate batches over mismatched vocabularies (use remap first)")
        nnz = sum(b.nnz for b in batches)
        has_ids = all(b.ids is not None for b in batches)
        indptr = np.empty(sum(len(b) for b in batches) + 1, np.int64)
        indices = np.empty(nnz, np.result_type(*[b.indices.dtype for b in batches]))
        values = np.empty(nnz, np.result_type(*[b.values.dtype for b in batches]))
        ids: list[str] | None = [] if has_ids else None
        indptr[0] = row = off = 0
        for i in range(len(batches)):
            b = batches[i]
            n, m = len(b), b.nnz
            indptr[row + 1:row + n + 1] = b.indptr[1:] + off
            indices[off:off + m] = b.indices[:m]
            values[off:off + m] = b.values[:m]
            if ids is not None:
                ids.extend(b.ids)  # type: ignore[arg-type]
            row, off = row + n, off + m
            if release:
                batches[i] = None  # type: ignore[index]
            del b
        return SparseBatch(indptr, indices, values, vocab, ids)

    def remap(self, target: Vocabulary, *, unknown: str = "drop") -> "SparseBatch":
        """Express these vectors in the term ids of ``target``.

        ``unknown``: ``"drop"`` silently removes terms the target lacks (a query term that no
        document has cannot score), ``"error"`` raises ``KeyError`` naming the first one, and
        ``"add"`` appends them to ``target``.
        """
        if self.vocab is target or self.vocab.is_prefix_of(target):
            return SparseBatch(self.indptr, self.indices, self.values, target, self.ids, dict(self.meta))
        mapping = np.empty(len(self.vocab), dtype=np.int64)
        for i, t in enumerate(self.vocab.terms):
            j = target.get(t)
            if j < 0:
                if unknown == "error":
                    raise KeyError(f"unknown token {t!r}: not in the target vocabulary ({len(target)} terms)")
                if unknown == "add":
                    j = target.add(t)
            mapping[i] = j
        new_idx = mapping[self.indices]
        keep = new_idx >= 0
        rows = self.row_ids()
        import scipy.sparse as sp

        m = sp.csr_matrix((self.values[keep], (rows[keep], new_idx[keep])), shape=(len(self), len(target)))
        return SparseBatch.from_scipy(m, target, self.ids)

    def max_pool_rows(self, owner: np.ndarray, n_rows: int) -> "SparseBatch":
        """Merge rows into ``n_rows`` vectors by term-wise maximum: row ``i`` goes to vector
        ``owner[i]`` (int, shape ``(len(self),)``); a vector no row maps to is empty. Ids are dropped."""
        owner = np.asarray(owner, dtype=np.int64)
        if owner.shape != (len(self),) or (len(owner) and (owner.min() < 0 or owner.max() >= n_rows)):
            raise ValueError(f"owner must hold one target in [0, {n_rows}) per row ({len(self)} rows)")
        rows = owner[self.row_ids()]
        V = max(self.n_terms, int(self.indices.max()) + 1 if self.nnz else 1)
        key = rows * V + self.indices
        order = np.lexsort((-self.values, key))  # per (vector, term): the largest weight first
        key, values = key[order], self.values[order]
        first = np.concatenate([[True], key[1:] != key[:-1]]) if len(key) else np.zeros(0, bool)
        key, values = key[first], values[first]
        counts = np.bincount(key // V, minlength=n_rows)
        return SparseBatch(np.concatenate([[0], np.cumsum(counts)]), (key % V).astype(np.int32),
                           values.astype(np.float32, copy=False), self.vocab, None, dict(self.meta))

    def prune(self, top_k: int | None = None, threshold: float = 0.0) -> "SparseBatch":
        """Keep at most ``top_k`` largest weights per vector and only weights > ``threshold``."""
        keep = self.values > threshold
        if top_k is not None:
            lens = np.diff(self.indptr)
            for i in np.nonzero(lens > top_k)[0]:
                a, b = self.indptr[i], self.indptr[i + 1]
                order = np.argsort(-self.values[a:b], kind="stable")
                keep[a + order[top_k:]] = False
        counts = np.bincount(self.row_ids()[keep], minlength=len(self))
        indptr = np.concatenate([[0], np.cumsum(counts)])
        return SparseBatch(indptr, self.indices[keep], self.values[keep], self.vocab, self.ids, dict(self.meta))

    # -------------------------------------------------------------------- I/O
    def save_npz(self, path: str | os.PathLike) -> None:
        """Write the batch to ``path`` (numpy ``.npz``, compressed)."""
        np.savez_compressed(
            path,
            indptr=self.indptr,
            indices=self.indices,
            values=self.values,
            vocab=np.array(json.dumps(self.vocab.terms)),
            ids=np.array(json.dumps(self.ids)),
            meta=np.array(json.dumps(self.meta)),
            format=np.array("sparsearch-batch-1"),
        )

    @classmethod
    def load_npz(cls, path: str | os.PathLike) -> "SparseBatch":
        try:
            with np.load(path, allow_pickle=False) as z:
                if str(z.get("format", "")) != "sparsearch-batch-1":
                    raise FormatError(f"{path}: not a sparsearch batch file (format tag missing or unknown)")
                return cls(z["indptr"], z["indices"], z["values"], Vocabulary(json.loads(str(z["vocab"]))),
                           json.loads(str(z["ids"])), json.loads(str(z["meta"])))
        except (OSError, KeyError, json.JSONDecodeError) as e:
            raise FormatError(f"{path}: cannot read sparse batch: {e}") from e

    def write_jsonl(self, path: str | os.PathLike) -> None:
        """Write ``{"id": ..., "vector": {term: weight}}`` lines."""
        with open(path, "w", encoding="utf-8") as f:
            for i in range(len(self)):
                rid = self.ids[i] if self.ids is not None else str(i)
                f.write(json.dumps({"id": rid, "vector": self.row_dict(i)}, ensure_ascii=False))
                f.write("\n")

    @classmethod
    def read_jsonl(cls, path: str | os.PathLike, vocab: Vocabulary | None = None, *, grow: bool = True,
                   on_duplicate: str = "error") -> "SparseBatch":
        return read_jsonl(path, vocab, grow=grow, on_duplicate=on_duplicate)

    def save(self, path: str | os.PathLike) -> None:
        """Save as ``.npz`` or ``.jsonl`` depending on the suffix."""
        (self.write_jsonl if str(path).endswith((".jsonl", ".json")) else self.save_npz)(path)

    @classmethod
    def load(cls, path: str | os.PathLike, vocab: Vocabulary | None = None) -> "SparseBatch":
        """Load ``.npz`` or ``.jsonl`` (``.jsonl.gz`` too) depending on the suffix."""
        if str(path).endswith((".jsonl", ".json", ".jsonl.gz")):
            return read_jsonl(path, vocab)
        return cls.load_npz(path)


def _open_text(path: str | os.PathLike):
    if str(path).endswith(".gz"):
        import gzip

        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def _parse_line(line: str, path: str | os.PathLike, lineno: int) -> tuple[str, Mapping[str, float]]:
    where = f"{path}, line {lineno}"
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise FormatError(f"{where}: malformed JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(obj, dict):
        raise FormatError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    vec = obj.get("vector", obj.get("content"))
    if not isinstance(vec, dict):
        raise FormatError(f"{where}: missing or non-object 'vector' field (expected {{\"term\": weight}})")
    if "id" not in obj and "_id" not in obj:
        raise FormatError(f"{where}: missing 'id' field (every vector needs its document id)")
    rid = check_id(obj["id"] if "id" in obj else obj["_id"], where)
    for term, w in vec.items():
        if term == "":
            raise FormatError(f"{where}: empty term \"\" (terms must be non-empty strings)")
        _check_weight(w, f"{where}, term {term!r}")
    return rid, vec


def _last_lines(path: str | os.PathLike) -> dict[str, int]:
    """Id -> the last line holding it (a first pass for ``on_duplicate="last"``)."""
    last: dict[str, int] = {}
    with _open_text(path) as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                last[_parse_line(line, path, lineno)[0]] = lineno
    return last


def iter_jsonl_chunks(
    path: str | os.PathLike, chunk_size: int = 100_000, vocab: Vocabulary | None = None, *, grow: bool = True,
    on_duplicate: str = "error",
) -> Iterator[SparseBatch]:
    """Stream a JSONL vector file as SparseBatch chunks sharing one (growing) vocabulary.

    ``on_duplicate``: a repeated id raises :class:`FormatError` naming file and both lines
    (``"error"``, the default), or keeps the ``"first"`` / ``"last"`` line with that id (``"last"``
    reads the file twice)."""
    vocab = Vocabulary() if vocab is None else vocab
    check_duplicate_policy(on_duplicate)
    dedup = Dedup(path, on_duplicate, last_lines=_last_lines(path) if on_duplicate == "last" else None)
    ids: list[str] = []
    vecs: list[Mapping[str, float]] = []
    with _open_text(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            rid, vec = _parse_line(line, path, lineno)
            if not dedup.keep(rid, lineno):
                continue
            ids.append(rid)
            vecs.append(vec)
            if len(vecs) >= chunk_size:
                yield _build_chunk(vecs, vocab, ids, grow, path)
                ids, vecs = [], []
    if vecs:
        yield _build_chunk(vecs, vocab, ids, grow, path)


def _build_chunk(vecs, vocab, ids, grow, path) -> SparseBatch:
    try:
        return SparseBatch.from_dicts(vecs, vocab, ids, grow=grow)
    except KeyError as e:
        raise FormatError(f"{path}: {e.args[0]}") from None


def read_jsonl(path: str | os.PathLike, vocab: Vocabulary | None = None, *, grow: bool = True,
               on_duplicate: str = "error") -> SparseBatch:
    """Read a whole JSONL vector file (see :func:`iter_jsonl_chunks`)."""
    vocab = Vocabulary() if vocab is None else vocab
    chunks = list(iter_jsonl_chunks(path, vocab=vocab, grow=grow, on_duplicate=on_duplicate))
    if not chunks:
        return SparseBatch(np.zeros(1, dtype=np.int64), np.empty(0, np.int32), np.empty(0, np.float32), vocab, [])
    return SparseBatch.concat(chunks)
