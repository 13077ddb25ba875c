"""The real twilio library, through our transport, over HTTP to the sandbox: what goes on the wire."""

from __future__ import annotations

import base64
import contextlib
import json
import math
import os
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client

from telephony.answers import NOT_DELIVERED, Refused
from telephony.delivery import TwilioDelivery, build_client
from telephony.settings import load_settings
from telephony.twilio_errors import TWILIO_ERRORS
from telephony.twilio_http import (
    RATE_LIMIT_PAUSE_SECONDS,
    TwilioTransport,
    TwilioUnavailable,
    rate_limit_pause,
    retry_after_seconds,
)
from tests.helpers import (
    FIXTURES,
    FROM_NUMBER,
    OTP,
    PHONE,
    VERIFY_SERVICE_SID,
    AppFactory,
    okta_request,
    post_hook,
    profile,
)
from tests.standins import StandIn, http_answer, stalled_resolver, stand_in, tls_listener
from tools.sandbox.twilio_sandbox import DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN, SandboxServer, SandboxState


def sandbox_client(server: SandboxServer, timeout: float = 2.0, pool: int = 8) -> Client:
    transport = TwilioTransport(timeout_seconds=timeout, pool_size=pool, base_url=server.base_url)
    return Client(DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN, http_client=transport)


def delivery_for(server: SandboxServer | StandIn, **env: str) -> TwilioDelivery:
    settings = load_settings(
        {
            "TWILIO_ACCOUNT_SID": DEFAULT_ACCOUNT_SID,
            "TWILIO_AUTH_TOKEN": DEFAULT_AUTH_TOKEN,
            "TWILIO_FROM_NUMBER": FROM_NUMBER,
            "TWILIO_API_BASE_URL": server.base_url,
            **env,
        }
    )
    return TwilioDelivery(settings, build_client(settings))


def test_rebase_sends_every_twilio_host_to_the_base_url() -> None:
    transport = TwilioTransport(timeout_seconds=1, pool_size=1, base_url="http://127.0.0.1:9/")
    assert transport.rebase("https://api.twilio.com/2010-04-01/Accounts/AC1/Messages.json") == (
        "http://127.0.0.1:9/2010-04-01/Accounts/AC1/Messages.json"
    )
    assert transport.rebase("https://verify.twilio.com/v2/Services/VA1/Verifications") == (
        "http://127.0.0.1:9/v2/Services/VA1/Verifications"
    )
    assert transport.rebase("https://api.dublin.ie1.twilio.com/x") == "http://127.0.0.1:9/x"
    assert transport.rebase("https://example.com/twilio.com/x") == "https://example.com/twilio.com/x"


def test_without_a_base_url_requests_go_to_twilio_unchanged() -> None:
    transport = TwilioTransport(timeout_seconds=1, pool_size=1)
    assert transport.rebase("https://api.twilio.com/a") == "https://api.twilio.com/a"


def test_message_create_posts_twilios_form_fields(sandbox_server: SandboxServer, sandbox: SandboxState) -> None:
    message = sandbox_client(sandbox_server).messages.create(
        to=PHONE, from_=FROM_NUMBER, body="Your code is 1", validity_period=120
    )
    request = sandbox.requests[-1]
    assert request["path"] == f"/2010-04-01/Accounts/{DEFAULT_ACCOUNT_SID}/Messages.json"
    assert request["form"] == {"To": PHONE, "From": FROM_NUMBER, "Body": "Your code is 1", "ValidityPeriod": "120"}
    assert request["user"] == DEFAULT_ACCOUNT_SID
    assert message.sid.startswith("SM") and message.status == "queued"


def test_sandbox_answers_match_twilios_published_shapes(sandbox_server: SandboxServer, sandbox: SandboxState) -> None:
    client = sandbox_client(sandbox_server)
    client.messages.create(to=PHONE, from_=FROM_NUMBER, body="x")
    client.calls.create(to=PHONE, from_=FROM_NUMBER, twiml="<Response/>")
    published_message = json.loads((FIXTURES / "twilio_message_created.json").read_text())
    published_call = json.loads((FIXTURES / "twilio_call_created.json").read_text())
    assert set(published_message) <= set(sandbox.requests[-2]["response"])
    assert set(published_call) <= set(sandbox.requests[-1]["response"])


