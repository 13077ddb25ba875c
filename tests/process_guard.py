"""Only tests marked `e2e` may start a process, so `make unit` (pytest -m "not e2e") really starts none.

A Python audit hook sees every way a process starts (subprocess, os.system, fork, spawn, exec) and
refuses it, naming the test, while a test that is not marked e2e is set up, run or torn down. One
allowance: when e2e tests are selected too, session- and module-scoped fixtures may start processes for
them (the shared hooks, launched early while the in-process tests run). With no e2e test selected, as
under `make unit`, nothing may start a process at all.
"""

from __future__ import annotations

import sys
from collections.abc import Generator
from typing import Any

import pytest

PROCESS_EVENTS = frozenset(
    {"subprocess.Popen", "os.system", "os.fork", "os.forkpty", "os.posix_spawn", "os.spawn", "os.exec"}
)


class _Guard:
    test: str | None = None  # the test being run that must not start a process
    e2e_selected = False  # whether this session runs e2e tests, for which shared fixtures may start processes


def _audit(event: str, arguments: tuple[Any, ...]) -> None:
    if _Guard.test is not None and event in PROCESS_EVENTS:
        raise RuntimeError(f"{_Guard.test} starts a process ({event}) but is not marked e2e: mark it so")


sys.addaudithook(_audit)


def pytest_collection_finish(session: pytest.Session) -> None:
    _Guard.e2e_selected = any(item.get_closest_marker("e2e") for item in session.items)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None, object, object]:
    _Guard.test = None if item.get_closest_marker("e2e") else item.nodeid
    try:
        return (yield)
    finally:
        _Guard.test = None


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(
    fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest
) -> Generator[None, Any, Any]:
    armed = _Guard.test
    if fixturedef.scope != "function" and _Guard.e2e_selected:
        _Guard.test = None  # set up once for the session's e2e tests, whichever test comes first
    try:
        return (yield)
    finally:
        _Guard.test = armed
