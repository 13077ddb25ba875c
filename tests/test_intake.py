"""telephony.intake: how any route reads a body (bounded) and refuses without reading one."""

from __future__ import annotations

import json
import logging
import socket
import time
from http import HTTPStatus
from types import SimpleNamespace
from typing import Any

import flask
import pytest

from telephony import intake
from telephony.answers import MAX_BODY_BYTES, Refused, body_too_large
from telephony.deadlines import read_deadline
from telephony.intake import WRITE_SECONDS, _server_refusal, finish, on_our_terms, read_body
from telephony.store import STORE_DEADLINE_SECONDS


def route_app(read: bool) -> flask.Flask:
    """A route as ROUTES holds one: it refuses before reading, or reads through read_body first."""
    app = flask.Flask(__name__)

    @app.post("/receipt")
    def receipt() -> flask.Response:
        try:
            if read:
                body = read_body(
                    flask.request,
                    lambda: body_too_large("receipt route"),
                    unreadable=lambda: body_too_large("receipt route"),
                )
                return finish(flask.request, flask.Response(str(len(body)), 200))
            return finish(flask.request, flask.Response('{"error": {}}', 401, mimetype="application/json"))
        except Refused as refusal:
            return finish(flask.request, flask.Response(refusal.answer.json(), refusal.answer.status))

    return app


def test_a_refusal_before_reading_is_streamed_and_closes() -> None:
    response = route_app(read=False).test_client().post("/receipt", data=b"{" * 1000)
    assert response.status_code == 401
    assert response.is_streamed
    assert response.headers["Connection"] == "close"
    assert response.headers["Content-Length"] == str(len(b'{"error": {}}'))
    assert response.get_data() == b'{"error": {}}'


def test_a_body_read_to_its_end_keeps_the_ordinary_response() -> None:
    response = route_app(read=True).test_client().post("/receipt", data=b"x" * MAX_BODY_BYTES)
    assert response.status_code == 200 and response.get_data() == str(MAX_BODY_BYTES).encode()
    assert not response.is_streamed
    assert "Connection" not in response.headers


def test_a_body_over_the_cap_is_413_and_left_unread() -> None:
    """Chunked bodies over the cap: tests/test_e2e_stalls.py, through gunicorn."""
    response = route_app(read=True).test_client().post("/receipt", data=b"x" * (MAX_BODY_BYTES + 1))
    assert response.status_code == 413
    assert response.headers["Connection"] == "close"


def refusal_written(status: int, reason: str, message: str) -> tuple[bytes, dict[str, Any]]:
    """What `_server_refusal` (gunicorn's write_error) writes to the caller: the head, and the body's JSON."""
    ours, theirs = socket.socketpair()
    with ours, theirs:
        _server_refusal(ours, status, reason, message)
        ours.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := theirs.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return head, json.loads(body)


@pytest.mark.parametrize(
    ("status", "message", "part"),
    [
        (400, "Invalid Request Line 'Invalid HTTP request line: \\'GET /?x hook-secret\\''", "request line"),
        (400, "Invalid Method 'Invalid HTTP method: \\'hook-secret\\''", "request line"),
        (400, "Invalid chunk size: b'hook-secret'", "body"),
        (417, "Unable to comply with expectation: 'hook-secret'", "Expect"),
        (400, "Expected HTTP/2 connection preface, got b'hook-secret'", "request"),
    ],
)
def test_the_servers_refusal_names_the_part_and_never_quotes_the_request(
    status: int, message: str, part: str, caplog: pytest.LogCaptureFixture
) -> None:
    """gunicorn's messages quote what it could not read; the answer and the line name only its part."""
    head, body = refusal_written(status, "Bad Request", message)
    assert head.split(b"\r\n")[0] == f"HTTP/1.1 {status} {HTTPStatus(status).phrase}".encode()
    assert body["error"]["errorSummary"] == f"The request is invalid: {part}"
    assert (body["error"]["errorCauses"][0]["location"], body["error"]["errorCauses"][0]["reason"]) == (
        part,
        "REQUEST_UNREADABLE",
    )
    (record,) = caplog.records
    assert record.levelno == logging.WARNING and record.fields["invalid_fields"] == [part]  # type: ignore[attr-defined]
    assert "hook-secret" not in json.dumps(body) and "hook-secret" not in caplog.text


