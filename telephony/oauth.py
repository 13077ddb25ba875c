"""OAuth 2.0 bearer tokens: Okta's strongest way to authenticate its calls to the hook.

Okta gets an access token from the customer's authorization server and sends it as
`Authorization: Bearer <JWT>`. We accept it only when it is RS256-signed by a key in the issuer's
JWKS, names our issuer and audience, has not expired, and carries the configured scope.
Imported only when OAuth is configured, so the JWT and crypto stack costs nothing otherwise.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

import jwt

from telephony.answers import Headers, jwks_unavailable, unauthorized
from telephony.outbound import CallFailed, Outbound
from telephony.settings import Settings

log = logging.getLogger("telephony_hook.oauth")

ALGORITHMS = ["RS256"]  # whatever the token's header claims: never 'none', never HMAC
LEEWAY_SECONDS = 30  # clock skew between Okta and us
# Below gunicorn's own limit on a header line (8190 bytes): a long token gets this JSON 401, not its HTML 431.
MAX_TOKEN_BYTES = 8000
JWKS_TIMEOUT_SECONDS = 0.8  # a key-set fetch and Twilio's call share Okta's 3 s
# A fetch ends by its deadline, then its keys are read: a hook waiting for another's fetch waits that long.
JWKS_WAIT_SECONDS = JWKS_TIMEOUT_SECONDS + 0.25
JWKS_REFETCH_INTERVAL = 5.0  # an unknown kid refetches at most this often (a rotated key, or forged kids)
JWKS_RETRY_SECONDS = 1.0  # with no keys, a failed fetch is tried again this soon: an issuer's blip
JWKS_MAX_AGE = 3600.0  # known keys are refreshed hourly, so a revoked key stops working
JWKS_REFRESH_RETRY_SECONDS = 60.0  # a refresh that failed is tried again this soon, the known keys kept meanwhile
MAX_JWKS_BYTES = 64 * 1024  # a key set holds a few keys of about 1.5 KB each


class JwksUnavailable(Exception):
    """The issuer's key set could not be fetched."""


class JwksFetchFailed(Exception):
    """One fetch failed: the message says how (timeout, HTTP status, not a key set), never a key."""


# Its own small pool (one fetch at a time per cache), under one overall deadline and a cap per fetch:
# an issuer trickling or flooding its key set would otherwise hold or swell every hook that waits for it.
_POOL = Outbound(size=4)


def fetch_jwks(url: str, seconds: float = JWKS_TIMEOUT_SECONDS) -> dict[str, Any]:
    """The issuer's key set, fetched within `seconds` overall. Raises JwksFetchFailed."""
    try:
        response = _POOL.call("GET", url, seconds=seconds, cap=MAX_JWKS_BYTES, headers={"Accept": "application/json"})
    except CallFailed as failure:
        if failure.too_large:
            raise JwksFetchFailed("answer too large") from None
        raise JwksFetchFailed("timeout" if failure.timed_out else failure.error_type) from None
    if response.status != 200:
        raise JwksFetchFailed(f"HTTP {response.status}")
    try:
        document = json.loads(response.data)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than Python parses
        raise JwksFetchFailed("not JSON") from None
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise JwksFetchFailed("not a JWKS document")
    return document


