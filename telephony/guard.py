"""The spend guard: stops SMS pumping (codes sent to numbers that earn someone a share of the fee).

Asked after the number policy, for every channel and delivery mode; its verdict is read as the request
to Twilio is about to leave, so the store's round trip runs while that request is made ready:
- per number: codes to one number in a moving window, tighter for numbers that never converted;
- per range (the E.164 number without its last 4 digits), per country and over every country: how
  many codes went to numbers that have not converted, within a window. A pump never converts, so it stops
  at the cap; people verify within a minute, and their conversion (Okta's event hook) gives their
  room back;
- known numbers stay open: a number whose owner passed a challenge keeps getting codes while its
  range or country is paused, as long as it keeps converting (KNOWN_CODES codes without a conversion
  and it is held as new again). `pre-enrollment` codes are always held as new numbers.
- Okta's retry is one code: the same request (number, channel, code) within 30 s answers SUCCESSFUL
  with the first call's transaction id and sends nothing. A first attempt Twilio refused is a new
  attempt; one Twilio may have accepted (a timeout, a 5xx), or still in flight, is never sent again:
  the retry gets the error object.

The store holds numbers only as keyed hashes (BLAKE2b keyed by GUARD_HASH_KEY, or by a key derived from
the Twilio credential); ranges and countries are in the clear. Any store fault fails open:
the code is sent, and an ERROR line names the guard's store.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Callable
from enum import StrEnum
from typing import Any

from models import MessageProfile
from telephony.answers import Answer, Outcome, Refused, guard_refused, retried, retry_not_sent
from telephony.phone import NumberFacts
from telephony.rates import Rate, parse_rates
from telephony.settings import Settings
from telephony.store import (
    PENDING,
    UNSETTLED,
    Ask,
    Claims,
    RecentRequests,
    Store,
    StoreUnavailable,
    Verdict,
    open_store,
)

PRE_ENROLLMENT = "com.okta.user.telephony.pre-enrollment"
RETRY_SECONDS = 30  # Okta's own minimum between two codes to one number
# A twin request waits for the first one's answer until this long before its own deadline: what a new
# attempt needs, should the first turn out certainly not sent.
RESEND_SECONDS = 1.0
# A first call is over by Okta's 3 s, its record written just after: a 'pending' record older than this
# belongs to a call whose record's write failed, or that died. Nothing more to wait for.
STALE_PENDING_SECONDS = 3.5
KNOWN_SECONDS = 365 * 86400  # a number stays known a year after its owner last passed a challenge
# A known number gets this many codes no conversion proved (a sign-in given up, a resend: a conversion
# proves the codes sent by its challenge); past them it is held as new until one does: converting once
# is not a licence.
KNOWN_CODES = 3
CONVERSION_CLOCK_SECONDS = 30.0  # Okta's clock and ours may differ by this much (both keep to NTP)
_KEY_CONTEXT = b"okta-telephony-hook spend guard v1"

log = logging.getLogger("telephony_hook.guard")


class GuardMode(StrEnum):
    ENFORCE = "enforce"
    MONITOR = "monitor"
    OFF = "off"


class Held(Refused):
    """The guard's verdict, read just before Twilio was to be called: the code does not go, and nothing
    was sent. `answer` is Okta's: the error object, or the first call's for Okta's retry."""


class Passage:
    """A code the guard is deciding on. The store has the question; `clear` reads the verdict just
    before Twilio is called, so the store's round trip runs while the request to Twilio is made ready.
    The hook then reports whether the provider accepted the code (delivered, failed, abandoned)."""

    __slots__ = ("_clear", "_reply", "ask", "recent", "verdict")

    def __init__(
        self,
        ask: Ask | None = None,
        reply: Callable[[], Verdict] | None = None,
        clear: Callable[[Passage], None] | None = None,
        recent: str | None = None,
    ) -> None:
        self.ask = ask  # None: nothing is asked (the guard is off, or its store unavailable)
        self.verdict: Verdict | None = None  # set once read, while this call holds the room it took
        self.recent = recent  # the request, when this instance's own record of it says this call sends
        self._reply, self._clear = reply, clear

    def clear(self) -> None:
        """Raises Held when the code must not go; returns when it may (a store fault lets it go)."""
        if self._clear is not None:
            clear, self._clear = self._clear, None
            clear(self)

    @property
    def unread(self) -> bool:
        return self._reply is not None

    def read(self) -> Verdict:
        """The store's verdict, read once (StoreUnavailable when the store failed): `clear` then has
        nothing left to do."""
        reply, self._reply, self._clear = self._reply, None, None
        if reply is None:
            raise StoreUnavailable("STORE_UNREACHABLE", fresh=False)  # read before, or never asked
        return reply()


