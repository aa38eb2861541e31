"""Training the autoencoder on the catalogue itself (no labels), and pictures of the result.

Retrieval, not only reconstruction: each step draws two augmented views of every image
(random crop, flip, brightness, contrast and saturation jitter; hue is left alone because
colour tells products apart). The decoder rebuilds the first view from its bottleneck, and a
contrastive term (InfoNCE) pulls the two views' latents together and pushes the other
images' latents away. So the latent keeps what identifies a product and drops what changes
between two photos of it, and the decoder shows what the encoder sees. (Until the decoder
read the bottleneck it read the pooled latent and was asked for the clean image; pooled, the
latent cannot say where anything was, and the previews were the catalogue's mean colour.)
A reconstruction-only autoencoder ranked the right product first for 9% of Grocery Store
queries, this objective for 34% in the same 10 minutes (``tools/autoencoder_research.py``
has the table).

Validation uses fixed views (the clean image and its mirror image) so that epochs compare;
the best epoch's weights are restored; the learning rate follows a cosine down to 0 over
the epochs or the time budget, whichever ends first.

The Keras dtype policy is taken as the process has set it (``mixed_bfloat16`` trains about
25% faster on this CPU); the stored model is always float32.
"""

import io
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields

import keras
import numpy as np
import tensorflow as tf
from PIL import Image, ImageDraw

from services.autoencoder.model import (
    DEFAULT_WIDTHS,
    Autoencoder,
    build_autoencoder,
    float32_copy,
    model_to_bytes,
)
from services.autoencoder.settings import AutoencoderSettings


