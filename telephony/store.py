"""The state instances share: the spend guard's moving windows, Okta's retries, and one-time claims.

One small interface, two stores:
- `memory://` (the default): embedded, per instance. Every instance counts on its own.
- `redis://` / `rediss://` (Memorystore, any Redis or Valkey): every instance counts as one.

Each guard decision is one atomic step in the store: one Lua script on Redis, one lock in memory,
with the same algorithm in both (tests run the same traces through each). Why not the `limits`
package: it takes one round trip per limit and scope (6 for the guard's defaults, measured at
0.6 ms median on loopback against 0.09 ms for one script), and cannot check several scopes
atomically or give back the room of a code that converted.

The windows are moving windows kept as sorted sets scored by time:
- per number: one member per code sent, so resends count;
- per range, per country and over every country: one member per code to an *unconverted number*
  ('number hash|code'), so resends count too, and a conversion removes every code of its number and
  gives their room back.

Every Redis call runs under one overall deadline, connect included (the host's name is resolved on
a thread of its own, the socket is held by telephony/deadlines.py's watchdog from before TLS's
handshake on; each command's send and read get only the time left): a store that is down, refuses,
hangs or trickles raises StoreUnavailable fast, and the caller fails open. A command is never sent
twice: once sent, the store may have run it.
The guard's decision is sent and read in two halves (`begin_admit`): the hook prepares Twilio's
request in between. Every key expires.
"""

from __future__ import annotations

import bisect
import contextlib
import itertools
import os
import re
import secrets
import select
import socket
import ssl
import threading
import time
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any, Generic, NamedTuple, Protocol, TypeGuard, TypeVar, cast
from urllib.parse import urlsplit

from telephony.deadlines import each_address, overall_deadline
from telephony.rates import Rate

STORE_DEADLINE_SECONDS = 0.15  # per store call, connect included: well inside Okta's 3 s
# TCP keepalive on the store's connections: a probe after a minute idle, then every 10 s, 3 unanswered
# and the connection is dead. (Names as Linux has them; a system without them keeps its defaults.)
KEEPALIVE = {
    getattr(socket, name): value
    for name, value in (("TCP_KEEPIDLE", 60), ("TCP_KEEPINTVL", 10), ("TCP_KEEPCNT", 3))
    if hasattr(socket, name)
}
# A connection that fails after lying unused this long retires every connection of the instance: a
# network that forgets idle flows forgets them after minutes, while on a quiet instance connections sit
# unused for seconds, and retiring every connection on their failures would add a herd of new
# connections (TLS handshakes) to a store or a machine already short of time.
SUSPECT_IDLE_SECONDS = 10.0
# New connections being opened at once, per store: a caller that finds none free and this many opening
# waits for one to be given back (a call holds one for a round trip) rather than open its own. A new
# instance's threads all call at once, and each opening costs a round trip or three and a TLS handshake.
OPENING_AT_ONCE = 2
RESTING_SECONDS = 1.0  # after a store failure, calls fail open at once for this long, then try again
KEY_PREFIX = "okta-hook:"
ALL_KEY = KEY_PREFIX + "a"  # the window of codes to unconverted numbers over every country


class StoreUnavailable(Exception):
    """The store did not answer in time, could not be reached, or refused. `reason` is a fixed label
    (never the store's address or its AUTH string); `fresh` is False while the store rests after a
    failure (the failure was reported already)."""

    def __init__(self, reason: str, fresh: bool = True) -> None:
        super().__init__(reason)
        self.reason, self.fresh = reason, fresh


class Ask(NamedTuple):
    """One code to admit: every value is already keyed or coarse (no number in the clear)."""

    number: str  # keyed hash of the E.164 number
    range: str  # the E.164 number without its last 4 digits
    country: str
    retry: str  # keyed hash of the request (number, channel, code): Okta's retry finds it
    retry_seconds: int
    enrolment: bool  # pre-enrollment: held as a new number even when the number converted before
    claim_refused: bool  # monitor mode: a code sent although it would be refused is deduplicated too
    known_codes: int  # codes a known number gets that no conversion proved: past them, held as new until one does
    known_seconds: int  # how long a number stays known (and its unproven codes are kept)
    known_rates: tuple[Rate, ...]  # per number, for numbers that converted
    new_rates: tuple[Rate, ...]  # per number, for numbers that never did
    range_rates: tuple[Rate, ...]  # codes to unconverted numbers per range
    country_rates: tuple[Rate, ...]  # codes to unconverted numbers per country
    all_rates: tuple[Rate, ...]  # the same over every country: a pump that moves from country to country


class Verdict(NamedTuple):
    """What the store decided for an Ask."""

    kind: str  # "admitted", "refused", "replay" (same request recently sent), "pending" (in flight),
    # or "unsettled" (the same request's code may have reached Twilio, its answer unknown)
    known: bool = False  # the number has converted before
    scope: str | None = None  # refused: "number", "range" or "country"
    rate: Rate | None = None  # refused: the limit that was full
    transaction_id: str | None = None  # replay: the first call's transaction id
    pending_since: float | None = None  # pending: when the first call was admitted (time.time())
    member: str = ""  # admitted: the code's entry in the number's window
    added_range: bool = False  # admitted: the code took room in its range...
    added_country: bool = False  # ...and in its country
    added_all: bool = False  # ...and over every country
    lapsed: bool = False  # the number converted before, but its known codes went unproven: held as new


class Claims(Protocol):
    """'Act on this once': the shared store of the spend guard offers the same call across instances."""

    def claim_all(self, keys: list[str], ttl_seconds: int) -> list[bool]:
        """For each key, True for the first caller to claim it within `ttl_seconds` (across instances
        when the store is shared). One step for all, however many keys."""
        raise NotImplementedError

    def claim(self, key: str, ttl_seconds: int) -> bool:
        return self.claim_all([key], ttl_seconds)[0]


class Store(Claims, Protocol):
    description: str  # for the start-up line: which store, and whether instances share it
    where: str  # which store, for the lines that report it failing
    remote: bool  # each call is a round trip to another process

    def admit(self, ask: Ask, now: float) -> Verdict:
        """Check every limit and, when the code may go, count it: one atomic step. A code that
        may go (or that monitor mode sends anyway) also claims the retry record as pending."""

    def begin_admit(self, ask: Ask, now: float) -> Callable[[], Verdict]:
        """`admit` in two halves: the question is asked now, the verdict read by calling what this
        returns (on Redis, the round trip runs meanwhile). Each half may raise StoreUnavailable; the
        verdict must be read: until then the call holds one of the store's connections."""

    def release(self, ask: Ask, verdict: Verdict, unsettled: bool) -> None:
        """The code failed: give back the room `verdict` names as taken, and drop the pending retry
        record (Okta's retry is a new attempt), or, `unsettled`, mark it so (never sent again)."""

    def delivered(self, retry: str, transaction_id: str) -> None:
        """The provider accepted the code: Okta's retry of this request gets `transaction_id`."""

    def remember(self, retry: str, state: str, seconds: float) -> None:
        """A retry record this store does not hold (it lost it, or refused the retry): `state` (a
        transaction id, or UNSETTLED) for `seconds`, unless it holds one by now."""

    def lookup(self, retry: str) -> str | None:
        """The retry record: a transaction id, "pending", "unsettled", or None."""

    def convert(self, number: str, range_: str, country: str, known_seconds: int, sent_by: float) -> None:
        """The number's owner passed a challenge: known from now on, and its codes sent by `sent_by` (the
        time of the challenge) are proven: their room in range and country given back, and no longer
        unproven known codes; later codes were not proven by it."""


PENDING = "pending"  # the retry record of a code with Twilio now ('pending <time it was admitted>')
UNSETTLED = "unsettled"  # ... of a code Twilio may have accepted (a timeout, a 5xx): never sent again


