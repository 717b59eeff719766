"""The fine-tuning loop: a pre-trained encoder and a new head, trained on labelled text.

    from eventops.finetune import FineTuneConfig, fine_tune

    tuned = fine_tune(train, holdout, FineTuneConfig(mode="lora", max_steps=200))
    tuned.metrics            # {"loss": ..., "accuracy": ..., "f1": ...} on the holdout
    tuned.classifier()       # an MLflow pyfunc model for register_model

One loop serves every placement (`placement.plan`): the CPU, one GPU, or a worker of a Ray
Train job, where `wrap` makes the model data-parallel and each worker takes its share
(`rank::world`) of every global batch. It evaluates every `eval_every` steps, stops early when
the stop metric has not improved for `patience` evaluations and ends with the best weights.
Inside a pipeline step the losses and evaluation metrics are logged with the step (and so reach
the run's MLflow run) at their training step.

Steps are numbered globally and a batch is a function of (seed, step), so a run resumed from
the checkpoint of step k continues exactly where the interrupted one stood (see checkpoint.py).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eventops.finetune import checkpoint
from eventops.finetune.base_models import load_classifier, load_tokenizer, resolve_base_model
from eventops.finetune.data import Encoded, TextExamples, batch_indices, steps_per_epoch
from eventops.finetune.evaluation import evaluate
from eventops.finetune.lora import add_adapters, merge, trainable_share
from eventops.finetune.options import FineTuneConfig
from eventops.finetune.placement import pick_device, plan
from eventops.pipelines.context import log_metrics

log = logging.getLogger(__name__)

OnStep = Callable[[int, float], None]
RESULT_FILE = "eventops-finetune.json"


@dataclass
class FineTuned:
    """A fine-tuned classifier (on the CPU, eval mode, adapters merged) and how it got there."""

    model: Any
    tokenizer: Any
    labels: list[str]
    config: FineTuneConfig
    metrics: dict[str, float]  # on the evaluation set, at the best step (empty without one)
    history: list[dict[str, float]] = field(default_factory=list)
    steps: int = 0  # the global step reached
    best_step: int = 0
    resumed_from: int | None = None
    stopped_early: bool = False
    device: str = "cpu"
    workers: int = 1
    samples: int = 0  # training rows processed by this process (every worker's for Ray)
    train_seconds: float = 0.0  # time in training steps, evaluation and checkpoints excluded
    trainable_parameters: int = 0

    @property
    def samples_per_second(self) -> float:
        return self.samples / self.train_seconds if self.train_seconds > 0 else 0.0

    def classifier(self, *, text_column: str = "text", batch_size: int = 64) -> Any:
        """The model as an `mlflow.pyfunc.PythonModel` answering a label per text."""
        from eventops.finetune.pyfunc import TextClassifier

        return TextClassifier.from_model(
            self.model,
            self.tokenizer,
            self.labels,
            text_column=text_column,
            max_length=self.config.max_length,
            batch_size=batch_size,
        )

    def summary(self) -> dict[str, Any]:
        """What the run reports: for logs, MLflow and the result file of a Ray Train job."""
        return {
            "labels": self.labels,
            "metrics": self.metrics,
            "history": self.history,
            "steps": self.steps,
            "best_step": self.best_step,
            "resumed_from": self.resumed_from,
            "stopped_early": self.stopped_early,
            "device": self.device,
            "workers": self.workers,
            "samples": self.samples,
            "train_seconds": self.train_seconds,
            "trainable_parameters": self.trainable_parameters,
        }

    def save(self, path: str | Path) -> Path:
        """`save_pretrained` of model and tokenizer, plus the summary; `load` reads it back."""
        path = Path(path)
        self.model.save_pretrained(path)
        self.tokenizer.save_pretrained(path)
        (path / RESULT_FILE).write_text(json.dumps(self.summary()))
        return path

    @classmethod
    def load(cls, path: str | Path, config: FineTuneConfig) -> FineTuned:
        from eventops.finetune.base_models import import_transformers

        transformers = import_transformers()
        path = Path(path)
        data = json.loads((path / RESULT_FILE).read_text())
        model = transformers.AutoModelForSequenceClassification.from_pretrained(path)
        tokenizer = transformers.AutoTokenizer.from_pretrained(path)
        return cls(model.eval(), tokenizer, config=config, **data)


def _schedule(warmup: int, total: int) -> Callable[[int], float]:
    """Linear warm-up to the learning rate, then linear decay to 0 at `total`."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    return factor


def _improved(config: FineTuneConfig, value: float, best: float | None) -> bool:
    if best is None:
        return True
    if config.stop_direction == "minimize":
        return value < best - config.min_delta
    return value > best + config.min_delta


def _record(metrics: Mapping[str, float], step: int) -> None:
    finite = {k: v for k, v in metrics.items() if math.isfinite(v)}
    log_metrics(finite, step=step)


