"""Delivery receipts: Twilio's signed status callbacks on /twilio/status, and the callbacks we ask for."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import flask
import pytest
from flask.testing import FlaskClient
from werkzeug.serving import make_server

from telephony.answers import Outcome
from telephony.receipts import CALL_STATUSES, MESSAGE_STATUSES, called_url, outcome_for, parse_receipt
from telephony.settings import SettingsError, load_settings
from tests.helpers import (
    HOOK_SECRET,
    PHONE,
    PHONE_MASKED,
    RECEIPT_URL,
    AppFactory,
    call_receipt,
    message_receipt,
    okta_request,
    post_hook,
    post_receipt,
    twilio_signature,
)
from tests.test_monitoring import METRICS, matches
from tools.processes import free_port
from tools.sandbox.run_local import SANDBOX_BLOCKED_NUMBER_TYPES
from tools.sandbox.twilio_sandbox import SandboxState


def log_lines(output: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def receipt_lines(output: str) -> list[dict[str, Any]]:
    return [line for line in log_lines(output) if line.get("logger") == "telephony_hook.receipts" and "outcome" in line]


def only_receipt_line(output: str) -> dict[str, Any]:
    lines = receipt_lines(output)
    assert len(lines) == 1, lines
    return lines[0]


# ------------------------------------------------------------------------------------- replays


def test_receipt_answers_are_empty_and_say_no_type(client: FlaskClient) -> None:
    """Twilio reads only the status: 204, 400 and 403 carry no body, so no Content-Type (not text/html)."""
    for form, signature, status in (
        (message_receipt(), None, 204),
        (message_receipt("Teleported!"), None, 400),
        (message_receipt(), "wrong", 403),
    ):
        response = post_receipt(client, form, signature=signature)
        assert (response.status_code, response.get_data(), response.headers.get("Content-Type")) == (status, b"", None)


def test_a_receipt_sent_again_is_answered_but_counted_once(
    client: FlaskClient, capsys: pytest.CaptureFixture[str]
) -> None:
    """Whoever saw one signed receipt can post it again: the delivery metric (and its alert) must see
    one status of one message once. A later status of the same message is news, not a repeat."""
    undelivered = message_receipt("undelivered", ErrorCode="30007")
    capsys.readouterr()
    statuses = [post_receipt(client, form).status_code for form in (undelivered, undelivered, undelivered)]
    statuses.append(post_receipt(client, message_receipt("failed", ErrorCode="30007")).status_code)
    lines = receipt_lines(capsys.readouterr().out)
    assert statuses == [204, 204, 204, 204]
    assert [line["outcome"] for line in lines] == [
        "receipt_not_delivered", "receipt_repeated", "receipt_repeated", "receipt_not_delivered"
    ]  # fmt: skip
    counted = [line for line in lines if matches(METRICS["okta_telephony_delivery_statuses"]["filter"], line)]
    assert [line["delivery_status"] for line in counted] == ["undelivered", "failed"]


# ------------------------------------------------------------------------------------- signature


def test_a_signed_receipt_is_answered_204_with_one_info_line(
    client: FlaskClient, capfd: pytest.CaptureFixture[str]
) -> None:
    capfd.readouterr()
    response = post_receipt(client, message_receipt("delivered"))
    assert (response.status_code, response.get_data()) == (204, b"")
    line = only_receipt_line(capfd.readouterr().out)
    assert line["severity"] == "INFO"
    assert {key: line[key] for key in ("outcome", "twilio_sid", "channel", "delivery_status", "phone", "country")} == {
        "outcome": "receipt",
        "twilio_sid": "SM" + "c" * 32,
        "channel": "sms",
        "delivery_status": "delivered",
        "phone": PHONE_MASKED,
        "country": "US",
    }
    assert "error_code" not in line and "call_duration_s" not in line


def test_a_wrong_signature_is_refused_403_with_a_warning(
    client: FlaskClient, capfd: pytest.CaptureFixture[str]
) -> None:
    capfd.readouterr()
    form = message_receipt()
    response = post_receipt(client, form, signature=twilio_signature("http://localhost/twilio/status", form, "wrong"))
    assert response.status_code == 403
    line = only_receipt_line(capfd.readouterr().out)
    assert (line["severity"], line["outcome"]) == ("WARNING", "receipt_forbidden")
    assert "delivery_status" not in line  # nothing of an unsigned receipt is believed


def test_a_missing_signature_is_refused_before_the_body_is_read(
    client: FlaskClient, capfd: pytest.CaptureFixture[str]
) -> None:
    capfd.readouterr()
    huge = {**message_receipt(), "Pad": "x" * 70_000}
    response = post_receipt(client, huge, signature="")
    assert response.status_code == 403  # not 413: the body was never read
    line = only_receipt_line(capfd.readouterr().out)
    assert (line["outcome"], line["receipt_problem"]) == ("receipt_forbidden", "no X-Twilio-Signature header")


def test_a_signature_for_another_url_is_refused(client: FlaskClient) -> None:
    form = message_receipt()
    assert post_receipt(client, form, signed_url="https://elsewhere.example.com/twilio/status").status_code == 403
    assert post_receipt(client, form, signed_url="https://localhost/twilio/status").status_code == 403


def test_the_query_string_is_part_of_the_signed_url(client: FlaskClient) -> None:
    form = message_receipt()
    signed_with_query = "http://localhost/twilio/status?attempt=1"
    assert post_receipt(client, form, signed_url=signed_with_query, path="/twilio/status?attempt=1").status_code == 204
    assert post_receipt(client, form, path="/twilio/status?attempt=1").status_code == 403


def test_behind_cloud_run_the_signature_covers_the_public_https_url(make_client: AppFactory) -> None:
    client = make_client(PUBLIC_URL="https://hook-abc-uc.a.run.app")
    form = call_receipt()
    public = "https://hook-abc-uc.a.run.app/twilio/status"
    # Cloud Run hands the request over as http, on its own address: PUBLIC_URL is what Twilio called.
    assert post_receipt(client, form, signed_url=public).status_code == 204
    internal = "http://hook-abc-uc.a.run.app/twilio/status"
    assert post_receipt(client, form, signed_url=internal).status_code == 403


def test_the_requests_host_never_decides_the_signed_url(make_client: AppFactory) -> None:
    """A receipt Twilio signed for another deployment of the account, sent with that deployment's Host."""
    client = make_client(PUBLIC_URL="https://hook-abc-uc.a.run.app")
    form = message_receipt("undelivered", ErrorCode="30007")
    other = "https://other-def-uc.a.run.app/twilio/status"
    headers = {"Host": "other-def-uc.a.run.app", "X-Forwarded-Proto": "https"}
    assert post_receipt(client, form, signed_url=other, **headers).status_code == 403


