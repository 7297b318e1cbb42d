"""PP-OCR (text detection + recognition networks) through RapidOCR and ONNX Runtime: the meme OCR engine.

Why this one: on memes drawn like real ones (outlined Impact-style capitals over photographs, and text
cards) it reads with a character error rate of 0.25% where Tesseract's is 46% (benchmarks/README.md,
`benchmarks/meme_ocr.py`). The `rapidocr` wheel ships the PP-OCRv6 small detection and recognition
models, and they are loaded from the installed package by path, so nothing is downloaded at run time.

Two things are added to RapidOCR's own pipeline, each measured on that benchmark (and a thin strip is padded to
at most `MAX_ASPECT_RATIO` : 1 first, as RapidOCR scales the short side up to 736 pixels):

- **word gaps from the recogniser's own output.** PP-OCR's recogniser is a CTC model whose alphabet
  includes the space; on the tight word spacing of condensed meme fonts it often gives the space only
  5-50% probability and the line comes out merged ("THEBABY FATHER"). Inside a word the space gets
  < 0.1% (99th percentile), so a space is written wherever the model's best guess is "no character" but
  the space has at least `SPACE_PROBABILITY`; this more than halves the word error rate and needs no
  dictionary (names, slang and made-up words keep their spelling);
- **reading order and clean-up.** Boxes are put in lines by vertical overlap, lines top to bottom and
  boxes left to right (RapidOCR's order swaps words of one line whose boxes start a few pixels apart);
  small, less confident boxes (textures of the photograph read as "AAAA") and boxes without a Latin letter
  or digit are dropped.

The text-orientation classifier is off: meme captions are upright, and with it the benchmark's character
error rate was higher (0.64% against 0.25%, RapidOCR's raw output on 60 memes).
"""

from __future__ import annotations

import functools
import re
import threading
from importlib import metadata
from pathlib import Path

import numpy as np
from PIL import Image, ImageStat

from hm_hf.ocr.base import OcrEngine, OcrUnavailableError
from hm_hf.ocr.text import ENGLISH, normalise_text

__all__ = ["PpOcrEngine", "ppocr_available", "INSTALL"]

RAPIDOCR_VERSION = "3.10.0"  # the models below ship inside this wheel
DET_MODEL = "PP-OCRv6_det_small.onnx"
REC_MODEL = "PP-OCRv6_rec_small.onnx"
MODEL_NAME = "PP-OCRv6 small"
INSTALL = f"`pip install 'hm_hf[ocr]'` (rapidocr=={RAPIDOCR_VERSION} and onnxruntime)"

SPACE_PROBABILITY = 0.05  # write a space in a CTC gap where P(space) >= this (see the module docstring)
MIN_SCORE = 0.9  # a box scored below this ...
MIN_RELATIVE_HEIGHT = 0.4  # ... and lower than this fraction of the tallest box is dropped (photo texture)
MAX_ASPECT_RATIO = 4  # a longer side over this many times the shorter one is padded (see _pad_to_aspect_ratio)
_LATIN = re.compile(r"[0-9A-Za-z]")


@functools.lru_cache(maxsize=1)
def ppocr_available() -> bool:
    """True when `rapidocr` and `onnxruntime` can be imported (the models come with rapidocr)."""
    try:
        import onnxruntime  # noqa: F401
        import rapidocr  # noqa: F401
    except ImportError:
        return False
    return True


def _spaced_decoder(decoder, space_probability: float):
    """RapidOCR's CTC decoder, but writing a space where the model gives it `space_probability` or more
    in a frame it otherwise leaves empty (the blank)."""
    from rapidocr.ch_ppocr_rec.utils import CTCLabelDecode

    space = decoder.character.index(" ")

    class SpacedCTCLabelDecode(CTCLabelDecode):
        def __init__(self):  # share the loaded alphabet instead of reading it again
            self.character, self.dict = decoder.character, decoder.dict

        def __call__(self, preds: np.ndarray, return_word_box: bool = False, **kwargs):
            best = preds.argmax(axis=2)
            probability = preds.max(axis=2)
            gap = (best == 0) & (preds[:, :, space] >= space_probability)  # index 0 is CTC's blank
            best = np.where(gap, space, best)
            probability = np.where(gap, preds[:, :, space], probability)
            return self.decode(best, probability, return_word_box, kwargs.get("wh_ratio_list", (1.0,)),
                               kwargs.get("max_wh_ratio", 1.0), remove_duplicate=True)

    return SpacedCTCLabelDecode()


