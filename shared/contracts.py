"""The typed contract of the service, written once: requests, task payloads, task results
and the gateway's response bodies, as pydantic models.

The gateway validates what clients send with the request models and what workers return
with the result models; the workers build the result models and send them over Celery's
JSON as ``.model_dump(mode="json", exclude_unset=True)`` (fields never set stay absent, so a
method without a model answers without model fields). The OpenAPI document at
/api/v1/openapi.json is generated from these models and the gateway's routes.

A request model refuses bad input with ``InvalidInput`` errors: each carries the error code
and the sentence the client reads (and the HTTP status when it is not 400), so one helper,
``first_problem``, turns any validation failure into the gateway's JSON error.
"""

import json
import math
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    RootModel,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import PydanticCustomError

from shared import names
from shared.images import IMAGE_ID_PATTERN

Status = Literal["queued", "running", "done", "failed"]
METADATA_MAX_CHARS = 16_384
LOOKUP_MAX_IDS = 10_000
# A search's metadata filter: equality conditions, all of which must hold.
FILTER_MAX_KEYS = 8
FILTER_KEY_MAX_CHARS = 128
FILTER_VALUE_MAX_CHARS = 256
FilterValue = str | bool | int | float


# Refusals ---------------------------------------------------------------------------------
def invalid(code: str, message: str, status: int = 400) -> PydanticCustomError:
    """A refusal of bad input: the error code, the client's sentence, the HTTP status."""
    # The message goes in through the context: pydantic formats "{...}" in a template.
    return PydanticCustomError(code, "{message}", {"message": message, "status": status})


def first_problem(err: ValidationError) -> tuple[int, str, str]:
    """(status, code, message) of the first thing wrong with a request."""
    problem = err.errors(include_url=False)[0]
    context = problem.get("ctx") or {}
    if "status" in context:
        return int(context["status"]), problem["type"], str(context["message"])
    field = ".".join(str(part) for part in problem["loc"]) or "body"
    return 400, f"invalid_{field}", f"'{field}': {problem['msg']}"


def whole_number(raw: Any, name: str, default: int, low: int, high: int) -> int:
    """A form, query or JSON value as a whole number within [low, high]."""
    if raw is None or raw == "":
        return default
    try:
        value = int(str(raw))  # "3", 3; not "3.0", 3.5 or true
    except ValueError:
        raise invalid(f"invalid_{name}", f"'{name}' must be a whole number") from None
    if not low <= value <= high:
        raise invalid(f"invalid_{name}", f"'{name}' must be between {low} and {high}, got {value}")
    return value


def _limit(info: ValidationInfo, name: str, fallback: Any) -> Any:
    """A limit in force (MAX_K, ...), passed by the gateway as validation context."""
    return (info.context or {}).get(name, fallback)


# Requests ---------------------------------------------------------------------------------
class ImageUploadForm(BaseModel):
    """POST /images: the multipart form."""

    file: list[bytes] = Field(description="One or more images (at most MAX_FILES_PER_REQUEST).")
    id: list[Annotated[str, Field(pattern=IMAGE_ID_PATTERN.pattern)]] = Field(
        default_factory=list, description="One id per file, or none."
    )
    metadata: list[str] = Field(
        default_factory=list,
        description="JSON objects (at most 16 KiB each): one for all files, or one per file.",
    )


