"""Data-quality checks of a current window against its reference.

Drift asks whether values are distributed differently; these checks ask whether the data is
still the data the model was built for, and they catch what drift tests cannot see by design
(drift leaves missing values out, and an unseen category is one cell among many for chi-square):

| check | finding when |
|---|---|
| `missing_column` | a reference column is absent from the current data |
| `new_column` | the current data has a column the reference did not |
| `type_change` | a column's Arrow type differs (`int64` -> `double` included: it often means a parsing change upstream) |
| `empty` | the current data has no rows |
| `null_rate` | the share of missing values (null, NaN, inf) rose by more than `null_increase` (absolute, default 0.05) |
| `out_of_range` | more than `max_out_of_range` (default 0.1%) of the values lie outside the reference's [min, max] widened by `range_margin` x its width on each side (default 10%) |
| `unseen_category` | more than `max_unseen` (default 0: any) of the values are categories the reference never had |

The out-of-range default tolerates 0.1% of values: a reference's extremes are themselves a
sample, and a long-tailed column (incomes, durations) puts a few new values past them in every
window, while a sentinel such as -999 or a change of unit moves far more than that. The share is
exact whenever the current window has at most 65,536 values, and whether any value is out of
range at all is always exact (profiles keep the true min and max); beyond that size it is
estimated within 1/16,384 (see `eventops.monitoring.profile`).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from eventops.errors import ValidationError
from eventops.monitoring.profile import CategoricalProfile, DataProfile, NumericProfile

SHOWN_CATEGORIES = 5


@dataclass(frozen=True)
class QualityFinding:
    column: str
    check: str
    value: float | str | None
    threshold: float | str | None
    message: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> QualityFinding:
        return cls(**{k: data[k] for k in ("column", "check", "value", "threshold", "message")})


def check_quality(
    reference: Any,
    current: Any,
    *,
    columns: Iterable[str] | None = None,
    categorical: Collection[str] = (),
    null_increase: float = 0.05,
    range_margin: float = 0.1,
    max_out_of_range: float = 0.001,
    max_unseen: float = 0.0,
) -> list[QualityFinding]:
    """Findings for `current` against `reference` (Tables, DataFrames, sources or profiles)."""
    for name, value, upper in (
        ("null_increase", null_increase, 1.0),
        ("range_margin", range_margin, math.inf),
        ("max_out_of_range", max_out_of_range, 1.0),
        ("max_unseen", max_unseen, 1.0),
    ):
        if not 0 <= value <= upper:
            raise ValidationError(
                f"must be between 0 and {upper}, got {value}", field=name, rule="range"
            )
    ref = (
        reference
        if isinstance(reference, DataProfile)
        else DataProfile.of(reference, columns=columns, categorical=categorical, field="reference")
    )
    cur = (
        current
        if isinstance(current, DataProfile)
        else DataProfile.of(current, columns=list(ref.columns), kinds=ref.kinds(), field="current")
    )
    findings = schema_findings(ref, cur)
    if cur.rows == 0:
        findings.append(QualityFinding("", "empty", 0, 1, "the current data has no rows"))
        return findings
    for name, before in ref.columns.items():
        after = cur.columns.get(name)
        if after is None:
            continue
        findings.extend(_null_rate(name, before, after, ref.rows, cur.rows, null_increase))
        if isinstance(before, NumericProfile) and isinstance(after, NumericProfile):
            findings.extend(_out_of_range(name, before, after, range_margin, max_out_of_range))
        elif isinstance(before, CategoricalProfile) and isinstance(after, CategoricalProfile):
            findings.extend(_unseen(name, before, after, max_unseen))
    return findings


def schema_findings(reference: DataProfile, current: DataProfile) -> list[QualityFinding]:
    out: list[QualityFinding] = []
    for name, kind in reference.types.items():
        if name not in current.types:
            out.append(
                QualityFinding(name, "missing_column", None, kind, f"{name!r} ({kind}) is missing")
            )
        elif current.types[name] != kind:
            now = current.types[name]
            out.append(
                QualityFinding(
                    name, "type_change", now, kind, f"{name!r} changed type from {kind} to {now}"
                )
            )
    for name, kind in current.types.items():
        if name not in reference.types:
            out.append(
                QualityFinding(
                    name, "new_column", kind, None, f"{name!r} ({kind}) is not in the reference"
                )
            )
    return out


def _null_rate(
    name: str,
    before: NumericProfile | CategoricalProfile,
    after: NumericProfile | CategoricalProfile,
    ref_rows: int,
    cur_rows: int,
    increase: float,
) -> list[QualityFinding]:
    was = before.missing / ref_rows if ref_rows else 0.0
    now = after.missing / cur_rows
    limit = was + increase
    if now <= limit:
        return []
    message = f"{name!r}: {now:.1%} missing, was {was:.1%} (allowed up to {limit:.1%})"
    return [QualityFinding(name, "null_rate", round(now, 6), round(limit, 6), message)]


def _out_of_range(
    name: str, before: NumericProfile, after: NumericProfile, margin: float, allowed: float
) -> list[QualityFinding]:
    if before.count == 0 or after.count == 0:
        return []
    width = before.max - before.min
    low, high = before.min - margin * width, before.max + margin * width
    if after.min >= low and after.max <= high:
        return []
    outside = (after.count_below(low) if after.min < low else 0.0) + (
        after.count_above(high) if after.max > high else 0.0
    )
    outside = max(outside, 1.0)  # min/max are exact: at least one value is outside
    share = outside / after.count
    if share <= allowed:
        return []
    about = "" if after.exact else "about "
    message = (
        f"{name!r}: {about}{outside:,.0f} value(s) ({share:.2%}) outside [{low:.6g}, {high:.6g}]"
        f" (reference min/max widened by {margin:.0%}); current range [{after.min:.6g},"
        f" {after.max:.6g}]"
    )
    return [QualityFinding(name, "out_of_range", round(share, 6), allowed, message)]


def _unseen(
    name: str, before: CategoricalProfile, after: CategoricalProfile, allowed: float
) -> list[QualityFinding]:
    if before.truncated or after.count == 0:
        return []  # the reference kept only its most frequent categories: unseen is unknowable
    unseen = {k: v for k, v in after.counts.items() if k not in before.counts}
    total = sum(unseen.values()) + after.other
    share = total / after.count
    if total == 0 or share <= allowed:
        return []
    ranked = sorted(unseen, key=lambda k: (-unseen[k], k))
    shown = ", ".join(repr(k) for k in ranked[:SHOWN_CATEGORIES])
    more = f" and {len(ranked) - SHOWN_CATEGORIES} more" if len(ranked) > SHOWN_CATEGORIES else ""
    message = (
        f"{name!r}: {share:.2%} of values are categories the reference never had: {shown}{more}"
    )
    return [QualityFinding(name, "unseen_category", round(share, 6), allowed, message)]
