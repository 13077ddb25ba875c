"""A real functions-framework process against peers that trickle: one overall deadline per call."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from telephony.oauth import JWKS_TIMEOUT_SECONDS
from tests.e2e_hooks import HookStarter, RunningHook, hook_starter
from tests.helpers import first_reason, okta_request
from tests.standins import TWILIO_PEER_SECONDS, StandIn, answering, http_answer, stand_in
from tests.test_oauth import AUDIENCE, ISSUER, KID, SCOPE, SIGNING_KEY, public_jwk, token
from tools.sandbox.twilio_sandbox import SandboxServer

pytestmark = pytest.mark.e2e

CHUNK, PAUSE = 20, 0.3  # 20 bytes every 0.3 s: no single read ever times out


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
