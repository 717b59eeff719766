"""Profiles: each column summarised once, small enough to keep, exact enough to test against.

A drift check compares two distributions many times over (KS, PSI, Wasserstein for a numeric
column); doing it on profiles instead of raw columns means each column is read and sorted once,
the raw values are dropped right after, and a reference can be summarised once and compared
with any number of later windows.

* `NumericProfile` keeps the empirical CDF as sorted distinct points with the exact number of
  values at or below (`upto`) and strictly below (`below`) each. Up to `EXACT_VALUES` values
  (65,536) it keeps every distinct value, so every measure is exact and matches scipy. Beyond
  that it keeps the values at `GRID_POINTS` (16,384) evenly spaced ranks, with exact counts
  there; between two points the CDF rises by at most 1/16,384 and is interpolated linearly. A
  KS statistic is then within 2/16,384 of the exact one (measured: ~1.5e-5 on 300,000 values
  with a 30% atom; a 0.3-standard-deviation shift moves it by 0.12), its p-value within a few
  percent, Wasserstein within 0.3%, and a profile takes ~400 KB whatever the rows. (A 65,536
  grid is 4x finer and makes every comparison 4x slower, for p-values 3x closer.)
* `CategoricalProfile` keeps every category's count (the `MAX_CATEGORIES` most frequent beyond
  that, the rest lumped as `other`).
* `DataProfile` is a table's profile: the Arrow type of every column (for schema checks), the
  summarised columns, and the columns it skipped with the reason.

Missing values (null, NaN, +-inf) are counted apart and left out of the distributions: a change
in how many values are missing is a data-quality finding, not a change of distribution.
"""

from __future__ import annotations

import math
import os
from collections.abc import Collection, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any

import numpy as np
import pyarrow as pa

from eventops.monitoring.frames import (
    Kind,
    accepts,
    as_source,
    category_counts,
    finite_values,
    kind_of,
)

EXACT_VALUES = 65_536
GRID_POINTS = 16_384
MAX_CATEGORIES = 10_000
PARALLEL_CELLS = 200_000  # below this many values, threads cost more than they save


HUGE = 2.0**500  # beyond this magnitude, squares and differences of values overflow float64


def unit_of(magnitude: float) -> float:
    """1 for ordinary magnitudes; else a power of two that brings `magnitude` near 1."""
    return 1.0 if magnitude <= HUGE else math.ldexp(1.0, math.frexp(magnitude)[1] - 1)


def distinct(ordered: np.ndarray) -> np.ndarray:
    """The distinct values of a sorted array (np.unique hashes, then sorts again: 10x slower)."""
    if len(ordered) < 2:
        return ordered
    return ordered[np.concatenate(([True], ordered[1:] != ordered[:-1]))]


