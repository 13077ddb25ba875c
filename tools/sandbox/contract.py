"""Twilio's published contract (twilio-oai, vendored in tests/contracts) applied to the sandbox's traffic.

One table says which vendored operation each (method, path) must satisfy; a new endpoint of the
sandbox adds one row. A request is checked the way Twilio checks one: path SIDs against their
patterns, every form parameter known, of its type, and the required ones present. An answer is
checked against the operation's response schema, so the sandbox cannot drift from Twilio's shape.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from jsonschema import Draft202012Validator, ValidationError

from tools.oracles import contract, problems

API_2010, VERIFY_V2 = "twilio_api_v2010.json", "twilio_verify_v2.json"

# (method, path template in the vendored document, document). Templates become patterns whose
# placeholders match any segment, so a malformed SID reaches the check and is refused by name.
OPERATIONS: tuple[tuple[str, str, str], ...] = (
    ("POST", "/2010-04-01/Accounts/{AccountSid}/Messages.json", API_2010),
    ("POST", "/2010-04-01/Accounts/{AccountSid}/Calls.json", API_2010),
    ("POST", "/v2/Services/{ServiceSid}/Verifications", VERIFY_V2),
    ("POST", "/v2/Services/{ServiceSid}/Verifications/{Sid}", VERIFY_V2),
)


class ContractViolation(Exception):
    """A request Twilio would refuse: `parameter` names what is wrong, `message` says how."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(f"{parameter}: {message}")
        self.parameter, self.message = parameter, message


@dataclass(frozen=True)
class Operation:
    method: str
    template: str
    document: str

    @cached_property
    def pattern(self) -> re.Pattern[str]:
        parts = re.split(r"\{(\w+)\}", self.template)
        regex = "".join(re.escape(part) if i % 2 == 0 else f"(?P<{part}>[^/]+)" for i, part in enumerate(parts))
        return re.compile(f"^{regex}$")

    @cached_property
    def spec(self) -> dict[str, Any]:
        operation: dict[str, Any] = contract(self.document)["paths"][self.template][self.method.lower()]
        return operation

    @cached_property
    def form_schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = self.spec["requestBody"]["content"]["application/x-www-form-urlencoded"]["schema"]
        return schema

    def _resolved(self, schema: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in schema:
            schema = contract(self.document)["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
        return schema

    def check_request(self, path: str, form: dict[str, list[str]]) -> None:
        """Raise ContractViolation for the first thing Twilio would refuse."""
        match = self.pattern.match(path)
        assert match is not None, path
        for parameter in self.spec.get("parameters", []):
            if parameter["in"] == "path":
                value = match.group(parameter["name"])
                if not Draft202012Validator(parameter["schema"]).is_valid(value):
                    raise ContractViolation(parameter["name"], f"does not match {parameter['schema'].get('pattern')}")
        properties = self.form_schema.get("properties", {})
        for name in form:
            if name not in properties:
                raise ContractViolation(name, "is not a parameter of this resource")
        for name in self.form_schema.get("required", []):
            if name not in form:
                raise ContractViolation(name, "is required")
        typed = {name: self._typed(properties[name], values) for name, values in form.items()}
        for problem in sorted(self._validator.iter_errors(typed), key=lambda error: list(error.absolute_path)):
            name = str(problem.absolute_path[0]) if problem.absolute_path else "body"
            raise ContractViolation(name, _without_value(problem))

    @cached_property
    def _escaped(self) -> str:
        return self.template.replace("~", "~0").replace("/", "~1")

    @cached_property
    def _validator(self) -> Draft202012Validator:
        root = contract(self.document)
        pointer = f"#/paths/{self._escaped}/post/requestBody/content/application~1x-www-form-urlencoded/schema"
        return Draft202012Validator({**root, "$ref": pointer})

    def _typed(self, schema: dict[str, Any], values: list[str]) -> Any:
        """A form value read as the schema's type, the way Twilio reads it; unreadable stays text,
        so the schema refuses it by name."""
        kind = self._resolved(schema).get("type")
        if kind == "array":
            return values
        value = values[-1]
        if kind == "integer" and re.fullmatch(r"-?[0-9]+", value):
            return int(value)
        if kind == "number" and re.fullmatch(r"-?[0-9]+(\.[0-9]+)?", value):
            return float(value)
        if kind == "boolean" and value.lower() in {"true", "false"}:
            return value.lower() == "true"
        return value

    def answer_problems(self, status: int, body: Any) -> list[str]:
        """How the sandbox's answer breaks the operation's response schema (empty: it conforms)."""
        response = self.spec["responses"].get(str(status))
        if response is None or "content" not in response:
            return [] if status >= 400 else [f"status {status} is not one Twilio answers"]
        pointer = f"/paths/{self._escaped}/post/responses/{status}/content/application~1json/schema"
        return problems(self.document, pointer, body)


def _without_value(problem: ValidationError) -> str:
    """What the schema asks ('must satisfy type: integer'), never the value sent: it may be a code."""
    expected = problem.validator_value
    if isinstance(expected, list | dict) and len(json.dumps(expected)) > 120:
        expected = "..."
    return f"must satisfy {problem.validator}: {json.dumps(expected)}"


TABLE = tuple(Operation(*row) for row in OPERATIONS)


def operation_for(method: str, path: str) -> Operation | None:
    """The vendored operation a request must satisfy, or None when Twilio's contract has no such route here."""
    for operation in TABLE:
        if operation.method == method and operation.pattern.match(path):
            return operation
    return None
