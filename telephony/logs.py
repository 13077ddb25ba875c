"""One logger setup for the whole process: JSON lines Cloud Logging understands, scrubbed of secrets.

Every line, ours or a library's, passes through `CloudLoggingFormatter`, which removes the configured
secrets and whatever the current request marked as sensitive (its OTP, its phone number). Code should
not log those values in the first place; this is the net under that rule. The net works on values,
never on keys or on the serialised line: a caller who sends a credential equal to a key, a quote or
an outcome must not be able to break a line or hide what happened.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, NamedTuple

REDACTED = "[redacted]"

# Python's level names are Cloud Logging's severities, except these.
_SEVERITY = {"WARNING": "WARNING", "CRITICAL": "CRITICAL", "NOTSET": "DEFAULT"}
# Values only the function writes, from a fixed vocabulary: what alerts and queries key on. (Not the
# trace: the caller picks it, and could make it the request's code.)
_OWN_FIELDS = frozenset({"severity", "logger", "outcome", "http_status"})


class _RequestScope(NamedTuple):
    trace: str | None
    span_id: str | None
    replacements: list[tuple[str, str]]  # appended to while the request runs


_scope: ContextVar[_RequestScope | None] = ContextVar("request_log_scope", default=None)


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
        replacements = scope.replacements if scope else []
        if scope and scope.trace:
            # The caller picks these ids: one that holds a sensitive value anywhere (a code padded with
            # zeros, which a whole-word scrub leaves) is not written at all.
            for key, value in (
                ("logging.googleapis.com/trace", scope.trace),
                ("logging.googleapis.com/spanId", scope.span_id),
            ):
                if value:
                    held = any(secret in value for secret in self._secrets) or any(
                        sensitive in value for sensitive, _ in replacements
                    )
                    entry[key] = REDACTED if held else value
        line = json.dumps(entry, default=str, ensure_ascii=False)
        # Most lines hold nothing to scrub: one search of the finished line says so, then it is kept.
        if not any(_spelled_in(value, line) for value in self._secrets) and not any(
            _spelled_in(value, line) for value, _ in replacements
        ):
            return line
        scrubbed = {
            key: value if key in _OWN_FIELDS else self._scrub_value(value, replacements) for key, value in entry.items()
        }
        return json.dumps(scrubbed, ensure_ascii=False)

    def _scrub_text(self, text: str, replacements: list[tuple[str, str]]) -> str:
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return _replace_around(text, replacements, [mask for _, mask in replacements if mask != REDACTED])

    def _scrub_value(self, value: Any, replacements: list[tuple[str, str]]) -> Any:
        """Strings scrubbed, containers walked (their keys kept), numbers kept, anything else as its text."""
        if isinstance(value, str):
            return self._scrub_text(value, replacements)
        if value is None or isinstance(value, bool | int | float):
            return value
        if isinstance(value, dict):
            return {str(key): self._scrub_value(item, replacements) for key, item in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [self._scrub_value(item, replacements) for item in value]
        return self._scrub_text(str(value), replacements)


def _spelled_in(value: str, line: str) -> bool:
    """Whether `value` appears in the JSON `line`, as itself or as JSON escapes it."""
    if value in line:
        return True
    if '"' in value or "\\" in value or not value.isprintable():
        return json.dumps(value, ensure_ascii=False)[1:-1] in line
    return False


class _StdoutHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stdout is at the time of writing (test captures replace it)."""

    @property
    def stream(self) -> Any:
        return sys.stdout

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass

    def emit(self, record: logging.LogRecord) -> None:
        """StreamHandler's, but a line the stream cannot encode (a lone surrogate, which Python's JSON
        decoder lets through from a peer's answer) is written with every character escaped, not lost."""
        try:
            line = self.format(record)
            try:
                self.stream.write(line + self.terminator)
            except UnicodeEncodeError:
                self.stream.write(json.dumps(json.loads(line)) + self.terminator)
            self.flush()
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)


