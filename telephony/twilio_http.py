"""The HTTP client the twilio library sends through: Twilio's documented seam for custom transports.

twilio's default client (requests) gives a hook with a 3 s budget too little and costs too much:
- no timeout at all by default, and a socket timeout bounds each read, not the call: a Twilio that
  trickles a byte a second never times out, and no limit on the answer's size. Here every call goes
  through telephony/outbound.py: one overall deadline for the whole call, whatever Twilio's framing,
  and an answer read in pieces up to a cap that fits a Twilio resource;
- a pool of min(32, cores + 4) connections; here the pool is as large as the threads we serve, so
  concurrent hooks reuse connections (each new one to Twilio costs a TLS handshake);
- requests scans the environment for proxies on every call; urllib3, which requests itself uses,
  is driven directly and proxies are read once at start-up;
- an optional base URL: every https://<anything>.twilio.com request goes there instead, which is how
  Twilio documents pointing the library at a mock, and how the local sandbox is reached.
"""

from __future__ import annotations

import base64
import email.utils
import json
import math
import random
import re
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from urllib.parse import urlencode

from twilio.http import HttpClient
from twilio.http.response import Response

from telephony.outbound import CallFailed, Outbound

_TWILIO_HOST = re.compile(r"^https://[A-Za-z0-9.-]+\.twilio\.com(?=/|$)")
# Twilio's resources (a Message, a Call, a Verification) are a few KB: anything far larger is not one.
MAX_ANSWER_BYTES = 64 * 1024


class TwilioUnavailable(Exception):
    """Twilio did not answer: `timed_out` tells a deadline (or an answer past the cap) from a failed connection."""

    def __init__(self, timed_out: bool, error_type: str, attempts: int = 1) -> None:
        super().__init__("timeout" if timed_out else "unreachable")
        self.timed_out = timed_out
        self.error_type = error_type
        self.attempts = attempts


MAX_ATTEMPTS = 2
RATE_LIMITED = 429  # Twilio's 20429: never processed, "safe to retry after backing off"
# The pause before that retry when Twilio names none (Retry-After): random within these bounds, so the
# requests a burst had limited together do not come back together.
RATE_LIMIT_PAUSE_SECONDS = (0.1, 0.3)
# A retry is made only when this much of the deadline is left after its pause: less, and the error
# object now lets Okta fall back sooner than a retry that could not finish.
RETRY_LEAST_SECONDS = 0.5


class Attempts:
    """One use of the library by the function: how many attempts its call took, by when (a
    time.monotonic() value) it must be over, whatever TWILIO_TIMEOUT_SECONDS allows, what must clear
    the request before it is sent, and the HTTP status of the last answer. The library hides its
    transport from its callers, so all of it travels beside it. (The library reports an error body's
    own `status` as the answer's when the body is RFC 9457's: a 503 whose body says 400 is a 503.)"""

    __slots__ = ("clear", "count", "http_status", "until")

    def __init__(self, until: float | None, clear: Callable[[], None] | None = None) -> None:
        self.count = 0
        self.until = until
        self.clear = clear
        self.http_status: int | None = None


_attempts: ContextVar[Attempts | None] = ContextVar("twilio_attempts", default=None)


def last_status() -> int | None:
    """The HTTP status of the last answer to the calls being counted (None outside counting_attempts)."""
    attempts = _attempts.get()
    return attempts.http_status if attempts is not None else None


@contextmanager
def counting_attempts(until: float | None = None, clear: Callable[[], None] | None = None) -> Iterator[Attempts]:
    """Count the attempts of the Twilio calls made inside, for the log line; none runs past `until`.
    `clear` is called once, when the first request is ready to be sent: it raises to stop it."""
    attempts = Attempts(until, clear)
    token = _attempts.set(attempts)
    try:
        yield attempts
    finally:
        _attempts.reset(token)


