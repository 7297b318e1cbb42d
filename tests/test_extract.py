"""The region-feature detector and `hm-hf extract-features`.

The layout test uses the real default config (built on the meta device: no memory, no time); everything
that runs the detector uses a tiny random one (1 block per stage, narrow, 64-96 px images) with the box
regressions zeroed, since random regressions explode.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

from hm_hf.synthetic import make_hmd, make_mmhs
from hm_hf.extract.cache import FeatureCache, FeatureCacheError, content_digest, file_checksum
from hm_hf.extract.configuration_frcnn import FrcnnConfig
from hm_hf.extract.modeling_frcnn import FrcnnForRegionFeatures, resized_size
from hm_hf.extract.runner import cli, dataset_images, extract_features

ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------------- the reference layout


def reference_layout() -> dict[str, tuple[int, ...]]:
    """Parameter names and shapes of `unc-nlp/frcnn-vg-finetuned`, derived from its architecture.

    R101-C4 (res2-res4: 3, 4, 23 bottleneck blocks, widths 64/256 doubling per stage, batch norms with
    running stats), RPN with a 512-channel hidden conv and 12 anchors (sizes 64, 128, 256, 512 x 3 ratios:
    the tensors the reference code builds from the checkpoint's config), res5 (3 blocks,
    1024 -> 2048) in the RoI head, and the box predictor: 1600 classes + background, class-specific box
    deltas, and the attribute head (class embedding 256, fc 2304 -> 512, 400 attributes + none).
    """
    shapes: dict[str, tuple[int, ...]] = {}

    def conv(prefix, out_channels, in_channels, kernel):
        shapes[f"{prefix}.weight"] = (out_channels, in_channels, kernel, kernel)
        for name in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{prefix}.norm.{name}"] = (out_channels,)

    def block(prefix, in_channels, bottleneck, out_channels):
        if in_channels != out_channels:
            conv(f"{prefix}.shortcut", out_channels, in_channels, 1)
        conv(f"{prefix}.conv1", bottleneck, in_channels, 1)
        conv(f"{prefix}.conv2", bottleneck, bottleneck, 3)
        conv(f"{prefix}.conv3", out_channels, bottleneck, 1)

    conv("backbone.stem.conv1", 64, 3, 7)
    in_channels = 64
    stages = (("res2", 3, 64, 256), ("res3", 4, 128, 512), ("res4", 23, 256, 1024))
    for stage, blocks, bottleneck, out_channels in stages:
        for i in range(blocks):
            block(f"backbone.{stage}.{i}", in_channels if i == 0 else out_channels, bottleneck, out_channels)
        in_channels = out_channels
    shapes["proposal_generator.anchor_generator.cell_anchors.0"] = (12, 4)
    rpn = "proposal_generator.rpn_head"
    shapes.update({
        f"{rpn}.conv.weight": (512, 1024, 3, 3), f"{rpn}.conv.bias": (512,),
        f"{rpn}.objectness_logits.weight": (12, 512, 1, 1), f"{rpn}.objectness_logits.bias": (12,),
        f"{rpn}.anchor_deltas.weight": (48, 512, 1, 1), f"{rpn}.anchor_deltas.bias": (48,),
    })  # fmt: skip
    for i in range(3):
        block(f"roi_heads.res5.{i}", 1024 if i == 0 else 2048, 512, 2048)
    head = "roi_heads.box_predictor"
    shapes.update({
        f"{head}.cls_score.weight": (1601, 2048), f"{head}.cls_score.bias": (1601,),
        f"{head}.bbox_pred.weight": (6400, 2048), f"{head}.bbox_pred.bias": (6400,),
        f"{head}.cls_embedding.weight": (1601, 256),
        f"{head}.fc_attr.weight": (512, 2304), f"{head}.fc_attr.bias": (512,),
        f"{head}.attr_score.weight": (401, 512), f"{head}.attr_score.bias": (401,),
    })  # fmt: skip
    return shapes


def test_default_state_dict_is_the_reference_layout():
    with torch.device("meta"):
        model = FrcnnForRegionFeatures(FrcnnConfig())
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    expected = reference_layout()
    assert sorted(set(got) - set(expected)) == []  # unexpected
    assert sorted(set(expected) - set(got)) == []  # missing
    assert {k: v for k, v in got.items() if expected[k] != v} == {}
    assert len(got) == 536
    # A checkpoint with exactly these keys (plus BatchNorm2d's counters) loads strictly.
    checkpoint = {k: torch.empty(shape, device="meta") for k, shape in expected.items()}
    checkpoint["backbone.stem.conv1.norm.num_batches_tracked"] = torch.empty((), dtype=torch.long, device="meta")
    result = model.load_state_dict(checkpoint, strict=True, assign=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert model.config.region_feature_dim == 2048
    # The checkpoint's own inference settings (its config.yaml, as the LXMERT demo runs it).
    assert (model.config.min_size_test, model.config.max_size_test) == (800, 1333)
    assert (model.config.min_boxes, model.config.max_boxes, model.config.nms_thresh_test) == (36, 36, [0.5, 0.6, 0.7])
    cells = model.proposal_generator.anchor_generator.compute_cell_anchors()
    assert sorted({round(float((c[2] - c[0]) * (c[3] - c[1])) ** 0.5) for c in cells}) == [64, 128, 256, 512]


# --------------------------------------------------------------------------------------- tiny detector


def zero_box_regression(model):
    for layer in (model.proposal_generator.rpn_head.anchor_deltas, model.roi_heads.box_predictor.bbox_pred):
        layer.weight.data.zero_()
        layer.bias.data.zero_()
    return model


def tiny_model(seed=0, **overrides) -> FrcnnForRegionFeatures:
    torch.manual_seed(seed)
    return zero_box_regression(FrcnnForRegionFeatures(FrcnnConfig.tiny(**overrides))).eval()


def noise_image(width, height, seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))


def test_resize_rule_matches_detectron2():
    assert resized_size(240, 320, 600, 1000) == (600, 800)
    assert resized_size(500, 2000, 600, 1000) == (250, 1000)  # the long side caps the scale
    assert resized_size(300, 200, 64, 96) == (96, 64)


def test_outputs_shapes_counts_and_pixel_boxes():
    model = tiny_model()
    images = [noise_image(320, 240, 1), noise_image(150, 300, 2)]
    out = model.extract(images)
    assert len(out) == 2
    for regions, image in zip(out, images):
        width, height = image.size
        n = regions.num_boxes
        assert 3 <= n <= 8
        assert regions.features.shape == (n, 128) and torch.isfinite(regions.features).all()
        assert regions.object_ids.shape == regions.object_scores.shape == regions.attribute_ids.shape == (n,)
        assert int(regions.object_ids.max()) < 20 and int(regions.attribute_ids.max()) < 7
        assert (regions.image_width, regions.image_height) == (width, height)
        boxes = regions.boxes
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
        assert (boxes[:, 2] <= width).all() and (boxes[:, 3] <= height).all()
        assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
        assert not regions.fallback
    # Boxes are in original pixels: anchors clipped at the resized border map to the ORIGINAL border
    # (the resized images are at most 96 px, so a resized-space box could never reach 300).
    assert float(out[1].boxes[:, 3].max()) == pytest.approx(300, abs=1e-3)
    assert float(out[0].boxes[:, 2].max()) == pytest.approx(320, abs=1e-3)

    model.config.min_boxes = model.config.max_boxes = 5  # the fixed-count setting (36 in real use)
    assert [r.num_boxes for r in model.extract(images)] == [5, 5]
    # Adaptive count: with every score under the threshold, exactly min_boxes are kept.
    model.config.min_boxes, model.config.max_boxes, model.config.score_threshold = 2, 8, 1.01
    assert [r.num_boxes for r in model.extract(images)] == [2, 2]


def test_nothing_detected_gives_the_whole_image():
    model = tiny_model(min_boxes=0, max_boxes=8, score_threshold=1.01)  # nothing can pass
    image = noise_image(200, 120, 3)
    (regions,) = model.extract([image])
    assert regions.fallback and regions.num_boxes == 1
    assert regions.boxes.tolist() == [[0.0, 0.0, 200.0, 120.0]]
    assert regions.features.shape == (1, 128) and torch.isfinite(regions.features).all()
    assert regions.features.abs().sum() > 0  # the pooled feature of the whole image, not a placeholder


def test_batching_pads_without_changing_sizes():
    model = tiny_model()
    a, b = noise_image(320, 240, 4), noise_image(100, 80, 5)  # resized to 64 x 85 and 64 x 80
    alone = model.extract([a])[0]
    batched, small = model.extract([a, b])
    assert (small.image_width, small.image_height) == (100, 80) and (small.boxes[:, 2] <= 100).all()
    # `a` is the larger image, so the batch pads only `b`: a's results are unchanged.
    torch.testing.assert_close(alone.boxes, batched.boxes)
    torch.testing.assert_close(alone.features, batched.features, rtol=1e-4, atol=1e-4)


def test_save_pretrained_roundtrip_is_safetensors(tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path / "m")
    assert (tmp_path / "m" / "model.safetensors").is_file()
    assert not list((tmp_path / "m").glob("*.bin"))
    again = FrcnnForRegionFeatures.from_pretrained(tmp_path / "m").eval()
    image = noise_image(160, 120, 6)
    torch.testing.assert_close(model.extract([image])[0].features, again.extract([image])[0].features)


def test_loads_the_reference_checkpoint_layout(tmp_path):
    """A folder as `unc-nlp/frcnn-vg-finetuned` ships it: nested config.yaml + pytorch_model.bin."""
    import yaml

    yaml_config = {
        "MODEL": {"PIXEL_MEAN": [102.9801, 115.9465, 122.7717], "PIXEL_STD": [1.0, 1.0, 1.0], "MAX_POOL": True},
        "RESNETS": {"DEPTH": 50, "STEM_OUT_CHANNELS": 8, "RES2_OUT_CHANNELS": 16, "WIDTH_PER_GROUP": 4,
                    "NUM_GROUPS": 1, "STRIDE_IN_1X1": True, "NORM": "BN", "OUT_FEATURES": ["res4"]},
        "PROPOSAL_GENERATOR": {"HIDDEN_CHANNELS": 16, "MIN_SIZE": 0},
        "ANCHOR_GENERATOR": {"SIZES": [[64, 128, 256, 512]], "ASPECT_RATIOS": [[0.5, 1.0, 2.0]], "OFFSET": 0.0},
        "RPN": {"NMS_THRESH": 0.7, "PRE_NMS_TOPK_TEST": 6000, "POST_NMS_TOPK_TEST": 300},
        "ROI_HEADS": {"NUM_CLASSES": 20, "SCORE_THRESH_TEST": 0.2},
        "ROI_BOX_HEAD": {"NUM_ATTRS": 7, "RES5HALVE": False, "POOLER_RESOLUTION": 14, "POOLER_TYPE": "ROIPool",
                         "CLS_AGNOSTIC_BBOX_REG": False, "ATTR": True},
        "INPUT": {"MIN_SIZE_TEST": 600, "MAX_SIZE_TEST": 1000, "FORMAT": "BGR"},
    }  # fmt: skip
    folder = tmp_path / "frcnn-vg-finetuned"
    folder.mkdir()
    (folder / "config.yaml").write_text(yaml.safe_dump(yaml_config))
    config = FrcnnConfig.from_reference_yaml(folder / "config.yaml")
    assert config.blocks_per_stage == [3, 4, 6] and config.num_classes == 20 and config.rpn_hidden_channels == 16
    torch.manual_seed(1)
    source = FrcnnForRegionFeatures(config)
    state = dict(source.state_dict())
    state["backbone.res2.0.conv1.norm.num_batches_tracked"] = torch.tensor(0)  # as saved from BatchNorm2d
    torch.save(state, folder / "pytorch_model.bin")
    loaded = FrcnnForRegionFeatures.from_pretrained(folder)
    for key, value in source.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value, msg=key)
    # A checkpoint of another layout is refused with the keys that differ.
    del state["roi_heads.box_predictor.attr_score.bias"]
    torch.save(state, folder / "pytorch_model.bin")
    with pytest.raises(ValueError, match="attr_score.bias"):
        FrcnnForRegionFeatures.from_pretrained(folder)


# ---------------------------------------------------------------------------------------------- runner


def test_image_lists_from_the_official_files(tmp_path):
    official = make_hmd(tmp_path / "hmd", splits={"train": 4, "dev_seen": 2})
    mmf = make_hmd(tmp_path / "hmd_mmf", splits={"train": 4, "dev_seen": 2}, layout="mmf")
    for folder, memes in ((tmp_path / "hmd", official), (tmp_path / "hmd_mmf", mmf)):
        images = dataset_images("hmd", folder)
        assert set(images) == {str(m.id) for rows in memes.values() for m in rows}
        assert all(p.is_file() and p.suffix == ".png" for p in images.values())
    dev = dataset_images("hmd", tmp_path / "hmd", splits=["dev_seen"])
    assert set(dev) == {str(m.id) for m in official["dev_seen"]}
    memes = make_mmhs(tmp_path / "mmhs", splits={"train": 3, "val": 2, "test": 2})
    images = dataset_images("mmhs", tmp_path / "mmhs")
    assert set(images) == {str(m.id) for rows in memes.values() for m in rows}
    assert all(p.name == f"{i}.jpg" and p.is_file() for i, p in images.items())
    (tmp_path / "empty").mkdir()
    assert cli(["--dataset", "hmd", "--data-dir", str(tmp_path / "empty"), "--output", str(tmp_path / "o"),
                "--model", "unused"]) == 2  # fmt: skip
    assert not (tmp_path / "o").exists()


N_IMAGES = 16


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A synthetic HMD folder, a saved tiny detector and a clean single-process extraction of it."""
    root = tmp_path_factory.mktemp("extract")
    memes = make_hmd(root / "hmd", splits={"train": 10, "dev_seen": 6}, image_size=(160, 120))
    ids = {str(m.id) for rows in memes.values() for m in rows}
    assert len(ids) == N_IMAGES
    tiny_model().save_pretrained(root / "model")
    stats = extract_features("hmd", root / "hmd", root / "clean", model=root / "model", batch_size=2,
                             min_boxes=3, max_boxes=8, flush_every=4, progress=False)  # fmt: skip
    assert stats["extracted"] == N_IMAGES and stats["fallback"] == 0
    return root, ids