class ImageUpload(BaseModel):
    """POST /images, read: how many files, their ids and metadata, checked together."""

    files: int
    ids: list[str] = Field(default_factory=list)
    metadata: list[str] = Field(default_factory=list, description="The raw 'metadata' fields.")
    _parsed_metadata: list[dict[str, Any]] = PrivateAttr(default_factory=list)

    @field_validator("files")
    @classmethod
    def _some_files(cls, files: int, info: ValidationInfo) -> int:
        if files == 0:
            raise invalid(
                "missing_file", "send the image as multipart/form-data in a field named 'file'"
            )
        most = _limit(info, "max_files_per_request", files)
        if files > most:
            raise invalid(
                "too_many_files",
                f"at most {most} files per request; send the rest in another",
                413,
            )
        return files

    @model_validator(mode="after")
    def _one_each(self) -> "ImageUpload":
        if self.ids and len(self.ids) != self.files:
            raise invalid(
                "id_count_mismatch",
                f"got {len(self.ids)} 'id' fields for {self.files} files: give one id per "
                "file or none",
            )
        seen: set[str] = set()
        for image_id in self.ids:
            if image_id in seen:
                raise invalid("duplicate_id", f"the id {image_id!r} is given to more than one file")
            seen.add(image_id)
        if len(self.metadata) not in (0, 1, self.files):
            raise invalid(
                "metadata_count_mismatch",
                "give one 'metadata' field for all files, or one per file",
            )
        self._parsed_metadata = [parse_metadata(raw) for raw in self.metadata]
        return self

    def metadata_of(self, position: int) -> dict[str, Any]:
        """The metadata of the file at ``position`` (one field may serve all files)."""
        parsed = self._parsed_metadata
        if not parsed:
            return {}
        return parsed[position if len(parsed) > 1 else 0]


def parse_metadata(raw: str) -> dict[str, Any]:
    """A 'metadata' form field: a JSON object of at most 16 KiB."""
    if len(raw) > METADATA_MAX_CHARS:
        raise invalid("invalid_metadata", "'metadata' may be at most 16 KiB")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as err:
        raise invalid("invalid_metadata", f"'metadata' is not valid JSON: {err}") from err
    except RecursionError as err:  # "[[[[..." deeper than the parser's stack
        raise invalid("invalid_metadata", "'metadata' is nested too deeply") from err
    if not isinstance(value, dict):
        raise invalid("invalid_metadata", "'metadata' must be a JSON object")
    return value


class SearchForm(BaseModel):
    """POST /searches: the form (multipart, or urlencoded with 'url')."""

    file: bytes | SkipJsonSchema[None] = Field(
        default=None,
        description="The query photo (exactly one), or give 'url' or 'image_id' instead.",
    )
    image_id: str | SkipJsonSchema[None] = Field(
        default=None,
        pattern=IMAGE_ID_PATTERN.pattern,
        description="The id of a catalogue image to search with, instead of 'file' or "
        "'url': its stored canonical image is the query, and the image itself is left out "
        "of every method's results and of the fused list (so the first result is its "
        "nearest other image). An id not in the catalogue is 404 image_not_found.",
        examples=["3f1b0c7e9a2d4b6c8e0f1a2b3c4d5e6f"],
    )
    url: str | SkipJsonSchema[None] = Field(
        default=None,
        max_length=2048,
        description="An http(s) URL of the query photo, instead of 'file': the gateway "
        "fetches it (URL_FETCH_* limits; hosts on loopback, private, link-local or metadata "
        "addresses are refused with 400 url_address_refused).",
        examples=["https://example.com/lemon.jpg"],
    )
    k: int = Field(
        default=10, ge=1, description="Results per method (at most MAX_K; default DEFAULT_K)."
    )
    methods: str = Field(
        default=",".join(names.METHODS),
        description=f"Comma-separated subset of {', '.join(names.METHODS)} (default: all).",
        examples=[",".join(names.METHODS)],
    )
    filter: str | SkipJsonSchema[None] = Field(
        default=None,
        description="A JSON object of equality conditions on the images' metadata, all of "
        f"which must hold (at most {FILTER_MAX_KEYS} keys; values strings, numbers or "
        "booleans): only matching images are returned, still k of them when the catalogue "
        "holds k.",
        examples=['{"label": "Lemon"}'],
    )


