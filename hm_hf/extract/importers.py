"""`hm-hf import-features`: region features people already have, converted into a FeatureCache.

    hm-hf import-features --format bua-json --input feats_json/ --output feats/hmd_bua \
        --ids-from-dataset hmd --data-dir data/hateful_memes --missing skip

Formats (one file, or pair of files, per image):
- `mmf`: MMF's `<id>.npy` (N x 2048 float32) + `<id>_info.npy` (a pickled dict: bbox N x 4 pixels,
  num_boxes, objects, cls_prob, image_width, image_height). Unpickling can run arbitrary code, so the info
  files are read only with `--allow-pickle-for-mmf-info`; do that only for files you trust.
- `bua-json`: py-bottom-up-attention per-image JSON (img_id, img_h, img_w, num_boxes, base64 float32
  `boxes` N x 4 pixels and `features` N x 2048, objects_id, objects_conf as lists or base64).
- `uniter-npz`: UNITER's per-image `.npz` (features, norm_bb N x 6 = x1 y1 x2 y2 w h normalised by the
  image size, conf, soft_labels N x 1601 with background first), read with `allow_pickle=False`. Boxes go
  back to pixels with the image's size, read from the image file (`--ids-from-dataset`/`--data-dir`, or
  `--image-dir`).

Ids: a file's stem (or the JSON's `img_id`); decimal ids lose leading zeros (MMF names HMD images
`01235`, the builders key them `1235`; `hm_hf.data.layouts.canonical_id`). With `--ids-from-dataset`, only
that data set's ids are imported (read as the builders read them, `hm_hf.data.layouts`), and the ones
without features are handled by `--missing`: `skip` (report them), `error` (stop, listing them) or `empty`
(store a zero-region entry with the image's size). Re-running resumes: ids already in the cache are
skipped.

Every converted entry must obey the feature-cache rules (`hm_hf.extract.validation`: finite features
within float16's range, 2048 wide as the builders join them, finite boxes that are not inverted and lie in
the image, positive image sizes); a file that breaks one, is not the format it claims (or is damaged), or
is a symlink leading out of its folder (`--input`, `--image-dir`, the data set's folder) stops the import
with an error naming it. Nothing is written for it, and re-running after fixing or removing it resumes
where the import stopped.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import pickle
import re
import sys
import tokenize
import zipfile
import zlib
from pathlib import Path

import numpy as np

from hm_hf.cli import positive_int
from hm_hf.data.layouts import DataFolder, canonical_id, command_report, dataset_images, image_size
from hm_hf.fileio import JsonInputError, parse_json

from . import validation
from .cache import FEATURE_DIM, FEATURE_DTYPES, FeatureCache, InvalidRegionsError, RegionFeatures

FORMATS = ("mmf", "bua-json", "uniter-npz")
MISSING_POLICIES = ("skip", "error", "empty")
IMPORT_TAG = re.compile(r"^shard-import-(\d{6})\.safetensors$")
PICKLE_FLAG = "--allow-pickle-for-mmf-info"
# MMF's and UNITER's class probabilities come from the Caffe-trained detector: 1600 Visual Genome classes
# with the background FIRST (the hm_hf detector puts it last, as detectron2 does).
VG_CLASSES_WITH_BACKGROUND = 1601
# What np.load and reading an array out of a damaged .npy / .npz raise (probed with numpy 2.4 on empty,
# truncated and byte-flipped files): a bad zip, a CRC mismatch, a broken deflate stream, an unsupported or
# encrypted zip entry, an unparseable .npy header, a header claiming an impossible shape.
NUMPY_READ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, NotImplementedError, RuntimeError,
                     tokenize.TokenError, MemoryError)


class FeatureImportError(ValueError):
    """A foreign feature file that cannot be converted; the message names the file and what to do."""


# ------------------------------------------------------------------------------------------ discovery


def scan(fmt: str, input_dir) -> dict[str, Path]:
    """id -> the format's main file for every image in `input_dir` (recursively)."""
    input_dir = Path(input_dir)
    if not input_dir.is_dir():
        raise FeatureImportError(f"--input {input_dir} is not a folder")
    found: dict[str, Path] = {}
    folder = DataFolder(input_dir)
    input_dir = Path(folder.path)  # absolute: the folder's real_path reads a relative path as inside it
    if fmt == "mmf":
        files = [p for p in input_dir.rglob("*.npy") if not p.stem.endswith("_info")]
    elif fmt == "bua-json":
        files = list(input_dir.rglob("*.json"))
    elif fmt == "uniter-npz":
        files = list(input_dir.rglob("*.npz"))
    else:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    for path in sorted(files):
        real = folder.real_path(path)
        if not folder.contains(real):
            raise FeatureImportError(folder.outside_reason(path, real))
        example_id = canonical_id(path.stem)
        if example_id in found:
            raise FeatureImportError(f"{found[example_id]} and {path} are both id {example_id}; remove one of them")
        found[example_id] = path
    return found


