"""Configuration that can never work is refused at start-up, naming the variable, never its value."""

from __future__ import annotations

from pathlib import Path

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


@pytest.mark.parametrize("name", ["OKTA_HOOK_AUTH_HEADER", "OKTA_EVENT_HOOK_AUTH_HEADER"])
@pytest.mark.parametrize("header", ["X_Okta_Secret", "X Okta", "X-Okta:", "X-Ökta", "x" * 257])
def test_a_header_name_the_function_would_never_see_stops_the_start(name: str, header: str) -> None:
    """gunicorn (functions-framework's server) drops every header whose name holds '_', as many proxies
    do: a hook told to read one would refuse every call, its lines blaming a missing header."""
    with pytest.raises(SettingsError, match=name):
        load_settings({name: header})


@pytest.mark.parametrize("name", ["OKTA_HOOK_AUTH_HEADER", "OKTA_EVENT_HOOK_AUTH_HEADER"])
def test_an_underscore_in_a_header_name_is_explained(name: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({name: "X_Okta_Secret"})
    assert "'_'" in str(caught.value) and "'-'" in str(caught.value)
    assert load_settings({name: "X-Okta-Secret"}).model_dump(by_alias=True)[name] == "X-Okta-Secret"


@pytest.mark.parametrize(
    "name", ["OKTA_EVENT_HOOK_AUTH_SECRET", "OKTA_API_TOKEN", "TWILIO_AUTH_TOKEN", "TWILIO_API_SECRET"]
)
@pytest.mark.parametrize("secret", ["00aBc-Zq8wX\n0123456789", "sécret-Zq8wX", "nul\x00-Zq8wX", "tab\there-Zq8wX"])
def test_every_secret_sent_in_a_header_must_be_printable_ascii(name: str, secret: str) -> None:
    """Each travels in an HTTP header (the event hook's as Okta sends it, the API token as SSWS, Twilio's
    as Basic, and the auth token also signs receipts): any other character cannot arrive byte for byte,
    and a value with a line break made the HTTP client raise with the whole header in its message."""
    settings = {name: secret}
    if name == "TWILIO_API_SECRET":
        settings["TWILIO_API_KEY"] = "SK" + "a" * 32
    with pytest.raises(SettingsError) as caught:
        load_settings(settings)
    message = str(caught.value)
    assert name in message and "printable ASCII" in message
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


@pytest.mark.parametrize("name", ["TWILIO_REGION", "TWILIO_EDGE"])
@pytest.mark.parametrize(
    "value", ["evil.example#", "x@127.0.0.1:9#", "ie1/x?", "Dublin", "dub lin", "-dublin", "a" * 64, "dublin."]
)
def test_twilio_region_and_edge_are_one_label_of_twilios_host(name: str, value: str) -> None:
    """The twilio library builds api.{edge}.{region}.twilio.com from them as given: 'evil.example#' made
    the host evil.example, where the account's credentials went. Named, never echoed (a typo may be a
    pasted secret)."""
    with pytest.raises(SettingsError, match=name) as caught:
        load_settings({name: value})
    assert value not in str(caught.value)


def test_twilio_region_and_edge_route_the_client_from_the_settings_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    from telephony.delivery import build_client

    twilio = {"TWILIO_ACCOUNT_SID": "AC" + "a" * 32, "TWILIO_AUTH_TOKEN": "t" * 32}
    url = "https://api.twilio.com/2010-04-01/Accounts/AC/Messages.json"
    client = build_client(load_settings({**twilio, "TWILIO_REGION": "ie1", "TWILIO_EDGE": "dublin"}))
    assert client is not None
    assert client.get_hostname(url) == "https://api.dublin.ie1.twilio.com/2010-04-01/Accounts/AC/Messages.json"
    # The library reads os.environ itself when not told: a value the settings never checked is not used.
    monkeypatch.setenv("TWILIO_EDGE", "evil.example#")
    client = build_client(load_settings(twilio))
    assert client is not None and client.get_hostname(url) == url


@pytest.mark.parametrize(
    "value",
    [
        "https://hook.example.com/twilio/status",
        "https://hook.example.com/fn/okta/events/",
        "https://hook.example.com:0",
        # as a server may read the path: any case, repeated slashes, dot segments, percent-escapes
        "https://hook.example.com/TWILIO/STATUS",
        "https://hook.example.com/twilio//status",
        "https://hook.example.com/twilio/status/x/..",
        "https://hook.example.com/twilio/%73tatus",
    ],
)
def test_public_url_is_the_functions_own(value: str) -> None:
    """Receipts go to {PUBLIC_URL}/twilio/status: with the route in PUBLIC_URL, to the telephony hook."""
    with pytest.raises(SettingsError, match="PUBLIC_URL"):
        load_settings({"PUBLIC_URL": value})
    assert load_settings({"PUBLIC_URL": "https://hook.example.com/fn"}).public_url == "https://hook.example.com/fn"
    for legitimate in ("https://hook.example.com/okta/events-hook", "https://hook.example.com/twilio/status-fn"):
        assert load_settings({"PUBLIC_URL": legitimate}).public_url == legitimate


# Each outbound URL with the variables it needs beside it, so that only the URL can be wrong.
NEEDS = {
    "OKTA_HOOK_OAUTH_ISSUER": {**OAUTH},
    "OKTA_HOOK_OAUTH_JWKS_URL": {**OAUTH},
    "OKTA_ORG_URL": {},
    "TWILIO_API_BASE_URL": {},
    "PUBLIC_URL": {},
}

# URL tricks: each reads as one host to one parser and as another to the HTTP library, carries
# credentials, or sends over plain http away from loopback. 'Qv7' marks the value: never echoed.
TRICKS = [
    "http://evil.example\\@localhost/Qv7",  # urllib3 calls evil.example; urlsplit sees localhost
    "http://evil.example\\@127.0.0.1/Qv7",
    "https://acme.okta.com\\@evil.example/Qv7",
    "http://127.0.0.1:80@evil.example/Qv7",  # userinfo that looks like loopback
    "https://user:Qv7@acme.okta.com",  # userinfo: credentials in the URL
    "https://Qv7@acme.okta.com",
    "http://localhost.evil.example/Qv7",
    "http://127.0.0.1.evil.example/Qv7",
    "http://%6cocalhost/Qv7",  # a percent-escaped host
    "http://evil.example/Qv7",  # plain http to another host
    "http://api.twilio.com/Qv7",
    "ftp://acme.okta.com/Qv7",
    "https://acme.okta.com/Qv7 x",  # a space
    "https://acme.okta.com:99999/Qv7",  # no such port
    "https://acme.okta.com/Qv7#fragment",
    "https://acme.okta.com/Qv7#",  # an empty fragment, or query, says nothing and is refused all the same
    "https://acme.okta.com/Qv7?",
]


@pytest.mark.parametrize("name", sorted(NEEDS))
@pytest.mark.parametrize("url", TRICKS)
def test_every_outbound_url_is_refused_when_a_url_trick_is_played(name: str, url: str) -> None:
    if name == "OKTA_ORG_URL" and "/Qv7" in url:
        url = url.replace("/Qv7", "", 1) + "/"  # an org URL has no path
    with pytest.raises(SettingsError) as caught:
        load_settings({**NEEDS[name], name: url})
    message = str(caught.value)
    assert name.lower() in message.lower() or name in message
    assert "Qv7" not in message and "evil" not in message


@pytest.mark.parametrize("name", sorted(NEEDS))
@pytest.mark.parametrize("host", ["127.0.0.1:8080", "localhost", "[::1]:9000", "LOCALHOST"])
def test_every_outbound_url_may_be_plain_http_on_loopback(name: str, host: str) -> None:
    url = f"http://{host}" + ("" if name == "OKTA_ORG_URL" else "/base")
    settings = load_settings({**NEEDS[name], name: url})
    assert url in {settings.okta_hook_oauth_issuer, settings.jwks_url, settings.okta_org_url,
                   settings.twilio_api_base_url, settings.public_url}  # fmt: skip


def test_a_jwks_url_may_name_the_client_in_its_query() -> None:
    url = "https://acme.okta.com/oauth2/v1/keys?client_id=0oa1hook"
    assert load_settings({**OAUTH, "OKTA_HOOK_OAUTH_JWKS_URL": url}).jwks_url == url


@pytest.mark.parametrize("uri", ["redis://:LeakMe3@[::1/0", "redis://:LeakMe3@host:port99/0", "redis://:LeakMe3@/0"])
def test_a_store_uri_redis_could_not_read_stops_the_start_without_repeating_it(uri: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({"GUARD_STORAGE_URI": uri})
    assert "GUARD_STORAGE_URI" in str(caught.value) and "LeakMe3" not in str(caught.value)


def test_a_store_uri_may_carry_redis_options_in_its_query(tmp_path: Path) -> None:
    """TLS with a certificate authority of its own (Memorystore's in-transit encryption, a private CA)."""
    from tests.standins import self_signed

    authority, _key = self_signed(tmp_path)
    uri = f"rediss://:pw@10.0.0.3:6378/0?ssl_ca_certs={authority}"
    settings = load_settings({"GUARD_STORAGE_URI": uri})
    assert settings.guard_storage_uri is not None and settings.guard_storage_uri.get_secret_value() == uri


def test_twilios_timeout_fits_the_hooks_budget_which_leaves_okta_room() -> None:
    """Okta's 3 s hold the network and, with OAuth, its own token fetch: the hook answers within 2.5 s,
    and Twilio's deadline cannot be set past that."""
    from telephony.settings import HOOK_BUDGET_SECONDS

    assert HOOK_BUDGET_SECONDS <= 2.5
    assert (
        load_settings({"TWILIO_TIMEOUT_SECONDS": str(HOOK_BUDGET_SECONDS)}).twilio_timeout_seconds
        == HOOK_BUDGET_SECONDS
    )
    with pytest.raises(SettingsError, match="TWILIO_TIMEOUT_SECONDS"):
        load_settings({"TWILIO_TIMEOUT_SECONDS": "2.8"})


@pytest.mark.parametrize("name", ["TWILIO_TIMEOUT_SECONDS", "OKTA_API_TIMEOUT_SECONDS"])
@pytest.mark.parametrize("value", ["1e-9", "0.000001", "0.1"])
def test_a_deadline_no_real_call_can_meet_stops_the_start(name: str, value: str) -> None:
    """1e-9 passed the start, and every hook then answered TWILIO_TIMEOUT 'within 0 s'."""
    with pytest.raises(SettingsError, match=name):
        load_settings({name: value})
    assert getattr(load_settings({name: "0.2"}), name.lower()) == 0.2


def test_an_issuer_ending_in_a_slash_stops_the_start() -> None:
    """Okta's issuers never end in '/', and a token's `iss` must equal the issuer exactly: a slash would
    have every token refused (the key set, read from the issuer without it, loading fine)."""
    with pytest.raises(SettingsError, match="OKTA_HOOK_OAUTH_ISSUER") as caught:
        load_settings({**OAUTH, "OKTA_HOOK_OAUTH_ISSUER": ISSUER + "/"})
    assert "'/'" in str(caught.value)


@pytest.mark.parametrize("scope", ["s1 s2", "s1\ts2", 's1"s2', "scöpe"])
def test_a_scope_that_no_token_can_carry_whole_stops_the_start(scope: str) -> None:
    """The hook checks one scope: Okta's `scp` lists scopes one by one, so 's1 s2' would never match."""
    with pytest.raises(SettingsError, match="OKTA_HOOK_OAUTH_SCOPE"):
        load_settings({**OAUTH, "OKTA_HOOK_OAUTH_SCOPE": scope})


@pytest.mark.parametrize("name", ["OKTA_HOOK_AUTH_HEADER", "OKTA_EVENT_HOOK_AUTH_HEADER"])
@pytest.mark.parametrize(
    "header",
    ["Connection", "keep-alive", "TE", "Transfer-Encoding", "Upgrade", "Host", "Content-Length", "X-Forwarded-For",
     "Forwarded", "traceparent", "X-Cloud-Trace-Context", "Proxy-Authorization",
     "X-Serverless-Authorization"],  # Cloud Run reads it as an identity token
)  # fmt: skip
def test_a_header_the_platform_owns_stops_the_start(name: str, header: str) -> None:
    """Proxies drop or rewrite these (RFC 9110's hop-by-hop fields, the framing, Cloud Run's own): a
    secret in one would work locally and be refused on every call once deployed."""
    with pytest.raises(SettingsError, match=name) as caught:
        load_settings({name: header})
    assert "proxies" in str(caught.value)


@pytest.mark.parametrize(
    ("settings", "first"),
    [
        ({"TWILIO_API_KEY": "SK" + "1" * 32}, "TWILIO_API_SECRET"),
        ({"TWILIO_API_SECRET": "s3cret-Zq8wX"}, "TWILIO_API_KEY"),
        ({"OKTA_HOOK_OAUTH_ISSUER": ISSUER}, "OKTA_HOOK_OAUTH_AUDIENCE, OKTA_HOOK_OAUTH_SCOPE"),
        ({**OAUTH, "OKTA_HOOK_AUTH_SECRET": "s3cret-Zq8wX-Lm4pR"}, "OKTA_HOOK_AUTH_HEADER"),
    ],
)
def test_a_rule_over_several_settings_names_the_one_to_set_first(settings: dict[str, str], first: str) -> None:
    """configuration.md: each problem gives the variable's name, where a single setting's would."""
    with pytest.raises(SettingsError) as caught:
        load_settings(settings)
    assert str(caught.value).startswith(f"Invalid configuration: {first}: ")
    assert "Zq8wX" not in str(caught.value)


@pytest.mark.parametrize(
    "name", ["TWILIO\x00", "TWI\u202eLIO", "TWILIO\nX-Injected: 1", "TWI\u200dLIO", "TWI\u2028LIO"]
)
def test_a_provider_name_with_control_characters_stops_the_start(name: str) -> None:
    """It is repeated in every SUCCESSFUL answer to Okta, shown to admins."""
    with pytest.raises(SettingsError, match="OKTA_PROVIDER_NAME"):
        load_settings({"OKTA_PROVIDER_NAME": name})


@pytest.mark.parametrize(
    ("limits", "problem"),
    [
        ('{"US": {"country": "60/hour"}, "us": {"range": "9/hour"}}', "US is given twice"),
        ('{"US": {"country": "60/hour"}, "US": {"range": "9/hour"}}', "US is given twice"),
        ('{"US": {}}', "US sets no limit"),
    ],
)
def test_country_overrides_that_would_be_silently_merged_or_empty_stop_the_start(limits: str, problem: str) -> None:
    with pytest.raises(SettingsError, match=f"GUARD_LIMITS_BY_COUNTRY: .*{problem}"):
        load_settings({"GUARD_LIMITS_BY_COUNTRY": limits})


@pytest.mark.parametrize(
    "voice",
    ["Polly.Joanna", "Polly.Joanna-Neural", "Google.en-US-Standard-C", "man", "woman", "Polly.L\u00e9a-Neural"],
)
def test_a_voice_as_twilio_names_them_is_accepted(voice: str) -> None:
    assert load_settings({"VOICE_NAME": voice}).voice_name == voice


@pytest.mark.parametrize("voice", ["Joanna", "polly joanna", "Polly.", "<Joanna>", "Polly.Jo anna", "Polly.Jo<a"])
def test_a_voice_twilio_could_not_name_stops_the_start(voice: str) -> None:
    """Twilio reads it when the call is answered, long after the hook answered SUCCESSFUL: a call that
    fails then stops Okta's fallback for nothing."""
    with pytest.raises(SettingsError, match="VOICE_NAME"):
        load_settings({"VOICE_NAME": voice})
