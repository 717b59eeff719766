"""Pipeline benchmarks: per-step overhead of trivial steps, EventOps against Prefect 3, in one run.

* A chain of 10 steps (each takes the previous output) and a fan-out of 50 independent steps,
  through `Runner` (SQLite store, local lake, both in a temp folder) with `InlineExecutor`,
  `LocalExecutor(2)` and a local `RayExecutor` (2 CPUs; skipped when Ray is not installed).
  Each figure is the median wall time of a whole run divided by its number of steps, after one
  warm-up run (worker processes and Ray started, imports done).
* The same chain and fan-out as a Prefect 3 flow of tasks, run locally (ephemeral API server,
  `PREFECT_HOME` in a temp folder) in the benchmark's own environment, `benchmarks/.venv-prefect`,
  created on first use (`prefect>=3,<4` with `fastapi<=0.154`: Prefect 3.8.8's server breaks on
  newer FastAPI). Prefect is skipped with a note when it cannot be installed.
* Event-to-run latency: `dataset.batch.ingested` events published to a SQLite bus, a
  `TriggerEngine` with `on("dataset.batch.ingested", dataset="x")` and the runner's
  `run_requested` subscription (`InlineExecutor`) running with default settings; from
  publish to the run's first step starting (its `started_at` in the store), p50 and p99.

`--write-readme` rewrites the pipelines section of benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from readme_section import machine_stamp, replace_section

HERE = Path(__file__).resolve().parent

if __name__ == "__main__":
    # Run as the module `bench_pipelines`, so steps import by that name in worker processes.
    sys.path.insert(0, str(HERE))
    import bench_pipelines

    bench_pipelines.main()
    raise SystemExit(0)

from eventops.pipelines.dsl import pipeline, step  # noqa: E402

CHAIN = 10
FANOUT = 50
PREFECT_VENV = HERE / ".venv-prefect"
PREFECT_REQUIREMENTS = ["prefect>=3,<4", "fastapi<=0.154"]


# ------------------------------------------------------------------ the pipelines
@step(cache=False)
def bump(x: int) -> int:
    return x + 1


@step(cache=False)
def fan(i: int) -> int:
    return i


def define_pipelines() -> None:
    """The pipelines, defined in the benchmark only (worker processes need the steps alone)."""

    @pipeline(name="bench-chain")
    def chain_pipeline() -> None:
        x = bump(0)
        for _ in range(CHAIN - 1):
            x = bump(x)

    @pipeline(name="bench-fanout")
    def fanout_pipeline() -> None:
        for i in range(FANOUT):
            fan(i)

    @pipeline(name="bench-trigger")
    def trigger_pipeline() -> None:
        fan(0)


# ------------------------------------------------------------------ EventOps
@dataclass
class Timing:
    chain: float  # ms per step
    fanout: float


@contextmanager
def runner_for(executor: Any) -> Iterator[Any]:
    from eventops.lake.storage import LakeStorage
    from eventops.pipelines.runner import Runner
    from eventops.store import Store

    with tempfile.TemporaryDirectory(prefix="bench-pipelines-") as tmp:
        store = Store(f"sqlite:///{tmp}/store.db")
        store.upgrade()
        try:
            yield Runner(store, LakeStorage(f"{tmp}/lake"), executor=executor)
        finally:
            executor.close()
            store.close()


def per_step(run: Callable[[], Any], steps: int, repeats: int) -> float:
    """Median ms per step of `run` (a whole pipeline run), after one warm-up run."""
    run()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times) / steps * 1000


def time_eventops(executor: Any, repeats: int) -> Timing:
    with runner_for(executor) as runner:

        def go(name: str) -> Callable[[], None]:
            def run() -> None:
                result = runner.run(name)
                if result.status != "succeeded":
                    raise RuntimeError(f"{name}: {result.error}")

            return run

        return Timing(
            per_step(go("bench-chain"), CHAIN, repeats),
            per_step(go("bench-fanout"), FANOUT, repeats),
        )


def make_ray() -> Any:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray  # noqa: F401
    except ImportError:
        return None
    from eventops.pipelines.ray_executor import RayExecutor

    return RayExecutor(None, max_workers=2, init_kwargs={"include_dashboard": False})


# ------------------------------------------------------------------ Prefect
PREFECT_FLOW = """
import json, statistics, sys, time
from prefect import flow, task

CHAIN, FANOUT, REPEATS = {chain}, {fanout}, {repeats}

@task
def bump(x):
    return x + 1

@task
def fan(i):
    return i

@flow
def chain_flow():
    x = bump(0)
    for _ in range(CHAIN - 1):
        x = bump(x)
    return x

