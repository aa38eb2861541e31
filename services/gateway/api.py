"""The /api/v1 routes. Views validate, store, enqueue and answer; the workers do the work."""

import json
import logging
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from celery import Celery
from celery.result import AsyncResult
from flask import Blueprint, Response, current_app, jsonify, request, url_for

from shared import keys, names
from shared.catalog import Catalog, ImageMeta
from shared.images import (
    CanonicalImage,
    ImageRejected,
    canonicalize,
    default_image_id,
    validate_image_id,
)
from shared.index_store import IndexStore
from shared.jobs import (
    FINAL_STATUSES,
    JobKind,
    JobRecord,
    new_job_id,
    overall_status,
    status_from_celery,
    timed_out,
)
from shared.model_store import ModelStore

from .app import (
    ApiError,
    given_key,
    json_body,
    key_is_valid,
    read_access,
    require_key,
    settings,
)
from .results import decorate, fuse_rankings
from .waiting import wait_for_change

log = logging.getLogger(__name__)
api = Blueprint("api", __name__)

# Sending a task when the broker is down must fail fast (the client gets 503), not hang.
SEND_RETRY_POLICY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.5}
# Results a search asks each method for beyond what it shows, so that dropping images that
# left the catalogue since the worker's index last synced still leaves k.
EXTRA_CANDIDATES = 10


def _redis():
    return current_app.extensions["redis"]


def _catalog() -> Catalog:
    return current_app.extensions["catalog"]


def _celery() -> Celery:
    return current_app.extensions["celery"]


def _accepted(body: dict[str, Any], job_id: str) -> Response:
    location = url_for("api.get_job", job_id=job_id)
    response = jsonify({**body, "job_id": job_id, "status_url": location})
    response.status_code = 202
    response.headers["Location"] = location
    return response


def _image_links(image_id: str) -> dict[str, str]:
    return {
        "url": url_for("api.get_image", image_id=image_id),
        "image_url": url_for("api.get_image_content", image_id=image_id),
        "thumbnail_url": url_for("api.get_thumbnail", image_id=image_id),
    }


def _describe(meta: ImageMeta) -> dict[str, Any]:
    return {
        "id": meta.id,
        "label": meta.label,
        "filename": meta.filename,
        "width": meta.width,
        "height": meta.height,
        "added_at": meta.added_at,
        "metadata": meta.metadata,
        **_image_links(meta.id),
    }


def _uploads() -> list:
    files = request.files.getlist("file")
    if not files:
        raise ApiError(
            400,
            "missing_file",
            "send the image as multipart/form-data in a field named 'file'",
        )
    return files


def _canonical(data: bytes) -> CanonicalImage:
    """The upload as its canonical image, decoded in one of the gateway's decode slots."""
    cfg = settings()
    with current_app.extensions["decode_slots"].slot():
        return canonicalize(
            data, max_side=cfg.stored_image_max_side, max_pixels=cfg.max_image_pixels
        )


def _deadline(kind: JobKind) -> float:
    return time.time() + settings().job_deadline_seconds[kind]


def _expires(job: JobRecord) -> datetime | None:
    """When a worker should discard the job's tasks unstarted: past the deadline nobody
    waits for a search or a training any more. Indexing goes on whatever the deadline: its
    images are in the catalogue already, and unindexed they would never be searchable."""
    if job.deadline is None or job.kind == "index":
        return None
    return datetime.fromtimestamp(job.deadline, UTC)


def _store_job(job: JobRecord) -> None:
    _redis().set(keys.job(job.id), job.to_json(), ex=settings().job_ttl_seconds)


def _send(job: JobRecord, task_name: str, method: str, part: int, args: list) -> None:
    queue = _celery().conf.task_routes[task_name]["queue"]
    _celery().send_task(
        task_name,
        args=args,
        task_id=job.task_ids(method)[part],
        queue=queue,
        expires=_expires(job),
        retry=True,
        retry_policy=SEND_RETRY_POLICY,
    )


