"""Where a fine-tuning run goes, from the resources its step declares.

    @step(resources={"gpus": 4})      # -> a Ray Train job, 4 workers with a GPU each
    @step(resources={"gpus": 1})      # -> this process, on the GPU
    @step                             # -> this process, a GPU if torch sees one, else the CPU

The helper reads the declaration of the step it runs in (from the pipeline the runner loaded)
unless the caller passes `resources`; `FineTuneConfig.ray_workers` forces a Ray Train job of
that many workers (on the CPU when no GPU is asked for), which is how the Ray path is tested on
a machine without GPUs.

Under the Ray executor a step's own Ray task already holds the GPUs it declares, so a Ray Train
job started from it could never get them: there, declare the step with `cpus` only and put the
GPU count in `ray_workers` with `device="cuda"`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from eventops.errors import ValidationError
from eventops.finetune.options import FineTuneConfig

log = logging.getLogger(__name__)

GPU_KEYS = ("gpus", "gpu", "num_gpus")


@dataclass(frozen=True)
class Placement:
    backend: str  # "local" | "ray"
    device: str  # "cpu" | "cuda"
    workers: int = 1
    use_gpu: bool = False


def current_step_resources() -> Mapping[str, Any] | None:
    """The `resources` of the step running now, or None outside a run (or when the pipeline
    that defines it is not loaded in this process)."""
    from eventops.pipelines.context import current
    from eventops.pipelines.dsl import PIPELINES

    ctx = current()
    if ctx is None:
        return None
    pipeline = PIPELINES.get(str(ctx.info.get("pipeline") or ""))
    node = pipeline.nodes.get(str(ctx.info.get("step") or "")) if pipeline else None
    return node.step.options.resources if node is not None else None


def gpus_asked(resources: Mapping[str, Any] | None) -> float:
    for key, value in (resources or {}).items():
        if str(key).lower() in GPU_KEYS:
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValidationError(
                    f"resources[{key!r}] must be a number >= 0, not {value!r}",
                    field=f"resources.{key}",
                    rule="number",
                )
            return float(value)
    return 0.0


def pick_device(wanted: str) -> str:
    """`auto`: cuda when a GPU is visible, else cpu; `cuda` without a GPU falls back to cpu
    with a warning (a step that asked for a GPU on a machine without one still runs)."""
    import torch

    if wanted == "cpu":
        return "cpu"
    if torch.cuda.is_available():
        return "cuda"
    if wanted == "cuda":
        log.warning("a GPU was asked for but torch sees none: fine-tuning on the CPU")
    return "cpu"


def plan(config: FineTuneConfig, resources: Mapping[str, Any] | None = None) -> Placement:
    """The placement for `config` given `resources` (None: the running step's)."""
    if resources is None:
        resources = current_step_resources()
    gpus = gpus_asked(resources)
    if config.ray_workers is not None:
        use_gpu = config.device == "cuda" or (config.device == "auto" and gpus > 0)
        return Placement("ray", "cuda" if use_gpu else "cpu", config.ray_workers, use_gpu)
    if gpus > 1 and config.device != "cpu":
        return Placement("ray", "cuda", int(gpus), True)
    wanted = "cuda" if gpus >= 1 and config.device == "auto" else config.device
    return Placement("local", pick_device(wanted))
