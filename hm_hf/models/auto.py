"""Registers every hm_hf architecture with the transformers Auto classes.

After ``register_auto_classes()`` (called on ``import hm_hf``), ``AutoConfig.for_model("hm_uniter")``,
``AutoModel.from_pretrained(folder)`` and ``AutoModelForSequenceClassification.from_pretrained(folder)``
work on folders hm_hf saved, with no ``trust_remote_code``.

Example:
    >>> from transformers import AutoConfig, AutoModelForSequenceClassification
    >>> from hm_hf.models.auto import register_auto_classes
    >>> register_auto_classes()
    >>> config = AutoConfig.for_model("hm_concat", visual_embedding_dim=16)
    >>> type(AutoModelForSequenceClassification.from_config(config)).__name__
    'HmConcatForHatefulMemes'
"""

from __future__ import annotations

from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification

__all__ = ["register_auto_classes"]

_registered = False


def _entries() -> list[tuple[str, type, type, type]]:
    """(model_type, config class, base model class, sequence-classification class) for each architecture."""
    from .clip import HmClipConfig, HmClipForHatefulMemes, HmClipModel
    from .concat import HmConcatConfig, HmConcatForHatefulMemes, HmConcatModel
    from .uniter import HmUniterConfig, HmUniterForHatefulMemes, HmUniterModel
    from .vilbert import HmVilbertConfig, HmVilbertForHatefulMemes, HmVilbertModel
    from .visual_bert import HmVisualBertConfig, HmVisualBertForHatefulMemes, HmVisualBertModel

    entries = [
        ("hm_visual_bert", HmVisualBertConfig, HmVisualBertModel, HmVisualBertForHatefulMemes),
        ("hm_uniter", HmUniterConfig, HmUniterModel, HmUniterForHatefulMemes),
        ("hm_concat", HmConcatConfig, HmConcatModel, HmConcatForHatefulMemes),
        ("hm_vilbert", HmVilbertConfig, HmVilbertModel, HmVilbertForHatefulMemes),
        ("hm_clip", HmClipConfig, HmClipModel, HmClipForHatefulMemes),
    ]
    return entries


def register_auto_classes() -> None:
    """Register the hm_hf configs and models with AutoConfig / AutoModel / AutoModelForSequenceClassification.

    Idempotent: safe to call more than once.
    """
    global _registered
    if _registered:
        return
    for model_type, config_cls, model_cls, head_cls in _entries():
        AutoConfig.register(model_type, config_cls, exist_ok=True)
        AutoModel.register(config_cls, model_cls, exist_ok=True)
        AutoModelForSequenceClassification.register(config_cls, head_cls, exist_ok=True)
    _registered = True
