"""Stalled and huge uploads against a real functions-framework process: refusals cost nothing.

functions-framework reads the whole body after the handler returns, and gunicorn drains it to keep
the connection alive, then lingers on close. Refusals must be answered at once without reading the
rest, the connection closed, and no request may make the worker hold more than the 64 KB cap.
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from telephony.answers import MAX_BODY_BYTES
from telephony.intake import HEAD_READ_SECONDS, MAX_REQUEST_LINE, WRITE_SECONDS
from tests.e2e_hooks import HookStarter, RunningHook, hook_starter
from tests.helpers import HOOK_SECRET, okta_request
from tests.standins import http_answer, stand_in
from tests.test_oauth import AUDIENCE, ISSUER, KID, SCOPE, SIGNING_KEY, public_jwk, token
from tools.sandbox.twilio_sandbox import SandboxServer

THREADS = 4

pytestmark = [pytest.mark.e2e, pytest.mark.prestart(THREADS=str(THREADS))]
PROMPT = 2.0  # seconds: well under gunicorn's 5 s drain, which is what a stalled body used to cost

STALLED_REQUESTS = {
    401: b"POST / HTTP/1.1\r\nHost: hook\r\nContent-Type: application/json\r\nContent-Length: 4000\r\n\r\n{",
    405: b"PUT / HTTP/1.1\r\nHost: hook\r\nContent-Length: 4000\r\nAuthorization: "
    + HOOK_SECRET.encode()
    + b"\r\n\r\n{",
    413: b"POST / HTTP/1.1\r\nHost: hook\r\nContent-Length: 300000000\r\nAuthorization: "
    + HOOK_SECRET.encode()
    + b"\r\n\r\n{",
}


@pytest.fixture
def start(sandbox_server: SandboxServer, tmp_path: Path) -> Iterator[HookStarter]:
    yield from hook_starter(sandbox_server.base_url, tmp_path)


@pytest.fixture
def hook(shared_hook: HookStarter) -> RunningHook:
    """Every test here but the OAuth one runs against the same configuration: one process serves them."""
    return shared_hook(THREADS=str(THREADS))


def read_answer(connection: socket.socket) -> tuple[int, bytes, bool]:
    """Status and body of the answer, and whether the server then closed the connection."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = connection.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(
        next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
    )
    while len(body) < length:
        body += connection.recv(65536)
    try:
        closed = connection.recv(1) == b""
    except ConnectionResetError:
        closed = True
    return int(head.split()[1]), body[:length], closed


def stall(hook: RunningHook, request: bytes, stack: ExitStack) -> socket.socket:
    connection = stack.enter_context(socket.create_connection(hook.address, timeout=PROMPT))
    connection.sendall(request)
    return connection


@pytest.mark.parametrize("status", sorted(STALLED_REQUESTS))
def test_a_stalled_body_is_refused_at_once_and_the_connection_closed(hook: RunningHook, status: int) -> None:
    with ExitStack() as stack:
        started = time.monotonic()
        connection = stall(hook, STALLED_REQUESTS[status], stack)
        answered, body, closed = read_answer(connection)  # the socket's timeout is PROMPT
        assert time.monotonic() - started < PROMPT
    assert answered == status
    assert "error" in json.loads(body)
    assert closed


def test_threads_full_of_stalled_uploads_do_not_delay_a_valid_hook(hook: RunningHook) -> None:
    _, _, alone = hook.post(okta_request())
    with ExitStack() as stack:
        stalled = [stall(hook, STALLED_REQUESTS[401], stack) for _ in range(2 * THREADS)]
        time.sleep(0.2)  # every one of them is in the worker by now
        status, answer, elapsed = hook.post(okta_request())
        assert [read_answer(connection)[0] for connection in stalled] == [401] * len(stalled)
    assert status == 200 and answer["commands"][0]["value"][0]["status"] == "SUCCESSFUL"
    assert elapsed < max(10 * alone, 1.0)


@pytest.mark.parametrize("authorization", [None, HOOK_SECRET])
def test_a_huge_chunked_upload_is_refused_without_being_read(hook: RunningHook, authorization: str | None) -> None:
    """Unauthenticated, it is refused before any read; authenticated, after the 64 KB cap."""
    head = b"POST / HTTP/1.1\r\nHost: hook\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
    if authorization:
        head += b"Authorization: " + authorization.encode() + b"\r\n"
    chunk = b"%x\r\n%s\r\n" % (MAX_BODY_BYTES, b"x" * MAX_BODY_BYTES)
    attempted = 256 * 1024 * 1024
    sent = 0
    with socket.create_connection(hook.address, timeout=PROMPT) as connection:
        connection.sendall(head + b"\r\n")
        answers: list[tuple[int, bytes, bool]] = []
        reader = threading.Thread(target=lambda: answers.append(read_answer(connection)), daemon=True)
        reader.start()
        try:
            while sent < attempted:
                connection.sendall(chunk)
                sent += len(chunk)
        except OSError:  # the server closed the connection: what we want
            pass
        reader.join(PROMPT)
    assert answers and answers[0][0] == (413 if authorization else 401)
    assert sent < attempted / 8  # the worker stopped taking the body long before its end


