"""The log-based metrics and the alert policy in tools/monitoring/: well formed, and built on what the function logs."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from telephony.answers import Outcome
from telephony.receipts import MESSAGE_STATUSES
from tests.helpers import ROOT, AppFactory, message_receipt, okta_request, post_hook, post_receipt
from tools.deploy import LOG_METRICS

MONITORING = ROOT / "tools" / "monitoring"
USER_METRIC = "logging.googleapis.com/user/"


def load(name: str) -> dict[str, Any]:
    return dict(json.loads((MONITORING / name).read_text()))


METRICS = {load(name)["name"]: load(name) for name in LOG_METRICS}
POLICY = load("alert-policy.json")


def logged_lines(make_client: AppFactory, closed_port: str, capfd: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    """Real lines: a hook delivered, a receipt with an error code, a code the spend guard refused, and
    the guard's store unreachable."""
    client = make_client(GUARD_RANGE_LIMIT="1/hour")
    capfd.readouterr()
    post_hook(client, okta_request())
    post_receipt(client, message_receipt("undelivered", ErrorCode="30007"))
    post_hook(client, okta_request(phoneNumber="+14155550124", otpCode="739152"))  # same range: refused
    unreachable = make_client(GUARD_STORAGE_URI=closed_port.replace("http://", "redis://") + "/0")
    post_hook(unreachable, okta_request(otpCode="739153"))
    lines = [json.loads(line) for line in capfd.readouterr().out.splitlines() if line.startswith("{")]
    return [line for line in lines if "outcome" in line or "guard_store_error" in line]


@pytest.mark.parametrize("name", sorted(METRICS))
def test_each_metrics_filter_and_labels_name_fields_the_function_logs(
    name: str, make_client: AppFactory, closed_port: str, capfd: pytest.CaptureFixture[str]
) -> None:
    metric = METRICS[name]
    lines = logged_lines(make_client, closed_port, capfd)
    logger = re.search(r'jsonPayload\.logger="([^"]+)"', metric["filter"])
    assert logger is not None
    used = re.findall(r"jsonPayload\.(\w+)", metric["filter"] + " ".join(metric["labelExtractors"].values()))
    counted = [line for line in lines if line["logger"] == logger.group(1) and all(field in line for field in used)]
    assert used and counted, (used, lines)
    labels = {label["key"] for label in metric["metricDescriptor"]["labels"]}
    assert labels == set(metric["labelExtractors"])
    assert all(
        re.fullmatch(r"EXTRACT\(jsonPayload\.\w+\)", extractor) for extractor in metric["labelExtractors"].values()
    )
    assert metric["metricDescriptor"]["metricKind"] == "DELTA" and metric["metricDescriptor"]["valueType"] == "INT64"


def test_the_alert_policy_is_two_fifteen_minute_ratios() -> None:
    assert POLICY["combiner"] == "OR" and POLICY["displayName"] and POLICY["documentation"]["content"]
    conditions = [condition["conditionThreshold"] for condition in POLICY["conditions"]]
    assert len(conditions) == 2
    for condition in conditions:
        for key in ("aggregations", "denominatorAggregations"):
            assert condition[key] == [
                {"alignmentPeriod": "900s", "perSeriesAligner": "ALIGN_SUM", "crossSeriesReducer": "REDUCE_SUM"}
            ]
        assert condition["comparison"] == "COMPARISON_GT" and 0 < condition["thresholdValue"] < 1


@pytest.mark.parametrize("index", [0, 1])
def test_the_policys_filters_name_the_deployed_metrics_their_labels_and_real_values(index: int) -> None:
    condition = POLICY["conditions"][index]["conditionThreshold"]
    for key in ("filter", "denominatorFilter"):
        text = condition[key]
        metric_type = re.search(r'metric\.type="([^"]+)"', text)
        assert metric_type is not None and metric_type.group(1).startswith(USER_METRIC)
        metric = METRICS[metric_type.group(1).removeprefix(USER_METRIC)]
        labels = {label["key"] for label in metric["metricDescriptor"]["labels"]}
        for label, values in re.findall(r'metric\.label\.(\w+)\s*!?=\s*(one_of\([^)]*\)|"[^"]*")', text):
            assert label in labels
            for value in re.findall(r'"([^"]+)"', values):
                known = {"outcome": set(Outcome), "status": MESSAGE_STATUSES, "channel": {"sms", "voice"}}[label]
                assert value in known, (label, value)


# ------------------------------------------------------------------ who can move the paging alert


def matches(query: str, line: dict[str, Any]) -> bool:
    """Whether a log line matches a Logging query of the forms these files use: terms joined by AND,
    each `[NOT] path = "value"`, `path != "value"`, `path = ("a" OR "b")` or `path:*` (present)."""
    terms = re.split(r"\s+AND\s+", query.strip())
    return all(_term(term, line) for term in terms)


def _term(term: str, line: dict[str, Any]) -> bool:
    negated = term.startswith("NOT ")
    term = term.removeprefix("NOT ").strip()
    found = re.fullmatch(r'([\w.]+)\s*(!=|=|:)\s*(\*|"[^"]*"|\((?:"[^"]*"(?:\s+OR\s+)?)+\))', term)
    assert found, f"a query term this reader does not know: {term}"
    path, operator, value = found.groups()
    entry = {"resource.type": "cloud_run_revision"} | {f"jsonPayload.{k}": v for k, v in line.items()}
    present = path in entry
    if operator == ":":
        assert value == "*"
        result = present
    else:
        wanted = set(re.findall(r'"([^"]*)"', value))
        result = present and str(entry[path]) in wanted
        result = (not result and present) if operator == "!=" else result
    return result != negated


