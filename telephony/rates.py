"""Rate limits written in the notation Flask-Limiter and `limits` users know: "5/10minutes;20/day".

Only the notation is borrowed: the spend guard counts in one store round trip for all its limits
(telephony/store.py says why), so it reads the text here rather than through the `limits` package.
"""

from __future__ import annotations

import re
from typing import NamedTuple

# The `limits` grammar: "N/unit", "N/M units", "N per M units", separated by ';' ',' or '|'.
_ONE = re.compile(
    r"\s*([0-9]+)\s*(?:/|\s+per\s+)\s*([0-9]+)?\s*(second|minute|hour|day|month|year)s?\s*", re.IGNORECASE
)
_SEPARATORS = re.compile(r"[;,|]")
_UNIT_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
_LONG_UNIT_SECONDS = {"month": 30 * 86400, "year": 365 * 86400}  # as `limits` counts them: read, then refused
MAX_WINDOW_SECONDS = 7 * 86400  # every key expires: no window outlives a week


class Rate(NamedTuple):
    """At most `amount` within any `seconds`-long window (a moving window)."""

    amount: int
    seconds: int

    def __str__(self) -> str:
        for unit, size in reversed(_UNIT_SECONDS.items()):
            if self.seconds % size == 0:
                count = self.seconds // size
                return f"{self.amount}/{unit}" if count == 1 else f"{self.amount}/{count}{unit}s"
        return f"{self.amount}/{self.seconds}seconds"  # pragma: no cover - every window is whole seconds


def parse_rates(text: str) -> tuple[Rate, ...]:
    """'5/10minutes;20/day' -> (Rate(5, 600), Rate(20, 86400)). Raises ValueError saying what is wrong
    (the text is configuration, never a secret, so the message may quote it)."""
    rates = []
    for part in _SEPARATORS.split(text):
        if not part.strip():
            continue
        match = _ONE.fullmatch(part)
        if match is None:
            # the value is not repeated: a misplaced secret must not be written back (configuration.md)
            raise ValueError("holds what is not a limit like '5/10minutes' (units: second, minute, hour, day)")
        amount, count, unit = int(match.group(1)), int(match.group(2) or 1), match.group(3).lower()
        seconds = count * (_UNIT_SECONDS | _LONG_UNIT_SECONDS)[unit]
        if amount < 1 or seconds < 1:
            raise ValueError(f"{part.strip()!r}: the amount and the window must be at least 1")
        if seconds > MAX_WINDOW_SECONDS:
            raise ValueError(f"{part.strip()!r}: windows longer than 7 days are not kept")
        rates.append(Rate(amount, seconds))
    if not rates:
        raise ValueError("needs at least one limit, e.g. '5/10minutes;20/day'")
    return tuple(sorted(rates, key=lambda rate: rate.seconds))


def format_rates(rates: tuple[Rate, ...]) -> str:
    return ";".join(str(rate) for rate in rates)
