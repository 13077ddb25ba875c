"""How the suite runs on several workers (pytest-xdist, `-n`, on by default: pyproject.toml).

Each worker is a pytest process of its own, with its own sandbox, Redis, shared functions-framework
processes and temporary directories: nothing is shared between workers but the machine. A shared process
costs half a second of CPU to start and each worker starts its own, so the tests that share processes run
on one worker, in one unit of work (UNITS below, by module); every other test is a unit of its own, and
those fill whichever worker is free. Units are handed out largest first (xdist's loadscope order), so the
long groups start at once and the many short tests even out the end.

A module missing from UNITS still runs correctly anywhere: its shared processes are then started by each
worker that runs one of its tests, which costs CPU, never a result.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

UNITS = {
    # The default hook, the THREADS one and the session's event hook (conftest.py) serve all three.
    "tests/test_e2e.py": "shared hooks",
    "tests/test_e2e_hostile_callers.py": "shared hooks",
    "tests/test_e2e_stalls.py": "shared hooks",
    # The raw-socket Twilio and the hook in front of it (conftest.py: twilio_peer_process).
    "tests/test_e2e_hostile_peers.py::test_a_twilio_that_closes_and_trickles_its_201": "twilio peer",
    "tests/test_e2e_slow_peers.py::test_a_trickling_twilio": "twilio peer",
    # The module's raw-socket Okta API and its event hook (okta_peer_process); the module's other tests
    # start processes of their own and go anywhere.
    "tests/test_e2e_hostile_peers.py::test_an_okta_api": "okta peer",
    # Module-scoped processes: two instances and their Redis; the live hook schemathesis tests.
    "tests/test_e2e_spend_guard.py": "spend guard pair",
    "tests/test_openapi.py": "openapi live hook",
}


def unit_of(nodeid: str) -> str:
    """The unit of a test: that of the longest UNITS key naming its module or the start of its id."""
    keys = [key for key in UNITS if nodeid.startswith(key if "::" in key else key + "::")]
    return UNITS[max(keys, key=len)] if keys else nodeid


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    from xdist.scheduler import LoadScopeScheduling

    class UnitScheduling(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            return unit_of(nodeid)

    return UnitScheduling(config, log)


def pytest_collection_finish(session: pytest.Session) -> None:
    """The scheduler knows tests by id: of two with one id, it would run one and never say so."""
    shared = [nodeid for nodeid, count in Counter(item.nodeid for item in session.items).items() if count > 1]
    if shared:
        raise pytest.UsageError(f"tests sharing an id (a worker would run only one of them): {shared}")