def test_sms_delivery_sends_exactly_these_fields(sandbox_server: SandboxServer, sandbox: SandboxState) -> None:
    expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 600))
    delivery_for(sandbox_server).deliver(profile(otpExpires=expires))
    form = sandbox.requests[-1]["form"]
    assert set(form) == {"To", "From", "Body", "ValidityPeriod"}
    assert (form["To"], form["From"], form["Body"]) == (PHONE, FROM_NUMBER, f"(HOOK)Your code is {OTP}")
    assert 595 <= int(form["ValidityPeriod"]) <= 601


def test_validity_period_is_capped_at_twilios_maximum(sandbox_server: SandboxServer, sandbox: SandboxState) -> None:
    delivery_for(sandbox_server).deliver(profile())  # expires in 2099
    assert sandbox.requests[-1]["form"]["ValidityPeriod"] == "36000"


def test_no_validity_period_when_okta_gives_no_expiry(sandbox_server: SandboxServer, sandbox: SandboxState) -> None:
    delivery_for(sandbox_server).deliver(profile(otpExpires=None))
    assert "ValidityPeriod" not in sandbox.requests[-1]["form"]


def test_voice_delivery_sends_twiml_with_spaced_digits(sandbox_server: SandboxServer, sandbox: SandboxState) -> None:
    delivery_for(sandbox_server).deliver(profile(deliveryChannel="voice", msgTemplate=None))
    request = sandbox.requests[-1]
    assert request["path"].endswith("/Calls.json")
    assert set(request["form"]) == {"To", "From", "Twiml", "TimeLimit"}
    twiml = request["form"]["Twiml"]
    assert twiml.startswith("<Response>") and twiml.count("<Say") == 2
    assert "Your verification code is 4, 8, 2, 9, 1, 3." in twiml


def test_verify_delivers_oktas_code_as_a_custom_code(sandbox_server: SandboxServer, sandbox: SandboxState) -> None:
    service = "VA" + "3" * 32
    answer = delivery_for(sandbox_server, TWILIO_VERIFY_SERVICE_SID=service).deliver(profile(locale="es-ES"))
    request = sandbox.requests[-1]
    assert request["path"] == f"/v2/Services/{service}/Verifications"
    assert request["form"] == {"To": PHONE, "Channel": "sms", "CustomCode": OTP, "Locale": "es"}
    assert answer.json().count('"transactionId":"VE') == 1


VERIFICATION = json.dumps({"sid": "VE" + "ab" * 16, "status": "pending", "channel": "sms"}).encode()


def verify_in_turn(twilio: StandIn, *answers: bytes) -> list[bytes]:
    """`twilio` answers these in turn; returns each request's form body, as it came."""
    bodies: list[bytes] = []

    def pieces() -> list[bytes]:
        bodies.append(twilio.last_request.partition(b"\r\n\r\n")[2])
        return [answers[min(len(bodies), len(answers)) - 1]]

    twilio.answer = pieces
    return bodies


@pytest.mark.parametrize(
    ("channel", "status", "code"),
    [("SMS", 404, 20404), ("CALL", 400, 60331)],  # Verify's 404 for a locale it lacks; 60331, none to speak it
)
def test_a_locale_verify_refuses_is_asked_again_without_it(channel: str, status: int, code: int) -> None:
    """Twilio's advice for a locale Verify does not support: ask again without it. The refusal sent
    nothing, so the second ask cannot be a second code; without it Okta fell back for a language."""
    refusal = http_answer(status, json.dumps({"code": code, "message": "m", "status": status}).encode())
    with stand_in(b"") as twilio:
        bodies = verify_in_turn(twilio, refusal, http_answer(201, VERIFICATION))
        answer = delivery_for(twilio, TWILIO_VERIFY_SERVICE_SID=VERIFY_SERVICE_SID).deliver(
            profile(deliveryChannel=channel, locale="hr-HR")
        )
    assert (answer.log_fields["twilio_sid"], answer.log_fields["twilio_attempts"]) == ("VE" + "ab" * 16, 2)
    assert ["Locale=hr" in body.decode() for body in bodies] == [True, False]


