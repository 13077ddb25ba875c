"""The hook's configuration: read from the environment once, validated, and the only place that does so.

A plain pydantic model rather than pydantic-settings: pydantic-settings' imports would be paid at
every cold start, time that comes out of Okta's 3 s budget, and the environment is the only source
we read.
"""

# No `from __future__ import annotations`: see models.py.
import base64
import json
import os
import posixpath
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Self, get_args
from urllib.parse import parse_qs, unquote, urlsplit

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from urllib3.exceptions import LocationParseError
from urllib3.util import parse_url

from telephony import phone
from telephony.rates import parse_rates
from telephony.twilio_facts import SMS_MAX_CHARS, sid_pattern

E164_PATTERN = r"^\+[1-9][0-9]{6,14}$"
MIN_SECRET_CHARACTERS = 16  # the hook's and the event hook's header secrets
HOST_LABEL_PATTERN = r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$"  # one label of a host name (RFC 1123), lower case
# Okta waits 3 s for a telephony hook's answer, and that includes what the function cannot see: the
# network, Cloud Run's front end, and with OAuth Okta's own token fetch. Every step of a hook (a key-set
# fetch, the guard's store, Twilio) has a deadline of its own; this one bounds them together.
HOOK_BUDGET_SECONDS = 2.5
CODE_PLACEHOLDER = "{code}"  # where SMS_TEMPLATE and VOICE_PHRASES put the one-time code

# Number types an OTP never needs to reach: calling or texting them earns someone else money (SMS
# pumping). Names are libphonenumber's PhoneNumberType members. PERSONAL_NUMBER: follow-me numbers
# (the UK's 070, the US's 5XX) that forward at a premium, a classic revenue-share range.
DEFAULT_BLOCKED_NUMBER_TYPES = ("PREMIUM_RATE", "SHARED_COST", "UAN", "VOICEMAIL", "PAGER", "PERSONAL_NUMBER")

_CSV = re.compile(r"[,\s]+")
_VOICE = re.compile(r"man|woman|alice|[A-Z][A-Za-z]+\.\w[\w-]*")  # Twilio's: Polly.Joanna-Neural, Google.en-US-…
_UNSHOWABLE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2066-\u2069\ufeff]")
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # an HTTP header name (RFC 9110 token)
# Headers proxies drop or rewrite (RFC 9110's hop-by-hop fields, the message's framing, and what Cloud
# Run's front end sets): a secret sent in one works locally and never arrives once deployed.
_PLATFORM_HEADERS = frozenset(
    {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade", "host",
     "content-length", "content-type", "content-encoding", "expect", "forwarded", "via", "x-forwarded-for",
     "x-forwarded-proto", "x-forwarded-host", "x-forwarded-port", "traceparent", "tracestate",
     "x-cloud-trace-context", "proxy-authorization", "proxy-authenticate", "x-serverless-authorization"}
)  # fmt: skip
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
_URL_CHARACTERS = re.compile(r"[!-~]+")  # printable ASCII without spaces
# The URLs the function calls (or hands to Twilio to call): each is https, http only on loopback.
OUTBOUND_URLS = (
    "OKTA_HOOK_OAUTH_ISSUER",
    "OKTA_HOOK_OAUTH_JWKS_URL",
    "OKTA_ORG_URL",
    "TWILIO_API_BASE_URL",
    "PUBLIC_URL",
)


