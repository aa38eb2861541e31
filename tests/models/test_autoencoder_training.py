"""Training the autoencoder: validation split, progress, early stopping, best epoch, PNGs."""

import io
import math
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image, ImageDraw

from services.autoencoder.model import model_from_bytes, reconstruction_model
from services.autoencoder.settings import AutoencoderSettings
from services.autoencoder.training import (
    CURVE_SIZE,
    PREVIEW_GAP,
    EpochProgress,
    TrainingOptions,
    _Supervisor,
    loss_curve_png,
    reconstruction_preview_png,
    split_validation,
    train_autoencoder,
)

SIZE = 32
TINY = {"latent_dim": 8, "widths": (8, 8, 16, 16), "batch_size": 8}
COLOURS = [(220, 30, 30), (30, 160, 40), (30, 60, 220), (240, 200, 20), (150, 40, 160)]


def shape_images(n: int, size: int = SIZE, seed: int = 0) -> np.ndarray:
    """Coloured circles, squares and triangles on plain backgrounds, at random places."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        background = tuple(int(c) for c in rng.integers(180, 256, 3))
        image = Image.new("RGB", (size, size), background)
        draw = ImageDraw.Draw(image)
        r = int(rng.integers(size // 6, size // 3))
        cx, cy = (int(v) for v in rng.integers(r, size - r, 2))
        colour = COLOURS[i % len(COLOURS)]
        kind = i % 3
        if kind == 0:
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
        elif kind == 1:
            draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=colour)
        else:
            draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
        out[i] = np.asarray(image)
    return out


def reconstruction_loss(model_bytes: bytes, images: np.ndarray) -> float:
    model = reconstruction_model(model_from_bytes(model_bytes))
    pred = model.predict(images.astype(np.float32), verbose=0)
    return float(np.mean((pred - images / 255.0) ** 2))


@pytest.fixture(scope="module")
def trained():
    """One small run shared by several tests (a few seconds on 2 cores)."""
    images = shape_images(24)
    reports: list[EpochProgress] = []
    options = TrainingOptions(epochs=6, patience=6, learning_rate=3e-3, **TINY)
    outcome = train_autoencoder(images, options, reports.append)
    return images, options, outcome, reports


def test_training_reduces_validation_loss(trained):
    _, _, outcome, _ = trained
    val = outcome.history["val_loss"]

    assert outcome.best_val_loss < val[0]
    assert outcome.best_val_loss == min(val)
    assert outcome.best_epoch == int(np.argmin(val)) + 1
    assert set(outcome.history) >= {"loss", "val_loss", "val_reconstruction", "val_contrastive"}


def test_callback_receives_every_epoch(trained):
    _, options, outcome, reports = trained

    assert [r.epoch for r in reports] == list(range(1, outcome.epochs_run + 1))
    assert outcome.epochs_run == options.epochs and outcome.stopped == "epochs"
    assert all(r.epochs == options.epochs for r in reports)
    assert [r.val_loss for r in reports] == outcome.history["val_loss"]
    assert [r.loss for r in reports] == outcome.history["loss"]
    seconds = [r.seconds for r in reports]
    assert seconds == sorted(seconds) and seconds[0] > 0
    assert all(r.eta_seconds >= 0 for r in reports) and reports[-1].eta_seconds == 0


def test_outcome_describes_the_run(trained):
    images, options, outcome, _ = trained

    assert (outcome.input_size, outcome.latent_dim) == (SIZE, options.latent_dim)
    assert outcome.image_count == 24
    assert outcome.train_count + outcome.val_count == 24 and outcome.val_count >= 1
    assert outcome.seconds > 0 and outcome.model_bytes[:2] == b"PK"
    stored = model_from_bytes(outcome.model_bytes)
    assert [tuple(shape) for shape in stored.output_shape] == [
        (None, SIZE, SIZE, 3),
        (None, options.latent_dim),
    ]


def test_early_stopping_keeps_the_best_epoch():
    # With a learning rate of 0 (and no batch statistics moving) the validation loss never
    # improves after epoch 1.
    images = shape_images(8)
    options = TrainingOptions(
        epochs=20,
        patience=2,
        learning_rate=0.0,
        augment=False,
        contrastive_weight=0,
        norm="none",
        **TINY,
    )

    outcome = train_autoencoder(images, options)

    assert outcome.stopped == "patience"
    assert outcome.epochs_run == 3 and outcome.best_epoch == 1
    _, val_idx = split_validation(8, options.validation_fraction, options.seed)
    restored = reconstruction_loss(outcome.model_bytes, images[val_idx])
    assert restored == pytest.approx(outcome.best_val_loss, rel=1e-4)


def test_tiny_catalogues_train():
    outcome = train_autoencoder(shape_images(2), TrainingOptions(epochs=2, **TINY))

    assert (outcome.train_count, outcome.val_count) == (1, 1)
    assert math.isfinite(outcome.best_val_loss)
    with pytest.raises(ValueError, match="at least 2"):
        train_autoencoder(shape_images(1), TrainingOptions(epochs=1, **TINY))


class FakeRate:
    def __init__(self) -> None:
        self.values: list[float] = []

    def assign(self, value: float) -> None:
        self.values.append(value)


class FakeModel:
    def __init__(self) -> None:
        self.weights = 0
        self.stop_training = False
        self.optimizer = SimpleNamespace(learning_rate=FakeRate())

    def get_weights(self):
        return self.weights

    def set_weights(self, weights) -> None:
        self.weights = weights


def run_supervisor(val_losses, **kwargs) -> tuple[_Supervisor, FakeModel]:
    supervisor = _Supervisor(
        epochs=kwargs.pop("epochs", 10), patience=kwargs.pop("patience", 10), **kwargs
    )
    model = FakeModel()
    supervisor.set_model(model)
    supervisor.on_train_begin()
    for epoch, val in enumerate(val_losses):
        supervisor.on_epoch_begin(epoch)
        model.weights = epoch + 1  # "the weights after epoch n"
        supervisor.on_epoch_end(epoch, {"loss": 1.0, "val_loss": val})
        if model.stop_training:
            break
    supervisor.on_train_end()
    return supervisor, model


def test_supervisor_restores_the_best_weights_and_stops_on_patience():
    supervisor, model = run_supervisor([3.0, 1.0, 2.0, 2.5, 0.5], patience=2, on_epoch=None)

    assert supervisor.stopped == "patience" and supervisor.epochs_run == 4
    assert (supervisor.best_epoch, supervisor.best_val_loss) == (2, 1.0)
    assert model.weights == 2


def test_supervisor_respects_the_time_budget():
    reports: list[EpochProgress] = []
    supervisor, _ = run_supervisor([3.0, 2.0, 1.0], time_budget=1e-9, on_epoch=reports.append)

    assert supervisor.stopped == "time_budget" and supervisor.epochs_run == 1
    assert len(reports) == 1 and reports[0].eta_seconds == 0


def test_supervisor_cosine_schedule_decays_the_learning_rate():
    _, model = run_supervisor([4.0, 3.0, 2.0, 1.0], epochs=4, cosine_from=0.01)
    _, constant = run_supervisor([4.0, 3.0], epochs=4)

    rates = model.optimizer.learning_rate.values
    assert rates == pytest.approx([0.01, 0.00854, 0.005, 0.00146], abs=1e-5)
    assert constant.optimizer.learning_rate.values == []


def test_validation_split_is_seeded_and_never_empty():
    train_a, val_a = split_validation(50, 0.1, seed=3)
    train_b, val_b = split_validation(50, 0.1, seed=3)

    np.testing.assert_array_equal(val_a, val_b)
    assert len(val_a) == 5 and len(train_a) == 45
    assert sorted(np.concatenate([train_a, val_a]).tolist()) == list(range(50))
    assert [len(part) for part in split_validation(3, 0.01, 0)] == [2, 1]
    assert [len(part) for part in split_validation(2, 0.9, 0)] == [1, 1]


def test_options_from_settings_and_job_overrides():
    settings = AutoencoderSettings(autoencoder_latent_dim=32, autoencoder_time_budget_seconds=0)

    options = TrainingOptions.from_settings(settings, epochs=3, widths=[8, 8, 16, 16])

    assert (options.latent_dim, options.epochs, options.widths) == (32, 3, (8, 8, 16, 16))
    assert options.time_budget_seconds is None
    with pytest.raises(ValueError, match="unknown training options"):
        TrainingOptions.from_mapping({"latnet_dim": 3})
    with pytest.raises(ValueError, match="epochs=0"):
        TrainingOptions.from_mapping({"epochs": 0})
    with pytest.raises(ValueError, match="temperature"):
        TrainingOptions(temperature=0)


def test_loss_curve_png_decodes():
    png = loss_curve_png({"loss": [0.5, 0.3, 0.2], "val_loss": [0.6, 0.35, 0.4]})
    empty = loss_curve_png({})

    for data in (png, empty):
        image = Image.open(io.BytesIO(data))
        assert image.format == "PNG" and image.size == CURVE_SIZE


def test_reconstruction_preview_puts_inputs_above_reconstructions():
    inputs = np.zeros((3, 16, 16, 3), np.uint8)
    inputs[..., 0] = 255  # red row
    outputs = np.zeros_like(inputs)
    outputs[..., 2] = 255  # blue row

    image = Image.open(io.BytesIO(reconstruction_preview_png(inputs, outputs)))
    g = PREVIEW_GAP

    assert image.format == "PNG"
    assert image.size == (3 * 16 + 4 * g, 2 * 16 + 3 * g)
    sheet = np.asarray(image.convert("RGB"))
    for i in range(3):
        x = g + i * (16 + g) + 8
        assert tuple(sheet[g + 8, x]) == (255, 0, 0)
        assert tuple(sheet[2 * g + 16 + 8, x]) == (0, 0, 255)
    with pytest.raises(ValueError):
        reconstruction_preview_png(inputs, outputs[:2])
    doubled = Image.open(io.BytesIO(reconstruction_preview_png(inputs, outputs, scale=2)))
    assert doubled.size == (3 * 32 + 4 * g, 2 * 32 + 3 * g)


def quadrant_images(size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    """One coloured square on white per image, in one of the four quadrants (and which)."""
    half = size // 2
    images, quadrants = [], []
    for quadrant in range(4):
        for colour in COLOURS[:4]:
            image = np.full((size, size, 3), 255, np.uint8)
            y, x = (quadrant // 2) * half, (quadrant % 2) * half
            image[y + 2 : y + half - 2, x + 2 : x + half - 2] = colour
            images.append(image)
            quadrants.append(quadrant)
    return np.stack(images), np.array(quadrants)


def test_reconstructions_show_where_each_input_has_its_content():
    # A decoder fed the pooled search vector cannot know where anything was: it drew every
    # image alike (the uniform brown previews), and here found the square's quadrant for 25%
    # of the images, chance. Reading the bottleneck it finds all of them.
    images, quadrants = quadrant_images()
    options = TrainingOptions(
        epochs=40, patience=40, learning_rate=3e-3, contrastive_weight=0, augment=False, **TINY
    )
    outcome = train_autoencoder(images, options)
    pred = reconstruction_model(model_from_bytes(outcome.model_bytes)).predict(
        images.astype(np.float32), verbose=0
    )

    half = SIZE // 2
    ink = 1.0 - pred.mean(axis=-1)  # white is 0, the square's colour more
    per_quadrant = np.stack(
        [
            ink[:, y : y + half, x : x + half].mean(axis=(1, 2))
            for y in (0, half)
            for x in (0, half)
        ],
        axis=1,
    )
    assert (per_quadrant.argmax(axis=1) == quadrants).mean() >= 0.9
