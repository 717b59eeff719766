"""Fine-tuning pre-trained transformers inside pipeline steps (text classification).

    from eventops.finetune import FineTuneConfig, examples_from_table, fine_tune, split_holdout

    @step
    def tune(table: pa.Table) -> dict[str, Any]:
        train, holdout = split_holdout(examples_from_table(table, "text", "label"))
        tuned = fine_tune(train, holdout, FineTuneConfig(mode="lora", epochs=3))
        register_model(tuned.classifier(), "reviews", input_example=holdout.to_frame()[["text"]].head(3),
                       holdout=holdout.to_frame(), label="label")

Full fine-tuning or LoRA (`peft`); on the CPU, a GPU, or Ray Train workers, chosen from the
step's resources; checkpoints that a killed run resumes from. torch, transformers and peft are
imported only when a run starts: importing this package (e.g. to load a project) stays cheap.
Install with `pip install 'eventops[finetune]'`.
"""

from eventops.finetune.base_models import resolve_base_model, small_random_model
from eventops.finetune.data import TextExamples, examples_from_table, in_holdout, split_holdout
from eventops.finetune.options import DEFAULT_BASE_MODEL, FineTuneConfig
from eventops.finetune.placement import Placement, plan
from eventops.finetune.trainer import FineTuned, fine_tune, train_locally

__all__ = [
    "DEFAULT_BASE_MODEL",
    "FineTuneConfig",
    "FineTuned",
    "Placement",
    "TextExamples",
    "examples_from_table",
    "fine_tune",
    "in_holdout",
    "plan",
    "resolve_base_model",
    "small_random_model",
    "split_holdout",
    "train_locally",
]
