"""GET /jobs/{job_id}: a job's status and, when done, its results."""

from flask import jsonify, request

from shared.contracts import JobPoll, JobView

from .. import jobs
from ..apidoc import documented
from ..auth import read_access
from . import api


@api.get("/jobs/<job_id>")
@documented(
    "getJob",
    "jobs",
    query=JobPoll,
    ok=(200, JobView, "The job."),
    errors=(400, 401, 404, 503),
)
@read_access
def get_job(job_id: str):
    """A job's status and, when done, its results"""
    view, come_back = jobs.poll(job_id, request.args.to_dict())
    response = jsonify(view)
    if come_back:
        response.headers["Retry-After"] = "1"
    return response
