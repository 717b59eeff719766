"""The data-plane half of `eventops demo`: one dataset fed by every ingestion path.

Files (CSV), HTTP (NDJSON through a real server on loopback) and a stream of events on the bus
(micro-batched into the lake) all end in `Lake.commit_batch`; a SQL transform derives a second
dataset on each new batch; bad rows land in quarantine; the catalog and SQL show the result.
"""

from __future__ import annotations

import secrets
import socket
import threading
import time
import tomllib
from pathlib import Path

import httpx
import uvicorn
from rich.console import Console
from rich.table import Table

from eventops.errors import BackendUnavailable, ValidationError
from eventops.events.bus import Bus
from eventops.events.envelope import Event
from eventops.ingest.files import ingest_file
from eventops.ingest.http import create_ingest_app
from eventops.ingest.stream import StreamIngestor
from eventops.lake import DatasetSpec, IngestResult, Lake
from eventops.lake.sql import query
from eventops.lake.transforms import Transform, TransformRunner, lineage
from eventops.store import OutboxRelay

FEATURES_SQL = (
    "SELECT customer_id, tenure_months, monthly_charges, plan = 'premium' AS premium, churned "
    "FROM batch WHERE customer_id IS NOT NULL"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _describe(console: Console, path: str, result: IngestResult) -> None:
    what = (
        f"{result.rows_accepted} rows -> schema v{result.schema_version}"
        if result.uri
        else "rejected"
    )
    bad = f", {result.rows_rejected} bad row(s) kept in quarantine" if result.rows_rejected else ""
    console.print(f"  [bold]{path}[/bold]: {what}{bad}")


def post_over_http(
    console: Console, lake: Lake, relay: OutboxRelay, body: bytes
) -> dict[str, object]:
    """Serve the ingestion API on a free loopback port, post NDJSON to it, stop it."""
    token = secrets.token_urlsafe(16)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_ingest_app(lake, relay=relay, token=token),
            host="127.0.0.1",
            port=port,
            log_level="warning",
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise BackendUnavailable("the demo's ingestion server did not start", field="http")
            time.sleep(0.05)
        response = httpx.post(
            f"http://127.0.0.1:{port}/datasets/churn/records",
            content=body,
            headers={"Content-Type": "application/x-ndjson", "Authorization": f"Bearer {token}"},
            timeout=60,
        )
        answer: dict[str, object] = response.json()
        console.print(
            f"  [bold]POST /datasets/churn/records[/bold] ({len(body):,} bytes NDJSON) -> HTTP {response.status_code}"
        )
        return answer
    finally:
        server.should_exit = True
        thread.join(10)


def run_data_plane(
    console: Console, lake: Lake, bus: Bus, relay: OutboxRelay, data_dir: Path, stream_events: int
) -> TransformRunner:
    """Declare, ingest through every path, transform; returns the running transform runner."""
    if not (data_dir / "customers.csv").exists():
        raise ValidationError(
            f"example data not found in {data_dir}; run from the repository root or pass --data",
            field="--data",
            rule="exists",
        )
    spec = DatasetSpec.model_validate(tomllib.loads((data_dir.parent / "dataset.toml").read_text()))
    lake.declare(spec)
    console.print(
        f"declared dataset [cyan]churn[/cyan] with {len(spec.checks)} checks ({data_dir.parent / 'dataset.toml'})"
    )
    features = Transform(
        name="churn_features", source="churn", target="churn_features", sql=FEATURES_SQL
    )
    runner = TransformRunner(bus, lake, [features], relay=relay).start()

    console.print("\n[bold]1. files[/bold] - eventops ingest churn customers.csv")
    report = ingest_file(lake, "churn", str(data_dir / "customers.csv"))
    for result in report.results:
        _describe(console, "customers.csv", result)
    relay.relay_once()

    console.print("\n[bold]2. HTTP[/bold] - a later extract with a new column and some bad rows")
    answer = post_over_http(console, lake, relay, (data_dir / "more.jsonl").read_bytes())
    console.print(
        f"  accepted {answer['rows_accepted']}, rejected {answer['rows_rejected']}, "
        f"schema v{answer['schema_version']} (support_calls added), quarantine: {answer['quarantine_uri']}"
    )

    console.print(
        f"\n[bold]3. stream[/bold] - {stream_events:,} crm.customer.updated events on the bus, micro-batched"
    )
    bus.publish(
        Event(
            type="crm.customer.updated",
            source="/crm",
            subject=f"customer-{i}",
            data={
                "customer_id": i,
                "tenure_months": 1 + i % 60,
                "plan": ("basic", "standard", "premium")[i % 3],
                "monthly_charges": round(20 + (i % 70) * 1.1, 2),
                "churned": int(i % 7 == 0),
                "support_calls": i % 4,
            },
        )
        for i in range(2001, 2001 + stream_events)
    )
    firehose = StreamIngestor(bus, lake, "churn", group="demo-firehose", types=["crm.customer.*"],
                              max_rows=max(1, stream_events // 4), max_seconds=2.0, relay=relay)  # fmt: skip
    stats = firehose.run(timeout=120, idle_timeout=3.0)
    console.print(
        f"  {stats.rows:,} records -> {stats.batches} batches (exactly once: checkpoints in the catalog)"
    )
    relay.relay_once()
    return runner


def show_catalog(console: Console, lake: Lake) -> None:
    table = Table(title="catalog")
    for column in ("dataset", "schema", "batches", "rows", "rows rejected"):
        table.add_column(column)
    for name in lake.names():
        s = lake.summary(name)
        table.add_row(
            name,
            f"v{s['schema_version']}",
            str(s["batches"]),
            f"{s['rows']:,}",
            str(s["rows_rejected"]),
        )
    console.print(table)
    result = query(lake, "SELECT plan, count(*) AS customers, round(avg(churned), 3) AS churn_rate "
                         "FROM churn GROUP BY plan ORDER BY plan")  # fmt: skip
    sql = Table(title="eventops sql: churn rate by plan")
    for column in result.column_names:
        sql.add_column(column)
    for row in result.to_pylist():
        sql.add_row(*(str(v) for v in row.values()))
    console.print(sql)
    derived = lake.batches("churn_features")
    if derived:
        chain = lineage(lake, "churn_features", derived[-1].id)
        origin = chain[-1] if chain else None
        if origin is not None:
            console.print(
                f"lineage: churn_features/{derived[-1].id[:8]} <- churn/{origin.id[:8]} ({origin.source})"
            )
