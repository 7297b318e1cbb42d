"""Concat: the late-fusion baseline (fastText/BERT text vector + region/ResNet/CLIP image vector)."""

from .configuration_concat import HmConcatConfig
from .modeling_concat import HmConcatForHatefulMemes, HmConcatModel, HmConcatPreTrainedModel

__all__ = ["HmConcatConfig", "HmConcatForHatefulMemes", "HmConcatModel", "HmConcatPreTrainedModel"]