# ------------------------------------------------------------------------------------------- readers


def _decode(value, dtype, path: Path, field: str, count: int | None = None) -> np.ndarray:
    """A list, or a base64 string of raw little-endian values (ids: int64, else int32 by length)."""
    if isinstance(value, str):
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError) as err:
            raise FeatureImportError(f"{path}: field {field!r} is not valid base64 ({err})") from None
        if np.dtype(dtype).kind == "i" and count and len(raw) == 4 * count:
            dtype = np.int32  # some writers store ids as int32
        if len(raw) % np.dtype(dtype).itemsize:
            raise FeatureImportError(f"{path}: field {field!r} is not a base64 {np.dtype(dtype).name} array")
        return np.frombuffer(raw, dtype=dtype).copy()
    if isinstance(value, list):
        try:
            return np.asarray(value, dtype=dtype).reshape(-1)
        except (TypeError, ValueError, OverflowError) as err:
            raise FeatureImportError(f"{path}: field {field!r} is not a flat list of numbers ({err})") from None
    raise FeatureImportError(f"{path}: field {field!r} must be a list or a base64 string, got {type(value).__name__}")


def _whole_number(item: dict, field: str, path: Path) -> int:
    value = item[field]
    if isinstance(value, bool) or not isinstance(value, int):
        raise FeatureImportError(f"{path}: field {field!r} must be a whole number, got {value!r:.40}")
    return value


def read_bua_json(path: Path) -> tuple[str | None, RegionFeatures]:
    try:
        item = parse_json(Path(path).read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, JsonInputError) as err:
        raise FeatureImportError(f"{path}: not a readable JSON file ({err})") from None
    if not isinstance(item, dict):
        raise FeatureImportError(f"{path}: expected a JSON object, got {type(item).__name__}")
    required = ("img_h", "img_w", "num_boxes", "boxes", "features")
    absent = [k for k in required if k not in item]
    if absent:
        raise FeatureImportError(f"{path}: fields {absent} missing; is it a py-bottom-up-attention JSON file?")
    n = _whole_number(item, "num_boxes", path)
    if n < 0:
        raise FeatureImportError(f"{path}: num_boxes must not be negative, got {n}")
    boxes = _decode(item["boxes"], np.float32, path, "boxes")
    features = _decode(item["features"], np.float32, path, "features")
    if boxes.size != n * 4 or (n and features.size % n) or (not n and features.size):
        raise FeatureImportError(
            f"{path}: num_boxes={n} but boxes has {boxes.size} values and features {features.size}"
        )
    optional = {}
    if "objects_id" in item:
        optional["object_ids"] = _decode(item["objects_id"], np.int64, path, "objects_id", n).astype(np.int64)
    if "objects_conf" in item:
        optional["object_scores"] = _decode(item["objects_conf"], np.float32, path, "objects_conf")
    if "attrs_id" in item:
        optional["attribute_ids"] = _decode(item["attrs_id"], np.int64, path, "attrs_id", n).astype(np.int64)
    for name, value in optional.items():
        if value.size != n:
            raise FeatureImportError(f"{path}: {name} has {value.size} values for {n} boxes")
    regions = RegionFeatures(
        features=features.reshape(n, -1) if n else np.zeros((0, FEATURE_DIM), np.float32),
        boxes=boxes.reshape(n, 4),
        image_width=_whole_number(item, "img_w", path),
        image_height=_whole_number(item, "img_h", path),
        **optional,
    )
    return (canonical_id(item["img_id"]) if "img_id" in item else None), regions


