"""A real redis-server (the Debian package) for the tests: started on a free port, stopped after."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis

from tools.processes import free_port, start_redis, stop


class RedisServer:
    def __init__(self, directory: Path, password: str | None = None, tls: tuple[Path, Path] | None = None) -> None:
        self.port = free_port()
        self.password = password
        self.directory = directory
        self.tls = tls  # a certificate for 127.0.0.1 and its key: TLS only
        self.start()

    def start(self) -> None:
        """Start (or start again, on the same port) and wait until it answers."""
        self.process = start_redis(self.port, self.directory, self.password, self.tls)
        over_tls: dict[str, Any] = {"ssl": True, "ssl_ca_certs": str(self.tls[0])} if self.tls else {}
        self.client = redis.Redis(
            host="127.0.0.1", port=self.port, password=self.password, decode_responses=True, **over_tls
        )
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
        if self.tls:
            return f"rediss://{auth}127.0.0.1:{self.port}/0?ssl_ca_certs={self.tls[0]}"
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
