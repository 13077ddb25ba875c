"""The benchmark's relay baseline: the least any hook must do per code, and nothing more.

A functions-framework function that, for every request, creates one message through Twilio's Messages
API (one form POST with basic auth over a keep-alive urllib3 pool as large as the threads, as the hook's
pool is) and answers Okta's success with the SID Twilio gave. It does not read or check the request:
the hook's own work (authentication, validation, policy, logging) is what the ratio against it shows.
"""

from __future__ import annotations

import base64
import json
import os
from typing import Any
from urllib.parse import urlencode

import flask
import functions_framework
import urllib3

_ACCOUNT = os.environ["TWILIO_ACCOUNT_SID"]
_URL = f"{os.environ['TWILIO_API_BASE_URL'].rstrip('/')}/2010-04-01/Accounts/{_ACCOUNT}/Messages.json"
_AUTH = base64.b64encode(f"{_ACCOUNT}:{os.environ['TWILIO_AUTH_TOKEN']}".encode()).decode()
_HEADERS = {"Authorization": f"Basic {_AUTH}", "Content-Type": "application/x-www-form-urlencoded"}
_FORM = urlencode({"To": "+14155550123", "From": os.environ["TWILIO_FROM_NUMBER"], "Body": "Your code is 482913"})
_POOL = urllib3.PoolManager(maxsize=int(os.environ.get("THREADS", "8")), block=False, retries=False)


@functions_framework.http
def relay_answer(request: flask.Request) -> dict[str, Any]:
    answer = _POOL.request("POST", _URL, body=_FORM, headers=_HEADERS, timeout=urllib3.Timeout(connect=1, read=2))
    sid = json.loads(answer.data)["sid"]
    return {
        "commands": [
            {
                "type": "com.okta.telephony.action",
                "value": [{"status": "SUCCESSFUL", "provider": "TWILIO", "transactionId": sid}],
            }
        ]
    }
