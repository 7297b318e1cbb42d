"""Reading an image that someone else gave: a path, bytes, a PIL image or an array, checked before decoding.

Used wherever hm_hf takes an image from a user (the pipeline, `hm-hf predict`, the Space): the pixel count is
read from the header before anything is decoded (a small file can hold a huge image: a "decompression
bomb"), truncated and non-image files raise `BadImageError` with the reason, EXIF orientation is applied,
transparent images are put on white and 16-bit or float grey images are scaled to 8 bits (not clipped).
"""

from __future__ import annotations

import io
import os
import re
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

__all__ = ["DEFAULT_MAX_PIXELS", "BadImageError", "load_image", "to_rgb"]

EXIF_ORIENTATION = 0x0112  # the EXIF tag that says how a photo is turned
DEFAULT_MAX_PIXELS = 40_000_000  # about 6300 x 6300; far above any meme, far below a decompression bomb


class BadImageError(ValueError):
    """An input that is not a usable image; the message says why and what to do."""


def load_image(source, max_pixels: int = DEFAULT_MAX_PIXELS, max_bytes: int | None = None) -> Image.Image:
    """An RGB PIL image from a path, bytes, a PIL image or an (H, W[, C]) uint8 array.

    The pixel count is checked from the header, before the image is decoded (a small file can hold a
    huge image: a "decompression bomb"); truncated and non-image files raise `BadImageError`.
    """
    name = "the image"
    if isinstance(source, Image.Image):
        image = source
        _check_pixels(image.size, max_pixels, name)
        try:
            image.load()  # an opened file is decoded only now
        except (OSError, SyntaxError, ValueError, EOFError) as err:
            raise BadImageError(f"{name} is damaged or truncated and cannot be decoded ({err})") from None
        return to_rgb(image)
    if isinstance(source, np.ndarray):
        if source.ndim == 3 and source.shape[2] == 1:
            source = source[:, :, 0]
        if source.ndim not in (2, 3) or source.dtype != np.uint8 or (source.ndim == 3 and source.shape[2] > 4):
            raise BadImageError(f"an image array must be (H, W) or (H, W, C) uint8 with C <= 4 channels, got "
                                f"{source.shape} {source.dtype}: a (C, H, W) tensor is array.transpose(1, 2, 0)")
        _check_pixels((source.shape[1], source.shape[0]), max_pixels, name)
        return to_rgb(Image.fromarray(source))
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if max_bytes is not None and len(data) > max_bytes:
            raise BadImageError(f"{name} is {len(data):,} bytes, more than the limit of {max_bytes:,}")
        return _decode(io.BytesIO(data), max_pixels, name)
    if isinstance(source, (str, os.PathLike)):
        if re.match(r"[a-z][a-z0-9+.-]*://", str(source), re.IGNORECASE):
            raise BadImageError(f"{source}: an address is not fetched; download the image and give its path or "
                                "bytes")
        path = Path(source)
        name = str(path)
        if path.is_dir():
            raise BadImageError(f"{path} is a folder: give the image files in it")
        if not path.is_file():
            raise BadImageError(f"{path}: no such file")
        size = path.stat().st_size
        if max_bytes is not None and size > max_bytes:
            raise BadImageError(f"{path} is {size:,} bytes, more than the limit of {max_bytes:,}")
        with open(path, "rb") as handle:
            return _decode(handle, max_pixels, name)
    raise BadImageError(f"cannot read an image from a {type(source).__name__}: give a path, bytes or a PIL image")


def _check_pixels(size: tuple[int, int], max_pixels: int, name: str) -> None:
    width, height = size
    if width <= 0 or height <= 0:
        raise BadImageError(f"{name} has no pixels ({width} x {height})")
    if width * height > max_pixels:
        raise BadImageError(
            f"{name} is {width} x {height} = {width * height:,} pixels, more than the limit of {max_pixels:,}: "
            "resize it and try again"
        )


def _too_many_pixels(name: str, err: Exception, max_pixels: int) -> str:
    found = re.search(r"\((\d+) pixels\)", str(err))
    count = f"{int(found.group(1)):,} pixels" if found else "too many pixels"
    return f"{name} is {count}, more than the limit of {max_pixels:,}: resize it and try again"


def _decode(handle, max_pixels: int, name: str) -> Image.Image:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit applies instead
        try:
            image = Image.open(handle)  # reads the header only
        except Image.DecompressionBombError as err:  # Pillow's own limit (2 x Image.MAX_IMAGE_PIXELS)
            raise BadImageError(_too_many_pixels(name, err, max_pixels)) from None
        except (Image.UnidentifiedImageError, OSError, ValueError):
            raise BadImageError(f"{name} is not an image that can be read (PNG, JPEG, WebP, GIF, BMP, ...)") from None
        _check_pixels(image.size, max_pixels, name)
        try:
            image.load()
        except Image.DecompressionBombError as err:
            raise BadImageError(_too_many_pixels(name, err, max_pixels)) from None
        except (OSError, SyntaxError, ValueError, EOFError) as err:
            raise BadImageError(f"{name} is damaged or truncated and cannot be decoded ({err})") from None
    return to_rgb(image)


def to_rgb(image: Image.Image) -> Image.Image:
    """`image` as every hm_hf model sees it, in training, feature extraction and inference alike: turned upright
    as its EXIF orientation says (as photo viewers and OpenCV's `imread` show it), transparent
    pixels on white (what people see; OpenCV drops alpha instead, which differs only where pixels are not
    opaque), and 16-bit or float grey scaled to 8 bits (as `imread` does; Pillow's own convert clips)."""
    try:
        if image.getexif().get(EXIF_ORIENTATION, 1) != 1:  # (exif_transpose copies even when it turns nothing)
            image = ImageOps.exif_transpose(image)  # phone photos: upright as shown
    except Exception:  # noqa: BLE001 - a broken EXIF block is not worth refusing the image
        pass
    if image.mode == "RGB":  # already as the models see it: no copy (it is read at several steps)
        return image
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        background = Image.new("RGB", image.size, (255, 255, 255))  # transparent memes: on white
        background.paste(image.convert("RGBA"), mask=image.convert("RGBA").getchannel("A"))
        return background
    if image.mode.startswith(("I", "F")):  # 16-bit, 32-bit or float grey: Pillow's convert would clip at 255
        image = Image.fromarray(_grey_to_8_bit(np.asarray(image)))
    return image.convert("RGB")


def _grey_to_8_bit(grey: np.ndarray) -> np.ndarray:
    """Grey levels of a 16-bit, 32-bit or float image as uint8: 16-bit over its full range (0-65535), floats
    in [0, 1] (the usual float image) or values in 0-255 as they are, any other range stretched min to max."""
    values = grey.astype(np.float64)
    finite = values[np.isfinite(values)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    if grey.dtype == np.uint16 or (grey.dtype.kind in "iu" and 255 < high <= 65535 and low >= 0):
        values = values / 256  # OpenCV's 16-to-8-bit conversion (65535 saturates at 255)
    elif grey.dtype.kind == "f" and 0 <= low and high <= 1:
        values = values * 255
    elif (low < 0 or high > 255) and high > low:
        values = (values - low) * (255 / (high - low))
    return np.nan_to_num(values, nan=0.0).round().clip(0, 255).astype(np.uint8)