class SearchRequest(BaseModel):
    """POST /searches, read: one file, one URL or one catalogue image's id; k within MAX_K,
    known methods, a filter."""

    # image_id and url before files: the check of files reads them
    image_id: str | None = None
    url: str | None = None
    files: int
    k: int
    methods: list[names.Method]
    filter: dict[str, FilterValue] | None = None

    @field_validator("files")
    @classmethod
    def _one_file_or_url(cls, files: int, info: ValidationInfo) -> int:
        if info.data.get("image_id") is not None:
            if files or info.data.get("url") is not None:
                raise invalid(
                    "image_id_and_file",
                    "send one of 'file', 'url' or 'image_id', not several: 'image_id' "
                    "already names the query image",
                )
            return files
        if info.data.get("url") is not None:
            if files:
                raise invalid("file_and_url", "send either a 'file' or a 'url', not both")
            return files
        if files == 0:
            raise invalid(
                "missing_file",
                "send the image as multipart/form-data in a field named 'file', its address "
                "in a field named 'url', or a catalogue image's id in 'image_id'",
            )
        if files != 1:
            raise invalid("one_file_only", "a search takes exactly one 'file'")
        return files

    @field_validator("image_id", mode="before")
    @classmethod
    def _image_id(cls, raw: Any) -> str | None:
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            return None  # an empty field is no id
        if not isinstance(raw, str) or not IMAGE_ID_PATTERN.fullmatch(raw.strip()):
            raise invalid(
                "invalid_image_id",
                "'image_id' must be an image id as the catalogue lists it (1-128 letters, "
                "digits, '.', '_' or '-')",
            )
        return raw.strip()

    @field_validator("url", mode="before")
    @classmethod
    def _url(cls, raw: Any) -> str | None:
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            return None  # an empty field (a form that has one) is no URL
        if not isinstance(raw, str):
            raise invalid("invalid_url", "'url' must be an http:// or https:// address")
        return raw.strip()

    @field_validator("k", mode="before")
    @classmethod
    def _k(cls, raw: Any, info: ValidationInfo) -> int:
        return whole_number(raw, "k", _limit(info, "default_k", 10), 1, _limit(info, "max_k", 100))

    @field_validator("methods", mode="before")
    @classmethod
    def _methods(cls, raw_values: list[str]) -> list[str]:
        requested = [m.strip() for raw in raw_values for m in raw.split(",") if m.strip()]
        if not requested:
            return list(names.METHODS)
        unknown = sorted(set(requested) - set(names.METHODS))
        if unknown:
            raise invalid(
                "unknown_method",
                f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(names.METHODS)}",
            )
        return list(dict.fromkeys(requested))

    @field_validator("filter", mode="before")
    @classmethod
    def _filter(cls, raw: Any) -> dict[str, Any] | None:
        return parse_filter(raw)


def parse_filter(raw: Any) -> dict[str, Any] | None:
    """A search's 'filter': a JSON object (text or parsed) of metadata key -> value."""
    if raw is None or raw == "":
        return None
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except (ValueError, RecursionError):
            raise invalid(
                "invalid_filter", '\'filter\' is not valid JSON: send e.g. {"label": "Lemon"}'
            ) from None
    if not isinstance(raw, dict) or not raw:
        raise invalid(
            "invalid_filter", '\'filter\' must be a non-empty JSON object, e.g. {"label": "Lemon"}'
        )
    if len(raw) > FILTER_MAX_KEYS:
        raise invalid("invalid_filter", f"'filter' may name at most {FILTER_MAX_KEYS} keys")
    for key, value in raw.items():
        if not key or len(key) > FILTER_KEY_MAX_CHARS:
            raise invalid(
                "invalid_filter",
                f"a 'filter' key must be 1 to {FILTER_KEY_MAX_CHARS} characters long",
            )
        if not _scalar(value):
            raise invalid(
                "invalid_filter",
                f"'filter' value of {key[:40]!r} must be a string (at most "
                f"{FILTER_VALUE_MAX_CHARS} characters), a finite number or a boolean",
            )
    return raw


