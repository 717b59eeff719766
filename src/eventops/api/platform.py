"""What the API and the UI show about the applied projects: pipelines, deployments, monitors.

Why the API reads *applied* definitions (the `projects` table written by `eventops apply`) and
never imports the project module: importing a project runs user code, which the control plane
must not do in its own process (a worker does). The definition already holds what a page needs:
each pipeline's step graph and triggers, each deployment's traffic split and address, each
monitor's and alert rule's settings.

Deployment health comes from two places: the newest `deployment.*` event (which version each
deployment announced it serves) and the server's own Prometheus `/metrics`, scraped with a short
timeout (requests, errors, latency quantiles). A server that does not answer is shown as
unreachable, not as an error of the page.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from eventops.errors import NotFound
from eventops.events.envelope import Event, format_time
from eventops.pipelines.runs import list_runs
from eventops.store import OutboxEntry, PipelineRunRow, Store
from eventops.store.projects import ProjectRow

SCRAPE_TIMEOUT = 1.0


def projects(store: Store) -> list[dict[str, Any]]:
    """Every applied project's definition, name order."""
    with store.session() as session:
        rows = session.scalars(select(ProjectRow).order_by(ProjectRow.name))
        return [
            {
                "name": r.name,
                "digest": r.digest,
                "applied_at": format_time(r.applied_at),
                "applied_by": r.applied_by,
                "definition": r.definition,
            }
            for r in rows
        ]


def declared(store: Store, section: str) -> dict[str, dict[str, Any]]:
    """One section (pipelines, deployments, ...) of every applied project, by item name."""
    out: dict[str, dict[str, Any]] = {}
    for project in projects(store):
        for name, item in (project["definition"].get(section) or {}).items():
            out[name] = {"name": name, "project": project["name"], **item}
    return out


def _run_counts(store: Store) -> dict[str, dict[str, int]]:
    query = select(PipelineRunRow.pipeline, PipelineRunRow.status, func.count()).group_by(
        PipelineRunRow.pipeline, PipelineRunRow.status
    )
    counts: dict[str, dict[str, int]] = {}
    with store.session() as session:
        for pipeline, status, count in session.execute(query):
            counts.setdefault(pipeline, {})[status] = int(count)
    return counts


def pipelines(store: Store) -> list[dict[str, Any]]:
    """Declared pipelines (and pipelines that only have runs), with run counts by status and
    the newest run."""
    known = declared(store, "pipelines")
    counts = _run_counts(store)
    out = []
    for name in sorted(set(known) | set(counts)):
        newest = list_runs(store, name, limit=1)
        item = known.get(name, {"name": name, "project": None, "steps": [], "triggers": []})
        last = None
        if newest:
            view = newest[0]
            last = {
                "id": view.id,
                "status": view.status,
                "created_at": format_time(view.created_at),
            }
        out.append(
            {
                "name": name,
                "project": item.get("project"),
                "steps": [s["name"] for s in item.get("steps", [])],
                "triggers": len(item.get("triggers", [])),
                "runs": counts.get(name, {}),
                "last_run": last,
            }
        )
    return out


def pipeline(store: Store, name: str) -> dict[str, Any]:
    known = declared(store, "pipelines")
    if name not in known and not list_runs(store, name, limit=1):
        raise NotFound(f"no pipeline {name!r} was applied or run", field="name", rule="exists")
    return known.get(name, {"name": name, "project": None, "steps": [], "triggers": []})


def _newest_events(store: Store, prefix: str, subjects: Iterable[str]) -> dict[str, Event]:
    """The newest event of a type prefix per subject (one query per subject: a handful)."""
    newest: dict[str, Event] = {}
    with store.session() as session:
        for subject in subjects:
            row = session.scalars(
                select(OutboxEntry)
                .where(OutboxEntry.subject == subject)
                .where(OutboxEntry.type.startswith(prefix, autoescape=True))
                .order_by(OutboxEntry.id.desc())
                .limit(1)
            ).first()
            if row is not None:
                newest[subject] = Event.from_json(row.payload)
    return newest


