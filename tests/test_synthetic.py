import json
from collections import defaultdict

import pytest
from PIL import Image

from hm_hf.synthetic import make_hmd, make_mmhs, write_region_features
from hm_hf.synthetic.data import SyntheticOutputError
from hm_hf.cli import main as hm_hf_main


def test_hmd_files_are_in_the_official_format(tmp_path):
    memes = make_hmd(tmp_path, splits={"train": 6, "test_seen": 4})
    lines = [json.loads(line) for line in (tmp_path / "train.jsonl").read_text().splitlines()]
    assert len(lines) == 6
    for line in lines:
        assert set(line) == {"id", "img", "label", "text"}
        assert isinstance(line["id"], int) and line["img"] == f"img/{line['id']:05d}.png"
        assert line["label"] in (0, 1)
        with Image.open(tmp_path / line["img"]) as image:
            assert image.format == "PNG"
    unlabeled = [json.loads(line) for line in (tmp_path / "test_seen.jsonl").read_text().splitlines()]
    assert all("label" not in line for line in unlabeled)
    assert sum(len(v) for v in memes.values()) == 10


def test_hmd_mmf_layout(tmp_path):
    make_hmd(tmp_path, splits={"train": 2}, layout="mmf")
    assert (tmp_path / "defaults/annotations/train.jsonl").is_file()
    assert len(list((tmp_path / "defaults/images/img").glob("*.png"))) == 2


def test_evaluation_labels_need_both_modalities(tmp_path):
    """In evaluation splits every caption comes with both labels and each image kind and each text kind
    is hateful exactly half the time: no unimodal shortcut."""
    memes = make_hmd(tmp_path, splits={"train": 40, "dev_seen": 40})
    evaluation = memes["dev_seen"]
    labels_by_text = defaultdict(set)
    for meme in evaluation:
        labels_by_text[meme.text].add(meme.label)
    assert all(labels == {0, 1} for labels in labels_by_text.values())
    for attribute in ("image_kind", "text_kind"):
        for kind in (0, 1):
            labels = [m.label for m in evaluation if getattr(m, attribute) == kind]
            assert sum(labels) * 2 == len(labels), (attribute, kind)
    for meme in memes["train"] + evaluation:  # one rule everywhere: hateful iff exactly one factor is kind 0
        assert meme.label == int(meme.image_kind != meme.text_kind)
    singles = [m for m in memes["train"] if sum(x.text == m.text for x in memes["train"]) == 1]
    assert len(singles) == 16 and all(0 in (m.image_kind, m.text_kind) for m in singles)


def test_few_confounder_pairs_in_training_leave_the_evaluation_splits_all_pairs(tmp_path):
    """`train_singles` sets the share of training memes outside confounder pairs; dev stays all pairs."""
    memes = make_hmd(tmp_path, splits={"train": 100, "dev_unseen": 20}, seed=4, train_singles=0.9)
    for split, expected_singles in (("train", 90), ("dev_unseen", 0)):
        rows = memes[split]
        singles = [m for m in rows if sum(x.text == m.text for x in rows) == 1]
        assert len(singles) == expected_singles, split


def test_mmhs_files_are_in_the_official_format(tmp_path):
    memes = make_mmhs(tmp_path, splits={"train": 10, "val": 4, "test": 4}, ocr_fraction=0.5)
    ground_truth = json.loads((tmp_path / "MMHS150K_GT.json").read_text())
    assert len(ground_truth) == 18
    for tweet_id, entry in ground_truth.items():
        assert set(entry) == {"tweet_url", "labels", "img_url", "tweet_text", "labels_str"}
        assert len(entry["labels"]) == 3 and all(0 <= c <= 5 for c in entry["labels"])
        assert (tmp_path / "img_resized" / f"{tweet_id}.jpg").is_file()
    for split in ("train", "val", "test"):
        ids = (tmp_path / "splits" / f"{split}_ids.txt").read_text().split()
        assert ids == [str(m.id) for m in memes[split]]
    ocr = list((tmp_path / "img_txt").glob("*.json"))
    assert 0 < len(ocr) < 18, "some OCR files must be missing, as in the real data"
    for meme in memes["train"]:  # binary label = at least 2 of 3 annotators chose a hate class
        votes = sum(c > 0 for c in ground_truth[str(meme.id)]["labels"])
        assert (votes >= 2) == bool(meme.label)


