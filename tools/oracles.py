"""The vendors' published contracts (tests/contracts/*.json) as JSON Schema validators.

Okta's and Twilio's OpenAPI documents are version 3.0, whose `nullable` is no JSON Schema keyword:
it is read here as "or null". Used by the tests and by the Twilio sandbox (a tool, never deployed).
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker

CONTRACTS = Path(__file__).resolve().parent.parent / "tests" / "contracts"


@cache
def contract(name: str) -> dict[str, Any]:
    """A vendored document, `nullable` turned into JSON Schema."""
    converted: dict[str, Any] = json_schema(json.loads((CONTRACTS / name).read_text()))
    return converted


def json_schema(node: Any) -> Any:
    if isinstance(node, list):
        return [json_schema(value) for value in node]
    if not isinstance(node, dict):
        return node
    converted = {key: json_schema(value) for key, value in node.items() if key != "nullable"}
    if node.get("nullable") is True:
        if "type" in converted:
            converted["type"] = [converted["type"], "null"]
        elif "$ref" in converted:  # a nullable enum, say
            converted = {"anyOf": [{"$ref": converted.pop("$ref")}, {"type": "null"}], **converted}
    return converted


def validator(document: str, pointer: str) -> Draft202012Validator:
    """A validator for the schema at `pointer` (e.g. '/components/schemas/TelephonyResponse') of a
    vendored document, its references resolved inside that document."""
    root = contract(document)
    schema = {**root, "$ref": f"#{pointer}"} if pointer else root
    return Draft202012Validator(schema, format_checker=FormatChecker())


def problems(document: str, pointer: str, instance: Any) -> list[str]:
    """Each way `instance` breaks the schema, as 'where: what'; empty when it conforms."""
    errors = validator(document, pointer).iter_errors(instance)
    return sorted(f"{'/'.join(map(str, error.absolute_path)) or '(root)'}: {error.message}" for error in errors)
