"""Shared fixtures: Okta payloads, the Twilio sandbox, and the hook configured against it."""

from __future__ import annotations

import copy
import json
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from functions_framework import create_app

from sandbox.twilio_sandbox import (
    DEFAULT_ACCOUNT_SID,
    DEFAULT_AUTH_TOKEN,
    SandboxServer,
    SandboxState,
    start_in_thread,
)
from settings import env_names

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"


# Distinctive values, so a leak is found by a plain substring search.
HOOK_SECRET = "hook-secret-Zq8wX!v2"
OTP = "482913"
PHONE = "+14155550123"
PHONE_MASKED = "+1******0123"
FROM_NUMBER = "+15005550006"
FUTURE = "2099-12-31T23:59:59.000Z"

# Every variable the hook reads, plus the two twilio reads itself: cleared so the machine's own do not leak in.
HOOK_ENV_NAMES = (*env_names(all_spellings=True), "TWILIO_REGION", "TWILIO_EDGE")


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


@pytest.fixture(scope="session")
def sandbox_server() -> Iterator[SandboxServer]:
    server = start_in_thread(SandboxState(quiet=True))
    yield server
    server.shutdown()


@pytest.fixture
def sandbox(sandbox_server: SandboxServer) -> SandboxState:
    """The running sandbox, emptied of earlier tests' requests, no latency, default credentials."""
    state = sandbox_server.state
    state.requests.clear()
    state.latency_seconds = 0.0
    state.api_key = state.api_secret = None
    return state


@pytest.fixture
def hook_env(monkeypatch: pytest.MonkeyPatch, sandbox_server: SandboxServer, sandbox: SandboxState) -> dict[str, str]:
    """A complete configuration against the sandbox; tests change it with monkeypatch.setenv/delenv."""
    for name in HOOK_ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
    env = sandbox_env(sandbox_server.base_url)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


AppFactory = Callable[..., FlaskClient]


@pytest.fixture
def make_client(hook_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> AppFactory:
    """Build the function as functions-framework does, after applying env overrides (None unsets)."""

    def build(**overrides: str | None) -> FlaskClient:
        for name, value in overrides.items():
            if value is None:
                monkeypatch.delenv(name, raising=False)
            else:
                monkeypatch.setenv(name, value)
        return create_app("telephony_hook", str(ROOT / "main.py")).test_client()

    return build


@pytest.fixture
def client(make_client: AppFactory) -> FlaskClient:
    return make_client()


def post_hook(client: FlaskClient, body: Any, secret: str | None = HOOK_SECRET, **headers: str) -> Any:
    """POST like Okta does; returns the Flask test response."""
    sent = dict(headers)
    if secret is not None:
        sent["Authorization"] = secret
    if isinstance(body, bytes | str):
        return client.post("/", data=body, headers=sent, content_type="application/json")
    return client.post("/", json=body, headers=sent)


@pytest.fixture
def hanging_twilio() -> Iterator[str]:
    """A port that accepts connections (the kernel does) and never answers: a hung Twilio."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(128)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


@pytest.fixture
def closed_port() -> str:
    """A port nobody listens on: Twilio unreachable."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"
