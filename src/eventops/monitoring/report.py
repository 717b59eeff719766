"""What a drift check found: one `ColumnDrift` per column, gathered in a `DriftReport`.

Plain dataclasses so a report crosses every boundary the same way: `to_json` / `from_json` for
the CLI's `--json`, events and storage, `to_html` for a page to keep (`report_html`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from eventops.monitoring.quality import QualityFinding
from eventops.monitoring.report_html import render


@dataclass(frozen=True)
class ColumnDrift:
    """One column's verdict. `effect` is the Wasserstein distance in reference standard
    deviations (numeric, or the PSI with method `psi`) or the Jensen-Shannon distance
    (categorical); `alpha` is the per-test level after correction."""

    name: str
    kind: str
    method: str
    statistic: float | None
    p_value: float | None
    alpha: float | None
    effect: float | None
    effect_name: str
    threshold: float
    psi: float | None
    drifted: bool
    reason: str
    reference_count: int
    current_count: int
    reference_nulls: int
    current_nulls: int


@dataclass
class DriftReport:
    columns: list[ColumnDrift]
    prediction: ColumnDrift | None
    skipped: dict[str, str]
    alpha: float
    correction: str
    tests: int
    reference_rows: int
    current_rows: int
    elapsed_seconds: float
    quality: list[QualityFinding] = field(default_factory=list)

    @property
    def drifted_columns(self) -> list[str]:
        return [c.name for c in self.columns if c.drifted]

    @property
    def share_drifted(self) -> float:
        return len(self.drifted_columns) / len(self.columns) if self.columns else 0.0

    @property
    def dataset_drifted(self) -> bool:
        """Any feature drifted (after the multiple-testing correction)."""
        return bool(self.drifted_columns)

    @property
    def drift_detected(self) -> bool:
        """Features or the prediction drifted."""
        return self.dataset_drifted or bool(self.prediction and self.prediction.drifted)

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset_drifted": self.dataset_drifted,
            "drifted_columns": self.drifted_columns,
            "share_drifted": self.share_drifted,
            "alpha": self.alpha,
            "correction": self.correction,
            "tests": self.tests,
            "reference_rows": self.reference_rows,
            "current_rows": self.current_rows,
            "elapsed_seconds": self.elapsed_seconds,
            "columns": [asdict(c) for c in self.columns],
            "prediction": asdict(self.prediction) if self.prediction else None,
            "skipped": dict(self.skipped),
            "quality": [f.to_dict() for f in self.quality],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DriftReport:
        prediction = data.get("prediction")
        return cls(
            columns=[ColumnDrift(**c) for c in data["columns"]],
            prediction=ColumnDrift(**prediction) if prediction else None,
            skipped=dict(data.get("skipped", {})),
            alpha=data["alpha"],
            correction=data["correction"],
            tests=data["tests"],
            reference_rows=data["reference_rows"],
            current_rows=data["current_rows"],
            elapsed_seconds=data["elapsed_seconds"],
            quality=[QualityFinding.from_dict(f) for f in data.get("quality", [])],
        )

    def to_json(self, *, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> DriftReport:
        return cls.from_dict(json.loads(text))

    def to_html(self, title: str = "Drift report") -> str:
        """A self-contained page (inline CSS and SVG, no script, no CDN)."""
        return render(self, title)
