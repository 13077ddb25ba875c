"""Peers that misbehave over real sockets: a Twilio, a JWKS endpoint or Okta's API answering oddly,
trickling, or flooding."""

from __future__ import annotations

import contextlib
import socketserver
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

Answer = bytes | Callable[[], Iterable[bytes]]
Server = TypeVar("Server", bound=socketserver.BaseServer)
TWILIO_PEER_SECONDS = 1.0  # the Twilio timeout of the session's hook against its raw-socket Twilio (conftest)


class StandIn(socketserver.ThreadingTCPServer):
    """Answers every request with `answer` (raw HTTP bytes, or a function giving them in pieces), in
    `chunk`-byte pieces every `pause` s; with `head_at_once`, the head goes out whole and only the
    body trickles."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, answer: Answer, *, chunk: int = 0, pause: float = 0.0, head_at_once: bool = False) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.answer, self.chunk, self.pause, self.head_at_once = answer, chunk, pause, head_at_once
        self.requests = 0
        self.last_request = b""  # as it came: its head and body, for answers that echo it

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def pieces(self) -> Iterable[bytes]:
        if callable(self.answer):
            return self.answer()
        answer, chunk = self.answer, self.chunk or len(self.answer)
        head = b""
        if self.head_at_once:
            end = answer.index(b"\r\n\r\n") + 4
            head, answer = answer[:end], answer[end:]
        return [head, *(answer[start : start + chunk] for start in range(0, len(answer), chunk))]


class _Handler(socketserver.StreamRequestHandler):
    server: StandIn

    def handle(self) -> None:
        length, head = 0, b""
        while (line := self.rfile.readline()) not in (b"\r\n", b"\n", b""):
            head += line
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        self.server.last_request = head + b"\r\n" + self.rfile.read(length)
        self.server.requests += 1
        with contextlib.suppress(OSError):  # the client gave up: that is the point of the deadline
            send(self.wfile, self.server.pieces(), self.server.pause)


def send(out: Any, pieces: Iterable[bytes], pause: float) -> None:
    """Write `pieces` one by one, `pause` s apart."""
    for piece in pieces:
        if not piece:
            continue
        out.write(piece)
        out.flush()
        if pause:
            time.sleep(pause)


def http_answer(
    status: int,
    body: bytes,
    content_type: str = "application/json",
    *,
    framing: str = "content-length",
    headers: str = "",
) -> bytes:
    """A raw answer that closes the connection, framed as `framing` says: 'content-length' (HTTP/1.1,
    `Connection: close`), 'http/1.0' (no length: the body ends when the connection does), or 'chunked'.
    `headers`: more header lines, each ending in CRLF."""
    version = "HTTP/1.0" if framing == "http/1.0" else "HTTP/1.1"
    head = f"{version} {status} X\r\nContent-Type: {content_type}\r\n{headers}"
    if framing == "content-length":
        head += f"Content-Length: {len(body)}\r\n"
    elif framing == "chunked":
        head += "Transfer-Encoding: chunked\r\n"
        body = b"".join(b"%x\r\n%s\r\n" % (1, body[i : i + 1]) for i in range(len(body))) + b"0\r\n\r\n"
    head += "Connection: close\r\n\r\n"
    return head.encode() + body


def echoing(peer: StandIn, body: bytes) -> Callable[[], list[bytes]]:
    """A 201 with `body` whose last header line has no colon and holds the request `peer` was sent, head
    and body: urllib3 warns that it cannot parse it, quoting it."""

    def pieces() -> list[bytes]:
        echoed = peer.last_request.replace(b"\r\n", b" ")
        head = b"HTTP/1.1 201 X\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n" % len(
            body
        )
        return [head + b"echo " + echoed + b"\r\n\r\n" + body]

    return pieces


def flood(status: int, prefix: bytes, size: int, suffix: bytes = b"") -> Callable[[], Iterator[bytes]]:
    """An answer of `size` bytes, streamed as fast as the peer reads it, built piece by piece so the
    stand-in never holds it: `prefix`, then spaces (valid inside JSON), then `suffix`."""

    def pieces() -> Iterator[bytes]:
        yield f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {size}\r\n\r\n".encode()
        yield prefix
        filler = size - len(prefix) - len(suffix)
        block = b" " * (1024 * 1024)
        while filler > 0:
            yield block[: min(filler, len(block))]
            filler -= len(block)
        yield suffix

    return pieces


@contextmanager
def stand_in(answer: Answer, *, chunk: int = 0, pause: float = 0.0, head_at_once: bool = False) -> Iterator[StandIn]:
    with serving(StandIn(answer, chunk=chunk, pause=pause, head_at_once=head_at_once)) as server:
        yield server


@contextmanager
def serving(server: Server) -> Iterator[Server]:
    """`server` answering on a thread of its own for the block, closed after."""
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


UNSET = b"HTTP/1.1 500 X\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"
"""What a shared stand-in answers between tests: no test expects it."""


@contextmanager
def answering(
    peer: StandIn, answer: Answer, *, chunk: int = 0, pause: float = 0.0, head_at_once: bool = False
) -> Iterator[StandIn]:
    """A shared stand-in, answering so for the block, its request count from zero; UNSET again after."""
    peer.answer, peer.chunk, peer.pause, peer.head_at_once, peer.requests = answer, chunk, pause, head_at_once, 0
    try:
        yield peer
    finally:
        peer.answer, peer.chunk, peer.pause, peer.head_at_once = UNSET, 0, 0.0, False


class RedisStandIn(socketserver.ThreadingTCPServer):
    """A 'Redis' that answers the connection's set-up (CLIENT, SELECT, AUTH, HELLO) with `set_up` (+OK)
    and every other command with `answer`'s pieces, `pause` s apart: a trickle, a flood, garbage, an error."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, answer: Iterable[bytes], *, pause: float = 0.0, set_up: bytes = b"+OK\r\n") -> None:
        super().__init__(("127.0.0.1", 0), _RespHandler)
        self.answer, self.pause, self.set_up = list(answer), pause, set_up
        self.commands: list[list[bytes]] = []

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.server_address[1]}/0"


