"""Job deadlines (pure functions, settings) and the heartbeat that keeps running tasks owned."""

import time

import pytest
from pydantic import ValidationError

from services.gateway.settings import GatewaySettings
from shared.jobs import JobRecord, timed_out
from shared.runtime.worker import Heartbeat


@pytest.mark.parametrize(
    ("status", "finished_at", "now", "expected"),
    [
        ("queued", None, 99.0, False),  # before the deadline nothing times out
        ("running", None, 100.0, True),
        ("queued", None, 150.0, True),
        ("done", 90.0, 150.0, False),  # finished in time: its result stands
        ("failed", 90.0, 150.0, False),
        ("done", 120.0, 150.0, True),  # finished after the deadline: still timed out
        ("failed", 101.0, 150.0, True),  # e.g. discarded by a worker as expired
    ],
)
def test_a_task_times_out_when_unfinished_at_its_jobs_deadline(status, finished_at, now, expected):
    assert timed_out(100.0, status, finished_at, now) is expected


def test_a_job_without_a_deadline_never_times_out():
    assert not timed_out(None, "queued", None, time.time() + 10**6)


def test_a_timeout_says_what_happened_and_what_to_do():
    job = JobRecord(id="j", kind="index", methods=["vgg16"], created_at=0.0, deadline=1800.0)
    outcome = job.timeout_outcome()
    assert outcome["status"] == "failed" and outcome["reason"] == "timeout"
    assert "1800 s" in outcome["message"] and "upload the same files again" in outcome["message"]


def test_job_records_without_a_deadline_still_load():
    old = '{"id":"j","kind":"search","methods":["vgg16"],"created_at":1.0,"params":{},"parts":1}'
    assert JobRecord.from_json(old).deadline is None


def test_a_partial_job_deadline_setting_keeps_the_other_defaults(monkeypatch):
    monkeypatch.setenv("JOB_DEADLINE_SECONDS", '{"search": 30}')
    assert GatewaySettings().job_deadline_seconds == {"search": 30, "index": 1800, "train": 7200}


@pytest.mark.parametrize(
    ("raw", "says"),
    [('{"serch": 30}', "unknown job kinds"), ('{"search": 0}', "at least 1 s")],
)
def test_a_wrong_job_deadline_setting_stops_start_up(monkeypatch, raw, says):
    monkeypatch.setenv("JOB_DEADLINE_SECONDS", raw)
    with pytest.raises(ValidationError, match=says):
        GatewaySettings()


def test_the_heartbeat_renews_only_the_tasks_still_held(redis_client):
    """kombu's unacked_index: tag -> time taken. A running task's time is renewed at every
    beat; an acknowledged one (gone from the set) is never put back."""
    redis_client.zadd("unacked_index", {"running": 1.0, "someone-elses": 1.0})
    beat = Heartbeat(
        redis_client,
        "w@test",
        ["vgg16.search"],
        unacked_index_key="unacked_index",
        running_tags=lambda: ["running", "acknowledged"],
    )
    beat.start()
    try:
        deadline = time.monotonic() + 5
        while redis_client.zscore("unacked_index", "running") == 1.0:
            assert time.monotonic() < deadline, "the heartbeat never renewed the task"
            time.sleep(0.05)
    finally:
        beat.stop()
    assert redis_client.zscore("unacked_index", "running") > time.time() - 10
    assert redis_client.zscore("unacked_index", "someone-elses") == 1.0
    assert redis_client.zscore("unacked_index", "acknowledged") is None
