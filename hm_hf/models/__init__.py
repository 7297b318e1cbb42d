"""hm_hf's architectures, one folder each (configuration_x.py + modeling_x.py), and what they share; the
folders are imported on first use (``hm_hf.models.visual_bert``), see `hm_hf.lazy`."""

from hm_hf.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {})
