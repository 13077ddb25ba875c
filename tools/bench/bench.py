"""`make bench`: the hook measured side by side with baselines, in one run, on loopback.

Starts the Twilio sandbox (with a chosen latency) and the function the way it is deployed
(`functions-framework --target telephony_hook`, THREADS from .env.example). Every timing is gated as a
ratio to a baseline measured in the same run, alternated with the hook round by round so that both see
the same machine: the gate is the median of the rounds' ratios, their min–max is printed beside it.
Milliseconds are printed, never gated: they depend on the machine and on what else it runs.

  burst        75 concurrent hooks (Okta's most), sandbox answering in 300 ms: p99 of the hook / p99 of
               the relay baseline (tools/bench/relay_main.py: one Twilio call per request, nothing else)
               <= 1.30x; no errors; later bursts reuse the Twilio connections the first one opened
  warm         sequential hooks over one keep-alive connection, 0 ms sandbox: median latency of the
               hook / the relay baseline <= 1.75x (against a function answering a fixed dict: printed)
  reuse        60 sequential hooks open at most 1 new connection to Twilio
  memory       worker RSS after 2,000 hooks / after 100 <= 1.10x
  cold start   launch to first SUCCESSFUL, hook / a function that only imports the mandated dependencies
               and answers a fixed dict (tools/bench/baseline_main.py) <= 1.15x
  guard        the spend guard's warm-path cost: the guard on a Redis on loopback / GUARD_MODE=off
               <= 1.15x; memory:// beside it; no errors
Exits 1 when a gate is missed. Prints how long the run took.

  --against REF  also runs the hook as it was at git REF (a temporary worktree), alternated with this
                 one in the burst, warm and cold scenarios, and prints this/REF ratios with their
                 per-round spread: before and after a change, side by side in one run.

A new comparison is one more scenario function returning rows, each timing through ratio_row().
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from tools.bench import guard_scenario
from tools.processes import ROOT, free_port, start_function, start_sandbox, stop
from tools.sandbox.twilio_sandbox import DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN

SECRET = "bench-hook-secret"
BODY = (ROOT / "examples" / "okta-sms-request.json").read_bytes()
HEADERS = {"Authorization": SECRET, "Content-Type": "application/json"}
BURST = 75  # Okta's largest concurrency for inline hooks
BURST_LATENCY_MS = 300

# The gates: each a ratio to a baseline of the same run (median of the rounds' ratios).
# Burst: under 75 concurrent hooks on 2 cores the hook's own CPU work (~1 ms a hook more than the relay,
# warm) queues up; 1.30x leaves room for the machine's noise and still catches tens of ms at p99.
BURST_P99_LIMIT = 1.30
# Warm: the relay makes the same Twilio round trip; the rest is the hook's own work (parsing, policy,
# logging, the twilio library): medians of 1.2-1.5x on the busy development machine, single rounds up
# to 1.8x. 1.75x still catches a hook that costs twice the relay (an extra round trip, a CA bundle
# loaded per call).
WARM_MEDIAN_LIMIT = 1.75
COLD_START_LIMIT = 1.15
MEMORY_GROWTH_LIMIT = 1.10


def deployed_env() -> dict[str, str]:
    """The non-empty settings of .env.example: the function runs as the docs say to run it."""
    values = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        name, sep, value = line.partition("=")
        if sep and not line.startswith("#") and value.strip():
            values[name.strip()] = value.strip()
    return values


@dataclass
class Sandbox:
    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def connections(self) -> int:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        conn.request("GET", "/sandbox/stats")
        stats = json.loads(conn.getresponse().read())
        conn.close()
        return int(stats["connections"])


@contextmanager
def sandbox(latency_ms: float) -> Iterator[Sandbox]:
    port = free_port()
    # No receipts: they would load the hook during the burst it measures, and older refs lack the route.
    process = start_sandbox(port, None, "--latency-ms", str(latency_ms), "--quiet", "--no-receipts", "--no-contract")
    try:
        yield Sandbox(port, process)
    finally:
        stop(process)


@dataclass
class Function:
    port: int
    process: subprocess.Popen[bytes]
    launched: float

    def worker_pid(self) -> int:
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()
        return int(children[0]) if children else self.process.pid

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.worker_pid()}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")


@contextmanager
def function(
    target: str,
    source: str,
    twilio_url: str,
    wait: bool = True,
    extra_env: dict[str, str] | None = None,
    root: Path = ROOT,
) -> Iterator[Function]:
    port = free_port()
    env = {**os.environ, **deployed_env(), **(extra_env or {})}
    env.update(
        OKTA_HOOK_AUTH_SECRET=SECRET,
        TWILIO_ACCOUNT_SID=DEFAULT_ACCOUNT_SID,
        TWILIO_AUTH_TOKEN=DEFAULT_AUTH_TOKEN,
        TWILIO_FROM_NUMBER="+15005550006",
        TWILIO_API_BASE_URL=twilio_url,
    )
    launched = time.perf_counter()
    process = start_function(target, source, port, env, subprocess.DEVNULL, wait, root)
    try:
        yield Function(port, process, launched)
    finally:
        stop(process)


Starter = Callable[..., AbstractContextManager[Function]]


# The scenarios but the cold start send one request over and over: with the spend guard on, Okta's
# retry short-cut and the per-number limit would answer in Twilio's place. The guard's own cost is
# the `guard` scenario; the cold start runs with the settings of .env.example, the guard on.
REPEATED = {"GUARD_MODE": "off"}


def hook_function(twilio_url: str, wait: bool = True) -> AbstractContextManager[Function]:
    return function("telephony_hook", "main.py", twilio_url, wait, REPEATED)


def deployed_hook_function(twilio_url: str, wait: bool = True) -> AbstractContextManager[Function]:
    """The hook with the settings of .env.example, the spend guard on: for the cold start, one request."""
    return function("telephony_hook", "main.py", twilio_url, wait)


def baseline_function(twilio_url: str, wait: bool = True) -> AbstractContextManager[Function]:
    return function("fixed_answer", "tools/bench/baseline_main.py", twilio_url, wait)


def bare_baseline_function(twilio_url: str, wait: bool = True) -> AbstractContextManager[Function]:
    return function("fixed_answer", "tools/bench/baseline_main.py", twilio_url, wait, {"BARE_PYDANTIC": "1"})


def relay_function(twilio_url: str, wait: bool = True) -> AbstractContextManager[Function]:
    return function("relay_answer", "tools/bench/relay_main.py", twilio_url, wait)


PREVIOUS: dict[str, Path] = {}  # --against: the git ref and its temporary worktree


def previous_function(settings: dict[str, str] | None) -> Starter:
    """The hook at --against REF, with the same settings as the hook it is compared with."""
    (checkout,) = PREVIOUS.values()

    def start(twilio_url: str, wait: bool = True) -> AbstractContextManager[Function]:
        return function("telephony_hook", "main.py", twilio_url, wait, settings, root=checkout)

    return start


@contextmanager
def previous_checkout(ref: str | None) -> Iterator[None]:
    """The hook as it was at `ref`, in a temporary git worktree, for the side-by-side rows."""
    if not ref:
        yield
        return
    checkout = Path(tempfile.mkdtemp(prefix="bench-against-"))
    subprocess.run(["git", "worktree", "add", "--quiet", "--detach", str(checkout), ref], cwd=ROOT, check=True)
    PREVIOUS[ref] = checkout
    try:
        yield
    finally:
        PREVIOUS.clear()
        subprocess.run(["git", "worktree", "remove", "--force", str(checkout)], cwd=ROOT, check=False)


def contenders(settings: dict[str, str] | None, **starters: Starter) -> dict[str, Starter]:
    """The functions a scenario alternates: the hook, its baselines, and the hook at --against REF run
    with the hook's `settings` (REPEATED, or None for those of .env.example)."""
    if PREVIOUS:
        starters[next(iter(PREVIOUS))] = previous_function(settings)
    return starters