def runner_args(root, output, *extra):
    return ["--dataset", "hmd", "--data-dir", str(root / "hmd"), "--output", str(output), "--model",
            str(root / "model"), "--min-boxes", "3", "--max-boxes", "8", "--batch-size", "2", "--no-progress",
            *extra]  # fmt: skip


def assert_same_cache(a: Path, b: Path, ids: set[str]):
    first, second = FeatureCache(a), FeatureCache(b)
    assert first.ids() == second.ids() == ids
    assert first.source == second.source
    for example_id in sorted(ids):
        x, y = first.get(example_id), second.get(example_id)
        np.testing.assert_allclose(x.boxes, y.boxes, rtol=0, atol=1e-3)
        np.testing.assert_allclose(x.features.astype(np.float32), y.features.astype(np.float32), rtol=1e-2, atol=1e-2)
        np.testing.assert_array_equal(x.object_ids, y.object_ids)
        assert (x.image_width, x.image_height) == (y.image_width, y.image_height) == (160, 120)


def stored_images(cache_dir: Path) -> int:
    """Images over all shards, from each shard's own header: a double would count twice."""
    total = 0
    for shard in FeatureCache(cache_dir).shard_paths():
        with safe_open(str(shard), framework="numpy") as f:
            total += int(f.metadata()["num_images"])
    return total


