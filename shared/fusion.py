"""The fused list's constants and the weights in use, as the gateway and the workers share them.

The fused list is weighted reciprocal rank fusion: an image scores the sum, over the methods
that returned it, of the method's weight / (RRF_K + its rank there). Its weights are fitted
per catalogue from the catalogue's own labels (shared/runtime/fusion_fit.py, run by the
autoencoder worker) and stored under ``keys.FUSION_WEIGHTS``; without a fit the gateway's
FUSION_WEIGHTS setting applies. No numpy here: the gateway imports this module.
"""

from typing import Final

import redis

from shared import keys
from shared.contracts import FusionWeights

# Reciprocal rank fusion constant (Cormack et al., 2009): damps the weight of the very top ranks
# so one method's first hit does not drown the other method's agreement lower down.
RRF_K: Final = 60
# Results each method returns for the fusion to weigh (FUSION_CANDIDATES' default; a fit
# ranks the same depth).
DEFAULT_CANDIDATES: Final = 50
# A fit needs this many labelled images that share their label with another, in at least two
# classes; below that leave-one-out measures noise, and the default weights apply.
MIN_LABELLED_IMAGES: Final = 20


def stored_fit(client: redis.Redis) -> FusionWeights | None:
    """The last fit's record, or None when no fit has run on this Redis."""
    raw = client.get(keys.FUSION_WEIGHTS)
    return FusionWeights.model_validate_json(raw) if raw else None


def store_fit(client: redis.Redis, fit: FusionWeights) -> None:
    client.set(keys.FUSION_WEIGHTS, fit.model_dump_json(exclude_unset=False))


def weights_in_use(fit: FusionWeights | None, default: dict[str, float]) -> FusionWeights:
    """The weights the gateway fuses with: the fit's, else ``default`` (FUSION_WEIGHTS), with
    the reason either way."""
    if fit is None:
        return FusionWeights(
            weights=default,
            source="default",
            # Shown on the web page as it is: words for people, not routes.
            reason="FUSION_WEIGHTS: no fit has run on this catalogue yet (one runs after each "
            "autoencoder training, and whenever one is asked for)",
        )
    if fit.weights is None:
        return fit.model_copy(
            update={"weights": default, "reason": f"FUSION_WEIGHTS: {fit.reason}"}
        )
    return fit