def read_mmf(path: Path, allow_pickle: bool) -> RegionFeatures:
    info_path = path.with_name(f"{path.stem}_info.npy")
    if not allow_pickle:
        raise FeatureImportError(
            f"{info_path} is a pickle, and unpickling can run arbitrary code; hm_hf reads it only when you pass "
            f"{PICKLE_FLAG} (do so only for files from a source you trust)"
        )
    if not info_path.is_file():
        raise FeatureImportError(f"{info_path} not found: MMF features need their _info.npy next to {path.name}")
    try:
        features = np.load(path, allow_pickle=False)
        info = np.load(info_path, allow_pickle=True).item()  # safety-opt-in: --allow-pickle-for-mmf-info
    except (*NUMPY_READ_ERRORS, pickle.UnpicklingError) as err:
        raise FeatureImportError(f"{path} / {info_path}: not MMF feature files ({type(err).__name__}: {err}); fix or "
                                 "remove them, then run the import again (it resumes)") from None
    if not isinstance(info, dict) or "bbox" not in info:
        raise FeatureImportError(f"{info_path}: expected a dict with 'bbox', got {type(info).__name__}")
    try:
        return _mmf_regions(features, info, info_path)
    except (FeatureImportError, InvalidRegionsError):
        raise
    except (TypeError, ValueError, IndexError, KeyError) as err:  # arrays of the wrong shape or type
        raise FeatureImportError(f"{path} / {info_path}: not MMF feature files ({type(err).__name__}: {err})") from None


def _mmf_regions(features: np.ndarray, info: dict, info_path: Path) -> RegionFeatures:
    boxes = np.asarray(info["bbox"], dtype=np.float32).reshape(-1, 4)
    n = int(info.get("num_boxes", len(boxes)))
    if features.ndim != 2 or features.shape[0] < n or len(boxes) < n:
        raise FeatureImportError(f"{info_path}: num_boxes={n} but features {features.shape}, bbox {boxes.shape}")
    optional = {}
    if info.get("objects") is not None:
        optional["object_ids"] = np.asarray(info["objects"], dtype=np.int64).reshape(-1)[:n]
    cls_prob = info.get("cls_prob")
    if cls_prob is not None:
        cls_prob = np.asarray(cls_prob, dtype=np.float32)[:n]
        foreground = cls_prob[:, 1:] if cls_prob.shape[1] == VG_CLASSES_WITH_BACKGROUND else cls_prob
        ids = optional.get("object_ids", foreground.argmax(1))
        optional["object_ids"] = ids
        optional["object_scores"] = foreground[np.arange(n), ids]
    try:
        width, height = int(info["image_width"]), int(info["image_height"])
    except (KeyError, TypeError, ValueError) as err:
        raise FeatureImportError(f"{info_path}: image_width / image_height missing") from err
    return RegionFeatures(features=features[:n], boxes=boxes[:n], image_width=width, image_height=height, **optional)


def read_uniter_npz(path: Path, image_size: tuple[int, int]) -> RegionFeatures:
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except NUMPY_READ_ERRORS as err:
        raise FeatureImportError(f"{path}: not a readable .npz without pickles ({type(err).__name__}: {err}); if it "
                                 "is truncated or damaged, fix or remove it, then run the import again (it resumes)"
                                 ) from None
    absent = [k for k in ("features", "norm_bb") if k not in arrays]
    if absent:
        raise FeatureImportError(f"{path}: arrays {absent} missing; is it a UNITER feature file?")
    features, norm_bb = arrays["features"], arrays["norm_bb"]
    if (features.ndim != 2 or norm_bb.ndim != 2 or norm_bb.shape[0] != features.shape[0] or norm_bb.shape[1] < 4
            or features.dtype.kind not in "fiu" or norm_bb.dtype.kind not in "fiu"):
        raise FeatureImportError(f"{path}: features {features.dtype} {features.shape} and norm_bb {norm_bb.dtype} "
                                 f"{norm_bb.shape} are not (N, D) and (N, >= 4) numeric arrays")
    norm_bb = norm_bb.astype(np.float32)
    width, height = image_size
    boxes = norm_bb[:, :4] * np.array([width, height, width, height], dtype=np.float32)
    optional = {}
    soft, conf = arrays.get("soft_labels"), arrays.get("conf")
    if soft is not None and (soft.ndim != 2 or soft.shape[0] != len(features) or not soft.shape[1]
                             or soft.dtype.kind not in "fiu"):
        raise FeatureImportError(f"{path}: soft_labels {soft.dtype} {soft.shape} is not a numeric (N, classes) array "
                                 f"for N = {len(features)} boxes")
    if conf is not None and conf.dtype.kind not in "fiu":
        raise FeatureImportError(f"{path}: conf is {conf.dtype}, not a numeric array")
    if soft is not None:
        soft = soft.astype(np.float32)
        foreground = soft[:, 1:] if soft.shape[1] == VG_CLASSES_WITH_BACKGROUND else soft
        optional["object_ids"] = foreground.argmax(1)
    if conf is not None:
        optional["object_scores"] = conf.astype(np.float32).reshape(-1)
    return RegionFeatures(features=features, boxes=boxes, image_width=width, image_height=height, **optional)


