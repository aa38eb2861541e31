"""Fetching a query image from a URL the client gave, without letting it reach inside.

A URL a client sends makes the gateway open a connection: without a guard it could reach
Redis on 127.0.0.1, a cloud's metadata service on 169.254.169.254 or any host of the
private network (server-side request forgery). So:

- only http and https, no credentials in the URL;
- every address the host name resolves to is checked, and the fetch is refused if any is
  loopback, private, link-local, CGNAT (100.64/10), multicast, reserved, unspecified or
  otherwise not global (IPv4 and IPv6; IPv4-mapped, 6to4 and NAT64 addresses are judged by
  the IPv4 address inside), unless it lies in ``URL_FETCH_ALLOWED_NETWORKS``; cloud
  metadata addresses are refused even then;
- the connection goes to the address that was checked (urllib3 pool on the IP, the name
  kept for the Host header, TLS SNI and certificate check): no second DNS lookup between
  check and connect, which a rebinding DNS server could answer differently;
- redirects are followed by hand, at most ``URL_FETCH_MAX_REDIRECTS``, each target checked
  the same way;
- the body is read in chunks and refused past ``URL_FETCH_MAX_BYTES`` (declared or not), and
  the whole fetch, redirects included, must end within ``URL_FETCH_TIMEOUT_SECONDS``;
- at most ``URL_FETCH_MAX_CONCURRENT`` fetches at once (each holds a server thread while
  it waits on the remote host): past that, 503 ``busy``.

The bytes then take the upload's path (decode, canonicalise); what they claim to be
(Content-Type) is not trusted, the decoder decides. Refusals: 400 for a bad URL, a refused
address, a host that cannot be reached, an error status, too many redirects or a timeout
(the URL is what failed, not the gateway: retrying the same request will not help), 413
for too large a body, 415 (from the decoder) for bytes that are not an image.
"""

import ipaddress
import logging
import socket
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as LookupTimeout
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import urllib3
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import TimeoutError as Urllib3Timeout

from .errors import ApiError

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

URL_MAX_CHARS = 2048
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
CHUNK_BYTES = 64 * 1024
# Cloud metadata services (AWS/GCP/Azure/OpenStack, AWS over IPv6, Alibaba): refused even
# inside URL_FETCH_ALLOWED_NETWORKS, which is meant for test servers and closed networks.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200")
)
NAT64_PREFIX = ipaddress.ip_network("64:ff9b::/96")


@dataclass(frozen=True)
class FetchLimits:
    max_bytes: int
    timeout_seconds: float
    max_redirects: int
    allowed_networks: tuple[IPNetwork, ...] = ()


def url_refused(code: str, message: str, status: int = 400) -> ApiError:
    return ApiError(status, code, message)


def checked_url(url: str) -> tuple[str, str, int, str]:
    """(scheme, host, port, path with query) of an http(s) URL, or a 400 saying what is wrong."""
    if len(url) > URL_MAX_CHARS:
        raise url_refused("invalid_url", f"'url' may be at most {URL_MAX_CHARS} characters")
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as err:
        raise url_refused("invalid_url", f"'url' is not a valid URL: {err}") from err
    if parts.scheme not in ("http", "https"):
        raise url_refused(
            "invalid_url_scheme", f"'url' must start with http:// or https://, got {url[:40]!r}"
        )
    if not parts.hostname:
        raise url_refused("invalid_url", "'url' names no host")
    if parts.username is not None or parts.password is not None:
        raise url_refused("invalid_url", "'url' must not carry a user name or password")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80), path


def embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, 6to4, NAT64), if any."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in NAT64_PREFIX:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def refusal_reason(address: IPAddress, allowed: tuple[IPNetwork, ...]) -> str | None:
    """Why the gateway may not connect to ``address`` (None: it may)."""
    inner = embedded_ipv4(address)
    if address in METADATA_ADDRESSES or (inner is not None and inner in METADATA_ADDRESSES):
        return "a cloud metadata address"
    if any(address in network for network in allowed):
        return None
    if inner is not None:
        return refusal_reason(inner, allowed)
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_multicast:
        return "a multicast address"
    if address.is_private:
        return "a private address"
    if address.is_unspecified or address.is_reserved:
        return "a reserved address"
    if not address.is_global:  # CGNAT 100.64/10, documentation and benchmark ranges, ...
        return "an address that is not public"
    return None


def checked_addresses(host: str, infos: list, allowed: tuple[IPNetwork, ...]) -> list[IPAddress]:
    """Every address of ``host`` (getaddrinfo's answer), all checked; a 400 if any is refused."""
    addresses = list(
        dict.fromkeys(ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos)
    )
    for address in addresses:
        reason = refusal_reason(address, allowed)
        if reason is not None:
            log.warning("url refused", extra={"host": host, "address": str(address)})
            raise url_refused(
                "url_address_refused",
                f"the host {host!r} resolves to {address}, {reason}: the gateway does not "
                "fetch from there",
            )
    if not addresses:
        raise url_refused("url_unreachable", f"the host {host!r} has no address")
    return addresses


