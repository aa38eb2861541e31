"""Model versions in Redis: what the trainer and index import both store through ModelStore."""

import json

import pytest

from shared import keys
from shared.model_store import ModelFile, ModelStore


def model(created_at: float, **artifacts: bytes) -> ModelFile:
    return ModelFile(b"keras bytes", json.dumps({"created_at": created_at}), artifacts)


def test_a_version_is_stored_once_with_its_meta_and_artifacts(redis_client):
    store = ModelStore(redis_client)
    stored = model(100.0, loss_curve=b"\x89PNG curve", preview=b"\x89PNG preview")

    assert store.save("autoencoder", "v1", stored, building=False) is True
    assert store.save("autoencoder", "v1", model(200.0), building=False) is False

    assert store.read("autoencoder", "v1") == stored  # the second save changed nothing
    assert store.blob("autoencoder", "v1") == b"keras bytes"
    assert store.artifact("autoencoder", "v1", "preview") == b"\x89PNG preview"
    assert store.is_stored("autoencoder", "v1")
    assert redis_client.zscore(keys.model_versions("autoencoder"), "v1") == 100.0
    assert not redis_client.smembers(keys.building_versions("autoencoder"))


def test_versions_list_newest_first_with_their_metas(redis_client):
    store = ModelStore(redis_client)
    store.save("autoencoder", "old", model(1.0), building=False)
    store.save("autoencoder", "new", model(2.0), building=True)

    assert store.versions("autoencoder") == ["new", "old"]
    assert store.metas("autoencoder", ["new", "gone"]) == [{"created_at": 2.0}, {}]
    assert redis_client.smembers(keys.building_versions("autoencoder")) == {b"new"}


def test_an_absent_version_reads_as_none(redis_client):
    store = ModelStore(redis_client)
    assert store.read("autoencoder", "nope") is None
    assert store.blob("autoencoder", "nope") is None
    assert not store.is_stored("autoencoder", "nope")
    assert store.metas("autoencoder", []) == []


def test_an_artifact_that_could_name_another_key_is_refused(redis_client):
    with pytest.raises(ValueError, match="unknown model artifacts"):
        ModelStore(redis_client).save("autoencoder", "v1", model(1.0, meta=b"{}"), building=False)
    assert not redis_client.exists(keys.model_blob("autoencoder", "v1"))
