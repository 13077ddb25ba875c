"""End to end: two functions-framework processes share the spend guard's Redis.

Sends are counted from the Twilio sandbox's recorded requests, never from the guard's own counters.
Each test empties the shared Redis first; the processes live for the whole module.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

import pytest

from tests.e2e_hooks import RunningHook, start_hook
from tests.helpers import EVENT_HOOK_SECRET, HOOK_SECRET, OKTA_API_TOKEN, sandbox_env
from tests.okta_stand_in import OktaStandIn, OktaState, phone_factor
from tests.redis_server import RedisServer
from tests.traces import ENROLMENT, SIGN_IN, User, code_request, morning, morning_users, range_numbers, spread_numbers
from tools.processes import stop
from tools.sandbox.twilio_sandbox import SandboxServer, SandboxState

pytestmark = pytest.mark.e2e

USERS = morning_users()
ATTACKED = "FR"  # one of the morning's countries: its verified users must keep getting codes


@pytest.fixture(scope="module")
def guard_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """This module's own redis-server: one test stops it and starts it again."""
    server = RedisServer(tmp_path_factory.mktemp("guard-redis"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def okta_directory() -> Iterator[OktaState]:
    """Okta's Management API: every morning user's SMS factor."""
    server = OktaStandIn(OktaState(token=OKTA_API_TOKEN))
    server.state.url = server.url
    for user in USERS:
        server.state.factors[user.user_id] = [phone_factor(user.phone)]
    yield server.state
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def pair(
    sandbox_server: SandboxServer,
    guard_redis: RedisServer,
    okta_directory: OktaState,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[RunningHook, RunningHook]]:
    """Two instances of the function, one Redis (SMS mode: no Verify, the event hook reports conversions)."""
    directory = tmp_path_factory.mktemp("guard-hooks")
    env = sandbox_env(
        sandbox_server.base_url,
        GUARD_STORAGE_URI=guard_redis.url,
        OKTA_EVENT_HOOK_AUTH_SECRET=EVENT_HOOK_SECRET,
        OKTA_ORG_URL=okta_directory.url,
        OKTA_API_TOKEN=OKTA_API_TOKEN,
    )
    hooks = (start_hook(env, directory / "a.log"), start_hook(env, directory / "b.log"))
    yield hooks
    for hook in hooks:
        stop(hook.process)


@pytest.fixture
def fresh(pair: tuple[RunningHook, RunningHook], guard_redis: RedisServer, sandbox: SandboxState) -> Log:
    """An empty store and sandbox; the log lines from now on."""
    guard_redis.flush()
    return Log(pair)


class Log:
    """The hook lines both instances write from the moment this is made."""

    def __init__(self, hooks: tuple[RunningHook, ...]) -> None:
        self._hooks = hooks
        self._offsets = [len(hook.output()) for hook in hooks]

    def lines(self) -> list[dict[str, Any]]:
        found = []
        for hook, offset in zip(self._hooks, self._offsets, strict=True):
            found += [json.loads(line) for line in hook.output()[offset:].splitlines() if line.startswith("{")]
        return found


def sent(sandbox: SandboxState) -> int:
    """Codes Twilio accepted: messages and calls the sandbox answered with a resource."""
    return sum(
        1
        for request in sandbox.requests
        if request["path"].endswith(("/Messages.json", "/Calls.json")) and request["response"] is not None
    )


def status(answer: Any) -> str:
    if "commands" in answer:
        return str(answer["commands"][0]["value"][0]["status"])
    return str(answer["error"]["errorCauses"][0]["reason"])


def post_event(hook: RunningHook, body: dict[str, Any]) -> int:
    request = urllib.request.Request(
        hook.url + "okta/events",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": EVENT_HOOK_SECRET},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return int(response.status)


def run_morning(pair: tuple[RunningHook, RunningHook]) -> tuple[list[str], list[User]]:
    """Every step of the morning, alternating instances; the codes' answers and the users who verified."""
    answers, verified = [], []
    for index, step in enumerate(morning(USERS)):
        hook = pair[index % 2]
        if step.kind == "code":
            answers.append(status(hook.post(step.body)[1]))
        else:
            assert post_event(hook, step.body) == 200
            verified.append(step.user)
    return answers, verified


def pump(pair: tuple[RunningHook, ...], numbers: list[str], workers: int = 8) -> list[str]:
    """Enrolments to every number, `workers` at once, spread over the instances."""
    bodies = [code_request(number, ENROLMENT) for number in numbers]
    with ThreadPoolExecutor(workers) as pool:
        results = pool.map(lambda item: status(pair[item[0] % len(pair)].post(item[1])[1]), enumerate(bodies))
        return list(results)


# ---------------------------------------------------------------------------------------- Done when


class Day(NamedTuple):
    """A morning, then both attacks on one of its countries, then its verified users back for codes."""

    answers: list[str]  # the morning's codes
    verified: list[User]
    lines: list[dict[str, Any]]  # the morning's log lines
    sent: int  # the morning's codes the sandbox sent
    paused: list[str]  # new numbers in the attacked country, after the attacks
    returning: list[str]  # the verified users' codes, after the attacks
    returning_sent: int


@pytest.fixture(scope="module")
def day(pair: tuple[RunningHook, RunningHook], guard_redis: RedisServer, sandbox_server: SandboxServer) -> Day:
    """Run once for the tests that read it: the morning's conversions must still be in the store when
    the attacks come, as they would be."""
    guard_redis.flush()
    sandbox = sandbox_server.state
    sandbox.requests.clear()
    log = Log(pair)
    answers, verified = run_morning(pair)
    lines, morning_sent = log.lines(), sent(sandbox)
    pump(pair, range_numbers(ATTACKED, 200, seed=7))
    pump(pair, spread_numbers(ATTACKED, 150, seed=8))
    paused = pump(pair, spread_numbers(ATTACKED, 5, seed=9))
    sandbox.requests.clear()
    returning = [
        status(pair[index % 2].post(code_request(user.phone, SIGN_IN))[1]) for index, user in enumerate(verified)
    ]
    return Day(answers, verified, lines, morning_sent, paused, returning, sent(sandbox))


def test_a_legitimate_morning_passes_with_nothing_refused(day: Day) -> None:
    answers, verified = day.answers, day.verified
    assert len(answers) > len(USERS) and len(verified) > 0.8 * len(USERS)  # resends, most verify
    assert {user.country for user in USERS} == {"US", "GB", "FR", "DE", "IN", "BR", "JP", "AU"}
    assert answers == ["SUCCESSFUL"] * len(answers)
    assert day.sent == len(answers)
    assert not [line for line in day.lines if line.get("guard") in ("refused", "would_refuse")]
    converted = [line for line in day.lines if line.get("outcome") == "converted"]
    assert len(converted) == len(verified)


def test_a_pump_into_one_range_over_two_instances_gets_at_most_5_percent_and_no_more_than_one_instance_would(
    pair: tuple[RunningHook, RunningHook], fresh: Log, guard_redis: RedisServer, sandbox: SandboxState
) -> None:
    numbers = range_numbers("GB", 200)
    assert len({number[:-4] for number in numbers}) == 1
    answers = pump(pair, numbers)
    two = sent(sandbox)
    assert two <= 10  # 5 % of 200
    assert answers.count("SUCCESSFUL") == two and answers.count("SPEND_GUARD") == 200 - two
    refused = [line for line in fresh.lines() if line.get("guard") == "refused"]
    assert len(refused) == 200 - two
    assert {(line["guard_limit"], line["country"], line["outcome"]) for line in refused} == {
        ("range 5/hour", "GB", "guard_refused")
    }
    guard_redis.flush()
    sandbox.requests.clear()
    pump(pair[:1], numbers)
    assert two <= sent(sandbox) == 5  # one instance alone: the same five


def test_a_pump_spread_over_one_countrys_ranges_gets_at_most_10_percent(
    pair: tuple[RunningHook, RunningHook], fresh: Log, sandbox: SandboxState
) -> None:
    numbers = spread_numbers(ATTACKED, 150)
    assert len({number[:-4] for number in numbers}) > 100
    answers = pump(pair, numbers)
    assert sent(sandbox) <= 15
    assert answers.count("SUCCESSFUL") == sent(sandbox)
    limits = {line["guard_limit"] for line in fresh.lines() if line.get("guard") == "refused"}
    assert limits == {"country 10/hour"}


def test_after_both_attacks_people_who_verified_earlier_still_get_their_codes(day: Day) -> None:
    assert day.paused == ["SPEND_GUARD"] * 5  # the country is paused for new numbers
    attacked = [user for user in day.verified if user.country == ATTACKED]
    assert len(attacked) >= 10
    assert day.returning == ["SUCCESSFUL"] * len(day.verified)
    assert day.returning_sent == len(day.verified)


def test_oktas_retry_on_the_other_instance_sends_one_code(
    pair: tuple[RunningHook, RunningHook], fresh: Log, sandbox: SandboxState
) -> None:
    first_number, twin_number, failing_number = range_numbers("DE", 3)
    # a retry after the first answer
    body = code_request(first_number, SIGN_IN)
    first = pair[0].post(body)[1]["commands"][0]["value"][0]
    retry = pair[1].post(body)[1]["commands"][0]["value"][0]
    assert (retry["status"], retry["transactionId"]) == ("SUCCESSFUL", first["transactionId"])
    assert sent(sandbox) == 1
    # twins at the same moment, while Twilio is slow to answer the first
    sandbox.latency_seconds = 0.3
    body = code_request(twin_number, SIGN_IN)
    with ThreadPoolExecutor(2) as pool:
        twins = list(pool.map(lambda hook: hook.post(body)[1]["commands"][0]["value"][0], pair))
    assert [twin["status"] for twin in twins] == ["SUCCESSFUL"] * 2
    assert twins[0]["transactionId"] == twins[1]["transactionId"]
    assert sent(sandbox) == 2
    # a first attempt that failed is not deduplicated: the retry sends
    sandbox.latency_seconds = 0.0
    sandbox.refuse_next.append(30003)
    body = code_request(failing_number, SIGN_IN)
    assert status(pair[0].post(body)[1]) != "SUCCESSFUL"
    assert status(pair[1].post(body)[1]) == "SUCCESSFUL"
    assert sent(sandbox) == 3


def test_a_redis_that_hangs_or_dies_costs_nothing_but_the_error_line(
    pair: tuple[RunningHook, RunningHook], fresh: Log, guard_redis: RedisServer, sandbox: SandboxState
) -> None:
    numbers = iter(range_numbers("AU", 60))

    def hooks_while_down(count: int) -> None:
        for index in range(count):
            status_code, answer, seconds = pair[index % 2].post(code_request(next(numbers), ENROLMENT))
            assert (status_code, status(answer)) == (200, "SUCCESSFUL")
            assert seconds < 2.5

    with guard_redis.paused():  # SIGSTOP: connections are accepted, nothing answers
        hooks_while_down(12)  # more than the range's 5: nothing is refused, the guard fails open
    errors = [line for line in fresh.lines() if line["severity"] == "ERROR"]
    assert errors and all(line["logger"] == "telephony_hook.guard" for line in errors)
    assert {line["guard_store_error"] for line in errors} == {"STORE_TIMEOUT"}
    assert all(f"Redis at 127.0.0.1:{guard_redis.port}, database 0" in line["message"] for line in errors)
    time.sleep(1.1)  # the store rests a second after a failure, then is tried again: no restart
    after = Log(pair)
    assert status(pair[0].post(code_request(next(numbers), ENROLMENT))[1]) == "SUCCESSFUL"
    assert [line.get("guard") for line in after.lines() if "outcome" in line] == ["passed"]

    guard_redis.stop()  # dies: connections refused
    down = Log(pair)
    hooks_while_down(6)
    errors = [line for line in down.lines() if line["severity"] == "ERROR"]
    assert errors and {line["guard_store_error"] for line in errors} == {"STORE_UNREACHABLE"}
    guard_redis.start()  # back, empty, on the same port
    time.sleep(1.1)
    back = Log(pair)
    answers = pump(pair, range_numbers("AU", 8, seed=11), workers=1)
    assert answers == ["SUCCESSFUL"] * 5 + ["SPEND_GUARD"] * 3  # counting again, across both
    assert not [line for line in back.lines() if line["severity"] == "ERROR"]
    assert sent(sandbox) == 12 + 1 + 6 + 5


def test_the_sandbox_pump_shows_the_guard_refusing(
    pair: tuple[RunningHook, RunningHook],
    fresh: Log,
    sandbox: SandboxState,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`python -m tools.sandbox.pump` against a running hook: what a new user sees after `make run`."""
    from tools.sandbox import pump as sandbox_pump

    monkeypatch.setenv("OKTA_HOOK_AUTH_SECRET", HOOK_SECRET)
    sandbox_pump.main(["--port", str(pair[0].address[1]), "--count", "8"])
    output = capsys.readouterr().out
    assert output.count(": SUCCESSFUL SM") == 5 and output.count("refused (SPEND_GUARD)") == 3
    assert "pump: 5 of 8 codes sent; the `make run` terminal shows each refusal's guard_limit" in output
    assert sent(sandbox) == 5
    refusals = [line for line in fresh.lines() if line.get("guard") == "refused"]
    assert [line["guard_limit"] for line in refusals] == ["range 5/hour"] * 3