def test_the_servers_own_failure_is_an_internal_error_in_oktas_shape(caplog: pytest.LogCaptureFixture) -> None:
    head, body = refusal_written(500, "Internal Server Error", "")
    assert head.split(b"\r\n")[:2] == [b"HTTP/1.1 500 Internal Server Error", b"Connection: close"]
    assert body == {"error": {"errorSummary": "The function failed.", "errorCauses": []}}
    assert [record.levelno for record in caplog.records] == [logging.ERROR]


def keep_gunicorn(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever the adaptation replaces in gunicorn is put back after the test."""
    from gunicorn import util
    from gunicorn.workers import gthread

    for owner, name in (
        (util, "write_error"),
        (gthread.TConn, "close"),
        *((gthread.ThreadWorker, name) for name in ("handle", "handle_request", "init_process")),
    ):
        monkeypatch.setattr(owner, name, getattr(owner, name))


def test_gunicorn_is_adapted_once(monkeypatch: pytest.MonkeyPatch) -> None:
    from gunicorn import util
    from gunicorn.workers.gthread import ThreadWorker

    keep_gunicorn(monkeypatch)
    on_our_terms(flask.Flask(__name__).wsgi_app)
    handle = ThreadWorker.handle
    on_our_terms(flask.Flask(__name__).wsgi_app)  # a second app in the process: not wrapped twice
    assert util.write_error is _server_refusal
    assert ThreadWorker.handle is handle and getattr(handle, "on_our_terms", False)


def test_a_header_that_conflicts_with_the_servers_set_up_is_the_callers_400(caplog: pytest.LogCaptureFixture) -> None:
    """gunicorn gives SCRIPT_NAME from a trusted forwarder a 500 of its own: the caller's doing, not ours."""
    head, body = refusal_written(500, "Internal Server Error", "Configuration problem: SCRIPT_NAME /zzz")
    assert head.split(b"\r\n")[0] == b"HTTP/1.1 400 Bad Request"
    assert body["error"]["errorSummary"] == "The request is invalid: headers"
    assert [record.levelno for record in caplog.records] == [logging.WARNING]


def test_a_head_whose_deadline_passed_as_it_came_in_is_a_408_not_a_route_on_a_shut_socket(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The watchdog may shut the read side just after the head is parsed: the route would then read a
    cut body and blame the caller's framing. The request is refused for its time, and the route never runs."""
    from gunicorn.workers.gthread import ThreadWorker

    routed: list[object] = []
    keep_gunicorn(monkeypatch)
    monkeypatch.setattr(ThreadWorker, "handle", lambda worker, connection: None)  # not adapted yet
    monkeypatch.setattr(ThreadWorker, "handle_request", lambda worker, request, connection: routed.append(request))
    on_our_terms(flask.Flask(__name__).wsgi_app)
    ours, theirs = socket.socketpair()
    with ours, theirs, read_deadline(ours, 0.0) as head:
        while not head.expired:
            time.sleep(0.01)
        monkeypatch.setattr(intake._serving, "head", head, raising=False)
        kept = ThreadWorker.handle_request(None, "request", SimpleNamespace(sock=ours))
        ours.shutdown(socket.SHUT_WR)
        answer = theirs.recv(65536)
    assert kept is False and routed == []
    assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\n")
    assert (
        json.loads(answer.partition(b"\r\n\r\n")[2])["error"]["errorSummary"] == "The request did not arrive in time."
    )
    assert [(record.levelno, record.fields["outcome"]) for record in caplog.records] == [  # type: ignore[attr-defined]
        (logging.WARNING, "request_unreadable")
    ]


def test_the_work_after_an_answer_fits_in_the_time_the_answer_has_to_be_written() -> None:
    """The spend guard writes to its store after the answer, while the server is still writing it (at
    most three calls, each under the store's deadline): past WRITE_SECONDS the connection is shut, and a
    request a keep-alive client had already sent on it would be lost."""
    assert 3 * STORE_DEADLINE_SECONDS < WRITE_SECONDS / 2
