"""The autoencoder network: shapes, layer wiring, size, and storage as bytes."""

from pathlib import Path

import keras
import numpy as np
import pytest

from services.autoencoder.model import (
    LATENT_LAYER,
    AutoencoderEmbedder,
    build_autoencoder,
    decodes_the_latent,
    float32_copy,
    model_from_bytes,
    model_to_bytes,
)

FIXTURES = Path(__file__).parent / "fixtures"

CONV_TYPES = (keras.layers.Conv2D, keras.layers.Conv2DTranspose)
TINY_WIDTHS = (8, 8, 16, 16)


def chain_breaks(model: keras.Model) -> list[str]:
    """Layers whose input is not the previous layer's output (the model must be a chain)."""
    layers = model.layers
    return [
        layer.name
        for prev, layer in zip(layers, layers[1:], strict=False)
        if layer.input is not prev.output
    ]


def random_images(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def tiny():
    return build_autoencoder(32, 16, TINY_WIDTHS)


@pytest.mark.parametrize(
    ("input_size", "latent_dim", "norm"), [(32, 16, "batch"), (48, 8, "none"), (64, 32, "group")]
)
def test_shapes_follow_input_size_and_latent_dim(input_size, latent_dim, norm):
    parts = build_autoencoder(input_size, latent_dim, TINY_WIDTHS, norm)
    images = random_images(3, input_size).astype(np.float32)

    reconstruction, latent = parts.autoencoder.predict(images, verbose=0)

    assert latent.shape == (3, latent_dim)
    side = input_size // 16
    assert parts.encoder.output_shape == (None, side, side, TINY_WIDTHS[-1])
    assert parts.decoder.input_shape == parts.encoder.output_shape
    assert parts.decoder.output_shape == (None, input_size, input_size, 3)
    assert reconstruction.shape == (3, input_size, input_size, 3)
    assert 0.0 <= reconstruction.min() and reconstruction.max() <= 1.0
    # The latent is L2-normalised: Euclidean distance then ranks like cosine similarity.
    np.testing.assert_allclose(np.linalg.norm(latent, axis=1), 1.0, rtol=1e-5)
    # The stored (float32) copy keeps the architecture, normalisation included.
    copy = float32_copy(parts.autoencoder)
    for ours, theirs in zip(copy.predict(images, verbose=0), (reconstruction, latent), strict=True):
        np.testing.assert_array_equal(ours, theirs)


def conv_sides(model: keras.Model) -> list[int]:
    """Spatial side of each convolution's output, in layer order."""
    return [int(layer.output.shape[1]) for layer in model.layers if isinstance(layer, CONV_TYPES)]


def test_every_conv_reads_the_previous_layer(tiny):
    # The article's third Conv2D was applied to the input: Keras then silently dropped the
    # two layers before it from the model. Each layer here must read the one before it, and
    # all the convolutions must be there, halving (encoder) or doubling (decoder) the size.
    for part in (tiny.encoder, tiny.search_head, tiny.decoder):
        assert chain_breaks(part) == []
    assert conv_sides(tiny.encoder) == [16, 16, 8, 8, 4, 4, 2, 2]
    assert conv_sides(tiny.search_head) == [2]
    assert conv_sides(tiny.decoder) == [4, 8, 16, 32, 32]
    assert [layer.name for layer in tiny.autoencoder.layers[1:]] == [
        "encoder",
        "decoder",
        "search_head",
    ]
    # Both heads read the bottleneck: the decoder is not fed the pooled search vector.
    images = random_images(2, 32).astype(np.float32)
    bottleneck = tiny.encoder.predict(images, verbose=0)
    reconstruction, latent = tiny.autoencoder.predict(images, verbose=0)
    np.testing.assert_allclose(
        reconstruction, tiny.decoder.predict(bottleneck, verbose=0), atol=1e-6
    )
    np.testing.assert_allclose(latent, tiny.search_head.predict(bottleneck, verbose=0), atol=1e-6)


def test_the_wiring_checks_catch_the_articles_bug():
    image = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(4, 3, strides=2, padding="same")(image)
    x = keras.layers.Conv2D(4, 3, strides=2, padding="same")(x)
    x = keras.layers.Conv2D(4, 3, strides=2, padding="same", name="reads_input")(image)
    x = keras.layers.Conv2D(4, 3, strides=2, padding="same")(x)
    broken = keras.Model(image, x)

    assert conv_sides(broken) == [16, 8]  # not [16, 8, 4, 2]: two layers are gone


def test_downsampling_is_strided_and_parameters_stay_bounded():
    parts = build_autoencoder(128, 256)
    downs = [layer for layer in parts.encoder.layers if layer.name.endswith("_down")]

    assert [layer.strides for layer in downs] == [(2, 2)] * 4
    # No dense layer anywhere (the article's had 67M parameters at full resolution).
    assert not [
        layer
        for part in (parts.encoder, parts.search_head, parts.decoder)
        for layer in part.layers
        if isinstance(layer, keras.layers.Dense)
    ]
    assert parts.autoencoder.count_params() < 8_000_000
    assert build_autoencoder(64, 128).autoencoder.count_params() < 3_000_000


@pytest.mark.parametrize(
    "bad", [{"input_size": 40}, {"input_size": 8}, {"latent_dim": 1}, {"norm": "layer"}]
)
def test_rejects_sizes_it_cannot_build(bad):
    with pytest.raises(ValueError):
        build_autoencoder(**{"input_size": 32, "latent_dim": 16, **bad})


def test_bytes_round_trip_gives_identical_embeddings(tiny):
    images = random_images(5, 32)
    _, expected = tiny.autoencoder.predict(images.astype(np.float32), verbose=0)

    data = model_to_bytes(tiny.autoencoder)
    embedder = AutoencoderEmbedder(data, "v-test", batch_size=2)
    again = AutoencoderEmbedder(model_to_bytes(model_from_bytes(data)), "v-test", batch_size=2)

    assert data[:2] == b"PK"  # a .keras file is a zip archive, not a pickle
    vectors = embedder.embed(images)
    assert vectors.dtype == np.float32 and vectors.shape == (5, 16)
    # Float rounding may differ from the full model's pass; two loads of the bytes may not.
    np.testing.assert_allclose(vectors, expected, atol=1e-6)
    np.testing.assert_array_equal(again.embed(images), vectors)
    assert (embedder.method, embedder.version, embedder.metric) == (
        "autoencoder",
        "v-test",
        "euclidean",
    )
    assert (embedder.input_size, embedder.dim) == (32, 16)


def test_embedder_reconstructs_and_checks_shapes(tiny):
    embedder = AutoencoderEmbedder(model_to_bytes(tiny.autoencoder), "v1")
    images = random_images(3, 32)

    preview = embedder.reconstruct(images)

    assert preview.dtype == np.uint8 and preview.shape == images.shape
    assert embedder.embed(images[:0]).shape == (0, 16)
    with pytest.raises(ValueError, match="shape"):
        embedder.embed(random_images(2, 48))


def test_stored_copy_is_float32_after_mixed_precision_training():
    previous = keras.config.dtype_policy().name
    images = random_images(4, 32)
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        trained = build_autoencoder(32, 8, TINY_WIDTHS).autoencoder
        copy = float32_copy(trained)
        data = model_to_bytes(copy)
        # A worker whose process policy is mixed_bfloat16 still embeds in float32.
        in_bf16_process = AutoencoderEmbedder(data, "v1").embed(images)
    finally:
        keras.config.set_dtype_policy(previous)
    layers = [
        layer
        for part in ("encoder", "search_head", "decoder")
        for layer in copy.get_layer(part).layers
        if not isinstance(layer, keras.layers.InputLayer)
    ]

    assert trained.get_layer("encoder").get_layer("enc1_down").compute_dtype == "bfloat16"
    assert {layer.compute_dtype for layer in layers} == {"float32"}
    assert copy.get_layer("search_head").get_layer(LATENT_LAYER).output.dtype == "float32"
    for a, b in zip(trained.get_weights(), copy.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(in_bf16_process, AutoencoderEmbedder(data, "v1").embed(images))


def test_models_stored_before_the_decoder_read_the_bottleneck_still_serve():
    # A tiny model in the earlier layout (its decoder reads the pooled latent), stored by
    # that release with its embeddings and reconstructions: versions in users' Redis and
    # exported indexes must keep answering searches exactly as before.
    data = (FIXTURES / "autoencoder-decoder-reads-latent.keras").read_bytes()
    expected = np.load(FIXTURES / "autoencoder-decoder-reads-latent.npz")
    embedder = AutoencoderEmbedder(data, "v-old")

    assert decodes_the_latent(model_from_bytes(data))
    assert (embedder.input_size, embedder.dim) == (32, 16)
    np.testing.assert_allclose(embedder.embed(expected["images"]), expected["latent"], atol=1e-6)
    reconstruction = embedder.reconstruct(expected["images"])
    np.testing.assert_allclose(reconstruction, np.rint(expected["reconstruction"] * 255), atol=1)


def test_new_models_are_recognised_as_reading_the_bottleneck(tiny):
    assert not decodes_the_latent(model_from_bytes(model_to_bytes(tiny.autoencoder)))
