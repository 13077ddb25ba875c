"""OAuth 2.0 bearer tokens: only an RS256 token from our issuer, for us, unexpired, with the scope."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from flask.testing import FlaskClient

from telephony.oauth import JWKS_TIMEOUT_SECONDS, MAX_TOKEN_BYTES, JwksCache, JwksUnavailable, fetch_jwks
from tests.helpers import HOOK_SECRET, OTP, AppFactory, first_reason, okta_request, post_hook
from tests.standins import http_answer, stand_in
from tools.sandbox.twilio_sandbox import SandboxState

ISSUER = "https://acme.okta.com/oauth2/aus1hook"
AUDIENCE = "api://okta-telephony-hook"
SCOPE = "okta.telephony.hook"
KID = "key-2026"


def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


SIGNING_KEY = new_key()
OTHER_KEY = new_key()


def public_jwk(key: rsa.RSAPrivateKey, kid: str) -> dict[str, Any]:
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    return {**jwk, "kid": kid, "alg": "RS256", "use": "sig"}


@dataclass
class Issuer:
    """A local authorization server's JWKS endpoint, counting fetches."""

    keys: list[dict[str, Any]] = field(default_factory=lambda: [public_jwk(SIGNING_KEY, KID)])
    fetches: int = 0
    down: bool = False
    url: str = ""


@pytest.fixture
def issuer() -> Iterator[Issuer]:
    state = Issuer()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.fetches += 1
            status, body = (503, b"{}") if state.down else (200, json.dumps({"keys": state.keys}).encode())
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/oauth2/aus1hook/v1/keys"
    yield state
    server.shutdown()


@pytest.fixture
def oauth_client(make_client: AppFactory, issuer: Issuer) -> FlaskClient:
    return make_client(
        OKTA_HOOK_AUTH_SECRET=None,
        OKTA_HOOK_OAUTH_ISSUER=ISSUER,
        OKTA_HOOK_OAUTH_AUDIENCE=AUDIENCE,
        OKTA_HOOK_OAUTH_SCOPE=SCOPE,
        OKTA_HOOK_OAUTH_JWKS_URL=issuer.url,
    )


def test_the_start_up_names_the_issuer_audience_and_scope_okta_must_match(
    make_client: AppFactory, issuer: Issuer, capfd: pytest.CaptureFixture[str]
) -> None:
    capfd.readouterr()
    make_client(
        OKTA_HOOK_OAUTH_ISSUER=ISSUER,
        OKTA_HOOK_OAUTH_AUDIENCE=AUDIENCE,
        OKTA_HOOK_OAUTH_SCOPE=SCOPE,
        OKTA_HOOK_OAUTH_JWKS_URL=issuer.url,
        OKTA_HOOK_AUTH_HEADER="X-Okta-Secret",
    )
    lines = [json.loads(line) for line in capfd.readouterr().out.splitlines() if line.startswith("{")]
    (line,) = [line["message"] for line in lines if "Okta's calls to the hook" in line["message"]]
    assert line == (
        "Okta's calls to the hook must carry the secret in the X-Okta-Secret header and OAuth 2.0 bearer "
        f"tokens from {ISSUER} (audience {AUDIENCE}, scope {SCOPE})."
    )


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 300, "sub": "0oa1hookclient",
        "cid": "0oa1hookclient", "scp": [SCOPE],
    }  # fmt: skip
    base.update(overrides)
    return {name: value for name, value in base.items() if value is not None}


def token(key: rsa.RSAPrivateKey = SIGNING_KEY, kid: str | None = KID, **claim_overrides: Any) -> str:
    headers = {"kid": kid} if kid else {}
    return jwt.encode(claims(**claim_overrides), key, algorithm="RS256", headers=headers)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned_token(alg: str, secret: bytes | None = None) -> str:
    head = b64(json.dumps({"alg": alg, "typ": "JWT", "kid": KID}).encode())
    body = b64(json.dumps(claims()).encode())
    signature = b64(hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()) if secret else ""
    return f"{head}.{body}.{signature}"


def bearer(client: FlaskClient, value: str) -> Any:
    return post_hook(client, okta_request(), secret=f"Bearer {value}")


