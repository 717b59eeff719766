"""File ingestion into the lake against pyarrow alone, measured in one run.

The workload: a seeded 1,000,000-row table, 20 numeric columns (10 float64, 10 int64) and 5
categorical (string) columns, written once (not timed) as CSV and as Parquet.

* **pyarrow (the limit):** read the file (`pyarrow.csv.read_csv` / `pq.read_table`) and write it
  as one zstd Parquet file. Nothing can ingest faster than this.
* **EventOps:** read the same file the same way and `Lake.commit_batch` it into a fresh local
  lake over a fresh SQLite store: schema inference, checks, per-batch statistics, the zstd
  Parquet file (temporary name + rename), the manifest row and the events, in one transaction.

Each case runs `--repeat` times (default 5), alternating, and the median is reported. Goals: Parquet ingest
at >= 50% of pyarrow's speed, CSV ingest >= 200,000 rows/s. `--profile` runs `commit_batch`
once more under cProfile and shows where its time goes. `--write-readme` replaces the
file-ingest section of benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from eventops.lake import Lake, LakeStorage
from eventops.store import Store
from readme_section import machine_stamp, replace_section

HERE = Path(__file__).parent
PARQUET_GOAL = 0.5  # of pyarrow's rows/s
CSV_GOAL = 200_000  # rows/s
CATEGORIES = {  # column -> number of distinct values
    "country": 30,
    "plan": 4,
    "channel": 8,
    "device": 12,
    "segment": 200,
}


def make_table(rows: int, seed: int = 42) -> pa.Table:
    rng = np.random.default_rng(seed)
    columns: dict[str, pa.Array] = {}
    for i in range(10):
        columns[f"f{i:02d}"] = pa.array(rng.normal(i, 1 + i / 10, rows))
    for i in range(10):
        columns[f"i{i:02d}"] = pa.array(rng.integers(0, 10 ** (i % 6 + 1), rows))
    for name, distinct in CATEGORIES.items():
        labels = np.array([f"{name}_{k}" for k in range(distinct)])
        weights = rng.dirichlet(np.ones(distinct))
        columns[name] = pa.array(labels[rng.choice(distinct, rows, p=weights)])
    return pa.table(columns)


# ---------------------------------------------------------------------- the two contenders
def read_file(path: Path) -> pa.Table:
    """How the product's file ingestion reads a file (and how pyarrow alone does)."""
    if path.suffix == ".csv":
        return pacsv.read_csv(path)
    return pq.read_table(path)


def pyarrow_ingest(path: Path, work: Path) -> tuple[float, int]:
    started = time.perf_counter()
    table = read_file(path)
    pq.write_table(table, work / "out.parquet", compression="zstd")
    return time.perf_counter() - started, table.num_rows


def fresh_lake(work: Path) -> Lake:
    store = Store(f"sqlite:///{work}/eventops.db")
    store.upgrade()
    return Lake(store, LakeStorage(str(work / "lake")))


def eventops_ingest(path: Path, work: Path) -> tuple[float, int]:
    lake = fresh_lake(work)  # creating and migrating the store is set-up, not ingest
    try:
        started = time.perf_counter()
        table = read_file(path)
        result = lake.commit_batch("bench", table, source=f"file:{path.name}")
        elapsed = time.perf_counter() - started
    finally:
        lake.store.close()
    if result.rows_accepted != table.num_rows:
        raise RuntimeError(f"EventOps did not accept every row: {result.reason}")
    return elapsed, table.num_rows


Runner = Callable[[Path, Path], tuple[float, int]]


def timed(run: Runner, path: Path, scratch: Path) -> tuple[float, int]:
    """Seconds and rows for one run in an empty work folder."""
    with tempfile.TemporaryDirectory(dir=scratch) as folder:
        return run(path, Path(folder))


# ---------------------------------------------------------------------- measuring
@dataclass
class Row:
    source: str
    pyarrow: float  # rows/s
    eventops: float  # rows/s

    @property
    def ratio(self) -> float:
        return self.eventops / self.pyarrow

    def goal(self) -> str:
        if self.source == "Parquet":
            met = self.ratio >= PARQUET_GOAL
            return f"{'met' if met else 'MISSED'} (>= {PARQUET_GOAL:.0%} of pyarrow)"
        met = self.eventops >= CSV_GOAL
        return f"{'met' if met else 'MISSED'} (>= {CSV_GOAL:,} rows/s)"


