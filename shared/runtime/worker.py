"""What both worker services do the same way: search, embed batches, heartbeats, task wiring.

A worker service provides a ``MethodService`` subclass saying which embedder answers
searches and which embedders indexing must fill (the autoencoder has none until trained,
and two while a new model version is being built). Tasks stay thin: they unpack arguments
and call the plain methods here, which the tests call too.
"""

import dataclasses
import logging
import os
import socket
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import redis
from celery import Celery, signals
from celery.exceptions import SoftTimeLimitExceeded

from shared import keys, names, staged_images
from shared.blobs import BlobMissing, open_blob_store
from shared.catalogue import Catalogue
from shared.contracts import (
    EmbedBatchTask,
    Hit,
    IndexCounts,
    IndexResult,
    SearchResult,
    SearchShardTask,
    SearchTask,
    SearchTimings,
    ShardFanOut,
    ShardSearched,
    ShardSearchResult,
    ShardTask,
)
from shared.data_plane import UNAVAILABLE, get_many
from shared.index_store import IndexStore
from shared.jobs import shard_task_id
from shared.runtime import worker_metrics
from shared.runtime.search_batching import QueryBatcher
from shared.runtime.vector_index import Hit as IndexHit
from shared.runtime.vector_index import (
    IndexReplica,
    Metric,
    VectorIndex,
    load_whole_index,
    vector_from_bytes,
    vector_to_bytes,
)
from shared.settings import WorkerSettings, broker_client, redis_client
from shared.shards import merge_top_k

log = logging.getLogger(__name__)


class Embedder(Protocol):
    method: str
    version: str
    input_size: int
    dim: int
    metric: Metric

    def embed(self, images: np.ndarray) -> np.ndarray: ...


@dataclasses.dataclass(frozen=True)
class PreparedQuery:
    """A query embedded together with others, before its search task runs."""

    version: str
    vector: np.ndarray
    batch: int  # queries embedded in that pass
    seconds: float  # the pass, reading and decoding their images included


class QueryImageMissing(LookupError):
    """The uploaded query image (or its stored vector) expired or was never stored;
    retrying cannot help."""


class ModelVersionUnavailable(LookupError):
    """A shard search names a model version this worker has no model of; retrying cannot
    help (the shard's workers run another model than the worker that embedded the query)."""


class ImagesUnreachable(LookupError):
    """An index task's images are neither staged any more nor in a blob store this worker
    reaches; retrying cannot help, uploading them again does."""


ImageReader = Callable[[list[str]], list[tuple[bytes, str] | None]]


