"""The VGG16 embedder on real ImageNet weights: shapes, norms, determinism, bfloat16."""

import io
import shutil

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from services.vgg16.model import Vgg16Embedder
from services.vgg16.settings import Vgg16Settings
from services.vgg16.weights import CONVERTED_FILE, WeightsUnavailableError
from shared.runtime.ml import (
    cpu_bfloat16_flags,
    cpu_supports_bfloat16,
    decode_images,
    policy_for,
)
from tests.helpers.images import jpeg

BATCH = 4  # small, so warm-up is quick and 6 images span two batches


def photo_like(seed: int) -> Image.Image:
    """A scene with a background gradient, textured noise and a few coloured shapes."""
    rng = np.random.default_rng(seed)
    width, height = (320, 240) if seed % 2 else (256, 300)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, np.pi)
    ramp = (np.cos(angle) * xx / width + np.sin(angle) * yy / height + 1) / 2
    low, high = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    background = low + ramp[..., None] * (high - low)
    noise = rng.normal(0, 25, (height, width, 3))
    image = Image.fromarray(np.clip(background + noise, 0, 255).astype(np.uint8))
    image = image.filter(ImageFilter.GaussianBlur(1.5))
    draw = ImageDraw.Draw(image)
    for _ in range(rng.integers(2, 5)):
        x0, y0 = rng.integers(0, width - 60), rng.integers(0, height - 60)
        x1, y1 = x0 + rng.integers(40, 160), y0 + rng.integers(40, 160)
        fill = tuple(int(c) for c in rng.integers(0, 256, 3))
        shape = rng.integers(0, 3)
        if shape == 0:
            draw.ellipse((x0, y0, x1, y1), fill=fill, outline=(0, 0, 0), width=3)
        elif shape == 1:
            draw.rectangle((x0, y0, x1, y1), fill=fill)
        else:
            draw.polygon([(x0, y1), ((x0 + x1) // 2, y0), (x1, y1)], fill=fill)
    for _ in range(10):  # stripes: some high-frequency structure
        x = int(rng.integers(0, width))
        draw.line((x, 0, x + int(rng.integers(-80, 80)), height), fill=(255, 255, 255), width=2)
    return image


@pytest.fixture(scope="module")
def photos() -> np.ndarray:
    return decode_images([jpeg(photo_like(seed)) for seed in range(6)], 224)


def make_embedder(weights_dir, precision: str) -> Vgg16Embedder:
    return Vgg16Embedder(
        Vgg16Settings(
            vgg16_weights_dir=weights_dir,
            vgg16_weights_path=None,
            vgg16_precision=precision,
            vgg16_batch_size=BATCH,
        )
    )


@pytest.fixture(scope="module")
def embedder(vgg16_weights_dir) -> Vgg16Embedder:
    embedder = make_embedder(vgg16_weights_dir, "float32")
    embedder.load()
    return embedder


@pytest.fixture(scope="module")
def vectors(embedder, photos) -> np.ndarray:
    """float32 embeddings of ``photos``, computed once for the tests that only read them."""
    return embedder.embed(photos)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1)


# Input pipeline (shared/runtime/ml.py)


def test_decode_images_squashes_every_mode_to_rgb():
    grey = Image.linear_gradient("L").resize((300, 120))
    rgba = Image.new("RGBA", (50, 90), (10, 200, 30, 128))
    png = io.BytesIO()
    rgba.save(png, "PNG")
    batch = decode_images([jpeg(photo_like(1)), jpeg(grey), png.getvalue()] * 2, 224)
    assert batch.shape == (6, 224, 224, 3)
    assert batch.dtype == np.uint8
    assert np.array_equal(batch[:3], batch[3:])  # deterministic, in input order
    assert np.array_equal(batch[1, ..., 0], batch[1, ..., 2])  # grey stays grey
    assert decode_images([], 224).shape == (0, 224, 224, 3)


def test_decode_images_names_the_broken_image():
    with pytest.raises(ValueError, match="image 1 "):
        decode_images([jpeg(photo_like(0)), b"not an image"], 224)


def test_bfloat16_detection_reads_cpu_flags(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16\n")
    assert cpu_supports_bfloat16(cpuinfo)
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f\n")
    assert not cpu_supports_bfloat16(cpuinfo)
    assert not cpu_supports_bfloat16(tmp_path / "missing")
    cpuinfo.write_text("flags\t\t: fpu avx512_bf16 amx_tile amx_bf16\n")
    assert cpu_bfloat16_flags(cpuinfo) == {"avx512_bf16", "amx_bf16"}
    assert policy_for("auto", bf16_supported=True) == "mixed_bfloat16"
    assert policy_for("auto", bf16_supported=False) == "float32"
    assert policy_for("float32", bf16_supported=True) == "float32"
    assert policy_for("bfloat16", bf16_supported=False) == "mixed_bfloat16"


# Embeddings


def test_embedder_describes_its_vectors(embedder):
    assert embedder.method == "vgg16"
    assert embedder.version == "vgg16-imagenet-pool512"
    assert (embedder.input_size, embedder.dim, embedder.metric) == (224, 512, "cosine")
    assert embedder.precision == "float32"
    assert embedder.weights is not None and not embedder.weights.include_top


def test_embeddings_are_unit_float32_rows(vectors):
    assert vectors.shape == (6, 512)
    assert vectors.dtype == np.float32
    assert np.all(np.isfinite(vectors))
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_same_image_gives_the_same_vector(embedder, photos, vectors):
    first = vectors
    assert np.array_equal(first, embedder.embed(photos))
    # Alone, or at another place in another batch: the same vector up to float rounding.
    alone = embedder.embed(photos[5:6])
    assert cosines(alone, first[5:6])[0] > 0.99999
    twice = embedder.embed(photos[[2, 2]])
    np.testing.assert_allclose(twice[0], twice[1], atol=1e-6)


def test_different_images_give_different_vectors(vectors):
    similarity = vectors @ vectors.T
    off_diagonal = similarity[~np.eye(len(vectors), dtype=bool)]
    assert off_diagonal.max() < 0.98


def test_empty_batch_and_bad_input(embedder):
    assert embedder.embed(np.zeros((0, 224, 224, 3), np.uint8)).shape == (0, 512)
    with pytest.raises(ValueError, match="shape"):
        embedder.embed(np.zeros((2, 64, 64, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        embedder.embed(np.zeros((2, 224, 224, 3), np.float32))


def test_load_happens_once(embedder):
    forward = embedder._forward
    embedder.load()
    assert embedder._forward is forward


@pytest.fixture
def restore_global_policy():
    import keras

    previous = keras.mixed_precision.global_policy().name
    yield
    keras.mixed_precision.set_global_policy(previous)  # the policy is process-wide


@pytest.mark.skipif(
    not cpu_supports_bfloat16(), reason="this CPU has no bfloat16 units (avx512_bf16/amx_bf16)"
)
def test_bfloat16_agrees_with_float32(photos, vectors, vgg16_weights_dir, restore_global_policy):
    import keras

    before = keras.mixed_precision.global_policy().name
    bf16 = make_embedder(vgg16_weights_dir, "bfloat16")
    bf16.load()
    assert bf16.precision == "mixed_bfloat16"
    assert keras.mixed_precision.global_policy().name == before  # load() leaves it as found
    fast = bf16.embed(photos)
    assert fast.dtype == np.float32
    agreement = cosines(fast, vectors)
    assert agreement.mean() >= 0.999, agreement


def test_weights_that_are_not_imagenet_are_refused(vgg16_weights_dir, tmp_path):
    import h5py

    tampered = tmp_path / "other.weights.h5"
    shutil.copyfile(vgg16_weights_dir / CONVERTED_FILE, tampered)
    with h5py.File(tampered, "r+") as h5:
        h5["layers/conv2d/vars/0"][0, 0, 0, 0] = 0.5  # block1_conv1 kernel
    embedder = Vgg16Embedder(
        Vgg16Settings(vgg16_weights_path=tampered, vgg16_precision="float32", vgg16_batch_size=1)
    )
    with pytest.raises(WeightsUnavailableError, match="not VGG16's ImageNet weights"):
        embedder.load()
    assert not embedder.loaded
