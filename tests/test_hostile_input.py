"""Hostile input (issue 14): nothing outside the data folder is opened, every bad input gets a named error or
a counted skip, and nothing corrupt is accepted as data.

Every case is a tiny file in the real on-disk format (hm_hf.synthetic.data makes the HMD / MMHS150K folders
and feature caches). Where a path leads outside the data folder, the file it leads to is watched
(`never_opened`, inotify): the tests fail if any reader opens it, even to refuse it afterwards.
"""

from __future__ import annotations

import base64
import json
import os
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from hostile import bomb_png, deep_json, never_opened  # tests/hostile.py
from PIL import Image
from safetensors.numpy import save_file

from hm_hf.data import layouts
from hm_hf.data.export import cli as export_cli
from hm_hf.data.hateful_memes import HatefulMemes
from hm_hf.data.layouts import dataset_images
from hm_hf.data.loading import load_hmd, load_mmhs
from hm_hf.data.mmhs150k import MMHS150K
from hm_hf.data.report import BadInputError
from hm_hf.synthetic.data import make_hmd, make_mmhs, write_region_features
from hm_hf.data.torch_dataset import RegionRowsDataset
from hm_hf.extract.cache import FeatureCache, FeatureCacheError, InvalidRegionsError, RegionFeatures
from hm_hf.extract.importers import FeatureImportError, import_features
from hm_hf.extract.importers import cli as import_cli
from hm_hf.extract.runner import cli as extract_cli
from hm_hf.extract.runner import extract_features
from hm_hf.text import fasttext_embeddings as fte
from hm_hf.training.arguments import RecipeError, parse_recipe

SIZE = (32, 24)
HMD_SPLITS = {"train": 4, "dev_seen": 2}
MMHS_SPLITS = {"train": 3, "val": 2}


# ------------------------------------------------------------------------------------------- fixtures


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _write_jsonl(path: Path, rows) -> None:
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))


def _outside(tmp_path: Path, name: str = "secret.png") -> Path:
    """A file outside the data folder that would be accepted if it were read (a real image / JSON file)."""
    secret = tmp_path / "outside" / name
    secret.parent.mkdir(exist_ok=True)
    if name.endswith((".png", ".jpg")):
        Image.new("RGB", SIZE, (1, 2, 3)).save(secret)
    else:
        secret.write_text(json.dumps({"img_text": "outside text", "id": 1, "text": "outside", "img": "img/x.png"}))
    return secret


def hmd_pointing_outside(tmp_path: Path, how: str):
    """An HMD folder whose first train line's image leads to a file outside it: (data_dir, secret, id, line)."""
    data = tmp_path / "data"
    memes = make_hmd(data, splits=HMD_SPLITS, image_size=SIZE)
    secret = _outside(tmp_path)
    rows = _jsonl(data / "train.jsonl")
    victim = rows[0]
    if how == "relative":
        victim["img"] = "../outside/secret.png"
    elif how == "absolute":
        victim["img"] = str(secret)
    elif how == "symlink":
        image = data / victim["img"]
        image.unlink()
        image.symlink_to(secret)
    elif how == "symlinked_folder":  # img/ itself leads outside: every image through it is refused
        for name in os.listdir(data / "img"):
            os.replace(data / "img" / name, secret.parent / name)
        (data / "img").rmdir()
        (data / "img").symlink_to(secret.parent, target_is_directory=True)
        secret = secret.parent / Path(victim["img"]).name
    _write_jsonl(data / "train.jsonl", rows)
    return data, secret, victim["id"], memes


OUTSIDE_HOW = ["relative", "absolute", "symlink", "symlinked_folder"]


# ------------------------------------------------------------------------------------------ containment


@pytest.mark.parametrize("how", OUTSIDE_HOW)
def test_hmd_builder_never_opens_a_path_outside_the_data_folder(tmp_path, how):
    data, secret, victim, _ = hmd_pointing_outside(tmp_path, how)
    with never_opened(secret):
        builder = HatefulMemes(data_dir=data, cache_dir=tmp_path / "cache")
        builder.download_and_prepare()
        ds = builder.as_dataset()
        with pytest.raises(BadInputError, match=r"train\.jsonl, line 1 .*outside the data folder"):
            HatefulMemes(data_dir=data, cache_dir=tmp_path / "strict", strict=True).download_and_prepare()
    counts = builder.report.counts()
    assert counts["outside_data_dir"] == (sum(HMD_SPLITS.values()) if how == "symlinked_folder" else 1)
    assert victim not in ds["train"]["id"]
    issue = next(i for i in builder.report.issues if i.kind == "outside_data_dir")
    assert issue.file == "train.jsonl" and issue.line == 1 and str(secret.parent) in issue.reason


