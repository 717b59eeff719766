"""Scoring a classifier on held-out text: loss, accuracy and macro F1, in one pass."""

from __future__ import annotations

from typing import Any

import numpy as np

from eventops.finetune.data import Encoded


def logits(model: Any, encoded: Encoded, batch_size: int, device: Any) -> Any:
    """The model's logits for every encoded row, in row order (no gradients, eval mode; the
    model's training mode is put back afterwards)."""
    import torch

    was_training = model.training
    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(encoded), batch_size):
            rows = range(start, min(start + batch_size, len(encoded)))
            out.append(model(**encoded.batch(rows, device)).logits.float().cpu())
    if was_training:
        model.train()
    return torch.cat(out)


def macro_f1(truth: np.ndarray[Any, Any], predicted: np.ndarray[Any, Any], classes: int) -> float:
    """The mean F1 over the classes that occur in `truth` or `predicted` (0 for a class never
    predicted right), as scikit-learn's `f1_score(average="macro")`."""
    scores = []
    for c in range(classes):
        tp = int(np.sum((predicted == c) & (truth == c)))
        fp = int(np.sum((predicted == c) & (truth != c)))
        fn = int(np.sum((predicted != c) & (truth == c)))
        if tp + fp + fn == 0:
            continue
        scores.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores)) if scores else 0.0


def evaluate(
    model: Any, encoded: Encoded, targets: list[int], batch_size: int, device: Any
) -> dict[str, float]:
    """`loss` (mean cross-entropy), `accuracy` and `f1` (macro) of `model` on `encoded`."""
    import torch

    scores = logits(model, encoded, batch_size, device)
    truth = torch.tensor(targets, dtype=torch.long)
    loss = float(torch.nn.functional.cross_entropy(scores, truth))
    predicted = scores.argmax(dim=1).numpy()
    expected = truth.numpy()
    return {
        "loss": loss,
        "accuracy": float(np.mean(predicted == expected)),
        "f1": macro_f1(expected, predicted, scores.shape[1]),
    }
