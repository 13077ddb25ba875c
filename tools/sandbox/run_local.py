"""`make run`: serve the hook locally, against real Twilio or, without credentials, the sandbox.

Reads `.env` when present (variables already in the environment win). Without Twilio credentials it
starts the local Twilio sandbox and points TWILIO_API_BASE_URL at it; without a hook secret in that
mode it makes one up, keeps it in .run/hook-secret, and prints a curl command ready to paste.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

from tools.processes import ROOT, free_port, start_function, start_sandbox
from tools.processes import stop as stop_process
from tools.sandbox.twilio_sandbox import DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN

RUN_DIR = ROOT / ".run"
SANDBOX_FROM = "+15005550006"  # Twilio's magic "valid sender" number


def read_dotenv(path: Path) -> dict[str, str]:
    """KEY=VALUE lines; '#' comments, blank lines, optional 'export ' and quotes."""
    values: dict[str, str] = {}
    if not path.exists():
        return values
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def main() -> None:
    env = {**read_dotenv(ROOT / ".env"), **os.environ}
    env = {key: value for key, value in env.items() if value != ""}
    port = int(env.setdefault("PORT", "8080"))
    children: list[subprocess.Popen[bytes]] = []

    sandboxed = not env.get("TWILIO_ACCOUNT_SID")
    if sandboxed:
        sandbox_port = free_port()
        env.update(
            TWILIO_ACCOUNT_SID=DEFAULT_ACCOUNT_SID,
            TWILIO_AUTH_TOKEN=DEFAULT_AUTH_TOKEN,
            TWILIO_API_BASE_URL=f"http://127.0.0.1:{sandbox_port}",
        )
        env.setdefault("TWILIO_FROM_NUMBER", SANDBOX_FROM)
        env.setdefault("PUBLIC_URL", f"http://localhost:{port}")  # the sandbox posts its receipts here
        env.pop("TWILIO_API_KEY", None)
        env.pop("TWILIO_API_SECRET", None)
        latency, receipt_delay = env.get("SANDBOX_LATENCY_MS", "0"), env.get("SANDBOX_RECEIPT_DELAY_MS", "1000")
        children.append(start_sandbox(sandbox_port, env, "--latency-ms", latency, "--receipt-delay-ms", receipt_delay))
        print("=" * 78)
        print(" No TWILIO_ACCOUNT_SID configured: using the LOCAL TWILIO SANDBOX.")
        print(" NOTHING IS REALLY SENT. The sandbox prints each SMS and call instead, then posts")
        print(" signed delivery receipts back to the hook: its receipt lines follow the hook's line.")
        print("=" * 78, flush=True)
        if not env.get("OKTA_HOOK_AUTH_SECRET") and not env.get("OKTA_HOOK_OAUTH_ISSUER"):
            RUN_DIR.mkdir(exist_ok=True)
            secret_file = RUN_DIR / "hook-secret"
            if not secret_file.exists():
                secret_file.write_text(secrets.token_urlsafe(24))
                secret_file.chmod(0o600)
            env["OKTA_HOOK_AUTH_SECRET"] = secret_file.read_text().strip()
            env.pop("OKTA_HOOK_AUTH_HEADER", None)
            print(" No OKTA_HOOK_AUTH_SECRET configured: made one up, kept in .run/hook-secret")
            print(" Try it (the secret is read from the file, so it never lands in a terminal log):")
            print(f'   curl -sS -X POST http://localhost:{port}/ -H "Authorization: $(cat .run/hook-secret)" \\')
            print("     -H 'Content-Type: application/json' -d @examples/okta-sms-request.json")
            print("=" * 78, flush=True)

    children.append(start_function("telephony_hook", "main.py", port, env))
    print(f"run: telephony hook listening on http://localhost:{port}/ (Ctrl-C stops)", flush=True)

    def stop(*_: object) -> None:
        for child in children:
            stop_process(child, grace_seconds=5)
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while all(child.poll() is None for child in children):
        time.sleep(0.5)
    stop()


if __name__ == "__main__":
    main()