def test_a_stalled_body_with_a_token_lacking_the_scope_is_403_at_once(start: HookStarter) -> None:
    keys = json.dumps({"keys": [public_jwk(SIGNING_KEY, KID)]}).encode()
    with stand_in(http_answer(200, keys)) as issuer, ExitStack() as stack:
        hook = start(
            THREADS=str(THREADS),
            OKTA_HOOK_AUTH_SECRET="",
            OKTA_HOOK_OAUTH_ISSUER=ISSUER,
            OKTA_HOOK_OAUTH_AUDIENCE=AUDIENCE,
            OKTA_HOOK_OAUTH_SCOPE=SCOPE,
            OKTA_HOOK_OAUTH_JWKS_URL=issuer.base_url + "/keys",
        )
        bearer = f"Bearer {token(scp=['okta.users.read'])}".encode()
        request = b"POST / HTTP/1.1\r\nHost: hook\r\nContent-Length: 4000\r\nAuthorization: " + bearer + b"\r\n\r\n{"
        started = time.monotonic()
        answered, body, closed = read_answer(stall(hook, request, stack))
        assert time.monotonic() - started < PROMPT
    assert answered == 403 and "error" in json.loads(body)
    assert closed


# ------------------------------------------------------------ heads that stall, and endless request lines

STALLED_HEADS = {
    "nothing sent": b"",
    "half a request line": b"POST / HTT",
    "a head that never ends": b"POST / HTTP/1.1\r\nHost: hook\r\nAuthorization: %s\r\nX-A: b" % HOOK_SECRET.encode(),
}


@pytest.mark.parametrize("case", list(STALLED_HEADS))
def test_connections_that_stall_their_head_release_their_threads(hook: RunningHook, case: str) -> None:
    """gunicorn read a head with no deadline once its first byte was in (and waited 5 s for that byte):
    as many stalled heads as threads kept valid hooks from being answered at all. Each is now closed
    HEAD_READ_SECONDS after a thread takes it, and a valid hook is answered meanwhile."""
    _, _, alone = hook.post(okta_request())
    with ExitStack() as stack:
        stalled = [stall(hook, STALLED_HEADS[case], stack) for _ in range(2 * THREADS)]
        time.sleep(0.2)  # the first THREADS of them hold the worker's threads by now
        status, answer, elapsed = hook.post(okta_request(), timeout=3 * HEAD_READ_SECONDS + 5)
        for connection in stalled:
            connection.settimeout(4 * HEAD_READ_SECONDS)
            assert connection.recv(1) == b""  # closed without an answer: the caller sent no request
    assert status == 200 and answer["commands"][0]["value"][0]["status"] == "SUCCESSFUL"
    # The second round of stalled heads gets the threads first: two head deadlines at most.
    assert elapsed < 2 * HEAD_READ_SECONDS + max(10 * alone, 1.0)


def test_a_request_line_longer_than_the_limit_is_refused_at_once(hook: RunningHook) -> None:
    """functions-framework lifts gunicorn's limit on the request line, which gunicorn then read in quadratic
    time: one endless line held a thread at full CPU for minutes. A line over the limit is a 414 now."""
    hook = hook.from_now()
    line = b"GET /?" + b"a" * MAX_REQUEST_LINE + b" HTTP/1.1\r\nHost: hook\r\n\r\n"
    with ExitStack() as stack:
        started = time.monotonic()
        status, body, closed = read_answer(stall(hook, line, stack))
        assert time.monotonic() - started < PROMPT
    assert (status, closed) == (414, True)
    assert json.loads(body)["error"]["errorSummary"] == "The request is invalid: request line"
    assert '"http_status": 414' in hook.output_with('"request_unreadable"')


def test_a_refusal_with_a_broken_body_buffered_is_the_only_answer(hook: RunningHook) -> None:
    """A refused request's body is never read, but gunicorn had buffered its start with the head, and read
    it as the next request once the answer said keep-alive: a second, unasked answer (400) followed the
    401. The refusal now says Connection: close, and is all the caller gets."""
    request = b"POST / HTTP/1.1\r\nHost: hook\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n"
    with socket.create_connection(hook.address, timeout=PROMPT) as connection:
        connection.sendall(request)
        data = b""
        while chunk := connection.recv(65536):
            data += chunk
    assert data.count(b"HTTP/1.1 ") == 1 and data.startswith(b"HTTP/1.1 401 ")
    assert b"\r\nConnection: close\r\n" in data.partition(b"\r\n\r\n")[0]


