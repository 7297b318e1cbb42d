"""The detector against its reference: transformers' LXMERT demo FRCNN (`examples/research_projects/lxmert`).

`write_reference_folder` writes a folder in the layout `unc-nlp/frcnn-vg-finetuned` ships (the demo's nested,
lower-case `config.yaml` + a `pytorch_model.bin` state dict as `BatchNorm2d` modules save it), with a tiny
architecture the reference code also builds (depth 50, narrow widths, 20 classes) and weights drawn from
NumPy's frozen `RandomState` stream, so the file is the same on every machine. The demo's own code was run
on these folders at development time (outside this repository); `EXPECTED` holds the figures it returned,
which hm_hf must give with no setting changed: the folder's `config.yaml` alone decides test size, NMS
sweep and region count, as in the demo.
"""

from __future__ import annotations

import pickle
import re
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from torch.nn import functional as F

from hm_hf.extract.configuration_frcnn import DetectorFileError, FrcnnConfig
from hm_hf.extract.modeling_frcnn import FrcnnForRegionFeatures, read_image

# ------------------------------------------------------------------------------- the reference-layout folder


def reference_yaml(min_size: int = 200, max_size: int = 333, nms=(0.5, 0.6, 0.7), detections: int = 36,
                   post_nms_topk: int = 300) -> dict:
    """The demo's config.yaml (lower-case keys, sections at the top level as its `Config` reads them) for a tiny
    detector; every key the demo's code reads is present, so the demo runs on the folder unchanged."""
    return {
        "model": {"device": "cpu", "pixel_mean": [102.9801, 115.9465, 122.7717], "pixel_std": [1.0, 1.0, 1.0],
                  "max_pool": True},
        "resnets": {"depth": 50, "stem_out_channels": 8, "res2_out_channels": 16, "width_per_group": 4,
                    "num_groups": 1, "stride_in_1x1": True, "norm": "BN", "out_features": ["res4"],
                    "res5_dilation": 1},
        "backbone": {"freeze_at": 2},
        "proposal_generator": {"hidden_channels": 16, "min_size": 0},
        "anchor_generator": {"sizes": [[64, 128, 256, 512]], "aspect_ratios": [[0.5, 1.0, 2.0]], "offset": 0.0},
        "rpn": {"in_features": ["res4"], "nms_thresh": 0.7, "batch_size_per_image": 256, "positive_fraction": 0.5,
                "smooth_l1_beta": 0.0, "loss_weight": 1.0, "pre_nms_topk_train": 12000, "pre_nms_topk_test": 6000,
                "post_nms_topk_train": 2000, "post_nms_topk_test": post_nms_topk, "boundary_thresh": -1,
                "bbox_reg_weights": [1.0, 1.0, 1.0, 1.0], "iou_thresholds": [0.3, 0.7], "iou_labels": [0, -1, 1]},
        "roi_heads": {"positive_fraction": 0.25, "in_features": ["res4"], "num_classes": 20,
                      "proposal_append_gt": True, "score_thresh_test": 0.2, "nms_thresh_test": list(nms)},
        "roi_box_head": {"smooth_l1_beta": 0.0, "bbox_reg_weights": [10.0, 10.0, 5.0, 5.0],
                         "cls_agnostic_bbox_reg": False, "pooler_resolution": 6, "pooler_sampling_ratio": 0,
                         "res5halve": False, "attr": True, "num_attrs": 7, "pooler_type": "ROIPool"},
        "input": {"min_size_test": min_size, "max_size_test": max_size, "format": "BGR"},
        "min_detections": detections, "max_detections": detections, "size_divisibility": 0, "pad_value": 0.0,
    }  # fmt: skip


WEIGHT_SCALES = {"stem.conv1": 0.01, "objectness_logits": 2.0, "cls_score": 3.0, "attr_score": 3.0,
                 "anchor_deltas": 0.05, "bbox_pred": 0.05}


