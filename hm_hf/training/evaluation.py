"""Evaluating a trained model on every split, and fitting the decision policy it is saved with.

Every split but the training one is predicted (dev_seen, dev_unseen, test_seen, test_unseen: whichever the
data set has). Then:

- Single-label models get a `DecisionPolicy` fitted on `eval_split`: temperature scaling (one temperature,
  NLL minimised), then the threshold chosen by the recipe's `threshold_rule` on the calibrated
  probabilities. The fitting split's own numbers are therefore optimistic; the other splits' are not.
- Every labelled split is scored: AUROC / accuracy / F1 (the metric module; accuracy and F1 at the arg-max,
  as published results report them), NLL / ECE / Brier before and after the temperature, recall at 1% and
  5% false-positive rate, precision at 90% recall, and precision / recall / F1 / FPR / flag rate at the
  chosen threshold (`DecisionPolicy.evaluate`). Rows without a label are left out; a split without any
  labelled row gets predictions only.
- Binary models with fine-grained annotations (`hm_hf.training.data.protected_categories`) also get the
  share of each protected category's hateful memes they miss at the chosen threshold (`miss_rate_<c>`).
- Multi-label models (a fine-grained task) are scored as the WOAH 2021 shared task scores them (micro
  ROC-AUC and micro-F1 of the sigmoid scores, `hm_hf.metrics.fine_grained`), with each label's miss and
  false-alarm rate; a label is predicted when its score is > 0.5.

Files (main process only), in the output folder: `predictions_<split>.csv` (DrivenData's `id,proba,label`:
the calibrated probability and the label at the chosen threshold) for every split of a binary model,
`predictions_<split>.json` in the shared task's submission format (`{"id", "pred_<task>": {label: score}}`
per line, scorable by `python -m hm_hf.metrics.fine_grained`) for a multi-label one, and per labelled split
the ROC curve, the confusion matrix at the chosen threshold and the reliability diagram.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from hm_hf.fileio import atomic_write_text
from hm_hf.metrics import MULTI_LABEL, sigmoid
from hm_hf.metrics.policy import DecisionPolicy

__all__ = ["Evaluation", "evaluate_splits", "fit_policy", "write_predictions"]

logger = logging.getLogger(__name__)


@dataclass
class Evaluation:
    """What `evaluate_splits` found: metrics per labelled split, the figures written, the fitted policy."""

    results: dict[str, dict[str, float]] = field(default_factory=dict)
    figures: list[str] = field(default_factory=list)
    policy: DecisionPolicy | None = None

    def flat(self) -> dict:
        """`<split>_<metric>` for every labelled split, and the policy as `decision_<field>`."""
        flat = {f"{split}_{key}": value for split, metrics in self.results.items() for key, value in metrics.items()}
        if self.policy is not None:
            flat.update(decision_temperature=self.policy.temperature, decision_threshold=self.policy.threshold,
                        decision_rule=self.policy.rule, decision_fitted_on=self.policy.fitted_on,
                        decision_calibrated=self.policy.calibrated)
        return flat


def fit_policy(logits: np.ndarray, labels: np.ndarray, rule: str, split: str) -> DecisionPolicy:
    """The decision policy fitted on a split's labelled rows (`DecisionPolicy.fit`).

    A split without labels gives the neutral policy (T = 1, 0.5), one with a single class a fitted temperature
    and the fixed 0.5 threshold (a data-driven rule needs both classes); both with a warning."""
    labelled = labels >= 0
    if not labelled.any():
        logger.warning("the evaluation split %s has no labels: no temperature or threshold can be fitted; the "
                       "model keeps its own probabilities and threshold 0.5", split)
        return DecisionPolicy.neutral(logits.shape[-1])
    if logits.shape[-1] <= 2 and np.unique(labels[labelled]).size < 2 and not rule.startswith("fixed@"):
        logger.warning("the evaluation split %s holds a single class: threshold rule %r needs both; using "
                       "fixed@0.5", split, rule)
        rule = "fixed@0.5"
    return DecisionPolicy.fit(logits[labelled], labels[labelled], rule=rule, fitted_on=split)


def write_predictions(path: Path, ids, probability: np.ndarray, labels: np.ndarray) -> None:
    """DrivenData's submission format: id,proba,label."""
    rows = io.StringIO()
    writer = csv.writer(rows, lineterminator="\n")
    writer.writerow(["id", "proba", "label"])
    for example_id, proba, label in zip(ids, probability, labels):
        writer.writerow([example_id, f"{proba:.6f}", int(label)])
    atomic_write_text(path, rows.getvalue())


def write_task_predictions(path: Path, ids, task: str, classes, scores: np.ndarray) -> None:
    """The shared task's submission format, one JSON object per line: id and pred_<task> {label: score}."""
    lines = (json.dumps({"id": int(meme), f"pred_{task}": dict(zip(classes, map(float, row)))})
             for meme, row in zip(ids, scores))
    atomic_write_text(path, "".join(line + "\n" for line in lines))


