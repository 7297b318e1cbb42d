"""One inference entry point for every hm_hf model: image (+ text) in, hate probability out.

`HatefulMemePipeline.from_pretrained(path_or_hub_id)` loads whatever `recipes/train_peft.py` saved (a whole
model, or PEFT adapters with their base model, `hm_hf.inference.model_loading`) and the model's processor
(`hm_hf.processing.MemeProcessor`, ``processor_config.json``; older folders' ``hm_hf_pipeline.json`` too),
which says what the model reads and how training fed it:

- ``text`` / ``clip_text``: the tokenizer saved beside the model (the text is OCR'd from the image when not
  given);
- ``text_embedding``: the fastText model saved beside it (``fasttext/fasttext.bin``);
- ``regions``: region features from the detector that made the training features (`hm_hf.inference.detectors`);
- ``pixels``: the image processor of the model's vision backbone.

Keyword arguments of `from_pretrained` override the saved settings.

**Decisions.** The probability is calibrated and the label decided by the model's decision policy
(``decision_policy.json``, `hm_hf.metrics.policy.DecisionPolicy`, part of the processor): training fits a
temperature on the evaluation split (so "0.8" means about 8 in 10 such memes are hateful there) and
chooses the threshold by the recipe's `threshold_rule` (max F1, a target false-positive rate, ...). Every
result says how it was decided: ``threshold``, ``threshold_rule`` and ``calibrated``. A folder without the
file keeps the model's own probabilities (T = 1) and its processor's threshold (0.5 unless an older folder
set another); ``threshold=0.7`` overrides the saved threshold. Multi-label models (the fine-grained
protected-category / attack-type tasks) return ``labels`` (each label's sigmoid score > 0.5, or > the
``threshold=`` given: one number, or one per label) with ``scores`` and ``thresholds`` per label instead.

**Detectors.** Region features must come from the detector that made the training features. For real
data that is the Visual Genome Faster R-CNN (`unc-nlp/frcnn-vg-finetuned`, the default), which must be
reachable (Hub or a local folder: pass ``detector="path/to/frcnn"``); a randomly initialised detector
runs, but its features mean nothing to a trained model. The synthetic data set's features were not made by
any network; ``detector="synthetic"`` is the matching "detector" for that world
(`hm_hf.synthetic.detector`), so the README's tiny model can be demonstrated offline end to end.

Example:

```python
>>> from hm_hf.pipeline import HatefulMemePipeline
>>> pipe = HatefulMemePipeline.from_pretrained("outputs/synthetic-tiny", detector="synthetic")  # doctest: +SKIP
>>> pipe("data/synthetic_hmd/img/00001.png")  # doctest: +SKIP
{'probability': 0.91, 'label': 1, 'label_name': 'hateful', 'threshold': 0.62, 'threshold_rule': 'max_f1',
 'calibrated': True, 'text': '...', 'text_source': 'ocr', 'ocr_engine': 'ppocr', 'regions': [...]}
>>> pipe(["a.png", "b.png"], texts=["caption a", None], batch_size=8)  # doctest: +SKIP
```

Command line: `hm-hf predict --model outputs/synthetic-tiny img/00001.png [--text "..."]` (JSON lines,
`hm_hf.inference.cli`).
"""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path
from typing import Sequence

import torch

from hm_hf.data.layouts import has_surrogates
from hm_hf.hub import hub_options, unusable_location
from hm_hf.images import load_image
from hm_hf.inference.detectors import load_detector
from hm_hf.inference.model_loading import base_config, load_trained_model
from hm_hf.metrics import MULTI_LABEL
from hm_hf.processing import MemeProcessor, model_inputs
from hm_hf.processing.processor import SYNTHETIC_DETECTOR

__all__ = ["HatefulMemePipeline"]


def _visible(text: str | None) -> bool:
    """Whether a given text has a visible character: one of spaces and format characters only (a zero-width
    space, a direction mark, as a copy-paste brings) is no text, and the meme's own text is read instead."""
    return bool(text) and any(not ch.isspace() and unicodedata.category(ch) != "Cf" for ch in text)


