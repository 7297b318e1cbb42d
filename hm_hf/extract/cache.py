"""The region-feature cache: a folder of safetensors shards keyed by example id.

Why this format: safetensors is memory-mapped, needs no pickle, and a shard is one file that is written
to a temporary name and renamed, so a killed extraction never leaves a partial shard behind. Every
writer (the extractor, the importers) and every reader (the dataset builders) goes through this module.

Layout::

    <cache>/cache_info.json              which extractor / importer and settings made the cache, and the
                                         features' storage dtype ("feature_dtype": float16, or float32)
    <cache>/shard-<tag>.safetensors      tensors "<id>/features" (N x 2048, that dtype), "<id>/boxes"
                                         (N x 4 float32, x1 y1 x2 y2 in pixels of the original image),
                                         "<id>/image_size" (int32 [width, height]) and optionally
                                         "<id>/object_ids", "<id>/object_scores", "<id>/attribute_ids"
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from hm_hf.fileio import atomic_path, atomic_write_bytes

INFO_FILE = "cache_info.json"
SHARD_PREFIX = "shard-"
SHARD_SUFFIX = ".safetensors"
FEATURE_DIM = 2048
OPTIONAL_FIELDS = ("object_ids", "object_scores", "attribute_ids")
FEATURE_DTYPES = ("float16", "float32")  # float16 halves disk and memory; float32 keeps the detector's output


class FeatureCacheError(ValueError):
    """A feature cache that cannot be used as it is; the message says which file and what to do."""


@dataclass
class RegionFeatures:
    """The regions of one image."""

    features: np.ndarray  # (N, 2048) float16 or float32 (other dtypes become float32); stored as the cache's dtype
    boxes: np.ndarray  # (N, 4) float32, pixels of the original image
    image_width: int
    image_height: int
    object_ids: np.ndarray | None = None  # (N,) int64
    object_scores: np.ndarray | None = None  # (N,) float32
    attribute_ids: np.ndarray | None = None  # (N,) int64

    def __post_init__(self):
        self.features = np.asarray(self.features)
        if self.features.dtype not in (np.float16, np.float32):
            self.features = self.features.astype(np.float32)
        self.boxes = np.asarray(self.boxes, dtype=np.float32)
        n = self.features.shape[0]
        if self.features.ndim != 2 or self.boxes.shape != (n, 4):
            raise FeatureCacheError(
                f"features must be (N, D) and boxes (N, 4) with the same N; got {self.features.shape} "
                f"and {self.boxes.shape}"
            )
        for name in OPTIONAL_FIELDS:
            value = getattr(self, name)
            if value is not None:
                dtype = np.float32 if name == "object_scores" else np.int64
                setattr(self, name, np.asarray(value, dtype=dtype).reshape(n))

    @property
    def num_boxes(self) -> int:
        return int(self.features.shape[0])

    def to_tensors(self, example_id: str) -> dict[str, np.ndarray]:
        tensors = {
            f"{example_id}/features": np.ascontiguousarray(self.features),
            f"{example_id}/boxes": np.ascontiguousarray(self.boxes),
            f"{example_id}/image_size": np.array([self.image_width, self.image_height], dtype=np.int32),
        }
        for name in OPTIONAL_FIELDS:
            value = getattr(self, name)
            if value is not None:
                tensors[f"{example_id}/{name}"] = np.ascontiguousarray(value)
        return tensors


class FeatureCache:
    """Reads and writes one feature cache folder.

    >>> cache = FeatureCache.create("feats", {"name": "frcnn-vg", "max_boxes": 100})  # doctest: +SKIP
    >>> cache.write_shard("rank0-00000", {"42": RegionFeatures(feats, boxes, 640, 480)})  # doctest: +SKIP
    >>> cache.get("42").num_boxes  # doctest: +SKIP
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        info_path = self.path / INFO_FILE
        if not info_path.is_file():
            raise FeatureCacheError(
                f"{info_path} not found: {self.path} is not a feature cache. Create one with "
                "`hm-hf extract-features` or `hm-hf import-features`."
            )
        try:
            self.info = json.loads(info_path.read_text())
        except json.JSONDecodeError as err:
            raise FeatureCacheError(f"{info_path} is not valid JSON ({err}); delete the cache and rebuild it") from err
        self._index: dict[str, Path] | None = None
        self._handles: dict[Path, tuple[object, set[str]]] = {}  # shard -> (open handle, its keys)

    @classmethod
    def create(cls, path: str | os.PathLike, source: dict, feature_dtype: str = "float16") -> "FeatureCache":
        """Open the cache at `path`, creating it for `source` (the extractor/importer and its settings).

        `feature_dtype` ("float16" or "float32") is how the features are stored. An existing cache made with
        other settings or another dtype is an error: mixing features of two extractors in one cache would
        silently corrupt every model trained on it.
        """
        if feature_dtype not in FEATURE_DTYPES:
            raise FeatureCacheError(f"feature_dtype must be one of {FEATURE_DTYPES}, got {feature_dtype!r}")
        path = Path(path)
        info_path = path / INFO_FILE
        source = json.loads(json.dumps(source, sort_keys=True))  # normalise (tuples -> lists)
        if info_path.is_file():
            existing = json.loads(info_path.read_text())
            if existing.get("source") != source:
                raise FeatureCacheError(
                    f"{path} was made with {existing.get('source')}, not {source}; use another --output folder or "
                    "delete it"
                )
            stored = existing.get("feature_dtype", "float16")
            if stored != feature_dtype:
                raise FeatureCacheError(f"{path} stores {stored} features, not {feature_dtype}; use another --output "
                                        f"folder, or resume with --feature-dtype {stored}")
        else:
            payload = {"format": "hm_hf.feature_cache", "version": 1, "source": source, "feature_dtype": feature_dtype}
            atomic_write_bytes(info_path, json.dumps(payload, indent=2, sort_keys=True).encode())
        return cls(path)

    @property
    def source(self) -> dict:
        return self.info.get("source", {})

    @property
    def feature_dtype(self) -> str:
        """How the features are stored: "float16" (the default, and every cache written before the option) or
        "float32"."""
        return self.info.get("feature_dtype", "float16")

    def shard_paths(self) -> list[Path]:
        return sorted(self.path.glob(f"{SHARD_PREFIX}*{SHARD_SUFFIX}"))

    def _build_index(self) -> dict[str, Path]:
        index: dict[str, Path] = {}
        for shard in self.shard_paths():
            with safe_open(str(shard), framework="numpy") as f:
                for key in f.keys():
                    example_id, _, field = key.rpartition("/")
                    if field != "features":
                        continue
                    if example_id in index:
                        raise FeatureCacheError(
                            f"id {example_id} is in both {index[example_id].name} and {shard.name} in "
                            f"{self.path}; delete one of the two shards"
                        )
                    index[example_id] = shard
        return index

    @property
    def index(self) -> dict[str, Path]:
        if self._index is None:
            self._index = self._build_index()
        return self._index

    def ids(self) -> set[str]:
        return set(self.index)

    def __contains__(self, example_id) -> bool:
        return str(example_id) in self.index

    def __len__(self) -> int:
        return len(self.index)

    def get(self, example_id) -> RegionFeatures | None:
        """The regions of `example_id`, or None when the cache has no entry for it."""
        example_id = str(example_id)
        shard = self.index.get(example_id)
        if shard is None:
            return None
        if shard not in self._handles:
            handle = safe_open(str(shard), framework="numpy")
            self._handles[shard] = (handle, set(handle.keys()))
        handle, keys = self._handles[shard]
        width, height = handle.get_tensor(f"{example_id}/image_size").tolist()
        optional = {
            name: handle.get_tensor(f"{example_id}/{name}")
            for name in OPTIONAL_FIELDS
            if f"{example_id}/{name}" in keys
        }
        return RegionFeatures(
            features=handle.get_tensor(f"{example_id}/features"),
            boxes=handle.get_tensor(f"{example_id}/boxes"),
            image_width=int(width),
            image_height=int(height),
            **optional,
        )

    def write_shard(self, tag: str, records: dict[str, RegionFeatures]) -> Path | None:
        """Write `records` as one shard, atomically; ids already in the cache are an error."""
        if not records:
            return None
        clash = sorted(set(map(str, records)) & self.ids())
        if clash:
            raise FeatureCacheError(f"ids already in {self.path}: {clash[:5]}; they would be stored twice")
        tensors: dict[str, np.ndarray] = {}
        for example_id, regions in records.items():
            stored = regions.to_tensors(str(example_id))
            key = f"{example_id}/features"
            stored[key] = stored[key].astype(self.feature_dtype, copy=False)
            tensors.update(stored)
        path = self.path / f"{SHARD_PREFIX}{tag}{SHARD_SUFFIX}"
        if path.exists():
            raise FeatureCacheError(f"{path} exists already; pick a new shard tag")
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata={"num_images": str(len(records))})
        if self._index is not None:
            self._index.update({str(k): path for k in records})
        return path

    def fingerprint(self) -> str:
        """A hash that changes when the cache's settings or contents change, and only then.

        It covers cache_info.json and each shard's name and safetensors header (ids, shapes, byte
        offsets), which are cheap to read and change whenever the stored tensors do.
        """
        digest = hashlib.sha256(json.dumps(self.info, sort_keys=True).encode())
        for shard in self.shard_paths():
            with open(shard, "rb") as f:
                header_len = int.from_bytes(f.read(8), "little")
                header = f.read(header_len)
            digest.update(shard.name.encode())
            digest.update(hashlib.sha256(header).digest())
            digest.update(str(shard.stat().st_size).encode())
        return digest.hexdigest()[:16]


def iter_missing(cache: FeatureCache, ids: Iterable) -> list[str]:
    """The ids (as strings, in order) that the cache has no entry for."""
    have = cache.ids()
    return [str(i) for i in ids if str(i) not in have]
