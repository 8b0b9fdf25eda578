"""HTTP search service (FastAPI): search, fusion of several indexes, explanations, a web page.

>>> from sparsearch.service import create_app                      # doctest: +SKIP
>>> app = create_app(["indexes/scifact-bm25", "indexes/scifact-splade"])  # doctest: +SKIP

or from the shell: ``sparsearch serve indexes/scifact-bm25 indexes/scifact-splade``.
"""

from .app import Limits, create_app, serve

__all__ = ["create_app", "serve", "Limits"]
