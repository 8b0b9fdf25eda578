"""The one search protocol every searcher implements, and its typed parameter objects.

Follows FAISS: ``search(queries, k, params=None) -> (scores, docnums)`` where ``scores`` is
float (nq, k), descending, and ``docnums`` int64 (nq, k) positions in ``searcher.doc_ids``
(``-1`` pads rows with fewer than ``k`` hits); ``params`` is the parameter object of the
searcher's kind (``None``: its defaults, or the settings saved next to the index by
``sparsearch tune --save``). ``search_run`` gives the same hits as ``{query_id: {doc_id: score}}``.

Implemented by :class:`~sparsearch.index.Index` (exact, and approximate through its saved
approximate index), :class:`~sparsearch.index.approximate.ApproximateIndex`,
:class:`~sparsearch.distributed.ShardedIndex`, :class:`~sparsearch.milvus.MilvusBackend` and
:class:`~sparsearch.encoders.dense.DenseSearcher` (dense inner product).

Parameter objects are small frozen dataclasses, tagged by ``kind``; a searcher refuses the
kinds it does not support with :class:`~sparsearch.errors.UnsupportedError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, ClassVar, Literal, Protocol, Union, runtime_checkable

import numpy as np

from .errors import InvalidInputError, UnsupportedError
from .filters import parse as parse_filter

__all__ = ["ExactParams", "ApproxParams", "AnytimeParams", "HybridParams", "FUSIONS", "SearchParams", "Searcher", "params_from_dict", "check_k",
           "MAX_K", "SEARCH_KINDS", "SEARCH_MODES", "params_for_mode", "mode_of"]

#: hard bound on the result width anywhere (the service bounds it lower); k is first clamped to
#: the documents held, so a larger k only fails on an index of more than MAX_K documents
MAX_K = 100_000
MAX_CANDIDATES = 1_000_000  # documents the candidate strategy scores exactly, per query

Unknown = Literal["drop", "error"]


@dataclass(frozen=True)
class ExactParams:
    """Exact top-k (rank-safe).

    Attributes:
        exhaustive: score every posting (the reference) instead of block-max MaxScore; same results.
        threads: worker threads for a batch (``None``: all cores; 1 query always runs on the caller).
        unknown: ``"drop"`` query terms the index lacks, or ``"error"`` on the first one (catches
            query vectors from another vocabulary).
        filter: search only the documents this expression selects (:mod:`sparsearch.filters`,
            e.g. ``'year >= 2015 and source in ["pubmed", "pmc"]'``); still rank-safe.
    """

    kind: ClassVar[str] = "exact"
    exhaustive: bool = False
    threads: int | None = None
    unknown: Unknown = "drop"
    filter: str | None = None

    def check(self) -> "ExactParams":
        _check_common(self)
        return self


@dataclass(frozen=True)
class ApproxParams:
    """Approximate top-k over the Seismic-style approximate index (knobs named as in Seismic).

    Attributes:
        query_cut: visit the posting lists of the ``query_cut`` heaviest query terms (>= 1).
        heap_factor: in (0, 1]; skip a block whose summary score is below ``heap_factor`` times the
            current k-th score (below 1 scans more blocks, compensating for pruned summaries).
        threads: as :class:`ExactParams`.
        unknown: as :class:`ExactParams`.
        filter: as :class:`ExactParams`: the filtered-out documents are skipped while the
            forward index is scored; when the filter leaves few documents (see
            ``ApproximateIndex.exact_below``) they are scored exactly instead.
        candidates: the strategy. 0 (default): Seismic's, above. N >= 1: the *candidate*
            strategy: the pruned lists of the ``query_cut`` heaviest query terms give every
            document they hold a partial score (``sum(query weight x the list's impact)``, term
            at a time), and the ``N`` best documents by partial score are scored exactly on the
            forward index (``heap_factor`` is not used). ``query_cut >=`` the query's terms,
            lists kept whole and ``N >=`` the documents give the exact top-k.
        forward_cut: Seismic's strategy only. 0 (default): a document of a scanned block is
            scored on its whole forward vector. m >= 1: on its ``m`` heaviest entries (the
            forward vectors are stored heaviest first), fewer bytes read at random per document;
            the block-skipping threshold is then the k-th best of these partial scores, and the
            ``max(rerank, k)`` documents with the best partial scores are scored on their whole
            vectors for the result. ``forward_cut >=`` the longest document is Seismic's strategy.
        rerank: the documents kept for that final scoring (``forward_cut >= 1``), at least k.
    """

    kind: ClassVar[str] = "approximate"
    query_cut: int = 10
    heap_factor: float = 0.9
    threads: int | None = None
    unknown: Unknown = "drop"
    filter: str | None = None
    candidates: int = 0
    forward_cut: int = 0
    rerank: int = 200  # read off a 200k synthetic set (recall against exact search), not a reported one

    def check(self) -> "ApproxParams":
        _check_common(self)
        if not isinstance(self.query_cut, int) or self.query_cut < 1:
            raise InvalidInputError(f"query_cut must be an integer >= 1, got {self.query_cut!r}")
        if not 0 < float(self.heap_factor) <= 1:
            raise InvalidInputError(f"heap_factor must be in (0, 1], got {self.heap_factor!r}")
        c = self.candidates
        if isinstance(c, bool) or not isinstance(c, (int, np.integer)) or c < 0:
            raise InvalidInputError(f"candidates must be an integer >= 0, got {c!r}")
        if c > MAX_CANDIDATES:
            raise InvalidInputError(f"candidates must be at most {MAX_CANDIDATES:,}, got {c:,}")
        m = self.forward_cut
        if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 0:
            raise InvalidInputError(f"forward_cut must be an integer >= 0, got {m!r}")
        if m and c:
            raise InvalidInputError("forward_cut applies to Seismic's strategy (candidates=0), got "
                                    f"forward_cut={m} with candidates={c}")
        r = self.rerank
        if isinstance(r, bool) or not isinstance(r, (int, np.integer)) or not 1 <= r <= MAX_CANDIDATES:
            raise InvalidInputError(f"rerank must be an integer in [1, {MAX_CANDIDATES:,}], got {r!r}")
        return self


@dataclass(frozen=True)
class AnytimeParams:
    """Anytime search: score-at-a-time over impact-ordered postings, stopped by a budget.

    The query's postings are processed in descending order of ``query weight x impact``
    (:mod:`sparsearch.index.kernels_anytime`); the search returns the best top-k found when its
    budget runs out. With neither budget it processes every posting: the exact result.

    Attributes:
        max_postings: stop after this many postings per query (``None``: no limit).
        budget_ms: stop scoring a query after this many milliseconds (``None``: no limit);
            checked every few hundred postings; preparing the query and selecting its top k
            (proportional to the documents touched) come on top.
        threads / unknown / filter: as :class:`ExactParams` (filtered-out documents are
            scored but never returned).
    """

    kind: ClassVar[str] = "anytime"
    max_postings: int | None = None
    budget_ms: float | None = None
    threads: int | None = None
    unknown: Unknown = "drop"
    filter: str | None = None

    def check(self) -> "AnytimeParams":
        _check_common(self)
        m = self.max_postings
        if m is not None and (isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 1):
            raise InvalidInputError(f"max_postings must be an integer >= 1 (or None), got {m!r}")
        b = self.budget_ms
        if b is not None and (isinstance(b, bool) or not isinstance(b, (int, float)) or not np.isfinite(b) or b <= 0):
            raise InvalidInputError(f"budget_ms must be a number > 0 (or None), got {b!r}")
        return self


#: fusion methods of :class:`HybridParams` (see :mod:`sparsearch.fusion`)
FUSIONS: tuple[str, ...] = ("rrf", "minmax", "zscore")


@dataclass(frozen=True)
class HybridParams:
    """Search of a hybrid index: each representation retrieves its top ``depth``, the lists are fused.

    Attributes:
        fusion: ``"rrf"`` (reciprocal rank fusion), ``"minmax"`` or ``"zscore"`` (convex combination
            of per-query normalised scores; see :func:`sparsearch.fusion.fuse_topk`).
        weights: one weight per representation, in the index's order (``None``: equal weights).
        rrf_k: the RRF rank constant.
        depth: documents each representation returns before fusion (at least ``k`` is used).
        sparse: parameters of the sparse representations (``None``: exact; an
            :class:`ApproxParams` searches their approximate indexes, an :class:`AnytimeParams`
            each within its budget).
        threads / unknown: as :class:`ExactParams`, passed to every representation.
        filter: as :class:`ExactParams`, applied to every representation before its top
            ``depth`` (give it here, not on ``sparse``).
    """

    kind: ClassVar[str] = "hybrid"
    # the label-free default (min-max over each representation's top 1000, equal weights) was
    # chosen on train/dev splits only: benchmarks/hybrid.py, results/hybrid.md
    fusion: str = "minmax"
    weights: tuple[float, ...] | None = None
    rrf_k: float = 60.0
    depth: int = 1000
    sparse: ExactParams | ApproxParams | None = None
    threads: int | None = None
    unknown: Unknown = "drop"
    filter: str | None = None

    def check(self) -> "HybridParams":
        _check_common(self)
        if self.fusion not in FUSIONS:
            raise InvalidInputError(f"unknown fusion {self.fusion!r}; use one of {', '.join(FUSIONS)}")
        if self.weights is not None:
            if not all(isinstance(w, (int, float)) and w >= 0 and np.isfinite(w) for w in self.weights):
                raise InvalidInputError(f"fusion weights must be finite numbers >= 0, got {list(self.weights)}")
            if sum(self.weights) <= 0:
                raise InvalidInputError("fusion weights sum to 0")
        if not np.isfinite(self.rrf_k) or self.rrf_k < 0:
            raise InvalidInputError(f"rrf_k must be a number >= 0, got {self.rrf_k!r}")
        if isinstance(self.depth, bool) or not isinstance(self.depth, int) or not 1 <= self.depth <= MAX_K:
            raise InvalidInputError(f"depth must be an integer in [1, {MAX_K:,}], got {self.depth!r}")
        if self.sparse is not None:
            require(self.sparse, [ExactParams, ApproxParams, AnytimeParams], "a hybrid index's sparse representations")
            self.sparse.check()
            if self.sparse.filter is not None:
                raise InvalidInputError("give a hybrid search's filter on HybridParams (filter=...), not on its "
                                        "sparse parameters")
        return self

    def member_params(self) -> "ExactParams | ApproxParams | AnytimeParams":
        """The parameters each sparse representation is searched with (threads/unknown applied;
        the filter is applied by the hybrid index as a mask)."""
        base = self.sparse or ExactParams()
        return replace(base, threads=self.threads if self.threads is not None else base.threads,
                       unknown=self.unknown, filter=None)


SearchParams = Union[ExactParams, ApproxParams, AnytimeParams, HybridParams]
SEARCH_KINDS: dict[str, type] = {"exact": ExactParams, "approximate": ApproxParams, "anytime": AnytimeParams,
                                 "hybrid": HybridParams}


#: the search modes users name (CLI ``--mode``, the service's ``mode``): ``exact`` and ``exhaustive``
#: are :class:`ExactParams` (block-max MaxScore, or every posting scored), ``approximate``
#: :class:`ApproxParams`, ``anytime`` :class:`AnytimeParams`
SEARCH_MODES: tuple[str, ...] = ("exact", "exhaustive", "approximate", "anytime")


def params_for_mode(mode: str, *, threads: int | None = None, unknown: Unknown = "drop",
                    query_cut: int | None = None, heap_factor: float | None = None,
                    saved: ApproxParams | None = None, filter: str | None = None,
                    max_postings: int | None = None, budget_ms: float | None = None,
                    candidates: int | None = None, forward_cut: int | None = None,
                    rerank: int | None = None) -> SearchParams:
    """The parameter object of a named search mode (checked).

    For ``approximate``, a knob left ``None`` takes its value from ``saved`` (the settings
    ``sparsearch tune --save`` wrote next to the index), else the :class:`ApproxParams` default;
    ``query_cut`` / ``heap_factor`` / ``candidates`` / ``forward_cut`` / ``rerank`` given with
    another mode are refused, as are ``max_postings`` / ``budget_ms`` (the budgets of
    ``anytime``) with another mode. A strategy given overrides the saved one's knob: ``candidates
    >= 1`` with ``forward_cut`` not given searches without it, and ``forward_cut >= 1`` with
    ``candidates`` not given uses Seismic's strategy.
    """
    if mode not in SEARCH_MODES:
        raise InvalidInputError(f"unknown search mode {mode!r}; use one of {', '.join(SEARCH_MODES)}")
    if mode != "anytime" and (max_postings is not None or budget_ms is not None):
        raise InvalidInputError(f"max_postings and budget_ms apply to anytime search, not {mode}")
    for name, v in (("candidates", candidates), ("forward_cut", forward_cut), ("rerank", rerank)):
        if mode != "approximate" and v is not None:
            raise InvalidInputError(f"{name} applies to approximate search, not {mode}")
    if mode == "anytime":
        if query_cut is not None or heap_factor is not None:
            raise InvalidInputError("query_cut and heap_factor apply to approximate search, not anytime")
        return AnytimeParams(max_postings=max_postings, budget_ms=budget_ms, threads=threads, unknown=unknown,
                             filter=filter).check()
    if mode != "approximate":
        if query_cut is not None or heap_factor is not None:
            raise InvalidInputError(f"query_cut and heap_factor apply to approximate search, not {mode}")
        return ExactParams(exhaustive=mode == "exhaustive", threads=threads, unknown=unknown, filter=filter).check()
    base = saved or ApproxParams()
    return ApproxParams(query_cut=base.query_cut if query_cut is None else query_cut,
                        heap_factor=base.heap_factor if heap_factor is None else heap_factor,
                        candidates=(0 if forward_cut else base.candidates) if candidates is None else candidates,
                        forward_cut=(0 if candidates else base.forward_cut) if forward_cut is None else forward_cut,
                        rerank=base.rerank if rerank is None else rerank,
                        threads=threads, unknown=unknown, filter=filter).check()


def mode_of(params: SearchParams | None) -> str:
    """The :data:`SEARCH_MODES` name of a parameter object (``None``: ``exact``)."""
    if params is None:
        return "exact"
    if isinstance(params, ExactParams):
        return "exhaustive" if params.exhaustive else "exact"
    if isinstance(params, HybridParams):
        return f"hybrid ({params.fusion}, {mode_of(params.sparse)})"
    return params.kind


def _check_common(p: Any) -> None:
    if p.threads is not None and (not isinstance(p.threads, int) or p.threads < 1):
        raise InvalidInputError(f"threads must be an integer >= 1, got {p.threads!r}")
    if p.unknown not in ("drop", "error"):
        raise InvalidInputError(f"unknown must be 'drop' or 'error', got {p.unknown!r}")
    if p.filter is not None:
        parse_filter(p.filter)  # syntax errors now, with their column (the index checks the fields)


def params_from_dict(d: dict[str, Any]) -> SearchParams:
    """Rebuild parameters from ``{"kind": ..., field: value}`` (a settings file, a request);
    unknown kinds and fields are refused with one line."""
    kind = d.get("kind", "exact")
    cls = SEARCH_KINDS.get(kind)
    if cls is None:
        raise InvalidInputError(f"unknown search kind {kind!r}; use one of {', '.join(SEARCH_KINDS)}")
    names = {f.name for f in fields(cls)}
    extra = set(d) - names - {"kind"}
    if extra:
        raise InvalidInputError(f"{kind} search has no parameter {sorted(extra)[0]!r}; "
                                f"it takes {', '.join(sorted(names))}")
    values = {k: v for k, v in d.items() if k != "kind"}
    if cls is HybridParams:
        if isinstance(values.get("sparse"), dict):
            values["sparse"] = params_from_dict(values["sparse"])
        if isinstance(values.get("weights"), list):
            values["weights"] = tuple(values["weights"])
    return cls(**values).check()


def params_to_dict(p: SearchParams) -> dict[str, Any]:
    """``{"kind": ..., field: value}``: the inverse of :func:`params_from_dict`."""
    out = {"kind": p.kind, **asdict(p)}
    if isinstance(p, HybridParams):
        out["sparse"] = None if p.sparse is None else params_to_dict(p.sparse)
        out["weights"] = None if p.weights is None else list(p.weights)
    return out


def check_k(k: Any, n_docs: int) -> int:
    """``k`` validated and clamped: an integer >= 1 (else :class:`InvalidInputError`), clamped to
    ``max(n_docs, 1)`` (pass the live documents where the searcher knows them), so that no search
    allocates more result slots than there are documents to return, whatever ``k`` asks
    (``-k 99999999999`` on a small index is fast and returns every match). A ``k`` still above
    :data:`MAX_K` after the clamp (an index that large) is refused: a run that deep is bounded."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise InvalidInputError(f"k must be a positive integer, got {k!r}")
    if k < 1:
        raise InvalidInputError(f"k must be a positive integer (at least 1), got {k}")
    clamped = min(int(k), max(int(n_docs), 1))
    if clamped > MAX_K:
        raise InvalidInputError(f"k must be at most {MAX_K:,} (the index holds {int(n_docs):,} documents), got {int(k):,}")
    return clamped


def require(params: Any, supported: Sequence[type], who: str) -> None:
    """Refuse parameter objects of kinds ``who`` does not implement."""
    if not isinstance(params, tuple(supported)):
        kinds = ", ".join(c.kind for c in supported)
        got = getattr(params, "kind", type(params).__name__)
        raise UnsupportedError(f"{who} supports {kinds} search, not {got}")


@runtime_checkable
class Searcher(Protocol):
    """What every searcher offers (see the module docstring for the conventions)."""

    @property
    def doc_ids(self) -> Sequence[str]: ...

    def search(self, queries: Any, k: int = 10, params: SearchParams | None = None
               ) -> tuple[np.ndarray, np.ndarray]: ...

    def search_run(self, queries: Any, k: int = 1000, params: SearchParams | None = None
                   ) -> dict[str, dict[str, float]]: ...