# Images
@api.post("/images")
@require_key
def add_images():
    files = _uploads()
    cfg = settings()
    if len(files) > cfg.max_files_per_request:
        raise ApiError(
            413,
            "too_many_files",
            f"at most {cfg.max_files_per_request} files per request; send the rest in another",
        )
    ids = request.form.getlist("id")
    if ids and len(ids) != len(files):
        raise ApiError(
            400,
            "id_count_mismatch",
            f"got {len(ids)} 'id' fields for {len(files)} files: give one id per file or none",
        )
    repeated = [image_id for image_id, count in Counter(ids).items() if count > 1]
    if repeated:
        raise ApiError(
            400, "duplicate_id", f"the id {repeated[0]!r} is given to more than one file"
        )
    metadata_fields = request.form.getlist("metadata")
    if len(metadata_fields) not in (0, 1, len(files)):
        raise ApiError(
            400,
            "metadata_count_mismatch",
            "give one 'metadata' field for all files, or one per file",
        )
    metadata = [_parse_metadata(raw) for raw in metadata_fields]

    # Every file is decoded before any is stored: a 503 for want of a decode slot leaves
    # nothing half-done (stored but never indexed).
    accepted: list[tuple[int, str, CanonicalImage]] = []
    rejected: list[dict[str, Any]] = []
    for position, upload in enumerate(files):
        data = upload.read()
        try:
            image_id = validate_image_id(ids[position]) if ids else default_image_id(data)
            accepted.append((position, image_id, _canonical(data)))
        except ImageRejected as err:
            rejected.append(
                {
                    "position": position,
                    "filename": upload.filename,
                    "code": err.code,
                    "message": err.message,
                    "status": err.status,
                }
            )
    stored: list[dict[str, Any]] = []
    for position, image_id, image in accepted:
        filename = files[position].filename
        created = _catalog().put(
            image_id,
            image,
            filename=filename or None,
            metadata=metadata[position if len(metadata) > 1 else 0] if metadata else {},
        )
        stored.append({"id": image_id, "filename": filename, "created": created})

    if not stored:
        first = rejected[0]
        status = first["status"] if len(rejected) == 1 else 400
        raise ApiError(
            status,
            first["code"] if len(rejected) == 1 else "no_valid_images",
            first["message"] if len(rejected) == 1 else "none of the files could be used",
            rejected=rejected,
        )

    image_ids = list(dict.fromkeys(entry["id"] for entry in stored))
    chunk = cfg.index_chunk_size
    chunks = [image_ids[i : i + chunk] for i in range(0, len(image_ids), chunk)]
    job = JobRecord(
        id=new_job_id(),
        kind="index",
        methods=list(names.METHODS),
        params={"images": len(image_ids)},
        parts=len(chunks),
        deadline=_deadline("index"),
    )
    _store_job(job)
    for method in job.methods:
        for part, ids_chunk in enumerate(chunks):
            _send(job, names.task_embed_batch(method), method, part, [job.id, ids_chunk])
    log.info("index job queued", extra={"job_id": job.id, "images": len(image_ids)})
    body: dict[str, Any] = {"images": stored, "rejected": rejected}
    training_job_id = _retrain_if_catalogue_grew()
    if training_job_id:
        body["training_job_id"] = training_job_id
    return _accepted(body, job.id)


def _retrain_if_catalogue_grew() -> str | None:
    """Queue an autoencoder training once the catalogue holds AUTOENCODER_RETRAIN_GROWTH more
    images than the active model was trained on; the training's job id, or None.

    Measured from the larger of that count and the catalogue size at the last automatic
    start, so a training that fails is retried after the next step of growth, not on every
    upload. Nothing happens before a first model exists: that one is trained on request.
    """
    growth = settings().autoencoder_retrain_growth
    if growth <= 0:
        return None
    client = _redis()
    active = IndexStore(client).versions("autoencoder").active
    if active is None:
        return None
    meta, last_start = client.mget(
        [keys.model_meta("autoencoder", active), keys.retrain_started_at_size("autoencoder")]
    )
    trained_on = json.loads(meta or "{}").get("images", 0)
    size = _catalog().size()
    if size < max(trained_on, int(last_start or 0)) * (1 + growth):
        return None
    job_id = _queue_training({}, trigger="catalogue_growth")
    if job_id is not None:
        client.set(keys.retrain_started_at_size("autoencoder"), size)
        log.info(
            "automatic retraining queued",
            extra={"job_id": job_id, "catalogue": size, "trained_on": trained_on},
        )
    return job_id


