"""deploy/argocd: the ApplicationSet and AppProject, checked against our JSON schemas of the
Argo CD fields we use (deploy/argocd/schema), and against the repository they point at."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator
from manifest_checks import ROOT, containers, pod_specs, rendered, unknown_overlay_paths
from referencing import Registry, Resource

ARGOCD = ROOT / "deploy" / "argocd"
SCHEMAS = {p.name: json.loads(p.read_text()) for p in (ARGOCD / "schema").glob("*.schema.json")}
REGISTRY = Registry().with_resources(
    (schema["$id"], Resource.from_contents(schema)) for schema in SCHEMAS.values()
)


def load(name: str) -> dict[str, Any]:
    doc = yaml.safe_load((ARGOCD / name).read_text())
    assert isinstance(doc, dict)
    return doc


def errors(doc: dict[str, Any], schema: str) -> list[str]:
    validator = Draft202012Validator(SCHEMAS[schema], registry=REGISTRY)
    return [
        f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)
    ]


@pytest.fixture
def appset() -> dict[str, Any]:
    return load("applicationset.yaml")


def test_the_schemas_are_valid_json_schemas() -> None:
    assert set(SCHEMAS) == {
        "application.schema.json", "applicationset.schema.json", "appproject.schema.json",
    }  # fmt: skip
    for schema in SCHEMAS.values():
        Draft202012Validator.check_schema(schema)


def test_the_applicationset_and_project_meet_the_schemas(appset: dict[str, Any]) -> None:
    assert errors(appset, "applicationset.schema.json") == []
    assert errors(load("appproject.yaml"), "appproject.schema.json") == []


def _set(path: list[str], key: str, value: Any) -> Any:
    def change(doc: dict[str, Any]) -> None:
        node = doc
        for step in path:
            node = node[step]
        node[key] = value

    return change


TEMPLATE = ["spec", "template", "spec"]
ANNOTATIONS = ["spec", "template", "metadata", "annotations"]
UPDATER = "argocd-image-updater.argoproj.io/platform"


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        (_set([*TEMPLATE, "syncPolicy"], "automate", {}), "automate"),
        (_set([*TEMPLATE, "syncPolicy"], "syncOptions", ["CreateNamespaces=true"]),
         "CreateNamespaces"),
        (_set(ANNOTATIONS, f"{UPDATER}.update-strategey", "semver"), "update-strategey"),
        (_set(ANNOTATIONS, f"{UPDATER}.update-strategy", "newest"), "newest"),
        (_set([*TEMPLATE, "source", "kustomize"], "images", ["eventops:1.0"]), "eventops:1.0"),
        (_set(["spec", "generators", 0, "git"], "revison", "main"), "revison"),
    ],
)  # fmt: skip
def test_a_misspelt_or_invalid_field_is_refused(
    appset: dict[str, Any], change: Any, complaint: str
) -> None:
    broken = copy.deepcopy(appset)
    change(broken)
    found = errors(broken, "applicationset.schema.json")
    assert found and any(complaint in e for e in found), found


def test_every_overlay_is_an_environment_and_the_paths_exist(appset: dict[str, Any]) -> None:
    assert unknown_overlay_paths(appset) == []
    pattern = appset["spec"]["generators"][0]["git"]["directories"][0]["path"]
    assert pattern == "deploy/k8s/overlays/*"
    assert appset["spec"]["template"]["spec"]["source"]["path"] == "{{.path.path}}"


def test_a_path_to_an_overlay_that_does_not_exist_is_caught(appset: dict[str, Any]) -> None:
    broken = copy.deepcopy(appset)
    broken["spec"]["generators"][0]["git"]["directories"][0]["path"] = "deploy/k8s/overlay/*"
    assert "matches no Kustomize directory" in unknown_overlay_paths(broken)[0]
    application: dict[str, Any] = {
        "kind": "Application",
        "metadata": {"name": "eventops-prod"},
        "spec": {"source": {"path": "deploy/k8s/overlays/prod"}},
    }
    assert unknown_overlay_paths(application) == [
        "Application eventops-prod: source.path 'deploy/k8s/overlays/prod' is no Kustomize "
        "directory"
    ]
    application["spec"]["source"]["path"] = "deploy/k8s/overlays/aws"
    assert unknown_overlay_paths(application) == []


def test_a_folder_without_kustomization_under_the_pattern_is_caught(
    appset: dict[str, Any], tmp_path: Path
) -> None:
    (tmp_path / "deploy/k8s/overlays/aws").mkdir(parents=True)
    (tmp_path / "deploy/k8s/overlays/aws/kustomization.yaml").write_text("resources: []\n")
    (tmp_path / "deploy/k8s/overlays/staging").mkdir()
    problems = unknown_overlay_paths(appset, root=tmp_path)
    assert problems == [
        "ApplicationSet eventops-platform: deploy/k8s/overlays/staging matches "
        "'deploy/k8s/overlays/*' but has no kustomization.yaml"
    ]


def test_the_project_allows_exactly_the_kinds_the_overlays_render() -> None:
    project = load("appproject.yaml")["spec"]
    allowed = {(g["group"], g["kind"]) for g in project["namespaceResourceWhitelist"]}
    kinds = {
        (d["apiVersion"].rpartition("/")[0], d["kind"])
        for overlay in ("deploy/k8s/base", "deploy/k8s/overlays/aws")
        for d in rendered(overlay)
    }
    assert kinds <= allowed, f"not in the AppProject: {sorted(kinds - allowed)}"
    assert allowed <= kinds, f"allowed but never rendered: {sorted(allowed - kinds)}"
    cluster = {(g["group"], g["kind"]) for g in project["clusterResourceWhitelist"]}
    assert cluster == {("", "Namespace")}, "CreateNamespace=true needs Namespace, nothing else"


def test_the_image_updater_targets_the_image_the_overlays_use(appset: dict[str, Any]) -> None:
    annotations = appset["spec"]["template"]["metadata"]["annotations"]
    listed = annotations["argocd-image-updater.argoproj.io/image-list"]
    alias, _, repository = listed.partition("=")
    image_name = annotations[f"argocd-image-updater.argoproj.io/{alias}.kustomize.image-name"]
    overrides = appset["spec"]["template"]["spec"]["source"]["kustomize"]["images"]
    assert [o.partition("=")[0] for o in overrides] == [image_name]
    assert overrides[0].partition("=")[2].startswith(repository + ":")
    # git write-back to .argocd-source-<app>.yaml: the overlays keep the logical name, which
    # project overlays replace with `images: - name: eventops`
    assert annotations["argocd-image-updater.argoproj.io/write-back-method"] == "git"
    assert "argocd-image-updater.argoproj.io/write-back-target" not in annotations
    images = {
        c["image"].partition(":")[0]
        for _, pod in pod_specs(rendered("deploy/k8s/overlays/aws"))
        for c in containers(pod)
    }
    assert images == {image_name}
    project = load("appproject.yaml")["metadata"]["name"]
    assert appset["spec"]["template"]["spec"]["project"] == project
