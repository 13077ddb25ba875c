"""telephony.app: one way in for every route: one log line per request, the catch-all, path matching."""

from __future__ import annotations

import json
from typing import Any

import pytest
from flask.testing import FlaskClient

from tests.helpers import (
    EVENT_HOOK_SECRET,
    HOOK_SECRET,
    OKTA_API_TOKEN,
    OTP,
    PHONE,
    PHONE_MASKED,
    AppFactory,
    message_receipt,
    okta_request,
    post_hook,
    post_receipt,
)
from tests.okta_stand_in import OktaState

ROUTE_LOGGERS = {
    "telephony hook": "telephony_hook",
    "event hook": "okta_events",
    "receipts route": "telephony_hook.receipts",
}


@pytest.fixture
def every_route(make_client: AppFactory, okta_api: OktaState) -> FlaskClient:
    """The function with all three routes configured."""
    return make_client(
        OKTA_EVENT_HOOK_AUTH_SECRET=EVENT_HOOK_SECRET, OKTA_ORG_URL=okta_api.url, OKTA_API_TOKEN=OKTA_API_TOKEN
    )


def request_lines(output: str, route: str) -> list[dict[str, Any]]:
    """The lines a route wrote about whole requests: they alone carry `http_status`."""
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("logger") == ROUTE_LOGGERS[route] and "http_status" in line]


def send(client: FlaskClient, route: str, case: str) -> Any:
    """One request to `route`: an accepted one ('ok'), an anonymous one, or a malformed one."""
    if route == "telephony hook":
        return {
            "ok": lambda: post_hook(client, okta_request()),
            "anonymous": lambda: post_hook(client, okta_request(), secret=None),
            "malformed": lambda: post_hook(client, b"{not json"),
        }[case]()
    if route == "event hook":
        headers = {} if case == "anonymous" else {"Authorization": EVENT_HOOK_SECRET}
        if case == "malformed":
            return client.post("/okta/events", data=b"{not json", headers=headers, content_type="application/json")
        return client.post("/okta/events", json={"data": {"events": []}}, headers=headers)
    form = message_receipt()
    if case == "malformed":
        return post_receipt(client, {**form, "MessageStatus": "Teleported!", "SmsStatus": "Teleported!"})
    return post_receipt(client, form, signature="" if case == "anonymous" else None)


EXPECTED = {
    ("telephony hook", "ok"): (200, "delivered"),
    ("telephony hook", "anonymous"): (401, "unauthorized"),
    ("telephony hook", "malformed"): (400, "invalid_request"),
    ("event hook", "ok"): (200, "events_received"),
    ("event hook", "anonymous"): (401, "unauthorized"),
    ("event hook", "malformed"): (400, "invalid_request"),
    ("receipts route", "ok"): (204, "receipt"),
    ("receipts route", "anonymous"): (403, "receipt_forbidden"),
    ("receipts route", "malformed"): (400, "receipt_invalid"),
}


@pytest.mark.parametrize(("route", "case"), sorted(EXPECTED))
def test_every_route_logs_one_line_per_request_with_outcome_status_and_duration(
    every_route: FlaskClient, capsys: pytest.CaptureFixture[str], route: str, case: str
) -> None:
    capsys.readouterr()
    response = send(every_route, route, case)
    status, outcome = EXPECTED[(route, case)]
    (line,) = request_lines(capsys.readouterr().out, route)
    assert (response.status_code, line["http_status"], line["outcome"]) == (status, status, outcome)
    assert line["message"].startswith(f"{route} {outcome}")
    assert isinstance(line["duration_ms"], float) and line["duration_ms"] >= 0


@pytest.mark.parametrize(("route", "path"), [("telephony hook", "/"), ("event hook", "/okta/events")])
def test_a_malformed_body_is_refused_naming_the_route_that_refused_it(
    every_route: FlaskClient, route: str, path: str
) -> None:
    response = send(every_route, route, "malformed")
    assert response.status_code == 400
    assert response.get_json()["error"]["errorSummary"] == f"The {route} request is invalid: body"


