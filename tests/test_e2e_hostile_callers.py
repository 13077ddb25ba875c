"""A real functions-framework process against hostile callers of the receipts route: uploads that
stall, receipts signed for another deployment."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from telephony.receipts import RECEIPT_MAX_BYTES, RECEIPT_READ_SECONDS
from tests.e2e_hooks import HookStarter, RunningHook, hook_starter
from tests.helpers import message_receipt, okta_request, twilio_signature
from tests.test_e2e_stalls import read_answer
from tools.sandbox.twilio_sandbox import SandboxServer

pytestmark = pytest.mark.e2e

THREADS = 4


@pytest.fixture
def start(sandbox_server: SandboxServer, tmp_path: Path) -> Iterator[HookStarter]:
    yield from hook_starter(sandbox_server.base_url, tmp_path)


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


def test_threads_full_of_stalled_signed_receipts_do_not_delay_a_valid_hook(start: HookStarter) -> None:
    hook = start(THREADS=str(THREADS))
    _, _, alone = hook.post(okta_request())
    with ExitStack() as stack:
        stalled = [stalled_receipt(hook, stack, 3 * RECEIPT_READ_SECONDS) for _ in range(2 * THREADS)]
        time.sleep(0.2)  # every one of them is in the worker by now
        status, answer, elapsed = hook.post(okta_request(), timeout=5)
        answered = [read_answer(connection)[0] for connection in stalled]
    assert status == 200 and answer["commands"][0]["value"][0]["status"] == "SUCCESSFUL"
    assert elapsed < max(10 * alone, 1.0)
    # Some were read until their deadline (408); the rest were refused at once, unread (503).
    assert set(answered) <= {408, 503} and 408 in answered and 503 in answered


def test_a_trickled_receipt_is_cut_at_its_deadline(start: HookStarter) -> None:
    hook = start()
    with ExitStack() as stack:
        started = time.monotonic()
        connection = stalled_receipt(hook, stack, 3 * RECEIPT_READ_SECONDS)
        status, _, closed = read_answer(connection)
        elapsed = time.monotonic() - started
    assert status == 408 and closed
    assert RECEIPT_READ_SECONDS <= elapsed < 1.5 * RECEIPT_READ_SECONDS
    [line] = [line for line in lines(hook) if line.get("outcome") == "receipt_too_slow"]
    assert line["http_status"] == 408


def test_a_receipt_over_the_small_cap_is_refused_unread(start: HookStarter) -> None:
    hook = start()
    form = {**message_receipt(), "Pad": "x" * RECEIPT_MAX_BYTES}
    url = hook.url + "twilio/status"
    assert post_receipt(hook, form, twilio_signature(url, form), {}) == 413


# ------------------------------------------------------------------ item 6: whose URL a receipt is signed for


OTHER_DEPLOYMENT = "other-deployment-abc-uc.a.run.app"


def test_without_public_url_a_receipt_signed_for_another_deployment_is_refused(start: HookStarter) -> None:
    hook = start(PUBLIC_URL="")
    form = message_receipt("undelivered", ErrorCode="30007")
    signature = twilio_signature(f"https://{OTHER_DEPLOYMENT}/twilio/status", form)
    headers = {"Host": OTHER_DEPLOYMENT, "X-Forwarded-Proto": "https"}
    assert post_receipt(hook, form, signature, headers) == 403
    logged = lines(hook)
    assert not [line for line in logged if line.get("outcome") == "receipt_not_delivered"]
    assert any("Delivery receipts are off: PUBLIC_URL is not set" in line["message"] for line in logged)
    _, answer, _ = hook.post(okta_request())
    assert answer["commands"][0]["value"][0]["status"] == "SUCCESSFUL"


def test_with_public_url_only_a_receipt_signed_for_it_is_accepted(start: HookStarter) -> None:
    hook = start()  # PUBLIC_URL is the process's own URL
    form = message_receipt("undelivered", ErrorCode="30007")
    forged = twilio_signature(f"https://{OTHER_DEPLOYMENT}/twilio/status", form)
    headers = {"Host": OTHER_DEPLOYMENT, "X-Forwarded-Proto": "https"}
    assert post_receipt(hook, form, forged, headers) == 403
    assert post_receipt(hook, form, twilio_signature(hook.url + "twilio/status", form), {}) == 204
