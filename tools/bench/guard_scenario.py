"""The spend guard's cost on the warm path: the same hooks with the guard on and off, alternated in one run.

Three functions against one Twilio sandbox (0 ms): the guard on a Redis on loopback, the guard on
its embedded memory store, and GUARD_MODE=off. Every request is a new code to a new number in a
range of its own (the guard's heaviest path: the number, its range and its country are all counted,
then the retry record is written), under limits that never refuse, so every hook is delivered.
Each function has one keep-alive connection; the hooks go to the three in turn, so all see the same
moment of a noisy machine; per round the median of each; the guard's cost is the difference of the
medians (and their ratio), reported as the median over rounds with its spread.
"""

from __future__ import annotations

import http.client
import json
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from itertools import count
from pathlib import Path
from typing import NamedTuple

import redis

from telephony.settings import env_names
from tools.processes import ROOT, free_port, start_function, start_redis, start_sandbox, stop
from tools.sandbox.twilio_sandbox import DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN

SECRET = "bench-guard-secret"
HEADERS = {"Authorization": SECRET, "Content-Type": "application/json"}
TEMPLATE = json.loads((ROOT / "examples" / "okta-sms-request.json").read_text())
# Never refuses. A window's set is trimmed only once it could fill a limit, so the country's and all
# countries' sets hold every code of the run (about 1,500, past Redis's 128-member small-set encoding).
NEVER_REFUSES = "1000000/second"
HOOKS_PER_ROUND = 300
WARM_UP = 50
_serial = count(1)


class GuardCost(NamedTuple):
    store: str
    off_medians: list[float]
    on_medians: list[float]
    failures: int
    undecided: int  # hooks the guard let through without a decision of its store (it failed open)

    @property
    def differences(self) -> list[float]:
        return [on - off for on, off in zip(self.on_medians, self.off_medians, strict=True)]

    @property
    def ratios(self) -> list[float]:
        return [on / off for on, off in zip(self.on_medians, self.off_medians, strict=True)]


def body() -> bytes:
    """A new code to a new US number, each in a range of its own (+1 201 NXX XXXX)."""
    serial = next(_serial)
    number = f"+1201{200 + serial % 700:03d}{serial % 10_000:04d}"
    payload = json.loads(json.dumps(TEMPLATE))
    payload["requestType"] = "com.okta.user.telephony.mfa-verification"
    code = f"{serial % 1_000_000:06d}"
    payload["data"]["messageProfile"].update(phoneNumber=number, otpCode=code, msgTemplate=f"Your code is {code}")
    return json.dumps(payload).encode()


class Client:
    """One keep-alive connection to one function."""

    def __init__(self, port: int) -> None:
        self._conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        self.failures = 0

    def post(self, payload: bytes) -> float:
        started = time.perf_counter()
        self._conn.request("POST", "/", body=payload, headers=HEADERS)
        response = self._conn.getresponse()
        answer = response.read()
        elapsed = time.perf_counter() - started
        # Delivered, and not answered from a retry record: every request is a new code.
        self.failures += response.status != 200 or b'"SUCCESSFUL"' not in answer or b"retry of a code" in answer
        return elapsed

    def close(self) -> None:
        self._conn.close()


def interleaved(clients: dict[str, Client], hooks: int) -> dict[str, float]:
    """`hooks` hooks to each function, one to each in turn, so every function sees the same moment of a
    noisy machine; the median latency of each."""
    bodies = [{name: body() for name in clients} for _ in range(hooks)]  # made before the clock runs
    latencies: dict[str, list[float]] = {name: [] for name in clients}
    names = list(clients)
    for index, payloads in enumerate(bodies):
        order = names[index % len(names) :] + names[: index % len(names)]  # no function always first
        for name in order:
            latencies[name].append(clients[name].post(payloads[name]))
    return {name: statistics.median(values) for name, values in latencies.items()}


@contextmanager
def function(twilio_url: str, **settings: str) -> Iterator[int]:
    port = free_port()
    env = {
        **{name: value for name, value in os.environ.items() if name not in env_names(all_spellings=True)},
        "OKTA_HOOK_AUTH_SECRET": SECRET,
        "TWILIO_ACCOUNT_SID": DEFAULT_ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": DEFAULT_AUTH_TOKEN,
        "TWILIO_FROM_NUMBER": "+15005550006",
        "TWILIO_API_BASE_URL": twilio_url,
        "THREADS": "80",
        "GUARD_NEW_NUMBER_LIMIT": NEVER_REFUSES,
        "GUARD_NUMBER_LIMIT": NEVER_REFUSES,
        "GUARD_RANGE_LIMIT": NEVER_REFUSES,
        "GUARD_COUNTRY_LIMIT": NEVER_REFUSES,
        "GUARD_ALL_LIMIT": NEVER_REFUSES,
        **settings,
    }
    process = start_function("telephony_hook", "main.py", port, env, subprocess.DEVNULL)
    try:
        yield port
    finally:
        stop(process)


def measure(rounds: int) -> list[GuardCost]:
    """The guard on Redis and on memory://, each against the guard off, alternated round by round."""
    with ExitStack() as running, tempfile.TemporaryDirectory() as directory:
        sandbox_port, redis_port = free_port(), free_port()
        running.callback(stop, start_sandbox(sandbox_port, None, "--quiet", "--no-receipts", "--no-contract"))
        running.callback(stop, start_redis(redis_port, Path(directory)))
        twilio = f"http://127.0.0.1:{sandbox_port}"
        ports = {
            "off": running.enter_context(function(twilio, GUARD_MODE="off")),
            "redis": running.enter_context(function(twilio, GUARD_STORAGE_URI=f"redis://127.0.0.1:{redis_port}/0")),
            "memory": running.enter_context(function(twilio)),
        }
        clients = {name: Client(port) for name, port in ports.items()}
        interleaved(clients, WARM_UP)  # warm: connections to Twilio and Redis open, scripts loaded
        medians: dict[str, list[float]] = {name: [] for name in ports}
        for _ in range(rounds):
            for name, median in interleaved(clients, HOOKS_PER_ROUND).items():
                medians[name].append(median)
        failures = {name: client.failures for name, client in clients.items()}
        for client in clients.values():
            client.close()
        # A store that fails open delivers every code too: only Redis's own count of the guard's
        # decisions shows that each hook was decided there.
        decided = redis_decisions(redis_port)
    undecided = {"redis": WARM_UP + rounds * HOOKS_PER_ROUND - decided, "memory": 0}
    return [
        GuardCost(store, medians["off"], medians[store], failures[store] + failures["off"], undecided[store])
        for store in ("redis", "memory")
    ]


def redis_decisions(port: int) -> int:
    """How many guard decisions Redis answered without an error: the admit script run by its SHA-1, or
    by its text once (when the server did not hold it yet). The function runs no other script here."""
    client = redis.Redis(host="127.0.0.1", port=port)
    try:
        stats = client.info("commandstats")
    finally:
        client.close()
    runs = [stats.get(name, {}) for name in ("cmdstat_evalsha", "cmdstat_eval")]
    return sum(int(run.get("calls", 0)) - int(run.get("failed_calls", 0)) for run in runs)
