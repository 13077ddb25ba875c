"""Okta's msgTemplate: whether it carries the very code we were asked to send."""

from __future__ import annotations

import re


def holds_code(template: str | None, otp_code: str) -> bool:
    """Whether `template` holds `otp_code` as a whole number, not inside a longer run of digits:
    with code 48291, 'Your code is 482913' carries another code, and sending it would be wrong."""
    if not template or not otp_code:
        return False
    return re.search(rf"(?<![0-9]){re.escape(otp_code)}(?![0-9])", template) is not None


def code_position(template: str, otp_code: str) -> tuple[int, int]:
    """Where the whole-number code stands in `template` (call only when `holds_code` is true)."""
    match = re.search(rf"(?<![0-9]){re.escape(otp_code)}(?![0-9])", template)
    if match is None:
        raise ValueError("the template does not hold the code")
    return match.span()
