"""The CLIP recipes through the training job, in-process: the tiny synthetic recipe (a tiny random CLIP written
on first use, trained in full) and the LoRA variant (frozen CLIP referenced, adapters saved)."""

import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors import safe_open

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes/synthetic/config_tiny_clip.yaml"


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from hm_hf.synthetic import make_hmd

    root = tmp_path_factory.mktemp("synthetic_clip")
    make_hmd(root / "data", splits={"train": 24, "dev_seen": 8, "dev_unseen": 8, "test_seen": 8}, image_size=(64, 48))
    return root


def _run(data, output_dir, *extra):
    from hm_hf.training.run import main

    argv = [
        str(RECIPE), "--data_dir", str(data / "data"), "--dataset_cache_dir", str(data / "cache"),
        "--vision_model_name_or_path", str(data / "tiny_clip"), "--output_dir", str(output_dir),
        "--max_steps", "3", "--per_device_train_batch_size", "8", "--eval_strategy", "no", "--save_strategy", "no",
        "--load_best_model_at_end", "false", "--logging_steps", "1", *extra,
    ]
    assert main(argv) == 0
    return json.loads((output_dir / "all_results.json").read_text())


def _keys(path):
    with safe_open(str(path), framework="pt") as f:
        return set(f.keys())


def test_recipe_reads_as_documented():
    values = yaml.safe_load(RECIPE.read_text())
    assert values["model_type"] == "clip" and values["synthetic_if_missing"] and values["max_text_length"] == 77
    for name in ("frozen/config_hmd", "frozen/config_mmhs", "lora/config_hmd", "lora/config_mmhs"):
        recipe = yaml.safe_load((ROOT / f"recipes/clip/{name}.yaml").read_text())
        assert recipe["model_type"] == "clip" and recipe["vision_model_name_or_path"] == "openai/clip-vit-large-patch14"
        assert "fusion=cross" in recipe["config_overrides"] and recipe["max_text_length"] == 77
        from hm_hf.training.arguments import parse_recipe

        model_args, data_args, peft_args, _, training = parse_recipe([str(ROOT / f"recipes/clip/{name}.yaml")])
        assert peft_args.peft_method == ("lora" if name.startswith("lora") else "none")


def test_tiny_clip_recipe_end_to_end(data, tmp_path):
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    output_dir = tmp_path / "tiny_clip_run"
    results = _run(data, output_dir)
    assert (data / "tiny_clip" / "config.json").is_file()  # written on first use (synthetic_if_missing)
    for split in ("dev_seen", "dev_unseen"):
        assert 0.0 <= results[f"{split}_auroc"] <= 1.0
    assert (output_dir / "predictions_test_seen.csv").is_file()
    config = AutoConfig.from_pretrained(output_dir)
    assert config.model_type == "hm_clip" and config.fusion == "cross" and not config.freeze_clip
    assert any(k.startswith("hm_clip.clip.") for k in _keys(output_dir / "model.safetensors"))  # trained: saved
    model = AutoModelForSequenceClassification.from_pretrained(output_dir)
    assert type(model).__name__ == "HmClipForHatefulMemes"
    assert type(AutoTokenizer.from_pretrained(output_dir)).__name__ == "CLIPTokenizer"

    # Detector-free inference: the pipeline runs the saved folder on raw memes (CLIP processor saved with it)
    # and gives the probabilities training predicted.
    from hm_hf.pipeline import HatefulMemePipeline

    lines = [json.loads(line) for line in (data / "data" / "test_seen.jsonl").read_text().splitlines()]
    pipe = HatefulMemePipeline.from_pretrained(str(output_dir), device="cpu")
    outputs = pipe([str(data / "data" / line["img"]) for line in lines], texts=[line["text"] for line in lines])
    expected = {int(row.split(",")[0]): float(row.split(",")[1])
                for row in (output_dir / "predictions_test_seen.csv").read_text().splitlines()[1:]}
    for line, output in zip(lines, outputs):
        assert abs(output["probability"] - expected[line["id"]]) < 1e-4, line["id"]


def test_tiny_clip_lora_keeps_clip_referenced(data, tmp_path):
    from hm_hf.inference.model_loading import BASE_MODEL_DIR, load_trained_model

    output_dir = tmp_path / "tiny_clip_lora"
    overrides = "freeze_clip=true,fusion=align,projection_dim=8,num_pre_output_layers=1"
    results = _run(data, output_dir, "--peft_method", "lora", "--lora_r", "2", "--config_overrides", overrides)
    assert 0.0 <= results["dev_seen_auroc"] <= 1.0
    adapter = json.loads((output_dir / "adapter_config.json").read_text())
    assert set(adapter["target_modules"]) == {"q_proj", "v_proj"}
    assert {"classifier", "image_map", "text_map", "pre_output"} <= set(adapter["modules_to_save"])
    assert not any(".clip." in k for k in _keys(output_dir / BASE_MODEL_DIR / "model.safetensors"))
    model = load_trained_model(str(output_dir))
    assert model.get_base_model().config.clip_model_name_or_path == str((data / "tiny_clip").resolve())


def test_cached_clip_embeddings_train_only_the_head(data, tmp_path):
    """clip_embedding_cache: the frozen CLIP's vectors become columns; training and prediction read them."""
    overrides = "freeze_clip=true,fusion=cross,projection_dim=8,num_pre_output_layers=1"
    cached = _run(data, tmp_path / "cached", "--config_overrides", overrides, "--clip_embedding_cache", "true")
    assert 0.0 <= cached["dev_seen_auroc"] <= 1.0
    assert (tmp_path / "cached" / "predictions_test_seen.csv").is_file()
    from hm_hf.training.arguments import RecipeError

    with pytest.raises(RecipeError, match="frozen"):
        _run(data, tmp_path / "lora", "--config_overrides", overrides, "--clip_embedding_cache", "true",
             "--peft_method", "lora")
