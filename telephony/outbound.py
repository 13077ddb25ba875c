"""Every outbound HTTP call (Twilio, the issuer's JWKS, Okta's Management API) goes through here:
one bounded urllib3 pool, one overall deadline per call, one size cap per answer.

urllib3's (and requests') timeouts bound each connect and each socket read, not the call: a peer
that trickles a byte a second never times out, and a peer may answer with as many bytes as it likes.
Here:
- each call runs within one overall deadline (telephony/deadlines.py): resolving the host's name,
  connect, TLS, request and answer together. The name is resolved on a thread joined for the time
  left (a stalled resolver cannot be interrupted), and each of its addresses is tried within what is
  left. The call records every socket it uses the moment it exists (a new connection's, before its
  TLS handshake; a pooled one's, when the request goes out), and the watchdog shuts that socket when the
  deadline passes, so whatever read or write the call blocks in fails at once. The socket is the call's own
  record, not `connection.sock`: http.client hands the socket over to the response (and empties
  `connection.sock`) when the peer says `Connection: close` or speaks HTTP/1.0;
- each answer is read in pieces of READ_BYTES, never preloaded: past the caller's cap (one that fits
  the document: a Twilio resource, a key set, a factor list) the call fails as a timeout does, and its
  connection is closed, not reused;
- redirects are never followed (a redirect's body would be drained unbounded, and no peer of ours
  redirects an API call);
- the pool is sized by the caller, urllib3's retries are off (each caller decides what is safe to
  retry), the proxy is read once at start-up by the caller, never scanned per call, and one TLS
  context (certifi's bundle, as requests uses) serves every connection of the pool.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import certifi
import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.util.ssl_ import create_urllib3_context

from telephony.deadlines import Call, call_in_flight, each_address, overall_deadline

READ_BYTES = 16 * 1024  # an answer is read in pieces of at most this many bytes
HEAD_BYTES = 64 * 1024  # an answer's status line and headers together; http.client alone allows ~6 MiB


class CallFailed(Exception):
    """An outbound call that gave no usable answer. `timed_out`: its deadline passed, or its answer
    was past the cap (a peer still talking at either point may have acted on the request);
    `never_sent`: certainly never reached the peer, so it is safe to retry. The message is the error's
    type, never a URL, header or body."""

    def __init__(self, *, timed_out: bool, never_sent: bool, error_type: str) -> None:
        super().__init__(error_type)
        self.timed_out = timed_out
        self.never_sent = never_sent
        self.error_type = error_type

    @property
    def too_large(self) -> bool:
        return self.error_type == ANSWER_TOO_LARGE


ANSWER_TOO_LARGE = "AnswerTooLarge"


@dataclass(frozen=True, slots=True)
class Reply:
    """A peer's whole answer, read within the deadline and the cap."""

    status: int
    headers: Mapping[str, str]
    data: bytes


class _TooLarge(Exception):
    pass


class _HeadBudget:
    """The answer's stream while http.client reads its status line and headers: at most HEAD_BYTES."""

    def __init__(self, stream: Any) -> None:
        self._stream, self._left = stream, HEAD_BYTES
        self.last = b""  # the last line read: the blank line that ends the head, or b"" if it was cut

    def readline(self, limit: int = -1) -> bytes:
        line: bytes = self._stream.readline(self._left + 1 if limit < 0 else min(limit, self._left + 1))
        self._left -= len(line)
        if self._left < 0:
            raise http.client.LineTooLong("the answer's headers")
        self.last = line
        return line

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class _HeadCappedResponse(http.client.HTTPResponse):
    """http.client's answer, its head read within HEAD_BYTES (the body has the caller's own cap)."""

    def begin(self) -> None:
        stream = self.fp
        budget = self.fp = _HeadBudget(stream)  # type: ignore[assignment]
        try:
            super().begin()
        finally:
            if self.fp is not None:
                self.fp = stream
        # http.client takes the end of the stream for the end of the head: a head cut short would read as
        # a whole answer (a 429 with no body, then retried). Only a blank line ends a head.
        if budget.last not in (b"\r\n", b"\n"):
            raise http.client.RemoteDisconnected("the answer's head was cut short")


