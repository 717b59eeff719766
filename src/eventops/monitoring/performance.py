"""Model performance on delayed labels: feedback joined to the captured predictions, scored.

Ground truth arrives long after the prediction, as ``feedback.received`` (prediction id,
label). Each label is kept in `monitor_labels` as *pending*, then joined by prediction id to
the deployment's captured predictions in the lake: when a new capture batch lands (only that
batch is read), and on the service's tick or once enough labels wait to fill a window (the
batches committed since the oldest waiting prediction was made: prediction ids are UUIDv7,
so an id tells when it was made, and no batch committed before that can hold it). A joined
label is *matched*; one still unjoined after `match_timeout_seconds` (its request was not
sampled for capture, or the capture was lost) becomes *unmatched*; feedback without a label is
*invalid*. Every label ends in exactly one check: a window closes when `window_labels` labels
are resolved (matched, unmatched or invalid), the metric is computed over the matched ones and
the others are counted in the check, so nothing is dropped unseen.

Shadow predictions (``role = "shadow"``, same ids as the primary's) are never joined: the
label scores the model whose answer the client got.

The metrics are small numpy versions (scikit-learn is not a dependency), tested against
scikit-learn:

* accuracy, f1: labels compared as classes (``True``/``1``/``1.0`` are one class, strings
  as written); probabilities (non-whole numbers) are thresholded at 0.5. f1 is binary with
  class 1 positive when the classes are 0 and 1, else the macro average over every class seen.
* auc: ROC AUC as the Mann-Whitney statistic (average ranks for ties) of a score column
  (e.g. ``prediction_1``, the positive class's probability); None with fewer than two classes.
* rmse, mae: numbers.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from eventops.events.envelope import Event
from eventops.lake.catalog import Lake
from eventops.monitoring.monitors import Check, Monitor, Outcome, Window, record_check
from eventops.store.catalog import BatchRow
from eventops.store.monitoring import MonitorLabelRow, lock_window

log = logging.getLogger(__name__)

Array = npt.NDArray[Any]
RESOLVED = ("matched", "unmatched", "invalid")
MAX_JOIN = 50_000  # pending labels joined per pass
CLOCK_SLACK = timedelta(minutes=5)  # between the server that made an id and the store's clock


# ---------------------------------------------------------------------- metrics
def _class_key(value: Any) -> Any:
    if isinstance(value, bool | np.bool_):
        return int(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return int(value)
    if isinstance(value, float | np.floating):
        return float(value)
    return str(value)


def _classes(values: Sequence[Any]) -> list[Any]:
    """Class keys; probabilities (any non-whole number) become 0/1 at 0.5."""
    if any(isinstance(v, float | np.floating) and not float(v).is_integer() for v in values):
        return [int(float(v) >= 0.5) for v in values]
    return [_class_key(v) for v in values]


def accuracy(labels: Sequence[Any], predictions: Sequence[Any]) -> float:
    truth, guess = _classes(labels), _classes(predictions)
    return float(np.mean([a == b for a, b in zip(truth, guess, strict=True)]))


def f1(labels: Sequence[Any], predictions: Sequence[Any]) -> float:
    truth, guess = _classes(labels), _classes(predictions)
    seen = set(truth) | set(guess)
    positives = [1] if seen <= {0, 1} else sorted(seen, key=lambda k: (str(type(k)), k))
    scores = []
    for positive in positives:
        tp = sum(1 for a, b in zip(truth, guess, strict=True) if a == positive and b == positive)
        fp = sum(1 for a, b in zip(truth, guess, strict=True) if a != positive and b == positive)
        fn = sum(1 for a, b in zip(truth, guess, strict=True) if a == positive and b != positive)
        scores.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return float(np.mean(scores))


def auc(labels: Sequence[Any], scores: Sequence[Any]) -> float | None:
    truth = _classes(labels)
    classes = sorted(set(truth), key=lambda k: (str(type(k)), k))
    if len(classes) != 2:
        return None
    positive = 1 if set(classes) == {0, 1} else classes[1]
    is_pos = np.array([t == positive for t in truth])
    values = np.asarray(scores, dtype=np.float64)
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    average_rank = ends - (counts - 1) / 2.0  # 1-based average rank of each distinct value
    ranks = average_rank[inverse]
    n_pos, n_neg = int(is_pos.sum()), int((~is_pos).sum())
    return float((ranks[is_pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def rmse(labels: Sequence[Any], predictions: Sequence[Any]) -> float:
    error = np.asarray(predictions, dtype=np.float64) - np.asarray(labels, dtype=np.float64)
    return float(np.sqrt(np.mean(error**2)))


def mae(labels: Sequence[Any], predictions: Sequence[Any]) -> float:
    error = np.asarray(predictions, dtype=np.float64) - np.asarray(labels, dtype=np.float64)
    return float(np.mean(np.abs(error)))


METRICS: dict[str, Callable[[Sequence[Any], Sequence[Any]], float | None]] = {
    "accuracy": accuracy, "f1": f1, "auc": auc, "rmse": rmse, "mae": mae,
}  # fmt: skip


def score(metric: str, labels: Sequence[Any], predictions: Sequence[Any]) -> float | None:
    """`metric` of the pairs; None when there are none or it is undefined (auc, one class)."""
    if not labels:
        return None
    value = METRICS[metric](labels, predictions)
    return None if value is None or math.isnan(value) else value


# ---------------------------------------------------------------------- labels in
def record_feedback(
    session: Session, monitor: Monitor, event: Event, now: datetime
) -> MonitorLabelRow:
    """Keep one feedback event's label as pending. A newer label for a prediction whose label
    is not counted yet replaces it (a correction); after a check it is a new label."""
    assert monitor.performance is not None
    data = event.data if isinstance(event.data, dict) else {}
    pid, label = data.get("prediction_id"), data.get(monitor.performance.label_column)
    if not isinstance(pid, str) or not pid or label is None:
        row = MonitorLabelRow(
            monitor=monitor.name, prediction_id=str(pid)[:255], label=label, status="invalid",
            event_id=event.id, received_at=now, resolved_at=now,
        )  # fmt: skip
        session.add(row)
        return row
    waiting = session.scalars(
        select(MonitorLabelRow).where(
            MonitorLabelRow.monitor == monitor.name,
            MonitorLabelRow.prediction_id == pid,
            MonitorLabelRow.check_id.is_(None),
            MonitorLabelRow.status.in_(("pending", "matched")),
        )
    ).first()
    if waiting is not None:
        waiting.label, waiting.event_id = label, event.id
        return waiting
    row = MonitorLabelRow(
        monitor=monitor.name, prediction_id=pid, label=label, status="pending",
        event_id=event.id, received_at=now,
    )  # fmt: skip
    session.add(row)
    return row


def counts(session: Session, monitor: str) -> dict[str, int]:
    """Labels not yet in a check, by status."""
    query = (
        select(MonitorLabelRow.status, func.count())
        .where(MonitorLabelRow.monitor == monitor, MonitorLabelRow.check_id.is_(None))
        .group_by(MonitorLabelRow.status)
    )
    return {status: int(n) for status, n in session.execute(query)}


# ---------------------------------------------------------------------- joining
def made_at(prediction_id: str) -> datetime | None:
    """When a UUIDv7 prediction id was made; None for any other id."""
    try:
        parsed = uuid.UUID(prediction_id)
    except ValueError:
        return None
    if parsed.version != 7:
        return None
    return datetime.fromtimestamp((parsed.int >> 80) / 1000, UTC)


def candidate_batches(lake: Lake, dataset: str, ids: Iterable[str]) -> list[BatchRow]:
    """The capture batches that can hold these ids: those committed since the oldest was made
    (every batch when an id is not a UUIDv7)."""
    times = [made_at(i) for i in ids]
    query = select(BatchRow).where(BatchRow.dataset == dataset)
    if times and all(t is not None for t in times):
        oldest = min(t for t in times if t is not None)
        query = query.where(BatchRow.created_at >= oldest - CLOCK_SLACK)
    with lake.store.session() as session:
        return list(session.scalars(query.order_by(BatchRow.created_at, BatchRow.id)))


def lookup(
    lake: Lake, batches: Sequence[BatchRow], ids: set[str], column: str
) -> dict[str, tuple[Any, str | None]]:
    """prediction id -> (the captured `column`, model_version) for the ids found (not shadow)."""
    found: dict[str, tuple[Any, str | None]] = {}
    wanted = pa.array(sorted(ids), type=pa.string())
    for batch in batches:
        with lake.storage.fs.open(lake.storage.path_of(batch.uri), "rb") as handle:
            parquet = pq.ParquetFile(handle)
            names = parquet.schema_arrow.names
            if "prediction_id" not in names:
                continue
            keep = [c for c in ("prediction_id", column, "model_version", "role") if c in names]
            table = parquet.read(columns=keep)
        mask = pc.is_in(table["prediction_id"].cast(pa.string()), value_set=wanted)
        if "role" in keep:
            mask = pc.and_(mask, pc.fill_null(pc.not_equal(table["role"], "shadow"), True))
        for row in table.filter(mask).to_pylist():
            version = row.get("model_version")
            found[row["prediction_id"]] = (
                row.get(column),
                None if version is None else str(version),
            )
        if len(found) == len(ids):
            break
    return found


def join_pending(
    lake: Lake, monitor: Monitor, now: datetime, batches: Sequence[BatchRow] | None = None
) -> int:
    """Join pending labels to captured predictions (in `batches`, or every batch that can hold
    them); returns how many were matched."""
    with lake.store.session() as session:
        pending = dict(
            session.execute(
                select(MonitorLabelRow.id, MonitorLabelRow.prediction_id)
                .where(MonitorLabelRow.monitor == monitor.name, MonitorLabelRow.status == "pending")
                .order_by(MonitorLabelRow.id)
                .limit(MAX_JOIN)
            ).all()
        )
    if not pending:
        return 0
    ids = set(pending.values())
    if batches is None:
        batches = candidate_batches(lake, monitor.source_dataset, ids)
    found = lookup(lake, batches, ids, monitor.scored_column)
    if not found:
        return 0
    matched = 0
    with lake.store.session() as session:
        for row_id, pid in pending.items():
            if pid not in found:
                continue
            prediction, version = found[pid]
            result = session.execute(
                update(MonitorLabelRow)
                .where(MonitorLabelRow.id == row_id, MonitorLabelRow.status == "pending")
                .values(
                    status="matched",
                    prediction=_plain(prediction),
                    model_version=version,
                    resolved_at=now,
                )
                .execution_options(synchronize_session=False)
            )
            matched += int(getattr(result, "rowcount", 0) or 0)
    return matched


def _plain(value: Any) -> Any:
    """A captured value as JSON can keep it (NaN as null, timestamps as text)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, str | int | float | bool | list | dict) or value is None:
        return value
    return str(value)


