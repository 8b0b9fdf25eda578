"""What reading an index needs with numpy alone: the segment file format, its constants, and the
loading of a commit's vocabulary, segments and deletion bitmaps.

Kept apart from :mod:`~sparsearch.index.segment`, :mod:`~sparsearch.index.kernels` and
:mod:`~sparsearch.index.searcher`, which import numba (and scipy), so that a reader that never
calls a numba kernel (:mod:`~sparsearch.index.oneshot`, behind ``sparsearch search`` from the
shell) opens an index with the same checks without paying ~0.5 s of imports. Those modules take
their constants from here, so there is one definition of each.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np

from ..encoders import load_encoder_of
from ..errors import CorruptIndexError, InvalidInputError, SparsearchError, UnsupportedError
from ..vectors import SparseBatch, Vocabulary
from .manifest import load_commit, verify_commit
from .storage import load_npy, read_arrays, read_json, read_versioned_json

__all__ = ["SEGMENT_FORMAT", "SEGMENT_VERSION", "READ_VERSIONS", "ARRAYS_V1", "ARRAYS", "BLOCK", "SNAP_BITS",
           "WINDOW", "TAAT_MAX_DOCS", "Contribution", "read_segment", "load_segments", "OpenedIndex", "contributions"]

SEGMENT_FORMAT = "sparsearch-segment"
SEGMENT_VERSION = 2  # 2: per-term scales (``term_scale``); 1: one scale per segment
READ_VERSIONS = (1, 2)
ARRAYS_V1 = ("term_post_ptr", "term_block_ptr", "term_max", "block_last", "block_max", "block_bits",
             "block_word_ptr", "words", "impacts")
ARRAYS = (*ARRAYS_V1, "term_scale")
#: postings per block (block maxima, d-gap packing)
BLOCK = 128
#: significant bits of a snapped query weight (exact float64 sums, see ``kernels``)
SNAP_BITS = 20
#: documents per window of block-max MaxScore
WINDOW = 4096
#: segments of at most this many documents are scored term at a time in exact mode (MaxScore has
#: nothing to skip within two windows)
TAAT_MAX_DOCS = 2 * WINDOW


@dataclass(frozen=True)
class Contribution:
    """One term's share of a query-document score: ``contribution = query_weight * doc_weight``."""

    term: str
    term_id: int
    query_weight: float
    doc_weight: float
    contribution: float


def contributions(vocab: Vocabulary, terms: np.ndarray, snapped: np.ndarray, impacts: np.ndarray, scales: np.ndarray,
                  per_term: bool) -> list[Contribution]:
    """Each matching query term's share of one document's score, largest first: ``terms`` (index
    term ids, -1 unknown), ``snapped`` the weights the kernels score them with, ``impacts`` the
    document's stored impacts of them and ``scales`` their terms' impact units (one segment)."""
    out = []
    for t, w, i, sc in zip(terms.tolist(), snapped.tolist(), impacts.tolist(), scales.tolist()):
        if t >= 0 and w * i > 0:
            if not per_term:  # version 1 / float32: snapped raw weight x (impact x scale)
                out.append(Contribution(vocab.terms[t], int(t), w, i * sc, w * i * sc))
            else:  # per-term grids: the weight was multiplied by the term's scale before snapping
                out.append(Contribution(vocab.terms[t], int(t), w / sc, i * sc, w * i))
    return sorted(out, key=lambda c: (-c.contribution, c.term))


def read_segment(path: Path, *, mmap: bool = True, verify: bool = True
                 ) -> tuple[dict[str, Any], dict[str, np.ndarray], list[str]]:
    """A segment directory's header, arrays (memory-mapped with ``mmap``, checksums verified with
    ``verify``) and document ids; :class:`CorruptIndexError` naming the file when anything is off."""
    path = Path(path)
    meta = read_versioned_json(path, "segment.json", SEGMENT_FORMAT, READ_VERSIONS, "segment")
    arrays = read_arrays(path, meta, ARRAYS if meta["version"] >= 2 else ARRAYS_V1, mmap=mmap, verify=verify)
    scale = arrays.get("term_scale")
    if scale is not None and scale.shape != (len(arrays["term_post_ptr"]) - 1,):
        raise CorruptIndexError(f"{path / 'term_scale.npy'}: {scale.shape} scales for "
                                f"{len(arrays['term_post_ptr']) - 1} terms")
    doc_ids = read_json(path / "doc_ids.json", "document ids")
    if not isinstance(doc_ids, list) or len(doc_ids) != meta["n_docs"]:
        n = len(doc_ids) if isinstance(doc_ids, list) else "no list of"
        raise CorruptIndexError(f"{path / 'doc_ids.json'}: {n} ids for {meta['n_docs']} documents")
    if not all(isinstance(i, str) for i in doc_ids):
        raise CorruptIndexError(f"{path / 'doc_ids.json'}: a document id that is not a string")
    return meta, arrays, doc_ids


class _OpenedSegment(Protocol):
    n_docs: int
    n_terms: int
    path: Path


S = TypeVar("S", bound=_OpenedSegment)


