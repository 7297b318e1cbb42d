"""One inference entry point for every hm_hf model: image (+ text) in, hate probability out.

`HatefulMemePipeline.from_pretrained(path_or_hub_id)` loads whatever `recipes/train_peft.py` saved (a whole
model, or PEFT adapters with their base model) and everything that model reads, as its config says
(`hm_hf.training.data.model_inputs`):

- ``text``: the tokenizer saved beside the model (the text is OCR'd from the image when not given);
- ``text_embedding``: the fastText model saved beside it (``fasttext/fasttext.bin``);
- ``regions``: region features from a detector (`hm_hf.extract`, Faster R-CNN R101-C4 / Visual Genome);
- ``pixels``: the image processor of the concat model's vision backbone.

The batch is then made by the training collator (`MemeCollator`), so inference sees exactly what training
saw. How to run a model that the config alone does not say (which detector, text length, region count, ...)
is in ``hm_hf_pipeline.json`` beside the model (`save_pipeline_config`); arguments of `from_pretrained`
override it.

**Detectors.** Region features must come from the detector that made the training features. For real
data that is the Visual Genome Faster R-CNN (`unc-nlp/frcnn-vg-finetuned`, the default), which must be
reachable (Hub or a local folder: pass ``detector="path/to/frcnn"``); a randomly initialised detector
runs, but its features mean nothing to a trained model. The synthetic data set's features were not made by
any network (see `hm_hf.synthetic.write_region_features`); ``detector="synthetic"`` is the matching
"detector" for that world (`SyntheticShapeDetector`: it finds the drawn shapes by colour and gives the
features the generator would), so the README's tiny model can be demonstrated offline end to end.

Example:

```python
>>> from hm_hf.pipeline import HatefulMemePipeline
>>> pipe = HatefulMemePipeline.from_pretrained("outputs/synthetic-tiny", detector="synthetic")  # doctest: +SKIP
>>> pipe("data/synthetic_hmd/img/00001.png")  # doctest: +SKIP
{'probability': 0.91, 'label': 1, 'label_name': 'hateful', 'text': '...', 'text_source': 'ocr', 'regions': [...]}
>>> pipe(["a.png", "b.png"], texts=["caption a", None], batch_size=8)  # doctest: +SKIP
```

Command line: `hm-hf predict --model outputs/synthetic-tiny img/00001.png [--text "..."]` (JSON lines,
`hm_hf.inference.cli`).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Sequence

import torch

from hm_hf.fileio import atomic_write_text
from hm_hf.hub import model_file
from hm_hf.images import DEFAULT_MAX_PIXELS, load_image
from hm_hf.inference.model_loading import base_config, load_trained_model
from hm_hf.synthetic.world import DETECTOR_NAME

logger = logging.getLogger(__name__)

__all__ = [
    "PIPELINE_CONFIG_NAME",
    "DEFAULT_DETECTOR",
    "PipelineSettings",
    "save_pipeline_config",
    "load_pipeline_config",
    "HatefulMemePipeline",
]

PIPELINE_CONFIG_NAME = "hm_hf_pipeline.json"
DEFAULT_DETECTOR = "unc-nlp/frcnn-vg-finetuned"
SYNTHETIC_DETECTOR = DETECTOR_NAME  # the synthetic world's shape finder (hm_hf.synthetic.detector)


# --------------------------------------------------------------------------------------------- settings


@dataclass
class PipelineSettings:
    """How to run a trained model; stored as ``hm_hf_pipeline.json`` in the model folder.

    detector: detector folder / Hub id for region models, or ``"synthetic"`` (see the module docstring);
        a relative path is read inside the model folder first.
    detector_min_boxes / detector_max_boxes / detector_score_threshold / detector_min_size /
        detector_max_size: the detector's region selection and resize, as used for the training features
        (None: the detector's own config).
    max_regions / max_text_length: as in training (the recipe's `max_regions`, `max_text_length`).
    text_pair: for models trained with a text pair (MMHS150K: tweet text + `img_text`): the OCR'd image
        text becomes the pair and the given text the first segment.
    fasttext_model: the fastText model of `text_embedding` models, relative to the model folder.
    fasttext_lowercase: lowercase before embedding (None: as recorded with the fastText model).
    image_processor: image processor (folder / Hub id) of a vision-backbone model, when the model folder
        has no ``preprocessor_config.json``.
    threshold: probability from which the label is "hateful".
    ocr_lang: Tesseract language(s), e.g. "eng" or "eng+deu".
    max_pixels: images with more pixels are refused before they are decoded.
    label_names: names of the classes, class 1 being hateful for binary models.
    """

    detector: str | None = DEFAULT_DETECTOR
    detector_min_boxes: int | None = None
    detector_max_boxes: int | None = None
    detector_score_threshold: float | None = None
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
    label_names: list[str] = field(default_factory=lambda: ["not hateful", "hateful"])

    @classmethod
    def from_dict(cls, values: dict, source: str = "settings") -> "PipelineSettings":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{source}: unknown pipeline setting(s) {unknown}; known: {sorted(known)}")
        return cls(**values)


def save_pipeline_config(folder, **settings) -> Path:
    """Write ``hm_hf_pipeline.json`` into a model folder (atomically); returns its path.

    >>> save_pipeline_config("outputs/synthetic-tiny", detector="synthetic", max_regions=16)  # doctest: +SKIP
    """
    values = asdict(PipelineSettings.from_dict(settings))
    path = Path(folder) / PIPELINE_CONFIG_NAME
    atomic_write_text(path, json.dumps(values, indent=2) + "\n")
    return path


def load_pipeline_config(path) -> dict:
    """The settings saved in a model folder / Hub repo ({} when it has none)."""
    file = model_file(str(path), PIPELINE_CONFIG_NAME)
    if file is None:
        return {}
    try:
        values = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{file}: not valid JSON ({err.msg}); fix it or delete it to use the defaults") from err
    if not isinstance(values, dict):
        raise ValueError(f"{file}: expected a JSON object of pipeline settings")
    return values


# ----------------------------------------------------------------------------------------------- pipeline


class HatefulMemePipeline:
    """Image (+ optional text) -> {"probability", "label", "label_name", "text", "text_source", "regions"}.

    Build it with `from_pretrained`; the constructor takes ready parts (tests, custom set-ups).
    """

    def __init__(
        self,
        model,
        tokenizer=None,
        image_processor=None,
        detector=None,
        fasttext_model=None,
        settings: PipelineSettings | None = None,
        device: str | torch.device | None = None,
        fasttext_lowercase: bool | None = None,
    ):
        from hm_hf.data.collator import MemeCollator
        from hm_hf.training.data import model_inputs

        self.settings = settings or PipelineSettings()
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.to(self.device).eval()
        self.config = base_config(model)
        self.needs = model_inputs(self.config)
        missing = [what for what, part, need in (
            ("a tokenizer", tokenizer, "text"), ("a detector", detector, "regions"),
            ("an image processor", image_processor, "pixels"), ("a fastText model", fasttext_model, "text_embedding"),
        ) if need in self.needs and part is None]  # fmt: skip
        if missing:
            raise ValueError(f"this model reads {sorted(self.needs)} and needs {', '.join(missing)}")
        self.tokenizer, self.image_processor, self.fasttext_model = tokenizer, image_processor, fasttext_model
        self.detector = detector.to(self.device) if detector is not None and hasattr(detector, "to") else detector
        if self.detector is not None and hasattr(self.detector, "eval"):
            self.detector.eval()
        if fasttext_lowercase is None:
            fasttext_lowercase = self.settings.fasttext_lowercase
        self.fasttext_lowercase = bool(fasttext_lowercase)
        collator_class = MemeCollator
        if "clip" in self.needs:  # CLIP: one text string per meme, <= 77 tokens, no token types
            from hm_hf.models.clip.embedding_cache import ClipMemeCollator as collator_class
        self.collator = collator_class(
            tokenizer=tokenizer if "text" in self.needs else None,
            text_column="text",
            text_pair_column="text_pair" if self.settings.text_pair else None,
            max_length=self.settings.max_text_length,
            use_regions="regions" in self.needs,
            max_regions=self.settings.max_regions,
            text_embedding_column="text_embedding" if "text_embedding" in self.needs else None,
            image_processor=image_processor if "pixels" in self.needs else None,
            label_column="__no_labels__",
        )

    @property
    def reads_text(self) -> bool:
        return bool(self.needs & {"text", "text_embedding"})

    @property
    def uses_regions(self) -> bool:
        return "regions" in self.needs

    # ------------------------------------------------------------------ loading

    @classmethod
    def from_pretrained(
        cls,
        path,
        detector=None,
        tokenizer=None,
        image_processor=None,
        device: str | torch.device | None = None,
        **settings,
    ) -> "HatefulMemePipeline":
        """Load a model folder / Hub repo saved by the training recipe and what it needs to run.

        `detector` may be a loaded detector, a folder / Hub id, or "synthetic"; other keyword arguments
        override ``hm_hf_pipeline.json`` (see `PipelineSettings`).
        """
        from hm_hf.training.data import model_inputs

        path = str(path)
        looks_local = path.startswith((".", "/", "~")) or path.count("/") != 1 or Path(path.split("/")[0]).is_dir()
        if not Path(path).exists() and looks_local:
            raise FileNotFoundError(
                f"model {path!r} not found: give a folder saved by recipes/train_peft.py (e.g. outputs/synthetic-tiny, "
                "made by the README's main job) or a Hub id like org/name"
            )
        values = load_pipeline_config(path)
        values.update({k: v for k, v in settings.items() if v is not None})
        if isinstance(detector, (str, os.PathLike)):
            values["detector"] = str(detector)
        options = PipelineSettings.from_dict(values, source=f"{path}/{PIPELINE_CONFIG_NAME}")
        model = load_trained_model(path)
        config = base_config(model)
        needs = model_inputs(config)
        if "text" in needs and tokenizer is None:
            tokenizer = _load_tokenizer(path)
        if "pixels" in needs and image_processor is None:
            image_processor = _load_image_processor(path, options)
        fasttext_model, lowercase = None, options.fasttext_lowercase
        if "text_embedding" in needs:
            fasttext_model, recorded = _load_fasttext(path, options)
            lowercase = recorded if lowercase is None else lowercase
        if "regions" in needs and (detector is None or isinstance(detector, (str, os.PathLike))):
            detector = _load_detector(path, options, config)
        pipe = cls(model, tokenizer=tokenizer, image_processor=image_processor, detector=detector,
                   fasttext_model=fasttext_model, settings=options, device=device, fasttext_lowercase=lowercase)
        return pipe

    def save_pretrained(self, folder) -> None:
        """Save the model, tokenizer / image processor and settings (a detector is referred to, not copied)."""
        folder = Path(folder)
        self.model.save_pretrained(str(folder))
        for part in (self.tokenizer, self.image_processor):
            if part is not None:
                part.save_pretrained(str(folder))
        save_pipeline_config(folder, **asdict(self.settings))

    # ------------------------------------------------------------------ inference

    def __call__(
        self,
        images,
        texts: str | Sequence[str | None] | None = None,
        batch_size: int = 8,
        text_pairs: Sequence[str | None] | None = None,
        return_regions: bool = True,
    ):
        """Classify one meme (returns a dict) or a list of memes (returns a list of dicts).

        images: path, bytes, PIL image or array, or a list of them. texts: the memes' text; None (or a
        None / "" entry) means: read it from the image with OCR (Tesseract).
        """
        single = not isinstance(images, (list, tuple))
        images = [images] if single else list(images)
        if texts is None or isinstance(texts, str):
            texts = [texts] * len(images)
        texts = list(texts)
        if len(texts) != len(images):
            raise ValueError(f"got {len(images)} images but {len(texts)} texts")
        pairs = list(text_pairs) if text_pairs is not None else [None] * len(images)
        if len(pairs) != len(images):
            raise ValueError(f"got {len(images)} images but {len(pairs)} text pairs")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        results = []
        for start in range(0, len(images), batch_size):
            stop = start + batch_size
            results += self._batch(images[start:stop], texts[start:stop], pairs[start:stop], return_regions)
        return results[0] if single else results

    def _batch(self, sources, texts, pairs, return_regions: bool) -> list[dict]:
        from hm_hf.ocr import read_text

        images = [load_image(s, max_pixels=self.settings.max_pixels) for s in sources]
        rows, outputs = [], []
        for image, text, pair in zip(images, texts, pairs):
            row, out = {}, {}
            if self.reads_text:
                ocr_needed = (not text or not text.strip()) or (self.settings.text_pair and not pair)
                ocr = read_text(image, lang=self.settings.ocr_lang) if ocr_needed else None
                if self.settings.text_pair:
                    row["text"], row["text_pair"] = text or "", pair if pair else ocr
                    out["text_pair"] = row["text_pair"]
                    out["text_source"] = "given" if pair else "ocr"
                else:
                    given = bool(text and text.strip())
                    row["text"] = text.strip() if given else ocr
                    out["text_source"] = "given" if given else "ocr"
                out["text"] = row["text"]
            else:
                out["text"], out["text_source"] = text or "", "unused"
            if "pixels" in self.needs:
                row["image"] = image
            rows.append(row)
            outputs.append(out)
        if "text_embedding" in self.needs:
            from hm_hf.text.fasttext_embeddings import sentence_vectors

            joined = [" ".join(p for p in (r["text"], r.get("text_pair")) if p) for r in rows]
            vectors = sentence_vectors(self.fasttext_model, joined, lowercase=self.fasttext_lowercase)
            for row, vector in zip(rows, vectors):
                row["text_embedding"] = vector
        detected = None
        if self.uses_regions:
            resize = {k: v for k, v in (("min_size", self.settings.detector_min_size),
                                        ("max_size", self.settings.detector_max_size)) if v}
            with torch.inference_mode():
                detected = self.detector.extract(images, **resize)
            for row, regions in zip(rows, detected):
                row.update(
                    region_features=regions.features.float().cpu().numpy(),
                    boxes=regions.boxes.float().cpu().numpy(),
                    image_width=regions.image_width,
                    image_height=regions.image_height,
                )
        batch = {k: v.to(self.device) for k, v in self.collator(rows).items()}
        with torch.inference_mode():
            logits = self.model(**batch).logits.float()
        probabilities = torch.softmax(logits, dim=-1).cpu().numpy()
        names = self.settings.label_names
        for i, out in enumerate(outputs):
            p = probabilities[i]
            hateful = float(p[1]) if len(p) == 2 else float(1.0 - p[0])  # class 0 = not hate (MMHS fine labels)
            label = int(hateful >= self.settings.threshold) if len(p) == 2 else int(p.argmax())
            out.update(probability=hateful, label=label, scores=[float(x) for x in p])
            out["label_name"] = names[label] if label < len(names) else str(label)
            if detected is not None and return_regions:
                out["regions"] = self._regions(detected[i])
        return outputs

    def _regions(self, regions) -> list[dict]:
        name = getattr(self.detector, "region_name", None)
        kept = min(regions.num_boxes, self.settings.max_regions)
        return [
            {
                "box": [round(float(v), 1) for v in regions.boxes[j].tolist()],
                "score": float(regions.object_scores[j]),
                "object_id": int(regions.object_ids[j]),
                "name": name(int(regions.object_ids[j])) if name else f"object {int(regions.object_ids[j])}",
            }
            for j in range(kept)
        ]


def _load_tokenizer(path: str):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as first:
        try:  # the recipe also keeps the tokenizer it trained in tokenizer/
            return AutoTokenizer.from_pretrained(path, subfolder="tokenizer")
        except (OSError, ValueError):
            raise OSError(
                f"{path}: no tokenizer found beside the model ({first}); "
                "pass tokenizer=AutoTokenizer.from_pretrained(...)"
            ) from None


def _load_image_processor(path: str, options: PipelineSettings):
    from transformers import AutoImageProcessor

    if model_file(path, "preprocessor_config.json") is not None:
        return AutoImageProcessor.from_pretrained(path)
    if options.image_processor:
        return AutoImageProcessor.from_pretrained(options.image_processor)
    raise OSError(
        f"{path} has no preprocessor_config.json and no image_processor setting: this model reads pixels, so pass "
        "image_processor=<the vision backbone's folder or Hub id> (the recipe's vision_model_name_or_path)"
    )


def _load_fasttext(path: str, options: PipelineSettings):
    from hm_hf.text.fasttext_embeddings import _read_metadata, load_fasttext

    file = model_file(path, options.fasttext_model)
    if file is None:
        raise FileNotFoundError(
            f"{path}: this model reads fastText sentence vectors but {options.fasttext_model} is not there; "
            "set fasttext_model to the .bin the model was trained with"
        )
    return load_fasttext(file), bool(_read_metadata(file).get("lowercase", False))


def _load_detector(path: str, options: PipelineSettings, config):
    name = options.detector
    if not name:
        raise ValueError("this model reads region features: give a detector (folder, Hub id or 'synthetic')")
    if name == SYNTHETIC_DETECTOR:
        from hm_hf.synthetic.detector import SyntheticShapeDetector

        return SyntheticShapeDetector(dim=getattr(config, "visual_embedding_dim", 2048))
    from hm_hf.extract.modeling_frcnn import FrcnnForRegionFeatures

    inside = Path(path) / name
    location = str(inside) if Path(path).is_dir() and inside.is_dir() else name
    try:
        detector = FrcnnForRegionFeatures.from_pretrained(location)
    except (OSError, ValueError) as err:
        raise OSError(
            f"this model reads region features, and the detector {location!r} could not be loaded ({err}). Give "
            "detector=<folder or Hub id> of the Faster R-CNN that made the training features (unc-nlp/frcnn-vg-"
            "finetuned for real data; 'synthetic' for models trained on the synthetic data set)"
        ) from None
    cfg = detector.config
    for key in ("min_boxes", "max_boxes", "score_threshold"):
        value = getattr(options, f"detector_{key}")
        if value is not None:
            setattr(cfg, key, value)
    return detector
