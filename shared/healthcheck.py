"""Container healthcheck for workers: ``python -m shared.healthcheck worker``.

Healthy when Redis answers and this host's worker has sent a heartbeat recently, which it
does only after its model has loaded (see shared/runtime/worker.py).
"""

import socket
import sys
import time

from shared import keys, names
from shared.data_plane import UNAVAILABLE
from shared.settings import CommonSettings, redis_client


def worker_is_healthy(settings: CommonSettings) -> bool:
    client = redis_client(settings)  # the heartbeats are on the data plane
    host = socket.gethostname()
    cutoff = time.time() - keys.WORKER_STALE_SECONDS
    for queue in names.all_queues(settings.index_shards):
        for worker in client.zrangebyscore(keys.workers(queue), cutoff, "+inf"):
            if worker.decode().endswith(f"@{host}"):
                return True
    return False


if __name__ == "__main__":
    try:
        healthy = worker_is_healthy(CommonSettings())
    except UNAVAILABLE as err:
        print(f"unhealthy: Redis unreachable ({err})")
        sys.exit(1)
    print("healthy" if healthy else "unhealthy: no recent heartbeat from this host")
    sys.exit(0 if healthy else 1)
