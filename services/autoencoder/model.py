"""The autoencoder's network, its storage as bytes, and the embedder that serves searches.

Layout (input ``S`` x ``S`` RGB, ``S`` a multiple of 16)::

    encoder      Rescaling(1/255) -> 4 stages of [Conv 3x3 stride 2, Conv 3x3] (S -> S/16),
                 each conv followed by BatchNorm (default) and ReLU = the "bottleneck"
                 (S/16 x S/16 x widths[-1]; 3 x 3 x 256 at the default 48 px)
    search_head  bottleneck -> Conv 1x1 to latent_dim -> global average pool
                 -> L2 normalise = "latent", the search vector
    decoder      bottleneck -> 4 x Conv2DTranspose stride 2 (narrowing)
                 -> Conv 3x3 sigmoid = "reconstruction" in [0, 1]

The stored model maps an image to ``[reconstruction, latent]``.

Compared with the article's model: every downsampling is a strided convolution, so there is
no dense layer at all (its 67M-parameter layer sat at full resolution); each convolution reads
the layer before it (its third ``Conv2D`` read the input); input and latent size are
parameters.

The latent is pooled over space and L2-normalised because it is used for retrieval:
pooling makes it insensitive to where the product sits in the photo, and on the unit sphere
Euclidean distance ranks like cosine similarity. The decoder reads the bottleneck before the
pooling, not the latent: a vector pooled to be position-blind cannot say where anything was,
so a decoder reading it learnt the catalogue's mean colour (previews of uniform brown
blocks). From the bottleneck it rebuilds each image, and the search ranks as before (P@1
0.255 either way in two 150 s Grocery runs side by side). Models stored before this change
(their decoder reads the latent) still load and serve: ``latent_model`` and
``reconstruction_model`` read both layouts.

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
    """The full model (image -> [reconstruction, latent]) and the parts sharing its layers."""

    autoencoder: keras.Model
    encoder: keras.Model  # image -> bottleneck
    search_head: keras.Model  # bottleneck -> latent
    decoder: keras.Model  # bottleneck -> reconstruction


def build_autoencoder(
    input_size: int = 48,
    latent_dim: int = 128,
    widths: tuple[int, ...] = DEFAULT_WIDTHS,
    norm: str = "batch",
    dtype: str | None = None,
) -> Autoencoder:
    """Build encoder, search head, decoder and the autoencoder joining them (untrained)."""
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
    encoder = keras.Model(image, x, name="encoder")

    side = input_size // 2**STAGES
    bottleneck = keras.Input((side, side, widths[-1]), name="bottleneck")
    z = keras.layers.Conv2D(latent_dim, 1, name="enc_project", **kw)(bottleneck)
    z = keras.layers.GlobalAveragePooling2D(name="enc_pool", **kw)(z)
    # The search vector is float32 whatever the training precision.
    latent = keras.layers.UnitNormalization(name=LATENT_LAYER, dtype="float32")(z)
    search_head = keras.Model(bottleneck, latent, name="search_head")

    code = keras.Input((side, side, widths[-1]), name="code")
    y = code
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

    features = encoder(image)
    autoencoder = keras.Model(image, [decoder(features), search_head(features)], name="autoencoder")
    return Autoencoder(autoencoder, encoder, search_head, decoder)


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


def decodes_the_latent(autoencoder: keras.Model) -> bool:
    """Whether a stored model has the layout before the decoder read the bottleneck."""
    return len(autoencoder.get_layer("decoder").input_shape) == 2


def latent_model(autoencoder: keras.Model) -> keras.Model:
    """Image -> search vector, for a stored model of either layout."""
    if decodes_the_latent(autoencoder):
        return autoencoder.get_layer("encoder")
    return keras.Model(autoencoder.input, autoencoder.outputs[1], name="latent_model")


def reconstruction_model(autoencoder: keras.Model) -> keras.Model:
    """Image -> reconstruction, for a stored model of either layout."""
    if decodes_the_latent(autoencoder):
        return autoencoder
    return keras.Model(autoencoder.input, autoencoder.outputs[0], name="reconstruction_model")


def float32_copy(autoencoder: keras.Model) -> keras.Model:
    """The same weights in a model built with float32 layers, the form that is stored."""
    encoder = autoencoder.get_layer("encoder")
    input_size = int(encoder.input_shape[1])
    latent_dim = int(autoencoder.get_layer("search_head").output_shape[-1])
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
        stored = model_from_bytes(model_bytes)
        self.version = version
        self.batch_size = batch_size
        self._latent = latent_model(stored)
        self._reconstruction = reconstruction_model(stored)
        self.input_size = int(stored.input_shape[1])
        self.dim = int(self._latent.output_shape[-1])

    def _check(self, images: np.ndarray) -> np.ndarray:
        s = self.input_size
        if images.ndim != 4 or images.shape[1:] != (s, s, 3):
            raise ValueError(f"expected images of shape (N, {s}, {s}, 3), got {images.shape}")
        return images.astype(np.float32)

    def embed(self, images: np.ndarray) -> np.ndarray:
        """Latent vectors, float32 (N, dim), for uint8 images (N, S, S, 3)."""
        if len(images) == 0:
            return np.zeros((0, self.dim), np.float32)
        out = self._latent.predict(self._check(images), batch_size=self.batch_size, verbose=0)
        return np.asarray(out, dtype=np.float32)

    def reconstruct(self, images: np.ndarray) -> np.ndarray:
        """The autoencoder's reconstructions of uint8 images, as uint8 images."""
        if len(images) == 0:
            return np.zeros((0, self.input_size, self.input_size, 3), np.uint8)
        out = self._reconstruction.predict(
            self._check(images), batch_size=self.batch_size, verbose=0
        )
        return np.clip(np.rint(np.asarray(out, np.float32) * 255.0), 0, 255).astype(np.uint8)
