"""A 2xx from Twilio proves delivery only when it is the resource asked for, with its SID."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from tests.helpers import OTP, AppFactory, first_reason, okta_request, post_hook
from tests.standins import http_answer, stand_in

SMS_SID = "SM" + "0" * 32

ODD_ANSWERS = {
    "html": http_answer(200, b"<html><body>Welcome to the captive portal</body></html>", "text/html"),
    "json list": http_answer(201, b"[]"),
    "json string": http_answer(201, b'"ok"'),
    "empty": http_answer(201, b""),
    "null sid": http_answer(201, json.dumps({"sid": None, "status": "queued"}).encode()),
    "no sid": http_answer(201, json.dumps({"status": "queued"}).encode()),
    "sid of another resource": http_answer(201, json.dumps({"sid": "CA" + "0" * 32, "status": "queued"}).encode()),
    "truncated sid": http_answer(201, json.dumps({"sid": "SM123", "status": "queued"}).encode()),
}


@pytest.mark.parametrize("case", sorted(ODD_ANSWERS))
def test_an_odd_twilio_answer_is_a_provider_failure(
    case: str, make_client: AppFactory, capfd: pytest.CaptureFixture[str]
) -> None:
    with stand_in(ODD_ANSWERS[case]) as twilio:
        client = make_client(TWILIO_API_BASE_URL=twilio.base_url)
        capfd.readouterr()
        response = post_hook(client, okta_request())
        assert twilio.requests == 1  # asked once, never again: it may have accepted the code
    (line,) = [json.loads(text) for text in capfd.readouterr().out.splitlines() if '"outcome"' in text]
    assert response.status_code == 200
    assert first_reason(response.get_json()) == "TWILIO_MALFORMED_ANSWER"
    assert line["outcome"] == "provider_error"


@pytest.mark.parametrize(("channel", "sid"), [("sms", SMS_SID), ("sms", "MM" + "a" * 32), ("voice", "CA" + "b" * 32)])
def test_a_well_formed_resource_is_delivered(channel: str, sid: str, make_client: AppFactory) -> None:
    with stand_in(http_answer(201, json.dumps({"sid": sid, "status": "queued"}).encode())) as twilio:
        client = make_client(TWILIO_API_BASE_URL=twilio.base_url)
        answer = post_hook(client, okta_request(deliveryChannel=channel)).get_json()
    assert answer["commands"][0]["value"][0]["transactionId"] == sid


def test_verify_needs_a_ve_sid(make_client: AppFactory) -> None:
    body = json.dumps({"sid": SMS_SID, "status": "pending"}).encode()
    with stand_in(http_answer(201, body)) as twilio:
        client = make_client(TWILIO_API_BASE_URL=twilio.base_url, TWILIO_VERIFY_SERVICE_SID="VA" + "1" * 32)
        assert first_reason(post_hook(client, okta_request()).get_json()) == "TWILIO_MALFORMED_ANSWER"
    with stand_in(http_answer(201, json.dumps({"sid": "VE" + "c" * 32, "status": "pending"}).encode())) as twilio:
        client = make_client(TWILIO_API_BASE_URL=twilio.base_url, TWILIO_VERIFY_SERVICE_SID="VA" + "1" * 32)
        assert post_hook(client, okta_request()).get_json()["commands"][0]["value"][0]["status"] == "SUCCESSFUL"


NOT_SENT = {
    ("sms", "failed"): ("SM" + "1" * 32, "message"),
    ("sms", "canceled"): ("SM" + "2" * 32, "message"),
    ("sms", "undelivered"): ("SM" + "3" * 32, "message"),
    ("voice", "canceled"): ("CA" + "4" * 32, "call"),
    ("voice", "no-answer"): ("CA" + "5" * 32, "call"),
}
UNCLEAR = {  # a status that does not say the resource goes out, nor that it does not
    ("sms", "NaN"): ("SM" + "6" * 32, "message", "an unknown status"),
    ("sms", None): ("SM" + "7" * 32, "message", "an unknown status"),
    ("sms", "received"): ("SM" + "8" * 32, "message", "status received"),
    ("voice", "completed"): ("CA" + "9" * 32, "call", "status completed"),
}


def causes_of_created(make_client: AppFactory, channel: str, sid: str, status: str | None) -> list[dict[str, str]]:
    """The hook's errorCauses when Twilio answers 201 with this SID and status (asked once)."""
    with stand_in(http_answer(201, json.dumps({"sid": sid, "status": status}).encode())) as twilio:
        client = make_client(TWILIO_API_BASE_URL=twilio.base_url)
        answer = post_hook(client, okta_request(deliveryChannel=channel)).get_json()
        assert twilio.requests == 1
    return list(answer["error"]["errorCauses"])


