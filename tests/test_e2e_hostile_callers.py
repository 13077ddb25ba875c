"""A real functions-framework process against hostile callers of the receipts route: uploads that
stall, receipts signed for another deployment."""

from __future__ import annotations

import copy
import json
import socket
import time
import urllib.error
import urllib.request
import uuid
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import pytest

from telephony.intake import BODY_READ_SECONDS
from telephony.phone import mask
from telephony.receipts import RECEIPT_MAX_BYTES, RECEIPT_READ_SECONDS
from tests.e2e_hooks import HookStarter, RunningHook
from tests.helpers import (
    EVENT_HOOK_SECRET,
    HOOK_SECRET,
    OKTA_USER_ID,
    PHONE,
    VERIFY_SERVICE_SID,
    load_fixture,
    message_receipt,
    okta_request,
    twilio_signature,
)
from tests.okta_stand_in import OktaState, phone_factor
from tests.test_e2e_stalls import read_answer
from tools.sandbox.twilio_sandbox import SandboxState

THREADS = 4  # as in test_e2e_stalls: the two modules share that process
# The receipt tests need no state of their own: they share the session's processes (test_e2e's default
# one, test_e2e_stalls' THREADS=4 one), launched early.
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.prestart(),
    pytest.mark.prestart(THREADS=str(THREADS)),
    pytest.mark.prestart(PUBLIC_URL=""),
]


def lines(hook: RunningHook) -> list[dict[str, Any]]:
    return [json.loads(line) for line in hook.output().splitlines() if line.startswith("{")]