def _image_size(path: Path | None, example_id: str) -> tuple[int, int]:
    if path is None or not Path(path).is_file():
        raise FeatureImportError(
            f"no image file for id {example_id} ({path}); its size is needed to convert normalised boxes. "
            "Give --ids-from-dataset/--data-dir (or --image-dir) pointing at the images"
        )
    size, problem = image_size(path)
    if problem:
        raise FeatureImportError(f"{path} (the image of id {example_id}): [{problem[0]}] {problem[1]}")
    return size


# ------------------------------------------------------------------------------------------ importing


def import_features(
    fmt: str,
    input_dir,
    output,
    ids_from_dataset: str | None = None,
    data_dir=None,
    image_dir=None,
    missing: str = "skip",
    allow_pickle_for_mmf_info: bool = False,
    flush_every: int = 2000,
    progress: bool = True,
    feature_dtype: str = "float16",
) -> dict:
    """Convert the features in `input_dir` into the cache at `output` (features stored as `feature_dtype`);
    returns counts and missing ids."""
    from tqdm.auto import tqdm

    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    if missing not in MISSING_POLICIES:
        raise ValueError(f"missing must be one of {MISSING_POLICIES}, got {missing!r}")
    found = scan(fmt, input_dir)  # a missing --input is named first
    if fmt == "mmf" and not allow_pickle_for_mmf_info:
        raise FeatureImportError(
            f"MMF's <id>_info.npy files are pickles, and unpickling can run arbitrary code; pass {PICKLE_FLAG} "
            "to read them (only for files from a source you trust)"
        )
    images: dict[str, Path] = {}
    inputs = None
    if ids_from_dataset:
        if data_dir is None:
            raise ValueError("--ids-from-dataset needs --data-dir")
        inputs = command_report(ids_from_dataset, data_dir)
        images = dataset_images(ids_from_dataset, data_dir, report=inputs)
    image_files = {}
    if image_dir is not None:
        folder = DataFolder(image_dir)
        for p in sorted(Path(folder.path).iterdir()):  # absolute, as real_path needs
            if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp", ".bmp"):
                real = folder.real_path(p)
                if not folder.contains(real):
                    raise FeatureImportError(folder.outside_reason(p, real))
                image_files[canonical_id(p.stem)] = p
    if fmt == "uniter-npz" and not images and not image_files:
        raise ValueError(
            "uniter-npz stores boxes normalised by the image size: give --ids-from-dataset and --data-dir (or "
            "--image-dir) so the sizes can be read from the images"
        )

    expected = list(images) if images else list(found)
    extra = sorted(set(found) - set(expected)) if images else []
    absent = [i for i in expected if i not in found]
    if absent and missing == "error":
        raise FeatureImportError(
            f"{len(absent)} ids of {ids_from_dataset} have no features in {input_dir} (first: {absent[:10]}); "
            "use --missing skip or --missing empty to go on without them"
        )

    source = {"importer": "hm_hf.extract.importers", "format": fmt, "input": str(Path(input_dir).resolve())}
    cache = FeatureCache.create(output, source, feature_dtype=feature_dtype)
    done = cache.ids()
    seqs = [int(m.group(1)) for p in cache.shard_paths() if (m := IMPORT_TAG.match(p.name))]
    seq = max(seqs, default=-1) + 1
    stats = {"found": len(found), "expected": len(expected), "cached": 0, "imported": 0, "empty": 0,
             "missing": len(absent), "missing_ids": absent, "extra": len(extra), "extra_ids": extra[:20],
             "skipped_inputs": inputs.counts() if inputs else {}}  # fmt: skip
    pending: dict[str, RegionFeatures] = {}

    def flush():
        nonlocal seq, pending
        if pending:
            cache.write_shard(f"import-{seq:06d}", pending)
            seq += 1
            pending = {}

    def size_of(example_id):
        return _image_size(images.get(example_id) or image_files.get(example_id), example_id)

    def read(example_id, path) -> RegionFeatures:
        """The regions of one file, checked as the cache stores them; a bad file is an error naming it."""
        try:
            if fmt == "bua-json":
                inner_id, regions = read_bua_json(path)
                if inner_id is not None and inner_id != example_id:
                    raise FeatureImportError(f"{path}: img_id {inner_id} does not match the file name ({example_id})")
            elif fmt == "mmf":
                regions = read_mmf(path, allow_pickle_for_mmf_info)
            else:
                regions = read_uniter_npz(path, size_of(example_id))
            if validation.storage_problem(regions, feature_dim=FEATURE_DIM):  # what the builders join
                raise InvalidRegionsError(f"{regions.features.shape[1]}-dimensional features, but the feature "
                                          f"cache {output} holds {FEATURE_DIM}-dimensional ones (the width the "
                                          "data-set builders join); import features of a "
                                          f"{FEATURE_DIM}-dimensional detector")
            cache.check_storable(regions, example_id)
        except InvalidRegionsError as err:
            raise FeatureImportError(f"{path}: {err}; fix or remove the file, then run the import again "
                                     "(it resumes)") from None
        return regions

    try:  # what was read before an error or an interruption is written: the next run resumes after it
        for example_id in tqdm(expected, desc=f"import {fmt}", unit="img", disable=not progress):
            if example_id in done:
                stats["cached"] += 1
                continue
            path = found.get(example_id)
            if path is not None:
                pending[example_id] = read(example_id, path)
                stats["imported"] += 1
            elif missing == "empty":
                width, height = size_of(example_id)
                pending[example_id] = RegionFeatures(
                    np.zeros((0, FEATURE_DIM), np.float16), np.zeros((0, 4), np.float32), width, height
                )
                stats["empty"] += 1
            if len(pending) >= flush_every:
                flush()
    finally:
        flush()
    return stats


