"""Jobs: fan a request out to Celery tasks, and read the tasks back as one view.

A search, an upload's indexing and a training are each a job record in Redis (shared/jobs.py)
plus tasks named in shared/names.py, whose arguments and results are the models of
shared/contracts.py. A job's view merges its tasks' results (validated against the result
models), the parts of a large upload, the index shards other workers searched (a sharded
index: the top k of every shard merged into the method's), and for a search the fused list
(results.py). Once every part is final the view is stored beside the record and returned as
is afterwards (a search's is cut again only if one of its images left the catalogue since).
"""

import copy
import json
import logging
import time
from datetime import UTC, datetime
from typing import Any

from celery.result import AsyncResult
from flask import current_app
from pydantic import ValidationError

from shared import keys, names, staged_images
from shared.contracts import (
    TASK_RESULTS,
    EmbedBatchTask,
    JobPoll,
    SearchRequest,
    SearchTask,
    ShardSearched,
    ShardSearchResult,
    TaskPayload,
    TrainTaskPayload,
    WorkerResult,
)
from shared.fusion import stored_fit, weights_in_use
from shared.images import CanonicalImage
from shared.jobs import (
    FINAL_STATUSES,
    JobKind,
    JobRecord,
    new_job_id,
    overall_status,
    shard_task_id,
    status_from_celery,
    timed_out,
)
from shared.shards import merge_top_k

from .catalogue import image_links
from .context import broker_redis, catalogue, celery, redis_client, settings
from .errors import ApiError, validated
from .results import decorate, fuse_rankings
from .waiting import wait_for_change

log = logging.getLogger(__name__)

# Sending a task when the broker is down must fail fast (the client gets 503), not hang.
SEND_RETRY_POLICY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.5}
# Results a search asks each method for beyond what it shows, so that dropping images that
# left the catalogue since the worker's index last synced still leaves k.
EXTRA_CANDIDATES = 10


# Fan-out ----------------------------------------------------------------------------------
def _new_job(kind: JobKind, methods: list[str], params: dict[str, Any], parts: int = 1):
    deadline = time.time() + settings().job_deadline_seconds[kind]
    return JobRecord(
        id=new_job_id(), kind=kind, methods=methods, params=params, parts=parts, deadline=deadline
    )


def _expires(job: JobRecord) -> datetime | None:
    """When a worker should discard the job's tasks unstarted: past the deadline nobody
    waits for a search or a training any more. Indexing goes on whatever the deadline: its
    images are in the catalogue already, and unindexed they would never be searchable."""
    if job.deadline is None or job.kind == "index":
        return None
    return datetime.fromtimestamp(job.deadline, UTC)


def _store(job: JobRecord) -> None:
    redis_client().set(keys.job(job.id), job.to_json(), ex=settings().job_ttl_seconds)


def _send(job: JobRecord, task_name: str, method: str, part: int, payload: TaskPayload) -> None:
    app = celery()
    app.send_task(
        task_name,
        args=payload.as_args(),
        task_id=job.task_ids(method)[part],
        queue=app.conf.task_routes[task_name]["queue"],
        expires=_expires(job),
        retry=True,
        retry_policy=SEND_RETRY_POLICY,
    )


def start_search(jpeg: bytes, search: SearchRequest) -> JobRecord:
    """Store the query image (a canonical JPEG) and the job, then send one search task per
    method. An ``image_id`` search's query is left out of its results (see
    _with_search_results): the job's params keep the id."""
    cfg = settings()
    params: dict[str, Any] = {"k": search.k}
    if search.filter:
        params["filter"] = search.filter
    if search.image_id is not None:
        params["image_id"] = search.image_id
    if search.url is not None:
        params["url"] = search.url  # so a shared link to the job can show and rerun it
    job = _new_job("search", list(search.methods), params)
    query_key = keys.query_image(job.id)
    pipe = redis_client().pipeline(transaction=True)
    pipe.set(query_key, jpeg, ex=cfg.query_image_ttl_seconds)
    pipe.set(keys.job(job.id), job.to_json(), ex=cfg.job_ttl_seconds)
    pipe.execute()
    # With more than one method, each returns enough candidates for the fusion to weigh
    # (one more for an image_id search, whose query is dropped from its results).
    candidates = search.k + EXTRA_CANDIDATES + (search.image_id is not None)
    if len(job.methods) > 1:
        candidates = max(candidates, cfg.fusion_candidates)
    for method in job.methods:
        task = SearchTask(job_id=job.id, query_key=query_key, k=candidates, filter=search.filter)
        _send(job, names.SEARCH_TASKS[method], method, 0, task)
    log.info("search queued", extra={"job_id": job.id, "methods": job.methods, "k": search.k})
    return job


