"""`make run` (tools/sandbox/run_local.py) as a new user meets it, run as a process on a free port.

Each run is started in a session of its own, so whatever it started, however deep, is found by session
id afterwards: nothing may survive it. Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import HOOK_ENV_NAMES, ROOT
from tools.processes import PROC, StartFailed, free_port, stop, wait_for_port
from tools.sandbox.run_local import SANDBOX_BLOCKED_NUMBER_TYPES, SANDBOX_VERIFY_SERVICE_SID

pytestmark = pytest.mark.e2e

START_SECONDS = 60.0  # a start on a loaded 2-core machine
EXAMPLES = ROOT / "examples"


@dataclass(frozen=True)
class Delivered:
    """SUCCESSFUL with a SID of this prefix, then Twilio's receipts ending `final` (with `error_code`)."""

    sid_prefix: str
    final: str
    error_code: int | None = None


@dataclass(frozen=True)
class Refused:
    """200 with Okta's error object naming Twilio's error code; nothing sent."""

    code: int


# What examples/README.md promises for each example, under a plain `make run`.
EXPECTED: dict[str, Delivered | Refused] = {
    "okta-sms-request.json": Delivered("SM", "delivered"),
    "okta-voice-request.json": Delivered("CA", "completed"),
    "sandbox/sms-invalid-number.json": Refused(21211),
    "sandbox/sms-unroutable.json": Refused(21612),
    "sandbox/sms-no-geo-permission.json": Refused(21408),
    "sandbox/sms-opted-out.json": Refused(21610),
    "sandbox/sms-not-mobile.json": Refused(21614),
    "sandbox/sms-carrier-filtered.json": Delivered("SM", "undelivered", 30007),
    "sandbox/sms-handset-unreachable.json": Delivered("SM", "undelivered", 30003),
    "sandbox/voice-invalid-number.json": Refused(21217),
    "sandbox/voice-no-answer.json": Delivered("CA", "no-answer"),
}
EVENT_HOOK_EXAMPLE = "okta-event-hook.json"