# ------------------------------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hm-hf import-features",
        description="Convert per-image region features made by MMF, py-bottom-up-attention or UNITER into a "
        "feature cache (resumable).",
    )
    parser.add_argument("--format", required=True, choices=FORMATS)
    parser.add_argument("--input", required=True, help="folder of per-image feature files")
    parser.add_argument("--output", required=True, help="feature cache folder (created, or resumed)")
    parser.add_argument("--ids-from-dataset", choices=["hmd", "mmhs"], default=None,
                        help="import exactly this data set's ids (needs --data-dir)")  # fmt: skip
    parser.add_argument("--data-dir", default=None, help="the data set's folder (ids and image sizes)")
    parser.add_argument("--image-dir", default=None, help="images named <id>.<ext>, for UNITER's image sizes")
    parser.add_argument("--missing", choices=MISSING_POLICIES, default="skip",
                        help="ids without features: skip them (reported), stop with an error, or store an empty "
                        "region set")  # fmt: skip
    parser.add_argument(PICKLE_FLAG, action="store_true",
                        help="allow reading MMF's <id>_info.npy, which is a pickle: unpickling can run arbitrary "
                        "code, so pass this only for files from a source you trust")  # fmt: skip
    parser.add_argument("--flush-every", type=positive_int, default=2000, help="images per shard")
    parser.add_argument("--feature-dtype", choices=FEATURE_DTYPES, default="float16",
                        help="how the features are stored (float16 halves disk and memory)")
    parser.add_argument("--no-progress", action="store_true")
    return parser


def cli(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        stats = import_features(
            args.format,
            args.input,
            args.output,
            ids_from_dataset=args.ids_from_dataset,
            data_dir=args.data_dir,
            image_dir=args.image_dir,
            missing=args.missing,
            allow_pickle_for_mmf_info=args.allow_pickle_for_mmf_info,
            flush_every=args.flush_every,
            progress=not args.no_progress,
            feature_dtype=args.feature_dtype,
        )
    except (FeatureImportError, ValueError, FileNotFoundError) as err:
        print(f"import-features: error: {err}", file=sys.stderr)
        return 2
    print(json.dumps({k: v for k, v in stats.items() if not k.endswith("_ids")}))
    if stats["missing"]:
        policy = {"skip": "skipped", "empty": "stored as empty region sets"}[args.missing]
        print(f"import-features: {stats['missing']} ids have no features, {policy} (first: "
              f"{stats['missing_ids'][:10]})", file=sys.stderr)  # fmt: skip
    if stats["extra"]:
        print(f"import-features: {stats['extra']} files are not ids of {args.ids_from_dataset} and were not "
              f"imported (first: {stats['extra_ids'][:5]})", file=sys.stderr)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(cli())
