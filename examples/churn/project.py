"""The churn example as an EventOps project: a dataset, a feature transform, a training pipeline.

    eventops apply --project examples/churn/project.py          # record it (datasets declared)
    eventops worker --project examples/churn/project.py         # triggers, runner, transforms, relay
    eventops ingest churn examples/churn/data/customers.csv     # 800 new rows: train_churn runs
    eventops run train_churn --project examples/churn/project.py  # or run it by hand

`train_churn` reads every committed batch of `churn` from the lake, holds out a stratified
test split, fits a scikit-learn LogisticRegression and returns accuracy and ROC AUC on the
holdout. It runs when at least 500 new rows have arrived, at most once a minute.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from eventops.lake.transforms import Transform
from eventops.pipelines import log_metrics, read_dataset
from eventops.pipelines.dsl import pipeline, step
from eventops.pipelines.triggers import manual, on_new_data

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
        LABEL: np.asarray(raw[LABEL].to_numpy(zero_copy_only=False), dtype=int),
    }
    print(f"loaded {raw.num_rows} rows of {dataset}")
    return pa.table(features)


@step
def split(features: pa.Table, test_size: float, seed: int) -> dict[str, Any]:
    from sklearn.model_selection import train_test_split

    x = np.column_stack([features[c].to_numpy() for c in FEATURES])
    y = features[LABEL].to_numpy()
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=test_size, random_state=seed, stratify=y
    )
    return {"x_train": x_train, "x_test": x_test, "y_train": y_train, "y_test": y_test}


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
    log_metrics(metrics)  # onto the run's MLflow run, where a promotion gate can read them
    return metrics


@pipeline(
    triggers=[on_new_data("churn", min_new_rows=500, cooldown="1m"), manual()],
)
def train_churn(
    dataset: str = "churn", test_size: float = 0.25, seed: int = 7, c: float = 1.0
) -> None:
    """Train a churn classifier on everything ingested so far and score it on a holdout."""
    data = split(load_features(dataset), test_size, seed)
    evaluate(train(data, c), data)
