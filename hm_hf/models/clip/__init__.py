"""CLIP (Hate-CLIPper style): frozen or LoRA-adapted CLIP encoders, projected, fused (concat / align / cross)."""

from hm_hf.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "configuration_clip": ["FUSIONS", "HmClipConfig"],
    "modeling_clip": ["CLIP_MODEL_DIR", "HmClipForHatefulMemes", "HmClipModel", "HmClipPreTrainedModel",
                      "frozen_clip_location", "local_clip_to_push"],
    "tiny_clip": ["checkpoint_staging", "is_clip_checkpoint", "make_tiny_clip", "train_clip_tokenizer"],
})
