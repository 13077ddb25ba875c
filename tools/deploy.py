"""`make deploy`: deploy the hook as a Cloud Run function (gen2), secrets from Secret Manager.

Reads its inputs from the environment (make passes its command-line variables through):
  FUNCTION_NAME   service name                       (default okta-telephony-hook)
  REGION          Cloud Run region                   (default us-central1)
  PROJECT         Google Cloud project               (default: gcloud's configured project)
  SECRETS         ENV=secret:version,...             Secret Manager versions, pinned (no 'latest')
  MIN_INSTANCES   instances kept warm                (default 1: cold starts eat into Okta's 3 s)
  MAX_INSTANCES   cap on instances                   (optional; see docs/deploy.md, "Sizing")
  THREADS         threads per instance = --concurrency (default 80: Okta's usual 75 hooks at once)
  MEMORY, CPU     instance size                      (default 512Mi, 1)
  RUNTIME         Cloud Run functions runtime        (default python313; python312 is deprecated in Oct 2028)
  SERVICE_ACCOUNT runtime service account            (optional)
  NETWORK, SUBNET Direct VPC egress, to reach Memorystore (optional; docs/spend-guard.md)
  VPC_EGRESS      private-ranges-only (default with NETWORK or SUBNET) or all-traffic
  GUARD_STORE_CA  secret:version holding the store's TLS certificate authority (Memorystore's in-transit
                  encryption): mounted as /etc/secrets/guard-store-ca/ca.pem (optional; docs/spend-guard.md)
  DRY_RUN=1       print the gcloud commands, run nothing
Plain settings (every non-secret variable the hook reads) go to --set-env-vars when set.
After the function, the log-based metrics in tools/monitoring/*.metric.json are created (or updated): the
alert policy in tools/monitoring/alert-policy.json counts on them (docs/receipts-and-alerts.md).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import re
import shlex
import socket
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from telephony.delivery import missing_configuration, twilio_credentials
from telephony.guard import unreachable_limits
from telephony.policy import DeliveryPolicy
from telephony.receipts import Receipts
from telephony.settings import (
    LOOPBACK_HOSTS,
    OUTBOUND_URLS,
    Settings,
    SettingsError,
    env_names,
    load_settings,
    secret_env_names,
    spellings,
    unknown_names,
)
from telephony.voice import VoiceScript

SECRET_SETTINGS = tuple(secret_env_names())
# Set by the deploy itself: THREADS from its own variable, the project for log traces.
PLAIN_SETTINGS = tuple(
    name for name in env_names() if name not in {*SECRET_SETTINGS, "THREADS", "GOOGLE_CLOUD_PROJECT"}
)
# Each setting's spellings (TWILIO_API_KEY_SID is TWILIO_API_KEY): deployed under its documented name.
SPELLINGS = spellings()
DOCUMENTED = {spelling: name for name, each in SPELLINGS.items() for spelling in each}
MONITORING = Path(__file__).resolve().parent / "monitoring"
LOG_METRICS = (
    "hook-outcomes.metric.json",
    "hook-refusals.metric.json",
    "delivery-statuses.metric.json",
    "guard-refusals.metric.json",
    "guard-store.metric.json",
)
# A project ID or number (a domain-scoped one has '.' and ':'): never ',', '=' or a space, which would
# add entries of their own to --set-secrets.
_SECRET_VERSION = r"([A-Za-z0-9_-]+|projects/[a-z0-9.:-]+/secrets/[A-Za-z0-9_-]+):([1-9][0-9]*)"
# The function's name is gcloud's one positional argument: a name that began with '-' would be a flag.
_FUNCTION_NAME = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")
_SECRET_REF = re.compile(rf"^([A-Z_]+)={_SECRET_VERSION}$")
# A secret volume (gcloud's '/mount_path:/file_path=secret:version'): the file GUARD_STORE_CA becomes,
# which the store's rediss:// URI names with ?ssl_ca_certs=.
STORE_CA_MOUNT, STORE_CA_FILE = "/etc/secrets/guard-store-ca", "ca.pem"


DEFAULT_RUNTIME = "python313"  # python312 is deprecated on Cloud Run functions in October 2028
# The deploy's own inputs (the docstring's list) and the Makefile's variables: with the settings, every
# name `make deploy NAME=value` may be given.
DEPLOY_INPUTS = frozenset(
    {"FUNCTION_NAME", "REGION", "PROJECT", "SECRETS", "MIN_INSTANCES", "MAX_INSTANCES", "THREADS", "MEMORY", "CPU",
     "RUNTIME", "SERVICE_ACCOUNT", "NETWORK", "SUBNET", "VPC_EGRESS", "GUARD_STORE_CA", "DRY_RUN", "PYTHON", "ARGS"}
)  # fmt: skip
# gcloud's forms: a region ('europe-west1'), a memory size with its unit ('512Mi', '1Gi'), CPUs ('1', '0.5').
_REGION = re.compile(r"[a-z]+-[a-z]+[0-9]+")
_MEMORY = re.compile(r"[1-9][0-9]*(Ki|Mi|Gi|Ti|k|M|G|T|MB|GB)")
_CPU = re.compile(r"[0-9]*\.?[0-9]+|[0-9]+m")  # gcloud's forms: .5, 2, 2.0, 2000m


def vcpus(cpu: str) -> float:
    """gcloud's CPU value in vCPUs: '2000m' is 2."""
    return int(cpu[:-1]) / 1000 if cpu.endswith("m") else float(cpu)