def test_without_public_url_receipts_are_off_and_refused(
    make_client: AppFactory, sandbox: SandboxState, capfd: pytest.CaptureFixture[str]
) -> None:
    capfd.readouterr()
    client = make_client(PUBLIC_URL=None)
    assert post_hook(client, okta_request()).status_code == 200
    assert "StatusCallback" not in sandbox.requests[-1]["form"]  # no receipt could be checked: none asked for
    headers = {"Host": "localhost", "X-Forwarded-Proto": "http"}
    assert post_receipt(client, message_receipt(), **headers).status_code == 403
    output = capfd.readouterr().out
    startup = [line for line in log_lines(output) if "Delivery receipts are off" in line["message"]]
    assert startup and startup[0]["severity"] == "WARNING" and "PUBLIC_URL is not set" in startup[0]["message"]
    assert only_receipt_line(output)["receipt_problem"] == "receipts are off (PUBLIC_URL is not set)"


def test_public_url_decides_the_signed_url_when_set(make_client: AppFactory) -> None:
    client = make_client(PUBLIC_URL="https://okta-hook.example.com/")
    form = message_receipt()
    assert post_receipt(client, form, signed_url="https://okta-hook.example.com/twilio/status").status_code == 204
    assert post_receipt(client, form).status_code == 403  # what the request itself says no longer counts


def test_a_public_url_with_a_path_keeps_it_in_callbacks_and_signatures(
    make_client: AppFactory, sandbox: SandboxState
) -> None:
    public = "https://us-central1-acme.cloudfunctions.net/okta-telephony-hook"
    client = make_client(PUBLIC_URL=public + "/")
    assert post_hook(client, okta_request()).status_code == 200
    assert sandbox.requests[-1]["form"]["StatusCallback"] == public + "/twilio/status"
    assert post_receipt(client, message_receipt(), signed_url=public + "/twilio/status").status_code == 204


