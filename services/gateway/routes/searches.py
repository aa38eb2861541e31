"""POST /searches: a photo in, a search job out."""

from flask import current_app, request

from shared.contracts import SearchAccepted, SearchForm, SearchRequest

from .. import catalogue, jobs
from ..answers import accepted
from ..apidoc import documented
from ..auth import read_access
from ..context import settings
from ..errors import validated
from ..inputs import uploaded_files
from ..uploads import canonical
from . import api


@api.post("/searches")
@documented(
    "createSearch",
    "searches",
    form=SearchForm,
    ok=(202, SearchAccepted, "Accepted: the job is queued. Poll `status_url`."),
    errors=(400, 401, 404, 413, 415, 503),
)
@read_access
def create_search():
    """Search the catalogue for images similar to a photo

    The photo comes as a `file`, as a `url` the gateway fetches (http/https; size, time and
    redirect limits; addresses that are not public refused), or as the `image_id` of a
    catalogue image, whose stored canonical image is the query and which is itself left out
    of the results (404 `image_not_found` for an id not in the catalogue). `filter` keeps
    only images whose metadata matches. Answers 202 at once; the job's `methods` hold each
    method's ranked `results` and `fused` one combined list. Until an autoencoder model
    exists its entry is `done` with `reason: not_trained` and no results.
    """
    files = uploaded_files()
    cfg = settings()
    search = validated(
        SearchRequest,
        {
            "files": len(files),
            "image_id": request.form.get("image_id"),
            "k": request.form.get("k"),
            "methods": request.form.getlist("methods"),
            "url": request.form.get("url"),
            "filter": request.form.get("filter"),
        },
        default_k=cfg.default_k,
        max_k=cfg.max_k,
    )
    if search.image_id is not None:
        jpeg = catalogue.jpeg(search.image_id)  # stored canonical already; 404 if unknown
    elif search.url is not None:
        jpeg = canonical(current_app.extensions["url_fetcher"].fetch(search.url)).jpeg
    else:
        jpeg = canonical(files[0].read()).jpeg
    job = jobs.start_search(jpeg, search)
    return accepted({"kind": "search", "methods": job.methods, "k": search.k, "job_id": job.id})