def events_about(store: Store, subject: str, prefix: str, limit: int = 20) -> list[dict[str, Any]]:
    with store.session() as session:
        rows = session.scalars(
            select(OutboxEntry)
            .where(OutboxEntry.subject == subject)
            .where(OutboxEntry.type.startswith(prefix, autoescape=True))
            .order_by(OutboxEntry.id.desc())
            .limit(limit)
        )
        return [Event.from_json(r.payload).to_dict() for r in rows]


@dataclass
class ServerStats:
    """What one scrape of a serving server's /metrics says."""

    reachable: bool
    requests: float = 0.0
    errors: float = 0.0
    p50_ms: float | None = None
    p95_ms: float | None = None
    models: list[dict[str, str]] | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """The q-quantile from cumulative (upper bound, count) buckets, as Prometheus'
    histogram_quantile computes it (one implementation, shared with the CloudWatch reporter)."""
    from eventops.monitoring.cloudwatch import quantile

    return quantile(q, dict(buckets))


def parse_serving_metrics(text: str) -> ServerStats:
    stats = ServerStats(reachable=True, models=[])
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "eventops_serving_requests_total":
                stats.requests += sample.value
            elif sample.name == "eventops_serving_errors_total":
                stats.errors += sample.value
            elif sample.name == "eventops_serving_request_seconds_bucket":
                bound = float(sample.labels.get("le", "inf"))
                buckets[bound] = buckets.get(bound, 0.0) + sample.value
            elif sample.name == "eventops_serving_model_info" and sample.value > 0:
                assert stats.models is not None
                stats.models.append(dict(sample.labels))
    pairs = list(buckets.items())
    for q, attr in ((0.5, "p50_ms"), (0.95, "p95_ms")):
        value = histogram_quantile(q, pairs)
        setattr(stats, attr, round(value * 1000, 2) if value is not None else None)
    return stats


def scrape(host: str, port: int, timeout: float = SCRAPE_TIMEOUT) -> ServerStats:
    address = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host  # noqa: S104
    try:
        response = httpx.get(f"http://{address}:{port}/metrics", timeout=timeout)
        response.raise_for_status()
    except httpx.HTTPError as exc:
        return ServerStats(reachable=False, error=type(exc).__name__)
    return parse_serving_metrics(response.text)


def deployments(store: Store, *, live: bool = True) -> list[dict[str, Any]]:
    """Declared deployments with the version each last announced and (with `live`) a scrape."""
    known = declared(store, "deployments")
    announced = _newest_events(store, "deployment.", known)
    out = []
    for name, item in sorted(known.items()):
        event = announced.get(name)
        canary = item.get("canary_percent") or 0
        mode = item.get("mode", "single")
        split = (
            {"primary": 100 - canary, "challenger": canary}
            if mode == "canary"
            else {"primary": 100}
        )
        entry = {
            **item,
            "traffic": split,
            "serving_version": event.data.get("version") if event else None,
            "last_change": (
                {"type": event.type, "time": format_time(event.time), **event.data}
                if event
                else None
            ),
        }
        if live:
            entry["live"] = scrape(str(item.get("host", "127.0.0.1")), int(item["port"])).to_dict()
        out.append(entry)
    return out


def deployment(store: Store, name: str) -> dict[str, Any]:
    found = [d for d in deployments(store) if d["name"] == name]
    if not found:
        raise NotFound(f"no deployment {name!r} was applied", field="name", rule="exists")
    return {**found[0], "events": events_about(store, name, "deployment.")}


def monitors(store: Store) -> dict[str, dict[str, Any]]:
    return declared(store, "monitors")


def alert_rules(store: Store) -> dict[str, dict[str, Any]]:
    return declared(store, "alerts")