class MethodService(ABC):
    method: names.Method

    def __init__(self, settings: WorkerSettings, *, batch_size: int) -> None:
        self.settings = settings
        self.batch_size = batch_size
        self.redis = redis_client(settings)
        # The Celery broker's Redis: the data plane's own, unless that is a cluster.
        self.broker = broker_client(settings) if settings.redis_cluster_nodes else self.redis
        self.catalogue = Catalogue(self.redis, open_blob_store(settings))
        self.store = IndexStore(self.redis, settings.index_shards)
        self.worker_name = socket.gethostname()  # replaced by the Celery node name at start
        # What sends the shard searches of the shards this worker does not serve (set by
        # register_method_tasks; only needed when SHARDS names some of them).
        self.celery_app: Celery | None = None
        self._replicas: dict[tuple[str, int], IndexReplica] = {}
        self._replicas_lock = threading.Lock()

    # What each method decides
    @abstractmethod
    def load(self) -> None:
        """Load models once per process, after it starts; warm them up."""

    @abstractmethod
    def search_embedder(self) -> Embedder | None:
        """The embedder of the active model, or None when the method has no model yet."""

    @abstractmethod
    def index_embedders(self) -> list[Embedder]:
        """Every model whose index new images must enter (active and being built)."""

    def not_ready_reason(self) -> dict[str, str]:
        return {"reason": "not_trained", "message": f"the {self.method} method has no model yet"}

    def embedder_of(self, version: str) -> Embedder | None:
        """The embedder of a model version this worker has (a shard search names one)."""
        for embedder in [self.search_embedder(), *self.index_embedders()]:
            if embedder is not None and embedder.version == version:
                return embedder
        return None

    # Plain functions behind the tasks
    def search(
        self,
        query_key: str,
        k: int,
        prepared: "PreparedQuery | None" = None,
        conditions: dict[str, Any] | None = None,
        job_id: str | None = None,
        expires: str | None = None,
    ) -> SearchResult:
        """Search with a query image; ``prepared``: its vector from a batch (see embed_queries);
        ``conditions``: only images whose metadata has these values (a search's filter).

        The query is embedded once, whatever the number of shards: the shards this worker
        serves are searched here and merged; the others are sent its vector (search_shard
        tasks of ``job_id``, discarded unstarted after ``expires``), and the result names
        those tasks for the gateway to merge."""
        embedder = self.search_embedder()
        if embedder is None:
            return SearchResult(method=self.method, results=[], **self.not_ready_reason())
        if prepared is not None and prepared.version == embedder.version:
            query, batch = prepared.vector, prepared.batch
            started, embedded = 0.0, prepared.seconds
        else:
            jpeg = self.redis.get(query_key)
            if jpeg is None:
                raise QueryImageMissing(f"query image {query_key!r} expired or was never stored")
            batch = 1
            started = time.perf_counter()
            query = self._embed_jpegs(embedder, [jpeg])[0]
            embedded = time.perf_counter()
        # Sent before searching here, so the other shards are searched meanwhile.
        fan_out = self.send_other_shards(embedder, query, k, conditions, job_id, expires)
        search_started = time.perf_counter()
        allowed = self.catalogue.postings.matching(conditions) if conditions else None
        searched: list[ShardSearched] = []
        ranked: list[list[IndexHit]] = []
        for shard in self.settings.served_shards:
            hits, part = self._search_replica(embedder, shard, query, k, allowed)
            ranked.append(hits)
            searched.append(part)
        higher_is_better = embedder.metric == "cosine"
        hits = merge_top_k(ranked, k, higher_is_better, lambda h: h.score, lambda h: h.id)
        searched_at = time.perf_counter()
        worker_metrics.observe_search(self.method, embedded - started, searched_at - search_started)
        kinds = {s.index_kind for s in searched}
        return SearchResult(
            method=self.method,
            worker=self.worker_name,
            model_version=embedder.version,
            metric=embedder.metric,
            higher_is_better=higher_is_better,
            index_size=sum(s.index_size for s in searched),
            **({"matching": len(allowed)} if allowed is not None else {}),
            index_kind="hnsw" if "hnsw" in kinds else "exact",
            results=[
                # Exact scores while other shards' hits are still to be merged by score.
                Hit(id=hit.id, score=hit.score if fan_out else round(hit.score, 6), rank=rank)
                for rank, hit in enumerate(hits, start=1)
            ],
            timings_ms=SearchTimings(
                embed=round(1000 * (embedded - started), 2),
                search=round(1000 * (searched_at - search_started), 2),
                # Queries embedded in the same forward pass (1: alone); "embed" is that pass.
                embedded_together=batch,
            ),
            **({"shards": searched} if self.settings.index_shards > 1 else {}),
            **({"shard_fan_out": fan_out} if fan_out else {}),
        )

    def send_other_shards(
        self,
        embedder: Embedder,
        query: np.ndarray,
        k: int,
        conditions: dict[str, Any] | None,
        job_id: str | None,
        expires: str | None,
    ) -> ShardFanOut | None:
        """Store the query vector and send a search_shard task to each shard this worker
        does not serve; None when it serves them all."""
        served = set(self.settings.served_shards)
        others = [s for s in range(self.settings.index_shards) if s not in served]
        if not others:
            return None
        if job_id is None or self.celery_app is None:
            raise RuntimeError("searching other workers' shards needs a job id and a Celery app")
        vector_key = keys.query_vector(job_id, self.method)
        self.redis.set(vector_key, vector_to_bytes(query), ex=self.settings.query_image_ttl_seconds)
        tasks = []
        for shard in others:
            payload = SearchShardTask(
                job_id=job_id,
                vector_key=vector_key,
                shard=shard,
                k=k,
                model_version=embedder.version,
                filter=conditions,
            )
            task_id = shard_task_id(job_id, self.method, shard)
            self.celery_app.send_task(
                names.SEARCH_SHARD_TASKS[self.method],
                args=payload.as_args(),
                task_id=task_id,
                queue=names.shard_search_queue(self.method, shard),
                expires=expires,
            )
            tasks.append(ShardTask(shard=shard, task_id=task_id))
        return ShardFanOut(k=k, index_shards=self.settings.index_shards, tasks=tasks)

    def search_shard(self, task: SearchShardTask) -> ShardSearchResult:
        """Search one index shard with a query vector another worker embedded."""
        raw = self.redis.get(task.vector_key)
        if raw is None:
            raise QueryImageMissing(f"query vector {task.vector_key!r} expired or was never stored")
        embedder = self.embedder_of(task.model_version)
        if embedder is None:
            raise ModelVersionUnavailable(
                f"this worker has no {self.method} model {task.model_version!r}, which "
                f"embedded the query; shard {task.shard} cannot be searched with its vector"
            )
        query = vector_from_bytes(raw, embedder.dim)
        started = time.perf_counter()
        allowed = self.catalogue.postings.matching(task.filter) if task.filter else None
        hits, part = self._search_replica(embedder, task.shard, query, task.k, allowed)
        worker_metrics.observe_shard_search(self.method, time.perf_counter() - started)
        return ShardSearchResult(
            method=self.method,
            model_version=embedder.version,
            results=[
                Hit(id=hit.id, score=hit.score, rank=rank) for rank, hit in enumerate(hits, start=1)
            ],
            **part.model_dump(),
        )

    def _search_replica(
        self,
        embedder: Embedder,
        shard: int,
        query: np.ndarray,
        k: int,
        allowed: set[str] | None,
    ) -> tuple[list[IndexHit], ShardSearched]:
        """One shard's exact-scored top k from this process's replica, and what it searched."""
        started = time.perf_counter()
        replica = self.replica(embedder, shard)
        hits = replica.search(query, k, allowed)
        return hits, ShardSearched(
            shard=shard,
            worker=self.worker_name,
            index_size=len(replica.index),
            index_kind=replica.last_search_kind,
            search_ms=round(1000 * (time.perf_counter() - started), 2),
        )

    def embed_queries(self, query_keys: dict[str, str]) -> dict[str, "PreparedQuery"]:
        """Embed several searches' query images in one pass: {task id: query key} -> vectors.

        Queries whose image is missing or does not decode are left out: their search reads
        and embeds them alone and fails as it would have without company.
        """
        embedder = self.search_embedder()
        if embedder is None or not query_keys:
            return {}
        from shared.runtime.ml import decode_images

        started = time.perf_counter()
        images, task_ids = [], []
        jpegs = get_many(self.redis, list(query_keys.values()))  # of other jobs: other slots
        for task_id, jpeg in zip(query_keys, jpegs, strict=True):
            if jpeg is None:
                continue
            try:
                images.append(decode_images([jpeg], embedder.input_size)[0])
            except ValueError:
                continue
            task_ids.append(task_id)
        if not images:
            return {}
        vectors = embedder.embed(np.stack(images))
        seconds = time.perf_counter() - started
        return {
            task_id: PreparedQuery(embedder.version, vector, len(images), seconds)
            for task_id, vector in zip(task_ids, vectors, strict=True)
        }

    def embed_batch(self, image_ids: list[str], job_id: str | None = None) -> IndexResult:
        """Embed catalogue images into every index to fill; ``job_id``: the upload whose
        staged copies to read them from (the blob store otherwise)."""
        embedders = self.index_embedders()
        if not embedders:
            return IndexResult(
                method=self.method, requested=len(image_ids), **self.not_ready_reason()
            )
        read = self.staged_reader(job_id) if job_id else self.catalogue.get_images_and_hashes
        per_version = {e.version: self.embed_into_index(e, image_ids, read) for e in embedders}
        # Top-level counts are those of the model that answers searches (the first one);
        # "versions" details every index filled, including one being built.
        return IndexResult(
            method=self.method,
            requested=len(image_ids),
            **per_version[embedders[0].version].model_dump(),
            versions=per_version,
        )

    def staged_reader(self, job_id: str) -> ImageReader:
        """Read images from an upload's staged copies, else from the blob store."""

        def read(image_ids: list[str]) -> list[tuple[bytes, str] | None]:
            found = staged_images.read(self.redis, job_id, image_ids)
            unstaged = [i for i, entry in zip(image_ids, found, strict=True) if entry is None]
            if not unstaged:
                return found
            try:
                stored = dict(
                    zip(unstaged, self.catalogue.get_images_and_hashes(unstaged), strict=True)
                )
            except BlobMissing as err:
                raise ImagesUnreachable(
                    f"the staged copies of job {job_id}'s images expired (the index deadline "
                    f"passed) and this worker's blob store ({self.settings.blob_store_dir}) "
                    f"does not have them: {err}; upload them again"
                ) from err
            return [entry or stored[i] for i, entry in zip(image_ids, found, strict=True)]

        return read

    def embed_into_index(
        self, embedder: Embedder, image_ids: list[str], read: ImageReader | None = None
    ) -> IndexCounts:
        """Embed the catalogue images that this index lacks, in batches; skip the rest.

        ``read`` gives images with their upload's content hash (the catalogue's by default)."""
        read = read or self.catalogue.get_images_and_hashes
        unique = list(dict.fromkeys(image_ids))
        todo = self.store.missing(self.method, embedder.version, unique)
        embedded = gone = 0
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start : start + self.batch_size]
            found = [(i, entry) for i, entry in zip(chunk, read(chunk), strict=True) if entry]
            gone += len(chunk) - len(found)
            if not found:
                continue
            batch_started = time.perf_counter()
            vectors = self._embed_jpegs(embedder, [jpeg for _, (jpeg, _) in found])
            worker_metrics.observe_batch(
                self.method, len(found), time.perf_counter() - batch_started
            )
            stored = self.store.add_vectors(
                self.method,
                embedder.version,
                {
                    image_id: vector_to_bytes(v)
                    for (image_id, _), v in zip(found, vectors, strict=True)
                },
                made_from={image_id: content for image_id, (_, content) in found},
            )
            embedded += stored
            # Deleted, or given a new picture (whose own task embeds it), while we embedded.
            gone += len(found) - stored
        return IndexCounts(embedded=embedded, already_indexed=len(unique) - len(todo), gone=gone)

    def replica(self, embedder: Embedder, shard: int = 0) -> IndexReplica:
        """This process's copy of one shard of a model's index (shard 0: all of an index
        of one shard)."""
        with self._replicas_lock:
            replica = self._replicas.get((embedder.version, shard))
            if replica is None:
                replica = IndexReplica(
                    self.store,
                    self.method,
                    embedder.version,
                    embedder.dim,
                    embedder.metric,
                    graph_min_vectors=self.settings.approximate_index_min_vectors,
                    shard=shard,
                )
                self._replicas[embedder.version, shard] = replica
            return replica

    def whole_index(self, embedder: Embedder) -> VectorIndex:
        """Every vector of a model's index, synced (checks that compare whole indexes):
        the replica of an index of one shard, else every shard loaded into one copy."""
        if self.store.shards == 1:
            replica = self.replica(embedder)
            replica.sync()
            return replica.index
        return load_whole_index(
            self.store, self.method, embedder.version, embedder.dim, embedder.metric
        )

    def drop_replicas_except(self, versions: set[str]) -> None:
        """Free the memory of indexes no model of this process uses any more."""
        with self._replicas_lock:
            for version, shard in list(self._replicas):
                if version not in versions:
                    del self._replicas[version, shard]

    def _embed_jpegs(self, embedder: Embedder, jpegs: list[bytes]) -> np.ndarray:
        from shared.runtime.ml import decode_images

        return embedder.embed(decode_images(jpegs, embedder.input_size))