# ---------------------------------------------------------------------- windows
def expire(lake: Lake, monitor: Monitor, now: datetime) -> int:
    """Labels pending longer than `match_timeout_seconds` become unmatched; returns how many."""
    assert monitor.performance is not None
    oldest = now - timedelta(seconds=monitor.performance.match_timeout_seconds)
    with lake.store.session() as session:
        result = session.execute(
            update(MonitorLabelRow)
            .where(
                MonitorLabelRow.monitor == monitor.name,
                MonitorLabelRow.status == "pending",
                MonitorLabelRow.received_at < oldest,
            )
            .values(status="unmatched", resolved_at=now)
            .execution_options(synchronize_session=False)
        )
    return int(getattr(result, "rowcount", 0) or 0)


def close_windows(lake: Lake, monitor: Monitor, now: datetime) -> list[Check]:
    """Close every full window of resolved labels, oldest labels first."""
    perf = monitor.performance
    assert perf is not None
    checks: list[Check] = []
    while True:
        with lake.store.session() as session:
            waiting = counts(session, monitor.name)
        if sum(waiting.get(s, 0) for s in RESOLVED) < perf.window_labels:
            return checks
        with lake.store.session() as session:
            state = lock_window(session, monitor.name, "performance")
            rows = list(
                session.scalars(
                    select(MonitorLabelRow)
                    .where(
                        MonitorLabelRow.monitor == monitor.name,
                        MonitorLabelRow.check_id.is_(None),
                        MonitorLabelRow.status.in_(RESOLVED),
                    )
                    .order_by(MonitorLabelRow.id)
                    .limit(perf.window_labels)
                )
            )
            state.rows, state.updated_at = len(rows), now
            if len(rows) < perf.window_labels:
                return checks
            state.seq += 1
            window = Window(
                "labels", state.seq, min(r.received_at for r in rows), now, [], rows[-1].event_id
            )
            check = record_check(session, monitor, window, evaluate(monitor, rows))
            for row in rows:
                row.check_id = check.id
            state.rows, state.opened_at = 0, None
            checks.append(check)


