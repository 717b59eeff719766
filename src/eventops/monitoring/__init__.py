"""Monitoring: drift and data-quality reports, monitors on captured predictions and delayed
labels, and alert rules that route their events to channels.

The names below are imported on first use (PEP 562): the drift engine loads scipy, and every
`eventops` command imports the project module, which names `Monitor` and `AlertRule`; loading
scipy there would slow every command by most of a second.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from eventops.monitoring.alerts import AlertRule, AlertService
    from eventops.monitoring.channels import Log, Slack, Webhook, verify_signature
    from eventops.monitoring.drift import drift_report
    from eventops.monitoring.frames import ColumnSource
    from eventops.monitoring.monitors import Monitor, Performance
    from eventops.monitoring.profile import CategoricalProfile, DataProfile, NumericProfile
    from eventops.monitoring.quality import QualityFinding, check_quality
    from eventops.monitoring.report import ColumnDrift, DriftReport
    from eventops.monitoring.service import MonitorService

_WHERE = {
    "AlertRule": "alerts",
    "AlertService": "alerts",
    "Log": "channels",
    "Slack": "channels",
    "Webhook": "channels",
    "verify_signature": "channels",
    "drift_report": "drift",
    "ColumnSource": "frames",
    "Monitor": "monitors",
    "Performance": "monitors",
    "CategoricalProfile": "profile",
    "DataProfile": "profile",
    "NumericProfile": "profile",
    "QualityFinding": "quality",
    "check_quality": "quality",
    "ColumnDrift": "report",
    "DriftReport": "report",
    "MonitorService": "service",
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'eventops.monitoring' has no attribute {name!r}")
    return getattr(importlib.import_module(f"eventops.monitoring.{_WHERE[name]}"), name)


__all__ = [
    "AlertRule",
    "AlertService",
    "CategoricalProfile",
    "ColumnDrift",
    "ColumnSource",
    "DataProfile",
    "DriftReport",
    "Log",
    "Monitor",
    "MonitorService",
    "NumericProfile",
    "Performance",
    "QualityFinding",
    "Slack",
    "Webhook",
    "check_quality",
    "drift_report",
    "verify_signature",
]
