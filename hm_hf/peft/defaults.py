"""Default PEFT targets per architecture, and `build_peft_config(model, method)` that applies them.

Custom (non-transformers-registry) models get no defaults from peft, so hm_hf keeps its own table:

* LoRA: attention `query` / `value` projections (plus ViLBERT's co-attention `query1/2`, `value1/2`).
* IA3: `key`, `value` and the feed-forward `output.dense` (scaled on its input, as peft does for BERT).
* Bottleneck (PE paper): every layer's feed-forward `output` block; for ViLBERT both streams'
  `encoder.layer.N.output` and `encoder.v_layer.N.output` (not the co-attention layers' `t_output` /
  `v_output`), which gives the paper's 2,671,092 trainable parameters with the head.
* `modules_to_save`: the classification head (`classifier` in every hm_hf model).

Architectures not in the table are inspected: BERT-style names get the BERT defaults; anything else gets
LoRA on all linear layers (peft's "all-linear") except the head.
"""

from __future__ import annotations

import re
from typing import Any

from torch import nn

_BERT_OUTPUT = r".*encoder\.layer\.\d+\.output"
_VILBERT_OUTPUT = r".*encoder\.(?:v_)?layer\.\d+\.output"
_ANY_OUTPUT = r".*layer\.\d+\.output"

BOTTLENECK_TARGET_MODULES: dict[str, str] = {
    "hm_vilbert": _VILBERT_OUTPUT,
    "hm_visual_bert": _BERT_OUTPUT,
    "hm_uniter": _BERT_OUTPUT,
    "visual_bert": _BERT_OUTPUT,
    "bert": _BERT_OUTPUT,
    "default": _ANY_OUTPUT,
}

LORA_TARGET_MODULES: dict[str, list[str]] = {
    "hm_vilbert": ["query", "value", "query1", "value1", "query2", "value2"],
    "bert_style": ["query", "value"],
}

IA3_TARGET_MODULES: dict[str, tuple[list[str], list[str]]] = {
    # (target_modules, feedforward_modules)
    "hm_vilbert": (
        ["key", "value", "key1", "value1", "key2", "value2", "output.dense", "t_output.dense", "v_output.dense"],
        ["output.dense", "t_output.dense", "v_output.dense"],
    ),
    "bert_style": (["key", "value", "output.dense"], ["output.dense"]),
}

HEAD_NAMES = ("classifier", "cls", "score", "head")

LORA_DEFAULTS: dict[str, Any] = {"r": 8, "lora_alpha": 16, "lora_dropout": 0.1, "bias": "none"}


def _model_type(model: nn.Module) -> str | None:
    config = getattr(model, "config", None)
    return getattr(config, "model_type", None)


def _is_bert_style(model: nn.Module) -> bool:
    return any(re.search(r"attention\.self\.query$", name) for name, _ in model.named_modules())


def head_modules(model: nn.Module) -> list[str]:
    """Names of the classification head(s) to train and save alongside the adapters."""
    children = dict(model.named_children())
    return [name for name in HEAD_NAMES if name in children][:1]


def _family(model: nn.Module) -> str:
    model_type = _model_type(model)
    if model_type in LORA_TARGET_MODULES:
        return model_type
    return "bert_style" if _is_bert_style(model) else "generic"


def build_peft_config(model: nn.Module, method: str = "bottleneck", **overrides: Any):
    """A ready PEFT config for `model`: hm_hf's default targets for its architecture, head in modules_to_save.

    `method` is "lora", "ia3" or "bottleneck"; keyword overrides replace any field (e.g. `r=16`,
    `target_modules=[...]`, `reduction_factor=8`).

    Example:

    ```python
    >>> from peft import get_peft_model
    >>> from hm_hf.peft import build_peft_config
    >>> peft_model = get_peft_model(model, build_peft_config(model, "lora", r=16))
    ```
    """
    from peft import IA3Config, LoraConfig

    from .config import BottleneckConfig

    method = method.lower()
    family = _family(model)
    kwargs: dict[str, Any] = {"modules_to_save": head_modules(model) or None}
    if method == "lora":
        if family == "generic":
            kwargs["target_modules"] = "all-linear"
        else:
            kwargs["target_modules"] = list(LORA_TARGET_MODULES[family])
        kwargs.update(LORA_DEFAULTS)
        kwargs.update(overrides)
        return LoraConfig(**kwargs)
    if method == "ia3":
        if family == "generic":
            head = set(kwargs["modules_to_save"] or [])
            names = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules()
                            if isinstance(m, nn.Linear) and n.split(".", 1)[0] not in head})
            kwargs.update(target_modules=names, feedforward_modules=[])
        else:
            targets, feedforward = IA3_TARGET_MODULES[family]
            kwargs.update(target_modules=list(targets), feedforward_modules=list(feedforward))
        kwargs.update(overrides)
        return IA3Config(**kwargs)
    if method == "bottleneck":
        model_type = _model_type(model)
        kwargs["target_modules"] = BOTTLENECK_TARGET_MODULES.get(model_type, BOTTLENECK_TARGET_MODULES["default"])
        kwargs.update(overrides)
        return BottleneckConfig(**kwargs)
    raise ValueError(f"Unknown PEFT method {method!r}: use 'lora', 'ia3' or 'bottleneck'.")


__all__ = [
    "BOTTLENECK_TARGET_MODULES",
    "IA3_TARGET_MODULES",
    "LORA_TARGET_MODULES",
    "build_peft_config",
    "head_modules",
    "merge_and_unload",
]


def merge_and_unload(peft_model):
    """`peft_model.merge_and_unload()` that also works when the saved head is not a single Linear.

    peft's generic unloading (IA3 and others) copies `.weight` from a `modules_to_save` wrapper onto the
    unwrapped module, which fails for a Sequential head such as hm_hf's classifiers. The trained head copy
    is put in place first, then peft merges the adapters. Bottleneck adapters cannot be merged (raises).
    """
    from peft.utils.other import ModulesToSaveWrapper

    model = peft_model.base_model.model
    for name, module in list(model.named_modules()):
        if isinstance(module, ModulesToSaveWrapper):
            parent = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
            active = module.active_adapters[0] if module.active_adapters else None
            trained = module.modules_to_save[active] if active in module.modules_to_save else module.original_module
            setattr(parent, name.rpartition(".")[2], trained)
    return peft_model.merge_and_unload()
