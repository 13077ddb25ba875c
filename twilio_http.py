"""Twilio's own HTTP client, given what it lacks for a hook with a 3 s budget.

- a deadline: the library has no timeout by default, and Okta stops waiting after 3 s;
- a connection pool as large as the threads we serve, so concurrent hooks reuse connections (each
  new one to Twilio costs a TLS handshake) instead of throwing them away;
- an optional base URL: every https://<anything>.twilio.com request goes there instead, which is how
  Twilio documents pointing the library at a mock, and how the local sandbox is reached.
"""

from __future__ import annotations

import re
from typing import Any

from requests import PreparedRequest, Response
from requests.adapters import HTTPAdapter
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response as TwilioResponse
from urllib3.util import Timeout

_TWILIO_HOST = re.compile(r"^https://[A-Za-z0-9.-]+\.twilio\.com(?=/|$)")


class _DeadlineAdapter(HTTPAdapter):
    """Applies one deadline to connect plus read, whatever timeout the caller passed."""

    def __init__(self, deadline: Timeout, pool_size: int) -> None:
        super().__init__(pool_connections=4, pool_maxsize=pool_size)
        self._deadline = deadline

    def send(self, request: PreparedRequest, *args: Any, **kwargs: Any) -> Response:
        kwargs["timeout"] = self._deadline
        return super().send(request, *args, **kwargs)


class TwilioTransport(TwilioHttpClient):
    """TwilioHttpClient with a deadline, a sized pool and an optional base URL."""

    def __init__(self, *, timeout_seconds: float, pool_size: int, base_url: str | None = None) -> None:
        super().__init__(pool_connections=True)
        # urllib3's `total` bounds connect and read together; connecting gets at most half of it.
        deadline = Timeout(total=timeout_seconds, connect=timeout_seconds / 2)
        adapter = _DeadlineAdapter(deadline, pool_size)
        assert self.session is not None  # pool_connections=True always makes one
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)
        self.base_url = base_url.rstrip("/") if base_url else None

    def rebase(self, url: str) -> str:
        """https://api.twilio.com/2010-04-01/... -> {base_url}/2010-04-01/... when a base URL is set."""
        if self.base_url is None:
            return url
        return _TWILIO_HOST.sub(self.base_url, url, count=1)

    def request(
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> TwilioResponse:
        return super().request(method, self.rebase(url), params, data, headers, auth, timeout, allow_redirects)
