"""The training job end to end: `accelerate launch recipes/train_peft.py` on the tiny recipe, resume after
SIGKILL, the saved folder reloading, the model card and the push path; the decision policy fitted on
dev_seen (decision_policy.json, the new all_results.json keys, the reliability diagrams, the card's section),
the per-category miss rates from fine-grained annotations, and the pipeline deciding by the saved policy."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
ACCELERATE = Path(sys.executable).with_name("accelerate")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A small synthetic HMD set with its region features, shared by the runs below."""
    from hm_hf.synthetic import make_hmd, write_region_features

    from hm_hf.synthetic import make_fine_grained

    root = tmp_path_factory.mktemp("synthetic")
    splits = {"train": 40, "dev_seen": 12, "dev_unseen": 8, "test_seen": 8}
    write_region_features(make_hmd(root / "data", splits=splits, image_size=(96, 72)), root / "features")
    make_fine_grained(root / "data", root / "fine_grained")  # the WOAH 2021 files, for the miss rates
    return root


def _command(data, output_dir, *extra):
    return [
        str(ACCELERATE), "launch", "--num_processes", "1", "--num_machines", "1", "--mixed_precision", "no",
        "--dynamo_backend", "no", str(ROOT / "recipes/train_peft.py"), str(ROOT / "recipes/synthetic/config_tiny.yaml"),
        "--data_dir", str(data / "data"), "--feature_cache", str(data / "features"),
        "--dataset_cache_dir", str(data / "cache"), "--output_dir", str(output_dir),
        "--max_steps", "24", "--per_device_train_batch_size", "8", "--save_strategy", "steps", "--save_steps", "2",
        "--eval_strategy", "no", "--load_best_model_at_end", "false", "--save_total_limit", "10",
        "--fp16", "true", *extra,
    ]


def _env():
    return dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false",
                OMP_NUM_THREADS="1")


def _run(command):
    result = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("run") / "tiny"
    result = _run(_command(data, output_dir, "--threshold_rule", "fpr@0.25",
                           "--fine_grained_annotations_dir", str(data / "fine_grained")))
    return output_dir, result


def test_tiny_recipe_end_to_end(trained):
    output_dir, result = trained
    assert "no CUDA GPU" in result.stderr  # fp16 without a GPU: a clear message and fp32, not a crash
    results = json.loads((output_dir / "all_results.json").read_text())
    for split in ("dev_seen", "dev_unseen"):
        assert 0.0 <= results[f"{split}_auroc"] <= 1.0 and f"{split}_f1" in results
        for name in ("ece", "brier", "nll"):
            assert results[f"{split}_{name}_before"] >= 0 and results[f"{split}_{name}_after"] >= 0
        for name in ("recall_at_fpr_1pct", "recall_at_fpr_5pct", "precision_at_recall_90pct",
                     "at_threshold_precision", "at_threshold_recall", "at_threshold_f1", "at_threshold_fpr"):
            assert 0.0 <= results[f"{split}_{name}"] <= 1.0, name
        categories = ("disability", "nationality", "race", "religion", "sex")  # every hateful meme attacks one
        assert sum(results[f"{split}_memes_{c}"] for c in categories) >= results[f"{split}_at_threshold_tp"] + \
            results[f"{split}_at_threshold_fn"] > 0
        assert all(0.0 <= results[f"{split}_miss_rate_{c}"] <= 1.0 or results[f"{split}_memes_{c}"] == 0
                   for c in categories)
    assert "test_seen_auroc" not in results  # unlabelled: predicted, not scored
    assert "train_loss" in results and "train_epoch" in results and not any(k.startswith("train_train_") for k in results)
    # The decision policy: fitted on dev_seen (the rule asked for), saved beside the model, reported.
    policy = json.loads((output_dir / "decision_policy.json").read_text())
    assert policy["fitted_on"] == "dev_seen" and policy["rule"] == "fpr@0.25" and policy["calibrated"] is True
    assert results["decision_threshold"] == policy["threshold"] and results["decision_rule"] == "fpr@0.25"
    assert results["decision_temperature"] == policy["temperature"] > 0
    assert results["dev_seen_at_threshold_fpr"] <= 0.25  # the rule's target, met on the fitting split
    assert results["dev_seen_ece_after"] == pytest.approx(policy["metrics"]["ece_after"])
    for split in ("dev_seen", "dev_unseen"):
        assert (output_dir / f"reliability_diagram_{split}.png").stat().st_size > 1000
    # Predictions for every split: the calibrated probability, the label at the chosen threshold.
    for split, rows in (("test_seen", 8), ("dev_seen", 12), ("dev_unseen", 8)):
        lines = (output_dir / f"predictions_{split}.csv").read_text().splitlines()
        assert lines[0] == "id,proba,label" and len(lines) == rows + 1
        assert all(int(label) == (float(proba) >= policy["threshold"]) or abs(float(proba) - policy["threshold"]) < 1e-6
                   for _, proba, label in (line.split(",") for line in lines[1:]))
    card = (output_dir / "README.md").read_text()
    assert "## Decision policy" in card and f"`{policy['rule']}`" in card and f"{policy['threshold']:.4f}" in card
    assert "dev_seen (fitting split)" in card and "optimistic" in card
    assert "![reliability diagram dev unseen](reliability_diagram_dev_unseen.png)" in card
    assert "## Misses by protected category" in card and "| race |" in card
    assert card.startswith("---\n") and "model-index" in card and "library_name: transformers" in card
    assert "![roc curve dev seen](roc_curve_dev_seen.png)" in card
    # The data folder is hm_hf's synthetic set: the card says so, and names no real data set.
    assert "Trained on synthetic data" in card and "synthetic-data" in card and "Content warning" not in card
    assert "facebook/hateful_memes" not in card and "synthetic Hateful-Memes-format data" in card
    assert (output_dir / "roc_curve_dev_seen.png").stat().st_size > 1000
    assert (output_dir / "confusion_matrix_dev_seen.png").stat().st_size > 1000
    processor_settings = json.loads((output_dir / "processor_config.json").read_text())
    assert processor_settings["detector"] == "synthetic" and processor_settings["max_regions"] == 16
    assert processor_settings["trained_on_synthetic_data"] is True