def measure(files: dict[str, Path], scratch: Path, repeat: int) -> list[Row]:
    rows: list[Row] = []
    for source, path in files.items():
        times: dict[str, list[float]] = {"pyarrow": [], "eventops": []}
        count = 0
        for _ in range(repeat):  # alternate, so drift in the machine hits both
            for name, run in (("pyarrow", pyarrow_ingest), ("eventops", eventops_ingest)):
                seconds, count = timed(run, path, scratch)
                times[name].append(seconds)
                print(f"  {source:8} {name:9} {seconds:6.2f} s", file=sys.stderr)
        rows.append(
            Row(
                source,
                count / statistics.median(times["pyarrow"]),
                count / statistics.median(times["eventops"]),
            )
        )
    return rows


# ---------------------------------------------------------------------- profiling
Part = tuple[str, list[tuple[str, str]]]  # label, [(file suffix, function)] summed
PARTS: list[Part] = [
    ("commit_batch, total", [("lake/catalog.py", "commit_batch")]),
    ("catalog reads (spec, duplicate check, version)", [
        ("lake/catalog.py", "_prepare")]),
    ("reconcile (schema inference, casts)", [("lake/schemas.py", "reconcile")]),
    ("evaluate (checks; none declared)", [("lake/validation.py", "evaluate")]),
    ("table_stats (per-batch statistics)", [("lake/stats.py", "table_stats")]),
    ("- numeric columns (min/max/mean/std/percentiles)", [("lake/stats.py", "numeric_stats")]),
    # write_parquet runs in a worker thread beside table_stats, which cProfile does not see:
    # the total minus the parts above is mostly waiting for it.
    ("store transactions (begin, flush, commit)", [("store/database.py", "session")]),
    ("events (build, to_json, outbox rows)", [
        ("lake/catalog.py", "_ingested_event"), ("lake/catalog.py", "_schema_event"),
        ("store/outbox.py", "add_events")]),
    ("JSON encoding (stats column, event payloads)", [("json/__init__.py", "dumps")]),
]  # fmt: skip


def cumulative(stats: pstats.Stats, suffix: str, function: str) -> float:
    """Cumulative seconds of `function` in a file ending with `suffix` (largest match, so a
    wrapper and the function it wraps under the same name are not counted twice)."""
    found = [
        ct
        for (filename, _line, name), (_cc, _nc, _tt, ct, _callers) in stats.stats.items()  # type: ignore[attr-defined]
        if name == function and filename.replace(os.sep, "/").endswith(suffix)
    ]
    return max(found, default=0.0)


def own_time(stats: pstats.Stats, suffix: str, function: str) -> float:
    return sum(
        tt
        for (filename, _line, name), (_cc, _nc, tt, _ct, _callers) in stats.stats.items()  # type: ignore[attr-defined]
        if name == function and filename.replace(os.sep, "/").endswith(suffix)
    )


