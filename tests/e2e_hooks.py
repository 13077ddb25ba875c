"""Start and stop the hook as a functions-framework process, for end-to-end tests."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.helpers import HOOK_ENV_NAMES, HOOK_SECRET, sandbox_env
from tools.processes import StartFailed, free_port, start_function, stop


@dataclass
class RunningHook:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.url.removeprefix("http://").rstrip("/").split(":")
        return host, int(port)

    def output(self) -> str:
        return self.log_path.read_text()

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


def start_hook(env_overrides: dict[str, str], log_path: Path) -> RunningHook:
    port = free_port()
    env = {key: value for key, value in os.environ.items() if key not in HOOK_ENV_NAMES}
    # As deployed: the function knows its own URL (receipts need it); PUBLIC_URL="" leaves it unset.
    env["PUBLIC_URL"] = f"http://127.0.0.1:{port}"
    env.update(env_overrides)
    with log_path.open("wb") as log_file:
        try:
            process = start_function("telephony_hook", "main.py", port, env, log_file)
        except StartFailed as failure:
            raise AssertionError(f"{failure}: {log_path.read_text()}") from None
    return RunningHook(f"http://127.0.0.1:{port}/", process, log_path)


HookStarter = Callable[..., RunningHook]


def hook_starter(sandbox_url: str, directory: Path) -> Iterator[HookStarter]:
    """A fixture body: start hooks configured against the sandbox (overrides applied), stop them after."""
    started: list[RunningHook] = []

    def run(**overrides: str) -> RunningHook:
        hook = start_hook(sandbox_env(sandbox_url, **overrides), directory / f"hook-{len(started)}.log")
        started.append(hook)
        return hook

    yield run
    for hook in started:
        stop(hook.process)
