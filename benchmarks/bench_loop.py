"""Loop latency: from drifted traffic to the retrained version serving, stage by stage.

Runs the narrated demo (`eventops demo --timeline-json`) on embedded defaults — SQLite store and
bus, file lake, MLflow on SQLite, steps inline — and reads back when each stage of its closed
loop was seen: drift detected, alert fired, retraining requested and finished, the new version
registered and gated, the server swapped. Steady load runs through the whole loop; the failed
requests are counted. Each stage's time is what it took after the one before.

    python benchmarks/bench_loop.py [--runs 3] [--write-readme]

There is no peer running this loop on one machine to compare with; the figures are absolute, and
the breakdown says where the time goes (training dominates).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from readme_section import machine_stamp, replace_section

ROOT = Path(__file__).resolve().parents[1]
EVENTOPS = Path(sys.executable).parent / "eventops"

# stage label (prefix of the demo's timeline line) -> name in the table
STAGES = [
    ("their traffic starts", "drifted traffic starts"),
    ("monitor.drift.detected", "drift detected (window closed, checked, event)"),
    ("alert.fired", "alert fired (log channel)"),
    ("pipeline.run.requested", "retraining requested (on_drift trigger)"),
    ("pipeline.run.succeeded", "retraining finished (inline, MLflow tracked)"),
    ("model.version.registered", "registered and gated (candidate vs champion)"),
    ("deployment.updated", "server swapped to the new version"),
]


def one_run() -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "timeline.json"
        subprocess.run(
            [str(EVENTOPS), "demo", "--home", f"{tmp}/home", "--timeline-json", str(out)],
            cwd=ROOT,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        return dict(json.loads(out.read_text()))


def stage_times(run: dict[str, object]) -> dict[str, float]:
    """Seconds each stage took after the previous one, from the drifted traffic's start."""
    seen: dict[str, float] = {}
    for item in run["stages"]:  # type: ignore[attr-defined]
        for prefix, name in STAGES:
            if str(item["stage"]).startswith(prefix) and name not in seen:
                seen[name] = float(item["at_s"])
    times, previous = {}, None
    for _, name in STAGES:
        if name not in seen:
            raise SystemExit(f"the demo's timeline has no stage {name!r}: {run}")
        if previous is not None:
            times[name] = seen[name] - previous
        previous = seen[name]
    start = seen[STAGES[0][1]]
    times["total: drifted traffic -> new version serving"] = seen[STAGES[-1][1]] - start
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--write-readme", action="store_true")
    args = parser.parse_args()
    runs = [one_run() for _ in range(args.runs)]
    per_stage = [stage_times(r) for r in runs]
    failed = sum(int(r.get("failed", 0)) for r in runs)  # type: ignore[call-overload]
    sent = sum(int(r.get("requests", 0)) for r in runs)  # type: ignore[call-overload]
    lines = [
        machine_stamp(f"median of {args.runs} runs of `eventops demo`"),
        "",
        "| stage | seconds (median) | min | max |",
        "|---|---:|---:|---:|",
    ]
    for name in per_stage[0]:
        values = [p[name] for p in per_stage]
        lines.append(
            f"| {name} | {statistics.median(values):.2f} | {min(values):.2f} | {max(values):.2f} |"
        )
    lines += [
        "",
        f"Steady load (4 clients) through the loops: {sent:,} requests, **{failed} failed**.",
    ]
    body = "\n".join(lines)
    print(body)
    if args.write_readme:
        replace_section("loop", "Closed loop latency (`bench_loop.py`)", body)


if __name__ == "__main__":
    main()
