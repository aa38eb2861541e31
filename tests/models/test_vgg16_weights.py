"""Where the vgg16 service finds its ImageNet weights, and how it refuses anything else."""

import functools
import hashlib
import http.server
import json
import threading
import time
from pathlib import Path

import pytest

from services.vgg16 import weights
from services.vgg16.settings import Vgg16Settings
from services.vgg16.weights import (
    CONVERTED_FILE,
    KerasFile,
    WeightsUnavailableError,
    resolve_weights,
)
from tools import vgg16_weights


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """An empty home directory, so the real Keras cache is neither read nor written."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("KERAS_HOME", raising=False)
    return home


def settings(weights_dir: Path, **overrides) -> Vgg16Settings:
    return Vgg16Settings(vgg16_weights_dir=weights_dir, vgg16_weights_path=None, **overrides)


def fake_keras_cache_file(home: Path, monkeypatch, name: str, *, trusted: bool) -> Path:
    """A file in the Keras cache; ``trusted`` makes its md5 the one the code expects."""
    path = home / ".keras" / "models" / name
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not really weights")
    if trusted:
        md5 = hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()
        monkeypatch.setattr(weights, "KERAS_NOTOP", KerasFile(name, md5, include_top=False))
    return path


def test_converted_weights_are_imagenet_values(vgg16_weights_dir):
    import keras

    path = vgg16_weights_dir / CONVERTED_FILE
    assert weights.verify_converted(path) is None
    sidecar = json.loads(weights.sidecar_path(path).read_text())
    assert sidecar["source"]["wheel_sha256"] == vgg16_weights.WHEEL_SHA256
    assert sidecar["source"]["member_sha256"] == vgg16_weights.ONNX_SHA256
    assert not weights.h5_has_top(path)

    model = keras.applications.VGG16(include_top=False, weights=None, input_shape=(224, 224, 3))
    model.load_weights(str(path))
    kernel, bias = model.get_layer("block1_conv1").get_weights()
    assert kernel.shape == (3, 3, 3, 64)  # H, W, I, O after the transpose
    assert kernel[0, 0, 0, 0] == pytest.approx(0.42947057, abs=1e-7)
    assert bias[0] == pytest.approx(0.73429835, abs=1e-7)
    weights.check_imagenet_values(model)  # every conv layer was set, none left random
    assert model.get_layer("block5_conv3").get_weights()[0].shape == (3, 3, 512, 512)


def test_random_weights_are_refused():
    import keras

    model = keras.applications.VGG16(include_top=False, weights=None, input_shape=(32, 32, 3))
    with pytest.raises(WeightsUnavailableError, match="not VGG16's ImageNet weights"):
        weights.check_imagenet_values(model)


def test_converted_weights_are_found(home, vgg16_weights_dir):
    resolved = resolve_weights(settings(vgg16_weights_dir))
    assert resolved.path == vgg16_weights_dir / CONVERTED_FILE
    assert resolved.source == "converted"
    assert resolved.include_top is False


def test_keras_cache_comes_before_converted(home, monkeypatch, vgg16_weights_dir):
    cached = fake_keras_cache_file(home, monkeypatch, weights.KERAS_NOTOP.name, trusted=True)
    resolved = resolve_weights(settings(vgg16_weights_dir))
    assert (resolved.path, resolved.source, resolved.include_top) == (cached, "keras-cache", False)


def test_keras_cache_file_with_wrong_md5_is_skipped(home, monkeypatch, vgg16_weights_dir):
    fake_keras_cache_file(home, monkeypatch, weights.KERAS_NOTOP.name, trusted=False)
    assert resolve_weights(settings(vgg16_weights_dir)).source == "converted"


def test_explicit_path_wins(home, monkeypatch, vgg16_weights_dir):
    fake_keras_cache_file(home, monkeypatch, weights.KERAS_NOTOP.name, trusted=True)
    explicit = vgg16_weights_dir / CONVERTED_FILE
    resolved = resolve_weights(
        Vgg16Settings(vgg16_weights_path=explicit, vgg16_weights_dir=vgg16_weights_dir)
    )
    assert (resolved.path, resolved.source, resolved.include_top) == (explicit, "explicit", False)


def test_explicit_path_that_does_not_exist_is_an_error(home, vgg16_weights_dir, tmp_path):
    missing = tmp_path / "nope.h5"
    with pytest.raises(WeightsUnavailableError, match="VGG16_WEIGHTS_PATH=.*nope.h5 is not a file"):
        resolve_weights(
            Vgg16Settings(vgg16_weights_path=missing, vgg16_weights_dir=vgg16_weights_dir)
        )


def test_empty_explicit_path_means_unset(monkeypatch):
    monkeypatch.setenv("VGG16_WEIGHTS_PATH", "")
    assert Vgg16Settings().vgg16_weights_path is None


def test_nothing_available_says_what_to_run(home, tmp_path):
    empty = tmp_path / "weights"
    with pytest.raises(WeightsUnavailableError) as caught:
        resolve_weights(settings(empty))
    message = str(caught.value)
    assert "make weights" in message
    assert f"python -m tools.vgg16_weights fetch --dest {empty}" in message
    assert str(home / ".keras" / "models") in message


def test_tampered_converted_weights_are_refused(home, tmp_path, vgg16_weights_dir):
    directory = tmp_path / "weights"
    directory.mkdir()
    (directory / CONVERTED_FILE).symlink_to(vgg16_weights_dir / CONVERTED_FILE)
    weights.sidecar_path(directory / CONVERTED_FILE).write_text(json.dumps({"sha256": "0" * 64}))
    with pytest.raises(WeightsUnavailableError, match="sha256 differs"):
        resolve_weights(settings(directory))


def test_fc1_needs_the_full_keras_file(home, vgg16_weights_dir):
    with pytest.raises(WeightsUnavailableError, match="VGG16_LAYER=fc1 needs Keras' full"):
        resolve_weights(settings(vgg16_weights_dir, vgg16_layer="fc1"))
    with pytest.raises(WeightsUnavailableError, match="holds only the conv layers"):
        resolve_weights(
            Vgg16Settings(
                vgg16_layer="fc1",
                vgg16_weights_path=vgg16_weights_dir / CONVERTED_FILE,
                vgg16_weights_dir=vgg16_weights_dir,
            )
        )


def test_fetch_returns_at_once_when_weights_are_present(home, vgg16_weights_dir):
    started = time.monotonic()
    resolved = vgg16_weights.fetch(settings(vgg16_weights_dir))
    assert resolved.source == "converted"
    assert time.monotonic() - started < 5  # no download, no conversion


def test_failed_keras_download_is_reported_not_raised(home, monkeypatch):
    # Port 9 (discard) on localhost refuses the connection at once, as an offline machine does.
    monkeypatch.setattr(weights, "_KERAS_BASE_URL", "http://127.0.0.1:9/")
    started = time.monotonic()
    dest = home / "weights"
    assert vgg16_weights.keras_download(weights.KERAS_NOTOP, dest, timeout=5) is False
    assert time.monotonic() - started < 10
    assert not (home / ".keras" / "models" / weights.KERAS_NOTOP.name).exists()
    assert not (dest / weights.KERAS_NOTOP.name).exists()


@pytest.fixture
def keras_origin(tmp_path, monkeypatch):
    """A real HTTP server on 127.0.0.1 standing in for Keras' download site."""
    served = tmp_path / "origin"
    served.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setattr(weights, "_KERAS_BASE_URL", f"http://127.0.0.1:{server.server_port}/")
    yield served
    server.shutdown()
    server.server_close()


