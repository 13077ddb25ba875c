"""Starting and stopping local processes: the function under functions-framework, and the sandbox.

Shared by `make run`, `make bench` and the end-to-end tests, so each starts them the same way.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parent.parent
FUNCTIONS_FRAMEWORK = str(Path(sys.executable).parent / "functions-framework")


class StartFailed(SystemExit):
    """A process died before it listened, or never listened: the message says which."""


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes], seconds: float = 30) -> None:
    """Return once `process` listens on `port`; raise StartFailed if it dies or never does."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise StartFailed(f"{process.args!r} exited with {process.returncode}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.01)
    raise StartFailed(f"nothing listens on port {port} after {seconds} s")


def start_function(
    target: str,
    source: str,
    port: int,
    env: Mapping[str, str],
    output: IO[bytes] | int | None = None,
    wait: bool = True,
    root: Path = ROOT,
) -> subprocess.Popen[bytes]:
    """`functions-framework --target TARGET --source SOURCE` from the project root (or another
    checkout's), as Cloud Run runs it."""
    process = subprocess.Popen(
        [FUNCTIONS_FRAMEWORK, "--target", target, "--source", source, "--port", str(port)],
        cwd=root,
        env=dict(env),
        stdout=output,
        stderr=subprocess.STDOUT if output is not None else None,
    )
    return listening(process, port) if wait else process


def start_sandbox(port: int, env: Mapping[str, str] | None = None, *arguments: str) -> subprocess.Popen[bytes]:
    """The local Twilio sandbox as its own process, listening on `port` once this returns."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tools.sandbox.twilio_sandbox", "--port", str(port), *arguments],
        cwd=ROOT,
        env=None if env is None else dict(env),
        stdout=subprocess.DEVNULL if "--quiet" in arguments else None,
    )
    return listening(process, port)


def start_redis(port: int, directory: Path, password: str | None = None) -> subprocess.Popen[bytes]:
    """A throwaway redis-server (Debian's package) on loopback: no persistence, listening once this returns."""
    arguments = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    arguments += ["--dir", str(directory)] + (["--requirepass", password] if password else [])
    process = subprocess.Popen(arguments, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    return listening(process, port)


def listening(process: subprocess.Popen[bytes], port: int) -> subprocess.Popen[bytes]:
    """`process`, once it listens on `port`; stopped, and StartFailed raised, if it never does."""
    try:
        wait_for_port(port, process)
    except StartFailed:
        stop(process)
        raise
    return process


def stop(process: subprocess.Popen[bytes], grace_seconds: float = 10) -> None:
    """Terminate, and kill if it has not exited within the grace period."""
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(timeout=grace_seconds)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