class JwksCache:
    """The issuer's signing keys, fetched once and shared by every request of the instance."""

    def __init__(
        self, url: str, fetch: Callable[[str], dict[str, Any]] = fetch_jwks, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.url = url
        self._fetch = fetch
        self._clock = clock
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at: float | None = None
        self._failed = False
        self._lock = threading.Lock()

    def key(self, kid: str) -> jwt.PyJWK | None:
        """The key with this id; None when the issuer does not have it. Raises JwksUnavailable."""
        known = self._keys.get(kid)
        if known is not None and not self._stale(self._max_age):
            return known
        # One fetch at a time; concurrent callers then find the fresh keys. Nobody waits for another
        # hook's fetch longer than a fetch may take.
        if not self._lock.acquire(timeout=JWKS_WAIT_SECONDS):
            if known is not None:
                return known
            raise JwksUnavailable
        try:
            return self._key_locked(kid)
        finally:
            self._lock.release()

    def _key_locked(self, kid: str) -> jwt.PyJWK | None:
        known = self._keys.get(kid)
        if known is not None and not self._stale(self._max_age):
            return known
        if not self._keys and self._failed:
            if not self._stale(JWKS_RETRY_SECONDS):  # an issuer that just failed is not asked again yet
                raise JwksUnavailable
        elif self._fetched_at is not None and not self._stale(JWKS_REFETCH_INTERVAL):
            return known  # fetched moments ago: an unknown kid must not make us hammer the issuer
        try:
            self._refresh()
        except JwksUnavailable:
            if known is not None:  # keep serving with the keys we had
                log.warning("JWKS refresh failed; using the keys fetched earlier")
                return known
            raise
        return self._keys.get(kid)

    @property
    def _max_age(self) -> float:
        """How long known keys serve without asking the issuer: an hour after a fetch, a minute after a
        refresh that failed (else a revoked key would work an hour more for each failure)."""
        return JWKS_REFRESH_RETRY_SECONDS if self._failed else JWKS_MAX_AGE

    def _stale(self, age: float) -> bool:
        return self._fetched_at is None or self._clock() - self._fetched_at >= age

    def _refresh(self) -> None:
        self._fetched_at = self._clock()
        try:
            document = self._fetch(self.url)
            keys = document["keys"]
            if not isinstance(keys, list):
                raise TypeError
            signing = [key for key in keys if _signing_key(key)]
            key_set = jwt.PyJWKSet.from_dict({"keys": signing}) if signing else None
            usable = key_set.keys if key_set else []
            found = {key.key_id: key for key in usable if key.key_id and key.algorithm_name in ALGORITHMS}
        except (JwksFetchFailed, ValueError, KeyError, TypeError, jwt.PyJWKSetError) as error:
            self._failed = True
            problem = str(error) if isinstance(error, JwksFetchFailed) else type(error).__name__
            log.error("JWKS fetch failed", extra={"fields": {"jwks_url": self.url, "error_type": problem}})
            raise JwksUnavailable from None
        self._failed = False
        self._keys = found


def _signing_key(entry: Any) -> bool:
    """Whether a key set's entry may verify signatures: a JSON object whose names are strings where RFC
    7517 says so (one malformed entry is skipped, as PyJWT skips a key type it does not know, rather
    than spoil the others), and not published for encryption ('use': 'enc')."""
    if not isinstance(entry, dict) or not isinstance(entry.get("kty"), str):
        return False
    if any(name in entry and not isinstance(entry[name], str) for name in ("kid", "alg", "use")):
        return False
    return entry.get("use") != "enc"


class OAuthBearer:
    """Validates the bearer token Okta sends when the hook uses OAuth 2.0."""

    def __init__(self, *, issuer: str, audience: str, scope: str, jwks: JwksCache) -> None:
        self.issuer = issuer
        self.audience = audience
        self.scope = scope
        self.jwks = jwks

    @property
    def described(self) -> str:
        return f"OAuth 2.0 bearer tokens from {self.issuer} (audience {self.audience}, scope {self.scope})"

    @classmethod
    def from_settings(cls, settings: Settings) -> OAuthBearer:
        assert settings.okta_hook_oauth_issuer and settings.okta_hook_oauth_audience and settings.okta_hook_oauth_scope
        assert settings.jwks_url
        return cls(
            issuer=settings.okta_hook_oauth_issuer,
            audience=settings.okta_hook_oauth_audience,
            scope=settings.okta_hook_oauth_scope,
            jwks=JwksCache(settings.jwks_url),
        )

    def verify(self, headers: Headers) -> None:
        token = self._bearer_token(headers.get("Authorization"))
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise unauthorized("The bearer token is not a JWT.", "header:Authorization") from None
        if header.get("alg") not in ALGORITHMS:
            raise unauthorized("The bearer token must be signed with RS256.", "header:Authorization")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise unauthorized("The bearer token names no signing key (kid).", "header:Authorization")
        try:
            key = self.jwks.key(kid)
        except JwksUnavailable:
            raise jwks_unavailable() from None
        if key is None:
            raise unauthorized(
                "The bearer token is signed by a key the issuer does not publish.", "header:Authorization"
            )
        try:
            claims = jwt.decode(
                token,
                key=key,
                algorithms=ALGORITHMS,
                audience=self.audience,
                issuer=self.issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise unauthorized("The bearer token has expired.", "header:Authorization") from None
        except jwt.InvalidTokenError as error:
            # PyJWT's messages name the failed check (audience, issuer, signature), never the token.
            raise unauthorized(f"The bearer token is invalid: {error}.", "header:Authorization") from None
        if self.scope not in _scopes(claims):
            raise unauthorized(
                f"The bearer token lacks the scope {self.scope}.", "header:Authorization", status=HTTPStatus.FORBIDDEN
            )

    @staticmethod
    def _bearer_token(value: str | None) -> str:
        scheme, _, token = (value or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise unauthorized("A bearer token is required in the Authorization header.", "header:Authorization")
        if len(token) > MAX_TOKEN_BYTES:
            raise unauthorized("The bearer token is too long.", "header:Authorization")
        return token


def _scopes(claims: dict[str, Any]) -> set[str]:
    """Okta puts scopes in 'scp' (a list); other servers use 'scope' (a space-separated string)."""
    scopes: set[str] = set()
    for claim in (claims.get("scp"), claims.get("scope")):
        if isinstance(claim, str):
            scopes.update(claim.split())
        elif isinstance(claim, list):
            scopes.update(item for item in claim if isinstance(item, str))
    return scopes
