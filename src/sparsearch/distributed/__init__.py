"""Scale-out with Ray: sharded encoding and index building, and sharded search.

* :func:`build_index_ray`: shards a corpus (``shard_size`` documents each, in corpus order),
  fits corpus statistics globally, encodes shards on Ray workers and writes one segment per
  shard with one global quantization scale: the same index for 1 or N workers
  (``sparsearch index DATA --out DIR --ray``).
* :class:`ShardedIndex`: fans a query batch out to shard searchers (in process, child
  processes, or Ray actors) and merges their top-k exactly: results equal those of one index
  (``sparsearch search DIR --shards N --ray``).

Ray is optional (``pip install 'sparsearch[distributed]'``); it is imported only when a Ray
build or Ray searchers are asked for.
"""

from ._ray import ray_session, require_ray
from .build import DEFAULT_SHARD_SIZE, ShardWorker, build_index_ray, plan_shards
from .sharded import BACKENDS, ShardedIndex, ShardSearcher, group_segments

__all__ = ["ray_session", "require_ray", "build_index_ray", "plan_shards", "ShardWorker",
           "DEFAULT_SHARD_SIZE", "ShardedIndex", "ShardSearcher", "group_segments", "BACKENDS"]
