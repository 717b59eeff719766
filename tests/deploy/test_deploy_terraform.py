"""deploy/terraform/aws: parsed with python-hcl2 and scanned with checkov (no cloud, no init).

checkov runs once per session on the Terraform folder (about 12 s here) and must find nothing;
every check it is told to skip (`#checkov:skip=ID:reason` inline) carries a reason and is
listed in docs/production.md. The parsed files are checked for what the platform needs: the
engines, encryption with the platform key, variables declared and used, IAM policies that name
their actions, and outputs that fill exactly the keys the aws overlay's .env files have.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import hcl2
import pytest
from manifest_checks import ROOT, tool

TERRAFORM = ROOT / "deploy" / "terraform" / "aws"
OVERLAY = ROOT / "deploy" / "k8s" / "overlays" / "aws"
FILES = sorted(TERRAFORM.rglob("*.tf"))


def unquote(value: Any) -> Any:
    """python-hcl2 keeps string quotes ('"x"'); drop them, recursively."""
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    if isinstance(value, list):
        return [unquote(v) for v in value]
    if isinstance(value, dict):
        return {unquote(k): unquote(v) for k, v in value.items()}
    return value


@pytest.fixture(scope="module")
def parsed() -> dict[Path, dict[str, Any]]:
    out = {}
    for path in FILES:
        with open(path) as handle:
            out[path] = unquote(hcl2.load(handle))
    return out


def blocks(parsed: dict[Path, dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    """'type.name' (resources, data) or 'name' (variables, outputs, modules) -> body."""
    found: dict[str, dict[str, Any]] = {}
    for path, doc in parsed.items():
        if path.parent != TERRAFORM:
            continue
        for block in doc.get(kind, []):
            for first, body in block.items():
                if kind in ("resource", "data"):
                    for name, inner in body.items():
                        found[f"{first}.{name}"] = inner
                else:
                    found[first] = body
    return found


def test_every_file_parses_and_the_layout_is_kept(parsed: dict[Path, dict[str, Any]]) -> None:
    names = {p.name for p in FILES if p.parent == TERRAFORM}
    assert {"versions.tf", "variables.tf", "outputs.tf"} <= names
    assert len(parsed) == len(FILES)


def test_the_platform_has_its_engines(parsed: dict[Path, dict[str, Any]]) -> None:
    resources = blocks(parsed, "resource")
    for needed in (
        "aws_vpc.main", "aws_subnet.private", "aws_nat_gateway.main", "aws_flow_log.main",
        "aws_eks_cluster.main", "aws_eks_node_group.general", "aws_iam_openid_connect_provider.eks",
        "aws_msk_cluster.main", "aws_db_instance.main", "aws_ecr_repository.eventops",
        "aws_iam_role.irsa", "aws_secretsmanager_secret.kafka", "aws_kms_key.platform",
    ):  # fmt: skip
        assert needed in resources, needed
    modules = blocks(parsed, "module")
    assert {m["source"] for m in modules.values()} == {"./modules/data-bucket"}
    assert set(modules) == {"lake", "artifacts"}


def test_data_at_rest_is_encrypted_with_the_platform_key(
    parsed: dict[Path, dict[str, Any]],
) -> None:
    r = blocks(parsed, "resource")
    key = "${aws_kms_key.platform.arn}"
    assert r["aws_db_instance.main"]["storage_encrypted"] is True
    assert r["aws_db_instance.main"]["kms_key_id"] == key
    assert r["aws_db_instance.main"]["publicly_accessible"] is False
    msk = r["aws_msk_cluster.main"]["encryption_info"][0]
    assert msk["encryption_at_rest_kms_key_arn"] == key
    assert msk["encryption_in_transit"][0]["client_broker"] == "TLS"
    assert r["aws_eks_cluster.main"]["encryption_config"][0]["provider"][0]["key_arn"] == key
    assert r["aws_ecr_repository.eventops"]["encryption_configuration"][0]["kms_key"] == key
    for name in ("kafka", "serving_token", "alerts"):
        assert r[f"aws_secretsmanager_secret.{name}"]["kms_key_id"] == key
    for module in blocks(parsed, "module").values():
        assert module["kms_key_arn"] == key
    assert r["aws_kms_key.platform"]["enable_key_rotation"] is True


def test_every_variable_is_declared_and_used() -> None:
    text = "\n".join(p.read_text() for p in FILES if p.parent == TERRAFORM)
    declared = set(re.findall(r'^variable "([a-z_]+)"', text, re.M))
    used = set(re.findall(r"\bvar\.([a-z_]+)", text))
    assert used - declared == set(), "used but not declared"
    assert declared - used == set(), "declared but never used"


def statements(parsed: dict[Path, dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path, doc in parsed.items():
        for block in doc.get("data", []):
            for kind, named in block.items():
                if kind != "aws_iam_policy_document":
                    continue
                for name, body in named.items():
                    for statement in body.get("statement", []):
                        out.append((f"{path.name}:{name}", statement))
    return out


# Actions that AWS authorises on no resource but "*": a condition or another statement limits them.
NO_RESOURCE_LEVEL = {"cloudwatch:PutMetricData", "ecr:GetAuthorizationToken"}


def test_iam_policies_name_their_actions_and_resources(
    parsed: dict[Path, dict[str, Any]],
) -> None:
    found = statements(parsed)
    assert len(found) > 10
    for where, statement in found:
        deny = statement.get("effect") == "Deny"
        for action in statement.get("actions", []):
            if where.startswith("kms.tf:") or deny:
                continue  # a key policy administers its own key; a Deny may be broad
            assert "*" not in action, f"{where}: action {action}"
        if "principals" in statement or deny:
            continue  # trust, key and bucket policies: their resource is the thing itself
        for resource in statement.get("resources", []):
            if resource == "*":
                assert set(statement["actions"]) <= NO_RESOURCE_LEVEL, f"{where}: resource *"


def test_the_aws_integrations_have_their_resources(parsed: dict[Path, dict[str, Any]]) -> None:
    r = blocks(parsed, "resource")
    key = "${aws_kms_key.platform.arn}"
    for stream in ("ingest", "events"):
        assert r[f"aws_kinesis_stream.{stream}"]["encryption_type"] == "KMS"
        assert r[f"aws_kinesis_stream.{stream}"]["kms_key_id"] == key
    assert r["aws_sqs_queue.eventbridge_dlq"]["kms_master_key_id"] == key
    assert r["aws_cloudwatch_event_bus.platform"]["kms_key_identifier"] == key
    for target in ("alarms", "pipelines"):
        body = r[f"aws_cloudwatch_event_target.{target}"]
        assert body["dead_letter_config"][0]["arn"] == "${aws_sqs_queue.eventbridge_dlq.arn}"
        assert body["retry_policy"][0]["maximum_retry_attempts"] > 0
    # The API token is a sensitive variable, never a literal in the files.
    api_key = r["aws_cloudwatch_event_connection.platform_api"]["auth_parameters"][0]["api_key"][0]
    assert api_key["value"] == "Bearer ${var.eventbridge_api_token}"
    variables = blocks(parsed, "variable")
    assert variables["eventbridge_api_token"]["sensitive"] is True
    assert variables["eventbridge_api_token"]["default"] is None  # no token: no inbound half
    assert r["aws_cloudwatch_event_connection.platform_api"]["count"] == (
        "${local.eventbridge_in ? 1 : 0}"
    )
    # Every alarm's name starts with the prefix the alarm-state rule matches.
    rule = r["aws_cloudwatch_event_rule.alarms"]["event_pattern"]
    assert "local.alarm_prefix" in rule and "CloudWatch Alarm State Change" in rule
    for alarm in ("errors", "latency", "drift"):
        name = r[f"aws_cloudwatch_metric_alarm.{alarm}"]["alarm_name"]
        assert name.startswith("${local.alarm_prefix}-"), name
    assert "aws_cloudwatch_dashboard.platform" in r


def test_the_app_and_terraform_agree_on_metric_names(parsed: dict[Path, dict[str, Any]]) -> None:
    from eventops.monitoring import cloudwatch

    text = (TERRAFORM / "cloudwatch.tf").read_text()
    source = Path(cloudwatch.__file__).read_text()
    for metric in re.findall(r'metric_name\s*=\s*"([A-Za-z0-9]+)"', text):
        assert f'"{metric}"' in source or cloudwatch.metric_name("drift_share") == metric, metric


def test_sagemaker_permissions_are_scoped(parsed: dict[Path, dict[str, Any]]) -> None:
    found = dict(statements(parsed))
    deploy = [s for w, s in statements(parsed) if w == "sagemaker.tf:sagemaker_deploy"]
    manage = next(s for s in deploy if s["sid"] == "ManageEndpoints")
    assert all("${var.sagemaker_name_prefix}*" in res for res in manage["resources"])
    passing = next(s for s in deploy if s["sid"] == "PassExecutionRole")
    assert passing["resources"] == ["${aws_iam_role.sagemaker.arn}"]
    assert passing["condition"][0]["values"] == ["sagemaker.amazonaws.com"]
    assert found  # the scan above found the policies at all


def test_irsa_roles_trust_only_their_service_accounts(parsed: dict[Path, dict[str, Any]]) -> None:
    trust = blocks(parsed, "data")["aws_iam_policy_document.irsa_assume"]["statement"][0]
    conditions = {c["variable"].rsplit(":", 1)[-1]: c for c in trust["condition"]}
    assert conditions["aud"]["values"] == ["sts.amazonaws.com"]
    assert conditions["sub"]["test"] == "StringEquals"
    assert "system:serviceaccount:${ns}:${each.value}" in conditions["sub"]["values"]
    roles = blocks(parsed, "resource")
    locals_text = (TERRAFORM / "iam.tf").read_text()
    accounts = set(re.findall(r'= "(eventops-[a-z-]+)"', locals_text))
    overlay = (OVERLAY / "kustomization.yaml").read_text()
    for account in accounts:
        assert f"name: {account}}}" in overlay, f"{account}: no role annotation in the overlay"
    assert "aws_iam_role.irsa" in roles


def env_keys(path: Path) -> list[str]:
    return [line.split("=", 1)[0] for line in path.read_text().splitlines() if "=" in line]


@pytest.mark.parametrize(
    ("output", "env_file"),
    [
        ("kustomize_config_env", "config.env"),
        ("kustomize_mlflow_env", "mlflow.env"),
        ("kustomize_aws_env", "aws.env"),
    ],
)
def test_outputs_fill_exactly_the_overlays_env_files(
    parsed: dict[Path, dict[str, Any]], output: str, env_file: str
) -> None:
    value = blocks(parsed, "output")[output]["value"]
    keys = re.findall(r"^\s*([A-Z][A-Z0-9_]*)=", value, re.M)
    assert keys == env_keys(OVERLAY / env_file)


# ---- checkov ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkov_report() -> dict[str, Any]:
    done = subprocess.run(
        [
            tool("checkov"), "--directory", str(TERRAFORM), "--framework", "terraform",
            "--quiet", "--compact", "--skip-download", "--output", "json",
        ],
        capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert done.returncode in (0, 1), done.stderr[-2000:]
    report = json.loads(done.stdout)
    return report[0] if isinstance(report, list) else report


@pytest.mark.slow
def test_checkov_finds_nothing(checkov_report: dict[str, Any]) -> None:
    summary = checkov_report["summary"]
    failed = [
        f"{c['check_id']} {c['resource']} ({c['file_path']}): {c['check_name']}"
        for c in checkov_report["results"]["failed_checks"]
    ]
    assert failed == [], "\n".join(failed)
    assert summary["parsing_errors"] == 0
    assert summary["passed"] > 300 and summary["resource_count"] > 90


@pytest.mark.slow
def test_every_skip_has_a_reason_and_is_documented(checkov_report: dict[str, Any]) -> None:
    skips = [
        (path, match)
        for path in FILES
        for match in re.finditer(r"#checkov:skip=([A-Z0-9_]+):?(.*)", path.read_text())
    ]
    assert skips
    documented = (ROOT / "docs" / "production.md").read_text().split("## Security scan")[1]
    for path, match in skips:
        check, reason = match.group(1), match.group(2).strip()
        assert len(reason) > 20, f"{path.name}: {check} skipped without a reason"
        assert f"`{check}`" in documented, f"{check} ({path.name}) is not in docs/production.md"
    assert checkov_report["summary"]["skipped"] >= len(skips)
