"""A real redis-server (the Debian package) for the tests: started on a free port, stopped after."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

from tools.processes import free_port, stop

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


class RedisServer:
    def __init__(self, directory: Path, password: str | None = None) -> None:
        self.port = free_port()
        self.password = password
        self.directory = directory
        self.start()

    def start(self) -> None:
        """Start (or start again, on the same port) and wait until it answers."""
        directory, password = self.directory, self.password
        arguments = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        arguments += ["--dir", str(directory)] + (["--requirepass", password] if password else [])
        self.process = subprocess.Popen(arguments, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        self.client = redis.Redis(host="127.0.0.1", port=self.port, password=password, decode_responses=True)
        deadline = time.monotonic() + 10
        while True:
            try:
                self.client.ping()
                break
            except redis.ConnectionError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start (exit {self.process.poll()})") from None
                time.sleep(0.02)

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def flush(self) -> None:
        self.client.flushall()

    @contextmanager
    def paused(self) -> Iterator[None]:
        """SIGSTOP: the kernel still accepts connections, nobody answers (a hung store)."""
        self.process.send_signal(signal.SIGSTOP)
        try:
            yield
        finally:
            self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        self.client.close()
        self.process.send_signal(signal.SIGCONT)
        stop(self.process)
