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
