"""POST /searches with a 'url': the gateway fetches it from a real HTTP server on 127.0.0.1,
within its size, time and redirect limits, and refuses addresses that are not public."""

import io
import ipaddress
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from services.gateway.app import create_app
from services.gateway.settings import GatewaySettings
from services.gateway.url_fetch import refusal_reason
from shared import keys
from tests.conftest import fresh_database
from tests.helpers.images import png

FETCH_LIMIT = 64 * 1024
TIMEOUT = 1.5
PICTURE = png(seed=3)


class Handler(BaseHTTPRequestHandler):
    """The remote web server: one path per behaviour a fetch must handle."""

    protocol_version = "HTTP/1.1"
    seen_hosts: list[str] = []

    def log_message(self, *_args) -> None:  # quiet
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        Handler.seen_hosts.append(self.headers.get("Host", ""))
        port = self.server.server_address[1]
        route = {
            "/image.png": lambda: self._send(200, PICTURE, "image/png"),
            "/redirect": lambda: self._redirect("/image.png"),
            "/redirect-twice": lambda: self._redirect(f"http://127.0.0.1:{port}/redirect"),
            "/redirect-loop": lambda: self._redirect("/redirect-loop"),
            # Loopback too, but outside the allowed 127.0.0.1/32.
            "/redirect-refused": lambda: self._redirect(f"http://127.0.0.2:{port}/image.png"),
            "/redirect-metadata": lambda: self._redirect("http://169.254.169.254/latest/"),
            "/redirect-ftp": lambda: self._redirect("ftp://127.0.0.1/image.png"),
            "/page.html": lambda: self._send(200, b"<html>no image</html>" * 20, "text/html"),
            "/missing": lambda: self._send(404, b"not here", "text/plain"),
            "/big-declared": self._big_declared,
            "/big-undeclared": self._big_undeclared,
            "/slow": self._slow,
            "/trickle": self._trickle,
        }.get(self.path)
        if route is None:
            self._send(404, b"", "text/plain")
        else:
            route()

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _big_declared(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(FETCH_LIMIT + 1))
        self.end_headers()
        self.wfile.write(PICTURE)  # never the whole of what it declares

    def _big_undeclared(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Connection", "close")  # no length: the body ends when it closes
        self.end_headers()
        try:
            for _ in range(64):
                self.wfile.write(PICTURE + b"\0" * 8192)
        except OSError:
            pass  # the gateway hung up, as it should

    def _slow(self) -> None:
        time.sleep(TIMEOUT * 2)
        self._send(200, PICTURE, "image/png")

    def _trickle(self) -> None:
        """Headers at once, then a byte every 0.2 s: each read is quick, the whole is not."""
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(PICTURE)))
        self.end_headers()
        try:
            for byte in PICTURE[:40]:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(0.2)
        except OSError:
            pass


@pytest.fixture(scope="module")
def remote():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def gateway_app(redis_url, **settings):
    app = create_app(
        GatewaySettings(
            redis_url=fresh_database(redis_url),
            api_key="url-test-key",
            url_fetch_max_bytes=FETCH_LIMIT,
            url_fetch_timeout_seconds=TIMEOUT,
            url_fetch_max_redirects=2,
            **settings,
        )
    )
    return app


@pytest.fixture(scope="module")
def gateway(redis_url):
    """A gateway that may fetch from 127.0.0.1 (only: not the rest of 127/8)."""
    app = gateway_app(redis_url, url_fetch_allowed_networks=["127.0.0.1/32"])
    yield app
    app.extensions["redis"].flushdb()


@pytest.fixture(scope="module")
def strict_gateway(redis_url):
    """A gateway with the default: no address that is not public."""
    app = gateway_app(redis_url)
    yield app
    app.extensions["redis"].flushdb()


def search(app, url: str, **fields):
    return app.test_client().post("/api/v1/searches", data={"url": url, "k": "3", **fields})


def error_of(response) -> tuple[int, str]:
    return response.status_code, response.get_json()["error"]["code"]


def test_a_good_image_takes_the_uploads_path(gateway, remote):
    response = search(gateway, f"{remote}/image.png")
    assert response.status_code == 202, response.get_json()
    stored = gateway.extensions["redis"].get(keys.query_image(response.get_json()["job_id"]))
    canonical = Image.open(io.BytesIO(stored))
    assert canonical.format == "JPEG" and canonical.size == Image.open(io.BytesIO(PICTURE)).size


def test_redirects_are_followed_and_checked_each_time(gateway, remote):
    assert search(gateway, f"{remote}/redirect").status_code == 202
    assert search(gateway, f"{remote}/redirect-twice").status_code == 202
    assert error_of(search(gateway, f"{remote}/redirect-loop")) == (400, "url_too_many_redirects")
    refused = search(gateway, f"{remote}/redirect-refused")
    assert error_of(refused) == (400, "url_address_refused")
    assert "127.0.0.2" in refused.get_json()["error"]["message"]
    assert error_of(search(gateway, f"{remote}/redirect-metadata")) == (
        400,
        "url_address_refused",
    )
    assert error_of(search(gateway, f"{remote}/redirect-ftp")) == (400, "invalid_url_scheme")