_PROCESS = secrets.token_hex(4)  # members of one number's window from two instances never collide
_SEQUENCE = itertools.count()


def _since(record: str) -> float | None:
    """When a pending retry record's first call was admitted ('pending 1796047070.490000'), if it says."""
    try:
        return float(record.removeprefix(PENDING))
    except ValueError:
        return None


def _seconds(now: float) -> str:
    """A time since the epoch (never negative) as both stores write it (a record's, a member's):
    seconds to the microsecond, in integer arithmetic rather than float formatting."""
    whole, micros = divmod(round(now * 1_000_000), 1_000_000)
    return f"{whole}.{micros:06d}"


def _member(when: str) -> str:
    """A code's unique entry in its number's window, from the time of the code as the store writes it
    (no system call: random bytes cost a syscall each)."""
    return f"{when}:{_PROCESS}:{next(_SEQUENCE)}"


def _tag() -> str:
    """A script call's tag, which its reply starts with: unique across instances (a proxy that mixes
    two instances' connections up must not find one's reply tagged as the other's call)."""
    return f"t{_PROCESS}:{next(_SEQUENCE)}"


# ------------------------------------------------------------------------------------ memory://


class _Entry:
    __slots__ = ("expires", "value")

    def __init__(self, value: Any, expires: float) -> None:
        self.value, self.expires = value, expires


class MemoryStore(Claims):
    """The embedded store: a dict with expiry under one lock. Bounded: expired entries are swept
    regularly, and past MAX_ENTRIES the oldest go first (an OrderedDict: its oldest entry is at hand,
    where a dict's first is found past every entry deleted before it)."""

    MAX_ENTRIES = 200_000
    description = "memory:// (this instance only: every instance counts on its own)"
    where = "memory://"
    remote = False

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.Lock()
        self._clock = clock
        self._next_sweep = 0.0
        # Claims (events and receipts acted on once, each for a day or two) apart, bounded on their own:
        # a busy day of them must never push the guard's counts and known numbers out.
        self._claims = LocalClaims(clock=clock)

    # helpers, called with the lock held
    def _get(self, key: str, now: float) -> Any:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.expires <= now:
            del self._entries[key]
            return None
        return entry.value

    def _set(self, key: str, value: Any, seconds: float, now: float) -> None:
        self._entries[key] = _Entry(value, now + seconds)
        self._entries.move_to_end(key)  # the order is the age order
        if now >= self._next_sweep:
            self._sweep(now)
        while len(self._entries) > self.MAX_ENTRIES:
            self._entries.popitem(last=False)

    def _sweep(self, now: float) -> None:
        """Once a minute: every expired entry goes (one pass over them all)."""
        self._next_sweep = now + 60
        for key in [key for key, entry in self._entries.items() if entry.expires <= now]:
            del self._entries[key]

    def _window(self, key: str, now: float) -> _Window:
        window = self._get(key, now)
        return window if isinstance(window, _Window) else _Window()

    @staticmethod
    def _full(window: _Window, rates: tuple[Rate, ...], now: float) -> Rate | None:
        for rate in rates:
            since = now - rate.seconds
            if window.count_since(since) >= rate.amount:
                return rate
        return None

    def _keep(self, key: str, member: str, rates: tuple[Rate, ...], now: float) -> bool:
        window = self._window(key, now)
        longest = max(rate.seconds for rate in rates)
        window.trim(now - longest)
        added = window.add(member, now)
        self._set(key, window, longest + 1, now)
        return added

    def admit(self, ask: Ask, now: float) -> Verdict:
        keys = _Keys(ask)
        with self._lock:
            previous = self._get(keys.retry, now)
            if previous == UNSETTLED:
                return Verdict(UNSETTLED)
            if isinstance(previous, str) and previous.startswith(PENDING):
                return Verdict(PENDING, pending_since=_since(previous))
            if previous is not None:
                return Verdict("replay", transaction_id=previous)
            marked = not ask.enrolment and self._get(keys.known, now) is not None
            unproven = self._window(keys.unproven, now)  # its codes as a known number no conversion proved
            known = marked and len(unproven.entries) < ask.known_codes
            lapsed = marked and not known
            number_rates = ask.known_rates if known else ask.new_rates
            refusal: tuple[str, Rate] | None = None
            full = self._full(self._window(keys.number, now), number_rates, now)
            if full is not None:
                refusal = ("number", full)
            elif not known:
                for scope, key, rates in (
                    ("range", keys.range, ask.range_rates),
                    ("country", keys.country, ask.country_rates),
                    ("all", keys.all, ask.all_rates),
                ):
                    full = self._full(self._window(key, now), rates, now)
                    if full is not None:
                        refusal = (scope, full)
                        break
            when = _seconds(now)
            if refusal is None or ask.claim_refused:
                self._set(keys.retry, f"{PENDING} {when}", ask.retry_seconds, now)
            if refusal is not None:
                return Verdict("refused", known=known, scope=refusal[0], rate=refusal[1], lapsed=lapsed)
            member = _member(when)
            self._keep(keys.number, member, ask.known_rates + ask.new_rates, now)
            added_range = added_country = added_all = False
            if known:
                unproven.add(member, now)
                self._set(keys.unproven, unproven, ask.known_seconds, now)
            else:  # every code counts, each its own entry: a conversion finds its number's entries
                code = f"{ask.number}|{member}"
                added_range = self._keep(keys.range, code, ask.range_rates, now)
                added_country = self._keep(keys.country, code, ask.country_rates, now)
                added_all = self._keep(keys.all, code, ask.all_rates, now)
            return Verdict(
                "admitted",
                known=known,
                member=member,
                added_range=added_range,
                added_country=added_country,
                added_all=added_all,
                lapsed=lapsed,
            )

    def begin_admit(self, ask: Ask, now: float) -> Callable[[], Verdict]:
        verdict = self.admit(ask, now)
        return lambda: verdict

    def release(self, ask: Ask, verdict: Verdict, unsettled: bool) -> None:
        keys = _Keys(ask)
        now = self._clock()
        with self._lock:
            code = f"{ask.number}|{verdict.member}"
            for key, member, took in (
                (keys.number, verdict.member, bool(verdict.member)),
                (keys.range, code, verdict.added_range),
                (keys.country, code, verdict.added_country),
                (keys.all, code, verdict.added_all),
            ):
                if took:
                    self._window(key, now).discard(member)
            if verdict.known and verdict.member:
                self._window(keys.unproven, now).discard(verdict.member)
            if str(self._get(keys.retry, now)).startswith(PENDING):
                if unsettled:  # keeps its expiry: 30 s from the first call
                    self._entries[keys.retry].value = UNSETTLED
                else:
                    del self._entries[keys.retry]

    def delivered(self, retry: str, transaction_id: str) -> None:
        with self._lock:
            entry = self._entries.get(KEY_PREFIX + "o:" + retry)
            if entry is not None:  # keeps its expiry: 30 s from the first call
                entry.value = transaction_id

    def remember(self, retry: str, state: str, seconds: float) -> None:
        now = self._clock()
        with self._lock:
            if self._get(KEY_PREFIX + "o:" + retry, now) is None:
                self._set(KEY_PREFIX + "o:" + retry, state, seconds, now)

    def lookup(self, retry: str) -> str | None:
        with self._lock:
            value = self._get(KEY_PREFIX + "o:" + retry, self._clock())
        return value if isinstance(value, str) else None

    def convert(self, number: str, range_: str, country: str, known_seconds: int, sent_by: float) -> None:
        now = self._clock()
        with self._lock:
            self._set(KEY_PREFIX + "k:" + number, True, known_seconds, now)
            unproven = self._window(KEY_PREFIX + "u:" + number, now)
            for code in unproven.sent_by(sent_by):
                unproven.discard(code)
            prefix = number + "|"
            for key in (KEY_PREFIX + "r:" + range_, KEY_PREFIX + "c:" + country, ALL_KEY):
                window = self._window(key, now)
                for code in [code for code in window.sent_by(sent_by) if code.startswith(prefix)]:
                    window.discard(code)

    def claim_all(self, keys: list[str], ttl_seconds: int) -> list[bool]:
        return self._claims.claim_all(keys, ttl_seconds)


