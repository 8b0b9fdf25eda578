"""sparsearch: sparse representations for retrieval, from encoding to serving."""

from .vectors import FormatError, SparseBatch, Vocabulary

__version__ = "0.1.0"
__all__ = ["SparseBatch", "Vocabulary", "FormatError", "__version__"]
