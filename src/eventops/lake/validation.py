"""Declared data checks, evaluated column-wise on a whole batch.

Each check yields a boolean "row is fine" mask computed with Arrow kernels; only the rows that
fail are turned into Python objects (for the quarantine file), so a clean million-row batch
costs a few vectorised passes. A row can break several checks: every broken rule is reported,
each naming the field and the rule, e.g. ``{"field": "age", "rule": "range", "message":
"-3 is below the minimum 0"}``.

Uniqueness is checked within the batch. Custom predicates are ``module:function`` references
(so a dataset spec stays serialisable in the catalog) taking the batch as a ``pyarrow.Table``
and returning one boolean per row, True for a good row.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field

from eventops.errors import ValidationError

Predicate = Callable[[pa.Table], Any]


class _Check(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NotNull(_Check):
    kind: Literal["not_null"] = "not_null"
    column: str


class Range(_Check):
    kind: Literal["range"] = "range"
    column: str
    min: float | None = None
    max: float | None = None


class AllowedValues(_Check):
    kind: Literal["allowed_values"] = "allowed_values"
    column: str
    values: list[Any]


class Unique(_Check):
    kind: Literal["unique"] = "unique"
    columns: list[str] = Field(min_length=1)


class CustomPredicate(_Check):
    kind: Literal["predicate"] = "predicate"
    name: str
    function: str = Field(description="module:function returning one bool per row")


Check = Annotated[
    NotNull | Range | AllowedValues | Unique | CustomPredicate, Field(discriminator="kind")
]


@dataclass
class Violation:
    row: int
    field: str
    rule: str
    message: str


@dataclass
class Outcome:
    """Which rows are bad and why."""

    rows: int
    bad: np.ndarray[Any, np.dtype[np.bool_]]
    violations: dict[int, list[Violation]] = field(default_factory=dict)

    @property
    def bad_count(self) -> int:
        return int(self.bad.sum())

    def add(
        self, mask_ok: np.ndarray[Any, np.dtype[np.bool_]], describe: Callable[[int], Violation]
    ) -> None:
        failing = np.flatnonzero(~mask_ok)
        self.bad[failing] = True
        for index in failing.tolist():
            self.violations.setdefault(index, []).append(describe(index))


def load_predicate(reference: str) -> Predicate:
    module_name, _, attr = reference.partition(":")
    if not module_name or not attr:
        raise ValidationError(
            f"{reference!r} must look like 'package.module:function'",
            field="checks.function",
            rule="reference",
        )
    try:
        target = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ValidationError(
            f"cannot load {reference!r}: {exc}", field="checks.function", rule="importable"
        ) from None
    if not callable(target):
        raise ValidationError(
            f"{reference!r} is not callable", field="checks.function", rule="callable"
        )
    return target  # type: ignore[no-any-return]


def _mask(array: Any) -> np.ndarray[Any, np.dtype[np.bool_]]:
    if isinstance(array, pa.ChunkedArray | pa.Array):
        array = pc.fill_null(array, False).to_numpy(zero_copy_only=False)
    return np.asarray(array, dtype=bool)


def evaluate(table: pa.Table, checks: list[Any]) -> Outcome:
    outcome = Outcome(rows=table.num_rows, bad=np.zeros(table.num_rows, dtype=bool))
    names = set(table.column_names)
    for check in checks:
        columns = check.columns if isinstance(check, Unique) else [getattr(check, "column", None)]
        for column in columns:
            if column is not None and column not in names:
                raise ValidationError(
                    f"check {check.kind} names column {column!r}, which the batch does not have",
                    field=column,
                    rule="column-exists",
                )
        _apply(table, check, outcome)
    return outcome


def _apply(table: pa.Table, check: Any, outcome: Outcome) -> None:
    if isinstance(check, NotNull):
        col = table.column(check.column)
        outcome.add(
            _mask(pc.is_valid(col)),
            lambda i: Violation(i, check.column, "not_null", "value is missing"),
        )
    elif isinstance(check, Range):
        col = table.column(check.column)
        ok = pc.is_valid(col)  # nulls are not_null's business
        if check.min is not None:
            ok = pc.and_kleene(ok, pc.greater_equal(col, check.min))
        if check.max is not None:
            ok = pc.and_kleene(ok, pc.less_equal(col, check.max))
        ok = pc.or_kleene(pc.is_null(col), ok)
        values = col

        def describe_range(i: int) -> Violation:
            value = values[i].as_py()
            bound = (
                f"minimum {check.min}"
                if check.min is not None and value < check.min
                else f"maximum {check.max}"
            )
            side = "below the" if "minimum" in bound else "above the"
            return Violation(i, check.column, "range", f"{value!r} is {side} {bound}")

        outcome.add(_mask(ok), describe_range)
    elif isinstance(check, AllowedValues):
        col = table.column(check.column)
        allowed = (
            pa.array(check.values, type=col.type) if len(check.values) else pa.array([], col.type)
        )
        ok = pc.or_kleene(pc.is_null(col), pc.is_in(col, value_set=allowed))
        outcome.add(
            _mask(ok),
            lambda i: Violation(
                i,
                check.column,
                "allowed_values",
                f"{col[i].as_py()!r} is not one of {check.values}",
            ),
        )
    elif isinstance(check, Unique):
        keys = table.select(check.columns)
        grouped = keys.append_column("__row", pa.array(np.arange(keys.num_rows))).group_by(
            check.columns
        )
        firsts = grouped.aggregate([("__row", "min")]).column("__row_min").to_numpy()
        ok = np.zeros(table.num_rows, dtype=bool)
        ok[firsts] = True
        label = ",".join(check.columns)
        outcome.add(
            ok, lambda i: Violation(i, label, "unique", "duplicate of an earlier row in the batch")
        )
    elif isinstance(check, CustomPredicate):
        result = load_predicate(check.function)(table)
        mask = _mask(result)
        if mask.shape != (table.num_rows,):
            raise ValidationError(
                f"predicate {check.name} returned {mask.shape[0] if mask.ndim else 'a scalar'} values "
                f"for {table.num_rows} rows",
                field="checks.function",
                rule="one-bool-per-row",
            )
        outcome.add(
            mask, lambda i: Violation(i, "*", check.name, f"predicate {check.function} is false")
        )
