"""Okta writes a user's locale in several ways ('EN-US', 'pt_BR', ' en '): one reading of all of them."""

from __future__ import annotations

import re
from typing import NamedTuple

_SEPARATORS = re.compile(r"[-_\s]+")


class Locale(NamedTuple):
    language: str  # lower case: 'pt'
    region: str  # upper case, '' when none: 'BR' (any further subtags stay with it: 'HANT-TW')

    @property
    def tag(self) -> str:
        """BCP 47 spelling: 'pt-BR', or 'pt'."""
        return f"{self.language}-{self.region}" if self.region else self.language

    def candidates(self) -> tuple[str, ...]:
        """Table keys to try, the most specific first: 'pt-BR', then 'pt'."""
        return (self.tag, self.language) if self.region else (self.language,)


def read_locale(text: str | None) -> Locale | None:
    """The locale Okta wrote, in BCP 47 case; None when it wrote none."""
    parts = _SEPARATORS.sub("-", (text or "").strip()).strip("-")
    if not parts:
        return None
    language, _, region = parts.partition("-")
    return Locale(language.lower(), region.upper())
