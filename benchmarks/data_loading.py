"""Data loading: rows/s from the hm_hf feature cache through `datasets` vs MMF-style per-image .npy files.

Both loaders feed the same collator (`MemeCollator`: tokenise, pad regions, masks, normalised boxes) and
the same `torch.utils.data.DataLoader` settings (shuffled, batch 128 by default, the recipes' default of
4 workers and also 0 workers); only the storage differs:

  hm_hf     `load_hmd(..., config_name="regions", feature_cache=...)` (Arrow, memory-mapped; float16
            features) read through `RegionRowsDataset` (one Arrow slice per batch, zero-copy rows), as
            `recipes/train_peft.py` does;
  hm_hf-fp16  the same with `MemeCollator(region_dtype="float16")`, what fp16/bf16 training uses: the
            features stay in the cache's float16 (no conversion on the CPU, half the bytes between workers
            and to the GPU; the model's autocast casts them on the device);
  npy       MMF's layout: one `<id>.npy` (N x 2048 float32, as MMF stores them) plus one small info file
            per image, opened per row by a map-style Dataset (MMF's `_info.npy` is a pickled dict; this
            benchmark writes the same fields as a plain float32 array so nothing is unpickled; the cost of
            opening a second small file per row is the same).

The synthetic data (default 2,000 images x 100 regions of 2048-d) is written to a temporary folder (or
--work-dir, reused when present); both stores are read once before timing, so both come from the page
cache (what a second epoch sees). Peak memory of the loader (this process + its workers) is sampled
while it runs: RSS counts memory-mapped pages in every process that touched them, PSS shares them out.

When a train_step result for a GPU exists (benchmarks/results/train_step_cuda.json) the table also says
how the loader's rate compares with hm_hf's full fine-tuning step there (the loader must keep up; the
hm_hf-fp16 row is the loader of that fp16 step).

    python benchmarks/data_loading.py                    # 2,000 x 100 regions, batch 128, workers 0 and 4
    python benchmarks/data_loading.py --tiny             # smoke test
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from _common import (
    RESULTS_DIR,
    PeakRSS,
    add_common_arguments,
    default_output,
    environment,
    format_table,
    resolve_device,
    set_threads,
    write_json,
)

FEATURE_DIM = 2048


# ------------------------------------------------------------------------------------------ data set


def prepare(work: Path, num_images: int, regions: int, variable: bool, dim: int, seed: int = 0) -> dict:
    """Write (or reuse) the synthetic HMD folder, its hm_hf feature cache and the MMF-style .npy files."""
    from hm_hf.synthetic import make_hmd
    from hm_hf.extract.cache import FeatureCache, RegionFeatures

    marker = work / "prepared.json"
    settings = {"num_images": num_images, "regions": regions, "variable": variable, "dim": dim, "seed": seed}
    if marker.is_file() and json.loads(marker.read_text()) == settings:
        return settings
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    memes = make_hmd(work / "hmd", splits={"train": num_images}, seed=seed, image_size=(48, 32))["train"]
    cache = FeatureCache.create(work / "cache", {"name": "benchmark", "dim": dim, "seed": seed})
    npy_dir = work / "npy"
    npy_dir.mkdir()
    rng = np.random.default_rng(seed)
    records = {}
    for n, meme in enumerate(memes):
        count = int(rng.integers(10 if regions >= 10 else 1, regions + 1)) if variable else regions
        features = np.maximum(rng.standard_normal((count, dim), dtype=np.float32), 0.0)
        x1 = rng.uniform(0, 400, count).astype(np.float32)
        y1 = rng.uniform(0, 300, count).astype(np.float32)
        boxes = np.stack([x1, y1, x1 + rng.uniform(10, 200, count), y1 + rng.uniform(10, 200, count)], 1)
        boxes = boxes.astype(np.float32)
        width, height = 640, 480
        records[str(meme.id)] = RegionFeatures(features, boxes, width, height)
        # MMF-style pair of files: features as float32, and the info (width, height, count, then the boxes)
        np.save(npy_dir / f"{meme.id:05d}.npy", features)
        info = np.concatenate([np.array([[width, height, count, 0]], dtype=np.float32), boxes])
        np.save(npy_dir / f"{meme.id:05d}_info.npy", info)
        if len(records) == 250 or n == len(memes) - 1:
            cache.write_shard(f"bench-{n:06d}", records)
            records = {}
    marker.write_text(json.dumps(settings))
    return settings


def load_hm_hf_split(work: Path):
    from hm_hf.data.loading import load_hmd

    ds = load_hmd(work / "hmd", cache_dir=work / "hf_cache", config_name="regions", feature_cache=work / "cache")
    return ds["train"].remove_columns("image")  # nothing reads the pixels, as in training


def tokenizer_for(work: Path, texts: list[str]):
    from hm_hf.text.tokenizer import train_wordpiece_tokenizer

    return train_wordpiece_tokenizer(texts, work / "tokenizer")


class NpyFeatureDataset(torch.utils.data.Dataset):
    """MMF-style map-style data set: annotations in memory, two .npy files opened per row."""

    def __init__(self, annotations: list[dict], npy_dir: Path):
        self.annotations = annotations
        self.npy_dir = Path(npy_dir)

    def __len__(self) -> int:
        return len(self.annotations)

    def __getitem__(self, index: int) -> dict:
        item = self.annotations[index]
        stem = self.npy_dir / f"{item['id']:05d}"
        features = np.load(f"{stem}.npy")
        info = np.load(f"{stem}_info.npy")
        width, height, count = (int(v) for v in info[0, :3])
        return {"id": item["id"], "text": item["text"], "label": item["label"], "region_features": features,
                "boxes": info[1:count + 1], "image_width": width, "image_height": height}


def read_annotations(work: Path) -> list[dict]:
    with open(work / "hmd" / "train.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


# ------------------------------------------------------------------------------------------ timing


def time_loader(dataset, collator, batch_size: int, workers: int, epochs: int, max_batches: int | None) -> dict:
    """Rows/s over whole epochs (worker start-up included, as each epoch of a training run pays it)."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers,
                                         collate_fn=collator, generator=torch.Generator().manual_seed(0))
    rows = 0
    checksum = 0.0
    with PeakRSS() as memory:
        start = time.perf_counter()
        for _ in range(epochs):
            for i, batch in enumerate(loader):
                rows += batch["visual_embeds"].shape[0]
                checksum += float(batch["visual_attention_mask"].sum())
                if max_batches and i + 1 >= max_batches:
                    break
        seconds = time.perf_counter() - start
    return {"rows": rows, "seconds": seconds, "samples_per_s": rows / seconds, "regions_seen": checksum,
            **memory.as_dict()}