class _Window:
    """A moving window in memory, as Redis's sorted set: members by time, counted by bisection."""

    __slots__ = ("entries", "members")
    _LAST = "\U0010ffff"  # sorts after every member at the same time

    def __init__(self) -> None:
        self.entries: list[tuple[float, str]] = []  # sorted by time
        self.members: dict[str, float] = {}

    def count_since(self, since: float) -> int:
        """Members added after `since` (ZCOUNT key (since +inf)."""
        return len(self.entries) - bisect.bisect_right(self.entries, (since, self._LAST))

    def add(self, member: str, now: float) -> bool:
        existed = self.discard(member)
        bisect.insort(self.entries, (now, member))
        self.members[member] = now
        return not existed

    def discard(self, member: str) -> bool:
        score = self.members.pop(member, None)
        if score is None:
            return False
        del self.entries[bisect.bisect_left(self.entries, (score, member))]
        return True

    def sent_by(self, when: float) -> list[str]:
        """The members added at or before `when` (ZRANGE key -inf when BYSCORE)."""
        return [member for _, member in self.entries[: bisect.bisect_right(self.entries, (when, self._LAST))]]

    def trim(self, cutoff: float) -> None:
        """Drop the members added before `cutoff`."""
        end = bisect.bisect_left(self.entries, (cutoff, ""))
        for _, member in self.entries[:end]:
            del self.members[member]
        del self.entries[:end]


class _Keys:
    """The store keys of one Ask: hashes, ranges and countries, never a number in the clear."""

    __slots__ = ("all", "country", "known", "number", "range", "retry", "unproven")

    def __init__(self, ask: Ask) -> None:
        self.number = KEY_PREFIX + "n:" + ask.number
        self.known = KEY_PREFIX + "k:" + ask.number
        self.unproven = KEY_PREFIX + "u:" + ask.number
        self.range = KEY_PREFIX + "r:" + ask.range
        self.country = KEY_PREFIX + "c:" + ask.country
        self.retry = KEY_PREFIX + "o:" + ask.retry
        self.all = ALL_KEY


# ------------------------------------------------------------------------------ redis:// rediss://

# Every script's reply starts with a tag its call sent, unique across instances: a reply that is not the
# call's own (the stream out of step: a peer that answered one command twice) is never read as its answer.

# KEYS: number window, known flag, range window, country window, retry record, window over every country,
#       the known number's unproven codes
# ARGV: now, member (unique: it also tags the reply), number hash, retry seconds, enrolment (1/0), claim
#       refused (1/0), a known number's unproven codes at most, known seconds; the number's, range's, country's and all
#       countries' windows: their key lifetimes (seconds), then the most codes their limits count; then five
#       lists of limits: known-number, new-number, range, country and all, each as its length followed by
#       amount, seconds pairs.
# Numbers go in and out as the caller's strings: Lua's number formatting is the script's dearest step.
ADMIT_SCRIPT = """
-- Each list of limits is read where it stands in ARGV: its length, then amount and seconds pairs.
local known_at = 17
local new_at = known_at + 2 * ARGV[known_at] + 1
local range_at = new_at + 2 * ARGV[new_at] + 1
local country_at = range_at + 2 * ARGV[range_at] + 1
local all_at = country_at + 2 * ARGV[country_at] + 1
local previous = redis.call('GET', KEYS[5])
if previous then
  if string.sub(previous, 1, 7) == 'pending' or previous == 'unsettled' then return ARGV[2] .. ' ' .. previous end
  return ARGV[2] .. ' replay ' .. previous
end
local now = tonumber(ARGV[1])
-- A known number with ARGV[7] codes no conversion proved is held as new until one does.
local known, lapsed = false, false
if ARGV[5] == '0' and redis.call('EXISTS', KEYS[2]) == 1 then
  known = redis.call('ZCARD', KEYS[7]) < tonumber(ARGV[7])
  lapsed = not known
end
local flag = known and '1' or (lapsed and '2' or '0')
local sizes = {}
local function full(key, at)
  -- A set holds at most its largest amount plus one (trimmed past its longest window once it could
  -- fill a limit): fewer members than a limit's amount cannot fill it, so most calls count nothing.
  local size = redis.call('ZCARD', key)
  sizes[key] = size
  for index = 1, ARGV[at] do
    local amount = tonumber(ARGV[at + 2 * index - 1])
    if size >= amount and redis.call('ZCOUNT', key, '(' .. (now - ARGV[at + 2 * index]), '+inf') >= amount then
      return index
    end
  end
  return 0
end
local scope, index = nil, 0
if known then index = full(KEYS[1], known_at) else index = full(KEYS[1], new_at) end
if index > 0 then
  scope = 'number'
elseif not known then
  index = full(KEYS[3], range_at)
  if index > 0 then
    scope = 'range'
  else
    index = full(KEYS[4], country_at)
    if index > 0 then
      scope = 'country'
    else
      index = full(KEYS[6], all_at)
      if index > 0 then scope = 'all' end
    end
  end
end
if scope == nil or ARGV[6] == '1' then
  redis.call('SET', KEYS[5], 'pending ' .. ARGV[1], 'EX', ARGV[4])
end
if scope then return ARGV[2] .. ' refused ' .. flag .. ' ' .. scope .. ' ' .. index end
-- ARGV[9 + n]: the window's key lifetime; ARGV[13 + n]: the most codes its limits count
local function keep(key, member, n)
  local added = redis.call('ZADD', key, ARGV[1], member)
  if added == 1 and (sizes[key] or redis.call('ZCARD', key) - 1) + 1 > tonumber(ARGV[13 + n]) then
    redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. (now - ARGV[9 + n] + 1))
  end
  redis.call('EXPIRE', key, ARGV[9 + n])
  return added
end
keep(KEYS[1], ARGV[2], 0)
local added_range, added_country, added_all = 0, 0, 0
if known then
  redis.call('ZADD', KEYS[7], ARGV[1], ARGV[2])  -- unproven until a conversion says the code was used
  redis.call('EXPIRE', KEYS[7], ARGV[8])
else
  -- Every code counts, each its own entry ('number hash|code'): a conversion finds its number's entries.
  local code = ARGV[3] .. '|' .. ARGV[2]
  added_range = keep(KEYS[3], code, 1)
  added_country = keep(KEYS[4], code, 2)
  added_all = keep(KEYS[6], code, 3)
end
return ARGV[2] .. ' admitted ' .. flag .. ' ' .. added_range .. ' ' .. added_country .. ' ' .. added_all
"""

# KEYS: number window, range window, country window, retry record, window over every country, the known
#       number's unproven codes
# ARGV: member, number hash, added range (1/0), added country (1/0), added to all (1/0), unsettled (1/0),
#       admitted as a known number's code (1/0), tag
RELEASE_SCRIPT = """
local code = ARGV[2] .. '|' .. ARGV[1]
if ARGV[7] == '1' then redis.call('ZREM', KEYS[6], ARGV[1]) end
if ARGV[1] ~= '' then redis.call('ZREM', KEYS[1], ARGV[1]) end
if ARGV[3] == '1' then redis.call('ZREM', KEYS[2], code) end
if ARGV[4] == '1' then redis.call('ZREM', KEYS[3], code) end
if ARGV[5] == '1' then redis.call('ZREM', KEYS[5], code) end
local record = redis.call('GET', KEYS[4])
if record and string.sub(record, 1, 7) == 'pending' then
  if ARGV[6] == '1' then redis.call('SET', KEYS[4], 'unsettled', 'KEEPTTL') else redis.call('DEL', KEYS[4]) end
end
return ARGV[8]
"""