@dataclass(frozen=True, eq=False)
class NumericProfile:
    """The empirical CDF of a numeric column's finite values (see the module docstring)."""

    count: int
    missing: int
    values: np.ndarray  # sorted distinct support points
    upto: np.ndarray  # int64: values <= values[i]
    below: np.ndarray  # int64: values < values[i]
    exact: bool
    mean: float
    std: float

    @property
    def kind(self) -> Kind:
        return "numeric"

    @property
    def min(self) -> float:
        return float(self.values[0]) if self.count else float("nan")

    @property
    def max(self) -> float:
        return float(self.values[-1]) if self.count else float("nan")

    @classmethod
    def of(
        cls,
        values: np.ndarray,
        missing: int = 0,
        *,
        exact_values: int = EXACT_VALUES,
        grid: int = GRID_POINTS,
    ) -> NumericProfile:
        """Profile of finite float values (any order); `missing` counts those left out."""
        ordered = np.sort(np.asarray(values, dtype=np.float64))
        n = len(ordered)
        if n == 0:
            empty = np.empty(0, dtype=np.int64)
            return cls(0, missing, np.empty(0), empty, empty, True, float("nan"), float("nan"))
        if n <= exact_values:
            last = np.flatnonzero(np.append(ordered[1:] != ordered[:-1], True))
            points = ordered[last]
            upto = (last + 1).astype(np.int64)
            below = np.concatenate(([0], upto[:-1])).astype(np.int64)
            exact = True
        else:
            ranks = distinct(np.linspace(0, n - 1, grid).round().astype(np.int64))
            if np.any(ordered[1:] == ordered[:-1]):  # ties: count them
                points = distinct(ordered[ranks])
                upto = np.searchsorted(ordered, points, side="right").astype(np.int64)
                below = np.searchsorted(ordered, points, side="left").astype(np.int64)
            else:  # distinct values: the rank is the count below
                points, upto, below = ordered[ranks], ranks + 1, ranks
            exact = False
        # Values near the float64 limit overflow a plain sum: take the moments of scaled values.
        unit = unit_of(max(abs(ordered[0]), abs(ordered[-1])))
        scaled = ordered / unit if unit != 1.0 else ordered
        mean, std = float(scaled.mean()) * unit, float(scaled.std()) * unit
        return cls(n, missing, points, upto, below, exact, mean, std)

    def scaled(self, unit: float) -> NumericProfile:
        """The same profile with every value divided by `unit` (a power of two: exact)."""
        return replace(self, values=self.values / unit, mean=self.mean / unit, std=self.std / unit)

    def cdf(self, x: np.ndarray) -> np.ndarray:
        """F(x) = share of values <= x: exact at the points, interpolated between them."""
        return self._count(np.asarray(x, dtype=np.float64), strict=False) / max(self.count, 1)

    def count_below(self, x: float) -> float:
        """How many values are < x (an estimate within count/GRID_POINTS when not exact)."""
        return float(self._count(np.array([x], dtype=np.float64), strict=True)[0])

    def count_above(self, x: float) -> float:
        """How many values are > x (same precision as `count_below`)."""
        return self.count - float(self._count(np.array([x], dtype=np.float64), strict=False)[0])

    def _count(self, x: np.ndarray, *, strict: bool) -> np.ndarray:
        """Values < x (strict) or <= x, from the points and a linear ramp between them.

        With v[i-1] the last point below x (or at it, not strict) and v[i] the next, the count
        rises from upto[i-1] to below[i] across the gap; the two are equal when every distinct
        value is kept, so an exact profile is one lookup and no ramp.
        """
        if self.count == 0:
            return np.zeros(len(x), dtype=np.float64)
        idx = np.searchsorted(self.values, x, side="left" if strict else "right")
        low, high = self._steps
        count = low[idx].astype(np.float64)
        if self.exact:
            return count
        span = high[idx] - low[idx]
        ramp = span > 0  # never at either end: below[0] == 0 and upto[-1] == count
        if ramp.any():
            i = idx[ramp]
            left, right = self.values[i - 1], self.values[i]
            count[ramp] += (x[ramp] - left) / (right - left) * span[ramp]
        return count

    @cached_property
    def _steps(self) -> tuple[np.ndarray, np.ndarray]:
        """upto with a 0 before, below with the count after: indexable by a searchsorted rank."""
        return np.concatenate(([0], self.upto)), np.concatenate((self.below, [self.count]))

    def quantiles(self, q: np.ndarray) -> np.ndarray:
        """The smallest point v with F(v) >= q (numpy's "inverted_cdf" when exact)."""
        if self.count == 0:
            return np.full(len(q), np.nan)
        wanted = np.asarray(q, dtype=np.float64) * self.count
        j = np.searchsorted(self.upto, wanted - 1e-9 * self.count, side="left")
        return np.asarray(self.values[np.clip(j, 0, len(self.values) - 1)])

    def sample(self) -> np.ndarray:
        """Every value with its multiplicity, sorted (exact profiles only)."""
        if not self.exact:
            raise ValueError("a grid profile does not keep every value")
        return np.repeat(self.values, self.upto - self.below)


