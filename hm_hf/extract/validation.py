"""What valid region features are: the one set of rules every writer and reader of the feature cache applies.

`RegionFeatures` (the importers, the extraction writer, the synthetic data) checks them when it is made and
raises `hm_hf.extract.cache.InvalidRegionsError`, so `FeatureCache.get` checks every entry it reads, and the
builders' join adds what their columns need (`storage_problem`). The functions here return the broken rule
as a sentence (None when all hold); the caller says where. Each rule is here because breaking it corrupts training silently:

- features are an (N, D) matrix with D >= 1; every value is finite in the stored dtype (NaN, inf, and
  float32 values beyond float16's range, which become inf when stored as float16, are refused);
- boxes are (N, 4) x1 y1 x2 y2 in pixels, finite, not inverted (x2 >= x1, y2 >= y1) and inside the image,
  give or take 1% of its size plus a pixel (fp16-normalised boxes converted back to pixels);
- the image size is two whole numbers in 1..2**31-1 (int32, as the datasets columns store it);
- optional per-region fields (object ids, scores, attribute ids) have N entries; scores are finite;
- the optional checksum of the image file the regions were computed from (`image_xxh3`) is an xxh3-128
  digest: 16 uint8 as stored, 32 lowercase hex digits in `RegionFeatures` (a malformed one could never match,
  so every row would be refused as features of another image).
"""

from __future__ import annotations

import numpy as np

INT32_MAX = 2**31 - 1
CHECKSUM_BYTES = 16  # xxh3-128
BOX_MARGIN = 0.01  # of the image size, plus one pixel: boxes may overhang the image by this much


def _finite_problem(name: str, values: np.ndarray, stored: np.ndarray) -> str | None:
    if stored.size == 0 or np.isfinite(stored).all():
        return None
    original = np.asarray(values)
    if original.dtype != stored.dtype and np.issubdtype(original.dtype, np.floating) and np.isfinite(original).all():
        limit = float(np.finfo(stored.dtype).max)
        return (f"{name} hold values up to {float(np.abs(original).max()):.6g}, beyond {stored.dtype}'s range "
                f"({limit:g}): stored as {stored.dtype} they would be inf (rescale them, or store float32)")
    bad = int((~np.isfinite(stored)).sum())
    return f"{name} hold {bad} NaN or infinite value(s)"


def image_size_problem(width, height) -> str | None:
    for name, value in (("image_width", width), ("image_height", height)):
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
            return f"{name} must be a whole number, got {value!r}"
        if not 1 <= int(value) <= INT32_MAX:
            return f"{name} must be in 1..{INT32_MAX}, got {int(value)}"
    return None


def image_checksum_problem(value) -> str | None:
    """None when `value` is an image checksum: 32 lowercase hex digits (a str), or 16 uint8 as stored."""
    if isinstance(value, str):
        if len(value) == 2 * CHECKSUM_BYTES and all(c in "0123456789abcdef" for c in value):
            return None
        return f"image_xxh3 must be {2 * CHECKSUM_BYTES} lowercase hex digits (xxh3-128), got {value[:80]!r}"
    if not isinstance(value, np.ndarray) or value.dtype != np.uint8 or value.shape != (CHECKSUM_BYTES,):
        shape = f"{value.dtype} {value.shape}" if isinstance(value, np.ndarray) else type(value).__name__
        return f"image_xxh3 must be {CHECKSUM_BYTES} uint8 values (xxh3-128 of the image file), got {shape}"
    return None


def region_problem(features: np.ndarray, boxes: np.ndarray, width, height, optional: dict | None = None,
                   source_features=None) -> str | None:
    """None when these regions are valid, else the first rule they break.

    `features` / `boxes` are the arrays as they will be stored; `source_features` the values they were made
    from (to tell a float16 overflow from a NaN in the input).
    """
    if features.ndim != 2 or features.shape[1] < 1:
        return f"features must be an (N, D) matrix with D >= 1, got shape {features.shape}"
    n = features.shape[0]
    if boxes.shape != (n, 4):
        return f"boxes must be (N, 4) for the {n} regions of the features, got shape {boxes.shape}"
    problem = image_size_problem(width, height)
    if problem:
        return problem
    problem = _finite_problem("features", features if source_features is None else source_features, features)
    if problem or n == 0:
        return problem
    if not np.isfinite(boxes).all():
        return f"boxes hold {int((~np.isfinite(boxes)).sum())} NaN or infinite value(s)"
    inverted = (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
    if inverted.any():
        first = int(np.argmax(inverted))
        return f"{int(inverted.sum())} box(es) are inverted (x2 < x1 or y2 < y1), e.g. box {first}: {boxes[first].tolist()}"
    size = np.array([width, height, width, height], dtype=np.float64)
    margin = size * BOX_MARGIN + 1
    outside = ((boxes < -margin) | (boxes > size + margin)).any(axis=1)
    if outside.any():
        first = int(np.argmax(outside))
        return (f"{int(outside.sum())} box(es) lie outside the {int(width)}x{int(height)} image, e.g. box {first}: "
                f"{boxes[first].tolist()} (boxes are x1 y1 x2 y2 in pixels of the original image)")
    for name, value in (optional or {}).items():
        if value is None:
            continue
        if np.asarray(value).size != n:
            return f"{name} has {np.asarray(value).size} values for {n} regions"
        if name == "object_scores" and not np.isfinite(value).all():
            return "object_scores hold NaN or infinite values"
    return None


def storage_problem(regions, feature_dim: int | None = None, dtype=None) -> str | None:
    """What keeps valid `regions` from a given storage: another feature width, or values beyond `dtype`
    (e.g. float32 features over 65504 for the builders' float16 columns)."""
    if feature_dim is not None and regions.features.shape[1] != feature_dim:
        return f"features have shape {regions.features.shape}, expected (N, {feature_dim})"
    if dtype is not None and np.dtype(dtype) != regions.features.dtype:
        with np.errstate(over="ignore"):
            stored = regions.features.astype(dtype)
        return _finite_problem("features", regions.features, stored)
    return None