def test_annotation_files_outside_are_never_opened(tmp_path):
    data = tmp_path / "data"
    make_hmd(data, splits=HMD_SPLITS, image_size=SIZE)
    secret = tmp_path / "outside" / "train.jsonl"
    secret.parent.mkdir()
    os.replace(data / "train.jsonl", secret)
    (data / "train.jsonl").symlink_to(secret)
    with never_opened(secret):
        builder = HatefulMemes(data_dir=data, cache_dir=tmp_path / "cache")  # the cache key must not read it
        builder.download_and_prepare()
        with pytest.raises(ValueError, match="train.jsonl resolves to .*outside the data folder"):
            fte.read_split_texts("hmd", data, "train")
    assert builder.report.counts() == {"outside_data_dir": 1}
    assert builder.as_dataset()["train"].num_rows == 0 and builder.as_dataset()["dev_seen"].num_rows == 2


@pytest.mark.parametrize("what", ["image", "ocr", "ground_truth", "split_file"])
def test_mmhs_builder_never_opens_a_path_outside_the_data_folder(tmp_path, what):
    data = tmp_path / "data"
    memes = make_mmhs(data, splits=MMHS_SPLITS, image_size=SIZE, ocr_fraction=1.0)
    tweet = str(memes["train"][0].id)
    target = {"image": data / "img_resized" / f"{tweet}.jpg", "ocr": data / "img_txt" / f"{tweet}.json",
              "ground_truth": data / "MMHS150K_GT.json", "split_file": data / "splits" / "train_ids.txt"}[what]
    secret = tmp_path / "outside" / target.name
    secret.parent.mkdir()
    os.replace(target, secret)
    target.symlink_to(secret)
    with never_opened(secret):
        builder = MMHS150K(data_dir=data, cache_dir=tmp_path / "cache")
        builder.download_and_prepare()
        with pytest.raises(BadInputError, match="outside the data folder"):
            MMHS150K(data_dir=data, cache_dir=tmp_path / "strict", strict=True).download_and_prepare()
    assert builder.report.counts()["outside_data_dir"] == 1
    rows = builder.as_dataset()
    if what in ("image", "ocr"):
        assert tweet not in rows["train"]["id"] and rows["train"].num_rows == 2
    if what == "ground_truth":  # nothing is known about any tweet: every id is unknown
        assert builder.report.counts()["unknown_id"] == 5


@pytest.mark.parametrize("how", ["relative", "absolute", "symlink"])
def test_commands_refuse_a_path_outside_the_data_folder(tmp_path, how, capsys):
    """extract-features, import-features --ids-from-dataset and fastText stop with the path named."""
    data, secret, victim, memes = hmd_pointing_outside(tmp_path, how)
    features = tmp_path / "bua"
    features.mkdir()
    with never_opened(secret):
        assert extract_cli(["--dataset", "hmd", "--data-dir", str(data), "--output", str(tmp_path / "x"),
                            "--model", "never-loaded"]) == 2
        assert "outside the data folder" in capsys.readouterr().err
        assert not (tmp_path / "x").exists()
        assert import_cli(["--format", "bua-json", "--input", str(features), "--output", str(tmp_path / "i"),
                           "--ids-from-dataset", "hmd", "--data-dir", str(data), "--no-progress"]) == 2
        assert "outside the data folder" in capsys.readouterr().err
        with pytest.raises(ValueError, match=r"train\.jsonl, line 1 .*outside the data folder"):
            fte.read_split_texts("hmd", data, "train")
        assert len(dataset_images("hmd", data, splits=["dev_seen"])) == 2  # a split without such a path lists


@pytest.mark.parametrize("given", ["absolute", "relative to the working directory"])
def test_import_refuses_feature_and_image_files_that_lead_outside(tmp_path, capsys, monkeypatch, given):
    """A folder given relative to the working directory is checked as strictly as an absolute one (its files
    were once joined to it twice, so a symlink's target was never looked at)."""
    base = tmp_path if given == "absolute" else Path(".")
    monkeypatch.chdir(tmp_path)
    secret_json = _outside(tmp_path, "secret.json")
    secret_png = _outside(tmp_path)
    (tmp_path / "bua").mkdir()
    (tmp_path / "bua" / "1.json").symlink_to(secret_json)
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "1.png").symlink_to(secret_png)
    (tmp_path / "npz").mkdir()
    with never_opened(secret_json), never_opened(secret_png):
        assert import_cli(["--format", "bua-json", "--input", str(base / "bua"), "--output",
                           str(tmp_path / "c"), "--no-progress"]) == 2
        assert "1.json resolves to" in capsys.readouterr().err
        with pytest.raises(FeatureImportError, match="1.png resolves to .*outside"):
            import_features("uniter-npz", base / "npz", tmp_path / "c2", image_dir=base / "images",
                            progress=False)


