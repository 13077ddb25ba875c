"""The hook's log line stays valid JSON with its true outcome, whatever a caller puts in headers or payload."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from telephony.logs import REDACTED, CloudLoggingFormatter, mark_sensitive, request_scope
from tests.helpers import HOOK_SECRET, AppFactory, okta_request, post_hook
from tools.sandbox.run_local import SANDBOX_BLOCKED_NUMBER_TYPES


def hook_lines(out: str) -> list[dict[str, Any]]:
    """Every line is JSON (json.loads raises otherwise); the hook's own lines carry an outcome."""
    lines = [json.loads(line) for line in out.splitlines() if line.strip()]
    return [line for line in lines if "outcome" in line]


@pytest.mark.parametrize("credential", ['": "', "unauthorized", "outcome", '"', "401", "WARNING", "telephony_hook"])
def test_a_credential_cannot_break_or_rewrite_the_line(
    credential: str, make_client: AppFactory, capfd: pytest.CaptureFixture[str]
) -> None:
    client = make_client()
    capfd.readouterr()
    response = post_hook(client, okta_request(), secret=credential)
    (line,) = hook_lines(capfd.readouterr().out)
    assert response.status_code == 401
    assert line["outcome"] == "unauthorized"
    assert line["http_status"] == 401
    assert line["severity"] == "WARNING"
    assert line["logger"] == "telephony_hook"


def test_a_code_equal_to_twilios_error_code_keeps_the_error_code(
    make_client: AppFactory, capfd: pytest.CaptureFixture[str]
) -> None:
    client = make_client(BLOCKED_NUMBER_TYPES=SANDBOX_BLOCKED_NUMBER_TYPES)  # a magic number, as make run lets through
    capfd.readouterr()
    response = post_hook(client, okta_request(otpCode="21211", phoneNumber="+15005550001"))
    out = capfd.readouterr().out
    (line,) = hook_lines(out)
    assert response.get_json()["error"]["errorCauses"][0]["reason"] == "TWILIO_21211"
    assert line["outcome"] == "provider_error"
    assert line["twilio_error_code"] == 21211
    assert '"21211"' not in out  # the code itself, as a string value, is still never written


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    credential=st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=24),
    event_id=st.text(max_size=24),
)
def test_any_credential_and_event_id_leave_a_valid_line_with_the_true_outcome(
    credential: str, event_id: str, make_client: AppFactory, capfd: pytest.CaptureFixture[str]
) -> None:
    client = make_client()
    capfd.readouterr()
    body = okta_request()
    body["eventId"] = event_id
    response = post_hook(client, body, secret=credential.strip() or "x")
    (line,) = hook_lines(capfd.readouterr().out)
    expected = "delivered" if credential.strip() == HOOK_SECRET else "unauthorized"
    assert line["outcome"] == expected
    assert line["http_status"] == response.status_code


@pytest.mark.parametrize("secret", ['quo"te-Zq8', "back\\slash-Zq8", "tab\there-Zq8"])
def test_a_secret_json_would_escape_is_still_scrubbed(secret: str) -> None:
    formatter = CloudLoggingFormatter([secret])
    record = logging.LogRecord("telephony_hook", logging.INFO, __file__, 1, f"saw {secret}", None, None)
    record.fields = {"detail": [f"x {secret}"], "outcome": "delivered"}
    line = formatter.format(record)
    assert json.loads(line) == {
        "severity": "INFO",
        "message": f"saw {REDACTED}",
        "logger": "telephony_hook",
        "detail": [f"x {REDACTED}"],
        "outcome": "delivered",
    }
    assert "Zq8" not in line


@pytest.mark.parametrize("secret", ["back\\slash-Zq8wX", "it's-Zq8wX", 'quo"te-Zq8wX'])
def test_a_secret_an_exception_spells_as_python_does_is_still_scrubbed(secret: str) -> None:
    """An error message may carry a header as bytes' repr (http.client's 'Invalid header value
    b\'SSWS ...\''), which escapes a backslash or a quote: the settings give the log every such spelling."""
    from telephony.settings import load_settings

    settings = load_settings({"OKTA_API_TOKEN": secret})
    formatter = CloudLoggingFormatter(settings.secret_values())
    try:
        raise ValueError(f"Invalid header value {('SSWS ' + secret).encode()!r}")
    except ValueError:
        import sys

        record = logging.LogRecord("okta_events", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())
    line = formatter.format(record)
    assert "Zq8wX" not in line and REDACTED in json.loads(line)["exception"]


def test_a_line_with_nothing_to_scrub_is_written_as_it_is() -> None:
    formatter = CloudLoggingFormatter(["s3cr3t-value"])
    record = logging.LogRecord("telephony_hook", logging.INFO, __file__, 1, "nothing here", None, None)
    record.fields = {"count": 3, "ok": True}
    with request_scope(None):
        mark_sensitive("482913")
        assert json.loads(formatter.format(record)) == {
            "severity": "INFO",
            "message": "nothing here",
            "logger": "telephony_hook",
            "count": 3,
            "ok": True,
        }


def test_a_lone_surrogate_from_a_peer_leaves_one_json_line_not_an_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Python's JSON decoder lets a lone surrogate through from a peer's answer; a UTF-8 stream cannot
    write it. The line is written with it escaped, instead of a logging error on stderr."""
    import io
    import sys

    from telephony.logs import configure_logging

    written_bytes = io.BytesIO()
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(written_bytes, encoding="utf-8", write_through=True))
    configure_logging([])
    logging.getLogger("okta_events").warning("odd \ud800 value", extra={"fields": {"phone": "\ud800+1***"}})
    written = written_bytes.getvalue().decode("ascii").splitlines()
    assert [json.loads(line)["phone"] for line in written] == ["\ud800+1***"]
    assert capsys.readouterr().err == ""