def reference_state_dict(config: FrcnnConfig, seed: int = 0) -> OrderedDict:
    """Random weights in the checkpoint's layout: hm_hf's keys plus each norm's `num_batches_tracked`, as the
    reference's BatchNorm2d modules save them. Scaled so that activations stay O(1) through the random ResNet
    (the stem sees 0-255 pixels), class scores are well separated and box deltas small but not zero."""
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in FrcnnForRegionFeatures(config).state_dict().items()}
    rng = np.random.RandomState(seed)  # the legacy stream never changes between NumPy versions
    state = OrderedDict()
    for key in sorted(shapes):
        shape = shapes[key]
        if key.endswith("cell_anchors.0"):  # the anchors the reference computes from the yaml's sizes
            state[key] = FrcnnForRegionFeatures(config).proposal_generator.anchor_generator.compute_cell_anchors()
            continue
        if ".norm." in key:
            if key.endswith("running_mean"):
                value = rng.normal(0, 0.1, shape)
            elif key.endswith("running_var"):
                value = rng.uniform(0.5, 1.5, shape)
            elif key.endswith("weight"):  # the last norm of a block small: residual sums stay bounded
                value = rng.uniform(0.05, 0.2, shape) if ".conv3." in key else rng.uniform(0.8, 1.2, shape)
            else:
                value = rng.normal(0, 0.1, shape)
        elif key.endswith("bias"):
            value = rng.normal(0, 0.1, shape)
        else:
            std = np.sqrt(2.0 / max(1, int(np.prod(shape[1:]))))  # He initialisation, then per-layer scaling
            std *= next((factor for part, factor in WEIGHT_SCALES.items() if part in key), 1.0)
            value = rng.normal(0, std, shape)
            if key.endswith(("cls_score.weight", "attr_score.weight")):  # rows of mean 0: the region's own
                value -= value.mean(axis=1, keepdims=True)  # features decide its class, not their common level
        state[key] = torch.from_numpy(np.asarray(value, dtype=np.float32))
        if key.endswith(".norm.running_var"):
            state[key.replace("running_var", "num_batches_tracked")] = torch.tensor(0)
    return state


def write_reference_folder(folder: Path, seed: int = 0, **yaml_settings) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    settings = reference_yaml(**yaml_settings)
    (folder / "config.yaml").write_text(yaml.safe_dump(settings))
    config = FrcnnConfig.from_reference_yaml(folder / "config.yaml")
    torch.save(reference_state_dict(config, seed), folder / "pytorch_model.bin")
    return folder


