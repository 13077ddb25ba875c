"""A local stand-in for Okta's Management API (real HTTP): GET /api/v1/users/{id}/factors only."""

from __future__ import annotations

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


class _Handler(BaseHTTPRequestHandler):
    server: OktaStandIn

    def do_GET(self) -> None:
        state = self.server.state
        state.requests.append({"path": self.path, "authorization": self.headers.get("Authorization", "")})
        if state.latency_seconds:
            time.sleep(state.latency_seconds)
        parts = self.path.split("/")
        if self.headers.get("Authorization") != f"SSWS {state.token}":
            self._send(401, {"errorCode": "E0000011", "errorSummary": "Invalid token provided"})
        elif len(parts) == 6 and parts[1:4] == ["api", "v1", "users"] and parts[5] == "factors":
            user = parts[4]
            if user in state.factors:
                self._send(200, state.factors[user])
            else:
                self._send(404, {"errorCode": "E0000007", "errorSummary": "Not found: Resource not found"})
        else:
            self._send(404, {"errorCode": "E0000007", "errorSummary": "Not found"})

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

    def __init__(self, state: OktaState) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.state = state
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

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
