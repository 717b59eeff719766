"""Fine-tuning for real: a run killed mid-way resumes from its last checkpoint; the textclf
example runs as a pipeline, is registered, judged by its gate and served with text inputs;
the packaged all-MiniLM-L6-v2 learns the example tickets; a Ray Train job with one CPU worker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import wait_for

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from eventops.finetune import (
    FineTuneConfig,
    checkpoint,
    examples_from_table,
    fine_tune,
    small_random_model,
    split_holdout,
)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "textclf" / "project.py"
TICKETS = ROOT / "examples" / "textclf" / "data" / "tickets.csv"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(small_random_model(tmp_path_factory.mktemp("tiny") / "bert", hidden=64))


def tickets(rows: int | None = None) -> Any:
    import pandas as pd

    frame = pd.read_csv(TICKETS)
    return frame.head(rows) if rows else frame


# ---------------------------------------------------------------------- kill and resume
RUN = """
import json, sys
import pandas as pd
from eventops.finetune import FineTuneConfig, examples_from_table, fine_tune, split_holdout

base, where, steps, report = sys.argv[1:5]
train, holdout = split_holdout(examples_from_table(pd.read_csv({csv!r}).head(200)), 0.2)
config = FineTuneConfig(base_model=base, max_steps=int(steps), batch_size=8, max_length=24,
                        learning_rate=1e-2, warmup_ratio=0.0, eval_every=1000, patience=0,
                        checkpoint_dir=where, checkpoint_every=1)
tuned = fine_tune(train, holdout, config)
with open(report, "w") as out:
    json.dump({{"resumed_from": tuned.resumed_from, "steps": tuned.steps,
               "samples": tuned.samples}}, out)
