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


def test_labels_that_cannot_train_are_refused_before_training():
    """A missing label column and a split without labels once failed deep in Trainer ("the model did not return
    a loss", KeyError 'eval_auroc'); num_labels 3 on a binary label trained a 3-way head silently."""
    import datasets

    from hm_hf.training.arguments import DataArguments, ModelArguments
    from hm_hf.training.data import apply_class_names, check_labelled_splits

    splits = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"id": [1, 2], "label": [0, 1]}),
                                   "test_unseen": datasets.Dataset.from_dict({"id": [3, 4], "label": [-1, -1]})})
    check_labelled_splits(splits, DataArguments(dataset="hmd", eval_split="train"))
    with pytest.raises(RecipeError, match="label_column 'hateful' is not a column of the train split"):
        check_labelled_splits(splits, DataArguments(dataset="hmd", eval_split="train", label_column="hateful"))
    with pytest.raises(RecipeError, match="the test_unseen split has no labels .* -1 in all 2 rows"):
        check_labelled_splits(splits, DataArguments(dataset="hmd", eval_split="test_unseen"))
    with pytest.raises(RecipeError, match="num_labels 3 does not fit label_column 'label', a binary label"):
        apply_class_names(ModelArguments(num_labels=3), splits, DataArguments(dataset="hmd"))
    binary = ModelArguments()
    apply_class_names(binary, splits, DataArguments(dataset="hmd"))
    assert binary.num_labels == 2 and len(binary.label_names) == 2


def test_a_key_given_twice_or_not_a_name_is_refused_and_the_recipe_is_read_once(tmp_path):
    """PyYAML keeps the last of two equal keys without a word; the card once re-read the recipe file at the end
    of training (gone by then: no card, no push) and --recipe could point it at any file."""
    recipe = _write(tmp_path, "output_dir: out\nlearning_rate: 1.0e-4\nlearning_rate: 2.0\n")
    with pytest.raises(RecipeError, match="key 'learning_rate' is given twice, on lines 2 and 3"):
        parse_recipe([recipe])
    with pytest.raises(RecipeError, match="key 1 on line 1 is not a name"):
        parse_recipe([_write(tmp_path, "1: 2\noutput_dir: out\n")])
    text = "output_dir: out\nseed: 3\n"
    recipe = _write(tmp_path, text)
    *_, extra, training = parse_recipe([recipe])
    Path(recipe).unlink()  # moved away during the run
    assert (extra.recipe, extra.recipe_text, training.seed) == (recipe, text, 3)
    with pytest.raises(RecipeError, match="--recipe"):
        parse_recipe(["--output_dir", "out", "--recipe", "/etc/passwd"])


def test_the_training_script_reports_a_recipe_mistake_in_one_line(tmp_path):
    import subprocess
    import sys

    recipe = _write(tmp_path, "output_dir: out\nlearnig_rate: 1.0e-4\n")
    result = subprocess.run([sys.executable, str(ROOT / "recipes/train_peft.py"), recipe], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 2
    assert "train_peft: error: " in result.stderr and "unknown key(s) learnig_rate" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("flag, value, says", [("--seed", "-1", "seed must be a whole number from 0"),
                                               ("--seed", "99999999999", "seed must be a whole number from 0"),
                                               ("--per_device_train_batch_size", "0", "at least 1, got 0"),
                                               ("--learning_rate", "nan", "learning_rate must be a number")])
def test_training_values_that_fail_late_are_named_at_once(tmp_path, flag, value, says):
    with pytest.raises(RecipeError, match=says):
        parse_recipe([_write(tmp_path, "output_dir: out\n"), flag, value])


def test_a_push_to_a_name_that_is_no_repo_id_is_refused_before_training(tmp_path):
    """Without hub_model_id the repo is named after output_dir: 'my run' once failed after training."""
    recipe = _write(tmp_path, "output_dir: out\n")
    with pytest.raises(RecipeError, match="push_to_hub: 'my run' is not a Hub repo id .*set hub_model_id"):
        parse_recipe([recipe, "--output_dir", str(tmp_path / "my run"), "--push_to_hub", "true"])
    parse_recipe([recipe, "--output_dir", str(tmp_path / "my run"), "--push_to_hub", "true",
                  "--hub_model_id", "org/my-run"])
    # a bare name: the card pushed with the model would load it from this machine's output_dir
    with pytest.raises(RecipeError, match="push_to_hub: 'my-run' is not a Hub repo id .*set hub_model_id"):
        parse_recipe([recipe, "--output_dir", str(tmp_path / "my-run"), "--push_to_hub", "true"])


def test_synthetic_if_missing_never_writes_into_a_folder_of_other_files(tmp_path):
    """A real data set in MMF's layout has no train.jsonl at its top: synthetic memes were once written into it."""
    from hm_hf.training.arguments import DataArguments
    from hm_hf.training.data import ensure_synthetic_data

    real = tmp_path / "hateful_memes"
    (real / "defaults" / "annotations").mkdir(parents=True)
    (real / "defaults" / "annotations" / "train.jsonl").write_text('{"id": 1}\n')
    with pytest.raises(RecipeError, match="synthetic_if_missing: .*hateful_memes already holds files"):
        ensure_synthetic_data(DataArguments(dataset="hmd", data_dir=str(real), synthetic_if_missing=True))
    assert [p.name for p in real.iterdir()] == ["defaults"]


def test_a_missing_data_dir_is_named_before_the_hub_is_asked_for_the_model(tmp_path, monkeypatch):
    """A recipe on a Hub checkpoint with no data here retried the Hub for ~30 s, then ended in a connection
    traceback that never named the missing folder."""
    from hm_hf.training.run import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    recipe = Path(__file__).resolve().parents[1] / "recipes/visual_bert/adapter/config_hmd.yaml"
    missing = tmp_path / "hateful_memes"
    with pytest.raises(RecipeError, match=f"data_dir {missing} does not exist"):
        main([str(recipe), "--data_dir", str(missing), "--output_dir", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_a_bad_command_line_value_is_not_blamed_on_the_recipe_alone(tmp_path):
    """`recipe.yaml --max_regions -1` said "recipe.yaml: max_regions must be at least 1", pointing at a file that
    does not hold the value; the flags are named, never their values (one may be a token)."""
    recipe = str(Path(__file__).resolve().parents[1] / "recipes/synthetic/config_tiny.yaml")
    with pytest.raises(RecipeError) as refused:
        parse_recipe([recipe, "--max_regions", "-1", "--hub_token=hf_secret", "--output_dir", str(tmp_path)])
    message = str(refused.value)
    assert message.startswith(f"{recipe} with command line --max_regions, --hub_token, --output_dir: max_regions "
                              "must be at least 1") and "hf_secret" not in message
    with pytest.raises(RecipeError, match=r"^command line --max_regions: max_regions must be at least 1"):
        parse_recipe(["--max_regions", "-1"])
