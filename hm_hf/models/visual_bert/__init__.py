"""VisualBERT (Li et al. 2019), weight-compatible with transformers' ``VisualBertModel``, with SDPA attention."""

from hm_hf.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "configuration_visual_bert": ["HmVisualBertConfig"],
    "modeling_visual_bert": [
        "HmVisualBertEmbeddings", "HmVisualBertForHatefulMemes", "HmVisualBertModel", "HmVisualBertPreTrainedModel",
    ],
})