class _DeadlineMixin:
    """A connection that hands every socket it uses to the call in flight, so the watchdog can shut it,
    and reads each answer's head within HEAD_BYTES."""

    response_class: type[http.client.HTTPResponse] = _HeadCappedResponse

    def _new_conn(self) -> socket.socket:
        call = call_in_flight()
        sock = self._connected(call)  # before any TLS handshake
        if call is not None:
            try:
                call.hold(sock)
            except TimeoutError:
                sock.close()
                raise urllib3.exceptions.TimeoutError("the call's deadline passed") from None
        return sock

    def _connected(self, call: Call | None) -> socket.socket:
        """A TCP connection to the host: its name resolved within the call's deadline, then each of its
        addresses tried in turn, each connect within the time left. The name is the connection's again
        before TLS, which checks it."""
        connection: Any = self  # urllib3's HTTPConnection, whose _new_conn connects to _dns_host
        name, timeout = connection._dns_host, connection.timeout
        failed: urllib3.exceptions.HTTPError | None = None
        try:
            for address, left in each_address(name, connection.port, call.deadline if call else None):
                if left is not None:
                    connection.timeout = min(timeout, left) if isinstance(timeout, int | float) else left
                connection._dns_host = address
                try:
                    sock: socket.socket = super()._new_conn()  # type: ignore[misc]
                    return sock
                except urllib3.exceptions.ConnectTimeoutError as error:  # refused, unreachable, or timed out
                    failed = error
        except TimeoutError:
            raise urllib3.exceptions.ConnectTimeoutError(connection, "the call's deadline passed") from None
        except OSError as error:
            raise urllib3.exceptions.NewConnectionError(connection, f"cannot resolve the host: {error}") from None
        finally:
            connection._dns_host, connection.timeout = name, timeout
        raise failed or urllib3.exceptions.NewConnectionError(connection, "no address of the host answered")

    def request(self, *args: Any, **kwargs: Any) -> None:
        call = call_in_flight()
        sock = self.sock  # type: ignore[attr-defined]
        if call is not None and sock is not None:  # a pooled connection, connected earlier
            try:
                call.hold(sock)
            except TimeoutError:
                raise urllib3.exceptions.TimeoutError("the call's deadline passed") from None
        super().request(*args, **kwargs)  # type: ignore[misc]

    def send(self, data: Any) -> None:
        if self.sock is None:  # type: ignore[attr-defined]  # http.client connects on first send
            self.connect()  # type: ignore[attr-defined]
        call = call_in_flight()
        if call is not None:
            call.sent = True
        super().send(data)  # type: ignore[misc]


class _DeadlineHTTPConnection(_DeadlineMixin, HTTPConnection):
    pass


class _DeadlineHTTPSConnection(_DeadlineMixin, HTTPSConnection):
    pass


class _DeadlineHTTPPool(HTTPConnectionPool):
    ConnectionCls = _DeadlineHTTPConnection


class _DeadlineHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _DeadlineHTTPSConnection


_POOL_CLASSES: dict[str, type[HTTPConnectionPool]] = {"http": _DeadlineHTTPPool, "https": _DeadlineHTTPSPool}


def _timed_out(call: Call, error: BaseException) -> bool:
    """Whether a failed call ran out of time (its deadline, or a connect/read timeout), rather than
    failed to connect: a refused connection is a subclass of urllib3's timeout error. A call failing
    at its deadline ran out of time whatever urllib3 wrapped the failure in (a proxy's ProxyError),
    and whether or not the watchdog got there first."""
    return (
        call.expired
        or time.monotonic() >= call.deadline
        or (
            isinstance(error, urllib3.exceptions.TimeoutError)
            and not isinstance(error, urllib3.exceptions.NewConnectionError)
        )
    )