def running_delivery_tags() -> list[str]:
    """Broker delivery tags of the messages this worker process holds unacknowledged."""
    from celery.worker import state  # noqa: PLC0415 - worker processes only

    try:
        # Celery's own registry of received, unfinished requests; copied in one C call, so
        # the task thread changing it meanwhile cannot break the copy (RuntimeError: rare).
        requests = list(state.requests.values())
    except RuntimeError:
        return []
    return [r.message.delivery_tag for r in requests if not r.acknowledged]


class Heartbeat:
    """Tells /health which queues have a live, ready consumer (works with any pool), and
    keeps the tasks this process runs from looking abandoned to the broker.

    kombu's Redis transport delivers a message again once its entry in the ``unacked_index``
    sorted set (delivery tag -> time taken) is older than the visibility timeout, whoever
    holds it. Renewing that time for the tasks still running here, at every beat, means a
    task is delivered again only when its worker stopped beating (died or froze), so the
    timeout can be short (a dead worker's task comes back in seconds) and a task can still
    run longer than it.
    """

    def __init__(
        self,
        client: redis.Redis,
        hostname: str,
        queues: list[str],
        unacked_index_key: str | None = None,
        running_tags: Callable[[], list[str]] = running_delivery_tags,
        broker: redis.Redis | None = None,
    ) -> None:
        self.client = client
        self.broker = broker or client  # where unacked_index is: the Celery broker's Redis
        self.hostname = hostname
        self.queues = queues
        self.unacked_index_key = unacked_index_key
        self.running_tags = running_tags
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        try:
            for queue in self.queues:
                self.client.zrem(keys.workers(queue), self.hostname)
        except UNAVAILABLE:
            pass  # Redis gone too; the entry goes stale by itself

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                now = time.time()
                # The broker's first: a data plane that is down (a cluster's master) must not
                # make the broker deliver this worker's running tasks again.
                pipe = self.broker.pipeline(transaction=False)
                if self.unacked_index_key:
                    # XX: only renew what is still there; an acknowledged task stays gone.
                    for tag in self.running_tags():
                        pipe.zadd(self.unacked_index_key, {tag: now}, xx=True)
                if self.broker is not self.client:
                    pipe.execute()
                    pipe = self.client.pipeline(transaction=False)
                for queue in self.queues:
                    pipe.zadd(keys.workers(queue), {self.hostname: now})
                    pipe.zremrangebyscore(keys.workers(queue), 0, now - keys.WORKER_STALE_SECONDS)
                pipe.execute()
            except UNAVAILABLE as err:
                log.warning("heartbeat failed", extra={"error": str(err)})
            self._stop.wait(keys.WORKER_HEARTBEAT_SECONDS)


