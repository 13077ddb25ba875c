"""A local stand-in for the parts of Twilio's REST API the hook uses. Nothing is really sent.

    python -m tools.sandbox.twilio_sandbox --port 8099 [--latency-ms 300]

Serves, the way Twilio does (form-encoded requests, HTTP basic auth, Twilio's JSON and error JSON):
  POST /2010-04-01/Accounts/{AccountSid}/Messages.json   -> 201, SM... sid, status queued/accepted
  POST /2010-04-01/Accounts/{AccountSid}/Calls.json      -> 201, CA... sid, status queued
  POST /v2/Services/{ServiceSid}/Verifications           -> 201, VE... sid, status pending
  POST /v2/Services/{ServiceSid}/Verifications/{To|Sid}  -> 200 approved/canceled, or 404 (20404) when
                                                            nothing is pending for that number or SID
  GET  /sandbox/stats                                    -> connections that made API calls, requests
Twilio's magic test numbers give Twilio's errors: To +15005550001 invalid, ...0002 unroutable,
...0003 no geo permission, ...0004 blocked/opted out, ...0009 not SMS-capable; From +15005550001 invalid.
Each message or call it "sends" is printed, so a developer sees the SMS text and the TwiML.
Every request is checked against Twilio's published contract (tools/sandbox/contract.py) and refused
as Twilio would (400 naming the parameter); every answer is checked too. Both kinds of breach are
recorded in `SandboxState.violations`. Without jsonschema (a dev dependency) the checks are off, said once.

Delivery receipts: when a create asks for them (StatusCallback), the sandbox posts them to that URL,
form-encoded and signed with the auth token (X-Twilio-Signature), as Twilio does. A message gets
`sent`, then `delivered` after --receipt-delay-ms; a call gets `completed` after the delay. Magic To
numbers end otherwise: +15005557007 undelivered 30007 (carrier filtering), +15005553003 undelivered
30003 (handset unreachable), and a call to +15005550408 ends no-answer.
"""

from __future__ import annotations

import argparse
import base64
import hmac
import json
import re
import secrets
import socketserver
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any
from urllib.parse import parse_qs, unquote

try:
    from tools.sandbox.contract import ContractViolation, operation_for
except ImportError as missing:  # `make run` and `make test` install it; a bare runtime venv does not
    CONTRACT_OFF: str | None = f"Twilio contract checks are off ({missing.name} is not installed)"
else:
    CONTRACT_OFF = None

DEFAULT_ACCOUNT_SID = "AC" + "5a" * 16
DEFAULT_AUTH_TOKEN = "sandbox-auth-token"

_MESSAGES = re.compile(r"^/2010-04-01/Accounts/(AC[0-9a-fA-F]{32})/Messages\.json$")
_CALLS = re.compile(r"^/2010-04-01/Accounts/(AC[0-9a-fA-F]{32})/Calls\.json$")
_VERIFICATIONS = re.compile(r"^/v2/Services/(VA[0-9a-fA-F]{32})/Verifications$")
_VERIFICATION_UPDATE = re.compile(r"^/v2/Services/(VA[0-9a-fA-F]{32})/Verifications/([^/?]+)$")
_E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")

# Twilio's magic To numbers for test credentials: (SMS error, call error, Verify error).
MAGIC_TO: dict[str, tuple[int, int, int]] = {
    "+15005550001": (21211, 21217, 60200),
    "+15005550002": (21612, 21214, 60200),
    "+15005550003": (21408, 21215, 60605),
    "+15005550004": (21610, 21216, 60410),
    "+15005550009": (21614, 21214, 60205),
}
MAGIC_FROM_INVALID = "+15005550001"
VERIFICATIONS_KEPT = 10_000

