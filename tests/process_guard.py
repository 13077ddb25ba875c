"""Only tests marked `e2e` may start a process, so `make unit` (pytest -m "not e2e") really starts none.

A Python audit hook sees every way a process starts (subprocess, os.system, fork, spawn, exec) and
refuses it while a test that is not marked e2e is being set up, run or torn down, naming the test.
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


def _audit(event: str, arguments: tuple[Any, ...]) -> None:
    if _Guard.test is not None and event in PROCESS_EVENTS:
        raise RuntimeError(f"{_Guard.test} starts a process ({event}) but is not marked e2e: mark it so")


sys.addaudithook(_audit)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None, object, object]:
    _Guard.test = None if item.get_closest_marker("e2e") else item.nodeid
    try:
        return (yield)
    finally:
        _Guard.test = None