"""


@pytest.mark.slow
def test_a_killed_run_resumes_from_its_last_checkpoint(tiny: str, tmp_path: Path) -> None:
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(RUN.format(csv=str(TICKETS))))
    where, report = tmp_path / "ckpt", tmp_path / "report.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    first = subprocess.Popen(
        [sys.executable, str(script), tiny, str(where), "100000", str(report)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        wait_for(
            lambda: len(checkpoint.checkpoints(where)) >= 2 or first.poll() is not None,
            timeout=120,
        )
        assert first.poll() is None, first.stderr.read().decode() if first.stderr else ""
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == -signal.SIGKILL and not report.exists()
    last = checkpoint.checkpoints(where)[-1]
    killed_at = json.loads((last / "state.json").read_text())["step"]
    assert killed_at >= 2

    # the same run again, now with an end in sight: it must continue from `killed_at`
    again = subprocess.run(
        [sys.executable, str(script), tiny, str(where), str(killed_at + 3), str(report)],
        env=env, capture_output=True, timeout=300,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr.decode()[-3000:]
    result = json.loads(report.read_text())
    assert result["resumed_from"] == killed_at
    assert result["steps"] == killed_at + 3 and result["samples"] == 3 * 8


# ---------------------------------------------------------------------- the example, end to end
@pytest.fixture
def settings(home: Path) -> Iterator[Any]:
    from eventops.config import load_settings

    yield load_settings()
    import mlflow.tracking._model_registry.utils as registry_utils
    import mlflow.tracking._tracking_service.utils as tracking_utils

    tracking_utils._tracking_uri = None  # build_server points MLflow (process-wide) at ours
    registry_utils._registry_uri = None


@pytest.mark.slow
def test_the_example_fine_tunes_registers_passes_its_gate_and_serves_text(
    settings: Any, tiny: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from eventops.ingest.files import ingest_file
    from eventops.lake import Lake
    from eventops.pipelines.executors import InlineExecutor
    from eventops.pipelines.runner import Runner
    from eventops.pipelines.tracking import tracker_from_settings
    from eventops.project import load_project
    from eventops.registry import Registry, evaluate
    from eventops.serving.server import build_server
    from serving_models import running

    monkeypatch.setenv("TEXTCLF_CHECKPOINTS", str(tmp_path / "ckpt"))
    project = load_project(EXAMPLE)
    lake = Lake.from_settings(settings)
    try:
        lake.declare(project.datasets["tickets"])
        assert ingest_file(lake, "tickets", str(TICKETS)).rows_accepted == 600
        runner = Runner(
            lake.store, lake.storage, executor=InlineExecutor(),
            tracker=tracker_from_settings(settings),
        )  # fmt: skip
        params = {"base_model": tiny, "mode": "full", "max_steps": 60, "learning_rate": 3e-3}
        run = runner.run("tune_textclf", params)
        assert run.status == "succeeded", run.error
        registered = runner.output(run.id, "register")
    finally:
        lake.store.close()
    assert registered == {"model": "textclf", "version": "1"}

    registry = Registry.from_settings(settings)
    version = registry.version("textclf", "1")
    assert version.tags["eventops.pipeline"] == "tune_textclf"
    metrics = json.loads(version.tags["eventops.metrics"])
    assert metrics["f1"] > 0.7 and metrics["eval_loss"] > 0  # logged per step, kept on the run
    decision = evaluate(project.gates["textclf"], registry, "textclf", "1")
    assert decision.outcome == "promoted", decision.evidence
    assert decision.evidence["candidate_metrics"]["f1"] > 0.7
    registry.promote("textclf", "1", actor="test", evidence=decision.evidence)

    parts = build_server(project.deployments["textclf-api"], settings)
    texts = ["my parcel has not arrived since monday", "I was charged twice for my plan"]
    with running(parts.app) as url:
        ok = httpx.post(
            f"{url}/invocations", json={"dataframe_records": [{"text": t} for t in texts]}
        )
        assert ok.status_code == 200, ok.text
        assert ok.json()["predictions"] == ["shipping", "billing"]
        assert ok.headers["x-model-version"] == "1"
        v2 = httpx.post(
            f"{url}/v2/models/textclf/infer",
            json={
                "inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": texts[:1]}]
            },
        )
        assert v2.status_code == 200, v2.text
        bad = httpx.post(f"{url}/invocations", json={"dataframe_records": [{"text": 3}]})
        assert bad.status_code in (400, 422) and "text" in bad.text


# ---------------------------------------------------------------------- the packaged model
@pytest.mark.slow
def test_the_packaged_minilm_learns_the_tickets_with_lora() -> None:
    train, holdout = split_holdout(examples_from_table(tickets(240)), 0.25)
    config = FineTuneConfig(
        mode="lora", max_steps=30, batch_size=16, max_length=32, learning_rate=2e-3,
        eval_every=15, patience=0, warmup_ratio=0.0,
    )  # fmt: skip
    tuned = fine_tune(train, holdout, config)
    assert tuned.history[-1]["loss"] < tuned.history[0]["loss"]
    assert tuned.metrics["accuracy"] > 0.8
    assert tuned.trainable_parameters < 1_000_000  # of ~22.7M: adapters and head only


@pytest.mark.slow
def test_a_ray_train_job_with_one_cpu_worker(tiny: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # else Ray writes ~/.ray/auth_token
    assert not ray.is_initialized()
    train, holdout = split_holdout(examples_from_table(tickets(120)), 0.25)
    config = FineTuneConfig(
        base_model=tiny, max_steps=6, batch_size=8, max_length=24, eval_every=3,
        patience=0, ray_workers=1, device="cpu",
    )  # fmt: skip
    tuned = fine_tune(train, holdout, config)
    assert not ray.is_initialized()  # the job's own Ray is shut down again
    assert (tuned.steps, tuned.workers, tuned.device) == (6, 1, "cpu")
    assert [h["step"] for h in tuned.history] == [3.0, 6.0]
    predicted = tuned.classifier().predict(None, holdout.to_frame()[["text"]])
    assert len(predicted) == len(holdout) and set(predicted) <= set(tuned.labels)
