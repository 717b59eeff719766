"""RayExecutor against one real local Ray (2 CPUs) shared by the module: the fixture pipeline
matches an inline run, retries, failures with their logs, timeouts that kill the task, a worker
that dies, resources reaching Ray (and impossible ones refused up front), plus the URL parsing.

Ray workers get their environment when Ray starts, so `PIPELINE_MARKERS` is one folder for the
module, emptied before each test. Ray's session files go to a temporary folder removed at the
end, and token authentication is off so nothing is written to ~/.ray.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import ray

import pipelines_fixtures as fx
from conftest import wait_for
from eventops.errors import ConfigError, ValidationError
from eventops.lake.storage import LakeStorage
from eventops.pipelines.dsl import Step, StepOptions, pipeline, step
from eventops.pipelines.executors import InlineExecutor, LocalExecutor, StepCall
from eventops.pipelines.ray_executor import RayExecutor, executor_from_url, task_options
from eventops.pipelines.runner import Runner
from eventops.store import Store

pytestmark = pytest.mark.slow


# ---------------------------------------------------------------- steps for these tests
# Defined at module level: Ray workers import this module by name (its folder is on the
# driver's sys.path, which a local RayExecutor ships to the workers).
@step(resources={"cpus": 2, "memory": "50MB"})
def assigned() -> dict[str, float]:
    print("running with", ray.get_runtime_context().get_assigned_resources())
    return dict(ray.get_runtime_context().get_assigned_resources())


@pipeline(name="ray-resources")
def resources_pipeline() -> None:
    assigned()


@step(retries=2, backoff=0.01, resources={"cpus": 8})
def too_big() -> int:
    return 1


@pipeline(name="ray-too-big")
def too_big_pipeline() -> None:
    too_big()


# The fixtures' failing step, retried once (it is imported by its own name in the workers).
broken_retried = Step(fx.broken.fn, StepOptions(retries=1, backoff=0.01))


@pipeline(name="ray-broken-retried")
def broken_retried_pipeline(value: int = 3) -> None:
    broken_retried(value)


# ---------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def markers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    folder = tmp_path_factory.mktemp("markers")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PIPELINE_MARKERS", str(folder))
        yield folder


@pytest.fixture(scope="module")
def executor(markers: Path) -> Iterator[RayExecutor]:
    # A short path of its own: Ray's Unix sockets live under it (107-byte limit).
    temp = tempfile.mkdtemp(prefix="eo-ray-")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAY_USAGE_STATS_ENABLED", "0")
        mp.setenv("RAY_AUTH_MODE", "disabled")  # else Ray writes ~/.ray/auth_token
        assert not ray.is_initialized()
        chosen = RayExecutor(max_workers=2, init_kwargs={"_temp_dir": temp})
        try:
            yield chosen
        finally:
            chosen.close()
            assert not ray.is_initialized()
            shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(autouse=True)
def fresh_markers(markers: Path) -> None:
    for path in markers.iterdir():
        path.unlink()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store(f"sqlite:///{tmp_path}/s.db")
    store.upgrade()
    yield store
    store.close()


@pytest.fixture
def runner(executor: RayExecutor, store: Store, tmp_path: Path) -> Runner:
    return Runner(
        store, LakeStorage(str(tmp_path / "lake")), executor=executor, heartbeat_interval=0.2
    )


def _outputs(runner: Runner, run_id: str, steps: list[str]) -> dict[str, Any]:
    return {name: runner.output(run_id, name) for name in steps}


# ---------------------------------------------------------------- through the runner
def test_fixture_pipeline_matches_the_inline_run(runner: Runner, tmp_path: Path) -> None:
    run = runner.run("fixture-etl", {"rows": 4})
    assert run.status == "succeeded", run.error
    steps = ["load", "stats", "featurize", "report"]
    assert {s.name: s.status for s in run.steps} == dict.fromkeys(steps, "succeeded")

    inline_store = Store(f"sqlite:///{tmp_path}/inline.db")
    inline_store.upgrade()
    try:
        inline = Runner(
            inline_store, LakeStorage(str(tmp_path / "inline")), executor=InlineExecutor()
        )
        expected = inline.run("fixture-etl", {"rows": 4})
        assert expected.status == "succeeded"
        want = _outputs(inline, expected.id, steps)
    finally:
        inline_store.close()
    got = _outputs(runner, run.id, steps)
    assert got == want
    assert isinstance(got["featurize"], pa.Table)
    assert got["report"] == {"rows": 4, "total": 6, "scaled_total": 12}
    # stdout and logging of the step, captured in the Ray worker
    assert "loading 4 rows" in (run.step("load").log or "")
    assert "computing stats" in (run.step("stats").log or "")


def test_retries_until_success(runner: Runner) -> None:
    run = runner.run("fixture-flaky")
    assert run.status == "succeeded", run.error
    assert run.step("flaky").attempts == 3
    assert "flaky failure 1" in (run.step("flaky").log or "")
    assert runner.output(run.id, "flaky") == 3


def test_a_failing_step_is_retried_then_fails_the_run_with_its_log(runner: Runner) -> None:
    run = runner.run("ray-broken-retried", {"value": 3})
    assert run.status == "failed"
    assert "step 'broken' failed after 2 attempt(s): ValueError: boom 3" in (run.error or "")
    broken = run.step("broken")
    assert broken.attempts == 2
    log = broken.log or ""
    assert "--- attempt 2 ---" in log
    assert "about to fail" in log
    assert "this will not end well" in log
    assert "Traceback" in log
    assert fx.count("broken") == 2


def test_timeout_cancels_the_task(runner: Runner) -> None:
    started = time.monotonic()
    run = runner.run("fixture-slow")
    assert time.monotonic() - started < 10
    assert run.status == "failed"
    assert "TimeoutError: step 'slow' timed out after 0.5s" in (run.error or "")
    assert run.step("slow").attempts == 1
    # the worker was killed, not left sleeping: both CPUs come back
    wait_for(lambda: ray.available_resources().get("CPU") == 2.0, timeout=15)


def test_a_dead_worker_fails_the_attempt(runner: Runner, markers: Path) -> None:
    (markers / "crash").touch()
    run = runner.run("fixture-crashy")
    assert run.status == "failed"
    assert "ProcessDied" in (run.error or ""), run.error
    assert runner.run("fixture-crashy").status == "succeeded"  # and Ray goes on


def test_resources_reach_ray(runner: Runner) -> None:
    run = runner.run("ray-resources")
    assert run.status == "succeeded", run.error
    assert runner.output(run.id, "assigned") == {"CPU": 2.0, "memory": 50_000_000.0}


def test_a_step_no_node_can_hold_is_refused_without_retries(runner: Runner) -> None:
    started = time.monotonic()
    run = runner.run("ray-too-big")
    assert time.monotonic() - started < 5
    assert run.status == "failed"
    assert "asks Ray for CPU=8" in (run.error or "")
    assert "largest per resource: CPU=2" in (run.error or "")
    assert run.step("too_big").attempts == 1


def test_a_step_defined_in_a_function_is_refused(executor: RayExecutor) -> None:
    def local() -> int:
        return 1

    with pytest.raises(ValidationError, match="defined inside a function"):
        executor.run(StepCall("local", __name__, local.__qualname__))


# ---------------------------------------------------------------- the executor alone
def test_run_captures_output_and_errors(executor: RayExecutor) -> None:
    ok = executor.run(StepCall("load", "pipelines_fixtures", "load", {"rows": 2}))
    assert ok.ok and ok.value.num_rows == 2
    assert "loading 2 rows" in ok.log
    failed = executor.run(StepCall("broken", "pipelines_fixtures", "broken", {"value": 9}))
    assert failed.error == "ValueError: boom 9"
    assert "about to fail" in failed.log and "Traceback" in failed.log


def test_a_second_executor_shares_the_ray_and_leaves_it_running(executor: RayExecutor) -> None:
    other = RayExecutor()
    assert other.max_workers == 2  # the cluster's CPUs
    assert other.run(StepCall("first", "pipelines_fixtures", "first")).value == {"n": 1}
    other.close()
    assert ray.is_initialized()
    assert executor.run(StepCall("first", "pipelines_fixtures", "first")).ok


# ---------------------------------------------------------------- no Ray needed
def test_task_options_map_resources() -> None:
    assert task_options("s", None) == {"num_cpus": 1.0}
    assert task_options("s", {"cpus": 2, "gpu": 1, "memory": "4GB", "trainer": 0.5}) == {
        "num_cpus": 2.0,
        "num_gpus": 1.0,
        "memory": 4_000_000_000,
        "resources": {"trainer": 0.5},
    }
    assert task_options("s", {"num_gpus": 0.25, "memory": 1024})["memory"] == 1024
    for bad in ({"cpus": "two"}, {"gpus": -1}, {"memory": "lots"}, {"cpus": True}):
        with pytest.raises(ValidationError, match=r"step\.s\.resources"):
            task_options("s", bad)


def test_executor_from_url(monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(executor_from_url(None), LocalExecutor)
    assert isinstance(executor_from_url("local"), LocalExecutor)
    assert isinstance(executor_from_url("inline"), InlineExecutor)
    local_ray = executor_from_url("ray")
    assert isinstance(local_ray, RayExecutor) and local_ray.address is None
    client = executor_from_url("ray://head:10001")
    assert isinstance(client, RayExecutor) and client.address == "ray://head:10001"
    auto = executor_from_url("ray+auto")
    assert isinstance(auto, RayExecutor) and auto.address == "auto"
    with pytest.raises(ConfigError, match=r"pipelines\.executor"):
        executor_from_url("dask://x")
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(ConfigError, match=r"pipelines\.executor.*pip install 'eventops\[ray\]'"):
        executor_from_url("ray")
