"""Lineage of a pipeline run: trigger event(s) → data batches read → run → artifacts (→ models).

`lineage_of_run(store, run_id)` answers from the metadata store alone:

- `trigger`: how the run was requested, and the events that caused it. An event is described
  from the run itself (`Runner.request(cause=...)` keeps a summary) or from the outbox while it
  still holds it (relayed rows are pruned after a while); otherwise only its id is known.
- `batches`: every batch a step read through `read_dataset`, with the catalog's facts about it
  (uri, rows, schema version, source, the batches it was derived from) and the steps that read
  it; plus the batches named by the trigger events (`dataset.batch.ingested`), marked `trigger`.
- `run`: id, pipeline, status, params, MLflow run id.
- `steps`: status, batches read, artifacts, metrics of each step.
- `artifacts`: every artifact the run produced (uri, kind, sha256, step).
- `models`: model versions registered from this run (empty until the registry links them).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import select

from eventops.events.envelope import Event
from eventops.pipelines.runs import RunView, get_run
from eventops.store import BatchRow, OutboxEntry, Store


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def _trigger_event_ids(view: RunView) -> list[str]:
    trigger = view.trigger
    ids = [trigger.get("cause_id"), (trigger.get("cause") or {}).get("id")]
    ids += list(trigger.get("events") or [])
    seen: dict[str, None] = {}
    for event_id in ids:
        if event_id and isinstance(event_id, str):
            seen.setdefault(event_id)
    return list(seen)


def _describe_events(store: Store, view: RunView, ids: list[str]) -> list[dict[str, Any]]:
    known: dict[str, dict[str, Any]] = {}
    cause = view.trigger.get("cause")
    if isinstance(cause, Mapping) and cause.get("id"):
        known[str(cause["id"])] = dict(cause)
    missing = [i for i in ids if i not in known]
    if missing:
        with store.session() as session:
            rows = session.scalars(select(OutboxEntry).where(OutboxEntry.event_id.in_(missing)))
            for row in rows:
                event = Event.from_json(row.payload)
                data = event.data if isinstance(event.data, Mapping) else {}
                known[event.id] = {
                    "id": event.id,
                    "type": event.type,
                    "subject": event.subject,
                    "time": str(event.time) if event.time else None,
                    **{k: data[k] for k in ("dataset", "batch_id", "rows") if k in data},
                }
    return [known.get(i, {"id": i}) for i in ids]


def _batches(
    store: Store, reads: Iterable[tuple[str, Mapping[str, Any]]], trigger_batches: list[str]
) -> list[dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for step, read in reads:
        batch_id = str(read.get("batch_id"))
        entry = found.setdefault(
            batch_id,
            {"batch_id": batch_id, "dataset": read.get("dataset"), "read_by": [], "trigger": False},
        )
        if step not in entry["read_by"]:
            entry["read_by"].append(step)
    for batch_id in trigger_batches:
        found.setdefault(
            batch_id, {"batch_id": batch_id, "dataset": None, "read_by": [], "trigger": True}
        )["trigger"] = True
    if not found:
        return []
    with store.session() as session:
        rows = {
            r.id: r for r in session.scalars(select(BatchRow).where(BatchRow.id.in_(list(found))))
        }
    for batch_id, entry in found.items():
        row = rows.get(batch_id)
        if row is None:
            entry["in_catalog"] = False
            continue
        entry.update(
            dataset=row.dataset,
            in_catalog=True,
            uri=row.uri,
            rows=row.rows,
            schema_version=row.version,
            source=row.source,
            derived_from=list(row.lineage or []),
            created_at=_iso(row.created_at),
        )
    return list(found.values())


def lineage_of_run(store: Store, run_id: str) -> dict[str, Any]:
    """The chain trigger → batches → run → artifacts of one run, as plain JSON data."""
    view = get_run(store, run_id)
    events = _describe_events(store, view, _trigger_event_ids(view))
    trigger_batches = [
        str(e["batch_id"])
        for e in events
        if e.get("type") == "dataset.batch.ingested" and e.get("batch_id")
    ]
    reads = [(s.name, r) for s in view.steps for r in s.reads]
    steps = []
    artifacts = []
    for s in view.steps:
        refs = [{"step": s.name, **ref} for ref in s.artifacts.values()]
        artifacts += refs
        steps.append(
            {
                "name": s.name,
                "status": s.status,
                "reads": sorted({str(r.get("batch_id")) for r in s.reads}),
                "artifacts": refs,
                "metrics": {m.name: m.value for m in s.metrics},
            }
        )
    trigger = view.trigger
    return {
        "trigger": {
            "name": trigger.get("name") or trigger.get("rule"),
            "kind": trigger.get("kind") or trigger.get("name") or "manual",
            "request_event_id": trigger.get("event_id"),
            "events": events,
        },
        "batches": _batches(store, reads, trigger_batches),
        "run": {
            "id": view.id,
            "pipeline": view.pipeline,
            "status": view.status,
            "params": view.params,
            "correlation_id": view.correlation_id,
            "mlflow_run_id": view.mlflow_run_id,
            "created_at": _iso(view.created_at),
            "finished_at": _iso(view.finished_at),
        },
        "steps": steps,
        "artifacts": artifacts,
        "models": [],
    }
