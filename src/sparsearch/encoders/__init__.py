"""Text encoders producing sparse vectors, and a registry to name them on the command line.

Spec strings (CLI ``--encoder``): ``bm25``, ``bm25:robertson``, ``splade[:MODEL]``,
``splade-doc[:MODEL]`` (inference-free), ``splade-idf[:MODEL]`` (SPLADE queries plus corpus
IDF), ``csr[:...]``. Optional encoders register themselves lazily so that the core install
does not need torch.

* :func:`get_encoder`: a new encoder from a spec string.
* :func:`load_encoder`: rebuild an encoder from its ``config()`` and saved state directory;
  :func:`load_encoder_of`: the encoder recorded in an index manifest (every searcher that
  encodes query text uses it).
* :func:`pack_state` / :func:`unpack_state`: an encoder's saved state as ``{relative path:
  bytes}``, to ship it to Ray workers or store it in a Milvus collection.

Adding an encoder: subclass :class:`~sparsearch.encoders.base.SparseEncoder` and
:func:`register` its spec and config names (or add them to the tables below).
"""

from __future__ import annotations

import importlib
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import CorruptIndexError, InvalidInputError, MissingExtraError, SparsearchError
from .base import SparseEncoder

# name -> "module:factory"; factories take (spec_argument: str | None, **options) and return an encoder.
_FACTORIES: dict[str, str] = {
    "bm25": "sparsearch.encoders.bm25:BM25Encoder.from_spec",
    "splade": "sparsearch.encoders.splade:SpladeEncoder.from_spec",
    "splade-doc": "sparsearch.encoders.splade:SpladeDocEncoder.from_spec",
    "splade-idf": "sparsearch.encoders.splade:SpladeIdfEncoder.from_spec",
    "csr": "sparsearch.encoders.sparse_coding:CSREncoder.from_spec",
}
# config["name"] -> "module:Class" whose from_config rebuilds the encoder.
_CLASSES: dict[str, str] = {
    "bm25": "sparsearch.encoders.bm25:BM25Encoder",
    "splade": "sparsearch.encoders.splade:SpladeEncoder",
    "splade-doc": "sparsearch.encoders.splade:SpladeDocEncoder",
    "splade-idf": "sparsearch.encoders.splade:SpladeIdfEncoder",
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
        raise InvalidInputError(f"unknown encoder {name!r}; available: {', '.join(available())}")
    return _import(name, _FACTORIES[name])(arg or None, **options)


def _import(name: str, path: str) -> Any:
    try:
        return _resolve(path)
    except ImportError as e:
        raise MissingExtraError(f"encoder {name!r} needs optional dependencies that are missing ({e}); "
                               f"install sparsearch with the matching extra") from e


def load_encoder(config: Mapping[str, Any], directory: Path | None = None) -> SparseEncoder:
    """Rebuild the encoder an index was built with, from its manifest config and state dir."""
    name = config.get("name")
    if not isinstance(name, str) or name not in _CLASSES:
        raise InvalidInputError(f"index was built with unknown encoder {name!r}; "
                                f"available: {', '.join(sorted(_CLASSES))}")
    cls = _import(str(name), _CLASSES[str(name)])
    try:
        return cls.from_config(dict(config), directory)
    except (SparsearchError, ImportError):
        raise
    except (OSError, ValueError, KeyError, TypeError, ArithmeticError) as e:  # unreadable, non-UTF-8, malformed
        raise CorruptIndexError(f"{directory or 'the manifest'}: corrupt or unreadable {name} encoder state "
                                f"({type(e).__name__}: {e})") from None


def load_encoder_of(path: str | Path, manifest: Mapping[str, Any]) -> SparseEncoder:
    """The encoder recorded in the manifest of the index at ``path`` (``manifest["encoder"]``,
    its state in ``path / manifest["encoder_state"]``), to encode queries as the documents were.

    Raises :class:`~sparsearch.errors.InvalidInputError` when the index was built from ready
    vectors (no encoder): its queries must be given as vectors too.
    """
    config = manifest.get("encoder")
    if not config:
        raise InvalidInputError(f"{path}: index has no encoder; pass query vectors instead of text")
    state = manifest.get("encoder_state")
    return load_encoder(config, Path(path) / state if state else None)


def pack_state(source: SparseEncoder | str | Path | None) -> dict[str, bytes]:
    """An encoder's saved state as ``{relative path: bytes}`` (empty when there is none).

    ``source``: a fitted encoder (its :meth:`~SparseEncoder.save_state` is written to a
    temporary directory and read back) or a state directory of an index.
    """
    if source is None:
        return {}
    if isinstance(source, (str, Path)):
        root = Path(source)
        return {str(f.relative_to(root)): f.read_bytes() for f in sorted(root.rglob("*")) if f.is_file()}
    with tempfile.TemporaryDirectory(prefix="sparsearch-enc-") as d:
        source.save_state(Path(d))
        return pack_state(d)


def unpack_state(files: Mapping[str, bytes], directory: str | Path) -> Path | None:
    """Write :func:`pack_state` output under ``directory``; returns it, or ``None`` when
    ``files`` is empty (an encoder with no saved state: pass ``None`` to :func:`load_encoder`)."""
    if not files:
        return None
    root = Path(directory)
    for rel, data in files.items():
        p = root / rel
        if root.resolve() not in p.resolve().parents:
            raise InvalidInputError(f"encoder state file {rel!r} points outside its directory")
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return root


__all__ = ["SparseEncoder", "register", "get_encoder", "load_encoder", "load_encoder_of", "pack_state",
           "unpack_state", "available"]