def _parse_metadata(raw: str) -> dict[str, Any]:
    if len(raw) > 16_384:
        raise ApiError(400, "invalid_metadata", "'metadata' may be at most 16 KiB")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as err:
        raise ApiError(400, "invalid_metadata", f"'metadata' is not valid JSON: {err}") from err
    except RecursionError as err:  # "[[[[..." deeper than the parser's stack
        raise ApiError(400, "invalid_metadata", "'metadata' is nested too deeply") from err
    if not isinstance(value, dict):
        raise ApiError(400, "invalid_metadata", "'metadata' must be a JSON object")
    return value


@api.get("/images")
@read_access
def list_images():
    offset = _int_arg("offset", 0, 0, 10**9)
    limit = _int_arg("limit", 50, 1, 500)
    ids = _catalog().ids(offset, limit)
    metas = _catalog().get_metas(ids)
    return jsonify(
        {
            "total": _catalog().size(),
            "offset": offset,
            "limit": limit,
            "images": [_describe(metas[i]) for i in ids if i in metas],
        }
    )


@api.post("/images/lookup")
@read_access
def lookup_images():
    """Which of the given ids are in the catalogue (bulk clients skip what is there)."""
    body = json_body()
    ids = body.get("ids") if isinstance(body, dict) else None
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise ApiError(400, "invalid_ids", 'send a JSON body {"ids": ["...", ...]}')
    if len(ids) > 10_000:
        raise ApiError(400, "invalid_ids", "at most 10,000 ids per lookup")
    found = _catalog().existing(ids)
    return jsonify({"existing": [i for i in ids if i in found]})


def _meta_or_404(image_id: str) -> ImageMeta:
    meta = _catalog().get_meta(image_id)
    if meta is None:
        raise ApiError(404, "image_not_found", f"no image with id {image_id!r} in the catalogue")
    return meta


@api.get("/images/<image_id>")
@read_access
def get_image(image_id: str):
    return jsonify(_describe(_meta_or_404(image_id)))


def _image_response(data: bytes, mimetype: str) -> Response:
    response = Response(data, mimetype=mimetype)
    # Behind READS_REQUIRE_KEY a shared cache must neither serve an image to clients without
    # the key nor keep serving it after a delete.
    private = settings().reads_require_key
    response.headers["Cache-Control"] = "private, no-store" if private else "public, max-age=300"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def _jpeg(data: bytes | None, image_id: str) -> Response:
    if data is None:
        raise ApiError(404, "image_not_found", f"no image with id {image_id!r} in the catalogue")
    return _image_response(data, "image/jpeg")


@api.get("/images/<image_id>/content")
@read_access
def get_image_content(image_id: str):
    return _jpeg(_catalog().get_image(image_id), image_id)


@api.get("/images/<image_id>/thumbnail")
@read_access
def get_thumbnail(image_id: str):
    return _jpeg(_catalog().get_thumbnail(image_id), image_id)


@api.delete("/images/<image_id>")
@require_key
def delete_image(image_id: str):
    if not _catalog().delete(image_id):
        raise ApiError(404, "image_not_found", f"no image with id {image_id!r} in the catalogue")
    log.info("image deleted", extra={"image_id": image_id})
    return jsonify({"id": image_id, "deleted": True})


