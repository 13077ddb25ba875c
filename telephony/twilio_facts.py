"""What Twilio's API defines that several modules check: the shape of its SIDs and the SMS length limit."""

from __future__ import annotations

import re

SMS_MAX_CHARS = 1600  # Twilio refuses longer message bodies (error 21617)


def sid_pattern(*prefixes: str) -> str:
    """A SID of one of `prefixes`, as Twilio's OpenAPI specs write it: two letters and 32 hex digits."""
    return f"(?:{'|'.join(prefixes)})[0-9a-fA-F]{{32}}"


def is_sid(value: str, *prefixes: str) -> bool:
    return re.fullmatch(sid_pattern(*prefixes), value) is not None
