"""PEFT for hm_hf: the PE paper's bottleneck adapter as a registered peft method, default targets, counts.

Importing this module registers `PeftType.BOTTLENECK` with peft, so `get_peft_model(model,
BottleneckConfig(...))`, `PeftModel.from_pretrained(base, folder)` and `PeftConfig.from_pretrained(folder)`
work like for LoRA.
"""

from __future__ import annotations

from .config import BottleneckConfig
from .defaults import build_peft_config, freeze_all_but_head, head_modules, merge_and_unload
from .enum_patch import ensure_peft_type
from .layer import BottleneckLayer
from .model import BottleneckModel
from .params import describe_trainable, format_trainable, print_trainable


def register_bottleneck() -> None:
    """Registers the bottleneck adapter with peft (idempotent; runs on `import hm_hf.peft`)."""
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING, PEFT_TYPE_TO_TUNER_MAPPING
    from peft.utils import register_peft_method

    peft_type = ensure_peft_type()
    if PEFT_TYPE_TO_CONFIG_MAPPING.get(peft_type) is BottleneckConfig:
        return
    if peft_type in PEFT_TYPE_TO_CONFIG_MAPPING or peft_type in PEFT_TYPE_TO_TUNER_MAPPING:
        raise RuntimeError(
            "PeftType.BOTTLENECK is already registered with another implementation "
            f"({PEFT_TYPE_TO_CONFIG_MAPPING.get(peft_type)}); hm_hf's bottleneck adapter cannot replace it."
        )
    register_peft_method(name="bottleneck", config_cls=BottleneckConfig, model_cls=BottleneckModel,
                         prefix=BottleneckModel.prefix)


register_bottleneck()

__all__ = [
    "BottleneckConfig",
    "BottleneckLayer",
    "BottleneckModel",
    "build_peft_config",
    "describe_trainable",
    "format_trainable",
    "freeze_all_but_head",
    "head_modules",
    "merge_and_unload",
    "print_trainable",
    "register_bottleneck",
]
