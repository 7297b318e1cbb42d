"""A single-label head of more than two classes: MMHS150K's 6-way `fine_label` trained in-process on tiny
synthetic MMHS150K data. The model's config, its processor (so the pipeline), the card and the Space name the
data set's classes (its ClassLabel: NotHate, Racist, ...), not LABEL_0..LABEL_5; num_labels follows the column."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from hm_hf.data.mmhs150k import CLASS_NAMES

ROOT = Path(__file__).resolve().parents[1]
RECIPE = str(ROOT / "recipes/synthetic/config_tiny.yaml")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from hm_hf.synthetic import make_mmhs, write_region_features

    root = tmp_path_factory.mktemp("mmhs_fine_label")
    memes = make_mmhs(root / "data", splits={"train": 24, "val": 8, "test": 6}, image_size=(64, 48))
    write_region_features(memes, root / "features")
    return root


def _args(data, output_dir, *extra):
    return [RECIPE, "--dataset", "mmhs", "--label_column", "fine_label", "--eval_split", "val",
            "--data_dir", str(data / "data"), "--feature_cache", str(data / "features"),
            "--dataset_cache_dir", str(data / "cache"), "--output_dir", str(output_dir), "--max_steps", "2",
            "--per_device_train_batch_size", "8", "--eval_strategy", "no", "--save_strategy", "no",
            "--load_best_model_at_end", "false", *extra]


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    """num_labels left at the recipe's 2: the run sizes the head to fine_label's six classes."""
    from hm_hf.training.run import main

    output_dir = tmp_path_factory.mktemp("run") / "fine_label"
    assert main(_args(data, output_dir)) == 0
    return output_dir


def test_the_config_and_processor_name_the_data_sets_classes(trained):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(trained)
    assert config.num_labels == 6 and config.problem_type is None
    assert config.id2label == dict(enumerate(CLASS_NAMES))
    assert config.label2id == {name: i for i, name in enumerate(CLASS_NAMES)}
    settings = json.loads((trained / "processor_config.json").read_text())
    assert settings["label_names"] == CLASS_NAMES and settings["multi_label"] is False
    card = (trained / "README.md").read_text()
    assert "one of `NotHate`, `Racist`, `Sexist`, `Homophobe`, `Religion`, `OtherHate`" in card


def test_the_pipeline_and_the_space_show_the_class_names(trained, data):
    from hm_hf.pipeline import HatefulMemePipeline

    pipe = HatefulMemePipeline.from_pretrained(str(trained), device="cpu")
    image = str(sorted((data / "data" / "img_resized").iterdir())[0])
    result = pipe(image, texts="a tweet", return_regions=False)
    assert result["label_name"] == CLASS_NAMES[result["label"]] and len(result["scores"]) == 6
    assert result["probability"] == pytest.approx(1.0 - result["scores"][0], abs=1e-6)

    pytest.importorskip("gradio")
    spec = importlib.util.spec_from_file_location("hateful_memes_app", ROOT / "spaces/hateful_memes/app.py")
    app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app)
    decision, confidences, _, details = app.MemeApp(pipe).classify({"path": image}, "a tweet", "")
    assert decision == result["label_name"]
    assert confidences == pytest.approx(dict(zip(CLASS_NAMES, result["scores"])), abs=1e-6)


def test_num_labels_that_does_not_fit_the_column_is_a_named_error(data, tmp_path):
    from hm_hf.training.arguments import RecipeError
    from hm_hf.training.run import main

    with pytest.raises(RecipeError, match=r"num_labels 3 does not fit label_column 'fine_label', whose 6 classes"):
        main(_args(data, tmp_path / "out", "--num_labels", "3"))
