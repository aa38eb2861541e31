"""Methods, queues and task names: the wire contract between the gateway and the workers.

The gateway sends tasks by name (``celery.send_task``) and never imports worker code,
so these strings, with the payload and result models of shared/contracts.py, are what both
sides must agree on.
"""

from typing import Final, Literal

Method = Literal["vgg16", "autoencoder"]
METHODS: Final[tuple[Method, ...]] = ("vgg16", "autoencoder")

# Each method has its own queues so that searches never wait behind bulk indexing
# (a worker can be started on the search queue alone) and training never blocks either.
SEARCH: Final = "search"
INDEX: Final = "index"
TRAIN: Final = "train"
QUEUE_ROLES: Final[dict[Method, tuple[str, ...]]] = {
    "vgg16": (SEARCH, INDEX),
    "autoencoder": (SEARCH, INDEX, TRAIN),
}


def queue_name(method: Method, role: str) -> str:
    """The Celery queue a method's worker consumes for one role, e.g. ``vgg16.search``."""
    if role not in QUEUE_ROLES[method]:
        raise ValueError(f"method {method!r} has no {role!r} queue")
    return f"{method}.{role}"


def shard_search_queue(method: Method, shard: int) -> str:
    """The queue of searches of one index shard with a vector embedded elsewhere, e.g.
    ``vgg16.search.shard-1``; consumed by the workers that serve that shard."""
    return f"{queue_name(method, SEARCH)}.shard-{shard}"


def shard_search_queues(index_shards: int) -> list[str]:
    """Every shard search queue (none with one shard: each search worker searches it all)."""
    if index_shards == 1:
        return []
    return [shard_search_queue(m, k) for m in METHODS for k in range(index_shards)]


def all_queues(index_shards: int = 1) -> list[str]:
    """Every queue of a deployment with INDEX_SHARDS = ``index_shards``."""
    roles = [queue_name(m, r) for m in METHODS for r in QUEUE_ROLES[m]]
    return roles + shard_search_queues(index_shards)


# Task names, "<method>.<verb>", spelled out so that grepping a name finds its definition.
# Arguments and results: the models of shared/contracts.py (SearchTask -> SearchResult,
# EmbedBatchTask -> IndexResult, TrainTaskPayload -> TrainResult), as positional JSON arguments.
VGG16_SEARCH: Final = "vgg16.search"
VGG16_EMBED_BATCH: Final = "vgg16.embed_batch"
AUTOENCODER_SEARCH: Final = "autoencoder.search"
AUTOENCODER_EMBED_BATCH: Final = "autoencoder.embed_batch"
AUTOENCODER_TRAIN: Final = "autoencoder.train"
# One shard's search with a vector another worker embedded (SearchShardTask ->
# ShardSearchResult); sent by that worker to shard_search_queue(method, shard).
VGG16_SEARCH_SHARD: Final = "vgg16.search_shard"
AUTOENCODER_SEARCH_SHARD: Final = "autoencoder.search_shard"

SEARCH_TASKS: Final[dict[Method, str]] = {
    "vgg16": VGG16_SEARCH,
    "autoencoder": AUTOENCODER_SEARCH,
}
SEARCH_SHARD_TASKS: Final[dict[Method, str]] = {
    "vgg16": VGG16_SEARCH_SHARD,
    "autoencoder": AUTOENCODER_SEARCH_SHARD,
}
EMBED_BATCH_TASKS: Final[dict[Method, str]] = {
    "vgg16": VGG16_EMBED_BATCH,
    "autoencoder": AUTOENCODER_EMBED_BATCH,
}


def task_search(method: Method) -> str:
    """The search task of a method (SearchTask -> SearchResult)."""
    return SEARCH_TASKS[method]


def task_embed_batch(method: Method) -> str:
    """The indexing task of a method (EmbedBatchTask -> IndexResult)."""
    return EMBED_BATCH_TASKS[method]


# Fits the fused list's weights to the catalogue's labels (FitFusionTask -> FusionWeights).
# Run by the autoencoder worker, which has numpy and both methods' vectors in Redis; queued on
# its index queue so that it runs after the indexing queued before it.
AUTOENCODER_FIT_FUSION: Final = "autoencoder.fit_fusion"
