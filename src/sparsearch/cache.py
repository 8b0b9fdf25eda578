"""On-disk cache for expensive encodings (SPLADE vectors, dense embeddings).

Entries are keyed by a hash of everything that determines the result: model identity,
encoder settings and the exact input texts. Writes go to a temporary file that is renamed
into place, so an interrupted run never leaves a half-written entry behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = ["cache_dir", "texts_hash", "cache_key", "cached"]


def cache_dir() -> Path:
    """``$SPARSEARCH_CACHE`` or ``~/.cache/sparsearch``; created on first use."""
    d = Path(os.environ.get("SPARSEARCH_CACHE", Path.home() / ".cache" / "sparsearch"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def texts_hash(texts: Iterable[str]) -> str:
    """SHA-256 over the texts, order-sensitive (a changed or reordered corpus misses the cache)."""
    h = hashlib.sha256()
    for t in texts:
        b = t.encode("utf-8")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()


def cache_key(**parts: Any) -> str:
    """Stable hex key from JSON-serialisable parts (model id, settings, corpus hash ...)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


def cached(
    key: str,
    compute: Callable[[], T],
    save: Callable[[T, Path], None],
    load: Callable[[Path], T],
    *,
    suffix: str = ".npz",
    enabled: bool = True,
) -> T:
    """Return ``load(path)`` if the entry exists, else ``compute()``, store it atomically, return it.

    Set ``SPARSEARCH_NO_CACHE=1`` (or ``enabled=False``) to bypass the cache.
    """
    if not enabled or os.environ.get("SPARSEARCH_NO_CACHE") == "1":
        return compute()
    path = cache_dir() / f"{key}{suffix}"
    if path.exists():
        try:
            return load(path)
        except Exception:  # a corrupt entry is recomputed, never trusted
            path.unlink(missing_ok=True)
    value = compute()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=suffix)
    os.close(fd)
    try:
        save(value, Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return value
