"""Concat: the late-fusion baseline (fastText/BERT text vector + region/ResNet/CLIP image vector)."""

from hm_hf.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "configuration_concat": ["HmConcatConfig"],
    "modeling_concat": ["HmConcatForHatefulMemes", "HmConcatModel", "HmConcatPreTrainedModel"],
})
