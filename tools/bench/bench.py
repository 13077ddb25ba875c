"""`make bench`: the hook measured against Okta's limits, beside baselines, in one run, on loopback.

Starts the Twilio sandbox (with a chosen latency) and the function the way it is deployed
(`functions-framework --target telephony_hook`, THREADS from .env.example), then runs:
  burst        75 concurrent hooks, sandbox answering in 300 ms: p99 <= 1.5 x 300 ms, no errors,
               and later bursts reuse the Twilio connections the first one opened
  warm         sequential hooks over one keep-alive connection, 0 ms sandbox: median latency
               <= 1 ms above a bare function answering a fixed dict
  reuse        60 sequential hooks open at most 1 new connection to Twilio
  cold start   launch to first SUCCESSFUL <= 1.15 x a function that only imports the mandated
               dependencies and answers a fixed dict (bench/baseline_main.py says what it loads)
  memory       worker RSS after 2,000 hooks <= 1.10 x its RSS after 100
Medians over rounds, min-max beside them. Exits 1 when a target is missed.

  --against REF  also runs the hook as it was at git REF (a temporary worktree), alternated with this
                 one in the burst, warm and cold scenarios, and reports this/REF ratios with their
                 per-round spread: before and after a change, side by side in one run.
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

from tools.processes import ROOT, free_port, start_function, start_sandbox, stop
from tools.sandbox.twilio_sandbox import DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN

SECRET = "bench-hook-secret"
BODY = (ROOT / "examples" / "okta-sms-request.json").read_bytes()
HEADERS = {"Authorization": SECRET, "Content-Type": "application/json"}
BURST = 75  # Okta's largest concurrency for inline hooks
BURST_LATENCY_MS = 300


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


def hook_function(twilio_url: str, wait: bool = True) -> AbstractContextManager[Function]:
    return function("telephony_hook", "main.py", twilio_url, wait)


PREVIOUS: dict[str, Path] = {}  # --against: the git ref and its temporary worktree


def previous_function(twilio_url: str, wait: bool = True) -> AbstractContextManager[Function]:
    (checkout,) = PREVIOUS.values()
    return function("telephony_hook", "main.py", twilio_url, wait, root=checkout)


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


def versus_previous(scenario: str, ours: list[float], theirs: list[float]) -> Row:
    """This hook / the hook at --against REF: median of the rounds' ratios, their spread beside it."""
    (ref,) = PREVIOUS
    ratios = [mine / previous for mine, previous in zip(ours, theirs, strict=True)]
    return Row(
        f"{scenario}: this / {ref}", "-", ms(statistics.median(theirs)),
        f"{ms(statistics.median(ours))} ({statistics.median(ratios):.3f}x)",
        f"{min(ratios):.3f}–{max(ratios):.3f}x", True,
    )  # fmt: skip


def baseline_function(twilio_url: str, wait: bool = True) -> AbstractContextManager[Function]:
    return function("fixed_answer", "tools/bench/baseline_main.py", twilio_url, wait)


def bare_baseline_function(twilio_url: str, wait: bool = True) -> AbstractContextManager[Function]:
    return function("fixed_answer", "tools/bench/baseline_main.py", twilio_url, wait, {"BARE_PYDANTIC": "1"})


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


def cold_start(start: Callable[..., AbstractContextManager[Function]], twilio_url: str) -> float:
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


@dataclass
class Row:
    scenario: str
    target: str
    baseline: str
    hook: str
    spread: str
    passed: bool


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def spread_ms(values: list[float]) -> str:
    return f"{min(values) * 1000:.1f}–{max(values) * 1000:.1f} ms"


SCENARIOS = ("burst", "warm", "reuse", "memory", "cold")


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
    return rows


def burst_rows(rounds: int) -> list[Row]:
    print("burst ...", flush=True)
    with ExitStack() as running:
        slow = running.enter_context(sandbox(BURST_LATENCY_MS))
        hook = running.enter_context(hook_function(slow.url))
        before_change = None
        if PREVIOUS:  # its own sandbox, so connection counts stay this hook's
            before_change = running.enter_context(
                previous_function(running.enter_context(sandbox(BURST_LATENCY_MS)).url)
            )
        p99s, previous_p99s, errors, reopened = [], [], 0, 0
        for port in (hook.port, before_change.port if before_change else None):
            if port:
                sequential(port, 3)  # a first request, as after a deploy's health check
        for index in range(rounds + 1):  # the first burst opens the pool's connections: not counted
            opened = slow.connections()
            latencies, failures = burst(hook.port, BURST)
            if index:
                p99s.append(p99(latencies))
                errors += failures
                reopened += slow.connections() - opened
            if before_change:  # alternated, so both see the same machine
                latencies, _ = burst(before_change.port, BURST)
                if index:
                    previous_p99s.append(p99(latencies))
    limit = 1.5 * BURST_LATENCY_MS / 1000
    rows = [
        Row(
            f"burst: {BURST} concurrent, p99", f"<= {ms(limit)}, 0 errors", f"{BURST_LATENCY_MS} ms sandbox",
            f"{ms(statistics.median(p99s))}, {errors} errors", spread_ms(p99s),
            statistics.median(p99s) <= limit and errors == 0,
        ),
        Row(
            "burst: new Twilio connections after the first", "0", "-", str(reopened), f"{rounds} bursts",
            reopened == 0,
        ),
    ]  # fmt: skip
    if PREVIOUS:
        rows.append(versus_previous("burst p99", p99s, previous_p99s))
    return rows


