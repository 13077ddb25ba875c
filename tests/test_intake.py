"""telephony.intake: how any route reads a body (bounded) and refuses without reading one."""

from __future__ import annotations

import flask

from telephony.answers import MAX_BODY_BYTES, Refused, body_too_large
from telephony.intake import finish, read_body


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
