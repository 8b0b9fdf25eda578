"""Text encoders producing sparse vectors, and a registry to name them on the command line.

Spec strings (CLI ``--encoder``): ``bm25``, ``bm25:robertson``, ``splade[:MODEL]``,
``splade-doc[:MODEL]`` (inference-free), ``csr[:...]``. Optional encoders register
themselves lazily so that the core install does not need torch.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from .base import SparseEncoder

# name -> "module:factory"; factories take (spec_argument: str | None, **options) and return an encoder.
_FACTORIES: dict[str, str] = {
    "bm25": "sparsearch.encoders.bm25:BM25Encoder.from_spec",
    "splade": "sparsearch.encoders.splade:SpladeEncoder.from_spec",
    "splade-doc": "sparsearch.encoders.splade:SpladeDocEncoder.from_spec",
    "csr": "sparsearch.encoders.sparse_coding:CSREncoder.from_spec",
}
# config["name"] -> "module:Class" whose from_config rebuilds the encoder.
_CLASSES: dict[str, str] = {
    "bm25": "sparsearch.encoders.bm25:BM25Encoder",
    "splade": "sparsearch.encoders.splade:SpladeEncoder",
    "splade-doc": "sparsearch.encoders.splade:SpladeDocEncoder",
    "csr": "sparsearch.encoders.sparse_coding:CSREncoder",
}


def register(name: str, factory: str, cls: str | None = None) -> None:
    """Register an encoder spec name (``factory``) and config name (``cls``) as import paths."""
    _FACTORIES[name] = factory
    if cls is not None:
        _CLASSES[name] = cls


def _resolve(path: str) -> Any:
    module, _, attr = path.partition(":")
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def available() -> list[str]:
    """Registered encoder spec names."""
    return sorted(_FACTORIES)


def get_encoder(spec: str, **options: Any) -> SparseEncoder:
    """Make an encoder from a spec string such as ``"bm25"`` or ``"splade:naver/splade-v3"``."""
    name, _, arg = spec.partition(":")
    if name not in _FACTORIES:
        raise ValueError(f"unknown encoder {name!r}; available: {', '.join(available())}")
    try:
        factory = _resolve(_FACTORIES[name])
    except ImportError as e:
        raise ImportError(f"encoder {name!r} needs optional dependencies that are missing ({e}); "
                          f"install sparsearch with the matching extra") from e
    return factory(arg or None, **options)


def load_encoder(config: dict[str, Any], directory: Path | None = None) -> SparseEncoder:
    """Rebuild the encoder an index was built with, from its manifest config and state dir."""
    name = config.get("name")
    if name not in _CLASSES:
        raise ValueError(f"index was built with unknown encoder {name!r}; available: {', '.join(sorted(_CLASSES))}")
    return _resolve(_CLASSES[name]).from_config(config, directory)


__all__ = ["SparseEncoder", "register", "get_encoder", "load_encoder", "available"]
