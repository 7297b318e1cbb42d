"""The training job with a PEFT method and `push_to_hub`: adapters + base model + card + figures are
uploaded from a complete local folder, the token never shows, and offline gives one clear error after
everything was saved."""

import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from hm_hf.training.run import main

ROOT = Path(__file__).resolve().parents[1]
SECRET = "hf_" + "s3cr3t" * 6
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from hm_hf.synthetic import make_hmd, write_region_features

    root = tmp_path_factory.mktemp("synthetic")
    splits = {"train": 24, "dev_seen": 8, "test_seen": 6}
    write_region_features(make_hmd(root / "data", splits=splits, image_size=(96, 72)), root / "features")
    return root


def _args(data, output_dir, *extra):
    return [str(ROOT / "recipes/synthetic/config_tiny.yaml"), "--data_dir", str(data / "data"),
            "--feature_cache", str(data / "features"), "--dataset_cache_dir", str(data / "cache"),
            "--output_dir", str(output_dir), "--max_steps", "3", "--per_device_train_batch_size", "8",
            "--eval_strategy", "no", "--save_strategy", "no", "--load_best_model_at_end", "false",
            "--peft_method", "lora", "--push_to_hub", "true", "--hub_model_id", "org/tiny-lora",
            "--hub_token", SECRET, *extra]


def test_lora_run_pushes_a_self_contained_folder(data, tmp_path, monkeypatch, caplog, capsys):
    import huggingface_hub

    calls = []

    class FakeApi:  # stands in for the Hub: records what would be uploaded
        def __init__(self, token=None):
            calls.append(("token_given", token == SECRET))

        def create_repo(self, repo_id, repo_type=None, private=None, exist_ok=False):
            calls.append(("create_repo", repo_id, repo_type, private))

        def upload_folder(self, folder_path, repo_id, repo_type=None, ignore_patterns=None, **kwargs):
            files = sorted(str(p.relative_to(folder_path)) for p in Path(folder_path).rglob("*") if p.is_file())
            calls.append(("upload_folder", repo_id, files, ignore_patterns))
            return "https://huggingface.co/org/tiny-lora/commit/0"

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    caplog.set_level(logging.DEBUG)
    output_dir = tmp_path / "out"
    assert main(_args(data, output_dir)) == 0
    assert ("token_given", True) in calls
    assert ("create_repo", "org/tiny-lora", "model", True) in calls  # private by default
    (_, _, files, ignored), = [c for c in calls if c[0] == "upload_folder"]
    from huggingface_hub.utils import filter_repo_objects

    pushed = set(filter_repo_objects(files, ignore_patterns=ignored))
    assert "training_args.bin" in files and "training_args.bin" not in pushed  # Trainer's pickle holds the token
    for name in pushed:  # nothing that travels holds the token (the card once quoted the command line)
        assert SECRET.encode() not in (output_dir / name).read_bytes(), name
    for name in ("README.md", "adapter_config.json", "adapter_model.safetensors", "base_model/config.json",
                 "base_model/model.safetensors", "all_results.json", "roc_curve_dev_seen.png",
                 "confusion_matrix_dev_seen.png", "predictions_test_seen.csv", "decision_policy.json",
                 "reliability_diagram_dev_seen.png", "processor_config.json"):
        assert name in files, name
    captured = capsys.readouterr()
    assert SECRET not in caplog.text + captured.out + captured.err
    assert "library_name: peft" in (output_dir / "README.md").read_text()

    # What was pushed loads with the stock classes after `import hm_hf` and predicts what training predicted.
    import hm_hf  # noqa: F401
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from hm_hf.data.collator import MemeCollator
    from hm_hf.data.loading import load_hmd

    base = AutoModelForSequenceClassification.from_pretrained(output_dir / "base_model")
    model = PeftModel.from_pretrained(base, output_dir).eval()
    split = load_hmd(data / "data", cache_dir=data / "cache", config_name="regions",
                     feature_cache=data / "features")["test_seen"]
    collator = MemeCollator(tokenizer=AutoTokenizer.from_pretrained(output_dir), use_regions=True,
                            max_length=32, max_regions=16)
    from hm_hf.metrics.policy import DecisionPolicy

    with torch.no_grad():
        logits = model(**collator([split[i] for i in range(6)])).logits
    probabilities = DecisionPolicy.from_pretrained(output_dir).positive_probability(logits.numpy())  # calibrated
    rows = [line.split(",") for line in (output_dir / "predictions_test_seen.csv").read_text().splitlines()[1:]]
    np.testing.assert_allclose(probabilities, [float(r[1]) for r in rows], atol=1e-5)


def test_offline_push_fails_once_clearly_after_saving(data, tmp_path, caplog):
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    output_dir = tmp_path / "offline"
    caplog.set_level(logging.ERROR)
    assert main(_args(data, output_dir)) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "offline" in errors[0] and str(output_dir) in errors[0]
    assert SECRET not in caplog.text
    assert (output_dir / "adapter_model.safetensors").is_file() and (output_dir / "README.md").is_file()
