"""`make run`: serve the hook locally, against real Twilio or, without credentials, the sandbox.

Reads `.env` when present (variables already in the environment win). Without Twilio credentials it
starts the local Twilio sandbox and points TWILIO_API_BASE_URL at it. In that mode it also:
- makes up the hook's secret and the event hook's when they are unset, keeps them in .run/hook-secret
  and .run/event-hook-secret, and prints curl commands ready to paste;
- serves a local Okta Management API stand-in and points OKTA_ORG_URL and OKTA_API_TOKEN at it (when
  unset), so Verify feedback (/okta/events) can be tried end to end with TWILIO_VERIFY_SERVICE_SID set.

Its life: a taken port is refused before anything starts; a start that fails stops every process
started so far and exits 1; Ctrl-C or SIGTERM stops them all and exits 0; a process that dies while
running stops the others and exits 1. Every process it starts is stopped with the processes it started.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from types import FrameType

from telephony.settings import DEFAULT_BLOCKED_NUMBER_TYPES, unknown_names
from tools.processes import (
    ROOT,
    StartFailed,
    free_port,
    listening,
    port_taken,
    start_function,
    start_sandbox,
    stop,
)
from tools.sandbox.okta_stand_in import OktaStandIn, OktaState, example_factors
from tools.sandbox.twilio_sandbox import DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN

SANDBOX_FROM = "+15005550006"  # Twilio's magic "valid sender" number
# Twilio's magic numbers (+1 500 555 …) are personal numbers, which the default policy refuses: the
# sandbox lets them through, unless BLOCKED_NUMBER_TYPES is set.
SANDBOX_BLOCKED_NUMBER_TYPES = ",".join(kind for kind in DEFAULT_BLOCKED_NUMBER_TYPES if kind != "PERSONAL_NUMBER")
# Any Verify service SID works against the sandbox; this one is printed for copy and paste.
SANDBOX_VERIFY_SERVICE_SID = "VA" + "5a" * 16
STOP_GRACE_SECONDS = 5.0
RULE = "=" * 78


class Stopped(Exception):
    """SIGTERM or SIGINT: stop everything and exit 0."""


# What make run reads besides the function's settings: its port and address, and the sandbox's.
RUN_VARIABLES = ("PORT", "HOST", "SANDBOX_LATENCY_MS", "SANDBOX_RECEIPT_DELAY_MS")
_INLINE_COMMENT = re.compile(r"\s+#.*$")


def read_dotenv(path: Path) -> dict[str, str]:
    """KEY=VALUE lines as docker and python-dotenv read them: '#' comments, blank lines, optional
    'export ', a value in quotes (then a comment may follow the closing quote), and an unquoted value's
    comment from a '#' after a space ('a#b' keeps its '#'). A byte order mark is not part of a key."""
    values: dict[str, str] = {}
    if not path.exists():
        return values
    for line in path.read_text(encoding="utf-8-sig").splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        value = value.strip()
        quoted = re.fullmatch(r"""(['"])(.*?)\1(\s+#.*)?""", value)
        values[key.strip()] = quoted.group(2) if quoted else _INLINE_COMMENT.sub("", value)
    return values


def local_url(host: str, port: int) -> str:
    """The hook's URL from this machine, as the sandbox posts receipts to it and the banner's curl calls
    it: localhost when it listens on IPv4 loopback or everywhere; an IPv6-only or other host as given
    (localhost may resolve to 127.0.0.1 alone, where nothing would listen)."""
    name = "localhost" if host in ("127.0.0.1", "localhost", "0.0.0.0", "[::]") else host
    return f"http://{name}:{port}"


# Sets an event's `published` to now, in the shell: the event hook acts only on events under 10 minutes old.
STAMP_NOW = r'sed "s/\"published\": \"[^\"]*\"/\"published\": \"$(date -u +%FT%TZ)\"/"'


def say(*lines: str) -> None:
    """Print, whoever reads: a closed pipe (`make run | head`) must not stop the clean-up."""
    with suppress(BrokenPipeError, ValueError):
        print("\n".join(lines), flush=True)


def shown(path: Path) -> str:
    """`path` as the user types it: relative to the current directory when below it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def made_up_secret(path: Path) -> str:
    """The secret kept in `path`, made up (and kept, readable by this user only) the first time."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.write_text(secrets.token_urlsafe(24))
        path.chmod(0o600)
    return path.read_text().strip()


@contextmanager
def okta_stand_in(token: str) -> Iterator[OktaStandIn]:
    """The Okta Management API stand-in, in this process, knowing the example user."""
    server = OktaStandIn(OktaState(token=token, factors=example_factors(), quiet=False))
    server.state.url = server.url
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


Children = list[tuple[str, subprocess.Popen[bytes]]]


def started(name: str, process: subprocess.Popen[bytes], port: int, running: ExitStack, children: Children) -> None:
    """Register `process` to be stopped first, then wait until it listens on `port` (StartFailed if not)."""
    running.callback(say, f"run: {name} stopped")
    running.callback(stop, process, STOP_GRACE_SECONDS)
    children.append((name, process))
    try:
        listening(process, port)
    except StartFailed as failure:
        raise StartFailed(f"{name} did not start: {failure}") from None


def sandbox_settings(env: dict[str, str], port: int, run_dir: Path, running: ExitStack, children: Children) -> None:
    """Start the Twilio sandbox and the Okta stand-in, point `env` at them, make up the secrets."""
    sandbox_port = free_port()
    env.update(
        TWILIO_ACCOUNT_SID=DEFAULT_ACCOUNT_SID,
        TWILIO_AUTH_TOKEN=DEFAULT_AUTH_TOKEN,
        TWILIO_API_BASE_URL=f"http://127.0.0.1:{sandbox_port}",
    )
    env.setdefault("TWILIO_FROM_NUMBER", SANDBOX_FROM)
    magic_numbers_pass = not env.get("BLOCKED_NUMBER_TYPES", "").strip()
    if magic_numbers_pass:
        env["BLOCKED_NUMBER_TYPES"] = SANDBOX_BLOCKED_NUMBER_TYPES
    env.pop("TWILIO_API_KEY", None)
    env.pop("TWILIO_API_SECRET", None)
    latency, receipt_delay = env.get("SANDBOX_LATENCY_MS", "0"), env.get("SANDBOX_RECEIPT_DELAY_MS", "1000")
    afterwards = (
        [" Verify has no delivery receipts: the hook's line is the last word on each code."]
        if env.get("TWILIO_VERIFY_SERVICE_SID")
        else [" It then posts signed delivery receipts back to the hook: its receipt lines follow the hook's line."]
    )
    say(
        RULE,
        " No TWILIO_ACCOUNT_SID configured: using the LOCAL TWILIO SANDBOX.",
        " NOTHING IS REALLY SENT. The sandbox prints each SMS, call and verification instead.",
        *afterwards,
        *(
            [
                " Twilio's magic numbers (+1500555...) are personal numbers, which BLOCKED_NUMBER_TYPES refuses",
                " by default: here they reach the sandbox (BLOCKED_NUMBER_TYPES=" + SANDBOX_BLOCKED_NUMBER_TYPES + ").",
            ]
            if magic_numbers_pass
            else []
        ),
        RULE,
    )
    arguments = ("--latency-ms", latency, "--receipt-delay-ms", receipt_delay)
    sandbox = start_sandbox(sandbox_port, env, *arguments, wait=False, own_group=True)
    started("the Twilio sandbox", sandbox, sandbox_port, running, children)
    if not env.get("OKTA_ORG_URL") and not env.get("OKTA_API_TOKEN"):
        env["OKTA_API_TOKEN"] = secrets.token_urlsafe(24)  # between this process and the function only
        env["OKTA_ORG_URL"] = running.enter_context(okta_stand_in(env["OKTA_API_TOKEN"])).url
        say(f" Okta Management API stand-in on {env['OKTA_ORG_URL']} (OKTA_ORG_URL), for Verify feedback.")
    url = local_url(env.get("HOST", "127.0.0.1"), port)
    env.setdefault("PUBLIC_URL", url)  # receipts need the function's own URL: the sandbox posts them there
    if not env.get("OKTA_HOOK_AUTH_SECRET") and not env.get("OKTA_HOOK_OAUTH_ISSUER"):
        secret_file = run_dir / "hook-secret"
        env["OKTA_HOOK_AUTH_SECRET"] = made_up_secret(secret_file)
        header = env.get("OKTA_HOOK_AUTH_HEADER", "").strip() or "Authorization"  # checked by the hook's start
        say(
            f" No OKTA_HOOK_AUTH_SECRET configured: made one up, kept in {shown(secret_file)}",
            " Try it (the secret is read from the file, so it never lands in a terminal log):",
            f'   curl -sS -X POST {url}/ -H "{header}: $(cat {shown(secret_file)})" \\',
            "     -H 'Content-Type: application/json' -d @examples/okta-sms-request.json",
        )
    if not env.get("OKTA_EVENT_HOOK_AUTH_SECRET"):
        secret_file = run_dir / "event-hook-secret"
        env["OKTA_EVENT_HOOK_AUTH_SECRET"] = made_up_secret(secret_file)
        header = env.get("OKTA_EVENT_HOOK_AUTH_HEADER", "").strip() or "Authorization"
        say(
            f" No OKTA_EVENT_HOOK_AUTH_SECRET configured: made one up, kept in {shown(secret_file)}",
            " The event hook (Verify feedback, after a code sent with TWILIO_VERIFY_SERVICE_SID set):",
            " (its `published` set to now: an event over 10 minutes old approves nothing):",
            f"   {STAMP_NOW} examples/okta-event-hook.json |",
            f'   curl -sS -X POST {url}/okta/events -H "{header}: $(cat {shown(secret_file)})" \\',
            "     -H 'Content-Type: application/json' -d @-",
        )
    if not env.get("TWILIO_VERIFY_SERVICE_SID"):
        guard_off = env.get("GUARD_MODE", "").strip().lower() == "off"
        on_port = "" if port == 8080 else f"PORT={port} "
        say(
            " Verify feedback needs codes sent through Verify: any Verify service SID works with the sandbox,",
            f"   {on_port}TWILIO_VERIFY_SERVICE_SID={SANDBOX_VERIFY_SERVICE_SID} make run",
            " Until then the event hook has nothing to do (GUARD_MODE=off: no conversions either)."
            if guard_off
            else " Until then the event hook only reports conversions to the spend guard, as it would deployed so.",
        )
    say(
        f" Watch the spend guard stop a short SMS pump: .venv/bin/python -m tools.sandbox.pump --port {port}",
        " More requests to try, and what each gives: examples/README.md",
        RULE,
    )


def start(env: dict[str, str], port: int, run_dir: Path, running: ExitStack, children: Children) -> None:
    """Start what `env` asks for; every process is registered in `running` as soon as it exists."""
    if not env.get("TWILIO_ACCOUNT_SID"):
        sandbox_settings(env, port, run_dir, running, children)
    hook = start_function("telephony_hook", "main.py", port, env, wait=False, own_group=True)
    started("the telephony hook", hook, port, running, children)


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env-file", type=Path, default=ROOT / ".env", help="settings file (default: .env)")
    parser.add_argument("--run-dir", type=Path, default=ROOT / ".run", help="where made-up secrets are kept")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    def stopped(signal_number: int, _frame: FrameType | None) -> None:
        raise Stopped(signal.Signals(signal_number).name)

    # From the first instant: a signal while starting stops what has started, too.
    signal.signal(signal.SIGTERM, stopped)
    signal.signal(signal.SIGINT, stopped)
    arguments = parse_arguments(argv)
    dotenv = read_dotenv(arguments.env_file)
    for key in unknown_names(dotenv, RUN_VARIABLES, "a line"):
        say(f"run: {shown(arguments.env_file)} sets {key}, which no setting reads: it is ignored.")
    env = {**dotenv, **os.environ}
    env = {key: value for key, value in env.items() if value != ""}
    port_setting = env.setdefault("PORT", "8080")
    if not port_setting.isdigit() or not 0 < int(port_setting) < 65536:
        say(f"run: PORT must be a TCP port number, not {port_setting[:20]!r}; nothing was started.")
        return 1
    port = int(port_setting)
    # functions-framework listens on every interface unless HOST says otherwise: a local run, on this
    # machine only (HOST=0.0.0.0 make run to reach it from elsewhere).
    host = env.setdefault("HOST", "127.0.0.1")
    if ":" in host and not host.startswith("["):  # an IPv6 address: gunicorn binds '[::]:PORT'
        host = env["HOST"] = f"[{host}]"
    taken = port_taken(port)
    if taken:
        say(f"run: {taken}; nothing was started.", f"     Stop it, or choose another port: PORT={port + 1} make run")
        return 1
    children: Children = []
    with ExitStack() as running:
        try:
            start(env, port, arguments.run_dir, running, children)
            say(f"run: telephony hook listening on {local_url(host, port)}/ (Ctrl-C stops)")
            while True:
                for name, child in children:
                    if child.poll() is not None:
                        say(f"run: {name} exited with {child.returncode}; stopping the rest.")
                        return 1
                time.sleep(0.2)
        except StartFailed as failure:
            say(f"run: {failure}.", "     Its own message, if any, is above. Stopping what was started.")
            return 1
        except Stopped:
            say("run: stopping")
            return 0
        finally:  # a second Ctrl-C must not cut the clean-up short; stop() bounds it
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            signal.signal(signal.SIGINT, signal.SIG_IGN)


if __name__ == "__main__":
    sys.exit(main())
