"""The data side of the CLIP model: its collator, and frozen CLIP vectors precomputed as ``datasets`` columns.

With frozen encoders, Hate-CLIPper's CLIP features never change during training, so an epoch can be only
the head's work: `add_clip_embeddings` runs the frozen CLIP once over a split and stores each row's image
and text vectors as the columns ``clip_image_embeds`` / ``clip_text_embeds``. The ``datasets`` fingerprint
of the new split is derived from the split's own fingerprint and `clip_fingerprint` (a hash of the CLIP
weights, the feature kind, the image processor's settings, the tokenizer's vocabulary and the text
columns), so the cache is reused for the same checkpoint and recomputed for any other.

`ClipMemeCollator` turns rows into CLIP batches: ``pixel_values`` + ``input_ids`` / ``attention_mask``, or
``image_embeds`` / ``text_embeds`` when the rows carry the cached vectors. The model gives the same logits
either way (tested).

Example:

```python
>>> from hm_hf.models.clip.embedding_cache import ClipMemeCollator, add_clip_embeddings
>>> cached = add_clip_embeddings(splits, model, tokenizer, image_processor)  # doctest: +SKIP
>>> collator = ClipMemeCollator(tokenizer=tokenizer, image_processor=image_processor)  # doctest: +SKIP
>>> model(**collator([cached["train"][0], cached["train"][1]])).logits  # doctest: +SKIP
```
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass

import numpy as np
import torch

from hm_hf.data.collator import MemeCollator

__all__ = ["IMAGE_EMBEDS", "TEXT_EMBEDS", "ClipMemeCollator", "add_clip_embeddings", "clip_fingerprint"]

IMAGE_EMBEDS = "clip_image_embeds"
TEXT_EMBEDS = "clip_text_embeds"
_SANE_MAX_LENGTH = 10_000  # tokenizers without a limit report a huge model_max_length


def _join(text, pair) -> str:
    return " ".join(part for part in (text or "", pair or "") if part)


@dataclass
class ClipMemeCollator(MemeCollator):
    """`MemeCollator` for CLIP: the text and its pair (MMHS's OCR text) joined into one string, since CLIP
    pools at the first end-of-text token and would ignore a second segment; at most the tokenizer's
    ``model_max_length`` (77 for CLIP) tokens; no ``token_type_ids``. Rows holding cached CLIP vectors give
    ``image_embeds`` / ``text_embeds`` instead of pixels and tokens."""

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        if rows and IMAGE_EMBEDS in rows[0] and TEXT_EMBEDS in rows[0]:
            labels_only = dataclasses.replace(self, tokenizer=None, image_processor=None, use_regions=False,
                                              text_embedding_column=None)
            batch = MemeCollator.__call__(labels_only, rows)
            for column, key in ((IMAGE_EMBEDS, "image_embeds"), (TEXT_EMBEDS, "text_embeds")):
                batch[key] = torch.from_numpy(np.stack([np.asarray(row[column], dtype=np.float32) for row in rows]))
            return batch
        return super().__call__(rows)

    def _max_length(self) -> int:
        limit = getattr(self.tokenizer, "model_max_length", None)
        return min(self.max_length, limit) if isinstance(limit, int) and limit < _SANE_MAX_LENGTH else self.max_length

    def _text(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        pair = self.text_pair_column
        texts = [_join(row[self.text_column], row.get(pair) if pair else None) for row in rows]
        encoded = self.tokenizer(texts, padding=True, truncation=True, max_length=self._max_length(),
                                 return_tensors="pt")
        return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}


def _hm_clip_model(model):
    """The HmClipModel inside an HmClipForHatefulMemes (or a peft wrapper of one)."""
    from .modeling_clip import HmClipModel

    for module in model.modules():
        if isinstance(module, HmClipModel):
            return module
    raise TypeError(f"{type(model).__name__} is not an hm_hf CLIP model")


def _tensor_bytes(tensor: torch.Tensor) -> bytes:
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    return flat.view(torch.uint8).numpy().tobytes()


def clip_fingerprint(model, tokenizer, image_processor, max_length: int = 77, text_columns=("text",)) -> str:
    """A hash of everything the cached vectors depend on: the CLIP weights, the feature kind (pooled or
    projected), the image processor's settings, the tokenizer's vocabulary, the text length and columns."""
    inner = _hm_clip_model(model)
    digest = hashlib.sha256()
    settings = {
        "clip_features": inner.config.clip_features,
        "image_processor": image_processor.to_dict() if hasattr(image_processor, "to_dict") else repr(image_processor),
        "vocab": hashlib.sha256(json.dumps(sorted(tokenizer.get_vocab().items())).encode()).hexdigest(),
        "max_length": int(max_length),
        "text_columns": list(text_columns),
    }
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    for name, tensor in sorted(inner.clip.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(_tensor_bytes(tensor))
    return digest.hexdigest()


@torch.no_grad()
def add_clip_embeddings(
    dataset,
    model,
    tokenizer,
    image_processor,
    text_column: str = "text",
    text_pair_column: str | None = None,
    image_column: str = "image",
    max_length: int = 77,
    batch_size: int = 32,
):
    """`dataset` (a Dataset or DatasetDict) with the frozen CLIP's vectors added as ``clip_image_embeds`` /
    ``clip_text_embeds`` (float32 lists), cached by ``datasets`` under a checkpoint-derived fingerprint.

    Raises ValueError when the CLIP encoders are not frozen (``freeze_clip`` False, or trainable / LoRA
    parameters in them): their vectors would change during training, so a cache would be wrong.
    """
    from datasets import DatasetDict

    inner = _hm_clip_model(model)
    trainable = [n for n, p in inner.clip.named_parameters() if p.requires_grad or "lora_" in n]
    if not inner.config.freeze_clip or trainable:
        raise ValueError("CLIP embeddings can only be cached for frozen encoders (freeze_clip=True, no LoRA): "
                         f"{len(trainable)} CLIP parameters are trainable or adapted")
    columns = (text_column,) + ((text_pair_column,) if text_pair_column else ())
    fingerprint = clip_fingerprint(model, tokenizer, image_processor, max_length, columns)
    if isinstance(dataset, DatasetDict):
        return DatasetDict({name: _add(split, inner, tokenizer, image_processor, text_column, text_pair_column,
                                       image_column, max_length, batch_size, fingerprint)
                            for name, split in dataset.items()})
    return _add(dataset, inner, tokenizer, image_processor, text_column, text_pair_column, image_column, max_length,
                batch_size, fingerprint)


def _add(dataset, inner, tokenizer, image_processor, text_column, text_pair_column, image_column, max_length,
         batch_size, fingerprint):
    collator = ClipMemeCollator(tokenizer=tokenizer, image_processor=image_processor, text_column=text_column,
                                text_pair_column=text_pair_column, max_length=max_length, image_column=image_column,
                                label_column="__no_labels__")
    device = next(inner.parameters()).device
    was_training = inner.training
    inner.eval()

    def encode(batch):
        rows = [dict(zip(batch, values)) for values in zip(*batch.values())]
        tensors = {k: v.to(device) for k, v in collator(rows).items()}
        images = inner.encode_image(tensors["pixel_values"])
        texts = inner.encode_text(tensors["input_ids"], tensors["attention_mask"])
        return {IMAGE_EMBEDS: images.float().cpu().numpy(), TEXT_EMBEDS: texts.float().cpu().numpy()}

    new_fingerprint = hashlib.sha256(f"{dataset._fingerprint}:{fingerprint}".encode()).hexdigest()[:32]
    try:
        return dataset.map(encode, batched=True, batch_size=batch_size, new_fingerprint=new_fingerprint,
                           desc="CLIP embeddings")
    finally:
        inner.train(was_training)