def test_saved_folder_reloads_and_predicts_the_same(trained, data):
    import hm_hf  # noqa: F401
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from hm_hf.data.collator import MemeCollator
    from hm_hf.data.loading import load_hmd
    from hm_hf.inference.model_loading import load_trained_model

    output_dir, _ = trained
    model = AutoModelForSequenceClassification.from_pretrained(output_dir).eval()
    assert type(model) is type(load_trained_model(str(output_dir)))
    assert model.config.id2label == {0: "not hateful", 1: "hateful"}  # the processor's names, not LABEL_0 / LABEL_1
    temperature = json.loads((output_dir / "decision_policy.json").read_text())["temperature"]
    splits = load_hmd(data / "data", cache_dir=data / "cache", config_name="regions", feature_cache=data / "features")
    collator = MemeCollator(tokenizer=AutoTokenizer.from_pretrained(output_dir), use_regions=True, max_length=32,
                            max_regions=16)
    batch = collator([splits["test_seen"][i] for i in range(8)])
    with torch.no_grad():
        probabilities = torch.softmax(model(**batch).logits / temperature, -1)[:, 1].numpy()  # calibrated
    rows = [line.split(",") for line in (output_dir / "predictions_test_seen.csv").read_text().splitlines()[1:]]
    assert [int(r[0]) for r in rows] == splits["test_seen"]["id"][:8]
    np.testing.assert_allclose(probabilities, [float(r[1]) for r in rows], atol=1e-5)


def test_saved_processor_makes_the_training_batches(trained, data):
    """The processor saved beside the model (AutoProcessor reads it) collates rows exactly as training's did."""
    from transformers import AutoProcessor, AutoTokenizer

    from hm_hf.data.collator import MemeCollator
    from hm_hf.data.loading import load_hmd
    from hm_hf.processing import MemeProcessor

    output_dir, _ = trained
    processor = AutoProcessor.from_pretrained(output_dir)
    assert isinstance(processor, MemeProcessor) and processor.model_inputs == ("text", "regions")
    assert processor.detector == "synthetic" and processor.max_regions == 16 and processor.max_text_length == 32
    splits = load_hmd(data / "data", cache_dir=data / "cache", config_name="regions", feature_cache=data / "features")
    rows = [splits["dev_seen"][i] for i in range(6)]
    expected = MemeCollator(tokenizer=AutoTokenizer.from_pretrained(output_dir), use_regions=True, max_length=32,
                            max_regions=16)(rows)
    batch = processor(rows)
    assert batch.keys() == expected.keys()
    for key in expected:
        assert torch.equal(batch[key], expected[key]), key


