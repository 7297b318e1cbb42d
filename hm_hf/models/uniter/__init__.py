"""UNITER (Chen et al. 2020) with SDPA attention, and a converter from the original ``uniter-base.pt``."""

from hm_hf.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "configuration_uniter": ["HmUniterConfig"],
    "modeling_uniter": [
        "HmUniterForHatefulMemes", "HmUniterImageEmbeddings", "HmUniterModel", "HmUniterPreTrainedModel",
        "uniter_box_features",
    ],
})