class TwilioTransport(HttpClient):
    """Sends the twilio library's requests through the function's outbound pool, within a deadline and a cap."""

    def __init__(self, *, timeout_seconds: float, pool_size: int, base_url: str | None = None) -> None:
        super().__init__(logger=None, is_async=False, timeout=timeout_seconds)
        self.base_url = base_url.rstrip("/") if base_url else None
        # Hosts are few (api. and verify.twilio.com, or one base URL): no pool is ever evicted. Real
        # Twilio: every hook will need TLS, so its context is built before traffic.
        proxy = None if self.base_url else urllib.request.getproxies().get("https")
        self.pool = Outbound(size=pool_size, proxy=proxy, num_pools=16, tls_now=self.base_url is None)

    def rebase(self, url: str) -> str:
        """https://api.twilio.com/2010-04-01/... -> {base_url}/2010-04-01/... when a base URL is set."""
        if self.base_url is None:
            return url
        return _TWILIO_HOST.sub(self.base_url, url, count=1)

    def request(
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> Response:
        """One API call. Redirects are never followed, whatever `allow_redirects` says: the library never
        asks for them, and a redirect's body would be read without the cap."""
        sent = dict(headers or {})
        if auth:
            sent["Authorization"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        target = self.rebase(url)
        if params:
            target += "?" + urlencode(params, doseq=True)
        body = None
        if data is not None and sent.get("Content-Type") == "application/json":
            body = json.dumps(data)  # the library's JSON APIs, sent as it sends them
        elif data:
            body = urlencode(data, doseq=True)
            sent["Content-Type"] = "application/x-www-form-urlencoded"
        seconds = self.timeout if timeout is None else timeout
        if seconds is None or seconds <= 0:
            raise ValueError("a Twilio call needs a positive timeout")
        # Retried once, within what is left of the deadline, only when Twilio certainly did not take
        # the request: refused or reset before a byte was sent, or rate-limited (after a pause). Never
        # after a read timeout, an answer past the cap or a 5xx: Twilio may have accepted it, and a
        # retry could send a second code.
        counted = _attempts.get() or Attempts(None)
        if counted.clear is not None:  # the spend guard's verdict, read now rather than before all of the above
            clear, counted.clear = counted.clear, None
            clear()
        deadline = time.monotonic() + seconds
        if counted.until is not None:  # the request's own budget may be shorter than Twilio's timeout
            deadline = min(deadline, counted.until)
        attempts, before = 0, counted.count  # the scope's earlier calls count too (Verify asked again)
        while True:
            attempts += 1
            counted.count = before + attempts
            left = deadline - time.monotonic()
            if left <= 0:
                raise TwilioUnavailable(True, "DeadlineExceeded", counted.count)
            try:
                answer = self.pool.call(
                    method.upper(), target, seconds=left, cap=MAX_ANSWER_BYTES, body=body, headers=sent
                )
            except CallFailed as failure:
                if attempts < MAX_ATTEMPTS and failure.never_sent and deadline > time.monotonic():
                    continue
                raise TwilioUnavailable(failure.timed_out, failure.error_type, counted.count) from None
            if answer.status == RATE_LIMITED and attempts < MAX_ATTEMPTS:
                pause = rate_limit_pause(answer.data, answer.headers.get("Retry-After"))
                if pause is not None and deadline - time.monotonic() - pause >= RETRY_LEAST_SECONDS:
                    time.sleep(pause)
                    continue
            counted.http_status = answer.status
            return Response(answer.status, answer.data.decode("utf-8", "replace"), answer.headers)


def rate_limit_pause(body: bytes, retry_after: str | None) -> float | None:
    """How long to back off before retrying a 429, or None when a retry cannot help: a 429 carrying
    another Twilio code than 20429 is a limit of its own (Verify's 60203, max send attempts reached).
    At least a short random pause, so that a burst limited together does not come back together; longer
    when Twilio's Retry-After says so."""
    try:
        code = json.loads(body).get("code")
    except (ValueError, AttributeError, RecursionError):
        code = None  # no Twilio error body: the 429 alone says rate limited
    if isinstance(code, int) and code not in (RATE_LIMITED, 20429):
        return None
    return max(random.uniform(*RATE_LIMIT_PAUSE_SECONDS), retry_after_seconds(retry_after))  # noqa: S311 - not a secret


def retry_after_seconds(value: str | None) -> float:
    """Retry-After as RFC 9110 defines it: whole seconds, or an HTTP date. 0 when absent or unreadable
    (the caller's own pause applies), infinity when past any deadline."""
    value = (value or "").strip()
    if value.isascii() and value.isdigit():
        return float(value) if len(value) <= 9 else math.inf  # float('1_0') would read 10: digits only
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, OverflowError, IndexError):
        return 0.0
    if when.tzinfo is None:  # '-0000': UTC, with no word on the sender's zone
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