@pytest.mark.parametrize(
    ("locale", "status", "code"),
    [
        (None, 404, 20404),  # no locale sent
        ("hr-HR", 400, 60200),  # another refusal
        ("hr-HR", 503, 20404),  # a 5xx
        ("hr-HR", 500, 60331),  # a 5xx whose body names the locale: Verify may have sent the first code
        ("hr-HR", 503, 404),
    ],
)
def test_only_a_locale_refusal_is_asked_again(locale: str | None, status: int, code: int) -> None:
    refusal = http_answer(status, json.dumps({"code": code, "message": "m", "status": status}).encode())
    with stand_in(b"") as twilio:
        bodies = verify_in_turn(twilio, refusal, http_answer(201, VERIFICATION))
        with pytest.raises(Refused):
            delivery_for(twilio, TWILIO_VERIFY_SERVICE_SID=VERIFY_SERVICE_SID).deliver(profile(locale=locale))
    assert len(bodies) == 1


def test_a_locale_refused_and_asked_again_shares_one_deadline() -> None:
    """TWILIO_TIMEOUT_SECONDS is one deadline for the code's calls to Twilio: Verify asked again without
    the locale gets what the first ask left, not a deadline of its own."""
    timeout = 0.6
    refusal = http_answer(404, json.dumps({"code": 20404, "message": "m", "status": 404}).encode())
    asked: list[float] = []

    def pieces() -> list[bytes]:
        asked.append(time.monotonic())
        if len(asked) == 1:
            time.sleep(timeout / 2)  # the refusal takes half the deadline
            return [refusal]
        time.sleep(3 * timeout)  # the second ask is never answered in time
        return []

    with stand_in(pieces) as twilio:
        delivery = delivery_for(
            twilio, TWILIO_VERIFY_SERVICE_SID=VERIFY_SERVICE_SID, TWILIO_TIMEOUT_SECONDS=str(timeout)
        )
        started = time.monotonic()
        with pytest.raises(Refused) as refused:
            delivery.deliver(profile(locale="hr-HR"))
        elapsed = time.monotonic() - started
    assert len(asked) == 2
    assert json.loads(refused.value.answer.json())["error"]["errorCauses"][0]["reason"] == "TWILIO_TIMEOUT"
    assert timeout <= elapsed < 1.4 * timeout  # a deadline of its own would end at 1.5 x


def test_verify_calls_for_the_voice_channel(sandbox_server: SandboxServer, sandbox: SandboxState) -> None:
    service = "VA" + "3" * 32
    delivery_for(sandbox_server, TWILIO_VERIFY_SERVICE_SID=service).deliver(
        profile(deliveryChannel="CALL", locale=None)
    )
    assert sandbox.requests[-1]["form"] == {"To": PHONE, "Channel": "call", "CustomCode": OTP}


def test_api_key_authenticates_instead_of_the_auth_token(sandbox_server: SandboxServer, sandbox: SandboxState) -> None:
    sandbox.api_key, sandbox.api_secret = "SK" + "4" * 32, "api-key-secret"
    delivery = delivery_for(
        sandbox_server, TWILIO_AUTH_TOKEN="", TWILIO_API_KEY=sandbox.api_key, TWILIO_API_SECRET="api-key-secret"
    )
    answer = delivery.deliver(profile())
    assert answer.outcome == "delivered"
    assert sandbox.requests[-1]["user"] == sandbox.api_key
    assert sandbox.requests[-1]["path"].startswith(f"/2010-04-01/Accounts/{DEFAULT_ACCOUNT_SID}/")


def test_the_sandbox_checks_basic_auth(sandbox_server: SandboxServer, sandbox: SandboxState) -> None:
    transport = TwilioTransport(timeout_seconds=2, pool_size=1, base_url=sandbox_server.base_url)
    client = Client(DEFAULT_ACCOUNT_SID, "wrong-token", http_client=transport)
    with pytest.raises(TwilioRestException) as caught:
        client.messages.create(to=PHONE, from_=FROM_NUMBER, body="x")
    assert (caught.value.status, caught.value.code) == (401, 20003)
    assert sandbox.requests == []