def start_indexing(images: dict[str, CanonicalImage]) -> JobRecord:
    """Index stored images with every method, in chunks that replicas share.

    Their canonical JPEGs are staged in Redis beside the job (shared/staged_images.py), so
    an index worker on any host needs only Redis (README.md, "Several machines").
    """
    cfg = settings()
    image_ids = list(images)
    size = cfg.index_chunk_size
    chunks = [image_ids[i : i + size] for i in range(0, len(image_ids), size)]
    job = _new_job("index", list(names.METHODS), {"images": len(image_ids)}, parts=len(chunks))
    pipe = redis_client().pipeline(transaction=True)
    tasks = len(job.methods) * len(chunks)
    staged_images.stage(pipe, job.id, images, tasks, cfg.job_deadline_seconds["index"])
    pipe.set(keys.job(job.id), job.to_json(), ex=cfg.job_ttl_seconds)
    pipe.execute()
    for method in job.methods:
        for part, chunk in enumerate(chunks):
            task = EmbedBatchTask(job_id=job.id, image_ids=chunk)
            _send(job, names.EMBED_BATCH_TASKS[method], method, part, task)
    log.info("index job queued", extra={"job_id": job.id, "images": len(image_ids)})
    return job


def start_training(options: dict[str, int], trigger: str = "request") -> str | None:
    """Take the training lease and queue a training; its job id, or None if one runs."""
    job = _new_job("train", ["autoencoder"], {**options, "trigger": trigger})
    lease = keys.training_lease("autoencoder")
    client = redis_client()
    if not client.set(lease, job.id, nx=True, ex=keys.TRAINING_LEASE_SECONDS):
        return None
    try:
        _store(job)
        task = TrainTaskPayload(job_id=job.id, options=options)
        _send(job, names.AUTOENCODER_TRAIN, "autoencoder", 0, task)
    except Exception:
        client.delete(lease)  # nothing was queued: do not block the next attempt
        raise
    log.info("training queued", extra={"job_id": job.id, "options": options, "trigger": trigger})
    return job.id


def running_training() -> str:
    """The job id holding the training lease ('' when none does)."""
    return (redis_client().get(keys.training_lease("autoencoder")) or b"").decode()


# Reading a job back -----------------------------------------------------------------------
def poll(job_id: str, query: dict[str, str]) -> tuple[dict[str, Any], bool]:
    """A job's view, after waiting up to ``?wait=`` s for it to finish; and whether the client
    should come back later (every waiting slot was taken and the job is not final)."""
    raw = redis_client().get(keys.job(job_id))
    if raw is None:
        raise ApiError(404, "job_not_found", f"no job with id {job_id!r} (unknown or expired)")
    job = JobRecord.from_json(raw)
    wait = validated(JobPoll, query, max_wait_seconds=settings().max_wait_seconds).wait
    if wait <= 0:
        return job_view(job), False
    with current_app.extensions["wait_slots"].slot() as waiting:
        if not waiting:
            # Every waiting slot is taken: answer now rather than take the last threads.
            view = job_view(job)
            return view, view["status"] not in FINAL_STATUSES
        # A finished job is answered after one view, like a poll without wait.
        view = wait_for_change(
            lambda: job_view(job),
            lambda: _task_records(job),
            lambda v: v["status"] in FINAL_STATUSES,
            wait,
        )
    return view, False


def _task_records(job: JobRecord) -> list[bytes | None]:
    """The raw result records of a job's tasks: one MGET, to see whether anything changed."""
    backend = celery().backend
    ids = [tid for method in job.methods for tid in job.task_ids(method)]
    shards = settings().index_shards
    if job.kind == "search" and shards > 1:  # and the shard searches its workers may send
        ids += [shard_task_id(job.id, m, k) for m in job.methods for k in range(shards)]
    return broker_redis().mget([backend.get_key_for_task(tid) for tid in ids])


def job_view(job: JobRecord) -> dict[str, Any]:
    """The job as clients read it. Once every part is final it is stored beside the record
    and returned as is; a search's is cut again only when one of its candidate images left
    or came back to the catalogue since (one ZMSCORE tells)."""
    client = redis_client()
    stored = client.get(keys.job_view(job.id))
    if stored is not None:
        return _as_read_now(json.loads(stored), job)
    merged = _build_view(job)
    final = merged["status"] in FINAL_STATUSES
    candidates = _candidate_ids(merged) if final else []
    # Read before the view is cut: an image deleted in between makes the next read cut again.
    present = sorted(catalogue().existing(candidates)) if candidates else []
    view = _with_search_results(merged, job) if job.kind == "search" else merged
    if final:
        record = {
            "view": view,
            "merged": merged if candidates else None,
            "candidates": candidates,
            "present": present,
        }
        client.set(keys.job_view(job.id), json.dumps(record), ex=settings().job_ttl_seconds)
    return view


