"""The spend guard against SMS pumping: its store (memory and a real Redis), and the hook in-process."""

from __future__ import annotations

import contextlib
import json
import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask.testing import FlaskClient

from telephony.answers import Refused
from telephony.phone import describe, mask
from telephony.rates import Rate, parse_rates
from telephony.settings import SettingsError, load_settings, secret_env_names
from telephony.store import MemoryStore, RedisStore, Store, Verdict
from tests.helpers import (
    EVENT_HOOK_SECRET,
    OKTA_API_TOKEN,
    VERIFY_SERVICE_SID,
    AppFactory,
    first_reason,
    okta_request,
    post_hook,
)
from tests.okta_stand_in import OktaState, phone_factor
from tests.redis_server import RedisServer
from tests.standins import http_answer, stand_in
from tests.traces import ENROLMENT, SIGN_IN, User, ask, code_request, passed_event, range_numbers
from tools.sandbox.twilio_sandbox import SandboxState

NOW = time.time()  # the stores expire keys by their own clock: windows are tested by moving `now` on


@pytest.fixture(autouse=True)
def _now() -> None:
    """NOW is when the test starts, not when the module was imported: a store reads its own clock for
    what it keeps (the retry record's 30 s), and a test run a minute after the import (as under a worker of
    pytest-xdist) would find its records expired before it looked."""
    global NOW
    NOW = time.time()


# Every store test runs on each store: memory, Redis, and Redis over TLS (Memorystore's in-transit
# encryption), whose sockets the call path reads and writes its own way.
@pytest.fixture(
    params=["memory", pytest.param("redis", marks=pytest.mark.e2e), pytest.param("rediss", marks=pytest.mark.e2e)]
)  # a redis-server is a process
def store(request: pytest.FixtureRequest) -> Iterator[Store]:
    if request.param == "memory":
        yield MemoryStore()
    else:
        yield RedisStore(request.getfixturevalue(f"{request.param}_url"))


def sent(sandbox: SandboxState) -> list[dict[str, Any]]:
    """What Twilio really got: messages and calls (not Verify updates)."""
    return [request for request in sandbox.requests if request["path"].endswith(("/Messages.json", "/Calls.json"))]


def hook_lines(output: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("logger") == "telephony_hook" and "outcome" in line]


def event_lines(output: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.splitlines() if '"okta event ' in line]


def converting(make_client: AppFactory, okta_api: OktaState, **settings: Any) -> FlaskClient:
    """A client whose event hook reports conversions to the guard (no Verify), its range at 1 an hour."""
    return make_client(
        **{
            "GUARD_RANGE_LIMIT": "1/hour",
            "OKTA_EVENT_HOOK_AUTH_SECRET": EVENT_HOOK_SECRET,
            "OKTA_ORG_URL": okta_api.url,
            "OKTA_API_TOKEN": OKTA_API_TOKEN,
            **settings,
        }
    )


def event_line(
    client: FlaskClient, event: dict[str, Any], capfd: pytest.CaptureFixture[str]
) -> tuple[dict[str, Any], str]:
    """Posts the event to the event hook: its one per-number line, and all it wrote."""
    capfd.readouterr()
    assert client.post("/okta/events", json=event, headers={"Authorization": EVENT_HOOK_SECRET}).status_code == 200
    output = capfd.readouterr().out
    (line,) = event_lines(output)
    return line, output


def _pending_since(record: str | None) -> float:
    """When a 'pending <seconds>' retry record's call was admitted; AssertionError for any other record."""
    assert record is not None and record.startswith("pending ") and record.count(" ") == 1, record
    return float(record.removeprefix("pending "))


def status_of(response: Any) -> str:
    body = response.get_json()
    return str(body["commands"][0]["value"][0]["status"]) if "commands" in body else first_reason(body)


# ------------------------------------------------------------------------------------- the store


def test_the_range_stops_new_numbers_at_its_cap(store: Store) -> None:
    verdicts = [store.admit(ask(f"n{i}"), NOW + i) for i in range(8)]
    assert [verdict.kind for verdict in verdicts] == ["admitted"] * 5 + ["refused"] * 3
    assert {(verdict.scope, verdict.rate) for verdict in verdicts[5:]} == {("range", Rate(5, 3600))}


def test_a_conversion_gives_its_room_back_and_the_number_stays_open(store: Store) -> None:
    for i in range(5):
        assert store.admit(ask(f"n{i}"), NOW + i).kind == "admitted"
    assert store.admit(ask("n5"), NOW + 5).kind == "refused"
    store.convert("n0", "+3361234", "FR", 86400, NOW + 5)
    assert store.admit(ask("n5", code="2"), NOW + 6).kind == "admitted"  # n0's room
    assert store.admit(ask("n6"), NOW + 7).kind == "refused"
    known = store.admit(ask("n0", code="3", enrolment=False), NOW + 8)  # the range is full, n0 is known
    assert (known.kind, known.known) == ("admitted", True)


def test_a_known_number_that_stops_converting_is_held_as_new_until_it_converts_again(store: Store) -> None:
    """Converting once is no licence: a pumper who passes one real enrolment per number would otherwise
    get every later sign-in, reset or unlock code through while the range is closed, none ever typed.
    Three codes with no conversion since, and the number counts as new; its next conversion opens it."""
    for i in range(5):
        assert store.admit(ask(f"n{i}"), NOW + i).kind == "admitted"  # the range is full
    store.convert("k", "+3361234", "FR", 86400, NOW + 5)
    signs_in = [store.admit(ask("k", code=str(n), enrolment=False), NOW + 10 + 660 * n) for n in range(4)]
    assert [(v.kind, v.known, v.lapsed) for v in signs_in] == [("admitted", True, False)] * 3 + [
        ("refused", False, True)
    ]
    assert (signs_in[3].scope, signs_in[3].rate) == ("range", Rate(5, 3600))
    store.convert("k", "+3361234", "FR", 86400, NOW + 2000)  # its owner typed a code
    again = store.admit(ask("k", code="9", enrolment=False), NOW + 2001)
    assert (again.kind, again.known, again.lapsed) == ("admitted", True, False)


def test_a_conversion_proves_the_codes_sent_by_its_challenge_not_those_after(store: Store) -> None:
    """An event that arrives after more codes went out (Okta's pacing, a second account on the number)
    proves the code that was typed and those before it: the codes sent after its challenge stay
    unproven, so one typed code never buys more than the three."""
    store.convert("k", "+3361234", "FR", 86400, NOW)
    typed, *after = (store.admit(ask("k", code=str(n), enrolment=False), NOW + 10 * (n + 1)) for n in range(3))
    assert [(v.kind, v.known) for v in (typed, *after)] == [("admitted", True)] * 3
    store.convert("k", "+3361234", "FR", 86400, NOW + 15)  # the event of the first code's challenge
    more = [store.admit(ask("k", code=f"m{n}", enrolment=False), NOW + 40 + n) for n in range(2)]
    assert [(v.known, v.lapsed) for v in more] == [(True, False), (False, True)]


def test_a_known_numbers_code_that_certainly_was_not_sent_is_not_counted_against_it(store: Store) -> None:
    store.convert("k", "+3361234", "FR", 86400, NOW)
    for n in range(5):  # each refused by Twilio (an error code): nothing went out
        verdict = store.admit(ask("k", code=str(n), enrolment=False), NOW + n)
        assert (verdict.kind, verdict.known) == ("admitted", True)
        store.release(ask("k", code=str(n), enrolment=False), verdict, unsettled=False)
    assert store.admit(ask("k", code="x", enrolment=False), NOW + 6).known is True


def test_pre_enrollment_holds_even_a_known_number_as_new(store: Store) -> None:
    for i in range(5):
        store.admit(ask(f"n{i}"), NOW + i)
    store.convert("n9", "+3361234", "FR", 86400, NOW + 5)
    assert store.admit(ask("n9", enrolment=False), NOW + 10).kind == "admitted"
    refused = store.admit(ask("n9", code="2", enrolment=True), NOW + 11)
    assert (refused.kind, refused.scope, refused.known) == ("refused", "range", False)


def test_the_country_counts_unconverted_numbers_over_every_range(store: Store) -> None:
    kinds = [store.admit(ask(f"n{i}", range_=f"+33612{i:03d}"), NOW + i).kind for i in range(12)]
    assert kinds == ["admitted"] * 10 + ["refused"] * 2
    assert store.admit(ask("x", range_="+4474001", country="GB"), NOW + 20).kind == "admitted"


def test_all_countries_together_stop_a_pump_that_moves_from_country_to_country(store: Store) -> None:
    countries = ["FR", "DE", "GB", "IT", "ES", "NL", "BE", "PT"]
    kinds = [store.admit(ask(f"n{i}", range_=f"+{i:07d}", country=countries[i % 8]), NOW + i).kind for i in range(40)]
    assert kinds == ["admitted"] * 30 + ["refused"] * 10  # 5 per country, under each country's 10
    assert store.admit(ask("x", range_="+9999999", country="JP"), NOW + 50).scope == "all"
    store.convert("n3", f"+{3:07d}", "IT", 86400, NOW + 50)  # a conversion gives back its place over every country too
    assert store.admit(ask("y", range_="+9999998", country="JP"), NOW + 51).kind == "admitted"
    assert store.admit(ask("z", range_="+9999997", country="JP"), NOW + 52).scope == "all"
    resend = store.admit(ask("n7", range_=f"+{7:07d}", country="PT", code="2"), NOW + 53)
    assert resend.scope == "all"  # a resend to a number counted already is one more code: it counts too