def test_export_never_embeds_a_file_from_outside(tmp_path):
    data, secret, victim, _ = hmd_pointing_outside(tmp_path, "symlink")
    with never_opened(secret):
        assert export_cli(["--dataset", "hmd", "--data-dir", str(data), "--output", str(tmp_path / "out"),
                           "--cache-dir", str(tmp_path / "cache")]) == 0
        assert export_cli(["--dataset", "hmd", "--data-dir", str(data), "--output", str(tmp_path / "strict"),
                           "--cache-dir", str(tmp_path / "cache2"), "--strict"]) == 1
    table = pq.read_table(next((tmp_path / "out" / "default").glob("train-*.parquet")))
    assert victim not in table.column("id").to_pylist() and table.num_rows == 3
    secret_bytes = secret.read_bytes()
    assert all(image["bytes"] != secret_bytes for image in table.column("image").to_pylist())


# ------------------------------------------------------------------------------------------------- ids


BAD_IDS = ["4²", "٣", 2**63, "9223372036854775808", -1, 1.5, True, "12 34", "0x1F"]


@pytest.mark.parametrize("bad_id", BAD_IDS, ids=repr)
def test_ids_that_are_not_plain_int64_decimals_are_named(tmp_path, bad_id):
    data = tmp_path / "data"
    make_hmd(data, splits=HMD_SPLITS, image_size=SIZE)
    rows = _jsonl(data / "train.jsonl")
    rows.insert(1, {"id": bad_id, "img": "img/00001.png", "text": "x", "label": 0})
    _write_jsonl(data / "train.jsonl", rows)
    ds = load_hmd(data, cache_dir=tmp_path / "cache")
    report = HatefulMemes(data_dir=data, cache_dir=tmp_path / "cache").report
    assert report.counts() == {"bad_field": 1} and ds["train"].num_rows == 4
    assert report.issues[0].line == 2 and "ASCII digits" in report.issues[0].reason
    assert len(dataset_images("hmd", data)) == 6  # extraction lists the same ids, no crash
    with pytest.raises(BadInputError, match=r"train\.jsonl, line 2: id must be"):
        load_hmd(data, cache_dir=tmp_path / "strict", strict=True)


def test_leading_zeros_do_not_count_towards_the_int64_digits():
    """A 20-character id with a leading zero was refused as 'not written in ASCII digits'."""
    from hm_hf.data.layouts import parse_id

    assert parse_id("01000000000000000009") == 1000000000000000009
    assert parse_id("0" * 30 + "7") == 7 and parse_id("000") == 0
    assert parse_id("09223372036854775808") is None  # 2**63 with a zero in front: still too large


@pytest.mark.parametrize("bad_id", ["4²", "١٢٣", "99999999999999999999", "-5"])
def test_mmhs_split_ids_that_are_not_plain_int64_decimals_are_named(tmp_path, bad_id):
    data = tmp_path / "data"
    make_mmhs(data, splits=MMHS_SPLITS, image_size=SIZE)
    with open(data / "splits" / "train_ids.txt", "a", encoding="utf-8") as f:
        f.write(f"{bad_id}\n")
    builder = MMHS150K(data_dir=data, cache_dir=tmp_path / "cache")
    builder.download_and_prepare()
    assert builder.report.counts() == {"bad_field": 1} and builder.as_dataset()["train"].num_rows == 3
    assert builder.report.issues[0].line == 4
    assert len(dataset_images("mmhs", data)) == 5


def test_feature_files_with_non_decimal_names_do_not_crash(tmp_path):
    assert layouts.canonical_id("4²") == "4²" and layouts.canonical_id("01235") == "1235"
    assert layouts.canonical_id("9" * 30) == "9" * 30  # over int64: kept as the name it is
    folder = tmp_path / "bua"
    folder.mkdir()
    regions = {"img_h": 24, "img_w": 32, "num_boxes": 1, "boxes": [[0, 0, 4, 4]], "features": [0.5] * 2048}
    (folder / "4².json").write_text(json.dumps(regions))
    stats = import_features("bua-json", folder, tmp_path / "c", progress=False)
    assert stats["imported"] == 1 and FeatureCache(tmp_path / "c").ids() == {"4²"}


# --------------------------------------------------------------------------------------- deeply nested JSON


