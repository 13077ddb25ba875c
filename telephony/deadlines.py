"""One overall deadline per outbound HTTP call: connect, TLS, request and answer together.

urllib3's (and requests') timeouts bound each connect and each socket read, not the call: a peer
that trickles a byte a second never times out. Here a call runs inside `overall_deadline(seconds)`;
its connection registers with it, and one watchdog thread shuts the connection's socket when the
deadline passes, so whatever read or write the call blocks in fails at once. Used for Twilio, and
for every other peer the function calls within Okta's 3 s.

Use: a urllib3 PoolManager whose `pool_classes_by_scheme` is DEADLINE_POOL_CLASSES, and

    with overall_deadline(2.0) as call:
        try:
            answer = pool.request(...)
        except (urllib3.exceptions.HTTPError, OSError) as error:
            if timed_out(call, error): ...
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool


class Call:
    """One call against its deadline: the connection it uses, and whether time ran out."""

    __slots__ = ("connection", "deadline", "done", "expired", "lock", "sent")

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.connection: HTTPConnection | None = None
        self.expired = False
        # Whether a byte of the request may have left: until then, a failure is certainly not
        # something the peer acted on, and the call is safe to retry.
        self.sent = False
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
        self._due: list[tuple[float, int, Call]] = []
        self._order = itertools.count()
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None

    def watch(self, call: Call) -> None:
        with self._wake:
            earliest = self._due[0][0] if self._due else None
            heapq.heappush(self._due, (call.deadline, next(self._order), call))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="http-deadlines", daemon=True)
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
_current = threading.local()  # the Call of the thread's request in flight


class _DeadlineMixin:
    """A connection that registers with the call in flight, so the watchdog can shut its socket."""

    def connect(self) -> None:
        call: Call | None = getattr(_current, "call", None)
        if call is not None:
            call.attach(self)  # type: ignore[arg-type]
        super().connect()  # type: ignore[misc]

    def request(self, *args: Any, **kwargs: Any) -> None:
        call: Call | None = getattr(_current, "call", None)
        if call is not None:
            call.attach(self)  # type: ignore[arg-type]
        super().request(*args, **kwargs)  # type: ignore[misc]

    def send(self, data: Any) -> None:
        if self.sock is None:  # type: ignore[attr-defined]  # http.client connects on first send
            self.connect()
        call: Call | None = getattr(_current, "call", None)
        if call is not None:
            call.sent = True
        super().send(data)  # type: ignore[misc]

    def getresponse(self) -> Any:
        answer = super().getresponse()  # type: ignore[misc]  # the body is read in here (preloaded)
        call: Call | None = getattr(_current, "call", None)
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


DEADLINE_POOL_CLASSES: dict[str, type[HTTPConnectionPool]] = {"http": _DeadlineHTTPPool, "https": _DeadlineHTTPSPool}


@contextlib.contextmanager
def overall_deadline(seconds: float) -> Iterator[Call]:
    """Run one call of this thread within `seconds`, connect and answer included."""
    call = Call(time.monotonic() + seconds)
    _current.call = call
    _watchdog.watch(call)
    try:
        yield call
    finally:
        call.finish()
        _current.call = None


def never_sent(call: Call, error: BaseException) -> bool:
    """Whether a failed call certainly never reached the peer: refused, or reset before a byte of
    the request was written. A timeout never counts: the peer may be working on it."""
    return not call.sent and not timed_out(call, error)


def timed_out(call: Call, error: BaseException) -> bool:
    """Whether a failed call ran out of time (its deadline, or a connect/read timeout), rather than
    failed to connect: a refused connection is a subclass of urllib3's timeout error."""
    return call.expired or (
        isinstance(error, urllib3.exceptions.TimeoutError)
        and not isinstance(error, urllib3.exceptions.NewConnectionError)
    )