def test_requests_reuse_one_connection(sandbox_server: SandboxServer, sandbox: SandboxState) -> None:
    client = sandbox_client(sandbox_server)
    before = sandbox.connections
    for _ in range(20):
        client.messages.create(to=PHONE, from_=FROM_NUMBER, body="x")
    assert sandbox.connections - before == 1


def test_the_pool_keeps_as_many_connections_as_the_threads_it_serves(
    sandbox_server: SandboxServer, sandbox: SandboxState
) -> None:
    """12 threads at once open 12 connections; a pool of 12 keeps them all, so the next 12 calls open
    none (urllib3's default of 10 would drop two, and every burst would pay two TLS handshakes)."""
    from concurrent.futures import ThreadPoolExecutor

    client = sandbox_client(sandbox_server, pool=12)
    sandbox.latency_seconds = 0.2  # long enough that the 12 calls overlap
    with ThreadPoolExecutor(12) as threads:
        list(threads.map(lambda _: client.messages.create(to=PHONE, from_=FROM_NUMBER, body="x"), range(12)))
        opened = sandbox.connections
        list(threads.map(lambda _: client.messages.create(to=PHONE, from_=FROM_NUMBER, body="x"), range(12)))
    assert sandbox.connections == opened


@pytest.fixture
def https_listener(tmp_path: Path) -> Iterator[str]:
    with tls_listener(tmp_path) as port:
        yield f"https://127.0.0.1:{port}"


def test_https_connections_share_one_tls_context(https_listener: str) -> None:
    """Loading a CA bundle costs tens of milliseconds: paid once, not by every new connection. Each
    attempt here is a new connection (the listener's self-signed certificate is refused): the first
    builds the context, the rest are handshakes only."""
    import statistics

    transport = TwilioTransport(timeout_seconds=1, pool_size=2, base_url=https_listener)
    times = []
    for _ in range(6):
        started = time.perf_counter()
        with pytest.raises(TwilioUnavailable):
            transport.request("POST", "https://api.twilio.com/2010-04-01/x", data={"a": "b"})
        times.append(time.perf_counter() - started)
    assert statistics.median(times[1:]) < times[0] / 3, times


def test_real_twilio_gets_its_tls_context_before_the_first_hook() -> None:
    transport = TwilioTransport(timeout_seconds=1, pool_size=2)
    assert "ssl_context" in transport.pool.manager.connection_pool_kw


