"""The fine-grained training path (WOAH 2021 task A on tiny synthetic data in the shared task's files):
multi-hot labels from the collator, the multi-label loss of every model, multi-label scoring, and the tiny
recipe trained in-process: it learns, its metrics are the shared task scorer's on its own predictions file,
the card lists the errors per label, and the saved folder runs in the pipeline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from hm_hf.metrics import make_compute_metrics
from hm_hf.metrics.fine_grained import PC_CLASSES, binarize, micro_scores, read_gold, score_files
from hm_hf.models.heads import classification_loss

ROOT = Path(__file__).resolve().parents[1]
RECIPE = str(ROOT / "recipes/synthetic/config_tiny_fine_grained.yaml")


def test_collator_makes_multi_hot_labels_and_marks_unlabelled_rows():
    from hm_hf.data.collator import IGNORE_INDEX, MemeCollator

    collator = MemeCollator(label_column="pc", multi_label_classes=6)
    batch = collator([{"pc": [3]}, {"pc": [2, 5]}, {"pc": []}])
    expected = torch.tensor([[0, 0, 0, 1, 0, 0], [0, 0, 1, 0, 0, 1], [IGNORE_INDEX] * 6], dtype=torch.float32)
    assert batch["labels"].dtype == torch.float32 and torch.equal(batch["labels"], expected)
    assert "labels" not in collator([{"pc": []}, {"pc": []}])  # an unlabelled batch: no loss
    with pytest.raises(ValueError, match="row 7: pc class id 6 is outside the 6 classes"):
        collator([{"id": 7, "pc": [6]}])


def test_multi_label_loss_is_bce_over_the_labelled_rows():
    torch.manual_seed(0)
    logits = torch.randn(4, 6)
    labels = torch.tensor([[1, 0, 0, 0, 0, 0], [0, 1, 0, 1, 0, 0], [-100] * 6, [0, 0, 0, 0, 0, 1]],
                          dtype=torch.float32)
    loss = classification_loss(logits, labels, 6, "multi_label_classification")
    keep = [0, 1, 3]
    expected = F.binary_cross_entropy_with_logits(logits[keep], labels[keep])
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert classification_loss(logits, torch.full((4, 6), -100.0), 6, "multi_label_classification").item() == 0.0
    # without the problem type the same head trains with cross-entropy on class ids, as before
    assert classification_loss(logits, torch.tensor([0, 1, -100, 5]), 6).item() == pytest.approx(
        F.cross_entropy(logits[keep], torch.tensor([0, 1, 5])).item(), rel=1e-6)


@pytest.mark.parametrize("model_type", ["concat", "visual_bert", "uniter", "vilbert", "clip"])
def test_every_model_trains_a_multi_label_head(model_type):
    """problem_type="multi_label_classification" in the config selects the BCE loss in every architecture."""
    from hm_hf.models.auto import config_class, model_class
    from hm_hf.training.model_loading import HF_MODEL_TYPES

    small = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=20,
                 vocab_size=40, max_position_embeddings=32)
    configs = {
        "concat": dict(text_source="encoder", visual_embedding_dim=8,
                       text_config=dict(model_type="bert", **small)),
        "visual_bert": dict(visual_embedding_dim=8, **small),
        "uniter": dict(img_dim=8, **small),
        "vilbert": dict(v_feature_size=8, v_hidden_size=12, v_num_hidden_layers=1, v_num_attention_heads=2,
                        v_intermediate_size=12, bi_hidden_size=12, bi_num_attention_heads=2, v_biattention_id=[0],
                        t_biattention_id=[0], **small),
        "clip": dict(clip_config=dict(text_config=dict(hidden_size=16, intermediate_size=20, num_hidden_layers=1,
                                                       num_attention_heads=2, vocab_size=40,
                                                       max_position_embeddings=16, projection_dim=8),
                                      vision_config=dict(hidden_size=16, intermediate_size=20, num_hidden_layers=1,
                                                         num_attention_heads=2, image_size=16, patch_size=8,
                                                         projection_dim=8),
                                      projection_dim=8), projection_dim=8, pre_output_dim=8),
    }
    name = HF_MODEL_TYPES[model_type]
    config = config_class(name)(num_labels=6, problem_type="multi_label_classification", **configs[model_type])
    torch.manual_seed(0)
    model = model_class(name)(config).eval()
    batch = {"input_ids": torch.randint(5, 40, (2, 5)), "attention_mask": torch.ones(2, 5, dtype=torch.long)}
    if model_type == "clip":
        batch["pixel_values"] = torch.randn(2, 3, 16, 16)
    else:
        batch.update(token_type_ids=torch.zeros(2, 5, dtype=torch.long), visual_embeds=torch.randn(2, 3, 8),
                     visual_attention_mask=torch.ones(2, 3, dtype=torch.long), visual_boxes=torch.rand(2, 3, 4))
    labels = torch.tensor([[1, 0, 0, 1, 0, 0], [0, 0, 0, 0, 0, 1]], dtype=torch.float32)
    out = model(**batch, labels=labels)
    assert out.logits.shape == (2, 6)
    assert out.loss.item() == pytest.approx(F.binary_cross_entropy_with_logits(out.logits, labels).item(), rel=1e-5)


def test_multi_label_compute_metrics_is_the_shared_task_score():
    rng = np.random.default_rng(0)
    gold = binarize([["pc_empty"], ["race"], ["race", "sex"], ["religion"], ["pc_empty"]], PC_CLASSES)
    logits = rng.normal(size=gold.shape) + 2 * gold
    labels = np.concatenate([gold, np.full((1, 6), -100)])  # + one unlabelled row, left out
    scores = make_compute_metrics(6, problem_type="multi_label_classification")(
        type("EvalPrediction", (), {"predictions": np.concatenate([logits, rng.normal(size=(1, 6))]),
                                    "label_ids": labels})())
    assert scores == micro_scores(gold, 1 / (1 + np.exp(-logits)))


def test_fine_grained_recipe_needs_its_annotations_and_a_known_task(tmp_path):
    from hm_hf.training.arguments import RecipeError, parse_recipe

    out = ["--output_dir", str(tmp_path / "out")]
    with pytest.raises(RecipeError, match="needs fine_grained_annotations_dir"):
        parse_recipe([RECIPE, "--fine_grained_annotations_dir", "", *out])
    with pytest.raises(RecipeError, match="label_column for hmd_fine_grained is pc or attack"):
        parse_recipe([RECIPE, "--label_column", "fine_label", *out])
    with pytest.raises(RecipeError, match="is a fine-grained task: set dataset: hmd_fine_grained"):
        parse_recipe([RECIPE, "--dataset", "hmd", *out])
    with pytest.raises(RecipeError, match="num_labels 7 does not fit the pc task's 6 labels"):
        parse_recipe([RECIPE, "--num_labels", "7", *out])
    model, *_ = parse_recipe([RECIPE, "--label_column", "attack", *out])
    assert model.num_labels == 8 and model.problem_type == "multi_label_classification"
    assert model.label_names[0] == "attack_empty"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The tiny fine-grained recipe on synthetic Hateful Memes + its fine-grained files (written by the recipe's
    synthetic_if_missing), trained in-process."""
    from hm_hf.synthetic import make_hmd, write_region_features
    from hm_hf.training.run import main

    root = tmp_path_factory.mktemp("fine_grained_training")
    splits = {"train": 96, "dev_seen": 24, "dev_unseen": 16, "test_seen": 6}
    write_region_features(make_hmd(root / "data", splits=splits, image_size=(64, 48)), root / "features")
    output_dir = root / "out"
    assert main([RECIPE, "--data_dir", str(root / "data"), "--feature_cache", str(root / "features"),
                 "--fine_grained_annotations_dir", str(root / "annotations"),  # missing: the recipe writes it
                 "--dataset_cache_dir", str(root / "cache"), "--output_dir", str(output_dir), "--max_steps", "200",
                 "--learning_rate", "2e-3", "--eval_strategy", "no", "--save_strategy", "no",
                 "--load_best_model_at_end", "false", "--logging_steps", "50"]) == 0
    return root, output_dir


