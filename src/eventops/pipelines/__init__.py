"""Pipelines: @step / @pipeline, the runner, executors, caching and event triggers."""
