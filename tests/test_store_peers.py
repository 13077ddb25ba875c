"""A store that misbehaves: every call ends by its deadline, whatever the store sends, and fails open
with the label that says why. The 'Redis' here is a local stand-in speaking Redis's protocol."""

from __future__ import annotations

import json
import ssl
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from telephony.store import MAX_REPLY_BYTES, OPENING_AT_ONCE, SET_UP_MAX_BYTES, RedisStore, StoreUnavailable, Verdict
from tests.helpers import AppFactory, okta_request, post_hook
from tests.redis_server import RedisServer
from tests.standins import redis_proxy, redis_stand_in, stalled_resolver, tls_listener, trickling_relay
from tests.traces import ask
from tools.processes import free_port
from tools.sandbox.twilio_sandbox import SandboxState

DEADLINE = 0.15


def failure(store: RedisStore, *words: str) -> tuple[str, float]:
    """The label a failing call raises, and how long it took."""
    started = time.monotonic()
    with pytest.raises(StoreUnavailable) as raised:
        store._execute(*words)
    return raised.value.reason, time.monotonic() - started


@pytest.mark.parametrize(
    ("name", "answer"),
    [
        ("a bulk string trickled", [b"$5\r\n", *(bytes([byte]) for byte in b"hello\r\n")]),
        ("a word that never ends", [b"+", *(b"O" for _ in range(40))]),
    ],
)
def test_a_store_that_trickles_its_reply_is_given_up_on_at_the_deadline(name: str, answer: list[bytes]) -> None:
    """Each piece comes well within a socket timeout; only the call's deadline ends it."""
    with redis_stand_in(answer, pause=DEADLINE / 5) as peer:
        reason, took = failure(RedisStore(peer.url, DEADLINE), "GET", "okta-hook:o:x")
    assert reason == "STORE_TIMEOUT"
    assert DEADLINE * 0.9 <= took < DEADLINE * 2


@pytest.mark.parametrize(
    ("name", "answer"),
    [
        ("a reply far past the cap", [b"$%d\r\n" % (50 * MAX_REPLY_BYTES), b"x" * (50 * MAX_REPLY_BYTES) + b"\r\n"]),
        ("a line past the cap without an end", [b"+" + b"O" * (4 * MAX_REPLY_BYTES)]),
        ("not Redis at all", [b"HTTP/1.1 400 Bad Request\r\n\r\n"]),
        ("a bulk string of the wrong length", [b"$2\r\nhello\r\n"]),
        ("two replies to one command", [b"+OK\r\n+OK\r\n"]),
        ("an array where a word belongs", [b"*1\r\n$2\r\nok\r\n"]),
        ("a length that is no number", [b"$x\r\nhello\r\n"]),
        ("a length with two minus signs", [b"$--5\r\nhello\r\n"]),
        ("a negative length", [b"$-5\r\n\r\n"]),
        ("a count with two minus signs", [b":--1\r\n"]),
        ("a count that is no number", [b":1.5\r\n"]),
        ("a count longer than Python reads", [b":" + b"9" * 5000 + b"\r\n"]),
        ("a length longer than Python reads", [b"$" + b"9" * 5000 + b"\r\n"]),
        ("a count past 64 bits", [b":" + b"9" * 20 + b"\r\n"]),
    ],
)
def test_a_reply_that_is_not_ours_drops_the_connection_at_once(name: str, answer: list[bytes]) -> None:
    """Anything but one well-formed reply: the stream cannot be trusted, the connection goes, the
    call fails open at once, and the next call opens a new connection."""
    with redis_stand_in(answer) as peer:
        store = RedisStore(peer.url, DEADLINE)
        reason, took = failure(store, "GET", "okta-hook:o:x")
        assert reason == "STORE_UNREACHABLE" and took < DEADLINE
        assert not store._idle  # dropped: never read as the next call's reply


def test_a_script_sent_again_after_noscript_gets_only_what_is_left_of_the_calls_deadline() -> None:
    """A restarted store answers EVALSHA with NOSCRIPT, and the script's text goes with EVAL: one call,
    one deadline. Each reply here comes a little over half a deadline after its command."""
    with redis_stand_in([b"-", b"NOSCRIPT No matching script\r\n"], pause=DEADLINE * 0.6) as peer:
        store = RedisStore(peer.url, DEADLINE)
        started = time.monotonic()
        with pytest.raises(StoreUnavailable) as raised:
            store.claim_all(["event-1"], 60)
        took = time.monotonic() - started
        while len(peer.commands) < 2 and time.monotonic() < started + 2:  # read once its last reply is out
            time.sleep(0.01)
        assert [command[0] for command in peer.commands] == [b"EVALSHA", b"EVAL"]
    assert raised.value.reason == "STORE_TIMEOUT"
    assert DEADLINE * 0.9 <= took < DEADLINE * 1.5


@pytest.mark.e2e  # two Python processes, as two instances
def test_two_instances_tag_their_calls_apart() -> None:
    """A proxy that sends one instance's reply down another's connection: a tag both could have sent
    (each counting from zero) would let the other's reply pass for its own."""
    import subprocess
    import sys

    def first_tag() -> str:
        script = "from telephony.store import _tag; print(_tag())"
        return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout

    assert first_tag() != first_tag()


def test_an_error_reply_is_a_refusal_and_keeps_the_connection() -> None:
    with redis_stand_in([b"-BUSY Redis is busy running a script\r\n"]) as peer:
        store = RedisStore(peer.url, DEADLINE)
        reason, took = failure(store, "GET", "okta-hook:o:x")
        assert reason == "STORE_REFUSED" and took < DEADLINE
        (kept,) = store._idle  # a whole reply was read: the stream is in step, the connection given back
        assert kept.connection._sock is not None


