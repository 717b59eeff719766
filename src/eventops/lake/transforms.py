"""Transforms: a derived dataset kept up to date batch by batch (the role of a Glue job).

A transform reads one new batch of its `source` dataset and writes one batch of its `target`,
either with DuckDB SQL (the batch is the view ``batch``, the whole source dataset ``source``,
every dataset its own name) or with a Python function ``pa.Table -> pa.Table``, given as a
callable or as a ``"module:function"`` reference so it can be declared in a file.

The output goes through `Lake.commit_batch` like any ingest (schema evolution, checks,
quarantine, statistics, the ``dataset.batch.ingested`` event), with the input batch as its
lineage and the triggering event as its cause. Its batch id is derived from the transform's
name and the input batch id, so a re-delivered event, a retry after a crash or a replay finds
the batch already committed and does nothing. The flip side: changing a transform's SQL does
not recompute old batches; give the changed transform a new name to do that.

`TransformRunner` drives transforms from ``dataset.batch.ingested`` events through a
`Subscription`, which retries a failing transform and dead-letters it after the last attempt.
Outputs of one transform can feed another, but a cycle (a -> b -> a) would never stop, so the
runner refuses one; a transform writing its own source is refused when it is declared.
"""

from __future__ import annotations

import json
import logging
import re
import tomllib
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import pyarrow as pa

from eventops.errors import NotFound, ValidationError
from eventops.events.bus import Bus, StartAt
from eventops.events.envelope import Event
from eventops.events.subscription import RetryPolicy, Subscription, SubscriptionStats
from eventops.lake.catalog import IngestResult, Lake
from eventops.lake.spec import NAME_PATTERN
from eventops.lake.sql import SqlEngine, read_only_statements
from eventops.lake.validation import load_predicate
from eventops.store import BatchRow, OutboxRelay

log = logging.getLogger(__name__)

TableFunction = Callable[[pa.Table], Any]
INGESTED = "dataset.batch.ingested"
TRANSFORM_NAME = re.compile(r"^[a-z][a-z0-9_.-]{0,127}$")
_BATCH_NAMESPACE = uuid.UUID("5f0c1e2a-7b1d-4c55-9a43-2f3e7c1d9e10")


@dataclass(frozen=True)
class Transform:
    """`source` batch in, `target` batch out, by `sql` or by `function` (exactly one)."""

    name: str
    source: str
    target: str
    sql: str | None = None
    function: TableFunction | str | None = field(default=None, compare=False)
    description: str = ""

    def __post_init__(self) -> None:
        if not TRANSFORM_NAME.match(self.name):
            raise ValidationError(
                f"{self.name!r}: use a-z, 0-9, _ . -", field="name", rule="pattern"
            )
        for label in ("source", "target"):
            if not re.match(NAME_PATTERN, value := getattr(self, label)):
                raise ValidationError(
                    f"{value!r} is not a dataset name", field=label, rule="pattern"
                )
        if self.target == self.source:
            message = f"writing its own source {self.source!r} would trigger {self.name} forever"
            raise ValidationError(message, field="target", rule="differs-from-source")
        if (self.sql is None) == (self.function is None):
            raise ValidationError("give either sql or function", field="sql", rule="one-of")
        if self.sql is not None:
            read_only_statements(self.sql)
        if isinstance(self.function, str):
            load_function(self.function)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str = "transform") -> Transform:
        """A transform as declared in a file; errors name the key (``transforms[0].sql``)."""
        known = {f.name for f in fields(cls)}
        for key, value in data.items():
            if key not in known:
                raise ValidationError("unknown key", field=f"{where}.{key}", rule="known-key")
            if not isinstance(value, str):
                raise ValidationError("must be a string", field=f"{where}.{key}", rule="type")
        for key in ("name", "source", "target"):
            if key not in data:
                raise ValidationError("is required", field=f"{where}.{key}", rule="required")
        try:
            return cls(**data)
        except ValidationError as exc:
            raise ValidationError(
                exc.message, field=f"{where}.{exc.field}", rule=exc.rule
            ) from None

    def apply(self, lake: Lake, batch: pa.Table) -> pa.Table:
        """The transform's output for one input batch (nothing is written)."""
        if self.sql is not None:
            with SqlEngine(lake, tables={"batch": batch}, aliases={"source": self.source}) as sql:
                return _without_decimals(sql.query(self.sql))
        assert self.function is not None
        function = load_function(self.function) if isinstance(self.function, str) else self.function
        result = function(batch)
        if isinstance(result, pa.Table):
            return result
        try:  # a RecordBatch, a pandas / polars frame, anything with __arrow_c_stream__
            return pa.table(result)
        except (TypeError, ValueError, pa.ArrowException):
            raise ValidationError(
                f"transform {self.name} returned {type(result).__name__}, not a table",
                field="function",
                rule="returns-table",
            ) from None