def test_a_receipt_line_carries_the_requests_trace(make_client: AppFactory, capfd: pytest.CaptureFixture[str]) -> None:
    client = make_client(GOOGLE_CLOUD_PROJECT="acme-prod")
    capfd.readouterr()
    trace = "0af7651916cd43dd8448eb211c80319c"
    post_receipt(client, message_receipt(), **{"X-Cloud-Trace-Context": f"{trace}/1;o=1"})
    line = only_receipt_line(capfd.readouterr().out)
    assert line["logging.googleapis.com/trace"] == f"projects/acme-prod/traces/{trace}"


def test_a_public_url_that_is_not_a_url_stops_the_start_naming_the_variable() -> None:
    with pytest.raises(SettingsError, match="PUBLIC_URL") as refused:
        load_settings({"PUBLIC_URL": "okta-hook.example.com"})
    assert "okta-hook.example.com" not in str(refused.value)


def test_a_body_over_64_kb_with_a_signature_is_refused_413(client: FlaskClient) -> None:
    form = {**message_receipt(), "Pad": "x" * 70_000}
    assert post_receipt(client, form).status_code == 413


def test_get_is_refused_405(client: FlaskClient) -> None:
    response = client.get("/twilio/status")
    assert (response.status_code, response.headers["Allow"]) == (405, "POST")


