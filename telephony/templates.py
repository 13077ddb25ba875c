"""Okta's msgTemplate: whether it carries the very code we were asked to send."""

from __future__ import annotations

_DIGITS = frozenset("0123456789")


def holds_code(template: str | None, otp_code: str) -> bool:
    """Whether `template` holds `otp_code` as a whole number, not inside a longer run of digits:
    with code 48291, 'Your code is 482913' carries another code, and sending it would be wrong."""
    if not template or not otp_code:
        return False
    return _whole_number_at(template, otp_code) >= 0


def code_position(template: str, otp_code: str) -> tuple[int, int]:
    """Where the whole-number code stands in `template` (call only when `holds_code` is true)."""
    start = _whole_number_at(template, otp_code) if otp_code else -1
    if start < 0:
        raise ValueError("the template does not hold the code")
    return start, start + len(otp_code)


def _whole_number_at(template: str, otp_code: str) -> int:
    """The first place `otp_code` stands with no ASCII digit on either side, or -1. A plain search,
    not a regular expression built from the code: every code is new, so each would be compiled, and
    would push the compiled expressions the rest of the function reuses out of `re`'s cache."""
    start = template.find(otp_code)
    while start >= 0:
        before, after = template[start - 1 : start], template[start + len(otp_code) : start + len(otp_code) + 1]
        if before not in _DIGITS and after not in _DIGITS:  # '' at either end of the template
            return start
        start = template.find(otp_code, start + 1)
    return -1
