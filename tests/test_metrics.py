"""The packaged evaluate metric (AUROC, accuracy, F1) against scikit-learn, its edge cases, offline loading,
and the Trainer's compute_metrics."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

from hm_hf.metrics import METRIC_SCRIPT, load_metric, make_compute_metrics, softmax

REPO = Path(__file__).resolve().parents[1]


class _EvalPred:  # what transformers.Trainer passes (EvalPrediction has these two attributes)
    def __init__(self, predictions, label_ids):
        self.predictions, self.label_ids = predictions, label_ids


@pytest.fixture(scope="module")
def metric():
    return load_metric()


def test_binary_matches_sklearn(metric):
    rng = np.random.default_rng(0)
    references = rng.integers(0, 2, 300)
    scores = np.clip(0.3 * references + rng.random(300) * 0.8, 0, 1)  # informative but imperfect
    predictions = (scores >= 0.5).astype(int)
    got = metric.compute(predictions=predictions, references=references, prediction_scores=scores)
    assert set(got) == {"auroc", "accuracy", "f1"}
    assert got["auroc"] == pytest.approx(roc_auc_score(references, scores), abs=1e-12)
    assert got["accuracy"] == pytest.approx(accuracy_score(references, predictions), abs=1e-12)
    assert got["f1"] == pytest.approx(f1_score(references, predictions), abs=1e-12)
    assert 0.55 < got["auroc"] < 0.99
    # a (N, 2) probability matrix means the same binary task
    two_columns = np.stack([1 - scores, scores], axis=1)
    same = metric.compute(predictions=predictions, references=references, prediction_scores=two_columns)
    assert same == pytest.approx(got)


def test_six_way_matches_sklearn(metric):
    rng = np.random.default_rng(1)
    references = rng.integers(0, 6, 400)
    logits = rng.normal(size=(400, 6))
    logits[np.arange(400), references] += 1.0
    probabilities = softmax(logits)
    predictions = probabilities.argmax(axis=1)
    got = metric.compute(predictions=predictions, references=references, prediction_scores=probabilities)
    assert got["auroc"] == pytest.approx(roc_auc_score(references, probabilities, multi_class="ovr", average="macro"))
    assert got["accuracy"] == pytest.approx(accuracy_score(references, predictions))
    assert got["f1"] == pytest.approx(f1_score(references, predictions, average="macro"))
    assert got["f1"] != pytest.approx(f1_score(references, predictions, average="micro"))  # macro, not micro


def test_incremental_batches_equal_one_call(metric):
    rng = np.random.default_rng(2)
    references, scores = rng.integers(0, 2, 60), rng.random(60)
    predictions = (scores > 0.5).astype(int)
    for start in (0, 25):
        end = 25 if start == 0 else 60
        metric.add_batch(
            predictions=predictions[start:end], references=references[start:end], prediction_scores=scores[start:end]
        )
    batched = metric.compute()
    assert batched == pytest.approx(
        metric.compute(predictions=predictions, references=references, prediction_scores=scores)
    )


def test_single_class_gives_nan_auroc_with_warning(metric):
    with pytest.warns(RuntimeWarning, match="single class"):
        got = metric.compute(predictions=[1, 0, 1], references=[1, 1, 1], prediction_scores=[0.9, 0.2, 0.7])
    assert math.isnan(got["auroc"])
    assert got["accuracy"] == pytest.approx(2 / 3)
    assert got["f1"] == pytest.approx(f1_score([1, 1, 1], [1, 0, 1]))


def test_multiclass_absent_class_left_out_of_auroc(metric):
    rng = np.random.default_rng(3)
    references = rng.choice([0, 1, 2, 4, 5], size=120)  # class 3 never occurs
    probabilities = rng.dirichlet(np.ones(6), size=120)
    got = metric.compute(
        predictions=probabilities.argmax(1), references=references, prediction_scores=probabilities
    )
    expected = np.mean([roc_auc_score(references == c, probabilities[:, c]) for c in (0, 1, 2, 4, 5)])
    assert got["auroc"] == pytest.approx(expected)


def test_bad_input_is_explained(metric):
    with pytest.raises(ValueError, match="labels \\[2\\]"):
        metric.compute(predictions=[0, 1, 2], references=[0, 1, 2], prediction_scores=[0.1, 0.9, 0.5])
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        metric.compute(predictions=[0, 1], references=[0, 5], prediction_scores=[[0.2, 0.3, 0.5]] * 2)


def test_compute_metrics_excludes_unlabelled_rows(metric):
    rng = np.random.default_rng(4)
    logits = rng.normal(size=(50, 2))
    labels = rng.integers(0, 2, 50)
    labels[:7], labels[7:12] = -100, -1
    got = make_compute_metrics(2, metric=metric)(_EvalPred((logits, np.zeros((50, 3))), labels))
    keep = labels >= 0
    probabilities = softmax(logits[keep])
    assert got["auroc"] == pytest.approx(roc_auc_score(labels[keep], probabilities[:, 1]))
    assert got["accuracy"] == pytest.approx(accuracy_score(labels[keep], probabilities.argmax(1)))
    assert got["f1"] == pytest.approx(f1_score(labels[keep], probabilities.argmax(1)))
    assert all(isinstance(v, float) for v in got.values())
    # an unlabelled split: nothing to score, no crash
    assert make_compute_metrics(2, metric=metric)(_EvalPred(logits, np.full(50, -100))) == {}


def test_compute_metrics_six_way_and_single_logit(metric):
    rng = np.random.default_rng(5)
    logits, labels = rng.normal(size=(80, 6)), rng.integers(0, 6, 80)
    got = make_compute_metrics(6, metric=metric)(_EvalPred(logits, labels))
    assert got["auroc"] == pytest.approx(roc_auc_score(labels, softmax(logits), multi_class="ovr"))
    assert got["f1"] == pytest.approx(f1_score(labels, logits.argmax(1), average="macro"))
    with pytest.raises(ValueError, match="6 columns but num_labels is 2"):
        make_compute_metrics(2, metric=metric)(_EvalPred(logits, labels))
    single, binary = rng.normal(size=(40, 1)), rng.integers(0, 2, 40)
    got = make_compute_metrics(2, metric=metric)(_EvalPred(single, binary))
    assert got["auroc"] == pytest.approx(roc_auc_score(binary, single[:, 0]))
    assert got["accuracy"] == pytest.approx(accuracy_score(binary, (single[:, 0] > 0).astype(int)))


def test_softmax_is_stable():
    probabilities = softmax(np.array([[1000.0, 0.0], [-1000.0, -1000.0]]))
    np.testing.assert_allclose(probabilities, [[1.0, 0.0], [0.5, 0.5]])


@pytest.mark.slow  # a fresh interpreter importing evaluate: a few seconds
def test_loads_offline_from_a_fresh_cache_without_network(tmp_path):
    """A new process, an empty HF cache, HF_HUB_OFFLINE=1 and every socket connection refused."""
    code = textwrap.dedent(
        f"""
        import socket
        def refuse(*args, **kwargs):
            raise OSError("network access attempted")
        socket.socket.connect = refuse
        socket.create_connection = refuse
        import evaluate
        metric = evaluate.load({str(METRIC_SCRIPT)!r})
        print(metric.name, metric.compute(predictions=[0, 1], references=[0, 1], prediction_scores=[0.2, 0.9]))
        scores = [[0.1, 0.2, 0.7], [0.2, 0.6, 0.2]]
        print(metric.compute(predictions=[2, 0], references=[2, 1], prediction_scores=scores))
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "PYTHONPATH": str(REPO)}
    env.pop("HF_MODULES_CACHE", None)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert lines[0].startswith("hateful_memes_metric") and "'auroc': 1.0" in lines[0]
    assert "'auroc': 1.0" in lines[1] and "'accuracy': 0.5" in lines[1]  # the (N, C) format, same module
    assert (tmp_path / "hf" / "modules").is_dir()  # the script was copied into the fresh modules cache
