"""The metadata store: SQLAlchemy models and Alembic migrations, the transactional outbox, and
idempotent handlers. SQLite when embedded, PostgreSQL in production, same code and schema."""

from eventops.store.catalog import (
    BatchRow,
    DatasetRow,
    RejectionRow,
    SchemaVersionRow,
    StreamCheckpointRow,
)
from eventops.store.database import Store, parse_store_url
from eventops.store.idempotency import already_processed, claim, forget_processed, idempotent
from eventops.store.outbox import OutboxRelay, add_event, add_events
from eventops.store.pipelines import (
    PipelineRunRow,
    PipelineStepRow,
    StepCacheRow,
    TriggerStateRow,
)
from eventops.store.projects import ProjectRow
from eventops.store.tables import Base, OutboxEntry, ProcessedEvent, UTCDateTime, utcnow

__all__ = [
    "Base",
    "BatchRow",
    "DatasetRow",
    "OutboxEntry",
    "OutboxRelay",
    "PipelineRunRow",
    "PipelineStepRow",
    "ProcessedEvent",
    "ProjectRow",
    "RejectionRow",
    "SchemaVersionRow",
    "StepCacheRow",
    "Store",
    "StreamCheckpointRow",
    "TriggerStateRow",
    "UTCDateTime",
    "add_event",
    "add_events",
    "already_processed",
    "claim",
    "forget_processed",
    "idempotent",
    "parse_store_url",
    "utcnow",
]