def test_a_valid_token_is_accepted(oauth_client: FlaskClient, sandbox: SandboxState) -> None:
    response = bearer(oauth_client, token())
    assert response.status_code == 200
    assert response.get_json()["commands"][0]["value"][0]["status"] == "SUCCESSFUL"
    assert len(sandbox.requests) == 1


def test_scope_as_a_space_separated_string_is_accepted(oauth_client: FlaskClient) -> None:
    assert bearer(oauth_client, token(scp=None, scope=f"openid {SCOPE}")).status_code == 200


PUBLIC_PEM = SIGNING_KEY.public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
)

REFUSED_TOKENS = {
    "expired": lambda: token(exp=int(time.time()) - 120, iat=int(time.time()) - 600),
    "wrong audience": lambda: token(aud="api://someone-else"),
    "wrong issuer": lambda: token(iss="https://evil.example.com/oauth2/default"),
    "signed by another key": lambda: token(key=OTHER_KEY),
    "alg none": lambda: unsigned_token("none"),
    "HS256 signed with the public key": lambda: unsigned_token("HS256", PUBLIC_PEM),
    "unknown kid": lambda: token(key=OTHER_KEY, kid="rotated-away"),
    "no kid": lambda: token(kid=None),
    "garbage": lambda: "not-a-jwt",
    "no exp": lambda: token(exp=None),
    "no aud": lambda: token(aud=None),
    "empty": lambda: "",
}


@pytest.mark.parametrize("case", sorted(REFUSED_TOKENS))
def test_bad_tokens_are_refused_with_401(oauth_client: FlaskClient, sandbox: SandboxState, case: str) -> None:
    response = bearer(oauth_client, REFUSED_TOKENS[case]())
    assert response.status_code == 401, response.get_json()
    assert first_reason(response.get_json()) == "UNAUTHORIZED"
    assert sandbox.requests == []


def test_a_token_without_the_scope_is_403(oauth_client: FlaskClient, sandbox: SandboxState) -> None:
    response = bearer(oauth_client, token(scp=["okta.users.read"]))
    assert response.status_code == 403
    assert first_reason(response.get_json()) == "FORBIDDEN"
    assert sandbox.requests == []


def test_the_header_secret_is_no_bearer_token(oauth_client: FlaskClient) -> None:
    assert post_hook(oauth_client, okta_request(), secret=HOOK_SECRET).status_code == 401


def test_a_small_clock_skew_is_tolerated(oauth_client: FlaskClient) -> None:
    assert bearer(oauth_client, token(exp=int(time.time()) - 10)).status_code == 200


def test_one_jwks_fetch_serves_many_hooks(oauth_client: FlaskClient, issuer: Issuer) -> None:
    valid = token()
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda _: bearer(oauth_client, valid).status_code, range(24)))
    assert statuses == [200] * 24
    assert issuer.fetches == 1


def test_a_flood_of_unknown_kids_does_not_hammer_the_issuer(oauth_client: FlaskClient, issuer: Issuer) -> None:
    bearer(oauth_client, token())
    for index in range(20):
        assert bearer(oauth_client, token(kid=f"forged-{index}")).status_code == 401
    assert issuer.fetches == 1  # the keys were fetched moments ago: no refetch inside the interval


def test_key_rotation_is_picked_up_through_one_refetch(issuer: Issuer) -> None:
    clock = [1000.0]
    cache = JwksCache(issuer.url, clock=lambda: clock[0])
    assert cache.key(KID) is not None
    issuer.keys.append(public_jwk(OTHER_KEY, "key-2027"))
    clock[0] += 31
    assert cache.key("key-2027") is not None
    assert issuer.fetches == 2


def test_unreachable_jwks_answers_503_never_accepts(oauth_client: FlaskClient, issuer: Issuer) -> None:
    issuer.down = True
    for _ in range(3):  # the first call fetches; the next ones, inside the interval, do not
        response = bearer(oauth_client, token())
        assert response.status_code == 503
        assert "error" in response.get_json()
    assert issuer.fetches == 1


def test_cached_keys_keep_serving_when_the_issuer_goes_down(issuer: Issuer) -> None:
    clock = [0.0]
    cache = JwksCache(issuer.url, clock=lambda: clock[0])
    assert cache.key(KID) is not None
    issuer.down = True
    clock[0] += 7200  # keys are stale, the refresh fails
    assert cache.key(KID) is not None