# The names /etc/hosts files give this machine, besides localhost (RFC 6761 reserves *.localhost).
_LOCAL_NAMES = ("ip6-localhost", "ip6-loopback", "localhost.localdomain", "localhost6", "localhost6.localdomain6")


def this_machine(host: str) -> bool:
    """Whether a URL's host can only be the machine it runs on, in any spelling a resolver or the
    socket library accepts: localhost and its names, 127/8 and ::1 (IPv4-mapped too, '127.1',
    '2130706433', '0x7f000001'), and the unspecified 0.0.0.0 and ::."""
    name = host.rstrip(".").lower()
    if name in LOOPBACK_HOSTS or name in _LOCAL_NAMES or name.endswith(".localhost"):
        return True
    try:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(name)
    except ValueError:
        try:
            address = ipaddress.IPv4Address(socket.inet_aton(name))  # the shorthand forms C accepts
        except OSError:
            return False
    if isinstance(address, ipaddress.IPv6Address) and not (address.is_loopback or address.is_unspecified):
        if address.ipv4_mapped is not None:  # ::ffff:127.0.0.1
            address = address.ipv4_mapped
        elif int(address) >> 32 == 0:  # the older IPv4-compatible form, ::127.0.0.1
            address = ipaddress.IPv4Address(int(address))
    return address.is_loopback or address.is_unspecified


# Secrets come from Secret Manager: the settings check sees a stand-in for each one SECRETS names (their
# values are checked by the function at start-up).
_SECRET_STAND_IN, _STORE_STAND_IN = "from-secret-manager", "redis://stand-in.invalid:6379/0"


class DeployError(SystemExit):
    pass


def parse_secrets(spec: str) -> dict[str, str]:
    """'OKTA_HOOK_AUTH_SECRET=okta-hook-secret:3,...' -> {env: secret:version}, versions pinned. A wrong
    entry is named by its variable alone: what follows '=' may be the secret itself, pasted there."""
    secrets: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        match = _SECRET_REF.match(item)
        named = item.partition("=")[0]
        shown = named if named in DOCUMENTED else "an entry"  # anything else may be the secret itself
        if not match:
            raise DeployError(
                f"deploy: SECRETS: {shown} is not ENV=secret:version (a pinned number, not latest; "
                "the secret's name in Secret Manager, never its value)"
            )
        env, secret, version = match.groups()
        env = DOCUMENTED.get(env, env)
        if env not in SECRET_SETTINGS:
            raise DeployError(f"deploy: SECRETS: {shown} is not a secret setting ({', '.join(SECRET_SETTINGS)})")
        if env in secrets:
            raise DeployError(f"deploy: SECRETS names {env} twice")
        secrets[env] = f"{secret}:{version}"
    return secrets


def env_vars_flag(values: Mapping[str, str]) -> str:
    """--set-env-vars with a delimiter that splits back into exactly these settings (gcloud's ^DELIM^
    escaping), for lists and JSON: no value holds it, nor makes it with a neighbour ('me@' + '@@')."""
    pairs = [f"{name}={value}" for name, value in values.items()]
    for delimiter in ("|", "~", "#", "@@", "%%", ";;", "!!", "**", "++", "<>"):
        if delimiter.join(pairs).split(delimiter) == pairs:
            return f"--set-env-vars=^{delimiter}^" + delimiter.join(pairs)
    raise DeployError("deploy: the plain settings hold every delimiter this deploy tries (| ~ # @@ %% ;; !! ** ++ <>)")


