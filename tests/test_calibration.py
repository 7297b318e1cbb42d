"""Temperature scaling, ECE, Brier score and NLL: hand-computed answers, scikit-learn cross-checks, and
temperature scaling repairing deliberately over-confident logits without moving any arg-max."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import brier_score_loss, log_loss

from hm_hf.metrics.calibration import (
    as_class_logits,
    brier_score,
    calibration_report,
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
    reliability_bins,
    save_reliability_diagram,
    scaled_probabilities,
)


def _overconfident_binary(n=4000, factor=4.0, seed=0):
    """Labels drawn from sigmoid(z): logits z are calibrated, factor * z over-confident by `factor`."""
    rng = np.random.default_rng(seed)
    z = rng.normal(scale=1.5, size=n)
    labels = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(np.int64)
    return factor * z, labels


def _overconfident_multiclass(n=4000, classes=4, factor=3.0, seed=1):
    rng = np.random.default_rng(seed)
    z = rng.normal(scale=1.2, size=(n, classes))
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    labels = np.array([rng.choice(classes, p=row) for row in p])
    return factor * z, labels


@pytest.mark.parametrize("layout", ["one_column", "flat", "two_columns"])
def test_temperature_scaling_repairs_overconfident_binary_logits(layout):
    z, labels = _overconfident_binary()
    logits = {"one_column": z[:, None], "flat": z, "two_columns": np.stack([-z / 2, z / 2], axis=1)}[layout]
    temperature = fit_temperature(logits, labels)
    assert temperature == pytest.approx(4.0, rel=0.1)  # the factor the logits were inflated by
    report = calibration_report(logits, labels, temperature)
    assert report["nll_after"] < report["nll_before"] - 0.05
    assert report["ece_after"] < 0.5 * report["ece_before"] and report["ece_after"] < 0.03
    assert report["brier_after"] < report["brier_before"]
    before, after = scaled_probabilities(logits, 1.0), scaled_probabilities(logits, temperature)
    assert (before.argmax(axis=1) == after.argmax(axis=1)).all()  # decisions and ranking unchanged
    assert np.array_equal(np.argsort(before[:, 1], kind="stable"), np.argsort(after[:, 1], kind="stable"))


def test_one_two_and_flat_binary_layouts_give_the_same_temperature():
    z, labels = _overconfident_binary(n=500, seed=3)
    temperatures = [fit_temperature(z, labels), fit_temperature(z[:, None], labels),
                    fit_temperature(np.stack([np.zeros_like(z), z], axis=1), labels)]
    assert temperatures == pytest.approx([temperatures[0]] * 3, rel=1e-5)


def test_temperature_scaling_repairs_overconfident_multiclass_logits():
    logits, labels = _overconfident_multiclass()
    temperature = fit_temperature(logits, labels)
    assert temperature == pytest.approx(3.0, rel=0.1)
    report = calibration_report(logits, labels, temperature)
    assert report["nll_after"] < report["nll_before"] and report["ece_after"] < report["ece_before"]
    assert (scaled_probabilities(logits, temperature).argmax(1) == logits.argmax(1)).all()


def test_underconfident_logits_get_a_temperature_below_one():
    z, labels = _overconfident_binary(factor=0.5, seed=4)
    assert fit_temperature(z, labels) == pytest.approx(0.5, rel=0.1)


def test_fitted_temperature_is_the_nll_minimum():
    z, labels = _overconfident_binary(n=300, seed=5)
    fitted = fit_temperature(z, labels)
    grid = np.exp(np.linspace(np.log(0.1), np.log(10), 2001))
    nll = [negative_log_likelihood(scaled_probabilities(z, t), labels) for t in grid]
    best = grid[int(np.argmin(nll))]
    assert fitted == pytest.approx(best, rel=0.01)
    assert negative_log_likelihood(scaled_probabilities(z, fitted), labels) <= min(nll) + 1e-9


def test_unlabelled_rows_are_left_out():
    z, labels = _overconfident_binary(n=200, seed=6)
    padded_logits = np.concatenate([z, [50.0, -50.0, 3.0]])
    padded_labels = np.concatenate([labels, [-100, -1, -100]])
    assert fit_temperature(padded_logits, padded_labels) == pytest.approx(fit_temperature(z, labels), rel=1e-6)
    probabilities = scaled_probabilities(padded_logits)
    assert expected_calibration_error(probabilities, padded_labels) == pytest.approx(
        expected_calibration_error(scaled_probabilities(z), labels))


def test_separable_logits_warn_and_stop_at_the_bound(caplog):
    logits = np.array([-3.0, -2.0, 2.0, 3.0])
    with caplog.at_level("WARNING", logger="hm_hf.metrics.calibration"):
        temperature = fit_temperature(logits, [0, 0, 1, 1])
    assert temperature == 0.05 and "separated perfectly" in caplog.text
    # one row the wrong way round: a finite optimum, no warning
    caplog.clear()
    with caplog.at_level("WARNING", logger="hm_hf.metrics.calibration"):
        temperature = fit_temperature([-3.0, 0.5, 2.0, 3.0], [0, 0, 1, 1])
    assert 0.05 < temperature < 20 and not caplog.text


def test_ece_by_hand():
    # P(class 1) and labels; top-label confidences 0.9, 0.8, 0.7, 0.6, correct: yes, no, yes, yes.
    p = np.array([0.9, 0.8, 0.3, 0.6])
    labels = np.array([1, 0, 0, 1])
    # 5 bins (0, .2], ..., (.8, 1]: 0.9 -> (.8, 1] gap .1; 0.8 and 0.7 -> (.6, .8] acc .5 conf .75 gap .25;
    # 0.6 -> (.4, .6] gap .4.  ECE = 1/4 * .1 + 2/4 * .25 + 1/4 * .4 = 0.25
    assert expected_calibration_error(p, labels, n_bins=5) == pytest.approx(0.25)
    bins = reliability_bins(p, labels, n_bins=5)
    assert bins["counts"].tolist() == [0, 0, 1, 2, 1]
    assert bins["accuracy"][3] == pytest.approx(0.5) and bins["confidence"][3] == pytest.approx(0.75)
    assert math.isnan(bins["accuracy"][0])
    # one bin: |mean accuracy - mean confidence| = |0.75 - 0.75|
    assert expected_calibration_error(p, labels, n_bins=1) == pytest.approx(0.0)
    # (N, 2) probabilities are the same thing
    assert expected_calibration_error(np.stack([1 - p, p], 1), labels, n_bins=5) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="n_bins"):
        expected_calibration_error(p, labels, n_bins=0)


def test_brier_and_nll_by_hand_and_against_sklearn():
    p = np.array([0.9, 0.8, 0.3, 0.6])
    labels = np.array([1, 0, 0, 1])
    assert brier_score(p, labels) == pytest.approx((0.01 + 0.64 + 0.09 + 0.16) / 4)
    assert brier_score(p, labels) == pytest.approx(brier_score_loss(labels, p))
    nll = -(np.log(0.9) + np.log(0.2) + np.log(0.7) + np.log(0.6)) / 4
    assert negative_log_likelihood(p, labels) == pytest.approx(nll)
    multi = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
    assert brier_score(multi, [0, 1]) == pytest.approx((0.09 + 0.04 + 0.01 + 0.01 + 0.49 + 0.36) / 2)
    assert negative_log_likelihood(multi, [0, 1]) == pytest.approx(log_loss([0, 1], multi, labels=[0, 1, 2]))


def test_bad_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="NaN or infinite"):
        fit_temperature([0.1, np.nan], [0, 1])
    with pytest.raises(ValueError, match="no labelled rows"):
        fit_temperature([0.1, 0.2], [-100, -1])
    with pytest.raises(ValueError, match="class ids"):
        fit_temperature([[0.1, 0.2], [0.3, 0.1]], [0, 2])
    with pytest.raises(ValueError, match="rows of scores"):
        fit_temperature([0.1, 0.2, 0.3], [0, 1])
    with pytest.raises(ValueError, match="temperature"):
        scaled_probabilities([0.1], temperature=0.0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        brier_score([1.5, 0.2], [1, 0])
    assert as_class_logits([2.0]).tolist() == [[0.0, 2.0]]


def test_reliability_diagram_png(tmp_path):
    z, labels = _overconfident_binary(n=300, seed=7)
    name = save_reliability_diagram(z, labels, fit_temperature(z, labels), tmp_path, "dev_seen", n_bins=10)
    assert name == "reliability_diagram_dev_seen.png"
    path = tmp_path / name
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
    with Image.open(path) as image:
        assert image.size == (900, 550)
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # no temporary file left behind
