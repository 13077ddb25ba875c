"""Okta telephony inline hook: Okta's SMS and voice one-time codes, delivered through Twilio.

For every code Okta POSTs a JSON request and waits up to 3 s. We authenticate the call, parse it,
check the code may be sent, hand it to Twilio, and answer SUCCESSFUL with Twilio's SID, or with
Okta's error object, which makes Okta fall back to its own provider.
"""

from __future__ import annotations

from telephony.startup import paused_collector

with paused_collector():  # everything built here lives as long as the process
    import logging
    import time
    from collections.abc import Callable
    from datetime import UTC, datetime
    from typing import Any

    import flask
    import functions_framework
    from pydantic import ValidationError

    from models import KNOWN_REQUEST_TYPES, TelephonyHookRequest, parse_hook_request
    from telephony.answers import (
        Answer,
        HookRefused,
        body_too_large,
        internal_error,
        invalid_request,
        method_not_allowed,
    )
    from telephony.auth import Authenticator
    from telephony.delivery import TwilioDelivery, build_client
    from telephony.events import EventHook
    from telephony.guard import Passage, SpendGuard
    from telephony.intake import declared_too_large, finish, read_body
    from telephony.logs import configure_logging, hook_scope, mark_sensitive
    from telephony.phone import mask
    from telephony.policy import DeliveryPolicy
    from telephony.receipts import RECEIPTS_PATH, Receipts
    from telephony.settings import load_settings

    # Built once per instance and reused by every request it serves.
    settings = load_settings()
    configure_logging(settings.secret_values())
    log = logging.getLogger("telephony_hook")
    authenticator = Authenticator.from_settings(settings)
    policy = DeliveryPolicy(settings)
    guard = SpendGuard(settings)  # SMS pumping: limits per number, range and country
    delivery = TwilioDelivery(settings, build_client(settings))
    okta_events = EventHook(settings, guard)  # conversions for the guard, Verify feedback
    receipts = Receipts(settings)

    if not authenticator.configured:
        log.critical(
            "No hook authentication configured (OKTA_HOOK_AUTH_SECRET or OKTA_HOOK_OAUTH_*): every call is refused."
        )
    if okta_events.configured and okta_events.missing:
        log.critical(f"Verify feedback (/okta/events) cannot work: the function is missing {okta_events.missing}.")
    if not settings.allowed_countries:
        log.warning(
            "ALLOWED_COUNTRIES is empty: codes go to every country, the toll-fraud guard rests on"
            " BLOCKED_NUMBER_TYPES alone (non-geographic numbers stay refused unless it lists 001)."
        )
    for channel, missing in delivery.missing.items():
        if missing:
            log.critical(f"No {channel} code can be sent: the hook is missing {missing}.")
    log.log(logging.INFO if receipts.on else logging.WARNING, receipts.startup_message())
    log.log(guard.startup_level, guard.startup_message())


# The function's other routes, by exact path; every other path is Okta's telephony hook. A route
# refuses before reading the body, reads it only through intake.read_body, and its answer passes
# through intake.finish, so a refused upload is never read.
ROUTES: dict[str, Callable[[flask.Request], flask.Response]] = {
    "/okta/events": okta_events,
    RECEIPTS_PATH: receipts.handle,  # Twilio's delivery receipts
}


@functions_framework.http
def telephony_hook(request: flask.Request) -> flask.Response:
    """Okta's telephony inline hook endpoint (and the entry point of the function's other routes)."""
    route = ROUTES.get(request.path)
    if route is not None:
        return finish(request, route(request))
    started = time.perf_counter()
    headers = request.headers
    with hook_scope(settings.google_cloud_project, headers.get("X-Cloud-Trace-Context"), headers.get("traceparent")):
        facts: dict[str, Any] = {}
        try:
            answer = handle(request, facts)
        except HookRefused as refusal:
            answer = refusal.answer
        except Exception:  # a bug of ours: still answer in Okta's shape, and log without the payload
            log.exception("telephony hook failed unexpectedly")
            answer = internal_error().answer
        log_hook(answer, facts, started)
        response = flask.Response(answer.json(), answer.status, answer.headers, mimetype="application/json")
        return finish(request, response)


def handle(request: flask.Request, facts: dict[str, Any]) -> Answer:
    """Authenticate, parse, check, deliver: each step answers Okta by raising HookRefused."""
    if request.method != "POST":
        raise method_not_allowed()
    for scheme_header in {settings.okta_hook_auth_header, "Authorization"}:
        credentials = request.headers.get(scheme_header, "")
        mark_sensitive(credentials)
        mark_sensitive(credentials.partition(" ")[2])  # the token alone, without 'Bearer' or 'Basic'
    if declared_too_large(request):
        raise body_too_large()
    authenticator.verify(request.headers)
    hook = parse(request)
    profile = hook.data.message_profile
    masked = mask(profile.phone_number)
    mark_sensitive(profile.otp_code)
    mark_sensitive(profile.phone_number, masked)
    mark_sensitive(profile.phone_number[1:], masked)
    facts.update(request_facts(hook), phone=masked)
    number = policy.check(profile, datetime.now(UTC))
    facts.update(country=number.country, number_type=number.number_type)
    if number.e164 != profile.phone_number:  # Twilio gets the number the guard checked, not the caller's spelling
        masked = mask(number.e164)
        mark_sensitive(number.e164, masked)
        mark_sensitive(number.e164[1:], masked)
        facts["phone"] = masked
        profile = profile.model_copy(update={"phone_number": number.e164})
    passage = guard.admit(profile, number, hook.request_type, facts)
    if not isinstance(passage, Passage):
        return passage  # Okta's retry of a code already sent: the first call's answer, nothing sent
    try:
        answer = delivery.deliver(profile, receipts.callback_url(request))
    except Exception:  # not sent: its room goes back, and Okta's retry is a new attempt
        guard.failed(passage)
        raise
    guard.delivered(passage, answer)
    return answer


def parse(request: flask.Request) -> TelephonyHookRequest:
    body = read_body(request)
    try:
        return parse_hook_request(body, settings.default_country)
    except ValidationError as error:
        raise invalid_request(error) from None


def request_facts(hook: TelephonyHookRequest) -> dict[str, Any]:
    """What the log line says about the request: never the code, a name, a login or a number.
    Free-text fields are clipped: they come from the caller, and a log line should stay a line."""
    profile = hook.data.message_profile
    return {
        "event_id": (hook.event_id or "")[:64] or None,
        "request_type": (hook.request_type or "")[:128] or None,
        "request_type_known": hook.request_type in KNOWN_REQUEST_TYPES,
        "channel": profile.delivery_channel,
        "locale": (profile.locale or "")[:35] or None,
        "preview": hook.is_preview,
    }


def log_hook(answer: Answer, facts: dict[str, Any], started: float) -> None:
    """One line per hook: what an admin needs when a user says 'I got no code'."""
    fields = {**facts, **answer.log_fields, "outcome": answer.outcome, "http_status": answer.status}
    fields["duration_ms"] = round((time.perf_counter() - started) * 1000, 1)
    message = f"telephony hook {answer.outcome}"
    if "phone" in facts:
        message += f": {facts['channel']} to {facts['phone']}"
    log.log(answer.outcome.severity, message, extra={"fields": fields})
