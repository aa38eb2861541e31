"""Settings every service reads from the environment, validated once at start-up.

Each service subclasses ``CommonSettings`` with its own fields; nothing else in the code
reads ``os.environ``. Variable names are unprefixed (``REDIS_URL``, ``API_KEY``) because
they are documented promises to users; see the settings table in README.md.
"""

from pathlib import Path
from typing import Annotated, Literal

import redis
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from shared import data_plane, keys

PLACEHOLDER_SECRETS = frozenset(
    {"", "changeme", "change-me", "change_me", "secret", "password", "apikey"}
)


class CommonSettings(BaseSettings):
    # hide_input_in_errors: a failed check would otherwise print every setting it was given,
    # API_KEY and the password in REDIS_URL included, into the start-up log.
    model_config = SettingsConfigDict(
        env_file=None, extra="ignore", frozen=True, hide_input_in_errors=True
    )

    environment: Literal["development", "test", "production"] = "development"
    redis_url: str = "redis://127.0.0.1:6379/0"
    # The data plane on a Redis Cluster instead (comma-separated host:port of some of its
    # nodes; empty = everything on REDIS_URL): catalogue, indexes, models and job records go
    # there, with hash-tagged keys (shared/keys.py). The Celery broker and result backend stay
    # on REDIS_URL, as Celery's Redis transport does not speak the cluster protocol.
    redis_cluster_nodes: Annotated[tuple[str, ...], NoDecode] = ()
    # Seconds a Redis call may block before the service reports Redis as unavailable.
    redis_timeout_seconds: float = Field(default=5.0, gt=0)
    # How long job records, Celery results and uploaded query images are kept.
    job_ttl_seconds: int = Field(default=24 * 3600, ge=60)
    query_image_ttl_seconds: int = Field(default=3600, ge=60)
    log_level: str = "INFO"
    # A task whose worker died unacknowledged is delivered again after this long. Workers
    # renew the broker's record of the tasks they run every WORKER_HEARTBEAT_SECONDS (5 s,
    # shared/runtime/worker.py), so this only has to outlast a few missed heartbeats, not the
    # longest task; short, so a search lost with its worker is redone within its deadline.
    task_visibility_timeout_seconds: int = Field(default=30, ge=15)
    # Port of a worker process's Prometheus metrics (/metrics); unset = not served.
    worker_metrics_port: int | None = Field(default=None, ge=0, le=65535)
    # Workers: an index this large also gets an HNSW graph, so a search re-ranks a few dozen
    # candidates instead of scanning every vector (shared/runtime/vector_index.py; 0 = always).
    # Below it exact search is fast enough; measured with make bench.
    approximate_index_min_vectors: int = Field(default=100_000, ge=0)
    # Workers: searches waiting in a worker's queue are embedded together, up to this many
    # in one forward pass (shared/runtime/search_batching.py); 1 = one at a time, batching off.
    search_batch_size: int = Field(default=16, ge=1, le=64)
    # Workers: how long the first search of a batch may wait for others to arrive. A lone
    # query pays it in full, so keep it a small fraction of one embedding (README.md,
    # "Searches under load").
    search_batch_wait_ms: float = Field(default=5.0, ge=0, le=1000)

    # Shards each method's index is split into, by a hash of the image id (shared/shards.py,
    # README.md, "Sharded indexes"). The gateway and every worker must be given the same:
    # the number is part of the index keys, so two numbers never mix, they miss each other.
    index_shards: int = Field(default=1, ge=1, le=1024)

    # Where the catalogue's JPEGs are kept (shared/blobs.py): the gateway writes and serves
    # them, the autoencoder trainer reads them; search and index workers need it only when an
    # upload's staged copy has expired (README.md, "Several machines").
    blob_store_dir: Path = Path("var/blobs")

    @field_validator("redis_cluster_nodes", mode="before")
    @classmethod
    def _host_ports(cls, raw: object) -> object:
        if not isinstance(raw, str):
            return raw
        nodes = tuple(part.strip() for part in raw.split(",") if part.strip())
        for node in nodes:
            host, _, port = node.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(
                    f"REDIS_CLUSTER_NODES takes host:port pairs such as 10.0.0.5:7000; got {node!r}"
                )
        return nodes

    @model_validator(mode="after")
    def _refuse_placeholder_redis_password(self) -> "CommonSettings":
        if self.environment == "production" and ":changeme@" in self.redis_url:
            raise ValueError("REDIS_URL carries a placeholder password; set a real one")
        return self


class WorkerSettings(CommonSettings):
    # The index shards this worker's searches serve (comma-separated numbers below
    # INDEX_SHARDS; empty = all). A search embeds its query once and asks the workers of the
    # other shards ({method}.search.shard-{k} queues) to search them with its vector.
    # NoDecode: pydantic-settings would read a list from the environment as JSON, not "0,1".
    shards: Annotated[tuple[int, ...], NoDecode] = ()

    @field_validator("shards", mode="before")
    @classmethod
    def _comma_separated(cls, raw: object) -> object:
        if not isinstance(raw, str):
            return raw
        try:
            return tuple(int(part) for part in raw.split(",") if part.strip())
        except ValueError:
            raise ValueError(
                f"SHARDS must be comma-separated shard numbers such as 0,2; got {raw!r}"
            ) from None

    @model_validator(mode="after")
    def _shards_exist(self) -> "WorkerSettings":
        outside = sorted({s for s in self.shards if not 0 <= s < self.index_shards})
        if outside:
            raise ValueError(
                f"SHARDS names {outside}, but INDEX_SHARDS={self.index_shards} has shards 0 "
                f"to {self.index_shards - 1}"
            )
        if len(set(self.shards)) != len(self.shards):
            raise ValueError(f"SHARDS names a shard twice: {list(self.shards)}")
        return self

    @property
    def served_shards(self) -> list[int]:
        """The shards this worker searches itself, in order (every one when SHARDS is unset)."""
        return sorted(self.shards) if self.shards else list(range(self.index_shards))


def redis_client(settings: CommonSettings) -> redis.Redis:
    """A client on the data plane (REDIS_URL, or the cluster of REDIS_CLUSTER_NODES) whose
    calls fail after REDIS_TIMEOUT_SECONDS instead of hanging.

    On a cluster it also switches this process to the cluster's key layout (hash tags,
    shared/keys.py): every process of a deployment is given the same setting."""
    if settings.redis_cluster_nodes:
        keys.use_cluster_layout()
        return data_plane.cluster_client(
            settings.redis_cluster_nodes, settings.redis_timeout_seconds
        )
    return broker_client(settings)


def broker_client(settings: CommonSettings) -> redis.Redis:
    """A client on REDIS_URL, the Celery broker and result backend (on a cluster deployment
    not the data plane): its queue lengths, unacknowledged tasks and task results."""
    return redis.Redis.from_url(
        settings.redis_url,
        socket_timeout=settings.redis_timeout_seconds,
        socket_connect_timeout=settings.redis_timeout_seconds,
        health_check_interval=30,
    )


def refuse_placeholder(name: str, value: SecretStr | None, environment: str) -> None:
    """Stop start-up when a secret is a known placeholder outside development."""
    if environment == "development" or value is None:
        return
    if value.get_secret_value().strip().lower() in PLACEHOLDER_SECRETS:
        raise ValueError(f"{name} is a placeholder ({environment} needs a real secret)")