def _scalar(value: Any) -> bool:
    if isinstance(value, bool):
        return True
    if isinstance(value, int | float):
        return math.isfinite(value)
    return isinstance(value, str) and len(value) <= FILTER_VALUE_MAX_CHARS


class LookupRequest(BaseModel):
    """POST /images/lookup: which of these ids are in the catalogue."""

    ids: list[str] = Field(max_length=LOOKUP_MAX_IDS)

    @model_validator(mode="wrap")
    @classmethod
    def _shape(cls, data: Any, handler) -> "LookupRequest":
        ids = data.get("ids") if isinstance(data, dict) else None
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise invalid("invalid_ids", 'send a JSON body {"ids": ["...", ...]}')
        if len(ids) > LOOKUP_MAX_IDS:
            raise invalid("invalid_ids", "at most 10,000 ids per lookup")
        return handler(data)


class ImagePage(BaseModel):
    """GET /images: query parameters."""

    offset: int = Field(default=0, ge=0)
    limit: int = Field(default=50, ge=1, le=500)

    @field_validator("offset", mode="before")
    @classmethod
    def _offset(cls, raw: Any) -> int:
        return whole_number(raw, "offset", 0, 0, 10**9)

    @field_validator("limit", mode="before")
    @classmethod
    def _page_limit(cls, raw: Any) -> int:
        return whole_number(raw, "limit", 50, 1, 500)


class JobPoll(BaseModel):
    """GET /jobs/{job_id}: query parameters."""

    wait: float = Field(
        default=0.0,
        ge=0,
        description="Hold the request up to this many seconds until the job is done "
        "(longer values are cut to MAX_WAIT_SECONDS).",
    )

    @field_validator("wait", mode="before")
    @classmethod
    def _wait(cls, raw: Any, info: ValidationInfo) -> float:
        if raw is None or raw == "":
            return 0.0
        try:
            value = float(raw)
        except ValueError:
            raise invalid("invalid_wait", "'wait' must be a number of seconds") from None
        if not value >= 0.0:  # also refuses NaN
            raise invalid("invalid_wait", "'wait' must be at least 0.0")
        return min(value, _limit(info, "max_wait_seconds", value))  # shortened, not refused


class TrainingOptions(BaseModel):
    """POST /models/autoencoder/trainings: the JSON body (optional, every field optional)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"example": {"epochs": 30}})

    # Absent means the worker's setting (AUTOENCODER_EPOCHS, ...); null is refused.
    epochs: int | SkipJsonSchema[None] = Field(default=None, ge=1, le=500)
    patience: int | SkipJsonSchema[None] = Field(default=None, ge=1, le=100)
    always_activate: bool | SkipJsonSchema[None] = Field(
        default=None,
        description="Activate the new version even if it scores below the active one on "
        "the activation check (default false: it is then kept as a candidate).",
    )

    @model_validator(mode="before")
    @classmethod
    def _an_object(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            raise invalid("invalid_options", "the body must be a JSON object (or empty)")
        unknown = sorted(set(data) - set(cls.model_fields))
        if unknown:
            raise invalid(
                "invalid_options",
                f"unknown option(s) {', '.join(unknown)}; allowed: {', '.join(cls.model_fields)}",
            )
        return data

    @field_validator("epochs", mode="before")
    @classmethod
    def _epochs(cls, raw: Any) -> int:
        return whole_number(str(raw), "epochs", 0, 1, 500)

    @field_validator("patience", mode="before")
    @classmethod
    def _patience(cls, raw: Any) -> int:
        return whole_number(str(raw), "patience", 0, 1, 100)

    @field_validator("always_activate", mode="before")
    @classmethod
    def _always_activate(cls, raw: Any) -> bool:
        if not isinstance(raw, bool):
            raise invalid("invalid_always_activate", "'always_activate' must be true or false")
        return raw


# Task payloads (positional Celery arguments, in field order) ------------------------------
class TaskPayload(BaseModel):
    """A task's arguments. Sent positionally, so a worker of the previous release reads them."""

    job_id: str

    def as_args(self) -> list[Any]:
        return list(self.model_dump(mode="json").values())