def event_hook_example() -> bytes:
    """The example delivery, published now, as the sed of examples/README.md makes it: an event over
    10 minutes old approves nothing."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return re.sub(
        rb'"published": "[^"]*"', f'"published": "{now}"'.encode(), (EXAMPLES / EVENT_HOOK_EXAMPLE).read_bytes()
    )


def session_members(session: int) -> list[str]:
    """Every process still in `session`, as 'pid command'."""
    members = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # gone meanwhile
        # pid (comm) state ppid pgrp session ...: comm may hold spaces and parentheses.
        if int(stat.rpartition(")")[2].split()[3]) == session:
            members.append(f"{entry.name} {command.strip()}")
    return members


def launch(tmp_path: Path, port: int | str, output: Any, **settings: str) -> subprocess.Popen[bytes]:
    """`python -m tools.sandbox.run_local` as `make run` runs it, without this machine's settings or
    .env, its secrets kept under `tmp_path`, in a session of its own."""
    env = {name: value for name, value in os.environ.items() if name not in HOOK_ENV_NAMES}
    env = {name: value for name, value in env.items() if not name.startswith("SANDBOX_")}
    env.update(PORT=str(port), **settings)
    return subprocess.Popen(
        [sys.executable, "-m", "tools.sandbox.run_local", "--run-dir", str(tmp_path / "run"),
         "--env-file", str(tmp_path / "absent.env")],
        cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip


def finished(process: subprocess.Popen[bytes]) -> tuple[int, str]:
    """Its exit code and all it printed, once every process holding its output has closed it (what
    `make run | tail` waits for); a hang fails the test instead of hanging it."""
    try:
        output, _ = process.communicate(timeout=START_SECONDS)
    except subprocess.TimeoutExpired:
        for member in session_members(process.pid):  # the sandbox and the hook run in groups of their own
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(member.split()[0]), signal.SIGKILL)
        output, _ = process.communicate(timeout=10)
        pytest.fail(f"make run (or a process it started) still holds its output: {output.decode()[-2000:]}")
    return process.returncode, output.decode()


@dataclass
class Run:
    process: subprocess.Popen[bytes]
    log: Path
    run_dir: Path
    port: int

    def output(self) -> str:
        return self.log.read_text()

    def wait_for(self, predicate: Any, what: str, seconds: float = START_SECONDS) -> None:
        deadline = time.monotonic() + seconds
        while not predicate(self.output()):
            if self.process.poll() is not None:
                pytest.fail(f"make run exited with {self.process.returncode} before {what}: {self.output()[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"no {what} within {seconds} s: {self.output()[-3000:]}")
            time.sleep(0.05)

    def post(self, path: str, body: bytes, secret_file: str) -> tuple[int, Any]:
        secret = (self.run_dir / secret_file).read_text().strip()
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}", data=body, method="POST",
            headers={"Authorization": secret, "Content-Type": "application/json"},
        )  # fmt: skip
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    def log_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.output().splitlines() if line.startswith("{")]

    def end(self, signal_number: int, to_group: bool = False) -> tuple[int, str]:
        """Stop it as a user would (Ctrl-C reaches the terminal's whole foreground group) and wait."""
        if to_group:
            os.killpg(self.process.pid, signal_number)
        else:
            self.process.send_signal(signal_number)
        try:
            code = self.process.wait(timeout=START_SECONDS)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            pytest.fail(f"make run did not stop on {signal.Signals(signal_number).name}: {self.output()[-2000:]}")
        return code, self.output()


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Any]:
    """Start `make run` with settings; it must be listening when this returns. Killed afterwards if the
    test left it running (a failed test), so no run outlives its test."""
    runs: list[Run] = []

    def start(**settings: str) -> Run:
        port, log = free_port(), tmp_path / f"run-{len(runs)}.log"
        with log.open("wb") as output:
            run = Run(launch(tmp_path, port, output, **settings), log, tmp_path / "run", port)
        runs.append(run)
        run.wait_for(lambda text: "telephony hook listening" in text, "'listening'")
        return run

    yield start
    for run in runs:
        # The whole session: the sandbox and the hook run in process groups of their own, and a test
        # that failed while they ran left them behind, listening, when only make run's group was killed.
        for member in session_members(run.process.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(member.split()[0]), signal.SIGKILL)
        if run.process.poll() is None:
            run.process.wait(timeout=10)


def transaction_id(answer: dict[str, Any]) -> str:
    return str(answer["commands"][0]["value"][0]["transactionId"])


# ------------------------------------------------------------------------------------ failed starts


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ALLOWED_COUNTRIES", "UK"),
        # with the secret made up, the header it travels in is still the one the user set, and checked
        ("OKTA_HOOK_AUTH_HEADER", "X_Okta_Secret"),
        ("OKTA_EVENT_HOOK_AUTH_HEADER", "X Okta"),
    ],
)
def test_a_bad_setting_stops_what_started_and_exits_non_zero(tmp_path: Path, name: str, value: str) -> None:
    process = launch(tmp_path, free_port(), subprocess.PIPE, **{name: value})
    code, output = finished(process)
    assert code == 1, output
    assert "[twilio-sandbox] listening" in output  # the sandbox had started: it was stopped
    assert f"Invalid configuration: {name}" in output
    assert "run: the telephony hook did not start: functions-framework --target telephony_hook" in output
    assert "run: the Twilio sandbox stopped" in output
    assert session_members(process.pid) == []


def test_a_taken_port_is_refused_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket() as stranger:
        stranger.bind(("127.0.0.1", 0))
        stranger.listen()
        port = stranger.getsockname()[1]
        process = launch(tmp_path, port, subprocess.PIPE)
        code, output = finished(process)
    assert code == 1, output
    assert f"run: port {port} is already in use (by pid {os.getpid()}: " in output
    assert "nothing was started" in output
    assert f"PORT={port + 1} make run" in output
    assert "sandbox" not in output
    assert not (tmp_path / "run").exists()  # not even a secret made up
    assert session_members(process.pid) == []


