"""Fixtures: the Twilio sandbox, the hook configured against it, and peers that hang or are absent."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from flask.testing import FlaskClient
from functions_framework import create_app

from tests.e2e_hooks import HookStarter, RunningHook, SharedHooks, reap, start_hook, stop_later
from tests.helpers import (
    EVENT_HOOK_SECRET,
    HOOK_ENV_NAMES,
    OKTA_API_TOKEN,
    ROOT,
    VERIFY_SERVICE_SID,
    AppFactory,
    sandbox_env,
)
from tests.okta_stand_in import OktaStandIn, OktaState
from tests.redis_server import RedisServer
from tests.standins import TWILIO_PEER_SECONDS, UNSET, StandIn, self_signed, stand_in
from tools.sandbox.twilio_sandbox import SandboxServer, SandboxState, start_in_thread

# only tests marked e2e may start a process; which tests share a worker under pytest-xdist
pytest_plugins = ["tests.process_guard", "tests.parallel"]


@pytest.fixture(scope="session")
def sandbox_server() -> Iterator[SandboxServer]:
    server = start_in_thread(SandboxState(quiet=True))
    yield server
    server.shutdown()


@pytest.fixture
def sandbox(sandbox_server: SandboxServer) -> SandboxState:
    """The running sandbox, emptied of earlier tests' requests, no latency, default credentials."""
    state = sandbox_server.state
    state.requests.clear()
    state.violations.clear()
    state.verifications.clear()
    state.refuse_next.clear()
    state.receipts.clear()
    state.receipt_delay_seconds = 0.05
    state.receipts_on = True
    state.latency_seconds = 0.0
    state.api_key = state.api_secret = None
    return state


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """End-to-end tests run last, so the processes they share start while the in-process tests run."""
    items.sort(key=lambda item: item.get_closest_marker("e2e") is not None)


@pytest.fixture(scope="session", autouse=True)
def _stop_processes_at_the_end() -> Iterator[None]:
    yield
    reap()


@pytest.fixture(scope="session", autouse=True)
def _prestart_shared_hooks(request: pytest.FixtureRequest) -> None:
    """Launch, at the start of the session, every configuration a selected test names in a
    `prestart(**overrides)` mark: each takes most of a second to start, time the in-process tests use.
    A worker of pytest-xdist learns its tests a unit at a time: it launches a module's as the module begins."""
    if not hasattr(request.config, "workerinput"):
        _prestart(request, request.session.items)


@pytest.fixture(scope="module", autouse=True)
def _prestart_module_hooks(request: pytest.FixtureRequest) -> None:
    if hasattr(request.config, "workerinput"):
        _prestart(request, [item for item in request.session.items if item.path == request.path])


def _prestart(request: pytest.FixtureRequest, items: list[pytest.Item]) -> None:
    configurations = {tuple(sorted(mark.kwargs.items())) for item in items for mark in item.iter_markers("prestart")}
    if configurations:
        shared: SharedHooks = request.getfixturevalue("shared_hooks")
        for configuration in sorted(configurations):
            shared.prestart(**dict(configuration))


@pytest.fixture(scope="session")
def shared_hooks(sandbox_server: SandboxServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SharedHooks]:
    """functions-framework processes against the sandbox, one per configuration, for the whole session."""
    hooks = SharedHooks(sandbox_server.base_url, tmp_path_factory.mktemp("shared-hooks"))
    yield hooks
    hooks.stop()


@pytest.fixture
def shared_hook(shared_hooks: SharedHooks, sandbox: SandboxState) -> HookStarter:
    """`shared_hook(**overrides)`: the running hook with that configuration (started the first time it is
    asked for), its output() limited to this test's lines; the sandbox is emptied as for `sandbox`.
    The process keeps what earlier tests left in it (caches, counters, its embedded store): a test that
    needs a fresh one, or a peer of its own in the configuration, starts its own with hook_starter."""
    return shared_hooks.get


@pytest.fixture
def hook_env(monkeypatch: pytest.MonkeyPatch, sandbox_server: SandboxServer, sandbox: SandboxState) -> dict[str, str]:
    """A complete configuration against the sandbox; tests change it with monkeypatch.setenv/delenv."""
    for name in HOOK_ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
    # As deployed: PUBLIC_URL says the function's own URL, here the Flask test client's (receipts need it).
    env = sandbox_env(sandbox_server.base_url, PUBLIC_URL="http://localhost")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture
