"""The fine-grained Hateful Memes builder on tiny files in the shared task's format, joined with a synthetic
Hateful Memes folder's images by id: columns, multi-label ClassLabel lists, the unlabelled test file, bad
lines in the build report, region features."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from hm_hf.data.fine_grained import HatefulMemesFineGrained, load_fine_grained, locate_annotations
from hm_hf.data.report import BadInputError
from hm_hf.synthetic.data import make_hmd, write_region_features
from hm_hf.metrics.fine_grained import ATTACK_CLASSES, PC_CLASSES

HMD_SPLITS = {"train": 5, "dev_seen": 3, "dev_unseen": 3, "test_seen": 2}


def _line(meme_id, split, hate, pc, attack, pc_annotators="None", attack_annotators="None", img=True):
    row = {"id": meme_id, "set_name": split}
    if img:
        row["img"] = f"img/{meme_id:05d}.png"
    row.update({"text": f"fine grained {meme_id}", "gold_hate": [hate], "gold_pc": pc, "gold_attack": attack,
                "pc": pc_annotators, "attack": attack_annotators})
    return json.dumps(row, separators=(",", ":"))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("fine_grained")
    memes = make_hmd(root / "hmd", splits=HMD_SPLITS, image_size=(48, 40))
    ids = {split: [m.id for m in rows] for split, rows in memes.items()}
    annotations = root / "repo" / "data" / "annotations"  # the repository's layout
    annotations.mkdir(parents=True)
    t = ids["train"]
    train = [
        _line(t[0], "train", "hateful", ["race"], ["dehumanizing"], [["race"], ["race"], ["class"]],
              [["dehumanizing"], ["dehumanizing", "inciting_violence"], []]),
        _line(t[1], "train", "hateful", ["religion", "sex"], ["mocking", "slurs", "contempt"],
              [["religion", "sex"], ["sex"], ["religion"]], [["mocking"], ["slurs"], ["contempt"]]),
        _line(t[2], "train", "not_hateful", ["pc_empty"], ["attack_empty"]),
        _line(t[3], "train", "hateful", ["pc_empty"], ["mocking"], [[]], [["mocking"]]),  # as in ids 90573, 70492
        _line(t[4], "train", "hateful", ["gender"], ["mocking"], [["gender"]], [["mocking"]]),  # not a category
        "{\"id\":77777,\"set_name\":\"train\",\"img\":\"img/77",  # a truncated line
    ]
    d = ids["dev_seen"]
    dev_seen = [_line(d[0], "dev_seen", "hateful", ["disability"], ["inferiority"], [["disability"]] * 3,
                      [["inferiority"]] * 3),
                _line(d[1], "dev_seen", "not_hateful", ["pc_empty"], ["attack_empty"], img=False),
                _line(d[2], "dev_seen", "not_hateful", ["pc_empty", "race"], ["attack_empty"])]  # contradictory
    u = ids["dev_unseen"]
    dev_unseen = [_line(d[0], "dev_unseen", "hateful", ["disability"], ["inferiority"], [["disability"]] * 3,
                        [["inferiority"]] * 3),  # shared with dev_seen, as released
                  _line(u[0], "dev_unseen", "hateful", ["nationality"], ["exclusion"], [["nationality"]] * 3,
                        [["exclusion"]] * 3)]
    test = [json.dumps({"id": i, "img": f"img/{i:05d}.png", "text": f"test {i}"}, separators=(",", ":"))
            .replace("/", "\\/") for i in ids["test_seen"]]
    (annotations / "train.json").write_text("\n".join(train) + "\n")
    (annotations / "dev_seen.json").write_text("\n".join(dev_seen) + "\n")
    (annotations / "dev_unseen.json").write_text("\n".join(dev_unseen) + "\n")
    (annotations / "test.jsonl").write_text("\n".join(test))  # no newline at the end, as distributed
    assert "\\/" in (annotations / "test.jsonl").read_text()
    return root, memes, ids


def test_splits_columns_and_multi_label_lists(data, tmp_path):
    root, _, ids = data
    ds = load_fine_grained(root / "hmd", root / "repo", cache_dir=tmp_path)
    assert list(ds) == ["train", "dev_seen", "dev_unseen", "test"]
    assert {name: ds[name].num_rows for name in ds} == {"train": 4, "dev_seen": 2, "dev_unseen": 2, "test": 2}
    features = ds["train"].features
    assert features["pc"].feature.names == list(PC_CLASSES)
    assert features["attack"].feature.names == list(ATTACK_CLASSES)
    rows = {row["id"]: row for row in ds["train"]}
    t = ids["train"]
    assert rows[t[0]]["label"] == 1 and features["pc"].feature.int2str(rows[t[0]]["pc"]) == ["race"]
    assert rows[t[0]]["pc_annotations"] == [["race"], ["race"], ["class"]]  # annotators' labels, kept raw
    assert rows[t[0]]["attack_annotations"][2] == []
    assert features["pc"].feature.int2str(rows[t[1]]["pc"]) == ["religion", "sex"]
    assert features["attack"].feature.int2str(rows[t[1]]["attack"]) == ["contempt", "mocking", "slurs"]
    assert rows[t[2]]["label"] == 0 and rows[t[2]]["pc"] == [0] and rows[t[2]]["pc_annotations"] == []
    assert rows[t[3]]["label"] == 1 and rows[t[3]]["pc"] == [PC_CLASSES.index("pc_empty")]
    assert rows[t[0]]["text"] == f"fine grained {t[0]}"  # the fine-grained file's text
    with Image.open(root / "hmd" / "img" / f"{t[0]:05d}.png") as hmd_image:  # the HMD image of this id
        assert list(rows[t[0]]["image"].convert("RGB").getdata()) == list(hmd_image.convert("RGB").getdata())
    # a line without "img" finds its image by id
    assert ds["dev_seen"].filter(lambda r: r["id"] == ids["dev_seen"][1]).num_rows == 1
    test = ds["test"]
    assert sorted(test["id"]) == sorted(ids["test_seen"]) and set(test["label"]) == {-1}
    assert test["pc"] == [[], []] and test["attack"] == [[], []]
    assert ids["dev_seen"][0] in ds["dev_seen"]["id"] and ids["dev_seen"][0] in ds["dev_unseen"]["id"]


def test_bad_lines_are_reported_and_strict_names_them(data, tmp_path):
    root, _, ids = data
    builder = HatefulMemesFineGrained(data_dir=root / "hmd", annotations_dir=root / "repo", cache_dir=tmp_path)
    builder.download_and_prepare()
    report = builder.report
    assert report.counts() == {"bad_label": 2, "invalid_json": 1}
    reasons = " | ".join(issue.message() for issue in report.issues)
    assert "'gender'" in reasons and "train.json, line 5" in reasons
    assert "holds 'pc_empty' together with other labels" in reasons and "dev_seen.json, line 3" in reasons
    assert report.splits["train"] == {"rows": 4, "labelled": 4, "unlabelled": 0, "listed": 4}
    with pytest.raises(BadInputError, match=r"train.json, line 5 \(id \d+\): gold_pc must be"):
        HatefulMemesFineGrained(data_dir=root / "hmd", annotations_dir=root / "repo", strict=True,
                                cache_dir=tmp_path / "strict").download_and_prepare()


def test_a_contradictory_not_hateful_label_and_another_meme_s_image_are_skipped(data, tmp_path):
    """Both were kept: a not-hateful meme with pc [race] (counted as a missed race meme by the scorer), and meme
    B's labels joined to meme A's image."""
    root, _, ids = data
    t = ids["train"]
    annotations = tmp_path / "annotations"
    annotations.mkdir()
    borrowed = json.loads(_line(t[1], "train", "hateful", ["race"], ["mocking"]))
    borrowed["img"] = f"img/{t[0]:05d}.png"  # meme t[0]'s picture
    (annotations / "train.json").write_text("\n".join([
        _line(t[0], "train", "not_hateful", ["race"], ["attack_empty"]),
        json.dumps(borrowed),
        _line(t[2], "train", "hateful", ["race"], ["mocking"]),
    ]) + "\n")
    builder = HatefulMemesFineGrained(data_dir=root / "hmd", annotations_dir=annotations, cache_dir=tmp_path / "c")
    builder.download_and_prepare()
    assert builder.report.counts() == {"bad_label": 1, "bad_field": 1}
    reasons = " | ".join(issue.message() for issue in builder.report.issues)
    assert "line 1" in reasons and "on a not-hateful meme" in reasons
    assert f"line 2 (id {t[1]}): img 'img/{t[0]:05d}.png' is not meme {t[1]}'s image" in reasons
    assert builder.as_dataset(split="train")["id"] == [t[2]]


def test_missing_images_are_skipped(data, tmp_path):
    root, _, ids = data
    import shutil

    hmd = tmp_path / "hmd"
    shutil.copytree(root / "hmd", hmd)
    (hmd / "img" / f"{ids['dev_unseen'][0]:05d}.png").unlink()
    ds = load_fine_grained(hmd, root / "repo" / "data" / "annotations", cache_dir=tmp_path / "cache")
    assert ds["dev_unseen"]["id"] == [ids["dev_seen"][0]]


def test_regions_config_joins_the_feature_cache(data, tmp_path):
    root, memes, _ = data
    write_region_features(memes, tmp_path / "features")
    ds = load_fine_grained(root / "hmd", root / "repo", cache_dir=tmp_path / "cache", config_name="regions",
                           feature_cache=tmp_path / "features")
    row = ds["dev_unseen"][0]
    assert row["num_boxes"] == len(row["boxes"]) and len(row["region_features"][0]) == 2048
    assert "pc" in ds["dev_unseen"].features


def test_clear_errors_for_missing_folders(tmp_path, data):
    root, _, _ = data
    with pytest.raises(FileNotFoundError, match="fine_grained_hateful_memes"):
        locate_annotations(tmp_path)
    with pytest.raises(ValueError, match="annotations_dir"):
        HatefulMemesFineGrained(data_dir=root / "hmd")


def test_images_outside_the_hateful_memes_folder_are_never_opened(data, tmp_path):
    """The fine-grained files live outside the Hateful Memes folder; their `img` paths must not lead out of it."""
    root, _, ids = data
    import shutil

    annotations = tmp_path / "annotations"
    shutil.copytree(root / "repo" / "data" / "annotations", annotations)
    outside = tmp_path / "outside.png"
    Image.new("RGB", (8, 8)).save(outside)
    lines = (annotations / "dev_unseen.json").read_text().splitlines()
    row = json.loads(lines[1])
    row["img"] = f"../{outside.name}"  # relative to the Hateful Memes folder, leading out of it
    lines[1] = json.dumps(row)
    (annotations / "dev_unseen.json").write_text("\n".join(lines) + "\n")
    builder = HatefulMemesFineGrained(data_dir=root / "hmd", annotations_dir=annotations, cache_dir=tmp_path / "c")
    builder.download_and_prepare()
    assert builder.report.counts()["outside_data_dir"] == 1
    assert builder.as_dataset()["dev_unseen"]["id"] == [ids["dev_seen"][0]]
    (issue,) = [i for i in builder.report.issues if i.kind == "outside_data_dir"]
    assert "outside the data folder" in issue.message() and "dev_unseen.json, line 2" in issue.message()