class SearchTask(TaskPayload):
    """``{method}.search``: embed the query image stored under ``query_key``, return k hits
    (only images whose metadata matches ``filter``, when given)."""

    query_key: str
    k: int = Field(ge=1)
    filter: dict[str, FilterValue] | None = None

    def as_args(self) -> list[Any]:
        # Without a filter, the three arguments a worker of the previous release takes.
        args = super().as_args()
        return args if self.filter else args[:3]


class SearchShardTask(TaskPayload):
    """``{method}.search_shard``: search one index shard with a query vector that another
    worker embedded with ``model_version`` and stored under ``vector_key``; return k hits
    (only images whose metadata matches ``filter``, when given)."""

    vector_key: str
    shard: int = Field(ge=0)
    k: int = Field(ge=1)
    model_version: str
    filter: dict[str, FilterValue] | None = None


class EmbedBatchTask(TaskPayload):
    """``{method}.embed_batch``: embed these catalogue images into every index to fill."""

    image_ids: list[str]


class TrainTaskPayload(TaskPayload):
    """``autoencoder.train``: train a new model version on the catalogue."""

    options: dict[str, bool | int] = Field(default_factory=dict)


class FitFusionTask(TaskPayload):
    """``autoencoder.fit_fusion``: fit the fused list's weights to the catalogue's labels."""

    candidates: int = Field(ge=1, description="Results per method the gateway fuses.")


# Task results -----------------------------------------------------------------------------
class WorkerResult(BaseModel):
    """What a worker returns; fields never set are left out of the JSON."""

    model_config = ConfigDict(extra="allow")

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_unset=True)


class Hit(BaseModel):
    id: str
    score: float
    rank: int = Field(ge=1)


class SearchTimings(BaseModel):
    embed: float
    search: float
    embedded_together: int = Field(description="Queries embedded in the same forward pass.")


class NotReady(WorkerResult):
    """A method without a model: why, and what to do."""

    reason: Literal["not_trained"] | None = None
    message: str | None = None


class ShardSearched(BaseModel):
    """One index shard's part of a search (INDEX_SHARDS > 1)."""

    shard: int
    worker: str | None = None
    index_size: int
    index_kind: Literal["exact", "hnsw"]
    search_ms: float


class ShardTask(BaseModel):
    shard: int
    task_id: str


class ShardFanOut(BaseModel):
    """The shards a search's worker does not serve, searched by other workers with its
    query vector: the gateway merges their top k into this result's."""

    k: int = Field(ge=1)
    index_shards: int = Field(ge=2)
    tasks: list[ShardTask]


class ShardSearchResult(WorkerResult, ShardSearched):
    """One shard's answer to a ``{method}.search_shard`` task: what it searched, and its hits
    (exact scores, not rounded: the gateway merges them by score)."""

    method: names.Method
    model_version: str
    results: list[Hit] = Field(default_factory=list)


class SearchResult(NotReady):
    """A method's answer to one search."""

    method: names.Method
    results: list[Hit] = Field(default_factory=list)
    worker: str | None = None
    model_version: str | None = None
    metric: Literal["cosine", "euclidean"] | None = None
    higher_is_better: bool | None = None
    index_size: int | None = None
    matching: int | None = Field(
        default=None, description="With a filter: the catalogue images that match it."
    )
    index_kind: Literal["exact", "hnsw"] | None = None
    timings_ms: SearchTimings | None = None
    shards: list[ShardSearched] | None = Field(
        default=None,
        description="With INDEX_SHARDS > 1: each index shard searched (all of them, with "
        "the one query vector), by which worker.",
    )
    shard_fan_out: ShardFanOut | None = Field(
        default=None, description="Between the workers and the gateway only (merged away)."
    )


