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
import contextlib
import heapq
import itertools
import json
import re
import socket
import threading
import time
import urllib.request
from typing import Any
from urllib.parse import urlencode

import certifi
import urllib3
from twilio.http import HttpClient
from twilio.http.response import Response
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.util.ssl_ import create_urllib3_context

_TWILIO_HOST = re.compile(r"^https://[A-Za-z0-9.-]+\.twilio\.com(?=/|$)")


class TwilioUnavailable(Exception):
    """Twilio did not answer: `timed_out` tells a deadline from a failed connection."""

    def __init__(self, timed_out: bool, error_type: str) -> None:
        super().__init__("timeout" if timed_out else "unreachable")
        self.timed_out = timed_out
        self.error_type = error_type


class _Call:
    """One call to Twilio against its deadline: the connection it uses, and whether time ran out."""

    __slots__ = ("connection", "deadline", "done", "expired", "lock")

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.connection: HTTPConnection | None = None
        self.expired = False
        self.done = False
        self.lock = threading.Lock()

    def attach(self, connection: HTTPConnection) -> None:
        with self.lock:
            if self.expired:
                raise urllib3.exceptions.TimeoutError("the call's deadline passed")
            self.connection = connection

    def finish(self) -> None:
        with self.lock:
            self.done = True

    def expire(self) -> None:
        """Shut the call's socket: whatever read or write it blocks in fails at once."""
        with self.lock:
            if self.done:
                return
            self.expired = True
            sock = self.connection.sock if self.connection is not None else None
        if sock is not None:
            with contextlib.suppress(OSError):  # the plain socket's shutdown wakes a TLS read too
                socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _Watchdog:
    """One thread that expires calls whose deadline has passed; started on first use, after any fork."""

    def __init__(self) -> None:
        self._due: list[tuple[float, int, _Call]] = []
        self._order = itertools.count()
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None

    def watch(self, call: _Call) -> None:
        with self._wake:
            earliest = self._due[0][0] if self._due else None
            heapq.heappush(self._due, (call.deadline, next(self._order), call))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="twilio-deadlines", daemon=True)
                self._thread.start()
            elif earliest is None or call.deadline < earliest:
                self._wake.notify()

    def _run(self) -> None:
        with self._wake:
            while True:
                now = time.monotonic()
                while self._due and (self._due[0][2].done or self._due[0][0] <= now):
                    heapq.heappop(self._due)[2].expire()
                self._wake.wait(self._due[0][0] - now if self._due else None)


_watchdog = _Watchdog()
_current = threading.local()  # the _Call of the thread's request in flight


class _DeadlineMixin:
    """A connection that registers with the call in flight, so the watchdog can shut its socket."""

    def connect(self) -> None:
        call: _Call | None = getattr(_current, "call", None)
        if call is not None:
            call.attach(self)  # type: ignore[arg-type]
        super().connect()  # type: ignore[misc]

    def request(self, *args: Any, **kwargs: Any) -> None:
        call: _Call | None = getattr(_current, "call", None)
        if call is not None:
            call.attach(self)  # type: ignore[arg-type]
        super().request(*args, **kwargs)  # type: ignore[misc]

    def getresponse(self) -> Any:
        answer = super().getresponse()  # type: ignore[misc]  # the body is read in here (preloaded)
        call: _Call | None = getattr(_current, "call", None)
        if call is not None:
            call.finish()  # read in time: the socket goes back to the pool intact
        return answer


class _DeadlineHTTPConnection(_DeadlineMixin, HTTPConnection):
    pass


class _DeadlineHTTPSConnection(_DeadlineMixin, HTTPSConnection):
    pass


class _DeadlineHTTPPool(HTTPConnectionPool):
    ConnectionCls = _DeadlineHTTPConnection


class _DeadlineHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _DeadlineHTTPSConnection


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
        self.pool.pool_classes_by_scheme = {"http": _DeadlineHTTPPool, "https": _DeadlineHTTPSPool}
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
        call = _Call(time.monotonic() + seconds)
        # urllib3's timeouts bound each connect and read; the watchdog bounds the call as a whole.
        limits = urllib3.Timeout(connect=seconds / 2, read=seconds)
        _current.call = call
        _watchdog.watch(call)
        try:
            answer = self._send(method.upper(), target, body, sent, allow_redirects, limits)
        except (urllib3.exceptions.HTTPError, OSError) as error:
            timed_out = call.expired or (
                isinstance(error, urllib3.exceptions.TimeoutError)
                and not isinstance(error, urllib3.exceptions.NewConnectionError)  # refused: a subclass
            )
            raise TwilioUnavailable(timed_out, type(error).__name__) from None
        finally:
            call.finish()
            _current.call = None
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
