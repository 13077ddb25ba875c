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
