"""`evaluate` metric module for hateful-meme detection: AUROC, accuracy and F1.

It is a self-contained metric script (it imports nothing from hm_hf) so that `evaluate.load(<path to this
file>)` works offline: the Hub's `roc_auc` / `f1` scripts cannot be fetched without a network, and need
not be. `hm_hf.metrics.load_metric()` loads this file.

Binary tasks (Hateful Memes, MMHS150K hate / not hate): `prediction_scores` is the probability of the
positive class, one float per example (shape (N,)); F1 is the binary F1 of class 1.
Multi-class tasks (MMHS150K 6-way): `prediction_scores` is (N, C) class probabilities; AUROC is the
one-vs-rest macro average and F1 is macro-F1 (over the classes present in references or predictions,
as scikit-learn's default). A (N, 2) score matrix is treated as binary (column 1).

Undefined AUROC: when the references hold a single class, AUROC is undefined and `auroc` is NaN (scikit-learn
raises instead; a NaN lets a training run go on and is easy to spot). For one-vs-rest AUROC, classes
absent from the references are left out of the macro average (NaN if fewer than one class is scorable).
"""

import math
import warnings

import datasets
import evaluate
import numpy as np
from sklearn.metrics import accuracy_score
from sklearn.metrics import f1_score
from sklearn.metrics import roc_auc_score

_DESCRIPTION = """AUROC (the Hateful Memes challenge's official metric), accuracy and F1 (binary F1 for binary
tasks, macro-F1 for multi-class tasks such as MMHS150K's 6 classes)."""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `int`): predicted labels (e.g. argmax of the class probabilities).
    references (`list` of `int`): ground-truth labels.
    prediction_scores (`list` of `float`, or `list` of `list` of `float`): for binary tasks the probability
        of the positive class (N,); for multi-class tasks the class probabilities (N, C).
Returns:
    auroc (`float`): area under the ROC curve (one-vs-rest macro average for multi-class); NaN when the
        references hold a single class.
    accuracy (`float`): fraction of correct predictions.
    f1 (`float`): binary F1 of class 1 (binary tasks) or macro-F1 (multi-class tasks).
Examples:
    >>> import evaluate
    >>> metric = evaluate.load("hm_hf/metrics/hateful_memes_metric.py")
    >>> metric.compute(
    ...     predictions=[0, 1, 1, 0], references=[0, 1, 0, 0], prediction_scores=[0.1, 0.9, 0.6, 0.3]
    ... )
    {'auroc': 1.0, 'accuracy': 0.75, 'f1': 0.6666666666666666}
"""

_CITATION = """@inproceedings{kiela2020hateful,
  title={The Hateful Memes Challenge: Detecting Hate Speech in Multimodal Memes},
  author={Kiela, Douwe and Firooz, Hamed and Mohan, Aravind and Goswami, Vedanuj and Singh, Amanpreet and Ringshia, Pratik and Testuggine, Davide},
  booktitle={Advances in Neural Information Processing Systems},
  year={2020}
}
"""


def _binary_auroc(y_true, y_score):
    if len(np.unique(y_true)) < 2:
        return float("nan")
    return float(roc_auc_score(y_true, y_score))


class HatefulMemesMetric(evaluate.Metric):
    """AUROC, accuracy and F1 for binary and multi-class hateful-meme classification."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            # The first format whose types fit the first example is used (evaluate tries them in order).
            features=[
                datasets.Features(
                    {
                        "predictions": datasets.Value("int64"),
                        "references": datasets.Value("int64"),
                        "prediction_scores": datasets.Value("float64"),
                    }
                ),
                datasets.Features(
                    {
                        "predictions": datasets.Value("int64"),
                        "references": datasets.Value("int64"),
                        "prediction_scores": datasets.List(datasets.Value("float64")),
                    }
                ),
            ],
            reference_urls=[
                "https://scikit-learn.org/stable/modules/generated/sklearn.metrics.roc_auc_score.html",
                "https://ai.meta.com/tools/hatefulmemes/",
            ],
        )

    def _compute(self, predictions, references, prediction_scores):
        predictions = np.asarray(predictions, dtype=np.int64)
        references = np.asarray(references, dtype=np.int64)
        scores = np.asarray(prediction_scores, dtype=np.float64)
        if len(references) == 0:
            raise ValueError("No examples to score: predictions/references/prediction_scores are empty.")
        if scores.ndim == 2 and scores.shape[1] == 2:
            scores = scores[:, 1]
        if scores.ndim == 2 and scores.shape[1] == 1:
            scores = scores[:, 0]

        if scores.ndim == 1:  # binary
            bad = sorted(set(np.unique(references).tolist()) - {0, 1})
            if bad:
                raise ValueError(
                    f"Binary scores (one per example) were given but references contain labels {bad}; "
                    "pass (N, C) class probabilities for a multi-class task."
                )
            auroc = _binary_auroc(references, scores)
            f1 = f1_score(references, predictions, pos_label=1, average="binary", zero_division=0)
        else:  # multi-class: one-vs-rest macro AUROC, macro-F1
            num_classes = scores.shape[1]
            if references.min() < 0 or references.max() >= num_classes:
                raise ValueError(
                    f"references must be class ids in [0, {num_classes}) to match prediction_scores of shape "
                    f"{scores.shape}; got labels from {references.min()} to {references.max()}."
                )
            per_class = [
                _binary_auroc(references == c, scores[:, c])
                for c in range(num_classes)
                if 0 < (references == c).sum() < len(references)
            ]
            auroc = float(np.mean(per_class)) if per_class else float("nan")
            f1 = f1_score(references, predictions, average="macro", zero_division=0)
        if math.isnan(auroc):
            warnings.warn(
                "AUROC is undefined: the references hold a single class; returning NaN.",
                RuntimeWarning,
                stacklevel=2,
            )
        return {
            "auroc": auroc,
            "accuracy": float(accuracy_score(references, predictions)),
            "f1": float(f1),
        }
