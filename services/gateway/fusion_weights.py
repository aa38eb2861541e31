"""The fused list's weights: which are in use, and when to fit them again.

A fit (``autoencoder.fit_fusion``, shared/runtime/fusion_fit.py) runs in the autoencoder
worker after each training, when the catalogue has grown by FUSION_REFIT_GROWTH since the
last fit, after an activation, and on POST /fusion/fit. The gateway only reads its record.
"""

import logging
import uuid

from shared import keys, names
from shared.contracts import FitFusionTask, FusionWeights
from shared.fusion import stored_fit, weights_in_use
from shared.index_store import IndexStore

from .context import catalogue, celery, redis_client, settings
from .errors import ApiError
from .jobs import SEND_RETRY_POLICY

log = logging.getLogger(__name__)


def in_use() -> FusionWeights:
    """The weights searches are fused with now, and how they were obtained."""
    return weights_in_use(stored_fit(redis_client()), settings().fusion_weights)


def request_fit(trigger: str) -> str:
    """Queue a fit on the autoencoder worker; its task id. 409 before a first model."""
    if IndexStore(redis_client()).versions("autoencoder").active is None:
        raise ApiError(
            409,
            "not_trained",
            "the fusion is fitted on both methods' vectors: train the autoencoder first",
        )
    task = FitFusionTask(job_id=uuid.uuid4().hex, candidates=settings().fusion_candidates)
    app = celery()
    app.send_task(
        names.AUTOENCODER_FIT_FUSION,
        args=task.as_args(),
        task_id=task.job_id,
        queue=app.conf.task_routes[names.AUTOENCODER_FIT_FUSION]["queue"],
        retry=True,
        retry_policy=SEND_RETRY_POLICY,
    )
    log.info("fusion fit queued", extra={"task_id": task.job_id, "trigger": trigger})
    return task.job_id


def refit_if_catalogue_grew() -> str | None:
    """Queue a fit once the catalogue holds FUSION_REFIT_GROWTH more images than at the last
    fit (or the last fit queued for growth); its task id, or None."""
    growth = settings().fusion_refit_growth
    client = redis_client()
    if growth <= 0 or IndexStore(client).versions("autoencoder").active is None:
        return None
    fit = stored_fit(client)
    requested = int(client.get(keys.FUSION_FIT_REQUESTED_SIZE) or 0)
    size = catalogue().size()
    if size < max(fit.catalogue_size if fit else 0, requested) * (1 + growth):
        return None
    client.set(keys.FUSION_FIT_REQUESTED_SIZE, size)
    return request_fit("catalogue_growth")
