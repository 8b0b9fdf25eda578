"""The encoder contract: text in, :class:`~sparsearch.vectors.SparseBatch` out.

Encoders know nothing of indexes. An index stores ``encoder.config()`` in its manifest and
calls ``encoder.save_state(dir)`` so that ``load_encoder(config, dir)`` can later rebuild the
*query* side of the same encoder (BM25 analyzer settings, SPLADE model id, IDF table, ...).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..vectors import SparseBatch


class SparseEncoder(ABC):
    """Base class of every text -> sparse vector encoder."""

    #: registry name written into index manifests (``config()["name"]``)
    name: str = ""

    def fit(self, texts: Sequence[str]) -> "SparseEncoder":
        """Learn corpus statistics (BM25 IDF, inference-free IDF); default: nothing to learn."""
        return self

    def partial_statistics(self, texts: Sequence[str]) -> Any:
        """Corpus statistics of one part of a corpus, for :meth:`fit_statistics` to merge.

        Encoders whose ``fit`` only counts (document frequencies, lengths) implement this pair
        so that a corpus can be fitted shard by shard in parallel (``sparsearch.distributed``);
        the default (``None``) means there is nothing mergeable to compute.
        """
        return None

    def fit_statistics(self, parts: Sequence[Any]) -> "SparseEncoder":
        """Fit from the :meth:`partial_statistics` of consecutive parts of a corpus, in corpus
        order; the result must equal ``fit`` on the concatenated texts."""
        return self

    def statistics(self) -> Any:
        """The fitted corpus statistics as one :meth:`partial_statistics` part (``None``: none,
        or not fitted yet)."""
        return None

    def update_statistics(self, texts: Sequence[str]) -> bool:
        """Grow the fitted statistics with new documents ``texts`` (an index update): the
        result equals ``fit`` on the old corpus followed by ``texts``, so new terms join the
        vocabulary with their document frequencies and ``N`` / average length follow.

        Returns whether anything changed (the index then saves the new state in the same
        commit as the documents). Encoders without corpus statistics return ``False``.
        """
        current = self.statistics()
        if current is None:
            return False
        self.fit_statistics([current, self.partial_statistics(texts)])
        return True

    @classmethod
    def mergeable_fit(cls) -> bool:
        """True when ``fit`` is exactly ``fit_statistics([partial_statistics(texts)])``."""
        return cls.partial_statistics is not SparseEncoder.partial_statistics

    @abstractmethod
    def encode_documents(self, texts: Sequence[str], ids: Sequence[str] | None = None) -> SparseBatch:
        """Encode ``n`` documents into ``n`` sparse vectors over ``self.vocab``."""

    @abstractmethod
    def encode_queries(self, texts: Sequence[str], ids: Sequence[str] | None = None) -> SparseBatch:
        """Encode ``n`` queries into ``n`` sparse vectors over the same vocabulary as documents."""

    @abstractmethod
    def config(self) -> dict[str, Any]:
        """JSON-serialisable settings; must contain ``"name"``."""

    def save_state(self, directory: Path) -> None:
        """Write fitted state that ``config()`` cannot hold (e.g. an IDF array) into ``directory``."""

    @classmethod
    def from_config(cls, config: dict[str, Any], directory: Path | None = None) -> "SparseEncoder":
        """Rebuild an encoder from ``config()`` and the state saved in ``directory``."""
        raise NotImplementedError(f"{cls.__name__} cannot be rebuilt from a config")
