"""Monitoring: drift and data-quality checks of current data against a reference.

Monitors on captured predictions, performance on delayed labels and alert rules come later.
"""

from eventops.monitoring.drift import drift_report
from eventops.monitoring.frames import ColumnSource
from eventops.monitoring.profile import CategoricalProfile, DataProfile, NumericProfile
from eventops.monitoring.quality import QualityFinding, check_quality
from eventops.monitoring.report import ColumnDrift, DriftReport

__all__ = [
    "CategoricalProfile",
    "ColumnDrift",
    "ColumnSource",
    "DataProfile",
    "DriftReport",
    "NumericProfile",
    "QualityFinding",
    "check_quality",
    "drift_report",
]
