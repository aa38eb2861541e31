"""The autoencoder's network, its storage as bytes, and the embedder that serves searches.

Layout (input ``S`` x ``S`` RGB, ``S`` a multiple of 16)::

    encoder  Rescaling(1/255) -> 4 stages of [Conv 3x3 stride 2, Conv 3x3] (S -> S/16),
             each conv followed by BatchNorm (default) and ReLU
             -> Conv 1x1 to latent_dim -> global average pool -> L2 normalise = "latent"
    decoder  latent -> Dense to (S/16 x S/16 x C) -> 4 x Conv2DTranspose stride 2 (narrowing)
             -> Conv 3x3 sigmoid = reconstruction in [0, 1]

Compared with the article's model: every downsampling is a strided convolution, so there is
no dense layer at full resolution (its 67M-parameter layer); each convolution reads the layer
before it (its third ``Conv2D`` read the input); input and latent size are parameters.

The latent is pooled over space and L2-normalised because it is used for retrieval, not only
for reconstruction: pooling makes it insensitive to where the product sits in the photo, and
on the unit sphere Euclidean distance ranks like cosine similarity. The decoder reads that
same vector, so the search vector is exactly the bottleneck the decoder is trained on.

BatchNorm is the default: with it the contrastive training got further in 7 epochs than
without in 14 (P@1 0.269 vs 0.240); GroupNorm was slower on CPU and learnt less in the same
time (tools/autoencoder_research.py).

Models are stored in Keras' own ``.keras`` format (no pickle) and travel as bytes through
Redis, so every replica loads the same file.
"""

import os
import tempfile
from typing import NamedTuple

import keras
import numpy as np

LATENT_LAYER = "latent"
RECONSTRUCTION_LAYER = "reconstruction"
STAGES = 4  # four stride-2 stages: the input size must be a multiple of 2**STAGES
DEFAULT_WIDTHS = (32, 64, 128, 256)
NORMS = ("none", "group", "batch")


class Autoencoder(NamedTuple):
    """The full model (image -> reconstruction) and its two halves sharing its layers."""

    autoencoder: keras.Model
    encoder: keras.Model
    decoder: keras.Model


