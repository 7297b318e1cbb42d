import numpy as np

from hm_hf.data.loading import load_hmd
from hm_hf.data.synthetic import make_hmd, write_region_features
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