def test_keras_download_lands_in_dest_not_in_the_home_directory(home, monkeypatch, keras_origin):
    # What an image build does: `fetch --dest /app/var/weights` as root, the service runs as
    # another user who has no ~/.keras; the downloaded file must be where --dest says.
    content = b"stand-in for Keras' notop file"
    (keras_origin / weights.KERAS_NOTOP.name).write_bytes(content)
    md5 = hashlib.md5(content, usedforsecurity=False).hexdigest()
    monkeypatch.setattr(weights, "KERAS_NOTOP", KerasFile(weights.KERAS_NOTOP.name, md5, False))
    dest = home / "image" / "weights"  # does not exist yet

    resolved = vgg16_weights.fetch(settings(dest))

    assert resolved.path == dest / weights.KERAS_NOTOP.name
    assert resolved.source == "keras-cache"
    assert resolved.path.read_bytes() == content
    assert not (home / ".keras" / "models" / weights.KERAS_NOTOP.name).exists()
    # Another process (the worker) finds it there with only VGG16_WEIGHTS_DIR to go on.
    assert resolve_weights(settings(dest)).path == resolved.path


def test_weights_already_in_the_keras_cache_are_copied_into_dest(home, monkeypatch, tmp_path):
    cached = fake_keras_cache_file(home, monkeypatch, weights.KERAS_NOTOP.name, trusted=True)
    dest = tmp_path / "image" / "weights"
    resolved = vgg16_weights.place_in(vgg16_weights.fetch(settings(dest)), dest)
    assert resolved.path == dest / cached.name
    assert resolved.path.read_bytes() == cached.read_bytes()
    # The service user of an image has no Keras cache: it finds the copy in dest.
    other_home = tmp_path / "service-user"
    other_home.mkdir()
    monkeypatch.setenv("HOME", str(other_home))
    assert resolve_weights(settings(dest)).path == resolved.path


def test_fetch_command_checks_the_weights_value_by_value(vgg16_weights_dir, tmp_path):
    vgg16_weights.check_weights_file(weights.resolve_weights(settings(vgg16_weights_dir)))

    import keras

    random_file = tmp_path / "random.weights.h5"
    keras.applications.VGG16(
        include_top=False, weights=None, input_shape=(224, 224, 3)
    ).save_weights(str(random_file))
    with pytest.raises(WeightsUnavailableError, match="not VGG16's ImageNet weights"):
        vgg16_weights.check_weights_file(weights.ResolvedWeights(random_file, False, "explicit"))