def build_autoencoder(
    input_size: int = 48,
    latent_dim: int = 128,
    widths: tuple[int, ...] = DEFAULT_WIDTHS,
    norm: str = "batch",
    dtype: str | None = None,
) -> Autoencoder:
    """Build encoder, decoder and the autoencoder that chains them (untrained)."""
    if len(widths) != STAGES:
        raise ValueError(f"widths needs {STAGES} entries, got {len(widths)}")
    if input_size < 2**STAGES or input_size % 2**STAGES:
        raise ValueError(f"input_size must be a positive multiple of {2**STAGES}, got {input_size}")
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    if latent_dim < 2:
        raise ValueError(f"latent_dim must be at least 2, got {latent_dim}")
    # dtype=None follows the global Keras policy (float32 or mixed_bfloat16 for training);
    # the saved copy is rebuilt with "float32" so stored models do not depend on the CPU.
    kw = {"dtype": dtype}

    image = keras.Input((input_size, input_size, 3), name="image", dtype="float32")
    x = keras.layers.Rescaling(1.0 / 255.0, name="scale", **kw)(image)
    for i, width in enumerate(widths, start=1):
        x = _conv(x, width, 2, f"enc{i}_down", norm, kw)
        x = _conv(x, width, 1, f"enc{i}_conv", norm, kw)
    x = keras.layers.Conv2D(latent_dim, 1, name="enc_project", **kw)(x)
    x = keras.layers.GlobalAveragePooling2D(name="enc_pool", **kw)(x)
    # The search vector is float32 whatever the training precision.
    latent = keras.layers.UnitNormalization(name=LATENT_LAYER, dtype="float32")(x)
    encoder = keras.Model(image, latent, name="encoder")

    side = input_size // 2**STAGES
    code = keras.Input((latent_dim,), name="code", dtype="float32")
    y = keras.layers.Dense(side * side * widths[-1], activation="relu", name="dec_dense", **kw)(
        code
    )
    y = keras.layers.Reshape((side, side, widths[-1]), name="dec_reshape", **kw)(y)
    # The decoder narrows as it grows (256 -> 128 -> 64 -> 32 -> 16 channels here): a mirror
    # of the encoder's widths would spend 4x the compute at full resolution, and the
    # reconstruction is a training signal, not the product.
    for i, width in enumerate((*reversed(widths[:-1]), max(8, widths[0] // 2)), start=1):
        y = keras.layers.Conv2DTranspose(
            width, 3, strides=2, padding="same", activation="relu", name=f"dec{i}_up", **kw
        )(y)
    # Sigmoid output in float32: the loss compares it with pixels scaled to [0, 1].
    pixels = keras.layers.Conv2D(
        3, 3, padding="same", activation="sigmoid", name=RECONSTRUCTION_LAYER, dtype="float32"
    )(y)
    decoder = keras.Model(code, pixels, name="decoder")

    autoencoder = keras.Model(image, decoder(encoder(image)), name="autoencoder")
    return Autoencoder(autoencoder, encoder, decoder)


def _conv(x, width: int, stride: int, name: str, norm: str, kw: dict):
    """3x3 convolution, optional normalisation, ReLU."""
    if norm == "none":
        return keras.layers.Conv2D(
            width, 3, strides=stride, padding="same", activation="relu", name=name, **kw
        )(x)
    x = keras.layers.Conv2D(
        width, 3, strides=stride, padding="same", use_bias=False, name=name, **kw
    )(x)
    if norm == "group":
        x = keras.layers.GroupNormalization(min(8, width), name=f"{name}_norm", **kw)(x)
    else:
        x = keras.layers.BatchNormalization(momentum=0.9, name=f"{name}_norm", **kw)(x)
    return keras.layers.ReLU(name=f"{name}_relu", **kw)(x)


def split_autoencoder(autoencoder: keras.Model) -> Autoencoder:
    """Recover the encoder and decoder sub-models of a (loaded) autoencoder."""
    return Autoencoder(
        autoencoder, autoencoder.get_layer("encoder"), autoencoder.get_layer("decoder")
    )


def float32_copy(autoencoder: keras.Model) -> keras.Model:
    """The same weights in a model built with float32 layers, the form that is stored."""
    encoder = autoencoder.get_layer("encoder")
    input_size = int(encoder.input_shape[1])
    latent_dim = int(encoder.output_shape[-1])
    widths = tuple(int(encoder.get_layer(f"enc{i}_down").filters) for i in range(1, STAGES + 1))
    names = {layer.name for layer in encoder.layers}
    kind = {"group": keras.layers.GroupNormalization, "batch": keras.layers.BatchNormalization}
    norm = "none"
    if "enc1_down_norm" in names:
        layer = encoder.get_layer("enc1_down_norm")
        norm = next(k for k, cls in kind.items() if isinstance(layer, cls))
    copy = build_autoencoder(input_size, latent_dim, widths, norm, dtype="float32").autoencoder
    copy.set_weights(autoencoder.get_weights())
    return copy


def model_to_bytes(model: keras.Model) -> bytes:
    """Serialise a model to the bytes of a ``.keras`` file."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.keras")
        model.save(path)
        with open(path, "rb") as f:
            return f.read()


def model_from_bytes(data: bytes) -> keras.Model:
    """Load a model from the bytes of a ``.keras`` file (safe mode: no arbitrary code)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.keras")
        with open(path, "wb") as f:
            f.write(data)
        return keras.models.load_model(path, compile=False, safe_mode=True)


class AutoencoderEmbedder:
    """Turns images into search vectors with one stored autoencoder version."""

    method = "autoencoder"
    metric = "euclidean"

    def __init__(self, model_bytes: bytes, version: str, batch_size: int = 64) -> None:
        parts = split_autoencoder(model_from_bytes(model_bytes))
        self.version = version
        self.batch_size = batch_size
        self._autoencoder, self._encoder, self._decoder = parts
        self.input_size = int(self._encoder.input_shape[1])
        self.dim = int(self._encoder.output_shape[-1])

    def _check(self, images: np.ndarray) -> np.ndarray:
        s = self.input_size
        if images.ndim != 4 or images.shape[1:] != (s, s, 3):
            raise ValueError(f"expected images of shape (N, {s}, {s}, 3), got {images.shape}")
        return images.astype(np.float32)

    def embed(self, images: np.ndarray) -> np.ndarray:
        """Latent vectors, float32 (N, dim), for uint8 images (N, S, S, 3)."""
        if len(images) == 0:
            return np.zeros((0, self.dim), np.float32)
        out = self._encoder.predict(self._check(images), batch_size=self.batch_size, verbose=0)
        return np.asarray(out, dtype=np.float32)

    def reconstruct(self, images: np.ndarray) -> np.ndarray:
        """The autoencoder's reconstructions of uint8 images, as uint8 images."""
        if len(images) == 0:
            return np.zeros((0, self.input_size, self.input_size, 3), np.uint8)
        out = self._autoencoder.predict(self._check(images), batch_size=self.batch_size, verbose=0)
        return np.clip(np.rint(np.asarray(out, np.float32) * 255.0), 0, 255).astype(np.uint8)
