"""Checkpoints of a fine-tuning run: written whole or not at all, resumed by fingerprint.

    <checkpoint_dir>/step-00000040/  trainable.pt  optimizer.pt  state.json
    <checkpoint_dir>/best.pt                       the best weights so far (early stopping)

A checkpoint is written into a temporary folder and renamed into place once every file is
flushed, so a process killed while writing leaves a `.tmp-*` folder that is never read (and is
removed by the next save), never a half checkpoint. `state.json` carries the fingerprint of the
settings and data it belongs to; `latest` skips checkpoints of another fingerprint. Only the
trainable weights are saved: with LoRA that is the adapters and the head, a few MB instead of
the whole model.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STEP_DIR = re.compile(r"^step-(\d{8})$")
BEST = "best.pt"


@dataclass
class TrainState:
    """Where the loop stands: everything besides tensors that a resumed run needs."""

    fingerprint: str
    step: int = 0
    best_value: float | None = None
    best_step: int = 0
    bad_evals: int = 0
    history: list[dict[str, float]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint,
            "step": self.step,
            "best_value": self.best_value,
            "best_step": self.best_step,
            "bad_evals": self.bad_evals,
            "history": self.history,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrainState:
        return cls(
            str(data["fingerprint"]),
            int(data["step"]),
            None if data.get("best_value") is None else float(data["best_value"]),
            int(data.get("best_step", 0)),
            int(data.get("bad_evals", 0)),
            list(data.get("history", [])),
        )


def trainable_state(model: Any) -> dict[str, Any]:
    """The parameters that training changes, detached on the CPU."""
    return {
        name: p.detach().to("cpu").clone()
        for name, p in model.named_parameters()
        if p.requires_grad
    }


def load_trainable(model: Any, state: dict[str, Any]) -> None:
    """Copy `state` into the model's parameters of the same names (all of them must exist)."""
    import torch

    params = dict(model.named_parameters())
    unknown = sorted(set(state) - set(params))
    if unknown:
        raise ValueError(f"checkpoint has weights the model lacks: {unknown[:3]}")
    with torch.no_grad():
        for name, tensor in state.items():
            params[name].copy_(tensor.to(params[name].device))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_torch(obj: Any, path: Path) -> None:
    import torch

    with open(path, "wb") as out:
        torch.save(obj, out)
        out.flush()
        os.fsync(out.fileno())


def save(
    root: str | Path, state: TrainState, model: Any, optimizer: Any, scheduler: Any, keep: int
) -> Path:
    """Write checkpoint `step-<step>` atomically, then drop all but the newest `keep`."""
    import torch

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(".tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    final = root / f"step-{state.step:08d}"
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root))
    _write_torch(trainable_state(model), tmp / "trainable.pt")
    extra = {
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "torch_rng": torch.get_rng_state(),
    }
    _write_torch(extra, tmp / "optimizer.pt")
    with open(tmp / "state.json", "w") as out:
        json.dump(state.to_json(), out)
        out.flush()
        os.fsync(out.fileno())
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(root)
    for old in checkpoints(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def save_best(root: str | Path, model: Any, step: int) -> None:
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-best-{os.getpid()}"
    _write_torch({"step": step, "weights": trainable_state(model)}, tmp)
    os.replace(tmp, root / BEST)


def load_best(root: str | Path, step: int) -> dict[str, Any] | None:
    """The best weights saved at `step`, or None when there are none for that step."""
    import torch

    path = Path(root) / BEST
    if not path.exists():
        return None
    saved = torch.load(path, map_location="cpu", weights_only=True)
    return saved["weights"] if int(saved.get("step", -1)) == step else None


def checkpoints(root: str | Path) -> list[Path]:
    """Complete checkpoints in step order (a folder exists only once fully written)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and STEP_DIR.match(p.name)]
    return sorted(found, key=lambda p: p.name)


def latest(root: str | Path, fingerprint: str) -> tuple[Path, TrainState] | None:
    """The newest checkpoint of this fingerprint, with its state; None if there is none."""
    for path in reversed(checkpoints(root)):
        try:
            with open(path / "state.json") as src:
                state = TrainState.from_json(json.load(src))
        except (OSError, ValueError, KeyError):
            continue
        if state.fingerprint == fingerprint:
            return path, state
    return None


def restore(path: Path, model: Any, optimizer: Any, scheduler: Any) -> None:
    """Load a checkpoint's weights, optimiser, schedule and random state into the live objects."""
    import torch

    load_trainable(model, torch.load(path / "trainable.pt", map_location="cpu", weights_only=True))
    extra = torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True)
    optimizer.load_state_dict(extra["optimizer"])
    scheduler.load_state_dict(extra["scheduler"])
    torch.set_rng_state(extra["torch_rng"])