def make_client(hook_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> AppFactory:
    """Build the function as functions-framework does, after applying env overrides (None unsets)."""

    def build(**overrides: str | None) -> FlaskClient:
        for name, value in overrides.items():
            if value is None:
                monkeypatch.delenv(name, raising=False)
            else:
                monkeypatch.setenv(name, value)
        return create_app("telephony_hook", str(ROOT / "main.py")).test_client()

    return build


@pytest.fixture
def client(make_client: AppFactory) -> FlaskClient:
    return make_client()


@pytest.fixture
def hanging_twilio() -> Iterator[str]:
    """A port that accepts connections (the kernel does) and never answers: a hung Twilio."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(128)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


@pytest.fixture
def closed_port() -> str:
    """A port nobody listens on: Twilio unreachable."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def okta_api() -> Iterator[OktaState]:
    """Okta's Management API, played by a local HTTP server; its token is OKTA_API_TOKEN in events_env."""
    server = OktaStandIn(OktaState(token=OKTA_API_TOKEN))
    server.state.url = server.url
    yield server.state
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real redis-server on a free port, for the whole session (emptied by `redis_url`)."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session's Redis, empty."""
    redis_server.flush()
    return redis_server.url


@pytest.fixture(scope="session")
def redis_tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real redis-server speaking TLS only, with a certificate of its own, for the whole session."""
    directory = tmp_path_factory.mktemp("redis-tls")
    server = RedisServer(directory, tls=self_signed(directory))
    yield server
    server.stop()


@pytest.fixture
def rediss_url(redis_tls_server: RedisServer) -> str:
    """The session's Redis over TLS, empty: rediss:// with its certificate to verify."""
    redis_tls_server.flush()
    return redis_tls_server.url


# Peers and processes the end-to-end modules share (a functions-framework start costs about a second of
# CPU). A test switches a shared peer's answer (standins.answering) or empties its state before it
# posts, and asserts the peer was asked, so none passes on an earlier test's work.


@pytest.fixture(scope="session")
def twilio_peer() -> Iterator[StandIn]:
    """A raw-socket Twilio for the session, answering UNSET until a test switches it."""
    with stand_in(UNSET) as peer:
        yield peer


@pytest.fixture(scope="session")
def twilio_peer_process(
    sandbox_server: SandboxServer, twilio_peer: StandIn, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningHook]:
    """The hook against `twilio_peer`, TWILIO_TIMEOUT_SECONDS=TWILIO_PEER_SECONDS. The spend guard is off,
    as in every shared process: it counts codes per number, and one test's codes would be the next one's
    limit. Each test sends a code of its own: the same code again would be Okta's retry."""
    settings = sandbox_env(
        sandbox_server.base_url,
        TWILIO_API_BASE_URL=twilio_peer.base_url,
        TWILIO_TIMEOUT_SECONDS=str(TWILIO_PEER_SECONDS),
        GUARD_MODE="off",
    )
    hook = start_hook(settings, tmp_path_factory.mktemp("twilio-peer") / "hook.log")
    yield hook
    stop_later([hook.process])


@pytest.fixture
def twilio_peer_hook(twilio_peer_process: RunningHook) -> RunningHook:
    """The session's hook against `twilio_peer`, its output() limited to this test's lines."""
    return _alive(twilio_peer_process)


@pytest.fixture(scope="session")
def okta_server() -> Iterator[OktaStandIn]:
    """Okta's Management API stand-in for the session's event hook (`shared_okta_api` empties it)."""
    server = OktaStandIn(OktaState(token=OKTA_API_TOKEN))
    server.state.url = server.url
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def shared_okta_api(okta_server: OktaStandIn) -> OktaState:
    """The session's Okta stand-in with no factors, no requests seen, no latency."""
    state = okta_server.state
    state.requests.clear()
    state.factors.clear()
    state.latency_seconds = 0.0
    return state


@pytest.fixture(scope="session")
def events_process(
    sandbox_server: SandboxServer, okta_server: OktaStandIn, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningHook]:
    """The event hook (Verify feedback) against `okta_server`, as deployed (the spend guard on). What it
    keeps between tests cannot leak into the next: it claims each event uuid once (every test's events
    have their own), and keeps nothing per user (every event reads the user's factors afresh)."""
    settings = sandbox_env(
        sandbox_server.base_url,
        OKTA_EVENT_HOOK_AUTH_SECRET=EVENT_HOOK_SECRET,
        OKTA_ORG_URL=okta_server.url,
        OKTA_API_TOKEN=OKTA_API_TOKEN,
        TWILIO_VERIFY_SERVICE_SID=VERIFY_SERVICE_SID,
    )
    hook = start_hook(settings, tmp_path_factory.mktemp("events-hook") / "hook.log")
    yield hook
    stop_later([hook.process])


@pytest.fixture
def events_hook(events_process: RunningHook, shared_okta_api: OktaState, sandbox: SandboxState) -> RunningHook:
    """The session's event hook, its output() limited to this test's lines; its Okta and the sandbox
    emptied."""
    return _alive(events_process)


def _alive(hook: RunningHook) -> RunningHook:
    # Never restarted: a process that died under an earlier test is a failure to see, not to hide.
    assert hook.process.poll() is None, f"the shared process exited: {hook.log_path.read_text()}"
    return hook.from_now()