class _RespHandler(socketserver.StreamRequestHandler):
    server: RedisStandIn
    SET_UP = (b"CLIENT", b"SELECT", b"AUTH", b"HELLO")

    def handle(self) -> None:
        try:
            while command := self._command():
                self.server.commands.append(command)
                if command[0].upper() in self.SET_UP:
                    self.wfile.write(self.server.set_up)
                    continue
                send(self.wfile, self.server.answer, self.server.pause)
        except OSError:  # the client gave up: that is the point of the deadline
            pass

    def _command(self) -> list[bytes]:
        return read_command(self.rfile)


def read_command(stream: Any) -> list[bytes]:
    """One command as a client sends it (RESP: an array of bulk strings); [] at the end."""
    head = stream.readline()
    if not head.startswith(b"*"):
        return []
    words = []
    for _ in range(int(head[1:])):
        size = int(stream.readline()[1:])
        words.append(stream.read(size + 2)[:-2])
    return words


def read_reply(stream: Any) -> bytes:
    """One reply as Redis sends it (RESP 2), whole and as it came."""
    line = stream.readline()
    if line[:1] == b"$" and int(line[1:]) >= 0:
        return line + stream.read(int(line[1:]) + 2)
    if line[:1] == b"*":
        return line + b"".join(read_reply(stream) for _ in range(max(int(line[1:]), 0)))
    return bytes(line)


