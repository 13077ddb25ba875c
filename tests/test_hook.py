"""The function as functions-framework builds it, with the real twilio library talking to the sandbox."""

from __future__ import annotations

import gc
import json
import sys
import time
from typing import Any

import pytest
from flask.testing import FlaskClient

from telephony.answers import Refused
from telephony.auth import HeaderSecret
from tests.helpers import (
    FROM_NUMBER,
    HOOK_SECRET,
    OTP,
    PHONE,
    PHONE_MASKED,
    ROOT,
    AppFactory,
    first_reason,
    okta_request,
    post_hook,
)
from tests.standins import stand_in
from tools.sandbox.twilio_sandbox import SandboxState


def okta_error(response: Any) -> dict[str, Any]:
    body = response.get_json()
    assert set(body) == {"error"}, body
    assert body["error"]["errorSummary"]
    return dict(body["error"])


def log_lines(output: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def hook_log(output: str) -> dict[str, Any]:
    """The one line the hook writes per request."""
    lines = [line for line in log_lines(output) if line.get("logger") == "telephony_hook" and "outcome" in line]
    assert len(lines) == 1, lines
    return lines[0]


# ---------------------------------------------------------------------------------------- success


def test_sms_is_sent_and_okta_gets_successful_with_the_twilio_sid(client: FlaskClient, sandbox: SandboxState) -> None:
    response = post_hook(client, okta_request())
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    command = response.get_json()["commands"][0]
    assert command["type"] == "com.okta.telephony.action"
    result = command["value"][0]
    assert result["status"] == "SUCCESSFUL"
    assert result["provider"] == "TWILIO"
    assert result["transactionId"] == sandbox.requests[-1]["response"]["sid"]
    assert result["transactionId"].startswith("SM") and len(result["transactionId"]) == 34
    assert OTP not in result["transactionMetadata"]


def test_sms_carries_oktas_localised_text_from_our_number(client: FlaskClient, sandbox: SandboxState) -> None:
    post_hook(client, okta_request(msgTemplate=f"Votre code est {OTP}"))
    form = sandbox.requests[-1]["form"]
    assert form["To"] == PHONE
    assert form["From"] == FROM_NUMBER
    assert form["Body"] == f"Votre code est {OTP}"
    assert "MessagingServiceSid" not in form


def test_sms_validity_period_ends_when_the_code_expires(client: FlaskClient, sandbox: SandboxState) -> None:
    expires = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(time.time() + 300))
    post_hook(client, okta_request(otpExpires=expires))
    assert 295 <= int(sandbox.requests[-1]["form"]["ValidityPeriod"]) <= 301


def test_messaging_service_replaces_the_from_number(make_client: AppFactory, sandbox: SandboxState) -> None:
    service = "MG" + "1" * 32
    response = post_hook(make_client(TWILIO_MESSAGING_SERVICE_SID=service), okta_request())
    form = sandbox.requests[-1]["form"]
    assert form["MessagingServiceSid"] == service
    assert "From" not in form
    assert response.get_json()["commands"][0]["value"][0]["status"] == "SUCCESSFUL"


def test_voice_call_reads_the_digits_one_by_one_twice(client: FlaskClient, sandbox: SandboxState) -> None:
    response = post_hook(client, okta_request(deliveryChannel="CALL"))
    form = sandbox.requests[-1]["form"]
    assert response.get_json()["commands"][0]["value"][0]["transactionId"].startswith("CA")
    assert form["To"] == PHONE and form["From"] == FROM_NUMBER
    assert form["Twiml"].count("4, 8, 2, 9, 1, 3") == 2
    assert "<Pause" in form["Twiml"] and OTP not in form["Twiml"]
    assert "Body" not in form


def test_national_numbers_are_read_in_the_default_country(make_client: AppFactory, sandbox: SandboxState) -> None:
    post_hook(make_client(DEFAULT_COUNTRY="US"), okta_request(phoneNumber="(415) 555-0123"))
    assert sandbox.requests[-1]["form"]["To"] == PHONE


