"""The fast tier (make test-fast): no TensorFlow model is ever loaded, so it runs in seconds."""

import sys
from pathlib import Path

import pytest

FAST_TIER = Path(__file__).resolve().parent
MODEL_LIBRARIES = ("tensorflow", "keras")
_already_failed: list[str] = []


@pytest.fixture(autouse=True)
def loads_no_tensorflow(request):
    """Fail the first test that loaded TensorFlow or Keras while the fast tier ran alone.

    Alone only: in the whole suite the model tier's modules import Keras when collected.
    """
    yield
    alone = all(Path(item.path).is_relative_to(FAST_TIER) for item in request.session.items)
    loaded = [name for name in MODEL_LIBRARIES if name in sys.modules]
    if alone and loaded and not _already_failed:
        _already_failed.append(request.node.nodeid)
        pytest.fail(f"loaded {loaded}: a test that needs a model belongs in tests/models")
