"""Labelled text for fine-tuning: from a table, split, tokenised, batched in a fixed order.

The batch order is a pure function of the seed, the epoch and the step (`batch_indices`), so a
run resumed from a checkpoint at step k sees exactly the batches the interrupted run would have
seen next, with no sampler state to save. The holdout is chosen by a hash of each text, not by
a random draw: every run, however much data has arrived since, holds out the same texts, so a
promotion gate can score a new model and the champion on rows neither was trained on.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from eventops.errors import ValidationError


@dataclass(frozen=True)
class TextExamples:
    """Texts and their labels (strings); `labels` is the sorted set of classes."""

    texts: list[str]
    targets: list[str]

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.targets):
            raise ValidationError(
                f"{len(self.texts)} texts but {len(self.targets)} labels",
                field="examples",
                rule="same-length",
            )

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def labels(self) -> list[str]:
        return sorted(set(self.targets))

    def ids(self, labels: Sequence[str]) -> list[int]:
        """Targets as class ids in `labels`; a label outside it is refused, naming the row."""
        index = {label: i for i, label in enumerate(labels)}
        out = []
        for row, target in enumerate(self.targets):
            if target not in index:
                raise ValidationError(
                    f"row {row}: label {target!r} was not seen in training ({', '.join(labels)})",
                    field="label",
                    rule="known-label",
                )
            out.append(index[target])
        return out

    def digest(self) -> str:
        """A hash of the texts and labels in order: part of a checkpoint's fingerprint."""
        h = hashlib.sha256()
        for text, target in zip(self.texts, self.targets, strict=True):
            h.update(text.encode())
            h.update(b"\x1f")
            h.update(target.encode())
            h.update(b"\x1e")
        return h.hexdigest()[:16]

    def take(self, rows: Sequence[int] | np.ndarray[Any, Any]) -> TextExamples:
        return TextExamples([self.texts[i] for i in rows], [self.targets[i] for i in rows])

    def to_frame(self, text_column: str = "text", label_column: str = "label") -> Any:
        import pandas as pd

        return pd.DataFrame({text_column: self.texts, label_column: self.targets})


def _label(value: Any) -> str:
    """A label as text; a whole float (an integer label that pandas widened) without `.0`."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def examples_from_table(
    table: Any, text_column: str = "text", label_column: str = "label"
) -> TextExamples:
    """Rows of a pyarrow Table or pandas DataFrame with a text and a label; rows missing either
    are dropped (a null label teaches nothing), labels become strings."""
    columns = list(getattr(table, "column_names", None) or table.columns)
    for column in (text_column, label_column):
        if column not in columns:
            raise ValidationError(
                f"column {column!r} is missing (columns: {', '.join(map(str, columns))})",
                field=column,
                rule="required",
            )
    if hasattr(table, "to_batches"):  # pyarrow: nulls stay nulls, integers stay integers
        texts_in, labels_in = table[text_column].to_pylist(), table[label_column].to_pylist()
    else:
        texts_in = table[text_column].astype(object).where(table[text_column].notna(), None)
        labels_in = table[label_column].astype(object).where(table[label_column].notna(), None)
        texts_in, labels_in = texts_in.tolist(), labels_in.tolist()
    kept = [
        (t, v) for t, v in zip(texts_in, labels_in, strict=True) if t is not None and v is not None
    ]
    if not kept:
        raise ValidationError("no labelled rows", field=label_column, rule="rows")
    return TextExamples([str(t) for t, _ in kept], [_label(v) for _, v in kept])


def in_holdout(texts: Sequence[str], share: float) -> np.ndarray[Any, Any]:
    """True for the texts whose hash bucket falls in the first `share` of 1,000 buckets."""
    if not 0 < share < 1:
        raise ValidationError(
            f"holdout share must be in (0, 1), not {share}", field="share", rule="range"
        )
    buckets = [
        int.from_bytes(hashlib.blake2b(t.encode(), digest_size=4).digest(), "big") % 1000
        for t in texts
    ]
    return np.asarray(buckets) < int(share * 1000)


def split_holdout(examples: TextExamples, share: float = 0.2) -> tuple[TextExamples, TextExamples]:
    """(train, holdout) by `in_holdout`; refuses a split that leaves either side empty."""
    held = in_holdout(examples.texts, share)
    train, holdout = examples.take(np.flatnonzero(~held)), examples.take(np.flatnonzero(held))
    if not len(train) or not len(holdout):
        raise ValidationError(
            f"a {share:.0%} holdout of {len(examples)} rows leaves one side empty",
            field="share",
            rule="both-sides",
        )
    return train, holdout


def steps_per_epoch(rows: int, batch_size: int) -> int:
    return max(1, math.ceil(rows / batch_size))


def batch_indices(rows: int, batch_size: int, seed: int, step: int) -> np.ndarray[Any, Any]:
    """The rows of global step `step`: epoch `step // steps_per_epoch` shuffled by
    (seed, epoch), then the step's slice of it."""
    per_epoch = steps_per_epoch(rows, batch_size)
    epoch, position = divmod(step, per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(rows)
    return order[position * batch_size : (position + 1) * batch_size]


class Encoded:
    """Texts tokenised once (truncated, unpadded); `batch` pads a selection to its longest."""

    def __init__(self, tokenizer: Any, texts: Sequence[str], max_length: int) -> None:
        self.pad_id = int(tokenizer.pad_token_id or 0)
        encoded = tokenizer(list(texts), truncation=True, max_length=max_length)
        self.input_ids: list[list[int]] = encoded["input_ids"]
        self.tokens = sum(len(ids) for ids in self.input_ids)

    def __len__(self) -> int:
        return len(self.input_ids)

    def batch(
        self, rows: Sequence[int] | np.ndarray[Any, Any], device: Any = "cpu"
    ) -> dict[str, Any]:
        import torch

        chosen = [self.input_ids[int(i)] for i in rows]
        width = max(len(ids) for ids in chosen)
        ids = torch.full((len(chosen), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(chosen), width), dtype=torch.long)
        for row, tokens in enumerate(chosen):
            ids[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
            mask[row, : len(tokens)] = 1
        return {"input_ids": ids.to(device), "attention_mask": mask.to(device)}