def _as_read_now(stored: dict[str, Any], job: JobRecord) -> dict[str, Any]:
    candidates = stored["candidates"]
    if not candidates or sorted(catalogue().existing(candidates)) == stored["present"]:
        return stored["view"]
    return _with_search_results(stored["merged"], job)  # an image was deleted (or re-added)


def _candidate_ids(view: dict[str, Any]) -> list[str]:
    ids = {r["id"] for m in view["methods"].values() for r in m.get("results", [])}
    return sorted(ids)


def _build_view(job: JobRecord) -> dict[str, Any]:
    app = celery()
    now = time.time()
    methods: dict[str, dict[str, Any]] = {}
    for method in job.methods:
        parts = [_task_outcome(AsyncResult(tid, app=app), job, now) for tid in job.task_ids(method)]
        methods[method] = merge_parts(parts)
        if job.kind == "search":
            methods[method] = with_other_shards(method, methods[method], job, now)
    if job.kind == "train":
        _fail_if_trainer_died(job, methods["autoencoder"])
    status = overall_status([m["status"] for m in methods.values()])
    view: dict[str, Any] = {
        "id": job.id,
        "kind": job.kind,
        "status": status,
        "created_at": job.created_at,
        "deadline": job.deadline,
        "params": job.params,
        "methods": methods,
    }
    timeouts = [m for m in methods.values() if m.get("reason") == "timeout"]
    if status == "failed" and timeouts:
        view["reason"], view["message"] = "timeout", timeouts[0]["message"]
    return view


def _task_outcome(
    task: AsyncResult,
    job: JobRecord,
    now: float,
    result_model: type[WorkerResult] | None = None,
) -> dict[str, Any]:
    state = task.state
    status = status_from_celery(state)
    if job.deadline is not None and now >= job.deadline:
        finished = task.date_done if status in FINAL_STATUSES else None
        if finished is not None and finished.tzinfo is None:
            finished = finished.replace(tzinfo=UTC)  # Celery writes UTC
        if timed_out(job.deadline, status, finished and finished.timestamp(), now):
            return job.timeout_outcome()
    outcome: dict[str, Any] = {"status": status}
    if status == "done" and isinstance(task.result, dict):
        outcome.update(checked_result(job.kind, task.result, result_model))
    elif status == "failed":
        error = task.result
        outcome["error"] = f"{type(error).__name__}: {error}" if error else "the task failed"
    elif state == "PROGRESS" and isinstance(task.info, dict):
        outcome["progress"] = task.info
    return outcome


def checked_result(
    kind: JobKind, result: dict[str, Any], result_model: type[WorkerResult] | None = None
) -> dict[str, Any]:
    """A worker's result, validated against its contract (the job kind's, unless
    ``result_model`` names another); a broken one fails the part."""
    try:
        return (result_model or TASK_RESULTS[kind]).model_validate(result).to_json()
    except ValidationError as err:
        log.error("worker result off contract", extra={"kind": kind, "error": str(err)})
        return {"status": "failed", "error": f"the worker's result broke the contract: {err}"}


def with_other_shards(
    method: str, outcome: dict[str, Any], job: JobRecord, now: float
) -> dict[str, Any]:
    """A search's method outcome with the top k of the index shards its worker left to
    others merged in (exact: each of the global top k is in its shard's top k). Running
    while one of them is; failed, naming the shard, when one failed or missed the deadline."""
    fan_out = outcome.pop("shard_fan_out", None)
    if fan_out is None or outcome["status"] != "done":
        return outcome
    app = celery()
    shards = {
        task["shard"]: _task_outcome(
            AsyncResult(task["task_id"], app=app), job, now, ShardSearchResult
        )
        for task in fan_out["tasks"]
    }
    failed = [(k, o) for k, o in sorted(shards.items()) if o["status"] == "failed"]
    if failed:
        # A timeout says most (the shard has no live worker), so it is the one named.
        shard, problem = min(failed, key=lambda f: f[1].get("reason") != "timeout")
        where = (
            f"index shard {shard} of {fan_out['index_shards']} (queue "
            f"{names.shard_search_queue(method, shard)})"
        )
        if problem.get("reason") == "timeout":
            message = f"{where}: {problem['message']}"
            return {"status": "failed", "reason": "timeout", "message": message, "error": message}
        return {"status": "failed", "error": f"{where} failed: {problem.get('error')}"}
    if any(o["status"] != "done" for o in shards.values()):
        return {"status": "running"}
    ranked = [outcome.get("results", []), *(o.get("results", []) for o in shards.values())]
    merged = merge_top_k(
        ranked,
        fan_out["k"],
        outcome.get("higher_is_better", True),
        lambda hit: hit["score"],
        lambda hit: hit["id"],
    )
    searched = outcome.get("shards", []) + [
        {key: o[key] for key in ShardSearched.model_fields if key in o} for o in shards.values()
    ]
    outcome["results"] = [
        {"id": hit["id"], "score": round(hit["score"], 6), "rank": rank}
        for rank, hit in enumerate(merged, start=1)
    ]
    outcome["index_size"] = sum(s["index_size"] for s in searched)
    outcome["index_kind"] = "hnsw" if any(s["index_kind"] == "hnsw" for s in searched) else "exact"
    outcome["shards"] = sorted(searched, key=lambda s: s["shard"])
    return outcome


