"""A one-step project for the fault tests: its step records each attempt (the pid that ran
it) and waits for a marker file, so a test can kill the worker while the step is running."""

from __future__ import annotations

import os
import time
from pathlib import Path

from eventops.pipelines.dsl import pipeline, step

project_name = "faults"


@step(cache=False)
def wait_for_marker(label: str) -> str:
    marker = Path(os.environ["FAULT_MARKER"])
    with marker.with_suffix(f".{label}.attempts").open("a") as attempts:
        attempts.write(f"{os.getpid()}\n")
    deadline = time.monotonic() + 120
    while not marker.exists():  # bounded: the test creates the marker
        if time.monotonic() > deadline:
            raise TimeoutError(f"no marker at {marker}")
        time.sleep(0.05)
    return label


@pipeline(name="fault_job")
def fault_job(label: str = "run") -> None:
    wait_for_marker(label)
