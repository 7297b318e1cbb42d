"""hm_hf.training.evaluation on hand-made logits: what every split gets (binary, 6-way, unlabelled, a single
class on the fitting split), the per-category miss rates, and the card's sections for them."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
from datasets import Dataset, DatasetDict

from hm_hf.metrics import make_compute_metrics
from hm_hf.metrics.fine_grained import miss_rate_by_category
from hm_hf.training.card import write_model_card
from hm_hf.training.evaluation import evaluate_splits


def _logits(labels, rng, classes=2, strength=2.0):
    logits = rng.normal(size=(len(labels), classes))
    logits[np.arange(len(labels)), np.maximum(labels, 0)] += strength
    return logits


def _evaluate(splits, logits, tmp_path, **options):
    options.setdefault("label_column", "label")
    options.setdefault("compute_metrics", make_compute_metrics(2))
    return evaluate_splits(lambda name: logits[name], splits, train_split="train", eval_split="dev_seen",
                           threshold_rule=options.pop("threshold_rule", "max_f1"), output_dir=tmp_path, **options)


def test_binary_splits_policy_predictions_and_category_miss_rates(tmp_path):
    rng = np.random.default_rng(0)
    labels = {"dev_seen": rng.integers(0, 2, 60), "dev_unseen": rng.integers(0, 2, 40), "test_unseen": -np.ones(10, int)}
    splits = DatasetDict({"train": Dataset.from_dict({"id": [1], "label": [0]}),
                          **{name: Dataset.from_dict({"id": list(range(100 * i, 100 * i + len(y))), "label": y})
                             for i, (name, y) in enumerate(labels.items(), start=1)}})
    logits = {name: _logits(y, rng) for name, y in labels.items()}
    hateful = [i for i, y in enumerate(labels["dev_unseen"]) if y == 1]
    gold = {200 + i: (["race", "sex"] if n % 2 else ["religion"]) for n, i in enumerate(hateful)}
    gold.update({200 + i: ["pc_empty"] for i, y in enumerate(labels["dev_unseen"]) if y == 0})
    evaluation = _evaluate(splits, logits, tmp_path, threshold_rule="fpr@0.1", categories={"dev_unseen": gold})
    policy = evaluation.policy
    assert policy.fitted_on == "dev_seen" and policy.rule == "fpr@0.1" and policy.calibrated
    assert set(evaluation.results) == {"dev_seen", "dev_unseen"}  # test_unseen: predictions only
    unseen = evaluation.results["dev_unseen"]
    scored = make_compute_metrics(2)(type("EvalPrediction", (), {"predictions": logits["dev_unseen"],
                                                                 "label_ids": labels["dev_unseen"]})())
    expected = {**scored, **policy.evaluate(logits["dev_unseen"], labels["dev_unseen"])}
    assert {key: unseen[key] for key in expected} == pytest.approx(expected, nan_ok=True)
    probability = policy.positive_probability(logits["dev_unseen"])
    expected = miss_rate_by_category(probability[hateful], [gold[200 + i] for i in hateful], policy.threshold)
    assert unseen["miss_rate_race"] == pytest.approx(expected["race"]["miss_rate"])
    assert unseen["memes_religion"] == expected["religion"]["memes"] and math.isnan(unseen["miss_rate_disability"])
    assert "miss_rate_race" not in evaluation.results["dev_seen"]  # no fine-grained labels given there
    flat = evaluation.flat()
    assert flat["decision_threshold"] == policy.threshold and flat["dev_unseen_miss_rate_sex"] == unseen["miss_rate_sex"]
    rows = (tmp_path / "predictions_test_unseen.csv").read_text().splitlines()
    assert rows[0] == "id,proba,label" and len(rows) == 11
    decided = policy.decide(logits["test_unseen"])
    assert [int(r.split(",")[2]) for r in rows[1:]] == decided.tolist()
    assert sorted(evaluation.figures) == sorted(f"{kind}_{split}.png" for split in ("dev_seen", "dev_unseen")
                                                for kind in ("roc_curve", "confusion_matrix", "reliability_diagram"))
    card = write_model_card(tmp_path, model_name="m", model_type="concat", base_model=None, dataset="hmd",
                            peft_method="none", results=evaluation.results, figures=evaluation.figures, trainable=1,
                            total=1, recipe_text=None, command="x", policy=policy).read_text()
    assert "| race |" in card and "## Misses by protected category" in card and "dev_unseen miss rate" in card
    assert "### Operating points" in card and "threshold rule | `fpr@0.1`" in card


def test_six_way_models_get_a_temperature_and_arg_max(tmp_path):
    rng = np.random.default_rng(1)
    labels = {"dev_seen": rng.integers(0, 6, 80), "test": rng.integers(0, 6, 30)}
    splits = DatasetDict({"train": Dataset.from_dict({"id": [1], "fine_label": [0]}),
                          **{name: Dataset.from_dict({"id": list(range(len(y))), "fine_label": y})
                             for name, y in labels.items()}})
    logits = {name: 3 * _logits(y, rng, classes=6) for name, y in labels.items()}
    evaluation = _evaluate(splits, logits, tmp_path, label_column="fine_label", compute_metrics=make_compute_metrics(6))
    policy = evaluation.policy
    assert policy.num_labels == 6 and policy.rule == "argmax" and policy.threshold is None
    assert "ece_after" in evaluation.results["test"] and "recall_at_fpr_1pct" not in evaluation.results["test"]
    assert evaluation.figures == ["reliability_diagram_dev_seen.png", "reliability_diagram_test.png"]
    assert not list(tmp_path.glob("predictions_*.csv"))  # DrivenData's format is binary
    card = write_model_card(tmp_path, model_name="m", model_type="concat", base_model=None, dataset="mmhs",
                            peft_method="none", results=evaluation.results, figures=evaluation.figures, trainable=1,
                            total=1, recipe_text=None, command="x", policy=policy).read_text()
    assert "none: the most probable class" in card and "### Operating points" not in card


def test_fitting_split_without_labels_or_with_one_class(tmp_path, caplog):
    rng = np.random.default_rng(2)
    splits = DatasetDict({"train": Dataset.from_dict({"id": [1], "label": [0]}),
                          "dev_seen": Dataset.from_dict({"id": [1, 2, 3], "label": [-1, -1, -1]})})
    logits = {"dev_seen": rng.normal(size=(3, 2))}
    with caplog.at_level(logging.WARNING):
        evaluation = _evaluate(splits, logits, tmp_path)
    assert evaluation.policy.fitted_on is None and evaluation.policy.threshold == 0.5 and evaluation.results == {}
    assert "has no labels" in caplog.text
    splits["dev_seen"] = Dataset.from_dict({"id": [1, 2, 3], "label": [1, 1, 1]})
    with caplog.at_level(logging.WARNING):
        evaluation = _evaluate(splits, logits, tmp_path)
    assert evaluation.policy.rule == "fixed@0.5" and evaluation.policy.fitted_on == "dev_seen"
    assert "holds a single class" in caplog.text