def test_a_refresh_that_failed_is_tried_again_a_minute_later_so_a_revoked_key_stops(issuer: Issuer) -> None:
    """The known keys keep serving while the issuer fails, but a refresh that failed waited an hour for
    the next: a key revoked meanwhile worked up to two hours."""
    clock = [0.0]
    cache = JwksCache(issuer.url, clock=lambda: clock[0])
    assert cache.key(KID) is not None
    issuer.down = True
    clock[0] += 3601  # stale: the refresh fails, the known key serves
    assert cache.key(KID) is not None
    issuer.down, issuer.keys = False, [public_jwk(OTHER_KEY, "key-2027")]  # the old key revoked
    clock[0] += 30
    assert cache.key(KID) is not None  # not asked again at once
    clock[0] += 31
    assert cache.key(KID) is None
    assert issuer.fetches == 3


def test_a_key_set_nested_too_deep_to_parse_is_a_failed_fetch() -> None:
    """About 60 KB, under the cap: 503 as for any key set that cannot be read, and the keys fetched
    earlier keep serving when it comes on a refresh."""
    nested = b'{"keys": ' + b"[" * 30_000 + b"]" * 30_000 + b"}"
    with stand_in(http_answer(200, nested)) as issuer:
        with pytest.raises(JwksUnavailable):
            JwksCache(issuer.base_url + "/keys").key(KID)
        assert issuer.requests == 1
    document = json.dumps({"keys": [public_jwk(SIGNING_KEY, KID)]}).encode()
    with stand_in(http_answer(200, document)) as issuer:
        clock = [0.0]
        cache = JwksCache(issuer.base_url + "/keys", clock=lambda: clock[0])
        assert cache.key(KID) is not None
        issuer.answer, clock[0] = http_answer(200, nested), clock[0] + 7200
        assert cache.key(KID) is not None
        assert issuer.requests == 2


def test_a_first_fetch_failure_raises(issuer: Issuer) -> None:
    issuer.down = True
    with pytest.raises(JwksUnavailable):
        JwksCache(issuer.url).key(KID)


def test_a_failed_issuer_stays_unavailable_without_being_asked_again_at_once(issuer: Issuer) -> None:
    clock = [0.0]
    cache = JwksCache(issuer.url, clock=lambda: clock[0])
    issuer.down = True
    for _ in range(5):
        with pytest.raises(JwksUnavailable):
            cache.key(KID)
    assert issuer.fetches == 1
    issuer.down = False
    clock[0] += 31
    assert cache.key(KID) is not None


def test_an_instance_with_no_keys_asks_a_failed_issuer_again_a_second_later(issuer: Issuer) -> None:
    """An issuer's blip at a cold start must not send the instance's codes to Okta's fallback for long:
    not asked again at once, and asked again a second later."""
    clock = [0.0]
    cache = JwksCache(issuer.url, clock=lambda: clock[0])
    issuer.down = True
    with pytest.raises(JwksUnavailable):
        cache.key(KID)
    issuer.down = False
    clock[0] += 0.5
    with pytest.raises(JwksUnavailable):
        cache.key(KID)
    assert issuer.fetches == 1
    clock[0] += 0.6
    assert cache.key(KID) is not None
    assert issuer.fetches == 2


def test_a_rotated_key_is_fetched_seconds_after_the_last_fetch(issuer: Issuer) -> None:
    """A token signed with a key the issuer has just published: the first one a few seconds after the
    last fetch fetches it (forged kids may have fetched moments before)."""
    clock = [1000.0]
    cache = JwksCache(issuer.url, clock=lambda: clock[0])
    assert cache.key(KID) is not None
    issuer.keys.append(public_jwk(OTHER_KEY, "key-2027"))
    assert cache.key("key-2027") is None  # moments after a fetch: not asked again
    clock[0] += 6
    assert cache.key("key-2027") is not None
    assert issuer.fetches == 2


