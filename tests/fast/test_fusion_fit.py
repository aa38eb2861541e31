"""Fitting the fusion weights to a catalogue's labels: leave-one-out on small synthetic vectors,
the choice of weights, and the record the gateway shows (against a real Redis)."""

import numpy as np
import pytest

from client.evaluation import summarise
from services.gateway.app import create_app
from services.gateway.results import fuse_rankings
from services.gateway.settings import GatewaySettings
from shared.catalogue import Catalogue
from shared.fusion import store_fit, stored_fit
from shared.images import canonicalize
from shared.index_store import IndexStore
from shared.runtime.fusion_fit import choose_share, fit_catalogue, leave_one_out
from shared.runtime.vector_index import vector_to_bytes
from tests.helpers.images import solid

CLASSES = 12


def catalogue(
    n: int = 240, vgg16_noise: float = 1.5, autoencoder_noise: float = 1.0, seed: int = 1
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Vectors of n images in CLASSES classes: each method sees the class centre plus its own
    noise (the more noise, the weaker the method), vgg16's rows L2-normalised."""
    rng = np.random.default_rng(seed)
    classes = np.arange(n) % CLASSES
    centres = rng.normal(size=(CLASSES, 32))
    vgg16 = centres[classes] + rng.normal(size=(n, 32)) * vgg16_noise
    vgg16 /= np.linalg.norm(vgg16, axis=1, keepdims=True)
    autoencoder = centres[classes][:, :8] + rng.normal(size=(n, 8)) * autoencoder_noise
    return vgg16.astype(np.float32), autoencoder.astype(np.float32), [f"c{c}" for c in classes]


def gateway_fusion_quality(vgg16, autoencoder, labels, share: float) -> dict[str, float]:
    """Leave-one-out the slow way: each image ranked by each method, fused by the gateway."""
    rankings = []
    for q in range(len(labels)):
        similarity = vgg16 @ vgg16[q]
        similarity[q] = -np.inf
        distance = ((autoencoder - autoencoder[q]) ** 2).sum(axis=1)
        distance[q] = np.inf
        lists = {
            "vgg16": [{"id": str(i), "rank": r} for r, i in enumerate(np.argsort(-similarity), 1)],
            "autoencoder": [
                {"id": str(i), "rank": r} for r, i in enumerate(np.argsort(distance), 1)
            ],
        }
        lists = {m: ranked[:50] for m, ranked in lists.items()}
        fused = fuse_rankings(lists, {"vgg16": 1 - share, "autoencoder": share}, 10)
        rankings.append((labels[q], [labels[int(r["id"])] for r in fused]))
    relevant = {label: labels.count(label) - 1 for label in set(labels)}
    return summarise(rankings, relevant)


def test_leave_one_out_measures_what_the_gateways_fusion_would_give():
    vgg16, autoencoder, labels = catalogue()
    measured = leave_one_out(vgg16, autoencoder, labels, candidates=50)
    assert measured.queries == len(labels)
    for share in (0.0, 0.3, 0.7, 1.0):
        expected = gateway_fusion_quality(vgg16, autoencoder, labels, share)
        assert measured.p_at_1[share] == pytest.approx(expected["p@1"])
        assert measured.map_at_10[share] == pytest.approx(expected["map@10"])


def test_two_methods_that_err_differently_get_fused():
    vgg16, autoencoder, labels = catalogue(vgg16_noise=1.5, autoencoder_noise=1.0)
    measured = leave_one_out(vgg16, autoencoder, labels)
    assert 0.0 < measured.share < 1.0
    best_single = max(measured.p_at_1[0.0], measured.p_at_1[1.0])
    assert measured.p_at_1[measured.share] > best_single


def test_an_autoencoder_that_adds_nothing_leaves_vgg16_alone():
    vgg16, autoencoder, labels = catalogue(vgg16_noise=0.8, autoencoder_noise=50.0)
    assert leave_one_out(vgg16, autoencoder, labels).share == 0.0


def test_an_autoencoder_far_better_than_vgg16_is_used_alone():
    vgg16, autoencoder, labels = catalogue(vgg16_noise=50.0, autoencoder_noise=0.2)
    assert leave_one_out(vgg16, autoencoder, labels).share == 1.0


def test_large_catalogues_are_subsampled_and_images_alone_in_their_class_never_queried():
    vgg16, autoencoder, labels = catalogue(n=300)
    labels[0] = "only-one"
    measured = leave_one_out(vgg16, autoencoder, labels, max_queries=100)
    assert measured.queries == 100
    everyone = leave_one_out(vgg16, autoencoder, labels, max_queries=1000)
    assert everyone.queries == 299


def test_the_choice_is_the_middle_of_the_plateau_and_a_tiny_gain_keeps_the_single_method():
    shares = [0.0, 0.25, 0.5, 0.75, 1.0]
    plateau = dict(zip(shares, [0.50, 0.60, 0.60, 0.60, 0.30], strict=True))
    assert choose_share(plateau, plateau) == 0.5
    spike = dict(zip(shares, [0.50, 0.50, 0.504, 0.50, 0.40], strict=True))
    assert choose_share(spike, spike) == 0.0
    autoencoder_better = dict(zip(shares, [0.30, 0.40, 0.50, 0.60, 0.61], strict=True))
    assert choose_share(autoencoder_better, autoencoder_better) == 1.0


def store_catalogue(client, blobs, vgg16, autoencoder, labels) -> None:
    image = canonicalize(solid((90, 90, 90), (16, 16), "JPEG"), max_side=64, max_pixels=10**6)
    catalogue, store = Catalogue(client, blobs), IndexStore(client)
    for n, label in enumerate(labels):
        catalogue.put(
            f"img-{n}", image, filename=f"{n}.jpg", metadata={"label": label} if label else {}
        )
    ids = [f"img-{n}" for n in range(len(labels))]
    for method, version, rows in (
        ("vgg16", "vgg16-test", vgg16),
        ("autoencoder", "ae-test", autoencoder),
    ):
        store.add_vectors(
            method, version, {i: vector_to_bytes(row) for i, row in zip(ids, rows, strict=True)}
        )
        store.activate(method, version, previous=None)


def test_a_labelled_catalogue_gets_fitted_weights_that_the_gateway_shows(
    redis_url, redis_client, blobs
):
    vgg16, autoencoder, labels = catalogue(n=120)
    store_catalogue(redis_client, blobs, vgg16, autoencoder, labels)
    fit = fit_catalogue(Catalogue(redis_client, blobs))
    assert fit.source == "fitted" and fit.labelled_images == 120 and fit.classes == CLASSES
    assert fit.autoencoder_version == "ae-test" and fit.catalogue_size == 120
    assert fit.weights["autoencoder"] == pytest.approx(1 - fit.weights["vgg16"])
    assert "fitted on 120 labelled images (12 classes)" in fit.reason
    assert fit.leave_one_out["fused"].p_at_1 >= fit.leave_one_out["vgg16"].p_at_1

    store_fit(redis_client, fit)
    assert stored_fit(redis_client) == fit
    database = redis_client.connection_pool.connection_kwargs["db"]
    app = create_app(GatewaySettings(redis_url=f"{redis_url.rsplit('/', 1)[0]}/{database}"))
    shown = app.test_client().get("/api/v1/stats").get_json()["fusion"]
    assert shown["source"] == "fitted" and shown["weights"] == fit.weights
    assert app.test_client().get("/api/v1/fusion").get_json() == shown


def test_an_unlabelled_catalogue_keeps_the_default_and_says_why(redis_url, redis_client, blobs):
    vgg16, autoencoder, _ = catalogue(n=40)
    store_catalogue(redis_client, blobs, vgg16, autoencoder, [None] * 40)
    fit = fit_catalogue(Catalogue(redis_client, blobs))
    assert fit.source == "default" and fit.weights is None
    assert "0 of the 40 indexed images carry a metadata.label" in fit.reason

    store_fit(redis_client, fit)
    database = redis_client.connection_pool.connection_kwargs["db"]
    settings = GatewaySettings(
        redis_url=f"{redis_url.rsplit('/', 1)[0]}/{database}",
        fusion_weights={"vgg16": 1.0, "autoencoder": 0.0},
    )
    shown = create_app(settings).test_client().get("/api/v1/stats").get_json()["fusion"]
    assert shown["source"] == "default" and shown["weights"] == {"vgg16": 1.0, "autoencoder": 0.0}
    assert shown["reason"].startswith("FUSION_WEIGHTS: 0 of the 40 indexed images")


def test_before_any_fit_the_default_applies(redis_url, redis_client, blobs):
    database = redis_client.connection_pool.connection_kwargs["db"]
    app = create_app(GatewaySettings(redis_url=f"{redis_url.rsplit('/', 1)[0]}/{database}"))
    shown = app.test_client().get("/api/v1/stats").get_json()["fusion"]
    assert shown["source"] == "default" and "no fit has run" in shown["reason"]
    assert shown["weights"] == app.extensions["settings"].fusion_weights
