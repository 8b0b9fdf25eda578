"""HTTP search service (FastAPI): search, fusion of several indexes, explanations, a web page.

>>> from sparsearch.service import create_app                      # doctest: +SKIP
>>> app = create_app(["indexes/scifact-bm25", "indexes/scifact-splade"])  # doctest: +SKIP

or from the shell: ``sparsearch serve indexes/scifact-bm25 indexes/scifact-splade``.

Layout: :mod:`.backend` (no FastAPI: served indexes, snapshots, :class:`SearchService`),
:mod:`.http` (request models, middleware, the error handler, routes, :func:`create_app`),
:mod:`.guard` (token, allowed hosts, rate limit, caps on work in flight); snippets and highlight
spans come from :mod:`sparsearch.highlight` (no FastAPI: the CLI's ``search`` shares it).
"""

from ..errors import UnsupportedError
from .backend import Limits, SearchResult, SearchService, WriteResult, milvus_backends
from .guard import Access

try:
    from .http import create_app, serve
except ModuleNotFoundError as _e:  # no 'service' extra: SearchService works, the HTTP app does not
    if _e.name not in ("fastapi", "pydantic", "starlette"):
        raise
    _MISSING = f"the HTTP service needs the 'service' extra (pip install 'sparsearch[service]'): {_e}"

    def create_app(*args, **kwargs):  # type: ignore[no-redef]
        raise UnsupportedError(_MISSING)

    def serve(*args, **kwargs):  # type: ignore[no-redef]
        raise UnsupportedError(_MISSING)

__all__ = ["create_app", "serve", "Access", "Limits", "milvus_backends", "SearchService", "SearchResult",
           "WriteResult"]
