"""Projects: loading and validating a project module, `eventops apply` (plan, record, audit,
idempotence, --dry-run exit codes) and `eventops worker` closing the loop on the churn example:
a CSV is ingested, the trigger fires, `train_churn` runs and returns holdout metrics.

Everything runs on embedded defaults under tmp_path (EVENTOPS_HOME), with real SQLite store and
bus and a local lake.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from sqlalchemy import select
from typer.testing import CliRunner

from conftest import wait_for
from eventops.apply import APPLIED
from eventops.cli import project_cmd
from eventops.config import load_settings
from eventops.errors import NotFound, ValidationError
from eventops.events.bus import open_configured_bus
from eventops.ingest.files import ingest_file
from eventops.lake import Lake
from eventops.pipelines.executors import InlineExecutor
from eventops.pipelines.runner import Runner
from eventops.pipelines.tracking import tracker_from_settings
from eventops.project import ProjectError, load_project
from eventops.registry import Registry
from eventops.store import OutboxEntry, OutboxRelay
from eventops.store.projects import ProjectRow
from eventops.worker import Worker

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "churn" / "project.py"
CSV = ROOT / "examples" / "churn" / "data" / "customers.csv"

app = typer.Typer()
app.command("apply")(project_cmd.apply_cmd)
app.command("worker")(project_cmd.worker_cmd)
cli = CliRunner()


@pytest.fixture
def lake(home: Path) -> Iterator[Lake]:
    lake = Lake.from_settings(load_settings())
    yield lake
    lake.store.close()


def write(folder: Path, text: str, name: str = "proj.py") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


def copy_example(folder: Path) -> Path:
    folder.mkdir(parents=True)
    shutil.copy(EXAMPLE, folder / "project.py")
    shutil.copy(EXAMPLE.parent / "dataset.toml", folder / "dataset.toml")
    return folder / "project.py"


# ---------------------------------------------------------------------- loading
def test_the_example_project_loads_with_its_dataset_transform_and_pipeline() -> None:
    project = load_project(EXAMPLE)
    assert project.name == "churn"
    assert list(project.datasets) == ["churn"]
    assert len(project.datasets["churn"].checks) == 4
    assert [t.name for t in project.transforms] == ["churn_features"]
    assert list(project.pipelines) == ["train_churn"]
    assert [n.name for n in project.pipelines["train_churn"].graph] == [
        "load_features", "split", "train", "evaluate", "register",
    ]  # fmt: skip
    assert list(project.gates) == ["churn"] and project.gates["churn"].metric == "auc"
    assert list(project.deployments) == ["churn-api"]
    assert project.deployments["churn-api"].model_uri == "models:/churn@champion"
    assert list(project.monitors) == ["churn-drift"] and list(project.alerts) == [
        "churn-model-health"
    ]
    assert [r.definition()["kind"] for _, r in project.rules()] == ["event", "event", "manual"]
    assert project.warnings == []
    definition = project.definition()
    assert definition["pipelines"]["train_churn"]["triggers"][0]["min_new_rows"] == 500
    assert definition["transforms"]["churn_features"]["source"] == "churn"
    assert definition["gates"]["churn"]["guardrails"] == {"accuracy": ">= 0.6"}
    assert definition["deployments"]["churn-api"]["alias"] == "champion"
    assert definition["monitors"]["churn-drift"]["window_rows"] == 200
    assert definition["alerts"]["churn-model-health"]["cooldown"] == "10m"
    assert load_project(EXAMPLE).digest == project.digest  # canonical: a reload digests the same


def test_pipelines_come_from_the_module_not_the_global_registry(tmp_path: Path) -> None:
    a = write(tmp_path / "a", PIPELINE_TEMPLATE.format(name="only_in_a"), "proj_a.py")
    b = write(tmp_path / "b", PIPELINE_TEMPLATE.format(name="only_in_b"), "proj_b.py")
    assert list(load_project(a).pipelines) == ["only_in_a"]
    assert list(load_project(b).pipelines) == ["only_in_b"]


PIPELINE_TEMPLATE = """
    from eventops.pipelines.dsl import pipeline, step
    from eventops.pipelines.triggers import manual, on


    @step
    def one() -> int:
        return 1


    @pipeline(triggers=[manual()])
    def {name}() -> None:
        one()
