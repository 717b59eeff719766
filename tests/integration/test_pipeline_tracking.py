"""Pipeline runs tracked in MLflow (a SQLite tracking store) and their lineage: params, tags,
step metrics and metrics the steps log (from child processes too), FAILED runs, a tracking
outage that leaves runs alone, and the chain dataset.batch.ingested -> batches -> artifacts."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest
from mlflow.tracking import MlflowClient

from eventops.lake.catalog import Lake
from eventops.lake.storage import LakeStorage
from eventops.pipelines import log_metric, log_metrics, read_dataset
from eventops.pipelines.dsl import pipeline, step
from eventops.pipelines.executors import InlineExecutor, LocalExecutor
from eventops.pipelines.lineage import lineage_of_run
from eventops.pipelines.runner import Runner
from eventops.pipelines.tracking import MlflowTracker
from eventops.store import Store


@step
def prepare(dataset: str) -> pa.Table:
    table = read_dataset(dataset)
    log_metric("rows_read", table.num_rows)
    return table


@step
def train(table: pa.Table, rate: float) -> dict[str, float]:
    for epoch in range(3):
        log_metric("loss", 1.0 / (epoch + 1), step=epoch)
    log_metrics({"accuracy": 0.75 + rate, "f1": 0.5})
    return {"weights": float(table.num_rows) * rate}


@pipeline(name="tracking-train")
def train_pipeline(dataset: str = "churn", rate: float = 0.1) -> None:
    train(prepare(dataset), rate)


@step
def explode(value: int) -> int:
    log_metric("before_failure", value)
    raise RuntimeError(f"exploded {value}")


@pipeline(name="tracking-broken")
def broken_pipeline(value: int = 3) -> None:
    explode(value)


@pytest.fixture(scope="module")
def mlflow_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db"


@pytest.fixture(scope="module")
def tracker(mlflow_uri: str, tmp_path_factory: pytest.TempPathFactory) -> MlflowTracker:
    root = tmp_path_factory.mktemp("mlruns")
    return MlflowTracker(mlflow_uri, "eventops-test", artifact_root=root.as_uri())


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store(f"sqlite:///{tmp_path}/s.db")
    store.upgrade()
    yield store
    store.close()


@pytest.fixture
def storage(tmp_path: Path) -> LakeStorage:
    return LakeStorage(str(tmp_path / "lake"))


def test_run_is_an_mlflow_run_with_lineage(
    store: Store, storage: LakeStorage, tracker: MlflowTracker, mlflow_uri: str
) -> None:
    lake = Lake(store, storage)
    first = lake.commit_batch("churn", pa.table({"x": [1, 2, 3]}), source="test")
    second = lake.commit_batch("churn", pa.table({"x": [4, 5]}), source="test")
    cause = second.events[-1]
    assert cause.type == "dataset.batch.ingested"
    runner = Runner(
        store, storage, executor=LocalExecutor(), heartbeat_interval=0.2, tracker=tracker
    )
    run_id = runner.request("tracking-train", {"rate": 0.2}, trigger="batch-rule", cause=cause)
    run = runner.execute(run_id)
    assert run.status == "succeeded", run.error
    assert run.tracking_errors == []
    assert run.step("train").outputs is not None
    assert {m.name for m in run.step("train").metrics} == {"loss", "accuracy", "f1"}
    assert runner.output(run_id, "train") == {"weights": 1.0}  # 5 rows * 0.2

    client = MlflowClient(mlflow_uri)
    assert run.mlflow_run_id is not None
    tracked = client.get_run(run.mlflow_run_id)
    assert tracked.info.status == "FINISHED"
    assert tracked.info.run_name == run_id
    experiment = client.get_experiment(tracked.info.experiment_id)
    assert experiment.name == "eventops-test/tracking-train"
    assert tracked.data.params == {"dataset": "churn", "rate": "0.2"}
    tags = tracked.data.tags
    assert tags["eventops.run_id"] == run_id
    assert tags["eventops.pipeline"] == "tracking-train"
    assert tags["eventops.trigger"] == "batch-rule"
    assert tags["eventops.trigger_event_id"] == cause.id
    assert tags["eventops.correlation_id"] == run.correlation_id == cause.id
    assert tags["eventops.step.train.status"] == "succeeded"
    assert tags["eventops.artifact.train.output"].endswith(f"/{run_id}/train/output.json")
    metrics = tracked.data.metrics
    assert metrics["accuracy"] == pytest.approx(0.95)
    assert metrics["rows_read"] == 5
    assert metrics["step.train.attempts"] == 1
    assert metrics["step.prepare.cache_hit"] == 0
    assert metrics["step.prepare.duration_s"] > 0
    loss = client.get_metric_history(run.mlflow_run_id, "loss")
    assert [(m.step, m.value) for m in sorted(loss, key=lambda m: m.step)] == [
        (0, 1.0),
        (1, 0.5),
        (2, pytest.approx(1 / 3)),
    ]
    listed = client.download_artifacts(run.mlflow_run_id, "eventops/artifacts.json")
    refs = json.loads(Path(listed).read_text())["artifacts"]
    assert {r["step"] for r in refs} == {"prepare", "train"}
    assert all(r["uri"].startswith("file://") and r["sha256"] for r in refs)

    chain = lineage_of_run(store, run_id)
    (event,) = chain["trigger"]["events"]
    assert event["id"] == cause.id
    assert event["type"] == "dataset.batch.ingested"
    assert event["batch_id"] == second.batch_id
    batches = {b["batch_id"]: b for b in chain["batches"]}
    assert set(batches) == {first.batch_id, second.batch_id}
    assert batches[first.batch_id]["read_by"] == ["prepare"]
    assert batches[second.batch_id]["trigger"] is True
    assert batches[second.batch_id]["rows"] == 2
    assert batches[first.batch_id]["uri"] == first.uri
    assert chain["run"]["mlflow_run_id"] == run.mlflow_run_id
    steps = {s["name"]: s for s in chain["steps"]}
    assert steps["prepare"]["reads"] == sorted([first.batch_id, second.batch_id])
    assert steps["train"]["artifacts"][0]["uri"] in {r["uri"] for r in refs}
    assert {a["step"] for a in chain["artifacts"]} == {"prepare", "train"}

    again = runner.run("tracking-train", {"rate": 0.2})  # cached: still tracked, still lineage
    assert {s.status for s in again.steps} == {"cached"}
    assert again.mlflow_run_id is not None and again.mlflow_run_id != run.mlflow_run_id
    cached = client.get_run(again.mlflow_run_id).data.metrics
    assert cached["step.train.cache_hit"] == 1
    assert cached["accuracy"] == pytest.approx(0.95)
    assert len(lineage_of_run(store, again.id)["batches"]) == 2


def test_a_failed_run_is_failed_in_mlflow(
    store: Store, storage: LakeStorage, tracker: MlflowTracker, mlflow_uri: str
) -> None:
    runner = Runner(store, storage, executor=InlineExecutor(), tracker=tracker)
    run = runner.run("tracking-broken", {"value": 7})
    assert run.status == "failed"
    assert run.step("explode").metrics[0].value == 7
    tracked = MlflowClient(mlflow_uri).get_run(run.mlflow_run_id)
    assert tracked.info.status == "FAILED"
    assert "exploded 7" in tracked.data.tags["eventops.error"]
    assert tracked.data.tags["eventops.step.explode.status"] == "failed"
    assert tracked.data.metrics["before_failure"] == 7


def test_a_tracking_outage_does_not_fail_the_run(
    store: Store, storage: LakeStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    Lake(store, storage).commit_batch("churn", pa.table({"x": [1]}), source="test")
    down = MlflowTracker("http://127.0.0.1:9")
    runner = Runner(store, storage, executor=InlineExecutor(), tracker=down)
    run = runner.run("tracking-train")
    assert run.status == "succeeded", run.error
    assert run.mlflow_run_id is None
    assert len(run.tracking_errors) == 1
    assert run.tracking_errors[0].startswith("start: ")
    assert runner.output(run.id, "train") == {"weights": pytest.approx(0.1)}


def test_steps_called_outside_a_run_log_nothing(store: Store, storage: LakeStorage) -> None:
    log_metric("ignored", 1.0)  # no step context: a no-op
    with pytest.raises(Exception, match="finite number"):
        log_metric("bad", float("nan"))