def evaluate_splits(predict: Callable[[str], np.ndarray], splits, *, train_split: str, eval_split: str,
                    label_column: str, compute_metrics, threshold_rule: str, problem_type: str | None = None,
                    label_names=None, categories: dict | None = None, output_dir=None,
                    main_process: bool = True) -> Evaluation:
    """Predict every split but `train_split` (`predict(name)` -> logits), fit the policy on `eval_split`
    (single-label models), score the labelled splits and write predictions and figures (module docstring).

    `categories`: {split: {meme id: gold protected categories}} for a binary model's per-category miss rates.
    """
    from transformers import EvalPrediction

    names = [name for name in splits if name != train_split]
    logits = {name: np.asarray(predict(name), dtype=np.float64) for name in names}
    output_dir = Path(output_dir) if output_dir is not None else None
    evaluation = Evaluation()
    multi_label = problem_type == MULTI_LABEL
    if not multi_label:
        labels = np.asarray(splits[eval_split][label_column])
        evaluation.policy = fit_policy(logits[eval_split], labels, threshold_rule, eval_split)
    for name in names:
        split, split_logits = splits[name], logits[name]
        ids = list(split["id"])
        write = main_process and output_dir is not None
        if multi_label:
            gold = _multi_hot(list(split[label_column]), len(label_names))
            labelled = gold[:, 0] >= 0
            if labelled.any():
                evaluation.results[name] = _multi_label_metrics(split_logits, gold, labelled, label_names,
                                                                compute_metrics, EvalPrediction)
            if write:
                write_task_predictions(output_dir / f"predictions_{name}.json", ids, label_column,
                                       label_names, sigmoid(split_logits))
            continue
        labels = np.asarray(split[label_column])
        labelled = labels >= 0
        policy = evaluation.policy
        binary = policy.binary
        if labelled.any():
            metrics = compute_metrics(EvalPrediction(predictions=split_logits, label_ids=labels))
            metrics.update(policy.evaluate(split_logits[labelled], labels[labelled]))
            if binary and categories and name in categories:
                metrics.update(_category_miss_rates(policy, split_logits, ids, labels, categories[name]))
            evaluation.results[name] = metrics
            if write:
                evaluation.figures += _figures(policy, split_logits[labelled], labels[labelled], output_dir, name)
        if write and binary:
            write_predictions(output_dir / f"predictions_{name}.csv", ids,
                              policy.positive_probability(split_logits), policy.decide(split_logits))
    return evaluation


def _figures(policy: DecisionPolicy, logits: np.ndarray, labels: np.ndarray, output_dir: Path, split: str) -> list[str]:
    from hm_hf.metrics.calibration import save_reliability_diagram
    from hm_hf.training.card import save_figures

    figures = []
    if policy.binary:
        figures += save_figures(policy.positive_probability(logits), labels, output_dir, split,
                                threshold=policy.threshold, rule=policy.rule)
    figures.append(save_reliability_diagram(logits, labels, policy.temperature, output_dir, split))
    return figures


def _category_miss_rates(policy: DecisionPolicy, logits, ids, labels, gold: dict[int, list[str]]) -> dict:
    """miss_rate_<category> (and memes_<category>, the hateful memes it is over) at the policy's threshold."""
    from hm_hf.metrics.fine_grained import miss_rate_by_category

    rows = [i for i, meme in enumerate(ids) if meme in gold and labels[i] >= 0]
    if not rows:
        return {}
    probability = policy.positive_probability(logits[rows])
    rates = miss_rate_by_category(probability, [gold[ids[i]] for i in rows], threshold=policy.threshold)
    out = {}
    for category, rate in rates.items():
        out[f"miss_rate_{category}"] = rate["miss_rate"]
        out[f"memes_{category}"] = rate["memes"]
    return out


def _multi_hot(label_lists, num_classes: int) -> np.ndarray:
    """(N, C) int64 multi-hot matrix of lists of class ids; a row of -100 where the list is empty (unlabelled)."""
    gold = np.zeros((len(label_lists), num_classes), dtype=np.int64)
    for row, ids in enumerate(label_lists):
        if ids:
            gold[row, list(ids)] = 1
        else:
            gold[row] = -100
    return gold


def _multi_label_metrics(logits, gold, labelled, classes, compute_metrics, eval_prediction) -> dict:
    """The shared task's micro scores (through `compute_metrics`) and each label's miss / false-alarm rate."""
    from hm_hf.metrics.fine_grained import per_class_error_rates

    metrics = compute_metrics(eval_prediction(predictions=logits, label_ids=gold))
    rates = per_class_error_rates(gold[labelled], sigmoid(logits[labelled]), classes)
    for name, rate in rates.items():
        metrics[f"miss_rate_{name}"] = rate["miss_rate"]
        metrics[f"false_alarm_rate_{name}"] = rate["false_alarm_rate"]
        metrics[f"memes_{name}"] = rate["positives"]
    return metrics
