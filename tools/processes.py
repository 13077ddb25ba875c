"""Starting and stopping local processes: the function under functions-framework, and the sandbox.

Shared by `make run`, `make bench` and the end-to-end tests, so each starts them the same way.

A process counts as started once it listens on its port itself: something answering on the port is
not proof, since another program may hold it (functions-framework retries a taken port for seconds
before it gives up). On Linux the listening socket is looked up in /proc and must be the process's own.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parent.parent
FUNCTIONS_FRAMEWORK = str(Path(sys.executable).parent / "functions-framework")
PROC = Path("/proc")
_LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp

# Processes started as the leader of their own process group: stop() ends the whole group (gunicorn's
# worker included), so nothing they started outlives them.
_GROUP_LEADERS: weakref.WeakSet[subprocess.Popen[bytes]] = weakref.WeakSet()


class StartFailed(SystemExit):
    """A process died before it listened, or never listened: the message says which."""


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def port_taken(port: int) -> str | None:
    """Why `port` cannot be listened on (who holds it, when /proc tells), or None when it is free.

    Binds as functions-framework does (all interfaces, SO_REUSEADDR), on IPv4 and on IPv6 when the
    machine has it: a server on either would answer `curl localhost:PORT` instead of ours."""
    for family, host in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
        try:
            probe = socket.socket(family, socket.SOCK_STREAM)
        except OSError:  # no IPv6 on this machine
            continue
        with probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind((host, port))
            except OSError as error:
                if error.errno == errno.EADDRINUSE:
                    holders = ", ".join(describe(pid) for pid in listener_pids(port))
                    return f"port {port} is already in use" + (f" (by {holders})" if holders else "")
                if family == socket.AF_INET:
                    return f"port {port} cannot be listened on: {error.strerror}"
    return None


def listener_inodes(port: int) -> set[int]:
    """The socket inodes listening on TCP `port` (IPv4 and IPv6), from /proc/net; empty elsewhere."""
    inodes: set[int] = set()
    for table in ("tcp", "tcp6"):
        try:
            rows = (PROC / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if len(fields) > 9 and fields[3] == _LISTEN and int(fields[1].rpartition(":")[2], 16) == port:
                inodes.add(int(fields[9]))
    return inodes


def socket_inodes(pid: int) -> set[int]:
    """The inodes of the sockets `pid` holds open (empty when it cannot be read)."""
    inodes: set[int] = set()
    with contextlib.suppress(OSError):
        for entry in (PROC / str(pid) / "fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(entry)
                if target.startswith("socket:["):
                    inodes.add(int(target[8:-1]))
    return inodes


def listener_pids(port: int) -> list[int]:
    """The processes (of this user: others' are not readable) that hold a socket listening on `port`."""
    wanted = listener_inodes(port)
    if not wanted:
        return []
    return sorted(
        int(entry.name) for entry in PROC.iterdir() if entry.name.isdigit() and socket_inodes(int(entry.name)) & wanted
    )


def describe(pid: int) -> str:
    """'pid 123: python3 -m http.server 8080', as far as /proc tells."""
    try:
        command = (PROC / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        command = ""
    return f"pid {pid}: {command}" if command else f"pid {pid}"


def listens(process: subprocess.Popen[bytes], port: int) -> bool | None:
    """Whether `process` itself holds the socket listening on `port`; None when /proc cannot tell."""
    if not (PROC / "net" / "tcp").exists():
        return None
    return bool(listener_inodes(port) & socket_inodes(process.pid))


def wait_for_port(port: int, process: subprocess.Popen[bytes], seconds: float = 30) -> None:
    """Return once `process` listens on `port`; raise StartFailed if it dies or never does. A stranger
    answering on the port does not count: `process` then fails to bind, and the message says why."""
    deadline = time.monotonic() + seconds
    stranger = ""
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise StartFailed(f"{command(process)} exited with {process.returncode}{stranger}")
        if _answers(port):
            ours = listens(process, port)
            if ours is None or ours:
                return
            holders = ", ".join(describe(pid) for pid in listener_pids(port))
            stranger = f"; another process listens on port {port}" + (f" ({holders})" if holders else "")
        time.sleep(0.01)
    raise StartFailed(f"{command(process)} did not listen on port {port} within {seconds} s{stranger}")


def _answers(port: int) -> bool:
    """Whether something accepts connections on `port` of this machine, over IPv4 or IPv6 (HOST=::1)."""
    for family, address in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        try:
            with socket.socket(family) as probe:
                probe.bind((address, 0))
                # The kernel may give the probe `port` itself: connected to itself (TCP's simultaneous
                # open), it would 'answer', and leave `port` in TIME-WAIT for a minute. Asked again soon.
                if probe.getsockname()[1] != port and probe.connect_ex((address, port)) == 0:
                    return True
        except OSError:  # no IPv6 on this machine
            continue
    return False


def command(process: subprocess.Popen[bytes]) -> str:
    """`process`'s command line as one would type it, the program without its directory."""
    program, *arguments = [str(argument) for argument in process.args]  # type: ignore[union-attr]
    return shlex.join([Path(program).name, *arguments])


def start_function(
    target: str,
    source: str,
    port: int,
    env: Mapping[str, str],
    output: IO[bytes] | int | None = None,
    wait: bool = True,
    root: Path = ROOT,
    own_group: bool = False,
) -> subprocess.Popen[bytes]:
    """`functions-framework --target TARGET --source SOURCE` from the project root (or another
    checkout's), as Cloud Run runs it. `own_group`: in a process group of its own, which stop() ends."""
    process = subprocess.Popen(
        [FUNCTIONS_FRAMEWORK, "--target", target, "--source", source, "--port", str(port)],
        cwd=root,
        env=dict(env),
        stdout=output,
        stderr=subprocess.STDOUT if output is not None else None,
        process_group=0 if own_group else None,
    )
    if own_group:
        _GROUP_LEADERS.add(process)
    return listening(process, port) if wait else process


def start_sandbox(
    port: int, env: Mapping[str, str] | None = None, *arguments: str, wait: bool = True, own_group: bool = False
) -> subprocess.Popen[bytes]:
    """The local Twilio sandbox as its own process, listening on `port` once this returns (`wait`)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tools.sandbox.twilio_sandbox", "--port", str(port), *arguments],
        cwd=ROOT,
        env=None if env is None else dict(env),
        stdout=subprocess.DEVNULL if "--quiet" in arguments else None,
        process_group=0 if own_group else None,
    )
    if own_group:
        _GROUP_LEADERS.add(process)
    return listening(process, port) if wait else process


def start_redis(
    port: int, directory: Path, password: str | None = None, tls: tuple[Path, Path] | None = None
) -> subprocess.Popen[bytes]:
    """A throwaway redis-server (Debian's package) on loopback: no persistence, listening once this returns.
    `tls`, a certificate and its key: the port speaks TLS only (as Memorystore's in-transit encryption)."""
    listen = ["--port", str(port)]
    if tls is not None:
        certificate, key = tls
        listen = ["--port", "0", "--tls-port", str(port), "--tls-cert-file", str(certificate)]
        listen += ["--tls-key-file", str(key), "--tls-ca-cert-file", str(certificate), "--tls-auth-clients", "no"]
    arguments = ["redis-server", *listen, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    arguments += ["--dir", str(directory)] + (["--requirepass", password] if password else [])
    try:
        process = subprocess.Popen(arguments, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    except FileNotFoundError:
        raise StartFailed(
            "redis-server is not installed: the spend guard's tests and `make bench` run a real one "
            "(Debian/Ubuntu: apt-get install redis-server; macOS: brew install redis)"
        ) from None
    return listening(process, port)


def listening(process: subprocess.Popen[bytes], port: int) -> subprocess.Popen[bytes]:
    """`process`, once it listens on `port`; stopped, and StartFailed raised, if it never does."""
    try:
        wait_for_port(port, process)
    except BaseException:  # StartFailed, or Ctrl-C while waiting: nothing is left behind
        stop(process)
        raise
    return process


def stop(process: subprocess.Popen[bytes], grace_seconds: float = 10) -> None:
    """Terminate, and kill if it has not exited within the grace period. A process started in its own
    group is ended with its group, so the children it started end with it."""
    group = process in _GROUP_LEADERS

    def send(signal_number: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if group:
                os.killpg(process.pid, signal_number)
            elif process.poll() is None:
                process.send_signal(signal_number)

    send(signal.SIGTERM)
    try:
        process.wait(timeout=grace_seconds)
    except subprocess.TimeoutExpired:
        send(signal.SIGKILL)
        process.wait()
    if group:  # the leader is gone; what it started may not be yet
        deadline = time.monotonic() + grace_seconds
        while _group_alive(process.pid):
            if time.monotonic() > deadline:
                send(signal.SIGKILL)
                break
            time.sleep(0.02)
        _GROUP_LEADERS.discard(process)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