class IndexCounts(BaseModel):
    embedded: int
    already_indexed: int
    gone: int = Field(description="Deleted (or replaced) before being embedded.")


class IndexResult(NotReady):
    """A method's work on one chunk of an upload. Top-level counts are those of the model
    answering searches; ``versions`` details every index filled (one may be being built)."""

    method: names.Method
    requested: int
    embedded: int | None = None
    already_indexed: int | None = None
    gone: int | None = None
    versions: dict[str, IndexCounts] | None = None


class ActivationCheck(BaseModel):
    """How a new version and the active one scored on the same check (README, "Model
    versions"): leave-one-out P@1 over the catalogue's labels, or self-retrieval of
    augmented views of held-out images. Higher is better."""

    kind: Literal["label_p_at_1", "augmented_self_retrieval"]
    images: int = Field(description="Queries measured.")
    score: float = Field(description="This version's score.")
    active_version: str
    active_score: float


class Activation(BaseModel):
    """Whether a training's new version became active, and why."""

    activated: bool
    reason: str = Field(description="A sentence for a person.")
    check: ActivationCheck | None = Field(
        default=None, description="Absent for a first version (it always becomes active)."
    )


class TrainResult(WorkerResult):
    """A finished training: the new version (active, or a candidate) and how it was trained."""

    version: str
    index_size: int
    created_at: float
    job_id: str
    input_size: int
    latent_dim: int
    images: int
    train_images: int
    validation_images: int
    epochs_run: int
    best_epoch: int
    best_val_loss: float
    stopped: str = Field(description='"epochs", "patience" or "time_budget".')
    training_seconds: float
    activation: Activation | None = Field(
        default=None,
        description="Whether the version became active; if not, it is a candidate that "
        "POST .../versions/{version}/activate can still activate.",
    )


class FusionQuality(BaseModel):
    p_at_1: float
    map_at_10: float


class FusionWeights(WorkerResult):
    """The fused list's weights and how they were obtained: fitted by leave-one-out on the
    catalogue's labelled images, or the gateway's FUSION_WEIGHTS and why."""

    weights: dict[str, float] | None = Field(
        description="Each method's weight; null in a stored record means FUSION_WEIGHTS."
    )
    source: Literal["fitted", "default"]
    reason: str = Field(description="How the weights were obtained, for a person.")
    fitted_at: float | None = Field(default=None, description="Unix time of the fit.")
    labelled_images: int = Field(default=0, description="Images with a metadata.label.")
    classes: int = 0
    queries: int = Field(default=0, description="Leave-one-out queries the fit ran.")
    catalogue_size: int = 0
    candidates: int | None = None
    autoencoder_version: str | None = None
    leave_one_out: dict[str, FusionQuality] | None = Field(
        default=None,
        description="Leave-one-out quality of vgg16 alone, the autoencoder alone and the "
        "fused list with the chosen weights.",
    )
    autoencoder_share: dict[str, float] | None = Field(
        default=None,
        description="Leave-one-out P@1 per autoencoder share of the grid (0 = vgg16 alone).",
    )


TASK_RESULTS: dict[str, type[WorkerResult]] = {
    "search": SearchResult,
    "index": IndexResult,
    "train": TrainResult,
}


# Responses --------------------------------------------------------------------------------
class Rejected(BaseModel):
    position: int = Field(description="0-based index of the file.")
    filename: str | None
    code: str
    message: str
    status: int = Field(description="The status it alone would get.")


class ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="allow")

    code: str = Field(examples=["not_an_image"])
    message: str = Field(description="A sentence for a person.")
    rejected: list[Rejected] | None = Field(
        default=None, description="POST /images: why each file was refused."
    )
    job_id: str | None = Field(
        default=None, description="409 training_in_progress: the running training."
    )


