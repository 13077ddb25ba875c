"""Stalled and huge uploads against a real functions-framework process: refusals cost nothing.

functions-framework reads the whole body after the handler returns, and gunicorn drains it to keep
the connection alive, then lingers on close. Refusals must be answered at once without reading the
rest, the connection closed, and no request may make the worker hold more than the 64 KB cap.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from telephony.answers import MAX_BODY_BYTES
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
