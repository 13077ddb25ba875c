"""What the tests share: Okta payloads, distinctive values, the hook's configuration, and readers of answers."""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from flask.testing import FlaskClient

from models import MessageProfile, parse_hook_request
from telephony.settings import env_names
from tools.sandbox.twilio_sandbox import DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"


# Distinctive values, so a leak is found by a plain substring search.
HOOK_SECRET = "hook-secret-Zq8wX!v2"
OTP = "482913"
PHONE = "+14155550123"
PHONE_MASKED = "+1******0123"
FROM_NUMBER = "+15005550006"
FUTURE = "2099-12-31T23:59:59.000Z"
EVENT_HOOK_SECRET = "event-hook-secret-Kp3#rT9"
OKTA_API_TOKEN = "00okta-api-token-Wm4vQ7"
VERIFY_SERVICE_SID = "VA" + "7e" * 16
OKTA_USER_ID = "00ub0oNGTSWTBKOLGLNR"

# Every variable the hook reads: cleared so the machine's own do not leak in.
HOOK_ENV_NAMES = tuple(env_names(all_spellings=True))


def sandbox_env(base_url: str, **overrides: str) -> dict[str, str]:
    """A complete configuration of the hook against the sandbox at `base_url`."""
    return {
        "OKTA_HOOK_AUTH_SECRET": HOOK_SECRET,
        "TWILIO_ACCOUNT_SID": DEFAULT_ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": DEFAULT_AUTH_TOKEN,
        "TWILIO_FROM_NUMBER": FROM_NUMBER,
        "TWILIO_API_BASE_URL": base_url,
        **overrides,
    }


def load_fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def okta_request(**message_profile: Any) -> dict[str, Any]:
    """Okta's documented Preview request, with a future expiry, our number and code; overrides applied."""
    body = copy.deepcopy(load_fixture("okta_request_preview_sms.json"))
    profile = body["data"]["messageProfile"]
    profile.update(phoneNumber=PHONE, otpCode=OTP, otpExpires=FUTURE, msgTemplate=f"(HOOK)Your code is {OTP}")
    for key, value in message_profile.items():
        if value is None:
            profile.pop(key, None)
        else:
            profile[key] = value
    return body


def profile(**fields: Any) -> MessageProfile:
    """The message profile of `okta_request(**fields)`, parsed as the hook parses it."""
    return parse_hook_request(json.dumps(okta_request(**fields)).encode(), None).data.message_profile


AppFactory = Callable[..., FlaskClient]


def post_hook(client: FlaskClient, body: Any, secret: str | None = HOOK_SECRET, **headers: str) -> Any:
    """POST like Okta does; returns the Flask test response."""
    sent = dict(headers)
    if secret is not None:
        sent["Authorization"] = secret
    if isinstance(body, bytes | str):
        return client.post("/", data=body, headers=sent, content_type="application/json")
    return client.post("/", json=body, headers=sent)


def first_reason(answer: dict[str, Any]) -> str:
    """The reason of the first cause of an Okta error answer, or of its `error` object."""
    error = answer.get("error", answer)
    return str(error["errorCauses"][0]["reason"])


# ------------------------------------------------------------------------------ delivery receipts

RECEIPT_URL = "http://localhost/twilio/status"  # what the Flask test client calls


def twilio_signature(
    url: str, form: dict[str, str] | list[tuple[str, str]], auth_token: str = DEFAULT_AUTH_TOKEN
) -> str:
    """Twilio's documented algorithm, written out here so the tests do not trust the library alone:
    HMAC-SHA1 of the URL followed by each parameter's name and value, sorted by name, in base64. A
    parameter given more than once signs each of its values, sorted (as Twilio's libraries do)."""
    pairs = list(form.items()) if isinstance(form, dict) else form
    signed = url + "".join(
        name + value for name in sorted({n for n, _ in pairs}) for value in sorted({v for n, v in pairs if n == name})
    )
    return base64.b64encode(hmac.new(auth_token.encode(), signed.encode(), hashlib.sha1).digest()).decode()


def message_receipt(status: str = "delivered", **extra: str) -> dict[str, str]:
    """A message's status callback as Twilio posts it."""
    sid = "SM" + "c" * 32
    return {
        "AccountSid": DEFAULT_ACCOUNT_SID, "ApiVersion": "2010-04-01", "From": FROM_NUMBER, "To": PHONE,
        "MessageSid": sid, "SmsSid": sid, "MessageStatus": status, "SmsStatus": status, **extra,
    }  # fmt: skip


def call_receipt(status: str = "completed", **extra: str) -> dict[str, str]:
    """A call's status callback as Twilio posts it."""
    return {
        "AccountSid": DEFAULT_ACCOUNT_SID, "ApiVersion": "2010-04-01", "From": FROM_NUMBER, "To": PHONE,
        "CallSid": "CA" + "d" * 32, "CallStatus": status, "Direction": "outbound-api", **extra,
    }  # fmt: skip


def post_receipt(
    client: FlaskClient,
    form: dict[str, str] | list[tuple[str, str]],
    *,
    signed_url: str = RECEIPT_URL,
    path: str = "/twilio/status",
    signature: str | None = None,
    **headers: str,
) -> Any:
    """POST a receipt like Twilio, signed over `signed_url` unless `signature` is given ('' sends none).
    `form` as pairs may give a field more than once."""
    sent = dict(headers)
    value = twilio_signature(signed_url, form) if signature is None else signature
    if value:
        sent["X-Twilio-Signature"] = value
    body = urlencode(form)
    return client.post(path, data=body, headers=sent, content_type="application/x-www-form-urlencoded")
