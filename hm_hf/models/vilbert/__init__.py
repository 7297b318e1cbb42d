"""ViLBERT (two-stream) for hateful-meme classification, in the transformers layout."""

from .configuration_vilbert import HmVilbertConfig
from .modeling_vilbert import (
    HmVilbertForHatefulMemes,
    HmVilbertModel,
    HmVilbertModelOutput,
    HmVilbertPreTrainedModel,
    region_locations,
)

__all__ = [
    "HmVilbertConfig",
    "HmVilbertForHatefulMemes",
    "HmVilbertModel",
    "HmVilbertModelOutput",
    "HmVilbertPreTrainedModel",
    "region_locations",
]
