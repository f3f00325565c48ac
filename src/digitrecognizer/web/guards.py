"""Guards in front of the API, as ASGI middleware and helpers: the body's size and read time, the Host header
(DNS rebinding), cross-site writes, and the per-client rate of corrections."""

from __future__ import annotations

import ipaddress
import math
import time
from urllib.parse import urlsplit

import anyio
from limits import RateLimitItem, parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from starlette.datastructures import Headers

from .errors import error_response

LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
# Sec-Fetch-Site values of a request the page itself made, or the user typed: anything else came from
# another site's page (same-site too: another port of localhost is another program).
OWN_FETCH_SITES = {"same-origin", "none"}


class BodyRejected(Exception):
    """Raised from `receive` while the body streams in; the middleware answers with `response`."""

    def __init__(self, response):
        super().__init__(response.status_code)
        self.response = response


class BodyGuardMiddleware:
    """Refuses bodies over the limit with 413 before reading them: by Content-Length when it is given, else by
    counting bytes as they arrive (a 50 MB upload is cut off after 5 MB, not buffered). A body not received
    whole within `read_timeout_s` of the request's start gets 408 and the connection is closed, so clients
    that promise a body and never send it hold nothing for long."""

    def __init__(self, app, max_bytes: int, read_timeout_s: float):
        self.app, self.max_bytes, self.read_timeout_s = app, max_bytes, read_timeout_s

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        too_large = error_response(413, "too_large", f"the request body is over the limit of "
                                                     f"{self.max_bytes / 1e6:.0f} MB: send a smaller image")
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await too_large(scope, receive, send)
        deadline = time.monotonic() + self.read_timeout_s
        received, body_done, response_started = 0, False, False

        async def guarded_receive():
            nonlocal received, body_done
            if body_done:  # after the body only a disconnect can come: waiting for it is not a slow body
                return await receive()
            try:
                with anyio.fail_after(max(deadline - time.monotonic(), 0.001)):
                    message = await receive()
            except TimeoutError:
                raise BodyRejected(error_response(
                    408, "read_timeout", f"the request body did not arrive within {self.read_timeout_s:g} s",
                    headers={"Connection": "close"})) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                body_done = not message.get("more_body", False)
                if received > self.max_bytes:
                    raise BodyRejected(too_large)
            return message

        async def tracking_send(message):
            nonlocal response_started
            response_started |= message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, guarded_receive, tracking_send)
        except BodyRejected as rejected:
            if not response_started:
                await rejected.response(scope, receive, send)


def host_allowed(host_header: str, allowed: list[str]) -> bool:
    """Whether a Host header (name or address, with or without a port) names one of the allowed hosts;
    '*' allows any, '*.example.org' the subdomains of example.org."""
    try:
        name = urlsplit(f"//{host_header}").hostname or ""
    except ValueError:  # an unbalanced IPv6 bracket and the like
        return False
    for pattern in allowed:
        pattern = pattern.lower().strip("[]")
        if pattern == "*" or name == pattern or (pattern.startswith("*.") and name.endswith(pattern[1:])):
            return True
    return False


def default_allowed_hosts(bind_host: str) -> list[str] | None:
    """The names a server bound to `bind_host` answers to when none are listed: the localhost names on a
    loopback address, and None (the operator must list them) on any other."""
    try:
        loopback = bind_host == "localhost" or ipaddress.ip_address(bind_host).is_loopback
    except ValueError:
        loopback = False
    return list(LOCAL_HOSTS) if loopback else None


def _authority(url: str) -> str | None:
    """host[:port] of an origin or Host header, lower-cased, without the scheme's default port."""
    try:
        parts = urlsplit(url if "//" in url else f"//{url}")
        host, port = parts.hostname, parts.port
    except ValueError:
        return None
    if host is None:
        return None
    default = {"http": 80, "https": 443}.get(parts.scheme)
    return host if port is None or port == default else f"{host}:{port}"


def cross_site(method: str, headers: Headers) -> str | None:
    """Why a write came from another site's page (None: it did not). Browsers send Sec-Fetch-Site and Origin
    with every POST; a form or fetch() from another page can't hide them. Clients that are not browsers (curl,
    scripts) send neither and are let through."""
    if method in SAFE_METHODS:
        return None
    fetch_site = headers.get("sec-fetch-site")
    if fetch_site is not None and fetch_site.lower() not in OWN_FETCH_SITES:
        return f"Sec-Fetch-Site is {fetch_site!r}"
    origin = headers.get("origin")
    if origin is not None and (origin == "null" or _authority(origin) != _authority(headers.get("host", ""))):
        return f"Origin {origin[:100]!r} is not this server"
    return None


class OriginGuardMiddleware:
    """Answers only to the allowed host names, so a site whose name is rebound to this server's address
    (DNS rebinding) gets nothing, and refuses writes made by other sites' pages (cross-site request forgery:
    a form posted from any page the local user visits)."""

    def __init__(self, app, allowed_hosts: list[str]):
        self.app, self.allowed_hosts = app, allowed_hosts

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = Headers(scope=scope)
        host = headers.get("host", "")
        if not host_allowed(host, self.allowed_hosts):
            response = error_response(400, "unknown_host", f"this server does not answer to the name "
                                                           f"{host[:100]!r}: the operator lists its names with "
                                                           f"--allowed-hosts")
            return await response(scope, receive, send)
        reason = cross_site(scope["method"], headers)
        if reason:
            response = error_response(403, "cross_site", f"writes from other sites' pages are refused ({reason}): "
                                                         f"use this server's own page or a non-browser client")
            return await response(scope, receive, send)
        await self.app(scope, receive, send)


class RateLimit:
    """A moving-window limit per client (the address uvicorn resolves, trusting proxy headers only from
    FORWARDED_ALLOW_IPS), kept in this process's memory."""

    def __init__(self, rate: str):
        self.item: RateLimitItem = parse(rate)
        self.limiter = MovingWindowRateLimiter(MemoryStorage())

    def retry_after_s(self, client: str) -> int | None:
        """Counts one request for `client`; None if it is allowed, else the seconds until it would be."""
        if self.limiter.hit(self.item, client):
            return None
        reset = self.limiter.get_window_stats(self.item, client).reset_time
        return max(1, math.ceil(reset - time.time()))

    def __str__(self) -> str:
        return f"{self.item.amount} per {self.item.multiples} {self.item.GRANULARITY.name}"
