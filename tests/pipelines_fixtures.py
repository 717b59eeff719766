"""Pipelines for the runner tests, importable by the LocalExecutor's child processes.

Steps record each execution as a line in `$PIPELINE_MARKERS/<step>.count`, so tests count
executions across processes without sleeping.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from eventops.pipelines.dsl import pipeline, step

log = logging.getLogger("pipelines_fixtures")


def mark(name: str) -> int:
    """Record one execution of `name`; returns how many there have been."""
    path = Path(os.environ["PIPELINE_MARKERS"]) / f"{name}.count"
    with path.open("a") as handle:
        handle.write("x\n")
    return len(path.read_text().splitlines())


def count(name: str) -> int:
    path = Path(os.environ["PIPELINE_MARKERS"]) / f"{name}.count"
    return len(path.read_text().splitlines()) if path.exists() else 0


@step
def load(rows: int) -> pa.Table:
    mark("load")
    print(f"loading {rows} rows")
    return pa.table({"x": list(range(rows))})


@step
def stats(table: pa.Table) -> dict[str, int]:
    mark("stats")
    log.info("computing stats")
    return {"rows": table.num_rows, "total": int(pc.sum(table["x"]).as_py() or 0)}


@step
def featurize(table: pa.Table, scale: int) -> pa.Table:
    mark("featurize")
    return table.append_column("scaled", pc.multiply(table["x"], scale))


@step
def report(summary: dict[str, int], features: pa.Table) -> dict[str, int]:
    mark("report")
    return {**summary, "scaled_total": int(pc.sum(features["scaled"]).as_py() or 0)}


@pipeline(name="fixture-etl")
def etl(rows: int = 5, scale: int = 2) -> None:
    table = load(rows)
    report(stats(table), featurize(table, scale))  # stats and featurize are parallel branches


@step(retries=2, backoff=0.01)
def flaky() -> int:
    attempt = mark("flaky")
    if attempt < 3:
        raise RuntimeError(f"flaky failure {attempt}")
    return attempt


@pipeline(name="fixture-flaky")
def flaky_pipeline() -> None:
    flaky()


@step
def broken(value: int) -> int:
    mark("broken")
    print("about to fail")
    log.warning("this will not end well")
    raise ValueError(f"boom {value}")


@step
def after_broken(value: int) -> int:
    mark("after_broken")
    return value


@pipeline(name="fixture-broken")
def broken_pipeline(value: int = 1) -> None:
    after_broken(broken(value))


@step(timeout=0.5)
def slow() -> int:
    mark("slow")
    time.sleep(30)
    return 1


@pipeline(name="fixture-slow")
def slow_pipeline() -> None:
    slow()


@step
def first() -> dict[str, int]:
    mark("first")
    return {"n": 1}


@step
def second(data: dict[str, int]) -> dict[str, int]:
    mark("second")
    crash = Path(os.environ["PIPELINE_MARKERS"]) / "crash"
    if crash.exists():
        crash.unlink()
        os.kill(os.getpid(), signal.SIGKILL)  # the worker dies mid-run
    return {"n": data["n"] + 1}


@pipeline(name="fixture-crashy")
def crashy() -> None:
    second(first())
