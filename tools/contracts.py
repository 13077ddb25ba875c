"""Refresh the vendors' contracts the tests use as oracles: tests/contracts/*.json.

    python -m tools.contracts --okta PATH/okta-sdk-python --twilio PATH/twilio-oai

Each PATH is a git clone (a bare one will do); the file is read from its HEAD, whose commit is written
into the vendored file with the repository, the path and the licence. Only the operations and schemas
the function touches are kept, with every schema they refer to, so the files stay small and reviewable.
"""

from __future__ import annotations

import argparse
import json
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

CONTRACTS = Path(__file__).resolve().parent.parent / "tests" / "contracts"

OKTA_REPO, OKTA_PATH, OKTA_LICENCE = "okta/okta-sdk-python", "openapi/api.yaml", "Apache-2.0"
# The telephony hook's request and answer. The spec has no schema for an event hook's delivery (the
# payload /okta/events receives) nor for an inline hook's `error` answer: see tests/contracts/README.md.
OKTA_SCHEMAS = (
    "TelephonyRequestExecute",
    "InlineHookBasePayload",
    "TelephonyRequest",
    "TelephonyRequestData",
    "TelephonyResponse",
)

TWILIO_REPO, TWILIO_LICENCE = "twilio/twilio-oai", "MIT"
# spec file -> the paths whose POST the function (or its status-callback feedback) calls.
TWILIO_OPERATIONS = {
    "spec/json/twilio_api_v2010.json": (
        "/2010-04-01/Accounts/{AccountSid}/Messages.json",
        "/2010-04-01/Accounts/{AccountSid}/Calls.json",
    ),
    "spec/json/twilio_verify_v2.json": (
        "/v2/Services/{ServiceSid}/Verifications",
        "/v2/Services/{ServiceSid}/Verifications/{Sid}",
    ),
}
# Prose, examples and Twilio's own annotations make up most of its spec and none of the contract.
TWILIO_DROPPED_KEYS = frozenset({"description", "examples", "example", "x-twilio", "summary"})


def git_show(clone: Path, path: str) -> tuple[str, str]:
    """The file at HEAD of `clone`, and HEAD's commit id."""
    commit = subprocess.run(
        ["git", "-C", str(clone), "rev-parse", "HEAD"], check=True, capture_output=True, text=True
    ).stdout.strip()
    text = subprocess.run(
        ["git", "-C", str(clone), "show", f"{commit}:{path}"], check=True, capture_output=True, text=True
    ).stdout
    return text, commit


def refs(node: Any) -> Iterable[str]:
    """Names of the component schemas `node` refers to, at any depth."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
            yield ref.rsplit("/", 1)[1]
        for value in node.values():
            yield from refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from refs(value)


def closure(schemas: dict[str, Any], roots: Iterable[Any]) -> dict[str, Any]:
    """The component schemas reachable from `roots`, sorted by name."""
    kept: dict[str, Any] = {}
    pending = [name for root in roots for name in refs(root)]
    while pending:
        name = pending.pop()
        if name not in kept:
            kept[name] = schemas[name]
            pending.extend(refs(schemas[name]))
    return dict(sorted(kept.items()))


def without(node: Any, keys: frozenset[str]) -> Any:
    """`node` without the given keys, except where they are property names."""
    if isinstance(node, dict):
        return {
            key: (without(value, keys) if key != "properties" else {k: without(v, keys) for k, v in value.items()})
            for key, value in node.items()
            if key not in keys or not isinstance(value, str | dict | list)
        }
    if isinstance(node, list):
        return [without(value, keys) for value in node]
    return node


def source(repo: str, path: str, commit: str, licence: str) -> dict[str, str]:
    return {"repository": repo, "path": path, "commit": commit, "licence": licence}


def okta_contract(clone: Path) -> dict[str, Any]:
    text, commit = git_show(clone, OKTA_PATH)
    spec = yaml.safe_load(text)
    schemas = spec["components"]["schemas"]
    roots = [{"$ref": f"#/components/schemas/{name}"} for name in OKTA_SCHEMAS]
    return {
        "x-source": source(OKTA_REPO, OKTA_PATH, commit, OKTA_LICENCE),
        "openapi": spec["openapi"],
        "components": {"schemas": closure(schemas, roots)},
    }


def twilio_contract(clone: Path, path: str, operations: tuple[str, ...]) -> dict[str, Any]:
    text, commit = git_show(clone, path)
    spec = json.loads(text)
    paths = {name: {"post": spec["paths"][name]["post"]} for name in operations}
    paths = without(paths, TWILIO_DROPPED_KEYS)
    schemas = without(closure(spec["components"]["schemas"], paths.values()), TWILIO_DROPPED_KEYS)
    return {
        "x-source": source(TWILIO_REPO, path, commit, TWILIO_LICENCE),
        "openapi": spec["openapi"],
        "paths": paths,
        "components": {"schemas": schemas},
    }


def write(name: str, contract: dict[str, Any]) -> None:
    target = CONTRACTS / name
    target.write_text(json.dumps(contract, indent=1, ensure_ascii=False) + "\n")
    print(f"{target.relative_to(CONTRACTS.parent.parent)}: {contract['x-source']['commit']}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Vendor Okta's and Twilio's published schemas into tests/contracts.")
    parser.add_argument("--okta", type=Path, required=True, help="a clone of github.com/okta/okta-sdk-python")
    parser.add_argument("--twilio", type=Path, required=True, help="a clone of github.com/twilio/twilio-oai")
    args = parser.parse_args(argv)
    write("okta_telephony.json", okta_contract(args.okta))
    for path, operations in TWILIO_OPERATIONS.items():
        write(Path(path).name, twilio_contract(args.twilio, path, operations))


if __name__ == "__main__":
    main()
