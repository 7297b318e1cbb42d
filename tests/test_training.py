"""The training job end to end: `accelerate launch recipes/train_peft.py` on the tiny recipe, resume after
SIGKILL, the saved folder reloading, the model card and the push path."""

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

    root = tmp_path_factory.mktemp("synthetic")
    splits = {"train": 40, "dev_seen": 12, "dev_unseen": 8, "test_seen": 8}
    write_region_features(make_hmd(root / "data", splits=splits, image_size=(96, 72)), root / "features")
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
    result = _run(_command(data, output_dir))
    return output_dir, result


def test_tiny_recipe_end_to_end(trained):
    output_dir, result = trained
    assert "no CUDA GPU" in result.stderr  # fp16 without a GPU: a clear message and fp32, not a crash
    results = json.loads((output_dir / "all_results.json").read_text())
    for split in ("dev_seen", "dev_unseen"):
        assert 0.0 <= results[f"{split}_auroc"] <= 1.0 and f"{split}_f1" in results
    assert "test_seen_auroc" not in results  # unlabelled: predicted, not scored
    lines = (output_dir / "predictions_test_seen.csv").read_text().splitlines()
    assert lines[0] == "id,proba,label" and len(lines) == 9
    card = (output_dir / "README.md").read_text()
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
    splits = load_hmd(data / "data", cache_dir=data / "cache", config_name="regions", feature_cache=data / "features")
    collator = MemeCollator(tokenizer=AutoTokenizer.from_pretrained(output_dir), use_regions=True, max_length=32,
                            max_regions=16)
    batch = collator([splits["test_seen"][i] for i in range(8)])
    with torch.no_grad():
        probabilities = torch.softmax(model(**batch).logits, -1)[:, 1].numpy()
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


def test_mixed_precision_training_collates_regions_in_float16():
    """fp16/bf16 runs hand region features over as float16 (the autocast casts them on the device)."""
    from hm_hf.training.arguments import DataArguments
    from hm_hf.training.data import build_processor

    data_args = DataArguments()
    assert build_processor({"regions"}, data_args, mixed_precision=True).region_dtype == "float16"
    assert build_processor({"regions"}, data_args).region_dtype == "float32"
