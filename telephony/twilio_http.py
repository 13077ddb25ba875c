"""The HTTP client the twilio library sends through: Twilio's documented seam for custom transports.

twilio's default client (requests) gives a hook with a 3 s budget too little and costs too much:
- no timeout at all by default, and a socket timeout bounds each read, not the call: a Twilio that
  trickles a byte a second never times out. Here one overall deadline bounds the whole call,
  connect, TLS, request and answer: when it passes, the call's socket is shut, whatever it waits on;
- a pool of min(32, cores + 4) connections; here the pool is as large as the threads we serve, so
  concurrent hooks reuse connections (each new one to Twilio costs a TLS handshake);
- requests scans the environment for proxies on every call; urllib3, which requests itself uses,
  is driven directly and proxies are read once at start-up;
- an optional base URL: every https://<anything>.twilio.com request goes there instead, which is how
  Twilio documents pointing the library at a mock, and how the local sandbox is reached.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any
from urllib.parse import urlencode

import certifi
import urllib3
from twilio.http import HttpClient
from twilio.http.response import Response
from urllib3.util.ssl_ import create_urllib3_context

from telephony.deadlines import DEADLINE_POOL_CLASSES, never_sent, overall_deadline, timed_out

_TWILIO_HOST = re.compile(r"^https://[A-Za-z0-9.-]+\.twilio\.com(?=/|$)")


class TwilioUnavailable(Exception):
    """Twilio did not answer: `timed_out` tells a deadline from a failed connection."""

    def __init__(self, timed_out: bool, error_type: str, attempts: int = 1) -> None:
        super().__init__("timeout" if timed_out else "unreachable")
        self.timed_out = timed_out
        self.error_type = error_type
        self.attempts = attempts


MAX_ATTEMPTS = 2
RATE_LIMITED = 429  # Twilio's 20429: "always safe to retry"


class Attempts:
    """How many attempts the library's call took: the library hides its transport from its callers."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0


_attempts: ContextVar[Attempts | None] = ContextVar("twilio_attempts", default=None)


@contextmanager
def counting_attempts() -> Iterator[Attempts]:
    """Count the attempts of the Twilio calls made inside, for the log line."""
    attempts = Attempts()
    token = _attempts.set(attempts)
    try:
        yield attempts
    finally:
        _attempts.reset(token)


class TwilioTransport(HttpClient):
    """Sends the twilio library's requests through a sized urllib3 pool, within a deadline."""

    def __init__(self, *, timeout_seconds: float, pool_size: int, base_url: str | None = None) -> None:
        super().__init__(logger=None, is_async=False, timeout=timeout_seconds)
        self.base_url = base_url.rstrip("/") if base_url else None
        # Hosts are few (api. and verify.twilio.com, or one base URL): no pool is ever evicted.
        options: dict[str, Any] = {"num_pools": 16, "maxsize": pool_size, "block": False, "retries": False}
        proxy = None if self.base_url else urllib.request.getproxies().get("https")
        self.pool: urllib3.PoolManager = (
            urllib3.ProxyManager(proxy, **options) if proxy else urllib3.PoolManager(**options)
        )
        self.pool.pool_classes_by_scheme = DEADLINE_POOL_CLASSES
        self._direct = proxy is None  # without a proxy, each host's pool is used directly (below)
        self._pools: dict[str, urllib3.HTTPConnectionPool] = {}
        self._lock = threading.Lock()
        if self.base_url is None:  # real Twilio: every hook will need TLS, so build it before traffic
            self._share_tls_context()

    def rebase(self, url: str) -> str:
        """https://api.twilio.com/2010-04-01/... -> {base_url}/2010-04-01/... when a base URL is set."""
        if self.base_url is None:
            return url
        return _TWILIO_HOST.sub(self.base_url, url, count=1)

    def request(
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> Response:
        sent = dict(headers or {})
        if auth:
            sent["Authorization"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        target = self.rebase(url)
        if params:
            target += "?" + urlencode(params, doseq=True)
        body = None
        if data is not None and sent.get("Content-Type") == "application/json":
            body = json.dumps(data)  # the library's JSON APIs, sent as it sends them
        elif data:
            body = urlencode(data, doseq=True)
            sent["Content-Type"] = "application/x-www-form-urlencoded"
        seconds = self.timeout if timeout is None else timeout
        if seconds is None or seconds <= 0:
            raise ValueError("a Twilio call needs a positive timeout")
        # Retried once, within what is left of the deadline, only when Twilio certainly did not take
        # the request: refused or reset before a byte was sent, or rate-limited. Never after a read
        # timeout or a 5xx: Twilio may have accepted it, and a retry could send a second code.
        deadline = time.monotonic() + seconds
        counted = _attempts.get() or Attempts()
        attempts = 0
        while True:
            attempts += 1
            counted.count = attempts
            left = deadline - time.monotonic()
            if left <= 0:
                raise TwilioUnavailable(True, "DeadlineExceeded", attempts)
            # urllib3's timeouts bound each connect and read; the overall deadline bounds the call.
            limits = urllib3.Timeout(connect=left / 2, read=left)
            with overall_deadline(left) as call:
                try:
                    answer = self._send(method.upper(), target, body, sent, allow_redirects, limits)
                except (urllib3.exceptions.HTTPError, OSError) as error:
                    if attempts < MAX_ATTEMPTS and never_sent(call, error) and deadline > time.monotonic():
                        continue
                    raise TwilioUnavailable(timed_out(call, error), type(error).__name__, attempts) from None
            if answer.status == RATE_LIMITED and attempts < MAX_ATTEMPTS and deadline > time.monotonic():
                continue
            return Response(answer.status, answer.data.decode("utf-8", "replace"), answer.headers)

    def _send(
        self, method: str, url: str, body: str | None, headers: dict[str, str], redirect: bool, limits: urllib3.Timeout
    ) -> urllib3.BaseHTTPResponse:
        if url.startswith("https:"):
            self._share_tls_context()
        if redirect or not self._direct:
            return self.pool.request(method, url, body=body, headers=headers, timeout=limits, redirect=redirect)
        # Straight to the host's connection pool: skips PoolManager's URL parsing and pool-key
        # building on every hook. Twilio's create calls never redirect.
        end = url.find("/", url.find("://") + 3)
        origin, path = (url, "/") if end < 0 else (url[:end], url[end:])
        pool = self._pools.get(origin)
        if pool is None:
            with self._lock:
                pool = self._pools[origin] = self.pool.connection_from_url(origin)
        return pool.urlopen(method, path, body=body, headers=headers, timeout=limits, redirect=False, retries=False)

    def _share_tls_context(self) -> None:
        """One TLS context for every connection, built on first use.

        Loading a CA bundle costs tens of milliseconds of CPU; urllib3, like requests under twilio's
        default client, does it for every new connection, so a burst of 75 hooks opening connections
        would spend seconds on it. Built at start-up for real Twilio, on first use otherwise (the
        sandbox never needs it). The bundle is certifi's, as requests uses, whatever the image has.
        """
        if "ssl_context" in self.pool.connection_pool_kw:
            return
        with self._lock:
            if "ssl_context" not in self.pool.connection_pool_kw:
                context = create_urllib3_context()
                context.load_verify_locations(certifi.where())
                self.pool.connection_pool_kw["ssl_context"] = context
