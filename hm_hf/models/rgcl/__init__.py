"""RGCL (Mei et al., ACL 2024): retrieval-guided contrastive learning on frozen CLIP features, with a
retrieval index saved beside the model (kNN vote, logistic head, or both)."""

from hm_hf.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "configuration_rgcl": ["CONTRASTIVE_LOSSES", "DECISION_RULES", "HmRgclConfig"],
    "modeling_rgcl": ["HmRgclForHatefulMemes", "HmRgclModel", "RgclOutput", "rgcl_contrastive_loss", "rgcl_model"],
})