def test_region_features_follow_the_drawn_objects(tmp_path):
    memes = make_hmd(tmp_path / "data", splits={"train": 4})
    cache = write_region_features(memes, tmp_path / "feats")
    for meme in memes["train"]:
        regions = cache.get(meme.id)
        assert regions.features.dtype.name == "float16" and regions.features.shape[1] == 2048
        assert regions.num_boxes == len(meme.boxes) + 1
        assert (regions.image_width, regions.image_height) == meme.image_size
        assert (regions.boxes[:, 2] <= regions.image_width).all()
    # writing again adds nothing and keeps the fingerprint
    before = cache.fingerprint()
    assert write_region_features(memes, tmp_path / "feats").fingerprint() == before


def test_make_synthetic_command(tmp_path, capsys):
    assert hm_hf_main(["make-synthetic", "--dataset", "mmhs", "--output", str(tmp_path), "--scale", "0.05"]) == 0
    assert "val" in capsys.readouterr().out
    assert (tmp_path / "MMHS150K_GT.json").is_file()


def test_a_folder_of_other_files_is_never_written_into(tmp_path, capsys):
    """make-synthetic (and training's synthetic_if_missing) once wrote synthetic memes over a real data set's
    train.jsonl; a synthetic folder is still rewritten, and a bad --scale or a file as --output are named."""
    real = tmp_path / "real"
    real.mkdir()
    (real / "train.jsonl").write_text('{"id": 1, "img": "img/00001.png", "label": 1, "text": "mine"}\n')
    before = (real / "train.jsonl").read_bytes()
    assert hm_hf_main(["make-synthetic", "--output", str(real), "--scale", "0.05"]) == 2
    assert f"{real} already holds files and was not written by hm_hf.synthetic" in capsys.readouterr().err
    assert sorted(p.name for p in real.iterdir()) == ["train.jsonl"] and (real / "train.jsonl").read_bytes() == before
    with pytest.raises(SyntheticOutputError, match="already holds files"):
        make_mmhs(real, splits={"train": 2})
    (tmp_path / "afile").write_text("x")
    assert hm_hf_main(["make-synthetic", "--output", str(tmp_path / "afile")]) == 2
    assert "afile is a file" in capsys.readouterr().err
    for scale in ("0", "-1", "nan"):
        assert hm_hf_main(["make-synthetic", "--output", str(tmp_path / "s"), "--scale", scale]) == 2
        assert "scale must be a positive number" in capsys.readouterr().err
    assert hm_hf_main(["make-synthetic", "--output", str(tmp_path / "s"), "--scale", "0.05"]) == 0
    assert hm_hf_main(["make-synthetic", "--output", str(tmp_path / "s"), "--scale", "0.05", "--seed", "1"]) == 0


def test_the_detector_expects_the_features_the_writer_draws(tmp_path):
    """Writer and detector share one prototype function: for any seed, the stored features of each region kind
    average to what the detector gives for it, and not to another seed's."""
    import numpy as np

    from hm_hf.synthetic.detector import SyntheticShapeDetector
    from hm_hf.synthetic.world import WHOLE_IMAGE

    memes = make_hmd(tmp_path / "data", splits={"train": 24}, image_size=(64, 48), seed=3)
    cache = write_region_features(memes, tmp_path / "feats", seed=3, dim=256)
    stored = defaultdict(list)
    for meme in memes["train"]:
        regions = cache.get(meme.id)
        for kind, feature in zip(regions.object_ids, regions.features.astype(np.float32)):
            stored[int(kind)].append(feature)
    same, other = SyntheticShapeDetector(seed=3, dim=256), SyntheticShapeDetector(seed=4, dim=256)
    for kind in (0, 1, WHOLE_IMAGE):
        mean = np.mean(stored[kind], axis=0)
        assert np.abs(mean - same.features[kind]).max() < 0.5  # (the noise of a mean of ~12 draws)
        assert np.abs(mean - other.features[kind]).max() > 1.0  # (prototype values are ~2)