def test_it_learns_beyond_the_label_prior(trained):
    """Micro ROC-AUC pools (meme, label) cells, so the labels' base rates alone score well above 0.5; the
    model must beat scoring every meme with the training split's label frequencies."""
    root, output_dir = trained
    results = json.loads((output_dir / "all_results.json").read_text())
    train = read_gold(root / "annotations" / "train.json")
    prior = binarize([g["pc"] for g in train.values()], PC_CLASSES).mean(axis=0)
    for split in ("dev_seen", "dev_unseen"):
        gold = binarize([g["pc"] for g in read_gold(root / "annotations" / f"{split}.json").values()], PC_CLASSES)
        baseline = micro_scores(gold, np.tile(prior, (len(gold), 1)))
        assert results[f"{split}_roc_auc_micro"] > baseline["roc_auc_micro"] + 0.03, split
        assert results[f"{split}_f1_micro"] > baseline["f1_micro"] + 0.2, split


def test_metrics_are_the_shared_task_scorers_on_the_predictions_file(trained):
    root, output_dir = trained
    results = json.loads((output_dir / "all_results.json").read_text())
    for split in ("dev_seen", "dev_unseen"):
        scored = score_files(root / "annotations" / f"{split}.json", output_dir / f"predictions_{split}.json",
                             tasks=["pc"])
        assert scored["num_memes"] == scored["pc"]["per_class"]["pc_empty"]["positives"] + \
            scored["pc"]["per_class"]["pc_empty"]["negatives"]
        assert results[f"{split}_roc_auc_micro"] == pytest.approx(scored["pc"]["roc_auc_micro"], abs=1e-6)
        assert results[f"{split}_f1_micro"] == pytest.approx(scored["pc"]["f1_micro"], abs=1e-6)
        race = scored["pc"]["per_class"]["race"]
        assert results[f"{split}_memes_race"] == race["positives"]
        assert results[f"{split}_false_alarm_rate_race"] == pytest.approx(race["false_alarm_rate"], abs=1e-6)
    test_lines = (output_dir / "predictions_test.json").read_text().splitlines()
    assert len(test_lines) == 6 and set(json.loads(test_lines[0])["pred_pc"]) == set(PC_CLASSES)
    assert not any(key.startswith("test_") for key in results)  # the unlabelled split: predicted, not scored
    assert not (output_dir / "decision_policy.json").exists()  # labels are predicted above 0.5, the task's rule


def test_card_config_and_pipeline_of_a_fine_grained_model(trained):
    from transformers import AutoConfig

    from hm_hf.pipeline import HatefulMemePipeline

    root, output_dir = trained
    card = (output_dir / "README.md").read_text()
    assert "micro ROC-AUC" in card and "WOAH 2021 shared task" in card and "## Errors per protected category" in card
    assert "| race |" in card and "## Decision policy" not in card
    config = AutoConfig.from_pretrained(output_dir)
    assert config.problem_type == "multi_label_classification" and config.id2label[3] == "race"
    settings = json.loads((output_dir / "processor_config.json").read_text())
    assert settings["multi_label"] is True and settings["label_names"] == list(PC_CLASSES)
    pipe = HatefulMemePipeline.from_pretrained(output_dir, device="cpu")
    meme = json.loads((root / "annotations" / "dev_seen.json").read_text().splitlines()[0])
    result = pipe(str(root / "data" / meme["img"]), texts=meme["text"], return_regions=False)
    assert set(result["scores"]) == set(PC_CLASSES) and result["threshold"] == 0.5
    assert result["labels"] == [name for name in PC_CLASSES if result["scores"][name] > 0.5]
