"""Phone numbers: reading what Okta sends as E.164, masking for logs, and the toll-fraud policy."""

from __future__ import annotations

import re
from typing import NamedTuple

import phonenumbers

# Separators people and consoles put into numbers (Okta's Preview tab lets admins type anything).
_SEPARATORS = re.compile(r"[\s\-().\u00a0\u2010-\u2015/]")
_E164 = re.compile(r"\+[1-9][0-9]{6,14}")
_TYPE_NAMES = {
    value: name
    for name, value in vars(phonenumbers.PhoneNumberType).items()
    if name.isupper() and isinstance(value, int)
}
NUMBER_TYPES = frozenset(_TYPE_NAMES.values())  # what BLOCKED_NUMBER_TYPES may name
REGIONS = frozenset(phonenumbers.SUPPORTED_REGIONS)  # what ALLOWED_COUNTRIES and DEFAULT_COUNTRY may name
# libphonenumber's region of numbers in no country: satellite (Iridium +8816, Inmarsat +870) and
# international networks (+882, +883), classic premium-rate toll-fraud destinations. Allowed only by name.
NON_GEOGRAPHIC = "001"


def without_separators(raw: str) -> str:
    """'+1 (415) 555-0123' -> '+14155550123'."""
    return _SEPARATORS.sub("", raw)


def to_e164(raw: str, default_country: str | None) -> str:
    """Normalise a number to E.164: keep a leading '+', read '00' as '+', else national digits.

    National digits are read in `default_country` when it is set; without it, the digits are taken
    to include the country code already (Okta's docs sample sends '9876543210'). Formatted input
    ('+44 (0)20 7946 0958') goes through libphonenumber, which knows each country's trunk prefix;
    plain '+digits', what Okta sends, is taken as it is.
    Raises ValueError with a message that never repeats the number.
    """
    compact = without_separators(raw)
    if compact.startswith("00"):
        compact = "+" + compact[2:]
    if not re.fullmatch(r"\+?[0-9]+", compact):
        raise ValueError("must contain only digits, with an optional leading '+'")
    if compact.startswith("+") and compact == raw.strip():
        e164 = compact
    elif compact.startswith("+") or default_country:
        region = None if compact.startswith("+") or not default_country else default_country.upper()
        try:
            parsed = phonenumbers.parse(compact, region)
        except phonenumbers.NumberParseException:
            raise ValueError(f"cannot be read as a phone number{f' in {region}' if region else ''}") from None
        e164 = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    else:
        e164 = "+" + compact
    if not _E164.fullmatch(e164):
        raise ValueError("is not an E.164 number (a country code and 7 to 15 digits in all)")
    return e164


def mask(e164: str) -> str:
    """'+14155550123' -> '+1******0123': enough to recognise a user's number, not to call it. A number
    without its '+' (national digits Okta keeps, unread) shows its last four alone: its first two
    would be the area's, not the country's."""
    if len(e164) <= 6:
        return "*" * len(e164)
    if not e164.startswith("+"):
        return "*" * (len(e164) - 4) + e164[-4:]
    return e164[:2] + "*" * (len(e164) - 6) + e164[-4:]


class NumberFacts(NamedTuple):
    """What the toll-fraud guard knows of a number: safe to log, unlike the number."""

    country: str  # ISO 3166 alpha-2, NON_GEOGRAPHIC, or "ZZ" when libphonenumber does not know it
    number_type: str  # libphonenumber's PhoneNumberType name
    valid: bool
    e164: str  # the number as libphonenumber read it: what the guard checked is what Twilio gets


def national_digits(e164: str) -> str:
    """'+14155550123' -> '4155550123': the number without its country calling code (ITU's codes are
    prefix-free, so the one that starts it is the code), or '' when none does."""
    digits = e164.removeprefix("+")
    for size in (1, 2, 3):
        if digits[:size].isdigit() and int(digits[:size]) in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
            return digits[size:]
    return ""


def spellings(number: str) -> set[str]:
    """The ways a log line could spell `number`, as sent or as E.164: itself, without its '+', its
    digits alone, and those without the country calling code ('+1 (415) 555-0123': '14155550123',
    '4155550123')."""
    digits = "".join(char for char in number if char in "0123456789")
    return {number, number.removeprefix("+"), digits, national_digits(f"+{digits}")}


def describe(e164: str) -> NumberFacts:
    """Look the number up in libphonenumber's metadata (offline, no network)."""
    try:
        parsed = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return NumberFacts(country="ZZ", number_type="UNKNOWN", valid=False, e164=e164)
    country = phonenumbers.region_code_for_number(parsed) or "ZZ"
    # A number is valid exactly when it matches one of its region's typed ranges, so the type
    # lookup answers validity too (is_valid_number would run the same patterns again).
    type_name = _TYPE_NAMES.get(phonenumbers.number_type(parsed), "UNKNOWN")
    formatted = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    return NumberFacts(country=country, number_type=type_name, valid=type_name != "UNKNOWN", e164=formatted)


def read_number(raw: str, default_country: str | None) -> NumberFacts | None:
    """A number as Okta keeps it in a user's factor (E.164, digits without '+', or national digits,
    read in `default_country`), read as the hook reads the numbers its codes go to. None when it cannot
    be read, or is not a valid number: the hook never sends a code to one."""
    try:
        facts = describe(to_e164(raw, default_country))
    except ValueError:
        return None
    return facts if facts.valid else None


class PhonePolicy(NamedTuple):
    """The toll-fraud guard: which numbers we will text or call at all."""

    allowed_countries: frozenset[str]  # empty: every country (non-geographic numbers still need NON_GEOGRAPHIC)
    blocked_number_types: frozenset[str]

    def refusal(self, facts: NumberFacts) -> str | None:
        """Why this number is refused, in words safe for end users and logs; None when allowed."""
        if not facts.valid:
            return "The phone number is not a valid number."
        if facts.country == NON_GEOGRAPHIC and NON_GEOGRAPHIC not in self.allowed_countries:
            return "Codes are not sent to satellite or international network numbers."
        if self.allowed_countries and facts.country not in self.allowed_countries:
            return f"Codes are not sent to numbers in {facts.country}."
        if facts.number_type in self.blocked_number_types:
            kind = facts.number_type.replace("_", " ").lower().removesuffix(" number")  # PERSONAL_NUMBER
            return f"Codes are not sent to {kind} numbers."
        return None
