"""Hateful Memes builder: splits and row counts, layouts, every kind of bad input, cache key hit/miss."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest
from hostile import bomb_png  # tests/hostile.py
from PIL import Image

from hm_hf.data import layouts
from hm_hf.data.hateful_memes import HatefulMemes
from hm_hf.data.loading import load_hmd
from hm_hf.data.report import REPORT_FILE, BadInputError
from hm_hf.synthetic import make_hmd, write_region_features

SPLITS = {"train": 10, "dev_seen": 6, "dev_unseen": 6, "test_seen": 4, "test_unseen": 4}
SIZE = (64, 48)


@pytest.fixture(scope="module")
def hmd(tmp_path_factory):
    root = tmp_path_factory.mktemp("hmd")
    memes = make_hmd(root / "data", splits=SPLITS, image_size=SIZE)
    return root / "data", memes


def test_splits_rows_labels_and_report(hmd, tmp_path):
    data_dir, memes = hmd
    ds = load_hmd(data_dir, cache_dir=tmp_path)
    assert list(ds) == list(SPLITS)
    for split, n in SPLITS.items():
        assert ds[split].num_rows == n
        by_id = {m.id: m for m in memes[split]}
        rows = ds[split].select_columns(["id", "text", "label"])
        assert sorted(rows["id"]) == sorted(by_id)
        for row in rows:
            assert row["text"] == by_id[row["id"]].text
            expected = -1 if split.startswith("test") else by_id[row["id"]].label
            assert row["label"] == expected
    assert ds["train"][0]["image"].size == SIZE
    assert set(ds["train"].features) == {"id", "image", "text", "label"}
    builder = HatefulMemes(data_dir=data_dir, cache_dir=tmp_path)
    report = json.loads((Path(builder.cache_dir) / REPORT_FILE).read_text())
    assert report["num_skipped"] == 0 and report["splits"]["test_seen"]["unlabelled"] == 4


def test_mmf_layout_and_extra_fields(tmp_path):
    memes = make_hmd(tmp_path / "data", splits={"train": 6, "dev_seen": 4}, image_size=SIZE, layout="mmf")
    path = tmp_path / "data/defaults/annotations/train.jsonl"
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    for line in lines:
        line["text_length"] = len(line["text"])  # some copies add fields: ignored
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    ds = load_hmd(tmp_path / "data", cache_dir=tmp_path / "cache")
    assert {k: v.num_rows for k, v in ds.items()} == {"train": 6, "dev_seen": 4}
    assert sorted(ds["dev_seen"]["label"]) == sorted(m.label for m in memes["dev_seen"])


def test_every_reader_accepts_the_same_layouts(tmp_path):
    """Builder, extraction's image list and fastText read one module (hm_hf.data.layouts): same folders."""
    from hm_hf.data.layouts import dataset_images
    from hm_hf.text.fasttext_embeddings import read_split_texts

    official = make_hmd(tmp_path / "official", splits={"train": 4, "dev_seen": 2}, image_size=SIZE)
    make_hmd(tmp_path / "mmf", splits={"train": 4, "dev_seen": 2}, image_size=SIZE, layout="mmf")
    ids = sorted(m.id for rows in official.values() for m in rows)
    texts = [m.text for m in official["train"]]
    # the official folder, MMF's copy, and MMF's defaults/ folder itself
    for folder in (tmp_path / "official", tmp_path / "mmf", tmp_path / "mmf" / "defaults"):
        ds = load_hmd(folder, cache_dir=tmp_path / "cache")
        assert sorted([*ds["train"]["id"], *ds["dev_seen"]["id"]]) == ids
        assert sorted(map(int, dataset_images("hmd", folder))) == ids
        assert read_split_texts("hmd", folder, "train") == texts
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "extra.jsonl").write_text('{"id": 1, "text": "x"}\n')  # not a split name
    for read in (lambda: load_hmd(tmp_path / "other", cache_dir=tmp_path / "cache"),
                 lambda: dataset_images("hmd", tmp_path / "other"),
                 lambda: read_split_texts("hmd", tmp_path / "other", "train")):
        with pytest.raises(FileNotFoundError, match="train.jsonl"):
            read()


def test_phase1_files_overlap_with_phase2_is_kept_and_noted(tmp_path):
    make_hmd(tmp_path / "data", splits={"train": 6, "dev_seen": 4}, image_size=SIZE)
    shutil.copy(tmp_path / "data/dev_seen.jsonl", tmp_path / "data/dev.jsonl")  # phase 1 dev = dev_seen
    builder = HatefulMemes(data_dir=tmp_path / "data", cache_dir=tmp_path / "cache")
    builder.download_and_prepare()
    ds = builder.as_dataset()
    assert ds["dev"].num_rows == ds["dev_seen"].num_rows == 4
    assert len(builder.report) == 0 and any("dev_seen, dev" in note for note in builder.report.notes)


# -- bad input: each injector damages one input and returns (kind, file, line or None, id or None) --------

