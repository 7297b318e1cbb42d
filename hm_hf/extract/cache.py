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
                                         "<id>/object_ids", "<id>/object_scores", "<id>/attribute_ids",
                                         "<id>/image_xxh3" (uint8 [16]: xxh3-128 of the image file's
                                         bytes; written by the extractor, absent from imported features
                                         and older caches); metadata: num_images, content_xxh3_128 (of
                                         the tensors)

Every entry obeys the rules of `hm_hf.extract.validation`: checked when a `RegionFeatures` is made (so
nothing invalid is written) and again when one is read (so a shard damaged or rewritten later is refused
with a sentence naming the shard and id, not used).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import xxhash
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from hm_hf.fileio import JsonInputError, atomic_path, atomic_write_bytes, parse_json

from . import validation

INFO_FILE = "cache_info.json"
SHARD_PREFIX = "shard-"
SHARD_SUFFIX = ".safetensors"
FEATURE_DIM = 2048
OPTIONAL_FIELDS = ("object_ids", "object_scores", "attribute_ids")  # per region
IMAGE_CHECKSUM = "image_xxh3"  # per image, optional: see RegionFeatures.image_xxh3
FEATURE_DTYPES = ("float16", "float32")  # float16 halves disk and memory; float32 keeps the detector's output
MAX_HEADER_BYTES = 100_000_000  # safetensors' own limit on a header


class FeatureCacheError(ValueError):
    """A feature cache that cannot be used as it is; the message says which file and what to do."""


