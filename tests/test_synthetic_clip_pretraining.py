"""The tiny CLIP pre-trained on synthetic image / caption pairs: the frozen-CLIP stand-in of the RGCL recipes."""

import json

import pytest

from hm_hf.models.clip import make_tiny_clip
from hm_hf.synthetic.clip_pretraining import PRETRAINING_FILE, pretrain_tiny_clip, synthetic_pairs, zero_shot_accuracy
from hm_hf.synthetic.world import KEYWORDS
from hm_hf.training.arguments import RecipeError, parse_recipe


def test_pairs_name_a_keyword_of_the_objects_kind():
    images, captions = synthetic_pairs(6, seed=5)
    assert len(images) == len(captions) == 6 and images[0].size == (320, 240)
    for i, caption in enumerate(captions):
        words = caption.split()
        assert words[0] in KEYWORDS[i % 2]  # the image kind alternates, the keyword follows it
        assert ("red square" in caption) == (i % 2 == 0) and ("blue disc" in caption) == (i % 2 == 1)


def test_pretraining_teaches_the_objects_kinds_and_keeps_a_finished_checkpoint(tmp_path):
    """Zero-shot, a random tiny CLIP cannot tell the two kinds of object apart; pre-trained, it names them."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        path = pretrain_tiny_clip(tmp_path / "pretrained", ["a meme caption"], num_pairs=512, epochs=10,
                                  progress=False)
    finally:
        torch.set_num_threads(threads)
    random_clip = make_tiny_clip(tmp_path / "random")
    assert zero_shot_accuracy(random_clip) < 0.7
    assert zero_shot_accuracy(path) > 0.9
    record = json.loads((tmp_path / "pretrained" / PRETRAINING_FILE).read_text())
    assert record["num_pairs"] == 512 and len(record["clip_loss_per_epoch"]) == 10
    assert record["clip_loss_per_epoch"][-1] < record["clip_loss_per_epoch"][0]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no half-written folder left
    weights = (tmp_path / "pretrained" / "model.safetensors").stat().st_mtime_ns
    assert pretrain_tiny_clip(path, num_pairs=512, epochs=10) == path  # kept: not trained again
    assert (tmp_path / "pretrained" / "model.safetensors").stat().st_mtime_ns == weights


def test_bad_settings_are_refused(tmp_path):
    with pytest.raises(ValueError, match="at least 2 pairs"):
        pretrain_tiny_clip(tmp_path / "clip", num_pairs=1)
    with pytest.raises(RecipeError, match="synthetic_clip_pretraining_pairs must be >= 0"):
        parse_recipe(["--model_type", "rgcl", "--output_dir", str(tmp_path), "--synthetic_clip_pretraining_pairs",
                      "-1"])
