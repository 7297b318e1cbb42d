"""UNITER (Chen et al. 2020) with SDPA attention, and a converter from the original ``uniter-base.pt``."""

from .configuration_uniter import HmUniterConfig
from .modeling_uniter import (
    HmUniterForHatefulMemes,
    HmUniterImageEmbeddings,
    HmUniterModel,
    HmUniterPreTrainedModel,
    uniter_box_features,
)

__all__ = [
    "HmUniterConfig",
    "HmUniterForHatefulMemes",
    "HmUniterImageEmbeddings",
    "HmUniterModel",
    "HmUniterPreTrainedModel",
    "uniter_box_features",
]
