"""CLIP (Hate-CLIPper style): frozen or LoRA-adapted CLIP encoders, projected, fused (concat / align / cross)."""

from .configuration_clip import FUSIONS, HmClipConfig
from .modeling_clip import HmClipForHatefulMemes, HmClipModel, HmClipPreTrainedModel
from .tiny_clip import make_tiny_clip, train_clip_tokenizer

__all__ = [
    "FUSIONS",
    "HmClipConfig",
    "HmClipForHatefulMemes",
    "HmClipModel",
    "HmClipPreTrainedModel",
    "make_tiny_clip",
    "train_clip_tokenizer",
]