CLAIM_SCRIPT = """
-- KEYS: the claims. ARGV: their lifetime (seconds), the tag. One '1' (claimed now) or '0' (claimed before) per key.
local taken = {}
for index, key in ipairs(KEYS) do
  taken[index] = redis.call('SET', key, '1', 'NX', 'EX', ARGV[1]) and '1' or '0'
end
return ARGV[2] .. ' ' .. table.concat(taken)
"""

# KEYS: known flag, range window, country window, window over every country, the number's unproven codes.
# ARGV: number hash, known seconds, the time by which the codes it proves were sent, the tag
CONVERT_SCRIPT = """
redis.call('SET', KEYS[1], '1', 'EX', ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', ARGV[3])
-- The windows hold at most their largest limit's amount of codes: reading them is cheap. Only the codes
-- sent by ARGV[3] are proven: the one typed was sent before the event that says so.
local prefix = ARGV[1] .. '|'
for index = 2, 4 do
  for _, code in ipairs(redis.call('ZRANGEBYSCORE', KEYS[index], '-inf', ARGV[3])) do
    if string.sub(code, 1, #prefix) == prefix then redis.call('ZREM', KEYS[index], code) end
  end
end
return ARGV[4]
"""

# KEYS: the retry record. ARGV: the tag. The tag alone when there is no record.
LOOKUP_SCRIPT = """
local record = redis.call('GET', KEYS[1])
if record then return ARGV[1] .. ' ' .. record end
return ARGV[1]
"""


ADMIT_KEYS = 7
ADMIT_OWN_ARGS = 8  # the arguments of the request itself, before the limits


def _bulk(word: bytes) -> bytes:
    """One word of a command as Redis reads it (RESP's bulk string)."""
    return b"$%d\r\n%s\r\n" % (len(word), word)


def _encode(rates: tuple[Rate, ...]) -> list[str]:
    """A list of limits as the admit script reads it: its length, then amount and seconds pairs."""
    return [str(len(rates)), *(str(part) for rate in rates for part in rate)]


def _lifetime(*lists: tuple[Rate, ...]) -> str:
    """A window key lives one second past its longest window: every key expires."""
    return str(max(rate.seconds for rates in lists for rate in rates) + 1)


Reply = str | int | None  # what our commands answer: a word, a transaction id, a count, or nothing
MAX_REPLY_BYTES = 4096  # the longest reply of ours is a transaction id: anything far longer is not ours
# The connection's set-up replies (AUTH, SELECT, CLIENT) are a few words each: all of them together
# far shorter than this, which bounds what a store flooding them (an endless line) can cost.
SET_UP_MAX_BYTES = 16 * MAX_REPLY_BYTES


class _StoreRefused(Exception):
    """The store answered with an error (a refusal: out of memory, read-only, busy, a wrong password)."""


class _NoScript(_StoreRefused):
    """The store does not hold the script (a new or restarted server): send its text."""


class _WrongServer(_StoreRefused):
    """A refusal that says the connection leads to a server that can no longer serve it: a primary
    demoted to a replica behind the same name (READONLY, MASTERDOWN: a failover), or a server that
    forgot the connection's AUTH (NOAUTH: restarted with a password). Every kept connection leads there."""


# The error replies that retire every kept connection: new ones reach whatever the store's name leads to now.
# Redis 6 (and stores of its lineage) wraps a script's error in its own: '-ERR Error running script
# (call to f_…): @user_script:12: @user_script: 12: -READONLY You can't write against a read only replica.'
_WRONG_SERVER = re.compile(rb"(?:^|-)(?:READONLY|MASTERDOWN|NOAUTH)\b")


class _Garbled(Exception):
    """The store's answer is not one of ours: the connection can no longer be trusted."""


def _pack(words: tuple[str | int | bytes, ...]) -> bytes:
    """A command as Redis reads it (RESP: an array of bulk strings)."""
    encoded = (word if isinstance(word, bytes) else str(word).encode() for word in words)
    return b"*%d\r\n" % len(words) + b"".join(_bulk(word) for word in encoded)


# A non-blocking socket that cannot go on now (TLS says so in its own words).
_WOULD_BLOCK = (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError)


def _send(sock: socket.socket, command: bytes, until: float) -> None:
    """Send one command within `until` (a time.monotonic() value). The call path keeps its sockets
    non-blocking: a command fits an idle connection's buffer, so this is one system call, where a
    socket timeout costs two more (setting it, and a poll before the send)."""
    sent = 0
    if sock.gettimeout() == 0.0:
        try:
            sent = sock.send(command)
        except _WOULD_BLOCK:
            sent = 0  # the buffer is full: the rest of the way waits
    if sent < len(command):
        _waiting(sock, until, lambda: sock.sendall(command[sent:]))


def _receive(sock: socket.socket, until: float) -> bytes:
    """What the store has sent: one system call when the reply is there, and a poll within `until`
    only when nothing is there yet."""
    if sock.gettimeout() != 0.0:  # a socket the call path has not set up
        return _waiting(sock, until, lambda: sock.recv(READ_BYTES))
    while True:
        try:
            return sock.recv(READ_BYTES)
        except ssl.SSLWantWriteError:  # TLS renegotiating: it has to write first
            _ready(sock, select.POLLOUT, until)
        except (BlockingIOError, ssl.SSLWantReadError):
            _ready(sock, select.POLLIN, until)


def _closed_or_out_of_step(sock: socket.socket) -> bool:
    """Whether a kept connection, idle since its last reply, has anything to read: the store closed
    it (or reset it), or sent what no command asked for. Either way it cannot carry the next command.
    Over TLS, bytes already decrypted wait in the TLS layer, where polling the socket does not see them."""
    if getattr(sock, "pending", None) is not None and sock.pending():  # type: ignore[attr-defined]
        return True
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


def _ready(sock: socket.socket, events: int, until: float) -> None:
    """Wait until the socket is ready for `events`; TimeoutError at `until`."""
    poller = select.poll()
    poller.register(sock, events)
    if not poller.poll(_left(until) * 1000):
        raise TimeoutError("the store's deadline passed")


def _waiting(sock: socket.socket, until: float, step: Callable[[], _T]) -> _T:
    """`step` under a socket timeout of what is left of `until`; the socket is non-blocking again after."""
    sock.settimeout(_left(until))
    try:
        return step()
    finally:
        if sock.fileno() != -1:  # not when the watchdog or a fault closed it
            sock.settimeout(0.0)


def _read(sock: Any, until: float) -> Reply:
    """Read one reply within `until`: each socket read gets the time that is left, so a store that
    trickles its answer still ends there. Raises ConnectionError when the store closed the connection,
    TimeoutError at the deadline.

    redis-py opens and authenticates the connection; its parser is not used here: for our commands'
    replies (one word or a transaction id) it cost as much as the loopback round trip itself."""
    data = b""
    while True:
        end = data.find(b"\r\n")
        if end >= 0:
            kind, line, rest = data[:1], data[1:end], data[end + 2 :]
            if kind == b"$":
                if line == b"-1" and not rest:
                    return None  # nothing under that key
                size = _integer(line)
                if size < 0:
                    raise _Garbled
                if len(rest) >= size + 2:
                    if rest[size:] != b"\r\n":
                        raise _Garbled
                    return rest[:size].decode("utf-8", "replace")
            elif rest:
                raise _Garbled  # a one-line reply followed by more: the stream is out of step
            elif kind == b"+":
                return _Status(line.decode("utf-8", "replace"))
            elif kind == b":":
                return _integer(line)
            elif kind == b"-":
                if line.startswith(b"NOSCRIPT"):
                    raise _NoScript
                raise _WrongServer if _WRONG_SERVER.search(line) else _StoreRefused
            else:
                raise _Garbled
        if len(data) > MAX_REPLY_BYTES:
            raise _Garbled
        piece = _receive(sock, until)
        if not piece:
            raise ConnectionError("the store closed the connection")
        data += piece