# Searches
@api.post("/searches")
@read_access
def create_search():
    cfg = settings()
    files = _uploads()
    if len(files) != 1:
        raise ApiError(400, "one_file_only", "a search takes exactly one 'file'")
    k = _int_value(request.form.get("k"), "k", cfg.default_k, 1, cfg.max_k)
    methods = _methods(request.form.getlist("methods"))
    image = _canonical(files[0].read())
    job = JobRecord(
        id=new_job_id(),
        kind="search",
        methods=methods,
        params={"k": k},
        deadline=_deadline("search"),
    )
    query_key = keys.query_image(job.id)
    pipe = _redis().pipeline(transaction=True)
    pipe.set(query_key, image.jpeg, ex=cfg.query_image_ttl_seconds)
    pipe.set(keys.job(job.id), job.to_json(), ex=cfg.job_ttl_seconds)
    pipe.execute()
    # With more than one method, each returns enough candidates for the fusion to weigh.
    candidates = k + EXTRA_CANDIDATES
    if len(methods) > 1:
        candidates = max(candidates, cfg.fusion_candidates)
    for method in methods:
        _send(job, names.task_search(method), method, 0, [job.id, query_key, candidates])
    log.info("search queued", extra={"job_id": job.id, "methods": methods, "k": k})
    return _accepted({"kind": "search", "methods": methods, "k": k}, job.id)


def _methods(raw_values: list[str]) -> list[str]:
    requested = [m.strip() for raw in raw_values for m in raw.split(",") if m.strip()]
    if not requested:
        return list(names.METHODS)
    unknown = sorted(set(requested) - set(names.METHODS))
    if unknown:
        raise ApiError(
            400,
            "unknown_method",
            f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(names.METHODS)}",
        )
    return list(dict.fromkeys(requested))


def _int_value(raw: str | None, name: str, default: int, low: int, high: int) -> int:
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError as err:
        raise ApiError(400, f"invalid_{name}", f"'{name}' must be a whole number") from err
    if not low <= value <= high:
        raise ApiError(
            400, f"invalid_{name}", f"'{name}' must be between {low} and {high}, got {value}"
        )
    return value


def _int_arg(name: str, default: int, low: int, high: int) -> int:
    return _int_value(request.args.get(name), name, default, low, high)


# Jobs
@api.get("/jobs/<job_id>")
@read_access
def get_job(job_id: str):
    raw = _redis().get(keys.job(job_id))
    if raw is None:
        raise ApiError(404, "job_not_found", f"no job with id {job_id!r} (unknown or expired)")
    job = JobRecord.from_json(raw)
    wait = _float_arg("wait", 0.0, 0.0, settings().max_wait_seconds)
    if wait <= 0:
        return jsonify(_job_view(job))
    with current_app.extensions["wait_slots"].slot() as waiting:
        if not waiting:
            # Every waiting slot is taken: answer now rather than take the last threads.
            view = _job_view(job)
            response = jsonify(view)
            if view["status"] not in FINAL_STATUSES:
                response.headers["Retry-After"] = "1"
            return response
        # A finished job is answered after one view, like a poll without wait.
        view = wait_for_change(
            lambda: _job_view(job),
            lambda: _task_records(job),
            lambda v: v["status"] in FINAL_STATUSES,
            wait,
        )
    return jsonify(view)


def _task_records(job: JobRecord) -> list[bytes | None]:
    """The raw result records of a job's tasks: one MGET, to see whether anything changed."""
    backend = _celery().backend
    ids = [tid for method in job.methods for tid in job.task_ids(method)]
    return _redis().mget([backend.get_key_for_task(tid) for tid in ids])


def _float_arg(name: str, default: float, low: float, high: float) -> float:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError as err:
        raise ApiError(400, f"invalid_{name}", f"'{name}' must be a number of seconds") from err
    if not low <= value:
        raise ApiError(400, f"invalid_{name}", f"'{name}' must be at least {low}")
    return min(value, high)  # bounded: a long wait is shortened, not refused


def _task_outcome(task: AsyncResult, job: JobRecord, now: float) -> dict[str, Any]:
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
        outcome.update(task.result)
    elif status == "failed":
        error = task.result
        outcome["error"] = f"{type(error).__name__}: {error}" if error else "the task failed"
    elif state == "PROGRESS" and isinstance(task.info, dict):
        outcome["progress"] = task.info
    return outcome


def _job_view(job: JobRecord) -> dict[str, Any]:
    celery = _celery()
    now = time.time()
    methods: dict[str, dict[str, Any]] = {}
    for method in job.methods:
        parts = [
            _task_outcome(AsyncResult(tid, app=celery), job, now) for tid in job.task_ids(method)
        ]
        methods[method] = _merge_parts(parts)
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
    if job.kind == "search":
        _add_search_results(view, job)
    return view