def mask_range(e164: str) -> str:
    """'+14155550123' -> '+1415***xxxx': the range with three more digits hidden, because the masked
    phone in the same log line shows the last four."""
    return e164[: max(2, len(e164) - 7)] + "***xxxx"


def unreachable_limits(settings: Settings) -> list[str]:
    """Limits a wider scope always refuses first: a code to an unconverted number counts in its range,
    its country and over every country alike, so a range may not allow more than its country in the
    same window, nor a country more than every country (start-up WARNING lines, and make deploy's)."""
    if settings.guard_mode == GuardMode.OFF:
        return []
    ranges, countries, every = (
        parse_rates(limit)
        for limit in (settings.guard_range_limit, settings.guard_country_limit, settings.guard_all_limit)
    )
    found = _unreachable("GUARD_RANGE_LIMIT", ranges, "GUARD_COUNTRY_LIMIT", countries)
    found += _unreachable("GUARD_COUNTRY_LIMIT", countries, "GUARD_ALL_LIMIT", every)
    for country, limits in settings.guard_limits_by_country.items():
        range_ = parse_rates(limits["range"]) if "range" in limits else ranges
        country_rates = parse_rates(limits["country"]) if "country" in limits else countries
        wider = f"GUARD_LIMITS_BY_COUNTRY {country} country" if "country" in limits else "GUARD_COUNTRY_LIMIT"
        if "range" in limits:
            found += _unreachable(f"GUARD_LIMITS_BY_COUNTRY {country} range", range_, wider, country_rates)
        if "country" in limits:
            found += _unreachable(wider, country_rates, "GUARD_ALL_LIMIT", every)
    return found