def _reading_order(boxes, texts, scores) -> list[str]:
    """Texts of the kept boxes in reading order: lines by vertical overlap, top to bottom, left to right."""
    items = []
    for box, text, score in zip(boxes, texts, scores):
        box = np.asarray(box, dtype=np.float32)
        top, bottom, left = float(box[:, 1].min()), float(box[:, 1].max()), float(box[:, 0].min())
        if _LATIN.search(text):  # English text has a Latin letter or a digit; textures read as "美美" do not
            items.append((top, bottom, left, text.strip(), float(score)))
    if not items:
        return []
    tallest = max(bottom - top for top, bottom, *_ in items)
    items = [it for it in items if it[4] >= MIN_SCORE or it[1] - it[0] >= MIN_RELATIVE_HEIGHT * tallest]
    lines: list[list[tuple]] = []
    for item in sorted(items):
        centre = (item[0] + item[1]) / 2
        line = lines[-1] if lines else None
        if line and line[0][0] <= centre <= line[0][1]:
            line.append(item)
        else:
            lines.append([item])
    return [it[3] for line in lines for it in sorted(line, key=lambda it: it[2])]


def _pad_to_aspect_ratio(image: Image.Image, max_ratio: float) -> Image.Image:
    """`image`, its short side padded (with its mean colour) to at least 1 / `max_ratio` of its long side.

    Why: RapidOCR scales the short side up to 736 pixels before detection, so a thin strip grows without bound
    (a 1 x 400 upload became a 4.5 GiB array; 40 x 4000 took a minute): a Space anyone can reach must not
    allow that. Padding keeps the text's own size, so what is readable stays readable."""
    width, height = image.size
    short, long = sorted((width, height))
    if long <= max_ratio * short:
        return image
    padded_short = -(-long // max_ratio)
    size = (padded_short, height) if width == short else (width, padded_short)
    mean = tuple(round(c) for c in ImageStat.Stat(image).mean)
    canvas = Image.new("RGB", size, mean)
    canvas.paste(image, ((size[0] - width) // 2, (size[1] - height) // 2))
    return canvas


class PpOcrEngine(OcrEngine):
    """PP-OCRv6 small (detection + recognition) on ONNX Runtime, English.

    `threads` caps ONNX Runtime's threads (default: all cores); `space_probability=None` keeps RapidOCR's
    own decoding (no word gaps restored: the benchmark's ablation); `det_model` / `rec_model` are other
    RapidOCR ONNX files (default: the PP-OCRv6 small pair inside the rapidocr wheel); a recognition model
    must carry its alphabet in its metadata, as RapidOCR's do (RapidOCR downloads it otherwise).
    """

    name = "ppocr"

    def __init__(self, lang: str = "eng", threads: int | None = None,
                 space_probability: float | None = SPACE_PROBABILITY, det_model=None, rec_model=None):
        if lang.lower() not in ENGLISH:
            raise ValueError(f"the ppocr engine reads English (lang='eng'), not {lang!r}: use engine='tesseract' "
                             "with Tesseract's language data for other languages")
        if not ppocr_available():
            raise OcrUnavailableError(f"the ppocr OCR engine is not installed: {INSTALL}.")
        import rapidocr
        from rapidocr import RapidOCR

        models = Path(rapidocr.__file__).parent / "models"
        det_model = Path(det_model) if det_model else models / DET_MODEL
        rec_model = Path(rec_model) if rec_model else models / REC_MODEL
        missing = [str(p) for p in (det_model, rec_model) if not p.is_file()]
        if missing:
            raise OcrUnavailableError(f"the ppocr engine's models are missing ({', '.join(missing)}): {INSTALL}.")
        params = {"Global.log_level": "error", "Global.use_cls": False,
                  "Det.model_path": str(det_model), "Rec.model_path": str(rec_model)}
        if threads:
            params["EngineConfig.onnxruntime.intra_op_num_threads"] = threads
        self.lang = lang
        self.space_probability = space_probability
        self._models = MODEL_NAME if (det_model.name, rec_model.name) == (DET_MODEL, REC_MODEL) else \
            f"{det_model.name} + {rec_model.name}"
        self._ocr = RapidOCR(params=params)
        self._ocr._load_det_model()  # load both networks now, not on the first request
        recognizer = self._ocr._load_rec_model()
        if space_probability is not None:
            recognizer.postprocess_op = _spaced_decoder(recognizer.postprocess_op, space_probability)
        self._lock = threading.Lock()  # RapidOCR keeps per-call settings on the object

    @functools.cached_property
    def version(self) -> str:
        return (f"rapidocr {metadata.version('rapidocr')} ({self._models} det + rec), "
                f"onnxruntime {metadata.version('onnxruntime')}")

    def info(self) -> dict:
        return {**super().info(), "space_probability": self.space_probability}

    def read(self, image: Image.Image) -> str:
        image = _pad_to_aspect_ratio(image.convert("RGB"), MAX_ASPECT_RATIO)
        bgr = np.ascontiguousarray(np.asarray(image)[:, :, ::-1])
        with self._lock:
            result = self._ocr(bgr)
        if result.boxes is None or not result.txts:
            return ""
        return normalise_text(" ".join(_reading_order(result.boxes, result.txts, result.scores)), self.lang)
