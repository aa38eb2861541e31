"""The autoencoder worker service: trains on the catalogue, embeds, searches its index.

Start:  python -m services.autoencoder search index   (and another process: ... train)

Model versions: a training run stores its model in Redis under a new version, fills a new
index for it from the whole catalogue while the previous version keeps answering, then
switches the active version in one write. Images added meanwhile are embedded into both
(``index_embedders`` returns the active version and every version being built).
"""

import hashlib
import json
import logging
import threading
import time
from collections import OrderedDict
from typing import Any

from celery import Task
from celery.exceptions import Ignore

from shared import keys, names
from shared.celery_app import make_celery
from shared.contracts import (
    Activation,
    ActivationCheck,
    FitFusionTask,
    FusionWeights,
    TrainResult,
    TrainTaskPayload,
)
from shared.fusion import DEFAULT_CANDIDATES, store_fit, stored_fit
from shared.logs import configure_logging
from shared.model_store import ModelFile, ModelStore
from shared.runtime.worker import TRANSIENT_ERRORS, Embedder, MethodService, register_method_tasks

from .settings import AutoencoderSettings

log = logging.getLogger(__name__)

METHOD = "autoencoder"
# Loaded model versions kept in memory: the active one, one being built, one just replaced.
MODELS_IN_MEMORY = 3
PREVIEW_IMAGES = 8  # validation images shown above their reconstructions