def test_provider_name_is_configurable(make_client: AppFactory) -> None:
    response = post_hook(make_client(OKTA_PROVIDER_NAME="TWILIO-EU"), okta_request())
    assert response.get_json()["commands"][0]["value"][0]["provider"] == "TWILIO-EU"


def test_sms_template_overrides_oktas_text(make_client: AppFactory, sandbox: SandboxState) -> None:
    post_hook(make_client(SMS_TEMPLATE="Acme code: {code}. Do not share it."), okta_request())
    assert sandbox.requests[-1]["form"]["Body"] == f"Acme code: {OTP}. Do not share it."


def test_msg_template_without_the_code_falls_back_to_our_text(client: FlaskClient, sandbox: SandboxState) -> None:
    post_hook(client, okta_request(msgTemplate="Your code is on its way"))
    assert sandbox.requests[-1]["form"]["Body"] == f"Your verification code is {OTP}"


# --------------------------------------------------------------------------------- authentication


def test_missing_secret_is_401_and_twilio_is_not_called(client: FlaskClient, sandbox: SandboxState) -> None:
    response = post_hook(client, okta_request(), secret=None)
    assert response.status_code == 401
    assert first_reason(okta_error(response)) == "UNAUTHORIZED"
    assert sandbox.requests == []


def test_wrong_secret_is_401_and_twilio_is_not_called(client: FlaskClient, sandbox: SandboxState) -> None:
    response = post_hook(client, okta_request(), secret=HOOK_SECRET + "x")
    assert response.status_code == 401
    assert sandbox.requests == []