def assert_clean_folder(folder: Path):
    leftovers = [p.name for p in folder.iterdir() if p.name.startswith(".") or p.stat().st_size == 0]
    assert leftovers == []


def test_cache_contents_and_source(setup):
    root, ids = setup
    cache = FeatureCache(root / "clean")
    assert cache.ids() == ids and stored_images(root / "clean") == N_IMAGES
    regions = cache.get(sorted(ids)[0])
    assert regions.features.dtype == np.float16 and regions.features.shape[1] == 128
    assert 3 <= regions.num_boxes <= 8 and regions.attribute_ids is not None and regions.object_scores is not None
    source = cache.source
    assert source["extractor"].endswith("FrcnnForRegionFeatures") and source["min_boxes"] == 3
    assert len(source["weights_sha256"]) == 64 and source["min_size_test"] == 64
    images = dataset_images("hmd", root / "hmd")
    assert all(cache.get(i).image_xxh3 == file_checksum(images[i]) for i in ids)  # what each entry came from
    assert_clean_folder(root / "clean")
    # Re-running does nothing; other settings are refused rather than mixed into the same cache.
    fingerprint = cache.fingerprint()
    assert cli(runner_args(root, root / "clean")) == 0
    assert FeatureCache(root / "clean").fingerprint() == fingerprint
    with pytest.raises(FeatureCacheError):
        extract_features("hmd", root / "hmd", root / "clean", model=root / "model", min_boxes=4, max_boxes=8,
                         progress=False)  # fmt: skip
    assert cli(runner_args(root, root / "clean", "--nms-thresholds", "0.4")) == 2


