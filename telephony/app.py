"""One way in for every route: what each request needs, done once.

A route says only what it decides: `handle(request) -> Answer`, or it raises `Refused`. The wrapper
here does the rest, the same for all: the trace scope of the log lines, the marking of the caller's
credentials as sensitive, the catch-all answer in Okta's shape, one log line per request (`outcome`,
`http_status`, `duration_ms`), the response, and `intake.finish`, so a refused upload is never read.
"""

from __future__ import annotations

import contextvars
import logging
import time
from collections.abc import Callable, Iterator
from typing import Protocol

import flask

from telephony.answers import Answer, Refused, internal_error
from telephony.events import EventHook
from telephony.guard import SpendGuard
from telephony.hook import TelephonyHook
from telephony.intake import finish
from telephony.logs import mark_sensitive, request_scope
from telephony.receipts import Receipts
from telephony.settings import Settings


class Route(Protocol):
    name: str  # in the route's refusals and log lines: "telephony hook"
    path: str
    log: logging.Logger
    credential_headers: tuple[str, ...]  # never written in a log line, whatever the request turns out to be

    def handle(self, request: flask.Request) -> Answer: ...

    def startup_report(self) -> list[tuple[int, str]]: ...


# The function's routes, by path; any other path is Okta's telephony hook (`/`). tools/openapi.py
# documents exactly these.
ROUTE_TYPES = (TelephonyHook, EventHook, Receipts)


class App:
    """The function's routes, built once per instance from the settings."""

    def __init__(self, settings: Settings) -> None:
        self._project = settings.google_cloud_project
        guard = SpendGuard(settings)  # the hook asks it before each code; the event hook reports conversions
        receipts = Receipts(settings, claims=guard)  # each receipt counted once, through the guard's store
        self.hook = TelephonyHook(settings, receipts.callback_url, guard)  # its codes ask for receipts
        # Its events are acted on once through the guard's store: across instances when that is Redis.
        events = EventHook(settings, claims=guard, guard=guard)
        built: dict[type, Route] = {TelephonyHook: self.hook, EventHook: events, Receipts: receipts}
        self.routes = {kind.path: built[kind] for kind in ROUTE_TYPES}

    def report_startup(self) -> None:
        for route in self.routes.values():
            for level, line in route.startup_report():
                route.log.log(level, line)

    def route_for(self, path: str) -> Route:
        """Paths match without a trailing slash: '/okta/events/' is the event hook."""
        return self.routes.get(path.rstrip("/") or "/", self.hook)

    def __call__(self, request: flask.Request) -> flask.Response:
        started = time.perf_counter()
        route = self.route_for(request.path)
        headers = request.headers
        with request_scope(self._project, headers.get("X-Cloud-Trace-Context"), headers.get("traceparent")):
            for name in route.credential_headers:
                credentials = headers.get(name, "")
                mark_sensitive(credentials)
                mark_sensitive(credentials.partition(" ")[2])  # the token alone, without 'Bearer' or 'Basic'
            try:
                answer = route.handle(request)
            except Refused as refusal:
                answer = refusal.answer
            except Exception:  # a bug of ours: still an answer in Okta's shape, logged without the payload
                route.log.exception(f"{route.name} failed unexpectedly")
                answer = internal_error(route.name)
            fields = {**answer.log_fields, "outcome": answer.outcome, "http_status": answer.status}
            fields["duration_ms"] = round((time.perf_counter() - started) * 1000, 1)
            message = f"{route.name} {answer.outcome}" + (f": {answer.note}" if answer.note else "")
            route.log.log(answer.outcome.severity, message, extra={"fields": fields})
            context = contextvars.copy_context()  # the request's scope, for what runs after the answer
        response = flask.Response(answer.json(), answer.status, answer.headers, mimetype="application/json")
        if answer.body is None:  # an empty answer (receipts) has no type: not Flask's text/html
            del response.headers["Content-Type"]
        if answer.after_sent:
            payload = response.get_data()
            response.response = _sent_then(payload, answer.after_sent, context, route.log)
            response.headers["Content-Length"] = str(len(payload))
        return finish(request, response)


def _sent_then(
    payload: bytes, tasks: tuple[Callable[[], None], ...], context: contextvars.Context, log: logging.Logger
) -> Iterator[bytes]:
    """The answer's body, then its bookkeeping: the server writes the body (its length is declared, so
    the caller has it whole) before it asks for more, which runs the tasks in the request's scope."""
    yield payload
    for task in tasks:
        try:
            context.run(task)
        except Exception:  # a bug of ours: the answer is out already, the next task still runs
            context.run(log.exception, "work after the answer failed")
