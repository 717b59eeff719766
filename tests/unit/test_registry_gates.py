"""Promotion gates without MLflow: the numpy metrics against scikit-learn's, gate declarations
and their errors, and decisions on synthetic models scored on a holdout file."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from eventops.errors import ValidationError
from eventops.registry import Gate, evaluate
from eventops.registry.metrics import DIRECTIONS, METRICS, compute, predicted_labels

rng = np.random.default_rng(7)


# ---------------------------------------------------------------------- metrics
@pytest.fixture
def binary() -> tuple[np.ndarray, np.ndarray]:
    y = rng.integers(0, 2, 300)
    scores = np.clip(y * 0.3 + rng.random(300) * 0.7, 0, 1).round(2)  # rounding makes ties
    return y, scores


def test_binary_metrics_match_scikit_learn(binary: tuple[np.ndarray, np.ndarray]) -> None:
    y, scores = binary
    labels = (scores >= 0.5).astype(int)
    assert compute("accuracy", y, labels) == pytest.approx(skm.accuracy_score(y, labels))
    assert compute("precision", y, labels) == pytest.approx(skm.precision_score(y, labels))
    assert compute("recall", y, labels) == pytest.approx(skm.recall_score(y, labels))
    assert compute("f1", y, labels) == pytest.approx(skm.f1_score(y, labels))
    assert compute("auc", y, scores) == pytest.approx(skm.roc_auc_score(y, scores))
    assert compute("log_loss", y, scores) == pytest.approx(skm.log_loss(y, scores))
    # probabilities instead of labels: thresholded at 0.5, so the same label metrics
    assert compute("accuracy", y, scores) == pytest.approx(skm.accuracy_score(y, labels))
    two_columns = np.column_stack([1 - scores, scores])
    assert compute("auc", y, two_columns) == pytest.approx(skm.roc_auc_score(y, scores))
    assert compute("log_loss", y, two_columns) == pytest.approx(skm.log_loss(y, two_columns))
    assert compute("f1", y, two_columns) == pytest.approx(
        skm.f1_score(y, two_columns.argmax(axis=1))
    )


def test_multiclass_metrics_match_scikit_learn() -> None:
    y = rng.integers(0, 3, 400)
    raw = rng.random((400, 3)) + np.eye(3)[y] * 0.8
    probs = raw / raw.sum(axis=1, keepdims=True)
    labels = probs.argmax(axis=1)
    for name, expected in [
        ("accuracy", skm.accuracy_score(y, labels)),
        ("precision", skm.precision_score(y, labels, average="macro")),
        ("recall", skm.recall_score(y, labels, average="macro")),
        ("f1", skm.f1_score(y, labels, average="macro")),
    ]:
        assert compute(name, y, probs) == pytest.approx(expected), name
        assert compute(name, y, labels) == pytest.approx(expected), name
    assert compute("auc", y, probs) == pytest.approx(skm.roc_auc_score(y, probs, multi_class="ovr"))
    assert compute("log_loss", y, probs) == pytest.approx(skm.log_loss(y, probs))


def test_string_labels_and_class_columns() -> None:
    y = np.array(["no", "yes", "yes", "no", "yes", "no"])
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.7, 0.3], [0.1, 0.9], [0.4, 0.6]])
    assert list(predicted_labels(probs, y)) == ["no", "yes", "no", "no", "yes", "yes"]
    assert compute("accuracy", y, probs) == pytest.approx(4 / 6)
    assert compute("precision", y, probs) == pytest.approx(
        skm.precision_score(y, predicted_labels(probs, y), pos_label="yes")
    )
    assert compute("auc", y, probs) == pytest.approx(skm.roc_auc_score(y, probs[:, 1]))
    frame = pd.DataFrame({"label": ["no", "yes", "no", "no", "yes", "yes"]})
    assert compute("accuracy", y, frame) == pytest.approx(4 / 6)


def test_regression_metrics_match_scikit_learn() -> None:
    y = rng.normal(size=200)
    pred = y + rng.normal(scale=0.3, size=200)
    assert compute("rmse", y, pred) == pytest.approx(skm.root_mean_squared_error(y, pred))
    assert compute("mae", y, pred) == pytest.approx(skm.mean_absolute_error(y, pred))
    assert compute("r2", y, pred) == pytest.approx(skm.r2_score(y, pred))
    assert compute("r2", y, pd.DataFrame({"p": pred})) == pytest.approx(skm.r2_score(y, pred))
    assert compute("r2", np.ones(4), np.ones(4)) == 1.0


def test_undefined_and_malformed_inputs() -> None:
    assert math.isnan(compute("auc", np.ones(5), rng.random(5)))  # one class: no ranking
    with pytest.raises(ValidationError, match="unknown metric"):
        compute("top5", [1], [1])
    with pytest.raises(ValidationError) as caught:
        compute("accuracy", [1, 0], [1])
    assert caught.value.rule == "length"
    with pytest.raises(ValidationError) as caught:
        compute("rmse", [1.0, 2.0], np.ones((2, 2)))
    assert caught.value.rule == "numeric"
    assert compute("precision", [0, 0], [0, 0]) == 0.0  # nothing predicted positive


def test_directions() -> None:
    assert set(DIRECTIONS) == set(METRICS)
    assert {m for m, d in DIRECTIONS.items() if d == "minimize"} == {"log_loss", "rmse", "mae"}


# ---------------------------------------------------------------------- declarations
def test_a_gate_fills_in_its_direction() -> None:
    gate = Gate(model="churn", metric="rmse", guardrails={"r2": "> 0.5", "mae": "<=1e-1"})
    assert gate.direction == "minimize"
    assert [str(r) for r in gate.rules()] == ["> 0.5", "<= 0.1"]
    assert gate.to_json()["guardrails"] == {"r2": "> 0.5", "mae": "<=1e-1"}
    assert Gate(model="churn", metric="auc", min_gain=0).min_gain == 0.0
    assert Gate(model="churn", metric="auc").model_dump(mode="json") == {
        "model": "churn", "metric": "auc", "direction": "maximize", "min_gain": 0.0,
        "guardrails": {}, "holdout": None, "label": None, "manual_approval": False,
    }  # fmt: skip
    with pytest.raises(Exception, match="frozen"):
        gate.min_gain = 1.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "field", "rule"),
    [
        ({"metric": "top5"}, "gates.churn.metric", "known-metric"),
        ({"direction": "up"}, "gates.churn.direction", "direction"),
        ({"min_gain": float("nan")}, "gates.churn.min_gain", "number"),
        ({"min_gain": "0.1"}, "gates.churn.min_gain", "number"),
        (
            {"guardrails": {"accuracy": "at least 0.6"}},
            "gates.churn.guardrails.accuracy",
            "expression",
        ),
        ({"guardrails": {"accuracy": ">= high"}}, "gates.churn.guardrails.accuracy", "expression"),
        ({"guardrails": {"accuracy": 0.6}}, "gates.churn.guardrails.accuracy", "expression"),
        ({"guardrails": {"speed": ">= 1"}}, "gates.churn.guardrails.speed", "known-metric"),
        ({"guardrails": [">= 1"]}, "gates.churn.guardrails", "mapping"),
        ({"label": ""}, "gates.churn.label", "text"),
        ({"manual_approval": "yes"}, "gates.churn.manual_approval", "boolean"),
        ({"model": "a/b"}, "gates.model", "model-name"),
        ({"threshold": 0.5}, "gates.churn.threshold", "known-key"),
    ],
)
def test_bad_declarations_name_the_field(kwargs: dict[str, Any], field: str, rule: str) -> None:
    args: dict[str, Any] = {"model": "churn", "metric": "auc", **kwargs}
    with pytest.raises(ValidationError) as caught:
        Gate(**args)
    assert (caught.value.field, caught.value.rule) == (field, rule)


# ---------------------------------------------------------------------- decisions
class Threshold:
    """Predicts x > t; on the holdout below (y = x > 0.5) its accuracy is 1 - |t - 0.5|."""

    def __init__(self, t: float | None) -> None:
        self.t = t

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        if self.t is None:
            raise KeyError("feature 'z' is missing")
        return (frame["x"].to_numpy() > self.t).astype(int)


@dataclass
class FakeVersion:
    version: str
    label: str | None
    holdout_uri: str | None


class FakeRegistry:
    """What `evaluate` asks of a registry, with models in memory."""

    tracking_uri = "unused"
    lake_url = None
    store = None

    def __init__(self, holdout_uri: str, models: dict[str, Threshold], champion: str | None):
        self.holdout_uri = holdout_uri
        self.models = models
        self.champion = champion

    def version(self, name: str, version: str) -> FakeVersion:
        return FakeVersion(str(version), "y", self.holdout_uri)

    def alias(self, name: str, alias: str) -> str | None:
        return self.champion

    def load_pyfunc(self, name: str, version: str, dst: str) -> Threshold:
        return self.models[str(version)]


@pytest.fixture
def holdout_uri(tmp_path: Path) -> str:
    x = (np.arange(100) + 0.5) / 100
    path = tmp_path / "holdout.parquet"
    pd.DataFrame({"x": x, "y": (x > 0.5).astype(int)}).to_parquet(path)
    return str(path)


def decide(uri: str, gate: Gate, candidate: float | None, champion: float | None) -> Any:
    models = {"2": Threshold(candidate)}
    if champion is not None:
        models["1"] = Threshold(champion)
    registry = FakeRegistry(uri, models, "1" if champion is not None else None)
    return evaluate(gate, registry, "churn", "2")  # type: ignore[arg-type]


def test_decisions(holdout_uri: str) -> None:
    gate = Gate(model="churn", metric="accuracy")
    first = decide(holdout_uri, gate, 0.7, None)
    assert first.outcome == "promoted" and first.passed
    assert first.evidence["champion"] is None and first.evidence["gain"] is None
    assert first.evidence["reason"].startswith("no champion yet")
    assert first.evidence["holdout"] == {"uri": holdout_uri, "rows": 100, "label": "y"}

    better = decide(holdout_uri, gate, 0.6, 0.7)
    assert better.outcome == "promoted"
    assert (better.evidence["candidate"], better.evidence["champion"]) == (0.9, 0.8)
    assert better.evidence["gain"] == pytest.approx(0.1)
    assert better.evidence["champion_version"] == "1"

    assert decide(holdout_uri, gate, 0.7, 0.6).outcome == "rejected"
    assert decide(holdout_uri, gate, 0.6, 0.6).outcome == "promoted"  # gain 0 >= min_gain 0
    strict = Gate(model="churn", metric="accuracy", min_gain=0.05)
    assert decide(holdout_uri, strict, 0.58, 0.6).outcome == "rejected"  # gain 0.02

    manual = Gate(model="churn", metric="accuracy", manual_approval=True)
    assert decide(holdout_uri, manual, 0.6, 0.7).outcome == "approval_requested"
    assert decide(holdout_uri, manual, 0.7, 0.6).outcome == "rejected"


def test_minimising_and_guardrails(holdout_uri: str) -> None:
    rmse = Gate(model="churn", metric="mae")  # labels as numbers: mae = error rate
    decision = decide(holdout_uri, rmse, 0.6, 0.7)
    assert decision.outcome == "promoted"
    assert decision.evidence["gain"] == pytest.approx(0.1)  # champion 0.2 - candidate 0.1

    guarded = Gate(model="churn", metric="accuracy", guardrails={"precision": ">= 0.99"})
    unsafe = decide(holdout_uri, guarded, 0.45, 0.6)  # more accurate, precision 50/55
    assert unsafe.outcome == "rejected"
    assert unsafe.evidence["gain"] == pytest.approx(0.05)
    assert unsafe.evidence["guardrails"]["precision"]["pass"] is False
    # guardrails hold for a first version too
    assert decide(holdout_uri, guarded, 0.45, None).outcome == "rejected"


def test_a_champion_that_cannot_score_is_not_compared(holdout_uri: str) -> None:
    gate = Gate(model="churn", metric="accuracy")
    registry = FakeRegistry(holdout_uri, {"1": Threshold(None), "2": Threshold(0.7)}, "1")
    decision = evaluate(gate, registry, "churn", "2")  # type: ignore[arg-type]
    assert decision.outcome == "promoted"
    assert "cannot score this holdout" in decision.evidence["reason"]
    assert "feature 'z' is missing" in decision.evidence["champion_error"]


def test_versions_that_cannot_be_judged(holdout_uri: str) -> None:
    with pytest.raises(ValidationError) as caught:
        decide(holdout_uri, Gate(model="churn", metric="accuracy", label="z"), 0.6, None)
    assert (caught.value.field, caught.value.rule) == ("gates.churn.label", "in-holdout")
    with pytest.raises(ValidationError) as caught:
        decide(holdout_uri, Gate(model="churn", metric="accuracy"), None, None)
    assert caught.value.rule == "predictable"
    registry = FakeRegistry(holdout_uri, {}, None)
    registry.holdout_uri = None  # type: ignore[assignment]
    with pytest.raises(ValidationError) as caught:
        evaluate(Gate(model="churn", metric="auc"), registry, "churn", "2")  # type: ignore[arg-type]
    assert (caught.value.field, caught.value.rule) == ("gates.churn.holdout", "required")


def test_an_undefined_metric_never_passes(tmp_path: Path) -> None:
    path = tmp_path / "one-class.parquet"
    pd.DataFrame({"x": [0.6, 0.7, 0.8], "y": [1, 1, 1]}).to_parquet(path)
    decision = decide(str(path), Gate(model="churn", metric="auc"), 0.5, None)
    assert decision.outcome == "rejected"
    assert decision.evidence["candidate"] is None
    assert "auc is undefined" in decision.evidence["reason"]


def test_ranking_metrics_use_the_wrapped_models_probabilities() -> None:
    """A pyfunc over a classifier answers labels; AUC must come from its probabilities."""
    from sklearn.linear_model import LogisticRegression

    from eventops.registry.gates import _score

    x = rng.normal(size=(400, 3))
    y = (x[:, 0] + rng.normal(scale=1.5, size=400) > 0).astype(int)
    classifier = LogisticRegression().fit(x, y)

    class Wrapped:  # what mlflow.pyfunc gives for a scikit-learn model
        def predict(self, features: Any) -> Any:
            return classifier.predict(features)

        def get_raw_model(self) -> Any:
            return classifier

    scored = _score(Wrapped(), x, y, ["auc", "accuracy"], "candidate")
    proba = classifier.predict_proba(x)[:, 1]
    assert scored["auc"] == pytest.approx(skm.roc_auc_score(y, proba))
    assert scored["auc"] != pytest.approx(skm.roc_auc_score(y, classifier.predict(x)))
    assert scored["accuracy"] == pytest.approx(skm.accuracy_score(y, classifier.predict(x)))