class SpendGuard(Claims):
    """Built once per instance; `admit` runs inside every hook that would send a code."""

    def __init__(self, settings: Settings, store: Store | None = None) -> None:
        self.mode = GuardMode(settings.guard_mode)
        self._provider = settings.okta_provider_name
        self._conversions = bool(
            settings.okta_event_hook_auth_secret and settings.okta_org_url and settings.okta_api_token
        )
        key, self.key_source = _hash_key(settings)
        self._keyed = hashlib.blake2b(key=key, digest_size=16)
        uri = settings.guard_storage_uri.get_secret_value() if settings.guard_storage_uri else "memory://"
        # Open in every mode: the event hook's "act once" claims use it even with the guard off.
        self.store: Store = store or open_store(uri)
        self.on = self.mode is not GuardMode.OFF
        # A shared store's record of Okta's requests, kept by this instance too: when the store fails,
        # Okta's retry of a request this instance sent a code for is still not sent twice.
        self._recent = RecentRequests() if self.store.remote else None
        self._known_rates = parse_rates(settings.guard_number_limit)
        self._new_rates = parse_rates(settings.guard_new_number_limit)
        self._default_range = parse_rates(settings.guard_range_limit)
        self._default_country = parse_rates(settings.guard_country_limit)
        self._all_rates = parse_rates(settings.guard_all_limit)
        # Each country's five lists of limits, in Ask's order: known and new numbers, range, country, all.
        self._default_rates = self._rates_in({})
        self._rates = {country: self._rates_in(limits) for country, limits in settings.guard_limits_by_country.items()}
        self._claim_refused = self.mode is GuardMode.MONITOR

    @property
    def startup_level(self) -> int:
        """WARNING when the guard is off, or when no conversion can reach it."""
        return logging.INFO if self.on and self._conversions else logging.WARNING

    def startup_message(self) -> str:
        if not self.on:
            return "Spend guard off (GUARD_MODE=off): codes are not limited per number, range or country."
        conversions = (
            "conversions come from the event hook at /okta/events"
            if self._conversions
            else "no conversions reach it (Okta's event hook needs OKTA_EVENT_HOOK_AUTH_SECRET, OKTA_ORG_URL and "
            "OKTA_API_TOKEN), so every number is held as new"
        )
        return (
            f"Spend guard {self.mode} on {self.store.description}: new numbers {_text(self._new_rates)}, "
            f"known numbers {_text(self._known_rates)}, "
            f"codes to unconverted numbers per range {_text(self._default_range)}"
            f", per country {_text(self._default_country)} and over every country {_text(self._all_rates)};"
            f" {conversions}; numbers hashed with {self.key_source}."
        )

    # ------------------------------------------------------------------------------- the telephony hook

    def admit(
        self,
        profile: MessageProfile,
        number: NumberFacts,
        request_type: str | None,
        facts: dict[str, Any],
        until: float,
    ) -> Passage:
        """Asks the store whether the code may go. The verdict is acted on by `Passage.clear`: it
        raises Held (guard_refused, retry_not_sent, or the first call's answer for Okta's retry) when
        the code must not go. `facts` gets the guard's fields for the hook's line; `until` is the
        hook's deadline (time.monotonic())."""
        if not self.on:
            return Passage()
        e164, country = number.e164, number.country
        number_hash, retry_hash = self._digests(e164, f"|{profile.delivery_channel}|{profile.otp_code}")
        enrolment = request_type == PRE_ENROLLMENT
        rates = self._rates.get(country, self._default_rates)
        ask = Ask(
            number_hash,
            e164[:-4],
            country,
            retry_hash,
            RETRY_SECONDS,
            enrolment,
            self._claim_refused,
            KNOWN_CODES,
            KNOWN_SECONDS,
            *rates,
        )
        try:
            reply = self.store.begin_admit(ask, time.time())
        except StoreUnavailable as error:
            self._store_failed(error, facts)
            passage = Passage()
            self._unshared(passage, ask.retry, until, facts)
            return passage
        return Passage(ask, reply, lambda passage: self._clear(passage, ask, number, facts, until))

    def _clear(self, passage: Passage, ask: Ask, number: NumberFacts, facts: dict[str, Any], until: float) -> None:
        try:
            verdict = self._decide(ask, passage.read(), until, facts)
        except StoreUnavailable as error:
            self._store_failed(error, facts)
            self._unshared(passage, ask.retry, until, facts)
            return
        if self._recent is not None and verdict.kind != "replay":
            self._reconcile(ask, verdict, until, facts)
        if verdict.kind in ("replay", PENDING, UNSETTLED):
            self._held(str(verdict.transaction_id) if verdict.kind == "replay" else verdict.kind, facts)
        facts["guard_number"] = "known" if verdict.known else "lapsed" if verdict.lapsed else "new"
        if verdict.kind == "refused":
            refusal = {
                "guard_limit": f"{verdict.scope} {verdict.rate}",
                "country": number.country,
                "guard_range": mask_range(number.e164),
                "guard_range_id": self._digest(ask.range)[:8],
            }
            facts.update(refusal)
            if self.mode is GuardMode.ENFORCE:
                facts["guard"] = "refused"
                raise Held(guard_refused(str(verdict.scope), refusal).answer)
            facts["guard"] = "would_refuse"  # monitor: sent anyway, its retry record claimed
        else:
            facts["guard"] = "passed"
        passage.verdict = verdict  # admitted, or refused in monitor mode: this call took its room
        if self._recent is not None:  # this call sends, and is recorded so (_reconcile): should the store fail
            passage.recent = ask.retry

    def _held(self, state: str, facts: dict[str, Any], after: Callable[[], None] | None = None) -> None:
        """Okta's retry of a request whose code went (`state`: the first call's transaction id), is with
        Twilio now (PENDING), or may have reached it (UNSETTLED: never sent twice): raises Held, whose
        answer runs `after` once it is out."""
        if state in (PENDING, UNSETTLED):
            facts["guard"] = "retry_in_flight" if state == PENDING else "retry_unsettled"
            answer = retry_not_sent(in_flight=state == PENDING).answer
        else:
            facts["guard"] = "retry"
            answer = retried(self._provider, state)
        raise Held(answer.then(after) if after is not None else answer)

    def _recall(self, retry: str, until: float) -> str | None:
        """This instance's own record of the request: None when it has none, and this call is recorded
        as the one that sends; else the first call's transaction id, UNSETTLED, or PENDING (still with
        Twilio when a new attempt would have no time left: meanwhile it is waited for, as on the store)."""
        assert self._recent is not None
        state = self._recent.take(retry, RETRY_SECONDS)
        while state == PENDING and time.monotonic() < until - RESEND_SECONDS:
            time.sleep(0.05)
            state = self._recent.take(retry, RETRY_SECONDS)  # taken once the first certainly sent nothing
        return state

    def _unshared(self, passage: Passage, retry: str, until: float, facts: dict[str, Any]) -> None:
        """The store failed, and the code goes unguarded (fail open), unless this instance sent the
        same request's code within its window: then that answers, as the store would have."""
        if self._recent is None:
            return
        state = self._recall(retry, until)
        if state is None:
            passage.recent = retry
            return
        self._held(state, facts)

    def _reconcile(self, ask: Ask, verdict: Verdict, until: float, facts: dict[str, Any]) -> None:
        """The store answered, but it may have lost what this instance knows (restarted empty, a record
        written while it failed, or a call it ran after the caller had given up): where this instance
        has its own record of the request, that answers (raises Held), and the store is told once the
        answer is out. A call that will send is recorded here as the one that sends."""
        assert self._recent is not None
        sends = verdict.kind == "admitted" or (verdict.kind == "refused" and ask.claim_refused)
        state = self._recall(ask.retry, until) if sends else self._recent.peek(ask.retry)
        if state is None or (not sends and state in (PENDING, UNSETTLED)):  # the store's answer stands
            return
        self._held(state, facts, after=lambda: self._correct(ask, verdict, sends, state))

    def _correct(self, ask: Ask, verdict: Verdict, sends: bool, state: str) -> None:
        """The store learns what this instance knew of a request: the first call's transaction id (or
        that it may have gone out), and the room this call's admission took given back (kept while the
        first code may have gone out)."""
        assert self._recent is not None
        taken = verdict if sends else None  # this call's admission wrote a 'pending' record and took room
        try:
            if verdict.kind == "refused" and not sends:  # refused: the store holds no record of it at all
                if state != PENDING:
                    self.store.remember(ask.retry, state, self._recent.left(ask.retry))
            elif state not in (PENDING, UNSETTLED):
                self.store.delivered(ask.retry, state)
            if taken is not None and state == UNSETTLED:  # pending -> unsettled, its room kept
                kept = taken._replace(member="", added_range=False, added_country=False, added_all=False)
                self.store.release(ask, kept, unsettled=True)
            elif taken is not None and state != PENDING:  # its record is the transaction id now: only the room
                self.store.release(ask, taken, unsettled=False)
        except StoreUnavailable as error:
            self._store_failed(error, {})

    def _decide(self, ask: Ask, verdict: Verdict, until: float, facts: dict[str, Any]) -> Verdict:
        while verdict.kind == PENDING and not _stale(verdict) and time.monotonic() < until - RESEND_SECONDS:
            time.sleep(0.05)  # a twin of this request is with Twilio now: its answer is ours
            try:
                value = self.store.lookup(ask.retry)
            except StoreUnavailable as error:  # as far as we know the twin is with Twilio: never send twice
                self._store_failed(error, facts)
                continue
            if value is None:  # the twin certainly sent nothing: this call is a new attempt
                verdict = self.store.admit(ask, time.time())
            elif value == UNSETTLED:
                verdict = Verdict(UNSETTLED)
            elif not value.startswith(PENDING):
                verdict = Verdict("replay", transaction_id=value)
        return verdict

    def _settle(self, passage: Passage) -> None:
        """A call that ended before Twilio was called: the verdict is read still (the store's
        connection stays in step), and the room it took, if any, is this call's to give back."""
        if passage.ask is None or not passage.unread:
            return
        try:
            verdict = passage.read()
        except StoreUnavailable as error:
            self._store_failed(error, {})
            return
        if verdict.kind == "admitted" or (verdict.kind == "refused" and passage.ask.claim_refused):
            passage.verdict = verdict

    def delivered(self, passage: Passage, answer: Answer) -> Answer:
        """The provider accepted the code: Okta's retry of this request gets its transaction id (a twin
        waiting for it polls the record meanwhile). In memory that is written at once; on Redis, a round
        trip, once the answer has been sent: Okta does not wait for it. Returns the answer to give."""
        transaction_id = answer.log_fields.get("twilio_sid")
        self._ended(passage, transaction_id if isinstance(transaction_id, str) else UNSETTLED)
        if passage.ask is None or passage.verdict is None or not isinstance(transaction_id, str):
            return answer
        retry = passage.ask.retry
        if self.store.remote:
            return answer.then(lambda: self._record(retry, transaction_id))
        self._record(retry, transaction_id)
        return answer

    def _record(self, retry: str, transaction_id: str) -> None:
        try:
            self.store.delivered(retry, transaction_id)
        except StoreUnavailable as error:
            self._store_failed(error, {})

    def failed(self, passage: Passage, answer: Answer) -> Answer:
        """The hook answers an error. When the code certainly was not sent (Twilio refused it with an
        error code or created it failed, or Twilio was never asked), its room goes back and Okta's retry
        of this request is a new attempt. A timeout or an unreadable answer may hide a code Twilio took:
        it keeps counting, and a retry is not sent. On Redis that is written once the answer has been
        sent (the hook may have used its budget by now); in memory, at once. Returns the answer to give."""
        self._settle(passage)
        unsettled = not certainly_not_sent(answer)
        self._ended(passage, UNSETTLED if unsettled else None)
        if self.store.remote:
            return answer.then(lambda: self._release(passage, unsettled=unsettled))
        self._release(passage, unsettled=unsettled)
        return answer

    def abandoned(self, passage: Passage) -> None:
        """A bug of ours ended the hook while the code may have reached Twilio (the catch-all answers)."""
        self._settle(passage)
        self._ended(passage, UNSETTLED)
        self._release(passage, unsettled=True)

    def _ended(self, passage: Passage, state: str | None) -> None:
        """How this call's code ended, in the instance's own record (when it holds the request)."""
        if passage.recent is not None and self._recent is not None:
            self._recent.settle(passage.recent, state)

    def _release(self, passage: Passage, unsettled: bool) -> None:
        if passage.ask is None or passage.verdict is None:
            return
        verdict = passage.verdict
        if unsettled:  # Twilio may have the code: it keeps its room
            verdict = verdict._replace(member="", added_range=False, added_country=False, added_all=False)
        try:
            self.store.release(passage.ask, verdict, unsettled)
        except StoreUnavailable as error:
            self._store_failed(error, {})

    # ---------------------------------------------------------------------------------- the event hook

    def converted(self, number: NumberFacts, passed_at: float) -> bool:
        """A user with this number (read as the hook reads the numbers its codes go to, or the two would
        never meet: phone.read_number) passed an SMS or voice challenge at `passed_at` (Okta's time of
        the event): known from now on, and the room its codes sent by then took in its range and
        country is given back (give or take CONVERSION_CLOCK_SECONDS of clocks). A later code was not
        proven by it: an event delivered again gives back nothing more. False when the store is
        unavailable."""
        if not self.on or not number.valid:
            return False
        sent_by = passed_at + CONVERSION_CLOCK_SECONDS
        try:
            self.store.convert(self._digest(number.e164), number.e164[:-4], number.country, KNOWN_SECONDS, sent_by)
        except StoreUnavailable as error:
            self._store_failed(error, {})
            return False
        return True

    def claim_all(self, keys: list[str], ttl_seconds: int) -> list[bool]:
        """Claims through the guard's store, across instances when it is shared ("act on this event
        once"). A store fault fails open: every key True, with the ERROR line."""
        try:
            return self.store.claim_all(keys, ttl_seconds)
        except StoreUnavailable as error:
            self._store_failed(error, {})
            return [True] * len(keys)

    # ------------------------------------------------------------------------------------------ helpers

    def _rates_in(self, overrides: dict[str, str]) -> tuple[tuple[Rate, ...], ...]:
        range_ = parse_rates(overrides["range"]) if "range" in overrides else self._default_range
        country = parse_rates(overrides["country"]) if "country" in overrides else self._default_country
        return self._known_rates, self._new_rates, range_, country, self._all_rates

    def _digest(self, value: str) -> str:
        """Keyed BLAKE2b, a MAC by design (RFC 7693), 128 bits, as unpadded URL-safe base64: about a
        microsecond, where an HMAC built through OpenSSL 3 for each value measured tens. The key is
        taken once (`_keyed`): each digest starts from a copy of its state."""
        hasher = self._keyed.copy()
        hasher.update(value.encode())
        return _base64(hasher.digest())

    def _digests(self, first: str, then: str) -> tuple[str, str]:
        """The digests of `first` and of `first + then`, hashing `first` once."""
        hasher = self._keyed.copy()
        hasher.update(first.encode())
        longer = hasher.copy()
        longer.update(then.encode())
        return _base64(hasher.digest()), _base64(longer.digest())

    def _store_failed(self, error: StoreUnavailable, facts: dict[str, Any]) -> None:
        facts["guard"] = "store_unavailable"
        facts["guard_store_error"] = error.reason
        if error.fresh:
            log.error(
                f"spend guard store unavailable ({self.store.where}): codes go out unguarded until it answers",
                extra={"fields": {"guard_store_error": error.reason}},
            )


