"""Runtime helpers both worker services share: CPU precision and batch image decoding.

TensorFlow and Keras are imported inside the functions, never at module import: TensorFlow
hangs in forked processes, and workers load their models only after the process starts.
"""

import io
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

Precision = Literal["auto", "float32", "bfloat16"]

# CPU flags of native bfloat16 arithmetic, which oneDNN uses under mixed_bfloat16. Without
# them there is no fast bfloat16 path, so "auto" keeps float32.
BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
CPUINFO = Path("/proc/cpuinfo")


def cpu_bfloat16_flags(cpuinfo: Path = CPUINFO) -> set[str]:
    """Which of BF16_CPU_FLAGS the CPU advertises (empty when it has none or cannot tell)."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return BF16_CPU_FLAGS.intersection(value.split())
    return set()


def cpu_supports_bfloat16(cpuinfo: Path = CPUINFO) -> bool:
    """True when the CPU advertises native bfloat16 arithmetic (avx512_bf16 or amx_bf16)."""
    return bool(cpu_bfloat16_flags(cpuinfo))


def policy_for(mode: Precision, bf16_supported: bool | None = None) -> str:
    """The Keras dtype policy name a precision setting means on this CPU."""
    if mode == "float32":
        return "float32"
    if mode == "bfloat16":
        return "mixed_bfloat16"
    if mode == "auto":
        supported = cpu_supports_bfloat16() if bf16_supported is None else bf16_supported
        return "mixed_bfloat16" if supported else "float32"
    raise ValueError(f"unknown precision {mode!r}: use 'auto', 'float32' or 'bfloat16'")


def configure_precision(mode: Precision) -> str:
    """Set the process-wide Keras dtype policy for ``mode`` and return the policy name."""
    import keras

    policy = policy_for(mode)
    keras.mixed_precision.set_global_policy(policy)
    return policy


def decode_images(jpeg_bytes_list: list[bytes], size: int) -> np.ndarray:
    """Decode images to a uint8 (N, size, size, 3) RGB batch, squashed to size x size.

    Resizing ignores the aspect ratio and uses bilinear filtering, pixel for pixel as Keras'
    ``load_img(path, target_size=(size, size), interpolation="bilinear")``. Raises ValueError
    naming the first image that does not decode.
    """
    # Sequential on purpose: decoding a canonical JPEG (at most 512 px) costs a small
    # fraction of embedding it (README.md, "Catalogue scale"), and a thread pool was slower.
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    batch = np.empty((len(jpeg_bytes_list), size, size, 3), dtype=np.uint8)
    for index, data in enumerate(jpeg_bytes_list):
        batch[index] = _decode_one(data, size, index)
    return batch


def _decode_one(data: bytes, size: int, index: int) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data)) as image:
            rgb = image.convert("RGB")
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise ValueError(f"image {index} in the batch does not decode: {err}") from err
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(rgb, dtype=np.uint8)
