import dataclasses
import json

import numpy as np
import pytest
import xxhash
from safetensors import safe_open
from safetensors.numpy import save_file

from hm_hf.extract.cache import FeatureCache, FeatureCacheError, InvalidRegionsError, RegionFeatures, file_checksum


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


def test_image_checksum_is_stored_validated_and_optional(tmp_path):
    digest = xxhash.xxh3_128(b"an image file").hexdigest()
    cache = FeatureCache.create(tmp_path, {"name": "test"})
    cache.write_shard("a", {"1": dataclasses.replace(_regions(2), image_xxh3=digest), "2": _regions(2)})
    with safe_open(str(cache.shard_paths()[0]), framework="numpy") as f:
        stored = f.get_tensor("1/image_xxh3")
        assert "2/image_xxh3" not in f.keys()  # optional: absent where not known
    assert stored.dtype == np.uint8 and stored.shape == (16,)
    again = FeatureCache(tmp_path)
    assert again.get("1").image_xxh3 == again.image_checksum("1") == digest and again.has_image_checksum("1")
    assert again.get("2").image_xxh3 is None and again.image_checksum("2") is None  # an older / imported entry
    for bad in ("xyz", digest.upper(), digest[:-1]):
        with pytest.raises(InvalidRegionsError, match="image_xxh3 must be 32 lowercase hex digits"):
            dataclasses.replace(_regions(2), image_xxh3=bad)
    tensors = _regions(2).to_tensors("3")
    tensors["3/image_xxh3"] = np.zeros(16, np.float32)  # written around RegionFeatures' checks
    save_file(tensors, str(tmp_path / "shard-b.safetensors"))
    with pytest.raises(InvalidRegionsError, match=r"id 3 in .*shard-b.safetensors: image_xxh3 must be 16 uint8"):
        FeatureCache(tmp_path).get("3")


def test_the_builder_refuses_features_of_another_image_with_the_same_id(tmp_path):
    from hm_hf.data.hateful_memes import HatefulMemes
    from hm_hf.data.report import BadInputError
    from hm_hf.synthetic.data import make_hmd

    memes = make_hmd(tmp_path / "hmd", splits={"train": 3}, image_size=(64, 48))["train"]
    other = make_hmd(tmp_path / "hmd2", splits={"train": 3}, image_size=(64, 48), seed=7)["train"]
    assert {m.id for m in other} == {m.id for m in memes}  # same ids, other pictures
    cache = FeatureCache.create(tmp_path / "features", {"name": "test"})
    records = {str(m.id): _regions(2, seed=m.id) for m in memes}
    for m in memes[:2]:  # the third has no checksum, as imported features and older caches
        records[str(m.id)].image_xxh3 = file_checksum(tmp_path / "hmd" / "img" / f"{m.id:05d}.png")
    cache.write_shard("a", records)

    def build(data, strict=False):
        builder = HatefulMemes(data_dir=tmp_path / data, config_name="regions", feature_cache=tmp_path / "features",
                               cache_dir=tmp_path / f"cache-{data}-{strict}", strict=strict)
        builder.download_and_prepare()
        return builder

    own = build("hmd")
    assert own.report.counts() == {} and own.as_dataset()["train"].num_rows == 3
    mixed = build("hmd2")
    assert mixed.report.counts() == {"bad_features": 2}
    assert {issue.id for issue in mixed.report.issues} == {str(memes[0].id), str(memes[1].id)}
    issue = mixed.report.issues[0]
    assert f"id {issue.id} in {tmp_path / 'features'} were extracted from another image than img/" in issue.reason
    assert "new folder" in issue.reason
    assert mixed.as_dataset()["train"]["id"] == [memes[2].id]  # unchecked: kept
    with pytest.raises(BadInputError, match=r"id \d+ .*extracted from another image"):
        build("hmd2", strict=True)


def test_a_bit_flipped_in_a_shard_is_named_when_it_is_read(tmp_path):
    """A flipped bit gives feature values the rules cannot tell from real ones: the checksum recorded when the
    shard was written is checked when its first entry is read."""
    cache = FeatureCache.create(tmp_path, {"name": "test"})
    shard = cache.write_shard("a", {"1": _regions(3), "2": _regions(5, 1)})
    data = bytearray(shard.read_bytes())
    data[-7] ^= 0x10  # in the last tensor's bytes, past the header
    shard.write_bytes(bytes(data))
    fresh = FeatureCache(tmp_path)
    assert fresh.ids() == {"1", "2"}  # the header is intact: listing still works
    with pytest.raises(FeatureCacheError, match=f"{shard} .*do not match the checksum recorded when it was written"):
        fresh.get("1")
