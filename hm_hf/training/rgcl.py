"""The RGCL parts of a training run (`hm_hf.training.run`, ``model_type: rgcl``).

- `MemeIdCollator`: the processor's batches plus ``meme_ids``, so that a training meme is never retrieved
  as its own positive (nor, when the training split is scored, as its own neighbour);
- `RetrievalRefreshCallback`: the training set re-embedded with the current weights and the model's index
  replaced, at the start of training and at the end of every epoch (before that epoch's evaluation), as
  the paper's code rebuilds its Faiss index once per epoch;
- `build_index`: the index over a split's labelled memes, which the run attaches before saving the model.

Example:
    >>> index = build_index(model, rows, processor, source="train")  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from transformers import TrainerCallback

from hm_hf.models.rgcl.modeling_rgcl import rgcl_model
from hm_hf.retrieval.index import RetrievalIndex

__all__ = ["MemeIdCollator", "RetrievalRefreshCallback", "build_index", "embed_rows", "rgcl_model"]

logger = logging.getLogger(__name__)


def meme_id(value) -> int:
    """A row's id as the index stores it (HMD and MMHS150K ids are int64 decimals)."""
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"meme id {value!r} is not an integer: the retrieval index stores int64 ids") from None


@dataclass
class MemeIdCollator:
    """`processor(rows)` plus ``meme_ids`` (B,) int64 from the rows' ``id``."""

    processor: object

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        batch = self.processor(rows)
        if rows and "id" in rows[0]:
            batch["meme_ids"] = torch.tensor([meme_id(row["id"]) for row in rows], dtype=torch.long)
        return batch


@torch.no_grad()
def embed_rows(model, rows, processor, label_column: str = "label", batch_size: int = 256):
    """(embeddings (N, d), labels, ids) of the labelled rows of `rows` (a torch Dataset of row dicts), in
    eval mode; unlabelled rows (no label, or -1) are skipped."""
    inner = rgcl_model(model)
    device = next(inner.parameters()).device
    was_training = inner.training
    inner.eval()
    vectors, labels, ids = [], [], []
    try:
        for start in range(0, len(rows), batch_size):
            chunk = [rows[i] for i in range(start, min(start + batch_size, len(rows)))]
            chunk = [row for row in chunk if row.get(label_column) is not None and int(row[label_column]) >= 0]
            if not chunk:
                continue
            batch = processor(chunk)
            batch.pop("labels", None)
            vectors.append(inner.embed(**{k: v.to(device) for k, v in batch.items()}))
            labels += [int(row[label_column]) for row in chunk]
            ids += [meme_id(row["id"]) for row in chunk]
    finally:
        inner.train(was_training)
    dim = inner.config.embedding_dim
    return (torch.cat(vectors) if vectors else torch.empty(0, dim)), labels, ids


def build_index(model, rows, processor, source: str, label_column: str = "label") -> RetrievalIndex:
    """A new index of the labelled rows' embeddings under the model's current weights."""
    vectors, labels, ids = embed_rows(model, rows, processor, label_column)
    index = RetrievalIndex(rgcl_model(model).config.embedding_dim)
    index.add(vectors, labels, ids, source=source)
    return index


class RetrievalRefreshCallback(TrainerCallback):
    """Re-embeds the training split into the model's index at the start of training and after every epoch."""

    def __init__(self, rows, processor, source: str = "train", label_column: str = "label"):
        self.rows, self.processor, self.source, self.label_column = rows, processor, source, label_column
        self._refreshed_at: int | None = None

    def _refresh(self, state, model) -> None:
        if model is None or self._refreshed_at == state.global_step:
            return
        inner = rgcl_model(model)
        inner.retrieval_index = build_index(inner, self.rows, self.processor, self.source, self.label_column)
        self._refreshed_at = state.global_step
        logger.info("RGCL: re-embedded %d training memes into the retrieval index (step %d)",
                    len(inner.retrieval_index), state.global_step)

    def on_epoch_begin(self, args, state, control, model=None, **kwargs):
        self._refresh(state, model)

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        self._refresh(state, model)