def test_too_large_declared_or_not(gateway, remote):
    for path in ("/big-declared", "/big-undeclared"):
        response = search(gateway, f"{remote}{path}")
        assert error_of(response) == (413, "url_too_large"), path
        assert f"{FETCH_LIMIT:,}" in response.get_json()["error"]["message"]


@pytest.mark.parametrize("path", ["/slow", "/trickle"])
def test_a_slow_server_times_out_at_the_limit(gateway, remote, path):
    started = time.monotonic()
    response = search(gateway, f"{remote}{path}")
    elapsed = time.monotonic() - started
    assert error_of(response) == (400, "url_timeout")
    assert TIMEOUT * 0.9 < elapsed < TIMEOUT + 1.0


def test_not_an_image_and_error_statuses(gateway, remote):
    assert error_of(search(gateway, f"{remote}/page.html")) == (415, "not_an_image")
    missing = search(gateway, f"{remote}/missing")
    assert error_of(missing) == (400, "url_status")
    assert "404" in missing.get_json()["error"]["message"]


@pytest.mark.parametrize(
    "url",
    ["ftp://127.0.0.1/image.png", "file:///etc/passwd", "javascript:alert(1)", "127.0.0.1/x"],
)
def test_only_http_and_https(gateway, url):
    assert error_of(search(gateway, url)) == (400, "invalid_url_scheme")


def test_bad_urls_and_bad_combinations(gateway, remote):
    assert error_of(search(gateway, "http://")) == (400, "invalid_url")
    assert error_of(search(gateway, "http://user:pw@127.0.0.1/")) == (400, "invalid_url")
    assert error_of(search(gateway, "http://127.0.0.1:99999/")) == (400, "invalid_url")
    assert error_of(search(gateway, "http://no-such-host.invalid/x.png")) == (
        400,
        "url_unreachable",
    )
    both = gateway.test_client().post(
        "/api/v1/searches",
        data={"url": f"{remote}/image.png", "file": (io.BytesIO(PICTURE), "q.png")},
    )
    assert error_of(both) == (400, "file_and_url")


def test_loopback_is_refused_when_not_allowed(strict_gateway, remote):
    port = remote.rsplit(":", 1)[1]
    for url in (
        f"{remote}/image.png",
        f"http://localhost:{port}/image.png",
        f"http://[::1]:{port}/image.png",
        f"http://[::ffff:127.0.0.1]:{port}/image.png",
        f"http://2130706433:{port}/image.png",  # 127.0.0.1 as one number
    ):
        response = search(strict_gateway, url)
        assert error_of(response) == (400, "url_address_refused"), url


def test_the_connection_goes_to_the_address_checked(gateway, remote, monkeypatch):
    """DNS rebinding: a name that resolves to an allowed address when checked and to the
    metadata service a moment later is fetched from the first address, never looked up
    again; the request still names the host."""
    port = int(remote.rsplit(":", 1)[1])
    answers = iter(["127.0.0.1"] + ["169.254.169.254"] * 10)
    real_getaddrinfo = socket.getaddrinfo

    def rebinding(host, *args, **kwargs):
        if host != "rebind.test":
            return real_getaddrinfo(host, *args, **kwargs)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (next(answers), port))]

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    Handler.seen_hosts.clear()
    assert search(gateway, f"http://rebind.test:{port}/image.png").status_code == 202
    assert Handler.seen_hosts == [f"rebind.test:{port}"]


@pytest.mark.parametrize(
    ("address", "refused"),
    [
        ("8.8.8.8", False),
        ("2606:4700:4700::1111", False),
        ("127.0.0.1", True),
        ("10.1.2.3", True),
        ("172.16.0.1", True),
        ("192.168.1.1", True),
        ("100.64.0.1", True),  # CGNAT
        ("169.254.169.254", True),  # metadata
        ("169.254.1.1", True),
        ("224.0.0.1", True),
        ("0.0.0.0", True),
        ("240.0.0.1", True),
        ("255.255.255.255", True),
        ("192.0.2.1", True),  # documentation
        ("::1", True),
        ("::", True),
        ("fe80::1", True),
        ("fc00::1", True),
        ("fd00:ec2::254", True),
        ("ff02::1", True),
        ("::ffff:127.0.0.1", True),
        ("::ffff:10.0.0.1", True),
        ("::ffff:8.8.8.8", False),
        ("2002:7f00:1::", True),  # 6to4 of 127.0.0.1
        ("64:ff9b::a9fe:a9fe", True),  # NAT64 of 169.254.169.254
    ],
)
def test_which_addresses_are_refused(address, refused):
    assert (refusal_reason(ipaddress.ip_address(address), ()) is not None) is refused


def test_allowed_networks_never_open_the_metadata_service():
    everything = (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))
    assert refusal_reason(ipaddress.ip_address("10.0.0.1"), everything) is None
    assert refusal_reason(ipaddress.ip_address("169.254.169.254"), everything) is not None
    assert refusal_reason(ipaddress.ip_address("::ffff:169.254.169.254"), everything) is not None
