"""Job contracts: what a job record holds and how Celery task states map to job statuses.

A job is one client request (a search, an indexing batch, a training run). It fans out to
Celery tasks: one per method, or for large indexing jobs one per method and chunk of images,
so that several replicas of a worker share the work. Task ids are derived from the job id,
the method and the chunk number, so the gateway finds every task of a job from its record.
"""

import json
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

JobKind = Literal["search", "index", "train"]
Status = Literal["queued", "running", "done", "failed"]
FINAL_STATUSES: frozenset[str] = frozenset({"done", "failed"})

# Seconds a job of each kind may take (JOB_DEADLINE_SECONDS overrides them). A search is
# answered in seconds; an upload takes as long as its images take to embed (README.md,
# "Catalogue scale"); a training is bounded by AUTOENCODER_TIME_BUDGET_SECONDS plus
# embedding the catalogue.
DEFAULT_DEADLINE_SECONDS: dict[str, int] = {"search": 60, "index": 1800, "train": 7200}

# What a client is told a job that timed out means, and what to do about it.
_TIMEOUT_ADVICE: dict[str, str] = {
    "search": "no worker answered in time (it may have stopped, or the queue is long); "
    "search again",
    "index": "the images are stored and their indexing goes on, but some may not be "
    "searchable by this method yet; upload the same files again later to check (images "
    "already indexed are skipped)",
    "train": "start a new training",
}

# Celery states -> the four statuses clients see. PENDING is also what Celery reports for a
# task it knows nothing about; the job record tells us the task was sent, so it is "queued".
_CELERY_TO_STATUS: dict[str, Status] = {
    "PENDING": "queued",
    "RECEIVED": "queued",
    "STARTED": "running",
    "PROGRESS": "running",
    "RETRY": "running",
    "SUCCESS": "done",
    "FAILURE": "failed",
    "REVOKED": "failed",
}


def status_from_celery(state: str) -> Status:
    return _CELERY_TO_STATUS.get(state, "running")


def new_job_id() -> str:
    return uuid.uuid4().hex


def task_id(job_id: str, method: str, part: int = 0) -> str:
    return f"{job_id}-{method}-{part}"


def shard_task_id(job_id: str, method: str, shard: int) -> str:
    """The search_shard task of one index shard of a search (sent by the embedding worker)."""
    return f"{job_id}-{method}-shard-{shard}"


@dataclass(frozen=True)
class JobRecord:
    id: str
    kind: JobKind
    methods: list[str]
    created_at: float = field(default_factory=time.time)
    params: dict[str, Any] = field(default_factory=dict)
    parts: int = 1  # tasks per method
    # Unix time after which an unfinished job counts as failed (reason "timeout") and its
    # search or training task expires unstarted; None for records written before deadlines.
    deadline: float | None = None

    def task_ids(self, method: str) -> list[str]:
        return [task_id(self.id, method, part) for part in range(self.parts)]

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: bytes | str) -> "JobRecord":
        return cls(**json.loads(raw))

    def timeout_outcome(self) -> dict[str, Any]:
        """What a method (or part) still unfinished at the deadline reports."""
        seconds = round((self.deadline or self.created_at) - self.created_at)
        message = (
            f"not finished within the {self.kind} deadline ({seconds} s, JOB_DEADLINE_SECONDS): "
            + _TIMEOUT_ADVICE[self.kind]
        )
        return {"status": "failed", "reason": "timeout", "message": message, "error": message}


def timed_out(
    deadline: float | None, status: Status, finished_at: float | None, now: float
) -> bool:
    """Whether a task counts as timed out: unfinished at its job's deadline.

    Judged as at the deadline, so "failed" stays final: a task that finishes after it (a
    chunk already running, a message discarded as expired) does not turn the job "done".
    """
    if deadline is None or now < deadline:
        return False
    return status not in FINAL_STATUSES or (finished_at is not None and finished_at > deadline)


def overall_status(method_statuses: list[Status]) -> Status:
    """A job is done once every method has finished and at least one succeeded.

    A search whose one method failed is still "done": the other method's results are usable,
    and the failed method says why in its own entry.
    """
    if not method_statuses:
        return "done"
    if all(s in FINAL_STATUSES for s in method_statuses):
        return "failed" if all(s == "failed" for s in method_statuses) else "done"
    if all(s == "queued" for s in method_statuses):
        return "queued"
    return "running"