def _drop_image_checksums(cache_dir: Path):
    """Rewrite every shard as caches written before image_xxh3 was recorded (and imported ones) are."""
    for shard in FeatureCache(cache_dir).shard_paths():
        with safe_open(str(shard), framework="numpy") as f:
            metadata = f.metadata()
        tensors = {k: v for k, v in load_file(str(shard)).items() if not k.endswith("/image_xxh3")}
        save_file(tensors, str(shard), metadata={**metadata, "content_xxh3_128": content_digest(tensors)})


def test_resuming_from_other_images_with_the_same_ids_is_refused(setup, tmp_path, capsys):
    root, ids = setup
    other = make_hmd(tmp_path / "hmd2", splits={"train": 10, "dev_seen": 6}, image_size=(160, 120), seed=7)
    assert {str(m.id) for rows in other.values() for m in rows} == ids  # same ids, other pictures
    shutil.copytree(root / "clean", tmp_path / "feats")
    shards = [p.name for p in FeatureCache(tmp_path / "feats").shard_paths()]
    with pytest.raises(FeatureCacheError, match=rf"feats holds features of other images: {N_IMAGES} of the "
                       rf"{N_IMAGES} cached ids .*hmd2.*new --output folder, or delete"):
        extract_features("hmd", tmp_path / "hmd2", tmp_path / "feats", model=root / "model", min_boxes=3,
                         max_boxes=8, progress=False)  # fmt: skip
    args = runner_args(root, tmp_path / "feats")
    args[args.index("--data-dir") + 1] = str(tmp_path / "hmd2")
    assert cli(args) == 2 and "holds features of other images" in capsys.readouterr().err
    assert [p.name for p in FeatureCache(tmp_path / "feats").shard_paths()] == shards  # nothing extracted
    # One image changed since the extraction: refused too, naming that id.
    shutil.copytree(root / "hmd", tmp_path / "hmd3")
    victim = sorted(ids)[0]
    shutil.copy(tmp_path / "hmd2" / "img" / f"{int(victim):05d}.png", tmp_path / "hmd3" / "img")
    with pytest.raises(FeatureCacheError, match=rf"1 of the {N_IMAGES} cached ids .*\['{victim}'\]"):
        extract_features("hmd", tmp_path / "hmd3", tmp_path / "feats", model=root / "model", min_boxes=3,
                         max_boxes=8, progress=False)  # fmt: skip
    # A cache without recorded checksums (written before them) still resumes: its entries cannot be checked.
    _drop_image_checksums(tmp_path / "feats")
    stats = extract_features("hmd", root / "hmd", tmp_path / "feats", model=root / "model", min_boxes=3,
                             max_boxes=8, progress=False)  # fmt: skip
    assert stats["cached"] == N_IMAGES and stats["extracted"] == 0
    assert FeatureCache(tmp_path / "feats").get(victim).image_xxh3 is None


