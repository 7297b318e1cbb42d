"""`hm-hf extract-features`: bottom-up-attention region features for a whole data set, into a FeatureCache.

    hm-hf extract-features --dataset hmd --data-dir data/hateful_memes --output feats/hmd_frcnn
    hm-hf extract-features --dataset hmd --data-dir data/hateful_memes --output feats/hmd_bua \
        --preset bottom-up-attention                              # the settings UNITER's features came from
    accelerate launch --num_processes 4 -m hm_hf.extract.runner --dataset mmhs --data-dir data/MMHS150K \
        --output feats/mmhs_frcnn --fp16 --batch-size 8          # multi-GPU / multi-node

Settings: the detector's own (for `unc-nlp/frcnn-vg-finetuned`, its config.yaml: shortest side 800 /
longest 1333, 36 regions, the LXMERT demo's regions), then `--preset` if given (`DETECTOR_PRESETS`), then each
flag that is given; a flag not given changes nothing.

Why it is built this way:
- Images are read as the reference reads them (`modeling_frcnn.read_image`: EXIF orientation applied, so a
  rotated MMHS150K JPEG is upright; 16-bit scaled to 8), and as training and inference see them
  (`hm_hf.images.to_rgb`: transparent pixels on white).
- Image paths are read straight from the official files through `hm_hf.data.layouts`, as the builders
  read them (HMD: the `*.jsonl` annotations, official or MMF layout; MMHS150K: `MMHS150K_GT.json`,
  `splits/*_ids.txt`, `img_resized/<id>.jpg`), so extraction needs nothing but the download and takes
  exactly the ids a build can use; lines a build would skip are skipped and counted, and a path that
  leads out of the data folder is an error. Images get the builders' checks too (decoded in full,
  refused over Pillow's decompression-bomb limit), and detector output that breaks the feature-cache
  rules is counted (`invalid`) rather than stored.
- Resumable: finished ids are in the cache and are skipped; each entry records the xxh3-128 of its image
  file, and resuming into a cache whose recorded images differ from the data folder's (a cache made from
  another folder with the same ids, or images changed since) is refused before anything is extracted, as
  the old features would otherwise be kept silently under the new images' ids. Every `--flush-every`
  images a rank writes a new shard atomically (`shard-<seq>-r<rank>.safetensors`), so a run killed at any
  moment loses at most the images since its last flush and leaves no partial file; stale temporary files
  of a killed writer are removed on the next start.
- Distributed with accelerate's `PartialState`: every process lists the cache, all wait for each other,
  then each takes a disjoint slice of the sorted to-do list, so no id is ever done twice.
- The cache records the extractor, a hash of the weights and every setting that changes the output, so
  the dataset builder's fingerprint changes when any of them does, and resuming with other settings is
  refused instead of mixing two kinds of features.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import time
import warnings
from pathlib import Path

from hm_hf.cli import positive_int
from hm_hf.data.layouts import DataFilesError, command_report, dataset_images, open_image, skipped_summary
from hm_hf.fileio import atomic_write_bytes

from .cache import (FEATURE_DTYPES, INFO_FILE, SHARD_PREFIX, FeatureCache, FeatureCacheError, InvalidRegionsError,
                    RegionFeatures, file_checksum)
from .configuration_frcnn import DETECTOR_PRESETS

DEFAULT_MODEL = "unc-nlp/frcnn-vg-finetuned"
SHARD_TAG = re.compile(r"^shard-(\d{6})-r(\d{3})\.safetensors$")
EXTRACTOR = "hm_hf.extract.modeling_frcnn.FrcnnForRegionFeatures"
REPORT_PREFIX = "extract_report-"  # a run's report beside the shards: extract_report-<first shard>-r<rank>.json


# ------------------------------------------------------------------------------------------ extraction


def weights_digest(model) -> str:
    """sha256 of the state dict (names, shapes, bytes): identifies the weights wherever they came from."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        array = tensor.detach().cpu().contiguous().numpy()
        digest.update(f"{name}:{array.dtype}:{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def cache_source(model, fp16: bool) -> dict:
    """What made the features: the cache refuses to mix features made with a different source."""
    cfg = model.config
    return {
        "extractor": EXTRACTOR,
        "weights_sha256": weights_digest(model),
        "architecture": {
            k: getattr(cfg, k)
            for k in (
                "depth", "num_blocks_per_stage", "res2_out_channels", "caffe_maxpool", "res5_halve",
                "pooler_resolution", "pooler_type", "num_classes", "num_attributes", "input_format",
                "pixel_mean", "pixel_std", "anchor_sizes", "anchor_aspect_ratios",
            )
        },  # fmt: skip
        "resize": "float bilinear (F.interpolate, align_corners=False, no antialias)",
        "image_orientation": "exif",
        **cfg.inference_settings(),
        "rpn_pre_nms_topk_test": cfg.rpn_pre_nms_topk_test,
        "rpn_post_nms_topk_test": cfg.rpn_post_nms_topk_test,
        "rpn_nms_thresh": cfg.rpn_nms_thresh,
        "pad_value": cfg.pad_value,
        "fp16": fp16,
    }


def _next_sequence(cache: FeatureCache) -> int:
    seqs = [int(m.group(1)) for p in cache.shard_paths() if (m := SHARD_TAG.match(p.name))]
    return max(seqs, default=-1) + 1


def _remove_stale_temporaries(cache_dir: Path) -> list[str]:
    """Temporary files a writer killed mid-write left (never renamed, never valid): only the cache's own
    (`atomic_path` names them ``.<file>.<random>.tmp``), so a user's files in the folder are left alone."""
    removed = []
    for pattern in (f".{SHARD_PREFIX}*.tmp", f".{INFO_FILE}.*.tmp", f".{REPORT_PREFIX}*.tmp"):
        for tmp in cache_dir.glob(pattern):
            tmp.unlink(missing_ok=True)
            removed.append(tmp.name)
    return removed


def _check_cached_images(cache: FeatureCache, images: dict[str, Path], data_dir, state) -> None:
    """Refuse to resume when cached ids were computed from other image files than `images` (id -> path).

    Ids are skipped by id alone, so without this a cache made from another data folder with the same ids
    would keep that folder's features for these images. Entries with no recorded checksum (older caches,
    imported features) cannot be checked and are kept. Each process hashes its share of the images and all
    learn every share's result, so all stop together.
    """
    from accelerate.utils import gather_object

    mismatched, checked = [], 0
    for example_id in sorted(images)[state.process_index :: state.num_processes]:
        recorded = cache.image_checksum(example_id)
        if recorded is None:
            continue
        try:
            current = file_checksum(images[example_id])
        except OSError:  # unreadable now: counted as such by the builders, nothing to compare
            continue
        checked += 1
        if current != recorded:
            mismatched.append(example_id)
    if state.num_processes > 1:
        shares = gather_object([(mismatched, checked)])
        mismatched, checked = sorted(i for share, _ in shares for i in share), sum(count for _, count in shares)
    if mismatched:
        raise FeatureCacheError(
            f"{cache.path} holds features of other images: {len(mismatched)} of the {checked} cached ids checked "
            f"were extracted from image files that differ from those in {data_dir} (e.g. ids {mismatched[:5]}; "
            f"first: {images[mismatched[0]]}), so resuming would keep the other images' features. Use a new "
            f"--output folder, or delete {cache.path} and extract again"
        )


def to_record(regions, feature_dtype: str = "float16", image_xxh3: str | None = None) -> RegionFeatures:
    return RegionFeatures(
        features=regions.features.numpy().astype(feature_dtype),  # RegionFeatures checks the range
        boxes=regions.boxes.numpy(),
        image_width=regions.image_width,
        image_height=regions.image_height,
        object_ids=regions.object_ids.numpy(),
        object_scores=regions.object_scores.numpy(),
        attribute_ids=regions.attribute_ids.numpy(),
        image_xxh3=image_xxh3,
    )


def extract_features(
    dataset: str,
    data_dir,
    output,
    model=DEFAULT_MODEL,
    batch_size: int = 4,
    preset: str | None = None,
    fixed_boxes: int | None = None,
    min_boxes: int | None = None,
    max_boxes: int | None = None,
    score_threshold: float | None = None,
    nms_thresholds: list[float] | None = None,
    min_size: int | None = None,
    max_size: int | None = None,
    feature_dtype: str = "float16",
    fp16: bool = False,
    flush_every: int = 256,
    splits: list[str] | None = None,
    progress: bool = True,
) -> dict:
    """Extract region features for every image of `dataset` not yet in the cache at `output`.

    The detector's settings are its own config's, then `preset`'s (`DETECTOR_PRESETS`), then each argument
    that is not None (`fixed_boxes=N` sets both box counts). Features are stored as `feature_dtype`.

    Returns this process's counts: `total`, `cached` (already done before this run), `extracted`,
    `fallback` (images where nothing was detected: stored as one whole-image region), `missing` (no image
    file), `unreadable` (corrupt, or over the decompression-bomb limit), `invalid` (detector output that
    breaks the feature-cache rules, not stored) and `skipped_inputs` (annotation lines a build would skip,
    by kind). Run under `accelerate launch` to split the work over processes.
    """
    import torch
    from accelerate import PartialState
    from PIL import Image
    from tqdm.auto import tqdm

    from .modeling_frcnn import FrcnnForRegionFeatures

    if fixed_boxes is not None and (min_boxes is not None or max_boxes is not None):
        raise ValueError("give a fixed box count or min/max box counts, not both")
    if fixed_boxes is not None:
        min_boxes = max_boxes = fixed_boxes
    if feature_dtype not in FEATURE_DTYPES:
        raise ValueError(f"feature_dtype must be one of {FEATURE_DTYPES}, got {feature_dtype!r}")
    inputs = command_report(dataset, data_dir)
    images = dataset_images(dataset, data_dir, splits, inputs)  # bad data fails before the model loads
    # On CPU-only machines (and under `accelerate launch --cpu`) PartialState needs cpu=True to set up
    # the gloo process group; otherwise every process would think it is alone and redo all the work.
    use_cpu = not torch.cuda.is_available() or os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true")
    state = PartialState(cpu=use_cpu)
    if inputs.issues and state.is_main_process:
        print(f"extract-features: {skipped_summary(inputs)}", file=sys.stderr)
    if isinstance(model, (str, Path)):
        model = FrcnnForRegionFeatures.from_pretrained(str(model))
    model.config.update_inference(preset, min_boxes=min_boxes, max_boxes=max_boxes, score_threshold=score_threshold,
                                  nms_thresh_test=nms_thresholds, min_size_test=min_size, max_size_test=max_size)
    model = model.to(state.device).eval()
    use_fp16 = bool(fp16 and state.device.type == "cuda")
    if fp16 and not use_fp16 and state.is_main_process:
        print("extract-features: --fp16 needs a CUDA device; running in float32", file=sys.stderr)

    output = Path(output)
    source = cache_source(model, use_fp16)
    if state.is_main_process:
        output.mkdir(parents=True, exist_ok=True)
        FeatureCache.create(output, source, feature_dtype)
        _remove_stale_temporaries(output)
    state.wait_for_everyone()
    cache = FeatureCache.create(output, source, feature_dtype)  # validates the settings on every process
    done = cache.ids()
    start_seq = _next_sequence(cache)
    state.wait_for_everyone()  # everyone has listed the cache before anyone writes to it

    present = {i: p for i, p in images.items() if p.is_file()}
    _check_cached_images(cache, {i: p for i, p in present.items() if i in done}, data_dir, state)
    missing = [i for i in images if i not in present]
    todo = [i for i in present if i not in done]
    mine = todo[state.process_index :: state.num_processes]
    stats = {
        "rank": state.process_index,
        "total": len(images),
        "cached": len(set(images) & done),
        "extracted": 0,
        "fallback": 0,
        "fallback_ids": [],
        "missing": len(missing),
        "missing_ids": missing[:20],
        "unreadable": 0,
        "unreadable_ids": [],
        "invalid": 0,
        "invalid_ids": [],
        "skipped_inputs": inputs.counts(),
        "shards": [],
    }
    seq = start_seq
    pending: dict[str, RegionFeatures] = {}

    def flush():
        nonlocal seq, pending
        if pending:
            path = cache.write_shard(f"{seq:06d}-r{state.process_index:03d}", pending)
            stats["shards"].append(path.name)
            seq += 1
            pending = {}

    bar = tqdm(total=len(mine), desc=f"extract {dataset}", unit="img", disable=not (progress and state.is_main_process))
    started = time.time()
    for start in range(0, len(mine), batch_size):
        batch_ids, batch_images, checksums = [], [], {}
        for example_id in mine[start : start + batch_size]:
            with warnings.catch_warnings():  # over-limit images are refused by open_image
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                image, problem = open_image(present[example_id])  # as the reference reads it
            if problem:
                stats["unreadable"] += 1
                stats["unreadable_ids"].append(example_id)
                print(f"extract-features: {present[example_id]}: [{problem[0]}] {problem[1]}; skipped", file=sys.stderr)
                continue
            checksums[example_id] = file_checksum(present[example_id])  # recorded: see _check_cached_images
            batch_images.append(image)
            batch_ids.append(example_id)
        if batch_images:
            with torch.inference_mode():
                results = model.extract(batch_images, fp16=use_fp16)
            for example_id, regions in zip(batch_ids, results):
                try:
                    pending[example_id] = to_record(regions, feature_dtype, checksums[example_id])
                except InvalidRegionsError as err:  # e.g. NaN from an fp16 overflow: never stored
                    stats["invalid"] += 1
                    stats["invalid_ids"].append(example_id)
                    print(f"extract-features: id {example_id}: the detector's output is not valid ({err}); "
                          "not stored", file=sys.stderr)
                    continue
                stats["extracted"] += 1
                if regions.fallback:
                    stats["fallback"] += 1
                    stats["fallback_ids"].append(example_id)
        bar.update(len(mine[start : start + batch_size]))
        if len(pending) >= flush_every:
            flush()
    flush()
    bar.close()
    stats["seconds"] = round(time.time() - started, 3)
    if stats["shards"] or stats["unreadable"] or stats["invalid"]:
        report = output / f"{REPORT_PREFIX}{start_seq:06d}-r{state.process_index:03d}.json"
        atomic_write_bytes(report, json.dumps(stats, indent=2).encode())
    state.wait_for_everyone()
    return stats


# ------------------------------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hm-hf extract-features",
        description="Bottom-up-attention region features (Faster R-CNN R101-C4, Visual Genome) into a feature "
        "cache. The detector's own settings apply (unc-nlp/frcnn-vg-finetuned: shortest side 800, longest 1333, "
        "36 regions per image, as transformers' LXMERT demo), then --preset, then each flag given. Resumable; "
        "run under `accelerate launch` for several GPUs or nodes.",
    )
    parser.add_argument("--dataset", required=True, choices=["hmd", "mmhs"])
    parser.add_argument("--data-dir", required=True, help="the data set's folder as downloaded")
    parser.add_argument("--output", required=True, help="feature cache folder (created, or resumed)")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="folder or Hub id of the detector: a folder saved by "
                        "save_pretrained, or the unc-nlp/frcnn-vg-finetuned layout (config.yaml + pytorch_model.bin)")
    parser.add_argument("--batch-size", type=positive_int, default=4)
    parser.add_argument("--preset", choices=sorted(DETECTOR_PRESETS), default=None,
                        help="named settings: lxmert-demo (800/1333, 36 regions: the LXMERT / VisualBERT demos) or "
                        "bottom-up-attention (600/1000, NMS 0.3-0.9, score 0.2, 10-100 regions: UNITER's features)")
    parser.add_argument("--fixed-boxes", type=int, default=None, help="exactly N regions per image (e.g. 36)")
    parser.add_argument("--min-boxes", type=int, default=None, help="at least N regions (default: the detector's)")
    parser.add_argument("--max-boxes", type=int, default=None, help="at most N regions (default: the detector's)")
    parser.add_argument("--score-threshold", type=float, default=None,
                        help="keep regions whose best class scores at least this, within min/max (default: the "
                        "detector's; 0 for unc-nlp/frcnn-vg-finetuned)")
    parser.add_argument("--nms-thresholds", type=float, nargs="+", default=None, metavar="IOU",
                        help="NMS IoU thresholds tried in order until --min-boxes regions survive (default: the "
                        "detector's; 0.5 0.6 0.7 for unc-nlp/frcnn-vg-finetuned)")
    parser.add_argument("--min-size", type=int, default=None,
                        help="test-time shortest side (default: the detector's; 800 for unc-nlp/frcnn-vg-finetuned)")
    parser.add_argument("--max-size", type=int, default=None,
                        help="test-time longest side (default: the detector's; 1333 for unc-nlp/frcnn-vg-finetuned)")
    parser.add_argument("--feature-dtype", choices=list(FEATURE_DTYPES), default="float16",
                        help="how features are stored: float16 (half the disk and memory) or float32")
    parser.add_argument("--fp16", action="store_true", help="float16 autocast (CUDA only)")
    parser.add_argument("--flush-every", type=positive_int, default=256,
                        help="images per shard (and lost at most on a kill)")
    parser.add_argument("--splits", nargs="+", default=None, help="only these splits (default: all)")
    parser.add_argument("--no-progress", action="store_true")
    return parser


def cli(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        stats = extract_features(
            args.dataset,
            args.data_dir,
            args.output,
            model=args.model,
            batch_size=args.batch_size,
            preset=args.preset,
            fixed_boxes=args.fixed_boxes,
            min_boxes=args.min_boxes,
            max_boxes=args.max_boxes,
            score_threshold=args.score_threshold,
            nms_thresholds=args.nms_thresholds,
            min_size=args.min_size,
            max_size=args.max_size,
            feature_dtype=args.feature_dtype,
            fp16=args.fp16,
            flush_every=args.flush_every,
            splits=args.splits,
            progress=not args.no_progress,
        )
    except (DataFilesError, ValueError, OSError) as err:  # bad data folder, settings, or model not found
        print(f"extract-features: error: {err}", file=sys.stderr)
        return 2
    summary = {k: v for k, v in stats.items() if not k.endswith("_ids") and k != "shards"}
    print(json.dumps(summary))
    if stats["missing"]:
        print(
            f"extract-features: {stats['missing']} ids have no image file (first: {stats['missing_ids'][:5]})",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(cli())
