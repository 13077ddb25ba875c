"""Requests on our terms: bodies read at most to the cap and never after a refusal, and the server
(gunicorn, as functions-framework runs it) adapted to the same terms (`on_our_terms`).

The function's URL is public, so a refusal must cost nothing, however its caller sends the body.
Left alone, the stack would read what we refuse: functions-framework's after-request hook reads
the whole body into memory (`flask.request.get_data()`) unless the response is streamed, and then
gunicorn's gthread worker, to keep the connection alive, drains what is left, and lingers on close
to drain more, for seconds, with a stalled caller. So every route's answer goes through `finish`:
when the body was not read to its end, the answer is sent as a stream (functions-framework skips its
read) and the connection's read side is shut (gunicorn's drain and linger see the end at once and
the connection closes). A route reads a body only through `read_body`, which holds at most the cap.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

import flask

from telephony.answers import MAX_BODY_BYTES, Answer, head_too_slow, internal_error, request_unreadable
from telephony.deadlines import Call, read_deadline, socket_deadline

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

_BODY_READ = "telephony.body_read"  # set in the request's environ once the body was read to its end
# Okta sends a hook's body with its head (a few KB of JSON): one still coming in after this is refused,
# before it holds a thread or spends the time Twilio's call needs.
BODY_READ_SECONDS = 1.0


def on_our_terms(wsgi_app: WSGIApplication) -> WSGIApplication:
    """The framework's app, and the server that runs it (gunicorn's thread worker, as functions-framework
    starts it), on the function's terms: whatever a caller sends, the answer is JSON in Okta's shape, and
    no caller holds a thread for longer than it takes to send a request at once.

    - Every request is served as plain HTTP. Asked to upgrade to a WebSocket, Flask matched only
      WebSocket routes, and the framework's are HTTP: it answered an HTML 400 before any route ran (no
      line, no `finish`), and the server then read the body with no deadline. A server may ignore
      Upgrade (RFC 9110): the request goes to its route like any other.
    - gunicorn refuses a request it cannot read as HTTP itself, before any route runs (a header line over
      its limit, a broken request line, Content-Length beside Transfer-Encoding). It answered an HTML page
      quoting the offending line, and wrote no line of ours: it now answers in Okta's shape, naming only
      the part of the request, and the refusal is logged like any other.
    - functions-framework lifts gunicorn's limit on the request line, which gunicorn then reads in
      quadratic time: one endless line held a thread at full CPU for minutes. The limit is gunicorn's
      largest (MAX_REQUEST_LINE); longer is a 414.
    - gunicorn reads a request's head with no deadline once its first byte is in, and a thread waits 5 s
      for that byte: a few connections that stall, mid-head or before it, held every thread. A new
      connection with no byte in now goes at once to gunicorn's poller, which holds it without a thread
      (as gunicorn does after its own wait, until its keep-alive timeout), and a head must be in
      HEAD_READ_SECONDS after a thread starts reading it, or the connection is closed.
    - A stopping worker serves the connections it had queued: one whose head is not in whole is closed at
      once (a request sent before the stop is), where each took a thread for the head's deadline, and a
      few hundred stalled ones kept the worker past Cloud Run's 10 s after SIGTERM.
    - gunicorn closes a connection on its main thread, lingering up to 2 s for the caller to close first:
      a caller who kept its connections open after an answer held the thread that accepts every
      connection. What waits is dropped at once instead (`_drop_waiting`).
    - An answer must be written within WRITE_SECONDS (`_Written`): a caller that stopped reading held a
      thread in gunicorn's write for good.
    - A connection whose body a route left unread (`finish`) is closed after the answer: gunicorn would
      read what it had buffered of that body as the next request, and answer that too."""
    _adapt_gunicorn()

    def serve(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        environ.pop("HTTP_UPGRADE", None)
        answer = wsgi_app(environ, start_response)
        server_socket = environ.get("gunicorn.socket")
        if not isinstance(server_socket, socket.socket):
            return answer
        return _Written(answer, socket_deadline(server_socket, WRITE_SECONDS, socket.SHUT_RDWR))

    return serve


class _Written:
    """An answer the server writes within WRITE_SECONDS: gunicorn writes with no deadline, and a caller
    that pipelines requests and never reads their answers filled the socket's buffers, leaving a thread
    blocked in its write for good (as many such callers as threads: no hook answered, and a SIGTERM
    that took gunicorn's 30 s). At the deadline the connection is shut both ways, and the write ends."""

    def __init__(self, answer: Iterable[bytes], deadline: Call) -> None:
        self._answer, self._deadline = answer, deadline

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._answer)

    def close(self) -> None:
        self._deadline.finish()
        close = getattr(self._answer, "close", None)
        if close is not None:
            close()


