"""A local stand-in for Okta's Management API (real HTTP): GET /api/v1/users/{id}/factors only.

SSWS token authentication as Okta's (401 E0000011 otherwise), each user's factors as Okta lists them,
404 E0000007 for a user it does not know. The tests fill `OktaState.factors`; `make run` serves the
example user of examples/okta-event-hook.json, enrolled with the number of examples/okta-sms-request.json.
"""

from __future__ import annotations

import hmac
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class OktaState:
    """Each user's factors as Okta lists them; the requests seen; a delay before every answer."""

    token: str = ""
    url: str = ""
    factors: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    latency_seconds: float = 0.0
    requests: list[dict[str, str]] = field(default_factory=list)
    quiet: bool = True  # `make run` prints each request (masked), as the Twilio sandbox does


class _Handler(BaseHTTPRequestHandler):
    server: OktaStandIn

    def do_GET(self) -> None:
        state = self.server.state
        state.requests.append({"path": self.path, "authorization": self.headers.get("Authorization", "")})
        if state.latency_seconds:
            time.sleep(state.latency_seconds)
        parts = self.path.split("/")
        if not hmac.compare_digest(self.headers.get("Authorization", "").encode(), f"SSWS {state.token}".encode()):
            self._send(401, {"errorCode": "E0000011", "errorSummary": "Invalid token provided"})
            self._announce("401 (invalid token)")
        elif len(parts) == 6 and parts[1:4] == ["api", "v1", "users"] and parts[5] == "factors":
            user = parts[4]
            if user in state.factors:
                self._send(200, state.factors[user])
                self._announce(f"200, {len(state.factors[user])} factor(s)")
            else:
                self._send(404, {"errorCode": "E0000007", "errorSummary": "Not found: Resource not found"})
                self._announce("404 (no such user)")
        else:
            self._send(404, {"errorCode": "E0000007", "errorSummary": "Not found"})
            self._announce("404")

    def _announce(self, outcome: str) -> None:
        if not self.server.state.quiet:
            print(f"[okta-sandbox] GET {self.path.split('?')[0][:200]} -> {outcome}", flush=True)

    def _send(self, status: int, body: Any) -> None:
        payload = json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except OSError:  # the caller gave up (its deadline passed)
            pass

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


class OktaStandIn(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, state: OktaState, port: int = 0) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.state = state
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


def phone_factor(number: str, factor_type: str = "sms", status: str = "ACTIVE") -> dict[str, Any]:
    """One factor as GET /api/v1/users/{id}/factors lists it."""
    return {
        "id": "sms1o51EADOTFXHHBXBP" if factor_type == "sms" else "clf1o51EADOTFXHHBXBP",
        "factorType": factor_type,
        "provider": "OKTA",
        "status": status,
        "profile": {"phoneNumber": number},
    }


# The user of examples/okta-event-hook.json (and of examples/okta-sms-request.json's userProfile), and
# the number that example sends the code to: `make run` enrols one in the other.
EXAMPLE_USER_ID = "00uyxxSknGtK8022w0g3"
EXAMPLE_PHONE = "+14155550123"


def example_factors() -> dict[str, list[dict[str, Any]]]:
    """What `make run`'s stand-in knows: the example user with an active SMS factor on the example number."""
    return {EXAMPLE_USER_ID: [phone_factor(EXAMPLE_PHONE)]}
