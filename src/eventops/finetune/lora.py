"""Parameter-efficient fine-tuning: LoRA adapters through `peft`.

Only the adapters on `lora_target_modules` (BERT's attention `query` and `value` by default)
and the new classification head train; the encoder's weights stay frozen, so a step computes
far fewer gradients and a checkpoint holds megabytes. For serving, the adapters are merged into
the weights (`merge`): the packaged model is a plain transformers model, loaded without `peft`.
"""

from __future__ import annotations

from typing import Any

from eventops.errors import ConfigError, ValidationError
from eventops.finetune.options import FineTuneConfig


def add_adapters(model: Any, config: FineTuneConfig) -> Any:
    """`model` wrapped with LoRA adapters as `config` describes."""
    try:
        import peft
    except ImportError as exc:
        raise ConfigError(
            f"mode 'lora' needs peft ({exc}); pip install 'eventops[finetune]'",
            field="finetune.mode",
            rule="installed",
        ) from None
    lora = peft.LoraConfig(
        task_type=peft.TaskType.SEQ_CLS,
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=list(config.lora_target_modules),
    )
    try:
        return peft.get_peft_model(model, lora)
    except ValueError as exc:  # no module of that name in this architecture
        raise ValidationError(
            f"cannot add LoRA adapters: {exc}",
            field="finetune.lora_target_modules",
            rule="in-model",
        ) from None


def is_adapted(model: Any) -> bool:
    return hasattr(model, "merge_and_unload") and hasattr(model, "peft_config")


def merge(model: Any) -> Any:
    """The plain model with the adapters folded into its weights (unchanged if none)."""
    return model.merge_and_unload() if is_adapted(model) else model


def trainable_share(model: Any) -> tuple[int, int]:
    """(trainable parameters, all parameters)."""
    total = trainable = 0
    for p in model.parameters():
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
    return trainable, total