def test_deeply_nested_json_is_a_counted_skip_everywhere(tmp_path, capsys):
    hmd = tmp_path / "hmd"
    make_hmd(hmd, splits=HMD_SPLITS, image_size=SIZE)
    with open(hmd / "train.jsonl", "a") as f:
        f.write(deep_json() + "\n")
    report = HatefulMemes(data_dir=hmd, cache_dir=tmp_path / "c1")
    report.download_and_prepare()
    (issue,) = report.report.issues
    assert (issue.kind, issue.line) == ("invalid_json", 5) and "nested too deeply" in issue.reason
    with pytest.raises(ValueError, match=r"train\.jsonl, line 5: JSON nested too deeply"):
        fte.read_split_texts("hmd", hmd, "train")

    mmhs = tmp_path / "mmhs"
    memes = make_mmhs(mmhs, splits=MMHS_SPLITS, image_size=SIZE, ocr_fraction=1.0)
    first, second = str(memes["train"][0].id), str(memes["train"][1].id)
    (mmhs / "img_txt" / f"{first}.json").write_text(deep_json())
    gt = json.loads((mmhs / "MMHS150K_GT.json").read_text())
    text = json.dumps(gt)
    at = text.index(f'"{second}"')  # the second entry's value becomes a 100,000-level array
    end = text.index('"labels_str"', at)
    end = text.index("]", end) + 2
    (mmhs / "MMHS150K_GT.json").write_text(text[:at] + f'"{second}": {deep_json()}' + text[end:])
    builder = MMHS150K(data_dir=mmhs, cache_dir=tmp_path / "c2")
    builder.download_and_prepare()
    kinds = {(i.kind, i.file) for i in builder.report.issues}
    assert ("invalid_json", f"img_txt/{first}.json") in kinds and ("invalid_json", "MMHS150K_GT.json") in kinds
    assert any("nested too deeply" in i.reason for i in builder.report.issues if i.file == "MMHS150K_GT.json")

    (tmp_path / "bua").mkdir()
    (tmp_path / "bua" / "1.json").write_text(deep_json())
    assert import_cli(["--format", "bua-json", "--input", str(tmp_path / "bua"), "--output", str(tmp_path / "f"),
                       "--no-progress"]) == 2
    assert "1.json: not a readable JSON file (JSON nested too deeply" in capsys.readouterr().err

    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "cache_info.json").write_text(deep_json())
    with pytest.raises(FeatureCacheError, match="cache_info.json is not usable .*nested too deeply"):
        FeatureCache(tmp_path / "cache")


# ------------------------------------------------------------------------ images changed after a build


@pytest.mark.parametrize("change", ["deleted", "garbage", "truncated", "outside_symlink"])
def test_images_changed_after_a_build_rebuild_instead_of_failing_later(tmp_path, change):
    data = tmp_path / "data"
    memes = make_hmd(data, splits=HMD_SPLITS, image_size=SIZE)
    first = load_hmd(data, cache_dir=tmp_path / "cache")
    assert first["train"].num_rows == 4
    victim = memes["train"][0].id
    image = data / "img" / f"{victim:05d}.png"
    secret = _outside(tmp_path)
    if change == "deleted":
        image.unlink()
    elif change == "garbage":
        image.write_bytes(b"not an image")
    elif change == "truncated":
        image.write_bytes(image.read_bytes()[:40])
    else:
        image.unlink()
        image.symlink_to(secret)
    with never_opened(secret):
        again = load_hmd(data, cache_dir=tmp_path / "cache")
        assert [row["image"].size for row in again["train"]] == [SIZE] * 3  # every row's image still reads
    kind = {"deleted": "missing_image", "outside_symlink": "outside_data_dir"}.get(change, "corrupt_image")
    assert HatefulMemes(data_dir=data, cache_dir=tmp_path / "cache").report.counts() == {kind: 1}
    assert victim not in again["train"]["id"]


def test_image_deleted_while_the_prepared_rows_are_in_use_is_named(tmp_path):
    data = tmp_path / "data"
    memes = make_hmd(data, splits=HMD_SPLITS, image_size=SIZE)
    rows = RegionRowsDataset(load_hmd(data, cache_dir=tmp_path / "cache")["train"], decode_images=True)
    victim = rows.dataset[0]["id"]
    (data / "img" / f"{victim:05d}.png").unlink()
    with pytest.raises(ValueError, match=f"image of id {victim} .*can no longer be read.*load the data set again"):
        rows[0]
    assert rows[1]["image"].size == SIZE and rows[1]["id"] in {m.id for m in memes["train"]}


def test_ocr_text_changed_after_a_build_is_picked_up(tmp_path):
    data = tmp_path / "data"
    memes = make_mmhs(data, splits=MMHS_SPLITS, image_size=SIZE, ocr_fraction=1.0)
    load_mmhs(data, cache_dir=tmp_path / "cache")
    tweet = str(memes["train"][0].id)
    time.sleep(0.01)
    (data / "img_txt" / f"{tweet}.json").write_text(json.dumps({"img_text": "new words"}))
    rows = load_mmhs(data, cache_dir=tmp_path / "cache")["train"].remove_columns("image")
    assert {row["id"]: row["img_text"] for row in rows}[tweet] == "new words"


# ------------------------------------------------------------------------------------- feature shards


def _cache_with_regions(tmp_path, memes) -> Path:
    feats = tmp_path / "feats"
    write_region_features(memes, feats)
    return feats


