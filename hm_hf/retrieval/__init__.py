"""Retrieval: a labelled nearest-neighbour index over fused meme embeddings (RGCL's vector database), its
kNN vote, and `hm-hf index add / show`."""

from hm_hf.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "index": ["INDEX_FILE", "KNN_VOTES", "IndexError_", "RetrievalIndex", "knn_probability", "probability_to_logits"],
})
