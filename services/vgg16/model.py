"""VGG16 ImageNet features as search vectors.

``pool`` (default): the last conv block (``block5_pool``) averaged over space, 512-d, the
standard for image retrieval; works with the weights obtainable offline. ``fc1``: the first
fully connected layer, 4096-d, as in the original article; needs Keras' full file.
Vectors are L2-normalised float32 and compared by cosine, whatever the compute precision.
"""

import logging
import time
from typing import TYPE_CHECKING, Final, Literal

import numpy as np

from .settings import Vgg16Settings
from .weights import ResolvedWeights, check_imagenet_values, resolve_weights

if TYPE_CHECKING:
    import keras

log = logging.getLogger(__name__)

INPUT_SIZE: Final = 224
DIMS: Final = {"pool": 512, "fc1": 4096}
# The version goes into Redis index keys: vectors of different layers never share an index.
# It names what the vectors mean (ImageNet weights, layer, size), not where the file came
# from: every source is checked to hold the same ImageNet values.
VERSIONS: Final = {"pool": "vgg16-imagenet-pool512", "fc1": "vgg16-imagenet-fc1-4096"}


class Vgg16Embedder:
    """VGG16 ImageNet embedder: uint8 images (N, 224, 224, 3) -> unit float32 vectors."""

    method: Final = "vgg16"
    input_size: Final = INPUT_SIZE
    metric: Final = "cosine"

    def __init__(self, settings: Vgg16Settings | None = None) -> None:
        self.settings = settings if settings is not None else Vgg16Settings()
        self.layer: Literal["pool", "fc1"] = self.settings.vgg16_layer
        self.dim: int = DIMS[self.layer]
        self.version: str = VERSIONS[self.layer]
        self.batch_size: int = self.settings.vgg16_batch_size
        self.precision: str | None = None  # Keras dtype policy, known once loaded
        self.weights: ResolvedWeights | None = None
        self._model: keras.Model | None = None
        self._forward = None

    @property
    def loaded(self) -> bool:
        return self._forward is not None

    def load(self) -> None:
        """Resolve weights, build the model under the configured precision, warm it up."""
        if self.loaded:
            return
        import keras
        import tensorflow as tf

        from shared.runtime.ml import configure_precision

        started = time.perf_counter()
        weights = resolve_weights(self.settings)
        # Layers take the global policy when built; restore it afterwards so that building
        # this model does not change the precision of anything else in the process.
        previous = keras.mixed_precision.global_policy()
        self.precision = configure_precision(self.settings.vgg16_precision)
        try:
            model = build_feature_model(self.layer, weights)
        finally:
            keras.mixed_precision.set_global_policy(previous)

        # One traced graph for every batch size (no retracing for a last, smaller batch or a
        # single query), preprocessing inside it. Measured here as fast as predict_on_batch
        # (same images per CPU-second), which would need the preprocessing done in numpy.
        @tf.function(
            input_signature=[tf.TensorSpec((None, INPUT_SIZE, INPUT_SIZE, 3), tf.uint8)],
            reduce_retracing=True,
        )
        def forward(images: tf.Tensor) -> tf.Tensor:
            x = keras.applications.vgg16.preprocess_input(tf.cast(images, tf.float32))
            return tf.cast(model(x, training=False), tf.float32)

        self._model = model
        self._forward = forward
        self.weights = weights
        self.embed(np.zeros((self.batch_size, INPUT_SIZE, INPUT_SIZE, 3), np.uint8))  # warm-up
        log.info(
            "model loaded",
            extra={
                "method": self.method,
                "version": self.version,
                "precision": self.precision,
                "weights": str(weights.path),
                "weights_source": weights.source,
                "seconds": round(time.perf_counter() - started, 2),
            },
        )

    def embed(self, images: np.ndarray) -> np.ndarray:
        """L2-normalised float32 vectors (N, dim) for uint8 RGB images (N, 224, 224, 3)."""
        if images.ndim != 4 or images.shape[1:] != (INPUT_SIZE, INPUT_SIZE, 3):
            raise ValueError(
                f"expected images of shape (N, {INPUT_SIZE}, {INPUT_SIZE}, 3), got {images.shape}"
            )
        if images.dtype != np.uint8:
            raise ValueError(f"expected uint8 images, got {images.dtype}")
        self.load()
        out = np.empty((len(images), self.dim), dtype=np.float32)
        for start in range(0, len(images), self.batch_size):
            batch = np.ascontiguousarray(images[start : start + self.batch_size])
            out[start : start + len(batch)] = self._forward(batch).numpy()
        return out


def build_feature_model(layer: Literal["pool", "fc1"], weights: ResolvedWeights) -> "keras.Model":
    """VGG16 with verified ImageNet weights, cut at ``layer``, ending in a unit float32 vector.

    Expects preprocessed input (``keras.applications.vgg16.preprocess_input``). Layers follow
    the global dtype policy; the head runs in float32.
    """
    import keras

    if layer == "fc1" and not weights.include_top:
        raise ValueError("the fc1 layer needs weights with the fully connected layers")
    base = keras.applications.VGG16(
        include_top=weights.include_top, weights=None, input_shape=(INPUT_SIZE, INPUT_SIZE, 3)
    )
    base.load_weights(str(weights.path))
    check_imagenet_values(base)
    if layer == "pool":
        # As VGG16(include_top=False, pooling="avg"): the same vector from either file.
        x = keras.layers.GlobalAveragePooling2D(dtype="float32", name="avg_pool")(
            base.get_layer("block5_pool").output
        )
    else:
        x = keras.layers.Activation("linear", dtype="float32", name="fc1_float32")(
            base.get_layer("fc1").output
        )
    vector = keras.layers.UnitNormalization(dtype="float32", name="embedding")(x)
    return keras.Model(base.input, vector, name=f"vgg16_{layer}")