"""


BAD_PROJECTS = {
    "syntax": ("x = 1\ndef broken(:\n    pass\n", "syntax", 2, "syntax error"),
    "import": ("import os\nimport no_such_module_xyz\n", "importable", 2, "no_such_module_xyz"),
    "unknown-event-type": (
        """
        from eventops.pipelines.dsl import pipeline, step
        from eventops.pipelines.triggers import on

        @step
        def one() -> int:
            return 1

        @pipeline(triggers=[on("dataset.batch.ingestd", dataset="churn")])
        def retrain() -> None:
            one()
        """,
        "catalog",
        9,
        "pipeline 'retrain': trigger on('dataset.batch.ingestd')",
    ),
    "duplicate-pipeline": (
        PIPELINE_TEMPLATE.format(name="twice")
        + "\n\n    @pipeline\n    def twice() -> None:\n        one()\n",
        "unique-name",
        16,
        "pipeline 'twice' is defined twice (lines 11 and 16)",
    ),
    "duplicate-pipeline-name": (
        PIPELINE_TEMPLATE.format(name="first")
        + "\n\n    @pipeline(name='first')\n    def second() -> None:\n        one()\n",
        "unique-name",
        16,
        "pipeline 'first' is defined twice",
    ),
    "trigger-not-a-rule": (
        PIPELINE_TEMPLATE.format(name="p").replace("[manual()]", "['dataset.batch.ingested']"),
        "type",
        11,
        "pipeline 'p': trigger #1 is a str, not a rule",
    ),
    "datasets-not-a-list": ("datasets = 'churn.toml'\n", "type", None, "`datasets` must be a list"),
    "gate-not-a-gate": ("gates = [{'model': 'churn'}]\n", "type", None, "gates[0] is a dict"),
    "two-gates-for-one-model": (
        "from eventops.registry import Gate\n"
        "gates = [Gate(model='churn', metric='auc'), Gate(model='churn', metric='f1')]\n",
        "unique",
        None,
        "gates: model 'churn' appears twice",
    ),
    "two-deployments-one-name": (
        "from eventops.serving import Deployment\n"
        "deployments = [Deployment(name='api', model='a'), Deployment(name='api', model='b')]\n",
        "unique",
        None,
        "deployments: name 'api' appears twice",
    ),
    "bad-dataset-spec": (
        "from eventops.lake import DatasetSpec\ndatasets = [{'name': 'Bad Name'}]\n",
        "string_pattern_mismatch",
        None,
        "datasets[0]",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_PROJECTS))
def test_a_bad_project_is_refused_naming_file_line_and_reason(tmp_path: Path, case: str) -> None:
    text, rule, line, message = BAD_PROJECTS[case]
    path = write(tmp_path, text, f"bad_{case.replace('-', '_')}.py")
    with pytest.raises(ProjectError) as caught:
        load_project(path)
    error = caught.value
    assert error.rule == rule, str(error)
    assert error.line == line, str(error)
    assert str(path) + (f":{line}" if line else "") in str(error)
    assert message in str(error)


def test_a_missing_project_file_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="no such file"):
        load_project(tmp_path / "nope.py")


def test_a_transform_of_an_undeclared_dataset_is_a_warning(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        from eventops.lake.transforms import Transform
        transforms = [Transform(name="t", source="elsewhere", target="derived", sql="SELECT 1")]
        """,
        "warn_proj.py",
    )
    project = load_project(path)
    assert len(project.warnings) == 1
    assert "transform 't' reads dataset 'elsewhere'" in project.warnings[0]