@dataclass(frozen=True, eq=False)
class CategoricalProfile:
    """Counts per category (text), with nulls counted apart."""

    count: int
    missing: int
    counts: dict[str, int]
    other: int = 0  # values of categories beyond MAX_CATEGORIES, lumped

    @property
    def kind(self) -> Kind:
        return "categorical"

    @property
    def truncated(self) -> bool:
        return self.other > 0

    @classmethod
    def of(cls, counts: Mapping[str, int], missing: int = 0) -> CategoricalProfile:
        kept = {k: int(v) for k, v in counts.items() if v > 0}
        other = 0
        if len(kept) > MAX_CATEGORIES:
            ranked = sorted(kept.items(), key=lambda kv: (-kv[1], kv[0]))
            other = sum(v for _, v in ranked[MAX_CATEGORIES:])
            kept = dict(ranked[:MAX_CATEGORIES])
        return cls(sum(kept.values()) + other, missing, kept, other)


ColumnProfile = NumericProfile | CategoricalProfile


def profile_column(column: pa.ChunkedArray | pa.Array, kind: Kind) -> ColumnProfile:
    if kind == "numeric":
        values, missing = finite_values(column)
        return NumericProfile.of(values, missing)
    counts, nulls = category_counts(column)
    return CategoricalProfile.of(counts, nulls)


@dataclass(eq=False)
class DataProfile:
    """A table's profile: every column's Arrow type, the summarised columns, what was skipped."""

    rows: int
    types: dict[str, str]
    columns: dict[str, ColumnProfile]
    skipped: dict[str, str]

    def kinds(self) -> dict[str, Kind]:
        return {name: profile.kind for name, profile in self.columns.items()}

    @classmethod
    def of(
        cls,
        frame: Any,
        *,
        columns: Iterable[str] | None = None,
        categorical: Collection[str] = (),
        kinds: Mapping[str, Kind] | None = None,
        field: str = "frame",
        workers: int | None = None,
    ) -> DataProfile:
        """Summarise `columns` (default: all) of a Table, DataFrame or ColumnSource.

        `kinds` (a reference's) forces each column's kind, so a current window is summarised
        the way its reference was; a column whose type no longer fits is skipped with the
        reason. Columns are read and summarised on `workers` threads (default: the CPUs, up to
        8): sorting and Arrow reads release the GIL.
        """
        source = as_source(frame, field=field)
        schema = source.schema
        types = {f.name: str(f.type) for f in schema}
        wanted = list(types) if columns is None else list(dict.fromkeys(columns))
        skipped: dict[str, str] = {}
        tasks: list[tuple[str, Kind]] = []
        for name in wanted:
            if name not in types:
                skipped[name] = "missing"
                continue
            arrow_type = schema.field(name).type
            kind: Kind | None
            if kinds is not None and name in kinds:
                kind = kinds[name]
                if not accepts(kind, arrow_type):
                    skipped[name] = f"type {arrow_type} cannot be compared as {kind}"
                    continue
            else:
                kind = kind_of(arrow_type, declared_categorical=name in categorical)
                if kind is None:
                    skipped[name] = f"type {arrow_type} is not tested"
                    continue
            tasks.append((name, kind))

        def summarise(task: tuple[str, Kind]) -> ColumnProfile:
            return profile_column(source.column(task[0]), task[1])

        threads = workers or min(8, os.cpu_count() or 1)
        if threads > 1 and len(tasks) > 1 and source.num_rows * len(tasks) >= PARALLEL_CELLS:
            with ThreadPoolExecutor(threads, thread_name_prefix="profile") as pool:
                profiles = list(pool.map(summarise, tasks))
        else:
            profiles = [summarise(task) for task in tasks]
        summarised = {name: p for (name, _), p in zip(tasks, profiles, strict=True)}
        return cls(source.num_rows, types, summarised, skipped)