def test_the_log_says_why_authentication_failed(client: FlaskClient, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    post_hook(client, okta_request(), secret=None)
    assert hook_log(capsys.readouterr().out)["auth_problem"] == "The Authorization header is missing."


def test_secret_in_a_custom_header(make_client: AppFactory, sandbox: SandboxState) -> None:
    client = make_client(OKTA_HOOK_AUTH_HEADER="X-Okta-Hook-Secret")
    assert post_hook(client, okta_request()).status_code == 401
    response = post_hook(client, okta_request(), secret=None, **{"X-Okta-Hook-Secret": HOOK_SECRET})
    assert response.status_code == 200


def test_basic_auth_secret_is_compared_verbatim(make_client: AppFactory) -> None:
    client = make_client(OKTA_HOOK_AUTH_SECRET="Basic b2t0YTpwYXNz")
    assert post_hook(client, okta_request(), secret="Basic b2t0YTpwYXNz").status_code == 200
    assert post_hook(client, okta_request(), secret="basic b2t0YTpwYXNz").status_code == 401


def test_refusing_a_guess_takes_as_long_however_much_of_it_is_right() -> None:
    """Constant-time comparison, seen from outside: with a long secret, a guess wrong in its first
    character and one wrong only in its last are refused in the same time (a plain == stops at the
    first difference, and would answer the first hundreds of times sooner)."""
    secret = "s" * (1 << 20)
    scheme = HeaderSecret("X-Secret", secret)
    guesses = {"first": "x" + secret[1:], "last": secret[:-1] + "x"}
    times: dict[str, list[float]] = {"first": [], "last": []}
    for _ in range(25):
        for which, guess in guesses.items():
            started = time.perf_counter()
            with pytest.raises(Refused):
                scheme.verify({"X-Secret": guess})
            times[which].append(time.perf_counter() - started)
    # The fastest of each: a busy machine only ever adds time, so the minimum is what the comparison costs.
    ratio = min(times["first"]) / min(times["last"])
    assert 0.5 < ratio < 2, ratio


def test_the_start_up_says_what_okta_must_send_never_the_secret(
    make_client: AppFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    """The on-call engineer reads which scheme is on (a mismatch with Okta's set-up is every call's 401)."""
    capsys.readouterr()
    make_client(OKTA_HOOK_AUTH_HEADER="X-Okta-Secret")
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    (line,) = [line for line in lines if "Okta's calls to the hook" in line["message"]]
    assert line["severity"] == "INFO"
    assert line["message"] == "Okta's calls to the hook must carry the secret in the X-Okta-Secret header."
    assert HOOK_SECRET not in json.dumps(lines)


def test_no_authentication_configured_serves_nothing(
    make_client: AppFactory, sandbox: SandboxState, capsys: pytest.CaptureFixture[str]
) -> None:
    client = make_client(OKTA_HOOK_AUTH_SECRET=None)
    startup = capsys.readouterr().out
    assert "every call is refused" in startup and '"severity": "CRITICAL"' in startup
    for secret in (None, "", HOOK_SECRET):
        response = post_hook(client, okta_request(), secret=secret)
        assert response.status_code == 401
    assert sandbox.requests == []


def test_an_empty_secret_counts_as_none(make_client: AppFactory, sandbox: SandboxState) -> None:
    response = post_hook(make_client(OKTA_HOOK_AUTH_SECRET="  "), okta_request(), secret="")
    assert response.status_code == 401
    assert sandbox.requests == []


# ----------------------------------------------------------------------------------- bad requests


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
def test_only_post_is_served(client: FlaskClient, method: str) -> None:
    response = client.open("/", method=method, headers={"Authorization": HOOK_SECRET})
    assert response.status_code == 405
    assert response.headers["Allow"] == "POST"
    okta_error(response)


@pytest.mark.parametrize("body", [b"", b"{", b"not json", b"\xff\xfe", b"null", b"[]", b'"text"'])
def test_bodies_that_are_not_a_json_object_are_400(client: FlaskClient, sandbox: SandboxState, body: bytes) -> None:
    response = post_hook(client, body)
    assert response.status_code == 400
    assert okta_error(response)["errorCauses"][0]["location"] == "body"
    assert sandbox.requests == []


def test_each_bad_field_is_named_in_a_400(client: FlaskClient, sandbox: SandboxState) -> None:
    response = post_hook(client, okta_request(phoneNumber="call me", otpCode="12ab", deliveryChannel="fax"))
    assert response.status_code == 400
    error = okta_error(response)
    locations = {cause["location"] for cause in error["errorCauses"]}
    assert locations == {
        "data.messageProfile.phoneNumber",
        "data.messageProfile.otpCode",
        "data.messageProfile.deliveryChannel",
    }
    assert "data.messageProfile.otpCode" in error["errorSummary"]
    assert sandbox.requests == []


def test_a_400_never_echoes_the_otp(client: FlaskClient) -> None:
    response = post_hook(client, okta_request(otpCode=OTP + "x", deliveryChannel="fax"))
    assert response.status_code == 400
    assert OTP not in response.get_data(as_text=True)


def test_json_is_read_whatever_the_content_type(client: FlaskClient) -> None:
    response = client.post(
        "/", data=json.dumps(okta_request()), headers={"Authorization": HOOK_SECRET}, content_type="text/plain"
    )
    assert response.status_code == 200


def test_unknown_request_type_is_delivered_and_logged(client: FlaskClient, capsys: pytest.CaptureFixture[str]) -> None:
    body = okta_request()
    body["requestType"] = "com.okta.user.telephony.brand-new"
    assert post_hook(client, body).status_code == 200
    line = hook_log(capsys.readouterr().out)
    assert line["request_type"] == "com.okta.user.telephony.brand-new"
    assert line["request_type_known"] is False


# ------------------------------------------------------------------------------ refusals, 200+error


def test_an_expired_code_is_not_sent(client: FlaskClient, sandbox: SandboxState) -> None:
    response = post_hook(client, okta_request(otpExpires="2022-01-28T21:48:34.321Z"))
    assert response.status_code == 200
    assert first_reason(okta_error(response)) == "OTP_EXPIRED"
    assert sandbox.requests == []


@pytest.mark.parametrize(
    ("to", "channel", "code"),
    [
        ("+15005550001", "SMS", 21211),
        ("+15005550002", "SMS", 21612),
        ("+15005550003", "SMS", 21408),
        ("+15005550004", "SMS", 21610),
        ("+15005550009", "SMS", 21614),
        ("+15005550001", "CALL", 21217),
        ("+15005550003", "CALL", 21215),
        ("+15005550004", "CALL", 21216),
    ],
)
def test_twilio_refusals_become_200_with_the_code_and_docs_link(
    make_client: AppFactory, to: str, channel: str, code: int
) -> None:
    # Twilio's magic numbers are PERSONAL_NUMBER in libphonenumber: let the guard pass them.
    client = make_client(BLOCKED_NUMBER_TYPES="PREMIUM_RATE")
    response = post_hook(client, okta_request(phoneNumber=to, deliveryChannel=channel))
    assert response.status_code == 200
    error = okta_error(response)
    assert first_reason(error) == f"TWILIO_{code}"
    assert error["errorCauses"][0]["location"] == f"https://www.twilio.com/docs/errors/{code}"
    assert to not in json.dumps(error)


@pytest.mark.parametrize(
    ("value", "left_out"),
    [
        (",", "PREMIUM_RATE, SHARED_COST, UAN, VOICEMAIL, PAGER, PERSONAL_NUMBER"),  # an empty list, not unset
        ("PREMIUM_RATE,UAN,VOICEMAIL,PAGER,PERSONAL_NUMBER", "SHARED_COST"),
        (None, None),
    ],
)
def test_a_blocked_number_types_list_that_drops_a_default_is_a_warning(
    value: str | None, left_out: str | None, make_client: AppFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    """',' passed as an empty list and sent codes to premium-rate numbers without a word."""
    capsys.readouterr()
    make_client(BLOCKED_NUMBER_TYPES=value)
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    warned = [line for line in lines if line["message"].startswith("BLOCKED_NUMBER_TYPES leaves out")]
    if left_out is None:
        assert warned == []
    else:
        (line,) = warned
        assert line["severity"] == "WARNING" and line["message"].startswith(
            f"BLOCKED_NUMBER_TYPES leaves out {left_out}:"
        )


def test_wrong_twilio_credentials_are_explained_to_the_admin(make_client: AppFactory) -> None:
    response = post_hook(make_client(TWILIO_AUTH_TOKEN="not-the-token"), okta_request())
    error = okta_error(response)
    assert response.status_code == 200
    assert first_reason(error) == "TWILIO_20003"
    assert "credentials" in error["errorCauses"][0]["errorSummary"]


def test_twilio_unreachable_answers_200_with_an_error(make_client: AppFactory, closed_port: str) -> None:
    response = post_hook(make_client(TWILIO_API_BASE_URL=closed_port), okta_request())
    assert response.status_code == 200
    assert first_reason(okta_error(response)) == "TWILIO_UNREACHABLE"


def test_twilio_hanging_answers_the_timeout_at_the_configured_deadline(
    make_client: AppFactory, hanging_twilio: str
) -> None:
    timeout = 0.5
    client = make_client(TWILIO_API_BASE_URL=hanging_twilio, TWILIO_TIMEOUT_SECONDS=str(timeout))
    started = time.monotonic()
    response = post_hook(client, okta_request())
    elapsed = time.monotonic() - started
    assert response.status_code == 200
    assert first_reason(okta_error(response)) == "TWILIO_TIMEOUT"
    assert timeout <= elapsed < 2 * timeout


def test_a_twilio_trickling_past_the_deadline_is_logged_as_the_deadline(
    make_client: AppFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    """No read ever times out (a byte comes every 0.1 s): the deadline shuts the socket, and what
    urllib3 then reports (a broken connection) is not what the admin should read."""
    timeout = 0.5
    body = json.dumps({"sid": "SM" + "1" * 32, "status": "queued"}).encode()
    answer = b"HTTP/1.1 201 Created\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    with stand_in(answer, chunk=1, pause=0.1) as twilio:
        client = make_client(TWILIO_API_BASE_URL=twilio.base_url, TWILIO_TIMEOUT_SECONDS=str(timeout))
        capsys.readouterr()
        response = post_hook(client, okta_request())
    assert first_reason(okta_error(response)) == "TWILIO_TIMEOUT"
    line = hook_log(capsys.readouterr().out)
    assert (line["twilio_error"], line["error_type"]) == ("TWILIO_TIMEOUT", "DeadlineExceeded")


@pytest.mark.parametrize(
    "fields",
    [
        {"eventId": PHONE[2:]},  # '4155550123': the national digits
        {"requestType": "x +1 (415) 555-0123"},
        {"locale": "415-555-0123"},
        {"eventId": f"0000{OTP}"},  # padded: the whole-value scrub leaves it
        {"eventId": "a" * 57 + PHONE[2:]},  # the clip would have cut the number short of its tail
        {"requestType": f"{OTP[:2]}-{OTP[2:4]}-{OTP[4:]}"},
        {"locale": f"x{OTP}"},
    ],
)
def test_a_callers_field_holding_the_code_or_number_is_not_written(
    client: FlaskClient, capsys: pytest.CaptureFixture[str], fields: dict[str, str]
) -> None:
    """Only exact spellings are scrubbed from a line: a free-text field holding the number's digits or
    the code in any other is written redacted, whole."""
    body = okta_request()
    if "eventId" in fields:
        body["eventId"] = fields["eventId"]
    elif "requestType" in fields:
        body["requestType"] = fields["requestType"]
    else:
        body["data"]["messageProfile"]["locale"] = fields["locale"]
    capsys.readouterr()
    post_hook(client, body)
    output = capsys.readouterr().out
    line = hook_log(output)
    assert "[redacted]" in (line["event_id"], line["request_type"], line["locale"])
    assert OTP not in output and PHONE[2:9] not in output and PHONE[-7:] not in output and "555-0123" not in output


def test_missing_twilio_configuration_is_explained(make_client: AppFactory, sandbox: SandboxState) -> None:
    response = post_hook(make_client(TWILIO_ACCOUNT_SID=None, TWILIO_AUTH_TOKEN=None), okta_request())
    assert response.status_code == 200
    assert first_reason(okta_error(response)) == "HOOK_NOT_CONFIGURED"
    assert sandbox.requests == []


def test_voice_needs_a_from_number_even_with_a_messaging_service(make_client: AppFactory) -> None:
    client = make_client(TWILIO_FROM_NUMBER=None, TWILIO_MESSAGING_SERVICE_SID="MG" + "2" * 32)
    assert post_hook(client, okta_request()).status_code == 200
    error = okta_error(post_hook(client, okta_request(deliveryChannel="voice")))
    assert "TWILIO_FROM_NUMBER" in error["errorCauses"][0]["errorSummary"]


# ------------------------------------------------------------------------------------------- logs


def test_one_json_log_line_per_hook_with_what_an_admin_needs(
    client: FlaskClient, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    response = post_hook(client, okta_request(), **{"X-Cloud-Trace-Context": "105445aa7843bc8bf206b12000100000/1;o=1"})
    line = hook_log(capsys.readouterr().out)
    assert line["severity"] == "INFO"
    assert line["outcome"] == "delivered"
    assert line["event_id"] == "uS5871kJThSsU8qlA1LTcg"
    assert line["request_type"] == "com.okta.user.telephony.pre-enrollment"
    assert line["channel"] == "sms"
    assert line["phone"] == PHONE_MASKED
    assert line["twilio_sid"] == response.get_json()["commands"][0]["value"][0]["transactionId"]
    assert isinstance(line["duration_ms"], float)
    assert line["logging.googleapis.com/trace"] == "105445aa7843bc8bf206b12000100000"


def test_trace_is_qualified_with_the_project_when_known(
    make_client: AppFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    client = make_client(GOOGLE_CLOUD_PROJECT="acme-prod")
    capsys.readouterr()
    post_hook(client, okta_request(), **{"X-Cloud-Trace-Context": "abc123/42;o=1"})
    line = hook_log(capsys.readouterr().out)
    assert line["logging.googleapis.com/trace"] == "projects/acme-prod/traces/abc123"
    assert line["logging.googleapis.com/spanId"] == "42"


@pytest.mark.parametrize(
    "header",
    [
        {"X-Cloud-Trace-Context": f"{OTP}/1;o=1"},
        {"X-Cloud-Trace-Context": f"0{OTP}/1;o=1"},  # padded: a whole-word scrub leaves it
        {"traceparent": f"00-{OTP:0>32}-{OTP:0>16}-01"},
    ],
)
def test_a_trace_header_holding_the_code_is_not_written(
    header: dict[str, str], client: FlaskClient, capsys: pytest.CaptureFixture[str]
) -> None:
    """The caller picks the trace and span ids: one that holds the request's code anywhere is not written."""
    capsys.readouterr()
    post_hook(client, okta_request(), **header)
    output = capsys.readouterr().out
    assert hook_log(output)["logging.googleapis.com/trace"] == "[redacted]"
    assert OTP not in output  # nor in the span id: '1', or redacted where it held the code


def test_a_trace_header_holding_the_national_number_is_not_written(
    client: FlaskClient, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    national = PHONE.removeprefix("+1")
    post_hook(client, okta_request(), **{"X-Cloud-Trace-Context": f"{national}/1;o=1"})
    output = capsys.readouterr().out
    assert hook_log(output)["logging.googleapis.com/trace"] == "[redacted]"
    assert national not in output


def test_a_refused_requests_code_is_not_written_through_its_trace_header(
    client: FlaskClient, capsys: pytest.CaptureFixture[str]
) -> None:
    """A request refused for another field still carries Okta's code, which Okta sends itself next."""
    capsys.readouterr()
    response = post_hook(client, okta_request(deliveryChannel="FAX"), **{"X-Cloud-Trace-Context": f"{OTP}/1;o=1"})
    output = capsys.readouterr().out
    assert response.status_code == 400
    assert hook_log(output)["logging.googleapis.com/trace"] == "[redacted]"
    assert OTP not in output


@pytest.mark.parametrize(
    ("profile", "trace"),
    [
        ({"phoneNumber": "+1 (415) 555-0123"}, "14155550123"),
        ({"phoneNumber": "+1 (415) 555-0123"}, "4155550123"),
        ({"otpCode": f"{OTP[:2]}-{OTP[2:4]}-{OTP[4:]}"}, OTP),
    ],
)
def test_a_refused_requests_code_or_number_in_another_spelling_is_not_written(
    profile: dict[str, str], trace: str, client: FlaskClient, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    body = okta_request(deliveryChannel="FAX", **profile)
    response = post_hook(client, body, **{"X-Cloud-Trace-Context": f"{trace}/1;o=1"})
    output = capsys.readouterr().out
    assert response.status_code == 400
    assert hook_log(output)["logging.googleapis.com/trace"] == "[redacted]"
    assert trace not in output


def test_provider_failures_log_the_twilio_code_at_error(
    make_client: AppFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    client = make_client(BLOCKED_NUMBER_TYPES="PREMIUM_RATE")
    capsys.readouterr()
    post_hook(client, okta_request(phoneNumber="+15005550004"))
    line = hook_log(capsys.readouterr().out)
    assert (line["severity"], line["outcome"], line["twilio_error_code"]) == ("ERROR", "provider_error", 21610)


def test_voice_phrase_overrides_come_from_the_environment(make_client: AppFactory, sandbox: SandboxState) -> None:
    client = make_client(VOICE_PHRASES='{"es": "Su clave de Acme es {code}."}')
    post_hook(client, okta_request(deliveryChannel="voice", locale="es-ES"))
    twiml = sandbox.requests[-1]["form"]["Twiml"]
    assert 'language="es-ES"' in twiml
    assert "Su clave de Acme es 4, 8, 2, 9, 1, 3." in twiml


def test_voice_speaks_the_users_locale(client: FlaskClient, sandbox: SandboxState) -> None:
    post_hook(client, okta_request(deliveryChannel="voice", locale="fr", msgTemplate=None))
    twiml = sandbox.requests[-1]["form"]["Twiml"]
    assert 'language="fr-FR"' in twiml and "Votre code de vérification est 4, 8, 2, 9, 1, 3." in twiml


def test_w3c_traceparent_is_used_when_cloud_trace_header_is_absent(
    make_client: AppFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    client = make_client(GOOGLE_CLOUD_PROJECT="acme-prod")
    capsys.readouterr()
    post_hook(client, okta_request(), traceparent="00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
    line = hook_log(capsys.readouterr().out)
    assert line["logging.googleapis.com/trace"] == "projects/acme-prod/traces/4bf92f3577b34da6a3ce929d0e0e4736"
    assert line["logging.googleapis.com/spanId"] == "00f067aa0ba902b7"


def test_caller_supplied_text_is_clipped_in_the_log(client: FlaskClient, capsys: pytest.CaptureFixture[str]) -> None:
    body = okta_request(locale="x" * 5000)
    body["eventId"] = "e" * 5000
    capsys.readouterr()
    post_hook(client, body)
    line = hook_log(capsys.readouterr().out)
    assert len(line["event_id"]) == 64 and len(line["locale"]) == 35


def test_start_up_leaves_the_collector_on_and_never_scanning_what_it_built(make_client: AppFactory) -> None:
    """main.py pauses the collector while it loads (cold-start cost, docs/performance.md): it must turn
    it back on, and the objects built at start-up must be out of the collector's reach afterwards, so the
    forked worker's collections never touch (and copy) their memory."""
    gc.unfreeze()  # whatever an earlier start in this test process froze
    client = make_client()
    (main,) = [module for module in sys.modules.values() if getattr(module, "__file__", None) == str(ROOT / "main.py")]
    assert gc.isenabled()
    assert not [obj for obj in gc.get_objects() if obj is main.app or obj is main.settings]
    assert post_hook(client, okta_request()).status_code == 200


def test_voice_speaks_oktas_template_digit_by_digit_twice(client: FlaskClient, sandbox: SandboxState) -> None:
    post_hook(client, okta_request(deliveryChannel="voice", locale="fr", msgTemplate=f"Votre code Acme : {OTP}."))
    twiml = sandbox.requests[-1]["form"]["Twiml"]
    assert twiml.count('<Say language="fr-FR" voice="Polly.Lea">Votre code Acme : 4, 8, 2, 9, 1, 3.</Say>') == 2


def test_voice_phrases_outrank_oktas_template(make_client: AppFactory, sandbox: SandboxState) -> None:
    client = make_client(VOICE_PHRASES='{"es": "Su clave de Acme es {code}."}')
    post_hook(client, okta_request(deliveryChannel="voice", locale="es", msgTemplate=f"Okta dice {OTP}"))
    twiml = sandbox.requests[-1]["form"]["Twiml"]
    assert "Su clave de Acme es 4, 8, 2, 9, 1, 3." in twiml and "Okta dice" not in twiml


@pytest.mark.parametrize("channel", ["sms", "voice"])
def test_a_template_carrying_a_longer_code_is_never_used(
    client: FlaskClient, sandbox: SandboxState, channel: str
) -> None:
    """Issue 10 item 7: code 48291 inside '482913' is another code; sending it would be wrong."""
    post_hook(client, okta_request(deliveryChannel=channel, otpCode="48291", msgTemplate="Your code is 482913"))
    form = sandbox.requests[-1]["form"]
    sent = form.get("Body") or form["Twiml"]
    assert "482913" not in sent and "4, 8, 2, 9, 1, 3" not in sent
    assert "48291" in sent or "4, 8, 2, 9, 1" in sent


def test_a_verify_code_over_10_digits_is_refused_before_twilio(
    make_client: AppFactory, sandbox: SandboxState, capsys: pytest.CaptureFixture[str]
) -> None:
    client = make_client(TWILIO_VERIFY_SERVICE_SID="VA" + "7e" * 16)
    capsys.readouterr()
    response = post_hook(client, okta_request(otpCode="12345678901"))
    assert response.status_code == 200
    assert first_reason(okta_error(response)) == "VERIFY_CODE_TOO_LONG"
    assert sandbox.requests == []
    output = capsys.readouterr().out
    assert hook_log(output)["outcome"] == "code_too_long"
    assert "12345678901" not in output and "12345678901" not in response.get_data(as_text=True)


def test_verify_gets_no_locale_it_does_not_support(make_client: AppFactory, sandbox: SandboxState) -> None:
    client = make_client(TWILIO_VERIFY_SERVICE_SID="VA" + "7e" * 16)
    post_hook(client, okta_request(locale="sw-KE"))
    assert "Locale" not in sandbox.requests[-1]["form"]
    post_hook(client, okta_request(locale="pt_BR", otpCode="739152"))  # a new code: the same one would be a retry
    assert sandbox.requests[-1]["form"]["Locale"] == "pt-BR"
