"""Calibration: temperature scaling, expected calibration error, Brier score, NLL, reliability diagram.

A classifier's softmax scores rank memes well (AUROC) but are usually over-confident; a moderator who
reads "0.97 hateful" needs it to mean about 97 of 100. Temperature scaling (Guo et al., 2017, "On
Calibration of Modern Neural Networks") divides the logits by one positive temperature T fitted on an
evaluation split by minimising the negative log-likelihood. Dividing by T > 0 never changes the arg-max
or the ranking, so accuracy and AUROC stay exactly as they were; only the probabilities move.

Inputs are the model's raw logits, as `Trainer.predict` returns them:
- (N, 1) or (N,): one binary logit z, P(class 1) = sigmoid(z / T);
- (N, 2): binary softmax logits, P = softmax(z / T) (the same as sigmoid((z1 - z0) / T));
- (N, C): multi-class softmax logits.
Rows labelled -100 or -1 (unlabelled) are left out, as `hm_hf.metrics.make_compute_metrics` does.

Definitions (the ones the numbers in `all_results.json` and the card follow):
- NLL: mean negative log-likelihood of the true class (natural log; scikit-learn's `log_loss`).
- ECE: top-label expected calibration error with equal-width bins, as in Guo et al. (2017): each row's
  confidence is its highest class probability, bins are (k/M, (k+1)/M] for k = 0..M-1 (M = `n_bins`,
  default 15, Guo et al.'s choice), and ECE = sum over bins of (rows in bin / N) * |accuracy(bin) -
  mean confidence(bin)|. For binary tasks the confidence is max(p, 1 - p), so only bins above 0.5 fill.
- Brier score: scikit-learn's `brier_score_loss`: binary tasks the mean of (P(class 1) - y)^2, in
  [0, 1]; multi-class the mean over rows of the sum over classes of (p_c - [y == c])^2, in [0, 2].

The reliability diagram draws exactly the bins ECE sums, before and after scaling.

Example:

```python
>>> from hm_hf.metrics.calibration import fit_temperature, calibration_report
>>> temperature = fit_temperature(eval_logits, eval_labels)        # e.g. 1.8 for an over-confident model
>>> calibration_report(eval_logits, eval_labels, temperature)
{'temperature': 1.8, 'nll_before': ..., 'nll_after': ..., 'ece_before': ..., 'ece_after': ..., ...}
```
"""

from __future__ import annotations

import logging
import math
import numbers
from pathlib import Path

import numpy as np

from hm_hf.metrics import IGNORE_LABELS

__all__ = [
    "DEFAULT_BINS",
    "TEMPERATURE_BOUNDS",
    "as_class_logits",
    "scaled_probabilities",
    "fit_temperature",
    "negative_log_likelihood",
    "expected_calibration_error",
    "reliability_bins",
    "brier_score",
    "calibration_metrics",
    "calibration_report",
    "save_reliability_diagram",
]

logger = logging.getLogger(__name__)

DEFAULT_BINS = 15  # Guo et al. (2017)
TEMPERATURE_BOUNDS = (0.05, 20.0)  # searched on a log scale; an optimum on a bound is reported


def as_class_logits(logits) -> np.ndarray:
    """(N, C) float64 softmax logits; a single binary logit column z becomes [0, z] (softmax = sigmoid)."""
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim == 1:
        logits = logits[:, None]
    if logits.ndim != 2 or logits.shape[0] == 0:
        raise ValueError(f"logits must be a non-empty (N,), (N, 1) or (N, C) array, got shape {logits.shape}")
    if not np.isfinite(logits).all():
        raise ValueError("logits contain NaN or infinite values; check the model's outputs")
    if logits.shape[1] == 1:
        logits = np.concatenate([np.zeros_like(logits), logits], axis=1)
    return logits


def scaled_probabilities(logits, temperature: float = 1.0) -> np.ndarray:
    """(N, C) class probabilities softmax(logits / temperature); a 1-column input gives [1 - p, p]."""
    from scipy.special import softmax

    _check_temperature(temperature)
    with np.errstate(over="ignore"):
        scaled = as_class_logits(logits) / temperature
    if not np.isfinite(scaled).all():  # softmax of an infinite logit is NaN: never a silent "not flagged"
        raise ValueError(f"temperature {temperature!r} is too small for these logits (logits / T overflow); a "
                         f"fitted temperature lies in {TEMPERATURE_BOUNDS}: check the decision policy")
    return softmax(scaled, axis=1)


def _check_temperature(temperature: float) -> None:
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real) or not (
        math.isfinite(temperature) and temperature > 0
    ):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")