@pytest.mark.parametrize(
    "error",
    [
        b"-READONLY You can't write against a read only replica.\r\n",
        b"-MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.\r\n",
        b"-NOAUTH Authentication required.\r\n",
        # Redis 6 wraps a script's error in its own
        b"-ERR Error running script (call to f_0b8f): @user_script:12: @user_script: 12: -READONLY You can't "
        b"write against a read only replica.\r\n",
    ],
)
def test_an_error_reply_saying_the_server_is_not_the_one_connected_to_drops_the_connection(error: bytes) -> None:
    """A demoted primary or a server that forgot the connection's AUTH: reconnecting is what serves."""
    with redis_stand_in([error]) as peer:
        store = RedisStore(peer.url, DEADLINE)
        reason, took = failure(store, "GET", "okta-hook:o:x")
        assert reason == "STORE_REFUSED" and took < DEADLINE
        assert not store._idle


def test_a_store_that_resets_after_an_error_rests_then_tries_again() -> None:
    """After a failure the store is left alone for a second (calls fail open at once), then used again."""
    with redis_stand_in([b"-LOADING Redis is loading the dataset in memory\r\n"]) as peer:
        store = RedisStore(peer.url, DEADLINE)
        assert failure(store, "GET", "k")[0] == "STORE_REFUSED"
        sent = len(peer.commands)
        with pytest.raises(StoreUnavailable) as resting:
            store._execute("GET", "k")
        assert (resting.value.reason, resting.value.fresh, len(peer.commands)) == ("STORE_RESTING", False, sent)
        store._resting_until = 0.0  # a second later
        peer.answer = [b"$2\r\nSM\r\n"]
        assert store._execute("GET", "k") == "SM"


def test_a_store_answering_lines_our_script_never_writes_rests_as_after_any_fault() -> None:
    """A server that answers every command '+OK' is reachable and well-formed, but not ours: the guard
    fails open, reports it once, and leaves it alone for a second as after any other fault."""
    from telephony.rates import parse_rates
    from telephony.store import Ask

    rates = parse_rates("3/hour")
    ask = Ask("n", "+3361234", "FR", "r", 30, True, False, 3, 86400, rates, rates, rates, rates, rates)
    with redis_stand_in([b"+OK\r\n"]) as peer:
        store = RedisStore(peer.url, DEADLINE)
        with pytest.raises(StoreUnavailable) as first:
            store.admit(ask, time.time())
        assert (first.value.reason, first.value.fresh) == ("STORE_UNREACHABLE", True)
        sent = len(peer.commands)
        with pytest.raises(StoreUnavailable) as resting:
            store.admit(ask, time.time())
        assert (resting.value.reason, resting.value.fresh, len(peer.commands)) == ("STORE_RESTING", False, sent)


@pytest.mark.parametrize(
    ("answer", "value"),
    [
        ([b"$-1\r\n"], None),
        ([b"+OK\r\n"], "OK"),
        ([b":1\r\n"], 1),
        ([b"$0\r\n\r\n"], ""),
        ([b"$34\r\n", b"SM" + b"a" * 32, b"\r\n"], "SM" + "a" * 32),  # in pieces, within the deadline
    ],
)
def test_the_replies_of_our_commands_are_read_whole(answer: list[bytes], value: object) -> None:
    with redis_stand_in(answer, pause=0.01) as peer:
        assert RedisStore(peer.url, DEADLINE)._execute("GET", "k") == value
        assert peer.commands[-1] == [b"GET", b"k"]


SET_UPS = {  # what a URI makes redis-py send before the first command: the command, its first word
    "AUTH": ("redis://:hunter2@127.0.0.1:{port}/0", b"AUTH"),
    "SELECT": ("redis://127.0.0.1:{port}/3", b"SELECT"),
    "CLIENT SETNAME": ("redis://127.0.0.1:{port}/0?client_name=okta-hook", b"CLIENT"),
}


@pytest.mark.parametrize("set_up", sorted(SET_UPS))
@pytest.mark.parametrize(
    "flood",
    [b"+" + b"O" * (64 * SET_UP_MAX_BYTES), b"$%d\r\n" % (64 * SET_UP_MAX_BYTES) + b"x" * (64 * SET_UP_MAX_BYTES)],
    ids=["an endless line", "a bulk string of megabytes"],
)
def test_a_store_flooding_the_connections_set_up_is_dropped_at_the_cap_not_the_deadline(
    flood: bytes, set_up: str
) -> None:
    """redis-py reads AUTH's, SELECT's and CLIENT's replies with no cap of its own: a store answering
    megabytes at loopback speed would fill memory until the deadline. The set-up's reads are capped."""
    uri, word = SET_UPS[set_up]
    with redis_stand_in([b"+OK\r\n"], set_up=flood) as peer:
        store = RedisStore(uri.format(port=peer.server_address[1]), DEADLINE)
        reason, took = failure(store, "GET", "okta-hook:o:x")
        assert reason == "STORE_UNREACHABLE" and took < DEADLINE  # not STORE_TIMEOUT at the deadline
        assert not store._idle
        store._resting_until = 0.0  # past its rest, the next call sets a connection up afresh
        assert failure(store, "GET", "okta-hook:o:x")[0] == "STORE_UNREACHABLE"
        assert [command[0] for command in peer.commands] == [word, word]


