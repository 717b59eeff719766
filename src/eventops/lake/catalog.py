"""The lake: datasets in Parquet files, described and made visible by the catalog.

`Lake.commit_batch` is the one door every ingestion path goes through (files, HTTP, streams,
transforms). In order: reconcile the batch with the dataset's schema (evolving it when
compatible), run the declared checks, keep bad rows in quarantine with the field and the rule
they broke, compute statistics, write the Parquet file, and finally commit — in one store
transaction — the manifest row, any new schema version, the rejection record and the events
(`dataset.schema.changed`, `dataset.batch.rejected`, `dataset.batch.ingested`) through the
outbox. Readers only see batches that have a manifest row, so a crash anywhere before that
commit leaves nothing half-visible; an orphan file is removed by `vacuum`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
from pydantic import ValidationError as PydanticValidationError
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from eventops.config import Settings
from eventops.errors import NotFound, ValidationError
from eventops.events.envelope import Event
from eventops.lake import announce
from eventops.lake.quarantine import quarantine_lines, summarise
from eventops.lake.schemas import SchemaConflict, reconcile, schema_from_json, schema_to_json
from eventops.lake.spec import DatasetSpec
from eventops.lake.stats import table_stats
from eventops.lake.storage import LakeStorage
from eventops.lake.validation import Outcome, Violation, evaluate
from eventops.store import (
    BatchRow,
    DatasetRow,
    RejectionRow,
    SchemaVersionRow,
    Store,
    StreamCheckpointRow,
    add_events,
)

COMMIT_ATTEMPTS = 4  # a batch retried after losing a race to create its dataset or schema


@dataclass
class IngestResult:
    dataset: str
    batch_id: str
    rows_accepted: int
    rows_rejected: int
    schema_version: int | None
    uri: str | None
    quarantine_uri: str | None = None
    reason: str | None = None
    duplicate: bool = False
    events: list[Event] = field(default_factory=list)

    @property
    def rejected_batch(self) -> bool:
        return self.uri is None and not self.duplicate


class Lake:
    def __init__(self, store: Store, storage: LakeStorage) -> None:
        self.store = store
        self.storage = storage

    @classmethod
    def from_settings(cls, settings: Settings, *, upgrade: bool = True) -> Lake:
        """The configured lake over the configured store (migrated unless `upgrade=False`).

        S3 credentials and endpoints come from the standard AWS variables and files
        (AWS_PROFILE, AWS_ACCESS_KEY_ID, AWS_ENDPOINT_URL_S3, ...), never from settings.
        """
        store = Store(settings.store_url)
        if upgrade:
            store.upgrade()
        return cls(store, LakeStorage(settings.lake_url))

    # ------------------------------------------------------------------ catalog reads
    def spec(self, name: str) -> DatasetSpec:
        with self.store.session() as session:
            row = session.get(DatasetRow, name)
            if row is None:
                raise NotFound(f"no dataset named {name!r}", field="dataset", rule="exists")
            return DatasetSpec.model_validate(row.spec)

    def names(self) -> list[str]:
        with self.store.session() as session:
            return list(session.scalars(select(DatasetRow.name).order_by(DatasetRow.name)))

    def schema(self, name: str, version: int | None = None) -> pa.Schema:
        with self.store.session() as session:
            row = self._dataset(session, name)
            wanted = version or row.current_version
            found = session.get(SchemaVersionRow, (name, wanted))
            if found is None:
                raise NotFound(f"dataset {name!r} has no schema version {wanted}", field="version")
            return schema_from_json(found.columns)

    def versions(self, name: str) -> list[SchemaVersionRow]:
        with self.store.session() as session:
            self._dataset(session, name)
            query = (
                select(SchemaVersionRow)
                .where(SchemaVersionRow.dataset == name)
                .order_by(SchemaVersionRow.version)
            )
            return list(session.scalars(query))

    def batches(self, name: str, *, limit: int | None = None) -> list[BatchRow]:
        with self.store.session() as session:
            self._dataset(session, name)
            query = (
                select(BatchRow)
                .where(BatchRow.dataset == name)
                .order_by(BatchRow.created_at, BatchRow.id)
            )
            if limit:
                query = query.limit(limit)
            return list(session.scalars(query))

    def summary(self, name: str) -> dict[str, Any]:
        with self.store.session() as session:
            row = self._dataset(session, name)
            count, rows, size = session.execute(
                select(func.count(BatchRow.id), func.coalesce(func.sum(BatchRow.rows), 0),
                       func.coalesce(func.sum(BatchRow.size_bytes), 0)).where(BatchRow.dataset == name)
            ).one()  # fmt: skip
            rejected = session.scalar(
                select(func.coalesce(func.sum(RejectionRow.rows), 0)).where(
                    RejectionRow.dataset == name
                )
            )
            return {
                "name": name, "schema_version": row.current_version, "batches": int(count),
                "rows": int(rows), "bytes": int(size), "rows_rejected": int(rejected or 0),
                "created_at": row.created_at.isoformat(), "updated_at": row.updated_at.isoformat(),
            }  # fmt: skip

    def rejections(self, name: str) -> list[RejectionRow]:
        with self.store.session() as session:
            query = (
                select(RejectionRow).where(RejectionRow.dataset == name).order_by(RejectionRow.id)
            )
            return list(session.scalars(query))

    def files(self, name: str) -> list[str]:
        """Paths of the committed batches, oldest first: what readers and SQL views use."""
        return [self.storage.path_of(b.uri) for b in self.batches(name)]

    def read(self, name: str) -> pa.Table:
        """Every committed batch of a dataset, all schema versions unioned by column name."""
        tables = [self.storage.read_parquet(path) for path in self.files(name)]
        if not tables:
            with self.store.session() as session:
                if self._dataset(session, name).current_version == 0:
                    return pa.table({})  # declared, or its first batch was rejected: no schema yet
            return self.schema(name).empty_table()
        # "permissive" widens a declared type change (int64 -> double) across old and new batches
        return pa.concat_tables(tables, promote_options="permissive")

    def checkpoint(self, source: str) -> dict[str, str]:
        with self.store.session() as session:
            rows = session.scalars(
                select(StreamCheckpointRow).where(StreamCheckpointRow.source == source)
            )
            return {r.partition: r.position for r in rows}

    @staticmethod
    def _dataset(session: Session, name: str) -> DatasetRow:
        row = session.get(DatasetRow, name)
        if row is None:
            raise NotFound(f"no dataset named {name!r}", field="dataset", rule="exists")
        return row

    # ------------------------------------------------------------------ declaring
    def declare(self, spec: DatasetSpec) -> int | None:
        """Create or update a dataset. Declared columns that differ from the current schema
        become a new, declared schema version (the way to make an incompatible change).
        Returns the new schema version, if one was made."""
        declared = spec.arrow_schema()
        with self.store.session() as session:
            row = session.get(DatasetRow, spec.name)
            if row is None:
                row = DatasetRow(
                    name=spec.name, spec=spec.model_dump(mode="json"), current_version=0
                )
                session.add(row)
                session.flush()
            else:
                row.spec = spec.model_dump(mode="json")
                row.updated_at = datetime.now(UTC)
            if declared is None:
                return None
            current = session.get(SchemaVersionRow, (spec.name, row.current_version))
            if current is not None and schema_from_json(current.columns).equals(declared):
                return None
            version = row.current_version + 1
            before = current.columns if current else None
            changes = [{"change": "declared", "from": before, "to": schema_to_json(declared)}]
            session.add(SchemaVersionRow(dataset=spec.name, version=version, columns=schema_to_json(declared),
                                         changes=changes, declared=True))  # fmt: skip
            row.current_version = version
            add_events(
                session, [announce.schema_changed(spec.name, version - 1 or None, version, changes)]
            )
            return version

    # ------------------------------------------------------------------ writing
    def commit_batch(
        self,
        name: str,
        table: pa.Table,
        *,
        source: str,
        batch_id: str | None = None,
        lineage: Sequence[str] | None = None,
        checkpoint: tuple[str, Mapping[str, str]] | None = None,
        cause: Event | None = None,
    ) -> IngestResult:
        """Validate and commit one batch; see the module docstring for the steps.

        Two writers may create a dataset, or a schema version of it, at the same moment (two
        model servers capturing their first predictions): the loser's transaction fails on the
        primary key or sees the version move, and the batch is tried again against what the
        winner committed, a few times, instead of failing. A file written by a lost attempt is
        an orphan that `vacuum` removes.
        """
        batch_id = batch_id or uuid.uuid4().hex
        for attempt in range(1, COMMIT_ATTEMPTS + 1):
            try:
                return self._commit_once(
                    name, table, source=source, batch_id=batch_id, lineage=lineage,
                    checkpoint=checkpoint, cause=cause,
                )  # fmt: skip
            except (IntegrityError, SchemaConflict) as exc:
                lost_race = isinstance(exc, IntegrityError) or exc.rule == "concurrent-change"
                if not lost_race or attempt == COMMIT_ATTEMPTS:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _commit_once(
        self,
        name: str,
        table: pa.Table,
        *,
        source: str,
        batch_id: str,
        lineage: Sequence[str] | None,
        checkpoint: tuple[str, Mapping[str, str]] | None,
        cause: Event | None,
    ) -> IngestResult:
        spec, current, current_version, seen = self._prepare(name, batch_id)
        if seen:
            return IngestResult(name, batch_id, 0, 0, None, None, duplicate=True)
        day = datetime.now(UTC).strftime("%Y-%m-%d")
        try:
            reconciled = reconcile(current, table)
        except SchemaConflict as conflict:
            return self._reject_whole(
                name, batch_id, table, day, source, str(conflict), checkpoint, cause
            )
        outcome = evaluate(reconciled.table, spec.checks)
        for column, failed in reconciled.type_errors.items():
            outcome.add(
                ~failed,
                _type_violation(
                    column, reconciled.raw_values[column], reconciled.schema.field(column).type
                ),
            )
        if outcome.bad_count and spec.on_bad_rows == "reject_batch":
            reason = f"{outcome.bad_count} row(s) broke checks; policy reject_batch"
            self._quarantine_rows(
                name, batch_id, day, reconciled.table, outcome, source, raw=reconciled.raw_values
            )
            return self._reject_whole(
                name, batch_id, table, day, source, reason, checkpoint, cause, outcome
            )
        good = (
            reconciled.table.filter(pa.array(~outcome.bad))
            if outcome.bad_count
            else reconciled.table
        )
        quarantine_uri = None
        if outcome.bad_count:
            quarantine_uri = self._quarantine_rows(
                name, batch_id, day, reconciled.table, outcome, source, raw=reconciled.raw_values
            )
        version = current_version + 1 if reconciled.new_version else current_version
        path = self.storage.path(
            "datasets", name, f"v{version}", f"date={day}", f"{batch_id}.parquet"
        )
        with ThreadPoolExecutor(
            1
        ) as pool:  # Parquet encoding and the statistics both release the GIL
            written = pool.submit(self.storage.write_parquet, path, good)
            stats = table_stats(good)
            size = written.result()
        uri = self.storage.uri(path)
        with self.store.session() as session:
            row = session.get(DatasetRow, name)
            assert row is not None
            events: list[Event] = []
            if reconciled.new_version:
                if row.current_version + 1 != version:
                    raise SchemaConflict(
                        "the schema changed concurrently; retry the batch",
                        field=name,
                        rule="concurrent-change",
                    )
                session.add(SchemaVersionRow(dataset=name, version=version, columns=schema_to_json(reconciled.schema),
                                             changes=reconciled.changes, declared=False))  # fmt: skip
                row.current_version = version
                events.append(
                    announce.schema_changed(
                        name, version - 1 or None, version, reconciled.changes, cause
                    )
                )
            row.updated_at = datetime.now(UTC)
            session.add(BatchRow(id=batch_id, dataset=name, version=version, uri=uri, rows=good.num_rows,
                                 size_bytes=size, stats=stats, source=source, lineage=list(lineage) if lineage else None))  # fmt: skip
            if outcome.bad_count:
                assert quarantine_uri is not None
                reason = summarise(outcome)
                session.add(RejectionRow(dataset=name, batch_id=batch_id, rows=outcome.bad_count, reason=reason,
                                         uri=quarantine_uri, source=source))  # fmt: skip
                events.append(
                    announce.batch_rejected(
                        name, batch_id, outcome.bad_count, reason, quarantine_uri, cause
                    )
                )
            self._save_checkpoint(session, checkpoint)
            ingested = announce.batch_ingested(
                name, batch_id, good.num_rows, version, uri, stats, source, lineage, cause
            )
            events.append(ingested)
            add_events(session, events)
        return IngestResult(
            name,
            batch_id,
            good.num_rows,
            outcome.bad_count,
            version,
            uri,
            quarantine_uri,
            events=events,
        )

    def _prepare(self, name: str, batch_id: str) -> tuple[DatasetSpec, pa.Schema | None, int, bool]:
        """One read for everything a commit needs first: the spec, the current schema and its
        version (the dataset is created if new), and whether this batch id was committed already."""
        with self.store.session() as session:
            seen = session.get(BatchRow, batch_id) is not None
            row = session.get(DatasetRow, name)
            if row is None:
                spec = new_spec(name)
                session.add(
                    DatasetRow(name=name, spec=spec.model_dump(mode="json"), current_version=0)
                )
                return spec, None, 0, seen
            spec = DatasetSpec.model_validate(row.spec)
            version = session.get(SchemaVersionRow, (name, row.current_version))
            schema = schema_from_json(version.columns) if version else None
            return spec, schema, row.current_version, seen

    @staticmethod
    def _save_checkpoint(
        session: Session, checkpoint: tuple[str, Mapping[str, str]] | None
    ) -> None:
        if checkpoint is None:
            return
        source, positions = checkpoint
        for partition, position in positions.items():
            found = session.get(StreamCheckpointRow, (source, partition))
            if found is None:
                session.add(
                    StreamCheckpointRow(source=source, partition=partition, position=position)
                )
            else:
                found.position = position
                found.updated_at = datetime.now(UTC)

    # ------------------------------------------------------------------ quarantine
    def save_checkpoint(self, source: str, positions: Mapping[str, str]) -> None:
        """Move a stream's checkpoint with no batch (only skipped or quarantined input read)."""
        with self.store.session() as session:
            self._save_checkpoint(session, (source, positions))

    def quarantine_raw(
        self,
        name: str,
        records: Sequence[dict[str, Any]],
        reason: str,
        *,
        source: str,
        checkpoint: tuple[str, Mapping[str, str]] | None = None,
    ) -> IngestResult:
        """Keep input that could not even be parsed (a CSV line with the wrong number of fields,
        a line that is not JSON): each record says where it came from and what was wrong.

        `checkpoint`, like `commit_batch`'s, moves a stream's position in the same transaction,
        so a stream reader never quarantines the same record twice."""
        new_spec(name)  # validates the name
        batch_id = uuid.uuid4().hex
        day = datetime.now(UTC).strftime("%Y-%m-%d")
        path = self.storage.path("quarantine", name, f"date={day}", f"{batch_id}.raw.jsonl")
        body = "".join(
            json.dumps({"dataset": name, "source": source, **r}, default=str) + "\n"
            for r in records
        )
        self.storage.write_bytes(path, body.encode())
        uri = self.storage.uri(path)
        with self.store.session() as session:
            if session.get(DatasetRow, name) is None:
                session.add(
                    DatasetRow(
                        name=name,
                        spec=DatasetSpec(name=name).model_dump(mode="json"),
                        current_version=0,
                    )
                )
                session.flush()
            session.add(
                RejectionRow(
                    dataset=name,
                    batch_id=batch_id,
                    rows=len(records),
                    reason=reason,
                    uri=uri,
                    source=source,
                )
            )
            self._save_checkpoint(session, checkpoint)
            event = announce.batch_rejected(name, batch_id, len(records), reason, uri, None)
            add_events(session, [event])
        return IngestResult(
            name, batch_id, 0, len(records), None, None, uri, reason=reason, events=[event]
        )

    def _quarantine_rows(
        self, name: str, batch_id: str, day: str, table: pa.Table, outcome: Outcome, source: str,
        raw: Mapping[str, pa.ChunkedArray],
    ) -> str:  # fmt: skip
        path = self.storage.path("quarantine", name, f"date={day}", f"{batch_id}.jsonl")
        self.storage.write_bytes(
            path, quarantine_lines(name, batch_id, table, outcome, source, raw)
        )
        return self.storage.uri(path)

    def _reject_whole(
        self, name: str, batch_id: str, table: pa.Table, day: str, source: str, reason: str,
        checkpoint: tuple[str, Mapping[str, str]] | None, cause: Event | None, outcome: Outcome | None = None,
    ) -> IngestResult:  # fmt: skip
        path = self.storage.path("quarantine", name, f"date={day}", f"{batch_id}.parquet")
        self.storage.write_parquet(path, table)
        uri = self.storage.uri(path)
        with self.store.session() as session:
            session.add(RejectionRow(dataset=name, batch_id=batch_id, rows=table.num_rows, reason=reason, uri=uri,
                                     source=source))  # fmt: skip
            self._save_checkpoint(session, checkpoint)
            event = announce.batch_rejected(name, batch_id, table.num_rows, reason, uri, cause)
            add_events(session, [event])
        return IngestResult(
            name, batch_id, 0, table.num_rows, None, None, uri, reason=reason, events=[event]
        )

    # ------------------------------------------------------------------ housekeeping
    def orphans(self, min_age: timedelta = timedelta(hours=1)) -> list[str]:
        """Files under datasets/ with no manifest row, older than `min_age` (younger ones may be
        a batch being committed right now)."""
        with self.store.session() as session:
            known = {self.storage.path_of(u) for u in session.scalars(select(BatchRow.uri))}
        cutoff = datetime.now(UTC) - min_age
        found = []
        for path in self.storage.files("datasets"):
            if path in known:
                continue
            modified = self.storage.fs.modified(path)
            if modified.tzinfo is None:
                modified = modified.replace(tzinfo=UTC)
            if modified <= cutoff:
                found.append(path)
        return found

    def vacuum(self, min_age: timedelta = timedelta(hours=1)) -> list[str]:
        removed = self.orphans(min_age)
        for path in removed:
            self.storage.delete(path)
        return removed


def _type_violation(
    column: str, raw: pa.ChunkedArray, target: pa.DataType
) -> Callable[[int], Violation]:
    def describe(index: int) -> Violation:
        return Violation(index, column, "type", f"{raw[index].as_py()!r} is not a valid {target}")

    return describe


def new_spec(name: str) -> DatasetSpec:
    """The spec of an undeclared dataset; refuses a name that cannot be a dataset."""
    try:
        return DatasetSpec(name=name)
    except PydanticValidationError:
        raise ValidationError(
            f"{name!r} is not a dataset name: lowercase letters, digits and _, starting with a letter",
            field="dataset",
            rule="name",
        ) from None


__all__ = ["IngestResult", "Lake", "SchemaConflict", "ValidationError"]