@dataclass(frozen=True)
class TrainingOptions:
    """What one training run does; defaults: the best design (tools/autoencoder_research.py)."""

    latent_dim: int = 128
    epochs: int = 100  # upper bound; the time budget or early stopping usually end sooner
    patience: int = 10
    batch_size: int = 64
    validation_fraction: float = 0.1
    learning_rate: float = 1e-3
    # "cosine" lowers the rate to 0 along the run (by epochs or time budget, whichever ends
    # first); "constant" keeps it.
    lr_schedule: str = "cosine"
    # Weight of the contrastive term next to the reconstruction MSE; 0 = plain denoising AE.
    contrastive_weight: float = 1.0
    temperature: float = 0.2
    augment: bool = True
    min_crop_area: float = 0.35  # random crops keep at least this fraction of the image
    jitter: float = 0.25  # brightness/contrast/saturation factors drawn from 1 +- jitter
    widths: tuple[int, ...] = DEFAULT_WIDTHS
    norm: str = "batch"  # after each encoder convolution: "none", "group" or "batch"
    seed: int = 0
    # Stop before an epoch that would end after this many seconds (None = no limit).
    time_budget_seconds: float | None = 540.0

    def __post_init__(self) -> None:
        checks = {
            "latent_dim": self.latent_dim >= 2,
            "epochs": self.epochs >= 1,
            "patience": self.patience >= 1,
            "batch_size": self.batch_size >= 1,
            "validation_fraction": 0 < self.validation_fraction < 1,
            "learning_rate": self.learning_rate >= 0,
            "lr_schedule": self.lr_schedule in ("cosine", "constant"),
            "contrastive_weight": self.contrastive_weight >= 0,
            "temperature": self.temperature > 0,
            "min_crop_area": 0 < self.min_crop_area <= 1,
            "jitter": 0 <= self.jitter < 1,
            "time_budget_seconds": self.time_budget_seconds is None or self.time_budget_seconds > 0,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            values = ", ".join(f"{name}={getattr(self, name)!r}" for name in bad)
            raise ValueError(f"invalid training options: {values}")

    @classmethod
    def from_mapping(cls, values: dict) -> "TrainingOptions":
        """Options from a dict (e.g. a task's JSON options); unknown keys are refused."""
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown training options: {sorted(unknown)}")
        values = dict(values)
        if "widths" in values:
            values["widths"] = tuple(values["widths"])
        return cls(**values)

    @classmethod
    def from_settings(cls, settings: AutoencoderSettings, **overrides) -> "TrainingOptions":
        """Options from the service's settings, with per-job overrides (checked as above)."""
        budget = settings.autoencoder_time_budget_seconds
        values = {
            "latent_dim": settings.autoencoder_latent_dim,
            "epochs": settings.autoencoder_epochs,
            "patience": settings.autoencoder_patience,
            "batch_size": settings.autoencoder_batch_size,
            "validation_fraction": settings.autoencoder_validation_fraction,
            "contrastive_weight": settings.autoencoder_contrastive_weight,
            "time_budget_seconds": budget if budget > 0 else None,
        }
        return cls.from_mapping({**values, **overrides})


@dataclass(frozen=True)
class EpochProgress:
    """One finished epoch, as reported to the caller (e.g. into the job record)."""

    epoch: int  # 1-based
    epochs: int  # the maximum; training may stop earlier
    loss: float
    val_loss: float
    seconds: float  # since training started
    eta_seconds: float  # until the maximum epoch count or the time budget, whichever is first


@dataclass
class TrainingOutcome:
    """A trained model (``.keras`` bytes, best validation epoch restored) and its record."""

    model_bytes: bytes
    history: dict[str, list[float]]
    best_epoch: int  # 1-based
    best_val_loss: float
    input_size: int
    latent_dim: int
    image_count: int
    train_count: int
    val_count: int
    epochs_run: int
    stopped: str  # "epochs", "patience" or "time_budget"
    seconds: float
    options: dict = field(default_factory=dict)


def split_validation(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of ``range(n)`` into train and validation indices, each non-empty."""
    if n < 2:
        raise ValueError(f"training needs at least 2 images, got {n}")
    n_val = min(n - 1, max(1, round(n * fraction)))
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def augment(images: tf.Tensor, min_crop_area: float, jitter: float) -> tf.Tensor:
    """Random crop (resized back), flip and colour jitter of a float batch in [0, 255]."""
    shape = tf.shape(images)
    n, size = shape[0], shape[1]
    gen = tf.random.uniform
    area = gen([n], min_crop_area, 1.0)
    log_ratio = gen([n], math.log(3 / 4), math.log(4 / 3))
    ratio = tf.exp(log_ratio)
    h = tf.minimum(tf.sqrt(area / ratio), 1.0)
    w = tf.minimum(tf.sqrt(area * ratio), 1.0)
    y0 = gen([n]) * (1.0 - h)
    x0 = gen([n]) * (1.0 - w)
    boxes = tf.stack([y0, x0, y0 + h, x0 + w], axis=1)
    out = tf.image.crop_and_resize(images, boxes, tf.range(n), tf.stack([size, size]))
    flip = gen([n, 1, 1, 1]) < 0.5
    out = tf.where(flip, tf.reverse(out, axis=[2]), out)
    if jitter > 0:
        lo, hi = 1.0 - jitter, 1.0 + jitter
        brightness = gen([n, 1, 1, 1], lo, hi)
        contrast = gen([n, 1, 1, 1], lo, hi)
        saturation = gen([n, 1, 1, 1], lo, hi)
        grey = tf.reduce_mean(out, axis=-1, keepdims=True)
        out = grey + (out - grey) * saturation
        mean = tf.reduce_mean(out, axis=[1, 2, 3], keepdims=True)
        out = (mean + (out - mean) * contrast) * brightness
    return tf.clip_by_value(out, 0.0, 255.0)


def info_nce(z1: tf.Tensor, z2: tf.Tensor, temperature: float) -> tf.Tensor:
    """Symmetric InfoNCE between two batches of unit vectors (row i of each = same image)."""
    z1 = tf.cast(z1, tf.float32)
    z2 = tf.cast(z2, tf.float32)
    logits = tf.matmul(z1, z2, transpose_b=True) / temperature
    labels = tf.range(tf.shape(z1)[0])
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits
    return 0.5 * (
        tf.reduce_mean(ce(labels, logits)) + tf.reduce_mean(ce(labels, tf.transpose(logits)))
    )


class _Trainer(keras.Model):
    """Wraps the autoencoder's parts with the two-view reconstruction + contrastive objective."""

    def __init__(self, parts: Autoencoder, options: TrainingOptions):
        super().__init__(name="trainer")
        self.encoder = parts.encoder
        self.search_head = parts.search_head
        self.decoder = parts.decoder
        self.options = options
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.recon_tracker = keras.metrics.Mean(name="reconstruction")
        self.contrast_tracker = keras.metrics.Mean(name="contrastive")

    @property
    def metrics(self):
        return [self.loss_tracker, self.recon_tracker, self.contrast_tracker]

    def call(self, images, training=False):
        return self.decoder(self.encoder(images, training=training), training=training)

    def _objective(self, view1, view2, training):
        if self.options.contrastive_weight > 0:
            # Both views in one encoder and search-head pass: larger matrix products, and
            # batch statistics over both views.
            features = self.encoder(tf.concat([view1, view2], 0), training=training)
            z1, z2 = tf.split(self.search_head(features, training=training), 2)
            f1 = features[: tf.shape(view1)[0]]
            contrast = info_nce(z1, z2, self.options.temperature)
        else:
            f1 = self.encoder(view1, training=training)
            contrast = tf.constant(0.0)
        # One reconstruction per step (of the first view) halves the decoder's cost; the
        # second view only feeds the contrastive term.
        r1 = tf.cast(self.decoder(f1, training=training), tf.float32)
        recon = tf.reduce_mean(tf.square(r1 - view1 / 255.0))
        return recon + self.options.contrastive_weight * contrast, recon, contrast

    def _record(self, loss, recon, contrast):
        self.loss_tracker.update_state(loss)
        self.recon_tracker.update_state(recon)
        self.contrast_tracker.update_state(contrast)
        return {m.name: m.result() for m in self.metrics}

    def train_step(self, data):
        images = tf.cast(data, tf.float32)
        o = self.options
        if o.augment:
            view1 = augment(images, o.min_crop_area, o.jitter)
            view2 = augment(images, o.min_crop_area, o.jitter)
        else:
            view1 = view2 = images
        with tf.GradientTape() as tape:
            loss, recon, contrast = self._objective(view1, view2, training=True)
        variables = self.trainable_variables
        self.optimizer.apply(tape.gradient(loss, variables), variables)
        return self._record(loss, recon, contrast)

    def test_step(self, data):
        # Deterministic views so that validation losses of two epochs are comparable:
        # the clean image and its mirror image.
        images = tf.cast(data, tf.float32)
        mirrored = tf.reverse(images, axis=[2]) if self.options.augment else images
        loss, recon, contrast = self._objective(images, mirrored, training=False)
        return self._record(loss, recon, contrast)


class _Supervisor(keras.callbacks.Callback):
    """Progress reports, early stopping, best-weights restore and the time budget."""

    def __init__(
        self,
        epochs: int,
        patience: int,
        time_budget: float | None = None,
        on_epoch: Callable[[EpochProgress], None] | None = None,
        cosine_from: float | None = None,
    ):
        super().__init__()
        self.base_lr = cosine_from  # None: leave the learning rate alone
        self.epochs = epochs
        self.patience = patience
        self.time_budget = time_budget
        self.on_epoch = on_epoch
        self.history: dict[str, list[float]] = {}
        self.best_val_loss = math.inf
        self.best_epoch = 0
        self.best_weights: list | None = None
        self.stopped = "epochs"
        self.start = 0.0
        self.epochs_run = 0

    def on_train_begin(self, logs=None):
        self.start = time.monotonic()

    def on_epoch_begin(self, epoch, logs=None):
        if self.base_lr is None:
            return
        progress = epoch / self.epochs
        if self.time_budget and epoch > 0:
            elapsed = time.monotonic() - self.start
            progress = max(progress, elapsed / self.time_budget)
        rate = self.base_lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        self.model.optimizer.learning_rate.assign(rate)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        for name, value in logs.items():
            self.history.setdefault(name, []).append(float(value))
        self.epochs_run = epoch + 1
        val_loss = float(logs.get("val_loss", math.nan))
        if val_loss < self.best_val_loss:
            self.best_val_loss = val_loss
            self.best_epoch = epoch + 1
            self.best_weights = self.model.get_weights()
        elapsed = time.monotonic() - self.start
        per_epoch = elapsed / (epoch + 1)
        eta = per_epoch * (self.epochs - epoch - 1)
        if self.time_budget is not None:
            eta = min(eta, max(0.0, self.time_budget - elapsed))
        if epoch + 1 < self.epochs:
            if epoch + 1 - self.best_epoch >= self.patience:
                self.stopped = "patience"
                self.model.stop_training = True
            elif self.time_budget is not None and elapsed + per_epoch > self.time_budget:
                self.stopped = "time_budget"
                self.model.stop_training = True
        if self.model.stop_training:
            eta = 0.0
        if self.on_epoch is not None:
            self.on_epoch(
                EpochProgress(
                    epoch=epoch + 1,
                    epochs=self.epochs,
                    loss=float(logs.get("loss", math.nan)),
                    val_loss=val_loss,
                    seconds=elapsed,
                    eta_seconds=eta,
                )
            )

    def on_train_end(self, logs=None):
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)


def train_autoencoder(
    images: np.ndarray,
    options: TrainingOptions | None = None,
    on_epoch: Callable[[EpochProgress], None] | None = None,
) -> TrainingOutcome:
    """Train an autoencoder on uint8 images (N, S, S, 3) and return the best epoch's model."""
    options = options or TrainingOptions()
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected uint8 images (N, S, S, 3), got {images.dtype} {images.shape}")
    if images.shape[1] != images.shape[2]:
        raise ValueError(f"expected square images, got {images.shape[1:3]}")
    started = time.monotonic()
    keras.utils.set_random_seed(options.seed)
    train_idx, val_idx = split_validation(len(images), options.validation_fraction, options.seed)
    input_size = int(images.shape[1])
    parts = build_autoencoder(input_size, options.latent_dim, options.widths, options.norm)
    trainer = _Trainer(parts, options)
    trainer.compile(optimizer=keras.optimizers.Adam(options.learning_rate))

    batch = max(1, min(options.batch_size, len(train_idx)))
    train_ds = (
        tf.data.Dataset.from_tensor_slices(images[train_idx])
        .shuffle(len(train_idx), seed=options.seed, reshuffle_each_iteration=True)
        .batch(batch)
        .prefetch(2)
    )
    val_ds = tf.data.Dataset.from_tensor_slices(images[val_idx]).batch(options.batch_size)
    supervisor = _Supervisor(
        options.epochs,
        options.patience,
        options.time_budget_seconds,
        on_epoch,
        cosine_from=options.learning_rate if options.lr_schedule == "cosine" else None,
    )
    trainer.fit(
        train_ds,
        validation_data=val_ds,
        epochs=options.epochs,
        callbacks=[supervisor],
        shuffle=False,  # the dataset reshuffles itself each epoch
        verbose=0,
    )
    if supervisor.best_weights is None:
        raise FloatingPointError("training diverged: no epoch had a finite validation loss")
    stored = float32_copy(parts.autoencoder)
    return TrainingOutcome(
        model_bytes=model_to_bytes(stored),
        history=supervisor.history,
        best_epoch=supervisor.best_epoch,
        best_val_loss=supervisor.best_val_loss,
        input_size=input_size,
        latent_dim=options.latent_dim,
        image_count=len(images),
        train_count=len(train_idx),
        val_count=len(val_idx),
        epochs_run=supervisor.epochs_run,
        stopped=supervisor.stopped,
        seconds=time.monotonic() - started,
        options={f.name: getattr(options, f.name) for f in fields(options)},
    )


PREVIEW_GAP = 4  # pixels of white between and around the preview tiles
CURVE_SIZE = (640, 400)
_CURVE_COLOURS = {"loss": (31, 119, 180), "val_loss": (255, 127, 14)}


def loss_curve_png(history: dict[str, list[float]]) -> bytes:
    """A PNG line chart of training and validation loss per epoch, best epoch marked."""
    width, height = CURVE_SIZE
    left, right, top, bottom = 60, 20, 30, 40
    image = Image.new("RGB", CURVE_SIZE, "white")
    draw = ImageDraw.Draw(image)
    series = {
        name: [v for v in history.get(name, []) if math.isfinite(v)] for name in _CURVE_COLOURS
    }
    values = [v for vs in series.values() for v in vs]
    draw.rectangle([left, top, width - right, height - bottom], outline="black")
    draw.text((left, 8), "loss per epoch (training, validation)", fill="black")
    if not values:
        draw.text((left + 10, top + 10), "no epochs yet", fill="black")
        return _png(image)
    epochs = max(len(vs) for vs in series.values())
    lo, hi = min(values), max(values)
    hi = hi if hi > lo else lo + 1.0

    def point(i: int, v: float) -> tuple[float, float]:
        x = left + (width - left - right) * (i / max(1, epochs - 1))
        y = top + (height - top - bottom) * (1.0 - (v - lo) / (hi - lo))
        return x, y

    for frac in (0.0, 0.5, 1.0):
        v = lo + (hi - lo) * frac
        _, y = point(0, v)
        draw.text((4, y - 6), f"{v:.4g}", fill="black")
    draw.text((left, height - bottom + 8), "epoch 1", fill="black")
    draw.text((width - right - 60, height - bottom + 8), f"epoch {epochs}", fill="black")
    val = series["val_loss"]
    if val:
        best = int(np.argmin(val))
        x, _ = point(best, val[best])
        draw.line([x, top, x, height - bottom], fill=(180, 180, 180))
        draw.text((x + 3, top + 3), f"best {best + 1}", fill=(100, 100, 100))
    for n, (name, vs) in enumerate(series.items()):
        colour = _CURVE_COLOURS[name]
        points = [point(i, v) for i, v in enumerate(vs)]
        if len(points) > 1:
            draw.line(points, fill=colour, width=2)
        for x, y in points:
            draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=colour)
        draw.text((width - right - 150 + 75 * n, height - bottom + 20), name, fill=colour)
    return _png(image)


def reconstruction_preview_png(
    inputs: np.ndarray, reconstructions: np.ndarray, scale: int = 1
) -> bytes:
    """A PNG with the input images in a row above their reconstructions (tiles x ``scale``)."""
    if inputs.shape != reconstructions.shape or inputs.ndim != 4 or inputs.shape[-1] != 3:
        raise ValueError(
            f"expected two uint8 (N, H, W, 3) batches of one shape, got "
            f"{inputs.shape} and {reconstructions.shape}"
        )
    if scale < 1:
        raise ValueError(f"scale must be at least 1, got {scale}")
    n, h, w, _ = inputs.shape
    h, w = h * scale, w * scale
    gap = PREVIEW_GAP
    sheet = Image.new("RGB", (n * w + (n + 1) * gap, 2 * h + 3 * gap), "white")
    for row, batch in enumerate((inputs, reconstructions)):
        for i, tile in enumerate(batch):
            image = Image.fromarray(np.clip(tile, 0, 255).astype(np.uint8))
            if scale > 1:
                image = image.resize((w, h), Image.Resampling.NEAREST)
            sheet.paste(image, (gap + i * (w + gap), gap + row * (h + gap)))
    return _png(sheet)


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