@pytest.mark.parametrize(
    ("path", "route"),
    [("/okta/events/", "event hook"), ("/twilio/status/", "receipts route"), ("/okta/events", "event hook")],
)
def test_paths_match_without_a_trailing_slash(
    every_route: FlaskClient, capsys: pytest.CaptureFixture[str], path: str, route: str
) -> None:
    capsys.readouterr()
    every_route.put(path)
    (line,) = request_lines(capsys.readouterr().out, route)
    assert (line["outcome"], line["http_status"]) == ("method_not_allowed", 405)


# Where a bug of ours is planted in each route (a function the route calls with the request's data),
# and what of the request must not reach the log even then.
BUGS = {
    "telephony hook": ("telephony.hook.request_facts", (OTP, PHONE, HOOK_SECRET)),
    "event hook": ("telephony.events.EventDelivery.model_validate_json", (EVENT_HOOK_SECRET,)),
    "receipts route": ("telephony.receipts.parse_receipt", (PHONE,)),
}


@pytest.mark.parametrize("route", sorted(BUGS))
def test_an_unexpected_error_in_any_route_is_answered_in_oktas_shape_and_logged(
    every_route: FlaskClient, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], route: str
) -> None:
    target, sensitive = BUGS[route]

    def bug(*args: object, **kwargs: object) -> Any:
        raise RuntimeError(f"a bug of ours, holding {' and '.join(sensitive)}")

    monkeypatch.setattr(target, bug)
    capsys.readouterr()
    response = send(every_route, route, "ok")
    output = capsys.readouterr().out
    assert response.status_code == 500
    assert response.get_json() == {"error": {"errorSummary": f"The {route} failed.", "errorCauses": []}}
    (line,) = request_lines(output, route)
    assert (line["outcome"], line["http_status"], line["severity"]) == ("internal_error", 500, "ERROR")
    assert "RuntimeError" in output
    assert not [value for value in sensitive if value in output]
    if PHONE in sensitive:
        assert PHONE_MASKED in output


def test_bookkeeping_runs_once_the_answer_is_out_in_the_requests_scope(
    every_route: FlaskClient, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Work a route leaves for after its answer (the spend guard's retry record) runs when the server
    asks for more than the body: the caller has the whole answer first. It still logs in the request's
    scope (the code and number masked), and a failing task is logged without touching the answer."""
    from werkzeug.test import EnvironBuilder

    from telephony.hook import TelephonyHook

    done: list[str] = []
    deliver = TelephonyHook._deliver

    def failing() -> None:
        raise RuntimeError(f"bookkeeping of {OTP} for {PHONE} failed")

    def deliver_then(self: TelephonyHook, *args: Any) -> Any:
        answer = deliver(self, *args)
        logged = lambda: TelephonyHook.log.warning(f"after the answer: {OTP} to {PHONE}")  # noqa: E731
        return answer.then(failing).then(logged).then(lambda: done.append("ran"))

    monkeypatch.setattr(TelephonyHook, "_deliver", deliver_then)
    capsys.readouterr()
    environ = EnvironBuilder(
        path="/", method="POST", json=okta_request(), headers=[("Authorization", HOOK_SECRET)]
    ).get_environ()
    started: list[str] = []

    def start_response(status: str, headers: list[tuple[str, str]], *_: Any) -> Any:
        started.append(status)

    body = every_route.application(environ, start_response)
    chunks = iter(body)
    answer = json.loads(next(chunks))
    assert started == ["200 OK"] and answer["commands"][0]["value"][0]["status"] == "SUCCESSFUL"
    assert done == []  # the body is out, the bookkeeping not yet run
    assert list(chunks) == [] and done == ["ran"]
    output = capsys.readouterr().out
    assert "work after the answer failed" in output and "RuntimeError" in output
    assert "after the answer: " in output and PHONE_MASKED in output
    assert OTP not in output and PHONE not in output
