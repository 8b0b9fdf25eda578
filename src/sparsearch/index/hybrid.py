"""Hybrid index: several representations of one collection, searched together and fused.

One directory holds complete sub-indexes of the same documents, in the same doc-number order:
sparse ones (:class:`~sparsearch.index.Index`: bm25, splade, splade-doc, csr) and dense ones
(:class:`~sparsearch.index.dense.DenseIndex`), plus one document store::

    HYBRID/
      manifest.json        commit point, "kind": "hybrid": members (name, kind, directory), the store
      rep-<name>-<id>/     one complete index per representation (its own manifest and checksums)
      docs-<id>.sqlite     the shared document store
      fusion.json          the fusion setting saved by ``sparsearch tune-fusion`` (survives commits)

A build publishes every representation and the store under fresh names, then commits the
manifest naming them (:func:`sparsearch.index.manifest.commit`): a crash at any point leaves the
previous hybrid (or none) intact, and the next commit collects the orphans. The manifest records
size + CRC32 of each representation's ``manifest.json``, which in turn seals that
representation's files, so every file is checked when it is read.

Search (:meth:`HybridIndex.search`) follows the protocol of :mod:`sparsearch.searching`: the
queries are a :class:`HybridQueries` (one encoded batch per representation, from
:meth:`HybridIndex.load_encoder`), each representation returns its top ``depth`` and the lists
are fused by :func:`sparsearch.fusion.fuse_topk` (:class:`~sparsearch.searching.HybridParams`).
Doc numbers are shared, so fusion works on arrays, with no id lookups.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from .. import docstore
from ..encoders import get_encoder
from ..encoders.dense import DenseEncoder
from ..errors import CorruptIndexError, InvalidInputError, NotFoundError, SparsearchError, UnsupportedError
from ..evaluation import to_run
from ..fusion import FusionChoice, fuse_topk, tune_fusion
from ..searching import AnytimeParams, ApproxParams, ExactParams, HybridParams, check_k, params_to_dict, require
from ..vectors import SparseBatch
from .approximate import ApproximateIndex, load_params_file
from .builder import build_index
from .dense import DENSE_FORMAT, DenseIndex
from .manifest import check_target, commit, load_commit, read_manifest
from .searcher import Contribution, Index
from .storage import Directory, file_record, read_json, seal, verify_records

__all__ = ["HybridIndex", "HybridQueries", "HybridEncoder", "build_hybrid", "open_searcher", "make_encoder",
           "member_names", "build_hybrid_from_vectors", "save_fusion", "load_fusion", "tune_index_fusion", "is_hybrid", "FUSION_FILE", "DEFAULT_FUSION"]

FUSION_FILE = "fusion.json"
FUSION_FORMAT = "sparsearch-fusion"
#: the label-free default fusion: min-max, each representation's top 1000, equal weights (chosen
#: on train/dev splits only by benchmarks/hybrid.py; see benchmarks/results/hybrid.md)
DEFAULT_FUSION = HybridParams()


def is_dense(spec_or_encoder: Any) -> bool:
    """Whether an encoder spec (``dense[:MODEL]``) or encoder makes dense vectors."""
    if isinstance(spec_or_encoder, str):
        return spec_or_encoder.partition(":")[0] == "dense"
    return isinstance(spec_or_encoder, DenseEncoder)


def make_encoder(spec: str, **options: Any) -> Any:
    """An encoder from a spec: ``dense[:MODEL]`` (:class:`DenseEncoder`) or any sparse spec of
    :func:`sparsearch.encoders.get_encoder`."""
    if is_dense(spec):
        return DenseEncoder.from_spec(spec.partition(":")[2] or None, **options)
    return get_encoder(spec, **options)


def member_names(specs: Sequence[str]) -> list[str]:
    """Representation names of encoder specs: the spec's encoder name (``splade:MODEL`` ->
    ``splade``), ``-2``, ``-3``... appended to repeats."""
    names: list[str] = []
    for spec in specs:
        base = spec.partition(":")[0]
        name, n = base, 1
        while name in names:
            n += 1
            name = f"{base}-{n}"
        names.append(name)
    return names


@dataclass
class Member:
    """One representation of a hybrid index."""

    name: str
    kind: str  # "sparse" | "dense"
    searcher: Index | DenseIndex


class HybridQueries:
    """Encoded queries of a hybrid index: one batch per representation (a
    :class:`~sparsearch.vectors.SparseBatch`, or a float (nq, d) array for dense ones), same queries
    in the same order. ``len``, slicing (``q[i:j]``) and ``ids`` as a SparseBatch."""

    def __init__(self, parts: dict[str, Any], ids: Sequence[str] | None = None) -> None:
        sizes = {len(p) for p in parts.values()}
        if len(sizes) > 1:
            raise InvalidInputError(f"the representations' query batches differ in length: {sorted(sizes)}")
        self.parts = dict(parts)
        self.ids = list(ids) if ids is not None else None
        self._n = sizes.pop() if sizes else 0

    def __len__(self) -> int:
        return self._n

    @staticmethod
    def check(queries: Any, names: Sequence[str], what: str = "hybrid index") -> "HybridQueries":
        """``queries`` if they are HybridQueries with a part for every representation in ``names``;
        else one :class:`InvalidInputError` line saying what is wrong."""
        if not isinstance(queries, HybridQueries):
            raise InvalidInputError(f"a {what} is searched with HybridQueries (load_encoder().encode_queries(texts)); "
                                    f"got {type(queries).__name__}")
        missing = [n for n in names if n not in queries.parts]
        if missing:
            raise InvalidInputError(f"the queries have no {missing[0]!r} part (the representations are "
                                    f"{', '.join(names)})")
        return queries

    def __getitem__(self, item: slice) -> "HybridQueries":
        if not isinstance(item, slice):
            raise InvalidInputError("hybrid queries are sliced with a range (q[i:j])")
        return HybridQueries({n: p[item] for n, p in self.parts.items()},
                             None if self.ids is None else self.ids[item])


class HybridEncoder:
    """Encodes query text for every representation of a hybrid index (``encoders``: name -> encoder)."""

    def __init__(self, encoders: dict[str, Any]) -> None:
        self.encoders = dict(encoders)
        self.last_seconds: dict[str, float] = {}

    def encode_queries(self, texts: Sequence[str], ids: Sequence[str] | None = None) -> HybridQueries:
        """One batch per representation; ``last_seconds`` keeps each representation's encoding time."""
        ids = list(ids) if ids is not None else [str(i) for i in range(len(texts))]
        parts, seconds = {}, {}
        for name, enc in self.encoders.items():
            t = time.perf_counter()
            parts[name] = enc.encode_queries(list(texts), ids)
            seconds[name] = time.perf_counter() - t
        self.last_seconds = seconds
        return HybridQueries(parts, ids)

    def config(self) -> dict[str, Any]:
        return {"name": "hybrid", "members": {n: e.config() for n, e in self.encoders.items()}}