@pytest.mark.parametrize(("channel", "status"), sorted(NOT_SENT))
def test_a_resource_created_as_failed_or_canceled_is_not_a_delivery(
    channel: str, status: str, make_client: AppFactory
) -> None:
    """A 201 with a real SID proves Twilio made the resource, not that it will go out: only a status
    Twilio gives a resource it took on is SUCCESSFUL. The rest is not sent again: Okta falls back."""
    sid, api = NOT_SENT[(channel, status)]
    assert causes_of_created(make_client, channel, sid, status) == [
        {"errorSummary": f"Twilio created the {api} with status {status}: the code was not sent.",
         "reason": "TWILIO_NOT_ACCEPTED", "location": "https://status.twilio.com"}
    ]  # fmt: skip


@pytest.mark.parametrize(("channel", "status"), sorted(UNCLEAR, key=str))
def test_a_resource_created_with_an_unclear_status_is_neither_successful_nor_said_unsent(
    channel: str, status: str | None, make_client: AppFactory
) -> None:
    """No status, one Twilio does not document, or one a new resource should not have: the code may have
    gone, so Okta is not told it was not sent (and the spend guard keeps Okta's retry from sending it)."""
    sid, api, said = UNCLEAR[(channel, status)]
    assert causes_of_created(make_client, channel, sid, status) == [
        {"errorSummary": f"Twilio created the {api} with {said}, which does not say it goes out: it is not sent again.",
         "reason": "TWILIO_UNCLEAR_STATUS", "location": "https://status.twilio.com"}
    ]  # fmt: skip


