"""The churn example as an EventOps project: a dataset, a feature transform, a training pipeline
that registers its model, the gate that promotes it and the deployment that serves it.

    eventops apply --project examples/churn/project.py          # record it (datasets declared)
    eventops worker --project examples/churn/project.py         # triggers, runner, gates, relay...
    eventops ingest churn examples/churn/data/customers.csv     # 800 new rows: train_churn runs
    eventops run train_churn --project examples/churn/project.py  # or run it by hand
    eventops serve --deployment churn-api --project examples/churn/project.py
    eventops monitors checks churn-drift                         # drift and accuracy, per window

`train_churn` reads every committed batch of `churn` from the lake, holds out the customers whose
id falls in a fixed hash bucket (the same customers in every run), fits a scikit-learn
LogisticRegression, logs accuracy and ROC AUC on the holdout and registers the model as a new
version of `churn`. It runs when at least 500 new rows have arrived, at most once a minute. The
`churn` gate compares each new version with the champion on the holdout; `churn-api` serves
whichever version is the champion and swaps when that changes. The `churn-drift` monitor
compares each window of served inputs with the training data and scores the returned labels;
its drift events fire the `churn-model-health` alert and retrain the model.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from eventops.lake.transforms import Transform
from eventops.monitoring.alerts import AlertRule
from eventops.monitoring.channels import Log
from eventops.monitoring.monitors import Monitor, Performance
from eventops.pipelines import log_metrics, read_dataset
from eventops.pipelines.dsl import pipeline, step
from eventops.pipelines.triggers import manual, on_drift, on_new_data
from eventops.registry import Gate, register_model
from eventops.serving import Deployment

project_name = "churn"

datasets = ["dataset.toml"]

transforms = [
    Transform(
        name="churn_features",
        source="churn",
        target="churn_features",
        sql=(
            "SELECT customer_id, tenure_months, monthly_charges, plan = 'premium' AS premium, "
            "churned FROM batch WHERE customer_id IS NOT NULL"
        ),
        description="Model inputs per customer snapshot",
    )
]

FEATURES = ["tenure_months", "monthly_charges", "basic", "premium", "support_calls"]
LABEL = "churned"


def _column(table: pa.Table, name: str) -> np.ndarray[Any, Any]:
    if name not in table.column_names:
        return np.zeros(table.num_rows)
    return np.asarray(pc.fill_null(table[name], 0).to_numpy(zero_copy_only=False), dtype=float)


@step(cache=False)  # its input is the lake as it is now, not its parameters: never cached
def load_features(dataset: str) -> pa.Table:
    """The committed batches of `dataset` as model inputs (one-hot plan, nulls as 0)."""
    raw = read_dataset(dataset)  # records the batches read: lineage from data to model
    if raw.num_rows == 0:
        raise ValueError(f"dataset {dataset!r} has no committed rows yet")
    raw = raw.filter(pc.and_(pc.is_valid(raw["customer_id"]), pc.is_valid(raw[LABEL])))
    plan = raw["plan"]
    features = {
        "tenure_months": _column(raw, "tenure_months"),
        "monthly_charges": _column(raw, "monthly_charges"),
        "basic": np.asarray(pc.fill_null(pc.equal(plan, "basic"), False), dtype=float),
        "premium": np.asarray(pc.fill_null(pc.equal(plan, "premium"), False), dtype=float),
        "support_calls": _column(raw, "support_calls"),
        "customer_id": np.asarray(raw["customer_id"].to_numpy(zero_copy_only=False), dtype=int),
        LABEL: np.asarray(raw[LABEL].to_numpy(zero_copy_only=False), dtype=int),
    }
    print(f"loaded {raw.num_rows} rows of {dataset}")
    return pa.table(features)


def _in_holdout(ids: np.ndarray[Any, Any], share: float) -> np.ndarray[Any, Any]:
    """A customer's side of the split depends on its id alone, so every run, whatever data it
    sees, holds out the same customers: a promotion gate can score the new model and the
    champion on rows neither was trained on."""
    buckets = (ids.astype(np.uint64) * np.uint64(2654435761)) % np.uint64(1000)
    return buckets < np.uint64(int(share * 1000))


@step
def split(features: pa.Table, test_size: float) -> dict[str, Any]:
    import pandas as pd

    frame = features.to_pandas()
    holdout = _in_holdout(frame["customer_id"].to_numpy(), test_size)
    train_rows, test_rows = frame[~holdout], frame[holdout]
    return {
        "x_train": train_rows[FEATURES].reset_index(drop=True),
        "y_train": train_rows[LABEL].to_numpy(),
        "x_test": test_rows[FEATURES].reset_index(drop=True),
        "y_test": test_rows[LABEL].to_numpy(),
        "holdout": pd.concat([test_rows[FEATURES], test_rows[[LABEL]]], axis=1),
    }


@step
def train(data: dict[str, Any], c: float) -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=1000))
    model.fit(data["x_train"], data["y_train"])
    return model


@step
def evaluate(model: Any, data: dict[str, Any]) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, roc_auc_score

    scores = model.predict_proba(data["x_test"])[:, 1]
    metrics = {
        "accuracy": float(accuracy_score(data["y_test"], scores >= 0.5)),
        "auc": float(roc_auc_score(data["y_test"], scores)),
        "rows_train": float(len(data["y_train"])),
        "rows_test": float(len(data["y_test"])),
    }
    print(f"holdout metrics: {metrics}")
    log_metrics(metrics)  # onto the run's MLflow run
    return metrics


@step
def register(model: Any, data: dict[str, Any], metrics: dict[str, float]) -> dict[str, Any]:
    """Register the model with its signature, input example and holdout; the gate below decides
    whether it becomes the champion that `churn-api` serves."""
    import sklearn

    version = register_model(
        model,
        "churn",
        input_example=data["x_test"].head(5),
        holdout=data["holdout"],
        label=LABEL,
        metrics=metrics,
        # pinned here rather than inferred by MLflow (which imports the model in a child
        # process and takes seconds)
        pip_requirements=[f"scikit-learn=={sklearn.__version__}"],
    )
    print(f"registered churn version {version.version}")
    return {"model": "churn", "version": version.version}


@pipeline(
    triggers=[
        on_new_data("churn", min_new_rows=500, cooldown="1m"),
        on_drift("churn-drift", cooldown="10m"),  # the served inputs moved away from training
        manual(),
    ],
)
def train_churn(dataset: str = "churn", test_size: float = 0.25, c: float = 1.0) -> None:
    """Train a churn classifier on everything ingested so far, score it on the customers held
    out and register it; the `churn` gate promotes it if it beats the champion."""
    data = split(load_features(dataset), test_size)
    model = train(data, c)
    register(model, data, evaluate(model, data))


# A candidate becomes the champion only if its AUC on the holdout is not below the champion's
# (scored on the same rows) and its accuracy stays above 0.6.
gates = [
    Gate(
        model="churn",
        metric="auc",
        direction="maximize",
        min_gain=0.0,
        guardrails={"accuracy": ">= 0.6"},
    )
]

# `eventops serve --deployment churn-api --project examples/churn/project.py` serves the
# champion and swaps to each new one; every prediction is captured for monitoring.
deployments = [
    Deployment(
        name="churn-api",
        model="churn",
        alias="champion",
        capture_sample=1.0,
        port=int(os.environ.get("CHURN_API_PORT", "8080")),  # where `eventops up` serves it
    )
]

# Every 200 captured predictions of `churn-api`: have the inputs drifted from what the model was
# trained on (the raw `churn` dataset)? Every 100 labels sent back to `POST /feedback`: is the
# served model still right more often than not?
monitors = [
    Monitor(
        name="churn-drift",
        deployment="churn-api",
        reference="churn",
        features=["tenure_months", "monthly_charges"],
        window_rows=200,
        performance=Performance(metric="accuracy", min=0.5, window_labels=100),
    )
]

# Drift or a performance drop fires one alert per monitor (repeats inside 10 minutes are
# deduplicated); the next clean check resolves it. Add Slack(webhook_url_env=...) or
# Webhook(url_env=..., secret_env=...) to `channels` to be notified outside the logs.
alerts = [
    AlertRule(
        name="churn-model-health",
        on=["monitor.drift.detected", "monitor.performance.degraded"],
        severity="warning",
        channels=[Log()],
        cooldown="10m",
        group_by="monitor",
        resolve_on=["monitor.check.completed"],
    )
]
