"""Ray as an optional dependency: a clear import error, and one session helper for every caller."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from ..errors import MissingExtraError

__all__ = ["require_ray", "ray_session", "LOCAL_ADDRESSES"]

#: addresses that mean "start a local Ray instance on this machine"
LOCAL_ADDRESSES = (None, "", "local")


def require_ray() -> Any:
    """The ``ray`` module, or :class:`~sparsearch.errors.MissingExtraError` (an ``ImportError``)
    naming the extra that installs it."""
    try:
        import ray
    except ImportError as e:
        raise MissingExtraError("Ray is not installed: distributed indexing and Ray shard searchers need the "
                          "'distributed' extra (pip install 'sparsearch[distributed]')") from e
    return ray


@contextlib.contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None) -> Iterator[Any]:
    """Ray, initialised for the duration of the block; yields the ``ray`` module.

    Args:
        address: ``None``, ``""`` or ``"local"``: start a local instance (shut down at the end);
            ``"auto"``: join the cluster this machine belongs to (``ray start --head`` / ``--address``);
            ``"ray://HOST:10001"``: a remote cluster through Ray Client; ``"HOST:6379"``: a cluster's
            GCS address. If Ray is already initialised (by the caller, or a test fixture) it is
            used as it is and left running.
        num_cpus: CPUs of a local instance (``None``: all cores); ignored when joining a cluster.
    """
    ray = require_ray()
    if ray.is_initialized():
        yield ray
        return
    if address in LOCAL_ADDRESSES:
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    else:
        ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
    try:
        yield ray
    finally:
        ray.shutdown()
