"""The model registry against real MLflow (a SQLite tracking store in tmp) and a real store:
registering from a pipeline run, gates deciding on one holdout, aliases, rollback from the
decisions history, idempotent handling, the CLI, and the decisions table on PostgreSQL."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from sklearn.linear_model import LogisticRegression
from sqlalchemy import select
from typer.testing import CliRunner

from conftest import wait_for
from eventops.errors import BackendUnavailable, NotFound, ValidationError
from eventops.events.bus import open_bus
from eventops.events.envelope import Event
from eventops.lake.storage import LakeStorage
from eventops.pipelines import log_metric
from eventops.pipelines.dsl import pipeline, step
from eventops.pipelines.executors import InlineExecutor
from eventops.pipelines.runner import Runner
from eventops.pipelines.tracking import MlflowTracker
from eventops.registry import Gate, GateService, Registry, history, register_model
from eventops.store import OutboxEntry, OutboxRelay, Store
from eventops.store.registry import ModelDecisionRow
from store_db import read_events

FAST_REQS = ["mlflow", "pandas", "numpy"]  # skips MLflow's requirement inference (seconds each)


class Threshold(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
    """Predicts x0 > t: on `holdout()` (y = x0 > 0.5) its accuracy is 1 - |t - 0.5|."""

    def __init__(self, t: float) -> None:
        self.t = t

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> np.ndarray:
        return (model_input["x0"].to_numpy() > self.t).astype(np.int64)


class Broken(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> np.ndarray:
        if len(model_input) > 10:
            raise RuntimeError("cannot score more than 10 rows")
        return np.zeros(len(model_input), dtype=np.int64)


def holdout(rows: int = 200) -> pd.DataFrame:
    x0 = (np.arange(rows) + 0.5) / rows  # an even grid: metrics are exact
    x1 = np.cos(np.arange(rows))
    return pd.DataFrame({"x0": x0, "x1": x1, "y": (x0 > 0.5).astype(np.int64)})


def features() -> pd.DataFrame:
    return holdout().drop(columns=["y"])


@step
def train_and_register(model_name: str) -> str:
    data = holdout()
    model = LogisticRegression().fit(data[["x0", "x1"]], data["y"])
    log_metric("train_accuracy", float(model.score(data[["x0", "x1"]], data["y"])))
    registered = register_model(
        model,
        model_name,
        input_example=data[["x0", "x1"]].head(5),
        holdout=data,
        label="y",
        metrics={"custom": 0.5},
        description="trained in a pipeline",
    )
    return registered.version


@pipeline(name="registry-train")
def registry_train(model_name: str = "churn") -> None:
    train_and_register(model_name)


# ---------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def mlflow_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db"


@pytest.fixture(scope="module")
def artifact_root(tmp_path_factory: pytest.TempPathFactory) -> str:
    return tmp_path_factory.mktemp("mlruns").as_uri()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store(f"sqlite:///{tmp_path}/meta.db")
    store.upgrade()
    yield store
    store.close()


@pytest.fixture
def registry(mlflow_uri: str, store: Store, tmp_path: Path) -> Registry:
    return Registry(mlflow_uri, store, lake_url=str(tmp_path / "lake"))


@pytest.fixture
def settings_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mlflow_uri: str
) -> dict[str, str]:
    """Settings for code that runs outside a pipeline: EVENTOPS_HOME in tmp, shared MLflow."""
    monkeypatch.chdir(tmp_path)
    for var in list(os.environ):
        if var.startswith("EVENTOPS_"):
            monkeypatch.delenv(var)
    monkeypatch.setenv("EVENTOPS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("EVENTOPS_TRACKING_URI", mlflow_uri)
    monkeypatch.setenv("COLUMNS", "200")
    return {"store": f"sqlite:///{tmp_path}/home/eventops.db"}


@pytest.fixture
def name() -> str:
    return f"m-{uuid.uuid4().hex[:8]}"


def register(name: str, t: float, *, with_holdout: bool = True) -> str:
    """A Threshold model registered outside a run (settings from `settings_env`)."""
    return register_model(
        Threshold(t),
        name,
        input_example=features().head(3),
        holdout=holdout() if with_holdout else None,
        label="y",
        pip_requirements=FAST_REQS,
    ).version


def outbox(store: Store, kind: str | None = None) -> list[Event]:
    with store.session() as session:
        rows = session.scalars(select(OutboxEntry).order_by(OutboxEntry.id)).all()
        events = [Event.from_json(r.payload) for r in rows]
    return [e for e in events if kind is None or e.type == kind]


def registered_event(store: Store, name: str, version: str) -> Event:
    [event] = [
        e
        for e in outbox(store, "model.version.registered")
        if e.data["model"] == name and e.data["version"] == version
    ]
    return event


# ---------------------------------------------------------------------- registering
def test_register_from_a_pipeline_run(
    store: Store, tmp_path: Path, mlflow_uri: str, artifact_root: str, registry: Registry
) -> None:
    tracker = MlflowTracker(mlflow_uri, "eventops-test", artifact_root=artifact_root)
    runner = Runner(
        store, LakeStorage(str(tmp_path / "lake")), executor=InlineExecutor(), tracker=tracker
    )
    name = f"churn-{uuid.uuid4().hex[:6]}"
    run = runner.run("registry-train", {"model_name": name})
    assert run.status == "succeeded", run.error
    assert runner.output(run.id, "train_and_register") == "1"

    version = registry.version(name, "1")
    assert version.status == "READY"
    assert version.run_id == run.id
    assert version.pipeline == "registry-train"
    assert version.tracking_run_id == run.mlflow_run_id
    assert version.label == "y"
    assert version.description == "trained in a pipeline"
    assert version.metrics["custom"] == 0.5
    assert version.metrics["train_accuracy"] > 0.9  # logged by the step before registering
    assert not any(k.startswith("step.") for k in version.metrics)
    assert version.source.startswith(artifact_root) and version.source.endswith("/model")
    assert version.holdout_uri is not None and version.holdout_uri.endswith("/holdout.parquet")
    assert pd.read_parquet(version.holdout_uri).shape == (200, 3)

    mv = MlflowClient(mlflow_uri, registry_uri=mlflow_uri).get_model_version(name, "1")
    assert mv.run_id == run.mlflow_run_id
    assert json.loads(mv.tags["eventops.metrics"]) == version.metrics
    loaded = registry.load_pyfunc(name, "1", str(tmp_path / "dl"))
    assert list(loaded.predict(features().head(3))) == [0, 0, 0]
    assert loaded.metadata.signature.inputs.input_names() == ["x0", "x1"]

    event = registered_event(store, name, "1")
    [request] = [
        e for e in outbox(store, "pipeline.run.requested") if e.data.get("run_id") == run.id
    ]
    assert event.subject == name
    assert event.causationid == request.id
    assert event.correlationid == run.correlation_id
    assert event.id == version.event_id
    assert event.data["model_uri"] == f"models:/{name}/1"
    assert event.data["run_id"] == run.id
    assert event.data["tracking_run_id"] == run.mlflow_run_id
    assert event.data["metrics"] == version.metrics


def test_register_outside_a_run_opens_its_own_mlflow_run(
    settings_env: dict[str, str], mlflow_uri: str, name: str
) -> None:
    registered = register_model(
        LogisticRegression().fit(features(), holdout()["y"]),
        name,
        input_example=features().head(2),
        metrics={"auc": 0.9},
        pip_requirements=["scikit-learn"],
    )
    assert registered.run_id is None and registered.holdout_uri is None
    run = MlflowClient(mlflow_uri).get_run(registered.tracking_run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["eventops.registered_model"] == name
    experiment = MlflowClient(mlflow_uri).get_experiment(run.info.experiment_id)
    assert experiment.name == "eventops/registry"
    with Store(settings_env["store"]) as store:
        event = registered_event(store, name, registered.version)
    assert event.causationid is None
    assert event.data["metrics"] == {"auc": 0.9}


@pytest.mark.parametrize(
    ("change", "field", "rule"),
    [
        ({"name": "a/b"}, "name", "model-name"),
        ({"name": "x@champion"}, "name", "model-name"),
        ({"name": " "}, "name", "model-name"),
        ({"input_example": None}, "input_example", "required"),
        ({"input_example": [[1, 2]]}, "input_example", "table"),
        ({"label": "missing"}, "label", "in-holdout"),
        ({"model": object()}, "model", "supported-type"),
        ({"flavor": "onnx"}, "flavor", "known-flavor"),
        ({"metrics": {"auc": float("nan")}}, "metrics.auc", "number"),
    ],
)
def test_bad_input_is_refused_naming_the_field(
    settings_env: dict[str, str], change: dict[str, Any], field: str, rule: str
) -> None:
    args: dict[str, Any] = {
        "model": Threshold(0.5),
        "name": "valid",
        "input_example": features().head(2),
        "holdout": holdout(),
        "label": "y",
        "pip_requirements": FAST_REQS,
    }
    args.update(change)
    with pytest.raises(ValidationError) as caught:
        register_model(args.pop("model"), args.pop("name"), **args)
    assert (caught.value.field, caught.value.rule) == (field, rule)


def test_a_model_failing_on_its_example_is_refused(settings_env: dict[str, str]) -> None:
    with pytest.raises(ValidationError) as caught:
        register_model(
            LogisticRegression().fit(features(), holdout()["y"]),
            "valid",
            input_example=features().head(2).rename(columns={"x0": "other"}),
            pip_requirements=FAST_REQS,
        )
    assert (caught.value.field, caught.value.rule) == ("input_example", "predictable")


# ---------------------------------------------------------------------- gates
def judge(service: GateService, store: Store, name: str, version: str) -> Any:
    return service.handle(registered_event(store, name, version))


def decisions_in_outbox(store: Store, name: str) -> list[tuple[str, str, str | None]]:
    return [
        (e.type.rsplit(".", 1)[-1], e.data["version"], e.data["previous_version"])
        for e in outbox(store)
        if e.type.startswith("model.version.")
        and e.type != "model.version.registered"
        and e.data["model"] == name
    ]


def test_the_gate_promotes_better_and_rejects_worse_versions(
    settings_env: dict[str, str], mlflow_uri: str, name: str, tmp_path: Path
) -> None:
    gate = Gate(model=name, metric="accuracy", guardrails={"precision": ">= 0.99"})
    with Registry.from_settings(_settings()) as registry:
        store = registry.store
        service = GateService(registry, [gate])

        first = judge(service, store, name, register(name, 0.7))  # accuracy 0.8
        assert (first.decision, first.version, first.previous_version) == ("promoted", "1", None)
        assert first.evidence["champion_version"] is None
        assert first.evidence["reason"].startswith("no champion yet")
        assert first.evidence["candidate"] == pytest.approx(0.8)
        assert first.evidence["guardrails"]["precision"] == {
            "rule": ">= 0.99", "value": 1.0, "pass": True,
        }  # fmt: skip
        assert first.evidence["holdout"]["rows"] == 200
        assert first.evidence["holdout"]["uri"].endswith("holdout.parquet")

        better = judge(service, store, name, register(name, 0.6))  # accuracy 0.9
        assert (better.decision, better.version, better.previous_version) == ("promoted", "2", "1")
        assert better.evidence["champion"] == pytest.approx(0.8)
        assert better.evidence["gain"] == pytest.approx(0.1)
        assert registry.alias(name, "champion") == "2"

        worse = judge(service, store, name, register(name, 0.8))  # accuracy 0.7
        assert (worse.decision, worse.version, worse.previous_version) == ("rejected", "3", "2")
        assert worse.evidence["gain"] == pytest.approx(-0.2)
        assert "< min_gain" in worse.evidence["reason"]

        # more accurate (0.95) but precision 100/110: the guardrail stops it
        unsafe = judge(service, store, name, register(name, 0.45))
        assert unsafe.decision == "rejected"
        assert unsafe.evidence["gain"] == pytest.approx(0.05)
        assert unsafe.evidence["guardrails"]["precision"]["pass"] is False
        assert unsafe.evidence["guardrails"]["precision"]["value"] == pytest.approx(100 / 110)
        assert "guardrail precision >= 0.99 failed" in unsafe.evidence["reason"]

        assert registry.alias(name, "champion") == "2"
        assert decisions_in_outbox(store, name) == [
            ("promoted", "1", None),
            ("promoted", "2", "1"),
            ("rejected", "3", "2"),
            ("rejected", "4", "2"),
        ]
        promoted = outbox(store, "model.version.promoted")[-1]
        cause = registered_event(store, name, "2")
        assert promoted.causationid == cause.id
        assert promoted.data["actor"] == "gate"
        assert [d.decision for d in registry.decisions(name)] == [
            "rejected", "rejected", "promoted", "promoted",
        ]  # fmt: skip


def test_a_minimising_gate_with_its_own_holdout_from_the_lake(
    settings_env: dict[str, str], name: str
) -> None:
    from eventops.lake.catalog import Lake
    from eventops.lake.storage import LakeStorage

    settings = _settings()
    with Registry.from_settings(settings) as registry:
        lake = Lake(registry.store, LakeStorage(settings.lake_url))
        import pyarrow as pa

        lake.commit_batch("gate_holdout", pa.Table.from_pandas(holdout()), source="test")
        gate = Gate(model=name, metric="log_loss", holdout="gate_holdout", label="y", min_gain=0.01)
        assert gate.direction == "minimize"
        service = GateService(registry, [gate])
        v1 = register(name, 0.7, with_holdout=False)
        assert judge(service, registry.store, name, v1).decision == "promoted"
        v2 = register(name, 0.6, with_holdout=False)
        decision = judge(service, registry.store, name, v2)
        assert decision.decision == "promoted"
        assert decision.evidence["holdout"] == {"uri": "gate_holdout", "rows": 200, "label": "y"}
        assert decision.evidence["gain"] > 0.01  # fewer confident mistakes


def test_manual_approval_sets_the_challenger(settings_env: dict[str, str], name: str) -> None:
    gate = Gate(model=name, metric="accuracy", manual_approval=True)
    with Registry.from_settings(_settings()) as registry:
        service = GateService(registry, [gate])
        first = judge(service, registry.store, name, register(name, 0.7))
        assert first.decision == "approval_requested"
        assert (first.alias, first.version) == ("challenger", "1")
        assert registry.alias(name, "champion") is None
        assert registry.alias(name, "challenger") == "1"

        approved = registry.promote(name, "1", actor="alice", evidence={"reason": "looks good"})
        assert approved.previous_version is None
        assert registry.alias(name, "champion") == "1"
        assert registry.alias(name, "challenger") is None  # the promoted challenger left its seat

        second = judge(service, registry.store, name, register(name, 0.6))
        assert (second.decision, second.alias, second.previous_version) == (
            "approval_requested", "challenger", None,
        )  # fmt: skip
        assert registry.alias(name, "champion") == "1"
        assert registry.alias(name, "challenger") == "2"
        [requested] = [
            e for e in outbox(registry.store, "model.version.approval_requested")
            if e.data["version"] == "2"
        ]  # fmt: skip
        assert requested.data["evidence"]["gain"] == pytest.approx(0.1)

        rejected = registry.reject(name, "2", actor="bob")
        assert rejected.previous_version == "1"
        assert registry.alias(name, "challenger") is None
        with pytest.raises(ValidationError, match="roll it back instead"):
            registry.reject(name, "1", actor="bob")


def test_rollback_twice_then_nothing_left(
    registry: Registry, settings_env: dict[str, str], name: str
) -> None:
    with pytest.raises(NotFound):
        registry.rollback(name, actor="ops")
    for t in (0.7, 0.6, 0.55):
        registry.promote(name, register(name, t), actor="ops")
    with pytest.raises(NotFound, match="no version 4"):
        registry.promote(name, "4", actor="ops")

    back = registry.rollback(name, actor="ops", evidence={"reason": "latency"})
    assert (back.decision, back.version, back.previous_version) == ("rolled_back", "2", "3")
    assert back.evidence == {"rolled_back_version": "3", "reason": "latency"}
    assert registry.alias(name, "champion") == "2"
    again = registry.rollback(name, actor="ops")
    assert (again.version, again.previous_version) == ("1", "2")
    assert registry.alias(name, "champion") == "1"
    with pytest.raises(ValidationError) as caught:
        registry.rollback(name, actor="ops")
    assert caught.value.rule == "has-previous"
    assert registry.alias(name, "champion") == "1"

    registry.promote(name, "3", actor="ops")  # 3 again; 2 was rolled back and is skipped
    assert registry.rollback(name, actor="ops").version == "1"
    assert [e.data["version"] for e in outbox(registry.store, "model.version.rolled_back")] == [
        "2", "1", "1",
    ]  # fmt: skip
    with registry.store.session() as session:
        rows = session.scalars(select(ModelDecisionRow).where(ModelDecisionRow.model == name))
        assert [(r.decision, r.version) for r in rows] == [
            ("promoted", "1"), ("promoted", "2"), ("promoted", "3"), ("rolled_back", "2"),
            ("rolled_back", "1"), ("promoted", "3"), ("rolled_back", "1"),
        ]  # fmt: skip


def _store_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    """The store write after MLflow's alias change fails (the store went down in between)."""

    def fail(*args: Any, **kwargs: Any) -> Any:
        raise BackendUnavailable("store down")

    monkeypatch.setattr(history, "record", fail)


