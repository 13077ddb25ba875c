"""Start and stop the hook as a functions-framework process, for end-to-end tests.

Starting one costs most of a second and stopping it a third: tests that need the same configuration
share one process (`SharedHooks`), and each test reads only the log lines written since it began.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tests.helpers import HOOK_ENV_NAMES, HOOK_SECRET, sandbox_env
from tools.processes import StartFailed, free_port, listening, start_function, stop


@dataclass(frozen=True)
class RunningHook:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    log_offset: int = 0  # output() starts here: a shared process's earlier lines belong to earlier tests

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.url.removeprefix("http://").rstrip("/").split(":")
        return host, int(port)

    def output(self) -> str:
        """What the process wrote since this view of it was taken."""
        with self.log_path.open("rb") as log:
            log.seek(self.log_offset)
            return log.read().decode()

    def output_with(self, text: str, seconds: float = 10) -> str:
        """The output, once it holds `text` (lines of work that goes on after the answer come later)."""
        deadline = time.monotonic() + seconds
        while text not in (output := self.output()):
            if time.monotonic() > deadline:
                raise AssertionError(f"no {text!r} after {seconds} s in: {output}")
            time.sleep(0.02)
        return output

    def from_now(self) -> RunningHook:
        """The same process, its output read from this moment on."""
        return replace(self, log_offset=self.log_path.stat().st_size)

    def post(
        self,
        body: Any,
        secret: str | None = HOOK_SECRET,
        headers: dict[str, str] | None = None,
        path: str = "",
        timeout: float = 10,
    ) -> tuple[int, Any, float]:
        """POST like Okta (to `path`, relative to the root); returns the status, the parsed JSON answer
        and the seconds it took."""
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        sent = {"Content-Type": "application/json", **(headers or {})}
        if secret is not None:
            sent["Authorization"] = secret
        request = urllib.request.Request(self.url + path, data=data, headers=sent, method="POST")
        started = time.monotonic()
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                status, raw, content_type = response.status, response.read(), response.headers["Content-Type"]
        except urllib.error.HTTPError as error:
            status, raw, content_type = error.code, error.read(), error.headers["Content-Type"]
        assert content_type.startswith("application/json"), content_type
        return status, json.loads(raw), time.monotonic() - started

    def worker_peak_kib(self) -> int:
        """The peak resident memory (VmHWM) of the gunicorn worker that serves the requests, in KiB."""
        return _status_kib(_worker_pid(self.process.pid), "VmHWM")


def _worker_pid(parent: int) -> int:
    """functions-framework runs gunicorn: its master forks one worker, which serves every request."""
    children = [
        int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit() and _parent_of(entry) == parent
    ]
    assert len(children) == 1, children
    return children[0]


def _parent_of(entry: Path) -> int | None:
    try:
        stat = (entry / "stat").read_text()
    except OSError:
        return None
    return int(stat.rpartition(")")[2].split()[1])


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name == field:
            return int(value.split()[0])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def hook_environment(env_overrides: dict[str, str], port: int) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in HOOK_ENV_NAMES}
    # As deployed: the function knows its own URL (receipts need it); PUBLIC_URL="" leaves it unset.
    env["PUBLIC_URL"] = f"http://127.0.0.1:{port}"
    env.update(env_overrides)
    return env


def launch_hook(env_overrides: dict[str, str], log_path: Path) -> tuple[subprocess.Popen[bytes], int]:
    """Start the process and return at once; `ready` waits until it listens."""
    port = free_port()
    with log_path.open("wb") as log_file:
        process = start_function(
            "telephony_hook", "main.py", port, hook_environment(env_overrides, port), log_file, wait=False
        )
    return process, port


def ready(process: subprocess.Popen[bytes], port: int, log_path: Path) -> RunningHook:
    try:
        listening(process, port)
    except StartFailed as failure:
        raise AssertionError(f"{failure}: {log_path.read_text()}") from None
    return RunningHook(f"http://127.0.0.1:{port}/", process, log_path)


def start_hook(env_overrides: dict[str, str], log_path: Path) -> RunningHook:
    return ready(*launch_hook(env_overrides, log_path), log_path)


_stopping: list[subprocess.Popen[bytes]] = []


def stop_later(processes: Iterable[subprocess.Popen[bytes]]) -> None:
    """Ask them to stop and go on: gunicorn takes a few tenths of a second to shut down gracefully, and
    nothing waits on it. `reap` (at the end of the session) waits for them, and kills what lingers."""
    for process in processes:
        if process.poll() is None:
            process.terminate()
        _stopping.append(process)


def reap() -> None:
    """Wait for every process stop_later was given (the session's end calls it)."""
    while _stopping:
        stop(_stopping.pop())


HookStarter = Callable[..., RunningHook]


def hook_starter(sandbox_url: str, directory: Path) -> Iterator[HookStarter]:
    """A fixture body: start hooks configured against the sandbox (overrides applied), stop them after.
    For a configuration only this test can use (a peer of its own, a hook it will break)."""
    started: list[RunningHook] = []

    def run(**overrides: str) -> RunningHook:
        hook = start_hook(sandbox_env(sandbox_url, **overrides), directory / f"hook-{len(started)}.log")
        started.append(hook)
        return hook

    yield run
    stop_later(hook.process for hook in started)


class SharedHooks:
    """One process per configuration against the sandbox, started when first asked for (or earlier, by
    `prestart`) and stopped at the end of the session. `get` returns a view whose output() holds only
    the lines written after the call."""

    def __init__(self, sandbox_url: str, directory: Path) -> None:
        self._sandbox_url, self._directory = sandbox_url, directory
        self._launched: dict[Config, tuple[subprocess.Popen[bytes], int, Path]] = {}
        self._hooks: dict[Config, RunningHook] = {}

    def prestart(self, **overrides: str) -> None:
        """Launch the process for this configuration now, without waiting for it to listen."""
        key = tuple(sorted(overrides.items()))
        if key not in self._launched:
            log_path = self._directory / f"shared-{len(self._launched)}.log"
            # A shared process outlives each test, and the spend guard counts codes per number: one test's
            # codes would be the next one's limit or retry. Its own tests start their own processes.
            settings = {"GUARD_MODE": "off", **overrides}
            process, port = launch_hook(sandbox_env(self._sandbox_url, **settings), log_path)
            self._launched[key] = (process, port, log_path)

    def get(self, **overrides: str) -> RunningHook:
        key = tuple(sorted(overrides.items()))
        hook = self._hooks.get(key)
        if hook is None:
            self.prestart(**overrides)
            hook = self._hooks[key] = ready(*self._launched[key])
        # Never restarted: a process that died under an earlier test is a failure to see, not to hide.
        assert hook.process.poll() is None, f"the shared hook {key} exited: {hook.log_path.read_text()}"
        return hook.from_now()

    def stop(self) -> None:
        stop_later(process for process, _, _ in self._launched.values())
        self._launched.clear()
        self._hooks.clear()


Config = tuple[tuple[str, str], ...]
