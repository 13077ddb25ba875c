"""A real functions-framework process against peers that close, trickle or flood: every outbound call
(Twilio, the issuer's JWKS, Okta's Management API) ends by its one overall deadline whatever the
peer's framing, and reads at most a cap that fits its document, in bounded pieces."""

from __future__ import annotations

import base64
import copy
import itertools
import json
import uuid
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import pytest

from telephony.oauth import JWKS_TIMEOUT_SECONDS
from tests.e2e_hooks import HookStarter, RunningHook, hook_starter, start_hook, stop_later
from tests.helpers import (
    EVENT_HOOK_SECRET,
    OKTA_API_TOKEN,
    OTP,
    PHONE,
    VERIFY_SERVICE_SID,
    first_reason,
    load_fixture,
    okta_request,
    sandbox_env,
)
from tests.okta_stand_in import phone_factor
from tests.standins import TWILIO_PEER_SECONDS, UNSET, StandIn, answering, echoing, flood, http_answer, stand_in
from tests.test_oauth import AUDIENCE, ISSUER, KID, SCOPE, SIGNING_KEY, public_jwk, token
from tools.sandbox.twilio_sandbox import DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN, SandboxServer, SandboxState

pytestmark = pytest.mark.e2e

CHUNK, PAUSE = 20, 0.3  # 20 bytes every 0.3 s after a prompt head: no single read ever times out
FRAMINGS = ["content-length", "http/1.0", "chunked"]  # each closes the connection after the answer
FLOOD_BYTES = 300 * 1024 * 1024
PEAK_GROWTH_KIB = 8 * 1024  # a few MiB: the flood is read in small pieces and dropped at the cap
TWILIO_SECONDS = TWILIO_PEER_SECONDS  # the session's hook against its raw-socket Twilio (conftest)
OKTA_API_SECONDS = 0.8
PENDING_SID = "VE" + "4c" * 16


@pytest.fixture
def start(sandbox_server: SandboxServer, tmp_path: Path) -> Iterator[HookStarter]:
    """A process of the test's own: the JWKS tests need one each, since the key cache of a process whose
    fetch failed does not fetch again for a while (a later test would get its 503 without a fetch)."""
    yield from hook_starter(sandbox_server.base_url, tmp_path)


# One peer and one process per configuration (a start costs about a second of CPU): the Twilio ones are
# the session's (conftest), the Okta API ones the module's. Each test switches the peer's answer before
# it posts and checks the peer was asked, so no test can pass on an earlier one's work.


@pytest.fixture(scope="module")
def okta_peer() -> Iterator[StandIn]:
    with stand_in(UNSET) as peer:
        yield peer


@pytest.fixture(scope="module")
def okta_peer_process(
    sandbox_server: SandboxServer, okta_peer: StandIn, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningHook]:
    """The event hook against the module's Okta peer. Each test's events carry their own uuids (the
    process claims each uuid once)."""
    settings = sandbox_env(sandbox_server.base_url, **events_settings(okta_peer.base_url))
    hook = start_hook(settings, tmp_path_factory.mktemp("okta-peer") / "hook.log")
    yield hook
    stop_later([hook.process])


def alive(hook: RunningHook) -> RunningHook:
    """The module's process, its output() limited to this test's lines."""
    assert hook.process.poll() is None, f"the shared process exited: {hook.output()}"
    return hook.from_now()


def twilio_created(padding: int = 200) -> bytes:
    return json.dumps({"sid": "SM" + "0" * 32, "status": "queued", "body": "x" * padding}).encode()


def fresh_mfa_event(**changes: Any) -> dict[str, Any]:
    """The sample's event, published now, with a uuid of its own."""
    event = copy.deepcopy(load_fixture("okta_event_hook_mfa.json")["data"]["events"][0])
    event["uuid"] = str(uuid.uuid4())
    event["published"] = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    event.update(changes)
    return dict(event)


def event_batch(*events: dict[str, Any]) -> dict[str, Any]:
    body = copy.deepcopy(load_fixture("okta_event_hook_mfa.json"))
    body["data"]["events"] = list(events)
    return dict(body)


