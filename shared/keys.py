"""Redis key layout: the one place that spells a key.

Catalogue (written by the gateway, read by everyone; the keys keep the "catalog:" spelling of the
first release, since they are stored data, while identifiers say "catalogue"):
    catalog:ids                      ZSET  image id -> time added (paging, counting)
    catalog:meta:{id}                JSON ImageMeta, naming the blobs of its canonical JPEG (the
                                     bytes the workers embed) and of its thumbnail
    catalog:image:{id}, catalog:thumb:{id}   the JPEGs themselves, before they moved to the
                                     blob store (shared/blobs.py); read only to migrate them
    catalog:by-meta:{key}={value}    SET of the image ids whose metadata has this key and value
                                     (key as a JSON string, value as shared/metadata_postings.py
                                     spells it: "Lemon" quoted, 1, true), for search filters
    catalog:by-meta-of:{id}          SET of the by-meta keys that list this image (to undo them)
    catalog:by-meta-ready            set once the by-meta sets cover every entry stored before
                                     they existed (their one backfill)
Blobs (the bytes are in the blob store, BLOB_STORE_DIR; only their bookkeeping is here):
    blob:refs                        HASH blob name -> references: catalogue entries naming it
                                     plus writes in progress; a blob is deleted only at 0
    blob:deleting:{name}             held (expires) while a blob unreferenced is being deleted:
                                     a write of the same bytes waits for it, then writes them
Jobs and uploads:
    job:{job_id}                     JSON job record (expires)
    job:{job_id}:view                JSON of a finished job: its view as clients read it,
                                     stored once every part is final and returned as is (a
                                     search's is cut again if one of its candidates left the
                                     catalogue), with the merged results to cut it from
    query:{job_id}                   canonical JPEG of a query image (expires)
    query:{job_id}:{method}:vector   the query's vector (vector_to_bytes), stored by the worker
                                     that embedded it for the workers of the shards it does
                                     not serve ({method}.search_shard; expires)
    staged:{job_id}                  HASH of an upload's canonical JPEGs for its index tasks
                                     ("jpeg:{id}", "hash:{id}": the upload's content hash),
                                     so index workers need no blob store; "pending" counts the
                                     tasks still to read it ("done:{task id}" each that did)
                                     and the last deletes it; expires with the index deadline
Indexes (one per method and model version, so vectors of two models never mix):
    index:{method}:active            the model version searches use
    index:{method}:building          SET of model versions whose index is being filled
    index:{method}:retained          SET of finished versions kept complete (the active one and
                                     the one before it, for rollback): new images enter them all
    {prefix}:vectors                 HASH image id -> vector bytes (float16 and a tag byte;
                                     bare float32 from earlier releases, still read)
    {prefix}:log                     STREAM of ("add"|"del", id) changes; replicas replay it
    {prefix}:floor                   id of the newest log entry trimmed away (replicas older
                                     than it reload the whole index)
    {prefix}:epoch                   random id set with the index's first vector: a replica
                                     that finds it changed or gone (Redis lost or replaced its
                                     data) reloads the whole index
                                     ({prefix}: one index shard's, index_prefix() below:
                                     "index:{method}:{version}" with INDEX_SHARDS=1, the keys
                                     from before shards, so no migration; else shard k of S,
                                     "index:{method}:{version}:shard-{k}-of-{S}", S in the key
                                     so that another layout can be built beside it. Which
                                     image is in which shard: shared/shards.py)
    index:registry                   SET of the prefixes of every index shard that exists (the
                                     Lua scripts in shared/index_store.py append ":vectors"/
                                     ":log"/":floor"/":epoch" to them)
Models:
    model:{method}:{version}         the model file (Keras' own .keras format, never pickle)
    model:{method}:{version}:meta    JSON model description (size, losses, dates)
    model:{method}:{version}:{name}  PNG artifacts of a training: loss_curve, preview
    model:{method}:versions          ZSET version -> time created
    model:{method}:training          job id of the training in progress: a lease the trainer
                                     renews at every report; it lapses TRAINING_LEASE_SECONDS
                                     after a trainer dies, and then the job counts as failed
    model:{method}:train-run:{task_id}:{attempt}
                                     set by the trainer when it starts that delivery of a
                                     training task (expires with the job): a second delivery
                                     of the same task and attempt finds it and does nothing
    model:{method}:retrain-size      catalogue size when the gateway last started a training
                                     on its own (AUTOENCODER_RETRAIN_GROWTH)
Fusion:
    fusion:weights                   JSON FusionWeights: the fused list's weights fitted to the
                                     catalogue's labels (or why none could be), by the
                                     autoencoder worker's autoencoder.fit_fusion
    fusion:fit-requested-size        catalogue size when the gateway last queued a fit because
                                     the catalogue grew (FUSION_REFIT_GROWTH)
Gateway:
    ratelimit:{identity}:{minute}    request count of one client in one minute (unix time // 60;
                                     expires); identity "key-<sha256 prefix of the API key>"
                                     or "addr-<client address>"
Workers:
    workers:{queue}                  ZSET worker hostname -> last heartbeat (unix seconds);
                                     silent for WORKER_STALE_SECONDS = gone

On a Redis Cluster (REDIS_CLUSTER_NODES, use_cluster_layout below) the same keys carry hash
tags, so that every key a transaction or a Lua script touches is in one slot while the data
spreads over the masters:
    the catalogue, split into CLUSTER_CATALOGUE_PARTITIONS partitions by a hash of the id:
        "catalog:{part-<p>}:meta:{id}", "catalog:{part-<p>}:ids", its postings
        "catalog:{part-<p>}:by-meta:...": an entry, its id list and its postings change
        together, in one transaction
    a blob's references and deletion mark: "blob:{<name>}:refs" (a hash with the one
        field), "blob:{<name>}:deleting" (entries of any partition may name the blob)
    an index shard: "index:{vgg16:<version>}:vectors", with its :log, :floor and :epoch
        (the prefix's tail in braces); the registry stays "index:registry"
    a method's versions and models: "index:{vgg16}:active", "model:{vgg16}:<version>", ...
    a job's keys: "job:{<job id>}", "job:{<job id>}:view", "query:{<job id>}", ...
Single keys (fusion, rate limits, heartbeats) are left as they are. What no longer fits one
script there (an index write beside the catalogue check, a delete beside every index, an
entry beside its blobs' references) is done in an order that keeps the guarantees
(shared/index_store.py, shared/catalogue.py).
"""