def one_spelling(env: Mapping[str, str], name: str) -> str | None:
    """A setting's value, whichever of its spellings gives it; two spellings giving two values are
    refused (the function would read the first, and drop the other without a word)."""
    given = {spelling: env[spelling] for spelling in SPELLINGS[name] if env.get(spelling)}
    if len(set(given.values())) > 1:
        raise DeployError(f"deploy: {' and '.join(given)} are one setting, given two values: give one")
    return next(iter(given.values()), None)


def _whole(value: str) -> bool:
    """A whole number as gcloud reads one: ASCII digits ('²' is a digit to str.isdigit)."""
    return value.isascii() and value.isdigit()


def gcloud_command(env: Mapping[str, str]) -> list[str]:
    return deployment(env)[0]


def deployment(env: Mapping[str, str]) -> tuple[list[str], Settings]:
    """The gcloud command, and the settings the function will start with (secrets as stand-ins)."""
    for name in SECRET_SETTINGS:
        for spelling in SPELLINGS[name]:
            if env.get(spelling):
                raise DeployError(
                    f"deploy: {spelling} must come from Secret Manager (SECRETS=...), not the environment"
                )
    secrets = parse_secrets(env.get("SECRETS", ""))
    # A feedback-only deployment (Okta's built-in Twilio provider) has the event hook's secret alone.
    hook_secrets = {"OKTA_HOOK_AUTH_SECRET", "OKTA_EVENT_HOOK_AUTH_SECRET"}
    if not hook_secrets & set(secrets) and not env.get("OKTA_HOOK_OAUTH_ISSUER"):
        raise DeployError(
            "deploy: no hook authentication: give SECRETS=OKTA_HOOK_AUTH_SECRET=... "
            "(or OKTA_EVENT_HOOK_AUTH_SECRET=... for Verify feedback alone) or OAuth settings"
        )
    runtime = env.get("RUNTIME") or DEFAULT_RUNTIME
    if not re.fullmatch(r"python3[0-9]{2}", runtime):
        raise DeployError("deploy: RUNTIME must be a Python runtime id such as python313")
    threads = env.get("THREADS") or "80"
    if not _whole(threads) or int(threads) < 1:
        raise DeployError("deploy: THREADS must be a whole number")
    plain = {name: value for name in PLAIN_SETTINGS if (value := one_spelling(env, name)) is not None}
    plain["THREADS"] = threads
    # The project names the log lines' traces: the deploy's own, else the one the environment names.
    project = env.get("PROJECT") or one_spelling(env, "GOOGLE_CLOUD_PROJECT")
    if project:
        plain["GOOGLE_CLOUD_PROJECT"] = project
    name = env.get("FUNCTION_NAME") or "okta-telephony-hook"
    if not _FUNCTION_NAME.fullmatch(name):
        raise DeployError("deploy: FUNCTION_NAME must be lowercase letters, digits and hyphens, from a letter")
    if not _whole(env.get("MIN_INSTANCES") or "1"):
        raise DeployError("deploy: MIN_INSTANCES must be a whole number")
    for variable, form, example in (("REGION", _REGION, "europe-west1"), ("MEMORY", _MEMORY, "512Mi"),
                                    ("CPU", _CPU, "1")):  # fmt: skip
        if env.get(variable) and not form.fullmatch(env[variable]):
            raise DeployError(f"deploy: {variable} must be of gcloud's form, such as {example}")
    if vcpus(env.get("CPU") or "1") < 1 and int(threads) > 1:  # Cloud Run's rule for fractional CPUs
        raise DeployError("deploy: CPU below 1 allows one request at a time; Okta's burst needs CPU=1 or more")
    for url in OUTBOUND_URLS:  # loopback is for local stand-ins: on Cloud Run it is the instance itself
        if this_machine(urlsplit(plain.get(url) or "").hostname or ""):
            raise DeployError(f"deploy: {url} names a loopback host: it works on this machine, never deployed")
    command = [
        "gcloud", "functions", "deploy", name,
        "--gen2",
        f"--runtime={runtime}",
        f"--region={env.get('REGION') or 'us-central1'}",
        "--source=.",
        "--entry-point=telephony_hook",
        "--trigger-http",
        # Okta cannot present Google credentials: the hook authenticates Okta itself, failing closed.
        "--allow-unauthenticated",
        f"--min-instances={env.get('MIN_INSTANCES') or '1'}",
        f"--concurrency={threads}",
        f"--cpu={env.get('CPU') or '1'}",
        f"--memory={env.get('MEMORY') or '512Mi'}",
        "--timeout=10s",
        env_vars_flag(plain),
    ]  # fmt: skip
    secrets.update(store_authority(env, secrets))
    if secrets:
        command.append("--set-secrets=" + ",".join(f"{name}={ref}" for name, ref in secrets.items()))
    if env.get("PROJECT"):
        command.append(f"--project={env['PROJECT']}")
    if env.get("MAX_INSTANCES"):
        if not _whole(env["MAX_INSTANCES"]) or int(env["MAX_INSTANCES"]) < 1:
            raise DeployError("deploy: MAX_INSTANCES must be a whole number")
        if int(env["MAX_INSTANCES"]) < int(env.get("MIN_INSTANCES") or "1"):
            raise DeployError("deploy: MAX_INSTANCES must be at least MIN_INSTANCES")
        command.append(f"--max-instances={env['MAX_INSTANCES']}")
    if env.get("SERVICE_ACCOUNT"):
        command.append(f"--service-account={env['SERVICE_ACCOUNT']}")
    command += vpc_flags(env)
    return command, check_settings(plain, secrets)


