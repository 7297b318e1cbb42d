"""MMHS150K builder: columns and labels, OCR text, every kind of bad input, strict mode, regions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hostile import bomb_png  # tests/hostile.py

from hm_hf.data.loading import load_mmhs
from hm_hf.data.mmhs150k import MMHS150K, binary_label, fine_label
from hm_hf.data.report import REPORT_FILE, BadInputError
from hm_hf.synthetic import make_mmhs, write_region_features

SPLITS = {"train": 10, "val": 6, "test": 6}
SIZE = (64, 48)


@pytest.fixture(scope="module")
def mmhs(tmp_path_factory):
    root = tmp_path_factory.mktemp("mmhs")
    memes = make_mmhs(root / "data", splits=SPLITS, image_size=SIZE, ocr_fraction=0.5)
    return root / "data", memes


@pytest.mark.parametrize("codes,label,fine", [
    ([0, 0, 0], 0, 0), ([0, 0, 4], 0, 0), ([2, 0, 2], 1, 2), ([5, 5, 5], 1, 5),
    ([0, 3, 1], 1, 1),  # tie between two hate classes: the smaller code
    ([1, 2, 3], 1, 1), ([4, 4, 1], 1, 4), ([0, 1, 0], 0, 0),
])
def test_binary_and_fine_labels(codes, label, fine):
    assert binary_label(codes) == label and fine_label(codes) == fine


def test_splits_columns_and_labels(mmhs, tmp_path):
    data_dir, memes = mmhs
    ds = load_mmhs(data_dir, cache_dir=tmp_path)
    assert {k: v.num_rows for k, v in ds.items()} == SPLITS
    gt = json.loads((data_dir / "MMHS150K_GT.json").read_text())
    ocr_seen = {True: 0, False: 0}
    for split in SPLITS:
        by_id = {str(m.id): m for m in memes[split]}
        for row in ds[split].remove_columns("image"):
            assert isinstance(row["id"], str) and row["id"] in by_id
            entry = gt[row["id"]]
            assert row["tweet_text"] == entry["tweet_text"]
            assert row["annotator_labels"] == entry["labels"]
            assert row["label"] == by_id[row["id"]].label == binary_label(entry["labels"])
            assert row["fine_label"] == fine_label(entry["labels"])
            ocr = data_dir / "img_txt" / f"{row['id']}.json"
            has_ocr = ocr.is_file()
            ocr_seen[has_ocr] += 1
            assert row["img_text"] == (json.loads(ocr.read_text())["img_text"] if has_ocr else "")
    assert ocr_seen[True] and ocr_seen[False]  # both cases were exercised
    assert ds["val"][0]["image"].size == SIZE
    assert ds["train"].features["fine_label"].names[1] == "Racist"


def _ids(data_dir, split):
    return (data_dir / "splits" / f"{split}_ids.txt").read_text().split()


def _insert_line(path: Path, raw: bytes, at: int) -> int:
    lines = path.read_bytes().split(b"\n")
    lines.insert(at, raw)
    path.write_bytes(b"\n".join(lines))
    return at + 1


def _edit_gt(data_dir, tweet_id, **fields):
    path = data_dir / "MMHS150K_GT.json"
    gt = json.loads(path.read_text())
    gt[tweet_id].update(fields)
    path.write_text(json.dumps(gt))


def inject(kind, data_dir: Path, train: list[str], test: list[str]):
    """Damage one input; return (kind, file, line or None, id or None) as the report should show it.

    `train` / `test`: the split files' ids as generated (read before any damage).
    """
    train_file = data_dir / "splits" / "train_ids.txt"
    if kind == "corrupt_image":
        (data_dir / "img_resized" / f"{train[0]}.jpg").write_bytes(b"\xff\xd8\xff\xe0 broken")
        return kind, f"img_resized/{train[0]}.jpg", None, train[0]
    if kind == "missing_image":
        (data_dir / "img_resized" / f"{train[1]}.jpg").unlink()
        return kind, f"img_resized/{train[1]}.jpg", None, train[1]
    if kind == "image_too_large":  # between 1x and 2x Pillow's limit: Pillow would only warn
        bomb_png(data_dir / "img_resized" / f"{train[2]}.jpg", 10000, 10000)
        return kind, f"img_resized/{train[2]}.jpg", None, train[2]
    if kind == "blank_line":
        return kind, "splits/train_ids.txt", _insert_line(train_file, b"", at=2), None
    if kind == "unknown_id":
        return kind, "splits/train_ids.txt", _insert_line(train_file, b"123456789", at=3), "123456789"
    if kind == "not_utf8_split_line":
        return "not_utf8", "splits/train_ids.txt", _insert_line(train_file, b"12\xff34", at=4), None
    if kind == "duplicate_across_splits":
        return kind, "splits/train_ids.txt", _insert_line(train_file, test[0].encode(), at=5), test[0]
    if kind == "bad_label":
        _edit_gt(data_dir, train[3], labels=[0, 7, 1])
        return kind, "MMHS150K_GT.json", 1, train[3]
    if kind == "not_utf8_text":
        path = data_dir / "MMHS150K_GT.json"
        gt = json.loads(path.read_text())
        gt[train[4]]["tweet_text"] = "PLACEHOLDER"
        path.write_bytes(json.dumps(gt).encode().replace(b"PLACEHOLDER", b"caf\xe9 \xff"))
        return "not_utf8", "MMHS150K_GT.json", 1, train[4]
    if kind == "bad_ocr_file":
        (data_dir / "img_txt" / f"{train[5]}.json").write_text('{"img_text": "cut')
        return "invalid_json", f"img_txt/{train[5]}.json", None, train[5]
    raise ValueError(kind)


KINDS = ["corrupt_image", "missing_image", "image_too_large", "blank_line", "unknown_id", "not_utf8_split_line",
         "duplicate_across_splits", "bad_label", "not_utf8_text", "bad_ocr_file"]


def test_every_bad_input_is_skipped_counted_and_reported(tmp_path):
    data_dir = tmp_path / "data"
    make_mmhs(data_dir, splits=SPLITS, image_size=SIZE)
    train, test = _ids(data_dir, "train"), _ids(data_dir, "test")
    expected = [inject(kind, data_dir, train, test) for kind in KINDS]
    builder = MMHS150K(data_dir=data_dir, cache_dir=tmp_path / "cache")
    builder.download_and_prepare()
    ds = builder.as_dataset()
    skipped_train = {e[3] for e in expected if e[3] and e[0] not in ("unknown_id", "duplicate_across_splits")}
    assert ds["train"].num_rows == SPLITS["train"] - len(skipped_train) == 4
    assert ds["test"].num_rows == SPLITS["test"]  # a train/test duplicate stays in test
    assert not skipped_train & set(ds["train"]["id"])
    saved = json.loads((Path(builder.cache_dir) / REPORT_FILE).read_text())
    assert saved["num_skipped"] == len(KINDS)
    issues = [(i["kind"], i["file"], i["line"], i["id"]) for i in saved["issues"]]
    for kind, file, line, example_id in expected:
        assert any(k == kind and f == file and (line is None or l == line) and (example_id is None or i == example_id)
                   for k, f, l, i in issues), (kind, file, line, issues)


@pytest.mark.parametrize("kind", KINDS)
def test_strict_raises_with_file_and_line(tmp_path, kind):
    data_dir = tmp_path / "data"
    make_mmhs(data_dir, splits={"train": 8, "test": 2}, image_size=SIZE)
    _, file, line, example_id = inject(kind, data_dir, _ids(data_dir, "train"), _ids(data_dir, "test"))
    with pytest.raises(BadInputError) as err:
        MMHS150K(data_dir=data_dir, cache_dir=tmp_path / "cache", strict=True).download_and_prepare()
    message = str(err.value)
    assert file in message
    if line is not None:
        assert f"line {line}" in message
    if example_id is not None:
        assert example_id in message


def test_cut_ground_truth_keeps_complete_entries(tmp_path):
    data_dir = tmp_path / "data"
    make_mmhs(data_dir, splits={"train": 6}, image_size=SIZE)
    path = data_dir / "MMHS150K_GT.json"
    gt = json.loads(path.read_text())
    text = "{\n" + ",\n".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in gt.items()) + "\n}"
    cut = text[: text.index("\n", text.index("\n", text.index("\n") + 1) + 1) + 20]  # 2 full entries, then cut
    path.write_text(cut)
    builder = MMHS150K(data_dir=data_dir, cache_dir=tmp_path / "cache")
    builder.download_and_prepare()
    assert builder.as_dataset()["train"].num_rows == 2
    counts = builder.report.counts()
    assert counts == {"invalid_json": 1, "unknown_id": 4}
    broken = next(i for i in builder.report.issues if i.kind == "invalid_json")
    assert broken.file == "MMHS150K_GT.json" and broken.line == 4


def test_regions_config_joins_by_tweet_id(tmp_path):
    data_dir = tmp_path / "data"
    memes = make_mmhs(data_dir, splits={"train": 4, "test": 4}, image_size=SIZE)
    write_region_features({"train": memes["train"]}, tmp_path / "feats")
    ds = load_mmhs(data_dir, cache_dir=tmp_path / "cache", config_name="regions", feature_cache=tmp_path / "feats")
    assert ds["train"].num_rows == 4 and ds["test"].num_rows == 0
    row = ds["train"].with_format("numpy")[0]
    meme = next(m for m in memes["train"] if str(m.id) == row["id"])
    assert row["num_boxes"] == len(meme.boxes) + 1
    assert row["boxes"][:-1, :4].tolist() == [list(map(float, b[:4])) for b in meme.boxes]
    assert (row["image_width"], row["image_height"]) == SIZE
