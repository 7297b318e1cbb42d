"""Recipe parsing: YAML defaults, typed command-line overrides, unknown keys named."""

from pathlib import Path

import pytest

from hm_hf.training.arguments import RecipeError, parse_overrides, parse_recipe

ROOT = Path(__file__).resolve().parents[1]


def _write(tmp_path, text):
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return str(path)


def test_yaml_gives_defaults_and_the_command_line_overrides_with_types(tmp_path):
    recipe = _write(tmp_path, "model_type: uniter\nlearning_rate: 5e-5\nper_device_train_batch_size: 16\n"
                              "output_dir: out\npeft_method: lora\nlora_r: 4\n")
    model, data, peft, extra, training = parse_recipe([recipe, "--lora_r", "16", "--learning_rate", "1e-4"])
    assert model.model_type == "uniter" and peft.peft_method == "lora"
    assert peft.lora_r == 16 and training.learning_rate == pytest.approx(1e-4)
    assert training.per_device_train_batch_size == 16 and isinstance(training.learning_rate, float)
    assert extra.recipe == recipe


def test_unknown_keys_are_named(tmp_path):
    recipe = _write(tmp_path, "model_type: uniter\nlearnig_rate: 5e-5\noutput_dir: out\n")
    with pytest.raises(RecipeError, match="learnig_rate"):
        parse_recipe([recipe])
    with pytest.raises(RecipeError, match="--not_a_key"):
        parse_recipe([_write(tmp_path, "output_dir: out\n"), "--not_a_key", "1"])


def test_bad_values_are_errors(tmp_path):
    with pytest.raises(RecipeError, match="model_type"):
        parse_recipe([_write(tmp_path, "model_type: resnet\noutput_dir: out\n")])
    with pytest.raises(RecipeError, match="not valid YAML"):
        parse_recipe([_write(tmp_path, "model_type: [\n")])
    with pytest.raises(RecipeError, match="not found"):
        parse_recipe([str(tmp_path / "missing.yaml")])


def test_config_overrides():
    assert parse_overrides("hidden_size=64, num_hidden_layers=2,hidden_act=gelu") == {
        "hidden_size": 64, "num_hidden_layers": 2, "hidden_act": "gelu"}
    with pytest.raises(RecipeError, match="key=value"):
        parse_overrides("hidden_size")