@flow
def fanout_flow():
    futures = [fan.submit(i) for i in range(FANOUT)]
    return [f.result() for f in futures]

def per_step(fn, steps):
    fn()  # warm-up (the first flow run starts the ephemeral server)
    times = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times) / steps * 1000

import prefect
result = {{"version": prefect.__version__,
           "chain": per_step(chain_flow, CHAIN), "fanout": per_step(fanout_flow, FANOUT)}}
print("BENCH-RESULT " + json.dumps(result), flush=True)
"""


def prefect_python() -> tuple[Path | None, str]:
    """The Prefect venv's python, created on first use; (None, why) when it cannot be had."""
    python = PREFECT_VENV / "bin" / "python"
    check = [str(python), "-c", "import prefect"]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return python, ""
    print(f"creating {PREFECT_VENV} with {' '.join(PREFECT_REQUIREMENTS)} (first use)", flush=True)
    try:
        subprocess.run([sys.executable, "-m", "venv", str(PREFECT_VENV)], check=True)
        pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        done = subprocess.run([*pip, *PREFECT_REQUIREMENTS], capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        return None, f"cannot create the Prefect venv: {exc}"
    if done.returncode != 0:
        return None, f"pip install failed: {(done.stderr or done.stdout).strip()[-500:]}"
    if subprocess.run(check, capture_output=True).returncode != 0:
        return None, "prefect does not import after installing it"
    return python, ""


def time_prefect(repeats: int) -> tuple[Timing | None, str]:
    python, why = prefect_python()
    if python is None:
        return None, why
    with tempfile.TemporaryDirectory(prefix="bench-prefect-") as tmp:
        script = Path(tmp) / "flows.py"
        script.write_text(PREFECT_FLOW.format(chain=CHAIN, fanout=FANOUT, repeats=repeats))
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env.update(PREFECT_HOME=f"{tmp}/home", PYTHONPATH="")
        done = subprocess.run(
            [str(python), str(script)], capture_output=True, text=True, env=env, timeout=900
        )
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("BENCH-RESULT ")]
    if done.returncode != 0 or not lines:
        return None, f"the Prefect flow failed: {(done.stderr or done.stdout).strip()[-800:]}"
    data = json.loads(lines[-1].removeprefix("BENCH-RESULT "))
    return Timing(data["chain"], data["fanout"]), f"Prefect {data['version']}"


# ------------------------------------------------------------------ event to run
def event_to_run_latency(events: int) -> tuple[float, float]:
    """p50 and p99 ms from publishing `dataset.batch.ingested` to the run's first step start."""
    from sqlalchemy import func, select

    from eventops.events.bus import open_bus
    from eventops.events.envelope import Event
    from eventops.pipelines.executors import InlineExecutor
    from eventops.pipelines.triggers import TriggerEngine, on
    from eventops.store import OutboxRelay
    from eventops.store.pipelines import PipelineRunRow, PipelineStepRow

    with (
        tempfile.TemporaryDirectory(prefix="bench-trigger-") as tmp,
        runner_for(InlineExecutor()) as runner,
    ):
        store = runner.store
        bus = open_bus(f"sqlite:///{tmp}/bus.db")
        rules = {"bench-trigger": [on("dataset.batch.ingested", dataset="x")]}
        engine = TriggerEngine(store, bus, rules, relay=OutboxRelay(store, bus)).start()
        subscription = runner.run_requested(bus, group="bench-runner")
        consumer = threading.Thread(target=subscription.run, daemon=True)
        consumer.start()

        def first_step_start(event_id: str) -> datetime | None:
            with store.session() as session:
                started: datetime | None = session.scalar(
                    select(func.min(PipelineStepRow.started_at))
                    .join(PipelineRunRow, PipelineRunRow.id == PipelineStepRow.run_id)
                    .where(PipelineRunRow.correlation_id == event_id)
                    .where(PipelineRunRow.status == "succeeded")
                )
                return started

        latencies: list[float] = []
        try:
            time.sleep(1.0)  # both subscriptions polling
            for _ in range(events + 1):  # the first one warms up
                time.sleep(random.uniform(0, 0.2))  # not in phase with the polling
                event = Event(
                    type="dataset.batch.ingested", subject="x", data={"dataset": "x", "rows": 1}
                )
                published = datetime.now(UTC)
                bus.publish([event])
                deadline = time.monotonic() + 30
                started = first_step_start(event.id)
                while started is None:
                    if time.monotonic() > deadline:
                        raise RuntimeError("no run started within 30 s of an event")
                    time.sleep(0.005)
                    started = first_step_start(event.id)
                latencies.append((started - published).total_seconds() * 1000)
        finally:
            subscription.stop()
            engine.stop()
            consumer.join(30)
            bus.close()
    latencies = sorted(latencies[1:])
    p99 = latencies[min(len(latencies) - 1, round(0.99 * (len(latencies) - 1)))]
    return statistics.median(latencies), p99


