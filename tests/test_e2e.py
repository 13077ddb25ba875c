"""End to end: `functions-framework --target telephony_hook` as a process, Okta's requests over HTTP."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from twilio.request_validator import RequestValidator

from tests.e2e_hooks import HookStarter, RunningHook, hook_starter
from tests.helpers import (
    EVENT_HOOK_SECRET,
    HOOK_ENV_NAMES,
    HOOK_SECRET,
    OKTA_API_TOKEN,
    OKTA_USER_ID,
    OTP,
    PHONE,
    ROOT,
    VERIFY_SERVICE_SID,
    first_reason,
    load_fixture,
    okta_request,
)
from tests.okta_stand_in import OktaState, phone_factor
from tools.processes import FUNCTIONS_FRAMEWORK, free_port
from tools.sandbox.twilio_sandbox import DEFAULT_AUTH_TOKEN, SandboxServer, SandboxState

pytestmark = [pytest.mark.e2e, pytest.mark.prestart()]


@pytest.fixture
def start(sandbox_server: SandboxServer, sandbox: SandboxState, tmp_path: Path) -> Iterator[HookStarter]:
    yield from hook_starter(sandbox_server.base_url, tmp_path)


@pytest.fixture
def hook(shared_hook: HookStarter) -> RunningHook:
    return shared_hook()


def test_oktas_sample_with_a_live_code_is_delivered(hook: RunningHook, sandbox: SandboxState) -> None:
    body = load_fixture("okta_request_preview_sms.json")
    body["data"]["messageProfile"].update(otpExpires="2099-01-01T00:00:00.000Z", phoneNumber="+1 415 555 0123")
    status, answer, _ = hook.post(body)
    assert status == 200
    result = answer["commands"][0]["value"][0]
    assert result["status"] == "SUCCESSFUL"
    assert result["transactionId"] == sandbox.requests[-1]["response"]["sid"]
    assert sandbox.requests[-1]["form"]["Body"] == "(HOOK)Your code is 11111"


def test_oktas_sample_verbatim_is_refused_as_expired(hook: RunningHook, sandbox: SandboxState) -> None:
    status, answer, _ = hook.post(load_fixture("okta_request_preview_sms.json"))
    assert status == 200
    assert first_reason(answer) == "OTP_EXPIRED"
    assert sandbox.requests == []


@pytest.mark.parametrize("channel", ["CALL", "Voice", "voice call"])
def test_voice_variants_place_a_call(hook: RunningHook, sandbox: SandboxState, channel: str) -> None:
    status, answer, _ = hook.post(okta_request(deliveryChannel=channel, msgTemplate=None))
    assert status == 200
    assert answer["commands"][0]["value"][0]["transactionId"].startswith("CA")
    assert "4, 8, 2, 9, 1, 3" in sandbox.requests[-1]["form"]["Twiml"]


@pytest.mark.prestart(DEFAULT_COUNTRY="US")
def test_national_number_and_extra_fields(shared_hook: HookStarter, sandbox: SandboxState) -> None:
    hook = shared_hook(DEFAULT_COUNTRY="US")
    body = okta_request(phoneNumber="415-555-0123", newField="x")
    body["data"]["extra"] = {"nested": True}
    status, _, _ = hook.post(body)
    assert status == 200
    assert sandbox.requests[-1]["form"]["To"] == PHONE


def test_unauthenticated_calls_get_401_json(hook: RunningHook, sandbox: SandboxState) -> None:
    status, answer, _ = hook.post(okta_request(), secret="nope")
    assert status == 401 and "error" in answer
    assert sandbox.requests == []


def test_invalid_payload_gets_400_naming_the_field(hook: RunningHook) -> None:
    status, answer, _ = hook.post(okta_request(otpCode="12-34"))
    assert status == 400
    assert [cause["location"] for cause in answer["error"]["errorCauses"]] == ["data.messageProfile.otpCode"]


@pytest.mark.prestart(BLOCKED_NUMBER_TYPES="PREMIUM_RATE")
def test_twilio_error_by_magic_number(shared_hook: HookStarter) -> None:
    hook = shared_hook(BLOCKED_NUMBER_TYPES="PREMIUM_RATE")
    status, answer, _ = hook.post(okta_request(phoneNumber="+15005550009"))
    assert status == 200
    assert first_reason(answer) == "TWILIO_21614"


def test_hung_twilio_answers_the_timeout_at_the_configured_deadline(start: HookStarter, hanging_twilio: str) -> None:
    timeout = 0.5
    hook = start(TWILIO_API_BASE_URL=hanging_twilio, TWILIO_TIMEOUT_SECONDS=str(timeout))
    status, answer, elapsed = hook.post(okta_request())
    assert status == 200
    assert first_reason(answer) == "TWILIO_TIMEOUT"
    assert timeout <= elapsed < 2 * timeout


def test_logs_are_json_lines_without_secrets(hook: RunningHook) -> None:
    _, delivered, _ = hook.post(okta_request())
    hook.post(okta_request(), secret="wrong")
    lines_for(hook, delivered["commands"][0]["value"][0]["transactionId"], 3)  # the receipts' lines too
    lines = [line for line in hook.output().splitlines() if line.startswith("{")]
    outcomes = [json.loads(line).get("outcome") for line in lines]
    assert "delivered" in outcomes and "unauthorized" in outcomes
    for forbidden in (OTP, HOOK_SECRET, PHONE, PHONE[1:], DEFAULT_AUTH_TOKEN):
        assert forbidden not in hook.output()


def test_gunicorns_own_error_lines_are_json_too(start: HookStarter) -> None:
    """The worker killed (out of memory, say): gunicorn's master says so on its own error log, the line
    an operator most needs; it comes as a JSON line with its severity, like every other."""
    import os
    import signal

    from tests.e2e_hooks import _worker_pid

    hook = start()
    os.kill(_worker_pid(hook.process.pid), signal.SIGKILL)
    output = hook.output_with("was sent SIGKILL")
    (line,) = [line for line in output.splitlines() if "was sent SIGKILL" in line]
    record = json.loads(line)
    assert record["severity"] == "ERROR" and record["logger"] == "gunicorn.error"


def test_invalid_configuration_stops_the_start_with_a_clear_message(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if key not in HOOK_ENV_NAMES}
    env.update(TWILIO_FROM_NUMBER="0800-NOT-E164", TWILIO_AUTH_TOKEN="tok-should-not-show", PORT=str(free_port()))
    result = subprocess.run(
        [FUNCTIONS_FRAMEWORK, "--target", "telephony_hook", "--source", "main.py"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "Invalid configuration: TWILIO_FROM_NUMBER" in output
    assert "0800-NOT-E164" not in output and "tok-should-not-show" not in output


def test_a_chunked_body_over_64_kb_is_refused_with_413(hook: RunningHook, sandbox: SandboxState) -> None:
    host, port = hook.url.removeprefix("http://").rstrip("/").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    chunks = iter([b'{"pad": "', b"x" * 70_000, b'"}'])
    headers = {"Authorization": HOOK_SECRET, "Content-Type": "application/json"}
    # The hook may answer and close before the last chunk goes out (it reads no more): its answer still waits.
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        connection.request("POST", "/", body=chunks, headers=headers, encode_chunked=True)
    response = connection.getresponse()
    assert response.status == 413
    assert first_reason(json.loads(response.read())) == "BODY_TOO_LARGE"
    assert sandbox.requests == []


def test_the_event_hook_verifies_and_approves_over_http(
    events_hook: RunningHook, sandbox: SandboxState, shared_okta_api: OktaState
) -> None:
    okta_api, hook = shared_okta_api, events_hook  # the session's event hook and its Okta (conftest)
    okta_api.factors[OKTA_USER_ID] = [phone_factor(PHONE)]
    events_url = hook.url + "okta/events"
    challenge = urllib.request.Request(
        events_url, headers={"Authorization": EVENT_HOOK_SECRET, "X-Okta-Verification-Challenge": "chk-42"}
    )
    with urllib.request.urlopen(challenge, timeout=10) as response:
        assert json.loads(response.read()) == {"verification": "chk-42"}

    sandbox.pend(VERIFY_SERVICE_SID, PHONE, "VE" + "4c" * 16)
    delivered = load_fixture("okta_event_hook_mfa.json")
    for event in delivered["data"]["events"]:  # published now: an older event approves nothing
        event["uuid"] = str(uuid.uuid4())  # the shared process claims each uuid once
        event["published"] = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    batch = json.dumps(delivered).encode()
    unauthenticated = urllib.request.Request(events_url, data=batch, headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(unauthenticated, timeout=10)
    assert refused.value.code == 401
    assert sandbox.pending and okta_api.requests == []

    delivery = urllib.request.Request(
        events_url, data=batch, headers={"Content-Type": "application/json", "Authorization": EVENT_HOOK_SECRET}
    )
    with urllib.request.urlopen(delivery, timeout=10) as response:
        assert response.status == 200
    assert sandbox.pending == {}
    hook.output_with('"outcome": "feedback_approved"')
    output = hook.log_path.read_text()  # all of it, its start-up lines too
    for forbidden in (PHONE, PHONE[1:], EVENT_HOOK_SECRET, OKTA_API_TOKEN, DEFAULT_AUTH_TOKEN):
        assert forbidden not in output


def post_form(url: str, form: dict[str, str], signature: str) -> int:
    data = urllib.parse.urlencode(form).encode()
    headers = {"Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": signature}
    request = urllib.request.Request(url, data=data, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


def lines_for(hook: RunningHook, sid: str, count: int, seconds: float = 15) -> list[dict[str, Any]]:
    """The function's log lines that carry `sid`, once there are `count` of them."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        lines = [json.loads(line) for line in hook.output().splitlines() if line.startswith("{")]
        mine = [line for line in lines if line.get("twilio_sid") == sid]
        if len(mine) >= count:
            return mine
        time.sleep(0.05)
    raise AssertionError(f"fewer than {count} lines for {sid}: {hook.output()}")


