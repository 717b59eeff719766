"""Drift detection: `eventops.monitoring.drift_report` against Evidently's DataDriftPreset, in one run.

The workload: seeded reference and current tables of 100,000 and 1,000,000 rows, 20 numeric
columns (normal, exponential, uniform, Poisson counts with ties) and 5 categorical (string)
columns of 4 to 50 categories, written once (not timed) as zstd Parquet. The current table has
known drift: 0.3-standard-deviation mean shifts on x00 (normal), x05 (exponential) and x14
(uniform), and a new category mix on c0 (Jensen-Shannon distance 0.2).

Each measurement is its own child process (a fresh interpreter), timed from after its imports to
the verdict, reading both Parquet files included; its peak memory is the child's peak RSS
(`resource.getrusage`, imports included, so it also shows each stack's floor). The data is made
in a child process too: Linux carries a process's peak RSS across fork and exec into
`ru_maxrss`, so a parent that had held the tables would lend every child its own peak.

* **EventOps**: `drift_report` on the two files through `eventops.monitoring.sources.resolve`,
  as `eventops drift` reads them (Parquet read one column at a time);
* **EventOps, Tables**: `drift_report` on two `pq.read_table` Tables (both in memory);
* **scipy floor**: pandas reads both files, `ks_2samp` per numeric column, `chi2_contingency`
  per categorical one, Bonferroni at 0.05 (the plain script of FIELD-NOTES);
* **Evidently 0.7.23** `Report([DataDriftPreset()])` over `Dataset.from_pandas` frames with a
  `DataDefinition` naming the numeric and categorical columns (its defaults at these sizes:
  normalised Wasserstein >= 0.1, Jensen-Shannon >= 0.1), in its own environment,
  `benchmarks/.venv-evidently` (`evidently==0.7.23`, `pandas<3`, pyarrow), created on first use.

EventOps and scipy cases run `--repeat` times (default 3; median time, highest peak), Evidently
once per size (about two minutes at 1M rows). Goal: >= 10x faster than Evidently with the same
columns flagged. `--write-readme` replaces the drift section of benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from readme_section import machine_stamp, replace_section

HERE = Path(__file__).resolve().parent
EVIDENTLY_VENV = HERE / ".venv-evidently"
EVIDENTLY_REQUIREMENTS = ["evidently==0.7.23", "pandas<3", "pyarrow"]
SPEED_GOAL = 10.0
NUMERIC = [f"x{i:02d}" for i in range(20)]
CATEGORIES = {"c0": 4, "c1": 4, "c2": 10, "c3": 20, "c4": 50}
SHIFTED = ["c0", "x00", "x05", "x14"]

CHILD = r"""
import json, resource, sys, time
case, reference, current, numeric, categorical = sys.argv[1:6]
numeric, categorical = json.loads(numeric), json.loads(categorical)
version = ""
if case.startswith("eventops"):
    import pyarrow.parquet as pq
    from eventops.monitoring import drift_report
    from eventops.monitoring.sources import resolve
    started = time.perf_counter()
    if case == "eventops":
        ref, cur = resolve(reference, field="reference"), resolve(current, field="current")
    else:
        ref, cur = pq.read_table(reference), pq.read_table(current)
    drifted = drift_report(ref, cur).drifted_columns
elif case == "scipy":
    import pandas as pd
    from scipy import stats
    started = time.perf_counter()
    ref, cur = pd.read_parquet(reference), pd.read_parquet(current)
    alpha = 0.05 / (len(numeric) + len(categorical))
    drifted = [c for c in numeric if stats.ks_2samp(ref[c], cur[c]).pvalue < alpha]
    for c in categorical:
        counts = pd.concat([ref[c].value_counts(), cur[c].value_counts()], axis=1).fillna(0)
        if stats.chi2_contingency(counts.to_numpy().T).pvalue < alpha:
            drifted.append(c)