def test_a_rollback_repeated_after_the_store_failed_completes_it(
    registry: Registry, settings_env: dict[str, str], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for t in (0.7, 0.6):
        registry.promote(name, register(name, t), actor="ops")
    with monkeypatch.context() as patch:
        _store_fails(patch)
        with pytest.raises(BackendUnavailable):
            registry.rollback(name, actor="ops")
    assert registry.alias(name, "champion") == "1"  # MLflow moved, the store did not

    again = registry.rollback(name, actor="ops")  # must not undo the rollback (back to 2)
    assert (again.decision, again.version, again.previous_version) == ("rolled_back", "1", "2")
    assert registry.alias(name, "champion") == "1"
    with pytest.raises(ValidationError) as caught:
        registry.rollback(name, actor="ops")
    assert caught.value.rule == "has-previous"


def test_a_promotion_redelivered_after_the_store_failed_is_recorded(
    settings_env: dict[str, str], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Registry.from_settings(_settings()) as registry:
        ungated = GateService(registry)
        first = registered_event(registry.store, name, register(name, 0.7))
        with monkeypatch.context() as patch:
            _store_fails(patch)
            with pytest.raises(BackendUnavailable):
                ungated.handle(first)
        assert registry.alias(name, "champion") == "1" and registry.decisions(name) == []
        assert ungated.handle(first) is not None  # redelivered: the promotion gets its row
        assert registry.recorded(name) == "1"

        gated = GateService(registry, [Gate(model=name, metric="accuracy")])
        second = registered_event(registry.store, name, register(name, 0.55))
        with monkeypatch.context() as patch:
            _store_fails(patch)
            with pytest.raises(BackendUnavailable):
                gated.handle(second)
        assert registry.alias(name, "champion") == "2"
        decided = gated.handle(second)
        assert decided is not None and decided.decision == "promoted"
        # judged against the recorded champion, not against itself
        assert decided.previous_version == "1"
        assert decided.evidence["champion_version"] == "1"
        assert decided.evidence["gain"] == pytest.approx(0.15)
        assert registry.rollback(name, actor="ops").version == "1"


def test_rollback_without_a_champion_is_a_clear_error(
    registry: Registry, settings_env: dict[str, str], name: str
) -> None:
    register(name, 0.7)
    with pytest.raises(ValidationError) as caught:
        registry.rollback(name, actor="ops")
    assert (caught.value.field, caught.value.rule) == ("model", "has-champion")


def test_replayed_events_are_judged_once(settings_env: dict[str, str], name: str) -> None:
    with Registry.from_settings(_settings()) as registry:
        service = GateService(registry, [Gate(model=name, metric="accuracy")])
        event = registered_event(registry.store, name, register(name, 0.7))
        assert service.handle(event) is not None
        assert service.handle(event) is None
        assert service.handle(Event.from_json(event.to_json())) is None
        assert len(registry.decisions(name)) == 1
        assert decisions_in_outbox(registry.store, name) == [("promoted", "1", None)]


def test_without_a_gate_only_the_first_version_is_promoted(
    settings_env: dict[str, str], name: str
) -> None:
    with Registry.from_settings(_settings()) as registry:
        service = GateService(registry)
        first = judge(service, registry.store, name, register(name, 0.7))
        assert first.decision == "promoted"
        assert "no gate" in first.evidence["reason"]
        assert judge(service, registry.store, name, register(name, 0.6)) is None
        assert registry.alias(name, "champion") == "1"
        assert len(registry.decisions(name)) == 1


def test_a_version_that_cannot_be_judged_is_rejected_with_the_reason(
    settings_env: dict[str, str], name: str
) -> None:
    with Registry.from_settings(_settings()) as registry:
        service = GateService(registry, [Gate(model=name, metric="f1")])
        no_holdout = judge(service, registry.store, name, register(name, 0.7, with_holdout=False))
        assert no_holdout.decision == "rejected"
        assert (no_holdout.evidence["field"], no_holdout.evidence["rule"]) == (
            f"gates.{name}.holdout", "required",
        )  # fmt: skip
        version = register_model(
            Broken(), name, input_example=features().head(3), holdout=holdout(), label="y",
            pip_requirements=FAST_REQS,
        ).version  # fmt: skip
        broken = judge(service, registry.store, name, version)
        assert broken.decision == "rejected"
        assert "cannot score more than 10 rows" in broken.evidence["error"]
        assert registry.alias(name, "champion") is None


def test_the_gate_service_follows_the_bus(
    settings_env: dict[str, str], name: str, tmp_path: Path
) -> None:
    bus = open_bus(f"sqlite:///{tmp_path}/events.db")
    with Registry.from_settings(_settings()) as registry:
        service = GateService(registry, [Gate(model=name, metric="accuracy")])
        register(name, 0.7)
        OutboxRelay(registry.store, bus).relay_once()  # before the service's group exists
        subscription = service.subscription(bus).start()
        try:
            register(name, 0.8)
            OutboxRelay(registry.store, bus).relay_once()
            wait_for(lambda: len(registry.decisions(name)) == 2, timeout=60)
        finally:
            subscription.stop()
            bus.close()
        assert [d.decision for d in reversed(registry.decisions(name))] == ["promoted", "rejected"]
        assert registry.alias(name, "champion") == "1"


def _settings() -> Any:
    from eventops.config import load_settings

    return load_settings()


# ---------------------------------------------------------------------- CLI
def cli(*args: str) -> Any:
    from eventops.cli import app

    return CliRunner().invoke(app, ["models", *args])


def test_the_models_commands(
    settings_env: dict[str, str], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("USER", "carol")
    for t in (0.7, 0.6, 0.8):
        register(name, t)

    result = cli("promote", name, "1", "--reason", "first one")
    assert result.exit_code == 0, result.output
    assert f"{name}: version 1 promoted (champion; before: none)" in result.output
    assert cli("promote", name, "2").exit_code == 0
    again = cli("promote", name, "2")
    assert again.exit_code == 2 and "already the champion" in again.output
    result = cli("promote", name, "3", "--alias", "challenger", "--actor", "dave")
    assert result.exit_code == 0, result.output

    listed = cli("list", "--json")
    assert listed.exit_code == 0, listed.output
    [model] = [m for m in json.loads(listed.stdout) if m["name"] == name]
    assert model["aliases"] == {"champion": "2", "challenger": "3"}
    assert model["latest_version"] == "3"
    assert name in cli("list").stdout

    rejected = cli("reject", name, "3", "--reason", "too slow")
    assert rejected.exit_code == 0, rejected.output
    rolled = cli("rollback", name)
    assert rolled.exit_code == 0, rolled.output
    assert f"{name}: version 1 rolled_back (champion; before: 2)" in rolled.output

    shown = cli("show", name, "--json")
    assert shown.exit_code == 0, shown.output
    data = json.loads(shown.stdout)
    assert data["aliases"] == {"champion": "1"}
    assert [v["version"] for v in data["versions"]] == ["3", "2", "1"]
    assert data["versions"][2]["aliases"] == ["champion"]
    assert data["versions"][0]["label"] == "y"
    assert [(d["decision"], d["version"], d["actor"]) for d in data["decisions"]] == [
        ("rolled_back", "1", "carol"),
        ("rejected", "3", "carol"),
        ("promoted", "3", "dave"),
        ("promoted", "2", "carol"),
        ("promoted", "1", "carol"),
    ]
    assert data["decisions"][1]["evidence"] == {"reason": "too slow"}
    table = cli("show", name)
    assert table.exit_code == 0, table.output
    assert "rolled_back" in table.stdout and "first one" in table.stdout

    bus = open_bus(f"sqlite:///{Path.cwd()}/home/events.db")  # the CLI relayed its decisions
    try:
        kinds = [e.type.rsplit(".", 1)[-1] for e in read_events(bus, expected=8)]
    finally:
        bus.close()
    assert kinds.count("registered") == 3
    assert kinds[3:] == ["promoted", "promoted", "promoted", "rejected", "rolled_back"]


def test_the_models_commands_report_errors(settings_env: dict[str, str], name: str) -> None:
    missing = cli("show", name)
    assert missing.exit_code == 3 and f"no registered model {name!r}" in missing.output
    register(name, 0.7)
    assert cli("rollback", name).exit_code == 2
    bad = cli("promote", name, "x")
    assert bad.exit_code == 2 and "positive integer" in bad.output


# ---------------------------------------------------------------------- PostgreSQL
@pytest.mark.postgres
def test_decisions_on_postgresql(mlflow_uri: str, settings_env: dict[str, str], name: str) -> None:
    from store_db import postgres_database

    for t in (0.7, 0.6):
        register(name, t)
    with postgres_database() as url, Store(url) as store:
        store.upgrade()
        registry = Registry(mlflow_uri, store)
        registry.promote(name, "1", actor="ops", evidence={"nan": float("nan")})
        registry.promote(name, "2", actor="ops")
        back = registry.rollback(name, actor="ops")
        assert (back.version, back.previous_version) == ("1", "2")
        history = registry.decisions(name)
        assert [(d.decision, d.version) for d in history] == [
            ("rolled_back", "1"), ("promoted", "2"), ("promoted", "1"),
        ]  # fmt: skip
        assert history[-1].evidence == {"nan": None}
        assert history[0].created_at.tzinfo is not None
        assert len(outbox(store, "model.version.promoted")) == 2