def test_a_connection_whose_request_comes_after_a_pause_is_still_served(hook: RunningHook) -> None:
    """A client (a proxy) may open a connection before it has a request: past the thread's wait for a
    first byte, gunicorn's poller keeps the connection without a thread, and the request is served."""
    body = json.dumps(okta_request()).encode()
    request = b"POST / HTTP/1.1\r\nHost: hook\r\nAuthorization: %s\r\nContent-Type: application/json\r\n" % (
        HOOK_SECRET.encode()
    )
    with socket.create_connection(hook.address, timeout=5) as connection:
        time.sleep(1.5 * HEAD_READ_SECONDS)
        connection.sendall(request + b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        status, answer, _ = read_answer(connection)
    assert status == 200 and json.loads(answer)["commands"][0]["value"][0]["status"] == "SUCCESSFUL"


def test_connections_that_send_nothing_hold_no_thread(hook: RunningHook) -> None:
    """Each new connection held a thread while it waited for a first byte (5 s, then 1 s): three times
    THREADS silent connections put a valid hook seconds behind them. They wait in gunicorn's poller now."""
    _, _, alone = hook.post(okta_request())
    with ExitStack() as stack:
        for _ in range(3 * THREADS):
            stack.enter_context(socket.create_connection(hook.address, timeout=PROMPT))
        time.sleep(0.1)
        status, answer, elapsed = hook.post(okta_request())
    assert status == 200 and answer["commands"][0]["value"][0]["status"] == "SUCCESSFUL"
    assert elapsed < max(10 * alone, HEAD_READ_SECONDS / 2)


def test_a_stopping_worker_does_not_wait_for_stalled_heads(start: HookStarter) -> None:
    """Connections queued when SIGTERM came each took a thread for the head's deadline: 12 x THREADS
    of them kept the worker 12 s (Cloud Run kills it at 10 s). A stalled one is closed at once now."""
    hook = start(THREADS=str(THREADS))
    with ExitStack() as stack:
        for _ in range(12 * THREADS):
            stall(hook, b"P", stack)
        time.sleep(0.2)
        started = time.monotonic()
        hook.process.send_signal(signal.SIGTERM)
        hook.process.wait(timeout=30)
        stopped = time.monotonic() - started
    assert stopped < 4 * HEAD_READ_SECONDS


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GARBAGE\r\n\r\n",  # gunicorn's own refusal
        b"GET / HTTP/1.0\r\n\r\n",  # a route's answer that closes (HTTP/1.0)
        b"POST / HTTP/1.1\r\nHost: hook\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
    ],
    ids=["unreadable", "http/1.0", "connection close"],
)
def test_callers_that_keep_their_connection_open_after_the_answer_do_not_hold_the_server(
    hook: RunningHook, request_bytes: bytes
) -> None:
    """gunicorn closed each answered connection on its main thread, the one that accepts connections,
    lingering 2 s for the caller to close first: ten callers that kept theirs open put a valid hook 20 s
    behind them. What they sent is dropped at once now, and the connection closed."""
    _, _, alone = hook.post(okta_request())
    with ExitStack() as stack:
        held = [stall(hook, request_bytes, stack) for _ in range(3 * THREADS)]
        time.sleep(0.3)
        status, answer, elapsed = hook.post(okta_request())
        assert all(read_answer(connection)[2] for connection in held)  # answered, then closed
    assert status == 200 and answer["commands"][0]["value"][0]["status"] == "SUCCESSFUL"
    assert elapsed < max(10 * alone, HEAD_READ_SECONDS / 2)


def test_callers_that_never_read_their_answers_do_not_hold_the_threads(start: HookStarter) -> None:
    """gunicorn writes an answer with no deadline: callers that pipelined requests and never read the
    answers filled their sockets' buffers (about 10 s here), and then held every thread in its write for
    good (no hook answered; SIGTERM took gunicorn's 30 s). An answer has WRITE_SECONDS to be written."""
    hook = start(THREADS=str(THREADS))
    _, _, alone = hook.post(okta_request())

    def never_read(connection: socket.socket) -> None:
        with contextlib.suppress(OSError):  # shut by the server: the test goes on
            connection.sendall(b"GET / HTTP/1.1\r\nHost: hook\r\n\r\n" * 60_000)

    with ExitStack() as stack:
        for _ in range(2 * THREADS):
            connection = stack.enter_context(socket.socket())
            connection.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # full after a few answers
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 100)
            connection.connect(hook.address)
            threading.Thread(target=never_read, args=(connection,), daemon=True).start()
        took = []
        for _ in range(15):
            time.sleep(1)
            status, answer, elapsed = hook.post(okta_request(), timeout=3 * WRITE_SECONDS + 10)
            assert status == 200 and answer["commands"][0]["value"][0]["status"] == "SUCCESSFUL"
            took.append(elapsed)
    assert max(took) < WRITE_SECONDS + max(10 * alone, 1.0), took
