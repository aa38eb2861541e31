"""The web page at ``/``: plain HTML, JS and CSS from ``web/`` (no build step), calling /api/v1."""

from pathlib import Path

from flask import Blueprint, send_from_directory

WEB_DIR = Path(__file__).resolve().parent / "web"
# Everything the page loads comes from the gateway; query previews and images fetched with
# the API key are blob: URLs. No inline script or style, so injected markup could not run.
PAGE_CSP = (
    "default-src 'self'; img-src 'self' blob:; script-src 'self'; style-src 'self'; "
    "connect-src 'self'; object-src 'none'; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'none'"
)

web = Blueprint("web", __name__, static_folder=WEB_DIR, static_url_path="/web")


@web.get("/")
def index():
    response = send_from_directory(WEB_DIR, "index.html", mimetype="text/html")
    response.headers["Content-Security-Policy"] = PAGE_CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    return response
