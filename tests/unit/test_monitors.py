"""Monitors without a store: the declaration's rules, the capture naming rule, the numpy
performance metrics against scikit-learn, prediction-id times, the column selection."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from sklearn import metrics as sk

from eventops.errors import ValidationError
from eventops.monitoring.monitors import Monitor, Performance, capture_dataset_name, finite
from eventops.monitoring.performance import accuracy, auc, f1, made_at, mae, rmse, score
from eventops.monitoring.window_drift import is_path, is_prediction
from eventops.serving.deployment import capture_dataset_name as serving_capture_name
from eventops.serving.ids import PredictionIds


# ---------------------------------------------------------------------- declaration
def test_a_monitor_of_a_deployment_watches_its_capture_dataset() -> None:
    monitor = Monitor(
        name="churn-drift",
        deployment="churn-api",
        reference="churn_features",
        performance=Performance(metric="accuracy", min=0.65),
    )
    assert monitor.source_dataset == "predictions_churn_api"
    assert monitor.scored_column == "prediction"
    assert monitor.window_rows == 1000 and monitor.window_seconds is None
    assert Monitor(name="m", dataset="scored", reference="ref").source_dataset == "scored"
    definition = monitor.definition()
    assert definition["performance"]["metric"] == "accuracy"
    assert Monitor(**definition) == monitor  # the recorded definition rebuilds the monitor


@pytest.mark.parametrize(
    "name", ["churn-api", "Churn-API", "a.b c", "x_1"], ids=["dash", "upper", "dots", "plain"]
)
def test_the_capture_name_rule_is_the_servers(name: str) -> None:
    """Monitoring re-implements serving's rule (it may not import serving): they must agree."""
    assert capture_dataset_name(name) == serving_capture_name(name)


BAD: dict[str, tuple[dict[str, Any], str, str]] = {
    "alpha": ({"alpha": 1.5}, "monitors.m.alpha", "less_than"),
    "unknown": ({"windows": 3}, "monitors.m.windows", "known-field"),
    "name": ({"name": "Bad Name"}, "monitors.Bad Name.name", "string_pattern_mismatch"),
    "no-data": ({"deployment": None}, "monitors.m.dataset", "data-source"),
    "nothing": ({"reference": None}, "monitors.m.reference", "check"),
    "no-window": ({"window_rows": None}, "monitors.m.window_rows", "window"),
    "rows": ({"window_rows": 0}, "monitors.m.window_rows", "greater_than_equal"),
    "perf-deployment": (
        {"deployment": None, "dataset": "d", "performance": {"metric": "f1", "min": 0.5}},
        "monitors.m.deployment",
        "required",
    ),
    "perf-direction": (
        {"performance": {"metric": "rmse", "min": 2.0}},
        "monitors.m.performance.min",
        "bound-direction",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_monitor_is_refused_naming_the_field_and_rule(case: str) -> None:
    changes, field, rule = BAD[case]
    data = {"name": "m", "deployment": "api", "reference": "ref", **changes}
    with pytest.raises(ValidationError) as caught:
        Monitor(**data)
    assert (caught.value.field, caught.value.rule) == (field, rule), str(caught.value)


def test_performance_bounds_follow_the_metrics_direction() -> None:
    with pytest.raises(ValidationError) as caught:
        Performance(metric="accuracy", max=0.9)
    assert (caught.value.field, caught.value.rule) == ("performance.max", "bound-direction")
    with pytest.raises(ValidationError) as bad_metric:
        Performance(metric="precision")
    assert bad_metric.value.field == "performance.metric"
    score_bound = Performance(metric="auc", min=0.7)
    assert score_bound.degraded(0.69) and not score_bound.degraded(0.7)
    assert not score_bound.degraded(None) and not score_bound.degraded(float("nan"))
    error_bound = Performance(metric="mae", max=3.0)
    assert error_bound.degraded(3.5) and not error_bound.degraded(2.0)
    assert not Performance(metric="f1").degraded(0.0)  # no bound: tracked only


# ---------------------------------------------------------------------- metrics
RNG = np.random.default_rng(7)
BINARY = RNG.integers(0, 2, 300)
GUESSES = np.where(RNG.random(300) < 0.8, BINARY, 1 - BINARY)
SCORES = np.clip(BINARY * 0.3 + RNG.random(300) * 0.7, 0, 1).round(2)  # rounded: ties


def test_accuracy_and_f1_match_scikit_learn() -> None:
    assert accuracy(list(BINARY), list(GUESSES)) == pytest.approx(
        sk.accuracy_score(BINARY, GUESSES)
    )
    assert f1(list(BINARY), list(GUESSES)) == pytest.approx(sk.f1_score(BINARY, GUESSES))
    classes = RNG.choice(["a", "b", "c"], 200)
    guessed = np.where(RNG.random(200) < 0.6, classes, RNG.choice(["a", "b", "d"], 200))
    assert f1(list(classes), list(guessed)) == pytest.approx(
        sk.f1_score(classes, guessed, average="macro")
    )
    # JSON labels and Parquet predictions of one class compare equal: True, 1 and 1.0
    assert accuracy([True, False, 1.0], [1, 0, 1]) == 1.0
    # probabilities are thresholded at 0.5
    assert accuracy([1, 0, 1, 0], [0.9, 0.2, 0.4, 0.6]) == 0.5


def test_auc_matches_scikit_learn_with_ties_and_needs_two_classes() -> None:
    assert auc(list(BINARY), list(SCORES)) == pytest.approx(sk.roc_auc_score(BINARY, SCORES))
    labels = ["yes" if b else "no" for b in BINARY]
    assert auc(labels, list(SCORES)) == pytest.approx(sk.roc_auc_score(BINARY, SCORES))
    assert auc([1, 1, 1], [0.2, 0.4, 0.9]) is None
    assert score("auc", [1, 1], [0.5, 0.6]) is None
    assert score("accuracy", [], []) is None


def test_regression_errors_match_scikit_learn() -> None:
    truth = RNG.normal(10, 3, 100)
    guess = truth + RNG.normal(0, 1, 100)
    assert rmse(list(truth), list(guess)) == pytest.approx(
        np.sqrt(sk.mean_squared_error(truth, guess))
    )
    assert mae(list(truth), list(guess)) == pytest.approx(sk.mean_absolute_error(truth, guess))


# ---------------------------------------------------------------------- small rules
def test_a_prediction_id_tells_when_it_was_made() -> None:
    at = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    ids = PredictionIds(clock=lambda: int(at.timestamp() * 1e9)).new(3)
    assert all(made_at(i) == at for i in ids)
    assert made_at("01234567-89ab-4def-8123-456789abcdef") is None  # a UUIDv4
    assert made_at("not-a-uuid") is None
    assert made_at(PredictionIds().new()[0]) > datetime.now(UTC) - timedelta(seconds=5)  # type: ignore[operator]


def test_capture_columns_are_not_features() -> None:
    assert is_prediction("prediction") and is_prediction("prediction_1")
    assert not is_prediction("prediction_id") and not is_prediction("predictions")
    assert is_path("data/ref.parquet") and is_path("ref.csv") and not is_path("churn_features")


def test_json_stays_finite() -> None:
    assert finite({"a": [1.0, float("nan")], "b": float("inf"), "c": "x"}) == {
        "a": [1.0, None],
        "b": None,
        "c": "x",
    }
