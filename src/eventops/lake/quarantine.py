"""What a quarantine file says about each bad row, and the one-line reason for a rejection."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pyarrow as pa

from eventops.lake.validation import Outcome


def quarantine_lines(
    name: str, batch_id: str, table: pa.Table, outcome: Outcome, source: str,
    raw: Mapping[str, pa.ChunkedArray],
) -> bytes:  # fmt: skip
    """Bad rows as JSON lines: the row (with the raw text where a value did not parse), and
    every field and rule it broke."""
    lines = []
    for index in sorted(outcome.violations):
        record = {c: _jsonable(table.column(c)[index].as_py()) for c in table.column_names}
        for column, values in raw.items():
            record[column] = values[index].as_py()
        errors = [
            {"field": v.field, "rule": v.rule, "message": v.message}
            for v in outcome.violations[index]
        ]
        lines.append(json.dumps({"dataset": name, "batch_id": batch_id, "source": source, "row_number": index,
                                 "row": record, "errors": errors}, default=str))  # fmt: skip
    return ("\n".join(lines) + "\n").encode()


def summarise(outcome: Outcome) -> str:
    """`3 bad row(s) (age: range x2; plan: allowed_values x1)`: the reason kept with a rejection."""
    rules: dict[tuple[str, str], int] = {}
    for violations in outcome.violations.values():
        for v in violations:
            rules[(v.field, v.rule)] = rules.get((v.field, v.rule), 0) + 1
    parts = [f"{f}: {r} x{n}" for (f, r), n in sorted(rules.items(), key=lambda kv: -kv[1])]
    return f"{outcome.bad_count} bad row(s) ({'; '.join(parts[:10])})"


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and value != value:  # NaN
        return None
    return value