HEAD_READ_SECONDS = 1.0  # Okta sends a request whole; so does Cloud Run's front end
WRITE_SECONDS = 2.0  # from the route's answer to its last byte written (and the work after it)
MAX_REQUEST_LINE = 8190  # gunicorn's own largest limit: Okta posts to a short, fixed URL
HEAD_PEEK_BYTES = 64 * 1024  # far more than a head of Okta's, Twilio's or a front end's
# What this thread serves: the head's deadline while it is read, then gunicorn's request.
_serving = threading.local()


def _adapt_gunicorn() -> None:
    """gunicorn's error page, request line limit, head reading, stop and close, as `on_our_terms` says;
    once per process, and only where gunicorn serves (not Flask's own server, nor a system without it)."""
    try:
        from gunicorn import util
        from gunicorn.workers import gthread
        from gunicorn.workers.gthread import ThreadWorker
    except ImportError:
        return
    if getattr(ThreadWorker.handle, "on_our_terms", False):
        return
    util.write_error = _server_refusal
    if not all(hasattr(gthread.TConn, name) for name in ("wait_for_data", "close")) or not hasattr(gthread, "_DEFER"):
        return  # not the thread worker these adaptations were written for (requirements.txt pins it)
    defer = gthread._DEFER  # what tells the worker to hand a connection back to its poller
    handle, handle_request, init_process = ThreadWorker.handle, ThreadWorker.handle_request, ThreadWorker.init_process

    def handle_in_time(worker: Any, connection: Any) -> Any:
        if not connection.initialized and not connection.wait_for_data(0.0):
            return defer  # no byte yet: gunicorn's poller holds the connection, no thread, until one comes
        if not connection.initialized and not worker.alive and not _head_in(connection.sock):
            return False  # stopping: a request sent before is in whole, and a stalled one is not waited for
        with read_deadline(connection.sock, HEAD_READ_SECONDS) as deadline:
            _serving.head = deadline
            try:
                return handle(worker, connection)
            finally:
                _serving.head = None

    def handle_request_read(worker: Any, request: Any, connection: Any) -> Any:
        head = getattr(_serving, "head", None)
        if head is not None and head.finish():  # in, but as its deadline shut the read side: the body is lost
            _refuse_before_route(connection.sock, head_too_slow(HEAD_READ_SECONDS), "request")
            return False
        _serving.request = request  # the head is in (each route bounds what it reads); `finish` closes through it
        try:
            return handle_request(worker, request, connection)
        finally:
            _serving.request = None

    def init_limited(worker: Any) -> None:
        if worker.cfg.limit_request_line == 0:  # unlimited, as functions-framework sets it
            worker.cfg.set("limit_request_line", MAX_REQUEST_LINE)
        init_process(worker)

    close = gthread.TConn.close

    def close_at_once(connection: Any, graceful: bool = False) -> None:
        if graceful:  # what the caller sent is read and dropped, without waiting for more
            _drop_waiting(connection.sock)
        close(connection, graceful)

    handle_in_time.on_our_terms = True  # type: ignore[attr-defined]
    ThreadWorker.handle, ThreadWorker.handle_request = handle_in_time, handle_request_read
    ThreadWorker.init_process, gthread.TConn.close = init_limited, close_at_once


def _drop_waiting(sock: socket.socket) -> None:
    """Read what waits on the socket, without waiting, and shut its read side. gunicorn closes a
    connection gracefully on its main thread, lingering up to 2 s to drain it (so the kernel's reset does
    not cut the answer short): a caller who keeps the connection open and sends nothing held the main
    thread, which accepts every connection, 2 s per connection (10 such requests: a valid hook 20 s late).
    What was sent is dropped here instead; the answer has gone, and the close then sends FIN at once."""
    with contextlib.suppress(OSError):
        for _ in range(HEAD_PEEK_BYTES // 4096):
            if not sock.recv(4096, socket.MSG_DONTWAIT):
                break
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RD)