class _Status(str):
    """A one-line status reply ('+OK'): a word of the store's, never a value it keeps."""


def _untagged(reply: Reply, tag: str) -> str | None:
    """What a script's reply says after its call's tag (None: the tag alone). Any other reply is another
    command's, or not a script's: the stream is out of step, the connection cannot be trusted."""
    if not _kept(reply):
        raise _Garbled
    echoed, space, rest = reply.partition(" ")
    if echoed != tag:
        raise _Garbled
    return rest if space else None


def _kept(reply: Reply) -> TypeGuard[str]:
    """Whether a reply is a string the store keeps or a script returns (a bulk string), not a word or
    a count: any other answer to GET or to our scripts is a store not to trust."""
    return isinstance(reply, str) and not isinstance(reply, _Status)


def _integer(line: bytes) -> int:
    """A count or a length as Redis writes it: an optional minus, then digits (a 64-bit number: at
    most 19 of them; Python refuses to read more than 4,300 with a ValueError of its own)."""
    digits = line.removeprefix(b"-")
    if not digits.isdigit() or len(digits) > 19:
        raise _Garbled
    return int(line)


def _left(until: float) -> float:
    left = until - time.monotonic()
    if left <= 0:
        raise TimeoutError("the store's deadline passed")
    return left


READ_BYTES = 4096


_T = TypeVar("_T")
_V = TypeVar("_V")

_active = threading.local()  # the deadline of this thread's store call, for a connection opened inside it


def _verdict(ask: Ask, member: str, reply: Reply) -> Verdict:
    """The admit script's one line: 'admitted <number> <added to range> <to country> <to all>',
    'refused <number> <scope> <index>', 'replay <id>', 'pending <since>' or 'unsettled', where <number>
    is '0' (new), '1' (known) or '2' (lapsed). ValueError for any other."""
    if not _kept(reply):
        raise ValueError("not a line of the admit script")
    kind, _, rest = reply.partition(" ")
    if kind == "admitted":  # the usual answer first: four flags, each '0' or '1' (the first also '2')
        if len(rest) != 7 or rest[1::2] != "   " or rest[0] not in "012" or rest[2::2].strip("01"):
            raise ValueError("not a line of the admit script")
        known, added_range, added_country, added_all = rest[0] == "1", rest[2] == "1", rest[4] == "1", rest[6] == "1"
        return Verdict(
            kind, known, None, None, None, None, member, added_range, added_country, added_all, rest[0] == "2"
        )
    if kind == PENDING:
        return Verdict(PENDING, pending_since=_since(reply))
    if kind == UNSETTLED:
        return Verdict(UNSETTLED)
    if kind == "replay":
        return Verdict("replay", transaction_id=rest)
    flags = rest.split(" ")
    if kind != "refused" or len(flags) != 3 or flags[0] not in ("0", "1", "2"):
        raise ValueError("not a line of the admit script")
    known, scope, index = flags[0] == "1", flags[1], flags[2]
    scopes = {
        "number": ask.known_rates if known else ask.new_rates,
        "range": ask.range_rates,
        "country": ask.country_rates,
        "all": ask.all_rates,
    }
    if scope not in scopes or not (index.isascii() and index.isdigit()) or not 0 < int(index) <= len(scopes[scope]):
        raise ValueError("not a line of the admit script")
    return Verdict("refused", known=known, scope=scope, rate=scopes[scope][int(index) - 1], lapsed=flags[0] == "2")


class _Slot:
    """One of the store's connections, and what the store knows of it."""

    __slots__ = ("connection", "generation", "last_used")

    def __init__(self, connection: Any, generation: int) -> None:
        self.connection = connection
        self.generation = generation  # the store's count of retiring faults when it was opened
        self.last_used = 0.0  # when a command was last sent on it (time.monotonic())


class _InFlight:
    """A command sent on a connection the call holds, its reply not yet read."""

    __slots__ = ("idle", "left", "lineage", "slot", "until")

    def __init__(self, slot: _Slot, until: float, idle: float, lineage: int) -> None:
        self.slot, self.until = slot, until
        self.lineage = lineage  # the store's count of forks when it was sent: its reply is that process's
        self.idle = idle  # how long the connection lay unused before this command (0 when new)
        # The deadline's time left once the command is sent: the reply gets that much from when the
        # caller reads it, since what the caller does in between is its own time, not the store's.
        self.left = 0.0


