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


def test_every_recipe_names_the_tokenizer_its_checkpoint_was_trained_with():
    """UNITER-base was pre-trained with bert-base-cased (28,996 ids; ChenRocks/UNITER's prepro --toker),
    VisualBERT and ViLBERT with bert-base-uncased (30,522): the recipe's tokenizer must be that vocabulary."""
    from transformers import AutoConfig

    import hm_hf  # noqa: F401
    from hm_hf.text.tokenizer import KNOWN_VOCABULARIES
    from hm_hf.training.model_loading import HF_MODEL_TYPES

    vocabulary_of = {name: size for size, name in KNOWN_VOCABULARIES.items()}
    checked = 0
    for recipe in sorted((ROOT / "recipes").rglob("config_*.yaml")):
        model, *_ = parse_recipe([str(recipe)])
        if not model.tokenizer_name_or_path or model.model_type in ("concat", "clip"):
            continue
        vocab_size = AutoConfig.for_model(HF_MODEL_TYPES[model.model_type]).vocab_size  # the checkpoint's layout
        assert vocabulary_of.get(model.tokenizer_name_or_path) == vocab_size, recipe
        checked += 1
    assert checked >= 15
    uniter = [r for r in (ROOT / "recipes" / "uniter").rglob("*.yaml")]
    assert uniter and all("tokenizer_name_or_path: bert-base-cased" in r.read_text() for r in uniter)


def test_threshold_rule_is_checked_when_the_recipe_is_read(tmp_path):
    recipe = _write(tmp_path, "output_dir: out\nthreshold_rule: fpr@0.01\n")
    assert parse_recipe([recipe])[3].threshold_rule == "fpr@0.01"
    assert parse_recipe([_write(tmp_path, "output_dir: out\n")])[3].threshold_rule == "max_f1"  # the default
    with pytest.raises(RecipeError, match="threshold_rule: unknown threshold rule 'f1'"):
        parse_recipe([recipe, "--threshold_rule", "f1"])
    with pytest.raises(RecipeError, match="fpr@ target must be in"):
        parse_recipe([recipe, "--threshold_rule", "fpr@5"])
    with pytest.raises(RecipeError, match="dataset 'hmd_fine' is not one of hmd, mmhs, hmd_fine_grained"):
        parse_recipe([recipe, "--dataset", "hmd_fine"])
    with pytest.raises(RecipeError, match="does not apply to mmhs"):
        parse_recipe([recipe, "--dataset", "mmhs", "--fine_grained_annotations_dir", "x"])