# ---------------------------------------------------------------------- apply
def test_apply_plans_records_audits_and_is_idempotent(home: Path, tmp_path: Path) -> None:
    first = cli.invoke(app, ["apply", "--project", str(EXAMPLE), "--actor", "ci"])
    assert first.exit_code == 0, first.output
    for name in ("churn", "train_churn", "churn_features"):
        assert any(name in line and "create" in line for line in first.output.splitlines())
    assert "7 to create, 0 to change, 0 to remove" in first.output

    again = cli.invoke(app, ["apply", "--project", str(EXAMPLE)])
    assert again.exit_code == 0, again.output
    assert "no changes" in again.output

    lake = Lake.from_settings(load_settings())
    try:
        assert len(lake.spec("churn").checks) == 4
        with lake.store.session() as session:
            row = session.get(ProjectRow, "churn")
            assert row is not None
            assert row.applied_by == "ci"
            assert row.digest == load_project(EXAMPLE).digest
            audits = list(session.scalars(select(OutboxEntry).filter_by(type=APPLIED)))
        assert len(audits) == 1  # the second apply changed nothing and audited nothing
        data = json.loads(audits[0].payload)["data"]
        assert (data["actor"], data["action"], data["resource"]) == ("ci", "apply", "project/churn")
        assert data["changes"] == {"create": 7, "change": 0, "remove": 0}

        # change one check of the dataset: a "change" of that dataset, nothing else
        changed = copy_example(tmp_path / "edited")
        toml = changed.parent / "dataset.toml"
        toml.write_text(toml.read_text().replace("max = 600", "max = 700"))
        dry = cli.invoke(app, ["apply", "--project", str(changed), "--dry-run"])
        assert dry.exit_code == 0, dry.output
        lines = [line for line in dry.output.splitlines() if "change" in line and "churn" in line]
        assert len(lines) == 1 and "checks" in lines[0], dry.output
        assert "0 to create, 1 to change, 0 to remove" in dry.output
        assert "dry run" in dry.output
        assert lake.spec("churn").checks[1].max == 600  # type: ignore[union-attr]

        real = cli.invoke(app, ["apply", "--project", str(changed)])
        assert real.exit_code == 0, real.output
        assert lake.spec("churn").checks[1].max == 700  # type: ignore[union-attr]
    finally:
        lake.store.close()


def test_dry_run_exit_codes(home: Path, tmp_path: Path) -> None:
    ok = cli.invoke(app, ["apply", "--project", str(EXAMPLE), "--dry-run"])
    assert ok.exit_code == 0, ok.output
    assert "7 to create" in ok.output
    bad = write(tmp_path, BAD_PROJECTS["unknown-event-type"][0], "bad_for_ci.py")
    refused = cli.invoke(app, ["apply", "--project", str(bad), "--dry-run"])
    assert refused.exit_code == ValidationError.exit_code, refused.output
    assert "dataset.batch.ingestd" in refused.output
    missing = cli.invoke(app, ["apply", "--project", str(tmp_path / "missing.py"), "--dry-run"])
    assert missing.exit_code == NotFound.exit_code
    none_given = cli.invoke(app, ["apply", "--dry-run"])
    assert none_given.exit_code == ValidationError.exit_code
    assert "--project" in none_given.output


# ---------------------------------------------------------------------- worker
def _ingest_csv(lake: Lake) -> int:
    report = ingest_file(lake, "churn", str(CSV))
    bus = open_configured_bus(load_settings())
    try:
        OutboxRelay(lake.store, bus).relay_once()
    finally:
        bus.close()
    return report.rows_accepted


def _check_training_run(lake: Lake) -> None:
    runner = Runner(lake.store, lake.storage, executor=InlineExecutor())
    runs = runner.list_runs("train_churn")
    assert [r.status for r in runs] == ["succeeded"], [r.error for r in runs]
    assert runs[0].trigger["kind"] == "event" and runs[0].trigger["rows"] == 800
    metrics = runner.output(runs[0].id, "evaluate")
    assert metrics["rows_train"] + metrics["rows_test"] == 800
    assert 0.6 < metrics["auc"] <= 1.0 and 0.5 < metrics["accuracy"] <= 1.0