class RedisStore(Claims):
    """Redis, Memorystore or Valkey through redis-py, every call under one overall deadline."""

    remote = True

    def __init__(self, uri: str, deadline_seconds: float = STORE_DEADLINE_SECONDS) -> None:
        import hashlib

        import redis  # imported only when a Redis store is configured: it costs start-up time
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        parts = urlsplit(uri)
        # Not the URI itself: that is a secret (it may hold the AUTH string), and the log scrubber blanks it.
        database = (parts.path or "/0").strip("/") or "0"
        tls = " over TLS" if parts.scheme == "rediss" else ""
        self.where = f"Redis at {parts.hostname}:{parts.port or 6379}, database {database}{tls}"
        self.description = f"{self.where} (shared by every instance)"
        self._deadline = deadline_seconds
        self._errors = redis.RedisError
        self._timeout = redis.TimeoutError
        self._response_error = redis.ResponseError
        self._auth_error = redis.AuthenticationError
        bases: tuple[type, ...] = (_DeadlineConnection, _ResolvedInTime, redis.Connection)
        if tls:  # TLS wraps the connection _ResolvedInTime opened (redis-py's SSLConnection calls its TCP connect)
            bases = (_DeadlineConnection, _SharedTls, redis.SSLConnection, _ResolvedInTime, redis.Connection)
        # A class of its own per store: its TLS context is this store's.
        self._connection_class = type("DeadlineConnection", bases, {"tls_context": None})
        self._connection_options = {
            # Idle connections probed every minute: kept alive through middleboxes that forget idle
            # flows, and found dead by the kernel rather than by a hook's deadline.
            "socket_keepalive": True,
            "socket_keepalive_options": KEEPALIVE,
            **redis.connection.parse_url(uri),  # type: ignore[no-untyped-call]
            "socket_timeout": deadline_seconds,
            "socket_connect_timeout": deadline_seconds,
            "retry": Retry(NoBackoff(), 0),  # one attempt: the hook fails open rather than wait
            "decode_responses": True,
            "health_check_interval": 0,
            "protocol": 2,
            # No CLIENT SETINFO (two round trips, replies to parse): a connection is set up with what it
            # needs alone (AUTH, SELECT, the URI's client_name): every round trip of an opening counts
            # when a new instance's threads all call at once.
            "driver_info": None,
        }
        self._connection_options.pop("connection_class", None)
        if tls:  # loaded at start-up, not within the first call's deadline; a fault shows at that call
            with contextlib.suppress(OSError, ValueError, TypeError):
                self._connection_class(**self._connection_options).prepare_context()
        # Connections free for the next call, the last given back on top (the warmest). A call takes
        # one for its round trip and gives it back once the whole reply is read: a connection that
        # failed, or whose reply was never read, is never given back, so none is ever out of step.
        self._idle: deque[_Slot] = deque()
        self._free = threading.Condition(threading.Lock())  # one given back, a permit to open, a rest
        self._waiting = 0  # callers waiting on _free
        self._opening = 0  # connections being opened (at most OPENING_AT_ONCE)
        self._lineage = 0  # forks this process is from (the parent's connections are the parent's)
        _STORES.add(self)
        self._scripts = {
            name: (hashlib.sha1(text.encode()).hexdigest(), text)  # noqa: S324 - Redis names scripts by SHA-1
            for name, text in (
                ("admit", ADMIT_SCRIPT),
                ("release", RELEASE_SCRIPT),
                ("convert", CONVERT_SCRIPT),
                ("claim", CLAIM_SCRIPT),
                ("lookup", LOOKUP_SCRIPT),
            )
        }
        self._encoded: dict[tuple[tuple[Rate, ...], ...], tuple[list[bytes], bytes, bytes]] = {}
        self._resting_until = 0.0
        self._faults_seen = 0

    # --------------------------------------------------------------------------- the one call path

    def _execute(self, *words: str | int | bytes) -> Reply:
        return self._call(_pack(words))

    def _call(self, command: bytes, until: float | None = None, tag: str | None = None) -> Reply:
        """One command (packed) and its reply, within the store's deadline (or what is left of a call's
        `until`), connect included. With a `tag` (a script's), the reply is what follows it."""
        return self._finish(self._start(command, until), tag)

    def _start(self, command: bytes, until: float | None = None) -> _InFlight:
        """Send one command (packed); `_finish` reads its reply, within the same deadline."""
        now = time.monotonic()
        if now < self._resting_until:
            raise StoreUnavailable("STORE_RESTING", fresh=False)
        if until is None:
            until = now + self._deadline
        slot = self._take(until)
        connection = slot.connection
        opening = connection._sock is None  # a new connection: this call holds a permit to open it
        idle = 0.0 if opening else now - slot.last_used
        slot.last_used = now
        flight = _InFlight(slot, until, idle, self._lineage)

        def send() -> None:
            if opening:
                try:
                    self._connect(connection, until)
                finally:
                    self._opened()
            _send(connection._sock, command, until)

        self._faults(flight, send)
        flight.left = max(until - time.monotonic(), 0.0)
        return flight

    def _finish(self, flight: _InFlight, tag: str | None = None) -> Reply:
        """The reply to the command `flight` sent (with a script's `tag`, what follows it); the connection
        is given back once it is read whole, and is the call's own."""
        slot = flight.slot
        if flight.lineage != self._lineage:  # sent by the parent before a fork: the reply is the parent's
            _let_go(slot.connection)
            raise StoreUnavailable("STORE_UNREACHABLE", fresh=False)
        flight.until = time.monotonic() + flight.left

        # A connection closed once the command was sent is a fault, never a reason to send it again:
        # the store may have run it (a retry record written, a claim taken) before it closed.
        def read() -> Reply:
            try:
                reply = _read(slot.connection._sock, flight.until)
            except _WrongServer:  # read whole, but the server behind the name is not this one any more
                slot.connection.disconnect()
                self._faults_seen += 1  # the kept connections are retired as they are next taken
                raise
            except _StoreRefused:  # an error reply, read whole: the connection is in step
                self._give_back(slot)
                raise
            if tag is not None:
                reply = _untagged(reply, tag)
            self._give_back(slot)
            return reply

        return self._faults(flight, read)

    def _take(self, until: float) -> _Slot:
        """A connection for one call: a free one, or a new one to open (OPENING_AT_ONCE at a time),
        or the first of either within `until`. A caller still waiting at `until` sends nothing."""
        slot = self._free_slot()
        if slot is not None:
            return slot
        while True:
            with self._free:
                self._waiting += 1  # before looking: a connection given back from now on wakes this caller
                try:
                    now = time.monotonic()
                    if self._idle:
                        pass
                    elif now < self._resting_until:  # another call found the store at fault meanwhile
                        raise StoreUnavailable("STORE_RESTING", fresh=False)
                    elif now >= until:
                        break
                    elif self._opening < OPENING_AT_ONCE:
                        self._opening += 1
                        return _Slot(self._connection_class(**self._connection_options), self._faults_seen)
                    else:
                        self._free.wait(until - now)
                finally:
                    self._waiting -= 1
            slot = self._free_slot()
            if slot is not None:
                if time.monotonic() < until:
                    return slot
                self._give_back(slot)  # in step and unused: the next caller's
                break
        # No connection came free in the call's time: the store is too slow for the callers it has.
        raise StoreUnavailable("STORE_TIMEOUT", fresh=self._rest())

    def _free_slot(self) -> _Slot | None:
        """The last connection given back that can carry a command; the others found on the way are closed."""
        idle = self._idle
        while idle:
            try:
                slot = idle.pop()
            except IndexError:  # another caller took the last one
                return None
            sock = slot.connection._sock
            if slot.generation == self._faults_seen and sock is not None and not _closed_or_out_of_step(sock):
                return slot
            # Retired after an idle one failed, or closed by the store while idle (a restart, a failover).
            slot.connection.disconnect()
        return None

    def _give_back(self, slot: _Slot) -> None:
        self._idle.append(slot)
        if self._waiting:
            with self._free:
                self._free.notify()

    def _opened(self) -> None:
        """A permit to open a connection, returned (opened or not)."""
        with self._free:
            self._opening -= 1
            if self._waiting:
                self._free.notify()

    def _faults(self, flight: _InFlight, step: Callable[[], _T]) -> _T:
        """Run one half of a call; every fault of the store becomes StoreUnavailable (or _NoScript)."""
        try:
            return step()
        except _NoScript:
            raise  # the store answered: the connection is sound, the caller sends the script's text
        except _StoreRefused:
            raise StoreUnavailable("STORE_REFUSED", fresh=self._rest()) from None
        except (self._errors, OSError, _Garbled) as error:
            flight.slot.connection.disconnect()  # never given back: a store back up is reached afresh
            fresh = self._rest()
            if flight.idle > SUSPECT_IDLE_SECONDS:
                # A connection that failed after lying idle: the others, idle as long, may be as dead
                # (a network that forgot idle flows without a word), and each would cost a hook the
                # deadline and the instance another rest. Every connection is retired when next taken.
                self._faults_seen += 1
            if isinstance(error, self._auth_error | self._response_error):
                raise StoreUnavailable("STORE_REFUSED", fresh=fresh) from None
            timed_out = isinstance(error, self._timeout | TimeoutError) or time.monotonic() >= flight.until
            raise StoreUnavailable("STORE_TIMEOUT" if timed_out else "STORE_UNREACHABLE", fresh=fresh) from None

    def _connect(self, connection: Any, until: float) -> None:
        """redis-py connects (TLS, AUTH, SELECT) under the watchdog: whatever it reads, it ends at `until`."""
        with overall_deadline(max(until - time.monotonic(), 0.001)) as call:
            _active.call = call
            try:
                connection.connect()
            except (self._errors, OSError):
                raise
            except Exception:  # a store garbling its set-up replies fails redis-py's parser its own
                raise _Garbled from None  # ways (RecursionError on deep nesting): not a bug of ours
            finally:
                _active.call = None
            if call.finish():
                raise TimeoutError("the store's deadline passed while connecting")
        connection._sock = connection._sock.raw  # set up: the call path reads the socket itself, capped
        connection._sock.settimeout(0.0)  # redis-py is done with it: the call path's own sends and reads

    def _rest(self) -> bool:
        """Leave the store alone for a while: calls fail open at once meanwhile, callers waiting for a
        connection too. True when this starts the rest: the failure to report (the calls that were
        with the store when it failed fail with it, and one line says so)."""
        with self._free:
            now = time.monotonic()
            fresh = now >= self._resting_until
            self._resting_until = now + RESTING_SECONDS
            if self._waiting:
                self._free.notify_all()
        return fresh

    def _forked(self) -> None:
        """In a child process: the parent's connections are the parent's. Their sockets are closed
        here without a word to the store (a shutdown would cut the parent's), and never used."""
        for slot in self._idle:
            _let_go(slot.connection)
        self._idle = deque()
        self._free = threading.Condition(threading.Lock())
        self._waiting = self._opening = 0
        self._lineage += 1

    def _script(self, name: str, keys: list[str], args: list[Any]) -> str | None:
        """Run a script by its SHA-1, its tag its last argument: what its reply says after the tag."""
        tag = _tag()
        command = _pack(("EVALSHA", self._scripts[name][0], len(keys), *keys, *args, tag))
        return self._begin_script(name, command, tag, lambda: (keys, [*args, tag]))()

    def _begin_script(
        self, name: str, command: bytes, tag: str, words: Callable[[], tuple[list[str], list[Any]]]
    ) -> Callable[[], str | None]:
        """`_script` in two halves: its EVALSHA (`command`, packed, `tag` among its arguments) sent now,
        its reply read by calling what this returns. `words` gives its keys and arguments, should the
        store not hold the script."""
        flight = self._start(command)

        def reply() -> str | None:
            try:
                return cast(str | None, self._finish(flight, tag))
            except _NoScript:  # a new or restarted server: EVAL sends the text and caches it, in the time left
                keys, args = words()
                try:
                    command = _pack(("EVAL", self._scripts[name][1], len(keys), *keys, *args))
                    return cast(str | None, self._call(command, flight.until, tag))
                except _NoScript:
                    raise StoreUnavailable("STORE_REFUSED", fresh=self._rest()) from None

        return reply

    def _limits(self, ask: Ask) -> tuple[list[bytes], bytes, bytes]:
        """The key lifetimes and the five lists of limits, encoded once per combination: as arguments,
        and packed as the head and tail of the admit command (the words around the request's own)."""
        lists = (ask.known_rates, ask.new_rates, ask.range_rates, ask.country_rates, ask.all_rates)
        encoded = self._encoded.get(lists)
        if encoded is None:
            windows = ((ask.known_rates, ask.new_rates), (ask.range_rates,), (ask.country_rates,), (ask.all_rates,))
            lifetimes = [_lifetime(*window) for window in windows]
            most = [str(max(rate.amount for rates in window for rate in rates)) for window in windows]
            parts = [part.encode() for part in lifetimes + most + [part for rates in lists for part in _encode(rates)]]
            words = 3 + ADMIT_KEYS + ADMIT_OWN_ARGS + len(parts)
            head = b"*%d\r\n" % words + b"".join(
                _bulk(word) for word in (b"EVALSHA", self._scripts["admit"][0].encode())
            )
            head += _bulk(b"%d" % ADMIT_KEYS)
            encoded = self._encoded[lists] = (parts, head, b"".join(_bulk(part) for part in parts))
        return encoded

    # ------------------------------------------------------------------------------- the interface

    def admit(self, ask: Ask, now: float) -> Verdict:
        return self.begin_admit(ask, now)()

    def begin_admit(self, ask: Ask, now: float) -> Callable[[], Verdict]:
        keys = _Keys(ask)
        when = _seconds(now)
        member = _member(when)
        words = (  # ADMIT_SCRIPT's KEYS, then the request's own ARGV (the limits follow)
            keys.number,
            keys.known,
            keys.range,
            keys.country,
            keys.retry,
            keys.all,
            keys.unproven,
            when,
            member,
            ask.number,
            str(ask.retry_seconds),
            "1" if ask.enrolment else "0",
            "1" if ask.claim_refused else "0",
            str(ask.known_codes),
            str(ask.known_seconds),
        )
        limits, head, tail = self._limits(ask)
        # Packed by hand, in one piece: redis-py's packer cost more than the rest of the call's Python.
        # Every word is ASCII by construction (hashes, digits, country codes): 'ascii' fails loudly if not.
        own = "".join([f"${len(word)}\r\n{word}\r\n" for word in words]).encode("ascii")
        reply = self._begin_script(
            "admit",
            b"".join((head, own, tail)),
            member,
            lambda: (list(words[:ADMIT_KEYS]), [*words[ADMIT_KEYS:], *limits]),
        )

        def verdict() -> Verdict:
            line = reply()
            try:
                return _verdict(ask, member, line)
            except ValueError:  # a store that is not ours, or a script of another version: rest as for any fault
                raise StoreUnavailable("STORE_UNREACHABLE", fresh=self._rest()) from None

        return verdict

    def release(self, ask: Ask, verdict: Verdict, unsettled: bool) -> None:
        keys = _Keys(ask)
        self._script(
            "release",
            [keys.number, keys.range, keys.country, keys.retry, keys.all, keys.unproven],
            [
                verdict.member,
                ask.number,
                int(verdict.added_range),
                int(verdict.added_country),
                int(verdict.added_all),
                int(unsettled),
                int(verdict.known and bool(verdict.member)),
            ],
        )

    def delivered(self, retry: str, transaction_id: str) -> None:
        self._execute("SET", KEY_PREFIX + "o:" + retry, transaction_id, "XX", "KEEPTTL")

    def remember(self, retry: str, state: str, seconds: float) -> None:
        self._execute("SET", KEY_PREFIX + "o:" + retry, state, "PX", max(int(seconds * 1000), 1), "NX")

    def lookup(self, retry: str) -> str | None:
        return self._script("lookup", [KEY_PREFIX + "o:" + retry], [])

    def convert(self, number: str, range_: str, country: str, known_seconds: int, sent_by: float) -> None:
        keys = [
            KEY_PREFIX + "k:" + number,
            KEY_PREFIX + "r:" + range_,
            KEY_PREFIX + "c:" + country,
            ALL_KEY,
            KEY_PREFIX + "u:" + number,
        ]
        self._script("convert", keys, [number, known_seconds, _seconds(max(sent_by, 0.0))])

    def claim_all(self, keys: list[str], ttl_seconds: int) -> list[bool]:
        if not keys:
            return []
        reply = self._script("claim", [KEY_PREFIX + "x:" + key for key in keys], [ttl_seconds])
        if reply is None or len(reply) != len(keys):
            raise StoreUnavailable("STORE_UNREACHABLE", fresh=self._rest())  # not the answer of our script
        return [flag == "1" for flag in reply]