def _damage_shard(shard: Path, how: str) -> None:
    raw = shard.read_bytes()
    if how == "truncated":
        shard.write_bytes(raw[: len(raw) // 2])
    elif how == "zero_bytes":
        shard.write_bytes(b"")
    elif how == "random_bytes":
        shard.write_bytes(np.random.default_rng(0).bytes(4096))
    elif how == "huge_header_length":
        shard.write_bytes((2**62).to_bytes(8, "little") + raw[8:])
    elif how == "header_longer_than_file":
        shard.write_bytes((len(raw)).to_bytes(8, "little") + raw[8:])


@pytest.mark.parametrize("how", ["truncated", "zero_bytes", "random_bytes", "huge_header_length",
                                 "header_longer_than_file"])
def test_damaged_shards_are_named(tmp_path, how, capsys):
    data = tmp_path / "data"
    memes = make_hmd(data, splits=HMD_SPLITS, image_size=SIZE)
    feats = _cache_with_regions(tmp_path, memes)
    shard = FeatureCache(feats).shard_paths()[0]
    _damage_shard(shard, how)
    reads = [lambda: FeatureCache(feats).ids(), lambda: FeatureCache(feats).get(memes["train"][0].id),
             lambda: load_hmd(data, config_name="regions", feature_cache=feats, cache_dir=tmp_path / "cache")]
    if how != "truncated":  # the fingerprint checks only the header length (it must stay cheap)
        reads.append(lambda: FeatureCache(feats).fingerprint())
    for read in reads:
        with pytest.raises(FeatureCacheError, match=f"{shard.name}.*damaged.*Delete it and re-run"):
            read()
    assert export_cli(["--dataset", "hmd", "--data-dir", str(data), "--output", str(tmp_path / "out"),
                       "--config", "regions", "--feature-cache", str(feats), "--cache-dir", str(tmp_path / "c")]) == 1
    assert shard.name in capsys.readouterr().err


def _entry(kind: str, n: int = 3) -> dict[str, np.ndarray]:
    """The tensors of one cache entry, broken in one way (as a hostile or buggy writer would store it)."""
    rng = np.random.default_rng(1)
    features = rng.random((n, 2048), dtype=np.float32).astype(np.float16)
    boxes = np.array([[1, 1, 10, 8]] * n, np.float32)
    size = np.array([32, 24], np.int32)
    entry = {"features": features, "boxes": boxes, "image_size": size}
    if kind == "boxes_wrong_shape":
        entry["boxes"] = np.zeros((n, 5), np.float32)
    elif kind == "boxes_wrong_count":
        entry["boxes"] = boxes[:-1]
    elif kind == "no_image_size":
        del entry["image_size"]
    elif kind == "features_3d":
        entry["features"] = features.reshape(n, 2, 1024)
    elif kind == "image_size_zero":
        entry["image_size"] = np.array([0, 0], np.int32)
    elif kind == "image_size_three_values":
        entry["image_size"] = np.array([32, 24, 3], np.int32)
    elif kind == "nan_features":
        features[1, 7] = np.nan
    elif kind == "inf_features":
        features[0, 0] = np.inf
    elif kind == "float32_over_float16":
        entry["features"] = features.astype(np.float32) * 1e6
    elif kind == "nan_boxes":
        boxes[2, 1] = np.nan
    elif kind == "inverted_boxes":
        boxes[1] = [10, 8, 1, 1]
    elif kind == "boxes_far_outside":
        boxes[0] = [0, 0, 1e9, 8]
    elif kind == "nan_scores":
        entry["object_scores"] = np.array([0.5, np.nan, 0.5], np.float32)
    elif kind == "int8_features":
        entry["features"] = (features * 100).astype(np.int8)
    return entry


ENTRY_KINDS = ["boxes_wrong_shape", "boxes_wrong_count", "no_image_size", "features_3d", "image_size_zero",
               "image_size_three_values", "nan_features", "inf_features", "float32_over_float16", "nan_boxes",
               "inverted_boxes", "boxes_far_outside", "nan_scores", "int8_features"]
ENTRY_REASONS = {"boxes_wrong_shape": "boxes must be", "boxes_wrong_count": "boxes must be",
                 "no_image_size": "no image_size", "features_3d": r"\(N, D\) matrix",
                 "image_size_zero": "image_width must be in 1", "image_size_three_values": "image_size must be 2",
                 "nan_features": "NaN or infinite", "inf_features": "NaN or infinite",
                 "float32_over_float16": "beyond float16's range", "nan_boxes": "boxes hold 1 NaN",
                 "inverted_boxes": "inverted", "boxes_far_outside": "outside the 32x24 image",
                 "nan_scores": "object_scores", "int8_features": "features stored as int8, not floating point"}


@pytest.mark.parametrize("kind", ENTRY_KINDS)
def test_invalid_cache_entries_are_refused_on_read_and_counted_by_the_builder(tmp_path, kind):
    data = tmp_path / "data"
    memes = make_hmd(data, splits=HMD_SPLITS, image_size=SIZE)
    feats = _cache_with_regions(tmp_path, {"dev_seen": memes["dev_seen"]})
    victim = str(memes["train"][0].id)
    good = RegionFeatures(np.ones((2, 2048), np.float32), np.array([[0, 0, 5, 5]] * 2, np.float32), 32, 24)
    tensors = {f"{victim}/{name}": value for name, value in _entry(kind).items()}
    for meme in memes["train"][1:]:
        tensors.update(good.to_tensors(str(meme.id)))
    save_file(tensors, str(feats / "shard-hostile.safetensors"))  # written around RegionFeatures' checks
    with pytest.raises(InvalidRegionsError, match=rf"id {victim} in .*shard-hostile.safetensors.*{ENTRY_REASONS[kind]}"):
        FeatureCache(feats).get(victim)
    builder = HatefulMemes(data_dir=data, config_name="regions", feature_cache=feats, cache_dir=tmp_path / "cache")
    builder.download_and_prepare()
    assert builder.report.counts() == {"bad_features": 1}
    (issue,) = builder.report.issues
    assert issue.id == victim and issue.file == "train.jsonl"
    ds = builder.as_dataset()
    assert ds["train"].num_rows == 3 and int(victim) not in ds["train"]["id"]
    with pytest.raises(BadInputError, match=f"id {victim}"):
        HatefulMemes(data_dir=data, config_name="regions", feature_cache=feats, cache_dir=tmp_path / "strict",
                     strict=True).download_and_prepare()


@pytest.mark.parametrize("kind", ["nan_features", "float32_over_float16", "nan_boxes", "inverted_boxes",
                                  "image_size_zero", "boxes_wrong_count"])
def test_writers_refuse_invalid_regions(tmp_path, kind):
    entry = _entry(kind)
    size = entry["image_size"]
    with pytest.raises(InvalidRegionsError, match=ENTRY_REASONS[kind]):
        regions = RegionFeatures(entry["features"], entry["boxes"], int(size[0]), int(size[1]))
        # float32 features are valid as such (a float32 cache stores them); a float16 cache refuses them
        FeatureCache.create(tmp_path / "feats", {"name": "test"}, feature_dtype="float16").write_shard("a", {"1": regions})
    assert not list((tmp_path / "feats").glob("shard-*"))


def test_fingerprint_follows_a_shard_rewritten_in_place(tmp_path):
    """Same ids, shapes, offsets and metadata (a fingerprint of the headers alone would not see it): the build
    notices, and as the bytes no longer match the checksum recorded when the shard was written, the shard is
    named as damaged and its entries left out (a bit flipped on disk looks the same)."""
    data = tmp_path / "data"
    memes = make_hmd(data, splits=HMD_SPLITS, image_size=SIZE)
    feats = _cache_with_regions(tmp_path, memes)
    kwargs = dict(data_dir=data, config_name="regions", feature_cache=feats, cache_dir=tmp_path / "cache")
    before = HatefulMemes(**kwargs)
    before.download_and_prepare()
    shard = next(p for p in FeatureCache(feats).shard_paths() if "train" in p.name)
    raw = shard.read_bytes()
    header_end = 8 + int.from_bytes(raw[:8], "little")
    time.sleep(0.02)  # a later write: a later mtime
    with open(shard, "r+b") as f:  # rewritten in place: every feature halved, the header untouched
        for key, entry in json.loads(raw[8:header_end]).items():
            if key.endswith("/features"):
                start, end = entry["data_offsets"]
                halved = (np.frombuffer(raw[header_end + start:header_end + end], np.float16) * 0.5).astype(np.float16)
                f.seek(header_end + start)
                f.write(halved.tobytes())
    assert shard.read_bytes()[:header_end] == raw[:header_end] and shard.stat().st_size == len(raw)
    after = HatefulMemes(**kwargs)
    assert after.cache_dir != before.cache_dir  # noticed: a new build
    after.download_and_prepare()
    assert after.report.counts() == {"bad_features": 4}  # the train split's 4 memes, in the damaged shard
    assert all(f"{shard} is not a readable safetensors shard (its contents do not match the checksum" in issue.reason
               for issue in after.report.issues)
    assert after.as_dataset()["train"].num_rows == 0 and before.as_dataset()["train"].num_rows == 4


# ---------------------------------------------------------------------------------- extract-features images


@pytest.fixture(scope="module")
def tiny_detector(tmp_path_factory):
    from test_extract import tiny_model

    folder = tmp_path_factory.mktemp("detector") / "model"
    tiny_model().save_pretrained(folder)
    return folder


def test_extraction_refuses_decompression_bombs_like_the_builders(tmp_path, tiny_detector, capsys):
    data = tmp_path / "data"
    memes = make_hmd(data, splits={"train": 4}, image_size=(64, 48))
    bomb, large = memes["train"][0].id, memes["train"][1].id
    bomb_png(data / "img" / f"{bomb:05d}.png", 20000, 20000)  # over twice Pillow's limit: an error in Pillow
    bomb_png(data / "img" / f"{large:05d}.png", 10000, 10000)  # 100 Mpx, under twice the limit: Pillow only warns
    stats = extract_features("hmd", data, tmp_path / "cache", model=tiny_detector, min_boxes=2, max_boxes=4,
                             progress=False)
    assert stats["unreadable"] == 2 and set(stats["unreadable_ids"]) == {str(bomb), str(large)}
    assert FeatureCache(tmp_path / "cache").ids() == {str(m.id) for m in memes["train"][2:]}
    assert capsys.readouterr().err.count("decompression-bomb limit") == 2
    builder = HatefulMemes(data_dir=data, cache_dir=tmp_path / "hf")
    builder.download_and_prepare()
    assert builder.report.counts() == {"image_too_large": 2}  # the same images, the same limit


def test_detector_output_that_breaks_the_rules_is_counted_not_stored(tmp_path, tiny_detector, capsys):
    from hm_hf.extract.modeling_frcnn import FrcnnForRegionFeatures

    data = tmp_path / "data"
    make_hmd(data, splits={"train": 3}, image_size=(64, 48))
    model = FrcnnForRegionFeatures.from_pretrained(tiny_detector).eval()
    extract = model.extract

    def extract_with_nan(images, fp16=False):
        results = extract(images, fp16=fp16)
        results[0].features[:] = float("nan")  # what an fp16 overflow inside the detector would give
        return results

    model.extract = extract_with_nan
    stats = extract_features("hmd", data, tmp_path / "cache", model=model, batch_size=3, min_boxes=2, max_boxes=4,
                             progress=False)
    assert stats["invalid"] == 1 and stats["extracted"] == 2 and len(FeatureCache(tmp_path / "cache")) == 2
    assert "NaN or infinite" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ BUA JSON


def _bua(**overrides) -> dict:
    n = 2
    boxes = np.array([[0, 0, 10, 10], [2, 2, 20, 12]], np.float32)
    features = np.ones((n, 2048), np.float32)
    item = {"img_id": "1", "img_h": 24, "img_w": 32, "num_boxes": n,
            "boxes": base64.b64encode(boxes.tobytes()).decode(),
            "features": base64.b64encode(features.tobytes()).decode()}
    for key, value in overrides.items():
        if isinstance(value, np.ndarray):
            value = base64.b64encode(value.astype(np.float32).tobytes()).decode()
        item[key] = value
    return item


BAD_BUA = {
    "nan_features": (dict(features=np.full((2, 2048), np.nan)), "NaN or infinite"),
    "inf_features": (dict(features=np.full((2, 2048), np.inf)), "NaN or infinite"),
    "over_float16": (dict(features=np.full((2, 2048), 1e6)), "beyond float16's range"),
    "zero_width": (dict(img_w=0), "image_width must be in 1"),
    "negative_height": (dict(img_h=-5), "image_height must be in 1"),
    "nan_boxes": (dict(boxes=np.array([[0, 0, np.nan, 10], [2, 2, 20, 12]])), "boxes hold 1 NaN"),
    "inverted_boxes": (dict(boxes=np.array([[10, 10, 0, 0], [2, 2, 20, 12]])), "inverted"),
    "num_boxes_text": (dict(num_boxes="2"), "num_boxes' must be a whole number"),
    "width_float": (dict(img_w=32.5), "img_w' must be a whole number"),
    "bad_base64": (dict(features="%%% not base64 %%%"), "not valid base64"),
    "nested_list": (dict(features=[[[1]]]), "does not match|has .* values|not a flat list"),
}


@pytest.mark.parametrize("case", list(BAD_BUA))
def test_bua_json_that_breaks_the_rules_is_a_named_error(tmp_path, case, capsys):
    overrides, reason = BAD_BUA[case]
    folder = tmp_path / "bua"
    folder.mkdir()
    (folder / "1.json").write_text(json.dumps(_bua(**overrides)))
    with pytest.raises(FeatureImportError, match=f"1.json: .*({reason})"):
        import_features("bua-json", folder, tmp_path / "c", progress=False)
    assert FeatureCache(tmp_path / "c").ids() == set()  # nothing of it was stored
    assert import_cli(["--format", "bua-json", "--input", str(folder), "--output", str(tmp_path / "c"),
                       "--no-progress"]) == 2
    assert "1.json" in capsys.readouterr().err


def test_bua_features_beyond_float16_import_into_a_float32_cache(tmp_path):
    """What a float16 cache refuses (values that would become inf) a float32 cache stores as they are."""
    folder = tmp_path / "bua"
    folder.mkdir()
    (folder / "1.json").write_text(json.dumps(_bua(features=np.full((2, 2048), 1e6))))
    assert import_cli(["--format", "bua-json", "--input", str(folder), "--output", str(tmp_path / "c"),
                       "--feature-dtype", "float32", "--no-progress"]) == 0
    regions = FeatureCache(tmp_path / "c").get("1")
    assert regions.features.dtype == np.float32 and float(regions.features.max()) == 1e6


def test_uniter_sizes_come_from_images_checked_like_the_builders(tmp_path):
    data = tmp_path / "data"
    memes = make_hmd(data, splits={"train": 2}, image_size=SIZE)
    victim = memes["train"][0].id
    bomb_png(data / "img" / f"{victim:05d}.png", 20000, 20000)
    (tmp_path / "npz").mkdir()
    np.savez(tmp_path / "npz" / f"{victim}.npz", features=np.ones((1, 2048), np.float16),
             norm_bb=np.array([[0, 0, 0.5, 0.5, 0.5, 0.5]], np.float16))
    with pytest.raises(FeatureImportError, match=rf"{victim:05d}.png .*image_too_large.*decompression-bomb"):
        import_features("uniter-npz", tmp_path / "npz", tmp_path / "c", ids_from_dataset="hmd", data_dir=data,
                        progress=False)


# ------------------------------------------------------------------------------------------------ recipes


BAD_RECIPES = {
    "learning_rate: [1, 2]\n": r"learning_rate: \[1, 2\] is not a valid value \(expected float\)",
    "per_device_train_batch_size: 1.5\n": "per_device_train_batch_size: 1.5 is not a valid value",
    "bf16: maybe\n": "bf16: 'maybe' is not a valid value",
    "seed: true\n": "seed: True is not a valid value",
    "max_regions: -1\n": "max_regions must be at least 1, got -1",
    "max_text_length: 0\n": "max_text_length must be at least 1",
    "lora_r: 0\n": "lora_r must be at least 1",
    "eval_strategy: sometimes\n": r"eval_strategy: 'sometimes' is not a valid value.*one of \['no', 'steps', 'epoch'\]",
    "max_regions: {a: 1}\n": "max_regions: {'a': 1} is not a valid value",
}


@pytest.mark.parametrize("text", list(BAD_RECIPES))
def test_recipe_values_of_the_wrong_type_or_range_are_named(tmp_path, text):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(text + f"output_dir: {tmp_path / 'out'}\n")
    with pytest.raises(RecipeError, match=rf"recipe\.yaml: {BAD_RECIPES[text]}"):
        parse_recipe([str(recipe)])


def test_recipe_output_dir_that_is_a_file_and_deep_yaml_are_named(tmp_path):
    (tmp_path / "a_file").write_text("x")
    for output_dir in (tmp_path / "a_file", tmp_path / "a_file" / "run"):
        recipe = tmp_path / "recipe.yaml"
        recipe.write_text(f"output_dir: {output_dir}\n")
        with pytest.raises(RecipeError, match=f"{tmp_path / 'a_file'} is a file, not a folder"):
            parse_recipe([str(recipe)])
    with pytest.raises(RecipeError, match="a_file is a file"):
        parse_recipe(["--output_dir", str(tmp_path / "a_file")])
    recipe.write_text(deep_json(5000))
    with pytest.raises(RecipeError, match="nested too deeply"):
        parse_recipe([str(recipe)])
    # values that are right keep working, typed as the field wants them
    recipe.write_text(f"output_dir: {tmp_path / 'out'}\nlearning_rate: 1\nreport_to: [tensorboard]\n"
                      "lr_scheduler_kwargs: {power: 2}\nmax_regions: '36'\n")
    _, data, _, _, training = parse_recipe([str(recipe)])
    assert training.learning_rate == 1.0 and isinstance(training.learning_rate, float)
    assert data.max_regions == 36 and training.lr_scheduler_kwargs == {"power": 2}


@pytest.mark.parametrize("argv", [
    ["extract-features", "--batch-size", "0"], ["extract-features", "--flush-every", "-1"],
    ["import-features", "--flush-every", "0"], ["predict", "m", "a.png", "--batch-size", "0"],
    ["train-fasttext", "--dim", "0"], ["train-fasttext", "--epoch", "-3"],
    ["index", "add", "m", "d.jsonl", "--save-every", "0"], ["index", "add", "m", "d.jsonl", "--batch-size", "2.5"],
])
def test_counts_that_are_not_positive_whole_numbers_are_named(argv, capsys):
    """A batch size of 0 once gave `range() arg 3 must not be zero`, and -1 silently did nothing."""
    from hm_hf.cli import main

    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    option, value = argv[-2], argv[-1]
    says = f"'{value}' is not a whole number" if "." in value else f"{value} is not a positive whole number (1 or more)"
    assert f"argument {option}: {says}" in capsys.readouterr().err
