"""`hm-hf import-features`: fixtures written in each foreign format round-trip into the cache and the builder."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest

from hm_hf.synthetic import make_hmd
from hm_hf.data.layouts import dataset_images
from hm_hf.extract.cache import FeatureCache
from hm_hf.extract.importers import cli, import_features, scan

DIM = 2048


@pytest.fixture(scope="module")
def truth(tmp_path_factory):
    """A small HMD folder and, per id, the regions every format will encode."""
    root = tmp_path_factory.mktemp("importers")
    memes = make_hmd(root / "hmd", splits={"train": 4, "dev_seen": 2}, image_size=(200, 150))
    rng = np.random.default_rng(0)
    regions = {}
    for rows in memes.values():
        for meme in rows:
            n = int(rng.integers(10, 20))
            x1 = rng.uniform(0, 100, n)
            y1 = rng.uniform(0, 70, n)
            boxes = np.stack([x1, y1, x1 + rng.uniform(5, 100, n), y1 + rng.uniform(5, 80, n)], 1).astype(np.float32)
            regions[str(meme.id)] = dict(
                features=rng.random((n, DIM), dtype=np.float32) * 4,
                boxes=boxes,
                object_ids=rng.integers(0, 1600, n),
                object_scores=rng.uniform(0.2, 1, n).astype(np.float32),
                width=200,
                height=150,
            )
    return root, regions


def check_cache(cache_dir: Path, truth: dict, ids=None, box_atol=1e-4):
    cache = FeatureCache(cache_dir)
    ids = set(truth) if ids is None else set(ids)
    assert cache.ids() == ids
    for example_id in ids:
        expected, got = truth[example_id], cache.get(example_id)
        assert got.features.dtype == np.float16 and got.features.shape == expected["features"].shape
        np.testing.assert_allclose(got.features, expected["features"], rtol=1e-3, atol=1e-2)
        np.testing.assert_allclose(got.boxes, expected["boxes"], atol=box_atol)
        assert (got.image_width, got.image_height) == (expected["width"], expected["height"])
        np.testing.assert_array_equal(got.object_ids, expected["object_ids"])
        np.testing.assert_allclose(got.object_scores, expected["object_scores"], rtol=1e-3, atol=1e-3)
    return cache


def b64(array, dtype) -> str:
    return base64.b64encode(np.ascontiguousarray(array, dtype=dtype).tobytes()).decode()


def write_bua_json(folder: Path, truth: dict, ids_as_lists=False):
    folder.mkdir(parents=True, exist_ok=True)
    for example_id, r in truth.items():
        n = len(r["boxes"])
        item = {
            "img_id": f"{int(example_id):05d}",
            "img_h": r["height"],
            "img_w": r["width"],
            "num_boxes": n,
            "boxes": b64(r["boxes"], np.float32),
            "features": b64(r["features"], np.float32),
            "objects_id": r["object_ids"].tolist() if ids_as_lists else b64(r["object_ids"], np.int64),
            "objects_conf": r["object_scores"].tolist() if ids_as_lists else b64(r["object_scores"], np.float32),
            "objects": ["thing"] * n,
        }
        (folder / f"{int(example_id):05d}.json").write_text(json.dumps(item))


def write_mmf(folder: Path, truth: dict):
    folder.mkdir(parents=True, exist_ok=True)
    for example_id, r in truth.items():
        n = len(r["boxes"])
        cls_prob = np.full((n, 1601), 1e-4, dtype=np.float32)  # background first, as MMF's detector
        cls_prob[np.arange(n), r["object_ids"] + 1] = r["object_scores"]
        name = f"{int(example_id):05d}"  # MMF names HMD features after the zero-padded image file
        np.save(folder / f"{name}.npy", r["features"])
        info = {"bbox": r["boxes"], "num_boxes": n, "objects": r["object_ids"], "cls_prob": cls_prob,
                "image_width": r["width"], "image_height": r["height"]}  # fmt: skip
        np.save(folder / f"{name}_info.npy", info)  # an object array: numpy pickles the dict


def write_uniter(folder: Path, truth: dict):
    folder.mkdir(parents=True, exist_ok=True)
    for example_id, r in truth.items():
        w, h = r["width"], r["height"]
        b = r["boxes"]
        norm_bb = np.stack([b[:, 0] / w, b[:, 1] / h, b[:, 2] / w, b[:, 3] / h, (b[:, 2] - b[:, 0]) / w,
                            (b[:, 3] - b[:, 1]) / h], 1)  # fmt: skip
        n = len(b)
        soft = np.full((n, 1601), 1e-4, dtype=np.float32)  # background first (BUTD Caffe)
        soft[np.arange(n), r["object_ids"] + 1] = 0.9
        np.savez(folder / f"{example_id}.npz", features=r["features"].astype(np.float16),
                 norm_bb=norm_bb.astype(np.float16), conf=r["object_scores"].astype(np.float16),
                 soft_labels=soft.astype(np.float16))  # fmt: skip


def test_bua_json_roundtrip_and_resume(truth, tmp_path):
    root, regions = truth
    write_bua_json(tmp_path / "json", regions)
    assert set(scan("bua-json", tmp_path / "json")) == set(regions)  # zero-padded names -> builder ids
    assert cli(["--format", "bua-json", "--input", str(tmp_path / "json"), "--output", str(tmp_path / "c"),
                "--no-progress", "--flush-every", "4"]) == 0  # fmt: skip
    cache = check_cache(tmp_path / "c", regions)
    assert cache.source["format"] == "bua-json" and len(cache.shard_paths()) == 2
    fingerprint = cache.fingerprint()
    stats = import_features("bua-json", tmp_path / "json", tmp_path / "c", progress=False)
    assert stats["cached"] == len(regions) and stats["imported"] == 0
    assert FeatureCache(tmp_path / "c").fingerprint() == fingerprint
    # ids and scores written as plain lists are read too
    write_bua_json(tmp_path / "json_lists", regions, ids_as_lists=True)
    import_features("bua-json", tmp_path / "json_lists", tmp_path / "c2", progress=False)
    check_cache(tmp_path / "c2", regions)


def test_bad_bua_json_names_the_file(truth, tmp_path):
    _, regions = truth
    write_bua_json(tmp_path / "json", regions)
    victim = sorted((tmp_path / "json").glob("*.json"))[0]
    item = json.loads(victim.read_text())
    item["num_boxes"] += 1
    victim.write_text(json.dumps(item))
    assert cli(["--format", "bua-json", "--input", str(tmp_path / "json"), "--output", str(tmp_path / "c"),
                "--no-progress"]) == 2  # fmt: skip
    with pytest.raises(ValueError, match=victim.name):
        import_features("bua-json", tmp_path / "json", tmp_path / "c", progress=False)


def test_mmf_needs_the_pickle_opt_in(truth, tmp_path, capsys):
    _, regions = truth
    write_mmf(tmp_path / "mmf", regions)
    args = ["--format", "mmf", "--input", str(tmp_path / "mmf"), "--output", str(tmp_path / "c"), "--no-progress"]
    assert cli(args) == 2
    message = capsys.readouterr().err
    assert "pickle" in message and "--allow-pickle-for-mmf-info" in message and "arbitrary code" in message
    assert not (tmp_path / "c").exists()
    assert cli([*args, "--allow-pickle-for-mmf-info"]) == 0
    check_cache(tmp_path / "c", regions)
    missing = tmp_path / "nowhere"  # named as missing, not answered with the pickle opt-in
    assert cli(["--format", "mmf", "--input", str(missing), "--output", str(tmp_path / "d"), "--no-progress"]) == 2
    assert f"--input {missing} is not a folder" in capsys.readouterr().err


def test_uniter_npz_boxes_back_to_pixels(truth, tmp_path):
    root, regions = truth
    write_uniter(tmp_path / "npz", regions)
    args = ["--format", "uniter-npz", "--input", str(tmp_path / "npz"), "--output", str(tmp_path / "c"),
            "--no-progress"]  # fmt: skip
    assert cli(args) == 2  # normalised boxes and no way to learn the image sizes
    assert cli([*args, "--ids-from-dataset", "hmd", "--data-dir", str(root / "hmd")]) == 0
    # fp16 storage of norm_bb: boxes agree to ~0.1 px on a 200 px image
    check_cache(tmp_path / "c", regions, box_atol=0.15)


def test_missing_ids_policies(truth, tmp_path):
    root, regions = truth
    write_bua_json(tmp_path / "json", regions)
    gone = sorted(regions)[1]
    (tmp_path / "json" / f"{int(gone):05d}.json").unlink()
    base = dict(ids_from_dataset="hmd", data_dir=root / "hmd", progress=False)

    with pytest.raises(ValueError, match=gone):
        import_features("bua-json", tmp_path / "json", tmp_path / "error", missing="error", **base)
    assert not (tmp_path / "error").exists()  # checked before anything is written

    stats = import_features("bua-json", tmp_path / "json", tmp_path / "skip", missing="skip", **base)
    assert stats["missing"] == 1 and stats["missing_ids"] == [gone]
    check_cache(tmp_path / "skip", regions, ids=set(regions) - {gone})

    stats = import_features("bua-json", tmp_path / "json", tmp_path / "empty", missing="empty", **base)
    assert stats["empty"] == 1
    cache = FeatureCache(tmp_path / "empty")
    assert cache.ids() == set(regions)
    empty = cache.get(gone)
    assert empty.num_boxes == 0 and empty.features.shape == (0, DIM) and empty.boxes.shape == (0, 4)
    assert (empty.image_width, empty.image_height) == (200, 150)  # read from the image file


def test_only_the_dataset_ids_are_imported(truth, tmp_path):
    root, regions = truth
    extra = dict(next(iter(regions.values())))
    write_bua_json(tmp_path / "json", {**regions, "99999": extra})
    stats = import_features("bua-json", tmp_path / "json", tmp_path / "c", ids_from_dataset="hmd",
                            data_dir=root / "hmd", progress=False)  # fmt: skip
    assert stats["extra"] == 1 and stats["extra_ids"] == ["99999"]
    check_cache(tmp_path / "c", regions)


def test_imported_features_reach_the_builder(truth, tmp_path):
    """The importer's cache is what the HMD builder's "regions" config joins by id."""
    hateful_memes = pytest.importorskip("hm_hf.data.hateful_memes")
    root, regions = truth
    write_bua_json(tmp_path / "json", regions)
    import_features("bua-json", tmp_path / "json", tmp_path / "c", progress=False)
    builder = hateful_memes.HatefulMemes(data_dir=root / "hmd", config_name="regions", feature_cache=tmp_path / "c",
                                         cache_dir=tmp_path / "hf")  # fmt: skip
    builder.download_and_prepare()
    dataset = builder.as_dataset()
    seen = 0
    for split in dataset:
        for row in dataset[split].with_format("numpy"):
            expected = regions[str(row["id"])]
            assert row["num_boxes"] == len(expected["boxes"])
            np.testing.assert_allclose(row["region_features"], expected["features"], rtol=1e-3, atol=1e-2)
            np.testing.assert_allclose(row["boxes"], expected["boxes"], atol=1e-4)
            assert (row["image_width"], row["image_height"]) == (200, 150)
            seen += 1
    assert seen == len(regions)


def _truncate(path: Path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip_a_data_byte(path: Path):
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 3] ^= 0xFF  # inside features.npy's data: a CRC mismatch (stored) or a bad deflate stream
    path.write_bytes(bytes(raw))


def _soft_labels_1d(path: Path):
    with np.load(path) as data:
        arrays = dict(data)
    np.savez(path, **{**arrays, "soft_labels": arrays["soft_labels"][:, 0]})


@pytest.mark.parametrize("damage", ["empty", "truncated", "crc", "deflate", "soft_labels_1d"])
def test_damaged_uniter_npz_names_the_file_and_keeps_what_was_written(truth, tmp_path, capsys, damage):
    """A damaged .npz used to escape as a BadZipFile / EOFError / zlib.error traceback."""
    root, regions = truth
    write_uniter(tmp_path / "npz", regions)
    if damage == "deflate":  # np.savez_compressed: damage shows up as zlib.error
        for path in (tmp_path / "npz").glob("*.npz"):
            with np.load(path) as data:
                np.savez_compressed(path, **dict(data))
    order = list(dataset_images("hmd", root / "hmd"))  # the order the import goes in
    victim = tmp_path / "npz" / f"{order[-1]}.npz"
    {"empty": lambda p: p.write_bytes(b""), "truncated": _truncate, "crc": _flip_a_data_byte,
     "deflate": _flip_a_data_byte, "soft_labels_1d": _soft_labels_1d}[damage](victim)  # fmt: skip
    args = ["--format", "uniter-npz", "--input", str(tmp_path / "npz"), "--output", str(tmp_path / "c"),
            "--ids-from-dataset", "hmd", "--data-dir", str(root / "hmd"), "--no-progress", "--flush-every", "4"]  # the last shard is unfinished at the error
    assert cli(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("import-features: error: ") and str(victim) in err and "Traceback" not in err
    assert FeatureCache(tmp_path / "c").ids() == set(order[:-1])  # the files before it stay imported
    victim.unlink()
    assert cli(args) == 0  # and the import resumes once the file is removed
    check_cache(tmp_path / "c", regions, ids=set(order[:-1]), box_atol=0.15)


def test_empty_mmf_file_names_the_file(truth, tmp_path):
    _, regions = truth
    write_mmf(tmp_path / "mmf", regions)
    victim = sorted((tmp_path / "mmf").glob("*_info.npy"))[0]
    victim.write_bytes(b"")  # np.load: EOFError
    with pytest.raises(ValueError, match=victim.name):
        import_features("mmf", tmp_path / "mmf", tmp_path / "c", allow_pickle_for_mmf_info=True, progress=False)


def test_features_of_another_width_are_refused_at_import(truth, tmp_path, capsys):
    """10-d features used to be imported into the 2048-d cache, and failed only when a data set was built."""
    _, regions = truth
    narrow_id = sorted(regions)[0]
    narrow = {**regions[narrow_id], "features": regions[narrow_id]["features"][:, :10]}
    write_bua_json(tmp_path / "json", {**regions, narrow_id: narrow})
    victim = tmp_path / "json" / f"{int(narrow_id):05d}.json"
    args = ["--format", "bua-json", "--input", str(tmp_path / "json"), "--output", str(tmp_path / "c"), "--no-progress"]
    assert cli(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("import-features: error: ") and str(victim) in err
    assert "10-dimensional features" in err and f"{DIM}-dimensional" in err
    assert narrow_id not in FeatureCache(tmp_path / "c").ids()
    victim.unlink()
    assert cli(args) == 0
    check_cache(tmp_path / "c", regions, ids=set(regions) - {narrow_id})
