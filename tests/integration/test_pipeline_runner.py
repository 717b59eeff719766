"""The pipeline runner against a real SQLite store and a local lake: steps, artifacts, caching,
retries, failures, events, timeouts, a SIGKILLed worker resumed, and bus-requested runs."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest
from sqlalchemy import select

import pipelines_fixtures as fx
from conftest import wait_for
from eventops.events.bus import open_bus
from eventops.events.envelope import Event
from eventops.lake.storage import LakeStorage
from eventops.pipelines.executors import InlineExecutor, LocalExecutor
from eventops.pipelines.runner import Runner
from eventops.store import OutboxEntry, Store

TESTS = Path(__file__).resolve().parents[1]


@pytest.fixture
def markers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "markers"
    folder.mkdir()
    monkeypatch.setenv("PIPELINE_MARKERS", str(folder))
    return folder


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store(f"sqlite:///{tmp_path}/s.db")
    store.upgrade()
    yield store
    store.close()


@pytest.fixture
def storage(tmp_path: Path) -> LakeStorage:
    return LakeStorage(str(tmp_path / "lake"))


@pytest.fixture
def runner(store: Store, storage: LakeStorage) -> Runner:
    return Runner(store, storage, executor=InlineExecutor(), heartbeat_interval=0.2)


def outbox(store: Store) -> list[Event]:
    with store.session() as session:
        rows = session.scalars(select(OutboxEntry).order_by(OutboxEntry.id))
        return [Event.from_json(row.payload) for row in rows]


def statuses(run: object) -> dict[str, str]:
    return {s.name: s.status for s in run.steps}  # type: ignore[attr-defined]


@pytest.mark.parametrize("executor", ["inline", "local"])
def test_parallel_pipeline_passes_arrow_and_json(
    markers: Path, store: Store, storage: LakeStorage, executor: str
) -> None:
    chosen = InlineExecutor() if executor == "inline" else LocalExecutor(max_workers=2)
    runner = Runner(store, storage, executor=chosen, heartbeat_interval=0.2)
    run = runner.run("fixture-etl", {"rows": 4})
    assert run.status == "succeeded", run.error
    assert statuses(run) == dict.fromkeys(("load", "stats", "featurize", "report"), "succeeded")
    assert runner.output(run.id, "report") == {"rows": 4, "total": 6, "scaled_total": 12}
    features = runner.output(run.id, "featurize")
    assert isinstance(features, pa.Table)
    assert features.column("scaled").to_pylist() == [0, 2, 4, 6]
    load_step = run.step("load")
    assert load_step.outputs is not None
    ref = load_step.outputs["output"]
    assert ref["kind"] == "arrow"
    assert f"/artifacts/fixture-etl/{run.id}/load/output.parquet" in ref["uri"]
    assert run.step("stats").outputs["output"]["kind"] == "json"  # type: ignore[index]
    assert "loading 4 rows" in (load_step.log or "")
    assert "computing stats" in (run.step("stats").log or "")


def test_second_run_is_cached_and_a_param_reruns_only_its_steps(
    markers: Path, runner: Runner
) -> None:
    assert runner.run("fixture-etl", {"rows": 3}).status == "succeeded"
    again = runner.run("fixture-etl", {"rows": 3})
    assert set(statuses(again).values()) == {"cached"}
    assert again.step("load").attempts == 0
    assert runner.output(again.id, "report") == {"rows": 3, "total": 3, "scaled_total": 6}
    scaled = runner.run("fixture-etl", {"rows": 3, "scale": 10})
    assert statuses(scaled) == {
        "load": "cached",
        "stats": "cached",
        "featurize": "succeeded",
        "report": "succeeded",
    }
    assert runner.output(scaled.id, "report")["scaled_total"] == 30
    assert [fx.count(s) for s in ("load", "stats", "featurize", "report")] == [1, 1, 2, 2]


def test_retries_until_success(markers: Path, runner: Runner) -> None:
    run = runner.run("fixture-flaky")
    assert run.status == "succeeded"
    flaky = run.step("flaky")
    assert flaky.attempts == 3
    assert "flaky failure 1" in (flaky.log or "")
    assert "--- attempt 3 ---" in (flaky.log or "")
    assert runner.output(run.id, "flaky") == 3


def test_failing_step_fails_the_run_and_keeps_its_log(
    markers: Path, runner: Runner, store: Store
) -> None:
    run = runner.run("fixture-broken", {"value": 7})
    assert run.status == "failed"
    assert "step 'broken' failed after 1 attempt(s): ValueError: boom 7" in (run.error or "")
    broken = run.step("broken")
    assert broken.status == "failed"
    assert "about to fail" in (broken.log or "")
    assert "this will not end well" in (broken.log or "")
    assert "Traceback" in (broken.log or "")
    assert run.step("after_broken").status == "skipped"
    assert fx.count("after_broken") == 0
    types = [e.type for e in outbox(store)]
    assert types == [
        "pipeline.run.requested",
        "pipeline.run.started",
        "pipeline.step.failed",
        "pipeline.run.failed",
    ]
    failed = outbox(store)[-1]
    assert failed.data["run_id"] == run.id
    assert "boom 7" in failed.data["error"]


def test_events_in_order_with_causation(markers: Path, runner: Runner, store: Store) -> None:
    cause = Event(type="dataset.batch.ingested", subject="churn", data={})
    run_id = runner.request("fixture-etl", {"rows": 2}, trigger="batch-rule", cause=cause)
    assert runner.execute(run_id).status == "succeeded"
    events = outbox(store)
    assert [e.type for e in events] == [
        "pipeline.run.requested",
        "pipeline.run.started",
        *["pipeline.step.succeeded"] * 4,
        "pipeline.run.succeeded",
    ]
    requested = events[0]
    assert requested.causationid == cause.id
    assert requested.data["trigger"] == "batch-rule"
    assert requested.data["run_id"] == run_id
    assert {e.correlationid for e in events} == {cause.id}
    assert all(e.causationid == requested.id for e in events[1:])
    assert {e.data["step"] for e in events[2:6]} == {"load", "stats", "featurize", "report"}
    assert events[2].data["step"] == "load" and events[5].data["step"] == "report"


def test_timeout_kills_the_step(markers: Path, store: Store, storage: LakeStorage) -> None:
    runner = Runner(store, storage, executor=LocalExecutor(), heartbeat_interval=0.2)
    run = runner.run("fixture-slow")
    assert run.status == "failed"
    assert "timed out after 0.5s" in (run.error or "")
    assert run.step("slow").attempts == 1


def test_local_executor_refuses_a_step_defined_in_a_function(
    markers: Path, store: Store, storage: LakeStorage
) -> None:
    from eventops.pipelines.dsl import pipeline, step

    @step
    def local_step() -> int:
        return 1

    @pipeline(name="fixture-local-step")
    def local_pipeline() -> None:
        local_step()

    run = Runner(store, storage, executor=LocalExecutor()).run("fixture-local-step")
    assert run.status == "failed"
    assert "defined inside a function" in (run.error or "")


def test_resume_after_the_worker_is_killed(
    tmp_path: Path, markers: Path, store: Store, storage: LakeStorage
) -> None:
    (markers / "crash").touch()
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(TESTS)!r})
        import pipelines_fixtures
        from eventops.lake.storage import LakeStorage
        from eventops.pipelines.executors import InlineExecutor
        from eventops.pipelines.runner import Runner
        from eventops.store import Store
        runner = Runner(Store({f"sqlite:///{tmp_path}/s.db"!r}),
                        LakeStorage({str(tmp_path / "lake")!r}),
                        executor=InlineExecutor(), heartbeat_interval=0.2)
        run_id = runner.request("fixture-crashy")
        print(run_id, flush=True)
        runner.execute(run_id)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == -9, proc.stderr
    run_id = proc.stdout.strip()
    runner = Runner(store, storage, executor=InlineExecutor(), heartbeat_interval=0.2)
    assert runner.get(run_id).status == "running"
    assert runner.get(run_id).step("first").status == "succeeded"
    wait_for(lambda: runner.get(run_id).status == "succeeded" or runner.resume_stale(), 10)
    run = runner.get(run_id)
    assert run.status == "succeeded", run.error
    assert fx.count("first") == 1
    assert fx.count("second") == 2
    assert runner.output(run_id, "second") == {"n": 2}
    started = [e for e in outbox(store) if e.type == "pipeline.run.started"]
    assert [e.data["resumed"] for e in started] == [False, True]


def test_run_requested_by_an_event_runs_once(tmp_path: Path, markers: Path, runner: Runner) -> None:
    bus = open_bus(f"sqlite:///{tmp_path}/bus.db")
    request = Event(
        type="pipeline.run.requested",
        subject="fixture-flaky",
        data={"pipeline": "fixture-etl", "params": {"rows": 2}, "trigger": "rule-1"},
    )
    bus.publish([request, request])  # delivered twice: executed once
    subscription = runner.run_requested(bus, group="test-runner")
    subscription.run(max_events=2, timeout=20)
    run = runner.get(request.id)
    assert run.status == "succeeded"
    assert run.trigger["name"] == "rule-1"
    assert run.correlation_id == request.id
    assert len(runner.list_runs()) == 1
    assert fx.count("load") == 1
    bus.close()