class _ResolvedInTime:
    """Between redis-py's TLS and its TCP connect: the host's name resolved within the call's deadline,
    then each of its addresses tried in turn, as redis-py does (TLS still checks the name)."""

    host: str
    port: int

    socket_connect_timeout: float | None

    def _connect(self) -> Any:
        name, timeout = self.host, self.socket_connect_timeout
        call = getattr(_active, "call", None)
        failed: OSError | None = None
        try:
            for address, left in each_address(name, self.port, call.deadline if call is not None else None):
                if left is not None:
                    self.socket_connect_timeout = left if timeout is None else min(timeout, left)
                self.host = address
                try:
                    return super()._connect()  # type: ignore[misc]
                except OSError as error:
                    failed = error
            raise failed or OSError("no address of the store's host answered")
        finally:
            self.host, self.socket_connect_timeout = name, timeout


def _hold(sock: Any) -> None:
    """The store call's deadline (when one runs) shuts `sock` when it passes; TimeoutError if it has."""
    call = getattr(_active, "call", None)
    if call is not None:
        call.hold(sock)


class _DeadlineConnection:
    """Mixed into redis-py's connection: a socket opened inside a store call is held by the call's
    deadline, so the watchdog can shut it during AUTH, set-up or the reply alike."""

    def _connect(self) -> Any:
        """redis-py's socket, connected (and through TLS's handshake), held by the call's deadline
        before AUTH and the rest are read: shut at once if the deadline passed meanwhile."""
        sock = super()._connect()  # type: ignore[misc]
        _hold(sock)
        return _SetUpSocket(sock)