def _stale(verdict: Verdict) -> bool:
    return verdict.pending_since is not None and time.time() - verdict.pending_since > STALE_PENDING_SECONDS


def certainly_not_sent(answer: Answer) -> bool:
    """Whether an error answer proves no code went out: the hook never called Twilio, Twilio answered
    with one of its error codes, or created the message failed or canceled."""
    if answer.outcome in (Outcome.NOT_CONFIGURED, Outcome.CODE_TOO_LONG):
        return True
    code, status = answer.log_fields.get("twilio_error_code"), answer.log_fields.get("twilio_http_status")
    # A 4xx with Twilio's code is a refusal; a 5xx, even with a code, may hide a code Twilio took.
    refused = isinstance(code, int) and 10000 <= code <= 99999 and isinstance(status, int) and status < 500
    return refused or answer.log_fields.get("twilio_error") == "TWILIO_NOT_ACCEPTED"


def _unreachable(name: str, rates: tuple[Rate, ...], wider_name: str, wider: tuple[Rate, ...]) -> list[str]:
    """Each of `rates` that `wider` (a scope holding every code `rates` counts) refuses before it: a wider
    limit over as long a window, or longer, with a smaller amount."""
    found = []
    for rate in rates:
        first = min(
            (limit for limit in wider if limit.seconds >= rate.seconds), key=lambda limit: limit.amount, default=None
        )
        if first is not None and first.amount < rate.amount:
            found.append(f"{name} {rate} cannot be reached: {wider_name} refuses first ({first})")
    return found