def post_events(hook: RunningHook, body: Any) -> tuple[int, Any, float]:
    return hook.post(body, secret=EVENT_HOOK_SECRET, path="okta/events")


def event_lines(hook: RunningHook) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in hook.output().splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("logger") == "okta_events" and "event_type" in line]


def events_settings(org_url: str) -> dict[str, str]:
    return {
        "OKTA_EVENT_HOOK_AUTH_SECRET": EVENT_HOOK_SECRET,
        "OKTA_ORG_URL": org_url,
        "OKTA_API_TOKEN": OKTA_API_TOKEN,
        "OKTA_API_TIMEOUT_SECONDS": str(OKTA_API_SECONDS),
        "TWILIO_VERIFY_SERVICE_SID": VERIFY_SERVICE_SID,
    }


def start_oauth(start: HookStarter, jwks_url: str) -> RunningHook:
    return start(
        OKTA_HOOK_AUTH_SECRET="",
        OKTA_HOOK_OAUTH_ISSUER=ISSUER,
        OKTA_HOOK_OAUTH_AUDIENCE=AUDIENCE,
        OKTA_HOOK_OAUTH_SCOPE=SCOPE,
        OKTA_HOOK_OAUTH_JWKS_URL=jwks_url,
    )


def first_then(first: bytes, then: Callable[[], Iterable[bytes]]) -> Callable[[], Iterable[bytes]]:
    """A peer that answers normally once (the process warms up on it), then floods."""
    answers = itertools.chain([lambda: [first]], itertools.repeat(then))
    return lambda: next(answers)()


# ------------------------------------------------------------- item 1: one deadline, whatever the framing


@pytest.mark.parametrize("framing", FRAMINGS)
def test_a_twilio_that_closes_and_trickles_its_201_gets_no_successful(
    twilio_peer_hook: RunningHook, twilio_peer: StandIn, framing: str
) -> None:
    """The user must not get two codes: an answer read past the deadline is a timeout, not SUCCESSFUL."""
    answer = http_answer(201, twilio_created(), framing=framing)
    hook = twilio_peer_hook
    code = str(100000 + FRAMINGS.index(framing))  # a code of its own: the same code again would be a retry
    with answering(twilio_peer, answer, chunk=CHUNK, pause=PAUSE, head_at_once=True) as twilio:
        status, body, elapsed = hook.post(okta_request(otpCode=code))
        assert twilio.requests == 1
    assert status == 200
    assert first_reason(body) == "TWILIO_TIMEOUT"
    assert elapsed < 1.5 * TWILIO_SECONDS


@pytest.mark.parametrize("framing", FRAMINGS)
def test_a_jwks_that_closes_and_trickles_holds_no_hook_past_its_deadline(start: HookStarter, framing: str) -> None:
    document = json.dumps({"keys": [public_jwk(SIGNING_KEY, KID)]}).encode()
    with stand_in(http_answer(200, document, framing=framing), chunk=CHUNK, pause=PAUSE, head_at_once=True) as issuer:
        hook = start_oauth(start, issuer.base_url + "/keys")
        status, body, elapsed = hook.post(okta_request(), secret=f"Bearer {token()}")
    assert status == 503 and "error" in body
    assert elapsed < 1.5 * JWKS_TIMEOUT_SECONDS


@pytest.mark.parametrize("framing", FRAMINGS)
def test_an_okta_api_that_closes_and_trickles_is_given_up_on_at_its_deadline(
    okta_peer_process: RunningHook, okta_peer: StandIn, sandbox: SandboxState, framing: str
) -> None:
    factors = json.dumps([{**phone_factor(PHONE), "_links": {"self": {"href": "x" * 300}}}]).encode()
    sandbox.pend(VERIFY_SERVICE_SID, PHONE, PENDING_SID)
    hook = alive(okta_peer_process)
    answer = http_answer(200, factors, framing=framing)
    with answering(okta_peer, answer, chunk=CHUNK, pause=PAUSE, head_at_once=True) as okta:
        status, _, elapsed = post_events(hook, event_batch(fresh_mfa_event()))
        assert okta.requests == 1
    assert status == 200
    assert elapsed < 1.5 * OKTA_API_SECONDS
    [line] = event_lines(hook)
    assert line["okta_api_error"] == "OKTA_API_TIMEOUT"
    assert sandbox.pending[(VERIFY_SERVICE_SID, PHONE)] == PENDING_SID  # nothing approved