# ClusterDownError: a cluster that lost a master refuses every command until it is back.
TRANSIENT_ERRORS = (redis.ConnectionError, redis.TimeoutError, redis.exceptions.ClusterDownError)


def unacked_index_key(app: Celery) -> str:
    """The sorted set where kombu's Redis transport times the messages workers hold."""
    from kombu.transport.redis import Channel  # noqa: PLC0415

    options = app.conf.broker_transport_options or {}
    name = options.get("unacked_index_key", Channel.unacked_index_key)
    return options.get("global_keyprefix", "") + name


def register_method_tasks(app: Celery, service: MethodService) -> None:
    """Define the search and embed_batch tasks of a method and its start-up hooks."""
    common = {
        "bind": True,
        # Redis hiccups are retried with backoff; bad input and bugs are not.
        "autoretry_for": TRANSIENT_ERRORS,
        "retry_backoff": True,
        "max_retries": 5,
    }

    batcher = search_batcher(service)
    service.celery_app = app  # sends the search_shard tasks of the shards it does not serve

    @app.task(
        name=names.SEARCH_TASKS[service.method],
        soft_time_limit=60,
        time_limit=90,
        **common,
        **batching_options(batcher),
    )
    def search(
        self, job_id: str, query_key: str, k: int, filter: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        task = SearchTask(job_id=job_id, query_key=query_key, k=k, filter=filter)
        log.info(
            "search",
            extra={"job_id": job_id, "method": service.method, "k": task.k, "filter": task.filter},
        )
        prepared = batcher.take(self.request.id) if batcher else None
        # The other shards' tasks expire with this one (the job's deadline).
        return service.search(
            task.query_key, task.k, prepared, task.filter, job_id, self.request.expires
        ).to_json()

    @app.task(
        name=names.SEARCH_SHARD_TASKS[service.method],
        soft_time_limit=60,
        time_limit=90,
        **common,
        **flushing_options(batcher),
    )
    def search_shard(
        self,
        job_id: str,
        vector_key: str,
        shard: int,
        k: int,
        model_version: str,
        filter: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        task = SearchShardTask(
            job_id=job_id,
            vector_key=vector_key,
            shard=shard,
            k=k,
            model_version=model_version,
            filter=filter,
        )
        log.info(
            "search shard",
            extra={"job_id": job_id, "method": service.method, "shard": shard, "k": task.k},
        )
        return service.search_shard(task).to_json()

    @app.task(
        name=names.EMBED_BATCH_TASKS[service.method],
        soft_time_limit=600,
        time_limit=660,
        **common,
        **flushing_options(batcher),
    )
    def embed_batch(self, job_id: str, image_ids: list[str]) -> dict[str, Any]:
        task = EmbedBatchTask(job_id=job_id, image_ids=image_ids)
        log.info(
            "embed batch",
            extra={"job_id": job_id, "method": service.method, "images": len(task.image_ids)},
        )
        try:
            result = service.embed_batch(task.image_ids, task.job_id).to_json()
        except SoftTimeLimitExceeded:
            log.error("embed batch timed out", extra={"job_id": job_id})
            raise
        # Not before: a task retried after a Redis hiccup reads its staged images again.
        staged_images.done(service.redis, task.job_id, self.request.id)
        return result

    state: dict[str, Any] = {}

    @signals.celeryd_after_setup.connect(weak=False)
    def _remember_identity(sender: str, instance, **_kwargs) -> None:
        state["hostname"] = service.worker_name = sender
        state["queues"] = sorted(instance.app.amqp.queues.consume_from)

    @signals.worker_ready.connect(weak=False)
    def _load_then_report_ready(**_kwargs) -> None:
        service.load()
        worker_metrics.start_metrics_server(service.settings.worker_metrics_port)
        heartbeat = Heartbeat(
            service.redis,
            state["hostname"],
            state["queues"],
            unacked_index_key(app),
            broker=service.broker,
        )
        heartbeat.start()
        state["heartbeat"] = heartbeat
        log.info("worker ready", extra={"method": service.method, "queues": state["queues"]})

    @signals.worker_shutdown.connect(weak=False)
    def _say_goodbye(**_kwargs) -> None:
        if "heartbeat" in state:
            state["heartbeat"].stop()


def search_batcher(service: MethodService) -> QueryBatcher | None:
    """What embeds a worker's waiting searches together; None when SEARCH_BATCH_SIZE is 1."""
    size = service.settings.search_batch_size
    if size <= 1:
        return None

    def prepare(requests: list) -> dict[str, PreparedQuery]:
        # Requests carry the search task's arguments: (job_id, query_key, k[, filter]).
        return service.embed_queries({r.id: r.args[1] for r in requests if len(r.args) in (3, 4)})

    queue = names.queue_name(service.method, names.SEARCH)
    # The broker's list of the queue's messages (kombu's Redis transport: key = queue name).
    return QueryBatcher(
        size,
        service.settings.search_batch_wait_ms / 1000,
        prepare,
        queued=lambda: service.broker.llen(queue),
    )


def batching_options(batcher: QueryBatcher | None) -> dict[str, Any]:
    return {"Strategy": batcher.strategy()} if batcher else {}


def flushing_options(batcher: QueryBatcher | None) -> dict[str, Any]:
    # Searches held for a batch never wait behind an indexing task received after them.
    return {"Strategy": batcher.flushing_strategy()} if batcher else {}


def worker_queues(method: names.Method, roles: list[str], settings: WorkerSettings) -> list[str]:
    """The queues of a method's worker on these roles: a search worker of a sharded index
    also takes the shard searches of the shards it serves (SHARDS)."""
    queues = [names.queue_name(method, role) for role in roles]
    if names.SEARCH in roles and settings.index_shards > 1:
        queues += [names.shard_search_queue(method, k) for k in settings.served_shards]
    return queues


def run_worker(
    app: Celery, method: names.Method, settings: WorkerSettings, roles: list[str] | None = None
) -> None:
    """Start a Celery worker for a method's queues (all of them unless ``roles`` says).

    The solo pool runs tasks in the worker's own process, so TensorFlow is never forked and a
    model loads once per process; run more processes (replicas) for more throughput.
    """
    roles = roles or list(names.QUEUE_ROLES[method])
    queues = ",".join(worker_queues(method, roles, settings))
    served = "-shards-" + "-".join(map(str, settings.shards)) if settings.shards else ""
    name = f"{method}-{'-'.join(roles)}{served}-{socket.gethostname()}-{os.getpid()}"
    app.worker_main(
        [
            "worker",
            "--pool=solo",
            f"--queues={queues}",
            f"--hostname={name}@%h",
            "--without-mingle",
            "--without-gossip",
            f"--loglevel={app.conf.get('worker_log_level', 'INFO')}",
        ]
    )
