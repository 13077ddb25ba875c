"""The hook's configuration: read from the environment once, validated, and the only place that does so.

A plain pydantic model rather than pydantic-settings: pydantic-settings' imports would be paid at
every cold start, time that comes out of Okta's 3 s budget, and the environment is the only source
we read.
"""

# No `from __future__ import annotations`: see models.py.
import json
import os
import re
from collections.abc import Mapping
from typing import Annotated, Any, Self, get_args
from urllib.parse import urlsplit

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

from telephony import phone
from telephony.twilio_facts import SMS_MAX_CHARS, sid_pattern

E164_PATTERN = r"^\+[1-9][0-9]{6,14}$"
CODE_PLACEHOLDER = "{code}"  # where SMS_TEMPLATE and VOICE_PHRASES put the one-time code

# Number types an OTP never needs to reach: calling or texting them earns someone else money (SMS
# pumping). Names are libphonenumber's PhoneNumberType members.
DEFAULT_BLOCKED_NUMBER_TYPES = ("PREMIUM_RATE", "SHARED_COST", "UAN", "VOICEMAIL", "PAGER")

_CSV = re.compile(r"[,\s]+")
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


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
    okta_api_timeout_seconds: float = Field(0.8, alias="OKTA_API_TIMEOUT_SECONDS", gt=0, le=1.5)

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
        "Twilio posts delivery receipts to it. Unset: taken from each hook's request.",
    )
    # Okta gives up after 3 s; 2 s for Twilio leaves room for Okta's network and our own work.
    twilio_timeout_seconds: float = Field(2.0, alias="TWILIO_TIMEOUT_SECONDS", gt=0, le=2.8)

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

    @field_validator("okta_org_url")
    @classmethod
    def _org_over_https(cls, value: str | None) -> str | None:
        """The API token travels to this URL: https only (loopback excepted, for local stand-ins)."""
        if value and not re.match(r"^(https://|http://(127\.0\.0\.1|localhost|\[::1\])(:[0-9]+)?/?$)", value):
            raise ValueError("must be an https:// URL (http only on loopback)")
        return value

    @field_validator("sms_template")
    @classmethod
    def _template_has_code(cls, value: str | None) -> str | None:
        if value is not None and CODE_PLACEHOLDER not in value:
            raise ValueError(f"must contain the {CODE_PLACEHOLDER} placeholder")
        return value

    @field_validator("voice_phrases", mode="before")
    @classmethod
    def _phrases_from_json(cls, value: Any) -> Any:
        if isinstance(value, str):
            if not value:
                return {}
            try:
                return json.loads(value)
            except json.JSONDecodeError as error:
                raise ValueError(f"must be a JSON object ({error.msg})") from None
        return value

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

    @field_validator("okta_hook_auth_secret")
    @classmethod
    def _header_safe(cls, value: SecretStr | None) -> SecretStr | None:
        # Okta sends it as an HTTP header value: anything else cannot arrive byte for byte.
        if value is not None and not all(" " <= char <= "~" for char in value.get_secret_value()):
            raise ValueError("must be printable ASCII: it travels in an HTTP header")
        return value

    @field_validator("okta_hook_oauth_issuer", "okta_hook_oauth_jwks_url")
    @classmethod
    def _https(cls, value: str | None) -> str | None:
        # Keys fetched over plain HTTP can be swapped by anyone on the path; loopback serves tests.
        if value is not None and not value.lower().startswith("https://"):
            host = urlsplit(value).hostname or ""
            if host not in LOOPBACK_HOSTS:
                raise ValueError("must be an https URL (http only for localhost)")
        return value

    @model_validator(mode="after")
    def _pairs_complete(self) -> Self:
        if (self.twilio_api_key is None) != (self.twilio_api_secret is None):
            raise ValueError("TWILIO_API_KEY and TWILIO_API_SECRET go together")
        oauth = (self.okta_hook_oauth_issuer, self.okta_hook_oauth_audience, self.okta_hook_oauth_scope)
        if any(oauth) and not all(oauth):
            raise ValueError(
                "OAuth needs OKTA_HOOK_OAUTH_ISSUER, OKTA_HOOK_OAUTH_AUDIENCE and OKTA_HOOK_OAUTH_SCOPE together"
            )
        both = self.oauth_configured and self.header_secret_configured
        if both and self.okta_hook_auth_header.lower() == "authorization":
            raise ValueError(
                "with OAuth on, the bearer token takes the Authorization header: "
                "set OKTA_HOOK_AUTH_HEADER to another header for the secret"
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
        return [secret.get_secret_value() for secret in secrets if secret and secret.get_secret_value()]


def env_names(all_spellings: bool = False) -> list[str]:
    """Every variable the hook reads, by its documented name (or with every accepted spelling)."""
    names: list[str] = []
    for field in Settings.model_fields.values():
        if field.alias:
            names.append(field.alias)
        elif isinstance(field.validation_alias, AliasChoices):
            spellings = [choice for choice in field.validation_alias.choices if isinstance(choice, str)]
            names += spellings if all_spellings else spellings[:1]
    return names


def _secret_fields() -> list[str]:
    """The settings that hold secrets: the SecretStr ones, so a new secret cannot be forgotten."""
    return [name for name, field in Settings.model_fields.items() if SecretStr in get_args(field.annotation)]


def secret_env_names() -> list[str]:
    """The variables that hold secrets: they come from Secret Manager, never from plain settings."""
    return [name.upper() for name in _secret_fields()]


class SettingsError(SystemExit):
    """The configuration is invalid: the message names each variable and why, never a secret's value."""


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read and validate the configuration; empty variables count as unset."""
    source = os.environ if environ is None else environ
    values = {name: value for name, value in source.items() if value.strip() != ""}
    try:
        return Settings.model_validate(values)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in issue['loc']) or 'settings'}: {issue['msg']}"
            for issue in error.errors(include_input=False, include_url=False)
        )
        raise SettingsError(f"Invalid configuration: {problems}") from None
