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
        self, body: Any, secret: str | None = HOOK_SECRET, headers: dict[str, str] | None = None
    ) -> tuple[int, Any, float]:
        """POST like Okta; returns the status, the parsed JSON answer and the seconds it took."""
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        sent = {"Content-Type": "application/json", **(headers or {})}
        if secret is not None:
            sent["Authorization"] = secret
        request = urllib.request.Request(self.url, data=data, headers=sent, method="POST")
        started = time.monotonic()
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                status, raw, content_type = response.status, response.read(), response.headers["Content-Type"]
        except urllib.error.HTTPError as error:
            status, raw, content_type = error.code, error.read(), error.headers["Content-Type"]
        assert content_type.startswith("application/json"), content_type
        return status, json.loads(raw), time.monotonic() - started


def start_hook(env_overrides: dict[str, str], log_path: Path) -> RunningHook:
    port = free_port()
    env = {key: value for key, value in os.environ.items() if key not in HOOK_ENV_NAMES}
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
