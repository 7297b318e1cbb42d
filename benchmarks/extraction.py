"""Region-feature extraction speed: images/s of the hm_hf Faster R-CNN R101-C4 extractor, batched.

The detector is `hm_hf.extract.modeling_frcnn.FrcnnForRegionFeatures` at the reference architecture and
test size (shorter side 600, longer side at most 1000, up to 100 regions of 2048-d) with random weights
and the box regression zeroed (random regressions explode; speed does not depend on the weights except
through how many proposals survive, which the zeroed regression keeps realistic: 300 proposals per image
into the region head, as the reference). Images are HMD-like synthetic pictures of random sizes
(400-1000 px a side), decoded before timing; `model.extract` (resize, normalise, pad, detect, select,
pool) is timed, on GPU in fp16 autocast and fp32.

From the measured rate it derives the time to extract all of Hateful Memes (12,140 images) and MMHS150K
(150,000) on one device, and with 8 devices through `accelerate launch` (the runner shards the images by
rank with no communication, so the estimate is linear: one eighth).

    python benchmarks/extraction.py --device cuda          # batch 1, 4, 8; fp16 and fp32
    python benchmarks/extraction.py --device cpu           # 2 images, batch 1, fp32 (slow: tens of s/image)
    python benchmarks/extraction.py --tiny                 # smoke test: a tiny detector at 64-96 px
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch
from PIL import Image, ImageDraw

from _common import (
    Timer,
    add_common_arguments,
    default_output,
    environment,
    format_table,
    resolve_device,
    set_threads,
    write_json,
)

DATASETS = {"HMD (12,140 images)": 12_140, "MMHS150K (150,000 images)": 150_000}


def build_detector(tiny: bool, device) -> torch.nn.Module:
    from hm_hf.extract.configuration_frcnn import FrcnnConfig
    from hm_hf.extract.modeling_frcnn import FrcnnForRegionFeatures

    torch.manual_seed(0)
    model = FrcnnForRegionFeatures(FrcnnConfig.tiny() if tiny else FrcnnConfig())
    for layer in (model.proposal_generator.rpn_head.anchor_deltas, model.roi_heads.box_predictor.bbox_pred):
        layer.weight.data.zero_()
        layer.bias.data.zero_()
    return model.to(device).eval()


def make_images(count: int, tiny: bool, seed: int = 0) -> list[Image.Image]:
    """Meme-like pictures: a noisy background, a few coloured shapes and a caption band; random sizes."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(count):
        width, height = (int(v) for v in (rng.integers(64, 97, 2) if tiny else rng.integers(400, 1001, 2)))
        pixels = rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
        image = Image.fromarray(pixels).resize((width, height), Image.Resampling.BILINEAR)
        draw = ImageDraw.Draw(image)
        for _ in range(4):
            x, y = int(rng.integers(0, width * 3 // 4)), int(rng.integers(0, height * 3 // 4))
            w, h = int(rng.integers(width // 10, width // 3)), int(rng.integers(height // 10, height // 3))
            draw.rectangle([x, y, x + w, y + h], fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
        draw.rectangle([0, height * 5 // 6, width, height], fill=(255, 255, 255))
        images.append(image)
    return images


def time_extraction(model, images, batch_size: int, fp16: bool, device, warmup: int) -> dict:
    batches = [images[i:i + batch_size] for i in range(0, len(images), batch_size)]
    for batch in batches[:warmup]:
        model.extract(batch, fp16=fp16)
    timed = batches[warmup:] or batches
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    boxes = 0
    with Timer(device) as timer:
        for batch in timed:
            boxes += sum(r.num_boxes for r in model.extract(batch, fp16=fp16))
    count = sum(len(b) for b in timed)
    row = {"batch": batch_size, "precision": "fp16" if fp16 else "fp32", "images": count,
           "seconds": timer.seconds, "images_per_s": count / timer.seconds, "boxes_per_image": boxes / count}
    if device.type == "cuda":
        row["peak_mem_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return row


def hours(images: int, rate: float, devices: int = 1) -> float:
    return images / rate / devices / 3600


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    add_common_arguments(parser, "extraction")
    parser.add_argument("--batch-sizes", help="comma-separated (default: 1,4,8 on GPU, 1 on CPU)")
    parser.add_argument("--precisions", help="fp16,fp32 (default: both on GPU, fp32 on CPU)")
    parser.add_argument("--images", type=int, help="timed images per setting (default: 48 GPU, 2 CPU)")
    parser.add_argument("--warmup", type=int, help="untimed batches first (default: 2 GPU, 0 CPU)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    set_threads(args.threads)
    device = resolve_device(args.device)
    gpu = device.type == "cuda"
    batch_sizes = [int(b) for b in (args.batch_sizes or ("1,4,8" if gpu else "1")).split(",")]
    precisions = (args.precisions or ("fp16,fp32" if gpu else "fp32")).split(",")
    num_images = args.images or (48 if gpu else (4 if args.tiny else 2))
    warmup = args.warmup if args.warmup is not None else (2 if gpu else (1 if args.tiny else 0))
    model = build_detector(args.tiny, device)
    rows = []
    for precision in precisions:
        for batch_size in batch_sizes:
            images = make_images(num_images + warmup * batch_size, args.tiny)
            rows.append(time_extraction(model, images, batch_size, precision == "fp16", device, warmup))
            print(f"  done: {precision}, batch {batch_size}", file=sys.stderr, flush=True)
    best = max(rows, key=lambda r: r["images_per_s"])
    estimates = []
    for name, count in DATASETS.items():
        estimates.append({"dataset": name, "images": count, "rate_images_per_s": best["images_per_s"],
                          "hours_1_device": hours(count, best["images_per_s"]),
                          "hours_8_devices": hours(count, best["images_per_s"], 8)})
    env = environment(device)
    cfg = model.config
    print(f"extraction: {'tiny test detector' if args.tiny else 'Faster R-CNN R101-C4 (random weights)'}, test size "
          f"{cfg.min_size_test}/{cfg.max_size_test}, {cfg.min_boxes}-{cfg.max_boxes} regions, "
          f"device {env.get('gpu', env['cpu'])}")
    columns = [("precision", "precision", ""), ("batch", "batch", ""), ("images", "images", ""),
               ("images_per_s", "images/s", ".3g"), ("boxes_per_image", "boxes/image", ".0f")]
    if gpu:
        columns.append(("peak_mem_gib", "peak GiB", ".2f"))
    print(format_table(rows, columns))
    print(f"derived from the best rate ({best['precision']}, batch {best['batch']}: "
          f"{best['images_per_s']:.3g} images/s):")
    print(format_table(estimates, [("dataset", "data set", ""), ("hours_1_device", "hours, 1 device", ".2f"),
                                   ("hours_8_devices", "hours, 8 devices", ".2f")]))
    payload = {
        "benchmark": "extraction",
        "environment": env,
        "settings": {"tiny": args.tiny, "batch_sizes": batch_sizes, "precisions": precisions, "images": num_images,
                     "warmup_batches": warmup, "min_size_test": cfg.min_size_test,
                     "max_size_test": cfg.max_size_test, "max_boxes": cfg.max_boxes},
        "results": rows,
        "estimates": estimates,
    }
    write_json(default_output("extraction", device, args.tiny, args.output), payload)
    return payload


if __name__ == "__main__":
    main()