# Twilio's "request does not match the API's expected schema"; the message names the parameter.
CONTRACT_ERROR = 70002
# Magic To numbers for receipts: how the message or call ends, and Twilio's ErrorCode.
RECEIPT_MAGIC_TO: dict[str, tuple[str, int | None]] = {
    "+15005557007": ("undelivered", 30007),
    "+15005553003": ("undelivered", 30003),
    "+15005550408": ("no-answer", None),
}
CALL_DURATION_SECONDS = 19  # what a completed sandbox call lasted

ERROR_TEXT = {
    20003: "Authenticate",
    20429: "Too Many Requests",
    20500: "Internal Server Error",
    20404: "The requested resource was not found",
    21211: "The 'To' number {to} is not a valid phone number.",
    21212: "The 'From' number {from_} is not a valid phone number, shortcode, or alphanumeric sender ID.",
    21214: "'To' phone number cannot be reached",
    21215: "Geo Permission configuration is not permitting call",
    21216: "Account not allowed to call {to}",
    21217: "Phone number does not appear to be valid",
    21408: "Permission to send an SMS has not been enabled for the region indicated by the 'To' number: {to}.",
    21602: "Message body is required.",
    21603: "A 'From' phone number is required.",
    21604: "A 'To' phone number is required.",
    21610: "Attempt to send to unsubscribed recipient",
    21612: "The 'To' phone number: {to}, is not currently reachable using the 'From' phone number via SMS.",
    21614: "'To' number {to} is not a valid mobile number",
    21617: "The concatenated message body exceeds the 1600 character limit.",
    21205: "Url parameter is required.",
    60200: "Invalid parameter",
    60205: "SMS is not supported by landline phone number",
    60410: "Verification delivery attempt blocked",
    60605: "Verification delivery attempt blocked: geo permissions",
    90007: "Invalid validity period value",
}


class TwilioError(Exception):
    def __init__(self, code: int, status: int = 400, **context: str) -> None:
        super().__init__(code)
        self.code, self.status, self.context = code, status, context

    def body(self) -> dict[str, Any]:
        message = self.context.get("message") or ERROR_TEXT.get(self.code, "Error").format(
            to=self.context.get("to", ""), from_=self.context.get("from_", "")
        )
        return {
            "code": self.code,
            "message": message,
            "more_info": f"https://www.twilio.com/docs/errors/{self.code}",
            "status": self.status,
        }


@dataclass
class SandboxState:
    """What the sandbox accepts and what it has seen; tests read `requests`."""

    account_sid: str = DEFAULT_ACCOUNT_SID
    auth_token: str = DEFAULT_AUTH_TOKEN
    api_key: str | None = None
    api_secret: str | None = None
    latency_seconds: float = 0.0
    quiet: bool = False
    receipt_delay_seconds: float = 1.0
    receipts_on: bool = True
    contract_checks: bool = True  # off for `make bench`: the sandbox's own work is not the hook's
    requests: list[dict[str, Any]] = field(default_factory=list)
    # Breaches of Twilio's contract: requests it refused, and answers of its own that broke the schema.
    violations: list[dict[str, Any]] = field(default_factory=list)
    receipts: list[dict[str, Any]] = field(default_factory=list)  # posted: url, form, answer status
    connections: int = 0
    verifications: dict[str, dict[str, Any]] = field(default_factory=dict)  # by SID, for Verify feedback
    # Twilio error codes to answer the next API calls with, in order (e.g. 20429 for rate limiting).
    refuse_next: list[int] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def keep(self, verification: dict[str, Any]) -> None:
        """Remember a verification for Verify feedback (a copy: feedback changes it, not the answer)."""
        with self.lock:
            self.verifications[verification["sid"]] = dict(verification)
            if len(self.verifications) > VERIFICATIONS_KEPT:  # a long `make run` stays bounded
                del self.verifications[next(iter(self.verifications))]

    def pend(self, service_sid: str, to: str, sid: str) -> None:
        """A verification pending for `to`, as if created earlier (tests)."""
        self.keep(verification_record(sid, service_sid, self.account_sid, to, "sms"))

    @property
    def pending(self) -> dict[tuple[str, str], str]:
        """(service SID, To) -> the newest pending verification's SID."""
        with self.lock:
            return {
                (verification["service_sid"], verification["to"]): sid
                for sid, verification in self.verifications.items()
                if verification["status"] == "pending"
            }


