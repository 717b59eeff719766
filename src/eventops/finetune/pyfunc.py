"""A fine-tuned text classifier as an MLflow pyfunc model: text in, label out.

`TextClassifier` carries the model folder's files (weights, config, tokenizer) inside itself,
so `register_model(classifier, ...)` logs one self-contained MLflow model: nothing refers back
to the machine or the checkpoint folder that trained it. It is loaded lazily, on the first
`predict` or `load_context`, into a private temporary folder.

Input: a DataFrame with a string column `text` (the signature MLflow infers from the input
example), a Series, or a list of strings. Output: one label per row, as strings in a 1-D array,
which is what serving returns and what promotion gates compare with the holdout's labels.
`predict_proba` gives the class probabilities in `labels` order (sorted), for ranking metrics.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np
from mlflow.pyfunc.model import PythonModel

from eventops.errors import ValidationError

SKIPPED = {"training_args.bin"}


class TextClassifier(PythonModel):
    def __init__(
        self,
        files: dict[str, bytes],
        labels: list[str],
        *,
        text_column: str = "text",
        max_length: int = 128,
        batch_size: int = 64,
    ) -> None:
        self.files = files
        self.labels = list(labels)
        self.text_column = text_column
        self.max_length = max_length
        self.batch_size = batch_size
        self._lock = threading.Lock()
        self._model: Any = None
        self._tokenizer: Any = None

    @classmethod
    def from_model(
        cls, model: Any, tokenizer: Any, labels: list[str], **options: Any
    ) -> TextClassifier:
        """Snapshot a transformers model and tokenizer (their `save_pretrained` files)."""
        with tempfile.TemporaryDirectory(prefix="eventops-textclf-") as tmp:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            files = {
                str(p.relative_to(tmp)): p.read_bytes()
                for p in sorted(Path(tmp).rglob("*"))
                if p.is_file() and p.name not in SKIPPED
            }
        return cls(files, labels, **options)

    # Pickled by MLflow: the files and settings travel, the loaded model does not.
    def __getstate__(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "labels": self.labels,
            "text_column": self.text_column,
            "max_length": self.max_length,
            "batch_size": self.batch_size,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(  # type: ignore[misc]
            state["files"],
            state["labels"],
            text_column=state["text_column"],
            max_length=state["max_length"],
            batch_size=state["batch_size"],
        )

    def _load(self) -> tuple[Any, Any]:
        with self._lock:
            if self._model is None:
                from eventops.finetune.base_models import import_transformers

                transformers = import_transformers()
                folder = Path(tempfile.mkdtemp(prefix="eventops-textclf-"))
                try:
                    for name, blob in self.files.items():
                        (folder / name).parent.mkdir(parents=True, exist_ok=True)
                        (folder / name).write_bytes(blob)
                    auto = transformers.AutoModelForSequenceClassification
                    self._model = auto.from_pretrained(folder, local_files_only=True).eval()
                    self._tokenizer = transformers.AutoTokenizer.from_pretrained(
                        folder, local_files_only=True
                    )
                finally:
                    shutil.rmtree(folder, ignore_errors=True)
            return self._model, self._tokenizer

    def load_context(self, context: Any) -> None:
        self._load()

    def texts(self, model_input: Any) -> list[str]:
        """The texts of a request: the `text_column` of a DataFrame, a Series or a list."""
        if hasattr(model_input, "columns"):
            if self.text_column not in model_input.columns:
                raise ValidationError(
                    f"column {self.text_column!r} is missing",
                    field=self.text_column,
                    rule="required",
                )
            values = model_input[self.text_column].tolist()
        elif hasattr(model_input, "tolist"):
            values = model_input.tolist()
        else:
            values = list(model_input)
        return ["" if v is None else str(v) for v in values]

    def predict_proba(self, model_input: Any) -> np.ndarray[Any, Any]:
        """Class probabilities, one column per label in `labels` order."""
        import torch

        model, tokenizer = self._load()
        texts = self.texts(model_input)
        out = []
        with torch.no_grad():
            for start in range(0, len(texts), self.batch_size):
                batch = tokenizer(
                    texts[start : start + self.batch_size],
                    truncation=True,
                    max_length=self.max_length,
                    padding=True,
                    return_tensors="pt",
                )
                out.append(torch.softmax(model(**batch).logits.float(), dim=1).numpy())
        if not out:
            return np.zeros((0, len(self.labels)))
        return np.concatenate(out)

    # No annotations: MLflow would read them as the model's input schema; the signature comes
    # from the input example instead.
    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        """One label per row (strings)."""
        probabilities = self.predict_proba(model_input)
        names = np.asarray(self.labels, dtype=object)
        return names[probabilities.argmax(axis=1)] if len(probabilities) else names[:0]