def post(conn: http.client.HTTPConnection) -> tuple[bool, float]:
    started = time.perf_counter()
    conn.request("POST", "/", body=BODY, headers=HEADERS)
    response = conn.getresponse()
    payload = response.read()
    elapsed = time.perf_counter() - started
    return response.status == 200 and b'"SUCCESSFUL"' in payload, elapsed


def sequential(port: int, count: int) -> tuple[list[float], int]:
    """Latencies of `count` hooks over one keep-alive connection, and how many failed."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    latencies, failures = [], 0
    for _ in range(count):
        ok, elapsed = post(conn)
        latencies.append(elapsed)
        failures += not ok
    conn.close()
    return latencies, failures


def burst(port: int, size: int) -> tuple[list[float], int]:
    """`size` hooks at once, each on its own connection, as Okta sends them."""
    barrier = threading.Barrier(size)
    latencies: list[float] = []
    failures = [0]
    lock = threading.Lock()

    def one() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.connect()
        barrier.wait()
        try:
            ok, elapsed = post(conn)
        except OSError:
            ok, elapsed = False, 10.0
        with lock:
            latencies.append(elapsed)
            failures[0] += not ok
        conn.close()

    threads = [threading.Thread(target=one) for _ in range(size)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, failures[0]


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]


def cold_start(start: Starter, twilio_url: str) -> float:
    """Seconds from launching the process to its first SUCCESSFUL answer."""
    with start(twilio_url, wait=False) as running:
        deadline = running.launched + 30
        while time.perf_counter() < deadline:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", running.port, timeout=5)
                ok, _ = post(conn)
                conn.close()
                if ok:
                    return float(time.perf_counter() - running.launched)
            except OSError:
                time.sleep(0.002)
        raise SystemExit("bench: no SUCCESSFUL answer within 30 s")


def alternated(rounds: int, names: list[str], measure: Callable[[str], float]) -> dict[str, list[float]]:
    """`measure(name)` for every name, round after round, each round starting one name later, so that
    no contender is always measured first (or right after the same other one)."""
    results: dict[str, list[float]] = {name: [] for name in names}
    for index in range(rounds):
        for offset in range(len(names)):
            name = names[(index + offset) % len(names)]
            results[name].append(measure(name))
    return results


@dataclass
class Row:
    scenario: str
    gate: str
    baseline: str
    hook: str
    ratio: str
    passed: bool


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def ratio_row(scenario: str, hook: list[float], baseline: list[float], limit: float | None) -> Row:
    """The one timing gate: the median over rounds of hook/baseline (each round's pair measured side by
    side) <= limit; min–max beside it. Medians in ms are printed for reading, never gated. No limit:
    information only."""
    ratios = [mine / theirs for mine, theirs in zip(hook, baseline, strict=True)]
    median = statistics.median(ratios)
    return Row(
        scenario, f"<= {limit:.2f}x" if limit is not None else "(information)",
        ms(statistics.median(baseline)), ms(statistics.median(hook)),
        f"{median:.3f}x ({min(ratios):.3f}–{max(ratios):.3f}x)", limit is None or median <= limit,
    )  # fmt: skip


def count_row(scenario: str, gate: str, value: str, passed: bool) -> Row:
    """A gate that is not a timing (errors, connections): exact, machine-independent."""
    return Row(scenario, gate, "-", value, "-", passed)


SCENARIOS = ("burst", "warm", "reuse", "memory", "cold", "guard")


def run(rounds: int, only: set[str]) -> list[Row]:
    rows: list[Row] = []
    if "burst" in only:
        rows += burst_rows(rounds)
    with sandbox(0) as fast:
        if "warm" in only:
            rows += warm_rows(rounds, fast)
        if "reuse" in only:
            rows.append(reuse_row(fast))
        if "memory" in only:
            rows.append(memory_row(fast))
        if "cold" in only:
            rows += cold_rows(rounds, fast)
    if "guard" in only:
        rows += guard_rows(rounds)
    return rows


def burst_rows(rounds: int) -> list[Row]:
    print("burst ...", flush=True)
    starters = contenders(REPEATED, hook=hook_function, relay=relay_function)
    with ExitStack() as running:
        # Each its own slow sandbox, so the connection counts are the hook's alone.
        sandboxes = {name: running.enter_context(sandbox(BURST_LATENCY_MS)) for name in starters}
        functions = {name: running.enter_context(start(sandboxes[name].url)) for name, start in starters.items()}
        for running_function in functions.values():
            sequential(running_function.port, 3)  # a first request, as after a deploy's health check
            burst(running_function.port, BURST)  # the first burst opens the pool's connections: not counted
        errors = dict.fromkeys(starters, 0)
        reopened = 0

        def measure(name: str) -> float:
            nonlocal reopened
            opened = sandboxes[name].connections()
            latencies, failures = burst(functions[name].port, BURST)
            errors[name] += failures
            if name == "hook":
                reopened += sandboxes[name].connections() - opened
            return p99(latencies)

        p99s = alternated(rounds, list(starters), measure)
    rows = [
        ratio_row(f"burst: {BURST} concurrent, p99, hook / relay", p99s["hook"], p99s["relay"], BURST_P99_LIMIT),
        count_row(
            "burst: errors (hook, relay)",
            "0",
            f"{errors['hook']}, {errors['relay']}",
            errors["hook"] == errors["relay"] == 0,
        ),
        count_row(
            "burst: new Twilio connections after the first", "0", f"{reopened} in {rounds} bursts", reopened == 0
        ),
    ]
    rows += [ratio_row(f"burst p99: this / {ref}", p99s["hook"], p99s[ref], None) for ref in PREVIOUS]
    return rows


def warm_rows(rounds: int, fast: Sandbox) -> list[Row]:
    print("warm overhead ...", flush=True)
    starters = contenders(REPEATED, hook=hook_function, relay=relay_function, fixed=baseline_function)
    with ExitStack() as running:
        functions = {name: running.enter_context(start(fast.url)) for name, start in starters.items()}

        def measure(name: str) -> float:
            sequential(functions[name].port, 50)  # warm this one up again after the others ran
            return statistics.median(sequential(functions[name].port, 300)[0])

        medians = alternated(rounds, list(starters), measure)
    rows = [
        ratio_row("warm: median, keep-alive, hook / relay", medians["hook"], medians["relay"], WARM_MEDIAN_LIMIT),
        ratio_row("warm: median, hook / fixed answer", medians["hook"], medians["fixed"], None),
    ]
    rows += [ratio_row(f"warm median: this / {ref}", medians["hook"], medians[ref], None) for ref in PREVIOUS]
    return rows


def reuse_row(fast: Sandbox) -> Row:
    print("connection reuse ...", flush=True)
    with hook_function(fast.url) as hook:
        before = fast.connections()
        _, failures = sequential(hook.port, 60)
        opened = fast.connections() - before
    return count_row(
        "reuse: 60 hooks, new Twilio connections", "<= 1, 0 errors", f"{opened} ({failures} errors)",
        opened <= 1 and failures == 0,
    )  # fmt: skip


def memory_row(fast: Sandbox) -> Row:
    print("memory ...", flush=True)
    with hook_function(fast.url) as hook:
        sequential(hook.port, 100)
        after_100 = hook.rss_kib()
        _, failures = sequential(hook.port, 1900)
        after_2000 = hook.rss_kib()
    growth = after_2000 / after_100
    return Row(
        "memory: worker RSS, 2,000 / 100 hooks", f"<= {MEMORY_GROWTH_LIMIT:.2f}x, 0 errors",
        f"{after_100 / 1024:.1f} MiB", f"{after_2000 / 1024:.1f} MiB", f"{growth:.3f}x",
        growth <= MEMORY_GROWTH_LIMIT and failures == 0,
    )  # fmt: skip


def cold_rows(rounds: int, fast: Sandbox) -> list[Row]:
    print("cold start ...", flush=True)
    starters = contenders(None, hook=deployed_hook_function, fixed=baseline_function, bare=bare_baseline_function)
    # Starts are noisy (single rounds range 0.6-1.5x): at least 15 rounds, or the median of 9 strays
    # past the gate on a busy machine.
    starts = alternated(max(rounds, 15), list(starters), lambda name: cold_start(starters[name], fast.url))
    rows = [
        ratio_row("cold start: launch to first SUCCESSFUL, hook / fixed answer", starts["hook"], starts["fixed"],
                  COLD_START_LIMIT),
        ratio_row("cold start: hook / bare `import pydantic`", starts["hook"], starts["bare"], None),
    ]  # fmt: skip
    rows += [ratio_row(f"cold start: this / {ref}", starts["hook"], starts[ref], None) for ref in PREVIOUS]
    return rows


GUARD_LIMIT = 1.15  # the guard on Redis over the guard off: docs/spend-guard.md, "Cost"


def guard_rows(rounds: int) -> list[Row]:
    """The spend guard on Redis (gated) and on memory:// (information), each / the guard off, hooks sent
    to the three in turn (tools/bench/guard_scenario.py); the added milliseconds in the row's name."""
    print("spend guard ...", flush=True)
    rows = []
    for cost in guard_scenario.measure(rounds):
        gated = cost.store == "redis"
        added = statistics.median(cost.differences) * 1000
        scenario = f"guard: {'Redis on loopback' if gated else 'memory://'} / off, warm median (+{added:.2f} ms)"
        rows.append(ratio_row(scenario, cost.on_medians, cost.off_medians, GUARD_LIMIT if gated else None))
        rows.append(count_row(f"guard: {cost.store}, hooks not delivered", "0", str(cost.failures), not cost.failures))
        if gated:
            undecided = str(cost.undecided)
            rows.append(count_row("guard: Redis, hooks not decided by Redis", "0", undecided, not cost.undecided))
    return rows


def table(rows: list[Row]) -> str:
    header = ("scenario", "gate", "baseline (median)", "hook (median)", "ratio: median (min–max)", "")
    cells = [header] + [(r.scenario, r.gate, r.baseline, r.hook, r.ratio, "ok" if r.passed else "MISSED") for r in rows]
    lines = ["| " + " | ".join(row) + " |" for row in cells]
    lines.insert(1, "|" + "|".join("---" for _ in header) + "|")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", nargs="+", choices=SCENARIOS, default=list(SCENARIOS))
    parser.add_argument("--against", metavar="REF", help="also run the hook at this git ref, side by side")
    args = parser.parse_args()
    started = time.monotonic()
    with previous_checkout(args.against):
        rows = run(args.rounds, set(args.only))
    took = time.monotonic() - started
    print(
        f"\n{os.cpu_count()} cores, THREADS={deployed_env().get('THREADS')}, {args.rounds} rounds, took {took:.0f} s\n"
    )
    print(table(rows))
    missed = [row.scenario for row in rows if not row.passed]
    if missed:
        print(f"\nMISSED: {', '.join(missed)}")
        sys.exit(1)


if __name__ == "__main__":
    main()