class HatefulMemePipeline:
    """Image (+ optional text) -> {"probability", "label", "label_name", "threshold", "threshold_rule",
    "calibrated", "text", "text_source", "regions"}.

    Build it with `from_pretrained`; the constructor takes ready parts (tests, custom set-ups): the model, its
    `MemeProcessor` (default: the model's defaults, which for a text model lacks the tokenizer it needs) and,
    for region models, a detector.
    """

    def __init__(self, model, processor: MemeProcessor | None = None, detector=None,
                 device: str | torch.device | None = None):
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.to(self.device).eval()
        self.config = base_config(model)
        self.processor = processor if processor is not None else MemeProcessor.for_model(self.config)
        declared = set(model_inputs(self.config))
        if set(self.processor.model_inputs) != declared:
            raise ValueError(f"the processor makes {sorted(self.processor.model_inputs)} but the model reads "
                             f"{sorted(declared)}: use the processor saved with this model")
        multi_label = getattr(self.config, "problem_type", None) == MULTI_LABEL
        if self.processor.multi_label != multi_label:
            raise ValueError(f"the model's head is {'multi' if multi_label else 'single'}-label but its processor "
                             f"says multi_label={self.processor.multi_label}: use the processor saved with this model")
        self.processor.check_fits(self.config)
        missing = [what for what, part, need in (("a detector", detector, "regions"),
                                                  ("a fastText model", self.processor.fasttext, "text_embedding"))
                   if need in declared and part is None]
        if missing:
            raise ValueError(f"this model reads {sorted(declared)} and needs {', '.join(missing)}")
        if declared & {"text", "clip_text"}:  # a tokenizer from elsewhere must be the model's vocabulary
            from hm_hf.text.tokenizer import check_tokenizer_fits

            check_tokenizer_fits(self.processor.tokenizer, model)
        self.detector = detector.to(self.device) if detector is not None and hasattr(detector, "to") else detector
        if self.detector is not None and hasattr(self.detector, "eval"):
            self.detector.eval()

    @property
    def needs(self) -> set[str]:
        """What the model reads (its config's ``model_inputs``)."""
        return set(self.processor.model_inputs)

    @property
    def settings(self) -> MemeProcessor:
        """The processor, whose fields are the settings (``max_text_length``, ``ocr_lang``, ``threshold``, ...)."""
        return self.processor

    @property
    def decision_policy(self):
        """How probabilities become labels (`DecisionPolicy`: temperature, threshold, rule; None: the model's own
        decisions), the processor's part."""
        return self.processor.decision_policy

    @property
    def tokenizer(self):
        return self.processor.tokenizer

    @property
    def image_processor(self):
        return self.processor.image_processor

    @property
    def reads_text(self) -> bool:
        return self.processor.reads_text

    @property
    def uses_regions(self) -> bool:
        return "regions" in self.needs

    @property
    def retrieves(self) -> bool:
        """Whether the model decides with a retrieval index (hm_rgcl): only then are there neighbours to return."""
        return hasattr(self.model, "retrieval_index")  # (through a PEFT wrapper too)

    # ------------------------------------------------------------------ loading

    @classmethod
    def from_pretrained(
        cls,
        path,
        detector=None,
        tokenizer=None,
        image_processor=None,
        device: str | torch.device | None = None,
        base_model: str | None = None,
        *,
        revision: str | None = None,
        token: str | bool | None = None,
        cache_dir: str | os.PathLike | None = None,
        local_files_only: bool | None = None,
        force_download: bool | None = None,
        **settings,
    ) -> "HatefulMemePipeline":
        """Load a model folder / Hub repo saved by the training recipe and what it needs to run.

        `detector` may be a loaded detector, a folder / Hub id, or "synthetic"; `base_model`: where the base model
        of saved adapters is, when their adapter_config.json names one not found from here; other keyword
        arguments override the saved processor settings (`MemeProcessor`'s names, or ``hm_hf_pipeline.json``'s;
        ``threshold=`` replaces the decision policy's threshold; for a multi-label model it sets every label's
        threshold, or each label's given a list). `revision`, `token`, `cache_dir`, `local_files_only`,
        `force_download`: as ``from_pretrained``'s, for everything read from a Hub repo (the model, its
        processor, decision policy, adapters, base model, index and detector come from the same revision).
        """
        from hm_hf.processing.processor import read_settings

        path = os.path.expanduser(str(path))  # a Hub id has no leading ~
        problem = unusable_location(path)
        if problem:
            raise FileNotFoundError(
                f"model {path!r} {problem}: give a folder saved by recipes/train_peft.py (e.g. outputs/synthetic-tiny, "
                "made by the README's main job) or a Hub id like org/name"
            )
        settings = {k: v for k, v in settings.items() if v is not None}
        if isinstance(detector, (str, os.PathLike)):  # a folder given here is the caller's (cwd-relative)
            given = Path(detector).expanduser()
            named = str(detector) == SYNTHETIC_DETECTOR  # the synthetic world's shape finder, not a folder
            settings["detector"] = str(given.resolve()) if given.is_dir() and not named else str(detector)
        hub = hub_options(dict(revision=revision, token=token, cache_dir=cache_dir, local_files_only=local_files_only,
                               force_download=force_download))
        read_settings(path, **hub)  # a broken settings file is reported before the model is loaded
        model = load_trained_model(path, base_model=base_model, **hub)
        config = base_config(model)
        processor = MemeProcessor.from_pretrained(path, config, tokenizer=tokenizer, image_processor=image_processor,
                                                  **hub, **settings)
        if "regions" in processor.model_inputs and (detector is None or isinstance(detector, (str, os.PathLike))):
            detector = load_detector(processor.detector, processor.detector_settings, path,
                                     feature_dim=getattr(config, "visual_embedding_dim", 2048), hub=hub)
        return cls(model, processor, detector=detector, device=device)

    def save_pretrained(self, folder) -> None:
        """Save the model and its processor with its decision policy (a detector is referred to, not copied)."""
        self.model.save_pretrained(str(folder))
        self.processor.save_pretrained(folder)

    # ------------------------------------------------------------------ inference

    def __call__(
        self,
        images,
        texts: str | Sequence[str | None] | None = None,
        batch_size: int = 8,
        text_pairs: str | Sequence[str | None] | None = None,
        return_regions: bool = True,
        return_neighbours: bool = False,
    ):
        """Classify one meme (returns a dict) or a list of memes (returns a list of dicts).

        images: path, bytes, PIL image or array, or a list of them. texts: the memes' text; None (or a
        None / "" entry) means: read it from the image with OCR. text_pairs: for a model trained on a text
        pair (``processor.text_pair_column``; MMHS150K: `texts` is the tweet's text, the pair the image's own
        text, its `img_txt/` OCR), the second text; None (or a None entry): read by OCR; "": the image has no
        text (as most of MMHS150K's, which have no `img_txt/` file).
        A retrieval model (hm_rgcl) also says which
        ``decision_rule`` made the score, and with ``return_neighbours=True`` the head's and the kNN vote's
        own probabilities and the ``neighbours`` (id, label, similarity) from its index.
        """
        single = not isinstance(images, (list, tuple))
        images = [images] if single else list(images)
        texts = _one_text_per_image(texts, "texts", len(images))
        pairs = _one_text_per_image(text_pairs, "text_pairs", len(images))
        if any(pairs) and self.processor.text_pair_column is None:
            raise ValueError("this model reads no text pair (it was trained on one text per meme): leave "
                             "text_pairs out, or put all of the meme's text in texts")
        if return_neighbours and not self.retrieves:
            raise ValueError(f"return_neighbours=True needs a retrieval model (hm_rgcl, with an index); this one is "
                             f"{self.config.model_type}: leave it out")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        results = []
        for start in range(0, len(images), batch_size):
            stop = start + batch_size
            results += self._batch(images[start:stop], texts[start:stop], pairs[start:stop], return_regions,
                                   return_neighbours)
        return results[0] if single else results

    def _batch(self, sources, texts, pairs, return_regions: bool, return_neighbours: bool = False) -> list[dict]:
        processor = self.processor
        text_column, pair_column = processor.text_column, processor.text_pair_column
        images = [load_image(s, max_pixels=processor.max_pixels) for s in sources]
        rows, outputs = [], []
        for image, text, pair in zip(images, texts, pairs):
            row, out = {}, {}
            if processor.reads_text:
                if pair_column is not None:  # OCR reads the image's own text: the pair (the first text is the post's)
                    ocr_needed = pair is None  # ("": an image without text, as most of MMHS150K's)
                else:
                    ocr_needed = not _visible(text)
                ocr = processor.read_text(image) if ocr_needed else None
                if pair_column is not None:
                    row[text_column], row[pair_column] = text or "", pair if pair is not None else ocr
                    out["text_pair"] = row[pair_column]
                    out["text_source"] = "given" if pair is not None else "ocr"
                else:
                    given = _visible(text)
                    row[text_column] = text.strip() if given else ocr
                    out["text_source"] = "given" if given else "ocr"
                out["text"] = row[text_column]
            else:
                out["text"], out["text_source"] = text or "", "unused"
            if "pixels" in self.needs:
                row[processor.image_column] = image
            rows.append(row)
            outputs.append(out)
        if "text_embedding" in self.needs:
            for row, vector in zip(rows, processor.text_embeddings(rows)):
                row[processor.text_embedding_column] = vector
        detected = None
        if self.uses_regions:
            with torch.inference_mode():
                detected = self.detector.extract(images)
            for row, regions in zip(rows, detected):
                row.update(processor.region_fields(regions))
        batch = {k: v.to(self.device) for k, v in processor(rows).items()}
        retrieval = self.retrieves
        with torch.inference_mode():
            output = self.model(**batch, return_neighbours=True) if retrieval else self.model(**batch)
            logits = output.logits.float()
        for i, (out, scores) in enumerate(zip(outputs, processor.post_process(logits))):
            out.update(scores)
            if retrieval:
                described = self.model.describe(output, i)
                out.update(described if return_neighbours else {"decision_rule": described["decision_rule"]})
            if out.get("text_source") == "ocr":  # which engine read the text, as the processor names it
                out["ocr_engine"] = processor.ocr_engine_info()["engine"]
            if detected is not None and return_regions:
                out["regions"] = self._regions(detected[i])
        return outputs

    def _regions(self, regions) -> list[dict]:
        name = getattr(self.detector, "region_name", None)
        kept = min(regions.num_boxes, self.processor.max_regions)
        return [
            {
                "box": [round(float(v), 1) for v in regions.boxes[j].tolist()],
                "score": float(regions.object_scores[j]),
                "object_id": int(regions.object_ids[j]),
                "name": name(int(regions.object_ids[j])) if name else f"object {int(regions.object_ids[j])}",
            }
            for j in range(kept)
        ]


def _one_text_per_image(values, name: str, count: int) -> list[str | None]:
    """`values` (a text for every image, None: read by OCR, or a list of them) as a list of `count` str or None;
    anything else (bytes, a number, a lone surrogate the tokenizer cannot encode) is refused, naming the entry."""
    if values is None or isinstance(values, str):
        values = [values] * count
    elif not isinstance(values, (list, tuple)):
        raise ValueError(f"{name} must be a str, None or a list of them (one per image), not a "
                         f"{type(values).__name__}")
    values = list(values)
    if len(values) != count:
        raise ValueError(f"got {count} images but {len(values)} {name.replace('_', ' ')}")
    for i, value in enumerate(values):
        if value is not None and not isinstance(value, str):
            raise ValueError(f"{name}[{i}] is a {type(value).__name__}: give the text as a str (None: read it by OCR)")
        if value and has_surrogates(value):
            raise ValueError(f"{name}[{i}] is not valid Unicode (it holds a lone surrogate, as bytes decoded with "
                             "errors='surrogateescape' do): decode the text as UTF-8 first")
    return values
