import json

import numpy as np
import pytest

from hm_hf.extract.cache import FeatureCache, FeatureCacheError, RegionFeatures


def _regions(n, seed=0):
    rng = np.random.default_rng(seed)
    corners = rng.random((n, 2, 2)) * 100  # two (x, y) corners per box
    boxes = np.concatenate([corners.min(1), corners.max(1)], axis=1)  # x1 y1 x2 y2, never inverted
    return RegionFeatures(rng.random((n, 2048)), boxes, 640, 480, object_ids=np.arange(n))


def test_write_read_and_fingerprint(tmp_path):
    cache = FeatureCache.create(tmp_path, {"name": "test"})
    empty = cache.fingerprint()
    cache.write_shard("a", {"1": _regions(3), "2": _regions(5, 1)})
    assert FeatureCache(tmp_path).ids() == {"1", "2"}
    got = FeatureCache(tmp_path).get(2)
    assert got.features.dtype == np.float16  # the default storage
    np.testing.assert_array_equal(got.features, _regions(5, 1).features.astype(np.float16))
    assert (got.image_width, got.image_height) == (640, 480) and got.object_scores is None
    assert got.object_ids.tolist() == list(range(5))
    full = cache.fingerprint()
    assert full != empty and FeatureCache(tmp_path).fingerprint() == full
    assert not list(tmp_path.glob(".*tmp")), "no temporary files left behind"


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(FeatureCacheError, match="not a feature cache"):
        FeatureCache(tmp_path)
    cache = FeatureCache.create(tmp_path, {"name": "a"})
    cache.write_shard("a", {"1": _regions(2)})
    with pytest.raises(FeatureCacheError, match="stored twice"):
        cache.write_shard("b", {"1": _regions(2)})
    with pytest.raises(FeatureCacheError, match="was made with"):
        FeatureCache.create(tmp_path, {"name": "b"})
    with pytest.raises(FeatureCacheError, match="boxes"):
        RegionFeatures(np.zeros((3, 2048)), np.zeros((2, 4)), 1, 1)
    info = json.loads((tmp_path / "cache_info.json").read_text())
    for dtype in ("bfloat16", 123):  # an edited record: named when the cache is opened, not a numpy TypeError
        (tmp_path / "cache_info.json").write_text(json.dumps({**info, "feature_dtype": dtype}))
        with pytest.raises(FeatureCacheError, match=f"cache_info.json: feature_dtype {dtype!r} is not one of "
                                                    "float16, float32"):
            FeatureCache(tmp_path)


def test_float32_storage_keeps_the_features_exactly(tmp_path):
    cache = FeatureCache.create(tmp_path, {"name": "test"}, feature_dtype="float32")
    cache.write_shard("a", {"1": _regions(3)})
    got = FeatureCache(tmp_path).get("1")
    assert FeatureCache(tmp_path).feature_dtype == "float32" and got.features.dtype == np.float32
    np.testing.assert_array_equal(got.features, _regions(3).features)
    with pytest.raises(FeatureCacheError, match="stores float32 features, not float16"):
        FeatureCache.create(tmp_path, {"name": "test"})  # resuming with the other dtype is refused
    with pytest.raises(FeatureCacheError, match="feature_dtype"):
        FeatureCache.create(tmp_path / "x", {"name": "test"}, feature_dtype="bfloat16")


def test_the_builder_and_collator_keep_float32_features(tmp_path):
    from hm_hf.data.collator import MemeCollator
    from hm_hf.data.loading import load_hmd
    from hm_hf.synthetic.data import make_hmd
    from hm_hf.data.torch_dataset import RegionRowsDataset

    memes = make_hmd(tmp_path / "hmd", splits={"train": 3}, image_size=(64, 48))
    cache = FeatureCache.create(tmp_path / "features", {"name": "test"}, feature_dtype="float32")
    cache.write_shard("a", {str(m.id): _regions(2, seed=m.id) for m in memes["train"]})
    splits = load_hmd(tmp_path / "hmd", cache_dir=tmp_path / "cache", config_name="regions",
                      feature_cache=tmp_path / "features")
    assert splits["train"].features["region_features"].dtype == "float32"  # Array2D follows the cache
    rows = RegionRowsDataset(splits["train"]).__getitems__([0, 1])
    assert rows[0]["region_features"].dtype == np.float32
    batch = MemeCollator(use_regions=True)(rows)
    expected = _regions(2, seed=int(splits["train"]["id"][0])).features
    np.testing.assert_array_equal(batch["visual_embeds"][0].numpy(), expected)  # not rounded through float16