def test_an_invalid_port_is_refused(tmp_path: Path) -> None:
    process = launch(tmp_path, "80a", subprocess.PIPE)
    code, output = finished(process)
    assert code == 1
    assert "run: PORT must be a TCP port number, not '80a'; nothing was started." in output
    assert session_members(process.pid) == []


def test_a_stranger_answering_on_the_port_is_not_taken_for_the_process() -> None:
    """What makes `make run` detect functions-framework failing to bind a port taken after the check:
    the port must be listened on by the process itself, not merely answer."""
    with socket.socket() as stranger:
        stranger.bind(("127.0.0.1", 0))
        stranger.listen()
        port = stranger.getsockname()[1]
        idle = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        try:
            with pytest.raises(StartFailed, match=f"did not listen on port {port} within 1 s; another process listens"):
                wait_for_port(port, idle, seconds=1)
        finally:
            stop(idle)


def test_a_probe_the_kernel_gives_the_port_itself_never_takes_it_for_a_listener(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Waiting for the hook, `make run` probes its port over and over. On an ephemeral port, the kernel
    can give a probe that very port: connected to itself, it 'answers', and leaves the port in
    TIME-WAIT, so the next `make run` finds it 'already in use'. Here the kernel is that unlucky."""
    from tools import processes

    port = free_port()

    class Unlucky(socket.socket):
        def bind(self, address: Any) -> None:
            super().bind((address[0], port))

        def connect_ex(self, address: Any) -> int:
            if self.getsockname()[1] == 0:  # connecting unbound: the kernel picks the port here
                super().bind((address[0], port))
            return super().connect_ex(address)

    monkeypatch.setattr(socket, "socket", Unlucky)  # the module tools.processes calls
    answered = processes._answers(port)
    monkeypatch.undo()
    assert answered is False
    assert processes.port_taken(port) is None


# ------------------------------------------------------------------------------- the life of a code


def listening_on(port: int) -> set[str]:
    """The local addresses with a socket listening on `port` (Linux's /proc/net/tcp and tcp6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            local, state = row.split()[1], row.split()[3]
            address, port_hex = local.rsplit(":", 1)
            if state == "0A" and int(port_hex, 16) == port:  # 0A: LISTEN
                raw = bytes.fromhex(address)  # each 32-bit word in the host's (little-endian) order
                words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
                found.add(str(ipaddress.ip_address(words)))
    return found


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback on this machine")
def test_an_ipv6_host_is_bound_as_given(running: Any) -> None:
    """HOST=::1 failed with gunicorn's "'' is not a valid port number" (it binds '[::1]:PORT'), and the
    start then waited for IPv4."""
    run = running(HOST="::1", SANDBOX_RECEIPT_DELAY_MS="50")
    assert listening_on(run.port) == {"::1"}
    assert f"telephony hook listening on http://[::1]:{run.port}/" in run.output()
    # the sandbox posts receipts to the hook where it listens (localhost may be 127.0.0.1 alone)
    request = urllib.request.Request(
        f"http://[::1]:{run.port}/", data=(EXAMPLES / "okta-sms-request.json").read_bytes(), method="POST",
        headers={"Authorization": (run.run_dir / "hook-secret").read_text().strip(),
                 "Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=10) as response:
        assert json.loads(response.read())["commands"][0]["value"][0]["status"] == "SUCCESSFUL"
    run.wait_for(lambda text: '"delivery_status": "delivered"' in text, "a delivered receipt")


def test_every_example_gives_its_documented_result_and_sigterm_stops_everything(running: Any) -> None:
    run = running(SANDBOX_RECEIPT_DELAY_MS="50")
    # The banner says localhost: the hook listens there only, not on every interface of the machine.
    assert listening_on(run.port) == {"127.0.0.1"}
    assert "It then posts signed delivery receipts back to the hook" in run.output()
    # the magic numbers are personal numbers, which the default policy refuses: the sandbox says it lets them by
    assert f"(BLOCKED_NUMBER_TYPES={SANDBOX_BLOCKED_NUMBER_TYPES})." in run.output()
    ended: dict[str, str] = {}
    for name, expected in EXPECTED.items():
        status, answer = run.post("/", (EXAMPLES / name).read_bytes(), "hook-secret")
        assert status == 200, (name, answer)
        if isinstance(expected, Refused):
            cause = answer["error"]["errorCauses"][0]
            assert (cause["reason"], cause["location"]) == (
                f"TWILIO_{expected.code}",
                f"https://www.twilio.com/docs/errors/{expected.code}",
            ), name
        else:
            assert answer["commands"][0]["value"][0]["status"] == "SUCCESSFUL", (name, answer)
            assert transaction_id(answer).startswith(expected.sid_prefix), (name, answer)
            ended[name] = transaction_id(answer)

    def final_receipts(_: str) -> dict[str, tuple[str, int | None]]:
        finals = {}
        for line in run.log_lines():
            for name, sid in ended.items():
                if line.get("twilio_sid") == sid and line.get("delivery_status") not in (None, "sent"):
                    finals[name] = (line["delivery_status"], line.get("error_code"))
        return finals

    run.wait_for(lambda text: len(final_receipts(text)) == len(ended), "final receipt for every delivered example")
    assert final_receipts("") == {
        name: (expected.final, expected.error_code)
        for name, expected in EXPECTED.items()
        if isinstance(expected, Delivered)
    }

    # The event hook without Verify: accepted, and the spend guard learns the user's number converted.
    status, answer = run.post("/okta/events", event_hook_example(), "event-hook-secret")
    assert (status, answer) == (200, {})
    run.wait_for(lambda _: any(line.get("outcome") == "converted" for line in run.log_lines()), "event line")

    code, output = run.end(signal.SIGTERM)
    assert code == 0, output
    assert output.rstrip().endswith("run: the Twilio sandbox stopped")
    assert session_members(run.process.pid) == []


def test_verify_feedback_end_to_end_and_ctrl_c_stops_everything(running: Any) -> None:
    run = running(TWILIO_VERIFY_SERVICE_SID=SANDBOX_VERIFY_SERVICE_SID)
    assert "Okta Management API stand-in on http://127.0.0.1:" in run.output()
    assert "Verify has no delivery receipts" in run.output() and "posts signed delivery" not in run.output()
    status, answer = run.post("/", (EXAMPLES / "okta-sms-request.json").read_bytes(), "hook-secret")
    assert status == 200
    sid = transaction_id(answer)
    assert sid.startswith("VE")

    status, answer = run.post("/okta/events", event_hook_example(), "event-hook-secret")
    assert (status, answer) == (200, {})

    def approved(_: str) -> list[dict[str, Any]]:
        return [line for line in run.log_lines() if line.get("outcome") == "feedback_approved"]

    run.wait_for(approved, "feedback_approved")
    assert [(line["twilio_sid"], line["phone"]) for line in approved("")] == [(sid, "+1******0123")]
    assert f"[twilio-sandbox] VERIFY {sid} approved" in run.output()
    assert "[okta-sandbox] GET /api/v1/users/00uyxxSknGtK8022w0g3/factors -> 200, 1 factor(s)" in run.output()

    code, output = run.end(signal.SIGINT, to_group=True)
    assert code == 0, output
    assert "run: stopping" in output
    assert session_members(run.process.pid) == []


def test_a_process_that_dies_while_running_stops_the_rest(running: Any) -> None:
    run = running()
    (sandbox,) = [member for member in session_members(run.process.pid) if "tools.sandbox.twilio_sandbox" in member]
    os.kill(int(sandbox.split()[0]), signal.SIGKILL)
    try:
        code = run.process.wait(timeout=START_SECONDS)
    except subprocess.TimeoutExpired:
        pytest.fail(f"make run went on without its sandbox: {run.output()[-2000:]}")
    assert code == 1
    assert "run: the Twilio sandbox exited with -9; stopping the rest." in run.output()
    assert session_members(run.process.pid) == []
