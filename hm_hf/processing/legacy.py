"""``hm_hf_pipeline.json``: how model folders said how to feed their model before ``processor_config.json``.

Such folders still load: `MemeProcessor.from_pretrained` reads this file when the new one is missing, and
`translate` maps its settings onto the processor's (``detector_max_boxes`` -> ``detector_settings["max_boxes"]``,
``text_pair`` -> ``text_pair_column``, ``image_processor`` -> ``image_processor_name_or_path``, ...). The same
names may be given to ``HatefulMemePipeline.from_pretrained`` as overrides, as before.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from hm_hf.fileio import atomic_write_text, read_json_object
from hm_hf.hub import model_file
from hm_hf.images import DEFAULT_MAX_PIXELS
from hm_hf.processing.processor import BINARY_LABEL_NAMES, DEFAULT_DETECTOR, MemeProcessor

__all__ = ["PIPELINE_CONFIG_NAME", "PipelineSettings", "load_pipeline_config", "save_pipeline_config", "translate"]

PIPELINE_CONFIG_NAME = "hm_hf_pipeline.json"

#: hm_hf_pipeline.json's detector settings -> the detector config fields they set
_DETECTOR_FIELDS = {"detector_min_boxes": "min_boxes", "detector_max_boxes": "max_boxes",
                    "detector_score_threshold": "score_threshold", "detector_nms_thresholds": "nms_thresh_test",
                    "detector_min_size": "min_size_test", "detector_max_size": "max_size_test"}
#: other hm_hf_pipeline.json names -> the processor's
_RENAMED = {"image_processor": "image_processor_name_or_path", "detector_feature_dtype": "feature_dtype"}


@dataclass
class PipelineSettings:
    """The settings of ``hm_hf_pipeline.json``, as model folders saved before ``processor_config.json`` hold them.

    detector: detector folder / Hub id for region models, or ``"synthetic"`` (see the module docstring);
        a relative path is read inside the model folder (or Hub repo).
    detector_min_boxes / detector_max_boxes / detector_score_threshold / detector_nms_thresholds /
        detector_min_size / detector_max_size: the detector's region selection and resize, as used for the
        training features (None: the detector's own config).
    detector_feature_dtype: the training features' storage dtype (the processor's ``feature_dtype``).
    max_regions / max_text_length: as in training (the recipe's `max_regions`, `max_text_length`).
    text_pair: for models trained with a text pair (MMHS150K: tweet text + `img_text`): the OCR'd image
        text becomes the pair and the given text the first segment.
    fasttext_model: the fastText model of `text_embedding` models, relative to the model folder.
    fasttext_lowercase: lowercase before embedding (None: as recorded with the fastText model).
    image_processor: image processor (folder / Hub id) of a vision-backbone model, when the model folder
        has no ``preprocessor_config.json``.
    threshold: probability from which the label is "hateful" (read as a hand-chosen decision policy, T = 1,
        when the folder has no ``decision_policy.json``; see `hm_hf.processing.processor`).
    ocr_lang: Tesseract language(s), e.g. "eng" or "eng+deu".
    max_pixels: images with more pixels are refused before they are decoded.
    label_names: names of the classes, class 1 being hateful for binary models.
    trained_on_synthetic_data: the model was trained on synthetic data (the processor's field of that name).
    """

    detector: str | None = DEFAULT_DETECTOR
    detector_min_boxes: int | None = None
    detector_max_boxes: int | None = None
    detector_score_threshold: float | None = None
    detector_nms_thresholds: list[float] | None = None
    detector_min_size: int | None = None
    detector_max_size: int | None = None
    max_regions: int = 100
    max_text_length: int = 128
    text_pair: bool = False
    fasttext_model: str = "fasttext/fasttext.bin"
    fasttext_lowercase: bool | None = None
    image_processor: str | None = None
    threshold: float = 0.5
    ocr_lang: str = "eng"
    max_pixels: int = DEFAULT_MAX_PIXELS
    label_names: list[str] = field(default_factory=lambda: list(BINARY_LABEL_NAMES))
    detector_feature_dtype: str = "float16"
    trained_on_synthetic_data: bool = False

    @classmethod
    def from_dict(cls, values: dict, source: str = "settings") -> "PipelineSettings":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{source}: unknown pipeline setting(s) {unknown}; known: {sorted(known)}")
        return cls(**values)


def save_pipeline_config(folder, **settings) -> Path:
    """Write ``hm_hf_pipeline.json`` into a model folder (atomically); returns its path. (The old format: for
    tests and tools that make such folders; hm_hf saves a `MemeProcessor` instead.)

    >>> save_pipeline_config("outputs/synthetic-tiny", detector="synthetic", max_regions=16)  # doctest: +SKIP
    """
    values = asdict(PipelineSettings.from_dict(settings))
    path = Path(folder) / PIPELINE_CONFIG_NAME
    atomic_write_text(path, json.dumps(values, indent=2) + "\n")
    return path


def load_pipeline_config(path, **hub) -> dict:
    """The settings saved in a model folder / Hub repo ({} when it has none); `hub`: the Hub options."""
    file = model_file(str(path), PIPELINE_CONFIG_NAME, **hub)
    if file is None:
        return {}
    return read_json_object(file, "pipeline settings", "fix it or delete it to use the defaults")


def translate(values: dict, source: str = "settings") -> dict:
    """Settings named as in ``hm_hf_pipeline.json`` or as `MemeProcessor`'s fields -> `MemeProcessor` keyword
    arguments (only those given; None leaves a setting at its default). Unknown names are an error."""
    processor_fields = {f.name for f in dataclasses.fields(MemeProcessor)} - set(MemeProcessor.PARTS)
    old_fields = {f.name for f in fields(PipelineSettings)}
    unknown = sorted(set(values) - processor_fields - old_fields)
    if unknown:
        raise ValueError(f"{source}: unknown pipeline setting(s) {unknown}; known: {sorted(processor_fields | old_fields)}")
    out, detector_settings = {}, {}
    for key, value in values.items():
        if key in _DETECTOR_FIELDS:
            if value:  # (0 / None: the detector's own setting, as before)
                detector_settings[_DETECTOR_FIELDS[key]] = value
        elif key == "text_pair":
            out["text_pair_column"] = "text_pair" if value else None
        elif key in _RENAMED:
            out[_RENAMED[key]] = value
        elif value is not None or key in ("detector", "fasttext_lowercase"):
            out[key] = value
    if detector_settings:
        out["detector_settings"] = {**out.get("detector_settings", {}), **detector_settings}
    return out