@pytest.mark.parametrize(
    ("uri", "set_up"),
    [
        ("redis://127.0.0.1:{port}/0", []),
        ("redis://127.0.0.1:{port}", []),
        ("redis://:hunter2@127.0.0.1:{port}/3", [[b"AUTH", b"hunter2"], [b"SELECT", b"3"]]),
        (
            "redis://hook:hunter2@127.0.0.1:{port}/0?client_name=eu-1",
            [[b"AUTH", b"hook", b"hunter2"], [b"CLIENT", b"SETNAME", b"eu-1"]],
        ),
    ],
)
def test_a_connection_is_set_up_with_what_its_uri_asks_and_nothing_else(uri: str, set_up: list[list[bytes]]) -> None:
    """No CLIENT SETINFO: each round trip of the set-up is paid by every thread of a new instance at once."""
    with redis_stand_in([b"$-1\r\n"]) as peer:
        store = RedisStore(uri.format(port=peer.server_address[1]), DEADLINE)
        assert store._execute("GET", "okta-hook:o:x") is None
        assert peer.commands == [*set_up, [b"GET", b"okta-hook:o:x"]]


@pytest.mark.e2e  # starts or uses a redis-server
def test_a_connection_set_up_reads_its_replies_capped_then_the_call_path_its_own(redis_server: RedisServer) -> None:
    """The cap is the set-up's alone: past it, the call path reads the real socket, whatever it takes."""
    store = RedisStore(redis_server.url, 1.0)
    value = "v" * 1000
    store._execute("SET", "okta-hook:o:cap", value)
    for _ in range(3 * SET_UP_MAX_BYTES // 1000):
        assert store._execute("GET", "okta-hook:o:cap") == value
    (kept,) = store._idle
    assert type(kept.connection._sock).__name__ == "socket"


def test_a_store_answering_numbers_python_cannot_read_fails_open_on_every_route(
    make_client: AppFactory, sandbox: SandboxState, capsys: pytest.CaptureFixture[str]
) -> None:
    """Python refuses to read an integer of more than 4,300 digits with a ValueError: such a reply to the
    guard's admit was taken for Twilio's fault (no code sent), and a receipt's claim answered 500."""
    from tests.helpers import message_receipt, post_receipt

    with redis_stand_in([b":" + b"9" * 5000 + b"\r\n"]) as peer:
        hooks, receipts = make_client(GUARD_STORAGE_URI=peer.url), make_client(GUARD_STORAGE_URI=peer.url)
        capsys.readouterr()
        sent = len(sandbox.requests)
        answer = post_hook(hooks, okta_request())
        assert answer.status_code == 200
        assert answer.get_json()["commands"][0]["value"][0]["status"] == "SUCCESSFUL"
        assert len(sandbox.requests) == sent + 1  # the code went out, unguarded
        asked = len(peer.commands)
        assert post_receipt(receipts, message_receipt()).status_code == 204
        assert len(peer.commands) > asked  # the receipt's claim asked the store, and got the number back
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    errors = [line for line in lines if line["severity"] == "ERROR"]
    assert errors and {line.get("guard_store_error") for line in errors} == {"STORE_UNREACHABLE"}
    assert [line["guard"] for line in lines if line.get("outcome") == "delivered"] == ["store_unavailable"]


def test_a_store_garbling_its_set_up_replies_fails_open_and_the_hook_still_delivers(
    make_client: AppFactory, sandbox: SandboxState, capsys: pytest.CaptureFixture[str]
) -> None:
    """Thousands of nested arrays in reply to the connection's set-up exhaust redis-py's recursive
    parser: the store is unusable, the code goes out, and the ERROR line says so (never a 500)."""
    nested = b"*1\r\n" * 5000 + b":1\r\n"
    with redis_stand_in([b"+OK\r\n"], set_up=nested) as peer:
        uri = peer.url.removesuffix("/0") + "/1"  # database 1: the set-up has a SELECT to answer
        store = RedisStore(uri, DEADLINE)
        assert failure(store, "GET", "k")[0] == "STORE_UNREACHABLE"
        client = make_client(GUARD_STORAGE_URI=uri)
        capsys.readouterr()
        answer = post_hook(client, okta_request())
    assert answer.status_code == 200
    assert answer.get_json()["commands"][0]["value"][0]["status"] == "SUCCESSFUL"
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    (error,) = [line for line in lines if line["severity"] == "ERROR"]
    assert error["message"].startswith(f"spend guard store unavailable (Redis at 127.0.0.1:{peer.server_address[1]}")
    assert error["guard_store_error"] == "STORE_UNREACHABLE"
    assert [line["guard"] for line in lines if line.get("outcome") == "delivered"] == ["store_unavailable"]


def test_tls_connections_to_the_store_share_one_context_built_at_start_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Loading a CA bundle costs tens of milliseconds: paid once, when the store is made at start-up,
    not within a call's deadline, nor by each connection (a burst opens several, and every failure
    opens a new one). Each attempt here is a new connection, refused by verification (the listener's
    certificate is self-signed)."""
    from telephony import store as store_module

    built = []
    build = store_module.tls_context

    def counted(connection: Any, system_authorities: bool = True) -> ssl.SSLContext:
        built.append(1)
        return build(connection, system_authorities)

    monkeypatch.setattr(store_module, "tls_context", counted)
    with tls_listener(tmp_path) as port:
        store = RedisStore(f"rediss://127.0.0.1:{port}/0", deadline_seconds=1.0)
        assert built == [1]
        for _ in range(6):
            store._resting_until = 0.0  # no rest between attempts: each one connects
            reason, _took = failure(store, "GET", "k")
            assert reason == "STORE_UNREACHABLE"
    assert built == [1]


def test_a_store_whose_tls_settings_cannot_load_fails_at_its_calls_not_at_start_up(tmp_path: Path) -> None:
    """A CA file that is not there: the function still starts, and each call fails open as the store's."""
    store = RedisStore(f"rediss://127.0.0.1:1/0?ssl_ca_certs={tmp_path / 'missing.pem'}", deadline_seconds=1.0)
    reason, _took = failure(store, "GET", "k")
    assert reason == "STORE_UNREACHABLE"