class Outbound:
    """The one way this function calls a peer: a sized pool, and `call` under a deadline and a cap."""

    def __init__(self, *, size: int, proxy: str | None = None, num_pools: int = 4, tls_now: bool = False) -> None:
        """`size` connections kept per host (the threads that may call at once); `proxy`, read once by
        the caller; `tls_now` builds the TLS context before the first call rather than within it."""
        options: dict[str, Any] = {"num_pools": num_pools, "maxsize": size, "block": False, "retries": False}
        self.manager: urllib3.PoolManager = (
            urllib3.ProxyManager(proxy, **options) if proxy else urllib3.PoolManager(**options)
        )
        self.manager.pool_classes_by_scheme = _POOL_CLASSES
        self._direct = proxy is None  # without a proxy, each host's pool is used directly (below)
        self._pools: dict[str, HTTPConnectionPool] = {}
        self._lock = threading.Lock()
        if tls_now:
            self._share_tls_context()

    def call(
        self,
        method: str,
        url: str,
        *,
        seconds: float,
        cap: int,
        body: str | bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        """One request, its answer read whole within `seconds` overall and `cap` bytes. Raises CallFailed."""
        if seconds <= 0:
            raise ValueError("an outbound call needs a positive deadline")
        limits = urllib3.Timeout(connect=seconds / 2, read=seconds)
        response: urllib3.BaseHTTPResponse | None = None
        with overall_deadline(seconds) as call:
            try:
                response = self._open(method, url, body, dict(headers or {}), limits)
                if response.status < 200:  # http.client takes a 1xx other than 100 as the answer:
                    # the real one is still on its way, and the next call on this connection would read it.
                    raise urllib3.exceptions.ProtocolError("an informational answer in place of the answer")
                data = _read_capped(response, cap)
            except _TooLarge:
                _discard(response)
                raise CallFailed(timed_out=True, never_sent=False, error_type=ANSWER_TOO_LARGE) from None
            except (urllib3.exceptions.HTTPError, OSError) as error:
                _discard(response)
                raise CallFailed(
                    timed_out=_timed_out(call, error),
                    never_sent=not call.sent and not _timed_out(call, error),
                    # the watchdog shut the socket at the deadline: what urllib3 then saw is not the cause
                    error_type="DeadlineExceeded" if call.expired else type(error).__name__,
                ) from None
            if call.finish():  # the deadline shut the socket: an answer without a length may be cut short
                _discard(response)
                raise CallFailed(timed_out=True, never_sent=False, error_type="DeadlineExceeded")
        response.release_conn()  # read whole and in time: the connection goes back to the pool
        return Reply(response.status, response.headers, data)

    def _open(
        self, method: str, url: str, body: str | bytes | None, headers: dict[str, str], limits: urllib3.Timeout
    ) -> urllib3.BaseHTTPResponse:
        if url.startswith("https:"):
            self._share_tls_context()
        options: dict[str, Any] = {"redirect": False, "preload_content": False, "timeout": limits}
        if not self._direct:
            return self.manager.request(method, url, body=body, headers=headers, **options)
        # Straight to the host's connection pool: skips PoolManager's URL parsing and pool-key
        # building on every call.
        end = url.find("/", url.find("://") + 3)
        origin, path = (url, "/") if end < 0 else (url[:end], url[end:])
        pool = self._pools.get(origin)
        if pool is None:
            with self._lock:
                pool = self._pools[origin] = self.manager.connection_from_url(origin)
        return pool.urlopen(method, path, body=body, headers=headers, retries=False, **options)

    def _share_tls_context(self) -> None:
        """One TLS context for every connection of the pool, built on first use (or at start-up).

        Loading a CA bundle costs tens of milliseconds of CPU; urllib3, like requests, does it for every
        new connection, so a burst of 75 hooks opening connections would spend seconds on it. The bundle
        is certifi's, as requests uses, whatever the image has.
        """
        if "ssl_context" in self.manager.connection_pool_kw:
            return
        with self._lock:
            if "ssl_context" not in self.manager.connection_pool_kw:
                context = create_urllib3_context()
                context.load_verify_locations(certifi.where())
                self.manager.connection_pool_kw["ssl_context"] = context


def _read_capped(response: urllib3.BaseHTTPResponse, cap: int) -> bytes:
    """The whole answer, read READ_BYTES at a time; _TooLarge as soon as it is (or says it is) past `cap`."""
    declared = response.headers.get("Content-Length", "")
    if declared.strip().isdigit() and int(declared) > cap:
        raise _TooLarge
    pieces: list[bytes] = []
    total = 0
    while piece := response.read(READ_BYTES):
        total += len(piece)
        if total > cap:
            raise _TooLarge
        pieces.append(piece)
    return b"".join(pieces)


def _discard(response: urllib3.BaseHTTPResponse | None) -> None:
    """An answer not read whole: its connection is closed, never handed to the next call."""
    if response is not None:
        with contextlib.suppress(Exception):
            response.close()
            response.release_conn()