class InvalidRegionsError(FeatureCacheError):
    """Region features that break a rule of `hm_hf.extract.validation`; the message says which."""


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
    # xxh3-128 (32 hex digits) of the image file the regions were computed from, or None (imported features,
    # caches written before it was recorded): features are joined by id, so a cache made from another data
    # folder with the same ids (or an image changed since) is told apart from the image's own features by it.
    image_xxh3: str | None = None

    def __post_init__(self):
        source = self.features
        try:
            with np.errstate(over="ignore", invalid="ignore"):
                features = np.asarray(source)
                if features.dtype not in (np.float16, np.float32):  # kept as given; other dtypes become float32
                    features = features.astype(np.float32)
                self.features = features
                self.boxes = np.asarray(self.boxes, dtype=np.float32)
        except (TypeError, ValueError) as err:
            raise InvalidRegionsError(f"features and boxes must be numeric arrays ({err})") from None
        optional = {name: getattr(self, name) for name in OPTIONAL_FIELDS}
        problem = validation.region_problem(self.features, self.boxes, self.image_width, self.image_height,
                                            optional, source_features=source)
        if problem is None and self.image_xxh3 is not None:
            problem = validation.image_checksum_problem(self.image_xxh3)
        if problem:
            raise InvalidRegionsError(problem)
        self.image_width, self.image_height = int(self.image_width), int(self.image_height)
        n = self.features.shape[0]
        for name, value in optional.items():
            if value is not None:
                dtype = np.float32 if name == "object_scores" else np.int64
                try:
                    setattr(self, name, np.asarray(value, dtype=dtype).reshape(n))
                except (TypeError, ValueError) as err:
                    raise InvalidRegionsError(f"{name} must be {n} {np.dtype(dtype).name} values ({err})") from None

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
        if self.image_xxh3 is not None:
            tensors[f"{example_id}/{IMAGE_CHECKSUM}"] = np.frombuffer(bytes.fromhex(self.image_xxh3), np.uint8).copy()
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
        self.info = _read_info(info_path)
        self._index: dict[str, Path] | None = None
        self._checksummed: set[str] = set()  # ids whose entry records image_xxh3 (filled with the index)
        self._handles: dict[Path, tuple[object, set[str]]] = {}  # shard -> (open handle, its keys)
        self._verified: dict[Path, str | None] = {}  # shard -> why its contents are damaged (None: they are not)

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
            existing = _read_info(info_path)
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

    def _open(self, shard: Path):
        try:
            return safe_open(str(shard), framework="numpy")
        except (SafetensorError, OSError) as err:
            raise FeatureCacheError(_damaged(shard, err)) from None

    def _build_index(self) -> dict[str, Path]:
        index: dict[str, Path] = {}
        self._checksummed = set()
        for shard in self.shard_paths():
            with self._open(shard) as f:
                for key in f.keys():
                    example_id, _, field = key.rpartition("/")
                    if field == IMAGE_CHECKSUM:
                        self._checksummed.add(example_id)
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

    def has_image_checksum(self, example_id) -> bool:
        """Whether the entry of `example_id` records its image file's checksum (from the shard headers: no
        tensor is read), so that callers hash an image only when there is something to compare it with."""
        return str(example_id) in self.index and str(example_id) in self._checksummed

    def _entry(self, example_id: str):
        """(shard, open handle, the shard's keys) of `example_id`, or None when the cache has no entry."""
        shard = self.index.get(example_id)
        if shard is None:
            return None
        if shard not in self._handles:
            handle = self._open(shard)
            self._handles[shard] = (handle, set(handle.keys()))
        return (shard, *self._handles[shard])

    def _damage(self, shard: Path, handle, keys) -> str | None:
        """Why `shard`'s tensors are not those its writer recorded the xxh3-128 of (`content_digest`), or None:
        checked when its first entry is read, as a bit flipped on disk gives values the rules cannot tell from
        real ones. One tensor is held at a time; a shard without a recorded digest is not checked."""
        recorded = (handle.metadata() or {}).get("content_xxh3_128")
        if recorded is None or _digest(sorted(keys), lambda name: _get_tensor(handle, shard, name)) == recorded:
            return None
        return _damaged(shard, "its contents do not match the checksum recorded when it was written")

    def image_checksum(self, example_id) -> str | None:
        """The recorded xxh3-128 of the image file `example_id`'s regions were computed from (32 hex digits),
        or None (no entry, or none recorded); reads that one small tensor, not the features."""
        example_id = str(example_id)
        if not self.has_image_checksum(example_id):
            return None
        shard, handle, _ = self._entry(example_id)
        return _checksum_hex(_get_tensor(handle, shard, f"{example_id}/{IMAGE_CHECKSUM}"),
                             f"id {example_id} in {shard}")

    def get(self, example_id) -> RegionFeatures | None:
        """The regions of `example_id`, or None when the cache has no entry for it.

        An entry that is incomplete or breaks the rules of `hm_hf.extract.validation` raises
        `InvalidRegionsError`, naming the shard and the id.
        """
        example_id = str(example_id)
        entry = self._entry(example_id)
        if entry is None:
            return None
        shard, handle, keys = entry
        if shard not in self._verified:  # (once: every later entry of a damaged shard gets the same error)
            self._verified[shard] = self._damage(shard, handle, keys)
        if self._verified[shard]:
            raise FeatureCacheError(self._verified[shard])
        where = f"id {example_id} in {shard}"
        absent = [name for name in ("boxes", "image_size") if f"{example_id}/{name}" not in keys]
        if absent:
            raise InvalidRegionsError(f"{where} has no {' or '.join(absent)}; the shard is damaged: delete it "
                                      "and re-run the command that made the cache")
        tensors = {name: _get_tensor(handle, shard, f"{example_id}/{name}")
                   for name in ("features", "boxes", "image_size", *OPTIONAL_FIELDS) if f"{example_id}/{name}" in keys}
        if f"{example_id}/{IMAGE_CHECKSUM}" in keys:
            tensors[IMAGE_CHECKSUM] = _checksum_hex(_get_tensor(handle, shard, f"{example_id}/{IMAGE_CHECKSUM}"), where)
        size = tensors.pop("image_size")
        if size.shape != (2,) or not np.issubdtype(size.dtype, np.integer):
            raise InvalidRegionsError(f"{where}: image_size must be 2 whole numbers [width, height], got "
                                      f"{size.dtype} {size.shape}")
        width, height = size.tolist()
        try:
            regions = RegionFeatures(image_width=width, image_height=height, **tensors)
        except InvalidRegionsError as err:
            raise InvalidRegionsError(f"{where}: {err}") from None
        if tensors["features"].dtype.kind != "f":  # an entry written around write_shard (as int8, bool, ...)
            raise InvalidRegionsError(f"{where}: features stored as {tensors['features'].dtype}, not floating "
                                      "point; the shard was not written by hm_hf: delete it and re-run the command "
                                      "that made the cache")
        problem = validation.storage_problem(regions, dtype=self.feature_dtype)
        if problem:  # e.g. float32 values beyond a float16 cache's range
            raise InvalidRegionsError(f"{where}: {problem}")
        return regions

    def check_storable(self, regions: RegionFeatures, example_id) -> None:
        """Raise `InvalidRegionsError` when valid `regions` cannot be stored as this cache's dtype (float32
        values beyond float16's range would become inf), so writers can say which input file it was."""
        problem = validation.storage_problem(regions, dtype=self.feature_dtype)
        if problem:
            raise InvalidRegionsError(f"id {example_id}: {problem}")

    def write_shard(self, tag: str, records: dict[str, RegionFeatures]) -> Path | None:
        """Write `records` as one shard, atomically; ids already in the cache are an error."""
        if not records:
            return None
        clash = sorted(set(map(str, records)) & self.ids())
        if clash:
            raise FeatureCacheError(f"ids already in {self.path}: {clash[:5]}; they would be stored twice")
        tensors: dict[str, np.ndarray] = {}
        for example_id, regions in records.items():
            self.check_storable(regions, example_id)
            stored = regions.to_tensors(str(example_id))
            key = f"{example_id}/features"
            stored[key] = stored[key].astype(self.feature_dtype, copy=False)
            tensors.update(stored)
        path = self.path / f"{SHARD_PREFIX}{tag}{SHARD_SUFFIX}"
        if path.exists():
            raise FeatureCacheError(f"{path} exists already; pick a new shard tag")
        metadata = {"num_images": str(len(records)), "content_xxh3_128": content_digest(tensors)}
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata=metadata)
        if self._index is not None:
            self._index.update({str(k): path for k in records})
            self._checksummed.update(str(k) for k, regions in records.items() if regions.image_xxh3 is not None)
        return path

    def fingerprint(self) -> str:
        """A hash that changes when the cache's settings or contents change, and only then.

        It covers cache_info.json and, per shard, its name, size, mtime_ns and safetensors header (ids,
        shapes, byte offsets, and the content hash recorded when hm_hf wrote it). Reading the headers and
        stat-ing the shards costs milliseconds where hashing every byte costs seconds to minutes (see
        benchmarks/README.md); a shard rewritten in place gets a new mtime, so it is noticed too. Copying
        the cache without keeping mtimes (`cp -r`, not `cp -a` / `rsync -a`) therefore rebuilds a data set
        once.
        """
        digest = hashlib.sha256(json.dumps(self.info, sort_keys=True).encode())
        for shard in self.shard_paths():
            stat = shard.stat()
            digest.update(f"{shard.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
            digest.update(hashlib.sha256(_read_header(shard, stat.st_size)).digest())
        return digest.hexdigest()[:16]


def content_digest(tensors: dict[str, np.ndarray]) -> str:
    """xxh3-128 over the names, dtypes, shapes and bytes of a shard's tensors (recorded in its metadata).

    xxh3 rather than sha256: it is a checksum against accidents, not a signature, and hashes at memory speed
    (sha256 took 59% of the time of writing a shard, xxh3 a tenth of that; benchmarks/cache_fingerprint.py).
    """
    return _digest(sorted(tensors), tensors.__getitem__)


def _digest(names, array_of) -> str:
    """`content_digest` of the tensors `names` (sorted), each fetched by `array_of(name)` only when hashed."""
    digest = xxhash.xxh3_128()
    for name in names:
        array = np.ascontiguousarray(array_of(name))
        digest.update(f"{name}:{array.dtype.str}:{array.shape}".encode())
        digest.update(array.data)
    return digest.hexdigest()


def file_checksum(path) -> str:
    """xxh3-128 (32 hex digits) of a file's bytes: what `RegionFeatures.image_xxh3` records of an image."""
    digest = xxhash.xxh3_128()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _get_tensor(handle, shard: Path, key: str) -> np.ndarray:
    try:
        return handle.get_tensor(key)
    except SafetensorError as err:
        raise FeatureCacheError(_damaged(shard, err)) from None


def _checksum_hex(stored: np.ndarray, where: str) -> str:
    problem = validation.image_checksum_problem(stored)
    if problem:
        raise InvalidRegionsError(f"{where}: {problem}; the shard was not written by hm_hf: delete it and re-run "
                                  "the command that made the cache")
    return stored.tobytes().hex()


def _damaged(shard: Path, err) -> str:
    return (f"{shard} is not a readable safetensors shard ({err}): it was damaged after it was written. Delete "
            "it and re-run the command that made the cache (extract-features and import-features resume and "
            "make its ids again)")


def _read_header(shard: Path, size: int) -> bytes:
    """The safetensors header of `shard` (8-byte length + JSON), refusing a length the file cannot hold.

    Only the length is checked here (the fingerprint must stay cheap: parsing every header would cost 40x
    more); the index, built before anything is read from the cache, lets safetensors check the rest.
    """
    with open(shard, "rb") as f:
        prefix = f.read(8)
        length = int.from_bytes(prefix, "little") if len(prefix) == 8 else -1
        if not 0 < length <= min(MAX_HEADER_BYTES, size - 8):
            raise FeatureCacheError(_damaged(shard, f"header length {length} for a file of {size} bytes"))
        return f.read(length)


def _read_info(info_path: Path) -> dict:
    try:
        info = parse_json(info_path.read_bytes())
    except JsonInputError as err:
        raise FeatureCacheError(f"{info_path} is not usable ({err}); delete the cache and make it again") from None
    if not isinstance(info, dict):
        raise FeatureCacheError(f"{info_path} must hold a JSON object; delete the cache and make it again")
    if info.get("feature_dtype", "float16") not in FEATURE_DTYPES:
        raise FeatureCacheError(f"{info_path}: feature_dtype {info['feature_dtype']!r} is not one of "
                                f"{', '.join(FEATURE_DTYPES)}; the file was edited or damaged: restore it, or delete "
                                "the cache and make it again")
    return info


def iter_missing(cache: FeatureCache, ids: Iterable) -> list[str]:
    """The ids (as strings, in order) that the cache has no entry for."""
    have = cache.ids()
    return [str(i) for i in ids if str(i) not in have]
