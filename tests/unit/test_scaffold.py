"""`eventops init`: what the scaffold writes, and what it refuses."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from eventops.cli import app
from eventops.errors import ValidationError
from eventops.scaffold import (
    NAME_RULE,
    name_from_path,
    render_project,
    render_text,
    template_files,
)

BIN = Path(sys.executable).parent
EXPECTED = {
    ".dockerignore",
    ".github/workflows/eventops.yml",
    ".gitignore",
    ".pre-commit-config.yaml",
    ".secrets.baseline",
    "Dockerfile",
    "README.md",
    "data/sample.csv",
    "dataset.toml",
    "deploy/argocd-application.yaml",
    "deploy/kustomization.yaml",
    "eventops.toml",
    "project.py",
    "pyproject.toml",
    "requirements-dev.txt",
    "requirements.txt",
    "tests/test_steps.py",
    "tests/test_workflow.py",
}


def files_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def test_templates_are_package_data_with_dotfiles_mapped() -> None:
    assert {str(relative) for relative, _ in template_files()} == EXPECTED


def test_render_writes_every_file_with_the_name_and_no_placeholder_left(tmp_path: Path) -> None:
    result = render_project(tmp_path / "new", "fraud_score")
    assert result.name == "fraud_score" and result.replaced == []
    assert (
        files_under(tmp_path / "new")
        == EXPECTED
        == {p.relative_to(tmp_path / "new").as_posix() for p in result.files}
    )
    for path in result.files:
        assert "@@" not in path.read_text(), path
    project = (tmp_path / "new" / "project.py").read_text()
    functions = {n.name for n in ast.parse(project).body if isinstance(n, ast.FunctionDef)}
    assert "train_fraud_score" in functions
    assert 'project_name = "fraud_score"' in project
    kustomization = (tmp_path / "new" / "deploy" / "kustomization.yaml").read_text()
    assert "namespace: eventops-fraud-score" in kustomization
    assert "  - ../platform/deploy/k8s/overlays/aws\n" in kustomization


def test_the_name_defaults_to_the_folder_as_a_slug(tmp_path: Path) -> None:
    assert name_from_path(tmp_path / "Churn-Model.v2") == "churn_model_v2"
    assert render_project(tmp_path / "my-project").name == "my_project"


@pytest.mark.parametrize(
    "name", ["", "1st", "My_Project", "with-dash", "has space", "ümlaut", "a" * 41, "x/y"]
)
def test_an_invalid_name_is_refused_naming_the_field_and_the_rule(
    tmp_path: Path, name: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        render_project(tmp_path / "p", name)
    assert (refused.value.field, refused.value.rule) == ("--name", "name-pattern")
    assert NAME_RULE in refused.value.message
    assert not (tmp_path / "p").exists()


def test_a_folder_name_that_makes_no_valid_name_asks_for_name(tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as refused:
        render_project(tmp_path / "2024")
    assert refused.value.field is not None and "--name" in refused.value.field
    assert refused.value.rule == "name-pattern"


def test_a_longest_name_still_renders_lint_clean_python(tmp_path: Path) -> None:
    name = "a" * 40
    render_project(tmp_path / "long", name)
    for args in (["format", "--check"], ["check"]):
        done = subprocess.run(
            [str(BIN / "ruff"), *args, "."], cwd=tmp_path / "long", capture_output=True, text=True
        )
        assert done.returncode == 0, done.stdout + done.stderr


def test_a_folder_that_is_not_empty_is_refused_and_left_alone(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValidationError) as refused:
        render_project(tmp_path, "demo")
    assert (refused.value.field, refused.value.rule) == ("path", "empty-folder")
    assert "--force" in refused.value.message
    assert files_under(tmp_path) == {"notes.txt"}


def test_a_file_as_target_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValidationError) as refused:
        render_project(tmp_path / "file", "demo")
    assert (refused.value.field, refused.value.rule) == ("path", "folder")


def test_force_keeps_identical_files_reports_replaced_ones_and_keeps_the_rest(
    tmp_path: Path,
) -> None:
    render_project(tmp_path, "demo")
    (tmp_path / "README.md").write_text("my own readme\n")
    (tmp_path / "notes.txt").write_text("mine")
    again = render_project(tmp_path, "demo", force=True)
    assert again.replaced == [tmp_path / "README.md"]
    assert again.files == [tmp_path / "README.md"]  # nothing else changed
    assert "# demo" in (tmp_path / "README.md").read_text()
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_a_folder_where_a_file_goes_is_refused_before_anything_is_written(
    tmp_path: Path,
) -> None:
    (tmp_path / "project.py").mkdir()
    with pytest.raises(ValidationError) as refused:
        render_project(tmp_path, "demo", force=True)
    assert refused.value.rule == "file-expected"
    assert files_under(tmp_path) == set()


@pytest.mark.parametrize("platform", ["", "has space", "x\ny", "'quoted'", "/srv/platform"])
def test_a_platform_that_is_not_a_kustomize_resource_is_refused(
    tmp_path: Path, platform: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        render_project(tmp_path / "p", "demo", platform=platform)
    assert (refused.value.field, refused.value.rule) == ("platform", "kustomize-resource")


def test_an_unknown_placeholder_is_a_template_bug() -> None:
    with pytest.raises(ValueError, match="@@NOPE@@"):
        render_text("a @@NAME@@ and @@NOPE@@", {"@@NAME@@": "x"}, "t")


def test_the_secrets_baseline_matches_the_pinned_detect_secrets(tmp_path: Path) -> None:
    render_project(tmp_path, "demo")
    baseline = json.loads((tmp_path / ".secrets.baseline").read_text())
    pinned = re.search(
        r"^detect-secrets==(\S+)$", (tmp_path / "requirements-dev.txt").read_text(), re.M
    )
    assert pinned is not None and baseline["version"] == pinned.group(1)
    assert baseline["results"] == {}
    excluded = [f for f in baseline["filters_used"] if f["path"].endswith("should_exclude_secret")]
    pattern = re.compile(excluded[0]["pattern"][0])
    assert pattern.match("SLACK_WEBHOOK_URL")  # a variable's name is not a secret...
    assert not pattern.match("AKIA" + "IOSFODNN7EXAMPLE")  # ...an access key id still is


def test_cli_init_exit_codes_and_messages(tmp_path: Path) -> None:
    runner = CliRunner()
    made = runner.invoke(app, ["init", str(tmp_path / "svc"), "--name", "svc"])
    assert made.exit_code == 0, made.output
    assert "created project svc" in made.output
    assert (tmp_path / "svc" / ".github" / "workflows" / "eventops.yml").is_file()

    bad = runner.invoke(app, ["init", str(tmp_path / "other"), "--name", "Bad-Name"])
    assert bad.exit_code == ValidationError.exit_code
    assert "--name" in bad.output and "name-pattern" in bad.output

    again = runner.invoke(app, ["init", str(tmp_path / "svc"), "--name", "svc"])
    assert again.exit_code == ValidationError.exit_code
    assert "not empty" in again.output and "empty-folder" in again.output

    (tmp_path / "svc" / "README.md").write_text("changed\n")
    forced = runner.invoke(app, ["init", str(tmp_path / "svc"), "--name", "svc", "--force"])
    assert forced.exit_code == 0, forced.output
    assert "replaced" in forced.output and "README.md" in forced.output