def evaluate(monitor: Monitor, rows: Sequence[MonitorLabelRow]) -> Outcome:
    """The performance outcome of a window of resolved labels."""
    perf = monitor.performance
    assert perf is not None
    pairs = [(r.label, r.prediction, r.model_version) for r in rows if r.status == "matched"]
    pairs = [p for p in pairs if p[1] is not None]
    by_status = {s: sum(1 for r in rows if r.status == s) for s in RESOLVED}
    error: str | None = None
    try:
        value = score(perf.metric, [p[0] for p in pairs], [p[1] for p in pairs])
        versions: dict[str, dict[str, Any]] = {}
        for version in sorted({str(p[2]) for p in pairs}):
            mine = [p for p in pairs if str(p[2]) == version]
            versions[version] = {
                "labels": len(mine),
                perf.metric: score(perf.metric, [p[0] for p in mine], [p[1] for p in mine]),
            }
    except (TypeError, ValueError) as exc:  # labels and predictions that cannot be compared
        value, versions = None, {}
        error = f"cannot compute {perf.metric}: {type(exc).__name__}: {exc}"
    degraded = perf.degraded(value)
    metrics = {
        perf.metric: value, "labels": len(rows), "scored": len(pairs),
        "matched": by_status["matched"], "unmatched": by_status["unmatched"],
        "invalid": by_status["invalid"],
    }  # fmt: skip
    unmatched = [r.prediction_id for r in rows if r.status == "unmatched"][:20]
    result = {
        "metric": perf.metric, "value": value, "min": perf.min, "max": perf.max,
        "degraded": degraded, **metrics, "by_version": versions, "unmatched_ids": unmatched,
    }  # fmt: skip
    alarm = None
    if degraded:
        alarm = {
            "metric": perf.metric, "value": value, "min": perf.min, "max": perf.max,
            "metrics": metrics,
        }  # fmt: skip
    return Outcome(
        "performance", len(rows), value, result, metrics, degraded=degraded, error=error,
        alarm=alarm,
    )  # fmt: skip


__all__ = [
    "METRICS",
    "accuracy",
    "auc",
    "close_windows",
    "evaluate",
    "expire",
    "f1",
    "join_pending",
    "made_at",
    "mae",
    "record_feedback",
    "rmse",
    "score",
]
