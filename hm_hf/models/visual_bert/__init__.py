"""VisualBERT (Li et al. 2019), weight-compatible with transformers' ``VisualBertModel``, with SDPA attention."""

from .configuration_visual_bert import HmVisualBertConfig
from .modeling_visual_bert import (
    HmVisualBertEmbeddings,
    HmVisualBertForHatefulMemes,
    HmVisualBertModel,
    HmVisualBertPreTrainedModel,
)

__all__ = [
    "HmVisualBertConfig",
    "HmVisualBertEmbeddings",
    "HmVisualBertForHatefulMemes",
    "HmVisualBertModel",
    "HmVisualBertPreTrainedModel",
]