def _mask(number: str) -> str:
    return number[:2] + "*" * max(len(number) - 6, 0) + number[-4:] if len(number) > 6 else number


def _now() -> str:
    return formatdate(usegmt=False).replace("-0000", "+0000")


def _sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


def verification_record(sid: str, service_sid: str, account_sid: str, to: str, channel: str) -> dict[str, Any]:
    """A pending Verify verification, as Twilio answers it."""
    now = _now()
    return {
        "sid": sid, "service_sid": service_sid, "account_sid": account_sid,
        "to": to, "channel": channel, "status": "pending", "valid": False,
        "lookup": {}, "amount": None, "payee": None, "send_code_attempts": [{"time": now, "channel": channel}],
        "date_created": now, "date_updated": now, "sna": None,
        "url": f"https://verify.twilio.com/v2/Services/{service_sid}/Verifications/{sid}",
    }  # fmt: skip


_REASONS = {
    200: "OK", 201: "Created", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 429: "Too Many Requests",
    500: "Internal Server Error",
}  # fmt: skip


class SandboxHandler(socketserver.StreamRequestHandler):
    """HTTP/1.1 with keep-alive, as Twilio's API speaks it; parsed by hand to answer in ~0.1 ms, so a
    "0 ms" sandbox adds as little as it can to what the benchmark measures."""

    disable_nagle_algorithm = True  # else delayed ACKs add ~40 ms to every answer
    server: SandboxServer
    path = ""
    headers: dict[str, str]

    def handle(self) -> None:
        counted = False  # connections are counted when they carry API calls, not stats reads
        while True:
            request_line = self.rfile.readline(65537)
            parts = request_line.decode("latin-1").split()
            if len(parts) != 3:
                return
            method, self.path, version = parts
            self.headers = {}
            while True:
                line = self.rfile.readline(65537)
                if line in (b"\r\n", b"\n", b""):
                    break
                name, _, value = line.decode("latin-1").partition(":")
                self.headers[name.strip().lower()] = value.strip()
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            if method == "POST":
                if not counted:
                    counted = True
                    with self.server.state.lock:
                        self.server.state.connections += 1
                self._post(body)
            elif method == "GET" and self.path == "/sandbox/stats":
                state = self.server.state
                self._send(200, {"connections": state.connections, "requests": len(state.requests)})
            else:
                self._send(404, TwilioError(20404, 404).body())
            if version == "HTTP/1.0" or self.headers.get("connection", "").lower() == "close":
                return

    def _post(self, raw: bytes) -> None:
        fields = parse_qs(raw.decode("utf-8"), keep_blank_values=True)
        form = {name: values[-1] for name, values in fields.items()}
        state = self.server.state
        if state.latency_seconds:
            time.sleep(state.latency_seconds)
        checked = CONTRACT_OFF is None and state.contract_checks
        operation = operation_for("POST", self.path) if checked else None
        try:
            self._scripted_refusal(form)
            user = self._authenticate()
            if operation is not None:
                self._check_contract(operation, fields)
            status, body = self._route(form)
        except TwilioError as error:
            self._send(error.status, error.body())
            return
        if operation is not None:
            for problem in operation.answer_problems(status, body):
                self._violation(f"answer: {problem}")
        with state.lock:
            state.requests.append({"path": self.path, "form": form, "user": user, "response": body})
        self._send(status, body)

    def _check_contract(self, operation: Any, fields: dict[str, list[str]]) -> None:
        try:
            operation.check_request(self.path, fields)
        except ContractViolation as violation:
            self._violation(f"request: {violation}")
            message = f"Invalid parameter `{violation.parameter}`: {violation.message}"
            raise TwilioError(CONTRACT_ERROR, message=message) from None

    def _violation(self, what: str) -> None:
        state = self.server.state
        with state.lock:
            state.violations.append({"path": self.path, "problem": what})
        self._announce(f"CONTRACT VIOLATION {self.path}: {what}")

    def _scripted_refusal(self, form: dict[str, str]) -> None:
        """A refusal a test asked for: recorded like any request, so tests count attempts."""
        state = self.server.state
        with state.lock:
            code = state.refuse_next.pop(0) if state.refuse_next else None
            if code is not None:
                state.requests.append({"path": self.path, "form": form, "user": None, "response": None})
        if code is not None:
            raise TwilioError(code, {20429: 429, 20500: 500}.get(code, 400))

    def _authenticate(self) -> str:
        state = self.server.state
        header = self.headers.get("authorization", "")
        try:
            user, _, password = base64.b64decode(header.removeprefix("Basic ")).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            raise TwilioError(20003, 401) from None
        valid = {state.account_sid: state.auth_token}
        if state.api_key and state.api_secret:
            valid[state.api_key] = state.api_secret
        expected = valid.get(user)
        if expected is None or not hmac.compare_digest(password.encode(), expected.encode()):
            raise TwilioError(20003, 401)
        return user

    def _route(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        state = self.server.state
        for pattern, create in ((_MESSAGES, self._message), (_CALLS, self._call)):
            match = pattern.match(self.path)
            if match:
                if match.group(1) != state.account_sid:
                    raise TwilioError(20404, 404)
                return 201, create(form)
        match = _VERIFICATIONS.match(self.path)
        if match:
            return 201, self._verification(match.group(1), form)
        match = _VERIFICATION_UPDATE.match(self.path)
        if match:
            return 200, self._verification_update(match.group(1), unquote(match.group(2)), form)
        raise TwilioError(20404, 404)

    def _check_to(self, form: dict[str, str], which: int) -> str:
        to = form.get("To", "")
        if not to:
            raise TwilioError(21604)
        if to in MAGIC_TO:
            raise TwilioError(MAGIC_TO[to][which], to=to)
        if not _E164.match(to):
            raise TwilioError((21211, 21217, 60200)[which], to=to)
        return to

    def _message(self, form: dict[str, str]) -> dict[str, Any]:
        to = self._check_to(form, 0)
        sender, service = form.get("From"), form.get("MessagingServiceSid")
        if not sender and not service:
            raise TwilioError(21603)
        if sender == MAGIC_FROM_INVALID:
            raise TwilioError(21212, from_=sender)
        body = form.get("Body", "")
        if not body:
            raise TwilioError(21602)
        if len(body) > 1600:
            raise TwilioError(21617)
        validity = form.get("ValidityPeriod", "1")
        if not validity.isdigit() or not 1 <= int(validity) <= 36000:
            raise TwilioError(90007)
        sid, now = _sid("SM"), _now()
        self._announce(f"SMS {sid} to {_mask(to)}: {body}")
        account = self.server.state.account_sid
        self._schedule_receipts("message", sid, form)
        return {
            "account_sid": account, "api_version": "2010-04-01", "body": body,
            "date_created": now, "date_sent": None, "date_updated": now, "direction": "outbound-api",
            "error_code": None, "error_message": None, "from": sender, "messaging_service_sid": service,
            "num_media": "0", "num_segments": str(1 + len(body) // 153), "price": None, "price_unit": None,
            "sid": sid, "status": "accepted" if service else "queued",
            "subresource_uris": {"media": f"/2010-04-01/Accounts/{account}/Messages/{sid}/Media.json"},
            "to": to, "uri": f"/2010-04-01/Accounts/{account}/Messages/{sid}.json",
        }  # fmt: skip

    def _call(self, form: dict[str, str]) -> dict[str, Any]:
        to = self._check_to(form, 1)
        sender = form.get("From", "")
        if not sender:
            raise TwilioError(21603)
        if sender == MAGIC_FROM_INVALID:
            raise TwilioError(21212, from_=sender)
        if not form.get("Twiml") and not form.get("Url") and not form.get("ApplicationSid"):
            raise TwilioError(21205)
        if len(form.get("Twiml", "")) > 4000:
            raise TwilioError(21205)
        sid, now = _sid("CA"), _now()
        self._announce(f"CALL {sid} to {_mask(to)}: {form.get('Twiml') or form.get('Url')}")
        account = self.server.state.account_sid
        self._schedule_receipts("call", sid, form)
        return {
            "account_sid": account, "answered_by": None, "api_version": "2010-04-01", "caller_name": None,
            "date_created": now, "date_updated": now, "direction": "outbound-api", "duration": None,
            "end_time": None, "forwarded_from": None, "from": sender, "from_formatted": sender,
            "group_sid": None, "parent_call_sid": None, "phone_number_sid": None, "price": None,
            "price_unit": "USD", "sid": sid, "start_time": None, "status": "queued",
            "subresource_uris": {}, "to": to, "to_formatted": to, "trunk_sid": None,
            "uri": f"/2010-04-01/Accounts/{account}/Calls/{sid}.json", "queue_time": "0",
        }  # fmt: skip

    def _verification(self, service_sid: str, form: dict[str, str]) -> dict[str, Any]:
        to = self._check_to(form, 2)
        channel = form.get("Channel", "")
        if channel not in {"sms", "call", "whatsapp", "email", "sna", "auto"}:
            raise TwilioError(60200)
        sid = _sid("VE")
        code = form.get("CustomCode", "(generated)")
        self._announce(f"VERIFY {sid} {channel} to {_mask(to)} locale={form.get('Locale', 'auto')}: code {code}")
        verification = verification_record(sid, service_sid, self.server.state.account_sid, to, channel)
        self.server.state.keep(verification)
        return verification

    def _verification_update(self, service_sid: str, sid_or_to: str, form: dict[str, str]) -> dict[str, Any]:
        """Verify feedback: the pending verification, by its SID or its number, approved or canceled."""
        status = form.get("Status", "")
        state = self.server.state
        with state.lock:
            pending = [
                verification
                for verification in state.verifications.values()
                if verification["service_sid"] == service_sid
                and sid_or_to in (verification["sid"], verification["to"])
                and verification["status"] == "pending"
            ]
            if not pending:
                raise TwilioError(20404, 404)
            verification = pending[-1]
            verification.update(status=status, valid=status == "approved", date_updated=_now())
            answer = dict(verification)
        self._announce(f"VERIFY {answer['sid']} {status}")
        return answer

    def _schedule_receipts(self, kind: str, sid: str, form: dict[str, str]) -> None:
        """Post the receipts the create asked for, from a thread, after this answer has gone."""
        url = form.get("StatusCallback")
        if not url or not self.server.state.receipts_on:
            return
        state = self.server.state
        events = receipt_events(kind, sid, form, state.account_sid)
        threading.Thread(target=post_receipts, args=(state, url, events), name="sandbox-receipts", daemon=True).start()

    def _announce(self, line: str) -> None:
        if not self.server.state.quiet:
            print(f"[twilio-sandbox] {line}", flush=True)

    def _send(self, status: int, body: dict[str, Any]) -> None:
        payload = json.dumps(body).encode()
        head = (
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\nDate: {formatdate(usegmt=True)}\r\n\r\n"
        )
        self.wfile.write(head.encode() + payload)  # one write: one packet for small answers


def receipt_events(kind: str, sid: str, form: dict[str, str], account_sid: str) -> list[dict[str, str]]:
    """The status callbacks Twilio would post for this message or call, in order."""
    to = form.get("To", "")
    final, error_code = RECEIPT_MAGIC_TO.get(to, (None, None))
    common = {"AccountSid": account_sid, "ApiVersion": "2010-04-01", "From": form.get("From", ""), "To": to}
    if kind == "call":
        status = final if final == "no-answer" else "completed"
        duration = "0" if status == "no-answer" else str(CALL_DURATION_SECONDS)
        call = {**common, "CallSid": sid, "CallStatus": status, "Direction": "outbound-api"}
        return [{**call, "CallDuration": duration, "Duration": duration, "CallbackSource": "call-progress-events"}]
    message = {**common, "MessageSid": sid, "SmsSid": sid}
    if form.get("MessagingServiceSid"):
        message["MessagingServiceSid"] = form["MessagingServiceSid"]
    ended = {"MessageStatus": final or "delivered", "SmsStatus": final or "delivered"}
    if final == "undelivered" and error_code is not None:
        ended["ErrorCode"] = str(error_code)
    return [{**message, "MessageStatus": "sent", "SmsStatus": "sent"}, {**message, **ended}]


def post_receipts(state: SandboxState, url: str, events: list[dict[str, str]]) -> None:
    """Post each receipt, signed as Twilio signs: the first soon, the last after the configured delay."""
    from urllib.parse import urlencode

    from twilio.request_validator import RequestValidator  # Twilio's own signing algorithm

    validator = RequestValidator(state.auth_token)
    for index, form in enumerate(events):
        last = index == len(events) - 1
        time.sleep(state.receipt_delay_seconds if last else min(0.1, state.receipt_delay_seconds))
        signature = validator.compute_signature(url, form)
        request = urllib.request.Request(
            url,
            data=urlencode(form).encode(),
            headers={"X-Twilio-Signature": signature, "Content-Type": "application/x-www-form-urlencoded"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                answered = response.status
        except urllib.error.HTTPError as error:
            answered = error.code
        except OSError:
            answered = 0  # nobody listened: Twilio would log error 11200
        with state.lock:
            state.receipts.append({"url": url, "form": form, "answered": answered})


class SandboxServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128  # Okta's 75 concurrent hooks may arrive at once

    def __init__(self, address: tuple[str, int], state: SandboxState) -> None:
        super().__init__(address, SandboxHandler)
        self.state = state

    @property
    def base_url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"


def start_in_thread(state: SandboxState, host: str = "127.0.0.1", port: int = 0) -> SandboxServer:
    """Start a sandbox on a free port in a daemon thread (tests); stop it with .shutdown()."""
    server = SandboxServer((host, port), state)
    threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="twilio-sandbox", daemon=True
    ).start()
    return server


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Local Twilio-compatible sandbox: nothing is really sent.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8099)
    parser.add_argument("--account-sid", default=DEFAULT_ACCOUNT_SID)
    parser.add_argument("--auth-token", default=DEFAULT_AUTH_TOKEN)
    parser.add_argument("--api-key")
    parser.add_argument("--api-secret")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="delay before every answer")
    parser.add_argument(
        "--receipt-delay-ms", type=float, default=1000.0, help="delay before a message's or call's final receipt"
    )
    parser.add_argument("--no-receipts", action="store_true", help="never post status callbacks")
    parser.add_argument("--quiet", action="store_true", help="do not print what is 'sent'")
    parser.add_argument("--no-contract", action="store_true", help="skip the checks against Twilio's spec")
    args = parser.parse_args(argv)
    state = SandboxState(
        account_sid=args.account_sid, auth_token=args.auth_token, api_key=args.api_key,
        api_secret=args.api_secret, latency_seconds=args.latency_ms / 1000, quiet=args.quiet,
        receipt_delay_seconds=args.receipt_delay_ms / 1000, receipts_on=not args.no_receipts,
        contract_checks=not args.no_contract,
    )  # fmt: skip
    server = SandboxServer((args.host, args.port), state)
    print(
        f"[twilio-sandbox] listening on {server.base_url} (account {args.account_sid}); nothing is really sent",
        flush=True,
    )
    if CONTRACT_OFF is not None:
        print(f"[twilio-sandbox] {CONTRACT_OFF}: `make run` installs it", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    sys.exit(0)


if __name__ == "__main__":
    main()
