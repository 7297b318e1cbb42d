"""The text written on a meme, read by OCR, in the form the data sets store it (lower case, single spaces).

Memes carry their caption inside the image; Hateful Memes ships it as `text`, but a user of the pipeline
or the Space only has the picture. Engines (`ENGINES`):

- ``"ppocr"``: PP-OCRv6 text detection + recognition on ONNX Runtime (`hm_hf.ocr.ppocr`), the default:
  it reads meme captions (outlined capitals over photographs) and text cards; `pip install 'hm_hf[ocr]'`;
- ``"tesseract"``: Tesseract (`hm_hf.ocr.tesseract`), the fallback and the engine for other languages;
  `apt-get install tesseract-ocr` and `pip install pytesseract`;
- ``"auto"``: ppocr when it is installed and reads `lang`, else Tesseract.

Engines are loaded once per (name, language) and shared between threads. A missing engine raises
`OcrUnavailableError` saying what to install; no model is ever downloaded. `benchmarks/meme_ocr.py`
measures them side by side.

Example:

```python
>>> from PIL import Image
>>> from hm_hf.ocr import get_ocr_engine, read_text
>>> read_text(Image.open("img/08291.png"))  # doctest: +SKIP
'its their character not their color that matters'
>>> engine = get_ocr_engine("auto")  # doctest: +SKIP
>>> engine.name, engine.version  # doctest: +SKIP
('ppocr', 'rapidocr 3.10.0 (PP-OCRv6 small det + rec), onnxruntime 1.32.0')
```
"""

from __future__ import annotations

import importlib
import threading

from PIL import Image

from hm_hf.ocr.base import OcrEngine, OcrUnavailableError
from hm_hf.ocr.ppocr import ppocr_available
from hm_hf.ocr.tesseract import tesseract_available
from hm_hf.ocr.text import ENGLISH, normalise_text

__all__ = ["ENGINES", "DEFAULT_ENGINE", "OcrEngine", "OcrUnavailableError", "available_engines", "get_ocr_engine",
           "normalise_text", "read_text", "resolve_engine", "tesseract_available"]

# name -> (class, "is it installed?" check); the first installed one that reads the language is "auto".
ENGINES = {
    "ppocr": ("hm_hf.ocr.ppocr:PpOcrEngine", ppocr_available),
    "tesseract": ("hm_hf.ocr.tesseract:TesseractEngine", tesseract_available),
}
DEFAULT_ENGINE = "auto"
_ENGLISH_ONLY = {"ppocr"}

_engines: dict[tuple, OcrEngine] = {}
_engines_lock = threading.Lock()


def available_engines() -> list[str]:
    """Names of the installed engines, best first."""
    return [name for name, (_, installed) in ENGINES.items() if installed()]


def resolve_engine(name: str = DEFAULT_ENGINE, lang: str = "eng") -> str:
    """The engine `name` stands for ("auto" -> the first installed engine that reads `lang`); raises
    `OcrUnavailableError` when "auto" finds none and `ValueError` for an unknown name."""
    if name in ENGINES:
        return name
    if name != "auto":
        raise ValueError(f"unknown OCR engine {name!r}; choose one of {', '.join(['auto', *ENGINES])}")
    for candidate in available_engines():
        if candidate not in _ENGLISH_ONLY or lang.lower() in ENGLISH:
            return candidate
    from hm_hf.ocr.ppocr import INSTALL as PPOCR_INSTALL
    from hm_hf.ocr.tesseract import INSTALL as TESSERACT_INSTALL

    raise OcrUnavailableError(f"no OCR engine is installed: {PPOCR_INSTALL} for memes in English, or "
                              f"{TESSERACT_INSTALL}; or give the meme's text yourself.")


def get_ocr_engine(name: str = DEFAULT_ENGINE, lang: str = "eng", **options) -> OcrEngine:
    """The engine `name` for `lang`, loaded on first use and shared afterwards (one per name, language and
    options; `options` go to the engine's class, e.g. `timeout=` for Tesseract, `threads=` for ppocr)."""
    resolved = resolve_engine(name, lang)
    key = (resolved, lang, tuple(sorted(options.items())))
    engine = _engines.get(key)
    if engine is None:
        with _engines_lock:
            engine = _engines.get(key)
            if engine is None:
                module_name, class_name = ENGINES[resolved][0].split(":")
                engine = getattr(importlib.import_module(module_name), class_name)(lang=lang, **options)
                _engines[key] = engine
    return engine


def read_text(image: Image.Image, lang: str = "eng", timeout: float | None = None, engine: str = DEFAULT_ENGINE) -> str:
    """The text in `image` as one line, lower case ("" when none is found), read by `engine`.

    `timeout` (seconds) stops Tesseract (default 30 s there); the ppocr engine runs in-process and takes
    well under a second per meme. Raises `OcrUnavailableError` (saying what to install) when the engine
    is missing and `RuntimeError` when Tesseract runs past `timeout`.
    """
    options = {"timeout": timeout} if timeout is not None and resolve_engine(engine, lang) == "tesseract" else {}
    return get_ocr_engine(engine, lang, **options).read(image)
