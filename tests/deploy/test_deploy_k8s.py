"""deploy/k8s: the Kustomize base and the aws overlay, rendered by `kubectl kustomize`.

Every rendered object is validated against the Kubernetes OpenAPI schema (kubernetes-validate,
strict: unknown fields fail) of the EKS version Terraform creates. Beyond the schema: every
container's command is parsed by the real `eventops` (or `mlflow`) command line, every
EVENTOPS_* variable it gets is accepted by the settings loader, every Secret and ConfigMap it
reads is provided by something, and pods run as non-root with probes, limits and a read-only
root filesystem.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import click
import hcl2
import kubernetes_validate
import pytest
import typer
from manifest_checks import (
    ROOT,
    containers,
    documented_external,
    kustomize,
    missing_references,
    pod_specs,
    rendered,
)

from eventops.cli import app
from eventops.config import load_settings
from eventops.events.kafka import parse_kafka_url
from eventops.store.database import parse_store_url
from eventops.worker import ROLES

BASE = "deploy/k8s/base"
AWS = "deploy/k8s/overlays/aws"
CRDS = {"ExternalSecret", "SecretStore"}  # validated by their own checks below
PRODUCTION_DOC = ROOT / "docs" / "production.md"


def kubernetes_version() -> str:
    """The EKS version deploy/terraform/aws creates: the schema the manifests must meet."""
    with open(ROOT / "deploy" / "terraform" / "aws" / "variables.tf") as handle:
        variables = hcl2.load(handle)["variable"]
    for block in variables:
        for name, body in block.items():
            if name.strip('"') == "kubernetes_version":
                return str(body["default"]).strip('"') + ".0"
    raise AssertionError("variables.tf has no kubernetes_version")


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def env_of(docs: list[dict[str, Any]], container: dict[str, Any]) -> dict[str, str]:
    """The variables a container starts with; Secret values stand in as 'x'."""
    maps = {name: d.get("data", {}) for name, d in by_kind(docs, "ConfigMap").items()}
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(maps[source["configMapRef"]["name"]])
    for item in container.get("env", []):
        ref = item.get("valueFrom", {}).get("configMapKeyRef")
        env[item["name"]] = maps[ref["name"]][ref["key"]] if ref else item.get("value", "x")
    return env


def parse_eventops(words: list[str]) -> Any:
    """Parse an `eventops` command line with the real CLI, without running it.

    Typer carries its own copy of Click, so groups are told apart by what they have (a
    `commands` mapping), and a bad option raises Typer's UsageError, not click's.
    """
    command: Any = typer.main.get_command(app)
    rest = list(words)
    while hasattr(command, "commands"):
        assert rest, f"eventops {' '.join(words)}: a command group needs a command"
        name = rest.pop(0)
        sub = command.commands.get(name)
        assert sub is not None, f"eventops has no command {name!r} ({' '.join(words)})"
        command = sub
    return command.make_context("eventops", rest)


def entry_command(container: dict[str, Any], env: dict[str, str]) -> list[str]:
    """The container's args as the image's entry point passes them on, $(VAR) expanded."""
    args = [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], a) for a in container["args"]]
    if args[0] == "serve":
        return ["eventops", "serve", "--host", "0.0.0.0", "--port", "8080", *args[1:]]
    return ["eventops", *args] if args[0] != "mlflow" and args[0] not in ("sh", "python") else args


@pytest.mark.parametrize("overlay", [BASE, AWS])
def test_every_object_meets_the_kubernetes_schema_strictly(overlay: str) -> None:
    version = kubernetes_version()
    for doc in rendered(overlay):
        if doc["kind"] in CRDS:
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as err:
            raise AssertionError(
                f"{overlay}: {doc['kind']}/{doc['metadata']['name']}: {err.message} at "
                f"{'.'.join(map(str, err.path))}"
            ) from None


def test_the_base_has_every_component() -> None:
    docs = rendered(BASE)
    deployments = by_kind(docs, "Deployment")
    expected = {"eventops-api", "eventops-serve", "mlflow"} | {
        f"eventops-worker-{role}" for role in ROLES
    }
    assert set(deployments) == expected
    assert set(by_kind(docs, "Service")) == {"eventops-api", "eventops-serve", "mlflow"}
    hpa = by_kind(docs, "HorizontalPodAutoscaler")["eventops-serve"]
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1", "kind": "Deployment", "name": "eventops-serve",
    }  # fmt: skip
    assert "replicas" not in deployments["eventops-serve"]["spec"], "the HPA owns the count"
    assert set(by_kind(docs, "Job")) == {"eventops-migrate"}
    deny = by_kind(docs, "NetworkPolicy")["eventops-default-deny"]["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}


@pytest.mark.parametrize("overlay", [BASE, AWS])
def test_pods_run_locked_down_with_probes_and_limits(overlay: str) -> None:
    docs = rendered(overlay)
    for where, pod in pod_specs(docs):
        security = pod["securityContext"]
        assert security["runAsNonRoot"] is True and security["runAsUser"] >= 10000, where
        assert security["seccompProfile"]["type"] == "RuntimeDefault", where
        assert pod["automountServiceAccountToken"] is False, where
        for container in containers(pod):
            at = f"{where}/{container['name']}"
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, at
            assert context["allowPrivilegeEscalation"] is False, at
            assert context["capabilities"]["drop"] == ["ALL"], at
            for bound in ("requests", "limits"):
                assert set(container["resources"][bound]) == {"cpu", "memory"}, at
            mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
            assert "/tmp" in mounts, f"{at}: a read-only root needs a writable /tmp"
            assert container["image"].startswith("eventops:"), at
            if where.startswith("Deployment/"):
                ports = {p["name"] for p in container.get("ports", [])}
                for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                    action = container[probe].get("httpGet") or container[probe]["tcpSocket"]
                    assert action["port"] in ports, f"{at} {probe} port {action['port']}"


@pytest.mark.parametrize("overlay", [BASE, AWS])
def test_every_command_is_a_real_command_line(overlay: str) -> None:
    import mlflow.cli

    docs = rendered(overlay)
    parsed = 0
    for where, pod in pod_specs(docs):
        for container in containers(pod):
            words = entry_command(container, env_of(docs, container))
            at = f"{where}/{container['name']}: {' '.join(words)}"
            if words[0] == "eventops":
                ctx = parse_eventops(words[1:])
                if ctx.info_name == "eventops" and "role" in ctx.params:
                    assert set(ctx.params["role"]) <= set(ROLES), at
            elif words[0] == "mlflow":
                server = mlflow.cli.cli.get_command(click.Context(mlflow.cli.cli), words[1])
                assert server is not None, at
                server.make_context("mlflow", words[2:])
            elif words[:2] == ["python", "-c"]:
                compile(words[2], at, "exec")
            else:
                assert words[:2] == ["sh", "-c"] and "mlflow db upgrade" in words[2], at
            parsed += 1
    assert parsed >= 12


def test_a_bad_flag_in_a_command_line_is_caught() -> None:
    with pytest.raises(Exception, match="No such option: --rol") as raised:
        parse_eventops(["worker", "--rol", "runner"])
    assert type(raised.value).__name__ == "NoSuchOption"
    with pytest.raises(AssertionError, match="no command 'serv'"):
        parse_eventops(["serv", "--deployment", "x"])


@pytest.mark.parametrize("overlay", [BASE, AWS])
def test_every_container_setting_is_accepted_by_eventops(overlay: str, tmp_path: Path) -> None:
    docs = rendered(overlay)
    missing_file = tmp_path / "no-eventops.toml"
    for where, pod in pod_specs(docs):
        for container in containers(pod):
            env = env_of(docs, container)
            settings = load_settings(path=missing_file, environ=env)  # raises on a bad one
            if "EVENTOPS_STORE_URL" in env:
                assert parse_store_url(settings.store_url).drivername == "postgresql+psycopg"
            if "EVENTOPS_BUS_URL" in env:
                sasl = parse_kafka_url(settings.bus_url, {}).get("security_protocol", "")
                if sasl.startswith("SASL") and where.startswith("Deployment/"):
                    assert "EVENTOPS_KAFKA_SASL_PASSWORD" in env, f"{where}: SASL password"


def test_a_misspelt_setting_in_a_configmap_is_refused(tmp_path: Path) -> None:
    from eventops.errors import ConfigError

    docs = rendered(BASE)
    config = next(d for d in docs if d["metadata"]["name"].startswith("eventops-config-"))
    config["data"]["EVENTOPS_STORE_URLL"] = config["data"].pop("EVENTOPS_STORE_URL")
    api = by_kind(docs, "Deployment")["eventops-api"]
    container = api["spec"]["template"]["spec"]["containers"][0]
    with pytest.raises(ConfigError, match="EVENTOPS_STORE_URLL"):
        load_settings(path=tmp_path / "none.toml", environ=env_of(docs, container))


def test_settings_are_hash_named_configmaps_so_a_change_rolls_the_pods() -> None:
    names = set(by_kind(rendered(BASE), "ConfigMap"))
    for prefix in ("eventops-config", "eventops-mlflow-config", "eventops-serving"):
        assert any(re.fullmatch(rf"{prefix}-[a-z0-9]{{10}}", n) for n in names), prefix


def wave(doc: dict[str, Any]) -> int:
    value = doc["metadata"].get("annotations", {}).get("argocd.argoproj.io/sync-wave")
    assert value is not None, f"{doc['kind']}/{doc['metadata']['name']} has no sync wave"
    return int(value)


@pytest.mark.parametrize("overlay", [BASE, AWS])
def test_sync_waves_run_migrations_before_the_platform_starts(overlay: str) -> None:
    docs = rendered(overlay)
    migrate = by_kind(docs, "Job")["eventops-migrate"]
    annotations = migrate["metadata"]["annotations"]
    assert annotations["argocd.argoproj.io/hook"] == "Sync"
    assert annotations["argocd.argoproj.io/hook-delete-policy"] == "BeforeHookCreation"
    for doc in docs:
        kind = doc["kind"]
        if kind in (
            "ConfigMap",
            "ServiceAccount",
            "NetworkPolicy",
            "ExternalSecret",
            "SecretStore",
        ):
            assert wave(doc) < wave(migrate), doc["metadata"]["name"]
        elif kind != "Job":
            assert wave(doc) > wave(migrate), f"{kind}/{doc['metadata']['name']}"
    assert wave(by_kind(docs, "Deployment")["mlflow"]) < wave(
        by_kind(docs, "Deployment")["eventops-api"]
    )


def test_selectors_find_their_pods() -> None:
    docs = rendered(BASE)
    pod_labels = [pod_labels for pod_labels in (
        d["spec"]["template"]["metadata"]["labels"] for d in by_kind(docs, "Deployment").values()
    )]  # fmt: skip

    def matches(selector: dict[str, str]) -> bool:
        return any(selector.items() <= labels.items() for labels in pod_labels)

    for name, service in by_kind(docs, "Service").items():
        assert matches(service["spec"]["selector"]), f"Service {name} selects no pod"
    for name, budget in by_kind(docs, "PodDisruptionBudget").items():
        assert matches(budget["spec"]["selector"]["matchLabels"]), f"PDB {name}"
    for name, policy in by_kind(docs, "NetworkPolicy").items():
        selector = policy["spec"]["podSelector"].get("matchLabels", {})
        assert matches(selector), f"NetworkPolicy {name} selects no pod"


# ---- references: every Secret and ConfigMap read must be provided ---------------------------


def test_every_secret_the_base_reads_is_provided_or_documented() -> None:
    docs = rendered(BASE)
    documented = documented_external(PRODUCTION_DOC.read_text())
    assert missing_references(docs, documented) == []
    unprovided = set(missing_ref_names(docs))
    assert documented == unprovided, "docs/production.md's Secrets table is out of date"


def missing_ref_names(docs: list[dict[str, Any]]) -> list[tuple[str, str]]:
    from manifest_checks import provided, references

    return [key for key in references(docs) if key not in provided(docs)]


def test_the_aws_overlay_provides_every_secret_itself() -> None:
    assert missing_references(rendered(AWS)) == []


def test_a_misspelt_secret_or_configmap_reference_is_caught() -> None:
    docs = rendered(BASE)
    documented = documented_external(PRODUCTION_DOC.read_text())
    api = by_kind(docs, "Deployment")["eventops-api"]["spec"]["template"]["spec"]
    api["containers"][0]["env"][0]["valueFrom"]["secretKeyRef"]["name"] = "eventops-dbb"
    api["containers"][0]["envFrom"].append({"configMapRef": {"name": "eventops-confg"}})
    problems = missing_references(docs, documented)
    assert len(problems) == 2
    assert "Secret 'eventops-dbb'" in problems[1] and "Deployment/eventops-api" in problems[1]
    assert "ConfigMap 'eventops-confg'" in problems[0]


def test_a_secret_from_an_externalsecret_counts_only_under_its_target_name() -> None:
    docs = rendered(AWS)
    external = by_kind(docs, "ExternalSecret")["eventops-kafka"]
    external["spec"]["target"]["name"] = "eventops-kafka-credentials"
    problems = missing_references(docs)
    assert problems and all("'eventops-kafka'" in p for p in problems)


# ---- the aws overlay --------------------------------------------------------------------------


def aws_env() -> dict[str, str]:
    lines = (ROOT / AWS / "aws.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def test_aws_service_accounts_carry_their_iam_roles() -> None:
    docs = rendered(AWS)
    accounts = by_kind(docs, "ServiceAccount")
    used = {pod.get("serviceAccountName") for _, pod in pod_specs(docs)}
    for name in used - {"eventops-migrate"}:
        arn = accounts[name]["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
        assert re.fullmatch(r"arn:aws:iam::\d{12}:role/[\w+=,.@-]+", arn), (name, arn)
    assert "eks.amazonaws.com/role-arn" not in accounts["eventops-migrate"]["metadata"].get(
        "annotations", {}
    ), "the migration Job needs no cloud access"
    store = by_kind(docs, "SecretStore")["aws-secrets-manager"]
    account = store["spec"]["provider"]["aws"]["auth"]["jwt"]["serviceAccountRef"]["name"]
    assert "eks.amazonaws.com/role-arn" in accounts[account]["metadata"]["annotations"]
    assert store["spec"]["provider"]["aws"]["region"] == aws_env()["AWS_REGION"]


def test_aws_external_secrets_use_the_store_and_name_their_source() -> None:
    docs = rendered(AWS)
    stores = set(by_kind(docs, "SecretStore"))
    for name, external in by_kind(docs, "ExternalSecret").items():
        assert external["apiVersion"] == "external-secrets.io/v1"
        spec = external["spec"]
        assert spec["secretStoreRef"] == {"kind": "SecretStore", "name": "aws-secrets-manager"}
        assert spec["secretStoreRef"]["name"] in stores
        keys = [d["remoteRef"]["key"] for d in spec.get("data", [])] + [
            d["extract"]["key"] for d in spec.get("dataFrom", [])
        ]
        assert keys and all(k in aws_env().values() for k in keys), (name, keys)


def test_aws_databases_and_kafka_are_reachable_only_inside_the_vpc() -> None:
    policy = by_kind(rendered(AWS), "NetworkPolicy")["eventops-egress"]
    cidr = aws_env()["VPC_CIDR"]
    for rule in policy["spec"]["egress"]:
        ports = {p["port"] for p in rule["ports"]}
        blocks = [peer["ipBlock"]["cidr"] for peer in rule.get("to", []) if "ipBlock" in peer]
        if ports & {5432, 9092, 9094, 9096}:
            assert blocks == [cidr], rule
        elif blocks:
            assert ports == {443}, rule


def test_a_project_overlay_swaps_the_image_and_merges_its_settings(tmp_path: Path) -> None:
    """The contract `eventops init` relies on: image name `eventops`, merged ConfigMaps."""
    project = tmp_path / "deploy"
    project.mkdir()
    platform = os.path.relpath(ROOT / AWS, project)
    (project / "kustomization.yaml").write_text(
        f"""apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: eventops-churn
resources: [{platform}]
images:
  - {{name: eventops, newName: 123456789012.dkr.ecr.eu-west-1.amazonaws.com/churn, newTag: sha-0123456789ab}}
configMapGenerator:
  - name: eventops-config
    behavior: merge
    literals: [EVENTOPS_LAKE_URL=s3://churn-lake/churn]
  - name: eventops-serving
    behavior: merge
    literals: [deployment=churn-api]
"""
    )
    docs = kustomize(project)
    images = {c["image"] for _, pod in pod_specs(docs) for c in containers(pod)}
    assert images == {"123456789012.dkr.ecr.eu-west-1.amazonaws.com/churn:sha-0123456789ab"}
    assert {d["metadata"].get("namespace") for d in docs} == {"eventops-churn"}
    serve = by_kind(docs, "Deployment")["eventops-serve"]["spec"]["template"]["spec"]
    assert env_of(docs, serve["containers"][0])["SERVE_DEPLOYMENT"] == "churn-api"
    assert env_of(docs, serve["containers"][0])["EVENTOPS_LAKE_URL"] == "s3://churn-lake/churn"
    assert missing_references(docs) == []
