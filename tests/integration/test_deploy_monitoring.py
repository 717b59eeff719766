"""deploy/prometheus and deploy/grafana: the rules load and behave, the dashboard asks for metrics
that exist.

`promtool` (Debian's `prometheus` package, installed by `make services`) checks the rules and
runs their unit tests; a missing promtool fails these tests, it never skips them. Every metric
name in a rule or a dashboard query must be one the platform exports: the serving names come
from a live `ServingMetrics` registry, the monitor names from `MONITOR_METRIC_NAMES` below.
Dashboard queries are also parsed by promtool (as recording rules, with Grafana's variables
substituted), so a typo in PromQL fails here rather than as an empty panel.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from eventops.serving.metrics import ServingMetrics

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "eventops-rules.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "tests" / "eventops-rules.test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "eventops-dashboard.json"

# The monitoring exporter's names this project's rules and dashboard use. To be reconciled with
# eventops.monitoring.prometheus by the lead; keep in step with docs/alerts.md.
MONITOR_METRIC_NAMES = [
    "eventops_monitor_drift_share",
    "eventops_monitor_drifted_columns",
    "eventops_monitor_performance",
    "eventops_monitor_last_check_timestamp_seconds",
]
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "gauge": ("",),
}


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is required: run `make services` (installs Debian's prometheus)")
    return path


def run_promtool(*args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [promtool(), *args], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def serving_metric_names() -> set[str]:
    """Every series name a model server can export, from its real registry."""
    names = set()
    for family in ServingMetrics().registry.collect():
        names |= {family.name + suffix for suffix in SUFFIXES[family.type]}
    return names


def metric_names(expr: str) -> set[str]:
    """The EventOps metric (and recording rule) names a PromQL expression reads."""
    bare = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values may look like names
    bare = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", bare)
    return set(re.findall(r"\beventops[a-zA-Z0-9_:]*", bare))


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def dashboard_queries() -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and every query variable."""
    found = []
    for panel in dashboard()["panels"]:
        for target in panel.get("targets", []):
            found.append((f"panel {panel['title']!r} {target['refId']}", target["expr"]))
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            match = re.fullmatch(r"label_values\((\w+),\s*\w+\)", variable["definition"])
            assert match, f"variable {variable['name']}: unexpected query {variable['definition']}"
            found.append((f"variable {variable['name']}", match.group(1)))
    return found


def rule_entries() -> list[dict[str, Any]]:
    return [
        rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]
    ]


# ---------------------------------------------------------------------- Prometheus rules
def test_promtool_accepts_the_rules() -> None:
    result = run_promtool("check", "rules", str(RULES))
    assert "SUCCESS" in result.stdout


def test_the_rules_pass_their_unit_tests() -> None:
    result = run_promtool("test", "rules", str(RULE_TESTS))
    assert "SUCCESS" in result.stdout


def test_the_rules_read_only_exported_metrics() -> None:
    entries = rule_entries()
    recorded = {rule["record"] for rule in entries if "record" in rule}
    known = serving_metric_names() | set(MONITOR_METRIC_NAMES) | recorded
    used = set()
    for rule in entries:
        names = metric_names(rule["expr"])
        assert names, f"{rule.get('alert') or rule.get('record')}: reads no EventOps metric"
        used |= names
        if "alert" in rule:
            assert rule["labels"]["severity"] in ("info", "warning", "critical"), rule["alert"]
            assert rule["annotations"]["summary"], rule["alert"]
    assert used <= known, f"unknown metrics in the rules: {sorted(used - known)}"
    assert "eventops_serving_model_swaps_total" in used
    assert "eventops_serving_request_seconds_bucket" in used
    assert {"eventops_monitor_drift_share", "eventops_monitor_last_check_timestamp_seconds"} <= used


# ---------------------------------------------------------------------- Grafana dashboard
def test_the_dashboard_reads_only_exported_metrics() -> None:
    known = serving_metric_names() | set(MONITOR_METRIC_NAMES)
    used: set[str] = set()
    for where, expr in dashboard_queries():
        names = metric_names(expr)
        assert names, f"{where}: reads no EventOps metric"
        assert names <= known, f"{where}: unknown metrics {sorted(names - known)}"
        used |= names
    assert set(MONITOR_METRIC_NAMES) <= used  # every monitor metric has a panel


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    rules = []
    for index, (_where, expr) in enumerate(dashboard_queries()):
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        expr = re.sub(r"\$\{?\w+\}?", ".*", expr)  # $job, $monitor: multi-value regexes
        rules.append({"record": f"dashboard:query_{index}", "expr": expr})
    file = tmp_path / "dashboard-queries.yml"
    file.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    run_promtool("check", "rules", str(file))


def test_the_dashboard_has_the_panels_operators_need() -> None:
    board = dashboard()
    panels = board["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    titles = " | ".join(p["title"].lower() for p in panels)
    for wanted in ("requests / s", "error ratio", "p50 / p99", "batch size", "model version",
                   "swaps", "drift share", "performance"):  # fmt: skip
        assert wanted in titles, f"no panel about {wanted!r}"
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
            assert panel["targets"], panel["title"]
    assert board["uid"] and board["schemaVersion"] >= 36