def _append_line(path: Path, raw: bytes, at: int = 2) -> int:
    lines = path.read_bytes().split(b"\n")
    lines.insert(at, raw)
    path.write_bytes(b"\n".join(lines))
    return at + 1


def _image(data_dir, memes, split="train", k=0):
    meme = memes[split][k]
    return meme.id, data_dir / "img" / f"{meme.id:05d}.png"


def inject(kind, data_dir: Path, memes):
    train = data_dir / "train.jsonl"
    if kind == "corrupt_image":
        example_id, path = _image(data_dir, memes, k=0)
        path.write_bytes(b"this is not a png" * 10)
        return kind, f"img/{example_id:05d}.png", None, example_id
    if kind == "truncated_image":
        example_id, path = _image(data_dir, memes, k=1)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        return "corrupt_image", f"img/{example_id:05d}.png", None, example_id
    if kind == "missing_image":
        example_id, path = _image(data_dir, memes, k=2)
        path.unlink()
        return kind, f"img/{example_id:05d}.png", None, example_id
    if kind == "image_too_large":
        example_id, path = _image(data_dir, memes, k=3)
        bomb_png(path, 20000, 20000)  # over twice the limit: Pillow raises DecompressionBombError
        return kind, f"img/{example_id:05d}.png", None, example_id
    if kind == "truncated_line":
        line = _append_line(train, b'{"id": 9001, "img": "img/09001.png", "te', at=1)
        return "invalid_json", "train.jsonl", line, None
    if kind == "blank_line":
        line = _append_line(train, b"   ", at=3)
        return kind, "train.jsonl", line, None
    if kind == "bad_label":
        line = _append_line(train, b'{"id": 9002, "img": "img/00001.png", "label": 2, "text": "x"}', at=4)
        return kind, "train.jsonl", line, 9002
    if kind == "not_utf8":
        line = _append_line(train, b'{"id": 9003, "img": "img/00001.png", "label": 0, "text": "caf\xe9"}', at=5)
        return kind, "train.jsonl", line, None
    if kind == "duplicate_across_splits":
        dev_meme = memes["dev_seen"][0]
        row = {"id": dev_meme.id, "img": f"img/{dev_meme.id:05d}.png", "label": 0, "text": dev_meme.text}
        line = _append_line(train, json.dumps(row).encode(), at=6)
        return kind, "train.jsonl", line, dev_meme.id
    raise ValueError(kind)


KINDS = ["corrupt_image", "truncated_image", "missing_image", "image_too_large", "truncated_line",
         "blank_line", "bad_label", "not_utf8", "duplicate_across_splits"]


def test_every_bad_input_is_skipped_counted_and_reported(tmp_path):
    data_dir = tmp_path / "data"
    memes = make_hmd(data_dir, splits={"train": 10, "dev_seen": 4, "test_unseen": 4}, image_size=SIZE)
    expected = [inject(kind, data_dir, memes) for kind in KINDS]
    builder = HatefulMemes(data_dir=data_dir, cache_dir=tmp_path / "cache")
    builder.download_and_prepare()  # never crashes
    ds = builder.as_dataset()
    bad_images = {e[3] for e in expected if e[1].startswith("img/")}
    assert ds["train"].num_rows == 10 - len(bad_images)  # the injected lines never became rows
    assert not bad_images & set(ds["train"]["id"])
    assert ds["dev_seen"].num_rows == 4 and ds["test_unseen"].num_rows == 4  # the duplicate left train only
    saved = json.loads((Path(builder.cache_dir) / REPORT_FILE).read_text())
    assert saved["num_skipped"] == len(KINDS)
    issues = {(i["kind"], i["file"], i["line"]) for i in saved["issues"]}
    for kind, file, line, _ in expected:
        if line is None:
            assert any(k == kind and f == file for k, f, _ in issues), (kind, file)
        else:
            assert (kind, file, line) in issues, (kind, file, line, issues)
    assert saved["counts"]["corrupt_image"] == 2
    # image issues also say which annotation line listed the image
    assert all("train.jsonl, line" in i["reason"] for i in saved["issues"] if i["file"].startswith("img/"))


@pytest.mark.parametrize("kind", KINDS)
def test_strict_raises_with_file_and_line(tmp_path, kind):
    data_dir = tmp_path / "data"
    memes = make_hmd(data_dir, splits={"train": 8, "dev_seen": 2}, image_size=SIZE)
    _, file, line, example_id = inject(kind, data_dir, memes)
    with pytest.raises(BadInputError) as err:
        HatefulMemes(data_dir=data_dir, cache_dir=tmp_path / "cache", strict=True).download_and_prepare()
    message = str(err.value)
    assert file in message
    if line is not None:
        assert f"line {line}" in message
    else:
        assert f"id {example_id}" in message and "train.jsonl, line" in message


