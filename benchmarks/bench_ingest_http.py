"""HTTP ingestion benchmark: the ingest API under uvicorn against committing the same batches
in-process, measured in one run.

* EventOps: `create_ingest_app` under uvicorn (one worker, one process of its own) on loopback;
  several concurrent httpx clients post N JSON bodies of 100 rows each. Each request parses the
  body, builds the Arrow table, commits the batch (Parquet + catalog + outbox) and relays its
  events to a SQLite bus, as `eventops ingest serve` does.
* Baseline: the same bodies, parsed and committed with `Lake.commit_batch` (and relayed) in one
  thread of this process, with no HTTP at all: what the lake costs by itself.

The ratio says how much of the lake's own speed survives the trip through HTTP (the work is the
same; concurrency may win back the parsing). Figures vary with the machine and the store (SQLite
by default, `--store-url postgresql+psycopg://...` for PostgreSQL): read the ratio.
`--write-readme` replaces the section between the http-ingest markers in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx

from eventops.events.bus import open_bus
from eventops.ingest import records_to_table
from eventops.lake import Lake, LakeStorage
from eventops.store import OutboxRelay, Store
from readme_section import machine_stamp, replace_section

HERE = Path(__file__).parent
COUNTRIES = ["FR", "DE", "US", "JP", "BR", "IN", "NG", "GB"]


@dataclass
class Result:
    requests: int
    rows: int
    seconds: float
    latencies_ms: list[float]

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.seconds

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def make_bodies(n: int, rows: int) -> list[bytes]:
    rng = random.Random(42)
    bodies = []
    for b in range(n):
        records = [
            {
                "id": b * rows + i,
                "user": f"u{rng.randrange(10_000)}",
                "amount": round(rng.uniform(0, 500), 2),
                "country": rng.choice(COUNTRIES),
                "ts": f"2026-01-{1 + i % 28:02d}T12:{i % 60:02d}:00Z",
                "returning": rng.random() < 0.3,
            }
            for i in range(rows)
        ]
        bodies.append(json.dumps(records).encode())
    return bodies


def open_lake(root: Path, store_url: str | None) -> Lake:
    store = Store(store_url or f"sqlite:///{root}/store.db")
    store.upgrade()
    return Lake(store, LakeStorage(str(root / "lake")))


# ---------------------------------------------------------------------- the server process
def serve(root: Path, fd: int, store_url: str | None, relay: bool) -> None:
    import uvicorn

    from eventops.ingest.http import create_ingest_app

    lake = open_lake(root, store_url)
    outbox = OutboxRelay(lake.store, open_bus(f"sqlite:///{root}/events.db")) if relay else None
    app = create_ingest_app(lake, relay=outbox)
    # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY only on sockets that say they are TCP,
    # and without it every answer waits ~40 ms for a delayed ACK (uvicorn's own --fd has that bug).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, fileno=fd)
    config = uvicorn.Config(app, workers=1, log_level="warning", access_log=False)
    uvicorn.Server(config).run(sockets=[sock])


def start_server(
    root: Path, store_url: str | None, relay: bool
) -> tuple[subprocess.Popen[bytes], str]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))  # bound here and inherited: no race for the port
    sock.listen(1024)
    port = sock.getsockname()[1]
    cmd = [sys.executable, __file__, "--serve", str(root), "--fd", str(sock.fileno())]
    if store_url:
        cmd += ["--store-url", store_url]
    if not relay:
        cmd.append("--no-relay")
    proc = subprocess.Popen(cmd, pass_fds=[sock.fileno()])
    sock.close()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit("the ingest server did not start")
        time.sleep(0.1)


# ---------------------------------------------------------------------- measurements
async def post_all(url: str, dataset: str, bodies: list[bytes], clients: int, rows: int) -> Result:
    latencies: list[float] = []
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    headers = {"content-type": "application/json"}

    async def client() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=120) as http:
            while not queue.empty():
                body = queue.get_nowait()
                sent = time.perf_counter()
                response = await http.post(
                    f"/datasets/{dataset}/records", content=body, headers=headers
                )
                latencies.append((time.perf_counter() - sent) * 1000)
                if response.status_code != 201:
                    raise SystemExit(f"unexpected answer {response.status_code}: {response.text}")

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    seconds = time.perf_counter() - start
    return Result(len(bodies), len(bodies) * rows, seconds, latencies)


def in_process(
    root: Path, name: str, bodies: list[bytes], rows: int, store_url: str | None, relay: bool
) -> Result:
    lake = open_lake(root, store_url)
    outbox = OutboxRelay(lake.store, open_bus(f"sqlite:///{root}/events.db")) if relay else None
    lake.commit_batch(name, records_to_table(json.loads(bodies[0])), source="bench")  # warm-up
    latencies: list[float] = []
    start = time.perf_counter()
    for body in bodies:
        began = time.perf_counter()
        lake.commit_batch(name, records_to_table(json.loads(body)), source="bench")
        if outbox is not None:
            outbox.relay_once()
        latencies.append((time.perf_counter() - began) * 1000)
    seconds = time.perf_counter() - start
    lake.store.close()
    return Result(len(bodies), len(bodies) * rows, seconds, latencies)


def run(
    n: int, rows: int, clients: int, store_url: str | None, relay: bool
) -> tuple[Result, Result]:
    bodies = make_bodies(n, rows)
    dataset = f"bench_http_{uuid.uuid4().hex[:8]}"  # fresh names: a shared store may be reused
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        proc, url = start_server(root / "http", store_url, relay)
        try:
            warm = httpx.post(
                f"{url}/datasets/{dataset}/records",
                content=bodies[0],
                headers={"content-type": "application/json"},
            )
            assert warm.status_code == 201, warm.text
            http = asyncio.run(post_all(url, dataset, bodies, clients, rows))
            summary = httpx.get(f"{url}/datasets/{dataset}").json()
            assert summary["rows"] == (n + 1) * rows, summary
        finally:
            proc.terminate()
            proc.wait(30)
        direct = in_process(root / "direct", f"{dataset}_direct", bodies, rows, store_url, relay)
    return http, direct


def table(http: Result, direct: Result, rows: int, clients: int, store: str) -> str:
    ratio = http.rows_per_s / direct.rows_per_s
    return "\n".join(
        [
            "| case | requests/s | rows/s | p50 ms | p99 ms | baseline rows/s | ratio |",
            "|---|---:|---:|---:|---:|---:|---:|",
            f"| POST {rows}-row JSON, {clients} clients, {store} store | {http.requests_per_s:,.0f} | "
            f"{http.rows_per_s:,.0f} | {http.percentile(0.5):.1f} | {http.percentile(0.99):.1f} | "
            f"{direct.rows_per_s:,.0f} | {ratio:.2f} |",
        ]
    )


def write_readme(text: str, requests: int) -> None:
    stamp = machine_stamp().rstrip("._").lstrip("_")
    intro = (
        f"_{requests:,} requests; baseline: the same batches committed in-process with "
        f"`Lake.commit_batch`, one thread. {stamp}._"
    )
    replace_section("http-ingest", "HTTP ingestion (`bench_ingest_http.py`)", f"{intro}\n\n{text}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=2000, help="bodies to post")
    parser.add_argument("--rows", type=int, default=100, help="rows per body")
    parser.add_argument("--clients", type=int, default=4, help="concurrent HTTP clients")
    parser.add_argument(
        "--store-url", default=None, help="metadata store (default: SQLite in a temp folder)"
    )
    parser.add_argument("--no-relay", action="store_true", help="do not relay events to a bus")
    parser.add_argument("--write-readme", action="store_true")
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--fd", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        serve(args.serve, args.fd, args.store_url, not args.no_relay)
        return
    http, direct = run(args.requests, args.rows, args.clients, args.store_url, not args.no_relay)
    store = "PostgreSQL" if args.store_url and args.store_url.startswith("postgres") else "SQLite"
    text = table(http, direct, args.rows, args.clients, store)
    print(text)
    if args.write_readme:
        write_readme(text, args.requests)


if __name__ == "__main__":
    main()