# ------------------------------------------------------------- item 2: a cap on every answer, read in pieces


def test_a_twilio_flooding_its_answer_fails_at_the_cap_without_the_worker_growing(start: HookStarter) -> None:
    created = twilio_created()
    normal = http_answer(201, created)
    huge = flood(201, created[:-1], FLOOD_BYTES, b"}")  # valid JSON, a Twilio resource with 300 MiB of spaces
    with stand_in(first_then(normal, huge)) as twilio:
        hook = start(TWILIO_API_BASE_URL=twilio.base_url, TWILIO_TIMEOUT_SECONDS="2.0")
        status, body, _ = hook.post(okta_request())
        assert body["commands"][0]["value"][0]["status"] == "SUCCESSFUL"
        before = hook.worker_peak_kib()
        status, body, elapsed = hook.post(okta_request(otpCode="739152"))  # a new code: the same would be a retry
        after = hook.worker_peak_kib()
    assert status == 200 and first_reason(body) == "TWILIO_TIMEOUT"
    assert after - before < PEAK_GROWTH_KIB
    assert elapsed < 2.0
    assert "AnswerTooLarge" in hook.output()


def test_a_jwks_flooding_its_key_set_fails_at_the_cap_without_the_worker_growing(start: HookStarter) -> None:
    prefix = json.dumps({"keys": [public_jwk(SIGNING_KEY, KID)]}).encode()[:-1]
    with stand_in(flood(200, prefix, FLOOD_BYTES, b"}")) as issuer:
        hook = start_oauth(start, issuer.base_url + "/keys")
        assert hook.post(okta_request(), secret="Bearer not-a-jwt")[0] == 401  # warms the worker, fetches nothing
        before = hook.worker_peak_kib()
        status, body, elapsed = hook.post(okta_request(), secret=f"Bearer {token()}")
        after = hook.worker_peak_kib()
    assert status == 503 and "error" in body
    assert after - before < PEAK_GROWTH_KIB
    assert elapsed < 1.5 * JWKS_TIMEOUT_SECONDS


def test_an_okta_api_flooding_the_factor_list_fails_at_the_cap_without_the_worker_growing(
    okta_peer_process: RunningHook, okta_peer: StandIn, sandbox: SandboxState
) -> None:
    """The only flood this process sees: the trickling tests that may have run in it before read a few
    hundred bytes each, nothing that would lift its peak and hide a flood's growth."""
    factors = json.dumps([phone_factor(PHONE)]).encode()
    normal = http_answer(200, factors)
    hook = alive(okta_peer_process)
    with answering(okta_peer, first_then(normal, flood(200, factors[:-1], FLOOD_BYTES, b"]"))) as okta:
        assert post_events(hook, event_batch(fresh_mfa_event()))[0] == 200  # warm: read, Verify, log
        sandbox.pend(VERIFY_SERVICE_SID, PHONE, PENDING_SID)
        before = hook.worker_peak_kib()
        status, _, elapsed = post_events(hook, event_batch(fresh_mfa_event()))
        after = hook.worker_peak_kib()
        assert okta.requests == 2
    assert status == 200
    assert after - before < PEAK_GROWTH_KIB
    assert elapsed < 1.5 * OKTA_API_SECONDS
    assert event_lines(hook)[-1]["okta_api_error"] == "OKTA_API_TOO_LARGE"
    assert sandbox.pending[(VERIFY_SERVICE_SID, PHONE)] == PENDING_SID


# ------------------------------------------------------------- a peer that echoes our request where a library logs it

API_KEY, API_SECRET = "SK" + "7" * 32, "api-secret-Hq27vN"


