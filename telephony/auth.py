"""Who may call the hook: every configured scheme must pass, and with none configured nobody may."""

from __future__ import annotations

import hmac
from typing import Protocol

from telephony.answers import Headers, unauthorized
from telephony.settings import Settings


class AuthScheme(Protocol):
    def verify(self, headers: Headers) -> None:
        """Return when the caller passes; raise Refused (401/403/503) when not."""

    @property
    def described(self) -> str:
        """What a caller must send, for the start-up line: never a secret."""


class HeaderSecret:
    """Okta's 'HTTP headers' authentication: the configured header carries a fixed secret."""

    def __init__(self, header: str, secret: str, route: str = "telephony hook") -> None:
        self._header = header
        self._secret = secret  # printable ASCII (settings check it), as Okta sends it
        self._route = route  # named in the refusal's summary

    @property
    def described(self) -> str:
        return f"the secret in the {self._header} header"

    def verify(self, headers: Headers) -> None:
        received = headers.get(self._header)
        if received is None:
            raise unauthorized(f"The {self._header} header is missing.", f"header:{self._header}", route=self._route)
        # Constant time, so response timing says nothing about how much of a guess was right. A
        # non-ASCII value cannot be the secret (and compare_digest takes ASCII text only).
        if not (received.isascii() and hmac.compare_digest(received, self._secret)):
            raise unauthorized(
                f"The {self._header} header does not match the configured secret.",
                f"header:{self._header}",
                route=self._route,
            )


class Authenticator:
    """Runs every configured scheme; fails closed when none is."""

    def __init__(self, schemes: list[AuthScheme]) -> None:
        self.schemes = schemes

    @classmethod
    def from_settings(cls, settings: Settings) -> Authenticator:
        schemes: list[AuthScheme] = []
        if settings.okta_hook_auth_secret and settings.header_secret_configured:
            schemes.append(
                HeaderSecret(settings.okta_hook_auth_header, settings.okta_hook_auth_secret.get_secret_value())
            )
        if settings.oauth_configured:
            from telephony.oauth import OAuthBearer  # the JWT and crypto stack loads only when OAuth is on

            schemes.append(OAuthBearer.from_settings(settings))
        return cls(schemes)

    @property
    def configured(self) -> bool:
        return bool(self.schemes)

    @property
    def described(self) -> str:
        return " and ".join(scheme.described for scheme in self.schemes)

    def verify(self, headers: Headers) -> None:
        if not self.schemes:
            raise unauthorized(
                "No authentication is configured (OKTA_HOOK_AUTH_SECRET or OKTA_HOOK_OAUTH_*), so no call is accepted.",
                "configuration",
            )
        for scheme in self.schemes:
            scheme.verify(headers)
