"""Default PEFT targets per architecture, and `build_peft_config(model, method)` that applies them.

Custom (non-transformers-registry) models get no defaults from peft, so hm_hf keeps its own table:

* LoRA: attention `query` / `value` projections (plus ViLBERT's co-attention `query1/2`, `value1/2`).
* IA3: `key`, `value` and the feed-forward `output.dense` (scaled on its input, as peft does for BERT).
* Bottleneck (PE paper): every layer's feed-forward `output` block; for ViLBERT both streams'
  `encoder.layer.N.output` and `encoder.v_layer.N.output` (not the co-attention layers' `t_output` /
  `v_output`), which gives the paper's 2,671,092 trainable parameters with the head.
* `modules_to_save`: the classification head (`classifier` in every hm_hf model).

Architectures not in the table are inspected: BERT-style names get the BERT defaults, `q_proj`/`v_proj`
encoders (CLIP) their usual targets, anything else LoRA / IA3 on every Linear layer outside the head.
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
    "qkv_proj": ["q_proj", "v_proj"],  # CLIP / ViT-style encoders (e.g. inside Concat)
}

IA3_TARGET_MODULES: dict[str, tuple[list[str], list[str]]] = {
    # (target_modules, feedforward_modules)
    "hm_vilbert": (
        ["key", "value", "key1", "value1", "key2", "value2", "output.dense", "t_output.dense", "v_output.dense"],
        ["output.dense", "t_output.dense", "v_output.dense"],
    ),
    "bert_style": (["key", "value", "output.dense"], ["output.dense"]),
    "qkv_proj": (["k_proj", "v_proj", "fc2"], ["fc2"]),
}

HEAD_NAMES = ("classifier", "cls", "score", "head")
# Concat's projections and fusion MLP are new, task-specific layers: trained in full next to the head.
CONCAT_TRAINED = ("text_projection", "image_projection", "fusion")
# Likewise the CLIP model's (Hate-CLIPper's) projections and pre-output MLP; LoRA goes on CLIP's q_proj/v_proj.
CLIP_TRAINED = ("image_map", "text_map", "pre_output")
TRAINED_WITH_HEAD = {"hm_concat": CONCAT_TRAINED, "hm_clip": CLIP_TRAINED, "hm_rgcl": CLIP_TRAINED}  # RGCL: the CLIP network

LORA_DEFAULTS: dict[str, Any] = {"r": 8, "lora_alpha": 16, "lora_dropout": 0.1, "bias": "none"}


def _model_type(model: nn.Module) -> str | None:
    config = getattr(model, "config", None)
    return getattr(config, "model_type", None)


def head_modules(model: nn.Module) -> list[str]:
    """Names of the modules to train in full and save next to the adapters: the classification head, and
    for Concat / CLIP their projection and fusion layers."""
    children = dict(model.named_children())
    names = [name for name in HEAD_NAMES if name in children][:1]
    if _model_type(model) in TRAINED_WITH_HEAD:
        present = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if n and len(list(m.parameters()))}
        names += [n for n in TRAINED_WITH_HEAD[_model_type(model)] if n in present]
    return names


def in_head(parameter_name: str, heads: list[str]) -> bool:
    """Whether a parameter lies inside one of the `heads` module names, matched as peft matches
    `modules_to_save`: the whole module name or its last dotted parts (`fusion` matches `concat.fusion.0`)."""
    return any(parameter_name.startswith(h + ".") or f".{h}." in f".{parameter_name}" for h in heads)


def freeze_all_but_head(model: nn.Module) -> list[str]:
    """Head-only training (the PE paper's baseline): only the parameters of `head_modules(model)` train.

    The one definition of "head" for training (`peft_method: head_only`) and for `hm-hf peft-params --method
    head`. Returns the head module names; raises ValueError when the model has no head.
    """
    heads = head_modules(model)
    if not heads:
        raise ValueError(f"{type(model).__name__} has no classification head to train alone.")
    for name, parameter in model.named_parameters():
        parameter.requires_grad = in_head(name, heads)
    return heads


def _frozen_module_names(model: nn.Module, saved: list[str]) -> list[str]:
    def under_saved(name):
        return any(re.match(rf"(^|.*\.){re.escape(s)}($|\..*)", name) for s in saved)

    return [n for n, _ in model.named_modules() if n and not under_saved(n)]


def _family(names: list[str], model_type: str | None) -> str:
    if model_type in LORA_TARGET_MODULES:
        return model_type
    if any(n.endswith("attention.self.query") for n in names):
        return "bert_style"
    if any(n.endswith("q_proj") for n in names):
        return "qkv_proj"
    return "generic"


def build_peft_config(model: nn.Module, method: str = "bottleneck", **overrides: Any):
    """A ready PEFT config for `model`: hm_hf's default targets for its architecture, head in modules_to_save.

    `method` is "lora", "ia3" or "bottleneck"; keyword overrides replace any field (e.g. `r=16`,
    `target_modules=[...]`, `reduction_factor=8`). Raises ValueError, saying why, when the model has
    nothing the method can adapt (e.g. a Concat model over precomputed features: train it in full).

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
    model_type = _model_type(model)
    saved = head_modules(model)
    names = _frozen_module_names(model, saved)
    linear = [n for n in names if isinstance(model.get_submodule(n), nn.Linear)]
    family = _family(names, model_type)
    kwargs: dict[str, Any] = {"modules_to_save": saved or None}

    def nothing_to_adapt(what):
        return ValueError(
            f"{type(model).__name__} ({model_type}) has no {what} outside the trained head modules {saved}: "
            f"'{method}' has nothing to adapt. Train the model in full, or pass target_modules explicitly."
        )

    if method == "lora":
        if family == "generic":
            if not linear:
                raise nothing_to_adapt("frozen Linear layers")
            targets: Any = linear
        else:
            targets = list(LORA_TARGET_MODULES[family])
        kwargs.update(LORA_DEFAULTS, target_modules=targets)
        kwargs.update(overrides)
        return LoraConfig(**kwargs)
    if method == "ia3":
        if family == "generic":
            if not linear:
                raise nothing_to_adapt("frozen Linear layers")
            kwargs.update(target_modules=linear, feedforward_modules=[])
        else:
            targets, feedforward = IA3_TARGET_MODULES[family]
            kwargs.update(target_modules=list(targets), feedforward_modules=list(feedforward))
        kwargs.update(overrides)
        return IA3Config(**kwargs)
    if method == "bottleneck":
        pattern = BOTTLENECK_TARGET_MODULES.get(model_type, BOTTLENECK_TARGET_MODULES["default"])
        if "target_modules" not in overrides and not any(re.fullmatch(pattern, n) for n in names):
            raise nothing_to_adapt("transformer output blocks (`...layer.N.output`)")
        kwargs["target_modules"] = pattern
        kwargs.update(overrides)
        return BottleneckConfig(**kwargs)
    raise ValueError(f"Unknown PEFT method {method!r}: use 'lora', 'ia3' or 'bottleneck'.")


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