# ------------------------------------------------------------------ report
def table(
    results: dict[str, Timing | None],
    notes: list[str],
    latency: tuple[float, float] | None,
    events: int,
) -> str:
    prefect = results.get("Prefect 3 (local)")
    local = results["EventOps LocalExecutor(2)"]
    lines = [
        f"Per-step overhead of trivial steps (ms per step: median run time / steps; chain of "
        f"{CHAIN}, fan-out of {FANOUT}), one warm-up run first:",
        "",
        "| engine | chain of 10 (ms/step) | fan-out of 50 (ms/step) |",
        "|---|---|---|",
    ]
    for name, timing in results.items():
        if timing is None:
            lines.append(f"| {name} | skipped | skipped |")
        else:
            lines.append(f"| {name} | {timing.chain:.2f} | {timing.fanout:.2f} |")
    lines += ["", "| goal | chain | fan-out | met |", "|---|---|---|---|"]
    assert local is not None
    if prefect is not None:
        rc, rf = local.chain / prefect.chain, local.fanout / prefect.fanout
        met = max(local.chain, local.fanout) <= 20 and rc < 1 and rf < 1
        lines.append(
            f"| local overhead <= 20 ms per step and faster than Prefect "
            f"(EventOps LocalExecutor / Prefect) | {local.chain:.2f} ms, {rc:.3f} | "
            f"{local.fanout:.2f} ms, {rf:.3f} | {'yes' if met else 'no'} |"
        )
    else:
        met = max(local.chain, local.fanout) <= 20
        lines.append(
            f"| local overhead <= 20 ms per step and faster than Prefect (Prefect skipped) | "
            f"{local.chain:.2f} ms | {local.fanout:.2f} ms | {'yes' if met else 'no'} (ms only) |"
        )
    if latency is not None:
        lines += [
            "",
            f"Event to run: `dataset.batch.ingested` published to a SQLite bus -> `TriggerEngine` "
            f"-> `pipeline.run.requested` -> runner subscription -> first step started "
            f"({events} events, default subscription settings: the SQLite bus polls every 1 ms; "
            f"`InlineExecutor`): "
            f"p50 {latency[0]:.0f} ms, p99 {latency[1]:.0f} ms.",
        ]
    if notes:
        lines += ["", *[f"- {n}" for n in notes]]
    return "\n".join(lines)


def write_readme(text: str) -> None:
    replace_section("pipelines", "Pipelines", f"{machine_stamp()}\n\n{text}")


def main() -> None:
    from eventops.pipelines.executors import InlineExecutor, LocalExecutor

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per case")
    parser.add_argument("--events", type=int, default=50, help="events for the latency")
    parser.add_argument("--no-prefect", action="store_true")
    parser.add_argument("--no-ray", action="store_true")
    parser.add_argument("--write-readme", action="store_true")
    args = parser.parse_args()
    define_pipelines()

    notes: list[str] = []
    results: dict[str, Timing | None] = {}
    results["EventOps InlineExecutor"] = time_eventops(InlineExecutor(), args.repeats)
    print("inline done", flush=True)
    results["EventOps LocalExecutor(2)"] = time_eventops(LocalExecutor(2), args.repeats)
    print("local done", flush=True)
    ray_executor = None if args.no_ray else make_ray()
    if ray_executor is None:
        results["EventOps RayExecutor (local, 2 CPUs)"] = None
        notes.append("Ray skipped: " + ("--no-ray" if args.no_ray else "ray is not installed"))
        print(notes[-1], flush=True)
    else:
        results["EventOps RayExecutor (local, 2 CPUs)"] = time_eventops(ray_executor, args.repeats)
        print("ray done", flush=True)
    if args.no_prefect:
        notes.append("Prefect skipped: --no-prefect")
    else:
        prefect, why = time_prefect(args.repeats)
        results["Prefect 3 (local)"] = prefect
        notes.append(
            f"{why}: flows of `@task`s, the chain called in sequence, the fan-out with "
            "`.submit` on the default thread-pool task runner; ephemeral local API server."
            if prefect is not None
            else f"Prefect skipped: {why}"
        )
        print(notes[-1], flush=True)
    latency = event_to_run_latency(args.events)
    text = table(results, notes, latency, args.events)
    print(text)
    if args.write_readme:
        write_readme(text)