def _head_in(sock: socket.socket) -> bool:
    """Whether a whole request head waits on the socket, unread (or it ended: gunicorn closes it then)."""
    try:
        waiting = sock.recv(HEAD_PEEK_BYTES, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return True  # gunicorn's read finds out
    return not waiting or b"\r\n\r\n" in waiting


# What gunicorn's refusal was about, from the start of its message, for the statuses that say nothing more.
_PARTS = (
    (("invalid request line", "invalid method", "invalid http version", "request line"), "request line"),
    (("invalid chunk",), "body"),
    (("unable to comply",), "Expect"),
    (("unsupported transfer coding",), "Transfer-Encoding"),
    (("invalid http header", "obsolete line folding", "error parsing headers"), "headers"),
    (("contradictory scheme", "configuration problem"), "headers"),
)
_STATUS_PARTS = {431: "headers", 414: "request line", 417: "Expect", 501: "Transfer-Encoding"}
_log = logging.getLogger("telephony_hook.http")


def _server_refusal(sock: socket.socket, status: int, reason: str, message: str) -> None:
    """gunicorn's `util.write_error`, in Okta's shape: its message may quote what was sent, so it is not."""
    lowered = message.lower()
    if status == HTTPStatus.INTERNAL_SERVER_ERROR and not lowered.startswith("configuration problem"):
        # gunicorn failed to serve, not the caller: as a bug of ours
        _log.error("the server failed to serve a request", extra={"fields": {"http_status": status}})
        _send_before_route(sock, internal_error("function"))
        return
    # The caller's doing, whatever status gunicorn gives it (501 for a transfer coding it does not know,
    # 500 for a SCRIPT_NAME header from a trusted forwarder): bad input is a 4xx.
    part = _STATUS_PARTS.get(status) or next((name for starts, name in _PARTS if lowered.startswith(starts)), "request")
    try:
        code = HTTPStatus(status) if status < HTTPStatus.INTERNAL_SERVER_ERROR else HTTPStatus.BAD_REQUEST
    except ValueError:
        code = HTTPStatus.BAD_REQUEST
    _refuse_before_route(sock, request_unreadable(code, part), part)


def _refuse_before_route(sock: socket.socket, answer: Answer, part: str) -> None:
    fields = {**answer.log_fields, "outcome": answer.outcome, "http_status": answer.status}
    _log.log(answer.outcome.severity, f"refused before any route: {part}", extra={"fields": fields})
    _send_before_route(sock, answer)


def _send_before_route(sock: socket.socket, answer: Answer) -> None:
    body = answer.json().encode()
    head = f"HTTP/1.1 {answer.status.value} {answer.status.phrase}\r\nConnection: close\r\n"
    head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    with contextlib.suppress(OSError):  # the caller has gone: there is no one left to tell
        sock.sendall(head.encode("ascii") + body)


def declared_too_large(request: flask.Request, limit: int = MAX_BODY_BYTES) -> bool:
    """Whether the caller announced more than `limit` bytes (a chunked body announces nothing)."""
    return (request.content_length or 0) > limit


def read_body(
    request: flask.Request,
    too_large: Callable[[], Exception],
    limit: int = MAX_BODY_BYTES,
    *,
    unreadable: Callable[[], Exception],
    seconds: float | None = None,
    too_slow: Callable[[], Exception] | None = None,
) -> bytes:
    """The whole body, or the route's 413 (`too_large`) as soon as it passes `limit`: never more in memory.
    A body the server cannot read (broken chunked framing, a caller that closed it before the bytes its
    Content-Length promised) is the route's `unreadable` refusal, a 4xx: it is the caller's doing, never
    a bug of ours, and what arrived is not the request it meant to send, even when it parses.

    With `seconds`, the body must also arrive within that time, or the route's `too_slow` refusal is
    raised: gunicorn's thread worker reads with no timeout at all, so a caller that stalls its body
    would hold the thread for as long as it likes. The deadline shuts the connection's read side
    (telephony/deadlines.py's watchdog); it applies where gunicorn serves, as functions-framework does."""
    if declared_too_large(request, limit):
        raise too_large()
    server_socket = request.environ.get("gunicorn.socket")
    watch: contextlib.AbstractContextManager[Call | None] = contextlib.nullcontext()
    if seconds is not None and isinstance(server_socket, socket.socket):
        watch = read_deadline(server_socket, seconds)
    with watch as deadline:
        try:
            body = request.stream.read(limit + 1)  # bounded whatever the framing, Content-Length or chunked
        except Exception:  # each server says it in its own words; the shut read side ends the read too
            if deadline is None or not deadline.expired:
                raise unreadable() from None
            body = b""
        if deadline is not None and deadline.finish():  # the deadline passed: what was read may be cut short
            raise (too_slow or too_large)()
    if len(body) > limit:
        raise too_large()
    if not _chunked(request) and len(body) < (request.content_length or 0):  # gunicorn returns it short
        raise unreadable()
    request.environ[_BODY_READ] = True
    return body


def body_left_unread(request: flask.Request) -> bool:
    if request.environ.get(_BODY_READ):
        return False
    return _chunked(request) or (request.content_length or 0) > 0


def _chunked(request: flask.Request) -> bool:
    return "chunked" in request.headers.get("Transfer-Encoding", "").lower()


def finish(request: flask.Request, response: flask.Response) -> flask.Response:
    """What every route returns: when the body was left unread, answer without ever reading it."""
    if not body_left_unread(request):
        return response
    payload = response.get_data()
    response.response = iter([payload])  # streamed: functions-framework does not read the body then
    response.headers["Content-Length"] = str(len(payload))
    response.headers["Connection"] = "close"  # for servers that honour it; gunicorn is told below
    server_socket = request.environ.get("gunicorn.socket")
    if isinstance(server_socket, socket.socket):
        # The rest of the body is never read: gunicorn's drain and its linger on close see the end
        # of the stream at once, and close the connection instead of reading it.
        with contextlib.suppress(OSError):
            server_socket.shutdown(socket.SHUT_RD)
    in_server = getattr(_serving, "request", None)
    if in_server is not None:  # the answer says Connection: close, and what gunicorn buffered is never read
        in_server.force_close()
    return response