@pytest.mark.parametrize(("status", "reason"), [("failed", "TWILIO_NOT_ACCEPTED"), ("NaN", "TWILIO_UNCLEAR_STATUS")])
def test_the_line_of_a_resource_created_but_not_delivered_names_its_sid(
    status: str, reason: str, make_client: AppFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    """The resource exists: the admin looks it up in Twilio's console by its SID."""
    sid = "SM" + "5" * 32
    capsys.readouterr()
    assert causes_of_created(make_client, "sms", sid, status)[0]["reason"] == reason
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    (line,) = [line for line in lines if line.get("outcome") == "provider_error"]
    assert (line["twilio_error"], line["twilio_sid"]) == (reason, sid)


@pytest.mark.parametrize(("status", "reason"), [("failed", "TWILIO_NOT_ACCEPTED"), ("canceled", "TWILIO_NOT_ACCEPTED"),
                                                ("approved", "TWILIO_UNCLEAR_STATUS")])  # fmt: skip
def test_a_verification_not_pending_is_not_a_delivery(status: str, reason: str, make_client: AppFactory) -> None:
    with stand_in(http_answer(201, json.dumps({"sid": "VE" + "c" * 32, "status": status}).encode())) as twilio:
        client = make_client(TWILIO_API_BASE_URL=twilio.base_url, TWILIO_VERIFY_SERVICE_SID="VA" + "1" * 32)
        assert first_reason(post_hook(client, okta_request()).get_json()) == reason


def test_a_deeply_nested_answer_is_a_provider_failure_not_a_crash(make_client: AppFactory) -> None:
    nested = b"[" * 30_000 + b"]" * 30_000  # far deeper than json's recursion limit, inside the 64 KiB cap
    with stand_in(http_answer(201, nested)) as twilio:
        client = make_client(TWILIO_API_BASE_URL=twilio.base_url)
        response = post_hook(client, okta_request())
    assert response.status_code == 200
    assert first_reason(response.get_json()) == "TWILIO_MALFORMED_ANSWER"


@pytest.mark.parametrize(
    ("channel", "oddity"),
    [
        ("sms", {"date_created": "Mon, 01 Jan 99999999999999999999 00:00:00 +0000"}),  # OverflowError
        ("sms", {"date_sent": "01 Jan 9999999999 00:00:00"}),
        ("voice", {"date_created": "01 Jan 9999999999 00:00:00"}),
    ],
)
def test_a_resource_with_a_date_or_price_the_library_cannot_read_is_a_provider_failure(
    channel: str, oddity: dict[str, str], make_client: AppFactory
) -> None:
    """Not a 500: Okta gets the error object, as for any 2xx that is not the resource we asked for."""
    sid = ("SM" if channel == "sms" else "CA") + "d" * 32
    with stand_in(http_answer(201, json.dumps({"sid": sid, "status": "queued", **oddity}).encode())) as twilio:
        client = make_client(TWILIO_API_BASE_URL=twilio.base_url)
        response = post_hook(client, okta_request(deliveryChannel=channel))
        assert twilio.requests == 1
    assert response.status_code == 200
    assert first_reason(response.get_json()) == "TWILIO_MALFORMED_ANSWER"


def test_an_error_code_that_spells_the_otp_is_not_repeated(
    make_client: AppFactory, capfd: pytest.CaptureFixture[str]
) -> None:
    """A peer may echo anything as Twilio's error code, the code itself included: only five-digit
    codes are Twilio's, and no number in a log line may spell what the request marked sensitive."""
    body = json.dumps({"code": int(OTP), "message": "no", "status": 400}).encode()
    with stand_in(http_answer(400, body)) as twilio:
        client = make_client(TWILIO_API_BASE_URL=twilio.base_url)
        capfd.readouterr()
        answer = post_hook(client, okta_request()).get_data(as_text=True)
    output = capfd.readouterr().out
    assert OTP not in answer and OTP not in output
    assert first_reason(json.loads(answer)) == "TWILIO_HTTP_400"


@contextmanager
def keep_alive_twilio(answers: list[bytes]) -> Iterator[str]:
    """A Twilio that keeps each connection open and answers every request, on whichever connection,
    with the next of `answers`."""
    listener = socket.create_server(("127.0.0.1", 0))
    pending = iter(answers)

    def serve() -> None:
        with listener:
            for _ in answers:  # at most a connection per answer
                connection, _ = listener.accept()
                with connection, connection.makefile("rb") as requests:
                    while (line := requests.readline()) != b"":
                        length = 0
                        while line not in (b"\r\n", b""):
                            if line.lower().startswith(b"content-length:"):
                                length = int(line.split(b":")[1])
                            line = requests.readline()
                        requests.read(length)
                        answer = next(pending, None)
                        if answer is None:
                            return
                        connection.sendall(answer)

    threading.Thread(target=serve, daemon=True).start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"


def created(sid: str) -> bytes:
    body = json.dumps({"sid": sid, "status": "queued"}).encode()
    head = f"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


def test_an_informational_answer_is_no_answer_and_its_connection_is_not_reused(make_client: AppFactory) -> None:
    """http.client takes a 1xx other than 100 for the answer. The real one follows on the connection:
    reused, it would become the next hook's answer (one user without a code, Okta told SUCCESSFUL)."""
    first, second = "SM" + "1" * 32, "SM" + "2" * 32
    early_hints = b"HTTP/1.1 103 Early Hints\r\nLink: </x>; rel=preload\r\n\r\n" + created(first)
    with keep_alive_twilio([early_hints, created(second)]) as twilio:
        client = make_client(TWILIO_API_BASE_URL=twilio)
        refused = post_hook(client, okta_request()).get_json()
        delivered = post_hook(client, okta_request(otpCode="739152")).get_json()
    assert first_reason(refused) == "TWILIO_UNREACHABLE"  # Twilio may have taken it: never asked again
    # Twilio was reached: the admin's hint says its answer may be what failed
    assert refused["error"]["errorCauses"][0]["errorSummary"] == (
        "Twilio could not be reached, or its answer could not be read."
    )
    assert delivered["commands"][0]["value"][0]["transactionId"] != first


def test_an_answer_whose_headers_pass_the_cap_is_no_answer(make_client: AppFactory) -> None:
    """The body has its cap; the head has one too (http.client alone would take about 6 MiB of it)."""
    body = json.dumps({"sid": SMS_SID, "status": "queued"}).encode()
    padding = "".join(f"X-Padding-{index}: {'p' * 30_000}\r\n" for index in range(3))
    head = f"HTTP/1.1 201 Created\r\n{padding}Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    with stand_in(head.encode() + body) as twilio:
        client = make_client(TWILIO_API_BASE_URL=twilio.base_url)
        answer = post_hook(client, okta_request()).get_json()
        assert twilio.requests == 1
    assert first_reason(answer) == "TWILIO_UNREACHABLE"


@pytest.mark.parametrize(
    "length",
    [
        pytest.param("\u00b2", id="superscript-two"),  # a Latin-1 byte str.isdigit() takes and int() refuses
        pytest.param("9" * 5000, id="past-int-digits"),  # int() refuses more than 4,300 digits
    ],
)
def test_a_content_length_no_integer_reads_is_a_provider_failure(length: str, make_client: AppFactory) -> None:
    """Not a 500: an answer whose framing cannot be read is no answer, and Twilio may have taken the
    code: Okta gets the error object, and its retry of the request is not sent again."""
    body = json.dumps({"sid": SMS_SID, "status": "queued"}).encode()
    head = f"HTTP/1.1 201 Created\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n"
    with stand_in(head.encode("latin-1") + body) as twilio:
        client = make_client(TWILIO_API_BASE_URL=twilio.base_url)
        response = post_hook(client, okta_request())
        assert twilio.requests == 1
        retry = post_hook(client, okta_request())
        assert twilio.requests == 1
    assert response.status_code == 200
    assert first_reason(response.get_json()) == "TWILIO_MALFORMED_ANSWER"
    assert first_reason(retry.get_json()) == "RETRY_NOT_SENT"
