"""Real VGG16 ImageNet weights, also on machines that reach only the package registries.

Run time (``resolve_weights``) looks, in order, at:

1. ``VGG16_WEIGHTS_PATH``, an explicit file (used as given; loading checks known values);
2. Keras' own files, ``vgg16_weights_tf_dim_ordering_tf_kernels[_notop].h5``, in Keras' cache
   (``~/.keras/models``, ``$KERAS_HOME/models`` when set), then in ``VGG16_WEIGHTS_DIR``,
   md5-verified as Keras verifies them;
3. the file converted by the fetch command in ``VGG16_WEIGHTS_DIR``, sha256-verified against
   its JSON sidecar.

Nothing found means ``WeightsUnavailableError`` with the command to run: never random weights.
The command that obtains and converts them (``make weights``) is tools/vgg16_weights.py.
"""

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

from .settings import Vgg16Settings

if TYPE_CHECKING:
    import keras


FETCH_COMMAND: Final = "python -m tools.vgg16_weights fetch"

# Keras' own files: names, URLs and md5 hashes as in keras/src/applications/vgg16.py.
_KERAS_BASE_URL: Final = "https://storage.googleapis.com/tensorflow/keras-applications/vgg16/"


@dataclass(frozen=True)
class KerasFile:
    name: str
    md5: str
    include_top: bool

    @property
    def url(self) -> str:
        return _KERAS_BASE_URL + self.name


KERAS_NOTOP: Final = KerasFile(
    "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5", "6d6bbae143d832006294945121d1f1fc", False
)
KERAS_TOP: Final = KerasFile(
    "vgg16_weights_tf_dim_ordering_tf_kernels.h5", "64373286793e3c8b2b4e3219cbf3544b", True
)
# Known ImageNet values (block1_conv1 kernel[0,0,0,0] and bias[0]): every source is checked
# against them after loading, so a wrong file can never pass for the ImageNet model.
CHECK_LAYER: Final = "block1_conv1"
CHECK_KERNEL: Final = 0.42947057
CHECK_BIAS: Final = 0.73429835
CHECK_TOLERANCE: Final = 1e-6

CONVERTED_FILE: Final = "vgg16_imagenet_notop.weights.h5"
SIDECAR_SUFFIX: Final = ".json"

Source = Literal["explicit", "keras-cache", "converted"]


class WeightsUnavailableError(RuntimeError):
    """No verified VGG16 ImageNet weights; the message says what to run."""


@dataclass(frozen=True)
class ResolvedWeights:
    path: Path
    include_top: bool  # the file holds fc1/fc2/predictions (Keras' full file)
    source: Source


def resolve_weights(settings: Vgg16Settings) -> ResolvedWeights:
    """The weights file to load for ``settings``, verified; raise WeightsUnavailableError."""
    need_top = settings.vgg16_layer == "fc1"
    if settings.vgg16_weights_path is not None:
        return _explicit(settings.vgg16_weights_path, need_top)

    rejected: list[str] = []
    cache = keras_cache_dir()
    weights_dir = Path(settings.vgg16_weights_dir)
    for keras_file in (KERAS_TOP,) if need_top else (KERAS_NOTOP, KERAS_TOP):
        # Keras' cache first (a user's own download), then the fetch command's directory.
        for path in dict.fromkeys((cache / keras_file.name, weights_dir / keras_file.name)):
            if not path.is_file():
                continue
            if file_digest(path, "md5") == keras_file.md5:
                return ResolvedWeights(path, keras_file.include_top, "keras-cache")
            rejected.append(f"{path}: md5 differs from Keras' (incomplete or corrupt download)")

    if need_top:
        raise WeightsUnavailableError(
            f"VGG16_LAYER=fc1 needs Keras' full ImageNet file {KERAS_TOP.name} in {cache} "
            f"(or VGG16_WEIGHTS_PATH pointing at it); the converted weights have no fully "
            f"connected layers. On a machine with internet run `{FETCH_COMMAND} --top`, "
            f"or use VGG16_LAYER=pool.{_reasons(rejected)}"
        )

    converted = Path(settings.vgg16_weights_dir) / CONVERTED_FILE
    problem = verify_converted(converted)
    if problem is None:
        return ResolvedWeights(converted, False, "converted")
    rejected.append(problem)
    raise WeightsUnavailableError(
        f"no VGG16 ImageNet weights found (looked in {cache} and "
        f"{settings.vgg16_weights_dir}). Run `make weights` (or `{FETCH_COMMAND} --dest "
        f"{settings.vgg16_weights_dir}`) once, or set VGG16_WEIGHTS_PATH.{_reasons(rejected)}"
    )