def _text(rates: tuple[Rate, ...]) -> str:
    return ";".join(str(rate) for rate in rates)


_URL_SAFE = bytes.maketrans(b"+/", b"-_")


def _base64(digest: bytes) -> str:
    """base64.urlsafe_b64encode(digest), unpadded, in two C calls rather than its Python layers."""
    return binascii.b2a_base64(digest, newline=False).rstrip(b"=").translate(_URL_SAFE).decode()


def _hash_key(settings: Settings) -> tuple[bytes, str]:
    """The key numbers are hashed with: GUARD_HASH_KEY, else derived from a secret every instance
    shares (the Twilio credential first), else a random key of this process."""
    candidates = (
        ("GUARD_HASH_KEY", settings.guard_hash_key),
        ("a key derived from TWILIO_API_SECRET", settings.twilio_api_secret),
        ("a key derived from TWILIO_AUTH_TOKEN", settings.twilio_auth_token),
        ("a key derived from OKTA_HOOK_AUTH_SECRET", settings.okta_hook_auth_secret),
    )
    for source, secret in candidates:
        if secret is not None and secret.get_secret_value():
            return hmac.new(secret.get_secret_value().encode(), _KEY_CONTEXT, hashlib.sha256).digest(), source
    return secrets.token_bytes(32), "a random key of this instance (set GUARD_HASH_KEY)"