def train_locally(
    train: TextExamples,
    holdout: TextExamples | None,
    config: FineTuneConfig,
    *,
    device: str | None = None,
    on_step: OnStep | None = None,
    rank: int = 0,
    world: int = 1,
    wrap: Callable[[Any], Any] | None = None,
) -> FineTuned:
    """Fine-tune in this process (one of `world` data-parallel workers when `wrap` is given)."""
    import torch

    if len(train) == 0:
        raise ValueError("no training rows")
    torch.manual_seed(config.seed)
    device = device or pick_device(config.device)
    labels = train.labels
    tokenizer = load_tokenizer(config.base_model)
    model = load_classifier(config.base_model, labels)
    if config.mode == "lora":
        model = add_adapters(model, config)
    model.to(device)
    targets = torch.tensor(train.ids(labels), dtype=torch.long)
    encoded = Encoded(tokenizer, train.texts, config.max_length)
    held = Encoded(tokenizer, holdout.texts, config.max_length) if holdout else None
    held_targets = holdout.ids(labels) if holdout else []

    per_epoch = steps_per_epoch(len(train), config.batch_size)
    total = config.max_steps or config.epochs * per_epoch
    eval_every = config.eval_every or per_epoch
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    warmup = int(config.warmup_ratio * total)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(warmup, total))

    state = checkpoint.TrainState(config.fingerprint(train.digest(), labels))
    resumed_from = None
    best: dict[str, Any] | None = None
    where = config.checkpoint_dir
    if where:
        found = checkpoint.latest(where, state.fingerprint)
        if found is not None:
            path, state = found
            checkpoint.restore(path, model, optimizer, scheduler)
            resumed_from = state.step
            best = checkpoint.load_best(where, state.best_step) if state.best_step else None
            log.info("resuming fine-tuning from %s (step %d)", path, state.step)
    engine = wrap(model) if wrap is not None else model
    model.train()
    samples, seconds, stopped_early = 0, 0.0, False
    save_here = where is not None and rank == 0
    while state.step < total:
        started = time.perf_counter()
        rows = batch_indices(len(train), config.batch_size, config.seed, state.step)
        if world > 1:
            rows = rows[rank::world]
        out = engine(**encoded.batch(rows, device), labels=targets[rows].to(device))
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        loss = float(out.loss.detach())
        seconds += time.perf_counter() - started
        samples += len(rows)
        state.step += 1
        step = state.step
        if step % config.log_every == 0 or step == total:
            _record({"train_loss": loss, "learning_rate": float(scheduler.get_last_lr()[0])}, step)
        evaluated = False
        if held is not None and (step % eval_every == 0 or step == total):
            scores = evaluate(model, held, held_targets, config.batch_size, device)
            state.history.append({"step": float(step), **scores})
            _record({f"eval_{k}": v for k, v in scores.items()}, step)
            if _improved(config, scores[config.stop_metric], state.best_value):
                state.best_value, state.best_step, state.bad_evals = (
                    scores[config.stop_metric],
                    step,
                    0,
                )
                best = checkpoint.trainable_state(model)
                if save_here:
                    checkpoint.save_best(str(where), model, step)
            else:
                state.bad_evals += 1
            evaluated = True
        periodic = config.checkpoint_every and step % config.checkpoint_every == 0
        if save_here and (periodic or evaluated or step == total):
            checkpoint.save(str(where), state, model, optimizer, scheduler, config.keep_checkpoints)
        if on_step is not None:
            on_step(step, loss)
        if evaluated and config.patience and state.bad_evals >= config.patience:
            stopped_early = step < total
            log.info(
                "early stop at step %d: no better %s since step %d",
                step,
                config.stop_metric,
                state.best_step,
            )
            break
    if best is not None and state.best_step != state.step:
        checkpoint.load_trainable(model, best)
    metrics = {}
    if state.history:
        at_best = [h for h in state.history if int(h["step"]) == state.best_step] or state.history[
            -1:
        ]
        metrics = {k: v for k, v in at_best[-1].items() if k != "step"}
    trainable, _ = trainable_share(model)
    final = merge(model).to("cpu").eval()
    return FineTuned(
        final,
        tokenizer,
        labels,
        config,
        metrics,
        history=state.history,
        steps=state.step,
        best_step=state.best_step or state.step,
        resumed_from=resumed_from,
        stopped_early=stopped_early,
        device=device,
        workers=world,
        samples=samples,
        train_seconds=seconds,
        trainable_parameters=trainable,
    )


def fine_tune(
    train: TextExamples,
    holdout: TextExamples | None = None,
    config: FineTuneConfig | None = None,
    *,
    resources: Mapping[str, Any] | None = None,
    on_step: OnStep | None = None,
) -> FineTuned:
    """Fine-tune `config.base_model` on `train`, evaluating on `holdout`.

    Where it runs follows `resources` (default: the running step's declared resources): more
    than one GPU (or `config.ray_workers`) -> a Ray Train job with one worker per GPU; one GPU,
    or a GPU visible to torch -> that GPU; else the CPU.
    """
    config = config or FineTuneConfig()
    resolve_base_model(config.base_model)  # a bad name fails before any work
    placement = plan(config, resources)
    if placement.backend == "ray":
        from eventops.finetune.ray_train import fine_tune_on_ray

        return fine_tune_on_ray(
            train, holdout, config, workers=placement.workers, use_gpu=placement.use_gpu
        )
    return train_locally(train, holdout, config, device=placement.device, on_step=on_step)