def load_segments(path: Path, manifest: dict[str, Any], open_segment: Callable[[Path], S], *, verify: bool = True,
                  segments: Sequence[int] | None = None) -> tuple[Vocabulary, list[S], list[np.ndarray]]:
    """The vocabulary, the segments of the commit ``manifest`` (those at positions ``segments``,
    default all) opened with ``open_segment``, and their deletion bitmaps (bool ``(n_docs,)``,
    empty: none), every file checked against the commit's records first (sizes always, CRC32
    with ``verify``)."""
    if manifest.get("kind") == "hybrid":
        raise UnsupportedError(f"{path} is a hybrid index (several representations): open it with "
                               f"sparsearch.index.open_searcher; this operation needs a single-representation index")
    entries = list(manifest["segments"])
    if segments is not None:
        if list(segments) != sorted(set(segments)) or any(not 0 <= i < len(entries) for i in segments):
            raise InvalidInputError(f"segments must be ascending distinct positions in [0, {len(entries)}), "
                                    f"got {list(segments)}")
        entries = [entries[i] for i in segments]
    if "vocab" not in manifest:
        raise CorruptIndexError(f"{path}: the manifest names no vocabulary")
    # every file read below (and the encoder state, read on demand) against the manifest's records
    verify_commit(path, manifest, [manifest["vocab"], manifest.get("encoder_state"),
                                   *(n for s in entries for n in (s["name"], s.get("deletes")))], full=verify)
    terms = read_json(path / manifest["vocab"], "vocabulary")
    if not isinstance(terms, list) or len(terms) != manifest.get("n_terms", len(terms)):
        raise CorruptIndexError(f"{path}: vocabulary does not match the manifest ({manifest.get('n_terms')} terms)")
    opened: list[S] = []
    deleted: list[np.ndarray] = []
    for s in entries:
        seg = open_segment(path / s["name"])
        if seg.n_terms > len(terms):
            raise CorruptIndexError(f"{seg.path}: segment knows {seg.n_terms} terms, vocabulary only {len(terms)}")
        opened.append(seg)
        if s.get("deletes"):
            try:
                mask = load_npy(path / s["deletes"])
            except (OSError, ValueError) as e:
                raise CorruptIndexError(f"{path / s['deletes']}: unreadable deletion bitmap ({e})") from None
            if mask.shape != (seg.n_docs,):
                raise CorruptIndexError(f"{path / s['deletes']}: deletion bitmap does not fit its segment")
            deleted.append(mask.astype(np.bool_))
        else:
            deleted.append(np.zeros(0, np.bool_))
    return Vocabulary(terms), opened, deleted


R = TypeVar("R", bound="OpenedIndex")