def test_resends_count_per_number_and_in_the_range(store: Store) -> None:
    """The caps are codes, not numbers: a pump resending to the numbers it has gets no more than one
    sending to new ones (8 numbers asked 4 times each must not get 3 codes each into one range)."""
    kinds = [store.admit(ask("n1", code=str(i)), NOW + 30 * i).kind for i in range(4)]
    assert kinds == ["admitted"] * 3 + ["refused"]
    assert store.admit(ask("n1", code="9"), NOW + 30 * 4).scope == "number"
    for i in range(2, 4):  # two more codes fill the range's 5 an hour: the three resends took three
        assert store.admit(ask(f"n{i}"), NOW + 200 + i).kind == "admitted"
    assert store.admit(ask("n7"), NOW + 300).scope == "range"


def test_a_conversion_gives_back_the_room_of_every_code_of_its_number(store: Store) -> None:
    for i in range(3):
        assert store.admit(ask("n1", code=str(i)), NOW + i).kind == "admitted"
    assert store.admit(ask("n2"), NOW + 5).kind == "admitted"
    assert store.admit(ask("n3"), NOW + 6).kind == "admitted"
    assert store.admit(ask("n4"), NOW + 7).scope == "range"
    store.convert("n1", "+3361234", "FR", 86400, NOW + 8)  # its three codes leave the range's window
    kinds = [store.admit(ask(f"n{i}"), NOW + 10 + i).kind for i in (4, 5, 6, 7)]
    assert kinds == ["admitted"] * 3 + ["refused"]


def test_a_conversion_gives_back_only_the_room_of_codes_sent_before_it(store: Store) -> None:
    """The code typed was sent before the event that says so: a code sent later is not proven by it,
    and the same event delivered again (a late event is not claimed) gives back nothing more."""
    for i in range(3):
        assert store.admit(ask("n1", code=str(i)), NOW + i).kind == "admitted"
    assert store.admit(ask("n2"), NOW + 3).kind == "admitted"
    assert store.admit(ask("n3"), NOW + 4).kind == "admitted"
    store.convert("n1", "+3361234", "FR", 86400, NOW + 1)  # passed after its first two codes
    assert store.admit(ask("n4"), NOW + 10).kind == "admitted"
    assert store.admit(ask("n5"), NOW + 11).kind == "admitted"
    assert store.admit(ask("n6"), NOW + 12).scope == "range"  # n1's third code still counts
    store.convert("n1", "+3361234", "FR", 86400, NOW + 1)  # the same event again
    assert store.admit(ask("n7"), NOW + 14).scope == "range"


def test_windows_move(store: Store) -> None:
    for i in range(5):
        store.admit(ask(f"n{i}"), NOW + i)
    assert store.admit(ask("n5"), NOW + 10).kind == "refused"
    assert store.admit(ask("n5", code="2"), NOW + 3600 + 5).kind == "admitted"  # an hour later
    for i in range(6, 10):
        store.admit(ask(f"n{i}", code="3"), NOW + 3600 + 10 + i)
    assert store.admit(ask("n11", code="4"), NOW + 7300).scope == "range"  # 10/day, still within the day
    assert store.admit(ask("n12", code="5"), NOW + 86400 + 20).kind == "admitted"


def test_a_released_code_gives_its_room_back(store: Store) -> None:
    verdicts = [(ask(f"n{i}"), store.admit(ask(f"n{i}"), NOW + i)) for i in range(5)]
    store.release(*verdicts[0], unsettled=False)
    assert store.lookup(verdicts[0][0].retry) is None  # Okta's retry of it is a new attempt
    assert store.admit(ask("n5"), NOW + 6).kind == "admitted"


def test_a_code_twilio_may_have_taken_is_marked_never_to_be_sent_again(store: Store) -> None:
    one_an_hour = parse_rates("1/hour")
    first = ask("n1", range_rates=one_an_hour)
    verdict = store.admit(first, NOW)
    kept = verdict._replace(member="", added_range=False, added_country=False, added_all=False)
    store.release(first, kept, unsettled=True)
    assert store.lookup(first.retry) == "unsettled"
    assert store.admit(first, NOW + 1) == Verdict("unsettled")
    assert store.admit(ask("n2", range_rates=one_an_hour), NOW + 2).scope == "range"  # its room still taken


def test_the_retry_record_is_pending_then_the_transaction_id(store: Store) -> None:
    first = ask("n1")
    assert store.admit(first, NOW).kind == "admitted"
    assert _pending_since(store.lookup(first.retry)) == pytest.approx(NOW, abs=1e-6)  # when the first call was admitted
    twin = store.admit(first, NOW + 0.1)  # Okta's retry while the first call is with Twilio
    assert twin == Verdict("pending", pending_since=twin.pending_since)
    assert twin.pending_since == pytest.approx(NOW, abs=1e-6)
    store.delivered(first.retry, "SM" + "a" * 32)
    replay = store.admit(first, NOW + 1)
    assert (replay.kind, replay.transaction_id) == ("replay", "SM" + "a" * 32)


def test_a_record_remembered_for_the_store_never_overwrites_one_it_holds(store: Store) -> None:
    store.remember("lost", "SM" + "b" * 32, 30)
    assert store.lookup("lost") == "SM" + "b" * 32
    store.admit(ask("n1"), NOW)
    store.remember(ask("n1").retry, "SM" + "c" * 32, 30)
    assert _pending_since(store.lookup(ask("n1").retry)) == pytest.approx(NOW, abs=1e-6)


def test_claims_are_taken_together_each_once(store: Store) -> None:
    """The event hook claims every event of a POST in one step: a key named twice, or claimed
    before, is False."""
    assert store.claim("before", 60) is True
    assert store.claim_all(["a", "before", "b", "a"], 60) == [True, False, True, False]
    assert store.claim_all([], 60) == []


def test_memory_claims_never_push_the_guards_counts_out(monkeypatch: pytest.MonkeyPatch) -> None:
    """Events are claimed for a day: on memory://, a busy day of claims in the guard's own bounded table
    would push its oldest entries out, a known number among them."""
    monkeypatch.setattr(MemoryStore, "MAX_ENTRIES", 50)
    store = MemoryStore()
    store.convert("n0", "+3361234", "FR", 86400, NOW)
    assert store.claim_all([f"okta-event:{index}" for index in range(200)], 86400) == [True] * 200
    known = store.admit(ask("n0", enrolment=False), NOW + 1)
    assert (known.kind, known.known) == ("admitted", True)


