"""What every OCR engine is: a name, a version and `read(image) -> text` in the data sets' form."""

from __future__ import annotations

from abc import ABC, abstractmethod

from PIL import Image

__all__ = ["OcrEngine", "OcrUnavailableError"]


class OcrUnavailableError(RuntimeError):
    """The OCR engine asked for (or every engine, for "auto") is not installed; the message says what to
    install."""


class OcrEngine(ABC):
    """An OCR engine, loaded once and shared: `read` may be called from several threads at once.

    Attributes: `name` (the registry name, e.g. "ppocr"), `lang` (a Tesseract-style language code, e.g.
    "eng") and `version` (the library and model versions, for a run's saved settings).
    """

    name: str = ""
    lang: str = "eng"

    @property
    @abstractmethod
    def version(self) -> str:
        """Library and model versions, e.g. "rapidocr 3.10.0 (PP-OCRv6 small), onnxruntime 1.32.0"."""

    @abstractmethod
    def read(self, image: Image.Image) -> str:
        """The text on `image` as one line, lower case with single spaces ("" when there is none)."""

    def info(self) -> dict:
        """{"engine", "version", "lang"}: what a pipeline records about the OCR it used."""
        return {"engine": self.name, "version": self.version, "lang": self.lang}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(lang={self.lang!r}, version={self.version!r})"