def test_a_command_larger_than_the_socket_buffer_goes_whole_or_fails_at_the_deadline() -> None:
    """The call path keeps its sockets non-blocking: what does not fit the buffer waits for the peer to
    read, within the deadline; the socket is non-blocking again after."""
    import socket
    import threading

    from telephony import store

    command = bytes(range(256)) * 16384  # 4 MiB: far more than a socket buffer holds
    ours, theirs = socket.socketpair()
    with ours, theirs:
        ours.settimeout(0.0)
        received = bytearray()

        def read_all() -> None:
            while len(received) < len(command):
                received.extend(theirs.recv(65536))

        reader = threading.Thread(target=read_all)
        reader.start()
        store._send(ours, command, time.monotonic() + 10)
        reader.join()
        assert bytes(received) == command
        assert ours.gettimeout() == 0.0

        deadline = 0.2
        started = time.monotonic()
        with pytest.raises(TimeoutError):  # nobody reads now
            store._send(ours, command, started + deadline)
        assert time.monotonic() - started < 5 * deadline
        assert ours.gettimeout() == 0.0


@pytest.mark.e2e  # a redis-server is a process
def test_a_command_the_store_ran_before_closing_the_connection_is_not_sent_again(redis_server: RedisServer) -> None:
    """A store that runs a command, then drops the connection (a failover, a proxy, CLIENT KILL): the
    call fails as the store's (fail open, with its ERROR line), and the command ran once. Sent again,
    a claim would come back 'seen before' and an admit would find its own retry record 'pending'."""
    redis_server.flush()
    with redis_proxy(redis_server.port) as proxy:
        store = RedisStore(proxy.url)
        assert store.claim("warm", 60) is True  # a kept connection
        proxy.cut_next = True
        with pytest.raises(StoreUnavailable) as failed:
            store.claim("fresh", 60)
        assert failed.value.reason == "STORE_UNREACHABLE"
        assert redis_server.client.exists("okta-hook:x:fresh") == 1

        store._resting_until = 0.0
        assert store.admit(ask("n0"), time.time()).kind == "admitted"  # a new connection, the script loaded
        proxy.cut_next = True
        with pytest.raises(StoreUnavailable):
            store.admit(ask("n1"), time.time())
        assert str(redis_server.client.get(f"okta-hook:o:{ask('n1').retry}")).startswith("pending ")


@pytest.mark.e2e  # a redis-server is a process
def test_a_reply_sent_twice_is_never_read_as_the_next_calls_verdict(redis_server: RedisServer) -> None:
    """A faulty proxy that sends a reply again, where the next call waits for its own. Read as that
    call's verdict, a 'replay' of another request's code would answer Okta SUCCESSFUL with nothing
    sent. Each script's reply names its call: the copy is no call's, the connection is dropped and
    the call fails open."""
    redis_server.flush()
    with redis_proxy(redis_server.port) as proxy:
        store = RedisStore(proxy.url)
        first = ask("n0")
        assert store.admit(first, time.time()).kind == "admitted"
        store.delivered(first.retry, "SM" + "0" * 32)
        assert store.admit(first, time.time()) == Verdict("replay", transaction_id="SM" + "0" * 32)  # Okta's retry
        proxy.repeat_last = True
        with pytest.raises(StoreUnavailable) as failed:
            store.admit(ask("n1"), time.time())  # another number: the retry's reply comes first
        assert failed.value.reason == "STORE_UNREACHABLE"
        assert not store._idle  # never read as a later call's reply either


