"""Regenerate the example churn data (seeded, so the files in data/ do not change).

    python examples/churn/generate.py

customers.csv is a first extract; more.jsonl a later batch with a new column (`support_calls`)
and a few bad rows (negative tenure, an unknown plan, a missing id), to show schema evolution
and quarantine.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent / "data"
PLANS = ["basic", "standard", "premium"]


def customers(rng: np.random.Generator, start: int, count: int) -> list[dict[str, object]]:
    rows = []
    for i in range(start, start + count):
        tenure = int(rng.integers(1, 72))
        plan = PLANS[int(rng.integers(0, 3))]
        charges = round(float(rng.normal(30 + 25 * PLANS.index(plan), 8)), 2)
        risk = 1.5 - tenure / 30 + (charges - 50) / 40
        churned = int(rng.random() < 1 / (1 + np.exp(-risk)))
        rows.append({"customer_id": i, "tenure_months": tenure, "plan": plan,
                     "monthly_charges": charges, "churned": churned})  # fmt: skip
    return rows


def main() -> None:
    rng = np.random.default_rng(7)
    HERE.mkdir(exist_ok=True)
    first = customers(rng, 1, 800)
    with (HERE / "customers.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(first[0]))
        writer.writeheader()
        writer.writerows(first)
    later = customers(rng, 801, 200)
    for row in later:
        row["support_calls"] = int(rng.poisson(1.5))
    later[5]["tenure_months"] = -3
    later[17]["plan"] = "platinum"
    later[42]["customer_id"] = None
    with (HERE / "more.jsonl").open("w") as handle:
        for row in later:
            handle.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