def test_a_full_memory_store_drops_its_oldest_entry_without_going_over_them_all(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Past MAX_ENTRIES (a pump of many numbers) the oldest entries go, one per entry added. Going over
    every entry each time (the expired ones' pass, which runs once a minute) under the store's lock
    made a full store cost milliseconds per entry: 200,000 entries, 6.6 ms a set, hooks in a queue."""
    monkeypatch.setattr(MemoryStore, "MAX_ENTRIES", 100)
    passes: list[float] = []
    store = MemoryStore(clock=lambda: NOW)
    original = MemoryStore._sweep

    def sweep(self: MemoryStore, now: float) -> None:
        passes.append(now)
        original(self, now)

    monkeypatch.setattr(MemoryStore, "_sweep", sweep)
    many = parse_rates("100000/day")
    limits: dict[str, Any] = {"new_rates": many, "range_rates": many, "country_rates": many, "all_rates": many}
    for index in range(1000):  # ten times what it holds, within one minute
        assert store.admit(ask(f"n{index}", **limits), NOW).kind == "admitted"
    assert len(passes) == 1 and len(store._entries) == 100
    assert store.admit(ask("n999", **limits), NOW).kind == "pending"  # the newest entries are kept


@pytest.mark.e2e  # starts or uses a redis-server
def test_a_post_of_events_is_claimed_in_one_round_trip(redis_server: RedisServer, redis_url: str) -> None:
    from telephony.guard import SpendGuard

    guard = SpendGuard(load_settings({"GUARD_STORAGE_URI": redis_url}))
    keys = [f"okta-event:{index}" for index in range(100)]
    guard.claim_all(keys[:1], 60)  # the script loaded, the connection open
    redis_server.client.config_resetstat()
    assert guard.claim_all(keys, 60) == [False] + [True] * 99
    stats = redis_server.client.info("commandstats")
    # One script run by the client; its hundred SETs run inside Redis (and are counted there too).
    assert stats["cmdstat_evalsha"]["calls"] == 1 and stats["cmdstat_set"]["calls"] == 100


def test_a_verdict_read_later_is_the_verdict_and_a_reply_left_unread_upsets_nothing(store: Store) -> None:
    """The hook asks the store, prepares Twilio's request, then reads the verdict. A reply that is never
    read (a bug of ours) must not be taken for the answer of the next call on the connection."""
    now = time.time()
    reply = store.begin_admit(ask("n1", code="1"), now)
    assert reply().kind == "admitted"
    store.begin_admit(ask("n2", code="2"), now + 1)  # its verdict is never read
    assert store.claim("after an unread reply", 60) is True
    assert _pending_since(store.lookup(ask("n1", code="1").retry)) == pytest.approx(now, abs=1e-6)
    assert store.admit(ask("n2", code="2"), now + 2).kind == "pending"  # the unread admit still counted


@pytest.mark.e2e  # starts or uses a redis-server
def test_a_verdict_read_after_the_stores_deadline_is_still_read(redis_url: str) -> None:
    """The store's deadline bounds the wait for its reply, not the hook's own work between asking and
    reading (the request to Twilio being made ready): a reply already there is read, not failed open."""
    store = RedisStore(redis_url, deadline_seconds=0.05)
    store.admit(ask("n0"), time.time())  # connected, the script loaded
    reply = store.begin_admit(ask("n1"), time.time())
    time.sleep(0.15)  # a hook whose own work took three deadlines
    assert reply().kind == "admitted"


def test_claim_is_true_once(store: Store) -> None:
    assert store.claim("event-1", 60) is True
    assert store.claim("event-1", 60) is False
    assert store.claim("event-2", 60) is True


@pytest.mark.e2e  # starts or uses a redis-server
def test_a_client_name_redis_accepts_names_every_connection(redis_server: RedisServer, redis_url: str) -> None:
    """The one client_name the start lets through is one Redis takes: the guard decides, not fails open."""
    from telephony.guard import SpendGuard

    guard = SpendGuard(load_settings({"GUARD_STORAGE_URI": redis_url + "?client_name=okta-hook:eu_1.A~!"}))
    numbers = range_numbers("FR", 6)
    for number in numbers:
        with pytest.raises(Refused) if number == numbers[5] else contextlib.nullcontext():
            _admit(guard, number)  # the sixth new number of a range is over the default range limit
    names = [client["name"] for client in redis_server.client.client_list()]
    assert "okta-hook:eu_1.A~!" in names


@pytest.mark.e2e  # starts or uses a redis-server
def test_every_redis_key_expires_and_holds_no_number(redis_server: RedisServer, redis_url: str) -> None:
    from telephony.guard import SpendGuard

    settings = load_settings({"GUARD_STORAGE_URI": redis_url, "GUARD_HASH_KEY": "k" * 32})
    guard = SpendGuard(settings)
    numbers = range_numbers("FR", 8)
    client = redis_server.client
    for number in numbers:
        with pytest.raises(Refused) if number in numbers[5:] else contextlib.nullcontext():
            _admit(guard, number)
    assert guard.converted(describe(numbers[0]), time.time())
    assert _admit(guard, numbers[0], SIGN_IN).verdict.known  # a known number's code, unproven yet
    keys = client.keys("*")
    assert {str(key).split(":")[1] for key in keys} >= {"n", "k", "u", "r", "c", "a", "o"}
    for key in keys:
        assert 0 < client.ttl(key) <= 365 * 86400, key
        dump = str(key) + json.dumps(client.zrange(key, 0, -1) if client.type(key) == "zset" else client.get(key))
        for number in numbers:
            assert number not in dump and number[1:] not in dump and number[-9:] not in dump


@pytest.mark.e2e  # starts or uses a redis-server
def test_a_number_and_its_request_are_keyed_as_a_store_in_use_holds_them(
    redis_server: RedisServer, redis_url: str
) -> None:
    """A new version must find what a running store holds (a number known for a year): a number is keyed
    by BLAKE2b-128 in its keyed mode (RFC 7693), under a key derived from GUARD_HASH_KEY, as unpadded
    URL-safe base64; Okta's request by the same over 'number|channel|code'."""
    import base64
    import hashlib
    import hmac

    from models import parse_hook_request
    from telephony.guard import SpendGuard
    from telephony.phone import describe

    secret = b"k" * 32
    key = hmac.new(secret, b"okta-telephony-hook spend guard v1", hashlib.sha256).digest()

    def digest(value: str) -> str:
        raw = hashlib.blake2b(value.encode(), key=key, digest_size=16).digest()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    guard = SpendGuard(load_settings({"GUARD_STORAGE_URI": redis_url, "GUARD_HASH_KEY": secret.decode()}))
    number = range_numbers("FR", 1)[0]
    profile = parse_hook_request(json.dumps(code_request(number, SIGN_IN)).encode(), None).data.message_profile
    guard.admit(profile, describe(number), SIGN_IN, {}, time.monotonic() + 2.8).clear()
    request = f"{number}|{profile.delivery_channel}|{profile.otp_code}"
    assert {f"okta-hook:n:{digest(number)}", f"okta-hook:o:{digest(request)}"} <= set(redis_server.client.keys("*"))


def _admit(guard: Any, number: str, request_type: str = ENROLMENT) -> Any:
    from models import parse_hook_request
    from telephony.phone import describe

    profile = parse_hook_request(json.dumps(code_request(number, request_type)).encode(), None).data.message_profile
    passage = guard.admit(profile, describe(number), request_type, {}, time.monotonic() + 2.8)
    passage.clear()  # the verdict, read as the hook reads it: just before Twilio would be called
    return passage


# --------------------------------------------------------------------------- the hook, in-process


def test_the_embedded_default_stops_a_range_pump_on_one_instance(
    make_client: AppFactory, sandbox: SandboxState, capfd: pytest.CaptureFixture[str]
) -> None:
    client = make_client()
    capfd.readouterr()
    answers = [status_of(post_hook(client, body)) for body in _pump(range_numbers("GB", 200))]
    assert len(sent(sandbox)) <= 10  # at most 5 %
    assert answers.count("SUCCESSFUL") == len(sent(sandbox)) == 5
    assert set(answers) == {"SUCCESSFUL", "SPEND_GUARD"}
    lines = hook_lines(capfd.readouterr().out)
    refused = [line for line in lines if line["outcome"] == "guard_refused"]
    assert len(refused) == 195
    assert {line["guard"] for line in refused} == {"refused"}
    assert {line["guard_limit"] for line in refused} == {"range 5/hour"}
    assert {line["country"] for line in refused} == {"GB"}
    assert {line["guard_range"] for line in refused} == {"+44740***xxxx"}
    assert len({line["guard_range_id"] for line in refused}) == 1
    assert {line["severity"] for line in refused} == {"WARNING"}


def _pump(numbers: list[str]) -> Iterator[dict[str, Any]]:
    for number in numbers:
        yield code_request(number, ENROLMENT)


@pytest.mark.e2e  # starts or uses a redis-server
def test_a_code_stopped_before_twilio_reads_its_verdict_and_gives_its_room_back(
    make_client: AppFactory, sandbox: SandboxState, redis_url: str
) -> None:
    """The verdict is read just before Twilio is called; a hook that ends before (here Verify refuses a
    code over 10 digits) still reads it, gives back the room, and leaves the store's connection in step."""
    client = make_client(
        GUARD_STORAGE_URI=redis_url, GUARD_NEW_NUMBER_LIMIT="1/hour", TWILIO_VERIFY_SERVICE_SID=VERIFY_SERVICE_SID
    )
    number = range_numbers("FR", 1)[0]
    too_long = code_request(number, ENROLMENT)
    too_long["data"]["messageProfile"]["otpCode"] = "12345678901"
    assert first_reason(post_hook(client, too_long).get_json()) == "VERIFY_CODE_TOO_LONG"
    assert sandbox.requests == []
    assert status_of(post_hook(client, too_long)) == "VERIFY_CODE_TOO_LONG"  # its retry: a new attempt
    assert status_of(post_hook(client, code_request(number, ENROLMENT))) == "SUCCESSFUL"  # the room came back
    assert status_of(post_hook(client, code_request(number, ENROLMENT))) == "SPEND_GUARD"  # 1/hour, counted once
    assert len(sandbox.requests) == 1


def test_a_refusal_is_oktas_error_object_with_200_and_names_no_number(
    make_client: AppFactory, sandbox: SandboxState, capfd: pytest.CaptureFixture[str]
) -> None:
    client = make_client(GUARD_RANGE_LIMIT="1/hour")
    first, second = range_numbers("FR", 2)
    assert status_of(post_hook(client, code_request(first, ENROLMENT))) == "SUCCESSFUL"
    capfd.readouterr()
    body = code_request(second, ENROLMENT)
    response = post_hook(client, body)
    assert response.status_code == 200
    answer = response.get_json()
    assert answer["error"]["errorSummary"] == (
        "Too many verification codes were requested for this phone number or its area. Try again later."
    )
    assert answer["error"]["errorCauses"] == [
        {
            "errorSummary": "The spend guard's range limit is reached.",
            "reason": "SPEND_GUARD",
            "location": "data.messageProfile.phoneNumber",
        }
    ]
    output = capfd.readouterr().out
    (line,) = hook_lines(output)
    assert (line["outcome"], line["guard"], line["guard_limit"], line["country"]) == (
        "guard_refused",
        "refused",
        "range 1/hour",
        "FR",
    )
    assert line["guard_range"] == second[:-7] + "***xxxx"
    code = body["data"]["messageProfile"]["otpCode"]
    for secret in (second, second[1:], second[:-4], code):
        assert secret not in output and secret not in response.get_data(as_text=True)
    assert len(sent(sandbox)) == 1


def test_monitor_mode_sends_everything_and_logs_each_would_be_refusal(
    make_client: AppFactory, sandbox: SandboxState, capfd: pytest.CaptureFixture[str]
) -> None:
    client = make_client(GUARD_MODE="monitor")
    capfd.readouterr()
    answers = [status_of(post_hook(client, body)) for body in _pump(range_numbers("DE", 40))]
    assert answers == ["SUCCESSFUL"] * 40
    assert len(sent(sandbox)) == 40
    lines = hook_lines(capfd.readouterr().out)
    assert [line["guard"] for line in lines] == ["passed"] * 5 + ["would_refuse"] * 35
    assert {line["guard_limit"] for line in lines[5:]} == {"range 5/hour"}
    assert {line["outcome"] for line in lines} == {"delivered"}


def test_off_mode_has_no_guard(
    make_client: AppFactory, sandbox: SandboxState, capfd: pytest.CaptureFixture[str]
) -> None:
    client = make_client(GUARD_MODE="off")
    answers = [status_of(post_hook(client, body)) for body in _pump(range_numbers("DE", 20))]
    assert answers == ["SUCCESSFUL"] * 20 and len(sent(sandbox)) == 20
    output = capfd.readouterr().out
    assert "Spend guard off (GUARD_MODE=off)" in output
    assert all("guard" not in line for line in hook_lines(output))


def test_a_retry_sent_before_the_first_answer_is_read_gets_its_transaction_id(
    make_client: AppFactory, sandbox: SandboxState
) -> None:
    """With the embedded store the record is written before the answer leaves: a caller that reads the
    first answer only after sending the retry (or never) still gets one code and one transaction id."""
    client = make_client()
    body = code_request(range_numbers("FR", 1)[0], SIGN_IN)
    first = post_hook(client, body)  # not read yet
    started = time.monotonic()
    again = post_hook(client, body).get_json()["commands"][0]["value"][0]
    assert time.monotonic() - started < 0.5  # answered from the record, not after a twin's wait
    assert again["transactionId"] == first.get_json()["commands"][0]["value"][0]["transactionId"]
    assert len(sent(sandbox)) == 1


def test_oktas_retry_sends_one_code_and_a_failed_first_attempt_is_not_deduplicated(
    make_client: AppFactory, sandbox: SandboxState, capfd: pytest.CaptureFixture[str]
) -> None:
    client = make_client()
    body = code_request(range_numbers("FR", 1)[0], SIGN_IN)
    first, again = (post_hook(client, body).get_json()["commands"][0]["value"][0] for _ in range(2))
    assert again["status"] == "SUCCESSFUL" and again["transactionId"] == first["transactionId"]
    assert len(sent(sandbox)) == 1
    assert hook_lines(capfd.readouterr().out)[-1]["guard"] == "retry"
    sandbox.refuse_next.append(30003)
    failed_body = code_request(range_numbers("FR", 2)[1], SIGN_IN)
    assert status_of(post_hook(client, failed_body)) != "SUCCESSFUL"
    retry = post_hook(client, failed_body).get_json()
    assert retry["commands"][0]["value"][0]["status"] == "SUCCESSFUL"
    assert len(sent(sandbox)) == 3  # the refused attempt reached Twilio, then the retry was sent


def test_a_conversion_through_the_event_hook_opens_the_number_without_verify(
    make_client: AppFactory, okta_api: OktaState, sandbox: SandboxState, capfd: pytest.CaptureFixture[str]
) -> None:
    """SMS mode (no Verify): the event hook needs only OKTA_ORG_URL and OKTA_API_TOKEN to report conversions."""
    client = converting(make_client, okta_api)
    startup = capfd.readouterr().out
    assert "The event hook at /okta/events reports conversions to the spend guard." in startup
    assert "cannot act on passed challenges" not in startup
    alice, bob, carol = (User(f"00ualice{i}", number, "FR") for i, number in enumerate(range_numbers("FR", 3)))
    okta_api.factors[alice.user_id] = [phone_factor(alice.phone)]
    assert status_of(post_hook(client, code_request(alice.phone, ENROLMENT))) == "SUCCESSFUL"
    assert status_of(post_hook(client, code_request(bob.phone, ENROLMENT))) == "SPEND_GUARD"  # range full
    capfd.readouterr()
    response = client.post("/okta/events", json=passed_event(alice), headers={"Authorization": EVENT_HOOK_SECRET})
    assert response.status_code == 200
    output = capfd.readouterr().out
    (event_line,) = event_lines(output)
    assert (event_line["outcome"], event_line["guard_converted"]) == ("converted", 1)
    assert event_line["severity"] == "INFO" and event_line["phone"] == mask(alice.phone)
    assert alice.phone not in output
    assert status_of(post_hook(client, code_request(bob.phone, ENROLMENT))) == "SUCCESSFUL"  # alice's room
    assert status_of(post_hook(client, code_request(carol.phone, ENROLMENT))) == "SPEND_GUARD"
    assert status_of(post_hook(client, code_request(alice.phone, SIGN_IN))) == "SUCCESSFUL"  # known
    assert len(sent(sandbox)) == 3


def test_a_known_number_whose_codes_go_unused_is_held_as_new_and_its_line_says_lapsed(
    make_client: AppFactory, okta_api: OktaState, sandbox: SandboxState, capfd: pytest.CaptureFixture[str]
) -> None:
    """A pumper who really enrols one number, then asks for sign-in codes to it and never types them:
    three get through the closed range, then the number is held as new (guard_number "lapsed") until a
    challenge is passed again."""
    client = converting(make_client, okta_api, GUARD_NEW_NUMBER_LIMIT="10/10minutes")
    alice, bob = (User(f"00ualice{i}", number, "FR") for i, number in enumerate(range_numbers("FR", 2)))
    okta_api.factors[alice.user_id] = [phone_factor(alice.phone)]
    assert status_of(post_hook(client, code_request(alice.phone, ENROLMENT))) == "SUCCESSFUL"
    client.post("/okta/events", json=passed_event(alice), headers={"Authorization": EVENT_HOOK_SECRET})
    assert status_of(post_hook(client, code_request(bob.phone, ENROLMENT))) == "SUCCESSFUL"  # the range is full
    capfd.readouterr()
    answers = [status_of(post_hook(client, code_request(alice.phone, SIGN_IN))) for _ in range(4)]
    assert answers == ["SUCCESSFUL"] * 3 + ["SPEND_GUARD"]
    lines = hook_lines(capfd.readouterr().out)
    assert [line["guard_number"] for line in lines] == ["known"] * 3 + ["lapsed"]
    assert (lines[3]["guard"], lines[3]["guard_limit"]) == ("refused", "range 1/hour")
    client.post("/okta/events", json=passed_event(alice), headers={"Authorization": EVENT_HOOK_SECRET})
    assert status_of(post_hook(client, code_request(alice.phone, SIGN_IN))) == "SUCCESSFUL"
    assert len(sent(sandbox)) == 6


@pytest.mark.parametrize(
    ("kept_by_okta", "default_country"),
    [
        (lambda e164: e164[1:], None),
        (lambda e164: "0" + e164[3:], "FR"),
        (lambda e164: e164[:3] + " " + e164[3:], None),
    ],
    ids=["digits without +", "national with DEFAULT_COUNTRY", "separated"],
)
def test_a_factor_number_okta_keeps_in_another_spelling_still_converts(
    make_client: AppFactory,
    okta_api: OktaState,
    kept_by_okta: Any,
    default_country: str | None,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """The event's number comes from Okta's factor list, the hook's from Okta's request: both are read
    the same way, or the conversion would be logged and never meet the number the codes go to. The
    event's line masks the number as the hook's lines do, so the two can be matched."""
    overrides = {"DEFAULT_COUNTRY": default_country} if default_country else {}
    client = converting(make_client, okta_api, **overrides)
    alice, bob = (User(f"00ualice{i}", number, "FR") for i, number in enumerate(range_numbers("FR", 2)))
    okta_api.factors[alice.user_id] = [phone_factor(kept_by_okta(alice.phone))]
    assert status_of(post_hook(client, code_request(alice.phone, ENROLMENT))) == "SUCCESSFUL"
    line, _ = event_line(client, passed_event(alice), capfd)
    assert (line["phone"], line["guard_converted"]) == (mask(alice.phone), True)
    assert status_of(post_hook(client, code_request(bob.phone, ENROLMENT))) == "SUCCESSFUL"  # alice's room back


def test_a_factor_number_that_is_no_valid_number_is_not_converted(
    make_client: AppFactory, okta_api: OktaState, capfd: pytest.CaptureFixture[str]
) -> None:
    """Without DEFAULT_COUNTRY, digits are read with their country code in front: a US number Okta keeps
    as ten national digits reads as +20 (Egypt), a number no code is ever sent to. Nothing is recorded
    as known, and the line says so (guard_converted false), masking the spelling Okta keeps."""
    client = converting(make_client, okta_api)
    alice, bob = User("00ualice0", "+12025550104", "US"), User("00ubob", "+12025550188", "US")  # one range
    national = alice.phone.removeprefix("+1")  # "+2025550104" is no valid number
    okta_api.factors[alice.user_id] = [phone_factor(national)]
    assert status_of(post_hook(client, code_request(alice.phone, ENROLMENT))) == "SUCCESSFUL"
    line, output = event_line(client, passed_event(alice), capfd)
    assert (line["outcome"], line["severity"], line["guard_converted"]) == ("not_converted", "WARNING", False)
    assert line["phone"] == mask(national) and national not in output
    assert status_of(post_hook(client, code_request(bob.phone, ENROLMENT))) == "SPEND_GUARD"  # no room back


def test_a_conversion_the_store_cannot_take_is_a_warning_beside_the_stores_error(
    make_client: AppFactory, okta_api: OktaState, closed_port: str, capfd: pytest.CaptureFixture[str]
) -> None:
    client = converting(make_client, okta_api, GUARD_STORAGE_URI=closed_port.replace("http://", "redis://") + "/0")
    alice = User("00ualice0", range_numbers("FR", 1)[0], "FR")
    okta_api.factors[alice.user_id] = [phone_factor(alice.phone)]
    line, output = event_line(client, passed_event(alice), capfd)
    assert (line["outcome"], line["severity"], line["guard_converted"]) == ("not_converted", "WARNING", False)
    assert any('"spend guard store unavailable' in line and '"ERROR"' in line for line in output.splitlines())


def test_a_voice_challenge_on_an_enrolment_okta_lists_as_sms_converts_its_number(
    make_client: AppFactory, okta_api: OktaState, capfd: pytest.CaptureFixture[str]
) -> None:
    """One phone enrolment may be challenged by SMS or by voice: the enrolment the event names is the
    number that got the code, whichever type Okta lists it under, and not the user's other number."""
    client = converting(make_client, okta_api)
    alice, bob = (User(f"00ualice{i}", number, "FR") for i, number in enumerate(range_numbers("FR", 2)))
    elsewhere = range_numbers("DE", 1)[0]
    okta_api.factors[alice.user_id] = [phone_factor(alice.phone, "sms"), phone_factor(elsewhere, "call")]
    assert status_of(post_hook(client, code_request(alice.phone, ENROLMENT))) == "SUCCESSFUL"
    event = passed_event(alice)
    by_voice = event["data"]["events"][0]
    assert by_voice["target"][0]["id"] == okta_api.factors[alice.user_id][0]["id"]  # the sms enrolment
    by_voice["debugContext"]["debugData"]["factor"] = "CALL_FACTOR"
    line, _ = event_line(client, event, capfd)
    assert (line["factor"], line["phone"], line["guard_converted"]) == ("call", mask(alice.phone), True)
    assert status_of(post_hook(client, code_request(bob.phone, ENROLMENT))) == "SUCCESSFUL"  # alice's room back


def test_a_late_event_approves_nothing_but_still_converts(
    make_client: AppFactory, okta_api: OktaState, sandbox: SandboxState, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Okta may deliver an event late: past a Verify code's life it approves no code, but it still
    proves the number is its owner's. It is not claimed: delivered again, it gives back no room of a
    code sent after it (the code typed came before the event)."""
    client = converting(make_client, okta_api, TWILIO_VERIFY_SERVICE_SID=VERIFY_SERVICE_SID, GUARD_RANGE_LIMIT="2/hour")
    alice, bob, carol = (User(f"00ualice{i}", number, "FR") for i, number in enumerate(range_numbers("FR", 3)))
    okta_api.factors[alice.user_id] = [phone_factor(alice.phone)]
    real = time.time()
    with monkeypatch.context() as patch:  # alice's code was sent before the event, 12 minutes ago
        patch.setattr(time, "time", lambda: real - 720)
        assert status_of(post_hook(client, code_request(alice.phone, ENROLMENT))) == "SUCCESSFUL"
    late = passed_event(alice)
    published = datetime.now(UTC) - timedelta(minutes=11)
    late["data"]["events"][0]["published"] = published.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    client.post("/okta/events", json=late, headers={"Authorization": EVENT_HOOK_SECRET})
    assert sandbox.pending  # alice's verification stays pending: the event came too late for it
    # alice's room is back: a new enrolment of hers (held as new) and bob's code fill the range's 2
    assert status_of(post_hook(client, code_request(alice.phone, ENROLMENT))) == "SUCCESSFUL"
    assert status_of(post_hook(client, code_request(bob.phone, ENROLMENT))) == "SUCCESSFUL"
    client.post("/okta/events", json=late, headers={"Authorization": EVENT_HOOK_SECRET})  # the same event again
    assert status_of(post_hook(client, code_request(carol.phone, ENROLMENT))) == "SPEND_GUARD"


@pytest.mark.parametrize(
    ("settings", "warned"),
    [
        # the README's example override, with the default cap over every country (30/hour;100/day)
        (
            {"GUARD_LIMITS_BY_COUNTRY": '{"US": {"country": "60/hour;300/day"}}'},
            [
                "GUARD_LIMITS_BY_COUNTRY US country 60/hour cannot be reached: GUARD_ALL_LIMIT refuses first (30/hour)",
                "GUARD_LIMITS_BY_COUNTRY US country 300/day cannot be reached: GUARD_ALL_LIMIT refuses first (100/day)",
            ],
        ),
        ({"GUARD_LIMITS_BY_COUNTRY": '{"US": {"country": "60/hour;300/day"}}', "GUARD_ALL_LIMIT": "90/hour"}, []),
        (
            {"GUARD_RANGE_LIMIT": "20/hour", "GUARD_COUNTRY_LIMIT": "15/hour;40/day"},
            ["GUARD_RANGE_LIMIT 20/hour cannot be reached: GUARD_COUNTRY_LIMIT refuses first (15/hour)"],
        ),
        ({"GUARD_LIMITS_BY_COUNTRY": '{"GB": {"range": "8/hour"}}'}, []),
        ({"GUARD_LIMITS_BY_COUNTRY": '{"US": {"country": "60/hour"}}', "GUARD_MODE": "off"}, []),
    ],
)
def test_a_limit_a_wider_one_always_refuses_first_is_a_warning_at_start_up(
    settings: dict[str, str], warned: list[str], make_client: AppFactory, capfd: pytest.CaptureFixture[str]
) -> None:
    """Codes to unconverted numbers count in their range, their country and over every country: a limit
    above what the wider scope allows in the same window is never the one that refuses, and an admin who
    raised it for a rollout would see new users refused anyway."""
    make_client(**settings)
    lines = [json.loads(line) for line in capfd.readouterr().out.splitlines() if "cannot be reached" in line]
    assert [line["message"] for line in lines] == warned
    assert {line["severity"] for line in lines} <= {"WARNING"}


@pytest.mark.e2e  # starts or uses a redis-server
def test_the_start_up_line_says_which_store_and_never_its_password(
    make_client: AppFactory, redis_server: RedisServer, capfd: pytest.CaptureFixture[str]
) -> None:
    make_client()
    (line,) = [json.loads(line) for line in capfd.readouterr().out.splitlines() if "Spend guard" in line]
    assert "Spend guard enforce on memory:// (this instance only: every instance counts on its own)" in line["message"]
    assert "no conversions reach it" in line["message"] and line["severity"] == "WARNING"
    uri = f"redis://:sesame-Pw9x@127.0.0.1:{redis_server.port}/0"
    make_client(GUARD_STORAGE_URI=uri)
    output = capfd.readouterr().out
    assert f"on Redis at 127.0.0.1:{redis_server.port}, database 0 (shared by every instance)" in output
    make_client(
        OKTA_EVENT_HOOK_AUTH_SECRET=EVENT_HOOK_SECRET,
        OKTA_ORG_URL="https://acme.okta.com",
        OKTA_API_TOKEN=OKTA_API_TOKEN,
    )
    (line,) = [json.loads(line) for line in capfd.readouterr().out.splitlines() if "Spend guard" in line]
    assert "conversions come from the event hook" in line["message"] and line["severity"] == "INFO"
    assert "sesame-Pw9x" not in output


@pytest.mark.parametrize(
    ("name", "value", "problem"),
    [
        ("GUARD_MODE", "strict", "must be enforce, monitor or off"),
        ("GUARD_STORAGE_URI", "http://:hunter2-pass@10.0.0.3", "must be memory://, or redis://"),
        ("GUARD_STORAGE_URI", "redis://:hunter2-pass@10.0.0.3 6379", "must be memory://, or redis://"),
        ("GUARD_STORAGE_URI", "redis://:hunter2-pass@10.0.0.3/0?socket_timeout=abc", "an option Redis cannot use"),
        ("GUARD_STORAGE_URI", "rediss://:hunter2-pass@10.0.0.3/0?ssl_cert_reqs=hunter2", "an option Redis cannot use"),
        ("GUARD_STORAGE_URI", "rediss://:hunter2-pass@10.0.0.3/0?ssl_ca_cert=/ca.pem", "an option Redis cannot use"),
        ("GUARD_STORAGE_URI", "rediss://:hunter2-pass@10.0.0.3/0?ssl_ca_certs=/no/ca.pem", "certificate file that is"),
        ("GUARD_STORAGE_URI", "rediss://:hunter2-pass@10.0.0.3/0?ssl_ciphers=hunter2", "an option Redis cannot use"),
        ("GUARD_STORAGE_URI", "rediss://:hunter2-pass@10.0.0.3/0?ssl_validate_ocsp=true", "OCSP checks"),
        # Options redis-py takes that pass its own checks, then fail or change every connection.
        ("GUARD_STORAGE_URI", "redis://:hunter2-pass@10.0.0.3/0?encoding=bogus", "an option Redis cannot use"),
        ("GUARD_STORAGE_URI", "redis://:hunter2-pass@10.0.0.3/0?socket_type=2", "an option Redis cannot use"),
        ("GUARD_STORAGE_URI", "redis://:hunter2-pass@10.0.0.3/0?redis_connect_func=x", "an option Redis cannot use"),
        ("GUARD_STORAGE_URI", "redis://:hunter2-pass@10.0.0.3/0?credential_provider=x", "an option Redis cannot use"),
        ("GUARD_STORAGE_URI", "redis://:hunter2-pass@10.0.0.3/0?socket_timeout=30", "an option Redis cannot use"),
        ("GUARD_STORAGE_URI", "redis://:hunter2-pass@10.0.0.3/0?protocol=3", "an option Redis cannot use"),
        ("GUARD_STORAGE_URI", "redis://10.0.0.3/0?db=5", "database, user or password after '?'"),
        ("GUARD_STORAGE_URI", "redis://10.0.0.3/0?password=hunter2-pass", "database, user or password after '?'"),
        ("GUARD_STORAGE_URI", "redis://10.0.0.3/0?username=hunter2&x=1", "database, user or password after '?'"),
        ("GUARD_STORAGE_URI", "redis://:hunter2-pass@10.0.0.3/0?client_name=okta%20hook", "client_name Redis refuses"),
        ("GUARD_STORAGE_URI", "redis://:hunter2-pass@10.0.0.3/0?client_name=a%0Ahunter2", "client_name Redis refuses"),
        ("GUARD_STORAGE_URI", "redis://:hunter2-pass@10.0.0.3/0?client_name=h%C3%A9", "client_name Redis refuses"),
        ("GUARD_HASH_KEY", "hunter2-short", "at least 16 characters"),
        ("GUARD_RANGE_LIMIT", "5/fortnight", "holds what is not a limit like"),
        ("GUARD_COUNTRY_LIMIT", "5/year", "'5/year': windows longer than 7 days are not kept"),
        ("GUARD_RANGE_LIMIT", "5/day;100 per month", "'100 per month': windows longer than 7 days are not kept"),
        ("GUARD_ALL_LIMIT", "lots/hour", "holds what is not a limit like"),
        ("GUARD_NUMBER_LIMIT", "0/hour", "at least 1"),
        ("GUARD_NEW_NUMBER_LIMIT", "9/30days", "longer than 7 days"),
        ("GUARD_LIMITS_BY_COUNTRY", '{"UK": {"range": "5/hour"}}', "the United Kingdom is GB"),
        ("GUARD_LIMITS_BY_COUNTRY", '{"US": {"number": "5/hour"}}', "only 'range' and 'country'"),
        ("GUARD_LIMITS_BY_COUNTRY", '{"US": {"range": "hunter2"}}', "US range: holds what is not a limit"),
        ("GUARD_NUMBER_LIMIT", "hunter2-pasted-here", "holds what is not a limit"),
    ],
)
def test_bad_guard_settings_name_the_variable_never_a_secret(name: str, value: str, problem: str) -> None:
    """Nor any value: a secret pasted into the wrong variable must not be written back."""
    with pytest.raises(SettingsError) as raised:
        load_settings({name: value})
    message = str(raised.value)
    assert name in message and problem in message
    assert "hunter2" not in message


def test_limits_by_country_override_the_defaults(make_client: AppFactory, sandbox: SandboxState) -> None:
    client = make_client(GUARD_LIMITS_BY_COUNTRY='{"fr": {"range": "2/hour"}}')
    french = [status_of(post_hook(client, body)) for body in _pump(range_numbers("FR", 4))]
    german = [status_of(post_hook(client, body)) for body in _pump(range_numbers("DE", 7))]
    assert french == ["SUCCESSFUL"] * 2 + ["SPEND_GUARD"] * 2
    assert german == ["SUCCESSFUL"] * 5 + ["SPEND_GUARD"] * 2


def test_the_redis_password_is_scrubbed_from_every_line() -> None:
    settings = load_settings({"GUARD_STORAGE_URI": "redis://:p%40ss-Word7@10.0.0.3:6379/0"})
    assert "p%40ss-Word7" in settings.secret_values()
    assert {"GUARD_STORAGE_URI", "GUARD_HASH_KEY"} <= set(secret_env_names())


@pytest.mark.e2e  # starts or uses a redis-server
def test_a_store_that_refuses_the_password_fails_open_and_never_logs_it(
    make_client: AppFactory, sandbox: SandboxState, capfd: pytest.CaptureFixture[str], tmp_path: Any
) -> None:
    server = RedisServer(tmp_path, password="right-Secret-41")
    try:
        client = make_client(GUARD_STORAGE_URI=f"redis://:wrong-Secret-42@127.0.0.1:{server.port}/0")
        capfd.readouterr()
        answers = [status_of(post_hook(client, body)) for body in _pump(range_numbers("BR", 8))]
    finally:
        server.stop()
    assert answers == ["SUCCESSFUL"] * 8 and len(sent(sandbox)) == 8
    output = capfd.readouterr().out
    (error,) = [line for line in map(json.loads, output.splitlines()) if line["severity"] == "ERROR"]
    assert error["guard_store_error"] == "STORE_REFUSED"
    assert f"Redis at 127.0.0.1:{server.port}, database 0" in error["message"]
    assert "Secret-4" not in output
    assert {line["guard"] for line in hook_lines(output)} == {"store_unavailable"}


@pytest.mark.e2e  # starts or uses a redis-server
def test_a_store_that_lost_its_records_learns_them_again_from_the_instance_that_sent(
    make_client: AppFactory, sandbox: SandboxState, tmp_path: Any
) -> None:
    """Redis restarted empty (a basic Memorystore's maintenance) within a request's 30 s: the store
    would admit Okta's retry as a new code. The instance that sent the first answers it from its own
    record, by the same rules, and tells the store, whose answer then serves every instance."""
    server = RedisServer(tmp_path)
    settings = {"GUARD_STORAGE_URI": server.url, "GUARD_RANGE_LIMIT": "100/hour"}
    first, other = make_client(**settings), make_client(**settings)  # two instances
    delivered, unclear = (code_request(n, SIGN_IN) for n in range_numbers("FR", 2))
    try:
        sid = post_hook(first, delivered).get_json()["commands"][0]["value"][0]["transactionId"]
        sandbox.refuse_next.append(20500)  # a 5xx may hide a code Twilio took
        assert status_of(post_hook(first, unclear)) != "SUCCESSFUL"
        server.stop()
        server.start()  # on the same port, empty
        time.sleep(0.05)
        answers = [post_hook(client, delivered).get_json() for client in (first, other)]
        assert [status_of(post_hook(client, unclear)) for client in (first, other)] == ["RETRY_NOT_SENT"] * 2
    finally:
        server.stop()
    assert [answer["commands"][0]["value"][0]["transactionId"] for answer in answers] == [sid, sid]
    assert len(sent(sandbox)) == 2  # each request once


@pytest.mark.e2e  # starts or uses a redis-server
def test_a_retry_the_store_refuses_is_answered_by_the_instance_that_sent_and_then_by_every_instance(
    make_client: AppFactory, sandbox: SandboxState, tmp_path: Any
) -> None:
    """The store came back empty, and meanwhile another code filled the number's limit: the store
    refuses Okta's retry of the first code. The instance that sent it answers from its own record, and
    writes the record the store did not hold, so the other instance answers the same, not an error."""
    server = RedisServer(tmp_path)
    settings = {"GUARD_STORAGE_URI": server.url, "GUARD_NEW_NUMBER_LIMIT": "1/10minutes"}
    first, other = make_client(**settings), make_client(**settings)
    number = range_numbers("FR", 1)[0]
    request, later = code_request(number, SIGN_IN), code_request(number, SIGN_IN)  # two codes, one number
    try:
        server.stop()
        sid = post_hook(first, request).get_json()["commands"][0]["value"][0]["transactionId"]  # fails open
        server.start()  # empty
        time.sleep(1.1)  # the instances' rest after the failure
        assert status_of(post_hook(other, later)) == "SUCCESSFUL"  # the number's one code of the window
        answers = [post_hook(client, request).get_json() for client in (first, other)]
    finally:
        server.stop()
    assert [answer["commands"][0]["value"][0]["transactionId"] for answer in answers] == [sid, sid]
    assert len(sent(sandbox)) == 2


@pytest.mark.e2e  # starts or uses a redis-server
def test_a_record_the_store_wrote_after_the_caller_gave_up_is_settled_by_the_instance_that_sent(
    make_client: AppFactory, sandbox: SandboxState, tmp_path: Any
) -> None:
    """A store paused mid-call runs the admission once it resumes, after the hook failed open and sent
    the code: its record says 'pending' for a call that is over. Okta's retry on that instance gets the
    code's transaction id (after a twin's wait), and the store learns it for every instance."""
    server = RedisServer(tmp_path)
    settings = {"GUARD_STORAGE_URI": server.url, "GUARD_RANGE_LIMIT": "100/hour"}
    first, other = make_client(**settings), make_client(**settings)
    request = code_request(range_numbers("FR", 1)[0], SIGN_IN)
    try:
        post_hook(first, code_request(range_numbers("FR", 2)[1], SIGN_IN))  # connected, scripts loaded
        server.process.send_signal(signal.SIGSTOP)
        sid = post_hook(first, request).get_json()["commands"][0]["value"][0]["transactionId"]  # fails open
        server.process.send_signal(signal.SIGCONT)  # the queued admission runs now: 'pending'
        time.sleep(1.1)  # the instance's rest after the failure
        answers = [post_hook(client, request).get_json() for client in (first, other)]
    finally:
        server.process.send_signal(signal.SIGCONT)
        server.stop()
    assert [answer["commands"][0]["value"][0]["transactionId"] for answer in answers] == [sid, sid]
    assert len(sent(sandbox)) == 2  # the warm-up and the request, once


@pytest.mark.e2e  # starts or uses a redis-server
def test_a_twin_on_the_same_instance_waits_for_the_first_while_the_store_is_down(
    make_client: AppFactory, sandbox: SandboxState, tmp_path: Any
) -> None:
    """Two identical requests at once while the store fails: the second waits for the first's answer
    (as it waits on the store), and gets its transaction id."""
    import threading

    server = RedisServer(tmp_path)
    client = make_client(GUARD_STORAGE_URI=server.url)
    request = code_request(range_numbers("FR", 1)[0], SIGN_IN)
    server.stop()  # down
    sandbox.latency_seconds = 0.5
    answers: list[Any] = []
    twin = threading.Thread(target=lambda: answers.append(post_hook(client, request).get_json()))
    twin.start()
    time.sleep(0.15)
    second = post_hook(client, request).get_json()
    twin.join()
    (first,) = answers
    assert second["commands"][0]["value"][0]["transactionId"] == first["commands"][0]["value"][0]["transactionId"]
    assert len(sent(sandbox)) == 1


def test_an_instances_own_record_of_recent_requests_keeps_each_for_its_window_and_stays_bounded() -> None:
    from telephony.store import PENDING, UNSETTLED, RecentRequests

    clock = [0.0]
    recent = RecentRequests(capacity=3, clock=lambda: clock[0])
    assert recent.take("a", 30) is None  # recorded: this call sends
    assert recent.take("a", 30) == PENDING  # a twin while it is with Twilio
    recent.settle("a", "SM1")
    assert recent.take("a", 30) == "SM1"
    recent.settle("a", None)  # certainly not sent: the retry is a new attempt
    assert recent.take("a", 30) is None
    recent.settle("a", UNSETTLED)
    clock[0] = 29.9
    assert recent.take("a", 30) == UNSETTLED
    clock[0] = 30.0  # its window is over
    assert recent.take("a", 30) is None
    for key in "bcde":
        recent.take(key, 30)
    assert len(recent._records) == 3 and recent._records.get("a", clock[0]) is None  # the oldest went first


@pytest.mark.e2e  # starts or uses a redis-server
def test_oktas_retry_on_the_instance_that_sent_the_code_is_one_code_while_the_store_is_down(
    make_client: AppFactory, sandbox: SandboxState, capfd: pytest.CaptureFixture[str], tmp_path: Any
) -> None:
    """A store that fails lets codes go (fail open), and knows nothing of Okta's requests meanwhile: the
    instance that sent a request's code still answers its retry from its own record, whether the first
    call came before the store failed or while it was down. A first attempt Twilio refused is a new
    attempt; one that may have reached Twilio is not sent twice."""
    server = RedisServer(tmp_path)
    client = make_client(GUARD_STORAGE_URI=server.url, GUARD_RANGE_LIMIT="100/hour")
    before, during, refused, unclear = (code_request(n, SIGN_IN) for n in range_numbers("FR", 4))
    try:
        first = post_hook(client, before).get_json()["commands"][0]["value"][0]["transactionId"]
        server.process.send_signal(signal.SIGSTOP)  # hangs: every call fails at its deadline, then rests
        answers = [post_hook(client, body).get_json() for body in (before, during, during)]
        sandbox.refuse_next.append(21610)  # Twilio refuses it with a code: nothing went out
        assert status_of(post_hook(client, refused)) == "TWILIO_21610"
        assert status_of(post_hook(client, refused)) == "SUCCESSFUL"  # a new attempt
        sandbox.refuse_next.append(20500)  # a 5xx may hide a code Twilio took
        assert status_of(post_hook(client, unclear)) != "SUCCESSFUL"
        assert status_of(post_hook(client, unclear)) == "RETRY_NOT_SENT"
    finally:
        server.process.send_signal(signal.SIGCONT)
        server.stop()
    retried, sent_once, again = (answer["commands"][0]["value"][0]["transactionId"] for answer in answers)
    assert (retried, again) == (first, sent_once)
    assert len(sent(sandbox)) == 5  # before, during, refused twice (the first refused), unclear once
    lines = hook_lines(capfd.readouterr().out)
    assert [line["guard"] for line in lines[-8:]] == [
        "passed", "retry", "store_unavailable", "retry", "store_unavailable", "store_unavailable",
        "store_unavailable", "retry_unsettled",
    ]  # fmt: skip
    assert all(line.get("guard_store_error") for line in lines[-7:])


@pytest.mark.e2e  # starts or uses a redis-server
def test_the_claim_primitive_is_once_across_instances_and_fails_open(redis_url: str, closed_port: str) -> None:
    """For the event hook: an event is acted on once, across instances when the store is shared."""
    from telephony.guard import SpendGuard

    first, second = (SpendGuard(load_settings({"GUARD_STORAGE_URI": redis_url})) for _ in range(2))
    assert first.claim("event:1d0b4a6e", 86400) is True
    assert second.claim("event:1d0b4a6e", 86400) is False
    off = SpendGuard(load_settings({"GUARD_STORAGE_URI": redis_url, "GUARD_MODE": "off"}))
    assert off.claim("event:1d0b4a6e", 86400) is False  # the guard off, its store still serves claims
    down = SpendGuard(load_settings({"GUARD_STORAGE_URI": closed_port.replace("http://", "redis://") + "/0"}))
    assert down.claim("event:1d0b4a6e", 86400) is True  # the store down: act (fail open)


@pytest.mark.e2e  # starts or uses a redis-server
def test_a_store_restarted_behind_a_kept_connection_is_used_again_at_once(tmp_path: Any) -> None:
    """A restart or failover closes the connections the store keeps: the next call reconnects, no error."""
    server = RedisServer(tmp_path)
    try:
        store = RedisStore(server.url)
        assert store.claim("before", 60) is True
        server.stop()
        server.start()  # same port, empty
        assert store.claim("before", 60) is True  # no StoreUnavailable: a new connection, the new server
        assert store.claim("before", 60) is False
    finally:
        server.stop()


def test_a_code_twilio_refused_gives_its_room_back(make_client: AppFactory, sandbox: SandboxState) -> None:
    client = make_client(GUARD_RANGE_LIMIT="1/hour")
    first, second = range_numbers("FR", 2)
    sandbox.refuse_next.append(21211)  # Twilio: invalid number, nothing sent
    assert status_of(post_hook(client, code_request(first, ENROLMENT))) == "TWILIO_21211"
    assert status_of(post_hook(client, code_request(second, ENROLMENT))) == "SUCCESSFUL"  # the room came back


@pytest.mark.parametrize("said", [400, 429, 200])
def test_a_5xx_whose_body_names_another_status_is_still_a_code_twilio_may_have_taken(
    make_client: AppFactory, said: int
) -> None:
    """An RFC 9457 error body carries a `status` of its own, which the twilio library reports as the
    answer's: a 503 whose body says 400 is a 503 all the same, and its retry is not sent."""
    problem = {"type": "https://www.twilio.com/docs/errors/21211", "title": "Invalid", "status": said, "code": 21211}
    with stand_in(http_answer(503, json.dumps(problem).encode())) as twilio:
        client = make_client(TWILIO_API_BASE_URL=twilio.base_url)
        body = code_request(range_numbers("FR", 1)[0], ENROLMENT)
        assert status_of(post_hook(client, body)) == "TWILIO_21211"
        assert status_of(post_hook(client, body)) == "RETRY_NOT_SENT"
        assert twilio.requests == 1


def test_a_code_twilio_may_have_taken_keeps_counting_and_its_retry_is_never_sent(
    make_client: AppFactory, sandbox: SandboxState, hanging_twilio: str, capfd: pytest.CaptureFixture[str]
) -> None:
    """A timeout may hide a code Twilio accepted: it keeps its room, and Okta's retry of the request is
    answered with the error object at once, never sent a second time."""
    client = make_client(GUARD_RANGE_LIMIT="1/hour", TWILIO_API_BASE_URL=hanging_twilio, TWILIO_TIMEOUT_SECONDS="0.3")
    first, second = range_numbers("FR", 2)
    body = code_request(first, ENROLMENT)
    started = time.monotonic()
    assert status_of(post_hook(client, body)) == "TWILIO_TIMEOUT"
    first_took = time.monotonic() - started
    capfd.readouterr()
    started = time.monotonic()
    assert status_of(post_hook(client, body)) == "RETRY_NOT_SENT"
    assert time.monotonic() - started < first_took / 3  # Twilio was not asked again
    (line,) = hook_lines(capfd.readouterr().out)
    assert (line["guard"], line["outcome"], line["severity"]) == ("retry_unsettled", "retry_not_sent", "WARNING")
    assert "twilio_attempts" not in line
    assert status_of(post_hook(client, code_request(second, ENROLMENT))) == "SPEND_GUARD"  # still counted


def test_a_twin_whose_store_fails_while_it_waits_still_never_sends_twice() -> None:
    """The store said the first attempt is with Twilio; a store fault while the twin waits for its answer
    is reported (the ERROR line), and the twin still answers the error object rather than send again."""
    from telephony.guard import RESEND_SECONDS, Passage, SpendGuard
    from telephony.phone import describe
    from telephony.store import StoreUnavailable

    class FailingLookups(MemoryStore):
        def lookup(self, retry: str) -> str | None:
            raise StoreUnavailable("STORE_TIMEOUT")

    guard = SpendGuard(load_settings({}), FailingLookups())
    profile = _profile(okta_request())
    number = describe(profile.phone_number)
    first = guard.admit(profile, number, SIGN_IN, {}, time.monotonic() + 10)
    assert isinstance(first, Passage)
    first.clear()
    facts: dict[str, Any] = {}
    with pytest.raises(Refused) as refused:
        guard.admit(profile, number, SIGN_IN, facts, time.monotonic() + RESEND_SECONDS + 0.2).clear()
    assert refused.value.answer.outcome == "retry_not_sent"
    assert (facts["guard"], facts["guard_store_error"]) == ("retry_in_flight", "STORE_TIMEOUT")


def test_a_pending_record_older_than_any_call_is_not_waited_for(monkeypatch: pytest.MonkeyPatch) -> None:
    """A first call is over by Okta's 3 s: a record still pending after that lost its write (or its
    instance died). The twin answers the error object at once rather than wait out its budget."""
    import types

    from telephony import guard as guard_module
    from telephony.guard import STALE_PENDING_SECONDS, SpendGuard
    from telephony.phone import describe

    guard = SpendGuard(load_settings({}), MemoryStore())
    profile = _profile(okta_request())
    number = describe(profile.phone_number)
    earlier = time.time() - STALE_PENDING_SECONDS - 1
    with monkeypatch.context() as patched:  # the first call was admitted 4.5 s ago, and never finished
        patched.setattr(guard_module, "time", types.SimpleNamespace(time=lambda: earlier, monotonic=time.monotonic))
        guard.admit(profile, number, SIGN_IN, {}, time.monotonic() + 10).clear()
    started = time.monotonic()
    with pytest.raises(Refused) as refused:
        guard.admit(profile, number, SIGN_IN, {}, started + 2.8).clear()
    assert refused.value.answer.outcome == "retry_not_sent" and time.monotonic() - started < 0.2


def _profile(body: dict[str, Any]) -> Any:
    from models import parse_hook_request

    return parse_hook_request(json.dumps(body).encode(), "US").data.message_profile


@pytest.mark.parametrize("twin", ["still with Twilio", "unsettled meanwhile"])
def test_a_twin_of_a_request_with_twilio_waits_then_never_sends_it_twice(twin: str) -> None:
    """A twin waits for the first call's answer until a new attempt would lack the time to finish: if
    the first is still with Twilio by then, or ends in a timeout, the twin answers the error object."""
    from models import parse_hook_request
    from telephony.guard import RESEND_SECONDS, Passage, SpendGuard
    from telephony.phone import describe
    from tests.helpers import okta_request

    store = MemoryStore()
    guard = SpendGuard(load_settings({}), store)
    profile = parse_hook_request(json.dumps(okta_request()).encode(), "US").data.message_profile
    number = describe(profile.phone_number)
    first = guard.admit(profile, number, SIGN_IN, {}, time.monotonic() + 10)
    assert isinstance(first, Passage)
    first.clear()
    if twin == "unsettled meanwhile":
        guard.abandoned(first)  # a bug of ours mid-call: Twilio may have the code
    facts: dict[str, Any] = {}
    started = time.monotonic()
    with pytest.raises(Refused) as refused:
        guard.admit(profile, number, SIGN_IN, facts, started + RESEND_SECONDS + 0.3).clear()
    waited = time.monotonic() - started
    assert refused.value.answer.outcome == "retry_not_sent"
    assert first_reason(json.loads(refused.value.answer.json())) == "RETRY_NOT_SENT"
    if twin == "still with Twilio":
        assert facts["guard"] == "retry_in_flight" and 0.25 <= waited < 1.0
    else:
        assert facts["guard"] == "retry_unsettled" and waited < 0.25


@pytest.mark.parametrize(("status", "code", "not_sent"), [(400, 21211, True), (500, 20500, False), (503, 20503, False)])
def test_only_a_4xx_refusal_proves_no_code_went_out(status: int, code: int, not_sent: bool) -> None:
    """A 5xx may hide a code Twilio took, whatever code it carries: its room is not given back."""
    from twilio.base.exceptions import TwilioRestException

    from telephony.guard import certainly_not_sent
    from telephony.twilio_errors import twilio_failure

    answer = twilio_failure(TwilioRestException(status, "https://api.twilio.com/x", "no", code=code), 1).answer
    assert certainly_not_sent(answer) is not_sent


@pytest.mark.parametrize(
    ("status", "not_sent"),
    [("failed", True), ("undelivered", True), ("None", False), ("completed", False), ("x", False)],
)
def test_only_a_status_that_says_it_will_not_go_proves_no_code_went_out(status: str, not_sent: bool) -> None:
    """A resource created with no status, an unknown one or one that does not fit may have carried the
    code: its room is not given back, and Okta's retry is not sent again."""
    from telephony.guard import certainly_not_sent
    from telephony.twilio_errors import not_accepted

    assert certainly_not_sent(not_accepted("message", status, 1).answer) is not_sent


def test_records_written_in_turn_leave_the_next_calls_in_step(store: Store) -> None:
    """Retry records written one after another, one of them for a record that is gone: every later
    call still reads its own answer, never the one before."""
    first, second = ask("n1", code="1"), ask("n2", code="2")
    # The store's own clock, not NOW (taken at import): lookup() expires the retry record 30 s after
    # admit()'s `now`, and in a whole run this test may start more than 30 s after the module's import.
    now = time.time()
    assert store.admit(first, now).kind == "admitted" and store.admit(second, now + 1).kind == "admitted"
    store.delivered(first.retry, "SM" + "1" * 32)
    store.delivered(second.retry, "SM" + "2" * 32)
    store.delivered("no-such-record", "SM" + "3" * 32)  # XX: writes nothing
    assert store.lookup(second.retry) == "SM" + "2" * 32
    assert store.lookup(first.retry) == "SM" + "1" * 32
    assert store.admit(first, now + 2) == Verdict("replay", transaction_id="SM" + "1" * 32)
    assert store.claim("once", 60) is True and store.claim("once", 60) is False


@pytest.mark.e2e  # starts or uses a redis-server
def test_on_redis_a_failed_codes_release_waits_for_the_answer_to_be_sent(redis_url: str) -> None:
    """The hook may have used its budget by the time Twilio failed: on Redis the release (here: the
    record marked unsettled, a 5xx may hide a code) is a task of the answer, run once it is sent."""
    from twilio.base.exceptions import TwilioRestException

    from telephony.guard import Passage, SpendGuard
    from telephony.phone import describe
    from telephony.twilio_errors import twilio_failure

    guard = SpendGuard(load_settings({"GUARD_STORAGE_URI": redis_url}))
    profile = _profile(okta_request())
    first = guard.admit(profile, describe(profile.phone_number), SIGN_IN, {}, time.monotonic() + 10)
    first.clear()
    assert isinstance(first, Passage) and first.ask is not None
    error = twilio_failure(TwilioRestException(500, "https://api.twilio.com/x", "no", code=20500), 1).answer
    answer = guard.failed(first, error)
    assert answer._replace(after_sent=()) == error and str(guard.store.lookup(first.ask.retry)).startswith("pending")
    for task in answer.after_sent:
        task()
    assert guard.store.lookup(first.ask.retry) == "unsettled"