class _Through(logging.Filter):
    """A logger's filter that hands each record to `handler` and lets none reach the logger's own."""

    def __init__(self, handler: logging.Handler) -> None:
        super().__init__()
        self._handler = handler

    def filter(self, record: logging.LogRecord) -> bool:
        self._handler.handle(record)
        return False


def configure_logging(secrets: list[str]) -> None:
    """Route every logger to stdout as scrubbed JSON lines (Cloud Run collects stdout)."""
    handler = _StdoutHandler()
    handler.setFormatter(CloudLoggingFormatter(sorted(set(secrets), key=len, reverse=True)))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    # gunicorn's own error log (a worker killed, a worker that failed to boot, with its traceback) has a
    # handler of gunicorn's, set up after this runs: its records come here instead, as JSON, scrubbed.
    gunicorn = logging.getLogger("gunicorn.error")
    gunicorn.filters[:] = [_Through(handler)]
    # At INFO, twilio's HTTP client logs URLs and headers of every call: not needed, not wanted.
    logging.getLogger("twilio").setLevel(logging.WARNING)
    # urllib3 warns with what a peer sent back ("Failed to parse headers ... unparsed data"): a peer
    # that echoes our request there would have it written, credential and code included. Our own lines
    # report every outbound call's end; urllib3 is heard only for its errors.
    logging.getLogger("urllib3").setLevel(logging.ERROR)


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
def request_scope(
    project: str | None, cloud_trace: str | None = None, traceparent: str | None = None
) -> Iterator[None]:
    """Everything logged inside carries the request's trace and is scrubbed of what it marks sensitive."""
    trace, span_id = _trace_from_headers(cloud_trace, traceparent, project)
    token = _scope.set(_RequestScope(trace=trace, span_id=span_id, replacements=[]))
    try:
        yield
    finally:
        _scope.reset(token)


def mark_sensitive(value: str, replacement: str = REDACTED) -> None:
    """From now until the request ends, `value` is written as `replacement` in every log line."""
    scope = _scope.get()
    if scope is not None and len(value) >= 3:
        scope.replacements.append((value, replacement))


def _replace_around(text: str, replacements: list[tuple[str, str]], masks: list[str]) -> str:
    """Each replacement made except inside a mask the request wrote (the masked number, '+1******0123'):
    a mask is safe as it stands, and a 4-digit code equal to the number's last digits must neither blank
    the mask nor, blanked, tell a reader the code. A match only partly inside a mask ('+1******0123'
    then '45' for the code 012345) is replaced: the code is in the text."""
    for value, replacement in replacements:
        text = _replace_whole(text, value, replacement, _spans(text, masks))
    return text


def _spans(text: str, values: list[str]) -> list[tuple[int, int]]:
    """Where each of `values` stands in `text`."""
    spans = []
    for value in values:
        start = text.find(value)
        while start >= 0:
            spans.append((start, start + len(value)))
            start = text.find(value, start + 1)
    return spans


_DIGITS = frozenset("0123456789")
_WORD = _DIGITS | frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


def _replace_whole(line: str, value: str, replacement: str, spared: Sequence[tuple[int, int]] = ()) -> str:
    """Replace `value` where it stands whole: a code or a number is not part of a longer run of digits,
    a word not part of a longer word. A code still goes wherever a letter touches it: 'code%3A482913' in
    a form a peer echoes, '%2B14155550123' in a URL. (No regex: a new pattern per hook would be compiled
    every time.) Not inside a span of `spared`."""
    start = line.find(value)
    if start < 0:
        return line
    left_class = _DIGITS if value[0] in _DIGITS else _WORD if value[0] in _WORD else None
    right_class = _DIGITS if value[-1] in _DIGITS else _WORD if value[-1] in _WORD else None
    parts, kept = [], 0
    while start >= 0:
        end = start + len(value)
        left_ok = left_class is None or start == 0 or line[start - 1] not in left_class
        right_ok = right_class is None or end == len(line) or line[end] not in right_class
        inside = any(low <= start and end <= high for low, high in spared)  # within a mask
        if left_ok and right_ok and not inside:
            parts += [line[kept:start], replacement]
            kept = end
        start = line.find(value, end if kept == end else start + 1)
    return "".join(parts) + line[kept:]