class Error(BaseModel):
    """Every error: ``{"error": {"code": ..., "message": ...}}``."""

    error: ErrorDetail


class ImageLinks(BaseModel):
    url: str = Field(description="The image's metadata.")
    image_url: str = Field(description="The canonical JPEG.")
    thumbnail_url: str = Field(description="A JPEG at most 160 px.")


LABEL = "What a person calls the image: metadata.label, else the file name, else the id."


class Image(ImageLinks):
    id: str = Field(examples=["3f1b0c7e9a2d4b6c8e0f1a2b3c4d5e6f"])
    label: str = Field(description=LABEL)
    filename: str | None
    width: int
    height: int
    added_at: float = Field(description="Unix time.")
    metadata: dict[str, Any]


class ImageList(BaseModel):
    total: int = Field(description="Images in the catalogue.")
    offset: int
    limit: int
    images: list[Image]


class LookupAnswer(BaseModel):
    existing: list[str] = Field(description="The ids found, in the order given.")


class Deleted(BaseModel):
    id: str
    deleted: Literal[True]


class Accepted(BaseModel):
    """202: the job is queued; poll ``status_url`` (also in ``Location``)."""

    job_id: str
    status_url: str


class StoredImage(BaseModel):
    id: str
    filename: str | None
    created: bool = Field(description="false when the id was already stored.")


class IndexAccepted(Accepted):
    images: list[StoredImage]
    rejected: list[Rejected]
    training_job_id: str | None = Field(
        default=None,
        description="Set when this upload grew the catalogue enough to start an autoencoder "
        "training (AUTOENCODER_RETRAIN_GROWTH).",
    )


class SearchAccepted(Accepted):
    kind: Literal["search"]
    methods: list[names.Method]
    k: int


class TrainingAccepted(Accepted):
    kind: Literal["train"]


class ResultView(Hit):
    """A hit as clients read it: with the image's filename and links."""

    model_config = ConfigDict(extra="allow")

    score: float = Field(
        description="vgg16: cosine similarity; autoencoder: Euclidean distance; fused: "
        "weighted reciprocal rank fusion, sum of weight / (60 + rank). See `higher_is_better`."
    )
    ranks: dict[str, int] | None = Field(
        default=None, description="Fused results: the rank in each method's list."
    )
    label: str | None = Field(default=None, description=LABEL)
    filename: str | None = None
    url: str | None = None
    image_url: str | None = None
    thumbnail_url: str | None = None


class TrainingProgress(BaseModel):
    """A running training: ``phase`` is loading, training, embedding or checking (the new
    version against the active one)."""

    model_config = ConfigDict(extra="allow")

    phase: str | None = Field(default=None, examples=["training"])
    epoch: int | None = None
    epochs: int | None = Field(default=None, description="The maximum; may stop earlier.")
    loss: float | None = None
    val_loss: float | None = None
    seconds: float | None = None
    eta_seconds: float | None = None
    images: int | None = None
    embedded: int | None = None
    version: str | None = None
    updated_at: float | None = None


class MethodOutcome(BaseModel):
    """One method's part of a job: its task's result (search, index or train) with its
    status. A method without a model says ``reason: not_trained``; one not finished by the
    job's deadline is ``failed`` with ``reason: timeout``."""

    model_config = ConfigDict(extra="allow")

    status: Status
    error: str | None = None
    errors: list[str] | None = None
    reason: str | None = Field(
        default=None,
        examples=["not_trained"],
        description="`not_trained` (no model yet) or `timeout` (past the job's deadline).",
    )
    message: str | None = None
    progress: TrainingProgress | None = None
    results: list[ResultView] | None = None
    total: int | None = Field(
        default=None,
        description="Searches: how many images this method could have returned (its index, "
        "or the images matching the filter; less the query image of an `image_id` search): "
        "the N of 'k of N'.",
    )
    parts: int | None = Field(default=None, description="Indexing tasks of a large upload.")
    parts_done: int | None = None
    shards: list[ShardSearched] | None = Field(
        default=None,
        description="Searches with INDEX_SHARDS > 1: each index shard searched with the one "
        "query vector (results are the merged top k of all of them), by which worker.",
    )


