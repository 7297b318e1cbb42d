"""DecisionPolicy: fitted on an evaluation split (temperature, then threshold), applied to logits, saved and
read back as decision_policy.json."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from hm_hf.metrics.policy import POLICY_FILE, DecisionPolicy
from hm_hf.metrics.thresholds import metrics_at_threshold
from hub_cache import offline_hub_repo  # tests/hub_cache.py


def _overconfident(n=2000, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.normal(scale=1.5, size=n)
    labels = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(np.int64)
    return np.stack([np.zeros(n), 3.0 * z], axis=1), labels


def test_fit_calibrates_then_chooses_the_threshold_on_calibrated_probabilities():
    logits, labels = _overconfident()
    policy = DecisionPolicy.fit(logits, labels, rule="fpr@0.05", fitted_on="dev_seen")
    assert policy.temperature == pytest.approx(3.0, rel=0.1) and policy.fitted_on == "dev_seen"
    assert policy.rule == "fpr@0.05" and 0 < policy.threshold < 1
    assert policy.metrics["ece_after"] < policy.metrics["ece_before"]
    probability = policy.positive_probability(logits)
    measured = metrics_at_threshold(labels, probability, policy.threshold)
    assert measured["fpr"] <= 0.05 and policy.metrics["at_threshold_fpr"] == pytest.approx(measured["fpr"])
    assert policy.metrics["at_threshold_recall"] == pytest.approx(measured["recall"])
    assert (policy.decide(logits) == (probability >= policy.threshold)).all()
    # the same rows as choosing on the uncalibrated scores would flag (scaling is monotone)
    raw = DecisionPolicy.fit(logits, labels, rule="fpr@0.05", calibrate=False)
    assert raw.temperature == 1.0 and (raw.decide(logits) == policy.decide(logits)).all()


def test_one_column_logits_are_binary():
    logits, labels = _overconfident(n=400, seed=1)
    one = DecisionPolicy.fit(logits[:, 1:], labels, rule="max_f1")
    two = DecisionPolicy.fit(logits, labels, rule="max_f1")
    assert one.num_labels == 2 and one.temperature == pytest.approx(two.temperature, rel=1e-5)
    assert one.threshold == pytest.approx(two.threshold)


def test_multiclass_policy_decides_by_argmax():
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(300, 4)) * 3
    labels = logits.argmax(1)
    labels[:60] = rng.integers(0, 4, 60)
    policy = DecisionPolicy.fit(logits, labels)
    assert policy.num_labels == 4 and policy.threshold is None and policy.rule == "argmax"
    assert (policy.decide(logits) == logits.argmax(1)).all()
    with pytest.raises(ValueError, match="binary"):
        policy.positive_probability(logits)


def test_save_and_load_round_trip(tmp_path):
    logits, labels = _overconfident(n=300, seed=3)
    policy = DecisionPolicy.fit(logits, labels, rule="recall@0.9", fitted_on="dev_seen")
    path = policy.save_pretrained(tmp_path)
    assert path == tmp_path / POLICY_FILE
    data = json.loads(path.read_text())
    assert data["rule"] == "recall@0.9" and data["fitted_on"] == "dev_seen" and data["version"] == 2 and data["calibrated"] is True
    loaded = DecisionPolicy.from_pretrained(tmp_path)
    assert loaded == policy
    assert DecisionPolicy.from_dict(policy.to_dict()) == policy
    assert (loaded.decide(logits) == policy.decide(logits)).all()


def test_missing_file_gives_the_neutral_policy(tmp_path):
    policy = DecisionPolicy.from_pretrained(tmp_path)
    assert (policy.temperature, policy.threshold, policy.rule) == (1.0, 0.5, "fixed@0.5")
    assert policy.decide(np.array([[0.0, 0.1], [0.2, 0.0]])).tolist() == [1, 0]


def test_bad_policy_files_name_the_file(tmp_path):
    (tmp_path / POLICY_FILE).write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        DecisionPolicy.from_pretrained(tmp_path)
    (tmp_path / POLICY_FILE).write_text(json.dumps({"temperature": 1.0, "treshold": 0.4}))
    with pytest.raises(ValueError, match=r"decision_policy.json: unknown decision-policy key\(s\) treshold"):
        DecisionPolicy.from_pretrained(tmp_path)
    (tmp_path / POLICY_FILE).write_text(json.dumps({"temperature": -2.0}))
    with pytest.raises(ValueError, match="temperature must be"):
        DecisionPolicy.from_pretrained(tmp_path)
    (tmp_path / POLICY_FILE).write_text(json.dumps({"version": 99}))
    with pytest.raises(ValueError, match="newer"):
        DecisionPolicy.from_pretrained(tmp_path)
    (tmp_path / POLICY_FILE).write_text(json.dumps({"version": "1"}))
    with pytest.raises(ValueError, match="version must be"):
        DecisionPolicy.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="unknown threshold rule"):
        DecisionPolicy(rule="f1")
    with pytest.raises(ValueError, match="numeric threshold"):
        DecisionPolicy(threshold=math.nan)
    with pytest.raises(ValueError, match=r"rule 'fixed@0.9' fixes the threshold at 0.9 but threshold is 0.2"):
        DecisionPolicy(threshold=0.2, rule="fixed@0.9")  # the pipeline reported one rule and applied another
    with pytest.raises(ValueError, match=r"fixed@ threshold must be in \[0, 1\]"):
        DecisionPolicy(threshold=0.5, rule="fixed@7")
    tiny = DecisionPolicy(temperature=1e-310)  # a hand-edited file: logits / T overflow, P would be NaN (not flagged)
    with pytest.raises(ValueError, match="temperature 1e-310 is too small for these logits"):
        tiny.decide([[0.3, -0.2]])


def test_evaluate_reports_calibration_operating_points_and_the_threshold():
    from hm_hf.metrics.calibration import calibration_report
    from hm_hf.metrics.thresholds import operating_point_metrics

    logits, labels = _overconfident(n=1000, seed=4)
    policy = DecisionPolicy.fit(logits[:500], labels[:500], rule="max_f1", fitted_on="dev_seen")
    report = policy.evaluate(logits[500:], labels[500:])
    probability = policy.positive_probability(logits[500:])
    calibration = calibration_report(logits[500:], labels[500:], policy.temperature)
    assert report["ece_after"] == pytest.approx(calibration["ece_after"]) and report["ece_after"] < report["ece_before"]
    assert report["brier_before"] == pytest.approx(calibration["brier_before"])
    for name, value in operating_point_metrics(labels[500:], probability).items():
        assert report[name] == pytest.approx(value)
    measured = metrics_at_threshold(labels[500:], probability, policy.threshold)
    assert report["at_threshold_f1"] == pytest.approx(measured["f1"]) and report["at_threshold_tp"] == measured["tp"]
    assert "temperature" not in report and policy.metrics["temperature"] == policy.temperature
    assert {k: v for k, v in policy.metrics.items() if k != "temperature"} == policy.evaluate(logits[:500], labels[:500])
    with pytest.raises(ValueError, match="for 2 labels but the logits have 3 columns"):
        policy.evaluate(np.zeros((4, 3)), np.zeros(4, dtype=int))


def test_neutral_and_hand_set_thresholds():
    assert DecisionPolicy.neutral() == DecisionPolicy() and DecisionPolicy.neutral(6).rule == "argmax"
    logits, labels = _overconfident(n=300, seed=5)
    policy = DecisionPolicy.fit(logits, labels, rule="fpr@0.05", fitted_on="dev_seen")
    by_hand = policy.with_threshold(0.7)
    assert (by_hand.threshold, by_hand.rule, by_hand.temperature) == (0.7, "fixed@0.7", policy.temperature)
    assert not any(k.startswith("at_threshold_") for k in by_hand.metrics) and "ece_after" in by_hand.metrics
    assert DecisionPolicy(**{**by_hand.to_dict()}) == by_hand  # its rule parses
    with pytest.raises(ValueError, match="arg-max"):
        DecisionPolicy.neutral(6).with_threshold(0.5)


def test_version_1_files_and_hub_repos(tmp_path, monkeypatch):
    """Files written before `calibrated` existed read as not calibrated; a Hub repo's file is found through
    huggingface_hub (its offline cache here), a repo without one gives the neutral policy."""
    (tmp_path / POLICY_FILE).write_text(json.dumps({"temperature": 1.5, "threshold": 0.4, "rule": "max_f1",
                                                    "version": 1}))
    old = DecisionPolicy.from_pretrained(tmp_path)
    assert old.calibrated is False and old.temperature == 1.5
    (tmp_path / "repo").mkdir()
    DecisionPolicy(temperature=2.0, threshold=0.6, rule="recall@0.9", calibrated=True).save_pretrained(
        tmp_path / "repo")
    snapshot = offline_hub_repo(tmp_path, monkeypatch, tmp_path / "repo", "org/policy")
    assert DecisionPolicy.from_pretrained("org/policy").threshold == 0.6
    (snapshot.parents[1] / ".no_exist" / snapshot.name / POLICY_FILE).touch()
    (snapshot / POLICY_FILE).unlink()
    assert DecisionPolicy.from_pretrained("org/policy", num_labels=6) == DecisionPolicy.neutral(6)