def test_resume_after_sigkill_gives_the_same_weights(trained, data, tmp_path):
    uninterrupted, _ = trained
    output_dir = tmp_path / "killed"
    process = subprocess.Popen(_command(data, output_dir), env=_env(), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while not (output_dir / "checkpoint-2" / "trainer_state.json").is_file():
        assert process.poll() is None and time.time() < deadline, "the run ended before it could be killed"
        time.sleep(0.01)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not (output_dir / "model.safetensors").exists(), "killed before the end"
    result = _run(_command(data, output_dir))
    assert "resuming from" in result.stderr
    final = load_file(output_dir / "model.safetensors")
    reference = load_file(uninterrupted / "model.safetensors")
    assert final.keys() == reference.keys()
    for name in reference:
        torch.testing.assert_close(final[name], reference[name], rtol=1e-5, atol=1e-6, msg=name)


def test_a_reused_output_dir_of_another_run_is_refused_before_anything_is_written(trained, data, tmp_path):
    """Another seed into a copy of a finished run's folder once trained 0 steps and kept the old model."""
    import shutil

    reused = tmp_path / "reused"
    shutil.copytree(trained[0], reused)
    before = {p.relative_to(reused): p.stat().st_mtime_ns for p in reused.rglob("*")}
    command = [sys.executable, *_command(data, reused, "--seed", "7")[10:]]  # the script, without accelerate
    result = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "holds the checkpoints of another run (training.seed: 12345 then, 7 now)" in result.stderr
    assert {p.relative_to(reused): p.stat().st_mtime_ns for p in reused.rglob("*")} == before  # untouched


def test_mixed_precision_training_collates_regions_in_float16():
    """fp16/bf16 runs hand region features over as float16 (the autocast casts them on the device)."""
    from hm_hf.training.arguments import DataArguments
    from hm_hf.training.data import build_processor

    data_args = DataArguments()
    assert build_processor({"regions"}, data_args, mixed_precision=True).region_dtype == "float16"
    assert build_processor({"regions"}, data_args).region_dtype == "float32"


def test_pipeline_decides_by_the_saved_policy(trained, data, tmp_path):
    """The pipeline reads decision_policy.json with the model: its temperature scales the probability and its
    threshold decides the label; editing the file flips the label."""
    import shutil

    from hm_hf.pipeline import HatefulMemePipeline

    output_dir, _ = trained
    folder = tmp_path / "model"
    shutil.copytree(output_dir, folder, ignore=shutil.ignore_patterns("checkpoint-*"))
    policy_file = folder / "decision_policy.json"
    policy = json.loads(policy_file.read_text())
    meme = {"image": data / "data" / "img" / "00001.png", "text": "a caption"}
    pipe = HatefulMemePipeline.from_pretrained(folder, device="cpu")
    result = pipe(str(meme["image"]), texts=meme["text"], return_regions=False)
    assert result["threshold"] == policy["threshold"] and result["threshold_rule"] == "fpr@0.25"
    assert result["calibrated"] is True and result["label"] == int(result["probability"] >= policy["threshold"])
    logit = float(np.log(result["scores"][1] / result["scores"][0]))  # z1 - z0, divided by the temperature
    for threshold, label in ((result["probability"] - 1e-3, 1), (result["probability"] + 1e-3, 0)):
        policy_file.write_text(json.dumps({**policy, "threshold": threshold}))
        flipped = HatefulMemePipeline.from_pretrained(folder, device="cpu")(str(meme["image"]), texts=meme["text"],
                                                                           return_regions=False)
        assert flipped["label"] == label and flipped["threshold"] == threshold
    policy_file.write_text(json.dumps({**policy, "temperature": policy["temperature"] * 2}))
    cooler = HatefulMemePipeline.from_pretrained(folder, device="cpu")(str(meme["image"]), texts=meme["text"],
                                                                      return_regions=False)
    assert cooler["probability"] == pytest.approx(1 / (1 + np.exp(-logit / 2)), abs=1e-6)
    policy_file.unlink()  # a folder without the policy: the model's own probability, threshold 0.5
    plain = HatefulMemePipeline.from_pretrained(folder, device="cpu")(str(meme["image"]), texts=meme["text"],
                                                                     return_regions=False)
    assert plain["threshold"] == 0.5 and plain["calibrated"] is False
    assert plain["probability"] == pytest.approx(1 / (1 + np.exp(-logit * policy["temperature"])), abs=1e-6)