def _fail_if_trainer_died(job: JobRecord, outcome: dict[str, Any]) -> None:
    """A running training whose lease lapsed lost its worker: say so instead of "running"."""
    if outcome["status"] != "running":
        return
    holder = _redis().get(keys.training_lease("autoencoder"))
    if holder is None or holder.decode() != job.id:
        outcome["status"] = "failed"
        outcome["error"] = (
            "the training worker stopped before finishing (no progress for "
            f"{keys.TRAINING_LEASE_SECONDS} s); start a new training"
        )


def _merge_parts(parts: list[dict[str, Any]]) -> dict[str, Any]:
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


def _add_search_results(view: dict[str, Any], job: JobRecord) -> None:
    catalog = _catalog()
    all_ids = {r["id"] for m in view["methods"].values() for r in m.get("results", [])}
    metas = catalog.get_metas(sorted(all_ids))

    def describe(image_id: str) -> dict[str, Any] | None:
        meta = metas.get(image_id)
        if meta is None:
            return None
        return {"label": meta.label, "filename": meta.filename, **_image_links(image_id)}

    k = job.params.get("k", settings().default_k)
    weights = settings().fusion_weights
    rankings = {}
    for method, outcome in view["methods"].items():
        if "results" in outcome:
            # Images that left the catalogue go before the cut to k (the worker sent a margin
            # of extra candidates for them); ranks count what is left.
            candidates = decorate(outcome["results"], describe)
            for rank, result in enumerate(candidates, start=1):
                result["rank"] = rank
            outcome["results"] = candidates[:k]
            if candidates:
                rankings[method] = candidates
    view["fused"] = {
        "method": "weighted_reciprocal_rank_fusion",
        "higher_is_better": True,
        "methods": sorted(m for m in rankings if weights.get(m, 0) > 0),
        "weights": {m: weights.get(m, 0.0) for m in sorted(rankings)},
        "results": decorate(fuse_rankings(rankings, weights, k), describe),
    }


# Models
@api.post("/models/autoencoder/trainings")
@require_key
def start_training():
    options = json_body(empty={})
    if options is None or not isinstance(options, dict):
        raise ApiError(400, "invalid_options", "the body must be a JSON object (or empty)")
    allowed = {"epochs": (1, 500), "patience": (1, 100)}
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ApiError(
            400,
            "invalid_options",
            f"unknown option(s) {', '.join(unknown)}; allowed: {', '.join(allowed)}",
        )
    for name, (low, high) in allowed.items():
        if name in options:
            options[name] = _int_value(str(options[name]), name, 0, low, high)
    if _catalog().size() == 0:
        raise ApiError(409, "empty_catalogue", "add images before training the autoencoder")
    job_id = _queue_training(options)
    if job_id is None:
        running = (_redis().get(keys.training_lease("autoencoder")) or b"").decode()
        raise ApiError(409, "training_in_progress", "a training is already running", job_id=running)
    return _accepted({"kind": "train"}, job_id)


def _queue_training(options: dict[str, Any], trigger: str = "request") -> str | None:
    """Take the training lease and queue a training; its job id, or None if one runs."""
    job = JobRecord(
        id=new_job_id(),
        kind="train",
        methods=["autoencoder"],
        params={**options, "trigger": trigger},
        deadline=_deadline("train"),
    )
    lease_key = keys.training_lease("autoencoder")
    if not _redis().set(lease_key, job.id, nx=True, ex=keys.TRAINING_LEASE_SECONDS):
        return None
    try:
        _store_job(job)
        _send(job, names.TASK_TRAIN_AUTOENCODER, "autoencoder", 0, [job.id, options])
    except Exception:
        _redis().delete(lease_key)  # nothing was queued: do not block the next attempt
        raise
    log.info("training queued", extra={"job_id": job.id, "options": options, "trigger": trigger})
    return job.id