def test_concurrent_requests_share_the_pool_without_reconnecting(
    sandbox_server: SandboxServer, sandbox: SandboxState
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    client = sandbox_client(sandbox_server, pool=8)
    sandbox.latency_seconds = 0.05
    before = sandbox.connections
    with ThreadPoolExecutor(8) as pool:
        for _ in range(3):
            list(pool.map(lambda _: client.messages.create(to=PHONE, from_=FROM_NUMBER, body="x"), range(8)))
    assert sandbox.connections - before <= 8


def test_a_hung_twilio_times_out_at_the_deadline(hanging_twilio: str) -> None:
    transport = TwilioTransport(timeout_seconds=0.5, pool_size=1, base_url=hanging_twilio)
    client = Client(DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN, http_client=transport)
    started = time.monotonic()
    with pytest.raises(TwilioUnavailable) as caught:
        client.messages.create(to=PHONE, from_=FROM_NUMBER, body="x")
    assert caught.value.timed_out
    assert time.monotonic() - started < 1.0


def test_a_resolver_that_stalls_costs_the_call_its_deadline_no_more(monkeypatch: pytest.MonkeyPatch) -> None:
    """Twilio named by its host, and the system's resolver stalled (seconds per attempt, and it cannot
    be interrupted): the name is resolved within the call's deadline, or the call times out at it,
    and is not tried again (the deadline has passed)."""
    stalled_resolver(monkeypatch, "twilio.stalled.test", 3)
    transport = TwilioTransport(timeout_seconds=0.3, pool_size=1, base_url="http://twilio.stalled.test:80")
    client = Client(DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN, http_client=transport)
    started = time.monotonic()
    with pytest.raises(TwilioUnavailable) as caught:
        client.messages.create(to=PHONE, from_=FROM_NUMBER, body="x")
    assert time.monotonic() - started < 3 * 0.3
    assert (caught.value.timed_out, caught.value.attempts) == (True, 1)


def test_calls_waiting_on_a_stalled_name_share_one_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    """A burst of new connections to a name the resolver stalls on: one resolution, which every call
    waits on for its own time left, not one left-behind thread per call (threads that pile up for as
    long as the resolver stalls)."""
    from concurrent.futures import ThreadPoolExecutor

    asked = stalled_resolver(monkeypatch, "twilio.burst.test", 2)
    transport = TwilioTransport(timeout_seconds=0.3, pool_size=12, base_url="http://twilio.burst.test:80")
    client = Client(DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN, http_client=transport)

    def send(_: int) -> tuple[bool, int]:
        try:
            client.messages.create(to=PHONE, from_=FROM_NUMBER, body="x")
        except TwilioUnavailable as failure:
            return failure.timed_out, failure.attempts
        raise AssertionError("a stalled name answered")

    with ThreadPoolExecutor(12) as pool:
        outcomes = list(pool.map(send, range(12)))
    assert outcomes == [(True, 1)] * 12
    assert asked == ["twilio.burst.test"]


def test_no_thread_to_resolve_with_is_a_connection_failure_not_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    """A process out of threads (memory, limits) cannot resolve a name on a thread of its own: the call
    fails as a connection that could not be made (Okta falls back), never with an error of ours."""
    start = threading.Thread.start

    def refuse_resolvers(thread: threading.Thread) -> None:
        if thread.name == "resolver":
            raise RuntimeError("can't start new thread")
        start(thread)

    monkeypatch.setattr(threading.Thread, "start", refuse_resolvers)
    transport = TwilioTransport(timeout_seconds=0.5, pool_size=1, base_url="http://twilio.nothreads.test:80")
    client = Client(DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN, http_client=transport)
    with pytest.raises(TwilioUnavailable) as caught:
        client.messages.create(to=PHONE, from_=FROM_NUMBER, body="x")
    assert not caught.value.timed_out


def test_a_proxy_whose_name_stalls_is_a_timeout_every_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Through a proxy (HTTPS_PROXY, read at start-up), urllib3 wraps whatever failed on the way to it,
    a timeout too, in ProxyError: a call failing at its deadline is still a timeout (never taken for a
    connection refused, which may be retried)."""
    stalled_resolver(monkeypatch, "proxy.stalled.test", 2)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.stalled.test:3128")
    transport = TwilioTransport(timeout_seconds=0.2, pool_size=1)
    client = Client(DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN, http_client=transport)
    for _ in range(3):  # the watchdog and the failure race: each way round is checked
        with pytest.raises(TwilioUnavailable) as caught:
            client.messages.create(to=PHONE, from_=FROM_NUMBER, body="x")
        assert (caught.value.timed_out, caught.value.attempts) == (True, 1)


@pytest.mark.e2e  # forks a process
@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX's")
def test_a_forked_child_resolves_and_keeps_deadlines_afresh(monkeypatch: pytest.MonkeyPatch) -> None:
    """A server that forks its workers after start-up: a resolution the parent had in flight, and its
    watchdog thread, do not survive into the child. The child must not take the parent's unfinished
    lookup for an empty answer, and its calls must still end at their deadlines."""
    import warnings

    from telephony import deadlines

    stalled_resolver(monkeypatch, "localhost.fork.test", 0.5, answer="127.0.0.1")
    with pytest.raises(TimeoutError):  # the parent's lookup, still in flight at the fork
        deadlines.addresses("localhost.fork.test", 80, time.monotonic() + 0.05)
    with deadlines.overall_deadline(5):
        pass  # the parent's watchdog runs
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # forking a process with threads: on purpose
        child = os.fork()
    if child == 0:  # the child: report through the exit status only
        status = 1
        try:
            found = deadlines.addresses("localhost.fork.test", 80, time.monotonic() + 2)
            with socket.socket() as listener, socket.socket() as peer:
                listener.bind(("127.0.0.1", 0))
                listener.listen(1)
                peer.connect(listener.getsockname())
                started = time.monotonic()
                with deadlines.overall_deadline(0.2) as call:
                    call.hold(peer)
                    with contextlib.suppress(OSError):
                        peer.recv(1)  # nothing comes: the child's watchdog must end the wait
                ended = time.monotonic() - started < 1.0 and call.expired
            status = 0 if found == ["127.0.0.1"] and ended else 2
        finally:
            os._exit(status)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_a_host_is_reached_at_whichever_of_its_addresses_answers(
    sandbox_server: SandboxServer, sandbox: SandboxState, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A name with several addresses: each is tried in turn within the deadline, as urllib3 does when it
    resolves; the first that answers is used."""
    real = socket.getaddrinfo

    def two_addresses(host: Any, *rest: Any, **options: Any) -> Any:
        if host == "twilio.pair.test":  # 127.0.0.2 first, where nothing listens (the sandbox binds 127.0.0.1)
            return real("127.0.0.2", *rest, **options) + real("127.0.0.1", *rest, **options)
        return real(host, *rest, **options)

    monkeypatch.setattr(socket, "getaddrinfo", two_addresses)
    port = sandbox_server.base_url.rsplit(":", 1)[1]
    transport = TwilioTransport(timeout_seconds=2, pool_size=1, base_url=f"http://twilio.pair.test:{port}")
    client = Client(DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN, http_client=transport)
    before = len(sandbox.requests)
    assert client.messages.create(to=PHONE, from_=FROM_NUMBER, body="x").sid.startswith("SM")
    assert len(sandbox.requests) == before + 1


def test_a_closed_port_is_unreachable_not_a_timeout(closed_port: str) -> None:
    transport = TwilioTransport(timeout_seconds=1, pool_size=1, base_url=closed_port)
    client = Client(DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN, http_client=transport)
    with pytest.raises(TwilioUnavailable) as caught:
        client.messages.create(to=PHONE, from_=FROM_NUMBER, body="x")
    assert not caught.value.timed_out


def test_sandbox_latency_delays_answers(sandbox_server: SandboxServer, sandbox: SandboxState) -> None:
    sandbox.latency_seconds = 0.2
    client = sandbox_client(sandbox_server)
    started = time.monotonic()
    client.messages.create(to=PHONE, from_=FROM_NUMBER, body="x")
    assert 0.2 <= time.monotonic() - started < 1.0


def test_sandbox_refuses_bodies_over_1600_characters(sandbox_server: SandboxServer) -> None:
    with pytest.raises(TwilioRestException) as caught:
        sandbox_client(sandbox_server).messages.create(to=PHONE, from_=FROM_NUMBER, body="x" * 1601)
    assert caught.value.code == 21617


def test_sandbox_error_bodies_are_twilios_json(sandbox_server: SandboxServer) -> None:
    url = f"{sandbox_server.base_url}/2010-04-01/Accounts/{DEFAULT_ACCOUNT_SID}/Messages.json"
    auth = base64.b64encode(f"{DEFAULT_ACCOUNT_SID}:{DEFAULT_AUTH_TOKEN}".encode()).decode()
    response = requests.post(
        url,
        data={"To": "+15005550001", "From": FROM_NUMBER, "Body": "x"},
        headers={"Authorization": f"Basic {auth}"},
        timeout=5,
    )
    assert response.status_code == 400
    assert response.json() == {
        "code": 21211,
        "message": "The 'To' number +15005550001 is not a valid phone number.",
        "more_info": "https://www.twilio.com/docs/errors/21211",
        "status": 400,
    }


# ------------------------------------------------------------------------------------- safe retries


class SilentTwilio:
    """Accepts connections, reads what is sent, never answers: counts the requests that arrived."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.requests = 0
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        held = []
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            held.append(connection)
            if connection.recv(65536):
                self.requests += 1


def test_a_rate_limited_request_is_retried_once_and_delivered(
    sandbox_server: SandboxServer, sandbox: SandboxState
) -> None:
    sandbox.refuse_next.append(20429)
    answer = delivery_for(sandbox_server).deliver(profile())
    assert answer.outcome == "delivered"
    assert [request["path"].endswith("/Messages.json") for request in sandbox.requests] == [True, True]
    assert answer.log_fields["twilio_attempts"] == 2


def test_rate_limiting_is_retried_only_once(sandbox_server: SandboxServer, sandbox: SandboxState) -> None:
    sandbox.refuse_next.extend([20429, 20429, 20429])
    with pytest.raises(Refused) as refusal:
        delivery_for(sandbox_server).deliver(profile())
    assert refusal.value.answer.log_fields == {
        "twilio_error_code": 20429,
        "twilio_attempts": 2,
        "twilio_http_status": 429,
    }
    assert len(sandbox.requests) == 2


RATE_LIMITED = json.dumps({"code": 20429, "message": "Too Many Requests", "status": 429}).encode()
CREATED = json.dumps({"sid": "SM" + "e" * 32, "status": "queued"}).encode()


def answers_in_turn(twilio: StandIn, *answers: bytes) -> list[float]:
    """`twilio` answers these in turn (the last one from then on); returns when each request came."""
    times: list[float] = []

    def pieces() -> list[bytes]:
        times.append(time.monotonic())
        return [answers[min(len(times), len(answers)) - 1]]

    twilio.answer = pieces
    return times


@pytest.mark.parametrize(
    "cut", [b"HTTP/1.1 429 X\r\nCont", b"HTTP/1.1 429 X\r\nContent-Length: 2\r\n", b"HTTP/1.1 429 X\r\n"]
)
def test_an_answer_whose_head_is_cut_short_is_never_taken_for_a_refusal(cut: bytes) -> None:
    """http.client ends a head at the end of the stream: a 429 cut inside its headers read as a whole
    429 with no body, and was retried, though the request had reached Twilio. Only a blank line ends a
    head; a cut one is an answer that could not be read, never retried."""
    with stand_in(b"") as twilio:
        times = answers_in_turn(twilio, cut, http_answer(201, CREATED))
        with pytest.raises(Refused) as refusal:
            delivery_for(twilio).deliver(profile())
    assert len(times) == 1
    assert refusal.value.answer.log_fields["twilio_error"] == "TWILIO_UNREACHABLE"


@pytest.mark.parametrize(("retry_after", "least_pause"), [(None, RATE_LIMIT_PAUSE_SECONDS[0]), ("1", 1.0)])
def test_a_rate_limited_request_is_retried_after_backing_off(retry_after: str | None, least_pause: float) -> None:
    """Twilio: a 429 is never processed and is safe to retry after backing off. A short random pause (a
    burst limited together does not come back together), or Twilio's Retry-After when longer."""
    headers = f"Retry-After: {retry_after}\r\n" if retry_after else ""
    with stand_in(b"") as twilio:
        times = answers_in_turn(twilio, http_answer(429, RATE_LIMITED, headers=headers), http_answer(201, CREATED))
        answer = delivery_for(twilio).deliver(profile())
    assert answer.outcome == "delivered" and answer.log_fields["twilio_attempts"] == 2
    assert len(times) == 2 and times[1] - times[0] >= least_pause


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (None, 0.0),
        ("", 0.0),
        ("0", 0.0),
        (" 7 ", 7.0),
        ("0_1", 0.0),  # float() would read 1: RFC 9110's delay-seconds are ASCII digits only
        ("1e3", 0.0),
        ("-1", 0.0),
        ("nan", 0.0),
        ("\uff11\uff12", 0.0),  # full-width digits
        ("9" * 5000, math.inf),  # past any deadline, and past what int() reads
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),  # a date passed: now
        ("Mon, 01 Jan 99999999999999999999 00:00:00 +0000", 0.0),
    ],
)
def test_retry_after_is_read_as_rfc_9110_defines_it(value: str | None, seconds: float) -> None:
    assert retry_after_seconds(value) == seconds


