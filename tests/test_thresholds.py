"""Operating points and threshold rules: hand-computed answers, ties, unreachable targets, and a brute-force
check of scikit-learn's roc_curve / precision_recall_curve semantics."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hm_hf.metrics.thresholds import (
    choose_threshold,
    metrics_at_threshold,
    operating_point_metrics,
    parse_rule,
    pr_point_at_recall,
    precision_at_recall,
    recall_at_fpr,
    roc_point_at_fpr,
)

# 5 positives, 5 negatives, distinct scores (flag when score >= threshold):
#   >= .95: TP1 FP0 | >= .9: TP2 FP0 | >= .8: TP2 FP1 | >= .7: TP3 FP1 | >= .6: TP4 FP1
#   >= .5: TP4 FP2  | >= .4: TP5 FP2 | >= .3: TP5 FP3 | ...
SCORES = np.array([0.95, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1])
LABELS = np.array([1, 1, 0, 1, 1, 0, 1, 0, 0, 0])


def test_recall_at_fpr_by_hand():
    assert roc_point_at_fpr(LABELS, SCORES, 0.0) == (0.9, 0.4, 0.0)
    assert roc_point_at_fpr(LABELS, SCORES, 0.2) == pytest.approx((0.6, 0.8, 0.2))
    assert recall_at_fpr(LABELS, SCORES, 0.39) == pytest.approx(0.8)  # FPR .4 (threshold .4) not allowed
    assert recall_at_fpr(LABELS, SCORES, 0.4) == pytest.approx(1.0)


def test_precision_at_recall_by_hand():
    assert pr_point_at_recall(LABELS, SCORES, 0.9) == pytest.approx((0.4, 5 / 7, 1.0))
    assert pr_point_at_recall(LABELS, SCORES, 0.8) == pytest.approx((0.6, 0.8, 0.8))
    assert precision_at_recall(LABELS, SCORES, 0.4) == pytest.approx(1.0)  # threshold .9: TP2 FP0


def test_operating_point_metrics_and_rules_by_hand():
    assert operating_point_metrics(LABELS, SCORES) == pytest.approx(
        {"recall_at_fpr_1pct": 0.4, "recall_at_fpr_5pct": 0.4, "precision_at_recall_90pct": 5 / 7})
    best = choose_threshold(LABELS, SCORES, "max_f1")  # F1 at >= .4: 2*5 / (2*5 + 2 + 0) = 0.8333
    assert best.threshold == 0.4 and best.metrics["f1"] == pytest.approx(10 / 12)
    assert choose_threshold(LABELS, SCORES, "fpr@0.2").threshold == 0.6
    assert choose_threshold(LABELS, SCORES, "recall@0.8").threshold == 0.6
    fixed = choose_threshold(LABELS, SCORES, "fixed@0.5")
    assert fixed.threshold == 0.5 and fixed.metrics["tp"] == 4 and fixed.metrics["fp"] == 2


def test_metrics_at_threshold_by_hand():
    got = metrics_at_threshold(LABELS, SCORES, 0.6)
    assert got == pytest.approx({"threshold": 0.6, "precision": 0.8, "recall": 0.8, "f1": 0.8, "fpr": 0.2,
                                 "accuracy": 0.8, "flag_rate": 0.5, "tp": 4, "fp": 1, "tn": 4, "fn": 1})
    nothing = metrics_at_threshold(LABELS, SCORES, 2.0)
    assert nothing["precision"] == 0.0 and nothing["recall"] == 0.0 and nothing["flag_rate"] == 0.0
    assert math.isnan(metrics_at_threshold([1, 1], [0.2, 0.9], 0.5)["fpr"])


def test_ties_are_flagged_together_and_can_make_a_target_unreachable():
    scores, labels = [0.9, 0.9, 0.5, 0.1], [1, 0, 1, 0]
    # no threshold separates the tie at 0.9: FPR 0 is reached only by flagging nothing
    assert roc_point_at_fpr(labels, scores, 0.0) == (math.inf, 0.0, 0.0)
    assert roc_point_at_fpr(labels, scores, 0.5) == (0.5, 1.0, 0.5)
    with pytest.warns(RuntimeWarning, match="flagging nothing"):
        choice = choose_threshold(labels, scores, "fpr@0.0")
    assert choice.threshold == math.inf and choice.metrics["flag_rate"] == 0.0
    # the tied pair alone has precision 1/2; adding the 0.5 row (recall 1) gives 2/3, the best with recall >= .5
    assert pr_point_at_recall(labels, scores, 0.5) == pytest.approx((0.5, 2 / 3, 1.0))


def test_against_brute_force_over_every_threshold():
    rng = np.random.default_rng(0)
    for trial in range(20):
        labels = rng.integers(0, 2, 60)
        labels[:2] = [0, 1]
        scores = np.round(rng.random(60) * 0.6 + 0.4 * labels, 1)  # rounding makes many ties
        points = [metrics_at_threshold(labels, scores, t) for t in [*np.unique(scores), math.inf]]
        for max_fpr in (0.0, 0.01, 0.05, 0.2, 0.5):
            expected = max(p["recall"] for p in points if p["fpr"] <= max_fpr)
            assert recall_at_fpr(labels, scores, max_fpr) == pytest.approx(expected), (trial, max_fpr)
        for min_recall in (0.5, 0.9, 1.0):
            expected = max(p["precision"] for p in points if p["recall"] >= min_recall and p["flag_rate"] > 0)
            assert precision_at_recall(labels, scores, min_recall) == pytest.approx(expected), (trial, min_recall)
        best = choose_threshold(labels, scores, "max_f1")
        assert best.metrics["f1"] == pytest.approx(max(p["f1"] for p in points))
        assert best.threshold == max(p["threshold"] for p in points if p["f1"] == pytest.approx(best.metrics["f1"]))


def test_max_f1_ties_go_to_the_highest_threshold_exactly():
    """F1 from the curve's rounded precision and recall gave 0.8 at threshold 0 and 0.7999999999999999 at 1, so
    the rule flagged every meme instead of the 58% that score 1 (same F1, fewer false alarms)."""
    labels = np.array([1, 0, 0, 1, 1, 1, 0, 1, 0, 1, 1, 1])
    scores = np.array([1, 0, 0, 0, 1, 1, 1, 1, 0, 1, 1, 0], dtype=float)
    assert metrics_at_threshold(labels, scores, 0.0)["f1"] == metrics_at_threshold(labels, scores, 1.0)["f1"]
    best = choose_threshold(labels, scores, "max_f1")
    assert best.threshold == 1.0 and best.metrics["flag_rate"] == pytest.approx(7 / 12)


def test_unlabelled_rows_are_left_out_and_two_columns_mean_class_one():
    labels = np.concatenate([LABELS, [-100, -1]])
    scores = np.concatenate([SCORES, [0.99, 0.98]])
    assert operating_point_metrics(labels, scores) == pytest.approx(operating_point_metrics(LABELS, SCORES))
    two = np.stack([1 - SCORES, SCORES], axis=1)
    assert recall_at_fpr(LABELS, two, 0.2) == pytest.approx(0.8)


def test_single_class_is_nan_and_data_driven_rules_refuse():
    assert all(math.isnan(v) for v in operating_point_metrics([1, 1, 1], [0.2, 0.5, 0.9]).values())
    with pytest.raises(ValueError, match="both classes"):
        choose_threshold([1, 1, 1], [0.2, 0.5, 0.9], "max_f1")
    assert choose_threshold([1, 1, 1], [0.2, 0.5, 0.9], "fixed@0.5").metrics["recall"] == pytest.approx(2 / 3)


def test_rule_names():
    assert parse_rule("max_f1") == ("max_f1", None)
    assert parse_rule("fpr@0.01") == ("fpr", 0.01)
    assert parse_rule(" recall@0.9 ") == ("recall", 0.9)
    assert parse_rule("fixed@0.5") == ("fixed", 0.5)
    for bad in ("f1", "fpr@1.5", "recall@0", "fpr@", "max_f1@0.2", "fixed@-1", "fixed@7"):
        with pytest.raises(ValueError):
            parse_rule(bad)


def test_bad_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="0 or 1"):
        recall_at_fpr([0, 2], [0.1, 0.2], 0.1)
    with pytest.raises(ValueError, match=r"0 or 1 .*got \[0.7\]"):  # was truncated to class 0
        recall_at_fpr([0.7, 1.0, 0.0], [0.1, 0.2, 0.3], 0.1)
    with pytest.raises(ValueError, match="3 scores but 2 labels"):
        recall_at_fpr([0, 1], [0.1, 0.2, 0.3], 0.1)
    with pytest.raises(ValueError, match="max_fpr"):
        recall_at_fpr([0, 1], [0.1, 0.2], 1.5)
    with pytest.raises(ValueError, match="NaN"):
        precision_at_recall([0, 1], [0.1, float("nan")], 0.9)