def reference_image(width: int, height: int, seed: int = 0) -> np.ndarray:
    """An RGB uint8 image with structure at several scales (stripes of random frequency) plus noise, so that
    how it is resized matters; from NumPy's frozen stream."""
    rng = np.random.RandomState(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    image = np.zeros((height, width, 3))
    for channel in range(3):
        for _ in range(6):
            fx, fy, phase = rng.uniform(0.002, 0.08), rng.uniform(0.002, 0.08), rng.uniform(0, 2 * np.pi)
            image[..., channel] += np.sin(2 * np.pi * (fx * x + fy * y) + phase)
    image += rng.normal(0, 0.4, image.shape)
    image = (image - image.min()) / (image.max() - image.min()) * 255
    return image.round().astype(np.uint8)


# ---------------------------------------------------------------------------------- the demo's figures

# The demo's GeneralizedRCNN + Preprocess on `write_reference_folder(post_nms_topk=80)` (test size 200 / 333,
# 36 regions, NMS sweep 0.5 / 0.6 / 0.7), fed each image as its uint8 BGR array. The first image is
# upscaled 2x, the second shrunk to 0.56x; for the first the sweep stops at 0.7, for the second at 0.6.
# attribute_ids is a string of digits, one per region; feature_sums: each region feature's sum.
EXPECTED = {
    (150, 100): {
        "object_ids": [13] * 36,
        "attribute_ids": "555515115151511115111151115115111111",
        "boxes_first3": [[39.13, 5.43, 116.51, 61.71], [15.6, 29.37, 93.72, 85.89], [63.66, 5.16, 143.71, 62.78]],
        "boxes_sum": 9245.06,
        "scores_first3": [0.5852, 0.5727, 0.5716],
        "feature_sums": [47.93, 48.08, 48.11, 44.68, 47.27, 47.9, 44.57, 47.57, 45.28, 48.17, 47.09, 47.69, 46.19,
                         46.86, 46.92, 46.73, 47.19, 46.69, 47.6, 48.62, 48.4, 47.72, 46.74, 43.42, 46.61, 42.62,
                         47.94, 40.2, 47.86, 47.34, 46.88, 45.62, 43.83, 43.61, 45.34, 45.25],
    },
    (480, 360): {
        "object_ids": [13] * 36,
        "attribute_ids": "515111551151515155151551515151555555",
        "boxes_first3": [[234.72, 61.5, 476.3, 256.23], [331.26, 13.12, 424.6, 168.35], [84.24, 0.52, 367.82, 188.47]],
        "boxes_sum": 25741.88,
        "scores_first3": [0.5196, 0.5144, 0.4992],
        "feature_sums": [64.77, 61.52, 70.12, 54.65, 66.44, 62.53, 70.46, 65.61, 68.5, 56.4, 67.86, 60.66, 59.39,
                         61.82, 74.71, 66.48, 67.7, 69.24, 63.25, 67.84, 63.25, 61.3, 70.77, 67.54, 69.03, 61.61,
                         67.65, 66.65, 68.97, 63.09, 66.49, 50.68, 63.36, 45.76, 52.94, 48.74],
    },
}


@pytest.fixture(scope="module")
def reference_folder(tmp_path_factory) -> Path:
    return write_reference_folder(tmp_path_factory.mktemp("frcnn-vg-finetuned"), post_nms_topk=80)


def test_the_reference_folder_with_no_setting_gives_the_demos_regions(reference_folder):
    model = FrcnnForRegionFeatures.from_pretrained(reference_folder)
    cfg = model.config  # everything from config.yaml, as the demo reads it
    assert (cfg.min_size_test, cfg.max_size_test, cfg.min_boxes, cfg.max_boxes) == (200, 333, 36, 36)
    assert (cfg.nms_thresh_test, cfg.score_threshold, cfg.rpn_post_nms_topk_test) == ([0.5, 0.6, 0.7], 0.0, 80)
    for seed, ((width, height), expected) in enumerate(EXPECTED.items()):
        (regions,) = model.extract([Image.fromarray(reference_image(width, height, seed=seed))])
        assert (regions.num_boxes, regions.image_width, regions.image_height) == (36, width, height)
        assert regions.object_ids.tolist() == expected["object_ids"]
        assert "".join(map(str, regions.attribute_ids.tolist())) == expected["attribute_ids"]
        np.testing.assert_allclose(regions.boxes[:3].numpy(), expected["boxes_first3"], atol=0.01)
        assert float(regions.boxes.sum()) == pytest.approx(expected["boxes_sum"], abs=0.05)
        np.testing.assert_allclose(regions.object_scores[:3].numpy(), expected["scores_first3"], atol=1e-4)
        np.testing.assert_allclose(regions.features.sum(1).numpy(), expected["feature_sums"], atol=0.01)


def test_the_runner_with_no_flags_keeps_the_checkpoints_settings(reference_folder, tmp_path):
    from hm_hf.synthetic.data import make_hmd
    from hm_hf.extract.cache import FeatureCache
    from hm_hf.extract.runner import cli

    make_hmd(tmp_path / "hmd", splits={"train": 2, "dev_seen": 1}, image_size=(150, 100))
    args = ["--dataset", "hmd", "--data-dir", str(tmp_path / "hmd"), "--model", str(reference_folder), "--no-progress"]
    assert cli([*args, "--output", str(tmp_path / "plain")]) == 0
    cache = FeatureCache(tmp_path / "plain")
    assert {cache.get(i).num_boxes for i in cache.ids()} == {36} and len(cache) == 3
    source = cache.source
    assert (source["min_size_test"], source["max_size_test"], source["nms_thresh_test"]) == (200, 333, [0.5, 0.6, 0.7])
    assert (source["min_boxes"], source["max_boxes"], source["score_threshold"]) == (36, 36, 0.0)
    assert cache.feature_dtype == "float16" and cache.get(next(iter(cache.ids()))).features.dtype == np.float16
    # A flag changes what it names and nothing else; a preset changes its own settings.
    assert cli([*args, "--output", str(tmp_path / "flagged"), "--max-boxes", "50", "--nms-thresholds", "0.3",
                "--feature-dtype", "float32"]) == 0  # fmt: skip
    flagged = FeatureCache(tmp_path / "flagged")
    flagged_settings = [flagged.source[k] for k in ("min_boxes", "max_boxes", "nms_thresh_test")]
    assert flagged_settings == [36, 50, [0.3]]
    assert flagged.source["min_size_test"] == 200 and flagged.feature_dtype == "float32"
    assert flagged.get(next(iter(flagged.ids()))).features.dtype == np.float32
    assert cli([*args, "--output", str(tmp_path / "bua"), "--preset", "bottom-up-attention", "--min-size", "150"]) == 0
    bua = FeatureCache(tmp_path / "bua").source
    assert (bua["min_size_test"], bua["max_size_test"], bua["min_boxes"], bua["max_boxes"]) == (150, 1000, 10, 100)
    assert (bua["score_threshold"], bua["nms_thresh_test"][0], bua["nms_thresh_test"][-1]) == (0.2, 0.3, 0.9)


# ------------------------------------------------------------------------------------------ preprocessing


def test_resizing_is_the_references_float_bilinear_interpolation():
    """The demo resizes float pixels with F.interpolate(bilinear, align_corners=False), no antialiasing."""
    model = FrcnnForRegionFeatures(FrcnnConfig.tiny(min_size_test=200, max_size_test=333))
    for width, height in ((150, 100), (480, 360)):  # upscaled 2x, shrunk 0.56x
        rgb = reference_image(width, height, seed=3)
        pixels, sizes, original = model.preprocess([Image.fromarray(rgb)])
        bgr = torch.from_numpy(rgb[:, :, ::-1].copy()).permute(2, 0, 1).float()[None]
        expected = F.interpolate(bgr, size=tuple(sizes[0].tolist()), mode="bilinear", align_corners=False)[0]
        expected = expected - torch.tensor(model.config.pixel_mean).view(3, 1, 1)
        torch.testing.assert_close(pixels[0], expected, rtol=0, atol=1e-4)
        assert original[0].tolist() == [height, width]
    # What it replaced, Pillow's antialiased resize of 8-bit pixels, is far off on the shrunk image.
    new_h, new_w = sizes[0].tolist()
    pillow = np.asarray(Image.fromarray(rgb).resize((new_w, new_h), Image.Resampling.BILINEAR), dtype=np.float32)
    ours = pixels[0].flip(0).permute(1, 2, 0).numpy() + np.array(model.config.pixel_mean[::-1], dtype=np.float32)
    assert np.abs(pillow - ours).max() > 20


def test_the_demos_yaml_settings_are_read_as_the_demo_uses_them(tmp_path):
    settings = reference_yaml(nms=(0.4,), detections=10)
    settings["roi_heads"]["nms_thresh_test"] = 0.45  # a single number is allowed, as in the demo
    settings["roi_box_head"]["pooler_type"] = "ROIAlignV2"  # read but unused by the demo: RoIPool always
    settings["pad_value"] = 1.5
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(settings))
    config = FrcnnConfig.from_reference_yaml(tmp_path / "config.yaml")
    assert (config.nms_thresh_test, config.min_boxes, config.max_boxes) == ([0.45], 10, 10)
    assert (config.pooler_type, config.pad_value, config.score_threshold) == ("ROIPool", 1.5, 0.0)
    assert config.anchor_sizes == [64.0, 128.0, 256.0, 512.0] and config.num_anchors == 12