def test_a_retry_after_date_to_come_is_the_seconds_until_then() -> None:
    when = datetime.now(UTC) + timedelta(seconds=30)
    assert 28 <= retry_after_seconds(format_datetime(when, usegmt=True)) <= 30


def test_a_retry_after_of_0_still_takes_the_random_pause() -> None:
    """A burst told to retry at once would come back at once: the pause is never shorter than ours."""
    pauses = [rate_limit_pause(RATE_LIMITED, "0") or 0.0 for _ in range(20)]
    assert all(RATE_LIMIT_PAUSE_SECONDS[0] <= pause <= RATE_LIMIT_PAUSE_SECONDS[1] for pause in pauses)
    assert len(set(pauses)) > 1  # spread, not one value


@pytest.mark.parametrize(
    ("body", "headers", "code"),
    [
        (RATE_LIMITED, "Retry-After: 30\r\n", 20429),  # a pause past the deadline: Okta falls back now
        (json.dumps({"code": 60203, "message": "Max send attempts reached", "status": 429}).encode(), "", 60203),
    ],
)
def test_a_429_a_retry_cannot_help_is_answered_at_once(body: bytes, headers: str, code: int) -> None:
    with stand_in(b"") as twilio:
        times = answers_in_turn(twilio, http_answer(429, body, headers=headers), http_answer(201, CREATED))
        started = time.monotonic()
        with pytest.raises(Refused) as refusal:
            delivery_for(twilio).deliver(profile())
        elapsed = time.monotonic() - started
    assert refusal.value.answer.log_fields == {
        "twilio_error_code": code,
        "twilio_attempts": 1,
        "twilio_http_status": 429,
    }
    assert len(times) == 1
    assert elapsed < RATE_LIMIT_PAUSE_SECONDS[0]  # no pause taken: the answer is as quick as a refusal


