"""Fine-tuning as a Ray Train job: one data-parallel worker per GPU (or CPU, for testing).

Every worker runs the same loop as a local run (`trainer.train_locally`) with the model wrapped
by `ray.train.torch.prepare_model` (DistributedDataParallel across workers) and its share of
each global batch, so the steps, the learning-rate schedule and the checkpoints mean the same
thing whatever the worker count. Every worker scores the same evaluation set with the same
weights, so they take the same early-stopping decision without talking to each other. Worker 0
writes the checkpoints and, at the end, the trained model, which this process loads back.

The checkpoint folder and the output folder must be reachable by worker 0 and by this process
under the same path: the local disk on one machine, shared storage on a cluster. A Ray already
initialised in this process (e.g. by the Ray executor) is used; otherwise a local Ray is
started and shut down afterwards.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from typing import Any

from eventops.errors import ConfigError, ValidationError
from eventops.finetune.data import TextExamples
from eventops.finetune.options import FineTuneConfig
from eventops.finetune.trainer import FineTuned, _record, train_locally

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'ray[train]'"


def _import_ray_train() -> tuple[Any, Any, Any]:
    try:
        import ray
        import ray.train
        import ray.train.torch
    except ImportError as exc:
        raise ConfigError(
            f"multi-worker fine-tuning needs Ray Train ({exc}); {INSTALL_HINT}",
            field="finetune.ray_workers",
            rule="installed",
        ) from None
    return ray, ray.train, ray.train.torch


def _check_not_holding_gpus(ray: Any, use_gpu: bool) -> None:
    """A Ray task that holds GPUs cannot hand them to the job it starts: it would wait forever."""
    if not use_gpu or not ray.is_initialized():
        return
    context = ray.get_runtime_context()
    if context.worker.mode == ray.WORKER_MODE and ray.get_gpu_ids():
        raise ValidationError(
            "this step runs in a Ray task that holds GPUs, so the Ray Train job it starts "
            "cannot get them: declare the step with cpus only and set "
            "FineTuneConfig(ray_workers=N, device='cuda')",
            field="resources.gpus",
            rule="ray-train-placement",
        )


def _worker_loop(settings: dict[str, Any]) -> None:
    import ray.train
    import ray.train.torch

    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    tuned = train_locally(
        settings["train"],
        settings["holdout"],
        settings["config"],
        device=str(device),
        rank=rank,
        world=world,
        wrap=ray.train.torch.prepare_model,
    )
    if rank == 0:
        tuned.save(settings["output"])
    ray.train.report({"steps": tuned.steps, **{f"eval_{k}": v for k, v in tuned.metrics.items()}})


def fine_tune_on_ray(
    train: TextExamples,
    holdout: TextExamples | None,
    config: FineTuneConfig,
    *,
    workers: int,
    use_gpu: bool,
) -> FineTuned:
    """Run the fine-tuning loop on `workers` Ray Train workers; the trained model comes back."""
    ray, _, ray_torch = _import_ray_train()
    from ray.train import RunConfig, ScalingConfig

    _check_not_holding_gpus(ray, use_gpu)
    started = False
    if not ray.is_initialized():
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
        started = True
    scratch = tempfile.mkdtemp(prefix="eventops-raytrain-")
    output = os.path.join(scratch, "model")
    try:
        trainer = ray_torch.TorchTrainer(
            _worker_loop,
            train_loop_config={
                "train": train,
                "holdout": holdout,
                "config": config,
                "output": output,
            },
            scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu),
            run_config=RunConfig(storage_path=os.path.join(scratch, "runs"), name="finetune"),
        )
        result = trainer.fit()
        if getattr(result, "error", None):
            raise RuntimeError(f"the Ray Train job failed: {result.error}")
        tuned = FineTuned.load(output, config)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        if started:
            ray.shutdown()
    for entry in tuned.history:  # the workers had no step context: log here
        _record({f"eval_{k}": v for k, v in entry.items() if k != "step"}, int(entry["step"]))
    log.info("Ray Train fine-tuning: %d workers, %d steps", workers, tuned.steps)
    return tuned
