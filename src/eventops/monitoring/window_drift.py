"""The drift check of one window: its batches read back, compared with the reference's profile.

`drift_outcome` reads exactly the window's batches (schemas unioned by column name; shadow
rows, the challenger's answers to requests the primary already answered, left out so no input
counts twice), profiles them as the reference was profiled (`DataProfile.of` with the
reference's kinds), runs `drift_report` and the data-quality checks on the compared columns,
and turns the report into an `Outcome` for `record_check`.

Which columns are compared: the monitor's `features`, or else every column the reference and
the window share except the capture's own (``prediction_id``, ``served_at``,
``model_version``, ``role``) and the model's outputs (``prediction``, ``prediction_*``). The
prediction column is tested too (its own family of one test) when the reference has it, e.g. a
reference of predictions captured in a good period; a training table usually has none, and
then only the features are compared.

`References` profiles each monitor's reference once and keeps it: a lake dataset is profiled
again when it gets new batches, a file or folder when its modification time changes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import func, select

from eventops.errors import BackendUnavailable, EventOpsError, ValidationError
from eventops.lake.catalog import Lake
from eventops.monitoring.drift import ColumnDrift, DriftReport, drift_report
from eventops.monitoring.frames import ColumnSource
from eventops.monitoring.monitors import Monitor, Outcome
from eventops.monitoring.profile import DataProfile
from eventops.monitoring.quality import check_quality
from eventops.monitoring.sources import SUFFIXES, resolve
from eventops.store.catalog import BatchRow

CAPTURE_COLUMNS = frozenset({"prediction_id", "served_at", "model_version", "role"})


def is_prediction(column: str) -> bool:
    """A captured model output (``prediction``, ``prediction_0``, ``prediction_<name>``)."""
    return column == "prediction" or (
        column.startswith("prediction_") and column != "prediction_id"
    )


def is_path(spec: str) -> bool:
    """A reference names a file or folder (else a lake dataset): the rule of `sources.resolve`."""
    return Path(spec).expanduser().exists() or "/" in spec or spec.lower().endswith(SUFFIXES)


class References:
    """Reference profiles, one per monitor, kept until the reference changes."""

    def __init__(self, lake: Lake) -> None:
        self.lake = lake
        self._cache: dict[str, tuple[Any, DataProfile]] = {}

    def profile(self, monitor: Monitor) -> DataProfile:
        spec = monitor.reference
        assert spec is not None
        field = f"monitors.{monitor.name}.reference"
        key = self._key(spec)
        cached = self._cache.get(monitor.name)
        if cached is not None and cached[0] == key:
            return cached[1]
        source: ColumnSource
        if is_path(spec):
            source = resolve(spec, field=field)
        else:
            if spec not in self.lake.names():
                raise ValidationError(
                    f"no lake dataset or file named {spec!r}", field=field, rule="exists"
                )
            source = self.lake.read(spec)
        columns = None
        if monitor.features is not None:
            extra = [monitor.prediction_column] if monitor.prediction_column else []
            columns = [*monitor.features, *extra]
        profile = DataProfile.of(
            source, columns=columns, categorical=set(monitor.categorical), field=field
        )
        if profile.rows == 0:
            raise ValidationError(f"the reference {spec!r} has no rows", field=field, rule="rows")
        self._cache[monitor.name] = (key, profile)
        return profile

    def _key(self, spec: str) -> Any:
        if is_path(spec):
            path = Path(spec).expanduser()
            stat = path.stat() if path.exists() else None
            return None if stat is None else (stat.st_mtime_ns, stat.st_size)
        with self.lake.store.session() as session:
            count, newest = session.execute(
                select(func.count(BatchRow.id), func.max(BatchRow.created_at)).where(
                    BatchRow.dataset == spec
                )
            ).one()
        return (int(count), newest)


def read_batches(lake: Lake, batch_ids: list[str]) -> tuple[pa.Table, list[str]]:
    """Exactly these batches, shadow rows left out; and the ids of batches no longer in the
    lake (vacuumed), which the check reports."""
    with lake.store.session() as session:
        found = {
            r.id: r for r in session.scalars(select(BatchRow).where(BatchRow.id.in_(batch_ids)))
        }
    tables, missing = [], []
    for batch_id in batch_ids:
        row = found.get(batch_id)
        try:
            if row is None:
                raise FileNotFoundError(batch_id)
            tables.append(lake.storage.read_parquet(lake.storage.path_of(row.uri)))
        except FileNotFoundError:
            missing.append(batch_id)
    if not tables:
        return pa.table({}), missing
    table = pa.concat_tables(tables, promote_options="permissive")
    if "role" in table.column_names:
        table = table.filter(pc.fill_null(pc.not_equal(table["role"], "shadow"), True))
    return table, missing


def window_report(monitor: Monitor, reference: DataProfile, table: pa.Table) -> DriftReport:
    """The drift report of one window, with the data-quality findings of its columns."""
    pred = monitor.prediction_column
    pred = pred if pred is not None and pred in reference.types else None
    features = monitor.features
    if features is None:
        features = [
            c
            for c in reference.types
            if c in table.column_names and c not in CAPTURE_COLUMNS and not is_prediction(c)
        ]
        if not features and pred is None:
            raise ValidationError(
                "the reference and the window share no column",
                field=f"monitors.{monitor.name}.features",
                rule="shared-columns",
            )
    wanted = list(dict.fromkeys([*features, *([pred] if pred else [])]))
    current = DataProfile.of(
        table,
        columns=[c for c in wanted if c in table.column_names],
        kinds=reference.kinds(),
        field="current",
    )
    report = drift_report(
        reference, current, columns=features, alpha=monitor.alpha,
        correction=monitor.correction, methods=monitor.methods, prediction_column=pred,
    )  # fmt: skip
    report.quality = check_quality(_only(reference, wanted), _only(current, wanted))
    return report


def _only(profile: DataProfile, columns: list[str]) -> DataProfile:
    """The profile of just these columns: the capture's own columns (ids, timestamps, the
    model's outputs) are not in a training reference, and are no quality finding."""
    return DataProfile(
        profile.rows,
        {c: t for c, t in profile.types.items() if c in columns},
        {c: p for c, p in profile.columns.items() if c in columns},
        {c: why for c, why in profile.skipped.items() if c in columns},
    )