class AutoencoderService(MethodService):
    method = METHOD

    def __init__(self, settings: AutoencoderSettings) -> None:
        super().__init__(settings, batch_size=settings.autoencoder_batch_size)
        self.ae_settings = settings
        self._embedders: OrderedDict[str, Embedder] = OrderedDict()
        self._lock = threading.Lock()
        self._precision_set = False
        self.models = ModelStore(self.redis)

    def load(self) -> None:
        """Set up TensorFlow and load the models in use now (if any) before taking work."""
        if not self._precision_set:
            from shared.runtime.ml import configure_precision

            policy = configure_precision(self.ae_settings.autoencoder_precision)
            self._precision_set = True
            log.info("precision", extra={"policy": policy})
        for embedder in self.index_embedders():
            log.info("model loaded", extra={"version": embedder.version})

    def embedder(self, version: str) -> Embedder:
        with self._lock:
            if version in self._embedders:
                self._embedders.move_to_end(version)
                return self._embedders[version]
        blob = self.models.blob(METHOD, version)
        if blob is None:
            raise LookupError(f"autoencoder model version {version!r} is not stored")
        from .model import AutoencoderEmbedder

        return self.remember(AutoencoderEmbedder(blob, version, batch_size=self.batch_size))

    def remember(self, embedder: Embedder) -> Embedder:
        """Keep a loaded model, dropping the least recently used beyond MODELS_IN_MEMORY."""
        with self._lock:
            self._embedders[embedder.version] = embedder
            while len(self._embedders) > MODELS_IN_MEMORY:
                dropped, _ = self._embedders.popitem(last=False)
                self.drop_replicas_except(set(self._embedders))
                log.info("model unloaded", extra={"version": dropped})
        return embedder

    def embedder_of(self, version: str) -> Embedder | None:
        try:
            return self.embedder(version)
        except LookupError:
            return None

    def search_embedder(self) -> Embedder | None:
        active = self.store.versions(METHOD).active
        return self.embedder(active) if active else None

    def index_embedders(self) -> list[Embedder]:
        return [self.embedder(v) for v in self.store.versions(METHOD).to_fill()]

    def not_ready_reason(self) -> dict[str, str]:
        return {
            "reason": "not_trained",
            "message": "the autoencoder has no trained model yet: start a training with "
            "POST /api/v1/models/autoencoder/trainings",
        }

    def train(self, job_id: str, options: dict[str, Any], report) -> TrainResult:
        """Train on the current catalogue, build the new version's index, then activate it."""
        from shared.runtime.ml import decode_images

        from .model import AutoencoderEmbedder
        from .training import (
            EpochProgress,
            TrainingOptions,
            loss_curve_png,
            reconstruction_preview_png,
            split_validation,
            train_autoencoder,
        )

        self.load()
        cfg = self.ae_settings
        options = dict(options)
        always_activate = bool(options.pop("always_activate", False))
        training_options = TrainingOptions.from_mapping(
            {
                "latent_dim": cfg.autoencoder_latent_dim,
                "epochs": cfg.autoencoder_epochs,
                "patience": cfg.autoencoder_patience,
                "batch_size": cfg.autoencoder_batch_size,
                "validation_fraction": cfg.autoencoder_validation_fraction,
                "contrastive_weight": cfg.autoencoder_contrastive_weight,
                "time_budget_seconds": cfg.autoencoder_time_budget_seconds or None,
                **options,
            }
        )
        ids = self.catalogue.ids()
        report({"phase": "loading", "images": len(ids)})
        stored = [
            (i, jpeg) for i, jpeg in zip(ids, self.catalogue.get_images(ids), strict=True) if jpeg
        ]
        trained_ids, jpegs = [i for i, _ in stored], [jpeg for _, jpeg in stored]
        del stored
        if len(jpegs) < 2:
            raise ValueError("training needs at least 2 catalogue images")
        images = decode_images(jpegs, cfg.autoencoder_input_size)
        del jpegs

        def on_epoch(progress: EpochProgress) -> None:
            report({"phase": "training", **progress.__dict__})

        outcome = train_autoencoder(images, training_options, on_epoch)
        version = (
            time.strftime("ae-%Y%m%dT%H%M%SZ-", time.gmtime())
            + hashlib.sha256(outcome.model_bytes).hexdigest()[:8]
        )
        embedder = AutoencoderEmbedder(outcome.model_bytes, version, batch_size=self.batch_size)
        # The preview shows validation images: ones the model never trained on.
        _, held_out = split_validation(
            len(images), training_options.validation_fraction, training_options.seed
        )
        held_out_ids = [trained_ids[i] for i in held_out]
        sample = images[held_out[:PREVIEW_IMAGES]]
        preview = reconstruction_preview_png(sample, embedder.reconstruct(sample))
        del images
        meta = {
            "version": version,
            "created_at": time.time(),
            "job_id": job_id,
            "input_size": outcome.input_size,
            "latent_dim": outcome.latent_dim,
            "images": outcome.image_count,
            "train_images": outcome.train_count,
            "validation_images": outcome.val_count,
            "epochs_run": outcome.epochs_run,
            "best_epoch": outcome.best_epoch,
            "best_val_loss": outcome.best_val_loss,
            "stopped": outcome.stopped,
            "training_seconds": round(outcome.seconds, 2),
            "history": outcome.history,
        }
        # Register the version as "being built" before listing the catalogue: an image added
        # after this point is embedded into the new index by its own indexing task.
        artifacts = {"loss_curve": loss_curve_png(outcome.history), "preview": preview}
        model = ModelFile(outcome.model_bytes, json.dumps(meta), artifacts)
        self.models.save(METHOD, version, model, building=True)
        self.remember(embedder)
        ids = self.catalogue.ids()
        step = max(self.batch_size, 256)
        for start in range(0, len(ids), step):
            report(
                {"phase": "embedding", "embedded": start, "images": len(ids), "version": version}
            )
            self.embed_into_index(embedder, ids[start : start + step])
        report({"phase": "checking", "version": version})
        activation = self.activation_decision(
            embedder, held_out_ids, training_options, always=always_activate
        )
        if activation.activated:
            self.store.activate(METHOD, version, previous=self.store.versions(METHOD).active)
        else:
            self.store.keep_as_candidate(METHOD, version)
        self.models.record(
            METHOD, version, {"activation": activation.model_dump(mode="json", exclude_none=True)}
        )
        log.info(
            "model activated" if activation.activated else "model kept as a candidate",
            extra={"job_id": job_id, "version": version, "reason": activation.reason},
        )
        if activation.activated:  # a candidate changes no answer: the last fit stands
            report({"phase": "fitting fusion", "version": version})
            self.refit_fusion_after_training(job_id)
        return TrainResult(
            version=version,
            index_size=self.store.size(METHOD, version),
            activation=activation,
            **{k: v for k, v in meta.items() if k not in ("history", "version")},
        )

    def activation_decision(
        self, new: Embedder, held_out_ids: list[str], options, *, always: bool
    ) -> Activation:
        """Whether a new version (its index complete) may replace the active one: only if
        it scores at least as well on the same check (services/autoencoder/activation_check.py)."""
        from shared.runtime.ml import decode_images

        from .activation_check import (
            VIEW_CHECK_IMAGES,
            CheckPlan,
            augmented_views,
            label_p_at_1,
            label_plan,
            self_retrieval,
        )

        active = self.store.versions(METHOD).active
        if active is None:
            return Activation(activated=True, reason="the first version: there was none to compare")
        current = self.embedder(active)
        indexes = {embedder.version: self.whole_index(embedder) for embedder in (new, current)}
        ids = self.catalogue.ids()
        indexed = {i for i in ids if all(i in index for index in indexes.values())}
        labels = {
            meta.id: str(meta.metadata["label"])
            for meta in self.catalogue.get_metas(ids).values()
            if meta.metadata.get("label") not in (None, "")
        }
        plan = label_plan(labels, indexed)
        if plan is not None:
            scores = {v: label_p_at_1(index, plan) for v, index in indexes.items()}
        else:
            # Held-out images first, topped up with others when the split is small.
            pool = [i for i in dict.fromkeys(held_out_ids + ids) if i in indexed]
            plan = CheckPlan("augmented_self_retrieval", pool[:VIEW_CHECK_IMAGES], {})
            if not plan.query_ids:
                return Activation(activated=True, reason="no image both indexes hold to compare on")
            jpegs = self.catalogue.get_images(plan.query_ids)
            scores = {}
            for embedder in (new, current):
                images = decode_images(jpegs, embedder.input_size)
                views = augmented_views(images, options.min_crop_area, options.jitter)
                scores[embedder.version] = self_retrieval(
                    indexes[embedder.version], plan, embedder.embed(views)
                )
        check = ActivationCheck(
            kind=plan.kind,
            images=len(plan.query_ids),
            score=round(scores[new.version], 4),
            active_version=active,
            active_score=round(scores[active], 4),
        )
        measure = {
            "label_p_at_1": "leave-one-out P@1 over the labelled images",
            "augmented_self_retrieval": "finding held-out images from augmented views",
        }[plan.kind]
        compared = f"{check.score:.3f} against {check.active_score:.3f} for {active}"
        if check.score >= check.active_score:
            return Activation(activated=True, reason=f"as good or better: {compared}", check=check)
        if always:
            return Activation(
                activated=True, reason=f"worse ({compared}), activated as asked", check=check
            )
        return Activation(
            activated=False,
            reason=f"kept as a candidate: it scored {compared} ({measure}, {check.images} "
            "images); activate it by hand if you prefer it",
            check=check,
        )

    def first_delivery(self, task_id: str, attempt: int) -> bool:
        """Claim a training task's run; False when this task (and attempt) ran already.

        A training is acknowledged on receipt, yet a message has been seen delivered again,
        with the same task id, tens of milliseconds after its run finished: a second run
        would train and store one more version. A retry is a new attempt, so it may run.
        """
        claimed = self.redis.set(
            keys.training_run(METHOD, task_id, attempt),
            time.time(),
            nx=True,
            ex=self.settings.job_ttl_seconds,
        )
        return bool(claimed)

    def fit_fusion(self, candidates: int) -> FusionWeights:
        """Fit the fused list's weights to the catalogue's labels and store them."""
        from shared.runtime.fusion_fit import fit_catalogue

        fit = fit_catalogue(self.catalogue, candidates, self.store)
        store_fit(self.redis, fit)
        log.info(
            "fusion fitted",
            extra={"source": fit.source, "weights": fit.weights, "reason": fit.reason},
        )
        return fit

    def refit_fusion_after_training(self, job_id: str) -> None:
        """A new model ranks differently: fit again, at the depth the last fit used. A failed
        fit leaves the last one in place and does not fail the training."""
        previous = stored_fit(self.redis)
        candidates = (previous and previous.candidates) or DEFAULT_CANDIDATES
        try:
            self.fit_fusion(candidates)
        except (ValueError, MemoryError) as err:
            log.error("fusion fit failed", extra={"job_id": job_id, "error": str(err)})

    def renew_training_lease(self, job_id: str) -> None:
        lease = keys.training_lease(METHOD)
        if (self.redis.get(lease) or b"").decode() == job_id:
            self.redis.expire(lease, keys.TRAINING_LEASE_SECONDS)

    def release_training_lease(self, job_id: str) -> None:
        lease = keys.training_lease(METHOD)
        if (self.redis.get(lease) or b"").decode() == job_id:
            self.redis.delete(lease)