from typing import Final

from shared.shards import shard_of

# Whether keys carry Redis Cluster hash tags: set once at start-up (use_cluster_layout), the
# same in every process of a deployment, as the data's place depends on it.
_cluster_layout = False
# On a cluster the catalogue is split by a hash of the image id into this many partitions,
# each a slot of its own, so it spreads over the masters as the indexes do (more than any
# cluster has masters; part of the key names, so fixed).
CLUSTER_CATALOGUE_PARTITIONS: Final = 64

# The names on one Redis (on a cluster: catalogue_ids(p), blob_references(name), ...).
CATALOGUE_IDS: Final = "catalog:ids"
BLOB_REFERENCES: Final = "blob:refs"
CATALOGUE_POSTINGS_READY: Final = "catalog:by-meta-ready"
INDEX_REGISTRY: Final = "index:registry"
FUSION_WEIGHTS: Final = "fusion:weights"
FUSION_FIT_REQUESTED_SIZE: Final = "fusion:fit-requested-size"
WORKER_HEARTBEAT_SECONDS: Final = 5.0
WORKER_STALE_SECONDS: Final = 30.0
TRAINING_LEASE_SECONDS: Final = 600


def use_cluster_layout(enabled: bool = True) -> None:
    """Spell keys for a Redis Cluster (hash tags) or for one Redis (the stored names)."""
    global _cluster_layout
    _cluster_layout = enabled


def _tag(part: str) -> str:
    """``part`` as a hash tag on a cluster ("{part}"): the keys that share it share a slot."""
    return f"{{{part}}}" if _cluster_layout else part


def catalogue_partitions() -> int:
    return CLUSTER_CATALOGUE_PARTITIONS if _cluster_layout else 1


def catalogue_partition(image_id: str) -> int:
    """The catalogue partition of an image (always 0 on one Redis)."""
    return shard_of(image_id, catalogue_partitions())