def load_function(reference: str) -> TableFunction:
    """The callable a ``module:function`` reference names; errors name the field ``function``."""
    try:
        return load_predicate(reference)
    except ValidationError as exc:
        raise ValidationError(exc.message, field="function", rule=exc.rule) from None


def output_batch_id(transform: str, input_batch_id: str) -> str:
    """The same output id for the same transform and input, on every delivery."""
    return uuid.uuid5(_BATCH_NAMESPACE, f"{transform}/{input_batch_id}").hex


def _batch(lake: Lake, batch_id: str) -> BatchRow | None:
    with lake.store.session() as session:
        return session.get(BatchRow, batch_id)


def _without_decimals(table: pa.Table) -> pa.Table:
    """DuckDB sums integers into HUGEINT (decimal128(38, 0)), a type the catalog does not
    keep: whole decimals become int64 (double if too large), others double."""
    for index, column in enumerate(table.schema):
        if pa.types.is_decimal(column.type):
            values = table.column(index)
            try:
                cast = (
                    values.cast(pa.int64()) if column.type.scale == 0 else values.cast(pa.float64())
                )
            except pa.ArrowInvalid:
                cast = values.cast(pa.float64())
            table = table.set_column(index, column.name, cast)
    return table


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Give an old batch the columns added since (as nulls), as the ``source`` view does, so
    SQL written against the current schema also runs when old batches are replayed."""
    for column in schema:
        if column.name not in table.column_names:
            table = table.append_column(column.name, pa.nulls(table.num_rows, column.type))
    return table


def run_transform(
    lake: Lake, transform: Transform, batch_id: str, cause: Event | None = None
) -> IngestResult:
    """Apply `transform` to one committed batch of its source and commit the result."""
    out_id = output_batch_id(transform.name, batch_id)
    if _batch(lake, out_id) is not None:  # done before: skip the work, not just the commit
        return IngestResult(transform.target, out_id, 0, 0, None, None, duplicate=True)
    row = _batch(lake, batch_id)
    if row is None:
        raise NotFound(f"no committed batch {batch_id!r}", field="batch_id", rule="exists")
    if row.dataset != transform.source:
        raise ValidationError(
            f"batch {batch_id} belongs to {row.dataset!r}, not to {transform.name}'s source "
            f"{transform.source!r}",
            field="batch_id",
            rule="from-source",
        )
    table = _conform(
        lake.storage.read_parquet(lake.storage.path_of(row.uri)), lake.schema(row.dataset)
    )
    output = transform.apply(lake, table)
    return lake.commit_batch(
        transform.target, output, source=f"transform:{transform.name}", batch_id=out_id,
        lineage=[batch_id], cause=cause,
    )  # fmt: skip


def lineage(lake: Lake, dataset: str, batch_id: str) -> list[BatchRow]:
    """The batches `batch_id` was derived from, nearest first, back to the original input(s)."""
    with lake.store.session() as session:
        start = session.get(BatchRow, batch_id)
        if start is None or start.dataset != dataset:
            raise NotFound(
                f"dataset {dataset!r} has no batch {batch_id!r}", field="batch_id", rule="exists"
            )
        chain: list[BatchRow] = []
        seen = {batch_id}
        waiting = list(start.lineage or [])
        while waiting:
            parent_id = waiting.pop(0)
            if parent_id in seen:
                continue
            seen.add(parent_id)
            parent = session.get(BatchRow, parent_id)
            if parent is None:
                log.warning(
                    "lineage of %s names batch %s, no longer catalogued", batch_id, parent_id
                )
                continue
            chain.append(parent)
            waiting.extend(parent.lineage or [])
        return chain


def check_graph(transforms: Sequence[Transform]) -> None:
    """Refuse duplicate names and any cycle of sources and targets."""
    names = [t.name for t in transforms]
    if duplicate := next((n for n in names if names.count(n) > 1), None):
        raise ValidationError(
            f"two transforms are named {duplicate!r}", field="transforms", rule="unique-name"
        )
    feeds: dict[str, set[str]] = {}
    for t in transforms:
        feeds.setdefault(t.source, set()).add(t.target)

    def visit(dataset: str, path: list[str]) -> None:
        for target in sorted(feeds.get(dataset, ())):
            if target in path:
                cycle = " -> ".join([*path[path.index(target) :], target])
                raise ValidationError(
                    f"transforms form a cycle: {cycle}", field="transforms", rule="acyclic"
                )
            visit(target, [*path, target])

    for source in sorted(feeds):
        visit(source, [source])


class TransformRunner:
    """Runs every transform whose source is the dataset of each ``dataset.batch.ingested``.

    `start` defaults to "earliest": a new runner group also transforms the batches still in
    the bus's retention, which costs nothing for the ones already done (same output ids).
    """

    def __init__(
        self,
        bus: Bus,
        lake: Lake,
        transforms: Iterable[Transform],
        *,
        group: str = "eventops-transforms",
        relay: OutboxRelay | None = None,
        retry: RetryPolicy | None = None,
        start: StartAt = "earliest",
    ) -> None:
        self.lake = lake
        self.transforms = list(transforms)
        check_graph(self.transforms)
        self.relay = relay
        self.subscription = Subscription(
            bus, group, self.handle, types=[INGESTED], retry=retry, start=start
        )

    def handle(self, event: Event) -> list[IngestResult]:
        data = event.data if isinstance(event.data, dict) else {}
        matching = [t for t in self.transforms if t.source == data.get("dataset")]
        if not matching:
            return []
        batch_id = data.get("batch_id")
        if not isinstance(batch_id, str):
            raise ValidationError("event has no batch id", field="data.batch_id", rule="required")
        try:
            return [run_transform(self.lake, t, batch_id, cause=event) for t in matching]
        finally:
            self._relay()

    def _relay(self) -> None:
        """Publish the outputs' events now. A relay failure is logged, not raised: the outputs
        are committed and their events wait in the outbox for the next relay."""
        if self.relay is None:
            return
        try:
            while self.relay.relay_once() >= self.relay.batch_size:
                pass
        except Exception as exc:
            log.warning("transform outputs committed; relaying their events failed: %s", exc)

    def start(self) -> TransformRunner:
        self.subscription.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self.subscription.stop(timeout)

    def run(
        self, *, max_events: int | None = None, timeout: float | None = None
    ) -> SubscriptionStats:
        return self.subscription.run(max_events=max_events, timeout=timeout)


def load_transforms(text: str, *, toml: bool) -> list[Transform]:
    """Transforms declared in a TOML or JSON document: a list under the key ``transforms``."""
    try:
        document = tomllib.loads(text) if toml else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        kind = "toml" if toml else "json"
        raise ValidationError(
            f"not valid {kind.upper()}: {exc}", field="transforms", rule=kind
        ) from None
    entries = document.get("transforms") if isinstance(document, dict) else None
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ValidationError(
            "expected a list of tables under 'transforms'", field="transforms", rule="type"
        )
    found = [Transform.from_dict(e, where=f"transforms[{i}]") for i, e in enumerate(entries)]
    check_graph(found)
    return found


__all__ = [
    "Transform",
    "TransformRunner",
    "check_graph",
    "lineage",
    "load_function",
    "load_transforms",
    "output_batch_id",
    "run_transform",
]
