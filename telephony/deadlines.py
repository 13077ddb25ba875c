"""One watchdog for the deadlines of the process: outbound calls, connecting to the guard's store,
and callers' uploads; and host names resolved within a call's deadline.

A socket timeout bounds each read, not a call: a peer that trickles a byte a second never times out.
Here a call runs inside `overall_deadline(seconds)` and records the socket it uses (`hold`, as soon
as the socket exists); one watchdog thread shuts that socket when the deadline passes, so whatever
read or write the call blocks in fails, or ends, at once. `read_deadline` does the same for a
caller's upload, shutting only the read side so the answer can still be sent. telephony/outbound.py
builds every outbound HTTP call on this.
"""

from __future__ import annotations

import contextlib
import heapq
import ipaddress
import itertools
import os
import socket
import threading
import time
from collections.abc import Iterator


class Call:
    """One call against its deadline: the sockets it uses, and whether time ran out."""

    __slots__ = ("deadline", "done", "expired", "how", "lock", "sent", "sock")

    def __init__(self, deadline: float, how: int = socket.SHUT_RDWR) -> None:
        self.deadline = deadline
        self.how = how  # what the deadline shuts: both ways for our calls, the read side for a caller's
        self.sock: socket.socket | None = None
        self.expired = False
        # Whether a byte of the request may have left: until then, a failure is certainly not
        # something the peer acted on, and the call is safe to retry.
        self.sent = False
        self.done = False
        self.lock = threading.Lock()

    def hold(self, sock: socket.socket) -> None:
        """Record the socket the call now uses; shut it at once if the deadline has passed."""
        with self.lock:
            self.sock = sock
            late = self.expired
        if late:
            _shut(sock, self.how)
            raise TimeoutError("the call's deadline passed")

    def finish(self) -> bool:
        """The call is over (its answer read, or failed): the watchdog leaves its socket alone from
        now on. Returns whether the deadline passed first, in which case the answer may be cut short."""
        with self.lock:
            self.done = True
            return self.expired

    def expire(self) -> None:
        """Shut the call's socket: whatever read or write it blocks in fails (or ends) at once."""
        with self.lock:
            if self.done:
                return
            self.expired = True
            sock = self.sock
        if sock is not None:
            _shut(sock, self.how)


def _shut(sock: socket.socket, how: int) -> None:
    with contextlib.suppress(OSError):  # the plain socket's shutdown wakes a TLS read too
        socket.socket.shutdown(sock, how)


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


def call_in_flight() -> Call | None:
    """The Call that this thread runs inside `overall_deadline`, if any."""
    return getattr(_current, "call", None)


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


@contextlib.contextmanager
def read_deadline(sock: socket.socket, seconds: float) -> Iterator[Call]:
    """The same watchdog for a caller's upload: when `seconds` pass, the read side of the caller's
    connection is shut, so a body read stalled on it ends at once (the answer can still be sent).
    The Call says whether the deadline passed (`expired`)."""
    call = socket_deadline(sock, seconds, socket.SHUT_RD)
    try:
        yield call
    finally:
        call.finish()


def socket_deadline(sock: socket.socket, seconds: float, how: int) -> Call:
    """The watchdog on a caller's connection: when `seconds` pass, `how` is shut (a read or a write
    blocked on it ends at once), unless the returned Call is finished first."""
    call = Call(time.monotonic() + seconds, how=how)
    call.sock = sock
    _watchdog.watch(call)
    return call


class _Lookup:
    """One resolution of a name, on a thread of its own; every call that needs the name waits on it."""

    def __init__(self, host: str, port: int) -> None:
        self.found: list[str] = []
        self.thread = threading.Thread(target=self._resolve, args=(host, port), name="resolver", daemon=True)

    def _resolve(self, host: str, port: int) -> None:
        seen: set[str] = set()
        try:
            for *_, address in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
                if str(address[0]) not in seen:  # in order, once each (IPv4 and IPv6 list an address per type)
                    seen.add(str(address[0]))
                    self.found.append(str(address[0]))
        except Exception:  # noqa: S110 - no address is the answer (OSError, or a name IDNA cannot encode)
            pass
        finally:
            with _lookups_lock:
                if _lookups.get((host, port)) is self:
                    del _lookups[(host, port)]


_lookups: dict[tuple[str, int], _Lookup] = {}  # the resolutions in flight, one per name and port
_lookups_lock = threading.Lock()


def addresses(host: str, port: int, deadline: float | None) -> list[str]:
    """`host`'s addresses (an address is its own), resolved by `deadline` (a time.monotonic() value;
    None: no bound). The system's resolver cannot be interrupted, and a stalled one takes seconds per
    attempt: it runs on a thread of its own, left to finish alone when the deadline passes
    (TimeoutError), and calls that need the same name meanwhile wait on that one thread rather than
    each start another. OSError when the name has no address, or no thread can be started."""
    with contextlib.suppress(ValueError):
        return [str(ipaddress.ip_address(host))]
    with _lookups_lock:
        lookup = _lookups.get((host, port))
        if lookup is None:
            lookup = _lookups[(host, port)] = _Lookup(host, port)
            try:
                lookup.thread.start()
            except RuntimeError:  # no thread left (memory, limits): as if the name did not resolve
                del _lookups[(host, port)]
                raise OSError("no thread to resolve the host's name") from None
    lookup.thread.join(max(deadline - time.monotonic(), 0.0) if deadline is not None else None)
    if lookup.thread.is_alive():
        raise TimeoutError("the call's deadline passed while its host's name was resolved")
    if not lookup.found:
        raise OSError("the host's name has no address")
    return list(lookup.found)


def each_address(host: str, port: int, deadline: float | None) -> Iterator[tuple[str, float | None]]:
    """`host`'s addresses (resolved by `deadline`), to try in turn, each with the time left to connect
    to it (None: no bound): a connect gets what is left, not a full timeout per address. TimeoutError
    once the deadline has passed; OSError as `addresses` raises it."""
    for address in addresses(host, port, deadline):
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            raise TimeoutError("the call's deadline passed")
        yield address, left


def _forked() -> None:
    """In a forked child, the parent's threads are gone: its watchdog, and the resolutions it had in
    flight (a lock one of them held would stay held). Start afresh, as on first use."""
    global _watchdog, _lookups_lock
    _watchdog = _Watchdog()
    _lookups.clear()
    _lookups_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forked)