def test_hooks_waiting_for_a_fetch_get_its_keys_when_it_ends_at_its_deadline(issuer: Issuer) -> None:
    """Hooks waiting for another hook's fetch wait for the fetch (up to its deadline) and the reading
    of its keys: a fetch ending at its deadline on a busy machine still serves every waiter."""

    def fetch(url: str) -> dict[str, Any]:
        time.sleep(JWKS_TIMEOUT_SECONDS + 0.1)  # the fetch's deadline, then the keys read slowly
        return fetch_jwks(url)

    cache = JwksCache(issuer.url, fetch=fetch)
    with ThreadPoolExecutor(6) as pool:
        found = list(pool.map(lambda _: cache.key(KID) is not None, range(6)))
    assert found == [True] * 6
    assert issuer.fetches == 1


def test_a_slow_key_set_and_a_slow_twilio_together_stay_within_the_hooks_budget(
    make_client: AppFactory, hanging_twilio: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each call has its own deadline, the key-set fetch and Twilio's; the hook's budget bounds them
    together, so a cold instance's fetch cannot push Okta's answer past its 3 s. (The budget is cut
    down here, so the test does not take seconds; the fetch takes half of it.)"""
    budget = 0.8
    monkeypatch.setattr("telephony.hook.HOOK_BUDGET_SECONDS", budget)
    document = json.dumps({"keys": [public_jwk(SIGNING_KEY, KID)]}).encode()
    answer = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(document)}\r\n\r\n"
    with stand_in(answer.encode() + document, chunk=len(document), pause=budget / 2, head_at_once=True) as keys:
        client = make_client(
            OKTA_HOOK_AUTH_SECRET=None,
            OKTA_HOOK_OAUTH_ISSUER=ISSUER,
            OKTA_HOOK_OAUTH_AUDIENCE=AUDIENCE,
            OKTA_HOOK_OAUTH_SCOPE=SCOPE,
            OKTA_HOOK_OAUTH_JWKS_URL=keys.base_url + "/keys",
            TWILIO_API_BASE_URL=hanging_twilio,
            TWILIO_TIMEOUT_SECONDS="2.5",
        )
        started = time.monotonic()
        response = bearer(client, token())
        elapsed = time.monotonic() - started
    assert response.status_code == 200 and first_reason(response.get_json()) == "TWILIO_TIMEOUT"
    assert budget <= elapsed < 1.5 * budget
    # the admin reads the time Twilio had, what the fetch left of the budget, not TWILIO_TIMEOUT_SECONDS
    said = re.search(r"within ([0-9.]+) s", json.dumps(response.get_json()))
    assert said is not None and float(said.group(1)) <= budget / 2 + 0.05


def test_both_schemes_configured_means_both_must_pass(make_client: AppFactory, issuer: Issuer) -> None:
    client = make_client(
        OKTA_HOOK_AUTH_HEADER="X-Hook-Secret",
        OKTA_HOOK_OAUTH_ISSUER=ISSUER,
        OKTA_HOOK_OAUTH_AUDIENCE=AUDIENCE,
        OKTA_HOOK_OAUTH_SCOPE=SCOPE,
        OKTA_HOOK_OAUTH_JWKS_URL=issuer.url,
    )
    both = {"Authorization": f"Bearer {token()}", "X-Hook-Secret": HOOK_SECRET}
    assert client.post("/", json=okta_request(), headers=both).status_code == 200
    assert client.post("/", json=okta_request(), headers={"Authorization": f"Bearer {token()}"}).status_code == 401
    assert client.post("/", json=okta_request(), headers={"X-Hook-Secret": HOOK_SECRET}).status_code == 401


def test_oauth_and_header_secret_cannot_share_the_authorization_header() -> None:
    from telephony.settings import SettingsError, load_settings

    with pytest.raises(SettingsError, match="OKTA_HOOK_AUTH_HEADER"):
        load_settings(
            {
                "OKTA_HOOK_AUTH_SECRET": "s" * 16,
                "OKTA_HOOK_OAUTH_ISSUER": ISSUER,
                "OKTA_HOOK_OAUTH_AUDIENCE": AUDIENCE,
                "OKTA_HOOK_OAUTH_SCOPE": SCOPE,
            }
        )


def test_tokens_never_reach_logs_or_answers(oauth_client: FlaskClient, capfd: pytest.CaptureFixture[str]) -> None:
    sent = [token(), token(aud="x"), token(scp=["other"]), REFUSED_TOKENS["HS256 signed with the public key"]()]
    bodies = [bearer(oauth_client, value).get_data(as_text=True) for value in sent]
    output = capfd.readouterr()
    everything = output.out + output.err + "".join(bodies)
    for value in sent:
        assert value not in everything
        assert value.split(".")[2][:20] not in everything
    assert OTP not in everything


@pytest.mark.e2e  # a fresh interpreter
def test_the_jwt_stack_is_not_imported_without_oauth() -> None:
    import subprocess
    import sys

    from tests.helpers import ROOT

    probe = "import sys, main; print('jwt' in sys.modules, 'cryptography' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "OKTA_HOOK_AUTH_SECRET": "x" * 16},
    )  # fmt: skip
    assert result.stdout.split()[-2:] == ["False", "False"], result.stderr


def test_a_bare_token_in_an_unexpected_error_is_scrubbed(
    oauth_client: FlaskClient, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    from telephony.delivery import TwilioDelivery

    sent = token()

    def explode(self: TwilioDelivery, profile: Any, *arguments: Any) -> Any:
        raise RuntimeError(f"bug that quotes the caller's token {sent}")

    monkeypatch.setattr(TwilioDelivery, "deliver", explode)
    capfd.readouterr()
    assert bearer(oauth_client, sent).status_code == 500
    output = capfd.readouterr().out
    assert "RuntimeError" in output and "[redacted]" in output
    assert sent not in output


# What the admin reads in the log line for each refused token; the caller reads none of it.
AUTH_PROBLEMS = {
    "expired": "The bearer token has expired.",
    "wrong audience": "The bearer token is invalid: Audience doesn't match.",
    "wrong issuer": "The bearer token is invalid: Invalid issuer.",
    "signed by another key": "The bearer token is invalid: Signature verification failed.",
    "alg none": "The bearer token must be signed with RS256.",
    "HS256 signed with the public key": "The bearer token must be signed with RS256.",
    "unknown kid": "The bearer token is signed by a key the issuer does not publish.",
    "no kid": "The bearer token names no signing key (kid).",
    "garbage": "The bearer token is not a JWT.",
    "no exp": 'The bearer token is invalid: Token is missing the "exp" claim.',
    "no aud": 'The bearer token is invalid: Token is missing the "aud" claim.',
    "empty": "A bearer token is required in the Authorization header.",
}


@pytest.mark.parametrize("case", sorted(REFUSED_TOKENS))
def test_a_refused_token_learns_nothing_and_the_log_says_why(
    oauth_client: FlaskClient, case: str, capfd: pytest.CaptureFixture[str]
) -> None:
    capfd.readouterr()
    response = bearer(oauth_client, REFUSED_TOKENS[case]())
    (line,) = [json.loads(text) for text in capfd.readouterr().out.splitlines() if '"outcome"' in text]
    assert response.get_json() == generic_refusal("UNAUTHORIZED")
    assert line["auth_problem"] == AUTH_PROBLEMS[case]
    assert line["auth_location"] == "header:Authorization"


def test_a_missing_scope_is_not_named_to_the_caller(
    oauth_client: FlaskClient, capfd: pytest.CaptureFixture[str]
) -> None:
    capfd.readouterr()
    response = bearer(oauth_client, token(scp=["okta.users.read"]))
    (line,) = [json.loads(text) for text in capfd.readouterr().out.splitlines() if '"outcome"' in text]
    assert response.get_json() == generic_refusal("FORBIDDEN")
    assert SCOPE not in response.get_data(as_text=True)
    assert line["auth_problem"] == f"The bearer token lacks the scope {SCOPE}."


def test_the_header_secrets_name_is_not_told_to_the_caller(
    make_client: AppFactory, capfd: pytest.CaptureFixture[str]
) -> None:
    client = make_client(OKTA_HOOK_AUTH_HEADER="X-Acme-Hook-Key")
    capfd.readouterr()
    for secret in (None, "wrong"):
        headers = {} if secret is None else {"X-Acme-Hook-Key": secret}
        response = post_hook(client, okta_request(), secret=None, **headers)
        assert response.get_json() == generic_refusal("UNAUTHORIZED")
        assert "X-Acme-Hook-Key" not in response.get_data(as_text=True)
    problems = [
        json.loads(text)["auth_problem"] for text in capfd.readouterr().out.splitlines() if "auth_problem" in text
    ]
    assert problems == [
        "The X-Acme-Hook-Key header is missing.",
        "The X-Acme-Hook-Key header does not match the configured secret.",
    ]


def generic_refusal(reason: str) -> dict[str, Any]:
    return {
        "error": {
            "errorSummary": "The telephony hook refused the call: authentication failed.",
            "errorCauses": [
                {
                    "errorSummary": "The call's credentials were missing, wrong or insufficient.",
                    "reason": reason,
                    "location": "authentication",
                }
            ],
        }
    }


def test_a_key_published_for_encryption_does_not_verify_signatures(
    oauth_client: FlaskClient, issuer: Issuer, sandbox: SandboxState, capfd: pytest.CaptureFixture[str]
) -> None:
    issuer.keys = [{**public_jwk(SIGNING_KEY, KID), "use": "enc"}]
    capfd.readouterr()
    response = bearer(oauth_client, token())
    assert response.status_code == 401
    assert "The bearer token is signed by a key the issuer does not publish." in capfd.readouterr().out
    assert sandbox.requests == []


def test_signing_keys_beside_an_encryption_key_still_verify(oauth_client: FlaskClient, issuer: Issuer) -> None:
    issuer.keys = [{**public_jwk(OTHER_KEY, "enc-key"), "use": "enc"}, public_jwk(SIGNING_KEY, KID)]
    assert bearer(oauth_client, token()).status_code == 200


@pytest.mark.parametrize(
    "malformed",
    [{"alg": ["RS256"]}, {"kid": ["odd"]}, {"kid": {"odd": 1}}, {"use": ["sig"]}, {"kty": ["RSA"]}, None],
    ids=["alg a list", "kid a list", "kid an object", "use a list", "kty a list", "not an object"],
)
def test_one_malformed_entry_in_the_key_set_spoils_none_of_the_others(
    oauth_client: FlaskClient, issuer: Issuer, malformed: dict[str, Any] | None
) -> None:
    """PyJWT skips a key of a type it does not know, but fails the whole set (TypeError) on a name that
    is no string: a cold instance answered 500, then 401 to valid tokens, for as long as the issuer
    published the entry. The entry (a valid key but for that name) is skipped; the keys beside it verify."""
    entry: Any = "not an object" if malformed is None else {**public_jwk(OTHER_KEY, "odd"), **malformed}
    issuer.keys = [entry, public_jwk(SIGNING_KEY, KID)]
    assert bearer(oauth_client, token()).status_code == 200


def test_a_key_rotated_in_beside_a_malformed_entry_is_learnt(issuer: Issuer) -> None:
    clock = [1000.0]
    cache = JwksCache(issuer.url, clock=lambda: clock[0])
    assert cache.key(KID) is not None
    malformed = {**public_jwk(OTHER_KEY, "odd"), "alg": ["RS256"]}
    issuer.keys = [malformed, *issuer.keys, public_jwk(OTHER_KEY, "key-2027")]
    clock[0] += 31
    assert cache.key("key-2027") is not None


def test_a_key_set_that_is_no_list_of_keys_is_unavailable_not_a_crash(issuer: Issuer) -> None:
    issuer.keys = {"odd": "object"}  # type: ignore[assignment]  # what a hostile issuer may publish
    with pytest.raises(JwksUnavailable):
        JwksCache(issuer.url).key(KID)


def test_a_token_over_the_size_limit_is_refused_unread(
    oauth_client: FlaskClient, sandbox: SandboxState, capfd: pytest.CaptureFixture[str], issuer: Issuer
) -> None:
    capfd.readouterr()
    response = bearer(oauth_client, token() + "." + "A" * MAX_TOKEN_BYTES)
    (line,) = [json.loads(text) for text in capfd.readouterr().out.splitlines() if '"outcome"' in text]
    assert response.get_json() == generic_refusal("UNAUTHORIZED")
    assert line["auth_problem"] == "The bearer token is too long."
    assert issuer.fetches == 0 and sandbox.requests == []
