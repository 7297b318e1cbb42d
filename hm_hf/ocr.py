"""The text written on a meme, read with Tesseract (through `pytesseract`).

Memes carry their caption inside the image; Hateful Memes ships it as `text`, but a user of the demo or
the pipeline only has the picture. Tesseract is a system program (Debian/Ubuntu: `apt-get install
tesseract-ocr`; a Hugging Face Space: `tesseract-ocr` in `packages.txt`), `pytesseract` only calls it.

The image is read as grey levels, upscaled when small (Tesseract wants glyphs of 20+ pixels) and read as
one block of text (`--psm 6`, which reads the synthetic memes word for word, where the automatic layout
mode loses a few words); the lines are joined with single spaces, as the data sets store the text.

Example:

```python
>>> from PIL import Image
>>> from hm_hf.ocr import read_text
>>> read_text(Image.open("img/08291.png"))  # doctest: +SKIP
'its their character not their color that matters'
```
"""

from __future__ import annotations

import functools
import re

from PIL import Image

__all__ = ["OcrUnavailableError", "tesseract_available", "read_text"]

_WHITESPACE = re.compile(r"\s+")
MIN_HEIGHT = 480  # smaller images are upscaled to about this height before OCR
MAX_SIDE = 2000  # larger ones are shrunk: OCR time grows with the pixel count


class OcrUnavailableError(RuntimeError):
    """Tesseract (or pytesseract) is not installed."""


@functools.lru_cache(maxsize=1)
def tesseract_available() -> bool:
    """True when both `pytesseract` and the `tesseract` program can be used."""
    try:
        import pytesseract
    except ImportError:
        return False
    try:
        pytesseract.get_tesseract_version()
    except Exception:  # noqa: BLE001 - pytesseract raises its own not-found error or OSError
        return False
    return True


def _prepare(image: Image.Image) -> Image.Image:
    grey = image.convert("L")
    width, height = grey.size
    scale = 1.0
    if height < MIN_HEIGHT:
        scale = min(4.0, MIN_HEIGHT / max(height, 1))
    if max(width, height) * scale > MAX_SIDE:
        scale = MAX_SIDE / max(width, height)
    if scale != 1.0:
        grey = grey.resize((max(1, round(width * scale)), max(1, round(height * scale))), Image.Resampling.BICUBIC)
    return grey


def read_text(image: Image.Image, lang: str = "eng", timeout: float = 30.0) -> str:
    """The text in `image` as one line ("" when none is found).

    Raises `OcrUnavailableError` (with the install command) when Tesseract is missing, and
    `RuntimeError` when it runs longer than `timeout` seconds.
    """
    if not tesseract_available():
        raise OcrUnavailableError(
            "OCR needs Tesseract: install it with `apt-get install tesseract-ocr` (a Space: add `tesseract-ocr` to "
            "packages.txt) and `pip install pytesseract`, or give the meme's text yourself."
        )
    import pytesseract

    try:
        raw = pytesseract.image_to_string(_prepare(image), lang=lang, config="--psm 6", timeout=timeout)
    except RuntimeError as err:  # pytesseract's timeout
        raise RuntimeError(f"OCR took longer than {timeout:.0f} s and was stopped ({err})") from err
    return _WHITESPACE.sub(" ", raw).strip()