def _labelled(values: np.ndarray, labels) -> tuple[np.ndarray, np.ndarray]:
    """Rows with a real label (not -100 / -1), labels as int64, with the shapes checked."""
    labels = np.asarray(labels).reshape(-1)
    if values.shape[0] != labels.shape[0]:
        raise ValueError(f"{values.shape[0]} rows of scores but {labels.shape[0]} labels")
    keep = ~np.isin(labels, IGNORE_LABELS)
    values, labels = values[keep], labels[keep].astype(np.int64)
    if labels.size == 0:
        raise ValueError("no labelled rows (every label is -100 or -1): calibration needs a labelled split")
    num_classes = values.shape[1]
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"labels must be class ids in [0, {num_classes}) for {num_classes}-class scores; "
                         f"got labels from {labels.min()} to {labels.max()}")
    return values, labels


def _nll_from_logits(class_logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    from scipy.special import log_softmax

    log_p = log_softmax(class_logits / temperature, axis=1)
    return float(-log_p[np.arange(labels.size), labels].mean())


def fit_temperature(logits, labels, bounds: tuple[float, float] = TEMPERATURE_BOUNDS) -> float:
    """The temperature T > 0 minimising the NLL of softmax(logits / T) on these labelled rows.

    The NLL is convex in 1/T (a log-sum-exp minus a linear term), so it has one minimum along log T,
    found with SciPy's bounded Brent method (`scipy.optimize.minimize_scalar`) over log T in `bounds`.
    When every row's true class already has the highest logit (the split is separated), the NLL keeps
    falling as T -> 0 and there is no finite optimum: the lower bound is returned with a warning, since
    such a temperature will not transfer to new data. Logits that are worse than uniform on average
    likewise run to the upper bound, with a warning.
    """
    from scipy.optimize import minimize_scalar

    low, high = bounds
    if not 0 < low < 1 < high:
        raise ValueError(f"bounds must satisfy 0 < low < 1 < high, got {bounds}")
    class_logits, labels = _labelled(as_class_logits(logits), labels)
    rows = np.arange(labels.size)
    others = class_logits.copy()
    others[rows, labels] = -np.inf
    if (class_logits[rows, labels] >= others.max(axis=1)).all():
        logger.warning("the %d labelled rows are separated perfectly (the true class always has the highest "
                       "logit): the NLL has no finite minimum, returning the lower bound T = %g, which will not "
                       "transfer to new data; fit on a larger or harder split", labels.size, low)
        return float(low)
    result = minimize_scalar(
        lambda log_t: _nll_from_logits(class_logits, labels, math.exp(log_t)),
        bounds=(math.log(low), math.log(high)),
        method="bounded",
        options={"xatol": 1e-6},
    )
    if not result.success:  # pragma: no cover - bounded Brent on a smooth 1-D function does not fail
        raise RuntimeError(f"temperature fit failed: {result.message}")
    temperature = float(math.exp(result.x))
    if abs(math.log(temperature / high)) < 1e-3:
        logger.warning("temperature %.4g is at the upper search bound: the logits are worse than uniform on "
                       "these %d rows (check the labels and the class order)", temperature, labels.size)
    return temperature


def negative_log_likelihood(probabilities, labels) -> float:
    """Mean negative log-likelihood of the true class (scikit-learn's `log_loss`, natural log)."""
    from sklearn.metrics import log_loss

    probabilities, labels = _labelled(_as_probabilities(probabilities), labels)
    return float(log_loss(labels, probabilities, labels=np.arange(probabilities.shape[1])))


def _as_probabilities(probabilities) -> np.ndarray:
    """(N, C) probabilities; a 1-D array is P(class 1) of a binary task."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.ndim == 1:
        probabilities = np.stack([1.0 - probabilities, probabilities], axis=1)
    if probabilities.ndim != 2 or probabilities.shape[1] < 2:
        raise ValueError(f"probabilities must be (N,) or (N, C >= 2), got shape {probabilities.shape}")
    if not np.isfinite(probabilities).all() or (probabilities < 0).any() or (probabilities > 1).any():
        raise ValueError("probabilities must lie in [0, 1]; pass logits through scaled_probabilities first")
    return probabilities


def reliability_bins(probabilities, labels, n_bins: int = DEFAULT_BINS) -> dict[str, np.ndarray]:
    """Per equal-width confidence bin (k/M, (k+1)/M]: row count, mean confidence and accuracy.

    Confidence is the top class probability, accuracy whether the top class is the label (top-label
    calibration, Guo et al. 2017). Empty bins have count 0 and NaN confidence / accuracy.
    """
    if not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")
    probabilities, labels = _labelled(_as_probabilities(probabilities), labels)
    confidence = probabilities.max(axis=1)
    correct = (probabilities.argmax(axis=1) == labels).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # side="left": a confidence equal to an upper edge belongs to that bin, (lower, upper]
    index = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, n_bins - 1)
    counts = np.bincount(index, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_confidence = np.bincount(index, weights=confidence, minlength=n_bins) / counts
        accuracy = np.bincount(index, weights=correct, minlength=n_bins) / counts
    return {"edges": edges, "counts": counts, "confidence": mean_confidence, "accuracy": accuracy}


def expected_calibration_error(probabilities, labels, n_bins: int = DEFAULT_BINS) -> float:
    """Top-label ECE with `n_bins` equal-width bins (the definition in this module's docstring)."""
    bins = reliability_bins(probabilities, labels, n_bins)
    filled = bins["counts"] > 0
    weights = bins["counts"][filled] / bins["counts"].sum()
    return float(np.sum(weights * np.abs(bins["accuracy"][filled] - bins["confidence"][filled])))


def brier_score(probabilities, labels) -> float:
    """scikit-learn's `brier_score_loss`: [0, 1] on P(class 1) for binary tasks, [0, 2] multi-class."""
    from sklearn.metrics import brier_score_loss

    probabilities, labels = _labelled(_as_probabilities(probabilities), labels)
    if probabilities.shape[1] == 2:
        return float(brier_score_loss(labels, probabilities[:, 1], pos_label=1))
    return float(brier_score_loss(labels, probabilities, labels=np.arange(probabilities.shape[1])))


def calibration_metrics(probabilities, labels, n_bins: int = DEFAULT_BINS) -> dict[str, float]:
    """{"nll", "ece", "brier"} of these probabilities."""
    return {
        "nll": negative_log_likelihood(probabilities, labels),
        "ece": expected_calibration_error(probabilities, labels, n_bins),
        "brier": brier_score(probabilities, labels),
    }


def calibration_report(logits, labels, temperature: float, n_bins: int = DEFAULT_BINS) -> dict[str, float]:
    """NLL, ECE and Brier score before (T = 1) and after dividing the logits by `temperature`.

    Keys: temperature, nll_before, nll_after, ece_before, ece_after, brier_before, brier_after (flat, so
    they go straight into `all_results.json` with a split prefix).
    """
    before = calibration_metrics(scaled_probabilities(logits, 1.0), labels, n_bins)
    after = calibration_metrics(scaled_probabilities(logits, temperature), labels, n_bins)
    report = {"temperature": float(temperature)}
    for name in ("nll", "ece", "brier"):
        report[f"{name}_before"] = before[name]
        report[f"{name}_after"] = after[name]
    return report


def save_reliability_diagram(logits, labels, temperature: float, output_dir, split: str,
                             n_bins: int = DEFAULT_BINS) -> str:
    """`reliability_diagram_<split>.png`: accuracy against confidence per bin, before and after scaling.

    Two panels (T = 1 and the fitted T) in the style of the card's ROC and confusion-matrix figures; each
    bar is one bin of the ECE, the red part the gap to the diagonal, with the share of rows per bin
    below. Returns the file name written (atomically) into `output_dir`.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hm_hf.fileio import atomic_path

    panels = [("before scaling", 1.0), (f"after scaling (T = {temperature:.2f})", temperature)]
    fig, axes = plt.subplots(2, 2, figsize=(9, 5.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    for column, (title, t) in enumerate(panels):
        probabilities = scaled_probabilities(logits, t)
        bins = reliability_bins(probabilities, labels, n_bins)
        ece = expected_calibration_error(probabilities, labels, n_bins)
        width = 1.0 / n_bins
        centres = bins["edges"][:-1] + width / 2
        filled = bins["counts"] > 0
        ax, share = axes[0, column], axes[1, column]
        ax.bar(centres[filled], bins["accuracy"][filled], width=width, edgecolor="black", linewidth=0.5,
               color="tab:blue", label="accuracy")
        gap_bottom = np.minimum(bins["accuracy"][filled], bins["confidence"][filled])
        gap = np.abs(bins["accuracy"][filled] - bins["confidence"][filled])
        ax.bar(centres[filled], gap, bottom=gap_bottom, width=width, color="tab:red", alpha=0.35,
               edgecolor="tab:red", linewidth=0.5, label="gap to confidence")
        ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_ylabel("accuracy")
        ax.set_title(f"{title}\nECE = {ece:.3f} ({n_bins} bins)")
        ax.legend(loc="upper left", fontsize="small")
        share.bar(centres, bins["counts"] / bins["counts"].sum(), width=width, color="grey", edgecolor="black",
                  linewidth=0.5)
        share.set_xlabel("confidence (top-class probability)")
        share.set_ylabel("share of rows")
    fig.suptitle(f"Reliability diagram ({split})")
    fig.tight_layout()
    name = f"reliability_diagram_{split}.png"
    with atomic_path(Path(output_dir) / name) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return name