def profile(path: Path, scratch: Path, limit: int = 12) -> str:
    """cProfile one `commit_batch` of the file's table; a breakdown and the top functions."""
    table = read_file(path)
    with tempfile.TemporaryDirectory(dir=scratch) as folder:
        lake = fresh_lake(Path(folder))
        profiler = cProfile.Profile()
        try:
            profiler.runcall(lake.commit_batch, "bench", table, source="profile")
        finally:
            lake.store.close()
    stats = pstats.Stats(profiler)
    total = cumulative(stats, "lake/catalog.py", "commit_batch")
    lines = [
        f"Where one `commit_batch` spends its time ({table.num_rows:,} rows read from "
        f"{path.suffix[1:]}; cProfile, so read the shares, not the seconds):",
        "",
        "| part | seconds | share |",
        "|---|---:|---:|",
    ]
    for label, functions in PARTS:
        seconds = sum(cumulative(stats, suffix, name) for suffix, name in functions)
        if label == "table_stats (per-batch statistics)":
            kernels = seconds - cumulative(stats, "lake/stats.py", "percentiles")
        lines.append(f"| {label} | {seconds:.3f} | {seconds / total:.0%} |")
        if label.startswith("- percentiles"):
            lines.append(
                "| - min/max, mean, std, NaN count, value_counts | "
                f"{kernels:.3f} | {kernels / total:.0%} |"
            )
        if label.startswith("write_parquet"):
            copy = own_time(stats, "lake/storage.py", "write_parquet")
            lines.append(
                f"| - buffer to bytes (a copy of the file) | {copy:.3f} | {copy / total:.0%} |"
            )
    rows = sorted(stats.stats.items(), key=lambda kv: -kv[1][2])[:limit]  # type: ignore[attr-defined]
    lines += [
        "",
        "Top functions by own time:",
        "",
        "| function | own s | calls |",
        "|---|---:|---:|",
    ]
    for (filename, line, name), (_cc, calls, own, _ct, _callers) in rows:
        where = "/".join(Path(filename).parts[-2:]) + f":{line} " if filename != "~" else ""
        lines.append(f"| `{where}{name}` | {own:.3f} | {calls} |")
    return "\n".join(lines)


def stats_by_kind(path: Path) -> str:
    """`column_stats` timed per kind of column, without a profiler."""
    from eventops.lake.stats import column_stats, percentiles

    table = read_file(path)
    spent = {"numeric": 0.0, "numeric, percentiles only": 0.0, "categorical": 0.0}
    for name in table.column_names:
        column = table.column(name)
        kind = "categorical" if pa.types.is_string(column.type) else "numeric"
        started = time.perf_counter()
        column_stats(column)
        spent[kind] += time.perf_counter() - started
        if kind == "numeric":
            started = time.perf_counter()
            percentiles(column)
            spent["numeric, percentiles only"] += time.perf_counter() - started
    counts = {"numeric": 20, "numeric, percentiles only": 20, "categorical": 5}
    lines = ["`column_stats` by kind of column (no profiler):", "",
             "| columns | seconds | per column |", "|---|---:|---:|"]  # fmt: skip
    for kind, seconds in spent.items():
        lines.append(f"| {kind} ({counts[kind]}) | {seconds:.3f} | {seconds / counts[kind]:.4f} |")
    return "\n".join(lines)


# ---------------------------------------------------------------------- output
def table_markdown(rows: list[Row], nrows: int) -> str:
    lines = [
        f"File ingest, {nrows:,} rows x 25 columns (20 numeric, 5 categorical), median of runs:",
        "",
        "| file | pyarrow read + zstd write (rows/s) | EventOps read + `commit_batch` (rows/s) "
        "| EventOps / pyarrow | goal |",
        "|---|---:|---:|---:|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row.source} | {row.pyarrow:,.0f} | {row.eventops:,.0f} | {row.ratio:.0%} "
            f"| {row.goal()} |"
        )
    return "\n".join(lines)


def write_readme(text: str) -> None:
    stamp = machine_stamp(f"pyarrow {pa.__version__}")
    replace_section("file-ingest", "File ingest", f"{stamp}\n\n{text}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--profile", action="store_true", help="profile commit_batch (cProfile)")
    parser.add_argument("--write-readme", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        scratch = Path(tmp)
        table = make_table(args.rows)
        files = {"Parquet": scratch / "input.parquet", "CSV": scratch / "input.csv"}
        pq.write_table(table, files["Parquet"])
        pacsv.write_csv(table, files["CSV"])
        del table
        sizes = {name: path.stat().st_size / 2**20 for name, path in files.items()}
        print(f"input: {args.rows:,} rows; " + ", ".join(f"{k} {v:.0f} MiB" for k, v in sizes.items()),
              file=sys.stderr)  # fmt: skip
        rows = measure(files, scratch, args.repeat)
        text = table_markdown(rows, args.rows)
        if args.profile:
            text += "\n\n" + profile(files["Parquet"], scratch)
            text += "\n\n" + stats_by_kind(files["Parquet"])
    print(text)
    if args.write_readme:
        write_readme(text)


if __name__ == "__main__":
    main()