class HybridIndex:
    """A hybrid index opened for search (see the module docstring). Build with :func:`build_hybrid`."""

    def __init__(self, path: Path, manifest: dict[str, Any], members: list[Member]) -> None:
        self.path = path
        self.manifest = manifest
        self.members = members
        self._encoder: HybridEncoder | None = None
        self._approx: dict[str, ApproximateIndex] = {}
        self._fusion: HybridParams | None = None

    # ------------------------------------------------------------------ open
    @classmethod
    def open(cls, path: str | os.PathLike, *, mmap: bool = True, verify: bool = True) -> "HybridIndex":
        """Open a hybrid index; every representation is opened (and checked) as a single index is."""
        path = Path(path)

        def load(manifest: dict[str, Any]) -> "HybridIndex":
            if manifest.get("kind") != "hybrid":
                raise InvalidInputError(f"{path} is not a hybrid index")
            try:
                members = manifest["members"]
                verify_records(path, manifest.get("files"), [m["dir"] for m in members], full=verify)
                opened = [Member(m["name"], m["kind"], _open_member(path / m["dir"], m["kind"], mmap, verify))
                          for m in members]
            except SparsearchError:
                raise
            except (TypeError, KeyError, ValueError) as e:
                raise CorruptIndexError(f"{path}: malformed hybrid manifest ({type(e).__name__}: {e})") from None
            n = int(manifest["n_docs"])
            for m in opened:
                if m.searcher.n_docs != n:
                    raise CorruptIndexError(f"{m.searcher.path}: representation {m.name!r} holds "
                                            f"{m.searcher.n_docs} documents, the hybrid index {n}")
            return cls(path, manifest, opened)

        return load_commit(path, load)

    # ------------------------------------------------------------- properties
    @property
    def names(self) -> list[str]:
        return [m.name for m in self.members]

    def member(self, name: str) -> Member:
        for m in self.members:
            if m.name == name:
                return m
        raise NotFoundError(f"{self.path}: no representation {name!r} (it has {', '.join(self.names)})")

    @property
    def n_docs(self) -> int:
        return int(self.manifest["n_docs"])

    @property
    def n_live_docs(self) -> int:
        return self.members[0].searcher.n_live_docs

    @property
    def doc_ids(self) -> list[str]:
        return self.members[0].searcher.doc_ids

    def docnum(self, doc_id: str) -> int:
        return self.members[0].searcher.docnum(doc_id)

    @property
    def encoder_config(self) -> dict[str, Any]:
        return {"name": "hybrid", "members": {m.name: m.searcher.encoder_config for m in self.members}}

    def load_encoder(self) -> HybridEncoder:
        """The encoders of every representation, to encode query text as the documents were."""
        if self._encoder is None:
            self._encoder = HybridEncoder({m.name: m.searcher.load_encoder() for m in self.members})
        return self._encoder

    def stats(self) -> dict[str, Any]:
        """Sizes of the whole index and of each representation (``members``)."""
        per = {m.name: m.searcher.stats() for m in self.members}
        sparse = [s for m, s in zip(self.members, per.values()) if m.kind == "sparse"]
        n_post = sum(s["n_postings"] for s in sparse)
        post_bytes = sum(s["posting_bytes"] for s in sparse)
        total = sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file())
        return {"kind": "hybrid", "n_docs": self.n_docs, "n_live_docs": self.n_live_docs,
                "representations": self.names, "n_postings": n_post, "posting_bytes": post_bytes,
                "bytes_per_posting": post_bytes / max(n_post, 1), "index_bytes": total, "n_segments": 1,
                "n_terms": sum(s.get("n_terms", 0) for s in sparse), "encoder": self.encoder_config,
                "fusion": params_to_dict(self.default_params()), "members": per}

    def default_params(self) -> HybridParams:
        """The setting saved by ``tune-fusion`` (``fusion.json``), else :data:`DEFAULT_FUSION`."""
        if self._fusion is None:
            saved = load_fusion(self.path)
            if saved is not None and saved.weights is not None and len(saved.weights) != len(self.members):
                raise CorruptIndexError(f"{self.path / FUSION_FILE}: {len(saved.weights)} weights for "
                                        f"{len(self.members)} representations; run tune-fusion again")
            self._fusion = saved if saved is not None else DEFAULT_FUSION
        return self._fusion

    # ----------------------------------------------------------------- search
    def filter_mask(self, expr: str) -> np.ndarray:
        """The documents a filter selects (:mod:`sparsearch.filters`), compiled on the first
        sparse representation (the representations share doc numbers; each sparse one stores
        the documents' metadata fields)."""
        for m in self.members:
            if m.kind == "sparse":
                return m.searcher.filter_mask(expr)
        raise UnsupportedError(f"{self.path}: filters need a sparse representation (it holds the metadata "
                               f"fields and the terms); this index has only {', '.join(self.names)}")

    def _member_search(self, m: Member, queries: Any, depth: int, params: HybridParams,
                       allowed: np.ndarray | None = None):
        if m.kind == "dense":
            return m.searcher.search(queries, depth, ExactParams(threads=params.threads), allowed=allowed)
        p = params.member_params()
        if isinstance(p, ApproxParams):
            if m.name not in self._approx:
                try:
                    self._approx[m.name] = ApproximateIndex.open(m.searcher)
                except NotFoundError:
                    raise NotFoundError(f"{self.path}: representation {m.name!r} has no approximate index; build "
                                        f"them with `sparsearch build-approx {self.path}`") from None
            return self._approx[m.name].search(queries, depth, p, allowed=allowed)
        return m.searcher.search(queries, depth, p, allowed=allowed)

    def search_detailed(self, queries: HybridQueries, k: int = 10, params: HybridParams | None = None
                        ) -> tuple[np.ndarray, np.ndarray, dict[str, tuple[np.ndarray, np.ndarray]], dict[str, float]]:
        """:meth:`search` plus each representation's own ``(scores, docnums)`` (its top ``depth``)
        and the time spent (seconds: ``{name: ..., "fusion": ...}``)."""
        params = self.resolve_params(params)
        HybridQueries.check(queries, self.names)
        allowed = None if params.filter is None else self.filter_mask(params.filter)
        n = self.n_live_docs if allowed is None else int(np.count_nonzero(allowed))  # no deletions: compacted
        k = check_k(k, n)
        depth = check_k(max(k, params.depth), n)
        results, seconds = {}, {}
        for m in self.members:
            t = time.perf_counter()
            results[m.name] = self._member_search(m, queries.parts[m.name], depth, params, allowed)
            seconds[m.name] = time.perf_counter() - t
        t = time.perf_counter()
        if len(self.members) == 1:  # nothing to fuse: the representation's own scores
            s, d = results[self.members[0].name]
            scores, docs = s[:, :k], d[:, :k]
        else:
            scores, docs = fuse_topk([results[n] for n in self.names], k, params.fusion, params.weights, params.rrf_k)
        seconds["fusion"] = time.perf_counter() - t
        return scores, docs, results, seconds

    def search(self, queries: HybridQueries, k: int = 10, params: HybridParams | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """Fused top-``k``: ``(scores float32 (nq, k'), docnums int64 (nq, k'))``; ``params``:
        :class:`HybridParams` (``None``: :meth:`default_params`), or an Exact/Approx/AnytimeParams, taken as
        the default fusion with those parameters for the sparse representations."""
        scores, docs, _, _ = self.search_detailed(queries, k, params)
        return scores, docs

    def search_run(self, queries: HybridQueries, k: int = 1000, params: HybridParams | None = None
                   ) -> dict[str, dict[str, float]]:
        return to_run(*self.search(queries, k, params), self.doc_ids, queries.ids)

    def resolve_params(self, params: Any) -> HybridParams:
        """The :class:`HybridParams` a search with ``params`` uses (checked; see :meth:`search`)."""
        if params is None:
            return self.default_params()
        if isinstance(params, (ExactParams, ApproxParams, AnytimeParams)):
            base = self.default_params()
            return replace(base, sparse=replace(params, filter=None), threads=params.threads, unknown=params.unknown,
                           filter=params.filter).check()
        require(params, [HybridParams], "a hybrid index")
        if params.weights is not None and len(params.weights) != len(self.members):
            raise InvalidInputError(f"{len(params.weights)} fusion weights for {len(self.members)} representations "
                                    f"({', '.join(self.names)})")
        return params.check()

    # ------------------------------------------------------------ explanation
    def explain(self, query: HybridQueries, docnum: int) -> list[Contribution]:
        """Term contributions of the first sparse representation (what highlighting shows);
        empty when the index has no sparse representation."""
        for m in self.members:
            if m.kind == "sparse":
                return m.searcher.explain(query.parts[m.name], docnum)
        return []

    def highlight_encoders(self) -> list[Any]:
        """The encoder whose terms :meth:`explain` reports (for snippets), as a list (maybe empty)."""
        enc = self.load_encoder()
        return [enc.encoders[m.name] for m in self.members if m.kind == "sparse"][:1]

    def __repr__(self) -> str:
        return f"HybridIndex({str(self.path)!r}, {self.n_docs:,} docs, {', '.join(self.names)})"


def _open_member(path: Path, kind: str, mmap: bool, verify: bool) -> Index | DenseIndex:
    if kind == "dense":
        return DenseIndex.open(path, mmap=mmap, verify=verify)
    if kind == "sparse":
        return Index.open(path, mmap=mmap, verify=verify)
    raise CorruptIndexError(f"{path}: unknown representation kind {kind!r}")


# ------------------------------------------------------------------- building
def build_hybrid(
    path: str | os.PathLike,
    texts: Sequence[str],
    ids: Sequence[str],
    encoders: Sequence[tuple[str, Any]],
    *,
    documents: Any = None,
    quantization: str = "uint8",
    dense_quantization: str = "float32",
    overwrite: bool = True,
    extra: dict[str, Any] | None = None,
    log: Any = None,
    metadata: Any = None,
) -> HybridIndex:
    """Encode ``texts`` with every encoder and commit one hybrid index at ``path``.

    Args:
        texts / ids: the documents' text (what encoders see) and ids, in doc-number order.
        encoders: ``(name, encoder)`` per representation: a sparse encoder (fitted here on
            ``texts``) or a :class:`DenseEncoder` (see :func:`make_encoder`, :func:`member_names`).
        documents: ``(id, title, text)`` rows stored once for all representations.
        quantization / dense_quantization: storage of sparse impacts (``uint8``/``float32``) and
            of dense vectors (``float32``/``float16``/``int8``).
        overwrite: replace an index at ``path`` atomically (else :class:`ConflictError`).
        log: ``callable(str)`` for progress lines (e.g. ``print``).
        metadata: the documents' fields (as ``build_index``; default: those ``documents``
            carry), stored with every sparse representation (filters compile on the first).
    """
    if len(texts) != len(ids):
        raise InvalidInputError(f"{len(texts)} texts for {len(ids)} ids")
    fields = metadata if metadata is not None else documents if getattr(documents, "metadata", None) is not None else None

    def member(name: str, enc: Any) -> tuple[str, str, Any]:
        kind = "dense" if is_dense(enc) else "sparse"

        def fill(tmp: Path) -> None:
            if log:
                log(f"encoding {len(texts):,} documents with {name} ...")
            _build_member(tmp, enc, kind, texts, ids, quantization, dense_quantization, fields)

        return name, kind, fill

    return _commit_hybrid(path, ids, [member(n, e) for n, e in encoders], documents=documents, overwrite=overwrite,
                          extra=extra)


def build_hybrid_from_vectors(
    path: str | os.PathLike,
    ids: Sequence[str],
    parts: Sequence[tuple[str, SparseBatch | np.ndarray]],
    *,
    documents: Any = None,
    quantization: str = "uint8",
    dense_quantization: str = "float32",
    overwrite: bool = True,
    extra: dict[str, Any] | None = None,
    metadata: Any = None,
) -> HybridIndex:
    """A hybrid index of ready vectors: ``(name, vectors)`` per representation, a
    :class:`~sparsearch.vectors.SparseBatch` (its ids must equal ``ids``) or a float (n, d) dense
    array, rows in the order of ``ids``. Queries are then given as :class:`HybridQueries`.
    ``metadata``: the documents' fields (as ``build_index``), stored with each sparse representation."""

    def member(name: str, vec: Any) -> tuple[str, str, Any]:
        if isinstance(vec, SparseBatch):
            if list(vec.ids or []) != list(ids):
                raise InvalidInputError(f"representation {name!r}: its vectors' ids differ from the index's ids")
            return name, "sparse", lambda tmp: build_index(vec, tmp, quantization=quantization, overwrite=False,
                                                           metadata=metadata)
        return name, "dense", lambda tmp: DenseIndex.build(np.asarray(vec), ids, tmp,
                                                           quantization=dense_quantization, overwrite=False)

    return _commit_hybrid(path, ids, [member(n, v) for n, v in parts], documents=documents, overwrite=overwrite,
                          extra=extra)


def _commit_hybrid(path: str | os.PathLike, ids: Sequence[str], members: Sequence[tuple[str, str, Any]], *,
                   documents: Any, overwrite: bool, extra: dict[str, Any] | None) -> HybridIndex:
    """Publish every representation (``(name, kind, fill(tmp))``) and the store, then commit."""
    if not members:
        raise InvalidInputError("a hybrid index needs at least one representation")
    names = [n for n, _, _ in members]
    if len(set(names)) != len(names):
        raise InvalidInputError(f"representation names repeat: {names}")
    bad = [n for n in names if not n or not all(c.isalnum() or c in "-_" for c in n)]
    if bad:
        raise InvalidInputError(f"representation name {bad[0]!r}: use letters, digits, '-' and '_'")
    path = Path(path)
    t0 = time.perf_counter()
    d = Directory(path)
    with d.lock():
        old = check_target(d, overwrite)
        entries, files, timings = [], {}, {}
        for name, kind, fill in members:
            t = time.perf_counter()
            member_dir = f"rep-{name}-{uuid.uuid4().hex[:12]}"
            d.publish(member_dir, fill)
            entries.append({"name": name, "kind": kind, "dir": member_dir})
            files[f"{member_dir}/manifest.json"] = file_record(d / member_dir / "manifest.json")
            timings[name] = time.perf_counter() - t
        manifest: dict[str, Any] = {
            "kind": "hybrid", "generation": old["generation"] if old else 0, "segments": [], "members": entries,
            "n_docs": len(ids), "files": files, "encode_seconds": timings, **(extra or {}),
        }
        if documents is not None:
            manifest["docstore"] = docstore.write_docstore(d.path, documents, ids=list(ids))
        manifest["build_seconds"] = time.perf_counter() - t0
        commit(d, manifest)
    return HybridIndex.open(path)


def _build_member(tmp: Path, enc: Any, kind: str, texts: Sequence[str], ids: Sequence[str], quantization: str,
                  dense_quantization: str, metadata: Any = None) -> None:
    if kind == "dense":
        emb = enc.encode_documents(list(texts), progress=True)
        DenseIndex.build(emb, ids, tmp, encoder=enc, quantization=dense_quantization, overwrite=False)
        return
    enc.fit(texts)
    batch = enc.encode_documents(texts, ids)
    build_index(batch, tmp, quantization=quantization, encoder=enc, overwrite=False, metadata=metadata)


# --------------------------------------------------------------------- opening
def open_searcher(path: str | os.PathLike) -> Index | HybridIndex | DenseIndex:
    """Open whatever index lives at ``path``: a single sparse :class:`Index`, a
    :class:`HybridIndex` or a stand-alone :class:`DenseIndex`."""
    path = Path(path)
    if not path.is_dir():
        raise NotFoundError(f"{path}: no such index directory")
    raw = read_json(path / "manifest.json", "index manifest") if (path / "manifest.json").exists() else None
    if isinstance(raw, dict) and raw.get("format") == DENSE_FORMAT:
        return DenseIndex.open(path)
    if isinstance(raw, dict) and raw.get("kind") == "hybrid":
        return HybridIndex.open(path)
    return Index.open(path)


def is_hybrid(path: str | os.PathLike) -> bool:
    """Whether ``path`` holds a hybrid index (reads its manifest)."""
    try:
        return read_manifest(path).get("kind") == "hybrid"
    except SparsearchError:
        return False


# --------------------------------------------------------------- fusion tuning
def tune_index_fusion(index: HybridIndex, queries: HybridQueries, qrels: dict[str, dict[str, int]], *,
                      depth: int | None = None, methods: Sequence[str] = ("rrf", "minmax", "zscore"),
                      step: float = 0.1, rrf_ks: Sequence[float] = (60.0,), k: int = 10, metric: str = "nDCG@10"
                      ) -> tuple[HybridParams, FusionChoice]:
    """Fit the fusion of ``index`` on judged TRAIN/DEV ``queries`` (their ``qrels``): each
    representation is searched once (top ``depth``), then every setting of the grid is fused and
    scored (:func:`sparsearch.fusion.tune_fusion`). Returns the chosen :class:`HybridParams` (to
    pass to :func:`save_fusion`) and the whole grid."""
    base = index.default_params()
    params = replace(base, depth=depth if depth is not None else base.depth).check()
    _, _, lists, _ = index.search_detailed(queries, k, params)
    choice = tune_fusion([lists[n] for n in index.names], index.doc_ids, queries.ids or [], qrels, methods=methods,
                         step=step, rrf_ks=rrf_ks, k=k, metric=metric)
    return replace(params, fusion=choice.fusion, weights=choice.weights, rrf_k=choice.rrf_k).check(), choice


# --------------------------------------------------------------- saved fusion
def save_fusion(path: str | os.PathLike, params: HybridParams, report: dict[str, Any] | None = None) -> None:
    """Make ``params`` the default fusion of the hybrid index at ``path`` (``fusion.json``, sealed;
    kept across commits). ``report``: how it was chosen (split, metric, grid), stored with it."""
    params = params.check()
    doc = seal({"format": FUSION_FORMAT, "version": 1, "params": params_to_dict(params), "report": report or {}})
    d = Directory(path)
    with d.lock():
        d.write_json(FUSION_FILE, doc)


def load_fusion(path: str | os.PathLike) -> HybridParams | None:
    """The fusion saved by :func:`save_fusion`, or ``None``; a corrupt file is a CorruptIndexError."""
    return load_params_file(path, FUSION_FILE, FUSION_FORMAT, (1,), "params", HybridParams, what="fusion setting")
