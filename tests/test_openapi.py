"""Our own contract: openapi.json is what the models say, and a live functions-framework process keeps
it under schemathesis: no 5xx, answers that conform, and no Twilio call for a request it refuses.

schemathesis builds each operation's cases (its coverage phase) when the test runs, in the one worker
that runs it: its pytest plugin would build them while collecting, in every worker."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e_hooks import SharedHooks
from tests.helpers import HOOK_SECRET, OTP, okta_request
from tools.openapi import DOCUMENT, ROUTES, render
from tools.sandbox.twilio_sandbox import SandboxServer, SandboxState

# The event hook shares the header secret here, so one Authorization header passes both routes.
LIVE = {"OKTA_EVENT_HOOK_AUTH_SECRET": HOOK_SECRET}

pytestmark = [pytest.mark.e2e, pytest.mark.prestart(**LIVE)]


def test_the_committed_document_is_the_one_the_models_generate() -> None:
    assert DOCUMENT.read_text() == render(), "openapi.json is out of date: run python -m tools.openapi"


def test_every_route_is_documented_with_its_answers() -> None:
    document = json.loads(DOCUMENT.read_text())
    for route in ROUTES:
        operation = document["paths"][route.path][route.method]
        assert set(operation["responses"]) == {str(status) for status in route.answers}
    assert document["openapi"] == "3.1.0"
    hook = document["paths"]["/"]["post"]
    assert hook["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/TelephonyHookRequest"
    }


@pytest.fixture(scope="module")
def live_hook(shared_hooks: SharedHooks) -> Iterator[str]:
    """functions-framework serving main.py against the sandbox, as Cloud Run runs it."""
    hook = shared_hooks.get(**LIVE)
    yield hook.url.rstrip("/")
    assert OTP not in hook.output()


@pytest.fixture(scope="module")
def published() -> Any:
    import schemathesis

    return schemathesis.openapi.from_path(str(DOCUMENT))


def checks() -> list[Any]:
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_headers_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    return [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_headers_conformance,
        response_schema_conformance,
    ]


@pytest.mark.parametrize("operation", [f"{route.method.upper()} {route.path}" for route in ROUTES])
def test_the_live_function_keeps_its_published_contract(
    operation: str, published: Any, live_hook: str, sandbox_server: SandboxServer
) -> None:
    """Every phase schemathesis's pytest plugin runs (the document's examples, its coverage cases,
    60 generated ones), built as the plugin builds them."""
    from hypothesis import HealthCheck, settings
    from schemathesis.checks import load_all_checks
    from schemathesis.generation.feedback import FeedbackSources
    from schemathesis.pytest._test_builder import build_operation_test
    from schemathesis.python._constants.orchestrator import make_constants_value_source

    sandbox: SandboxState = sandbox_server.state
    contract = checks()

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    def call(case: Any) -> None:
        before = len(sandbox.requests)
        response = case.call_and_validate(base_url=live_hook, headers={"Authorization": HOOK_SECRET}, checks=contract)
        assert response.status_code < 500
        if response.status_code >= 400:
            assert len(sandbox.requests) == before, "a refused request reached Twilio"
        if response.status_code == 200 and "commands" in response.json():
            assert len(sandbox.requests) == before + 1

    load_all_checks()
    method, path = operation.split(" ", 1)
    test = build_operation_test(
        config=published.config,
        operation=published[path][method],
        test_func=call,
        given_kwargs={},
        feedback=FeedbackSources(constants_value_source=make_constants_value_source(published)),
    )
    test()


def test_the_live_function_delivers_a_documented_example(
    published: Any, live_hook: str, sandbox_server: SandboxServer
) -> None:
    """The property above may meet few deliverable requests (random phone numbers are refused):
    one that must be delivered, checked against the same document."""
    case = published["/"]["POST"].Case(body=okta_request(), media_type="application/json")
    before = len(sandbox_server.state.requests)
    response = case.call_and_validate(base_url=live_hook, headers={"Authorization": HOOK_SECRET}, checks=checks())
    assert response.status_code == 200 and "commands" in response.json()
    assert len(sandbox_server.state.requests) == before + 1