def test_verify_with_custom_codes_off_tells_okta_to_fall_back_and_the_admin_why(
    make_client: AppFactory, sandbox: SandboxState
) -> None:
    """Twilio Verify answers 60204 when the service does not take custom codes: nothing was sent, so
    Okta falls back, and the admin reads the table's word for 60204 with a link to Twilio's page."""
    client = make_client(TWILIO_VERIFY_SERVICE_SID=VERIFY_SERVICE_SID)
    sandbox.refuse_next.append(60204)
    answer = post_hook(client, okta_request()).get_json()
    assert answer == {
        "error": {
            "errorSummary": NOT_DELIVERED,
            "errorCauses": [
                {"errorSummary": TWILIO_ERRORS[60204].hint, "reason": "TWILIO_60204",
                 "location": "https://www.twilio.com/docs/errors/60204"}
            ],
        }
    }  # fmt: skip
    assert [request["path"] for request in sandbox.requests] == [f"/v2/Services/{VERIFY_SERVICE_SID}/Verifications"]


def test_a_5xx_answer_is_never_retried(sandbox_server: SandboxServer, sandbox: SandboxState) -> None:
    sandbox.refuse_next.append(20500)
    with pytest.raises(Refused) as refusal:
        delivery_for(sandbox_server).deliver(profile())
    assert refusal.value.answer.log_fields["twilio_attempts"] == 1
    assert len(sandbox.requests) == 1
    assert sandbox.refuse_next == []


def test_a_read_timeout_is_never_retried() -> None:
    silent = SilentTwilio()
    try:
        transport = TwilioTransport(timeout_seconds=0.5, pool_size=1, base_url=silent.url)
        client = Client(DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN, http_client=transport)
        with pytest.raises(TwilioUnavailable) as caught:
            client.messages.create(to=PHONE, from_=FROM_NUMBER, body="x")
        time.sleep(0.1)  # a retry, had there been one, would have arrived by now
        assert caught.value.timed_out
        assert caught.value.attempts == 1
        assert silent.requests == 1
    finally:
        silent.listener.close()


def test_a_refused_connection_is_retried_once_within_the_deadline(closed_port: str) -> None:
    transport = TwilioTransport(timeout_seconds=1, pool_size=1, base_url=closed_port)
    client = Client(DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN, http_client=transport)
    with pytest.raises(TwilioUnavailable) as caught:
        client.messages.create(to=PHONE, from_=FROM_NUMBER, body="x")
    assert not caught.value.timed_out
    assert caught.value.attempts == 2
