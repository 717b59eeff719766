"""Pipelines: @step / @pipeline, triggers, the runner. Inside a step: `log_metric`,
`log_metrics` (tracked with the run) and `read_dataset` (recorded for lineage)."""

from eventops.pipelines.context import log_metric, log_metrics, read_dataset

__all__ = ["log_metric", "log_metrics", "read_dataset"]
