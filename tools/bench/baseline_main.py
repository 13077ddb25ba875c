"""The benchmark's baseline: a functions-framework function that only imports the mandated
dependencies (functions_framework, pydantic, twilio's Messages API) and answers a fixed dict.

Both libraries load lazily: `import pydantic` alone loads almost nothing until BaseModel and Field
are used, as twilio loads its Messages API on first use. The baseline loads the parts a function
must use (BaseModel and Field; the Messages API), not just the package names. BARE_PYDANTIC=1
imports the bare package instead, for the informational row of the benchmark."""

from __future__ import annotations

import os
from typing import Any

import flask
import functions_framework
import pydantic
from twilio.rest import Client

if not os.environ.get("BARE_PYDANTIC"):
    _ = pydantic.BaseModel, pydantic.Field  # what every user of pydantic models loads

# Touch the Messages API so its lazy imports are paid here too, as the hook pays them.
Client("AC" + "0" * 32, "baseline").api.v2010.account.messages  # noqa: B018

FIXED_ANSWER = {
    "commands": [
        {
            "type": "com.okta.telephony.action",
            "value": [{"status": "SUCCESSFUL", "provider": "TWILIO", "transactionId": "SM" + "0" * 32}],
        }
    ]
}


@functions_framework.http
def fixed_answer(request: flask.Request) -> dict[str, Any]:
    return FIXED_ANSWER
