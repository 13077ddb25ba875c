"""`make deploy DRY_RUN=1` prints the exact gcloud command, and refuses unsafe inputs."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers import ROOT
from tools.deploy import (
    DeployError,
    deploy_warnings,
    deployment,
    env_vars_flag,
    gcloud_command,
    unknown_variables,
)

BASE = {"SECRETS": "OKTA_HOOK_AUTH_SECRET=okta-hook-secret:3,TWILIO_AUTH_TOKEN=twilio-auth-token:1"}


def make_deploy(**variables: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key not in {"SECRETS", "THREADS", "PROJECT"}}
    arguments = [f"{name}={value}" for name, value in variables.items()]
    return subprocess.run(
        ["make", "--no-print-directory", "-s", "deploy", "DRY_RUN=1", *arguments],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


@pytest.mark.e2e  # runs make, or git
def test_dry_run_prints_the_exact_gcloud_command() -> None:
    result = make_deploy(
        SECRETS=BASE["SECRETS"], REGION="europe-west1", FUNCTION_NAME="okta-otp", PROJECT="acme-prod",
        THREADS="80", MIN_INSTANCES="2", TWILIO_ACCOUNT_SID="AC" + "1" * 32, TWILIO_FROM_NUMBER="+15005550006",
        ALLOWED_COUNTRIES="US,CA",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    deploy, *metrics = result.stdout.strip().splitlines()
    assert shlex.split(deploy) == [
        "gcloud", "functions", "deploy", "okta-otp", "--gen2", "--runtime=python313", "--region=europe-west1",
        "--source=.", "--entry-point=telephony_hook", "--trigger-http", "--allow-unauthenticated",
        "--min-instances=2", "--concurrency=80", "--cpu=1", "--memory=512Mi", "--timeout=10s",
        "--set-env-vars=^|^TWILIO_ACCOUNT_SID=AC11111111111111111111111111111111|TWILIO_FROM_NUMBER=+15005550006"
        "|ALLOWED_COUNTRIES=US,CA|THREADS=80|GOOGLE_CLOUD_PROJECT=acme-prod",
        "--set-secrets=OKTA_HOOK_AUTH_SECRET=okta-hook-secret:3,TWILIO_AUTH_TOKEN=twilio-auth-token:1",
        "--project=acme-prod",
    ]  # fmt: skip
    assert [shlex.split(line) for line in metrics] == [
        ["gcloud", "logging", "metrics", "create", "okta_telephony_hook_outcomes",
         "--config-from-file=tools/monitoring/hook-outcomes.metric.json", "--project=acme-prod"],
        ["gcloud", "logging", "metrics", "create", "okta_telephony_hook_refusals",
         "--config-from-file=tools/monitoring/hook-refusals.metric.json", "--project=acme-prod"],
        ["gcloud", "logging", "metrics", "create", "okta_telephony_delivery_statuses",
         "--config-from-file=tools/monitoring/delivery-statuses.metric.json", "--project=acme-prod"],
        ["gcloud", "logging", "metrics", "create", "okta_telephony_guard_refusals",
         "--config-from-file=tools/monitoring/guard-refusals.metric.json", "--project=acme-prod"],
        ["gcloud", "logging", "metrics", "create", "okta_telephony_guard_store_errors",
         "--config-from-file=tools/monitoring/guard-store.metric.json", "--project=acme-prod"],
    ]  # fmt: skip


def test_concurrency_follows_threads() -> None:
    command = gcloud_command({**BASE, "THREADS": "40"})
    assert "--concurrency=40" in command
    assert any(part.startswith("--set-env-vars=") and "THREADS=40" in part for part in command)


def test_secret_versions_must_be_pinned() -> None:
    with pytest.raises(DeployError, match="pinned"):
        gcloud_command({"SECRETS": "OKTA_HOOK_AUTH_SECRET=okta-hook-secret:latest"})


def test_secrets_in_plain_environment_are_refused() -> None:
    with pytest.raises(DeployError, match="Secret Manager"):
        gcloud_command({**BASE, "TWILIO_AUTH_TOKEN": "plain-token"})


def test_deploying_without_hook_authentication_is_refused() -> None:
    with pytest.raises(DeployError, match="no hook authentication"):
        gcloud_command({"SECRETS": "TWILIO_AUTH_TOKEN=twilio-auth-token:1"})


def test_env_var_delimiter_avoids_characters_in_values() -> None:
    assert (
        env_vars_flag({"VOICE_PHRASES": '{"es": "a|b {code}"}'})
        == '--set-env-vars=^~^VOICE_PHRASES={"es": "a|b {code}"}'
    )


@pytest.mark.e2e  # runs make, or git
def test_dry_run_runs_nothing_and_make_fails_on_bad_input() -> None:
    result = make_deploy(SECRETS="OKTA_HOOK_AUTH_SECRET=s:latest")
    assert result.returncode != 0
    assert "pinned" in result.stderr


def uploaded(tree: Path) -> set[str]:
    """The files `gcloud functions deploy --source TREE` uploads: .gcloudignore has gitignore syntax,
    so git applies its rules, to every file, with no other ignore file in play."""
    subprocess.run(["git", "init", "-q", str(tree)], check=True)
    listed = subprocess.run(
        ["git", "-c", "core.excludesFile=", "ls-files", "--others", "--exclude-from=.gcloudignore"],
        cwd=tree, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return set(listed.stdout.split())


@pytest.mark.e2e  # runs make, or git
def test_only_the_function_is_uploaded(tmp_path: Path) -> None:
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    if not tracked:  # not a git checkout: the working tree is the project
        tracked = [
            str(path.relative_to(ROOT)) for path in ROOT.rglob("*") if path.is_file() and ".venv" not in path.parts
        ]
    litter = [".env", ".venv/bin/python", ".run/hook-secret", "telephony/__pycache__/settings.cpython-313.pyc"]
    for name in [*tracked, *litter]:
        target = tmp_path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if (ROOT / name).is_file():
            shutil.copyfile(ROOT / name, target)
        else:
            target.write_text("planted")
    package = {str(path.relative_to(ROOT)) for path in (ROOT / "telephony").glob("*.py")}
    assert uploaded(tmp_path) == {"main.py", "models.py", "requirements.txt", *package}


def test_the_runtime_is_a_variable_defaulting_to_python313() -> None:
    assert "--runtime=python313" in gcloud_command(BASE)
    assert "--runtime=python314" in gcloud_command({**BASE, "RUNTIME": "python314"})
    with pytest.raises(DeployError, match="RUNTIME"):
        gcloud_command({**BASE, "RUNTIME": "nodejs22"})


def test_a_feedback_only_deployment_needs_only_the_event_hook_secret() -> None:
    command = gcloud_command({"SECRETS": "OKTA_EVENT_HOOK_AUTH_SECRET=okta-event-hook-secret:1"})
    assert "--set-secrets=OKTA_EVENT_HOOK_AUTH_SECRET=okta-event-hook-secret:1" in command


def test_max_instances_is_passed_when_given() -> None:
    assert not any(part.startswith("--max-instances") for part in gcloud_command(BASE))
    assert "--max-instances=3" in gcloud_command({**BASE, "MAX_INSTANCES": "3"})
    with pytest.raises(DeployError, match="MAX_INSTANCES"):
        gcloud_command({**BASE, "MAX_INSTANCES": "many"})


@pytest.mark.e2e  # runs make, or git
def test_the_guards_redis_comes_from_secret_manager_with_direct_vpc_egress() -> None:
    result = make_deploy(
        SECRETS=BASE["SECRETS"] + ",GUARD_STORAGE_URI=guard-redis-uri:2,GUARD_HASH_KEY=guard-hash-key:1",
        NETWORK="default", SUBNET="hooks-subnet", GUARD_MODE="monitor", GUARD_COUNTRY_LIMIT="20/hour;60/day",
        GUARD_LIMITS_BY_COUNTRY='{"US": {"country": "100/hour"}}',
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    deploy, *metrics = result.stdout.strip().splitlines()
    words = shlex.split(deploy)
    assert (
        "--set-secrets=OKTA_HOOK_AUTH_SECRET=okta-hook-secret:3,TWILIO_AUTH_TOKEN=twilio-auth-token:1,"
        "GUARD_STORAGE_URI=guard-redis-uri:2,GUARD_HASH_KEY=guard-hash-key:1"
    ) in words
    assert words[-3:] == ["--network=default", "--subnet=hooks-subnet", "--vpc-egress=private-ranges-only"]
    env_flag = next(word for word in words if word.startswith("--set-env-vars="))
    assert "GUARD_MODE=monitor" in env_flag and "GUARD_COUNTRY_LIMIT=20/hour;60/day" in env_flag
    assert 'GUARD_LIMITS_BY_COUNTRY={"US": {"country": "100/hour"}}' in env_flag
    created = [shlex.split(line)[4] for line in metrics]
    assert {"okta_telephony_guard_refusals", "okta_telephony_guard_store_errors"} <= set(created)


def test_the_guards_redis_uri_is_never_a_plain_variable() -> None:
    with pytest.raises(DeployError, match="GUARD_STORAGE_URI must come from Secret Manager"):
        gcloud_command({**BASE, "GUARD_STORAGE_URI": "redis://:pw@10.0.0.3:6379/0"})


@pytest.mark.parametrize(
    ("variables", "problem"),
    [
        ({"VPC_EGRESS": "all-traffic"}, "VPC_EGRESS needs NETWORK or SUBNET"),
        ({"NETWORK": "default", "VPC_EGRESS": "everything"}, "private-ranges-only or all-traffic"),
        ({"SUBNET": "bad name;rm"}, "SUBNET must be"),
    ],
)
def test_vpc_settings_are_checked(variables: dict[str, str], problem: str) -> None:
    with pytest.raises(DeployError, match=problem):
        gcloud_command({**BASE, **variables})


def test_all_traffic_egress_when_asked() -> None:
    assert gcloud_command({**BASE, "NETWORK": "default", "VPC_EGRESS": "all-traffic"})[-2:] == [
        "--network=default",
        "--vpc-egress=all-traffic",
    ]


@pytest.mark.e2e  # runs make, or git
def test_the_stores_certificate_authority_is_mounted_where_its_uri_names_it() -> None:
    """Memorystore's in-transit encryption: its CA from Secret Manager as a file, at the path the docs'
    rediss:// URI gives to ?ssl_ca_certs=."""
    result = make_deploy(
        SECRETS=BASE["SECRETS"] + ",GUARD_STORAGE_URI=guard-redis-uri:2", GUARD_STORE_CA="okta-hook-guard-ca:1",
        NETWORK="default",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    words = shlex.split(result.stdout.strip().splitlines()[0])
    assert (
        "--set-secrets=OKTA_HOOK_AUTH_SECRET=okta-hook-secret:3,TWILIO_AUTH_TOKEN=twilio-auth-token:1,"
        "GUARD_STORAGE_URI=guard-redis-uri:2,/etc/secrets/guard-store-ca:/ca.pem=okta-hook-guard-ca:1"
    ) in words
    assert not any("GUARD_STORE_CA" in word for word in words)  # a deploy variable, not the hook's
    guide = (ROOT / "docs" / "spend-guard.md").read_text()
    assert "?ssl_ca_certs=/etc/secrets/guard-store-ca/ca.pem" in guide and "GUARD_STORE_CA=" in guide


@pytest.mark.parametrize(
    ("variables", "problem"),
    [
        ({"GUARD_STORE_CA": "okta-hook-guard-ca:1"}, "GUARD_STORE_CA needs the store's URI"),
        ({"SECRETS": BASE["SECRETS"] + ",GUARD_STORAGE_URI=uri:2", "GUARD_STORE_CA": "ca:latest"}, "pinned"),
        ({"SECRETS": BASE["SECRETS"] + ",GUARD_STORAGE_URI=uri:2", "GUARD_STORE_CA": "ca"}, "secret:version"),
        ({"SECRETS": BASE["SECRETS"] + ",GUARD_STORAGE_URI=uri:2", "GUARD_STORE_CA": "ca:0"}, "secret:version"),
        ({"SECRETS": "OKTA_HOOK_AUTH_SECRET=okta-hook-secret:0"}, "pinned number"),  # gcloud counts from 1
    ],
)
def test_the_stores_certificate_authority_is_checked(variables: dict[str, str], problem: str) -> None:
    with pytest.raises(DeployError, match=problem):
        gcloud_command({**BASE, **variables})


@pytest.mark.parametrize(
    ("variables", "problem"),
    [
        # A value that would add a binding or a flag of its own to the gcloud command.
        (
            {"SECRETS": BASE["SECRETS"] + ",GUARD_STORAGE_URI=uri:2",
             "GUARD_STORE_CA": "projects/p,OKTA_HOOK_AUTH_SECRET=x/secrets/y:1"},
            "GUARD_STORE_CA must be secret:version",
        ),
        ({"SECRETS": "OKTA_HOOK_AUTH_SECRET=projects/my proj/secrets/s:1"}, "is not ENV=secret:version"),
        ({"FUNCTION_NAME": "--set-env-vars=GUARD_STORAGE_URI=redis://:pw@h"}, "FUNCTION_NAME must be"),
        ({"FUNCTION_NAME": "Okta_Hook"}, "FUNCTION_NAME must be"),
        ({"MIN_INSTANCES": "one"}, "MIN_INSTANCES must be a whole number"),
        ({"SECRETS": BASE["SECRETS"] + ",GUARD_STORAGE_URI=a:1,GUARD_STORAGE_URI=b:2"}, "twice"),
        ({"ALLOWED_COUNTRIES": "US|~#@@%%;;!!**++<>"}, "every delimiter"),
    ],
)  # fmt: skip
def test_deploy_inputs_cannot_reshape_the_gcloud_command(variables: dict[str, str], problem: str) -> None:
    with pytest.raises(DeployError, match=problem):
        gcloud_command({**BASE, **variables})


def test_a_secret_of_another_project_is_named_by_its_resource_path() -> None:
    command = gcloud_command(
        {**BASE, "SECRETS": BASE["SECRETS"] + ",GUARD_STORAGE_URI=projects/acme-shared/secrets/guard-uri:4",
         "GUARD_STORE_CA": "projects/example.com:acme/secrets/guard-ca:1"}
    )  # fmt: skip
    assert (
        "--set-secrets=OKTA_HOOK_AUTH_SECRET=okta-hook-secret:3,TWILIO_AUTH_TOKEN=twilio-auth-token:1,"
        "GUARD_STORAGE_URI=projects/acme-shared/secrets/guard-uri:4,"
        "/etc/secrets/guard-store-ca:/ca.pem=projects/example.com:acme/secrets/guard-ca:1"
    ) in command


@pytest.mark.parametrize(
    ("variables", "problem"),
    [
        ({"ALLOWED_COUNTRIES": "USA"}, "ALLOWED_COUNTRIES: .*not ISO 3166"),
        ({"GUARD_MODE": "bogus"}, "GUARD_MODE: .*enforce, monitor or off"),
        ({"TWILIO_FROM_NUMBER": "+1\u2026"}, "TWILIO_FROM_NUMBER"),  # the README's placeholder, left in
        ({"TWILIO_API_KEY": "SK" + "1" * 32}, "TWILIO_API_SECRET"),  # the key without its secret in SECRETS
        ({"GUARD_NUMBER_LIMIT": "5/fortnight"}, "GUARD_NUMBER_LIMIT"),
        # checked where the voice script is built, as the function starts
        ({"VOICE_PHRASES": '{"en": "no placeholder"}'}, r"VOICE_PHRASES\['en'\] must contain"),
        ({"VOICE_PHRASES": '{"xx": "Code {code}"}'}, "VOICE_PHRASES: no voice speaks 'xx'"),
    ],
)
def test_settings_the_function_would_refuse_stop_the_deploy(variables: dict[str, str], problem: str) -> None:
    """Otherwise they pass the upload and the build, and every instance stops at start-up."""
    with pytest.raises(DeployError, match=problem):
        gcloud_command({**BASE, **variables})


def test_the_settings_check_takes_secrets_from_secret_manager_as_given() -> None:
    """Secret values are not known at deploy time: a secret SECRETS names counts as set."""
    command = gcloud_command(
        {"SECRETS": BASE["SECRETS"] + ",TWILIO_API_SECRET=twilio-api-secret:2,GUARD_STORAGE_URI=guard-uri:1",
         "TWILIO_API_KEY": "SK" + "1" * 32, "TWILIO_ACCOUNT_SID": "AC" + "1" * 32}
    )  # fmt: skip
    assert any(
        part.startswith("--set-secrets=") and "TWILIO_API_SECRET=twilio-api-secret:2" in part for part in command
    )


@pytest.mark.parametrize(
    ("variables", "problem"),
    [({"REGION": "us central1"}, "REGION"), ({"MEMORY": "lots"}, "MEMORY"), ({"CPU": "x"}, "CPU")],
)
def test_the_instance_and_region_are_of_gclouds_form(variables: dict[str, str], problem: str) -> None:
    with pytest.raises(DeployError, match=f"{problem} must be of gcloud's form"):
        gcloud_command({**BASE, **variables})
    assert "--memory=1Gi" in gcloud_command({**BASE, "MEMORY": "1Gi", "CPU": "2", "REGION": "europe-west1"})
    assert "--cpu=2000m" in gcloud_command({**BASE, "CPU": "2000m"})  # gcloud's millicpu form


@pytest.mark.parametrize(
    ("variables", "problem"),
    [
        # Cloud Run: below 1 vCPU, concurrency must be 1; the hook is built for Okta's concurrent burst
        ({"CPU": "0.5"}, "CPU below 1 allows one request at a time"),
        ({"MIN_INSTANCES": "5", "MAX_INSTANCES": "2"}, "MAX_INSTANCES must be at least MIN_INSTANCES"),
        # loopback passes the function's own check (local stand-ins), and on Cloud Run is the instance itself
        ({"TWILIO_API_BASE_URL": "http://127.0.0.1:8081"}, "TWILIO_API_BASE_URL names a loopback host"),
        ({"PUBLIC_URL": "http://localhost:8080"}, "PUBLIC_URL names a loopback host"),
        ({"OKTA_ORG_URL": "http://[::1]:9000"}, "OKTA_ORG_URL names a loopback host"),
        # every spelling of this machine: IPv6, IPv4-mapped, the socket library's shorthands, localhost's names
        ({"PUBLIC_URL": "https://[0:0:0:0:0:0:0:1]"}, "PUBLIC_URL names a loopback host"),
        ({"OKTA_HOOK_OAUTH_JWKS_URL": "https://[::ffff:7f00:1]/keys"}, "OKTA_HOOK_OAUTH_JWKS_URL names a loopback"),
        ({"OKTA_ORG_URL": "https://2130706433"}, "OKTA_ORG_URL names a loopback host"),
        ({"OKTA_ORG_URL": "https://0x7f000001"}, "OKTA_ORG_URL names a loopback host"),
        ({"PUBLIC_URL": "https://localhost."}, "PUBLIC_URL names a loopback host"),
        ({"PUBLIC_URL": "https://fn.localhost"}, "PUBLIC_URL names a loopback host"),
        ({"TWILIO_API_BASE_URL": "https://0.0.0.0"}, "TWILIO_API_BASE_URL names a loopback host"),
        ({"TWILIO_API_BASE_URL": "https://[::]"}, "TWILIO_API_BASE_URL names a loopback host"),
        ({"PUBLIC_URL": "https://localhost.localdomain"}, "PUBLIC_URL names a loopback host"),
        ({"PUBLIC_URL": "https://[::127.0.0.1]"}, "PUBLIC_URL names a loopback host"),
        ({"CPU": "500m"}, "CPU below 1 allows one request at a time"),
    ],
)
def test_what_cloud_run_would_refuse_or_never_reach_stops_the_deploy(variables: dict[str, str], problem: str) -> None:
    with pytest.raises(DeployError, match=re.escape(problem)):
        gcloud_command({**BASE, **variables})


def test_a_misspelt_variable_on_makes_command_line_is_named_with_the_likely_one() -> None:
    flags = "s -- DRY_RUN=1 ALLOWED_COUNTRY=US REGION=us\\ central1 SECRETS=A=b:1 PROJECT=acme"
    assert unknown_variables(flags) == ["ALLOWED_COUNTRY (did you mean ALLOWED_COUNTRIES?)"]
    assert unknown_variables("s") == []  # run without make's command-line variables: nothing to check


@pytest.mark.e2e  # runs make
def test_make_deploy_refuses_a_variable_it_does_not_know() -> None:
    result = make_deploy(SECRETS=BASE["SECRETS"], ALLOWED_COUNTRY="US")
    assert result.returncode != 0
    assert "ALLOWED_COUNTRY (did you mean ALLOWED_COUNTRIES?)" in result.stderr
    assert result.stdout == ""  # no command printed


def test_a_settings_other_spelling_is_deployed_under_its_documented_name() -> None:
    """configuration.md: TWILIO_API_KEY (or TWILIO_API_KEY_SID), TWILIO_API_SECRET (or
    TWILIO_API_KEY_SECRET): the function reads either, so the deploy takes either."""
    key = "SK" + "2" * 32
    command = gcloud_command(
        {"SECRETS": BASE["SECRETS"] + ",TWILIO_API_KEY_SECRET=twilio-api-secret:2",
         "TWILIO_API_KEY_SID": key, "TWILIO_ACCOUNT_SID": "AC" + "1" * 32}
    )  # fmt: skip
    assert f"TWILIO_API_KEY={key}" in next(part for part in command if part.startswith("--set-env-vars="))
    assert "TWILIO_API_SECRET=twilio-api-secret:2" in next(
        part for part in command if part.startswith("--set-secrets=")
    )
    with pytest.raises(DeployError, match="TWILIO_API_KEY_SECRET must come from Secret Manager"):
        gcloud_command({**BASE, "TWILIO_API_KEY_SECRET": "plain-secret-value"})


@pytest.mark.parametrize("entry", ["OKTA_HOOK_AUTH_SECRET=Zx9-MyRealHookSecret-Value", "Zx9-MyRealHookSecret-Value"])
def test_a_secret_pasted_into_secrets_is_never_repeated(entry: str) -> None:
    with pytest.raises(DeployError) as refused:
        gcloud_command({"SECRETS": entry})
    assert "Zx9-MyRealHookSecret-Value" not in str(refused.value)
    assert "is not ENV=secret:version" in str(refused.value)


def test_the_env_vars_delimiter_is_one_that_splits_back_exactly() -> None:
    """'me@' before '@@' would make '@@@': gcloud would split off 'me' and '@ALLOWED_COUNTRIES=US'."""
    values = {"SMS_TEMPLATE": "a|b~c#{code} me@", "ALLOWED_COUNTRIES": "US"}
    flag = env_vars_flag(values)
    delimiter = flag.removeprefix("--set-env-vars=^").partition("^")[0]
    assert flag.partition(f"^{delimiter}^")[2].split(delimiter) == [
        "SMS_TEMPLATE=a|b~c#{code} me@",
        "ALLOWED_COUNTRIES=US",
    ]


@pytest.mark.parametrize("variable", ["THREADS", "MIN_INSTANCES", "MAX_INSTANCES"])
def test_a_count_must_be_ascii_digits(variable: str) -> None:
    with pytest.raises(DeployError, match=f"{variable} must be a whole number"):
        gcloud_command({**BASE, variable: "\u00b2"})  # '²': a digit to str.isdigit, not to int()


def test_a_value_on_several_lines_is_one_variable_and_never_repeated() -> None:
    """make escapes a value's spaces in MAKEFLAGS, not its newlines: the two-line SMS format is one value."""
    flags = "s -- SMS_TEMPLATE=Your\\ code\\ is\\ {code}\n@acme.example\\ #{code} ALLOWED_COUNTRY=US"
    assert unknown_variables(flags) == ["ALLOWED_COUNTRY (did you mean ALLOWED_COUNTRIES?)"]


@pytest.mark.parametrize("spelling", ["GOOGLE_CLOUD_PROJECT", "GCP_PROJECT"])
def test_the_logs_project_comes_from_project_else_the_one_given(spelling: str) -> None:
    """The function names its traces with it: given without PROJECT, it is deployed, not dropped."""
    command = gcloud_command({**BASE, spelling: "acme-logs"})
    assert "GOOGLE_CLOUD_PROJECT=acme-logs" in next(part for part in command if part.startswith("--set-env-vars="))
    with_project = gcloud_command({**BASE, spelling: "acme-logs", "PROJECT": "acme-prod"})
    assert any("GOOGLE_CLOUD_PROJECT=acme-prod" in part for part in with_project)


def test_two_spellings_of_one_setting_with_two_values_are_refused() -> None:
    with pytest.raises(DeployError, match="TWILIO_API_KEY and TWILIO_API_KEY_SID are one setting"):
        gcloud_command({**BASE, "TWILIO_API_KEY": "SK" + "a" * 32, "TWILIO_API_KEY_SID": "SK" + "b" * 32})


def test_the_twilio_region_and_edge_are_checked_then_passed_on() -> None:
    command = gcloud_command({**BASE, "TWILIO_REGION": "ie1", "TWILIO_EDGE": "dublin"})
    assert "TWILIO_REGION=ie1|TWILIO_EDGE=dublin" in next(
        part for part in command if part.startswith("--set-env-vars=")
    )
    assert unknown_variables("s -- TWILIO_REGION=ie1 TWILIO_EDGE=dublin") == []
    with pytest.raises(DeployError, match="TWILIO_EDGE"):  # a host of its own: the credentials would go there
        gcloud_command({**BASE, "TWILIO_EDGE": "attacker.example#"})


def test_more_deploy_inputs_that_must_not_be_written_back_or_dropped() -> None:
    """A secret pasted as the whole SECRETS entry, or as a bare 'value=' on make's command line, is not
    repeated; a setting misspelt with a hyphen is refused, not dropped; five delimiters in one value
    leave others to choose from."""
    with pytest.raises(DeployError) as refused:
        gcloud_command({"SECRETS": "Kq3vX9pLm2Zt8RwQ7yN4bHsecretB64="})
    assert "Kq3vX9pLm2Zt8RwQ7yN4bH" not in str(refused.value)
    assert unknown_variables("s -- Kq3vX9pLm2Zt8RwQ7yN4bH=") == [
        "an assignment whose name is not a variable's (not repeated here)"
    ]
    assert unknown_variables("s -- ALLOWED-COUNTRIES=US") == ["ALLOWED-COUNTRIES (did you mean ALLOWED_COUNTRIES?)"]
    assert "--set-env-vars=^;;^" in env_vars_flag({"SMS_TEMPLATE": "a|b~c#d@@e%%f {code}"})


def test_the_hook_header_must_be_a_header_name() -> None:
    """A secret pasted into Okta's Authentication field would otherwise deploy as a plain variable."""
    with pytest.raises(DeployError, match="OKTA_HOOK_AUTH_HEADER"):
        gcloud_command({**BASE, "OKTA_HOOK_AUTH_HEADER": "SeCrEt VaLuE1234"})
    assert any(
        "OKTA_HOOK_AUTH_HEADER=X-Okta-Secret" in part
        for part in gcloud_command({**BASE, "OKTA_HOOK_AUTH_HEADER": "X-Okta-Secret"})
    )


def test_an_unknown_name_in_secrets_is_not_repeated() -> None:
    """'ZQXWSECRETTOKEN=x:1' parses as ENV=secret:version; a name that is no setting may be a value."""
    with pytest.raises(DeployError) as refused:
        gcloud_command({"SECRETS": "ZQXWSECRETTOKEN=okta-hook-secret:1"})
    assert "ZQXWSECRETTOKEN" not in str(refused.value) and "is not a secret setting" in str(refused.value)


REDIS_SECRETS = BASE["SECRETS"] + ",GUARD_STORAGE_URI=guard-redis:1"
# What a hook that sends both channels, with receipts, is deployed with (besides BASE's secrets).
DELIVERING = {
    "TWILIO_ACCOUNT_SID": "AC" + "0" * 32,
    "TWILIO_FROM_NUMBER": "+14155550100",
    "PUBLIC_URL": "https://europe-west1-acme.cloudfunctions.net/okta-telephony-hook",
}
CONVERTING = BASE["SECRETS"] + ",OKTA_EVENT_HOOK_AUTH_SECRET=event-secret:1,OKTA_API_TOKEN=okta-api-token:1"


@pytest.mark.parametrize(
    ("variables", "expected"),
    [
        # the guard on memory:// with Cloud Run free to add instances: each counts on its own
        ({"SECRETS": CONVERTING, "OKTA_ORG_URL": "https://acme.okta.com"}, ["memory://"]),
        ({"SECRETS": CONVERTING, "OKTA_ORG_URL": "https://acme.okta.com", "MAX_INSTANCES": "4"}, ["memory://"]),
        # no event hook: no conversions, every number held as new
        ({"SECRETS": REDIS_SECRETS, "MAX_INSTANCES": "4"}, ["no conversions"]),
        ({"SECRETS": BASE["SECRETS"], "MAX_INSTANCES": "4"}, ["memory://", "no conversions"]),
        # one instance: the guard is exact on memory://, but a scale-out or a new revision queues the burst
        (
            {"SECRETS": CONVERTING, "OKTA_ORG_URL": "https://acme.okta.com", "MAX_INSTANCES": "1"},
            ["MAX_INSTANCES=1"],
        ),
        ({"SECRETS": REDIS_SECRETS, "MAX_INSTANCES": "4", "GUARD_MODE": "off"}, []),
        (  # a mock in production: Twilio's credentials go to it
            {
                "SECRETS": REDIS_SECRETS,
                "MAX_INSTANCES": "4",
                "GUARD_MODE": "off",
                "TWILIO_API_BASE_URL": "https://mock.example.com",
            },
            ["with the account's credentials, to mock.example.com"],
        ),
        (
            {"SECRETS": CONVERTING + ",GUARD_STORAGE_URI=guard-redis:1", "OKTA_ORG_URL": "https://acme.okta.com"},
            [],
        ),
        (  # Twilio's own host: no warning
            {
                "SECRETS": REDIS_SECRETS,
                "MAX_INSTANCES": "4",
                "GUARD_MODE": "off",
                "TWILIO_API_BASE_URL": "https://api.twilio.com",
            },
            [],
        ),
        (  # the spend guard's: a country's limit its cap over every country always refuses first
            {
                "SECRETS": CONVERTING + ",GUARD_STORAGE_URI=guard-redis:1",
                "OKTA_ORG_URL": "https://acme.okta.com",
                "GUARD_LIMITS_BY_COUNTRY": '{"US": {"country": "60/hour;300/day"}}',
            },
            [
                "GUARD_LIMITS_BY_COUNTRY US country 60/hour cannot be reached",
                "GUARD_LIMITS_BY_COUNTRY US country 300/day cannot be reached",
            ],
        ),
        (  # the toll-fraud policy's own: every country open, and the number types that cost the most
            {
                "SECRETS": REDIS_SECRETS,
                "MAX_INSTANCES": "4",
                "GUARD_MODE": "off",
                "ALLOWED_COUNTRIES": ",",
                "BLOCKED_NUMBER_TYPES": ",",
            },
            ["ALLOWED_COUNTRIES is empty", "BLOCKED_NUMBER_TYPES leaves out PREMIUM_RATE"],
        ),
        (  # the hook's own: no Twilio credential in SECRETS, so no code can be sent (each falls back to Okta)
            {"SECRETS": "OKTA_HOOK_AUTH_SECRET=okta-hook-secret:3", "MAX_INSTANCES": "4", "GUARD_MODE": "off"},
            [
                "no sms code can be sent: the hook is missing TWILIO_ACCOUNT_SID with TWILIO_AUTH_TOKEN",
                "no voice code can be sent: the hook is missing TWILIO_ACCOUNT_SID with TWILIO_AUTH_TOKEN",
                "Delivery receipts are off: TWILIO_AUTH_TOKEN is not set",
            ],
        ),
        (  # a Messaging Service sends SMS; a call needs a number of the account's
            {
                "SECRETS": REDIS_SECRETS,
                "MAX_INSTANCES": "4",
                "GUARD_MODE": "off",
                "TWILIO_FROM_NUMBER": "",
                "TWILIO_MESSAGING_SERVICE_SID": "MG" + "0" * 32,
            },
            ["no voice code can be sent: the hook is missing TWILIO_FROM_NUMBER"],
        ),
        (  # receipts are checked against the function's own URL, which only PUBLIC_URL says
            {"SECRETS": REDIS_SECRETS, "MAX_INSTANCES": "4", "GUARD_MODE": "off", "PUBLIC_URL": ""},
            ["Delivery receipts are off: PUBLIC_URL is not set"],
        ),
        (  # Verify feedback alone (Okta's own provider sends the codes): no hook to warn about
            {
                "SECRETS": "OKTA_EVENT_HOOK_AUTH_SECRET=event-secret:1,OKTA_API_TOKEN=okta-api-token:1",
                "TWILIO_ACCOUNT_SID": "",
                "TWILIO_FROM_NUMBER": "",
                "PUBLIC_URL": "",
                "OKTA_ORG_URL": "https://acme.okta.com",
                "MAX_INSTANCES": "4",
                "GUARD_MODE": "off",
            },
            [],
        ),
    ],
)
def test_what_the_function_would_warn_of_at_start_up_is_said_before_the_deploy(
    variables: dict[str, str], expected: list[str]
) -> None:
    """A setting the function accepts but warns of (the guard counting per instance, no conversions) was
    learnt only from Cloud Run's logs after the deploy: the deploy says it first, and goes on."""
    variables = {**DELIVERING, "ALLOWED_COUNTRIES": "US", **variables}  # without it, its own warning (a case below)
    variables = {name: value for name, value in variables.items() if value}  # '': left out
    found = deploy_warnings(variables, deployment(variables)[1])
    assert len(found) == len(expected), found
    for warning, word in zip(found, expected, strict=True):
        assert word in warning
