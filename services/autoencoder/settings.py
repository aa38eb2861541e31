"""Settings of the autoencoder worker service, read from the environment (unprefixed names).

Defaults are the design measured best on the Grocery Store data set (2,640 catalogue photos,
2 CPU cores); ``python -m tools.autoencoder_research`` reproduces the measurements.
"""

from typing import Literal

from pydantic import Field, field_validator

from shared.settings import WorkerSettings


class AutoencoderSettings(WorkerSettings):
    # Side of the square image the network reads (a multiple of 16: four stride-2 stages).
    # Training is bounded by time, and 48 gives more epochs in it than 64: 0.324 vs 0.312
    # P@1 in 9 minutes on 2 shared cores (tools/autoencoder_research.py). Colour and coarse
    # shape, which tell products apart here, survive that size.
    autoencoder_input_size: int = Field(default=48, ge=16, le=512)
    # Length of the search vector (and the decoder's input): tools/autoencoder_research.py.
    autoencoder_latent_dim: int = Field(default=128, ge=2, le=4096)
    # Upper bound on epochs; the time budget or early stopping usually end a run sooner.
    autoencoder_epochs: int = Field(default=100, ge=1, le=10_000)
    # Epochs without a better validation loss before training stops (best epoch is kept).
    autoencoder_patience: int = Field(default=10, ge=1)
    # Images per training step and per embedding batch. 64 gives the contrastive term
    # 63 negatives per image and fits comfortably in memory at 48x48.
    autoencoder_batch_size: int = Field(default=64, ge=1, le=1024)
    # Share of the catalogue held out to pick the best epoch (at least one image).
    autoencoder_validation_fraction: float = Field(default=0.1, gt=0, lt=1)
    # Weight of the contrastive (InfoNCE) term next to the reconstruction loss. 0 trains a
    # denoising autoencoder only, which ranks products far worse (P@1 0.07 vs 0.24 at 1.0
    # and 0.22 at 0.1 in the same 150 s; tools/autoencoder_research.py).
    autoencoder_contrastive_weight: float = Field(default=1.0, ge=0)
    # Training stops before an epoch that would end later than this, so that a run ends
    # within 10 minutes; the learning rate's cosine decay is spread over it. 0 = no limit.
    # Quality still rises with time (more epochs): see tools/autoencoder_research.py.
    autoencoder_time_budget_seconds: float = Field(default=540, ge=0)
    # "auto" trains in mixed_bfloat16 where the CPU has bfloat16 units (faster per epoch)
    # and float32 elsewhere. Stored models and vectors are float32.
    autoencoder_precision: Literal["auto", "float32", "bfloat16"] = "auto"

    @field_validator("autoencoder_input_size")
    @classmethod
    def _multiple_of_16(cls, value: int) -> int:
        if value % 16:
            raise ValueError(f"AUTOENCODER_INPUT_SIZE must be a multiple of 16, got {value}")
        return value
