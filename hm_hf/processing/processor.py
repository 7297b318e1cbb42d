"""`MemeProcessor`: everything that turns a meme (image + text) into one hm_hf model's inputs, saved with it.

The transformers processor idiom: training builds one (`hm_hf.training.data.build_processor`) and hands it to
the Trainer as its data collator; `save_pretrained` writes it beside the model as ``processor_config.json``
(the file transformers' processors use; ``AutoProcessor.from_pretrained(folder)`` returns it) with the
tokenizer's and the image processor's own files, the fastText model and the model's decision policy
(``decision_policy.json``: the temperature and the threshold fitted on the evaluation split,
`hm_hf.metrics.policy.DecisionPolicy`); `HatefulMemePipeline` loads it with `from_pretrained`, so
inference feeds the model exactly as training did and decides as training chose.

The threshold has one owner, the decision policy: ``processor.threshold`` reads it, and
``processor_config.json`` no longer holds one. Older folders' ``threshold`` setting (in
``processor_config.json`` or ``hm_hf_pipeline.json``) is read as a hand-chosen policy ("fixed@<t>", T = 1)
when the folder has no ``decision_policy.json``; with one, the policy file wins. A ``threshold=`` given to
`from_pretrained` replaces the saved policy's threshold (rule "fixed@<t>") and keeps its temperature. A
multi-label model has no decision policy: its labels' thresholds (``label_thresholds``, 0.5 each unless
``threshold=`` set them) are a processor setting.

What a model reads is declared by its config class (``model_inputs``, one of `INPUT_KINDS` each), so a new
model only declares it. Folders saved before this file existed have ``hm_hf_pipeline.json`` instead; they
load too (`hm_hf.processing.legacy`).

Example:

```python
>>> from hm_hf.processing import MemeProcessor
>>> processor = MemeProcessor.from_pretrained("outputs/synthetic-tiny")  # doctest: +SKIP
>>> processor.model_inputs, processor.detector  # doctest: +SKIP
(('text', 'regions'), 'synthetic')
>>> batch = processor([dataset[0], dataset[1]])  # dataset rows -> model inputs  # doctest: +SKIP
```
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from hm_hf.fileio import atomic_path, atomic_write_text, read_json_object
from hm_hf.hub import model_file, model_path, other_repo_options
from hm_hf.images import DEFAULT_MAX_PIXELS
from hm_hf.metrics.policy import POLICY_FILE, DecisionPolicy
from hm_hf.synthetic.world import DETECTOR_NAME as SYNTHETIC_DETECTOR

logger = logging.getLogger(__name__)

__all__ = [
    "BINARY_LABEL_NAMES",
    "DEFAULT_DETECTOR",
    "FASTTEXT_MODEL",
    "INPUT_KINDS",
    "PROCESSOR_CONFIG_NAME",
    "SYNTHETIC_DETECTOR",
    "MemeProcessor",
    "detector_for_features",
    "model_inputs",
]

PROCESSOR_CONFIG_NAME = "processor_config.json"
MULTI_LABEL_THRESHOLD = 0.5  # a label of a multi-label head is predicted when its sigmoid is > 0.5 (WOAH 2021)
LEGACY_SETTINGS = frozenset({"threshold"})  # read from older files, not saved (see the module docstring)
DEFAULT_DETECTOR = "unc-nlp/frcnn-vg-finetuned"
BINARY_LABEL_NAMES = ("not hateful", "hateful")  # a binary model's classes, in its config and its processor
FASTTEXT_MODEL = "fasttext/fasttext.bin"  # where a model folder keeps its fastText model

#: what a model can read; a config's ``model_inputs`` lists some of these
INPUT_KINDS = {
    "text": "the tokenised text, its pair (MMHS150K's image text) as a second segment: input_ids, attention_mask, "
            "token_type_ids",
    "clip_text": "one tokenised string per meme (text and pair joined: CLIP pools at its first end-of-text token), "
                 "at most the tokenizer's model_max_length tokens, no token_type_ids",
    "text_embedding": "a fastText sentence vector of the text (and pair): text_embedding",
    "regions": "a detector's region features: visual_embeds, visual_attention_mask, visual_boxes",
    "pixels": "the image through the model's image processor: pixel_values",
}
TOKEN_INPUTS = frozenset({"text", "clip_text"})


def model_inputs(config) -> tuple[str, ...]:
    """What a model config declares it reads (its class's ``model_inputs``), checked against `INPUT_KINDS`."""
    declared = getattr(config, "model_inputs", None)
    if not declared:
        raise TypeError(f"{type(config).__name__} does not declare model_inputs (what it reads, from "
                        f"{sorted(INPUT_KINDS)}); hm_hf configs declare it")
    unknown = sorted(set(declared) - set(INPUT_KINDS))
    if unknown:
        raise ValueError(f"{type(config).__name__}.model_inputs has unknown kinds {unknown}; known: {sorted(INPUT_KINDS)}")
    return tuple(declared)


def detector_for_features(source: dict) -> dict:
    """The detector reference that made a feature cache (its recorded ``source``): ``detector`` and
    ``detector_settings``, the detector config's fields recorded there (box selection, NMS, test-time resize;
    whatever `hm_hf.extract` records), to be set on the detector at inference."""
    if source.get("name") == SYNTHETIC_DETECTOR:
        return {"detector": SYNTHETIC_DETECTOR, "detector_settings": {}}
    from hm_hf.extract.configuration_frcnn import FrcnnConfig

    fields = {f.name for f in dataclasses.fields(FrcnnConfig)}
    return {"detector": DEFAULT_DETECTOR, "detector_settings": {k: v for k, v in source.items() if k in fields}}


@dataclass
class MemeProcessor:
    """Turns dataset rows, or a pipeline's image + text, into one model's inputs; the Trainer's data collator.

    Parts (saved with their own ``save_pretrained``): ``tokenizer`` (for "text" / "clip_text" models),
    ``image_processor`` ("pixels"), ``fasttext`` (the loaded fastText model of "text_embedding" models, needed
    at inference only: training rows carry the vectors), ``decision_policy`` (a `DecisionPolicy`, saved as
    ``decision_policy.json``; None: the model's own decisions, T = 1 and 0.5 or arg-max).

    Settings (``processor_config.json``):
        model_inputs: what the model reads (its config's ``model_inputs``).
        text_column / text_pair_column / label_column / image_column / text_embedding_column: the row fields;
            a text pair is MMHS150K's image text (the pipeline fills it by OCR).
        max_text_length / max_regions / region_dtype: as in training ("float16" under mixed precision).
        feature_dtype: how the training features were stored ("float16" or "float32", the feature cache's
            dtype); detected features are rounded to it, so the model reads them as it read its training data.
        detector / detector_settings: the detector that made the training features (folder, Hub id, or
            "synthetic"; a relative path other than a Hub id is a part of the model, read inside its folder or
            Hub repo, never the working directory) and the fields of its config
            to set before running it (box selection, NMS, resize), as recorded with the features.
        fasttext_model / fasttext_lowercase: the fastText model (relative to the model folder or Hub repo once
            saved; its ``.json`` record comes with it) and whether to lowercase (None: as recorded with the model).
        image_processor_name_or_path: where the image processor is, when the model folder has none (a folder
            of the model's first, else a path or Hub id).
        ocr_engine / ocr_lang: how the pipeline reads a meme's text when none is given (`hm_hf.ocr`): "ppocr"
            (PP-OCR, the default: it reads meme captions), "tesseract" (the fallback, and other languages) or
            "auto" (ppocr when installed, else Tesseract). Saved as set, so a folder says which engine its
            model's text comes from.
        max_pixels: larger images are refused before they are decoded.
        label_names: the classes' names (a multi-label model's label vocabulary, e.g. the protected
            categories). The threshold from which a binary model's label is "hateful" is the decision policy's
            (``threshold`` reads it).
        multi_label: the model has a multi-label head (``problem_type="multi_label_classification"``): labels
            are lists of class ids, collated as multi-hot vectors, and each label is predicted when its sigmoid
            score is > 0.5 (the fine-grained shared task's rule), or > its ``label_thresholds`` entry.
        label_thresholds: a multi-label model's threshold per label (None: 0.5 each); ``threshold=`` given to
            `from_pretrained` sets it (one number for every label, or a list with one per label).
        trained_on_synthetic_data: the model was trained on `hm_hf.synthetic` data (coloured shapes and made-up
            words), so its output on real memes means nothing; the Space says so next to the model name.
    """

    model_inputs: tuple[str, ...]
    tokenizer: Any = None
    image_processor: Any = None
    fasttext: Any = None
    decision_policy: Any = None
    text_column: str = "text"
    text_pair_column: str | None = None
    label_column: str = "label"
    image_column: str = "image"
    text_embedding_column: str = "text_embedding"
    max_text_length: int = 128
    max_regions: int = 100
    region_dtype: str = "float32"
    feature_dtype: str = "float16"
    detector: str | None = DEFAULT_DETECTOR
    detector_settings: dict = field(default_factory=dict)
    fasttext_model: str = FASTTEXT_MODEL
    fasttext_lowercase: bool | None = None
    image_processor_name_or_path: str | None = None
    ocr_engine: str = "ppocr"
    ocr_lang: str = "eng"
    max_pixels: int = DEFAULT_MAX_PIXELS
    label_names: list[str] = field(default_factory=lambda: list(BINARY_LABEL_NAMES))
    multi_label: bool = False
    label_thresholds: list[float] | None = None
    trained_on_synthetic_data: bool = False

    #: the attributes saved by their own save_pretrained, not in processor_config.json
    PARTS = ("tokenizer", "image_processor", "fasttext", "decision_policy")

    def __post_init__(self):
        check_settings({name: getattr(self, name) for name in _SETTINGS})
        self.model_inputs = tuple(self.model_inputs)
        missing = [what for what, part, kinds in (("a tokenizer", self.tokenizer, TOKEN_INPUTS),
                                                   ("an image processor", self.image_processor, {"pixels"}))
                   if part is None and kinds & set(self.model_inputs)]
        if missing:
            raise ValueError(f"this model reads {sorted(self.model_inputs)} and needs {', '.join(missing)}")
        self._check_text_length()
        if self.decision_policy is not None and not isinstance(self.decision_policy, DecisionPolicy):
            raise TypeError(f"decision_policy must be a DecisionPolicy, got {type(self.decision_policy).__name__}")
        if self.label_thresholds is not None and (not self.multi_label or len(self.label_thresholds) != len(
                self.label_names)):
            raise ValueError(f"label_thresholds {self.label_thresholds} must be one threshold per label of a multi-label "
                             f"model, which has {len(self.label_names)} labels ({', '.join(self.label_names)})")
        if self.multi_label and self.decision_policy is not None:
            raise ValueError("a multi-label model predicts each label when its score is > 0.5 (the shared task's "
                             "rule); a DecisionPolicy is for single-label models")

    def _check_text_length(self) -> None:
        """Refuse a max_text_length that leaves no room for the text: a tokenizer asked to cut a text to fewer
        tokens than its own special tokens ([CLS], [SEP], ...) cuts nothing, so every text would reach the model
        whole (and fail there past its positions), in training and at inference alike."""
        count = getattr(self.tokenizer, "num_special_tokens_to_add", None)
        if count is None or not set(self.model_inputs) & TOKEN_INPUTS:
            return
        pair = self.text_pair_column is not None and "text" in self.model_inputs  # (CLIP joins the pair: one text)
        special = count(pair=pair)
        if self.max_text_length <= special:
            raise ValueError(f"max_text_length {self.max_text_length} leaves no room for text: the tokenizer adds "
                             f"{special} special tokens{' to a text pair' if pair else ''}, and a tokenizer cannot cut "
                             f"below them, so texts would not be cut at all; set max_text_length above {special}")

    @classmethod
    def for_model(cls, config, **kwargs) -> "MemeProcessor":
        """The processor of a model with this config (`model_inputs` from its declaration)."""
        return cls(model_inputs=model_inputs(config), **kwargs)

    @property
    def threshold(self) -> float | None:
        """The probability from which a binary model's label is "hateful": the decision policy's (0.5 without
        one); None for arg-max decisions; a multi-label model's threshold when all its labels share one
        (0.5 by default), else None (see `thresholds_per_label`)."""
        if self.multi_label:
            common = set(self.thresholds_per_label)
            return common.pop() if len(common) == 1 else None
        return self.decision_policy.threshold if self.decision_policy is not None else 0.5

    @property
    def thresholds_per_label(self) -> list[float]:
        """A multi-label model's threshold for each label (`label_thresholds`, else 0.5 each)."""
        if self.label_thresholds is not None:
            return [float(t) for t in self.label_thresholds]
        return [MULTI_LABEL_THRESHOLD] * len(self.label_names)

    @property
    def reads_text(self) -> bool:
        return bool(set(self.model_inputs) & (TOKEN_INPUTS | {"text_embedding"}))

    # ------------------------------------------------------------------ rows -> model inputs

    @property
    def collator(self):
        """The batch maker for these settings (built here only): `ClipMemeCollator` for "clip_text" models,
        else `MemeCollator`."""
        from hm_hf.data.collator import MemeCollator

        inputs = set(self.model_inputs)
        collator_class = MemeCollator
        if "clip_text" in inputs:
            from hm_hf.models.clip.embedding_cache import ClipMemeCollator as collator_class
        return collator_class(
            tokenizer=self.tokenizer if inputs & TOKEN_INPUTS else None,
            text_column=self.text_column,
            text_pair_column=self.text_pair_column,
            max_length=self.max_text_length,
            use_regions="regions" in inputs,
            max_regions=self.max_regions,
            text_embedding_column=self.text_embedding_column if "text_embedding" in inputs else None,
            image_processor=self.image_processor if "pixels" in inputs else None,
            image_column=self.image_column,
            label_column=self.label_column,
            region_dtype=self.region_dtype,
            multi_label_classes=len(self.label_names) if self.multi_label else None,
        )

    def __call__(self, rows: list[dict]) -> dict:
        """Dataset rows -> the model's batch (tensors); what the Trainer calls."""
        return self.collator(rows)

    # ------------------------------------------------------------------ what the pipeline adds to a row

    def read_text(self, image) -> str:
        """The text written on a meme image, by OCR (`hm_hf.ocr`) with this processor's engine and language."""
        from hm_hf.ocr import read_text

        return read_text(image, lang=self.ocr_lang, engine=self.ocr_engine)

    def ocr_engine_info(self) -> dict:
        """The OCR engine this processor reads text with, loaded: {"engine", "version", "lang", ...}
        (`hm_hf.ocr.OcrEngine.info`); raises `hm_hf.ocr.OcrUnavailableError` saying what to install."""
        from hm_hf.ocr import get_ocr_engine

        return get_ocr_engine(self.ocr_engine, lang=self.ocr_lang).info()

    def text_embeddings(self, rows: Sequence[dict]) -> np.ndarray:
        """The fastText sentence vectors of rows' text (and pair, joined with a space as in training)."""
        if self.fasttext is None:
            raise ValueError("this model reads fastText sentence vectors: load the processor with from_pretrained "
                             "(or pass fasttext=hm_hf.text.fasttext_embeddings.load_fasttext(...))")
        from hm_hf.text.fasttext_embeddings import sentence_vectors

        columns = [self.text_column] + ([self.text_pair_column] if self.text_pair_column else [])
        texts = [" ".join(str(row[c]) for c in columns if row.get(c)) for row in rows]
        return sentence_vectors(self.fasttext, texts, lowercase=bool(self.fasttext_lowercase))

    def region_fields(self, regions) -> dict:
        """A detector's `DetectedRegions` as the row fields the collator reads (features rounded to the training
        features' storage dtype)."""
        return {
            "region_features": regions.features.float().cpu().numpy().astype(self.feature_dtype),
            "boxes": regions.boxes.float().cpu().numpy(),
            "image_width": regions.image_width,
            "image_height": regions.image_height,
        }

    def post_process(self, logits) -> list[dict]:
        """Logits (B, num_labels) -> per meme: probability of "hateful", label, label_name, scores, and how it
        was decided: threshold, threshold_rule, calibrated.

        The decision policy divides the logits by its temperature (``calibrated``: one fitted on an evaluation
        split) and decides. Binary models: class 1 is hateful, the label is ``probability >= threshold``. More
        classes (MMHS150K's fine labels): class 0 is "not hate", the probability is 1 - p(class 0) and the
        label the arg-max. Multi-label models: `post_process_multi_label`."""
        logits = _numpy(logits)
        if self.multi_label:
            return self.post_process_multi_label(logits)
        policy = self.decision_policy if self.decision_policy is not None else DecisionPolicy.neutral(logits.shape[-1])
        probabilities, labels = policy.probabilities(logits), policy.decide(logits)
        decided = {"threshold": policy.threshold, "threshold_rule": policy.rule, "calibrated": policy.calibrated}
        out = []
        for p, label in zip(probabilities, labels.tolist()):
            hateful = float(p[1]) if len(p) == 2 else float(1.0 - p[0])
            name = self.label_names[label] if label < len(self.label_names) else str(label)
            out.append({"probability": hateful, "label": label, "label_name": name, "scores": [float(x) for x in p],
                        **decided})
        return out

    def post_process_multi_label(self, logits) -> list[dict]:
        """Logits (B, C) of a multi-label head -> per meme: the predicted labels (sigmoid > the label's threshold:
        0.5, the shared task's rule, unless `label_thresholds` says otherwise), their ids, every label's score
        and threshold."""
        from hm_hf.metrics import sigmoid

        scores = sigmoid(_numpy(logits))
        if scores.shape[-1] != len(self.label_names):
            raise ValueError(f"the model gives {scores.shape[-1]} labels but the processor names "
                             f"{len(self.label_names)}: use the processor saved with this model")
        thresholds = self.thresholds_per_label
        out = []
        for row in scores:
            ids = [i for i, (p, t) in enumerate(zip(row, thresholds)) if p > t]
            out.append({"labels": [self.label_names[i] for i in ids], "label_ids": ids,
                        "scores": {name: float(p) for name, p in zip(self.label_names, row)},
                        "threshold": self.threshold, "thresholds": dict(zip(self.label_names, thresholds))})
        return out

    # ------------------------------------------------------------------ saving and loading

    def to_dict(self) -> dict:
        """The settings, as ``processor_config.json`` holds them."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in self.PARTS}
        values["model_inputs"] = list(self.model_inputs)
        return {"processor_class": type(self).__name__, **values}

    def save_pretrained(self, folder, **_) -> list[str]:
        """Write ``processor_config.json`` (atomically), the tokenizer's and image processor's files, the
        decision policy (``decision_policy.json``) and, for fastText models, the fastText model (copied into
        ``fasttext/``) into `folder`; returns the files written here."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for part in (self.tokenizer, self.image_processor):
            if part is not None:
                part.save_pretrained(str(folder))
        values = self.to_dict()
        if "text_embedding" in self.model_inputs:
            values["fasttext_model"] = self._save_fasttext(folder)
        written = []
        if self.decision_policy is not None:
            written.append(str(self.decision_policy.save_pretrained(folder)))
        elif (folder / POLICY_FILE).is_file():  # another model's (or an earlier run's): it would decide for this one
            (folder / POLICY_FILE).unlink()
            logger.info("%s: removed the %s saved there before; this processor has no decision policy", folder,
                        POLICY_FILE)
        atomic_write_text(folder / PROCESSOR_CONFIG_NAME, json.dumps(values, indent=2) + "\n")
        return [str(folder / PROCESSOR_CONFIG_NAME), *written]

    def _save_fasttext(self, folder: Path) -> str:
        source, target = Path(self.fasttext_model), folder / FASTTEXT_MODEL
        if not source.is_file():
            raise FileNotFoundError(f"fastText model {source} not found: the processor of a fastText model saves it "
                                    "beside the model (set fasttext_model to the .bin the model was trained with)")
        if source.resolve() != target.resolve():
            for suffix in ("", ".json"):  # the model and its metadata (lowercase, ...)
                if Path(f"{source}{suffix}").is_file():
                    with atomic_path(f"{target}{suffix}") as tmp:
                        shutil.copyfile(f"{source}{suffix}", tmp)
        return FASTTEXT_MODEL

    @classmethod
    def from_pretrained(cls, path, config=None, *, tokenizer=None, image_processor=None, fasttext=None,
                        decision_policy: DecisionPolicy | None = None, revision: str | None = None,
                        **settings) -> "MemeProcessor":
        """The processor saved in a model folder or Hub repo: ``processor_config.json``, else an older folder's
        ``hm_hf_pipeline.json``, else the defaults; `settings` override it (its names, or the old file's;
        ``threshold=`` sets the decision policy's threshold, see the module docstring).

        `config` (the model's config) says what the model reads when the folder does not (older folders); the
        parts not given are loaded from the folder, the decision policy from ``decision_policy.json``.
        ``AutoProcessor.from_pretrained(folder)`` lands here. The Hub options (`hm_hf.hub.HUB_OPTIONS`:
        ``revision``, ``token``, ``cache_dir``, ...) apply to every file and part read from a Hub repo.
        """
        from hm_hf.hub import HUB_OPTIONS, hub_options
        from hm_hf.processing import legacy

        path = str(path)
        hub = hub_options({**settings, "revision": revision})
        for not_a_setting in ("_from_auto", "trust_remote_code", *HUB_OPTIONS):  # AutoProcessor passes these on
            settings.pop(not_a_setting, None)
        values = read_settings(path, **hub)
        saved_threshold = values.pop("threshold", None)
        overrides = legacy.translate(settings, source="the settings given")
        given_threshold = overrides.pop("threshold", None)
        if "detector_settings" in overrides:  # one detector setting given: the others stay as saved
            overrides["detector_settings"] = {**values.get("detector_settings", {}), **overrides["detector_settings"]}
        values.update(overrides)
        if values.get("multi_label") and given_threshold is not None:  # each label's threshold
            names = values.get("label_names") or []
            given = given_threshold if isinstance(given_threshold, (list, tuple)) else [given_threshold] * len(names)
            if len(given) != len(names):
                raise ValueError(f"threshold={given_threshold!r}: this multi-label model has {len(names)} labels "
                                 f"({', '.join(names)}); give one threshold, or one per label")
            values["label_thresholds"] = list(given)
            given_threshold = None
        if not values.get("model_inputs"):
            values["model_inputs"] = model_inputs(config if config is not None else _model_config(path, hub))
        inputs = set(values["model_inputs"])
        if inputs & TOKEN_INPUTS and tokenizer is None:
            tokenizer = _load_tokenizer(path, hub)
        if "pixels" in inputs and image_processor is None:
            image_processor = _load_image_processor(path, values.get("image_processor_name_or_path"), hub)
        if decision_policy is None and not values.get("multi_label"):
            decision_policy = _load_policy(path, hub, saved_threshold, given_threshold, lambda: (
                config if config is not None else _model_config(path, hub)).num_labels)
        if "text_embedding" in inputs and fasttext is None:
            fasttext, values["fasttext_model"], recorded = _load_fasttext(
                path, values.get("fasttext_model", FASTTEXT_MODEL), hub)
            if values.get("fasttext_lowercase") is None:
                values["fasttext_lowercase"] = recorded
        processor = cls(tokenizer=tokenizer, image_processor=image_processor, fasttext=fasttext,
                        decision_policy=decision_policy, **values)
        files = [model_file(path, name, **hub) for name in (PROCESSOR_CONFIG_NAME, legacy.PIPELINE_CONFIG_NAME)]
        if config is None:
            try:
                config = _model_config(path, hub)
            except OSError:  # (a processor folder without its model: nothing to check against)
                return processor
            declared = getattr(config, "model_inputs", None)  # (the folder's own model: it must read these)
            if declared and set(declared) != set(processor.model_inputs):
                raise ValueError(f"{next((str(f) for f in files if f is not None), path)}: model_inputs "
                                 f"{list(processor.model_inputs)} but the model reads {list(declared)}; fix "
                                 "model_inputs there, or save the processor again")
        processor.check_fits(config, next((str(f) for f in files if f is not None), "the processor settings"),
                             model_file(path, POLICY_FILE, **hub))
        return processor

    def check_fits(self, config, source: str = "the processor", policy_source=None) -> None:
        """Refuse label names or a decision policy made for another model's head (`config`: its label count),
        naming `source` (the settings file) or `policy_source` (``decision_policy.json``); cut max_text_length to
        the model's text positions (a warning), as longer token sequences would fail inside the model."""
        num_labels = int(getattr(config, "num_labels", 2))
        named = len(self.label_names)
        if self.multi_label or num_labels <= 2:
            expected = max(num_labels, 2) if not self.multi_label else num_labels
            fits = named == expected
        else:  # more classes: their names, or the two default names older folders saved (class ids shown)
            expected, fits = num_labels, named in (num_labels, 2)
        if not fits:
            raise ValueError(f"{source}: {named} label_names {self.label_names} but the model has {expected} labels; "
                             "fix label_names there (or pass label_names=[...], one name per class)")
        positions = _text_positions(config)
        reads_tokens = {"text", "clip_text"} & set(self.model_inputs)
        if reads_tokens and positions is not None and self.max_text_length > positions:
            logger.warning("%s: max_text_length %d is more than the model's %d text positions: texts are cut at %d "
                           "tokens (longer ones would fail in the model)", source, self.max_text_length, positions,
                           positions)
            self.max_text_length = positions
        policy = self.decision_policy
        if policy is not None and policy.num_labels != max(num_labels, 2):
            raise ValueError(f"{policy_source or 'the decision policy'}: the decision policy is for {policy.num_labels} "
                             f"labels but the model has {max(num_labels, 2)}: it belongs to another model; delete it "
                             "(threshold 0.5) or re-run training to write it again")


def _text_positions(config) -> int | None:
    """How many text positions the model has (its text encoder's ``max_position_embeddings``), or None."""
    for part in (config, getattr(config, "text_config", None),
                 getattr(getattr(config, "clip_config", None), "text_config", None)):
        positions = getattr(part, "max_position_embeddings", None)
        if isinstance(positions, int):
            return positions
    return None


_SETTINGS = frozenset(f.name for f in dataclasses.fields(MemeProcessor)) - set(MemeProcessor.PARTS)
_TEXTS = ("text_column", "label_column", "image_column", "text_embedding_column", "fasttext_model", "ocr_lang")
_OPTIONAL_TEXTS = ("text_pair_column", "detector", "image_processor_name_or_path")
_COUNTS = ("max_text_length", "max_regions", "max_pixels")
_FLAGS = ("multi_label", "trained_on_synthetic_data")


def check_settings(values: dict) -> None:
    """Check the processor settings in `values` (any subset of `MemeProcessor`'s): a value of the wrong type or
    out of range is a ValueError naming the setting, so a damaged or hand-edited ``processor_config.json`` is
    refused when loaded instead of feeding the model garbage."""
    def fail(name, expected):
        raise ValueError(f"{name} must be {expected}, got {values[name]!r}")

    for name in _TEXTS:
        if name in values and (not isinstance(values[name], str) or not values[name]):
            fail(name, "a non-empty string")
    for name in _OPTIONAL_TEXTS:
        if values.get(name) is not None and (not isinstance(values[name], str) or not values[name]):
            fail(name, "a non-empty string or null")
    for name in _COUNTS:
        if name in values and (isinstance(values[name], bool) or not isinstance(values[name], int)
                               or not 1 <= values[name] < 2**31):
            fail(name, "an integer from 1 to 2**31 - 1")
    for name in _FLAGS:
        if name in values and not isinstance(values[name], bool):
            fail(name, "true or false")
    if values.get("fasttext_lowercase") is not None and not isinstance(values["fasttext_lowercase"], bool):
        fail("fasttext_lowercase", "true, false or null (as recorded with the fastText model)")
    for name in ("region_dtype", "feature_dtype"):
        if name in values and values[name] not in ("float32", "float16"):
            fail(name, "'float32' or 'float16'")
    if "detector_settings" in values and not isinstance(values["detector_settings"], dict):
        fail("detector_settings", "an object of detector config fields")
    if "model_inputs" in values:
        inputs = values["model_inputs"]
        if (not isinstance(inputs, (list, tuple)) or not inputs
                or not all(isinstance(kind, str) and kind in INPUT_KINDS for kind in inputs)):
            fail("model_inputs", f"a list of some of {sorted(INPUT_KINDS)}")
    if "label_names" in values:
        names = values["label_names"]
        if (not isinstance(names, (list, tuple)) or not names or len(set(names)) != len(names)
                or not all(isinstance(n, str) and n for n in names)):
            fail("label_names", "a list of distinct non-empty strings, one per class")
    if values.get("label_thresholds") is not None:
        given = values["label_thresholds"]
        if not isinstance(given, (list, tuple)) or not all(
                isinstance(t, (int, float)) and not isinstance(t, bool) and 0.0 <= t <= 1.0 for t in given):
            fail("label_thresholds", "a list of thresholds between 0 and 1, one per label (or null: 0.5 each)")
    if "ocr_engine" in values:
        from hm_hf.ocr import ENGINES

        if values["ocr_engine"] not in ("auto", *ENGINES):
            raise ValueError(f"unknown OCR engine {values['ocr_engine']!r} (ocr_engine); choose one of "
                             f"{', '.join(['auto', *ENGINES])}")


def _numpy(logits) -> np.ndarray:
    """Logits as a float64 array (a torch tensor is moved to the CPU first)."""
    if hasattr(logits, "detach"):
        logits = logits.detach().float().cpu().numpy()
    return np.asarray(logits, dtype=np.float64)


def _load_policy(path: str, hub: dict, saved_threshold, given_threshold, num_labels) -> DecisionPolicy | None:
    """The folder's decision policy (``decision_policy.json``; an older folder's ``threshold`` setting when it
    has none), with a threshold given by hand applied; None: the model's own decisions. `num_labels()` gives
    the model's label count (read only when needed); `hub`: the Hub options."""
    policy = None
    if model_file(path, POLICY_FILE, **hub) is not None:
        policy = DecisionPolicy.from_pretrained(path, **hub)
        if saved_threshold not in (None, 0.5, policy.threshold):  # (0.5: the old files' default, always written)
            logger.warning("%s: the older threshold setting %s is ignored; the threshold is %s's (%s)", path,
                           saved_threshold, POLICY_FILE, policy.threshold)
    elif saved_threshold is not None and saved_threshold != 0.5 and num_labels() <= 2:
        policy = DecisionPolicy().with_threshold(saved_threshold)  # an older folder's threshold setting
    if given_threshold is not None:
        if policy is None and num_labels() > 2:
            raise ValueError(f"threshold={given_threshold!r}: this model decides {num_labels()} classes by arg-max; "
                             "a threshold applies to binary models")
        policy = (policy or DecisionPolicy()).with_threshold(given_threshold)
    return policy


def read_settings(path: str, **hub) -> dict:
    """The processor settings saved in a model folder / Hub repo: ``processor_config.json``, else an older
    folder's ``hm_hf_pipeline.json`` (translated), else {}. Unknown settings are an error naming the file.
    `hub`: the Hub options (``revision``, ``token``, ...)."""
    from hm_hf.processing import legacy

    file = model_file(path, PROCESSOR_CONFIG_NAME, **hub)
    if file is None:
        old = legacy.load_pipeline_config(path, **hub)
        source = model_file(path, legacy.PIPELINE_CONFIG_NAME, **hub) or f"{path}/{legacy.PIPELINE_CONFIG_NAME}"
        values, fix = legacy.translate(old, source=str(source)), "fix it or delete it to use the defaults"
    else:
        values, source = read_json_object(file, "processor settings", "fix it, or save the processor again"), file
        fix = "fix it, or save the processor again"
        kind = values.pop("processor_class", MemeProcessor.__name__)
        if kind != MemeProcessor.__name__:
            raise ValueError(f"{file} describes a {kind}, not an hm_hf MemeProcessor")
        unknown = sorted(set(values) - _SETTINGS - LEGACY_SETTINGS)
        if unknown:
            raise ValueError(f"{file}: unknown processor setting(s) {unknown}; known: {sorted(_SETTINGS)}")
    try:
        check_settings(values)
        if "threshold" in values:  # an older file's threshold: becomes a hand-set decision policy
            DecisionPolicy().with_threshold(values["threshold"])
    except ValueError as err:
        raise ValueError(f"{source}: {err}; {fix}") from None
    return values


def _model_config(path: str, hub: dict | None = None):
    """The model config of a folder / Hub repo saved by hm_hf (a PEFT folder: its base model's)."""
    from transformers import AutoConfig

    from hm_hf.inference.model_loading import BASE_MODEL_DIR

    for subfolder in ("", BASE_MODEL_DIR):
        try:
            return AutoConfig.from_pretrained(path, subfolder=subfolder, **(hub or {}))
        except (OSError, ValueError):
            continue
    raise OSError(f"{path}: no model config found to tell what the model reads; pass config=")


def _load_tokenizer(path: str, hub: dict | None = None):
    """The tokenizer saved beside the model (else in its ``tokenizer/`` folder, where the recipe also keeps it).

    A tokenizer that loads but knows only its special tokens is refused: transformers builds one when
    ``tokenizer_config.json`` is there but the vocabulary (``tokenizer.json``, ``vocab.txt``, ...) is not, and
    it would turn every word into [UNK] (CLIP: into nothing) without a word of warning."""
    from transformers import AutoTokenizer

    hub = hub or {}
    problems = []
    for subfolder in ("", "tokenizer"):
        where = f"{path}/{subfolder}" if subfolder else path
        try:
            tokenizer = AutoTokenizer.from_pretrained(path, **({"subfolder": subfolder} if subfolder else {}), **hub)
        except Exception as err:  # noqa: BLE001 - tokenizers' own errors (KeyError, TypeError, Exception) too
            problems.append(f"{where}: {type(err).__name__}: {err}")
            continue
        if len(tokenizer) <= len(set(tokenizer.all_special_tokens)):
            problems.append(f"{where}: the tokenizer has no vocabulary beyond its {len(tokenizer)} special tokens "
                            "(tokenizer.json, or vocab.txt / vocab.json + merges.txt, is missing)")
            continue
        return tokenizer
    raise OSError(
        f"{path}: no usable tokenizer beside the model ({problems[0]}); training saves it there (tokenizer.json "
        "with tokenizer_config.json): copy them back, or in Python pass tokenizer=AutoTokenizer.from_pretrained(...)"
    )


def _load_image_processor(path: str, name_or_path: str | None, hub: dict | None = None):
    from transformers import AutoImageProcessor

    hub = hub or {}
    if model_file(path, "preprocessor_config.json", **hub) is not None:
        try:
            return AutoImageProcessor.from_pretrained(path, **hub)
        except Exception as err:  # noqa: BLE001 - a hand-edited file fails anywhere in transformers (AttributeError...)
            raise OSError(f"{path}/preprocessor_config.json (the model's image processor) cannot be read "
                          f"({type(err).__name__}: {err}); copy it back from the vision backbone the model was "
                          "trained with, or pass image_processor=<its folder or Hub id>") from None
    if name_or_path:  # a folder of the model's first (a relative setting is the model's, not the cwd's)
        inside = None if Path(name_or_path).is_absolute() else model_path(path, name_or_path, **hub)
        if inside is not None:
            return AutoImageProcessor.from_pretrained(str(inside))
        return AutoImageProcessor.from_pretrained(name_or_path, **other_repo_options(hub))
    raise OSError(
        f"{path} has no preprocessor_config.json and no image_processor setting: this model reads pixels, so pass "
        "image_processor=<the vision backbone's folder or Hub id> (the recipe's vision_model_name_or_path)"
    )


def _load_fasttext(path: str, name: str, hub: dict | None = None):
    """(fastText model, its file, whether it was trained on lowercased text)."""
    from hm_hf.text.fasttext_embeddings import _read_metadata, load_fasttext

    hub = hub or {}
    file = Path(name) if Path(name).is_absolute() else model_file(path, name, **hub)
    if file is not None and not Path(name).is_absolute():
        model_file(path, f"{name}.json", **hub)  # its record (lowercase, ...) beside it, also from a Hub repo
    if file is None or not file.is_file():
        raise FileNotFoundError(
            f"{path}: this model reads fastText sentence vectors but {name} is not there; "
            "set fasttext_model to the .bin the model was trained with"
        )
    return load_fasttext(file), str(file), bool(_read_metadata(file).get("lowercase", False))
