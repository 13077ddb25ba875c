"""Configuration that can never work is refused at start-up, naming the variable, never its value."""

from __future__ import annotations

import pytest

from telephony.settings import SettingsError, load_settings

ISSUER = "https://acme.okta.com/oauth2/aus1hook"
OAUTH = {"OKTA_HOOK_OAUTH_ISSUER": ISSUER, "OKTA_HOOK_OAUTH_AUDIENCE": "api://hook", "OKTA_HOOK_OAUTH_SCOPE": "s"}


@pytest.mark.parametrize(
    "secret", ["sécret-Zq8wX", "tab\there-Zq8wX", "line\nbreak-Zq8wX", "nul\x00-Zq8wX", "€uro-Zq8wX"]
)
def test_a_hook_secret_that_cannot_travel_in_a_header_is_refused(secret: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({"OKTA_HOOK_AUTH_SECRET": secret})
    message = str(caught.value)
    assert "OKTA_HOOK_AUTH_SECRET" in message and "printable ASCII" in message
    assert "Zq8wX" not in message


def test_any_printable_ascii_secret_is_accepted() -> None:
    secret = "".join(chr(code) for code in range(0x21, 0x7F))
    settings = load_settings({"OKTA_HOOK_AUTH_SECRET": secret})
    assert settings.okta_hook_auth_secret is not None
    assert settings.okta_hook_auth_secret.get_secret_value() == secret


@pytest.mark.parametrize(
    ("name", "url"),
    [
        ("OKTA_HOOK_OAUTH_ISSUER", "http://acme.okta.com/oauth2/aus1hook-Qv7"),
        ("OKTA_HOOK_OAUTH_JWKS_URL", "http://acme.okta.com/oauth2/v1/keys-Qv7"),
        ("OKTA_HOOK_OAUTH_JWKS_URL", "http://127.0.0.1.evil.example/keys-Qv7"),
        ("OKTA_HOOK_OAUTH_JWKS_URL", "ftp://acme.okta.com/keys-Qv7"),
    ],
)
def test_oauth_urls_must_be_https(name: str, url: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({**OAUTH, name: url})
    assert name in str(caught.value) and "https" in str(caught.value)
    assert "Qv7" not in str(caught.value)


@pytest.mark.parametrize("host", ["127.0.0.1:8080", "localhost", "[::1]:9000"])
def test_loopback_http_is_allowed_for_tests(host: str) -> None:
    settings = load_settings({**OAUTH, "OKTA_HOOK_OAUTH_JWKS_URL": f"http://{host}/keys"})
    assert settings.jwks_url == f"http://{host}/keys"


@pytest.mark.parametrize("missing", sorted(OAUTH))
def test_half_configured_oauth_is_refused(missing: str) -> None:
    partial = {name: value for name, value in OAUTH.items() if name != missing}
    with pytest.raises(SettingsError, match="OAuth needs OKTA_HOOK_OAUTH_ISSUER, OKTA_HOOK_OAUTH_AUDIENCE"):
        load_settings(partial)


def test_voice_phrases_that_are_not_json_are_refused() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({"VOICE_PHRASES": "{es: Su codigo-Kx2"})
    assert "VOICE_PHRASES" in str(caught.value) and "must be a JSON object" in str(caught.value)
    assert "Kx2" not in str(caught.value)


def test_allowed_countries_may_name_the_non_geographic_region() -> None:
    assert load_settings({"ALLOWED_COUNTRIES": "us,001"}).allowed_countries == ["US", "001"]
    with pytest.raises(SettingsError, match="ALLOWED_COUNTRIES"):
        load_settings({"ALLOWED_COUNTRIES": "002"})
