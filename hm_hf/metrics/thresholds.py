"""Operating points of a binary detector: recall at a false-positive rate, precision at a recall, and a
decision threshold chosen by a named rule.

AUROC summarises every threshold at once; a trust-and-safety team runs one. These functions answer
"how many hateful memes do we catch if 1% of benign ones may be flagged?" and "how precise are we if we
must catch 90%?", and pick the threshold a deployment uses.

Semantics (scikit-learn's, so numbers can be checked against `roc_curve` / `precision_recall_curve`):
- A row is flagged when `score >= threshold`. The candidate operating points are those of
  `sklearn.metrics.roc_curve(..., drop_intermediate=False)` and `precision_recall_curve`: one per distinct
  score, plus "flag nothing" (threshold +inf) on the ROC side. Tied scores are flagged together; no
  threshold splits a tie, so a tie can make a target unreachable exactly.
- No interpolation: every number is achieved by a real threshold on this split (the step curve, not the
  straight line between points that ROC convex hulls or linear interpolation would report).
- recall at FPR x: the highest recall (TPR) among points with FPR <= x; among points with that recall the
  lowest FPR (which is the highest threshold). Always defined: "flag nothing" has FPR 0 (recall 0
  then, if even the top-scored negative is above every positive).
- precision at recall r: the highest precision among points with recall >= r; among equal precisions the
  higher recall, then the higher threshold. Always defined for 0 < r <= 1: flagging every row reaches
  recall 1.
- Undefined inputs: with a single class among the labels, ROC and PR points do not exist; the metric is
  NaN (as the packaged AUROC is) and choosing a threshold by a data-driven rule raises.
Rows labelled -100 or -1 (unlabelled) are left out, as everywhere in `hm_hf.metrics`.

Threshold rules (`choose_threshold`): "max_f1" (the PR point with the highest F1; ties: the highest
threshold, which flags least), "fpr@<x>" (the recall-at-FPR point, e.g. "fpr@0.01"), "recall@<r>" (the
precision-at-recall point, e.g. "recall@0.9"), "fixed@<t>" (the threshold t, e.g. "fixed@0.5").

```python
>>> from hm_hf.metrics.thresholds import choose_threshold, operating_point_metrics
>>> operating_point_metrics(labels, probabilities)
{'recall_at_fpr_1pct': 0.31, 'recall_at_fpr_5pct': 0.52, 'precision_at_recall_90pct': 0.61}
>>> choose_threshold(labels, probabilities, "fpr@0.05")
ThresholdChoice(rule='fpr@0.05', threshold=0.83, metrics={'precision': ..., 'recall': ..., 'fpr': ...})
```
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass, field

import numpy as np

from hm_hf.metrics import IGNORE_LABELS

__all__ = [
    "RULES",
    "ThresholdChoice",
    "binary_inputs",
    "parse_rule",
    "roc_point_at_fpr",
    "pr_point_at_recall",
    "recall_at_fpr",
    "precision_at_recall",
    "metrics_at_threshold",
    "operating_point_metrics",
    "choose_threshold",
]

RULES = ("max_f1", "fpr@<x>", "recall@<r>", "fixed@<t>")
_RULE = re.compile(r"^(max_f1)$|^(fpr|recall|fixed)@([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)$")

# The operating points `all_results.json` reports for every labelled split: name -> (kind, target).
REPORTED_POINTS = {
    "recall_at_fpr_1pct": ("fpr", 0.01),
    "recall_at_fpr_5pct": ("fpr", 0.05),
    "precision_at_recall_90pct": ("recall", 0.90),
}


@dataclass(frozen=True)
class ThresholdChoice:
    """A threshold on the score (flag when score >= threshold), the rule that chose it, and its metrics."""

    rule: str
    threshold: float
    metrics: dict[str, float] = field(default_factory=dict)


def binary_inputs(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    """Labelled rows only (labels -100 / -1 dropped): int64 labels in {0, 1} and float64 scores (N,)."""
    labels = np.asarray(labels).reshape(-1)
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim == 2 and scores.shape[1] == 2:
        scores = scores[:, 1]
    scores = scores.reshape(-1) if scores.ndim == 2 and scores.shape[1] == 1 else scores
    if scores.ndim != 1:
        raise ValueError(f"scores must be one score per row (N,), or (N, 2) probabilities; got {scores.shape}")
    if scores.shape[0] != labels.shape[0]:
        raise ValueError(f"{scores.shape[0]} scores but {labels.shape[0]} labels")
    keep = ~np.isin(labels, IGNORE_LABELS)
    labels, scores = labels[keep], scores[keep]
    bad = sorted(set(np.unique(labels).tolist()) - {0, 1})  # before the cast: 0.7 is not class 0
    if bad:
        raise ValueError(f"binary labels must be 0 or 1 (or -100 / -1 for unlabelled rows), got {bad}")
    if not np.isfinite(scores).all():
        raise ValueError("scores contain NaN or infinite values")
    return labels.astype(np.int64), scores


def _both_classes(labels: np.ndarray) -> bool:
    return labels.size > 0 and 0 < labels.sum() < labels.size


def _check_target(name: str, value: float, low_open: bool) -> None:
    low_ok = value > 0 if low_open else value >= 0
    if not (isinstance(value, (int, float)) and math.isfinite(value) and low_ok and value <= 1):
        raise ValueError(f"{name} must be in {'(0' if low_open else '[0'}, 1], got {value!r}")


def roc_point_at_fpr(labels, scores, max_fpr: float) -> tuple[float, float, float]:
    """(threshold, recall, fpr) of the highest-recall ROC point with FPR <= max_fpr (NaNs: one class)."""
    from sklearn.metrics import roc_curve

    _check_target("max_fpr", max_fpr, low_open=False)
    labels, scores = binary_inputs(labels, scores)
    if not _both_classes(labels):
        return math.nan, math.nan, math.nan
    fpr, tpr, thresholds = roc_curve(labels, scores, drop_intermediate=False)
    allowed = np.flatnonzero(fpr <= max_fpr + 1e-12)  # fpr[0] == 0: never empty
    best_tpr = tpr[allowed].max()
    at_best = allowed[tpr[allowed] == best_tpr]
    index = at_best[np.argmin(fpr[at_best])]  # thresholds decrease along the curve: the first is the highest
    return float(thresholds[index]), float(tpr[index]), float(fpr[index])


def pr_point_at_recall(labels, scores, min_recall: float) -> tuple[float, float, float]:
    """(threshold, precision, recall) of the highest-precision PR point with recall >= min_recall."""
    from sklearn.metrics import precision_recall_curve

    _check_target("min_recall", min_recall, low_open=True)
    labels, scores = binary_inputs(labels, scores)
    if not _both_classes(labels):
        return math.nan, math.nan, math.nan
    precision, recall, thresholds = precision_recall_curve(labels, scores)
    precision, recall = precision[:-1], recall[:-1]  # the last point (recall 0, precision 1) has no threshold
    allowed = np.flatnonzero(recall >= min_recall - 1e-12)  # the lowest threshold has recall 1: never empty
    order = np.lexsort((thresholds[allowed], recall[allowed], precision[allowed]))  # last key sorts first
    index = allowed[order[-1]]
    return float(thresholds[index]), float(precision[index]), float(recall[index])


def recall_at_fpr(labels, scores, max_fpr: float) -> float:
    """Recall (TPR) at a false-positive rate of at most `max_fpr` (module docstring: semantics)."""
    return roc_point_at_fpr(labels, scores, max_fpr)[1]


def precision_at_recall(labels, scores, min_recall: float) -> float:
    """Precision at a recall of at least `min_recall` (module docstring: semantics)."""
    return pr_point_at_recall(labels, scores, min_recall)[1]


def metrics_at_threshold(labels, scores, threshold: float) -> dict[str, float]:
    """Precision, recall, F1, FPR, accuracy, flag rate and the confusion counts when flagging score >= threshold.

    Precision, recall and F1 are 0 when undefined (nothing flagged / no positives), as scikit-learn's
    `zero_division=0`; FPR is NaN without negatives.
    """
    labels, scores = binary_inputs(labels, scores)
    flagged = scores >= threshold
    tp = int(np.sum(flagged & (labels == 1)))
    fp = int(np.sum(flagged & (labels == 0)))
    fn = int(np.sum(~flagged & (labels == 1)))
    tn = int(np.sum(~flagged & (labels == 0)))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
    return {
        "threshold": float(threshold),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "fpr": fp / (fp + tn) if fp + tn else math.nan,
        "accuracy": (tp + tn) / labels.size if labels.size else math.nan,
        "flag_rate": (tp + fp) / labels.size if labels.size else math.nan,
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
    }


def operating_point_metrics(labels, scores) -> dict[str, float]:
    """recall_at_fpr_1pct, recall_at_fpr_5pct and precision_at_recall_90pct (NaN with a single class)."""
    result = {}
    for name, (kind, target) in REPORTED_POINTS.items():
        function = recall_at_fpr if kind == "fpr" else precision_at_recall
        result[name] = function(labels, scores, target)
    return result


def parse_rule(rule: str) -> tuple[str, float | None]:
    """"max_f1" -> ("max_f1", None); "fpr@0.01" -> ("fpr", 0.01); also "recall@<r>", "fixed@<t>"."""
    match = _RULE.match(rule.strip()) if isinstance(rule, str) else None
    if match is None:
        raise ValueError(f"unknown threshold rule {rule!r}; use one of {', '.join(RULES)} (e.g. fpr@0.01)")
    if match.group(1):
        return "max_f1", None
    kind, value = match.group(2), float(match.group(3))
    if kind == "fpr":
        _check_target("fpr@ target", value, low_open=False)
    elif kind == "recall":
        _check_target("recall@ target", value, low_open=True)
    else:
        _check_target("fixed@ threshold", value, low_open=False)
    return kind, value


def choose_threshold(labels, scores, rule: str = "max_f1") -> ThresholdChoice:
    """The threshold `rule` picks on these labelled rows, with `metrics_at_threshold` there."""
    from sklearn.metrics import precision_recall_curve

    kind, value = parse_rule(rule)
    labels, scores = binary_inputs(labels, scores)
    if kind == "fixed":
        threshold = value
    else:
        if not _both_classes(labels):
            raise ValueError(f"threshold rule {rule!r} needs both classes among the labelled rows "
                             f"({labels.size} rows, {int(labels.sum())} positive); use fixed@<t> instead")
        if kind == "fpr":
            threshold = roc_point_at_fpr(labels, scores, value)[0]
        elif kind == "recall":
            threshold = pr_point_at_recall(labels, scores, value)[0]
        else:  # max_f1
            candidates = precision_recall_curve(labels, scores)[2]
            # F1 from the integer counts, 2 TP / (2 TP + FP + FN): one correctly rounded division, so equal
            # F1 values compare equal and the tie rule (the highest threshold) holds; 2PR / (P + R) from the
            # curve's rounded precision and recall can differ in the last bit between tied points.
            positives, negatives = np.sort(scores[labels == 1]), np.sort(scores[labels == 0])
            tp = positives.size - np.searchsorted(positives, candidates, side="left")
            fp = negatives.size - np.searchsorted(negatives, candidates, side="left")
            f1 = 2 * tp / (2 * tp + fp + (positives.size - tp))
            best = np.flatnonzero(f1 == f1.max())
            threshold = float(candidates[best].max())
    if math.isinf(threshold):
        warnings.warn(f"threshold rule {rule!r} is met only by flagging nothing on this split (threshold +inf): "
                      "every positive scores below some negative that the rule's target does not allow",
                      RuntimeWarning, stacklevel=2)
    return ThresholdChoice(rule=rule.strip(), threshold=float(threshold),
                           metrics=metrics_at_threshold(labels, scores, threshold))
