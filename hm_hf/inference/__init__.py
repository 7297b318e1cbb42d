"""Inference, below training and never importing it: loading a trained model (`model_loading`), the detector a
region model needs (`detectors`) and `hm-hf predict` (`cli`). The pipeline itself is `hm_hf.pipeline`; the
inputs it makes come from the model's processor (`hm_hf.processing`).
"""

from hm_hf.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {})
