"""hm_hf's architectures, and their registration with the transformers Auto classes.

After ``import hm_hf``, ``AutoConfig.for_model("hm_uniter")``, ``AutoModel.from_pretrained(folder)`` and
``AutoModelForSequenceClassification.from_pretrained(folder)`` work on folders hm_hf saved, with no
``trust_remote_code``, although `import hm_hf` imports neither transformers nor any model:

- when transformers' ``configuration_auto`` is imported, `register_config_stand_ins` (run by
  `hm_hf.registration`) gives AutoConfig a stand-in for each hm_hf config: a class that imports the real
  one the first time it is used (``for_model``, ``from_dict``, ...);
- importing an hm_hf configuration module registers its architecture for real (`register_architecture`,
  the module's last line): the config with AutoConfig, the model and its classification head with AutoModel /
  AutoModelForSequenceClassification (as stand-ins again, until the modeling module is imported);
- `MemeProcessor` is registered with AutoProcessor when transformers' ``processing_auto`` is imported
  (`register_processor`), so ``AutoProcessor.from_pretrained(folder)`` reads ``processor_config.json``.

Nothing here imports a module while transformers is half-way through importing its own: the stand-ins are
made without imports, and configuration modules are imported only by user code (or a stand-in it uses).

A new architecture adds a row to `ARCHITECTURES` and ends its ``configuration_<folder>.py`` with
``register_architecture(<Config>)``.

Example:
    >>> import hm_hf
    >>> from transformers import AutoConfig, AutoModelForSequenceClassification
    >>> config = AutoConfig.for_model("hm_concat", visual_embedding_dim=16)
    >>> type(AutoModelForSequenceClassification.from_config(config)).__name__
    'HmConcatForHatefulMemes'
"""

from __future__ import annotations

import importlib
import sys

__all__ = ["ARCHITECTURES", "config_class", "model_class", "register_architecture", "register_auto_classes",
           "register_config_stand_ins", "register_processor"]

#: model_type -> (folder in hm_hf/models, config class, base model class, sequence-classification class)
ARCHITECTURES = {
    "hm_visual_bert": ("visual_bert", "HmVisualBertConfig", "HmVisualBertModel", "HmVisualBertForHatefulMemes"),
    "hm_uniter": ("uniter", "HmUniterConfig", "HmUniterModel", "HmUniterForHatefulMemes"),
    "hm_concat": ("concat", "HmConcatConfig", "HmConcatModel", "HmConcatForHatefulMemes"),
    "hm_vilbert": ("vilbert", "HmVilbertConfig", "HmVilbertModel", "HmVilbertForHatefulMemes"),
    "hm_clip": ("clip", "HmClipConfig", "HmClipModel", "HmClipForHatefulMemes"),
    "hm_rgcl": ("rgcl", "HmRgclConfig", "HmRgclModel", "HmRgclForHatefulMemes"),
}


def _module(model_type: str, kind: str) -> str:
    folder = ARCHITECTURES[model_type][0]
    return f"hm_hf.models.{folder}.{kind}_{folder}"


def config_class(model_type: str) -> type:
    """The config class of an hm_hf model_type (imports its configuration module only)."""
    return getattr(importlib.import_module(_module(model_type, "configuration")), ARCHITECTURES[model_type][1])


def model_class(model_type: str, head: bool = True) -> type:
    """The `<Name>ForHatefulMemes` class of an hm_hf model_type (the base model with ``head=False``)."""
    name = ARCHITECTURES[model_type][3 if head else 2]
    return getattr(importlib.import_module(_module(model_type, "modeling")), name)


class _Deferred(type):
    """The metaclass of the stand-ins: a stand-in carries the name, module and the attributes registration
    checks (``model_type`` / ``config_class``); anything else it is asked for (``from_pretrained``,
    ``from_dict``, ``_from_config``, a call, isinstance) imports the real class, whose registration then
    replaces the stand-in."""

    def _real(cls) -> type:
        real = getattr(importlib.import_module(cls.__module__), cls.__name__)
        replace = vars(cls)["_hm_replace"]
        if replace is not None:
            replace(real)
        return real

    def __getattr__(cls, name: str):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return getattr(cls._real(), name)

    def __call__(cls, *args, **kwargs):
        return cls._real()(*args, **kwargs)

    def __instancecheck__(cls, instance) -> bool:
        return isinstance(instance, cls._real())

    def __subclasscheck__(cls, subclass) -> bool:
        return issubclass(subclass, cls._real())

    def __repr__(cls) -> str:
        return f"<hm_hf stand-in for {cls.__module__}.{cls.__name__}>"


def _stand_in(module: str, name: str, replace=None, **attributes) -> type:
    return _Deferred(name, (), {"__module__": module, "__qualname__": name, "_hm_replace": replace, **attributes})


def register_config_stand_ins() -> None:
    """Give AutoConfig a stand-in for each hm_hf config not imported yet (imports nothing of hm_hf)."""
    from transformers.models.auto.configuration_auto import AutoConfig

    for model_type, (_, config_name, _, _) in ARCHITECTURES.items():
        module = _module(model_type, "configuration")
        real = getattr(sys.modules.get(module), config_name, None)
        if real is None:  # (an imported config registered itself, see register_architecture)
            AutoConfig.register(model_type, _stand_in(module, config_name, model_type=model_type), exist_ok=True)


def register_architecture(config: type) -> None:
    """Register an hm_hf config, its model and its head (stand-ins until the modeling module is imported);
    each configuration module calls it on its config class when it is imported."""
    from transformers.models.auto.configuration_auto import AutoConfig
    from transformers.models.auto.modeling_auto import AutoModel, AutoModelForSequenceClassification

    model_type = config.model_type
    AutoConfig.register(model_type, config, exist_ok=True)
    module = _module(model_type, "modeling")
    for auto_class, name in ((AutoModel, ARCHITECTURES[model_type][2]),
                             (AutoModelForSequenceClassification, ARCHITECTURES[model_type][3])):
        real = getattr(sys.modules.get(module), name, None)
        if real is None:
            real = _stand_in(module, name, config_class=config,
                             replace=lambda cls, auto_class=auto_class: auto_class.register(config, cls, exist_ok=True))
        auto_class.register(config, real, exist_ok=True)
    if _fully_imported("transformers.models.auto.processing_auto"):  # (else register_processor will)
        from transformers.models.auto.processing_auto import AutoProcessor

        from hm_hf.processing.processor import MemeProcessor

        AutoProcessor.register(config, MemeProcessor, exist_ok=True)


def register_processor() -> None:
    """Register `MemeProcessor` with AutoProcessor for every hm_hf config (or its stand-in; imports no model)."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING
    from transformers.models.auto.processing_auto import AutoProcessor

    from hm_hf.processing.processor import MemeProcessor

    for model_type in ARCHITECTURES:
        AutoProcessor.register(CONFIG_MAPPING[model_type], MemeProcessor, exist_ok=True)


def _fully_imported(name: str) -> bool:
    """`name` is imported and not half-way through its import (importlib marks that on its spec)."""
    module = sys.modules.get(name)
    return module is not None and not getattr(getattr(module, "__spec__", None), "_initializing", False)


def register_auto_classes() -> None:
    """Import every hm_hf config, which registers its architecture (idempotent); normally not needed, as the
    stand-ins do it on first use."""
    for model_type in ARCHITECTURES:
        config_class(model_type)
