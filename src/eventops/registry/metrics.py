"""Holdout metrics for promotion gates, in numpy (scikit-learn is not a dependency of EventOps).

A gate scores whatever an MLflow pyfunc model returns, so predictions come in several shapes.
How each metric reads them:

* **labels** (accuracy, precision, recall, f1): a 2-D array of class probabilities gives the
  argmax column (mapped to the sorted classes of the true labels when there is one column per
  class); a 1-D array whose values are all whole numbers, or are not numbers, is taken as labels;
  any other 1-D array is the probability of the positive class, thresholded at 0.5.
* **scores** (auc, log_loss): a 2-D array with two columns gives column 1 (the positive class),
  one column is flattened, more columns are per-class probabilities (auc: one-vs-rest macro
  average; log_loss: multi-class cross-entropy); a 1-D array is the positive class's score.
* **values** (rmse, mae, r2): a 1-D array, or a 2-D array with one column.

Binary precision, recall, f1 and auc take class 1 as positive when it occurs (or when the labels
are 0 only), else the greater label; with more than two classes precision, recall and f1 are macro averages over every label
seen. A class never predicted counts 0 (scikit-learn's zero_division default). auc is the
rank-based Mann-Whitney statistic (ties get average ranks) and is NaN when the holdout has only
one class; a NaN metric never passes a gate.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from eventops.errors import ValidationError

Array = npt.NDArray[Any]

MAXIMIZE, MINIMIZE = "maximize", "minimize"


def as_array(predictions: Any) -> Array:
    """Predictions as a numpy array (1-D, or 2-D for per-class columns)."""
    values = getattr(predictions, "to_numpy", None)
    array = np.asarray(values() if callable(values) else predictions)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim not in (1, 2):
        raise ValidationError(
            f"predictions must be 1-D or 2-D, not {array.ndim}-D", field="predictions", rule="shape"
        )
    return array


def _numeric(array: Array) -> bool:
    return array.dtype.kind in "biuf"


def _whole(array: Array) -> bool:
    if array.dtype.kind in "biu":
        return True
    return bool(np.all(np.isfinite(array)) and np.all(np.mod(array, 1) == 0))


def _classes(y_true: Array) -> Array:
    return np.unique(y_true)


def _positive(classes: Array) -> Any:
    if _numeric(classes) and set(classes.tolist()) <= {0, 1}:
        return 1  # even when absent, as scikit-learn's pos_label=1
    for value in classes:
        if _numeric(np.asarray(value)) and value == 1:
            return value
    return classes[-1]


def predicted_labels(predictions: Any, y_true: Array) -> Array:
    pred = as_array(predictions)
    classes = _classes(y_true)
    if pred.ndim == 2:
        index = np.argmax(pred, axis=1)
        labels: Array = classes[index] if pred.shape[1] == len(classes) else index
        return labels
    if _numeric(pred) and not _whole(pred):
        positive = pred >= 0.5
        mapped: Array = (
            np.where(positive, classes[1], classes[0])
            if len(classes) == 2
            else positive.astype(np.int64)
        )
        return mapped
    return pred


def _positive_scores(predictions: Any) -> Array:
    pred = as_array(predictions)
    if pred.ndim == 2:
        if pred.shape[1] != 2:
            raise ValidationError(
                f"binary scores need 1 or 2 columns, got {pred.shape[1]}",
                field="predictions",
                rule="shape",
            )
        pred = pred[:, 1]
    if not _numeric(pred):
        raise ValidationError("scores must be numbers", field="predictions", rule="numeric")
    return pred.astype(np.float64)


def _same_length(y_true: Array, pred: Array) -> None:
    if len(y_true) != len(pred):
        raise ValidationError(
            f"{len(pred)} predictions for {len(y_true)} labels", field="predictions", rule="length"
        )


# ---------------------------------------------------------------------- label metrics
def accuracy(y_true: Array, predictions: Any) -> float:
    pred = predicted_labels(predictions, y_true)
    _same_length(y_true, pred)
    return float(np.mean(pred == y_true)) if len(y_true) else math.nan


def _confusion(y_true: Array, pred: Array, label: Any) -> tuple[int, int, int]:
    tp = int(np.sum((pred == label) & (y_true == label)))
    fp = int(np.sum((pred == label) & (y_true != label)))
    fn = int(np.sum((pred != label) & (y_true == label)))
    return tp, fp, fn


def _ratio(num: float, den: float) -> float:
    return num / den if den else 0.0


def _per_class(y_true: Array, predictions: Any, score: Callable[[int, int, int], float]) -> float:
    pred = predicted_labels(predictions, y_true)
    _same_length(y_true, pred)
    labels = np.unique(np.concatenate([y_true, pred]))
    if len(labels) <= 2:
        return score(*_confusion(y_true, pred, _positive(labels)))
    return float(np.mean([score(*_confusion(y_true, pred, label)) for label in labels]))


def precision(y_true: Array, predictions: Any) -> float:
    return _per_class(y_true, predictions, lambda tp, fp, fn: _ratio(tp, tp + fp))


def recall(y_true: Array, predictions: Any) -> float:
    return _per_class(y_true, predictions, lambda tp, fp, fn: _ratio(tp, tp + fn))


def f1(y_true: Array, predictions: Any) -> float:
    return _per_class(y_true, predictions, lambda tp, fp, fn: _ratio(2 * tp, 2 * tp + fp + fn))


# ---------------------------------------------------------------------- score metrics
def _average_ranks(values: Array) -> Array:
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return (ends - (counts - 1) / 2.0)[inverse]


def _binary_auc(is_positive: Array, scores: Array) -> float:
    n_pos = int(np.sum(is_positive))
    n_neg = len(is_positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = _average_ranks(scores)
    return float((np.sum(ranks[is_positive]) - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def auc(y_true: Array, predictions: Any) -> float:
    pred = as_array(predictions)
    classes = _classes(y_true)
    if pred.ndim == 2 and pred.shape[1] > 2:
        columns = _class_columns(y_true, classes, pred.shape[1])
        per_class = [
            _binary_auc(columns == k, pred[:, k].astype(np.float64)) for k in range(pred.shape[1])
        ]
        return float(np.mean(per_class))
    scores = _positive_scores(pred)
    _same_length(y_true, scores)
    return _binary_auc(y_true == _positive(classes), scores)


def _class_columns(y_true: Array, classes: Array, k: int) -> Array:
    """The probability column of each true label: its index among the sorted classes when there
    is one column per class, else the label itself (labels 0..k-1)."""
    if len(classes) == k:
        return np.searchsorted(classes, y_true)
    if _numeric(y_true) and _whole(y_true) and y_true.min() >= 0 and y_true.max() < k:
        return y_true.astype(np.int64)
    raise ValidationError(
        f"{k} probability columns for labels {classes.tolist()[:10]}",
        field="predictions",
        rule="class-columns",
    )


def log_loss(y_true: Array, predictions: Any) -> float:
    pred = as_array(predictions)
    eps = float(np.finfo(np.float64).eps)
    classes = _classes(y_true)
    if pred.ndim == 2 and pred.shape[1] > 2:
        columns = _class_columns(y_true, classes, pred.shape[1])
        probs = np.clip(pred.astype(np.float64), eps, 1 - eps)
        return float(-np.mean(np.log(probs[np.arange(len(y_true)), columns])))
    scores = np.clip(_positive_scores(pred), eps, 1 - eps)
    _same_length(y_true, scores)
    positive = y_true == _positive(classes)
    return float(-np.mean(np.where(positive, np.log(scores), np.log(1 - scores))))


# ---------------------------------------------------------------------- regression metrics
def _values(y_true: Array, predictions: Any) -> tuple[Array, Array]:
    pred = as_array(predictions)
    if pred.ndim != 1 or not _numeric(pred) or not _numeric(y_true):
        raise ValidationError(
            "regression metrics need one numeric prediction per row and numeric labels",
            field="predictions",
            rule="numeric",
        )
    _same_length(y_true, pred)
    return y_true.astype(np.float64), pred.astype(np.float64)


def rmse(y_true: Array, predictions: Any) -> float:
    truth, pred = _values(y_true, predictions)
    return float(np.sqrt(np.mean((truth - pred) ** 2)))


def mae(y_true: Array, predictions: Any) -> float:
    truth, pred = _values(y_true, predictions)
    return float(np.mean(np.abs(truth - pred)))


def r2(y_true: Array, predictions: Any) -> float:
    truth, pred = _values(y_true, predictions)
    residual = float(np.sum((truth - pred) ** 2))
    total = float(np.sum((truth - truth.mean()) ** 2))
    if total == 0.0:  # constant labels: 1 when predicted exactly, else 0 (as scikit-learn)
        return 1.0 if residual == 0.0 else 0.0
    return 1.0 - residual / total


METRICS: dict[str, Callable[[Array, Any], float]] = {
    "accuracy": accuracy,
    "precision": precision,
    "recall": recall,
    "f1": f1,
    "auc": auc,
    "log_loss": log_loss,
    "rmse": rmse,
    "mae": mae,
    "r2": r2,
}
DIRECTIONS: dict[str, str] = {
    name: MINIMIZE if name in ("log_loss", "rmse", "mae") else MAXIMIZE for name in METRICS
}


def compute(metric: str, y_true: Any, predictions: Any) -> float:
    """`metric` of `predictions` against the true labels `y_true`."""
    if metric not in METRICS:
        raise ValidationError(
            f"unknown metric {metric!r}; one of {', '.join(METRICS)}",
            field="metric",
            rule="known-metric",
        )
    return METRICS[metric](np.asarray(y_true), predictions)