def check_outbound_url(value: str, *, query: bool = False) -> str:
    """An outbound URL, checked as urllib3 (the HTTP library that will call it) reads it, and as the
    standard library does: both must see the same host, with no user name or password, and the scheme
    must be https, or http to a loopback host (local stand-ins and the sandbox). Backslashes, spaces,
    percent-escapes in the host and userinfo are refused outright: parsers disagree on them, which is
    how `http://HOST\\@localhost/` once passed a loopback check and was fetched from HOST. The message
    never repeats the value."""
    if not _URL_CHARACTERS.fullmatch(value) or "\\" in value:
        raise ValueError("must be a plain URL: printable ASCII, no spaces, no backslashes")
    parts = urlsplit(value)
    try:
        read = parse_url(value)
        port = parts.port
    except (LocationParseError, ValueError):
        raise ValueError("is not a URL the HTTP library can read") from None
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http") or not parts.hostname:
        raise ValueError("must be an https:// URL with a host")
    if "@" in parts.netloc or read.auth:
        raise ValueError("must not carry a user name or password")
    host = (read.host or "").lower().removeprefix("[").removesuffix("]")
    if "%" in parts.netloc or host != parts.hostname or read.port != port:
        raise ValueError("must name its host plainly (the HTTP library reads it differently)")
    if "#" in value or ("?" in value and not (query and parts.query)):  # '?' or '#' alone too: they say nothing
        raise ValueError("must not carry a query or a fragment")
    if scheme != "https" and host not in LOOPBACK_HOSTS:
        raise ValueError("must be an https URL (http only on loopback: localhost, 127.0.0.1, [::1])")
    return value


def _check_regions(countries: list[str]) -> None:
    """ISO 3166 alpha-2 codes libphonenumber knows: 'UK' is a classic typo for GB."""
    bad = [country for country in countries if country not in phone.REGIONS]
    if bad:
        hint = " (the United Kingdom is GB)" if "UK" in bad else ""
        raise ValueError(f"not ISO 3166 alpha-2 country codes: {', '.join(bad)}{hint}")


def _split_csv(value: Any) -> Any:
    if isinstance(value, str):
        return [item for item in _CSV.split(value.strip()) if item]
    return value