def deploy_warnings(env: Mapping[str, str], settings: Settings) -> list[str]:
    """What the function would warn of at start-up about how it is deployed (`settings`, as deployment
    checked them), said before the deploy."""
    warnings = []
    if settings.okta_hook_auth_secret or settings.okta_hook_oauth_issuer:  # the telephony hook is on
        # The lines the hook starts with when a channel cannot send: each of its codes falls back to Okta.
        credentials = twilio_credentials(settings) is not None
        for channel in ("sms", "voice"):
            missing = missing_configuration(settings, credentials, channel)
            if missing:
                warnings.append(f"no {channel} code can be sent: the hook is missing {missing}")
        # Receipts off (no PUBLIC_URL, no Auth Token to check Twilio's signature): the route says why.
        warnings += [line for level, line in Receipts(settings).startup_report() if level >= logging.WARNING]
    # The toll-fraud policy's own start-up warnings (an empty ALLOWED_COUNTRIES, a default number type left out)
    warnings += [line for level, line in DeliveryPolicy(settings).startup_report() if level >= logging.WARNING]
    warnings += unreachable_limits(settings)  # the spend guard's limits a wider one always refuses first
    host = urlsplit(settings.twilio_api_base_url or "").hostname or ""
    if host and not host.endswith(".twilio.com"):  # a mock or a sandbox: the credentials travel there too
        warnings.append(f"TWILIO_API_BASE_URL sends every Twilio call, with the account's credentials, to {host}")
    if settings.guard_mode == "off":
        return warnings
    max_instances = env.get("MAX_INSTANCES")
    if settings.guard_storage_uri is None and max_instances != "1":
        warnings.append(
            "the spend guard counts on memory://, per instance, and Cloud Run may run several: a pump gets "
            "each instance's caps. Share a Redis: SECRETS=GUARD_STORAGE_URI=... (docs/spend-guard.md)"
        )
    if max_instances == "1":
        warnings.append(
            "MAX_INSTANCES=1: Okta's burst queues while a new revision or a replacement instance starts "
            "(deploy.md: at least 2)"
        )
    if not (settings.okta_event_hook_auth_secret and settings.okta_org_url and settings.okta_api_token):
        warnings.append(
            "no conversions reach the spend guard (the event hook needs OKTA_EVENT_HOOK_AUTH_SECRET, "
            "OKTA_ORG_URL and OKTA_API_TOKEN): every number is held as new"
        )
    return warnings


def check_settings(plain: Mapping[str, str], secrets: Mapping[str, str]) -> Settings:
    """The function's own start-up check, run on what is deployed: a setting it refuses would otherwise
    pass the upload and the build, and stop every instance, said only in Cloud Run's logs."""
    stand_ins = {
        name: _STORE_STAND_IN if name == "GUARD_STORAGE_URI" else _SECRET_STAND_IN
        for name in secrets
        if name in SECRET_SETTINGS
    }
    try:
        settings = load_settings({**plain, **stand_ins})
        VoiceScript(settings.voice_phrases, settings.voice_name)  # checked where the start builds it
    except SettingsError as error:  # it names each variable and why, never a value
        raise DeployError(f"deploy: {error}") from None
    return settings