def test_a_bug_while_reading_a_receipt_is_logged_without_the_receipt(
    client: FlaskClient, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    def explode(form: dict[str, str]) -> Any:
        raise RuntimeError(f"bug while reading a receipt for {form['To']}")

    monkeypatch.setattr("telephony.receipts.parse_receipt", explode)
    capfd.readouterr()
    response = post_receipt(client, message_receipt())
    output = capfd.readouterr().out
    assert response.status_code == 500
    assert "RuntimeError" in output and PHONE not in output and PHONE_MASKED in output
    assert only_receipt_line(output)["outcome"] == "internal_error"


# --------------------------------------------------------------------------- URL reconstruction


@pytest.mark.parametrize(
    ("headers", "configured", "expected"),
    [
        ({"Host": "hook-abc-uc.a.run.app", "X-Forwarded-Proto": "https"}, "https://hook-abc-uc.a.run.app", None),
        ({"Host": "elsewhere.example.com", "X-Forwarded-Proto": "https"}, "https://hook-abc-uc.a.run.app", None),
        ({"Host": "internal:8080"}, "https://okta-hook.example.com/", "https://okta-hook.example.com"),
        ({"Host": "internal:8080"}, "https://r-p.cloudfunctions.net/hook/", "https://r-p.cloudfunctions.net/hook"),
    ],
)
def test_the_signed_url_is_public_url_whatever_the_request_says(
    headers: dict[str, str], configured: str, expected: str | None
) -> None:
    app = flask.Flask(__name__)
    with app.test_request_context("/twilio/status?x=1", base_url="http://internal:8080", headers=headers):
        assert called_url(flask.request, configured) == (expected or configured) + "/twilio/status?x=1"


# ------------------------------------------------------------------------------- every status


@pytest.mark.parametrize("status", sorted(MESSAGE_STATUSES))
def test_every_message_status_is_logged_with_its_severity(
    status: str, client: FlaskClient, capfd: pytest.CaptureFixture[str]
) -> None:
    capfd.readouterr()
    assert post_receipt(client, message_receipt(status)).status_code == 204
    line = only_receipt_line(capfd.readouterr().out)
    warning = status in {"undelivered", "failed"}
    assert (line["delivery_status"], line["severity"]) == (status, "WARNING" if warning else "INFO")
    assert line["outcome"] == ("receipt_not_delivered" if warning else "receipt")


@pytest.mark.parametrize("status", sorted(CALL_STATUSES))
def test_every_call_status_is_logged_with_its_severity(
    status: str, client: FlaskClient, capfd: pytest.CaptureFixture[str]
) -> None:
    capfd.readouterr()
    assert post_receipt(client, call_receipt(status, CallDuration="12")).status_code == 204
    line = only_receipt_line(capfd.readouterr().out)
    warning = status in {"busy", "no-answer", "failed"}
    assert (line["delivery_status"], line["severity"]) == (status, "WARNING" if warning else "INFO")
    assert (line["channel"], line["call_duration_s"]) == ("voice", 12)


def test_outcomes_of_receipts_have_their_severities() -> None:
    assert outcome_for("undelivered") is Outcome.RECEIPT_NOT_DELIVERED
    assert Outcome.RECEIPT_NOT_DELIVERED.severity == logging.WARNING
    assert outcome_for("delivered") is Outcome.RECEIPT
    assert Outcome.RECEIPT.severity == logging.INFO
    assert Outcome.RECEIPT_FORBIDDEN.severity == logging.WARNING


def test_an_undelivered_receipt_carries_the_error_meaning_and_fix(
    client: FlaskClient, capfd: pytest.CaptureFixture[str]
) -> None:
    capfd.readouterr()
    assert post_receipt(client, message_receipt("undelivered", ErrorCode="30007")).status_code == 204
    line = only_receipt_line(capfd.readouterr().out)
    assert (line["severity"], line["error_code"]) == ("WARNING", 30007)
    assert "carrier" in line["error_meaning"].lower() and "10DLC" in line["error_fix"]
    assert "30007" in line["message"]


def test_an_unknown_error_code_points_to_twilios_page() -> None:
    fields = parse_receipt(message_receipt("failed", ErrorCode="39999")).log_fields()
    assert fields["error_fix"] == "See https://www.twilio.com/docs/errors/39999"
    # Twilio took the message: the receipt reports how its delivery failed, not a refusal
    assert fields["error_meaning"] == "Twilio reports error 39999 for its delivery."


def test_smssid_and_smsstatus_alone_are_understood() -> None:
    form = {"SmsSid": "SM" + "e" * 32, "SmsStatus": "sent", "To": PHONE}
    receipt = parse_receipt(form)
    assert (receipt.sid, receipt.status, receipt.channel) == ("SM" + "e" * 32, "sent", "sms")


# ---------------------------------------------------------------------------- malformed receipts


@pytest.mark.parametrize(
    ("form", "problem"),
    [
        ({k: v for k, v in message_receipt().items() if k not in {"MessageSid", "SmsSid"}}, "no MessageSid or CallSid"),
        (message_receipt("Teleported!"), "the MessageStatus is not a status"),
        (message_receipt("", SmsStatus=""), "no MessageStatus"),
        (call_receipt("dialing " * 5), "the CallStatus is not a status"),
        (call_receipt(""), "no CallStatus"),
        (message_receipt(MessageSid="SM123", SmsSid="SM123"), "the SID is not a Twilio SID"),
        (call_receipt(CallDuration="-3"), "CallDuration is not a whole number"),
        (message_receipt("undelivered", ErrorCode="x30007"), "ErrorCode is not a whole number"),
        # str.isdigit() takes these, and int() refuses the first and reads the second as 30007
        (message_receipt("undelivered", ErrorCode="3000\u00b2"), "ErrorCode is not a whole number"),
        (message_receipt("undelivered", ErrorCode="\uff13\uff10\uff10\uff10\uff17"), "ErrorCode is not a whole number"),
        (call_receipt(CallDuration="\u0661\u0662"), "CallDuration is not a whole number"),
    ],
)
def test_a_malformed_signed_receipt_gets_400_and_a_line(
    form: dict[str, str], problem: str, client: FlaskClient, capfd: pytest.CaptureFixture[str]
) -> None:
    capfd.readouterr()
    assert post_receipt(client, form).status_code == 400
    line = only_receipt_line(capfd.readouterr().out)
    assert (line["outcome"], line["receipt_problem"], line["severity"]) == ("receipt_invalid", problem, "WARNING")


def test_a_status_twilio_adds_later_is_recorded_as_named(
    client: FlaskClient, capfd: pytest.CaptureFixture[str]
) -> None:
    """A signed receipt is Twilio's word: a status newer than our table (Twilio has added several) is
    recorded, not refused as malformed (Twilio's console would report the 400 as a failed webhook)."""
    for form, status in ((message_receipt("teleported"), "teleported"), (call_receipt("dialing"), "dialing")):
        capfd.readouterr()
        assert post_receipt(client, form).status_code == 204
        line = only_receipt_line(capfd.readouterr().out)
        assert (line["outcome"], line["delivery_status"], line["severity"]) == ("receipt", status, "INFO")


def test_a_field_given_twice_is_signed_with_every_value_as_twilio_signs_it(client: FlaskClient) -> None:
    """Twilio's validator signs each value of a repeated parameter; a check over one of them refuses
    what Twilio signed, and takes what it did not."""
    pairs = [*message_receipt().items(), ("Extra", "a"), ("Extra", "b")]
    assert post_receipt(client, pairs).status_code == 204
    last_only = twilio_signature(RECEIPT_URL, dict(pairs))
    assert post_receipt(client, pairs, signature=last_only).status_code == 403


@pytest.mark.parametrize("field", ["MessageStatus", "MessageSid", "ErrorCode", "To"])
def test_a_field_the_receipt_is_read_from_must_say_one_thing(
    field: str, client: FlaskClient, capfd: pytest.CaptureFixture[str]
) -> None:
    """Two values of one read field, both signed: which one is the receipt's? Refused, naming it."""
    form = message_receipt("undelivered", ErrorCode="30007")
    other = {"MessageStatus": "delivered", "MessageSid": "SM" + "f" * 32, "ErrorCode": "30003", "To": "+14155550100"}
    pairs = [(field, other[field]), *form.items()]
    capfd.readouterr()
    assert post_receipt(client, pairs).status_code == 400
    output = capfd.readouterr().out
    line = only_receipt_line(output)
    assert (line["outcome"], line["receipt_problem"]) == ("receipt_invalid", f"{field} is given more than once")
    for number in (PHONE, other["To"]):  # each number given, masked or not written at all
        assert number not in output and number.removeprefix("+") not in output
    # the same value twice says one thing
    same = [(field, form[field]), *form.items()]
    assert post_receipt(client, same).status_code == 204


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b'{"MessageSid": "SM1"}', "application/json"),
        (b"MessageSid=%FF%FE", "application/x-www-form-urlencoded"),
        (b"no equals sign&&==", "application/x-www-form-urlencoded"),
    ],
)
def test_a_body_that_is_not_a_form_gets_400(
    body: bytes, content_type: str, client: FlaskClient, capfd: pytest.CaptureFixture[str]
) -> None:
    capfd.readouterr()
    headers = {"X-Twilio-Signature": "c2lnbmF0dXJl"}
    response = client.post("/twilio/status", data=body, content_type=content_type, headers=headers)
    assert response.status_code == 400
    assert only_receipt_line(capfd.readouterr().out)["receipt_problem"] == "the body is not form-encoded"