@api.get("/models/autoencoder")
@read_access
def list_autoencoder_models():
    client = _redis()
    store = IndexStore(client)
    active, building, _ = store.versions("autoencoder")
    models = ModelStore(client)
    versions = models.versions("autoencoder")
    metas = models.metas("autoencoder", versions)
    return jsonify(
        {
            "active": active,
            "building": building,
            "versions": [
                {
                    "version": version,
                    "active": version == active,
                    "index_size": store.size("autoencoder", version),
                    "loss_curve_url": url_for(
                        "api.get_training_artifact", version=version, artifact="loss-curve"
                    ),
                    "preview_url": url_for(
                        "api.get_training_artifact", version=version, artifact="preview"
                    ),
                    **{k: v for k, v in meta.items() if k != "history"},
                }
                for version, meta in zip(versions, metas, strict=True)
            ],
        }
    )


def _known_version(version: str) -> str:
    if not ModelStore(_redis()).is_stored("autoencoder", version):
        raise ApiError(404, "version_not_found", f"no autoencoder model version {version!r}")
    return version


@api.post("/models/autoencoder/versions/<version>/activate")
@require_key
def activate_autoencoder_version(version: str):
    """Switch searches to a stored version (a rollback when it is an older one)."""
    store = IndexStore(_redis())
    versions = store.versions("autoencoder")
    _known_version(version)
    if version in versions.building:
        raise ApiError(409, "version_not_ready", f"version {version!r} is still being built")
    if version not in versions.retained:
        indexed, catalogue = store.size("autoencoder", version), _catalog().size()
        if indexed < catalogue:
            raise ApiError(
                409,
                "index_incomplete",
                f"version {version!r} has vectors for {indexed} of {catalogue} images; "
                "train again instead",
            )
    previous = versions.active
    if previous != version:
        store.activate("autoencoder", version, previous=previous)
    log.info("model activated", extra={"version": version, "previous": previous})
    return jsonify({"active": version, "previous": previous})


@api.get("/models/autoencoder/versions/<version>/<any('loss-curve', 'preview'):artifact>.png")
@read_access
def get_training_artifact(version: str, artifact: str):
    name = {"loss-curve": "loss_curve", "preview": "preview"}[artifact]
    data = ModelStore(_redis()).artifact("autoencoder", _known_version(version), name)
    if data is None:
        raise ApiError(404, "artifact_not_found", f"version {version!r} has no {artifact} image")
    return _image_response(data, "image/png")


# Operations
@api.get("/health")
def health():
    client = _redis()
    try:
        client.ping()
    except Exception as err:  # noqa: BLE001 - any failure here means "not healthy"
        return jsonify({"status": "unavailable", "redis": f"unreachable: {err}"}), 503
    now = time.time()
    pipe = client.pipeline(transaction=False)
    queues = names.all_queues()
    for queue in queues:
        pipe.zrangebyscore(keys.workers(queue), now - keys.WORKER_STALE_SECONDS, "+inf")
        pipe.llen(queue)
    replies = pipe.execute()
    workers = {
        queue: {
            "workers": sorted(w.decode() for w in replies[2 * n]),
            "waiting": replies[2 * n + 1],
        }
        for n, queue in enumerate(queues)
    }
    missing = [queue for queue, entry in workers.items() if not entry["workers"]]
    status = "degraded" if missing else "ok"
    if settings().reads_require_key and not key_is_valid(given_key()):
        # Orchestrators and load balancers get the verdict; host names and process ids in
        # the worker names are for clients with the key.
        return jsonify({"status": status})
    body: dict[str, Any] = {"status": status, "redis": "ok"}
    if missing:
        body["missing"] = missing
        body["message"] = "no live worker consumes " + ", ".join(missing)
    body["queues"] = workers
    return jsonify(body)


@api.get("/stats")
@read_access
def stats():
    store = IndexStore(_redis())
    methods = {}
    for method in names.METHODS:
        active, building, _ = store.versions(method)
        methods[method] = {
            "model_version": active,
            "index_size": store.size(method, active) if active else 0,
            "building": {version: store.size(method, version) for version in building},
        }
    return jsonify({"catalogue_size": _catalog().size(), "methods": methods})
