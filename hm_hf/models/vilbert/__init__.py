"""ViLBERT (two-stream) for hateful-meme classification, in the transformers layout."""

from hm_hf.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "configuration_vilbert": ["HmVilbertConfig"],
    "modeling_vilbert": [
        "HmVilbertForHatefulMemes", "HmVilbertModel", "HmVilbertModelOutput", "HmVilbertPreTrainedModel",
        "region_locations",
    ],
})
