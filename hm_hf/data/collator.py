"""Turns dataset rows into model batches; one collator for every hm_hf model.

Batch keys (each model takes the ones it needs, see each model's `forward`):

- ``input_ids``, ``attention_mask``, ``token_type_ids`` (B, T): the tokenised text (and text pair);
- ``visual_embeds`` (B, R, D) float32 (float16 with ``region_dtype="float16"``), ``visual_attention_mask`` (B, R) long (1 = real region,
  0 = padding), ``visual_boxes`` (B, R, 4) float32 as x1/W, y1/H, x2/W, y2/H: the region features,
  padded to the longest region set in the batch (at most ``max_regions``);
- ``text_embedding`` (B, D) float32: a precomputed sentence vector (fastText);
- ``pixel_values``: what ``image_processor`` makes of the images;
- ``labels`` (B,) long, -100 where a row has no label (left out when no row of the batch has one, so an
  unlabelled test split is predicted without a loss); with ``multi_label_classes=C`` (the fine-grained
  tasks, whose label column is a list of class ids per meme) (B, C) float32 multi-hot vectors, a row of
  -100 where the list is empty (the unlabelled split), for the multi-label loss of `hm_hf.models.heads`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from hm_hf.images import to_rgb

IGNORE_INDEX = -100


def _as_array(value, dtype) -> np.ndarray:
    """Region columns arrive as numpy arrays, lists of lists or pyarrow scalars depending on the format."""
    if hasattr(value, "as_py"):
        value = value.as_py()
    return np.asarray(value, dtype=dtype)


@dataclass
class MemeCollator:
    """Pads and tensorises a list of dataset rows.

    ``region_dtype="float16"`` hands the region features over in the feature cache's own precision: no
    float16 -> float32 conversion on the CPU (8x less collating work at 128 x 100 x 2048) and half the
    bytes between DataLoader workers and to the GPU. The models cast them to their weights' dtype on the
    device, and under fp16/bf16 autocast nothing is lost; training picks it with ``fp16``/``bf16``.

    >>> collator = MemeCollator(tokenizer=AutoTokenizer.from_pretrained("bert-base-uncased"))  # doctest: +SKIP
    >>> batch = collator([dataset[0], dataset[1]])  # doctest: +SKIP
    """

    tokenizer: Any = None
    text_column: str = "text"
    text_pair_column: str | None = None  # e.g. "img_text" for MMHS (tweet text + text in the image)
    max_length: int = 128
    use_regions: bool = False
    max_regions: int = 100
    text_embedding_column: str | None = None
    image_processor: Any = None
    image_column: str = "image"
    label_column: str = "label"
    region_dtype: str = "float32"
    multi_label_classes: int | None = None  # C: the label column holds lists of class ids -> multi-hot (B, C)

    def __post_init__(self):
        if self.region_dtype not in ("float32", "float16"):
            raise ValueError(f"MemeCollator: region_dtype must be 'float32' or 'float16', got {self.region_dtype!r}")
        if self.multi_label_classes is not None and self.multi_label_classes < 1:
            raise ValueError(f"MemeCollator: multi_label_classes must be >= 1, got {self.multi_label_classes}")

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        if not rows:
            raise ValueError("MemeCollator got an empty batch")
        batch: dict[str, torch.Tensor] = {}
        if self.tokenizer is not None:
            batch.update(self._text(rows))
        if self.use_regions:
            batch.update(self._regions(rows))
        if self.text_embedding_column is not None:
            vectors = [_as_array(row[self.text_embedding_column], np.float32) for row in rows]
            batch["text_embedding"] = torch.from_numpy(np.stack(vectors))
        if self.image_processor is not None:
            images = [to_rgb(row[self.image_column]) for row in rows]  # as inference sees them
            batch["pixel_values"] = self.image_processor(images=images, return_tensors="pt")["pixel_values"]
        if self.label_column in rows[0] and self.multi_label_classes is not None:
            labels = self._multi_hot(rows)
            if (labels[:, 0] != IGNORE_INDEX).any():
                batch["labels"] = labels
        elif self.label_column in rows[0]:
            labels = [int(row[self.label_column]) for row in rows]
            labels = [label if label >= 0 else IGNORE_INDEX for label in labels]
            if any(label != IGNORE_INDEX for label in labels):
                batch["labels"] = torch.tensor(labels, dtype=torch.long)
        return batch

    def _multi_hot(self, rows: list[dict]) -> torch.Tensor:
        """(B, C) float32: 1 where a row's list holds the class id; all -100 for an empty list (no labels)."""
        labels = torch.zeros(len(rows), self.multi_label_classes, dtype=torch.float32)
        for i, row in enumerate(rows):
            ids = row[self.label_column] or []
            if not ids:
                labels[i] = IGNORE_INDEX
                continue
            for class_id in ids:
                if not 0 <= int(class_id) < self.multi_label_classes:
                    raise ValueError(f"row {row.get('id', i)}: {self.label_column} class id {class_id} is outside "
                                     f"the {self.multi_label_classes} classes of the task")
                labels[i, int(class_id)] = 1.0
        return labels

    def _text(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        texts = [row[self.text_column] or "" for row in rows]
        pairs = None
        if self.text_pair_column is not None:
            pairs = [row.get(self.text_pair_column) or "" for row in rows]
        encoded = self.tokenizer(
            texts,
            pairs,
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
            return_token_type_ids=True,
        )
        return dict(encoded)

    def _regions(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        # Features are padded in float16 by numpy, then (region_dtype float32) converted by torch in one
        # call: numpy's fp16 -> fp32 conversion costs ~5x more. The conversion is still ~90% of this method's
        # time at 100 regions x 2048, hence region_dtype="float16" for mixed-precision training.
        # A float32 feature cache stays float32 up to `region_dtype`; float16 ones are padded in float16. Lists
        # (`dataset[i]`, hand-made rows) say nothing of their precision: read as float32, exact for both.
        stored = np.float16 if all(getattr(row["region_features"], "dtype", None) == np.float16 for row in rows) \
            else np.float32
        features = [_as_array(row["region_features"], stored) for row in rows]
        boxes = [_as_array(row["boxes"], np.float32) for row in rows]
        dim = next((f.shape[1] for f in features if f.ndim == 2 and f.size), None)
        for i, (row, feats, bxs) in enumerate(zip(rows, features, boxes)):
            _check_regions(row, i, feats, bxs, dim)
        features = [f[: self.max_regions] for f in features]
        boxes = [b[: self.max_regions] for b in boxes]
        num_regions = max(len(f) for f in features)
        dim = dim or next((f.shape[1] for f in features if f.ndim == 2), 2048)
        visual_embeds = np.zeros((len(rows), num_regions, dim), dtype=stored)
        visual_boxes = np.zeros((len(rows), num_regions, 4), dtype=np.float32)
        mask = np.zeros((len(rows), num_regions), dtype=np.int64)
        for i, (row, feats, bxs) in enumerate(zip(rows, features, boxes)):
            n = len(feats)
            if n == 0:
                continue
            scale = np.array([row["image_width"], row["image_height"]] * 2, dtype=np.float32)
            visual_embeds[i, :n] = feats
            visual_boxes[i, :n] = np.clip(bxs / scale, 0.0, 1.0)
            mask[i, :n] = 1
        return {
            "visual_embeds": torch.from_numpy(visual_embeds).to(getattr(torch, self.region_dtype)),
            "visual_attention_mask": torch.from_numpy(mask),
            "visual_boxes": torch.from_numpy(visual_boxes),
        }


def _check_regions(row: dict, index: int, features: np.ndarray, boxes: np.ndarray, dim: int | None) -> None:
    """Refuse a row whose regions would be collated into something else without an error: boxes that do not
    match the features one to one (numpy would broadcast one box over every region), features of another width
    than the batch's, an image size that is not a positive number (NaN boxes), boxes that are not finite.
    (Cheap shape checks only: the feature cache checks the values themselves, `hm_hf.extract.validation`.)"""
    where = f"row {row.get('id', index)}"
    if features.size == 0 and boxes.size == 0:  # no regions (an empty list, or (0, D) and (0, 4))
        return
    if features.ndim != 2:
        raise ValueError(f"{where}: region_features must be an (N, D) matrix, got shape {features.shape}")
    if dim is not None and features.shape[1] != dim:
        raise ValueError(f"{where}: region_features are {features.shape[1]}-d but the batch's are {dim}-d: the "
                         "rows come from different feature caches (detectors)")
    if boxes.shape != (len(features), 4):
        raise ValueError(f"{where}: boxes must be (N, 4) for the {len(features)} regions of region_features, got "
                         f"shape {boxes.shape}")
    if not np.isfinite(boxes).all():
        raise ValueError(f"{where}: boxes hold NaN or infinite values")
    for name in ("image_width", "image_height"):
        value = row.get(name)
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)) \
                or not np.isfinite(value) or value <= 0:
            raise ValueError(f"{where}: {name} must be the image's size in pixels (> 0), got {value!r}; the boxes "
                             "are divided by it")