def _fail_if_trainer_died(job: JobRecord, outcome: dict[str, Any]) -> None:
    """A running training whose lease lapsed lost its worker: say so instead of "running"."""
    if outcome["status"] != "running":
        return
    if running_training() != job.id:
        outcome["status"] = "failed"
        outcome["error"] = (
            "the training worker stopped before finishing (no progress for "
            f"{keys.TRAINING_LEASE_SECONDS} s); start a new training"
        )


def merge_parts(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One method's view of a job split into several tasks (chunks of a large upload)."""
    if len(parts) == 1:
        return parts[0]
    statuses = [p["status"] for p in parts]
    if all(s in FINAL_STATUSES for s in statuses):
        status = "failed" if "failed" in statuses else "done"
    else:
        status = "queued" if all(s == "queued" for s in statuses) else "running"
    merged: dict[str, Any] = {
        "status": status,
        "parts": len(parts),
        "parts_done": sum(s in FINAL_STATUSES for s in statuses),
    }
    for counter in ("requested", "embedded", "already_indexed", "gone"):
        values = [p[counter] for p in parts if isinstance(p.get(counter), int)]
        if values:
            merged[counter] = sum(values)
    # A timeout says most about the whole method, so it is the reason given when there is one.
    for part in sorted(parts, key=lambda p: p.get("reason") == "timeout"):
        for field in ("reason", "message", "versions"):
            if field in part:
                merged[field] = part[field]
    errors = [p["error"] for p in parts if "error" in p]
    if errors:
        merged["errors"] = errors
    return merged


def _with_search_results(merged: dict[str, Any], job: JobRecord) -> dict[str, Any]:
    """A search's view: each method's results without images that left the catalogue, cut
    to k and ranked again, and the fused list."""
    view = copy.deepcopy(merged)
    metas = catalogue().get_metas(_candidate_ids(view))

    def describe(image_id: str) -> dict[str, Any] | None:
        meta = metas.get(image_id)
        if meta is None:
            return None
        return {"label": meta.label, "filename": meta.filename, **image_links(image_id)}

    cfg = settings()
    k = job.params.get("k", cfg.default_k)
    query_id = job.params.get("image_id")
    fit = weights_in_use(stored_fit(redis_client()), cfg.fusion_weights)
    weights = fit.weights or {}
    rankings = {}
    for method, outcome in view["methods"].items():
        if "results" in outcome:
            # Images that left the catalogue go before the cut to k (the worker sent a margin
            # of extra candidates for them), and so does the query of an image_id search;
            # ranks count what is left.
            found = [r for r in outcome["results"] if r["id"] != query_id]
            candidates = decorate(found, describe)
            for rank, result in enumerate(candidates, start=1):
                result["rank"] = rank
            total = _searched(outcome, dropped_query=len(found) < len(outcome["results"]))
            outcome["results"] = candidates[:k]
            if total is not None:
                outcome["total"] = total
            if candidates:
                rankings[method] = candidates
    totals = [o["total"] for o in view["methods"].values() if "total" in o]
    view["fused"] = {
        "method": "weighted_reciprocal_rank_fusion",
        "higher_is_better": True,
        "methods": sorted(m for m in rankings if weights.get(m, 0) > 0),
        "weights": {m: weights.get(m, 0.0) for m in sorted(rankings)},
        "fit": fit.to_json(),
        "results": decorate(fuse_rankings(rankings, weights, k), describe),
    }
    if totals:
        view["fused"]["total"] = max(totals)
    return view


def _searched(outcome: dict[str, Any], dropped_query: bool) -> int | None:
    """The N of "k of N": the images a method could have returned (the matching ones of a
    filtered search, else its index), less an image_id search's query when it was found;
    None for a method that did not search (no model yet)."""
    size = outcome.get("matching", outcome.get("index_size"))
    return None if size is None else max(0, size - dropped_query)