@pytest.mark.e2e  # two redis-servers are processes
def test_after_a_failover_behind_the_stores_name_every_kept_connection_goes_to_the_new_primary(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """A failover that keeps the store's address (a proxy, a DNS name) demotes the old primary, whose
    kept connections stay open and answer READONLY. The first refusal fails open and retires every
    kept connection: after the rest, the guard decides again on the new primary, not once per
    connection still leading to the old one."""
    redis_server.flush()
    old = RedisServer(tmp_path)
    try:
        with redis_proxy(old.port) as proxy:
            store = RedisStore(proxy.url)
            flights = [store._start(b"*1\r\n$4\r\nPING\r\n") for _ in range(2)]  # two kept connections
            assert [store._finish(flight) for flight in flights] == ["PONG", "PONG"]
            proxy.upstream_port = redis_server.port  # new connections reach the new primary
            old.client.execute_command("REPLICAOF", "127.0.0.1", str(redis_server.port))
            with pytest.raises(StoreUnavailable) as refused:
                store.claim("during", 60)
            assert refused.value.reason == "STORE_REFUSED"
            store._resting_until = 0.0  # a second later
            assert [store.claim(f"after-{n}", 60) for n in range(3)] == [True, True, True]
            assert all(redis_server.client.exists(f"okta-hook:x:after-{n}") for n in range(3))
    finally:
        old.stop()


@pytest.mark.e2e  # a redis-server is a process
def test_a_store_that_closed_an_idle_connection_is_reached_on_a_new_one(redis_server: RedisServer) -> None:
    """A kept connection the store closed while it was idle (a timeout, a restart) carries nothing: the
    next call opens a new one, no fault, and its command runs once."""
    redis_server.flush()
    store = RedisStore(redis_server.url)
    assert store.claim("first", 60) is True
    redis_server.client.client_kill_filter(skipme=True)  # every connection but the test's own
    time.sleep(0.05)  # the close reaches this side
    assert store.claim("second", 60) is True
    assert store.claim("second", 60) is False


@pytest.mark.e2e  # a redis-server is a process
def test_a_tls_handshake_trickled_past_the_deadline_ends_at_the_deadline(redis_tls_server: RedisServer) -> None:
    """The store's deadline covers the TLS handshake and what follows it, whatever a read's own timeout:
    a store whose every byte trickles in fails at the call's deadline. (A handshake that ends just
    inside its own timeout, after the call's deadline, was followed by AUTH's reply read for as long as
    it trickled.)"""
    deadline = 0.15
    with trickling_relay(redis_tls_server.port, pause=0.005) as relay:
        url = redis_tls_server.url.replace(f":{redis_tls_server.port}/", f":{relay.server_address[1]}/")
        store = RedisStore(url, deadline_seconds=deadline)
        store._connection_options.update(socket_timeout=10 * deadline, socket_connect_timeout=10 * deadline)
        reason, took = failure(store, "GET", "k")
    assert reason == "STORE_TIMEOUT"
    assert took < 3 * deadline, took


def test_a_resolver_that_stalls_costs_the_store_its_deadline_no_more(monkeypatch: pytest.MonkeyPatch) -> None:
    """A store named by a host name: the system's resolver cannot be interrupted, and a stalled one
    (seconds, per attempt) would hold every connecting hook. The name is resolved within the call's
    deadline, or the call fails at it as the store's."""
    stalled_resolver(monkeypatch, "redis.stalled.test", 3)
    deadline = 0.15
    store = RedisStore("redis://redis.stalled.test:6379/0", deadline_seconds=deadline)
    reason, took = failure(store, "GET", "k")
    assert reason == "STORE_TIMEOUT"
    assert took < 3 * deadline, took


def test_a_name_whose_addresses_all_hang_costs_the_store_its_deadline_no_more(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each address of the store's name connects within what is left of the call's deadline, not a full
    connect timeout each: four addresses that never answer a connect cost the call its 150 ms."""
    import socket

    port = free_port()
    holes = []
    for last in range(2, 6):  # 127.0.0.2-5: a full accept queue drops new connects, which then hang
        hole = socket.socket()
        hole.bind((f"127.0.0.{last}", port))
        hole.listen(0)
        filler = socket.create_connection((f"127.0.0.{last}", port))
        holes += [hole, filler]
    real = socket.getaddrinfo

    def four_holes(host: Any, *rest: Any, **options: Any) -> Any:
        if host == "redis.holes.test":
            return [entry for last in range(2, 6) for entry in real(f"127.0.0.{last}", *rest, **options)]
        return real(host, *rest, **options)

    monkeypatch.setattr(socket, "getaddrinfo", four_holes)
    deadline = 0.15
    try:
        reason, took = failure(RedisStore(f"redis://redis.holes.test:{port}/0", deadline_seconds=deadline), "GET", "k")
    finally:
        for each in holes:
            each.close()
    assert reason == "STORE_TIMEOUT"
    assert took < 2 * deadline, took


@pytest.mark.e2e  # a redis-server is a process
def test_a_store_named_by_a_host_is_reached_at_whichever_of_its_addresses_answers(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A name with several addresses (IPv6 and IPv4, a failover pair): each is tried in turn, within
    the deadline, as redis-py does; the first that answers is used."""
    import socket

    real = socket.getaddrinfo

    def two_addresses(host: Any, *rest: Any, **options: Any) -> Any:
        if host == "redis.pair.test":  # 127.0.0.2 first, where nothing listens (Redis binds 127.0.0.1)
            return real("127.0.0.2", *rest, **options) + real("127.0.0.1", *rest, **options)
        return real(host, *rest, **options)

    monkeypatch.setattr(socket, "getaddrinfo", two_addresses)
    redis_server.flush()
    store = RedisStore(f"redis://redis.pair.test:{redis_server.port}/0")
    assert store.claim("reached", 60) is True
    assert redis_server.client.exists("okta-hook:x:reached") == 1


@pytest.mark.e2e  # a redis-server is a process
def test_after_an_idle_connection_fails_every_thread_connects_afresh(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A network that forgot idle connections without a word: the first call to find out waits the
    deadline and fails open. The other threads' kept connections, idle as long, are as dead: they are
    retired at their next call rather than each costing a hook the deadline (and the instance a rest)."""
    import threading

    from telephony import store as store_module

    monkeypatch.setattr(store_module, "SUSPECT_IDLE_SECONDS", 0.05)
    redis_server.flush()
    deadline = 0.15
    with redis_proxy(redis_server.port) as proxy:
        store = RedisStore(proxy.url, deadline_seconds=deadline)
        results: dict[int, list[Any]] = {0: [], 1: [], 2: []}
        warmed, silenced, rested = threading.Barrier(4), threading.Event(), threading.Event()

        def thread(index: int) -> None:
            results[index].append(store.claim(f"warm {index}", 60))  # each thread's kept connection
            warmed.wait()
            silenced.wait()
            if index == 0:
                results[0].append(failure(store, "GET", "k"))
            rested.wait()
            started = time.monotonic()
            try:
                outcome: Any = store.claim(f"after {index}", 60)
            except StoreUnavailable as error:
                outcome = error.reason
            results[index].append((outcome, time.monotonic() - started))

        threads = [threading.Thread(target=thread, args=(index,)) for index in range(3)]
        for each in threads:
            each.start()
        warmed.wait()
        time.sleep(0.1)  # every connection idle past SUSPECT_IDLE_SECONDS
        proxy.silenced.set()
        silenced.set()
        while len(results[0]) < 2:
            time.sleep(0.01)
        store._resting_until = 0.0  # the second's rest, over
        rested.set()
        for each in threads:
            each.join()
    assert results[0][1][0] == "STORE_TIMEOUT"
    for index in range(3):
        outcome, took = results[index][-1]
        assert outcome is True, (index, outcome)
        assert took < deadline, (index, took)  # no wait for a dead connection


@pytest.mark.e2e  # a redis-server is a process
def test_a_busy_connection_that_times_out_retires_no_other(redis_server: RedisServer) -> None:
    """A store slow for a moment (a fork, a starved machine) times out a connection in use: that one is
    replaced, the others are kept. Retiring them all would add a herd of new connections (TLS
    handshakes) to a store or a machine already short of time."""
    redis_server.flush()  # the session's Redis: an earlier test on this worker may have claimed 'warm'
    store = RedisStore(redis_server.url, deadline_seconds=0.15)
    assert store.claim("warm", 60) is True
    with redis_server.paused():
        reason, _took = failure(store, "GET", "k")
    assert reason == "STORE_TIMEOUT"
    assert store._faults_seen == 0


@pytest.mark.parametrize("answer", [b"+OK\r\n", b":1\r\n"])
def test_a_record_lookup_takes_only_what_get_answers(answer: bytes) -> None:
    """GET answers a value or nothing. A word or a count in its place is a store not to trust: not a
    transaction id for Okta's retry ('OK'), nor 'no record' (a new attempt)."""
    with redis_stand_in([answer]) as peer:
        store = RedisStore(peer.url)
        with pytest.raises(StoreUnavailable) as failed:
            store.lookup("retry-1")
    assert failed.value.reason == "STORE_UNREACHABLE"


@pytest.mark.e2e  # a redis-server is a process
def test_the_stores_connections_are_kept_alive_by_tcp(redis_server: RedisServer) -> None:
    """Idle connections probed by the kernel after a minute: middleboxes that forget idle flows keep
    them, and a connection they dropped is found dead without a hook's deadline."""
    import socket

    store = RedisStore(redis_server.url)
    store.claim("probe", 60)
    (kept,) = store._idle
    sock = kept.connection._sock
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 60


# Replies shaped like Redis's (a type byte, a length or count, CRLF, more), and arbitrary bytes.
RESP_LIKE = st.builds(
    lambda kind, line, rest: kind + line + b"\r\n" + rest,
    st.sampled_from([b"$", b"+", b"-", b":", b"*", b""]),
    st.from_regex(rb"\A-{0,2}[0-9]{0,3}\Z") | st.binary(max_size=8),
    st.binary(max_size=24),
)


@settings(max_examples=400, deadline=None)
@given(answer=RESP_LIKE | st.binary(max_size=64))
def test_whatever_the_store_sends_a_call_returns_a_reply_or_fails_as_the_store(answer: bytes) -> None:
    """Any bytes at all in place of a reply: a value of ours, or one of the failures the call path turns
    into StoreUnavailable. Never another exception (the hook would answer 500)."""
    import socket

    from telephony import store

    ours, theirs = socket.socketpair()
    with ours, theirs:
        theirs.sendall(answer)
        theirs.shutdown(socket.SHUT_WR)
        try:
            store._send(ours, b"*1\r\n$4\r\nPING\r\n", time.monotonic() + 1)
            value = store._read(ours, time.monotonic() + 1)
        except (store._Garbled, store._StoreRefused, ConnectionError):
            return
        assert value is None or isinstance(value, str | int)


@settings(max_examples=150, deadline=None)
@given(
    line=st.from_regex(r"\A(admitted|refused|replay|pending|unsettled)( [0-9a-z-]{0,6}){0,5}\Z") | st.text(max_size=40)
)
def test_whatever_line_the_admit_script_returns_is_a_verdict_or_refused_as_not_ours(line: str) -> None:
    """A line that is not one the admit script writes (a store not ours, a script of another version) is
    refused by the parser as such (ValueError: the store then fails open), never as a bug of ours."""
    from telephony.rates import parse_rates
    from telephony.store import Ask, Verdict, _verdict

    rates = parse_rates("3/hour")
    ask = Ask("n", "+3361234", "FR", "r", 30, True, False, 3, 86400, rates, rates, rates, rates, rates)
    try:
        verdict = _verdict(ask, "member", line)
    except ValueError:
        return
    assert isinstance(verdict, Verdict) and verdict.kind in ("admitted", "refused", "replay", "pending", "unsettled")


@pytest.mark.parametrize(
    ("line", "verdict"),
    [
        ("admitted 0 1 1 1", ("admitted", False, True, True, True)),
        ("admitted 1 0 0 0", ("admitted", True, False, False, False)),
        ("admitted 0 1 0 1", ("admitted", False, True, False, True)),
        ("admitted 0 1 1", None),
        ("admitted 0 1 1 1 ", None),
        ("admitted 0 1 1 2", None),
        ("admitted 01 1 1", None),
        ("admitted 0  1 1", None),
        ("admitted", None),
        ("refused 1 range 1", ("refused", True, False, False, False)),
        ("refused 0 range 2", None),  # the range has one limit
        ("refused 0 planet 1", None),
        ("refused 0 range", None),
    ],
)
def test_the_admit_scripts_lines_are_read_exactly(line: str, verdict: tuple[object, ...] | None) -> None:
    """The lines the admit script writes, and near misses of them: each flag is '0' or '1', in its place."""
    from telephony.rates import parse_rates
    from telephony.store import Ask, _verdict

    rates = parse_rates("3/hour")
    ask = Ask("n", "+3361234", "FR", "r", 30, True, False, 3, 86400, rates, rates, rates, rates, rates)
    if verdict is None:
        with pytest.raises(ValueError):
            _verdict(ask, "member", line)
        return
    read = _verdict(ask, "member", line)
    assert (read.kind, read.known, read.added_range, read.added_country, read.added_all) == verdict
    assert read.member == ("member" if read.kind == "admitted" else "")
    assert read.rate == (rates[0] if read.kind == "refused" else None)


def _first_calls_at_once(
    store: RedisStore, callers: int, failures: list[StoreUnavailable] | None = None
) -> list[object]:
    """`callers` threads' first calls, released together (a new instance's threads under a burst):
    each one's reply, or the label it failed with (the failure itself added to `failures`)."""
    import threading

    released = threading.Barrier(callers)
    outcomes: list[object] = []

    def call() -> None:
        released.wait()
        try:
            outcomes.append(store._execute("GET", "okta-hook:o:burst"))
        except StoreUnavailable as error:
            outcomes.append(error.reason)
            if failures is not None:
                failures.append(error)

    threads = [threading.Thread(target=call) for _ in range(callers)]
    for each in threads:
        each.start()
    for each in threads:
        each.join()
    return outcomes


@pytest.mark.e2e  # starts or uses a redis-server
@pytest.mark.parametrize("over", ["plain", "TLS"])
def test_a_burst_of_first_calls_opens_connections_two_at_a_time(
    over: str, redis_server: RedisServer, redis_tls_server: RedisServer
) -> None:
    """80 threads' first calls at once: a call holds a connection for one round trip only, so callers
    wait for one given back rather than all open their own at once (80 TLS handshakes at once made
    most of them miss the store's deadline). The deadline here is generous: what is counted is how many
    connections were being opened at any one time."""
    import threading

    server = redis_tls_server if over == "TLS" else redis_server
    server.flush()
    store = RedisStore(server.url, deadline_seconds=2.0)
    connect, lock, opening, most = store._connect, threading.Lock(), [0], [0]

    def counted(connection: Any, until: float) -> None:
        with lock:
            opening[0] += 1
            most[0] = max(most[0], opening[0])
        try:
            connect(connection, until)
        finally:
            with lock:
                opening[0] -= 1

    store._connect = counted  # type: ignore[method-assign]
    outcomes = _first_calls_at_once(store, 80)
    assert outcomes == [None] * 80
    assert 1 <= most[0] <= OPENING_AT_ONCE


def test_a_caller_finding_every_connection_busy_waits_for_one_no_longer_than_its_deadline() -> None:
    """Connections that are being opened (a store that never completes its set-up) and none free:
    the other callers wait for one within their own deadline, then fail open, without opening more."""
    with redis_stand_in([b"+OK\r\n"], pause=0.0, set_up=b"") as peer:  # SELECT is never answered
        store = RedisStore(peer.url.removesuffix("/0") + "/1", DEADLINE)
        started = time.monotonic()
        outcomes = _first_calls_at_once(store, 6)
        took = time.monotonic() - started
    # The two opening time out; the others, waiting, time out too or are sent away by the rest that follows.
    assert outcomes.count("STORE_TIMEOUT") >= OPENING_AT_ONCE and set(outcomes) <= {"STORE_TIMEOUT", "STORE_RESTING"}
    assert took < DEADLINE * 3
    assert [command[0] for command in peer.commands] == [b"SELECT"] * OPENING_AT_ONCE


def test_a_store_fault_sends_the_callers_waiting_for_a_connection_away_at_once() -> None:
    """Once a call has found the store at fault, the store rests: callers waiting for a connection fail
    open then, as every call does while it rests, rather than each wait out its deadline."""
    with redis_stand_in([b"+OK\r\n"], set_up=b"-ERR refused\r\n") as peer:  # AUTH is refused at once
        store = RedisStore(peer.url.replace("redis://", "redis://:hunter2@"), 5.0)
        started = time.monotonic()
        outcomes = _first_calls_at_once(store, 6)
        took = time.monotonic() - started
    assert "STORE_REFUSED" in outcomes and set(outcomes) <= {"STORE_REFUSED", "STORE_RESTING"}
    assert took < 5.0 / 4  # nobody waited out a deadline
    assert [command[0] for command in peer.commands].count(b"AUTH") <= OPENING_AT_ONCE  # nor tried once it rested


@pytest.mark.e2e  # starts or uses a redis-server
def test_a_forked_child_never_touches_the_parents_connections(redis_server: RedisServer) -> None:
    """gunicorn forks its workers: a connection opened before the fork is the parent's alone. The child
    opens its own, and closing what it inherited does not cut the parent's."""
    import os

    store = RedisStore(redis_server.url, deadline_seconds=1.0)
    store._execute("SET", "okta-hook:o:fork", "parent")
    (kept,) = store._idle
    parents = kept.connection._sock.fileno()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through its exit status
        status = 1
        try:
            inherited_gone = not store._idle
            ok = store._execute("GET", "okta-hook:o:fork") == "parent"
            del kept
            import gc

            gc.collect()
            status = 0 if inherited_gone and ok else 2
        finally:
            os._exit(status)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert store._execute("GET", "okta-hook:o:fork") == "parent"
    (again,) = store._idle
    assert again is kept and again.connection._sock.fileno() == parents  # the same connection, still in step


@pytest.mark.e2e  # a forked process
def test_a_forked_child_tags_its_calls_as_an_instance_of_its_own() -> None:
    """A worker forked after the store module was loaded counts on from its parent's sequence: its
    tags (and its windows' members) carry an id of its own, or its replies could pass for the parent's."""
    import os

    from telephony.store import _tag

    _tag()  # the module is loaded in this process (gunicorn's master)
    reading, writing = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through the pipe
        try:
            os.write(writing, _tag().encode())
        finally:
            os._exit(0)
    os.close(writing)
    os.waitpid(child, 0)
    with os.fdopen(reading) as pipe:
        childs = pipe.read()
    ours = _tag()
    assert childs.rpartition(":")[0] != ours.rpartition(":")[0], (childs, ours)


def test_calls_that_fail_together_report_the_store_once() -> None:
    """A store that stops answering fails every call that was with it: one ERROR line says so (the
    first failure starts the store's rest, and the others are part of it), not one per caller."""
    failures: list[StoreUnavailable] = []
    with redis_stand_in([]) as peer:  # never answers a command
        _first_calls_at_once(RedisStore(peer.url, DEADLINE), 20, failures)
    assert len(failures) == 20
    assert {error.reason for error in failures} <= {"STORE_TIMEOUT", "STORE_RESTING"}
    assert [error.fresh for error in failures].count(True) == 1


def test_a_caller_that_waited_past_its_deadline_sends_nothing() -> None:
    """A connection that comes free only after a waiting caller's deadline is not used by it: the
    command would reach the store late, and an admit would take room for a code already sent unguarded."""
    import threading

    with redis_stand_in([b"$-1\r\n"]) as peer:
        store = RedisStore(peer.url, DEADLINE)
        assert store._execute("GET", "okta-hook:o:warm") is None
        slot = store._free_slot()  # the one connection, held by another call
        assert slot is not None
        store._opening = OPENING_AT_ONCE  # and as many being opened as may be
        peer.commands.clear()
        outcome: list[StoreUnavailable] = []

        def late() -> None:
            with pytest.raises(StoreUnavailable) as raised:
                store._execute("GET", "okta-hook:o:late")
            outcome.append(raised.value)

        caller = threading.Thread(target=late)
        caller.start()
        time.sleep(DEADLINE * 0.5)
        with store._free:  # the pool is busy past the caller's deadline; the connection comes back meanwhile
            store._idle.append(slot)
            time.sleep(DEADLINE)
        caller.join()
        time.sleep(0.05)
    assert outcome[0].reason == "STORE_TIMEOUT"
    assert peer.commands == []  # nothing sent after the deadline
    assert list(store._idle) == [slot]  # and the connection, unused, is the next caller's


@pytest.mark.e2e  # starts or uses a redis-server
def test_a_reply_in_flight_at_a_fork_is_read_by_the_parent_alone(redis_server: RedisServer) -> None:
    """A command sent before a fork, its reply unread: the child must not read it (the parent would
    wait for it in vain, and the child's next caller could be handed the parent's connection)."""
    import os

    from telephony.store import _pack

    store = RedisStore(redis_server.url, deadline_seconds=1.0)
    store._execute("SET", "okta-hook:o:flight", "parent")
    flight = store._start(_pack(("GET", "okta-hook:o:flight")))
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through its exit status
        status = 1
        try:
            try:
                store._finish(flight)
                status = 3  # the child read the parent's reply
            except StoreUnavailable as error:
                status = 0 if error.reason == "STORE_UNREACHABLE" and not store._idle else 2
            del flight
            import gc

            gc.collect()
        finally:
            os._exit(status)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert store._finish(flight) == "parent"
    assert store._execute("GET", "okta-hook:o:flight") == "parent"
    assert len(store._idle) == 1  # the same connection, in step


def test_a_kept_tls_connection_with_decrypted_bytes_waiting_is_out_of_step() -> None:
    """What TLS has decrypted and not yet handed over is invisible to a poll of the socket: a store
    that sent more than a reply in one TLS record leaves it there, and the connection is not kept."""
    import socket

    from telephony.store import _closed_or_out_of_step

    class TlsLike:
        def __init__(self, sock: socket.socket, waiting: int) -> None:
            self._sock, self._waiting = sock, waiting

        def fileno(self) -> int:
            return self._sock.fileno()

        def pending(self) -> int:
            return self._waiting

    ours, theirs = socket.socketpair()
    with ours, theirs:
        assert _closed_or_out_of_step(TlsLike(ours, 0)) is False  # type: ignore[arg-type]
        assert _closed_or_out_of_step(TlsLike(ours, 5)) is True  # type: ignore[arg-type]
        assert _closed_or_out_of_step(ours) is False
        theirs.sendall(b"+OK\r\n")
        assert _closed_or_out_of_step(ours) is True