def test_strict_refuses_a_cached_lenient_build(tmp_path):
    data_dir = tmp_path / "data"
    memes = make_hmd(data_dir, splits={"train": 4}, image_size=SIZE)
    inject("missing_image", data_dir, memes)
    load_hmd(data_dir, cache_dir=tmp_path / "cache")
    with pytest.raises(BadInputError, match="img/"):
        load_hmd(data_dir, cache_dir=tmp_path / "cache", strict=True)


def test_bomb_limit_follows_pillow_setting(tmp_path, monkeypatch):
    data_dir = tmp_path / "data"
    make_hmd(data_dir, splits={"train": 4}, image_size=SIZE)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", SIZE[0] * SIZE[1] - 1)  # below 2x: Pillow only warns
    ds = load_hmd(data_dir, cache_dir=tmp_path / "cache")
    assert ds["train"].num_rows == 0  # every image is over the limit now: all skipped, none crashed
    report = HatefulMemes(data_dir=data_dir, cache_dir=tmp_path / "cache").report
    assert report.counts() == {"image_too_large": 4}


# -- config "regions" and the cache key -----------------------------------------------------------------

def _no_generation(*args, **kwargs):
    raise AssertionError("the prepared data should have been reused, not regenerated")


def test_regions_config_and_cache_hit_and_miss(tmp_path, monkeypatch):
    data_dir = tmp_path / "data"
    memes = make_hmd(data_dir, splits={"train": 6, "dev_seen": 4}, image_size=SIZE)
    feats = tmp_path / "feats"
    write_region_features({"train": memes["train"]}, feats)  # dev_seen has no features yet
    kwargs = dict(data_dir=data_dir, cache_dir=tmp_path / "cache", config_name="regions", feature_cache=feats)
    first = HatefulMemes(**kwargs)
    first.download_and_prepare()
    ds = first.as_dataset()
    assert ds["train"].num_rows == 6 and ds["dev_seen"].num_rows == 0
    assert first.report.counts() == {"missing_features": 4}
    row = ds["train"].with_format("numpy")[0]
    assert row["region_features"].shape == (row["num_boxes"], 2048)
    assert row["boxes"].shape == (row["num_boxes"], 4) and row["image_width"] == SIZE[0]
    assert ds["train"].features["region_features"].dtype == "float16"
    default_dir = HatefulMemes(data_dir=data_dir, cache_dir=tmp_path / "cache").cache_dir

    # hit: same inputs -> same folder, nothing regenerated
    monkeypatch.setattr(HatefulMemes, "_split_generators", _no_generation)
    again = HatefulMemes(**kwargs)
    assert again.cache_dir == first.cache_dir
    again.download_and_prepare()
    assert again.as_dataset()["train"].num_rows == 6
    monkeypatch.undo()

    # miss: a new shard in the feature cache
    write_region_features({"dev_seen": memes["dev_seen"]}, feats)
    after = HatefulMemes(**kwargs)
    assert after.cache_dir != first.cache_dir
    after.download_and_prepare()
    assert after.as_dataset()["dev_seen"].num_rows == 4 and len(after.report) == 0
    # ...but the default config does not depend on the feature cache
    assert HatefulMemes(data_dir=data_dir, cache_dir=tmp_path / "cache").cache_dir == default_dir

    # miss: annotation contents change
    with open(data_dir / "dev_seen.jsonl", "a") as f:
        f.write("\n")
    assert HatefulMemes(**kwargs).cache_dir != after.cache_dir


def test_cache_key_changes_with_builder_code(tmp_path):
    data_dir = tmp_path / "data"
    make_hmd(data_dir, splits={"train": 2}, image_size=SIZE)
    module_file = tmp_path / "hmd_variant.py"

    def load(extra: str):
        module_file.write_text(f"from hm_hf.data.hateful_memes import HatefulMemes\n\n"
                               f"class Variant(HatefulMemes):\n    pass\n{extra}")
        spec = importlib.util.spec_from_file_location("hmd_variant", module_file)
        module = importlib.util.module_from_spec(spec)
        sys.modules["hmd_variant"] = module
        spec.loader.exec_module(module)
        return module.Variant(data_dir=data_dir, cache_dir=tmp_path / "cache").cache_dir

    try:
        one, same, changed = load(""), load(""), load("# a changed builder\n")
    finally:
        sys.modules.pop("hmd_variant", None)
    assert one == same and one != changed


def test_clear_errors_for_wrong_use(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a folder"):
        HatefulMemes(data_dir=tmp_path / "nope")
    with pytest.raises(ValueError, match="feature_cache"):
        HatefulMemes(data_dir=tmp_path, config_name="regions")
    with pytest.raises(FileNotFoundError, match="train.jsonl"):
        load_hmd(tmp_path, cache_dir=tmp_path / "cache")


def test_report_helpers_are_shared():
    # both builders use the same checks (hm_hf.data.layouts); the code hash covers them (see builder_base)
    assert layouts.check_image("/nonexistent.png")[0] == "missing_image"
