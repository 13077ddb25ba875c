"""One logger setup for the whole process: JSON lines Cloud Logging understands, scrubbed of secrets.

Every line, ours or a library's, passes through `CloudLoggingFormatter`, which removes the configured
secrets and whatever the current hook marked as sensitive (its OTP, its phone number). Code should
not log those values in the first place; this is the net under that rule.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, NamedTuple

REDACTED = "[redacted]"

# Python's level names are Cloud Logging's severities, except these.
_SEVERITY = {"WARNING": "WARNING", "CRITICAL": "CRITICAL", "NOTSET": "DEFAULT"}


class _HookScope(NamedTuple):
    trace: str | None
    span_id: str | None
    replacements: list[tuple[str, str]]  # appended to while the hook runs


_scope: ContextVar[_HookScope | None] = ContextVar("hook_log_scope", default=None)


class CloudLoggingFormatter(logging.Formatter):
    """One JSON object per line: severity, message, trace, and the record's structured fields."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self._secrets = [secret for secret in secrets if secret]

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "severity": _SEVERITY.get(record.levelname, record.levelname),
            "message": record.getMessage(),
            "logger": record.name,
        }
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        scope = _scope.get()
        if scope and scope.trace:
            entry["logging.googleapis.com/trace"] = scope.trace
            if scope.span_id:
                entry["logging.googleapis.com/spanId"] = scope.span_id
        return self.scrub(json.dumps(entry, default=str, ensure_ascii=False))

    def scrub(self, line: str) -> str:
        for secret in self._secrets:
            line = line.replace(secret, REDACTED)
        scope = _scope.get()
        for value, replacement in scope.replacements if scope else ():
            line = _replace_whole(line, value, replacement)
        return line


class _StdoutHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stdout is at the time of writing (test captures replace it)."""

    @property
    def stream(self) -> Any:
        return sys.stdout

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def configure_logging(secrets: list[str]) -> None:
    """Route every logger to stdout as scrubbed JSON lines (Cloud Run collects stdout)."""
    # JSON escapes some characters; scrub the escaped spelling of each secret as well.
    spellings = {spelling for secret in secrets for spelling in (secret, json.dumps(secret)[1:-1])}
    handler = _StdoutHandler()
    handler.setFormatter(CloudLoggingFormatter(sorted(spellings, key=len, reverse=True)))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    # At INFO, twilio's HTTP client logs URLs and headers of every call: not needed, not wanted.
    logging.getLogger("twilio").setLevel(logging.WARNING)


def _trace_from_headers(
    cloud_trace: str | None, traceparent: str | None, project: str | None
) -> tuple[str | None, str | None]:
    """The request's trace and span: X-Cloud-Trace-Context is 'TRACE_ID/SPAN_ID;o=1', W3C traceparent
    is '00-TRACE_ID-SPAN_ID-01' (hex span). Cloud Logging wants the project's trace path."""
    trace_id = span_id = None
    match = re.fullmatch(r"([0-9a-fA-F]{1,32})(?:/([0-9]{1,20}))?(?:;o=[01])?", (cloud_trace or "").strip())
    if match:
        trace_id, span_id = match.groups()
    else:
        match = re.fullmatch(r"[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}", (traceparent or "").strip())
        if match:
            trace_id, span_id = match.group(1), match.group(2)
    if trace_id is None:
        return None, None
    return (f"projects/{project}/traces/{trace_id}" if project else trace_id), span_id


@contextmanager
def hook_scope(project: str | None, cloud_trace: str | None = None, traceparent: str | None = None) -> Iterator[None]:
    """Everything logged inside carries the hook's trace and is scrubbed of what it marks sensitive."""
    trace, span_id = _trace_from_headers(cloud_trace, traceparent, project)
    token = _scope.set(_HookScope(trace=trace, span_id=span_id, replacements=[]))
    try:
        yield
    finally:
        _scope.reset(token)


def mark_sensitive(value: str, replacement: str = REDACTED) -> None:
    """From now until the hook ends, `value` is written as `replacement` in every log line."""
    scope = _scope.get()
    if scope is not None and len(value) >= 3:
        scope.replacements.append((value, replacement))


_WORD = frozenset("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


def _replace_whole(line: str, value: str, replacement: str) -> str:
    """Replace `value` where it stands as a whole token: a 6-digit code must not blank out part of
    a Twilio SID or a duration. (No regex: a new pattern per hook would be compiled every time.)"""
    start = line.find(value)
    if start < 0:
        return line
    check_left, check_right = value[0] in _WORD, value[-1] in _WORD
    parts, kept = [], 0
    while start >= 0:
        end = start + len(value)
        left_ok = not check_left or start == 0 or line[start - 1] not in _WORD
        right_ok = not check_right or end == len(line) or line[end] not in _WORD
        if left_ok and right_ok:
            parts += [line[kept:start], replacement]
            kept = end
        start = line.find(value, end if kept == end else start + 1)
    return "".join(parts) + line[kept:]