def warm_rows(rounds: int, fast: Sandbox) -> list[Row]:
    print("warm overhead ...", flush=True)
    hook_medians, base_medians, previous_medians = [], [], []
    previous = previous_function if PREVIOUS else baseline_function  # a second baseline stands in, unused
    with hook_function(fast.url) as hook, baseline_function(fast.url) as base, previous(fast.url) as before:
        for _ in range(rounds):  # interleaved, so all see the same machine
            sequential(hook.port, 50)
            sequential(base.port, 50)
            hook_medians.append(statistics.median(sequential(hook.port, 300)[0]))
            base_medians.append(statistics.median(sequential(base.port, 300)[0]))
            if PREVIOUS:
                sequential(before.port, 50)
                previous_medians.append(statistics.median(sequential(before.port, 300)[0]))
    extra = statistics.median(hook_medians) - statistics.median(base_medians)
    rows = [Row(
        "warm: median latency, keep-alive", "<= baseline + 1 ms", ms(statistics.median(base_medians)),
        f"{ms(statistics.median(hook_medians))} (+{extra * 1000:.2f} ms)", spread_ms(hook_medians),
        extra <= 0.001,
    )]  # fmt: skip
    if PREVIOUS:
        rows.append(versus_previous("warm median", hook_medians, previous_medians))
    return rows


def reuse_row(fast: Sandbox) -> Row:
    print("connection reuse ...", flush=True)
    with hook_function(fast.url) as hook:
        before = fast.connections()
        _, failures = sequential(hook.port, 60)
        opened = fast.connections() - before
    return Row(
        "reuse: 60 hooks, new Twilio connections", "<= 1", "-", f"{opened} ({failures} errors)", "-",
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
        "memory: worker RSS, 2,000 vs 100 hooks", "<= 1.10x", f"{after_100 / 1024:.1f} MiB",
        f"{after_2000 / 1024:.1f} MiB ({growth:.3f}x)", "-", growth <= 1.10 and failures == 0,
    )  # fmt: skip


def cold_rows(rounds: int, fast: Sandbox) -> list[Row]:
    print("cold start ...", flush=True)
    hook_starts, base_starts, bare_starts, previous_starts = [], [], [], []
    for _ in range(max(rounds, 9)):  # alternated, so all see the same machine; starts are noisy
        hook_starts.append(cold_start(hook_function, fast.url))
        base_starts.append(cold_start(baseline_function, fast.url))
        bare_starts.append(cold_start(bare_baseline_function, fast.url))
        if PREVIOUS:
            previous_starts.append(cold_start(previous_function, fast.url))
    hook = statistics.median(hook_starts)
    ratio, bare_ratio = hook / statistics.median(base_starts), hook / statistics.median(bare_starts)
    rows = [
        Row(
            "cold start: launch to first SUCCESSFUL", "<= 1.15x baseline", ms(statistics.median(base_starts)),
            f"{ms(hook)} ({ratio:.3f}x)", spread_ms(hook_starts), ratio <= 1.15,
        ),
        Row(
            "cold start vs bare `import pydantic` (information)", "-", ms(statistics.median(bare_starts)),
            f"{ms(hook)} ({bare_ratio:.3f}x)", spread_ms(bare_starts), True,
        ),
    ]  # fmt: skip
    if PREVIOUS:
        rows.append(versus_previous("cold start", hook_starts, previous_starts))
    return rows


def table(rows: list[Row]) -> str:
    header = ("scenario", "target", "baseline", "hook (median)", "hook min–max", "")
    cells = [header] + [
        (r.scenario, r.target, r.baseline, r.hook, r.spread, "ok" if r.passed else "MISSED") for r in rows
    ]
    lines = ["| " + " | ".join(row) + " |" for row in cells]
    lines.insert(1, "|" + "|".join("---" for _ in header) + "|")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", nargs="+", choices=SCENARIOS, default=list(SCENARIOS))
    parser.add_argument("--against", metavar="REF", help="also run the hook at this git ref, side by side")
    args = parser.parse_args()
    with previous_checkout(args.against):
        rows = run(args.rounds, set(args.only))
    print(f"\n{os.cpu_count()} cores, THREADS={deployed_env().get('THREADS')}, {args.rounds} rounds\n")
    print(table(rows))
    missed = [row.scenario for row in rows if not row.passed]
    if missed:
        print(f"\nMISSED: {', '.join(missed)}")
        sys.exit(1)


if __name__ == "__main__":
    main()