def gpu_step_rate(path: Path) -> dict | None:
    """hm_hf's full fine-tuning rate (fixed and padded batches) from a GPU train_step result, if any."""
    if not path.is_file():
        return None
    payload = json.loads(path.read_text())
    rates = {r["mode"]: r["samples_per_s"] for r in payload.get("results", [])
             if r["impl"] == "hm_hf" and r["method"] == "full"}
    return {"gpu": payload["environment"].get("gpu"), "samples_per_s": rates} if rates else None


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    add_common_arguments(parser, "data_loading")
    parser.add_argument("--num-images", type=int, default=2000)
    parser.add_argument("--regions", type=int, default=100, help="regions per image (the maximum with --variable)")
    parser.add_argument("--variable", action="store_true", help="10..regions regions per image instead of all")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", default="0,4", help="DataLoader worker counts to time (recipes use 4)")
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs per loader")
    parser.add_argument("--max-length", type=int, default=128, help="tokenizer max_length (recipes: 128)")
    parser.add_argument("--gpu-step-json", default=str(RESULTS_DIR / "train_step_cuda.json"),
                        help="train_step result whose hm_hf full fine-tuning rate the loader must keep up with")
    parser.add_argument("--work-dir", help="keep the synthetic data here and reuse it (default: a temp folder)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    set_threads(args.threads)
    device = resolve_device(args.device)  # names the machine (and the result file); loading runs on its CPU
    dim = FEATURE_DIM
    if args.tiny:
        args.num_images, args.regions, args.batch_size, args.epochs = 24, 6, 8, 1
        args.workers = ",".join(w for w in args.workers.split(",") if int(w) <= 1) or "0"
    workers = [int(w) for w in args.workers.split(",") if w != ""]
    temp = None
    if args.work_dir:
        work = Path(args.work_dir)
    else:
        temp = tempfile.mkdtemp(prefix="hm_hf_bench_loading_")
        work = Path(temp)
    try:
        start = time.perf_counter()
        settings = prepare(work / "data", args.num_images, args.regions, args.variable, dim)
        split = load_hm_hf_split(work / "data")
        prepare_seconds = time.perf_counter() - start
        annotations = read_annotations(work / "data")
        if len(split) != len(annotations):
            raise RuntimeError(f"the hm_hf split has {len(split)} rows, the annotations {len(annotations)}")
        tokenizer = tokenizer_for(work / "data", [a["text"] for a in annotations])
        from hm_hf.data.collator import MemeCollator
        from hm_hf.data.torch_dataset import RegionRowsDataset

        collator = MemeCollator(tokenizer=tokenizer, max_length=args.max_length, use_regions=True,
                                max_regions=args.regions)
        half_collator = dataclasses.replace(collator, region_dtype="float16")
        hm_rows = RegionRowsDataset(split)
        loaders = {"hm_hf": (hm_rows, collator),
                   "npy": (NpyFeatureDataset(annotations, work / "data" / "npy"), collator),
                   "hm_hf-fp16": (hm_rows, half_collator)}
        for dataset, _ in list(loaders.values())[:2]:  # warm the page cache for both stores
            time_loader(dataset, collator, args.batch_size, 0, 1, None)
        rows = []
        for w in workers:
            for name, (dataset, collate) in loaders.items():
                result = time_loader(dataset, collate, args.batch_size, w, args.epochs, None)
                rows.append({"loader": name, "workers": w, "batch": args.batch_size, **result})
                print(f"  done: {name}, {w} workers", file=sys.stderr, flush=True)
        for w in workers:
            pair = {r["loader"]: r for r in rows if r["workers"] == w}
            for row in pair.values():
                row["speedup_vs_npy"] = row["samples_per_s"] / pair["npy"]["samples_per_s"]
            if len({r["regions_seen"] for r in pair.values()}) != 1:
                raise RuntimeError("the two loaders did not deliver the same regions")
        gpu = gpu_step_rate(Path(args.gpu_step_json))
        if gpu:
            for row in rows:
                row["vs_gpu_step_fixed"] = row["samples_per_s"] / gpu["samples_per_s"].get("fixed", float("nan"))
        disk = {name: sum(f.stat().st_size for f in (work / "data" / sub).rglob("*") if f.is_file()) / 2**20
                for name, sub in (("hm_hf_cache", "cache"), ("hm_hf_arrow", "hf_cache"), ("npy", "npy"))}
    finally:
        if temp:
            shutil.rmtree(temp, ignore_errors=True)

    env = environment(device)
    print(f"data loading: {settings['num_images']} images x {'up to ' if args.variable else ''}{args.regions} "
          f"regions x {dim}-d, batch {args.batch_size}, {args.epochs} epoch(s) per loader, CPU {env['cpu']} "
          f"({env['cpu_cores']} cores); disk MiB: " + ", ".join(f"{k} {v:.0f}" for k, v in disk.items()))
    columns = [("loader", "loader", ""), ("workers", "workers", ""), ("samples_per_s", "samples/s", ".0f"),
               ("speedup_vs_npy", "x npy", ".2f"), ("peak_rss_mib", "peak RSS MiB", ".0f"),
               ("peak_pss_mib", "peak PSS MiB", ".0f"), ("baseline_rss_mib", "RSS before", ".0f")]
    if gpu:
        columns.append(("vs_gpu_step_fixed", "x GPU step", ".2f"))
        print(f"GPU step (hm_hf full fine-tuning, {gpu['gpu']}): {gpu['samples_per_s']}")
    print(format_table(rows, columns))
    payload = {
        "benchmark": "data_loading",
        "environment": env,
        "settings": {**settings, "batch_size": args.batch_size, "workers": workers, "epochs": args.epochs,
                     "max_length": args.max_length, "tiny": args.tiny},
        "prepare_seconds": prepare_seconds,
        "disk_mib": disk,
        "gpu_step": gpu,
        "results": rows,
    }
    write_json(default_output("data_loading", device, args.tiny, args.output), payload)
    return payload


if __name__ == "__main__":
    main()
