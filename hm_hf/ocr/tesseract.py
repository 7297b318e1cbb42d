"""Tesseract (through `pytesseract`): the fallback engine, for languages PP-OCR does not read here.

Tesseract is a system program (Debian/Ubuntu: `apt-get install tesseract-ocr`; a Hugging Face Space:
`tesseract-ocr` in `packages.txt`), `pytesseract` only calls it. It reads clean document text well and
meme captions (white outlined capitals over a photograph) badly: see benchmarks/README.md.

The image is read as grey levels, upscaled when small (Tesseract wants glyphs of 20+ pixels) and read as
one block of text (`--psm 6`, which reads plain-background text word for word, where the automatic
layout mode loses a few words).
"""

from __future__ import annotations

import functools
from importlib import metadata

from PIL import Image

from hm_hf.ocr.base import OcrEngine, OcrUnavailableError
from hm_hf.ocr.text import normalise_text

__all__ = ["TesseractEngine", "tesseract_available"]

MIN_HEIGHT = 480  # smaller images are upscaled to about this height before OCR
MAX_SIDE = 2000  # larger ones are shrunk: OCR time grows with the pixel count
INSTALL = ("`apt-get install tesseract-ocr` (a Space: add `tesseract-ocr` to packages.txt) and "
           "`pip install pytesseract`")


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


class TesseractEngine(OcrEngine):
    """Tesseract in language(s) `lang` ("eng", "eng+deu", ...), stopped after `timeout` seconds."""

    name = "tesseract"

    def __init__(self, lang: str = "eng", timeout: float = 30.0):
        if not tesseract_available():
            raise OcrUnavailableError(f"the tesseract OCR engine needs Tesseract: install it with {INSTALL}.")
        self.lang = lang
        self.timeout = timeout

    @functools.cached_property
    def version(self) -> str:
        import pytesseract

        return f"tesseract {pytesseract.get_tesseract_version()}, pytesseract {metadata.version('pytesseract')}"

    def read(self, image: Image.Image) -> str:
        """Raises `RuntimeError` when Tesseract runs longer than `timeout` seconds."""
        import pytesseract

        try:
            raw = pytesseract.image_to_string(_prepare(image), lang=self.lang, config="--psm 6", timeout=self.timeout)
        except RuntimeError as err:  # pytesseract's timeout
            raise RuntimeError(f"OCR took longer than {self.timeout:.0f} s and was stopped ({err})") from err
        return normalise_text(raw, self.lang)