def drift_outcome(
    lake: Lake, references: References, monitor: Monitor, batch_ids: list[str]
) -> Outcome:
    """Compare these batches with the monitor's reference. A problem with the data or the
    declaration (no reference, a missing feature) becomes a check with an error; an
    unreachable store or lake raises, so the event is retried."""
    table, missing = read_batches(lake, batch_ids)
    window = {"batches": len(batch_ids), "missing_batches": missing}
    try:
        if table.num_rows == 0:
            raise ValidationError("the window has no rows", field="window", rule="rows")
        report = window_report(monitor, references.profile(monitor), table)
    except BackendUnavailable:
        raise
    except EventOpsError as exc:
        return Outcome("drift", table.num_rows, None, {"window": window}, {}, error=str(exc))
    prediction = report.prediction
    prediction_drifted = bool(prediction and prediction.drifted)
    metrics = {
        "share_drifted": report.share_drifted,
        "drifted_count": len(report.drifted_columns),
        "columns": len(report.columns),
        "prediction_drifted": prediction_drifted,
        "quality_findings": len(report.quality),
    }
    alarm = None
    if report.drift_detected:
        tested = [*report.columns, *([prediction] if prediction else [])]
        alarm = {
            "drifted_columns": report.drifted_columns,
            "share": report.share_drifted,
            "prediction_drifted": prediction_drifted,
            "metrics": {c.name: _evidence(c) for c in tested if c.drifted},
        }
    return Outcome(
        "drift", table.num_rows, report.share_drifted, {**report.to_dict(), "window": window},
        metrics, drifted=report.drift_detected, alarm=alarm,
    )  # fmt: skip


def _evidence(column: ColumnDrift) -> dict[str, Any]:
    """What an alert needs to say why a column drifted."""
    keys = ("p_value", "effect", "effect_name", "statistic", "method", "threshold")
    return {key: getattr(column, key) for key in keys}


__all__ = [
    "CAPTURE_COLUMNS",
    "References",
    "drift_outcome",
    "is_path",
    "is_prediction",
    "read_batches",
    "window_report",
]