class RedisProxy(socketserver.ThreadingTCPServer):
    """Relays each command to a real Redis and its reply back. `cut_next`: the next command (not the
    connection's set-up) runs on Redis, then the connection is closed instead of answered, as a
    failover, a proxy or CLIENT KILL may do. `repeat_last`: once the next command has come, the reply
    to the one before is sent again ahead of its own, as a faulty proxy might: the stream out of step."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, upstream_port: int) -> None:
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        self.upstream_port = upstream_port
        self.cut_next = False
        self.repeat_last = False
        # Set: the connections open now go silent (commands read, never run nor answered), as a
        # network that dropped them without a word; connections opened after are relayed.
        self.silenced = threading.Event()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.server_address[1]}/0"


class _ProxyHandler(socketserver.StreamRequestHandler):
    server: RedisProxy

    def handle(self) -> None:
        import socket

        opened_silenced = self.server.silenced.is_set()
        with socket.create_connection(("127.0.0.1", self.server.upstream_port)) as upstream:
            replies = upstream.makefile("rb")
            last = b""
            while command := read_command(self.rfile):
                if self.server.silenced.is_set() and not opened_silenced:
                    continue
                upstream.sendall(b"*%d\r\n" % len(command) + b"".join(b"$%d\r\n%s\r\n" % (len(w), w) for w in command))
                reply = read_reply(replies)
                if self.server.cut_next and command[0].upper() not in _RespHandler.SET_UP:
                    self.server.cut_next = False
                    return  # the command ran; its answer is never sent, the connection closes
                if command[0].upper() in _RespHandler.SET_UP:
                    self.wfile.write(reply)
                    continue
                if self.server.repeat_last and last:
                    self.wfile.write(last)  # the copy, where the client waits for this command's reply
                self.wfile.write(reply)
                last = reply


@contextmanager
def redis_proxy(upstream_port: int) -> Iterator[RedisProxy]:
    with serving(RedisProxy(upstream_port)) as server:
        yield server


class TricklingRelay(socketserver.ThreadingTCPServer):
    """Relays a TCP connection to `upstream_port`, the client's bytes at once and the server's one
    byte every `pause` seconds: a TLS handshake, and whatever follows it, trickled."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, upstream_port: int, pause: float) -> None:
        super().__init__(("127.0.0.1", 0), _TrickleHandler)
        self.upstream_port, self.pause = upstream_port, pause


class _TrickleHandler(socketserver.BaseRequestHandler):
    server: TricklingRelay

    def handle(self) -> None:
        import socket

        client: socket.socket = self.request
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.server.upstream_port)) as up:

            def upwards() -> None:
                with contextlib.suppress(OSError):
                    while data := client.recv(65536):
                        up.sendall(data)

            threading.Thread(target=upwards, daemon=True).start()
            while data := up.recv(65536):
                for byte in data:
                    client.sendall(bytes([byte]))
                    time.sleep(self.server.pause)


@contextmanager
def trickling_relay(upstream_port: int, pause: float) -> Iterator[TricklingRelay]:
    with serving(TricklingRelay(upstream_port, pause)) as server:
        yield server


@contextmanager
def redis_stand_in(
    answer: Iterable[bytes], *, pause: float = 0.0, set_up: bytes = b"+OK\r\n"
) -> Iterator[RedisStandIn]:
    with serving(RedisStandIn(answer, pause=pause, set_up=set_up)) as server:
        yield server


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, written to `directory`."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    certificate, private_key = directory / "cert.pem", directory / "key.pem"
    certificate.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    private_key.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return certificate, private_key


@contextmanager
def tls_listener(directory: Path) -> Iterator[int]:
    """A loopback TLS server with a self-signed certificate (written to `directory`): handshakes
    happen, verification fails. Yields its port."""
    import socket
    import ssl

    certificate, key = self_signed(directory)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificate, key)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            try:
                context.wrap_socket(connection, server_side=True).close()
            except (ssl.SSLError, OSError):
                connection.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        listener.close()


def stalled_resolver(monkeypatch: Any, name: str, seconds: float, answer: str | None = None) -> list[str]:
    """The system's resolver, stalled for one name (socket.getaddrinfo patched through `monkeypatch`):
    `name` takes `seconds` to resolve, then resolves to `answer` (an address), or as it would. Every
    other name resolves as usual. Returns the list of the times `name` was asked for, as it grows."""
    import socket

    real = socket.getaddrinfo
    asked: list[str] = []

    def resolve(host: Any, *rest: Any, **options: Any) -> Any:
        if host == name:
            asked.append(host)
            time.sleep(seconds)
            return real(answer or host, *rest, **options)
        return real(host, *rest, **options)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    return asked
