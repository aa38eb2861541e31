"""Model versions in Redis: the one module that writes them and reads them back.

The autoencoder's trainer stores each version it trains here, index import stores the
versions it brings, and the gateway lists them, checks them and serves their training
images. Bytes and JSON only (no numpy, no Keras), so the gateway can use it too. Key layout:
shared/keys.py ("Models").
"""

import json
import time
from dataclasses import dataclass, field
from typing import Any, Final

import redis

from shared import keys

# Training artifacts kept with a model version (keys.model_artifact), and only these: a
# name is part of a Redis key, so an artifact must not name another key (":meta").
MODEL_ARTIFACTS: Final = ("loss_curve", "preview")


@dataclass(frozen=True)
class ModelFile:
    """One model version as Redis stores it: Keras' .keras bytes, meta JSON, PNG artifacts."""

    blob: bytes
    meta_json: str
    artifacts: dict[str, bytes] = field(default_factory=dict)

    def created_at(self) -> float:
        """When the version was made: its meta's ``created_at``, else now."""
        created = json.loads(self.meta_json).get("created_at")
        return created if isinstance(created, int | float) else time.time()


class ModelStore:
    """Redis operations on the model versions of one Redis database."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    # Writes
    def save(self, method: str, version: str, model: ModelFile, *, building: bool) -> bool:
        """Store a version unless it is stored already; True if it was absent.

        ``building`` also marks the version as being built (its index is to be filled), in
        the same transaction: an image added from then on is embedded into it as well.
        """
        unknown = set(model.artifacts) - set(MODEL_ARTIFACTS)
        if unknown:
            raise ValueError(
                f"unknown model artifacts {sorted(unknown)} (known: {MODEL_ARTIFACTS})"
            )
        pipe = self.redis.pipeline(transaction=True)
        if building:
            pipe.sadd(keys.building_versions(method), version)
        absent = not self.redis.exists(keys.model_blob(method, version))
        if absent:
            pipe.set(keys.model_blob(method, version), model.blob)
            pipe.set(keys.model_meta(method, version), model.meta_json)
            for name, data in model.artifacts.items():
                pipe.set(keys.model_artifact(method, version, name), data)
            pipe.zadd(keys.model_versions(method), {version: model.created_at()}, nx=True)
        pipe.execute()
        return absent

    def record(self, method: str, version: str, fields: dict[str, Any]) -> None:
        """Add fields to a stored version's meta (e.g. its training's activation decision)."""
        meta = json.loads(self.redis.get(keys.model_meta(method, version)) or "{}")
        self.redis.set(keys.model_meta(method, version), json.dumps({**meta, **fields}))

    # Reads
    def blob(self, method: str, version: str) -> bytes | None:
        """The model file of a version (None: not stored)."""
        return self.redis.get(keys.model_blob(method, version))

    def read(self, method: str, version: str) -> ModelFile | None:
        """A whole version (file, meta, artifacts) read in one transaction; None if absent."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.get(keys.model_blob(method, version))
        pipe.get(keys.model_meta(method, version))
        for name in MODEL_ARTIFACTS:
            pipe.get(keys.model_artifact(method, version, name))
        blob, meta, *artifacts = pipe.execute()
        if blob is None:
            return None
        return ModelFile(
            blob,
            (meta or b"{}").decode(),
            {n: data for n, data in zip(MODEL_ARTIFACTS, artifacts, strict=True) if data},
        )

    def versions(self, method: str) -> list[str]:
        """Every stored version, the newest first."""
        return [v.decode() for v in self.redis.zrevrange(keys.model_versions(method), 0, -1)]

    def is_stored(self, method: str, version: str) -> bool:
        return self.redis.zscore(keys.model_versions(method), version) is not None

    def metas(self, method: str, versions: list[str]) -> list[dict[str, Any]]:
        """The descriptions of ``versions`` ({} where one has none), in one round trip."""
        if not versions:
            return []
        raw = self.redis.mget([keys.model_meta(method, v) for v in versions])
        return [json.loads(meta or "{}") for meta in raw]

    def artifact(self, method: str, version: str, name: str) -> bytes | None:
        """A training image of a version (``MODEL_ARTIFACTS``); None if it has none."""
        return self.redis.get(keys.model_artifact(method, version, name))
