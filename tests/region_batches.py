"""The padded text + region batch the model tests feed their tiny models, built as `MemeCollator` pads:
right-padded text (pad id 0), regions padded to the longest set, 1/0 masks, boxes as x1<x2, y1<y2 in [0, 1].

Padded region features are left random (not zeros), so tests that padding changes nothing are not helped
by zeros.
"""

from __future__ import annotations

import torch


def region_batch(text_lengths: list[int], region_counts: list[int], labels: list[int], *, vocab_size: int,
                 feature_dim: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """One row per entry of `text_lengths` / `region_counts` (real tokens / regions of that row)."""
    g = torch.Generator().manual_seed(seed)
    batch_size, text_len, regions = len(text_lengths), max(text_lengths), max(region_counts)
    attention_mask = (torch.arange(text_len)[None] < torch.tensor(text_lengths)[:, None]).long()
    visual_attention_mask = (torch.arange(regions)[None] < torch.tensor(region_counts)[:, None]).long()
    corners = torch.rand(batch_size, regions, 4, generator=g)
    boxes = torch.cat([torch.minimum(corners[..., :2], corners[..., 2:]),
                       torch.maximum(corners[..., :2], corners[..., 2:])], -1)
    input_ids = torch.randint(1, vocab_size, (batch_size, text_len), generator=g) * attention_mask
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "token_type_ids": torch.zeros_like(input_ids),
        "visual_embeds": torch.randn(batch_size, regions, feature_dim, generator=g),
        "visual_attention_mask": visual_attention_mask,
        "visual_boxes": boxes,
        "labels": torch.tensor(labels),
    }