class FusedResults(BaseModel):
    """Searches: one list combining the methods' rankings."""

    model_config = ConfigDict(extra="allow")

    method: Literal["weighted_reciprocal_rank_fusion"]
    higher_is_better: bool
    methods: list[str]
    weights: dict[str, float] = Field(description="Each method's weight.")
    fit: FusionWeights = Field(description="How the weights were obtained.")
    results: list[ResultView]
    total: int | None = Field(
        default=None, description="The largest of the methods' `total`: the N of 'k of N'."
    )


class JobView(BaseModel):
    """A job as clients read it."""

    id: str
    kind: Literal["search", "index", "train"]
    status: Status = Field(description="done once every method finished and one succeeded.")
    created_at: float
    deadline: float | None = Field(
        description="Unix time after which an unfinished job is `failed` with "
        "`reason: timeout` (JOB_DEADLINE_SECONDS)."
    )
    params: dict[str, Any]
    methods: dict[str, MethodOutcome]
    reason: Literal["timeout"] | None = Field(
        default=None, description="Why a failed job failed, when its methods agree."
    )
    message: str | None = None
    fused: FusedResults | None = None


class ModelVersion(BaseModel):
    model_config = ConfigDict(extra="allow")

    version: str
    active: bool
    index_size: int
    loss_curve_url: str
    preview_url: str
    created_at: float | None = None
    best_val_loss: float | None = None
    best_epoch: int | None = None
    epochs_run: int | None = None
    images: int | None = None
    stopped: str | None = None
    activation: Activation | None = Field(
        default=None,
        description="What its training decided: `activated: false` marks a candidate, with "
        "the scores of both versions.",
    )


class ModelList(BaseModel):
    active: str | None
    building: list[str]
    versions: list[ModelVersion] = Field(description="Newest first.")
    training_job_id: str | None = Field(
        default=None,
        description="The training running now, whoever started it (a request, the "
        "catalogue's growth): poll GET /jobs/{training_job_id} for its epoch, losses and ETA. "
        "null when none runs.",
    )


class Activated(BaseModel):
    active: str
    previous: str | None


class QueueHealth(BaseModel):
    workers: list[str]
    waiting: int


class Health(BaseModel):
    status: Literal["ok", "degraded", "unavailable"]
    redis: str | None = None
    missing: list[str] | None = Field(
        default=None, description="queues that no live worker consumes"
    )
    message: str | None = None
    queues: dict[str, QueueHealth] | None = None


class HealthOrError(RootModel[Health | Error]):
    """/health's 503: its own verdict when Redis does not answer, or an error."""


class MethodStats(BaseModel):
    model_config = ConfigDict(extra="allow")

    model_version: str | None
    index_size: int
    building: dict[str, int]


class SearchLimits(BaseModel):
    default_k: int = Field(description="Results per method when a search gives no k.")
    max_k: int = Field(description="The largest k a search may ask for.")


class Stats(BaseModel):
    model_config = ConfigDict(extra="allow")

    catalogue_size: int
    methods: dict[str, MethodStats]
    fusion: FusionWeights = Field(description="The fused list's weights in use.")
    search_limits: SearchLimits | None = None


class FusionFitAccepted(BaseModel):
    """202: a fit is queued; ``GET status_url`` shows its ``fitted_at`` once it ran."""

    task_id: str
    status_url: str


def body(model: BaseModel) -> dict[str, Any]:
    """A response model as JSON, leaving out the optional fields never set."""
    return model.model_dump(mode="json", exclude_unset=True)