# ------------------------------------------------------------------ the callbacks each create asks


def test_an_sms_asks_for_receipts_at_public_url_whatever_the_host(client: FlaskClient, sandbox: SandboxState) -> None:
    headers = {"Host": "hook-abc-uc.a.run.app", "X-Forwarded-Proto": "https"}
    assert post_hook(client, okta_request(), **headers).status_code == 200
    assert sandbox.requests[-1]["form"]["StatusCallback"] == "http://localhost/twilio/status"


def test_a_call_asks_for_receipts_at_public_url(make_client: AppFactory, sandbox: SandboxState) -> None:
    client = make_client(PUBLIC_URL="https://okta-hook.example.com")
    assert post_hook(client, okta_request(deliveryChannel="voice")).status_code == 200
    assert sandbox.requests[-1]["form"]["StatusCallback"] == "https://okta-hook.example.com/twilio/status"


def test_verify_asks_for_no_receipts(make_client: AppFactory, sandbox: SandboxState) -> None:
    client = make_client(TWILIO_VERIFY_SERVICE_SID="VA" + "1" * 32)
    assert post_hook(client, okta_request()).status_code == 200
    assert "StatusCallback" not in sandbox.requests[-1]["form"]


def test_the_log_says_where_receipts_go(make_client: AppFactory, capfd: pytest.CaptureFixture[str]) -> None:
    capfd.readouterr()
    make_client(PUBLIC_URL="https://okta-hook.example.com/")
    messages = [line["message"] for line in log_lines(capfd.readouterr().out)]
    assert (
        "Delivery receipts on: Twilio posts them to https://okta-hook.example.com/twilio/status (PUBLIC_URL)."
        in messages
    )


