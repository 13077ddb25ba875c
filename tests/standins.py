"""Peers that misbehave over real sockets: a Twilio or a JWKS endpoint answering oddly or trickling."""

from __future__ import annotations

import socketserver
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


class StandIn(socketserver.ThreadingTCPServer):
    """Answers every request with `answer` (raw HTTP bytes), in `chunk`-byte pieces every `pause` s."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, answer: bytes, *, chunk: int = 0, pause: float = 0.0) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.answer, self.chunk, self.pause = answer, chunk, pause
        self.requests = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(socketserver.StreamRequestHandler):
    server: StandIn

    def handle(self) -> None:
        length = 0
        while (line := self.rfile.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        self.rfile.read(length)
        self.server.requests += 1
        answer, chunk = self.server.answer, self.server.chunk or len(self.server.answer)
        try:
            for start in range(0, len(answer), chunk):
                self.wfile.write(answer[start : start + chunk])
                self.wfile.flush()
                if self.server.pause:
                    time.sleep(self.server.pause)
        except OSError:  # the client gave up: that is the point of the deadline
            pass


def http_answer(status: int, body: bytes, content_type: str = "application/json") -> bytes:
    head = f"HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
    head += "Connection: close\r\n\r\n"
    return head.encode() + body


@contextmanager
def stand_in(answer: bytes, *, chunk: int = 0, pause: float = 0.0) -> Iterator[StandIn]:
    server = StandIn(answer, chunk=chunk, pause=pause)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
