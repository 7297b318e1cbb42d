"""Metrics: the packaged `evaluate` module (AUROC, accuracy, F1) and a `compute_metrics` for the Trainer.

`load_metric()` loads `hateful_memes_metric.py` from inside the installed package with `evaluate.load`,
which works offline (the Hub's metric scripts are not needed). `make_compute_metrics(num_labels)` turns
Trainer logits into softmax probabilities and scores the labelled rows only; with
``problem_type="multi_label_classification"`` (the fine-grained tasks) it turns them into per-label sigmoid
scores and scores them as the WOAH 2021 shared task does (`fine_grained.micro_scores`: micro ROC-AUC and
micro-F1).

Beside it: `calibration` (temperature scaling, ECE, Brier, reliability diagram), `thresholds` (recall at a
false-positive rate, precision at a recall, threshold rules), `policy` (the `DecisionPolicy` saved with a
model) and `fine_grained` (the WOAH 2021 fine-grained shared task's scorer).

Example:

```python
>>> from hm_hf.metrics import load_metric, make_compute_metrics
>>> load_metric().compute(predictions=[1, 0], references=[1, 0], prediction_scores=[0.8, 0.3])
{'auroc': 1.0, 'accuracy': 1.0, 'f1': 1.0}
>>> trainer = Trainer(..., compute_metrics=make_compute_metrics(num_labels=2))
```
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

__all__ = ["METRIC_SCRIPT", "IGNORE_LABELS", "MULTI_LABEL", "load_metric", "make_compute_metrics", "sigmoid", "softmax"]

METRIC_SCRIPT = Path(__file__).with_name("hateful_memes_metric.py")
MULTI_LABEL = "multi_label_classification"  # transformers' problem_type of multi-label heads
IGNORE_LABELS = (-100, -1)  # -100: Trainer/collator padding of unlabelled rows; -1: "no label" in the data
logger = logging.getLogger(__name__)


def load_metric(**kwargs):
    """The packaged hateful-memes metric as an `evaluate.EvaluationModule` (offline; kwargs go to `evaluate.load`)."""
    import evaluate  # noqa: PLC0415 (heavy import, only when needed)

    if not METRIC_SCRIPT.is_file():  # pragma: no cover - a broken install
        raise FileNotFoundError(
            f"The metric script {METRIC_SCRIPT} is missing from the installed hm_hf package; reinstall hm_hf."
        )
    kwargs.setdefault("keep_in_memory", True)  # small inputs; no cache files shared between processes
    return evaluate.load(str(METRIC_SCRIPT), **kwargs)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Numerically stable softmax over the last axis (float64)."""
    logits = np.asarray(logits, dtype=np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Per-label probabilities of a multi-label head (float64)."""
    from scipy.special import expit

    return expit(np.asarray(logits, dtype=np.float64))


def _logits_array(predictions) -> np.ndarray:
    if isinstance(predictions, (tuple, list)):  # models that also return hidden states / attentions
        predictions = predictions[0]
    return np.asarray(predictions, dtype=np.float64)


def make_compute_metrics(num_labels: int = 2, metric=None, problem_type: str | None = None):
    """A `compute_metrics(eval_pred)` for `transformers.Trainer`: logits -> probabilities -> AUROC/accuracy/F1.

    Rows labelled -100 or -1 (unlabelled test splits) are left out. With no labelled row at all it returns
    `{}` and logs why, so evaluating an unlabelled split does not crash. `num_labels == 2` scores the
    probability of class 1 (binary F1); more labels use one-vs-rest macro AUROC and macro-F1.
    A single logit column (num_labels == 1) is read as a binary logit (sigmoid).
    ``problem_type="multi_label_classification"``: labels are (N, num_labels) multi-hot rows (all -100 when
    unlabelled) and the result is {"roc_auc_micro", "f1_micro"} of the sigmoid scores (a label predicted
    when its score > 0.5), the shared task's scores.
    """
    if problem_type == MULTI_LABEL:
        return _multi_label_compute_metrics(num_labels)
    metric = metric if metric is not None else load_metric()

    def compute_metrics(eval_pred) -> dict:
        logits, labels = _logits_array(eval_pred.predictions), np.asarray(eval_pred.label_ids).reshape(-1)
        if logits.ndim == 1:
            logits = logits[:, None]
        if logits.shape[0] != labels.shape[0]:
            raise ValueError(f"{logits.shape[0]} rows of logits but {labels.shape[0]} labels.")
        if logits.shape[-1] != max(num_labels, 1) and not (num_labels == 2 and logits.shape[-1] == 1):
            raise ValueError(f"Logits have {logits.shape[-1]} columns but num_labels is {num_labels}.")
        keep = ~np.isin(labels, IGNORE_LABELS)
        if not keep.any():
            logger.info("compute_metrics: no labelled rows (all labels are -100/-1); no metrics computed.")
            return {}
        logits, labels = logits[keep], labels[keep].astype(np.int64)
        if logits.shape[-1] == 1:
            positive = 1.0 / (1.0 + np.exp(-logits[:, 0]))
            predictions = (positive >= 0.5).astype(np.int64)
            scores = positive
        else:
            probabilities = softmax(logits)
            predictions = probabilities.argmax(axis=-1)
            scores = probabilities[:, 1] if probabilities.shape[-1] == 2 else probabilities
        result = metric.compute(predictions=predictions, references=labels, prediction_scores=scores)
        return {key: float(value) for key, value in result.items()}

    return compute_metrics


def _multi_label_compute_metrics(num_labels: int):
    from hm_hf.metrics.fine_grained import micro_scores

    def compute_metrics(eval_pred) -> dict:
        logits, labels = _logits_array(eval_pred.predictions), np.asarray(eval_pred.label_ids)
        if logits.ndim != 2 or logits.shape[1] != num_labels or labels.shape != logits.shape:
            raise ValueError(f"multi-label scoring needs (N, {num_labels}) logits and labels, got {logits.shape} "
                             f"and {labels.shape}")
        keep = ~np.isin(labels, IGNORE_LABELS).any(axis=1)
        if not keep.any():
            logger.info("compute_metrics: no labelled rows (all labels are -100); no metrics computed.")
            return {}
        return micro_scores(labels[keep].astype(np.int64), sigmoid(logits[keep]))

    return compute_metrics
