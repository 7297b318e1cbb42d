import numpy as np

from hm_hf.data.loading import load_hmd
from hm_hf.synthetic import make_hmd, write_region_features
from hm_hf.data.torch_dataset import RegionRowsDataset


def test_batched_rows_equal_the_datasets_rows(tmp_path):
    memes = make_hmd(tmp_path / "data", splits={"train": 10}, image_size=(64, 48))
    write_region_features(memes, tmp_path / "features")
    split = load_hmd(tmp_path / "data", cache_dir=tmp_path / "cache", config_name="regions",
                     feature_cache=tmp_path / "features")["train"]
    rows = RegionRowsDataset(split, decode_images=True)
    indices = [7, 2, 9, 0]
    for index, row in zip(indices, rows.__getitems__(indices)):
        reference = split[index]
        assert row["region_features"].dtype == np.float16 and row["region_features"].shape[1] == 2048
        np.testing.assert_array_equal(row["region_features"], np.asarray(reference["region_features"], np.float16))
        np.testing.assert_array_equal(row["boxes"], np.asarray(reference["boxes"], np.float32))
        assert (row["id"], row["text"], row["label"]) == (reference["id"], reference["text"], reference["label"])
        assert row["image"].size == reference["image"].size
    assert len(rows) == 10 and rows[3]["id"] == split[3]["id"]


def test_an_empty_region_set_is_kept_and_masked(tmp_path):
    from hm_hf.data.collator import MemeCollator
    from hm_hf.extract.cache import FeatureCache, RegionFeatures

    memes = make_hmd(tmp_path / "data", splits={"train": 4}, image_size=(64, 48))["train"]
    cache = FeatureCache.create(tmp_path / "features", {"name": "test"})
    records = {str(m.id): RegionFeatures(np.ones((2, 2048)), [[0, 0, 10, 10]] * 2, 64, 48) for m in memes[1:]}
    records[str(memes[0].id)] = RegionFeatures(np.zeros((0, 2048)), np.zeros((0, 4)), 64, 48)  # `--missing empty`
    cache.write_shard("a", records)
    split = load_hmd(tmp_path / "data", cache_dir=tmp_path / "cache", config_name="regions",
                     feature_cache=tmp_path / "features")["train"]
    assert len(split) == 4
    rows = RegionRowsDataset(split).__getitems__(list(range(4)))
    empty = next(r for r in rows if r["id"] == memes[0].id)
    assert empty["num_boxes"] == 0 and empty["region_features"].shape == (0, 2048)
    batch = MemeCollator(use_regions=True)(rows)
    index = [r["id"] for r in rows].index(memes[0].id)
    assert batch["visual_attention_mask"][index].sum() == 0 and batch["visual_attention_mask"].sum() == 6
    alone = RegionRowsDataset(split)[[r["id"] for r in rows].index(memes[0].id)]  # a batch of empty rows only
    assert alone["region_features"].shape == (0, 2048) and alone["boxes"].shape == (0, 4)
    assert MemeCollator(use_regions=True)([alone])["visual_embeds"].shape == (1, 0, 2048)
