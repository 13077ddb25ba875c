"""A real functions-framework process against peers that trickle: one overall deadline per call."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from telephony.events import EVENT_BUDGET_SECONDS
from telephony.oauth import JWKS_TIMEOUT_SECONDS
from tests.e2e_hooks import HookStarter, RunningHook, hook_starter
from tests.helpers import EVENT_HOOK_SECRET, VERIFY_SERVICE_SID, first_reason, okta_request
from tests.okta_stand_in import OktaState, phone_factor
from tests.standins import TWILIO_PEER_SECONDS, StandIn, answering, http_answer, stand_in
from tests.test_e2e_hostile_callers import events_body, passed
from tests.test_oauth import AUDIENCE, ISSUER, KID, SCOPE, SIGNING_KEY, public_jwk, token
from tools.sandbox.twilio_sandbox import SandboxServer

pytestmark = pytest.mark.e2e

CHUNK, PAUSE = 20, 0.3  # 20 bytes every 0.3 s: no single read ever times out
THREADS_SMALL = 4


@pytest.fixture
def start(sandbox_server: SandboxServer, tmp_path: Path) -> Iterator[HookStarter]:
    yield from hook_starter(sandbox_server.base_url, tmp_path)


def test_a_trickling_twilio_gets_the_timeout_answer_at_the_deadline(
    twilio_peer_hook: RunningHook, twilio_peer: StandIn
) -> None:
    sid = "SM" + "0" * 32
    answer = http_answer(201, json.dumps({"sid": sid, "status": "queued", "body": "x" * 200}).encode())
    timeout = TWILIO_PEER_SECONDS  # the session's hook against twilio_peer (conftest)
    with answering(twilio_peer, answer, chunk=CHUNK, pause=PAUSE) as twilio:
        assert len(answer) / CHUNK * PAUSE > 3 * timeout  # it would finish far too late
        status, body, elapsed = twilio_peer_hook.post(okta_request(otpCode="200001"))  # a code of its own
        assert twilio.requests == 1
    assert status == 200
    assert first_reason(body) == "TWILIO_TIMEOUT"
    assert timeout <= elapsed < 2 * timeout


def test_a_trickling_jwks_holds_no_hook_past_the_fetch_deadline(start: HookStarter) -> None:
    document = json.dumps({"keys": [public_jwk(SIGNING_KEY, KID)]}).encode()
    with stand_in(http_answer(200, document), chunk=CHUNK, pause=PAUSE) as issuer:
        assert len(document) / CHUNK * PAUSE > 5 * JWKS_TIMEOUT_SECONDS
        hook = start(
            OKTA_HOOK_AUTH_SECRET="",
            OKTA_HOOK_OAUTH_ISSUER=ISSUER,
            OKTA_HOOK_OAUTH_AUDIENCE=AUDIENCE,
            OKTA_HOOK_OAUTH_SCOPE=SCOPE,
            OKTA_HOOK_OAUTH_JWKS_URL=issuer.base_url + "/keys",
        )
        valid = f"Bearer {token()}"
        with ThreadPoolExecutor(3) as pool:
            results = list(pool.map(lambda _: hook.post(okta_request(), secret=valid), range(3)))
    for status, body, elapsed in results:
        assert status == 503
        assert "error" in body
        # Each waits at most for one fetch's deadline, plus the lock's wait of the same length.
        assert elapsed < 3 * JWKS_TIMEOUT_SECONDS


def test_event_posts_waiting_on_a_slow_verify_leave_threads_for_oktas_codes(
    start: HookStarter, okta_api: OktaState, hanging_twilio: str
) -> None:
    """An event POST waits for its users' Verify updates (Cloud Run gives CPU to requests in flight), and
    shares the instance's threads with the telephony hook: POSTs waiting on a hung Verify must not take
    them all, or Okta's codes queue behind them, and the POSTs behind those pass Okta's 3 s."""
    users = [f"00u{index}aBcDeFgHiJkLmN" for index in range(THREADS_SMALL)]
    for index, user in enumerate(users):
        okta_api.factors[user] = [phone_factor(f"+1415555{index:04d}")]
    hook = start(
        THREADS=str(THREADS_SMALL),
        OKTA_EVENT_HOOK_AUTH_SECRET=EVENT_HOOK_SECRET,
        OKTA_ORG_URL=okta_api.url,
        OKTA_API_TOKEN=okta_api.token,
        TWILIO_VERIFY_SERVICE_SID=VERIFY_SERVICE_SID,
        TWILIO_API_BASE_URL=hanging_twilio,  # Verify's update hangs until its deadline
    )
    expired = okta_request(otpExpires="2020-01-01T00:00:00.000Z")  # answered without Twilio
    _, _, alone = hook.post(expired)
    bodies = [events_body(passed(user=user, enrolment=None)) for user in users]
    with ThreadPoolExecutor(len(users)) as pool:
        posts = [pool.submit(hook.post, body, EVENT_HOOK_SECRET, None, "okta/events") for body in bodies]
        time.sleep(0.3)  # every POST is in the worker, its user's update hanging
        status, answer, waited = hook.post(expired)
        answered = [post.result() for post in posts]
    assert status == 200 and first_reason(answer) == "OTP_EXPIRED"
    assert waited < max(10 * alone, 0.5)  # not queued behind the POSTs' 1.7 s updates
    assert [status for status, _, _ in answered] == [200] * len(users)
    assert max(elapsed for _, _, elapsed in answered) < EVENT_BUDGET_SECONDS + 0.3