settings = AutoencoderSettings()
configure_logging(settings.log_level, service="autoencoder")
app = make_celery(settings, "autoencoder")
service = AutoencoderService(settings)
register_method_tasks(app, service)


class TrainTask(Task):
    def after_return(self, status, retval, task_id, args, kwargs, einfo) -> None:
        # After the result is stored: a client never sees the lease gone while the job still
        # looks running (which would read as a dead trainer).
        service.release_training_lease(args[0])


@app.task(
    name=names.AUTOENCODER_TRAIN,
    base=TrainTask,
    bind=True,
    # Acknowledged on receipt: a training outlives the broker's visibility timeout and must
    # not start twice. If its worker dies, the lease lapses and the job reads as failed.
    acks_late=False,
    autoretry_for=TRANSIENT_ERRORS,
    retry_backoff=True,
    max_retries=3,
    soft_time_limit=3 * 3600,
    time_limit=3 * 3600 + 300,
)
def train(self, job_id: str, options: dict[str, Any]) -> dict[str, Any]:
    payload = TrainTaskPayload(job_id=job_id, options=options)
    if not service.first_delivery(self.request.id, self.request.retries):
        # Ignore: no state is stored, so the first run's result stays as it was.
        log.warning(
            "training task delivered again; skipped",
            extra={"job_id": job_id, "task_id": self.request.id},
        )
        raise Ignore()
    log.info("training started", extra={"job_id": job_id, "options": payload.options})

    def report(progress: dict[str, Any]) -> None:
        service.renew_training_lease(job_id)
        self.update_state(state="PROGRESS", meta={**progress, "updated_at": time.time()})

    return service.train(job_id, payload.options, report).to_json()


@app.task(
    name=names.AUTOENCODER_FIT_FUSION,
    autoretry_for=TRANSIENT_ERRORS,
    retry_backoff=True,
    max_retries=3,
    soft_time_limit=600,
    time_limit=660,
)
def fit_fusion(job_id: str, candidates: int) -> dict[str, Any]:
    payload = FitFusionTask(job_id=job_id, candidates=candidates)
    return service.fit_fusion(payload.candidates).to_json()