class Settings(BaseModel):
    """Every variable the hook reads, with its meaning; see docs/configuration.md."""

    model_config = ConfigDict(frozen=True, extra="ignore", str_strip_whitespace=True)

    # --- how Okta authenticates itself to us
    okta_hook_auth_header: str = Field(
        "Authorization",
        alias="OKTA_HOOK_AUTH_HEADER",
        min_length=1,
        max_length=256,
        description="Header name Okta sends the secret in (the hook's 'Authentication field').",
    )
    okta_hook_auth_secret: SecretStr | None = Field(
        None,
        alias="OKTA_HOOK_AUTH_SECRET",
        description="The exact header value Okta sends (the hook's 'Authentication secret').",
    )
    okta_hook_oauth_issuer: str | None = Field(
        None,
        alias="OKTA_HOOK_OAUTH_ISSUER",
        pattern=r"^https?://\S+$",
        description="Issuer of the bearer tokens Okta sends, e.g. https://acme.okta.com/oauth2/aus1.",
    )
    okta_hook_oauth_audience: str | None = Field(None, alias="OKTA_HOOK_OAUTH_AUDIENCE")
    okta_hook_oauth_scope: str | None = Field(None, alias="OKTA_HOOK_OAUTH_SCOPE")
    okta_hook_oauth_jwks_url: str | None = Field(None, alias="OKTA_HOOK_OAUTH_JWKS_URL", pattern=r"^https?://\S+$")

    # --- Okta's event hook (/okta/events): Verify feedback. Its own secret: event hooks only know
    # the header scheme, and a feedback-only deployment needs no telephony hook secret.
    okta_event_hook_auth_header: str = Field(
        "Authorization",
        alias="OKTA_EVENT_HOOK_AUTH_HEADER",
        min_length=1,
        max_length=256,
        description="Header name the event hook sends its secret in (the event hook's 'Authentication field').",
    )
    okta_event_hook_auth_secret: SecretStr | None = Field(
        None,
        alias="OKTA_EVENT_HOOK_AUTH_SECRET",
        description="The exact header value the event hook sends (its 'Authentication secret').",
    )
    okta_org_url: str | None = Field(
        None,
        alias="OKTA_ORG_URL",
        pattern=r"^https?://[^\s/]+/?$",
        description="The org whose Management API gives a user's phone numbers, e.g. https://acme.okta.com.",
    )
    okta_api_token: SecretStr | None = Field(
        None, alias="OKTA_API_TOKEN", description="SSWS API token of a read-only administrator."
    )
    # Okta's event hooks wait 3 s too: the Management API read and Verify's update share it.
    # Floors: below them no real call completes (a TLS handshake alone), and every call would fail.
    okta_api_timeout_seconds: float = Field(0.8, alias="OKTA_API_TIMEOUT_SECONDS", ge=0.2, le=1.5)

    # --- Twilio
    twilio_account_sid: str | None = Field(None, alias="TWILIO_ACCOUNT_SID", pattern=f"^{sid_pattern('AC')}$")
    twilio_auth_token: SecretStr | None = Field(None, alias="TWILIO_AUTH_TOKEN")
    twilio_api_key: str | None = Field(
        None,
        validation_alias=AliasChoices("TWILIO_API_KEY", "TWILIO_API_KEY_SID"),
        pattern=f"^{sid_pattern('SK')}$",
    )
    twilio_api_secret: SecretStr | None = Field(
        None, validation_alias=AliasChoices("TWILIO_API_SECRET", "TWILIO_API_KEY_SECRET")
    )
    twilio_from_number: str | None = Field(None, alias="TWILIO_FROM_NUMBER", pattern=E164_PATTERN)
    twilio_messaging_service_sid: str | None = Field(
        None, alias="TWILIO_MESSAGING_SERVICE_SID", pattern=f"^{sid_pattern('MG')}$"
    )
    twilio_verify_service_sid: str | None = Field(
        None, alias="TWILIO_VERIFY_SERVICE_SID", pattern=f"^{sid_pattern('VA')}$"
    )
    # The twilio library builds its host from these (api.{edge}.{region}.twilio.com) as given: a label of
    # a host name and nothing else, or a value like 'evil.example#' sends the credentials elsewhere.
    twilio_region: str | None = Field(
        None,
        alias="TWILIO_REGION",
        pattern=HOST_LABEL_PATTERN,
        description="The Twilio Region API calls go to (us1, ie1, au1): api.{edge}.{region}.twilio.com.",
    )
    twilio_edge: str | None = Field(
        None,
        alias="TWILIO_EDGE",
        pattern=HOST_LABEL_PATTERN,
        description="The Twilio Edge location API calls enter by (dublin, sydney, tokyo...).",
    )
    twilio_api_base_url: str | None = Field(
        None,
        alias="TWILIO_API_BASE_URL",
        pattern=r"^https?://[^\s/]+(/\S*)?$",
        description="Send every https://*.twilio.com request here instead (sandbox or mock).",
    )
    public_url: str | None = Field(
        None,
        alias="PUBLIC_URL",
        pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$",
        description="The function's public URL as registered in Okta, e.g. https://hook-abc-uc.a.run.app, "
        "or with the path the platform strips (https://REGION-PROJECT.cloudfunctions.net/NAME); "
        "Twilio posts delivery receipts to it, signed for it. Unset: delivery receipts are off.",
    )
    # Okta gives up after 3 s; 2 s for Twilio leaves room for Okta's network and our own work.
    twilio_timeout_seconds: float = Field(2.0, alias="TWILIO_TIMEOUT_SECONDS", ge=0.2, le=HOOK_BUDGET_SECONDS)

    # --- what we send
    default_country: str | None = Field(None, alias="DEFAULT_COUNTRY", pattern=r"^[A-Za-z]{2}$")
    sms_template: str | None = Field(None, alias="SMS_TEMPLATE", max_length=SMS_MAX_CHARS)
    voice_phrases: dict[str, str] = Field(
        default_factory=dict,
        alias="VOICE_PHRASES",
        description='JSON object: locale -> phrase spoken before the digits, e.g. {"es": "Su código es"}.',
    )
    voice_name: str | None = Field(
        None, alias="VOICE_NAME", description="Twilio <Say> voice for every locale, e.g. Polly.Joanna."
    )
    okta_provider_name: str = Field("TWILIO", alias="OKTA_PROVIDER_NAME", min_length=1, max_length=64)

    # --- toll-fraud guard
    allowed_countries: Annotated[list[str], Field(alias="ALLOWED_COUNTRIES")] = []
    blocked_number_types: Annotated[list[str], Field(alias="BLOCKED_NUMBER_TYPES")] = list(DEFAULT_BLOCKED_NUMBER_TYPES)

    # --- spend guard (telephony/guard.py, docs/spend-guard.md): SMS pumping
    guard_mode: str = Field(
        "enforce",
        alias="GUARD_MODE",
        description="enforce (refuse over the limits), monitor (send, log would_refuse) or off.",
    )
    guard_storage_uri: SecretStr | None = Field(
        None,
        alias="GUARD_STORAGE_URI",
        description="memory:// (per instance, the default), or redis:// / rediss:// shared by every instance; "
        "holds Redis's AUTH string, so it comes from Secret Manager.",
    )
    guard_hash_key: SecretStr | None = Field(
        None,
        alias="GUARD_HASH_KEY",
        description="Key of the hashes that stand for numbers in the store; unset: derived from the Twilio credential.",
    )
    guard_number_limit: str = Field(
        "5/10minutes;20/day", alias="GUARD_NUMBER_LIMIT", description="Codes to one number that converted before."
    )
    guard_new_number_limit: str = Field(
        "3/10minutes;6/day", alias="GUARD_NEW_NUMBER_LIMIT", description="Codes to one number never seen converting."
    )
    guard_range_limit: str = Field(
        "5/hour;10/day",
        alias="GUARD_RANGE_LIMIT",
        description="Codes to unconverted numbers per range (the number without its last 4 digits).",
    )
    guard_country_limit: str = Field(
        "10/hour;40/day", alias="GUARD_COUNTRY_LIMIT", description="Codes to unconverted numbers per country."
    )
    guard_all_limit: str = Field(
        "30/hour;100/day",
        alias="GUARD_ALL_LIMIT",
        description="Codes to unconverted numbers over every country: a pump that moves from country to country.",
    )
    guard_limits_by_country: dict[str, dict[str, str]] = Field(
        default_factory=dict,
        alias="GUARD_LIMITS_BY_COUNTRY",
        description='JSON object: country -> its own range and country limits, e.g. {"US": {"country": "50/hour"}}.',
    )

    # --- runtime
    threads: int = Field(
        default_factory=lambda: 4 * (os.cpu_count() or 1),
        alias="THREADS",
        ge=1,
        le=1000,
        description="functions-framework threads; also sizes the Twilio connection pool.",
    )
    google_cloud_project: str | None = Field(
        None,
        validation_alias=AliasChoices("GOOGLE_CLOUD_PROJECT", "GCP_PROJECT"),
        description="Project id used to link log lines to Cloud Trace.",
    )

    @field_validator("default_country")
    @classmethod
    def _known_country(cls, value: str | None) -> str | None:
        if not value:
            return None
        _check_regions([value.upper()])
        return value.upper()

    @field_validator("okta_hook_oauth_issuer", "okta_org_url", "twilio_api_base_url", "public_url")
    @classmethod
    def _outbound(cls, value: str | None) -> str | None:
        """Keys, the API token and Twilio's credentials travel to these URLs, and Twilio posts receipts
        to PUBLIC_URL: https only (loopback excepted, for local stand-ins)."""
        return None if value is None else check_outbound_url(value)

    @field_validator("public_url")
    @classmethod
    def _the_functions_own(cls, value: str | None) -> str | None:
        """The function's URL, not one of its routes': receipts go to {PUBLIC_URL}/twilio/status, which
        with the route's path in PUBLIC_URL would be the telephony hook's path, refusing every receipt."""
        if value is None:
            return None
        url = urlsplit(value)
        # As a server may read it: percent-escapes decoded, any case, repeated slashes and dot segments
        if posixpath.normpath("/" + unquote(url.path).lower()).endswith(("/twilio/status", "/okta/events")):
            raise ValueError("must be the function's URL, without /twilio/status or /okta/events")
        if url.port == 0:
            raise ValueError("must name a port Twilio can reach (not 0)")
        return value

    @field_validator("okta_hook_oauth_jwks_url")
    @classmethod
    def _jwks_outbound(cls, value: str | None) -> str | None:
        """Keys fetched over plain HTTP can be swapped by anyone on the path. A query is allowed: some
        issuers name the client in it."""
        return None if value is None else check_outbound_url(value, query=True)

    @field_validator("sms_template")
    @classmethod
    def _template_has_code(cls, value: str | None) -> str | None:
        if value is not None and CODE_PLACEHOLDER not in value:
            raise ValueError(f"must contain the {CODE_PLACEHOLDER} placeholder")
        return value

    @field_validator("voice_phrases", "guard_limits_by_country", mode="before")
    @classmethod
    def _object_from_json(cls, value: Any) -> Any:
        if isinstance(value, str):
            if not value:
                return {}
            try:
                return json.loads(value, object_pairs_hook=_once_each)
            except json.JSONDecodeError as error:
                raise ValueError(f"must be a JSON object ({error.msg})") from None
        return value

    @field_validator("guard_mode", mode="before")
    @classmethod
    def _guard_mode(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() not in ("enforce", "monitor", "off"):
            raise ValueError("must be enforce, monitor or off")
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("guard_storage_uri")
    @classmethod
    def _store_uri(cls, value: SecretStr | None) -> SecretStr | None:
        """The message never repeats the value: it may hold Redis's AUTH string."""
        if value is None:
            return None
        uri = value.get_secret_value()
        if uri == "memory://":
            return None
        shape = "must be memory://, or redis://[:password@]host[:port][/db] (rediss:// for TLS)"
        if not re.match(r"^rediss?://[^\s/]+(/[0-9]{0,2})?(\?\S*)?$", uri):
            raise ValueError(shape)
        try:  # read as redis-py will read it: a host or port it cannot parse stops the start here
            parts = urlsplit(uri)
            _ = parts.port, parts.password
        except ValueError:
            raise ValueError(shape) from None
        if not parts.hostname:
            raise ValueError(shape)
        _redis_options(uri)
        return value

    @field_validator("guard_hash_key")
    @classmethod
    def _long_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("must be at least 16 characters (e.g. openssl rand -hex 32)")
        return value

    @field_validator(
        "guard_number_limit", "guard_new_number_limit", "guard_range_limit", "guard_country_limit", "guard_all_limit"
    )
    @classmethod
    def _rates(cls, value: str) -> str:
        parse_rates(value)
        return value

    @field_validator("guard_limits_by_country")
    @classmethod
    def _limits_by_country(cls, value: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
        checked = {country.upper(): limits for country, limits in value.items()}
        twice = _given_twice(map(str.upper, value))
        if twice:
            raise ValueError(f"{', '.join(twice)} is given twice (country codes in any case are one)")
        _check_regions([country for country in checked if country != phone.NON_GEOGRAPHIC])
        for country, limits in checked.items():
            if not limits:
                raise ValueError(f"{country} sets no limit: give 'range' or 'country', or leave it out")
            unknown = set(limits) - {"range", "country"}
            if unknown:
                raise ValueError(f"{country}: only 'range' and 'country' limits may be set, not {sorted(unknown)}")
            for scope, text in limits.items():
                try:
                    parse_rates(text)
                except ValueError as error:
                    raise ValueError(f"{country} {scope}: {error}") from None
        return checked

    @field_validator("allowed_countries", "blocked_number_types", mode="before")
    @classmethod
    def _csv(cls, value: Any) -> Any:
        return _split_csv(value)

    @field_validator("allowed_countries")
    @classmethod
    def _iso_countries(cls, value: list[str]) -> list[str]:
        countries = [country.upper() for country in value]
        _check_regions([country for country in countries if country != phone.NON_GEOGRAPHIC])
        return countries

    @field_validator("blocked_number_types")
    @classmethod
    def _known_number_types(cls, value: list[str]) -> list[str]:
        types = [kind.upper() for kind in value]
        bad = [kind for kind in types if kind not in phone.NUMBER_TYPES]
        if bad:
            known = ", ".join(sorted(phone.NUMBER_TYPES))
            raise ValueError(f"unknown number types: {', '.join(bad)} (known: {known})")
        return types

    @field_validator("okta_hook_auth_header", "okta_event_hook_auth_header")
    @classmethod
    def _header_name(cls, value: str) -> str:
        if not _HEADER_NAME.fullmatch(value):
            raise ValueError("not a header name: letters, digits and !#$%&'*+-.^`|~ only, no space or colon")
        if "_" in value:  # gunicorn, as many proxies, drops such headers: every call would be refused
            raise ValueError("a header name with '_' never reaches the function (its server drops it): use '-'")
        if value.lower() in _PLATFORM_HEADERS:
            raise ValueError(f"{value} is a header proxies drop or rewrite: choose a name of your own")
        return value

    @field_validator("voice_name")
    @classmethod
    def _voice(cls, value: str | None) -> str | None:
        # Twilio reads it once the call is answered, long after the hook answered SUCCESSFUL.
        if value is not None and not _VOICE.fullmatch(value):
            raise ValueError("not a voice as Twilio names them: man, woman, alice, or Polly.Joanna, Google.en-US-…")
        return value

    @field_validator("okta_provider_name")
    @classmethod
    def _shown_name(cls, value: str) -> str:
        # Repeated in every SUCCESSFUL answer, which admins read: no control or direction characters.
        if _UNSHOWABLE.search(value):
            raise ValueError("must be plain text: no control characters or text-direction marks")
        return value

    @field_validator("okta_hook_oauth_issuer")
    @classmethod
    def _issuer(cls, value: str | None) -> str | None:
        # A token's `iss` must equal it exactly, and Okta's issuers never end in '/'.
        if value is not None and value.endswith("/"):
            raise ValueError("Okta's issuers never end in '/': remove it (a token's iss must match exactly)")
        return value

    @field_validator("okta_hook_oauth_scope")
    @classmethod
    def _one_scope(cls, value: str | None) -> str | None:
        # Okta's `scp` lists scopes one by one: the hook checks that one of them is this one.
        if value is not None and not re.fullmatch(r"[!#-\[\]-~]+", value):
            raise ValueError("one scope (RFC 6749 scope-token): printable ASCII, no space, quote or backslash")
        return value

    @field_validator(
        "okta_hook_auth_secret",
        "okta_event_hook_auth_secret",
        "okta_api_token",
        "twilio_auth_token",
        "twilio_api_secret",
    )
    @classmethod
    def _header_safe(cls, value: SecretStr | None) -> SecretStr | None:
        # Each travels in an HTTP header value (Okta's, SSWS, Basic): anything else cannot arrive byte for
        # byte, and an HTTP client refusing it would repeat the whole header in its error.
        if value is not None and not all(" " <= char <= "~" for char in value.get_secret_value()):
            raise ValueError("must be printable ASCII: it travels in an HTTP header")
        return value

    @field_validator("okta_hook_auth_secret", "okta_event_hook_auth_secret")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        # The secrets the admin makes up: a short one can be guessed, and every line of the log hides each
        # occurrence of it (a secret 'a' or 'delivered' garbled every line, and the metrics' labels).
        if value is not None and 0 < len(value.get_secret_value().strip()) < MIN_SECRET_CHARACTERS:
            raise ValueError(f"must be at least {MIN_SECRET_CHARACTERS} characters (openssl rand -base64 32 makes one)")
        return value

    @model_validator(mode="after")
    def _pairs_complete(self) -> Self:
        # Each message starts with the variable to set or change: the start-up error names it first.
        if (self.twilio_api_key is None) != (self.twilio_api_secret is None):
            missing = "TWILIO_API_KEY" if self.twilio_api_key is None else "TWILIO_API_SECRET"
            raise ValueError(f"{missing}: TWILIO_API_KEY and TWILIO_API_SECRET go together")
        oauth = {
            "OKTA_HOOK_OAUTH_ISSUER": self.okta_hook_oauth_issuer,
            "OKTA_HOOK_OAUTH_AUDIENCE": self.okta_hook_oauth_audience,
            "OKTA_HOOK_OAUTH_SCOPE": self.okta_hook_oauth_scope,
        }
        if any(oauth.values()) and not all(oauth.values()):
            missing = ", ".join(name for name, value in oauth.items() if not value)
            raise ValueError(f"{missing}: OAuth needs {', '.join(oauth)} together")
        both = self.oauth_configured and self.header_secret_configured
        if both and self.okta_hook_auth_header.lower() == "authorization":
            raise ValueError(
                "OKTA_HOOK_AUTH_HEADER: with OAuth on, the bearer token takes the Authorization header: "
                "set it to another header for the secret"
            )
        return self

    # --- derived facts, decided here once

    @property
    def header_secret_configured(self) -> bool:
        return bool(self.okta_hook_auth_secret and self.okta_hook_auth_secret.get_secret_value())

    @property
    def oauth_configured(self) -> bool:
        return bool(self.okta_hook_oauth_issuer)

    @property
    def jwks_url(self) -> str | None:
        if not self.okta_hook_oauth_issuer:
            return None
        return self.okta_hook_oauth_jwks_url or self.okta_hook_oauth_issuer.rstrip("/") + "/v1/keys"

    def secret_values(self) -> list[str]:
        """Every configured secret, so the log setup can make sure none is ever written."""
        secrets = (getattr(self, name) for name in _secret_fields())
        values = [secret.get_secret_value() for secret in secrets if secret and secret.get_secret_value()]
        if self.guard_storage_uri is not None:  # the AUTH string alone, as an error might spell it
            password = urlsplit(self.guard_storage_uri.get_secret_value()).password
            values += [password] if password else []
        # Twilio's client sends its credential as HTTP Basic: a peer that echoes our request spells it so.
        for user, secret in (
            (self.twilio_api_key, self.twilio_api_secret),
            (self.twilio_account_sid, self.twilio_auth_token),
        ):
            if user and secret and secret.get_secret_value():
                values.append(base64.b64encode(f"{user}:{secret.get_secret_value()}".encode()).decode())
        # An error message may spell a header as Python's repr does ('\\' for a backslash).
        escaped = {spelling for value in values for spelling in (repr(value.encode())[2:-1], repr(value)[1:-1])}
        return values + sorted(escaped - set(values))


# What GUARD_STORAGE_URI may carry after '?': TLS's settings and the connections' name (the store sets
# its own timeouts, keepalive and protocol, and the database, user and password are the URI's own).
STORE_QUERY_OPTIONS = frozenset(
    {
        "client_name",
        "ssl_ca_certs",
        "ssl_ca_path",
        "ssl_ca_data",
        "ssl_certfile",
        "ssl_keyfile",
        "ssl_password",
        "ssl_cert_reqs",
        "ssl_check_hostname",
        "ssl_min_version",
        "ssl_ciphers",
        "ssl_include_verify_flags",
        "ssl_exclude_verify_flags",
    }
)


def _redis_options(uri: str) -> None:
    """A Redis URI's options read as redis-py will read them at start-up (its query: the connections'
    name and TLS's settings), and over TLS the files it names loaded: a value that cannot work stops
    the start here, with the setting's message. The value and redis-py's words are not repeated: the
    URI may hold the AUTH string."""
    import redis  # only when a Redis store is configured: it costs start-up time

    from telephony.store import tls_context

    unusable = (
        "has an option Redis cannot use after '?' (one this function does not take: it takes client_name"
        " and the ssl_ ones; a misspelled name; a value of the wrong kind; or a certificate file that is"
        " missing or not PEM)"
    )
    try:
        options = redis.connection.parse_url(uri)  # type: ignore[no-untyped-call]
    except ValueError:
        raise ValueError(unusable) from None
    asked = set(parse_qs(urlsplit(uri).query, keep_blank_values=True))
    if {"ssl_validate_ocsp", "ssl_validate_ocsp_stapled"} & asked:
        raise ValueError("asks for OCSP checks, which need pyOpenSSL: this function does not install it")
    if {"db", "username", "password"} & asked:  # redis-py would take them over the URI's own
        raise ValueError("has a database, user or password after '?': they go in the URI (redis://:PASSWORD@HOST/DB)")
    if asked - STORE_QUERY_OPTIONS:  # the others pass the start, then fail or change every connection
        raise ValueError(unusable)
    if any(not "!" <= character <= "~" for character in options.get("client_name") or ""):
        # Redis refuses such a name at every connect: the guard would run unguarded, failing open
        raise ValueError("has a client_name Redis refuses: visible ASCII characters only, no spaces")
    try:
        options.pop("connection_class", None)
        connection = (redis.SSLConnection if uri.startswith("rediss://") else redis.Connection)(**options)
        if uri.startswith("rediss://"):
            tls_context(connection, system_authorities=False)  # the CA, certificate and key files it names
    except (ValueError, TypeError, redis.RedisError, OSError):  # OSError: ssl.SSLError too
        raise ValueError(unusable) from None


def spellings() -> dict[str, list[str]]:
    """Every variable the hook reads: its documented name, and every spelling it is also read under
    (the documented one first, the one read first)."""
    names: dict[str, list[str]] = {}
    for field in Settings.model_fields.values():
        if field.alias:
            names[field.alias] = [field.alias]
        elif isinstance(field.validation_alias, AliasChoices):
            choices = [choice for choice in field.validation_alias.choices if isinstance(choice, str)]
            names[choices[0]] = choices
    return names


def env_names(all_spellings: bool = False) -> list[str]:
    """Every variable the hook reads, by its documented name (or with every accepted spelling)."""
    return [name for each in spellings().values() for name in (each if all_spellings else each[:1])]


def _secret_fields() -> list[str]:
    """The settings that hold secrets: the SecretStr ones, so a new secret cannot be forgotten."""
    return [name for name, field in Settings.model_fields.items() if SecretStr in get_args(field.annotation)]


def secret_env_names() -> list[str]:
    """The variables that hold secrets: they come from Secret Manager, never from plain settings."""
    return [name.upper() for name in _secret_fields()]


class SettingsError(SystemExit):
    """The configuration is invalid: the message names each variable and why, never a secret's value."""


def unknown_names(names: Iterable[str], also_read: Iterable[str], what: str) -> list[str]:
    """Each of `names` that neither a setting nor `also_read` is, as the tools that take variables
    (make deploy, make run's .env) name it: with the name it likely meant (ALLOWED_COUNTRY: did you mean
    ALLOWED_COUNTRIES?). A name not shaped like a variable's may be a value (a secret ending in '=',
    pasted alone): never repeated, `what` holding it is named instead."""
    import difflib  # the tools' need, not the function's start

    known = sorted({*env_names(all_spellings=True), *also_read})
    found = []
    for name in names:
        if name in known:
            continue
        if not re.fullmatch(r"[A-Z][A-Z0-9_-]{0,63}", name):
            found.append(f"{what} whose name is not a variable's (not repeated here)")
            continue
        close = difflib.get_close_matches(name.replace("-", "_"), known, n=1)
        found.append(f"{name} (did you mean {close[0]}?)" if close else name)
    return found


def _given_twice(keys: Iterable[str]) -> list[str]:
    return sorted(key for key, count in Counter(keys).items() if count > 1)


def _once_each(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose keys are each given once: json.loads would keep the last of two silently."""
    twice = _given_twice(key for key, _ in pairs)
    if twice:
        raise ValueError(f"{', '.join(twice)} is given twice")
    return dict(pairs)


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read and validate the configuration; empty variables count as unset."""
    source = os.environ if environ is None else environ
    values = {name: value for name, value in source.items() if value.strip() != ""}
    try:
        return Settings.model_validate(values)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in issue['loc'])}: {issue['msg']}"
            if issue["loc"]
            else str(issue["msg"]).removeprefix("Value error, ")  # a rule over several: its message names them
            for issue in error.errors(include_input=False, include_url=False)
        )
        raise SettingsError(f"Invalid configuration: {problems}") from None