@pytest.mark.parametrize(
    ("channel", "statuses"), [("sms", ["sent", "delivered"]), ("voice", ["completed"])], ids=["sms", "voice"]
)
def test_the_hook_line_and_the_receipt_lines_share_the_sid(
    hook: RunningHook, sandbox: SandboxState, channel: str, statuses: list[str]
) -> None:
    status, answer, _ = hook.post(okta_request(deliveryChannel=channel))
    assert status == 200
    sid = answer["commands"][0]["value"][0]["transactionId"]
    assert sandbox.requests[-1]["form"]["StatusCallback"] == hook.url + "twilio/status"
    lines = lines_for(hook, sid, 1 + len(statuses))
    assert [line["outcome"] for line in lines] == ["delivered", *["receipt"] * len(statuses)]
    assert [line.get("delivery_status") for line in lines[1:]] == statuses
    assert all(line["channel"] == channel for line in lines)
    assert PHONE not in hook.output() and OTP not in hook.output()


def test_a_forged_receipt_is_refused_by_the_process(hook: RunningHook) -> None:
    form = {"MessageSid": "SM" + "f" * 32, "MessageStatus": "delivered", "To": PHONE}
    forged = RequestValidator("not-the-auth-token").compute_signature(hook.url + "twilio/status", form)
    assert post_form(hook.url + "twilio/status", form, forged) == 403
    genuine = RequestValidator(DEFAULT_AUTH_TOKEN).compute_signature(hook.url + "twilio/status", form)
    assert post_form(hook.url + "twilio/status", form, genuine) == 204
    lines = lines_for(hook, "SM" + "f" * 32, 1)
    assert [line["outcome"] for line in lines] == ["receipt"]
    refused = [line for line in hook.output().splitlines() if '"receipt_forbidden"' in line]
    assert len(refused) == 1 and PHONE not in hook.output()