def post_receipt(hook: RunningHook, form: dict[str, str], signature: str, headers: dict[str, str]) -> int:
    request = urllib.request.Request(
        hook.url + "twilio/status",
        data=urlencode(form).encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": signature, **headers},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def stalled_receipt(hook: RunningHook, stack: ExitStack, timeout: float) -> socket.socket:
    """A receipt upload with a signature header that sends its head and one byte of its body, then stalls."""
    head = (
        b"POST /twilio/status HTTP/1.1\r\nHost: hook\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        b"Content-Length: 1000\r\nX-Twilio-Signature: c2lnbmF0dXJl\r\n\r\nA"
    )
    connection = stack.enter_context(socket.create_connection(hook.address, timeout=timeout))
    connection.sendall(head)
    return connection


# ------------------------------------------------------------------ item 3: stalled receipt uploads


def test_threads_full_of_stalled_signed_receipts_do_not_delay_a_valid_hook(shared_hook: HookStarter) -> None:
    hook = shared_hook(THREADS=str(THREADS))
    _, _, alone = hook.post(okta_request())
    with ExitStack() as stack:
        stalled = [stalled_receipt(hook, stack, 3 * RECEIPT_READ_SECONDS) for _ in range(2 * THREADS)]
        time.sleep(0.2)  # every one of them is in the worker by now
        status, answer, elapsed = hook.post(okta_request(), timeout=5)
        answered = [read_answer(connection)[0] for connection in stalled]
    assert status == 200 and answer["commands"][0]["value"][0]["status"] == "SUCCESSFUL"
    assert elapsed < max(10 * alone, 1.0)
    # Some were read until their deadline (408); the rest, with no reader free, were cut short (503).
    assert set(answered) <= {408, 503} and 408 in answered and 503 in answered


# Requests the server refuses before any route runs: each line of the head, and what the answer names.
_SECRET_LINE = f"Authorization {HOOK_SECRET}"  # a header line without its colon, holding the hook's secret
UNREADABLE_REQUESTS = {
    "a header line over 8 KB": (f"X-Padding: {'a' * 9000}\r\nAuthorization: {HOOK_SECRET}", 431, "headers"),
    "over 100 headers": ("\r\n".join(f"X-Header-{index}: {HOOK_SECRET}" for index in range(120)), 431, "headers"),
    "a header line without its colon": (_SECRET_LINE, 400, "headers"),
    "Content-Length and Transfer-Encoding": ("Content-Length: 5\r\nTransfer-Encoding: chunked", 400, "headers"),
    "a negative Content-Length": ("Content-Length: -1", 400, "headers"),
    # gunicorn's 501 (RFC 9112's SHOULD): the caller's bad input, and bad input is never a 5xx here
    "an unknown transfer coding": ("Transfer-Encoding: zip", 400, "Transfer-Encoding"),
}
UNREADABLE_PARTS = {
    "headers": "The headers could not be read as HTTP, or they are too large (a line too long, or too many).",
    "Transfer-Encoding": "The Transfer-Encoding is not one the server reads.",
}


@pytest.mark.parametrize("case", list(UNREADABLE_REQUESTS))
@pytest.mark.parametrize("path", ["/", "/okta/events"])
def test_a_request_the_server_cannot_read_is_refused_in_oktas_shape(
    case: str, path: str, shared_hook: HookStarter
) -> None:
    """gunicorn refuses these itself, before any route runs: it answered an HTML page quoting the line it
    could not read (here the hook's secret), and wrote no line of ours. Now: JSON in Okta's shape naming the
    part of the request, the connection closed, and a line with the outcome; the secret in neither."""
    hook = shared_hook().from_now()
    headers, status, part = UNREADABLE_REQUESTS[case]
    head = f"POST {path} HTTP/1.1\r\nHost: hook\r\nContent-Type: application/json\r\n{headers}\r\n\r\n"
    with socket.create_connection(hook.address, timeout=5) as connection:
        connection.sendall(head.encode() + b"{}")
        data = b""
        while chunk := connection.recv(65536):  # the server closes the connection after its answer
            data += chunk
    answer_head, _, body = data.partition(b"\r\n\r\n")
    assert answer_head.split(b"\r\n")[0].split()[1] == str(status).encode()
    assert b"Content-Type: application/json" in answer_head.split(b"\r\n")
    assert json.loads(body) == {
        "error": {
            "errorSummary": f"The request is invalid: {part}",
            "errorCauses": [
                {
                    "errorSummary": UNREADABLE_PARTS[part],
                    "reason": "REQUEST_UNREADABLE",
                    "location": part,
                }
            ],
        }
    }
    output = hook.output_with('"request_unreadable"')
    line = next(entry for entry in lines(hook) if entry.get("outcome") == "request_unreadable")
    assert (line["severity"], line["http_status"], line["invalid_fields"]) == ("WARNING", status, [part])
    assert HOOK_SECRET not in output and HOOK_SECRET.encode() not in data


@pytest.mark.parametrize("path", ["/", "/okta/events", "/twilio/status"])
def test_a_request_asking_to_upgrade_to_a_websocket_is_served_as_http(path: str, shared_hook: HookStarter) -> None:
    """Upgrade: websocket made Flask refuse it (HTML 400) before any route ran: no line, and the server
    then read its trickling body with no deadline. Every thread of an instance was held by as many such
    uploads, unauthenticated. Each is now its route's refusal, in its route's shape, and closed."""
    hook = shared_hook(THREADS=str(THREADS))
    head = (
        f"POST {path} HTTP/1.1\r\nHost: hook\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        "Content-Type: application/json\r\nContent-Length: 100000000\r\nX-Twilio-Signature: c2ln\r\n\r\n{"
    ).encode()
    with ExitStack() as stack:
        held = []
        for _ in range(2 * THREADS):
            connection = stack.enter_context(socket.create_connection(hook.address, timeout=5))
            connection.sendall(head)
            held.append(connection)
        time.sleep(0.2)
        status, answer, _ = hook.post(okta_request(), timeout=5)
        answers = [read_answer(connection) for connection in held]
    assert status == 200 and answer["commands"][0]["value"][0]["status"] == "SUCCESSFUL"
    # Each route's own refusal, the body unread: over the hook's cap, no event hook secret, not a form.
    expected = {"/": 413, "/okta/events": 401, "/twilio/status": 400}[path]
    assert {(code, closed) for code, _, closed in answers} == {(expected, True)}
    if path != "/twilio/status":  # Okta's routes answer in Okta's shape
        assert all("errorSummary" in json.loads(body)["error"] for _, body, _ in answers)


def test_a_whole_signed_receipt_is_read_while_stalled_uploads_hold_every_reader(shared_hook: HookStarter) -> None:
    """Anyone can send a signature header and stall: a few such uploads held every reader, and Twilio's
    own receipts, which arrive whole and are never sent again, were refused unread. With no reader
    free a receipt is still read, within a short deadline of its own that only a stalled upload misses."""
    hook = shared_hook(THREADS=str(THREADS))
    form = message_receipt("delivered")
    signature = twilio_signature(hook.url + "twilio/status", form)
    with ExitStack() as stack:
        stalled = [stalled_receipt(hook, stack, 3 * RECEIPT_READ_SECONDS) for _ in range(THREADS // 2)]
        time.sleep(0.2)  # the readers are theirs by now
        accepted = [post_receipt(hook, form, signature, {}) for _ in range(5)]
        answered = [read_answer(connection)[0] for connection in stalled]
    assert accepted == [204] * 5
    assert set(answered) <= {408, 503} and 408 in answered


def test_a_trickled_receipt_is_cut_at_its_deadline(shared_hook: HookStarter) -> None:
    hook = shared_hook()
    with ExitStack() as stack:
        started = time.monotonic()
        connection = stalled_receipt(hook, stack, 3 * RECEIPT_READ_SECONDS)
        status, _, closed = read_answer(connection)
        elapsed = time.monotonic() - started
    assert status == 408 and closed
    assert RECEIPT_READ_SECONDS <= elapsed < 1.5 * RECEIPT_READ_SECONDS
    [line] = [line for line in lines(hook) if line.get("outcome") == "receipt_too_slow"]
    assert line["http_status"] == 408


def test_a_receipt_over_the_small_cap_is_refused_unread(shared_hook: HookStarter) -> None:
    hook = shared_hook()
    form = {**message_receipt(), "Pad": "x" * RECEIPT_MAX_BYTES}
    url = hook.url + "twilio/status"
    assert post_receipt(hook, form, twilio_signature(url, form), {}) == 413


# ------------------------------------------------------------------ item 6: whose URL a receipt is signed for


OTHER_DEPLOYMENT = "other-deployment-abc-uc.a.run.app"


def test_without_public_url_a_receipt_signed_for_another_deployment_is_refused(shared_hook: HookStarter) -> None:
    hook = shared_hook(PUBLIC_URL="")
    # Said once, at start: this test's lines do not hold it, the process's whole log does.
    assert "Delivery receipts are off: PUBLIC_URL is not set" in hook.log_path.read_text()
    form = message_receipt("undelivered", ErrorCode="30007")
    signature = twilio_signature(f"https://{OTHER_DEPLOYMENT}/twilio/status", form)
    headers = {"Host": OTHER_DEPLOYMENT, "X-Forwarded-Proto": "https"}
    assert post_receipt(hook, form, signature, headers) == 403
    assert not [line for line in lines(hook) if line.get("outcome") == "receipt_not_delivered"]
    _, answer, _ = hook.post(okta_request())
    assert answer["commands"][0]["value"][0]["status"] == "SUCCESSFUL"


def test_with_public_url_only_a_receipt_signed_for_it_is_accepted(shared_hook: HookStarter) -> None:
    hook = shared_hook()  # PUBLIC_URL is the process's own URL
    form = message_receipt("undelivered", ErrorCode="30007")
    forged = twilio_signature(f"https://{OTHER_DEPLOYMENT}/twilio/status", form)
    headers = {"Host": OTHER_DEPLOYMENT, "X-Forwarded-Proto": "https"}
    assert post_receipt(hook, form, forged, headers) == 403
    assert post_receipt(hook, form, twilio_signature(hook.url + "twilio/status", form), {}) == 204


# ------------------------------------------------------------------ items 4 and 5: the event hook

OKTA_EVENT_HOOK_SECONDS = 3.0  # Okta gives up on an event hook after 3 s
SMS_NUMBER, CALL_NUMBER = PHONE, "+14155550999"
SMS_SID, CALL_SID, NEWER_SID = "VE" + "1a" * 16, "VE" + "2b" * 16, "VE" + "3c" * 16


@pytest.fixture
def okta_api(shared_okta_api: OktaState) -> OktaState:
    """The session's Okta stand-in, the user with an SMS and a voice factor."""
    shared_okta_api.factors[OKTA_USER_ID] = [phone_factor(SMS_NUMBER, "sms"), phone_factor(CALL_NUMBER, "call")]
    return shared_okta_api


@pytest.fixture
def events_hook(events_hook: RunningHook, okta_api: OktaState) -> RunningHook:
    """The session's event hook (conftest), its Okta knowing the user's two factors."""
    return events_hook


def published(seconds_ago: float = 0.0) -> str:
    moment = datetime.now(UTC) - timedelta(seconds=seconds_ago)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# The enrolment each challenge names, as Okta's factor list has it: the user's "sms" and "call" factors.
ENROLMENT = {
    "SMS_FACTOR": phone_factor(SMS_NUMBER, "sms")["id"],
    "CALL_FACTOR": phone_factor(CALL_NUMBER, "call")["id"],
}


def passed(
    factor: str = "SMS_FACTOR", user: str = OKTA_USER_ID, enrolment: str | None = "", **changes: Any
) -> dict[str, Any]:
    """A passed challenge, published now, with its own uuid, naming the enrolment of its factor's type
    (`enrolment`: another one; None: no enrolment named)."""
    event = copy.deepcopy(load_fixture("okta_event_hook_mfa.json")["data"]["events"][0])
    event.update(uuid=str(uuid.uuid4()), published=published())
    event["actor"]["id"] = user
    event["debugContext"]["debugData"]["factor"] = factor
    if enrolment is None:
        event["target"] = []
    else:
        event["target"][0]["id"] = enrolment or ENROLMENT.get(factor, "x")
    event.update(changes)
    return dict(event)


def compact(event: dict[str, Any]) -> dict[str, Any]:
    """The event with only the fields the hook reads."""
    kept = ("uuid", "published", "eventType", "actor", "outcome", "debugContext", "target")
    return {key: event[key] for key in kept}


def activated(method: str, user: str = OKTA_USER_ID, enrolment: str | None = None) -> dict[str, Any]:
    """A phone enrolment completed: naming the user's enrolment of that method (`enrolment`: another)."""
    named = enrolment or ENROLMENT["SMS_FACTOR" if method == "SMS" else "CALL_FACTOR"]
    target = {"id": named, "type": "AuthenticatorEnrollment", "detailEntry": {"methodTypeUsed": method}}
    return passed(eventType="user.mfa.factor.activate", debugContext={"debugData": {}}, target=[target], user=user)


def events_body(*events: Any) -> dict[str, Any]:
    body = copy.deepcopy(load_fixture("okta_event_hook_mfa.json"))
    body["data"]["events"] = list(events)
    return dict(body)


def deliver(hook: RunningHook, *events: Any) -> tuple[int, float]:
    status, _, elapsed = hook.post(events_body(*events), secret=EVENT_HOOK_SECRET, path="okta/events")
    return status, elapsed


def event_hook_lines(hook: RunningHook) -> list[dict[str, Any]]:
    return [line for line in lines(hook) if line.get("logger") == "okta_events"]


def pend_both(sandbox: SandboxState) -> None:
    sandbox.pend(VERIFY_SERVICE_SID, SMS_NUMBER, SMS_SID)
    sandbox.pend(VERIFY_SERVICE_SID, CALL_NUMBER, CALL_SID)


@pytest.mark.parametrize(
    ("event", "approved", "left"),
    [
        (lambda: passed("SMS_FACTOR"), SMS_NUMBER, CALL_NUMBER),
        (lambda: passed("CALL_FACTOR"), CALL_NUMBER, SMS_NUMBER),
        (lambda: passed("CALL_FACTOR", enrolment=None), CALL_NUMBER, SMS_NUMBER),
        # One phone enrolment, listed as "sms", challenged by voice: the code went to its number.
        (lambda: passed("CALL_FACTOR", enrolment=ENROLMENT["SMS_FACTOR"]), SMS_NUMBER, CALL_NUMBER),
        (lambda: activated("SMS"), SMS_NUMBER, CALL_NUMBER),
        (lambda: activated("VOICE"), CALL_NUMBER, SMS_NUMBER),
    ],
)
def test_an_event_approves_only_the_number_of_the_factor_the_user_passed(
    events_hook: RunningHook, sandbox: SandboxState, event: Any, approved: str, left: str
) -> None:
    pend_both(sandbox)
    assert deliver(events_hook, event())[0] == 200
    assert (VERIFY_SERVICE_SID, approved) not in sandbox.pending
    assert (VERIFY_SERVICE_SID, left) in sandbox.pending  # the other factor's code was never typed
    [line] = [line for line in event_hook_lines(events_hook) if line.get("outcome") == "feedback_approved"]
    assert line["twilio_sid"] == (SMS_SID if approved == SMS_NUMBER else CALL_SID)
    assert line["phone"] == mask(approved)


@pytest.mark.parametrize(
    "event",
    [
        lambda: passed("SMS_FACTOR", enrolment="sms1removedorforeign0"),  # removed since, or another user's
        lambda: passed("SMS_FACTOR", enrolment="eml1o51EADOTFXHHBXBP"),  # an email enrolment
        lambda: activated("SMS", enrolment="sms1anotherusers0000"),
    ],
)
def test_an_event_naming_an_enrolment_the_user_does_not_have_approves_nothing(
    events_hook: RunningHook, sandbox: SandboxState, event: Any
) -> None:
    """The code was typed on the enrolment the event names: no other number of the user's is proved."""
    pend_both(sandbox)
    assert deliver(events_hook, event())[0] == 200
    assert (VERIFY_SERVICE_SID, SMS_NUMBER) in sandbox.pending and (VERIFY_SERVICE_SID, CALL_NUMBER) in sandbox.pending
    [line] = [line for line in event_hook_lines(events_hook) if "event_type" in line]
    assert (line["outcome"], "phone" in line) == ("feedback_no_phone", False)


def test_an_event_delivered_again_approves_no_newer_code(
    events_hook: RunningHook, okta_api: OktaState, sandbox: SandboxState
) -> None:
    event = passed("SMS_FACTOR")
    sandbox.pend(VERIFY_SERVICE_SID, SMS_NUMBER, SMS_SID)
    assert deliver(events_hook, event)[0] == 200
    assert (VERIFY_SERVICE_SID, SMS_NUMBER) not in sandbox.pending
    sandbox.pend(VERIFY_SERVICE_SID, SMS_NUMBER, NEWER_SID)  # a newer code, not typed yet
    reads = len(okta_api.requests)
    assert deliver(events_hook, event)[0] == 200  # Okta's retry, or a replay: the same uuid
    assert sandbox.pending[(VERIFY_SERVICE_SID, SMS_NUMBER)] == NEWER_SID
    assert len(okta_api.requests) == reads


def test_an_event_published_two_hours_ago_approves_nothing(
    events_hook: RunningHook, okta_api: OktaState, sandbox: SandboxState
) -> None:
    pend_both(sandbox)
    assert deliver(events_hook, passed("SMS_FACTOR", published=published(2 * 3600)))[0] == 200
    assert sandbox.pending[(VERIFY_SERVICE_SID, SMS_NUMBER)] == SMS_SID
    # Too late for a code, not for the spend guard: the user's numbers are read once, to convert them.
    assert len(okta_api.requests) == 1
    assert deliver(events_hook, passed("SMS_FACTOR", published=published(25 * 3600)))[0] == 200
    assert len(okta_api.requests) == 1  # past a day, nothing is read at all


def test_each_approval_is_its_own_line_with_its_sid_and_masked_number(
    events_hook: RunningHook, okta_api: OktaState, sandbox: SandboxState
) -> None:
    other_user, other_number, other_sid = "00ub0oNGTSWTBKOLGLNS", "+14155550777", "VE" + "4d" * 16
    okta_api.factors[other_user] = [phone_factor(other_number, "sms")]
    sandbox.pend(VERIFY_SERVICE_SID, SMS_NUMBER, SMS_SID)
    sandbox.pend(VERIFY_SERVICE_SID, other_number, other_sid)
    assert deliver(events_hook, passed("SMS_FACTOR"), passed("SMS_FACTOR", user=other_user))[0] == 200
    approvals = [line for line in event_hook_lines(events_hook) if line.get("outcome") == "feedback_approved"]
    assert sorted((line["twilio_sid"], line["phone"]) for line in approvals) == sorted(
        [(SMS_SID, mask(SMS_NUMBER)), (other_sid, mask(other_number))]
    )
    output = events_hook.output()
    assert SMS_NUMBER not in output and other_number not in output


@pytest.mark.parametrize("same_uuid", [True, False])
def test_754_copies_of_one_event_make_one_read_and_one_update(
    events_hook: RunningHook, okta_api: OktaState, sandbox: SandboxState, same_uuid: bool
) -> None:
    pend_both(sandbox)
    one = compact(passed("SMS_FACTOR"))  # 754 fit in the event hook's 512 KiB cap
    copies = [one if same_uuid else {**one, "uuid": str(uuid.uuid4())} for _ in range(754)]
    before = len(event_hook_lines(events_hook))
    status, elapsed = deliver(events_hook, *copies)
    assert status == 200 and elapsed < OKTA_EVENT_HOOK_SECONDS / 2
    assert len(okta_api.requests) == 1
    assert len([request for request in sandbox.requests if "/Verifications/" in request["path"]]) == 1
    written = event_hook_lines(events_hook)[before:]
    assert len(written) <= 2  # the approval, and the POST's summary
    # A later legitimate event, for another factor, is not held back by them.
    status, elapsed = deliver(events_hook, passed("CALL_FACTOR"))
    assert status == 200 and (VERIFY_SERVICE_SID, CALL_NUMBER) not in sandbox.pending
    assert elapsed < OKTA_EVENT_HOOK_SECONDS / 4


def test_128000_empty_events_are_answered_in_time_in_one_summary_line(events_hook: RunningHook) -> None:
    before = len(event_hook_lines(events_hook))
    status, elapsed = deliver(events_hook, *([{}] * 128_000))
    assert status == 200
    assert elapsed < OKTA_EVENT_HOOK_SECONDS / 2
    written = event_hook_lines(events_hook)[before:]
    assert len(written) == 1
    assert written[0]["events"] == 128_000 and written[0]["ignored"] + written[0]["over_cap"] == 128_000


# ------------------------------------------------------------------ bodies the server cannot read

BROKEN_BODIES = {
    # a valid first chunk, then a chunk size that is not hex
    "broken chunk size": ("Transfer-Encoding: chunked\r\n", b"3\r\nabc\r\nzz\r\nabc\r\n0\r\n\r\n", False),
    # a chunked body whose caller closes its side before the last chunk
    "cut short": ("Transfer-Encoding: chunked\r\n", b"3\r\nabc\r\n", True),
}


def post_broken(hook: RunningHook, path: str, credentials: str, framing: str, body: bytes, close: bool) -> int:
    head = f"POST /{path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
    with socket.create_connection(hook.address, timeout=10) as connection:
        connection.sendall(f"{head}{credentials}{framing}\r\n".encode() + body)
        if close:
            connection.shutdown(socket.SHUT_WR)
        status, _, _ = read_answer(connection)
    return status


@pytest.mark.parametrize("case", sorted(BROKEN_BODIES))
@pytest.mark.parametrize("route", ["telephony hook", "receipts route", "event hook"])
def test_a_body_the_server_cannot_read_is_a_4xx_never_a_bug_of_ours(
    shared_hook: HookStarter, events_hook: RunningHook, route: str, case: str
) -> None:
    """Broken chunked framing, or a caller that closes early, is the caller's doing: a 400 in the route's
    shape and a WARNING at most, never a 500 and an ERROR line (which would page, and which anyone could
    cause on the receipts route)."""
    hook, path, credentials = {
        "telephony hook": (shared_hook(), "", f"Authorization: {HOOK_SECRET}\r\n"),
        "receipts route": (shared_hook(), "twilio/status", "X-Twilio-Signature: c2lnbmF0dXJl\r\n"),
        "event hook": (events_hook, "okta/events", f"Authorization: {EVENT_HOOK_SECRET}\r\n"),
    }[route]
    framing, body, close = BROKEN_BODIES[case]
    assert post_broken(hook, path, credentials, framing, body, close) == 400
    outcome = "receipt_invalid" if route == "receipts route" else "invalid_request"
    seen = [line for line in lines(hook) if line.get("message", "").startswith(f"{route} ")]
    assert [(line["outcome"], line["http_status"]) for line in seen] == [(outcome, 400)]
    assert not [line for line in lines(hook) if line.get("severity") in ("ERROR", "CRITICAL")]


# ---------------------------------------------- a body shorter than it said, or still coming in


def post_framed(
    hook: RunningHook, path: str, credentials: str, body: bytes, declared: int, close: bool
) -> socket.socket:
    """A POST whose head declares `declared` bytes, then `body`; its write side shut when `close`."""
    connection = socket.create_connection(hook.address, timeout=10)
    head = f"POST /{path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {declared}\r\n"
    connection.sendall(f"{head}{credentials}\r\n".encode() + body)
    if close:
        connection.shutdown(socket.SHUT_WR)
    return connection


@pytest.mark.parametrize("route", ["telephony hook", "event hook"])
def test_a_whole_request_under_a_longer_content_length_is_cut_short_not_acted_on(
    shared_hook: HookStarter, events_hook: RunningHook, sandbox: SandboxState, route: str
) -> None:
    """The caller closed before the bytes its head promised: what arrived is not the request it sent,
    even when it parses (here a whole, valid request). 400, nothing sent to Twilio."""
    hook, path, credentials, body = {
        "telephony hook": (shared_hook(), "", f"Authorization: {HOOK_SECRET}\r\n", okta_request()),
        "event hook": (events_hook, "okta/events", f"Authorization: {EVENT_HOOK_SECRET}\r\n", events_body(passed())),
    }[route]
    pend_both(sandbox)
    data = json.dumps(body).encode()
    with post_framed(hook, path, credentials, data, len(data) + 50, close=True) as connection:
        status, answer, _ = read_answer(connection)
    assert status == 400
    assert json.loads(answer)["error"]["errorCauses"][0]["reason"] == "BODY_UNREADABLE"
    time.sleep(0.3)  # the event hook acts after its answer: give it the time to act, were it to
    assert sandbox.requests == []


@pytest.mark.parametrize("route", ["telephony hook", "event hook"])
def test_a_body_still_coming_in_at_its_deadline_is_a_408_and_nothing_is_sent(
    shared_hook: HookStarter, events_hook: RunningHook, sandbox: SandboxState, route: str
) -> None:
    """Okta sends its body with its head: one still coming in after BODY_READ_SECONDS is cut there, in
    the route's shape, rather than holding a thread and spending Okta's 3 s before Twilio is asked."""
    hook, path, credentials, body = {
        "telephony hook": (shared_hook(), "", f"Authorization: {HOOK_SECRET}\r\n", okta_request()),
        "event hook": (events_hook, "okta/events", f"Authorization: {EVENT_HOOK_SECRET}\r\n", events_body(passed())),
    }[route]
    data = json.dumps(body).encode()
    started = time.monotonic()
    with post_framed(hook, path, credentials, data, len(data) + 50, close=False) as connection:
        status, answer, closed = read_answer(connection)
    elapsed = time.monotonic() - started
    assert (status, closed) == (408, True)
    assert json.loads(answer)["error"]["errorCauses"][0]["reason"] == "BODY_TOO_SLOW"
    assert BODY_READ_SECONDS <= elapsed < 1.5 * BODY_READ_SECONDS
    [line] = [line for line in lines(hook) if line.get("outcome") == "body_too_slow"]
    assert (line["http_status"], line["severity"]) == (408, "WARNING")
    assert sandbox.requests == []