def basic(user: str, secret: str) -> str:
    return base64.b64encode(f"{user}:{secret}".encode()).decode()


def assert_echoed_but_not_written(output: str, request: bytes, values: list[str]) -> None:
    for value in values:
        assert value.encode() in request, value  # the peer had it to echo...
        assert value not in output, value  # ...and it was not written


@pytest.mark.parametrize(
    ("channel", "credential"),
    [
        ("sms", {"TWILIO_API_KEY": API_KEY, "TWILIO_API_SECRET": API_SECRET}),
        ("voice", {}),  # the account's auth token (sandbox_env's)
    ],
)
def test_a_twilio_echoing_the_request_into_its_headers_gets_no_code_number_or_credential_written(
    start: HookStarter, channel: str, credential: dict[str, str]
) -> None:
    """urllib3 warns of a header line it cannot parse, quoting it: the request's form (the number, the
    text or TwiML with the code) and its Authorization header. None of it may reach the log."""
    sid = ("SM" if channel == "sms" else "CA") + "0" * 32
    with stand_in(UNSET) as twilio:
        twilio.answer = echoing(twilio, json.dumps({"sid": sid, "status": "queued"}).encode())
        hook = start(TWILIO_API_BASE_URL=twilio.base_url, **credential)
        status, body, _ = hook.post(okta_request(deliveryChannel=channel))
        assert twilio.requests == 1
        request = twilio.last_request
    assert status == 200 and body["commands"][0]["value"][0]["status"] == "SUCCESSFUL"
    user, secret = (API_KEY, API_SECRET) if credential else (DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN)
    spoken = ", ".join(OTP)  # the call reads the digits one by one
    code = OTP if channel == "sms" else quote_plus(spoken)
    output = hook.output()
    assert_echoed_but_not_written(output, request, [code, PHONE[1:], quote(PHONE, safe=""), basic(user, secret)])
    assert OTP not in output and spoken not in output and PHONE not in output and secret not in output


def test_a_verify_echoing_the_approval_gets_no_number_or_credential_written(start: HookStarter) -> None:
    """The event hook's approval names the number in Verify's URL: echoed, it is not written either."""
    factors = json.dumps([phone_factor(PHONE)]).encode()
    with stand_in(http_answer(200, factors)) as okta, stand_in(UNSET) as twilio:
        twilio.answer = echoing(twilio, json.dumps({"sid": PENDING_SID, "status": "approved"}).encode())
        hook = start(**events_settings(okta.base_url), TWILIO_API_BASE_URL=twilio.base_url)
        status, _, _ = post_events(hook, event_batch(fresh_mfa_event()))
        assert (okta.requests, twilio.requests) == (1, 1)
        request = twilio.last_request
    assert status == 200
    output = hook.output()
    credential = basic(DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN)
    assert_echoed_but_not_written(output, request, [PHONE[1:], quote(PHONE, safe=""), credential])
    assert PHONE not in output and DEFAULT_AUTH_TOKEN not in output


# ------------------------------------------------------------- item 8: URLs read as the HTTP library reads them


@pytest.mark.parametrize(
    ("name", "url"),
    [
        ("OKTA_HOOK_OAUTH_JWKS_URL", "http://keys.example\\@localhost/keys"),  # urllib3 would call keys.example
        ("TWILIO_API_BASE_URL", "http://twilio-mock.example"),  # Twilio's credentials in the clear
    ],
)
def test_a_url_trick_stops_the_process_at_start_naming_the_variable(start: HookStarter, name: str, url: str) -> None:
    oauth = {"OKTA_HOOK_OAUTH_ISSUER": ISSUER, "OKTA_HOOK_OAUTH_AUDIENCE": AUDIENCE, "OKTA_HOOK_OAUTH_SCOPE": SCOPE}
    with pytest.raises(AssertionError) as refused:  # start_hook's report: the process exited, and its output
        start(OKTA_HOOK_AUTH_SECRET="", **oauth, **{name: url})
    assert "Invalid configuration" in str(refused.value) and name in str(refused.value)
    assert "example" not in str(refused.value)