@pytest.mark.slow
def test_worker_cli_closes_the_loop_ingest_trigger_train(home: Path, lake: Lake) -> None:
    applied = cli.invoke(app, ["apply", "--project", str(EXAMPLE)])
    assert applied.exit_code == 0, applied.output
    assert _ingest_csv(lake) == 800
    started = time.monotonic()
    result = cli.invoke(
        app,
        ["worker", "--project", str(EXAMPLE), "--role", "all", "--inline", "--timeout", "35",
         "--max-runs", "1", "--triggers-from", "earliest"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "1 run(s) handled" in result.output
    assert time.monotonic() - started < 35
    _check_training_run(lake)
    assert len(lake.batches("churn_features")) == 1  # the transforms role derived the features


@pytest.mark.slow
def test_a_running_worker_trains_registers_and_promotes_when_data_arrives(
    home: Path, lake: Lake
) -> None:
    project = load_project(EXAMPLE)
    settings = load_settings()
    registry = Registry.from_settings(settings)
    worker = Worker(
        project, lake.store, lake.storage, lambda: open_configured_bus(settings),
        executor=InlineExecutor(), tick_interval=0.2, tracker=tracker_from_settings(settings),
        registry=registry,
    )  # fmt: skip
    assert worker.roles == (
        "triggers", "runner", "transforms", "gates", "monitors", "alerts", "relay", "forward",
    )  # fmt: skip
    worker.start()
    assert worker.forwarders == []  # no [aws] target configured: the forward role stays idle
    try:
        wait_for(lambda: worker.ready, timeout=10)
        lake.declare(project.datasets["churn"])
        _ingest_csv(lake)

        # ingested -> trigger -> run -> register_model -> gate -> champion, all through the bus
        def champion() -> str | None:
            try:
                return registry.alias("churn")
            except NotFound:  # not registered yet
                return None

        wait_for(lambda: champion() == "1" or worker.errors, timeout=60)
    finally:
        worker.stop()
    assert worker.errors == []
    _check_training_run(lake)
    decision = registry.decisions("churn")[0]
    assert (decision.decision, decision.version, decision.actor) == ("promoted", "1", "gate")
    assert decision.evidence["guardrails"]["accuracy"]["pass"] is True
    version = registry.version("churn", "1")
    assert version.tags["eventops.pipeline"] == "train_churn"


def test_worker_stops_on_timeout_and_on_sigterm(home: Path) -> None:
    quick = cli.invoke(app, ["worker", "--project", str(EXAMPLE), "--role", "relay", "--timeout", "0.5"])  # fmt: skip
    assert quick.exit_code == 0, quick.output
    assert "timeout after 0.5s" in quick.output

    script = (
        "import typer; from eventops.cli import project_cmd; app = typer.Typer(); "
        "app.command('worker')(project_cmd.worker_cmd); app.command('x')(lambda: None); app()"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", script, "worker", "--project", str(EXAMPLE), "--inline"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    try:
        line = process.stdout.readline()
        while line and "worker for project" not in line:
            line = process.stdout.readline()
        assert "worker for project churn" in line
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, output
    assert "SIGTERM: stopping" in output and "worker stopped" in output


def test_worker_threads_do_not_leak(home: Path) -> None:
    before = threading.active_count()
    result = cli.invoke(app, ["worker", "--project", str(EXAMPLE), "--timeout", "0.5", "--inline"])
    assert result.exit_code == 0, result.output
    wait_for(lambda: threading.active_count() <= before + 1, timeout=10)


def test_worker_metrics_port_exposes_the_monitor_gauges(lake: Lake) -> None:
    import socket

    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = project_cmd.start_metrics_server(lake.store, "127.0.0.1", port)
    try:
        reply = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    finally:
        server.shutdown()
    assert reply.status_code == 200
    names = {family.name for family in text_string_to_metric_families(reply.text)}
    assert {"eventops_monitor_checks", "eventops_monitor_last_check_timestamp_seconds"} <= names