def unknown_variables(makeflags: str) -> list[str]:
    """The variables given on make's command line (MAKEFLAGS, after '--') that are neither a setting
    nor an input of the deploy, each with the name it was likely meant to be: a misspelt setting would
    otherwise be left out of the deployment without a word (ALLOWED_COUNTRY: every country allowed).
    make escapes a value's spaces and tabs, not its newlines; only names are ever repeated."""
    _, marker, assignments = makeflags.partition("-- ")
    if not marker:
        return []
    names = [
        re.sub(r"[:+?!]*$", "", assignment.partition("=")[0])
        for assignment in re.split(r"(?<!\\)[ \t]+", assignments.strip())
        if "=" in assignment
    ]
    return unknown_names(filter(None, names), DEPLOY_INPUTS, "an assignment")


def store_authority(env: Mapping[str, str], secrets: Mapping[str, str]) -> dict[str, str]:
    """GUARD_STORE_CA as a secret volume: the certificate authority a rediss:// store is checked with."""
    spec = env.get("GUARD_STORE_CA")
    if not spec:
        return {}
    if not re.fullmatch(_SECRET_VERSION, spec):
        raise DeployError("deploy: GUARD_STORE_CA must be secret:version (a pinned number, not latest)")
    if "GUARD_STORAGE_URI" not in secrets:
        raise DeployError(
            "deploy: GUARD_STORE_CA needs the store's URI: SECRETS=GUARD_STORAGE_URI=... "
            f"(rediss://...?ssl_ca_certs={STORE_CA_MOUNT}/{STORE_CA_FILE})"
        )
    return {f"{STORE_CA_MOUNT}:/{STORE_CA_FILE}": spec}


def vpc_flags(env: Mapping[str, str]) -> list[str]:
    """Direct VPC egress: how the function reaches a Memorystore instance's private address."""
    network, subnet, egress = env.get("NETWORK"), env.get("SUBNET"), env.get("VPC_EGRESS")
    if not network and not subnet:
        if egress:
            raise DeployError("deploy: VPC_EGRESS needs NETWORK or SUBNET")
        return []
    for name, value in (("NETWORK", network), ("SUBNET", subnet)):
        if value and not re.fullmatch(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?|projects/[^/\s]+/[^\s]+", value):
            raise DeployError(f"deploy: {name} must be a VPC network or subnet name (or its full resource path)")
    egress = egress or "private-ranges-only"
    if egress not in ("private-ranges-only", "all-traffic"):
        raise DeployError("deploy: VPC_EGRESS must be private-ranges-only or all-traffic")
    flags = [f"--network={network}"] if network else []
    return [*flags, *([f"--subnet={subnet}"] if subnet else []), f"--vpc-egress={egress}"]


def metric_commands(env: Mapping[str, str], verb: str = "create") -> list[list[str]]:
    """`gcloud logging metrics create|update NAME --config-from-file=...`, one per log-based metric."""
    commands = []
    for file_name in LOG_METRICS:
        name = json.loads((MONITORING / file_name).read_text())["name"]
        command = ["gcloud", "logging", "metrics", verb, name, f"--config-from-file=tools/monitoring/{file_name}"]
        if env.get("PROJECT"):
            command.append(f"--project={env['PROJECT']}")
        commands.append(command)
    return commands


def main() -> None:
    unknown = unknown_variables(os.environ.get("MAKEFLAGS", ""))
    if unknown:
        raise DeployError(f"deploy: not a setting or a deploy variable: {', '.join(unknown)}")
    command, settings = deployment(os.environ)
    for warning in deploy_warnings(os.environ, settings):
        print(f"deploy: warning: {warning}", file=sys.stderr, flush=True)
    metrics = metric_commands(os.environ)
    if os.environ.get("DRY_RUN") not in (None, "", "0"):
        for each in [command, *metrics]:
            print(shlex.join(each))
        return
    print("+ " + shlex.join(command), flush=True)
    status = subprocess.call(command)
    if status:
        sys.exit(status)
    for create, update in zip(metrics, metric_commands(os.environ, "update"), strict=True):
        print("+ " + shlex.join(create), flush=True)
        if subprocess.call(create, stderr=subprocess.DEVNULL):  # it exists already: bring it up to date
            print("+ " + shlex.join(update), flush=True)
            status = status or subprocess.call(update)
    sys.exit(status)


if __name__ == "__main__":
    main()