def paging_ratio(lines: list[dict[str, Any]]) -> float:
    """The first condition of the alert policy, computed over these lines as Cloud Monitoring would."""
    condition = POLICY["conditions"][0]["conditionThreshold"]
    metric = METRICS["okta_telephony_hook_outcomes"]
    counted = [line for line in lines if matches(metric["filter"], line)]
    label_filter = re.search(r'metric\.label\.outcome!="([^"]+)"', condition["filter"])
    assert label_filter is not None and "metric.label" not in condition["denominatorFilter"]
    failures = [line for line in counted if line["outcome"] != label_filter.group(1)]
    return len(failures) / len(counted) if counted else 0.0


def test_the_query_reader_reads_the_forms_used() -> None:
    line = {"logger": "telephony_hook", "outcome": "unauthorized"}
    assert matches('jsonPayload.logger="telephony_hook" AND jsonPayload.outcome:*', line)
    assert matches('jsonPayload.outcome=("forbidden" OR "unauthorized")', line)
    assert not matches('NOT jsonPayload.outcome=("forbidden" OR "unauthorized")', line)
    assert not matches("jsonPayload.country:*", line)
    assert matches('jsonPayload.outcome!="delivered"', line)


def test_anonymous_callers_cannot_page_the_on_call(make_client: AppFactory, capfd: pytest.CaptureFixture[str]) -> None:
    """On a quiet org, one code delivered and a handful of anonymous probes: 401, 405, 413, 403."""
    client = make_client()
    capfd.readouterr()
    post_hook(client, okta_request())
    for _ in range(3):
        client.get("/")
    post_hook(client, okta_request(), secret=None)
    post_hook(client, okta_request(), secret="wrong")
    client.post("/", data=b"{", environ_overrides={"CONTENT_LENGTH": str(10**8)}, content_type="application/json")
    lines = [json.loads(line) for line in capfd.readouterr().out.splitlines() if line.startswith("{")]
    hook_lines = [line for line in lines if line.get("logger") == "telephony_hook" and "outcome" in line]
    assert sorted(line["http_status"] for line in hook_lines) == [200, 401, 401, 405, 405, 405, 413]
    assert paging_ratio(hook_lines) == 0.0
    refusals = [line for line in hook_lines if matches(METRICS["okta_telephony_hook_refusals"]["filter"], line)]
    assert len(refusals) == 6
    assert not any("okta_telephony_hook_refusals" in condition["conditionThreshold"]["filter"]
                   for condition in POLICY["conditions"])  # fmt: skip


def test_authenticated_failures_still_page(make_client: AppFactory, capfd: pytest.CaptureFixture[str]) -> None:
    client = make_client(TWILIO_API_BASE_URL="http://127.0.0.1:9")  # nothing listens: Twilio unreachable
    capfd.readouterr()
    post_hook(client, okta_request())
    post_hook(client, b"{not json")  # authenticated, then refused: Okta's own call went wrong
    client.get("/")
    lines = [json.loads(line) for line in capfd.readouterr().out.splitlines() if line.startswith("{")]
    hook_lines = [line for line in lines if line.get("logger") == "telephony_hook" and "outcome" in line]
    assert paging_ratio(hook_lines) == 1.0


def test_a_pump_held_back_by_the_guard_does_not_page_as_codes_not_arriving(
    make_client: AppFactory, capfd: pytest.CaptureFixture[str]
) -> None:
    """The guard's refusals are its own metric and alert: a pump it holds back is not a delivery
    failure, and must not bury real failures either."""
    client = make_client()
    capfd.readouterr()
    for last in range(20):  # enrolments into one range: the guard lets the first few through
        body = okta_request(phoneNumber=f"+1415555{last:04d}")
        body["requestType"] = "com.okta.user.telephony.pre-enrollment"
        post_hook(client, body)
    lines = [json.loads(line) for line in capfd.readouterr().out.splitlines() if line.startswith("{")]
    hook_lines = [line for line in lines if line.get("logger") == "telephony_hook" and "outcome" in line]
    outcomes = {line["outcome"] for line in hook_lines}
    assert outcomes == {"delivered", "guard_refused"}
    assert paging_ratio(hook_lines) == 0.0
    refused = [line for line in hook_lines if matches(METRICS["okta_telephony_guard_refusals"]["filter"], line)]
    assert len(refused) == sum(line["outcome"] == "guard_refused" for line in hook_lines)


GUARD_POLICY = load("guard-alert-policy.json")


def test_the_guard_policy_watches_the_store_and_refusals_through_deployed_metrics() -> None:
    assert GUARD_POLICY["combiner"] == "OR" and "docs/spend-guard.md" in GUARD_POLICY["documentation"]["content"]
    filters = [condition["conditionThreshold"]["filter"] for condition in GUARD_POLICY["conditions"]]
    names = [re.search(r'metric\.type="([^"]+)"', text) for text in filters]
    assert [name.group(1).removeprefix(USER_METRIC) for name in names if name] == [
        "okta_telephony_guard_store_errors",
        "okta_telephony_guard_refusals",
    ]
    for text, name in zip(filters, names, strict=True):
        assert name is not None
        metric = METRICS[name.group(1).removeprefix(USER_METRIC)]
        labels = {label["key"] for label in metric["metricDescriptor"]["labels"]}
        for label, value in re.findall(r'metric\.label\.(\w+)\s*=\s*"([^"]*)"', text):
            assert label in labels and value in {"refused", "would_refuse"}
    thresholds = [condition["conditionThreshold"]["thresholdValue"] for condition in GUARD_POLICY["conditions"]]
    assert thresholds == [0, 20]  # any store failure; a burst of refusals