def _catalogue(partition: int, rest: str) -> str:
    """A catalogue key: catalog:<rest> on one Redis, catalog:{part-<p>}:<rest> on a cluster."""
    return f"catalog:{{part-{partition}}}:{rest}" if _cluster_layout else f"catalog:{rest}"


def catalogue_ids(partition: int = 0) -> str:
    return _catalogue(partition, "ids")


def catalogue_image(image_id: str) -> str:
    return _catalogue(catalogue_partition(image_id), f"image:{image_id}")


def catalogue_thumb(image_id: str) -> str:
    return _catalogue(catalogue_partition(image_id), f"thumb:{image_id}")


def catalogue_meta(image_id: str) -> str:
    return _catalogue(catalogue_partition(image_id), f"meta:{image_id}")


def catalogue_posting(key_json: str, value_text: str, partition: int = 0) -> str:
    return _catalogue(partition, f"by-meta:{key_json}={value_text}")


def catalogue_postings_of(image_id: str) -> str:
    return _catalogue(catalogue_partition(image_id), f"by-meta-of:{image_id}")


def catalogue_postings_ready(partition: int = 0) -> str:
    return _catalogue(partition, "by-meta-ready")


def blob_references(name: str) -> str:
    """The hash that counts ``name``'s references: one for all blobs on one Redis, one per
    blob on a cluster (a slot of its own; the catalogue entries naming it are elsewhere)."""
    return f"blob:{{{name}}}:refs" if _cluster_layout else BLOB_REFERENCES


def blob_deleting(name: str) -> str:
    return f"blob:{{{name}}}:deleting" if _cluster_layout else f"blob:deleting:{name}"


def job(job_id: str) -> str:
    return f"job:{_tag(job_id)}"


def job_view(job_id: str) -> str:
    return f"job:{_tag(job_id)}:view"


def query_image(job_id: str) -> str:
    return f"query:{_tag(job_id)}"


def query_vector(job_id: str, method: str) -> str:
    return f"query:{_tag(job_id)}:{method}:vector"


def staged_images(job_id: str) -> str:
    return f"staged:{_tag(job_id)}"


def active_version(method: str) -> str:
    return f"index:{_tag(method)}:active"


def building_versions(method: str) -> str:
    return f"index:{_tag(method)}:building"


def retained_versions(method: str) -> str:
    return f"index:{_tag(method)}:retained"


def index_prefix(method: str, version: str, shard: int = 0, shards: int = 1) -> str:
    """The prefix of shard ``shard`` of ``shards``; one shard keeps the unsharded keys."""
    shard_part = f"{version}" if shards == 1 else f"{version}:shard-{shard}-of-{shards}"
    return f"index:{_tag(f'{method}:{shard_part}')}"


def index_vectors(method: str, version: str, shard: int = 0, shards: int = 1) -> str:
    return f"{index_prefix(method, version, shard, shards)}:vectors"


def index_log(method: str, version: str, shard: int = 0, shards: int = 1) -> str:
    return f"{index_prefix(method, version, shard, shards)}:log"


def index_floor(method: str, version: str, shard: int = 0, shards: int = 1) -> str:
    return f"{index_prefix(method, version, shard, shards)}:floor"


def index_epoch(method: str, version: str, shard: int = 0, shards: int = 1) -> str:
    return f"{index_prefix(method, version, shard, shards)}:epoch"


def model_blob(method: str, version: str) -> str:
    return f"model:{_tag(method)}:{version}"


def model_meta(method: str, version: str) -> str:
    return f"model:{_tag(method)}:{version}:meta"


def model_artifact(method: str, version: str, name: str) -> str:
    return f"model:{_tag(method)}:{version}:{name}"


def model_versions(method: str) -> str:
    return f"model:{_tag(method)}:versions"


def workers(queue: str) -> str:
    return f"workers:{queue}"


def training_lease(method: str) -> str:
    return f"model:{_tag(method)}:training"


def training_run(method: str, task_id: str, attempt: int) -> str:
    return f"model:{_tag(method)}:train-run:{task_id}:{attempt}"


def retrain_started_at_size(method: str) -> str:
    return f"model:{_tag(method)}:retrain-size"


def rate_limit(identity: str, minute: int) -> str:
    return f"ratelimit:{identity}:{minute}"