class _SetUpSocket:
    """redis-py's socket while redis-py sets the connection up: what it reads is counted, and past
    SET_UP_MAX_BYTES the store's answer is not one of Redis's (redis-py's reader has no cap of its own)."""

    __slots__ = ("_left", "raw")

    def __init__(self, raw: Any) -> None:
        self.raw = raw
        self._left = SET_UP_MAX_BYTES

    def recv(self, size: int, *flags: int) -> bytes:
        data: bytes = self.raw.recv(size, *flags)
        self._left -= len(data)
        if self._left < 0:
            raise _Garbled
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self.raw, name)


class _SharedTls:
    """Mixed into redis-py's SSLConnection: one TLS context per store, built as redis-py builds it,
    where redis-py builds one for every connection. Loading the CA bundle costs tens of milliseconds
    of CPU, within the store's deadline, for every new connection."""

    tls_context: ssl.SSLContext | None
    host: str
    ssl_validate_ocsp: bool
    ssl_validate_ocsp_stapled: bool

    def _wrap_socket_with_ssl(self, sock: socket.socket) -> ssl.SSLSocket:
        if self.ssl_validate_ocsp or self.ssl_validate_ocsp_stapled:  # redis-py's own checks, per connection
            return super()._wrap_socket_with_ssl(sock)  # type: ignore[misc, no-any-return]
        wrapped = self.prepare_context().wrap_socket(sock, server_hostname=self.host, do_handshake_on_connect=False)
        _hold(wrapped)  # the watchdog can shut it mid-handshake: a handshake trickled past the deadline ends there
        wrapped.do_handshake()
        return wrapped

    def prepare_context(self) -> ssl.SSLContext:
        """The store's context, built by its first connection (or ahead of it, by the store)."""
        kind = type(self)
        if kind.tls_context is None:
            kind.tls_context = tls_context(self)
        return kind.tls_context


def tls_context(options: Any, system_authorities: bool = True) -> ssl.SSLContext:
    """redis-py 8.1's SSLConnection._wrap_socket_with_ssl, its context alone, from a connection's
    options. Without `system_authorities`, only what the URI names is loaded (settings' check)."""
    context = ssl.create_default_context() if system_authorities else ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = options.check_hostname
    context.verify_mode = options.cert_reqs
    for flag in options.ssl_include_verify_flags or ():
        context.verify_flags |= flag
    for flag in options.ssl_exclude_verify_flags or ():
        context.verify_flags &= ~flag
    if options.certfile or options.keyfile:
        context.load_cert_chain(
            certfile=options.certfile, keyfile=options.keyfile, password=options.certificate_password
        )
    if options.ca_certs is not None or options.ca_path is not None or options.ca_data is not None:
        context.load_verify_locations(cafile=options.ca_certs, capath=options.ca_path, cadata=options.ca_data)
    if options.ssl_min_version is not None:
        context.minimum_version = options.ssl_min_version
    if options.ssl_ciphers:
        context.set_ciphers(options.ssl_ciphers)
    return context


_STORES: weakref.WeakSet[RedisStore] = weakref.WeakSet()


def _let_go(connection: Any) -> None:
    """A forked child's copy of a parent's connection: its socket closed here, without the shutdown
    redis-py's disconnect (or its finaliser) would send, which would cut the parent's connection."""
    sock, connection._sock = connection._sock, None
    if sock is not None:
        with contextlib.suppress(OSError):
            getattr(sock, "raw", sock).close()


def _forget_connections() -> None:
    global _PROCESS  # a child is an instance of its own: its members and tags are its own too
    _PROCESS = secrets.token_hex(4)
    for store in list(_STORES):
        store._forked()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_connections)


def open_store(uri: str) -> Store:
    """The store GUARD_STORAGE_URI names (validated by settings: memory://, redis:// or rediss://)."""
    if uri.startswith(("redis://", "rediss://")):
        return RedisStore(uri)
    return MemoryStore()


__all__ = [
    "PENDING",
    "UNSETTLED",
    "Ask",
    "MemoryStore",
    "RedisStore",
    "Store",
    "StoreUnavailable",
    "Verdict",
    "open_store",
]


class _Expiring(Generic[_V]):
    """Entries each kept until its time, in the order they were set, at most `capacity` at once: the
    oldest go first, once expired or when full. Not locked: its owner holds a lock. An OrderedDict: its
    oldest entry is at hand, where a dict's first is found past every entry deleted before it."""

    def __init__(self, capacity: int) -> None:
        self._entries: OrderedDict[str, tuple[_V, float]] = OrderedDict()
        self._capacity = capacity

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str, now: float) -> _V | None:
        entry = self._entries.get(key)
        return entry[0] if entry is not None and entry[1] > now else None

    def set(self, key: str, value: _V, until: float, now: float) -> None:
        """Set anew (its time too): it becomes the newest."""
        self._entries[key] = (value, until)
        self._entries.move_to_end(key)
        while self._entries:
            _, oldest_until = next(iter(self._entries.values()))
            if oldest_until > now and len(self._entries) <= self._capacity:
                break
            self._entries.popitem(last=False)

    def replace(self, key: str, value: _V) -> None:
        """A new value for a kept entry, its time and place kept."""
        entry = self._entries.get(key)
        if entry is not None:
            self._entries[key] = (value, entry[1])

    def pop(self, key: str) -> None:
        self._entries.pop(key, None)

    def until(self, key: str) -> float:
        """When the entry's time is up (0 when there is none)."""
        entry = self._entries.get(key)
        return entry[1] if entry is not None else 0.0


class LocalClaims(Claims):
    """Claims this instance remembers, each for its TTL; at most `capacity` at once (the oldest go first)."""

    def __init__(self, capacity: int = 100_000, clock: Callable[[], float] = time.monotonic) -> None:
        self._claims: _Expiring[bool] = _Expiring(capacity)  # in claim order
        self._clock = clock
        self._lock = threading.Lock()

    def claim_all(self, keys: list[str], ttl_seconds: int) -> list[bool]:
        with self._lock:
            now = self._clock()
            taken = []
            for key in keys:
                new = self._claims.get(key, now) is None
                if new:
                    self._claims.set(key, True, now + ttl_seconds, now)
                taken.append(new)
            return taken


class RecentRequests:
    """The requests this instance sent a code for within their retry window, and how each ended (PENDING,
    UNSETTLED, or the transaction id): what still answers Okta's retry of one of them when the shared
    store fails. At most `capacity` at once, the oldest first to go."""

    def __init__(self, capacity: int = 20_000, clock: Callable[[], float] = time.monotonic) -> None:
        self._records: _Expiring[str] = _Expiring(capacity)
        self._clock = clock
        self._lock = threading.Lock()

    def left(self, retry: str) -> float:
        """How long the record of `retry` has yet to run (0 when there is none)."""
        with self._lock:
            now = self._clock()
            return max(self._records.until(retry) - now, 0.0)

    def take(self, retry: str, seconds: float) -> str | None:
        """The record of `retry` within its window; None when there is none, and `retry` is recorded
        as PENDING (this call sends the code) for `seconds`."""
        now = self._clock()
        with self._lock:
            state = self._records.get(retry, now)
            if state is None:
                self._records.set(retry, PENDING, now + seconds, now)
            return state

    def peek(self, retry: str) -> str | None:
        """The record of `retry` within its window, or None; nothing is recorded."""
        with self._lock:
            return self._records.get(retry, self._clock())

    def settle(self, retry: str, state: str | None) -> None:
        """How the code of `retry` ended: its transaction id, UNSETTLED, or None (certainly not sent:
        Okta's retry is a new attempt). The record keeps its window."""
        with self._lock:
            if state is None:
                self._records.pop(retry)
            else:
                self._records.replace(retry, state)
