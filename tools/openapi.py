"""Our own contract: the OpenAPI 3.1 document of the function's routes, generated from the pydantic models.

    python -m tools.openapi            # rewrite openapi.json
    python -m tools.openapi --check    # exit 1 when openapi.json differs from what the models say

The document is kept in the repository (tests/contracts/openapi.json) for Okta admins and for schemathesis, which
`make test` runs against a live functions-framework process; tests/test_openapi.py fails when the
committed document and the models drift apart. A route is one row of ROUTES.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from models import (
    ErrorResponse,
    EventHookAccepted,
    EventHookRequest,
    EventHookVerification,
    TelephonyHookRequest,
    TelephonyHookResponse,
)
from telephony.app import ROUTE_TYPES
from telephony.events import EventHook
from telephony.hook import TelephonyHook
from telephony.receipts import (
    CALL_STATUSES,
    MESSAGE_STATUSES,
    RECEIPT_MAX_BYTES,
    RECEIPT_READ_SECONDS,
    SIGNATURE_HEADER,
    STATUS_SHAPE,
    Receipts,
)

DOCUMENT = Path(__file__).resolve().parent.parent / "tests" / "contracts" / "openapi.json"
REF = "#/components/schemas/{model}"
JSON = "application/json"


@dataclass(frozen=True)
class Answer:
    """One documented status: what it means, and the models its JSON body may be (none: no body)."""

    description: str
    models: tuple[type[BaseModel], ...] = ()
    content_type: str = JSON
    headers: dict[str, str] = field(default_factory=dict)  # header name -> description


@dataclass(frozen=True)
class Route:
    path: str
    method: str
    summary: str
    description: str
    answers: dict[int, Answer]
    body: type[BaseModel] | None = None
    body_content_type: str = JSON
    body_schema: dict[str, Any] | None = None  # a body no model describes (Twilio's form)
    security: tuple[str, ...] = ()  # names in SECURITY_SCHEMES; any one of them is enough
    parameters: tuple[dict[str, Any], ...] = ()


OKTA_ERROR = (ErrorResponse,)

SECURITY_SCHEMES: dict[str, dict[str, Any]] = {
    "hookSecret": {
        "type": "apiKey",
        "in": "header",
        "name": "Authorization",
        "description": "Okta's HTTP-header authentication: the header (OKTA_HOOK_AUTH_HEADER, default "
        "Authorization) carries OKTA_HOOK_AUTH_SECRET verbatim.",
    },
    "eventHookSecret": {
        "type": "apiKey",
        "in": "header",
        "name": "Authorization",
        "description": "The event hook's HTTP-header authentication: the header (OKTA_EVENT_HOOK_AUTH_HEADER, "
        "default Authorization) carries OKTA_EVENT_HOOK_AUTH_SECRET verbatim.",
    },
    "twilioSignature": {
        "type": "apiKey",
        "in": "header",
        "name": SIGNATURE_HEADER,
        "description": "Twilio's request signature, keyed with the account's auth token (TWILIO_AUTH_TOKEN), "
        "over the public URL Twilio called and the form's parameters.",
    },
    "oktaOAuth": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "Okta's OAuth 2.0 authentication: an access token from the configured issuer "
        "(OKTA_HOOK_OAUTH_*).",
    },
}

# Twilio's status callback, as the receipt route reads it: the statuses are the route's own tables.
STATUS_CALLBACK_FORM: dict[str, Any] = {
    "type": "object",
    "properties": {
        "MessageSid": {"type": "string", "description": "The message's SID (SM… or MM…)."},
        "MessageStatus": {
            "type": "string",
            "pattern": f"^{STATUS_SHAPE.pattern}$",
            "examples": sorted(MESSAGE_STATUSES),
            "description": "One of Twilio's statuses, or one it adds later (recorded as named).",
        },
        "CallSid": {"type": "string", "description": "The call's SID (CA…)."},
        "CallStatus": {
            "type": "string",
            "pattern": f"^{STATUS_SHAPE.pattern}$",
            "examples": sorted(CALL_STATUSES),
            "description": "One of Twilio's call statuses, or one it adds later (recorded as named).",
        },
        "ErrorCode": {"type": "string", "pattern": "^[0-9]*$", "description": "Twilio's error code, if any."},
        "CallDuration": {"type": "string", "pattern": "^[0-9]*$", "description": "Seconds, for a call."},
        "To": {"type": "string", "description": "The recipient: read for its country, logged masked."},
        "AccountSid": {"type": "string"},
    },
    "description": "Form-encoded; Twilio sends more parameters (From, Body…), which the route never logs.",
}
NO_BODY = "No body."

ROUTES: tuple[Route, ...] = (
    Route(
        path=TelephonyHook.path,
        method="post",
        summary="Okta's telephony inline hook: deliver one SMS or voice one-time code through Twilio",
        description="Every path other than the function's own routes is this hook. Okta waits 3 s; any "
        "answer but 200 with `commands` makes Okta send the code through its own provider.",
        body=TelephonyHookRequest,
        security=("hookSecret", "oktaOAuth"),
        answers={
            200: Answer(
                "Delivered (`commands`), or refused with Okta's error object, which makes Okta fall back.",
                (TelephonyHookResponse, ErrorResponse),
            ),
            400: Answer("The request is not a telephony hook request; each bad field is named.", OKTA_ERROR),
            401: Answer("Authentication failed, or none is configured (fail closed).", OKTA_ERROR),
            403: Answer("The OAuth token lacks the required scope.", OKTA_ERROR),
            405: Answer("Only POST is served.", OKTA_ERROR, headers={"Allow": "POST"}),
            413: Answer("The body is over 64 KiB.", OKTA_ERROR),
            503: Answer("The OAuth issuer's keys cannot be fetched right now.", OKTA_ERROR),
        },
    ),
    Route(
        path=Receipts.path,
        method="post",
        summary="Twilio's delivery receipts: one log line per status callback",
        description="Asked for by every Messages and Calls create (not Verify), when TWILIO_AUTH_TOKEN and "
        "PUBLIC_URL are set; accepted only when signed for PUBLIC_URL. Answered at once; nothing external is called.",
        body_content_type="application/x-www-form-urlencoded",
        body_schema=STATUS_CALLBACK_FORM,
        security=("twilioSignature",),
        answers={
            204: Answer("Logged. " + NO_BODY),
            400: Answer("Not a form, no SID, or an unknown status. " + NO_BODY),
            403: Answer("No signature, a wrong one, or receipts are off. " + NO_BODY),
            408: Answer(f"The body did not arrive within {RECEIPT_READ_SECONDS:g} s. " + NO_BODY),
            413: Answer(f"The body is over {RECEIPT_MAX_BYTES // 1024} KiB. " + NO_BODY),
            503: Answer(
                "As many receipts as allowed were being read: refused unread; Retry-After says when. " + NO_BODY
            ),
        },
    ),
    Route(
        path=EventHook.path,
        method="get",
        summary="Okta's one-time verification of the event hook",
        description="Okta sends the header secret on this GET too.",
        security=("eventHookSecret",),
        parameters=(
            {
                "name": "X-Okta-Verification-Challenge",
                "in": "header",
                "required": True,
                "schema": {"type": "string"},
                "description": "Echoed as `verification`.",
            },
        ),
        answers={
            200: Answer("The challenge, echoed.", (EventHookVerification,)),
            400: Answer("No challenge header.", OKTA_ERROR),
            401: Answer("Authentication failed, or none is configured (fail closed).", OKTA_ERROR),
        },
    ),
    Route(
        path=EventHook.path,
        method="post",
        summary="Okta's event hook: Verify feedback for users who passed an SMS or voice challenge",
        description="Each matching event approves the user's pending Twilio Verify verification. Answered "
        "within Okta's 3 s; an event whose calls are still running finishes on its own deadline.",
        body=EventHookRequest,
        security=("eventHookSecret",),
        answers={
            200: Answer("Handled.", (EventHookAccepted,)),
            400: Answer("Not an event hook delivery; each bad field is named.", OKTA_ERROR),
            401: Answer("Authentication failed, or none is configured (fail closed).", OKTA_ERROR),
            413: Answer("The body is over 512 KiB.", OKTA_ERROR),
        },
    ),
)


def _schema_ref(model: type[BaseModel], mode: JsonSchemaMode, names: dict[Any, Any]) -> Any:
    return names[(model, mode)]


def generate() -> dict[str, Any]:
    """The document, from ROUTES and the models they name: every path the function routes, and only those."""
    documented_paths = {route.path for route in ROUTES}
    routed = {kind.path for kind in ROUTE_TYPES}
    if documented_paths != routed:
        raise SystemExit(f"tools/openapi.py documents {sorted(documented_paths)}, the function routes {sorted(routed)}")
    wanted: list[tuple[type[BaseModel], JsonSchemaMode]] = []
    for route in ROUTES:
        if route.body is not None:
            wanted.append((route.body, "validation"))
        wanted.extend((model, "serialization") for answer in route.answers.values() for model in answer.models)
    unique = list(dict.fromkeys(wanted))
    names, definitions = models_json_schema(unique, by_alias=True, ref_template=REF)
    paths: dict[str, Any] = {}
    for route in ROUTES:
        operation: dict[str, Any] = {"summary": route.summary, "description": route.description}
        if route.parameters:
            operation["parameters"] = list(route.parameters)
        if route.body is not None or route.body_schema is not None:
            body = _schema_ref(route.body, "validation", names) if route.body is not None else route.body_schema
            operation["requestBody"] = {"required": True, "content": {route.body_content_type: {"schema": body}}}
        if route.security:
            operation["security"] = [{name: []} for name in route.security]
        responses: dict[str, Any] = {}
        for status, answer in sorted(route.answers.items()):
            documented: dict[str, Any] = {"description": answer.description}
            if answer.models:
                refs = [_schema_ref(model, "serialization", names) for model in answer.models]
                schema = refs[0] if len(refs) == 1 else {"oneOf": refs}
                documented["content"] = {answer.content_type: {"schema": schema}}
            if answer.headers:
                documented["headers"] = {
                    name: {"description": text, "schema": {"type": "string"}} for name, text in answer.headers.items()
                }
            responses[str(status)] = documented
        operation["responses"] = responses
        paths.setdefault(route.path, {})[route.method] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Okta telephony inline hook (Twilio)",
            "version": "1",
            "description": "Generated by tools/openapi.py from models.py: do not edit by hand.",
        },
        "paths": paths,
        "components": {"schemas": definitions.get("$defs", {}), "securitySchemes": SECURITY_SCHEMES},
    }


def render() -> str:
    return json.dumps(generate(), indent=1, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Generate openapi.json from the models.")
    parser.add_argument("--check", action="store_true", help="only report whether openapi.json is up to date")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if DOCUMENT.read_text() != text:
            sys.exit(f"{DOCUMENT.name} is out of date: run python -m tools.openapi")
        return
    DOCUMENT.write_text(text)
    print(f"wrote {DOCUMENT.name}")


if __name__ == "__main__":
    main()
