"""Learning, honestly: on the synthetic confounder data the multimodal tiny recipe is clearly better than
its text-only and image-only twins, which stay near chance (the numbers in the README)."""

import json
from pathlib import Path

import pytest

from hm_hf.training.run import main

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    root = tmp_path_factory.mktemp("learning")
    out = {}
    for variant in ("", "_text_only", "_image_only"):
        output_dir = root / f"out{variant}"
        assert main([str(ROOT / f"recipes/synthetic/config_tiny{variant}.yaml"), "--data_dir", str(root / "data"),
                     "--feature_cache", str(root / "features"), "--dataset_cache_dir", str(root / "cache"),
                     "--output_dir", str(output_dir), "--save_total_limit", "1"]) == 0
        out[variant or "multimodal"] = json.loads((output_dir / "all_results.json").read_text())
    return out


def test_multimodal_beats_both_unimodal_twins(results):
    multimodal = results["multimodal"]["dev_unseen_auroc"]
    text_only = results["_text_only"]["dev_unseen_auroc"]
    image_only = results["_image_only"]["dev_unseen_auroc"]
    assert multimodal > 0.85, multimodal
    assert abs(text_only - 0.5) < 0.1 and abs(image_only - 0.5) < 0.1, (text_only, image_only)
    assert multimodal - max(text_only, image_only) > 0.25
