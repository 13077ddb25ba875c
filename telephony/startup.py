"""What the process does once, before it serves: how imports are paid for, and what start-up reports.

Imported by main.py before anything heavy, so it imports only the standard library.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def paused_collector() -> Iterator[None]:
    """Build the process's long-lived objects with the garbage collector paused, then freeze them.

    Start-up makes tens of thousands of objects that live as long as the process. Left to the
    collector, they are scanned by full collections during the imports, and again in the worker that
    gunicorn forks, where touching each object copies its memory page. Python's gc documentation
    advises freezing them for servers that fork. The collector is turned back on whatever happens,
    also when start-up fails.
    """
    # pydantic scans every installed package's entry points for plugins when the first model is
    # defined; this function uses none. Decided here, before any model exists.
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    gc.disable()
    try:
        yield
        gc.freeze()  # everything built above lives as long as the process: never scan it again
    finally:
        gc.enable()