class UrlFetcher:
    """Fetches query images from URLs within the limits; one per gateway."""

    def __init__(self, limits: FetchLimits, max_concurrent: int) -> None:
        self.limits = limits
        self._slots = threading.BoundedSemaphore(max_concurrent)
        self._tls = ssl.create_default_context()
        # getaddrinfo has no timeout of its own: it runs here, and the fetch stops waiting for
        # it at the deadline (a lookup that hangs then occupies one of these threads).
        self._resolver = ThreadPoolExecutor(max_concurrent, thread_name_prefix="url-resolve")

    def fetch(self, url: str) -> bytes:
        """The body of ``url`` after at most ``max_redirects`` redirects, or an ApiError."""
        if not self._slots.acquire(blocking=False):
            busy = ApiError(503, "busy", "too many URL fetches at once; try again in a moment")
            busy.headers["Retry-After"] = "1"
            raise busy
        try:
            return self._follow(url, time.monotonic() + self.limits.timeout_seconds)
        finally:
            self._slots.release()

    def _follow(self, url: str, deadline: float) -> bytes:
        for _ in range(self.limits.max_redirects + 1):
            pool, response = self._request(url, deadline)
            try:
                if response.status in REDIRECT_STATUSES and response.headers.get("Location"):
                    url = urljoin(url, response.headers["Location"])
                    continue
                if not 200 <= response.status < 300:
                    raise url_refused(
                        "url_status", f"the URL answered HTTP {response.status}, not an image"
                    )
                return self._body(response, deadline)
            finally:
                response.release_conn()
                pool.close()  # one connection per fetch: never reused for another host
        raise url_refused(
            "url_too_many_redirects",
            f"the URL redirected more than {self.limits.max_redirects} times",
        )

    def _request(
        self, url: str, deadline: float
    ) -> tuple[urllib3.HTTPConnectionPool, urllib3.BaseHTTPResponse]:
        scheme, host, port, path = checked_url(url)
        addresses = checked_addresses(
            host, self._resolve(host, port, deadline), self.limits.allowed_networks
        )
        host_header = f"[{host}]" if ":" in host else host  # an IPv6 literal
        if port != (443 if scheme == "https" else 80):
            host_header += f":{port}"
        last_error: Exception | None = None
        for address in addresses:  # the first that answers; each one was checked
            pool = self._pool(scheme, str(address), port, host)
            try:
                return pool, pool.urlopen(
                    "GET",
                    path,
                    headers={"Host": host_header, "Accept": "image/*", "User-Agent": "imgsearch"},
                    redirect=False,
                    retries=False,
                    preload_content=False,
                    assert_same_host=False,
                    timeout=urllib3.Timeout(total=self._remaining(deadline)),
                )
            except Urllib3Timeout as err:
                pool.close()
                raise self._timed_out() from err
            except Urllib3Error as err:
                pool.close()
                last_error = err
        raise url_refused(
            "url_unreachable", f"the host {host!r} could not be reached: {_short(last_error)}"
        ) from last_error

    def _resolve(self, host: str, port: int, deadline: float) -> list:
        lookup = self._resolver.submit(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
        try:
            return lookup.result(timeout=self._remaining(deadline))
        except LookupTimeout as err:
            raise self._timed_out() from err
        except (OSError, UnicodeError) as err:
            raise url_refused(
                "url_unreachable", f"the host {host!r} could not be resolved"
            ) from err

    def _pool(self, scheme: str, address: str, port: int, host: str) -> urllib3.HTTPConnectionPool:
        if scheme == "http":
            return urllib3.HTTPConnectionPool(address, port, maxsize=1)
        # Connect to the address, but speak TLS to the name: SNI and the certificate's name.
        return urllib3.HTTPSConnectionPool(
            address,
            port,
            maxsize=1,
            ssl_context=self._tls,
            server_hostname=host,
            assert_hostname=host,
        )

    def _body(self, response: urllib3.BaseHTTPResponse, deadline: float) -> bytes:
        limit = self.limits.max_bytes
        declared = response.headers.get("Content-Length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise self._too_large()
        chunks, size = [], 0
        try:
            while True:
                self._set_read_timeout(response, deadline)
                chunk = response.read1(CHUNK_BYTES)
                if not chunk:
                    break
                size += len(chunk)
                if size > limit:
                    raise self._too_large()
                chunks.append(chunk)
        except (Urllib3Timeout, TimeoutError) as err:
            raise self._timed_out() from err
        except Urllib3Error as err:
            raise url_refused("url_unreachable", f"the download broke off: {_short(err)}") from err
        return b"".join(chunks)

    def _set_read_timeout(self, response: urllib3.BaseHTTPResponse, deadline: float) -> None:
        """Each wait for bytes ends at the deadline: a server that trickles a byte at a time
        cannot stretch the fetch."""
        remaining = self._remaining(deadline)
        sock = getattr(response.connection, "sock", None)
        if sock is not None:
            sock.settimeout(remaining)

    def _remaining(self, deadline: float) -> float:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise self._timed_out()
        return remaining

    def _timed_out(self) -> ApiError:
        return url_refused(
            "url_timeout",
            f"the URL did not deliver its image within {self.limits.timeout_seconds:g} s",
        )

    def _too_large(self) -> ApiError:
        return url_refused(
            "url_too_large",
            f"the image at the URL is larger than the limit of {self.limits.max_bytes:,} bytes",
            413,
        )


def _short(err: Exception | None) -> str:
    reason = getattr(err, "reason", None) or err
    return str(reason).split(": ", 1)[-1][:200]
