"""What differs between the data plane on one Redis and on a Redis Cluster, in one place.

On a cluster (REDIS_CLUSTER_NODES) a command, transaction or Lua script may only touch keys
of one hash slot; shared/keys.py tags the keys that change together so that they share one.
A few things still need saying apart, and the stores call these helpers for them:

- reading many keys of different slots at once (``get_many``): one MGET per slot;
- a Lua script queued in a pipeline or transaction (``queue_script``): redis-py's cluster
  pipeline refuses EVALSHA, and a node that restarted has lost its script cache anyway, so
  the script's text goes with it (EVAL; a few hundred bytes);
- a multi-key command of one slot queued in a pipeline (``queue_in_one_slot``), which
  redis-py's cluster pipeline refuses by name.

Outside pipelines, scripts are called as usual: redis-py loads them on every master when
one answers NOSCRIPT.
"""

from collections.abc import Sequence

import redis
from redis.backoff import ExponentialBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.commands.core import Script
from redis.retry import Retry

# Raised by redis-py's cluster client where the single-server one raises redis.RedisError
# (a slot no master serves, every node unreachable): both mean "Redis is unavailable".
UNAVAILABLE = (redis.RedisError, redis.exceptions.RedisClusterException)


def cluster_client(nodes: Sequence[str], timeout_seconds: float) -> RedisCluster:
    """A client on the cluster that ``nodes`` (host:port) belong to; it finds the rest."""
    startup = [ClusterNode(host, int(port)) for host, _, port in (n.rpartition(":") for n in nodes)]
    return RedisCluster(
        startup_nodes=startup,
        socket_timeout=timeout_seconds,
        socket_connect_timeout=timeout_seconds,
        # A master that is down makes every command to its slots fail: retry briefly (a
        # moved slot, a node restarting), then say so, so the API answers 503 in time.
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 2),
    )


def is_cluster(client: object) -> bool:
    return isinstance(client, RedisCluster)


def get_many(client: redis.Redis | RedisCluster, key_names: list[str]) -> list[bytes | None]:
    """GET of each key, in order: one MGET, or on a cluster one per slot (not atomic)."""
    if not key_names:
        return []
    if is_cluster(client):
        return client.mget_nonatomic(key_names)
    return client.mget(key_names)


def queue_script(script: Script, pipe, script_keys: list[str], args: list) -> None:
    """Queue ``script`` on ``pipe`` (a pipeline or transaction of either client)."""
    if is_cluster(pipe):
        pipe.execute_command("EVAL", script.script, len(script_keys), *script_keys, *args)
    else:
        script(keys=script_keys, args=args, client=pipe)


def queue_in_one_slot(pipe, command: str, key_names: list[str]) -> None:
    """Queue a multi-key command (MGET, SINTER) on ``pipe``. redis-py's cluster pipelines
    refuse these by name, as the keys may be in many slots; here they share one."""
    pipe.execute_command(command, *key_names)