def test_without_the_auth_token_no_receipt_is_asked_for_and_start_up_says_why(
    make_client: AppFactory, sandbox: SandboxState, capfd: pytest.CaptureFixture[str]
) -> None:
    capfd.readouterr()
    client = make_client(TWILIO_AUTH_TOKEN=None, TWILIO_API_KEY="SK" + "7" * 32, TWILIO_API_SECRET="api-secret")
    sandbox.api_key, sandbox.api_secret = "SK" + "7" * 32, "api-secret"
    assert post_hook(client, okta_request()).status_code == 200
    assert "StatusCallback" not in sandbox.requests[-1]["form"]
    startup = [line for line in log_lines(capfd.readouterr().out) if "Delivery receipts are off" in line["message"]]
    assert startup and startup[0]["severity"] == "WARNING" and "TWILIO_AUTH_TOKEN" in startup[0]["message"]
    form = message_receipt()
    assert post_receipt(client, form).status_code == 403  # fail closed: nothing to check a signature with


# ------------------------------------- integration: the real twilio library, the sandbox, a server


@pytest.fixture
def served(make_client: AppFactory) -> Iterator[str]:
    """The function served over real HTTP in this process, so the sandbox can call it back."""
    port = free_port()
    # the sandbox's magic numbers are personal numbers: let through, as make run does
    client = make_client(PUBLIC_URL=f"http://127.0.0.1:{port}", BLOCKED_NUMBER_TYPES=SANDBOX_BLOCKED_NUMBER_TYPES)
    app = client.application
    server = make_server("127.0.0.1", port, app, threaded=True)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def wait_for_receipts(sandbox: SandboxState, sid: str, count: int, seconds: float = 10) -> list[dict[str, Any]]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        mine = [item for item in list(sandbox.receipts) if sid in item["form"].values()]
        if len(mine) >= count:
            return mine
        time.sleep(0.02)
    raise AssertionError(f"{len(mine)} receipts for {sid}, wanted {count}")


def post_json(url: str, body: Any) -> Any:
    import urllib.request

    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Authorization": HOOK_SECRET, "Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def test_the_sandbox_calls_back_signed_and_the_function_accepts(
    served: str, sandbox: SandboxState, capfd: pytest.CaptureFixture[str]
) -> None:
    capfd.readouterr()
    sid = post_json(served + "/", okta_request())["commands"][0]["value"][0]["transactionId"]
    receipts = wait_for_receipts(sandbox, sid, 2)
    assert [(item["form"]["MessageStatus"], item["answered"]) for item in receipts] == [
        ("sent", 204),
        ("delivered", 204),
    ]
    assert receipts[0]["url"] == served + "/twilio/status"
    time.sleep(0.1)
    lines = [line for line in log_lines(capfd.readouterr().out) if line.get("twilio_sid") == sid]
    assert [line.get("delivery_status", line["outcome"]) for line in lines] == ["delivered", "sent", "delivered"]


@pytest.mark.parametrize(
    ("phone", "channel", "final", "error_code"),
    [
        ("+15005557007", "sms", "undelivered", 30007),
        ("+15005553003", "sms", "undelivered", 30003),
        ("+15005550408", "voice", "no-answer", None),
        (PHONE, "voice", "completed", None),
    ],
)
def test_magic_numbers_end_as_documented(
    phone: str,
    channel: str,
    final: str,
    error_code: int | None,
    served: str,
    sandbox: SandboxState,
    capfd: pytest.CaptureFixture[str],
) -> None:
    capfd.readouterr()
    answer = post_json(served + "/", okta_request(phoneNumber=phone, deliveryChannel=channel))
    sid = answer["commands"][0]["value"][0]["transactionId"]
    receipts = wait_for_receipts(sandbox, sid, 2 if channel == "sms" else 1)
    assert all(item["answered"] == 204 for item in receipts)
    time.sleep(0.1)
    last = [line for line in receipt_lines(capfd.readouterr().out) if line["twilio_sid"] == sid][-1]
    assert (last["delivery_status"], last.get("error_code")) == (final, error_code)
    assert last["severity"] == ("INFO" if final == "completed" else "WARNING")
    if channel == "voice":
        assert last["call_duration_s"] == (0 if final == "no-answer" else 19)


def test_a_sandbox_without_receipts_posts_none(served: str, sandbox: SandboxState) -> None:
    sandbox.receipts_on = False
    sid = post_json(served + "/", okta_request())["commands"][0]["value"][0]["transactionId"]
    assert sandbox.requests[-1]["form"]["StatusCallback"] == served + "/twilio/status"  # asked for, not posted
    time.sleep(0.5)  # ten times the configured receipt delay
    assert [item for item in sandbox.receipts if sid in item["form"].values()] == []
