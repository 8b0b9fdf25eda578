"""One error tree for everything sparsearch raises on purpose.

Every error a user can cause or meet (a malformed file, a corrupt index, an unknown id, a
feature the install or the backend lacks) is a :class:`SparsearchError`; the CLI catches that
base once and prints one line, and the HTTP service maps each subclass to one status code
(``service.http``). Anything else that escapes is a bug.

The subclasses also derive from the builtin that callers caught before the tree existed
(``ValueError``, ``LookupError``, ...), so ``except ValueError`` around a bad-input call keeps
working.
"""

from __future__ import annotations

__all__ = ["SparsearchError", "InvalidInputError", "CorruptIndexError", "NotFoundError", "UnsupportedError",
           "ConflictError", "BackendError", "MissingExtraError",
           "MissingFileError", "StorageError"]


class SparsearchError(Exception):
    """Base of every error sparsearch raises on purpose; ``str(e)`` is one line for the user."""

    def __str__(self) -> str:
        # KeyError-style subclasses would otherwise repr() their message (quotes around it)
        return str(self.args[0]) if len(self.args) == 1 else super().__str__()


class InvalidInputError(SparsearchError, ValueError):
    """Bad input: a malformed file (naming file and line), an out-of-range parameter, a bad query."""


class CorruptIndexError(SparsearchError, RuntimeError):
    """An index on disk is missing files, corrupt (size or checksum), or of an unsupported version."""


class NotFoundError(SparsearchError, LookupError):
    """A named thing does not exist: document id, index directory, approximate index, collection."""


class ConflictError(SparsearchError, FileExistsError):
    """The operation would clobber something that exists (an index, a collection, a live id)."""


class UnsupportedError(SparsearchError, NotImplementedError):
    """The operation is not available here: a missing optional extra, or a backend without the feature."""


class BackendError(SparsearchError, RuntimeError):
    """An external system the engine talks to (Milvus, Ray) failed or cannot be reached."""


class MissingExtraError(UnsupportedError, ImportError):
    """An optional dependency is not installed; the message names the extra that installs it.
    Also an ``ImportError``, as callers that probe for optional features expect."""


class MissingFileError(NotFoundError, FileNotFoundError):
    """A file or folder the user named does not exist (a collection, a query file); also a
    ``FileNotFoundError``."""


class StorageError(SparsearchError, OSError):
    """The filesystem refused a write (or a read) of an index: a read-only directory, no
    permission, a full disk; the message names the file and the reason. Also an ``OSError``."""