else:
    import evidently
    import pandas as pd
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset
    version = evidently.__version__
    started = time.perf_counter()
    ref, cur = pd.read_parquet(reference), pd.read_parquet(current)
    definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
    snapshot = Report([DataDriftPreset()]).run(
        current_data=Dataset.from_pandas(cur, data_definition=definition),
        reference_data=Dataset.from_pandas(ref, data_definition=definition),
    )
    drifted = []
    for metric in snapshot.dict()["metrics"]:
        config = metric["config"]
        if config.get("type") != "evidently:metric_v2:ValueDrift":
            continue
        score, threshold = metric["value"], config["threshold"]
        p_value = "p_value" in config["method"].lower().replace("-", "_")
        if (score < threshold) if p_value else (score >= threshold):
            drifted.append(config["column"])
elapsed = time.perf_counter() - started
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print("BENCH-RESULT " + json.dumps(
    {"seconds": elapsed, "peak_mb": peak, "drifted": sorted(drifted), "version": version}))
"""


@dataclass
class Result:
    seconds: float
    peak_mb: float
    drifted: list[str]
    version: str = ""


def make_tables(rows: int) -> tuple[pa.Table, pa.Table]:
    def one(seed: int, shift: bool) -> pa.Table:
        rng = np.random.default_rng(seed)
        columns: dict[str, pa.Array] = {}
        for i, name in enumerate(NUMERIC):
            delta = 0.3 if shift and name in SHIFTED else 0.0
            shape = i % 4
            if shape == 0:
                values = rng.normal(50 + 5 * delta, 5, rows)  # sd 5
            elif shape == 1:
                values = rng.exponential(2.0, rows) + 2 * delta  # sd 2
            elif shape == 2:
                values = rng.uniform(0, 1, rows) + delta / np.sqrt(12)
            else:
                values = rng.poisson(4, rows)
            columns[name] = pa.array(values)
        for name, distinct in CATEGORIES.items():
            labels = np.array([f"{name}_{k}" for k in range(distinct)])
            if name == "c0":
                shares = np.array([0.2, 0.3, 0.2, 0.3] if shift else [0.4, 0.3, 0.2, 0.1])
            else:
                shares = np.linspace(1.0, 2.0, distinct)
                shares /= shares.sum()
            columns[name] = pa.array(labels[rng.choice(distinct, rows, p=shares)])
        return pa.table(columns)

    return one(1, False), one(2, True)


def evidently_python() -> tuple[Path | None, str]:
    """The Evidently venv's python, created on first use; (None, why) when it cannot be had."""
    python = EVIDENTLY_VENV / "bin" / "python"
    check = [str(python), "-c", "import evidently, pandas, pyarrow"]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return python, ""
    print(f"creating {EVIDENTLY_VENV} with {' '.join(EVIDENTLY_REQUIREMENTS)} (first use)",
          file=sys.stderr, flush=True)  # fmt: skip
    try:
        subprocess.run([sys.executable, "-m", "venv", str(EVIDENTLY_VENV)], check=True)
        pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        done = subprocess.run([*pip, *EVIDENTLY_REQUIREMENTS], capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        return None, f"cannot create the Evidently venv: {exc}"
    if done.returncode != 0:
        return None, f"pip install failed: {(done.stderr or done.stdout).strip()[-500:]}"
    if subprocess.run(check, capture_output=True).returncode != 0:
        return None, "evidently does not import after installing it"
    return python, ""


def run_child(python: Path | str, case: str, reference: Path, current: Path) -> Result:
    categorical = list(CATEGORIES)
    args = [str(python), "-c", CHILD, case, str(reference), str(current)]
    args += [json.dumps(NUMERIC), json.dumps(categorical)]
    done = subprocess.run(args, capture_output=True, text=True, timeout=1800)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("BENCH-RESULT ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{case} failed: {(done.stderr or done.stdout).strip()[-1500:]}")
    return Result(**json.loads(lines[-1].removeprefix("BENCH-RESULT ")))


def measure(python: Path | str, case: str, files: tuple[Path, Path], repeat: int) -> Result:
    runs = [run_child(python, case, *files) for _ in range(repeat)]
    verdicts = {tuple(r.drifted) for r in runs}
    if len(verdicts) != 1:
        raise RuntimeError(f"{case}: verdicts differ between runs: {verdicts}")
    seconds = statistics.median(r.seconds for r in runs)
    return Result(seconds, max(r.peak_mb for r in runs), runs[0].drifted, runs[0].version)


CASES = {
    "eventops": "EventOps `drift_report`, Parquet read column by column",
    "eventops-tables": "EventOps `drift_report` on two in-memory Tables",
    "scipy": "scipy floor: pandas + `ks_2samp` / `chi2_contingency`, Bonferroni",
    "evidently": "Evidently {version} `DataDriftPreset`",
}


def table_markdown(results: dict[int, dict[str, Result]], notes: list[str]) -> str:
    def flagged(result: Result) -> str:
        return ", ".join(result.drifted) + ("" if result.drifted == SHIFTED else " (wrong)")

    lines = [
        f"Reference and current tables of 20 numeric + 5 categorical columns; known drift on "
        f"{', '.join(SHIFTED)}. Time from after imports to the verdict, both Parquet reads "
        f"included; peak RSS of the child process (imports included).",
        "",
        "| rows | case | time (s) | peak RSS (MB) | columns flagged |",
        "|---:|---|---:|---:|---|",
    ]
    for rows, cases in results.items():
        for case, result in cases.items():
            label = CASES[case].format(version=result.version)
            lines.append(
                f"| {rows:,} | {label} | {result.seconds:.2f} | {result.peak_mb:,.0f} | "
                f"{flagged(result)} |"
            )
    lines += [
        "",
        "| goal | rows | Evidently / EventOps time | Evidently / EventOps peak RSS | same columns | met |",
        "|---|---:|---:|---:|---|---|",
    ]
    for rows, cases in results.items():
        ours, theirs = cases["eventops"], cases.get("evidently")
        if theirs is None:
            lines.append(f"| >= {SPEED_GOAL:.0f}x faster than Evidently, same verdicts | "
                         f"{rows:,} | skipped | skipped | | |")  # fmt: skip
            continue
        speed, memory = theirs.seconds / ours.seconds, theirs.peak_mb / ours.peak_mb
        same = ours.drifted == theirs.drifted
        met = speed >= SPEED_GOAL and same
        lines.append(
            f"| >= {SPEED_GOAL:.0f}x faster than Evidently, same verdicts | {rows:,} | "
            f"{speed:.1f}x | {memory:.1f}x | {'yes' if same else 'no'} | "
            f"{'yes' if met else 'no'} |"
        )
    if notes:
        lines += ["", *[f"- {note}" for note in notes]]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs of the EventOps and scipy cases"
    )
    parser.add_argument("--no-evidently", action="store_true")
    parser.add_argument("--write-readme", action="store_true")
    parser.add_argument("--make", nargs=3, metavar=("ROWS", "REFERENCE", "CURRENT"),
                        help=argparse.SUPPRESS)  # fmt: skip
    args = parser.parse_args()
    if args.make:
        rows, *paths = args.make
        for table, path in zip(make_tables(int(rows)), paths, strict=True):
            pq.write_table(table, path, compression="zstd")
        return

    notes: list[str] = []
    evidently, why = (None, "--no-evidently") if args.no_evidently else evidently_python()
    if evidently is None:
        notes.append(f"Evidently skipped: {why}")
    results: dict[int, dict[str, Result]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-drift-") as tmp:
        for rows in args.rows:
            files = (Path(tmp) / f"reference-{rows}.parquet", Path(tmp) / f"current-{rows}.parquet")
            make = [sys.executable, __file__, "--make", str(rows), *map(str, files)]
            subprocess.run(make, check=True)
            cases: dict[str, Result] = {}
            for case in ("eventops", "eventops-tables", "scipy"):
                cases[case] = measure(sys.executable, case, files, args.repeat)
                print(f"{rows:,} {case}: {cases[case]}", file=sys.stderr, flush=True)
            if evidently is not None:
                cases["evidently"] = measure(evidently, "evidently", files, 1)
                print(f"{rows:,} evidently: {cases['evidently']}", file=sys.stderr, flush=True)
            results[rows] = cases
    notes.append(
        f"EventOps and scipy: median of {args.repeat} runs, highest peak; Evidently: one run."
    )
    text = table_markdown(results, notes)
    print(text)
    if args.write_readme:
        replace_section("drift", "Drift detection", f"{machine_stamp()}\n\n{text}")


if __name__ == "__main__":
    main()
