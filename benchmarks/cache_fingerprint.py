"""How much does it cost to notice that a feature-cache shard changed?

The datasets builders key their prepared data by `FeatureCache.fingerprint()`, computed every time a data
set with config "regions" is loaded. This script writes a cache the size of Hateful Memes' (12,140 images x
36 regions x 2048 float16, in shards of 256 images as `extract-features` writes them) and times, side by
side in one process:

- `hm_hf`: `FeatureCache.fingerprint()` (cache_info.json, then per shard its name, size, mtime_ns and
  safetensors header, which holds the content hash recorded when the shard was written);
- `headers only`: the previous fingerprint (headers and sizes, no mtime: misses a shard rewritten in
  place with the same shapes);
- `sha256 of every byte` and `xxh3-128 of every byte`: hashing the shards' contents, the alternative;
- `index`: listing the cache's ids (what any read does first), for scale;
- `write`: writing the shards, and the share of it that computing their content hash takes.

The files were just written, so reads come from the page cache: hashing every byte is bound by memory
bandwidth here and by the disk on a cold start (then it is slower still), while the fingerprint reads
only the headers. MMHS150K (150,000 images) costs about 12x each number.

    python benchmarks/cache_fingerprint.py                  # 12,140 images x 36 regions (1.8 GB, temporary)
    python benchmarks/cache_fingerprint.py --tiny           # smoke sizes
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import xxhash
from _common import add_common_arguments, default_output, environment, format_table, resolve_device, write_json


def _timed(function, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


def _hash_every_byte(paths, make) -> str:
    digest = make()
    for path in paths:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                digest.update(block)
    return digest.hexdigest()


def _headers_only(cache) -> str:
    digest = hashlib.sha256()
    for shard in cache.shard_paths():
        with open(shard, "rb") as f:
            digest.update(f.read(int.from_bytes(f.read(8), "little")))
        digest.update(str(shard.stat().st_size).encode())
    return digest.hexdigest()


def run(num_images: int, regions: int, shard_images: int, work: Path, repeats: int) -> tuple[list[dict], dict]:
    from hm_hf.extract.cache import FeatureCache, RegionFeatures, content_digest

    rng = np.random.default_rng(0)
    features = rng.random((regions, 2048), dtype=np.float32).astype(np.float16)
    boxes = np.tile(np.array([[0, 0, 100, 80]], np.float32), (regions, 1))
    cache = FeatureCache.create(work / "cache", {"name": "benchmark", "regions": regions})
    write_seconds = digest_seconds = 0.0
    for first in range(0, num_images, shard_images):
        records = {str(i): RegionFeatures(features, boxes, 640, 480)
                   for i in range(first, min(first + shard_images, num_images))}
        start = time.perf_counter()
        cache.write_shard(f"{first:08d}", records)  # includes the content hash
        write_seconds += time.perf_counter() - start
        tensors = {}
        for example_id, r in records.items():
            tensors.update(r.to_tensors(example_id))
        start = time.perf_counter()
        content_digest(tensors)
        digest_seconds += time.perf_counter() - start
    shards = cache.shard_paths()
    total_bytes = sum(p.stat().st_size for p in shards)
    timings = {
        "hm_hf": _timed(lambda: FeatureCache(cache.path).fingerprint(), repeats),
        "headers only": _timed(lambda: _headers_only(cache), repeats),
        "sha256 of every byte": _timed(lambda: _hash_every_byte(shards, hashlib.sha256), repeats),
        "index": _timed(lambda: FeatureCache(cache.path).ids(), repeats),
    }
    timings["xxh3-128 of every byte"] = _timed(lambda: _hash_every_byte(shards, xxhash.xxh3_128), repeats)
    full = timings["sha256 of every byte"]
    rows = [{"method": name, "seconds": seconds, "x_sha256_every_byte": seconds / full,
             "mmhs_seconds": seconds * 150_000 / num_images} for name, seconds in timings.items()]
    rows.append({"method": "write every shard (write_shard)", "seconds": write_seconds, "x_write": 1.0})
    rows.append({"method": "  of which the content hash (xxh3-128)", "seconds": digest_seconds,
                 "x_write": digest_seconds / write_seconds})
    return rows, {"shards": len(shards), "gib": total_bytes / 2**30}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_arguments(parser, "cache_fingerprint")
    parser.add_argument("--images", type=int, default=12_140, help="images in the cache (default: HMD's 12,140)")
    parser.add_argument("--regions", type=int, default=36, help="regions per image (default 36)")
    parser.add_argument("--shard-images", type=int, default=256, help="images per shard (extract-features' default)")
    parser.add_argument("--repeats", type=int, default=3, help="timings are the best of this many")
    parser.add_argument("--work-dir", default=None, help="where to write the cache (default: a temporary folder)")
    args = parser.parse_args(argv)
    device = resolve_device("cpu")  # file hashing: the device only names the result file
    if args.tiny:
        args.images, args.regions, args.shard_images, args.repeats = 40, 4, 16, 1
    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="hm_hf_fingerprint_"))
    try:
        rows, size = run(args.images, args.regions, args.shard_images, work, args.repeats)
    finally:
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)
    settings = {"images": args.images, "regions": args.regions, "shard_images": args.shard_images,
                "repeats": args.repeats, **size}
    print(f"feature cache: {args.images} images x {args.regions} regions, {size['shards']} shards, "
          f"{size['gib']:.2f} GiB (page cache warm)")
    print(format_table(rows, [("method", "method", ""), ("seconds", "seconds", ".4f"),
                              ("x_sha256_every_byte", "x sha256 all", ".4f"), ("mmhs_seconds", "MMHS s", ".2f"),
                              ("x_write", "x write", ".2f")]))
    payload = {"benchmark": "cache_fingerprint", "environment": environment(device), "settings": settings,
               "results": rows}
    write_json(default_output("cache_fingerprint", device, args.tiny, args.output), payload)
    return payload


if __name__ == "__main__":
    main()