def _explicit(path: Path, need_top: bool) -> ResolvedWeights:
    if not path.is_file():
        raise WeightsUnavailableError(
            f"VGG16_WEIGHTS_PATH={path} is not a file; fix it, or unset it to use Keras' "
            f"cache or the weights `make weights` (`{FETCH_COMMAND}`) stores"
        )
    include_top = h5_has_top(path)
    if need_top and not include_top:
        raise WeightsUnavailableError(
            f"VGG16_LAYER=fc1 needs weights with the fully connected layers, but "
            f"VGG16_WEIGHTS_PATH={path} holds only the conv layers; use Keras' full file "
            f"{KERAS_TOP.name} or VGG16_LAYER=pool"
        )
    return ResolvedWeights(path, include_top, "explicit")


def _reasons(rejected: list[str]) -> str:
    return "".join(f"\n  - {reason}" for reason in rejected)


def keras_cache_dir() -> Path:
    """Where Keras caches downloaded models: ``$KERAS_HOME/models`` or ``~/.keras/models``."""
    # KERAS_HOME is Keras' own variable, read here the way Keras reads it (not a setting of
    # ours); computed at each call because Keras fixes its copy when first imported.
    return Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras") / "models"


def verify_converted(path: Path) -> str | None:
    """None when ``path`` matches its sidecar's sha256, else what is wrong with it."""
    sidecar = sidecar_path(path)
    if not path.is_file():
        return f"{path}: missing"
    try:
        expected = json.loads(sidecar.read_text())["sha256"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        return f"{sidecar}: missing or unreadable ({err})"
    if file_digest(path, "sha256") != expected:
        return f"{path}: sha256 differs from {sidecar.name} (corrupt or replaced)"
    return None


def sidecar_path(weights_path: Path) -> Path:
    return weights_path.with_name(weights_path.name + SIDECAR_SUFFIX)


def h5_has_top(path: Path) -> bool:
    """Whether a VGG16 weights file holds the fully connected layers (fc1, fc2, predictions)."""
    import h5py

    try:
        with h5py.File(path, "r") as h5:
            layer_names = h5.attrs.get("layer_names")
            if layer_names is not None:  # Keras' legacy .h5 (its downloads): named layers
                return any(_text(name) == "fc1" for name in layer_names)
            # Keras 3 .weights.h5 names layers by type and order: conv2d, ..., dense, dense_1.
            layers = h5.get("layers")
            return layers is not None and any(name.startswith("dense") for name in layers)
    except OSError as err:
        raise WeightsUnavailableError(f"{path} is not a readable HDF5 weights file: {err}") from err


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def check_imagenet_values(model: "keras.Model") -> None:
    """Raise WeightsUnavailableError unless ``model`` carries VGG16's ImageNet weights."""
    kernel, bias = model.get_layer(CHECK_LAYER).get_weights()
    got = (float(kernel[0, 0, 0, 0]), float(bias[0]))
    if abs(got[0] - CHECK_KERNEL) > CHECK_TOLERANCE or abs(got[1] - CHECK_BIAS) > CHECK_TOLERANCE:
        raise WeightsUnavailableError(
            f"the loaded weights are not VGG16's ImageNet weights: {CHECK_LAYER} kernel[0,0,0,0]"
            f"={got[0]:.8f} and bias[0]={got[1]:.8f}, expected {CHECK_KERNEL} and {CHECK_BIAS}"
        )


def file_digest(path: Path, algorithm: Literal["md5", "sha256"]) -> str:
    """Hex digest of a file, read in chunks."""
    # md5 only to compare with the hashes Keras publishes, not for security.
    digest = hashlib.new(algorithm, usedforsecurity=False)
    with path.open("rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
