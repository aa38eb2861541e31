"""Methods, queues and task names: the wire contract between the gateway and the workers.

The gateway sends tasks by name (``celery.send_task``) and never imports worker code,
so these strings are the only thing both sides must agree on.
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


def all_queues() -> list[str]:
    return [queue_name(m, r) for m in METHODS for r in QUEUE_ROLES[m]]


# Task names: "<method>.<verb>". Arguments are JSON-serialisable ids and small values only.
def task_search(method: Method) -> str:
    """search(job_id, query_key, k) -> SearchResult dict."""
    return f"{method}.search"


def task_embed_batch(method: Method) -> str:
    """embed_batch(job_id, image_ids) -> IndexResult dict."""
    return f"{method}.embed_batch"


TASK_TRAIN_AUTOENCODER: Final = "autoencoder.train"
"""train(job_id, options) -> TrainResult dict."""