def test_fixed_boxes_and_fallback_counted(setup, tmp_path):
    root, ids = setup
    stats = extract_features("hmd", root / "hmd", tmp_path / "fixed", model=root / "model", fixed_boxes=5,
                             splits=["dev_seen"], progress=False)  # fmt: skip
    cache = FeatureCache(tmp_path / "fixed")
    assert stats["extracted"] == 6 and {cache.get(i).num_boxes for i in cache.ids()} == {5}
    stats = extract_features("hmd", root / "hmd", tmp_path / "none", model=root / "model", min_boxes=0,
                             max_boxes=8, score_threshold=1.01, splits=["dev_seen"], progress=False)  # fmt: skip
    assert stats["fallback"] == stats["extracted"] == 6
    cache = FeatureCache(tmp_path / "none")
    assert all(cache.get(i).boxes.tolist() == [[0, 0, 160, 120]] for i in cache.ids())
    report = json.loads(next((tmp_path / "none").glob("extract_report-*.json")).read_text())
    assert report["fallback"] == 6 and len(report["fallback_ids"]) == 6


def test_mmhs_and_missing_images(tmp_path):
    memes = make_mmhs(tmp_path / "mmhs", splits={"train": 3, "val": 2, "test": 2}, image_size=(96, 64))
    ids = [str(m.id) for rows in memes.values() for m in rows]
    (tmp_path / "mmhs" / "img_resized" / f"{ids[0]}.jpg").unlink()
    model = tiny_model()
    stats = extract_features("mmhs", tmp_path / "mmhs", tmp_path / "cache", model=model, progress=False)
    assert stats["missing"] == 1 and stats["missing_ids"] == [ids[0]]
    assert FeatureCache(tmp_path / "cache").ids() == set(ids[1:])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env():
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", TQDM_DISABLE="1")
    env.pop("LOCAL_RANK", None)
    return env


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_cache(setup, tmp_path):
    root, ids = setup
    output = tmp_path / "killed"
    command = [sys.executable, "-m", "hm_hf.extract.runner", *runner_args(root, output, "--flush-every", "2")]
    process = subprocess.Popen(command, cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    try:
        while time.time() < deadline and process.poll() is None:
            if len(list(output.glob("shard-*.safetensors"))) >= 2:
                break
            time.sleep(0.02)
        assert process.poll() is None, "the run ended before it could be killed: " + process.stderr.read().decode()
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    done_before = FeatureCache(output).ids()
    assert 2 <= len(done_before) < N_IMAGES  # killed mid-run, some shards already written
    (output / ".shard-000009-r000.safetensors.x1y2.tmp").write_bytes(b"half a shard")  # a kill mid-write
    (output / ".my-notes.tmp").write_text("a user's file in the output folder")
    stats = extract_features("hmd", root / "hmd", output, model=root / "model", batch_size=2, min_boxes=3,
                             max_boxes=8, flush_every=2, progress=False)  # fmt: skip
    assert stats["cached"] == len(done_before)
    assert stats["extracted"] == N_IMAGES - len(done_before)  # finished work skipped, nothing redone
    assert stored_images(output) == N_IMAGES  # no id stored twice
    assert (output / ".my-notes.tmp").read_text() == "a user's file in the output folder"  # not the cache's
    (output / ".my-notes.tmp").unlink()
    assert_clean_folder(output)  # no temporary or empty file left behind
    assert_same_cache(root / "clean", output, ids)


def _run_two_processes(args: list[str]):
    """The runner in two CPU processes with the environment `accelerate launch --num_processes 2 --cpu` (or
    torchrun) sets: (the processes, their (stdout, stderr))."""
    command = [sys.executable, "-m", "hm_hf.extract.runner", *args]
    port = str(_free_port())
    workers = []
    for rank in range(2):
        env = dict(_env(), RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", LOCAL_WORLD_SIZE="2",
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=port, ACCELERATE_USE_CPU="true")  # fmt: skip
        workers.append(subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    return workers, [w.communicate(timeout=300) for w in workers]


@pytest.mark.slow
def test_two_processes_give_the_same_cache(setup, tmp_path):
    """Two CPU processes with the environment `accelerate launch --num_processes 2 --cpu` (or torchrun) sets."""
    root, ids = setup
    output = tmp_path / "two"
    workers, outputs = _run_two_processes(runner_args(root, output, "--flush-every", "4"))
    for worker, (_, err) in zip(workers, outputs):
        assert worker.returncode == 0, err.decode()[-3000:]
    per_rank = [json.loads(out.decode().strip().splitlines()[-1]) for out, _ in outputs]
    assert sorted(s["rank"] for s in per_rank) == [0, 1]
    assert sum(s["extracted"] for s in per_rank) == N_IMAGES and all(s["extracted"] > 0 for s in per_rank)
    ranks = {p.name.rsplit("-r", 1)[1][:3] for p in FeatureCache(output).shard_paths()}
    assert ranks == {"000", "001"}  # both processes wrote their own shards
    assert stored_images(output) == N_IMAGES  # disjoint shares: no id done twice
    assert_clean_folder(output)
    assert_same_cache(root / "clean", output, ids)


@pytest.mark.slow
def test_two_processes_share_the_image_check_and_both_refuse(setup, tmp_path):
    """Each process hashes half the cached images; one changed image, in either half, stops both."""
    root, ids = setup
    shutil.copytree(root / "hmd", tmp_path / "hmd")
    shutil.copytree(root / "clean", tmp_path / "feats")
    shards = [p.name for p in FeatureCache(tmp_path / "feats").shard_paths()]
    changed = sorted(ids)[1]  # checked by the second process alone
    image = tmp_path / "hmd" / "img" / f"{int(changed):05d}.png"
    with Image.open(image) as picture:
        picture.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(image)
    args = runner_args(root, tmp_path / "feats")
    args[args.index("--data-dir") + 1] = str(tmp_path / "hmd")
    workers, outputs = _run_two_processes(args)
    for worker, (_, err) in zip(workers, outputs):
        assert worker.returncode == 2, err.decode()[-3000:]
        assert f"1 of the {N_IMAGES} cached ids checked" in err.decode() and f"ids ['{changed}']" in err.decode()
    assert [p.name for p in FeatureCache(tmp_path / "feats").shard_paths()] == shards  # nothing extracted
