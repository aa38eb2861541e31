"""The autoencoder network: shapes, layer wiring, size, and storage as bytes."""

import keras
import numpy as np
import pytest

from services.autoencoder.model import (
    LATENT_LAYER,
    AutoencoderEmbedder,
    build_autoencoder,
    float32_copy,
    model_from_bytes,
    model_to_bytes,
)

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

    latent = parts.encoder.predict(images, verbose=0)
    reconstruction = parts.autoencoder.predict(images, verbose=0)

    assert latent.shape == (3, latent_dim)
    assert parts.decoder.output_shape == (None, input_size, input_size, 3)
    assert reconstruction.shape == (3, input_size, input_size, 3)
    assert 0.0 <= reconstruction.min() and reconstruction.max() <= 1.0
    # The latent is L2-normalised: Euclidean distance then ranks like cosine similarity.
    np.testing.assert_allclose(np.linalg.norm(latent, axis=1), 1.0, rtol=1e-5)
    # The stored (float32) copy keeps the architecture, normalisation included.
    copy = float32_copy(parts.autoencoder)
    np.testing.assert_array_equal(copy.predict(images, verbose=0), reconstruction)


def conv_sides(model: keras.Model) -> list[int]:
    """Spatial side of each convolution's output, in layer order."""
    return [int(layer.output.shape[1]) for layer in model.layers if isinstance(layer, CONV_TYPES)]


def test_every_conv_reads_the_previous_layer(tiny):
    # The article's third Conv2D was applied to the input: Keras then silently dropped the
    # two layers before it from the model. Each layer here must read the one before it, and
    # all the convolutions must be there, halving (encoder) or doubling (decoder) the size.
    for half in (tiny.encoder, tiny.decoder):
        assert chain_breaks(half) == []
    assert conv_sides(tiny.encoder) == [16, 16, 8, 8, 4, 4, 2, 2, 2]
    assert conv_sides(tiny.decoder) == [4, 8, 16, 32, 32]
    assert [layer.name for layer in tiny.autoencoder.layers[1:]] == ["encoder", "decoder"]
    images = random_images(2, 32).astype(np.float32)
    chained = tiny.decoder.predict(tiny.encoder.predict(images, verbose=0), verbose=0)
    np.testing.assert_allclose(tiny.autoencoder.predict(images, verbose=0), chained, atol=1e-6)


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
    # No dense layer at full resolution (the article's had 67M parameters): the only one maps
    # the latent to the 8 x 8 grid the decoder starts from.
    dense = [
        layer
        for layer in parts.encoder.layers + parts.decoder.layers
        if isinstance(layer, keras.layers.Dense)
    ]
    assert [layer.units for layer in dense] == [8 * 8 * 256]
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
    expected = tiny.encoder.predict(images.astype(np.float32), verbose=0)

    data = model_to_bytes(tiny.autoencoder)
    embedder = AutoencoderEmbedder(data, "v-test", batch_size=2)
    again = AutoencoderEmbedder(model_to_bytes(model_from_bytes(data)), "v-test")

    assert data[:2] == b"PK"  # a .keras file is a zip archive, not a pickle
    vectors = embedder.embed(images)
    assert vectors.dtype == np.float32 and vectors.shape == (5, 16)
    np.testing.assert_array_equal(vectors, expected)
    np.testing.assert_array_equal(again.embed(images), expected)
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
        for layer in copy.get_layer("encoder").layers + copy.get_layer("decoder").layers
        if not isinstance(layer, keras.layers.InputLayer)
    ]

    assert trained.get_layer("encoder").get_layer("enc1_down").compute_dtype == "bfloat16"
    assert {layer.compute_dtype for layer in layers} == {"float32"}
    assert copy.get_layer("encoder").get_layer(LATENT_LAYER).output.dtype == "float32"
    for a, b in zip(trained.get_weights(), copy.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(in_bf16_process, AutoencoderEmbedder(data, "v1").embed(images))