class OpenedIndex:
    """An index commit opened for reading: its manifest, vocabulary, segments (doc numbers
    ``bases[i] .. bases[i+1]-1``) and deletion bitmaps, and what follows from them. The part of
    :class:`~sparsearch.index.searcher.Index` (numba kernels) and
    :class:`~sparsearch.index.oneshot.OneShotIndex` (numpy) that does not search; each says how
    it opens a segment (:meth:`_open_segment`)."""

    def __init__(self, path: Path, manifest: dict[str, Any], vocab: Vocabulary, segments: list[Any],
                 deleted: list[np.ndarray]) -> None:
        self.path = path
        self.manifest = manifest
        self.vocab = vocab
        self.segments = segments
        self.deleted = deleted
        self.bases = np.cumsum([0] + [s.n_docs for s in segments]).astype(np.int64)
        self._n_live = int(self.bases[-1]) - int(sum(int(d.sum()) for d in deleted))
        self._doc_ids: list[str] | None = None
        self._encoder = None
        # query vocabulary -> index term ids, cached for the last query vocabulary seen
        self._lut: tuple[Vocabulary, np.ndarray] | None = None

    @classmethod
    def open(cls: type[R], path: str | os.PathLike, *, mmap: bool = True, verify: bool = True,
             segments: Sequence[int] | None = None) -> R:
        """Load an index directory; refuses wrong, old or corrupt data (:class:`CorruptIndexError`;
        :class:`NotFoundError` when there is no such directory). Every file it reads is checked
        against the size and CRC32 the manifest records (``verify=False``: sizes only).

        Safe while a writer commits: when a commit removes files of the state being opened, the
        newer state is opened instead (``manifest.load_commit``, one bounded retry loop).

        ``segments``: open only these segments (positions in the manifest, ascending); doc
        numbers then run over them alone. A shard searcher of a sharded index opens its
        group of segments this way and never touches the others' files.
        """
        path = Path(path)

        def load(manifest: dict[str, Any]) -> R:
            try:
                vocab, opened, deleted = load_segments(
                    path, manifest, lambda p: cls._open_segment(p, mmap=mmap, verify=verify), verify=verify,
                    segments=segments)
                return cls(path, manifest, vocab, opened, deleted)
            except SparsearchError:
                raise
            except (TypeError, KeyError, AttributeError, IndexError, ValueError, ArithmeticError) as e:  # junk
                raise CorruptIndexError(f"{path}: malformed index metadata ({type(e).__name__}: {e})") from None

        return load_commit(path, load)

    @classmethod
    def _open_segment(cls, path: Path, *, mmap: bool, verify: bool) -> Any:
        raise NotImplementedError

    @property
    def n_docs(self) -> int:
        """Documents stored, deleted ones included (doc numbers range over ``[0, n_docs)``)."""
        return int(self.bases[-1])

    @property
    def n_live_docs(self) -> int:
        """Documents not deleted (search clamps ``k`` to it)."""
        return self._n_live

    @property
    def n_terms(self) -> int:
        return len(self.vocab)

    @property
    def doc_ids(self) -> list[str]:
        """External id of every doc number."""
        if self._doc_ids is None:
            self._doc_ids = [i for s in self.segments for i in s.doc_ids]
        return self._doc_ids

    @property
    def encoder_config(self) -> dict[str, Any] | None:
        return self.manifest.get("encoder")

    def load_encoder(self):
        """The encoder the documents were indexed with (to encode queries the same way).

        :class:`InvalidInputError` when the index was built from vectors without an encoder;
        the encoder registry raises :class:`UnsupportedError` for an encoder this install lacks.
        """
        if self._encoder is None:
            self._encoder = load_encoder_of(self.path, self.manifest)
        return self._encoder

    # ---------------------------------------------------------------- queries
    def prepare_queries(self, queries: SparseBatch, unknown: str = "drop") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Query vectors as CSR arrays over index term ids: ``(indptr, term ids, weights)``.

        Terms are matched by string; a term the index has never seen gets id ``-1`` (no
        document can match it; kernels skip it), or, with ``unknown="error"``, raises
        :class:`InvalidInputError` naming it (use this for vectors from a fixed model vocabulary, where an
        unknown token means a mismatched vocabulary). Weights are raw float64; search snaps
        them (``kernels.snap_rows``) so that scoring is exact.
        """
        if unknown not in ("drop", "error"):
            raise InvalidInputError(f"unknown must be 'drop' or 'error', got {unknown!r}")
        idx = queries.indices.astype(np.int64)
        if not (queries.vocab is self.vocab or queries.vocab.terms is self.vocab.terms):
            idx = self._term_lut(queries.vocab, idx)[idx]
            if unknown == "error" and (idx < 0).any():
                bad = queries.vocab.terms[int(queries.indices[np.argmax(idx < 0)])]
                raise InvalidInputError(f"unknown token {bad!r}: not in the index vocabulary ({self.n_terms} terms); "
                               f"were the queries encoded with the index's encoder?")
        weights = queries.values.astype(np.float64)
        # the sum of finite float32 values cannot overflow float64: a non-finite sum means a NaN/inf weight
        if not math.isfinite(float(weights.sum())):
            raise InvalidInputError("query weights must be finite (a query vector holds NaN or inf)")
        return queries.indptr, idx, weights

    def _term_lut(self, vocab: Vocabulary, idx: np.ndarray) -> np.ndarray:
        """Index term id (``-1``: unknown) of every term of ``vocab`` that ``idx`` uses.

        Filled lazily (``-2``: not looked up yet) and kept for the last vocabulary seen, so a
        batch sliced into single queries, or a model's fixed vocabulary, is mapped once;
        vocabularies only grow, so a longer one extends the table. Concurrent callers at
        worst repeat a look-up with the same result.
        """
        cached = self._lut
        n = len(vocab.terms)
        if cached is not None and cached[0] is vocab and len(cached[1]) >= n:
            lut = cached[1]
        else:
            lut = np.full(n, -2, np.int64)
            if cached is not None and cached[0] is vocab:
                lut[: len(cached[1])] = cached[1]
            self._lut = (vocab, lut)
        missing = idx[lut[idx] == -2]
        if len(missing):
            terms, get = vocab.terms, self.vocab.get
            for t in set(missing.tolist()):
                lut[t] = get(terms[t])
        return lut

    # ---------------------------------------------------------------- explain
    def explain(self, query: SparseBatch, docnum: int) -> list[Contribution]:
        """Per-term contributions to the score of document ``docnum`` for a one-row ``query``.

        Weights are the ones search uses, so the contributions add up to the search score:
        ``doc_weight`` is the dequantized impact (impact x its term's scale) and
        ``query_weight`` the snapped query weight the segment's kernels use, divided by that scale.
        """
        if len(query) != 1:
            raise InvalidInputError(f"explain takes one query vector, got {len(query)}")
        if not 0 <= docnum < self.n_docs:
            raise InvalidInputError(f"doc number {docnum} out of range [0, {self.n_docs})")
        _, terms, weights = self.prepare_queries(query)
        s = int(np.searchsorted(self.bases, docnum, side="right") - 1)
        seg = self.segments[s]
        snapped = self._explain_weights(seg, terms, weights)
        imp = seg.impacts_of(docnum - int(self.bases[s]), np.maximum(terms, 0))
        return contributions(self.vocab, terms, snapped, imp, seg.term_scales(terms), seg.per_term)

    def _explain_weights(self, seg: Any, terms: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """The weights of ``terms`` that ``seg`` scores one query with (snapped)."""
        raise NotImplementedError