# ------------------------------------------------------------------------------------------- bad folders


def test_the_2020_checkpoint_format_loads_with_weights_only(reference_folder, tmp_path):
    """The checkpoint is a plain state dict, as torch <= 1.5 wrote them (no zip archive): weights_only reads it."""
    state = torch.load(reference_folder / "pytorch_model.bin", weights_only=True)
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "config.yaml").write_bytes((reference_folder / "config.yaml").read_bytes())
    torch.save(OrderedDict(state), legacy / "pytorch_model.bin", _use_new_zipfile_serialization=False)
    model = FrcnnForRegionFeatures.from_pretrained(legacy)
    torch.testing.assert_close(model.roi_heads.box_predictor.cls_score.weight,
                               state["roi_heads.box_predictor.cls_score.weight"])


class _Payload:
    """Pickles as a call that would create a file: proof that nothing in a weights file gets to run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_pickled_payload_is_refused_and_never_runs(reference_folder, tmp_path):
    folder = tmp_path / "evil"
    folder.mkdir()
    (folder / "config.yaml").write_bytes((reference_folder / "config.yaml").read_bytes())
    marker = tmp_path / "payload-ran"
    state = dict(torch.load(reference_folder / "pytorch_model.bin", weights_only=True))
    state["roi_heads.box_predictor.cls_score.bias"] = _Payload(marker)
    torch.save(state, folder / "pytorch_model.bin")
    with pytest.raises(DetectorFileError, match=r"pytorch_model\.bin is not a plain PyTorch state dict"):
        FrcnnForRegionFeatures.from_pretrained(folder)
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(_Payload(marker)))  # a bare pickle, not torch's zip
    with pytest.raises(DetectorFileError, match="never runs pickled code"):
        FrcnnForRegionFeatures.from_pretrained(folder)
    assert not marker.exists()


@pytest.mark.parametrize("damage", ["truncated safetensors", "config.json", "config.yaml", "other model's weights"])
def test_a_damaged_model_folder_is_a_named_error(damage, reference_folder, tmp_path, capsys):
    from hm_hf.synthetic.data import make_hmd
    from hm_hf.extract.runner import cli

    folder = tmp_path / "model"
    if damage == "config.yaml":
        folder.mkdir()
        (folder / "config.yaml").write_text("model: [unclosed\n  - :")
        (folder / "pytorch_model.bin").write_bytes((reference_folder / "pytorch_model.bin").read_bytes())
        names = "config.yaml"
    else:
        FrcnnForRegionFeatures(FrcnnConfig.tiny()).save_pretrained(folder)
        if damage == "truncated safetensors":
            data = (folder / "model.safetensors").read_bytes()
            (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
            names = "model.safetensors"
        elif damage == "config.json":
            (folder / "config.json").write_text('{"model_type": "hm_hf_frcnn", "depth": ')
            names = "config.json"
        else:  # a valid config.json and weights that cover nothing of the detector
            from safetensors.torch import save_file

            save_file({"bert.embeddings.word_embeddings.weight": torch.zeros(4, 4)}, folder / "model.safetensors")
            names = "it is not a saved FrcnnForRegionFeatures"
    with pytest.raises(DetectorFileError, match=names):
        FrcnnForRegionFeatures.from_pretrained(folder)
    make_hmd(tmp_path / "hmd", splits={"train": 1}, image_size=(96, 64))
    code = cli(["--dataset", "hmd", "--data-dir", str(tmp_path / "hmd"), "--output", str(tmp_path / "out"),
                "--model", str(folder), "--no-progress"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and names in err and "Traceback" not in err


def test_a_file_or_missing_folder_as_the_detector_is_named_without_trying_the_hub(tmp_path, monkeypatch):
    """A file name once went to the Hub as a repo id: a minute of retries, then 'not a valid JSON file'."""
    import huggingface_hub

    def no_hub(*args, **kwargs):
        raise AssertionError("the Hub was asked")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_hub)
    FrcnnForRegionFeatures(FrcnnConfig.tiny()).save_pretrained(tmp_path / "det")
    for given, says in [(tmp_path / "det" / "model.safetensors", "is a file"), (tmp_path / "nope", "not found"),
                        ("./nope", "not found")]:
        with pytest.raises(DetectorFileError, match=f"detector '{re.escape(str(given))}' {says}: give a folder"):
            FrcnnForRegionFeatures.from_pretrained(given)


# ----------------------------------------------------------------------------------------------- images


def test_images_are_read_upright_as_the_reference_reader_does(tmp_path):
    """OpenCV's imread (the demo's reader) applies a JPEG's EXIF orientation; so does `read_image`."""
    rgb = reference_image(60, 40, seed=5)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display"
    Image.fromarray(rgb).save(tmp_path / "rotated.jpg", exif=exif.tobytes(), quality=95)
    image = read_image(tmp_path / "rotated.jpg")
    assert image.size == (40, 60) and image.mode == "RGB"
    upright = np.asarray(Image.fromarray(rgb).transpose(Image.Transpose.ROTATE_270), dtype=np.float32)
    assert np.abs(np.asarray(image, dtype=np.float32) - upright).mean() < 8  # JPEG noise only
    opaque = np.dstack([rgb, np.full((40, 60), 255, np.uint8)])
    Image.fromarray(opaque, "RGBA").save(tmp_path / "alpha.png")
    assert np.array_equal(np.asarray(read_image(tmp_path / "alpha.png")), rgb)  # as imread: colours kept
    # where pixels are not opaque, imread drops alpha but hm_hf puts them on white, as training and inference do
    faint = np.dstack([rgb, np.full((40, 60), 7, np.uint8)])
    Image.fromarray(faint, "RGBA").save(tmp_path / "faint.png")
    from hm_hf.images import load_image

    faint_read = np.asarray(read_image(tmp_path / "faint.png"))
    assert np.array_equal(faint_read, np.asarray(load_image(tmp_path / "faint.png")))
    assert faint_read.min() > 240
