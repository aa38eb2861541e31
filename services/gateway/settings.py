"""Gateway settings, read from the environment once at start-up."""

from pydantic import Field, IPvAnyNetwork, SecretStr, field_validator, model_validator

from shared import names
from shared.fusion import DEFAULT_CANDIDATES
from shared.jobs import DEFAULT_DEADLINE_SECONDS
from shared.settings import CommonSettings, refuse_placeholder


class GatewaySettings(CommonSettings):
    gateway_host: str = "127.0.0.1"
    gateway_port: int = Field(default=8000, ge=1, le=65535)
    # The HTTP server (waitress, services/gateway/__main__.py). Threads run requests once
    # they have fully arrived; idle and slow connections cost a socket, not a thread.
    gateway_threads: int = Field(default=96, ge=4)
    # Open connections at most; past it new ones wait in the listen backlog.
    gateway_connection_limit: int = Field(default=1000, ge=10)
    # A connection that sends (or reads) nothing for this long is closed: a client that never
    # finishes its headers or body is gone within this plus a few seconds (README.md,
    # "Measured here", `pytest -s tests/integration/test_front_door.py`).
    gateway_idle_timeout_seconds: int = Field(default=20, ge=1, le=3600)
    # Address of a reverse proxy whose X-Forwarded-For/-Proto the gateway may believe
    # (client addresses for the rate limit); unset = none.
    gateway_trusted_proxy: str | None = None
    # GET /jobs/{id}?wait= requests that may hold a thread at once; past it a poll answers at
    # once with Retry-After: 1. Must leave threads free for everything else.
    max_waiting_requests: int = Field(default=80, ge=0)
    # When set, every write (add, delete, train) needs it in the X-API-Key header.
    api_key: SecretStr | None = None
    # Reads (searches, jobs, images, stats) are open unless this is set (then they need the key).
    reads_require_key: bool = False
    # One request's whole body; larger uploads get 413 before any of it is decoded.
    max_upload_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    max_files_per_request: int = Field(default=500, ge=1)
    # Decompression bombs: an image may declare at most this many pixels. Decoding one
    # costs up to 4 bytes per pixel (JPEG less: it decodes shrunk), so this and
    # MAX_CONCURRENT_DECODES bound the gateway's memory (README, "Measured here").
    max_image_pixels: int = Field(default=50_000_000, ge=1)
    # Uploads decoded at once; the rest wait. Decoding is CPU work (one core each) and the
    # only large allocation a request makes: 2 x 50 Mpixel RGBA is 400 MB.
    max_concurrent_decodes: int = Field(default=2, ge=1)
    # How long an upload waits for a decode slot before it gets 503 with Retry-After.
    decode_wait_seconds: float = Field(default=20.0, ge=0)
    # A JSON body (POST /images/lookup, trainings) larger than this gets 413 before it is
    # parsed; 10,000 ids of 128 characters fit.
    max_json_bytes: int = Field(default=2 * 1024 * 1024, ge=1024)
    # Canonical images are stored at most this large; every model's input is smaller.
    stored_image_max_side: int = Field(default=512, ge=64)
    # Images per embedding task: replicas of a worker share a large upload in chunks this big.
    index_chunk_size: int = Field(default=64, ge=1)
    default_k: int = Field(default=10, ge=1)
    max_k: int = Field(default=100, ge=1)
    # How much the fused list trusts each method (JSON) until a fit to the catalogue's labels
    # has run (shared/runtime/fusion_fit.py), and on catalogues without labels: weights of
    # reciprocal rank fusion. vgg16 alone: no fixed autoencoder weight helped on every
    # catalogue measured (README, "Retrieval quality").
    fusion_weights: dict[str, float] = {"vgg16": 1.0, "autoencoder": 0.0}
    # Fit the fusion weights again once the catalogue holds this fraction more images than at
    # the last fit (they also refit after each training and activation); 0 = not on growth.
    fusion_refit_growth: float = Field(default=0.1, ge=0)
    # Results each method returns for fusion when a search asks for fewer, so an image one
    # method ranks just below k still counts (fitted and measured with 50).
    fusion_candidates: int = Field(default=DEFAULT_CANDIDATES, ge=1)
    # Seconds a job may take, per kind (JSON; one naming only some kinds keeps the defaults
    # of the others): past it an unfinished job ends "failed" with reason "timeout". Search
    # and training tasks carry it as Celery's expires, so no worker starts one nobody waits
    # for any more; indexing goes on (its images are in the catalogue already).
    job_deadline_seconds: dict[str, int] = DEFAULT_DEADLINE_SECONDS
    # Upper bound of GET /jobs/{id}?wait=...: a held request occupies a server thread
    # (at most MAX_WAITING_REQUESTS of them at once).
    max_wait_seconds: float = Field(default=30.0, ge=0)
    # Retrain the autoencoder on its own once the catalogue holds this fraction more images
    # than the active model was trained on (0.5: half as many again); 0 = only on request.
    autoencoder_retrain_growth: float = Field(default=0.0, ge=0)
    # Requests per minute per API key (per client address for requests without the key);
    # 0 = no limit. Above it: 429 with Retry-After. A fixed one-minute window counted in
    # Redis, so every gateway replica shares it. /health is never limited.
    rate_limit_per_minute: int = Field(default=0, ge=0)

    # POST /searches with a 'url' (services/gateway/url_fetch.py): the largest body fetched
    # (413 above, declared or not), the time the whole fetch may take (redirects included),
    # the redirects followed, and the fetches at once (each holds a thread while it waits).
    url_fetch_max_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    url_fetch_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    url_fetch_max_redirects: int = Field(default=5, ge=0, le=20)
    url_fetch_max_concurrent: int = Field(default=8, ge=1)
    # Networks (JSON list of CIDRs) a URL may resolve into although they are not public:
    # loopback, private, link-local, ... are refused otherwise. For tests and closed
    # networks; cloud metadata addresses stay refused.
    url_fetch_allowed_networks: list[IPvAnyNetwork] = []

    @field_validator("fusion_weights")
    @classmethod
    def _known_methods_and_sane_weights(cls, weights: dict[str, float]) -> dict[str, float]:
        unknown = set(weights) - set(names.METHODS)
        if unknown:
            raise ValueError(f"FUSION_WEIGHTS names unknown methods: {sorted(unknown)}")
        if any(w < 0 for w in weights.values()) or not any(w > 0 for w in weights.values()):
            raise ValueError("FUSION_WEIGHTS must be >= 0, with at least one above 0")
        return weights

    @field_validator("job_deadline_seconds")
    @classmethod
    def _known_kinds_and_positive_deadlines(cls, deadlines: dict[str, int]) -> dict[str, int]:
        unknown = set(deadlines) - set(DEFAULT_DEADLINE_SECONDS)
        if unknown:
            raise ValueError(
                f"JOB_DEADLINE_SECONDS names unknown job kinds {sorted(unknown)}; "
                f"known: {sorted(DEFAULT_DEADLINE_SECONDS)}"
            )
        if any(seconds < 1 for seconds in deadlines.values()):
            raise ValueError("JOB_DEADLINE_SECONDS must be at least 1 s for every kind")
        return {**DEFAULT_DEADLINE_SECONDS, **deadlines}

    @model_validator(mode="after")
    def _threads_left_for_other_requests(self) -> "GatewaySettings":
        if self.max_waiting_requests > self.gateway_threads - 4:
            raise ValueError(
                f"MAX_WAITING_REQUESTS ({self.max_waiting_requests}) must leave at least 4 of "
                f"the GATEWAY_THREADS ({self.gateway_threads}) for other requests"
            )
        return self

    @model_validator(mode="after")
    def _refuse_placeholder_key(self) -> "GatewaySettings":
        refuse_placeholder("API_KEY", self.api_key, self.environment)
        if self.environment == "production" and self.api_key is None:
            raise ValueError("API_KEY must be set in production: writes would be open to anyone")
        return self
