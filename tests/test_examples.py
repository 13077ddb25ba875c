"""examples/: each body is what Okta sends, the sandbox variants differ from their base in the number
only, the event hook's user is the one `make run`'s Okta stand-in knows, and examples/README.md
documents every file. What each gives under `make run` is tested in tests/test_run_local.py."""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from models import EventHookRequest, parse_hook_request
from telephony.events import passed_challenge, user_of
from tests.helpers import ROOT
from tests.test_run_local import EVENT_HOOK_EXAMPLE, EXPECTED
from tools.sandbox.okta_stand_in import EXAMPLE_PHONE, EXAMPLE_USER_ID, example_factors
from tools.sandbox.twilio_sandbox import MAGIC_TO, RECEIPT_MAGIC_TO

EXAMPLES = ROOT / "examples"
TELEPHONY = sorted(EXPECTED)


def example(name: str) -> dict[str, object]:
    return dict(json.loads((EXAMPLES / name).read_text()))


def test_every_example_is_tested_and_documented() -> None:
    files = {str(path.relative_to(EXAMPLES)) for path in EXAMPLES.rglob("*.json")}
    assert files == {*EXPECTED, EVENT_HOOK_EXAMPLE}
    readme = (EXAMPLES / "README.md").read_text()
    assert [name for name in sorted(files) if f"`{name}`" not in readme] == []


@pytest.mark.parametrize("name", TELEPHONY)
def test_each_telephony_example_is_a_valid_okta_request(name: str) -> None:
    hook = parse_hook_request((EXAMPLES / name).read_bytes(), None)
    assert hook.data.message_profile.otp_code == "482913"


@pytest.mark.parametrize("name", [name for name in TELEPHONY if name.startswith("sandbox/")])
def test_each_sandbox_variant_is_its_base_with_a_magic_number(name: str) -> None:
    variant = example(name)
    base = example("okta-voice-request.json" if "voice" in name else "okta-sms-request.json")
    number = variant["data"]["messageProfile"].pop("phoneNumber")  # type: ignore[index]
    base["data"]["messageProfile"].pop("phoneNumber")  # type: ignore[index]
    assert variant == base
    assert number in MAGIC_TO or number in RECEIPT_MAGIC_TO


def test_the_event_hook_example_names_the_user_the_okta_stand_in_knows() -> None:
    hook = EventHookRequest.model_validate_json((EXAMPLES / EVENT_HOOK_EXAMPLE).read_bytes())
    assert hook.event_type == "com.okta.event_hook"
    (event,) = hook.data.events
    assert event.event_type == "user.authentication.auth_via_mfa"
    passed = passed_challenge(event)
    assert passed is not None and passed.factor_type == "sms" and passed.user_id == EXAMPLE_USER_ID
    assert user_of(event) == EXAMPLE_USER_ID
    assert example("okta-sms-request.json")["data"]["userProfile"]["userId"] == EXAMPLE_USER_ID  # type: ignore[index]
    (factor,) = example_factors()[EXAMPLE_USER_ID]
    assert factor["profile"]["phoneNumber"] == EXAMPLE_PHONE
    assert example("okta-sms-request.json")["data"]["messageProfile"]["phoneNumber"] == EXAMPLE_PHONE  # type: ignore[index]


def test_a_test_not_marked_e2e_cannot_start_a_process(request: pytest.FixtureRequest) -> None:
    """The guard that keeps `make unit` in-process (tests/process_guard.py), tried on itself."""
    with pytest.raises(RuntimeError, match=re.escape(f"{request.node.nodeid} starts a process (subprocess.Popen)")):
        subprocess.run(["true"], check=False, timeout=5)
