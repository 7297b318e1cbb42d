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
    np.testing.assert_array_equal(got.features, _regions(5, 1).features)
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
