"""Trainable / total parameter counts for any model, with or without PEFT adapters."""

from __future__ import annotations

from torch import nn


def describe_trainable(model: nn.Module) -> tuple[int, int, float]:
    """Returns `(trainable, total, percent_trainable)` over the model's distinct parameters.

    Works on plain modules, transformers models and PeftModels, on any device including "meta" (so a
    base-size model can be counted without allocating it). Shared (tied) parameters count once; a
    PEFT `modules_to_save` copy counts as its own parameters, as in peft's `print_trainable_parameters`.
    4-bit packed parameters are counted at their logical size.
    """
    trainable = total = 0
    seen: set[int] = set()
    for param in model.parameters():
        if id(param) in seen:
            continue
        seen.add(id(param))
        count = param.numel()
        if param.__class__.__name__ == "Params4bit":  # bitsandbytes stores two 4-bit values per byte
            count *= 2
        total += count
        if param.requires_grad:
            trainable += count
    return trainable, total, (100.0 * trainable / total if total else 0.0)


def format_trainable(model: nn.Module) -> str:
    """One line like peft's `print_trainable_parameters`, e.g. `trainable params: 1,410,960 || all params: ...`."""
    trainable, total, pct = describe_trainable(model)
    return f"trainable params: {trainable:,d} || all params: {total:,d} || trainable%: {pct:.4f}"


def print_trainable(model: nn.Module) -> str:
    """Prints and returns [`format_trainable`]'s line."""
    line = format_trainable(model)
    print(line)
    return line





def _parse_value(text: str):
    import json

    try:
        return json.loads(text)
    except ValueError:
        return text


def count_for(model_or_type: str, method: str = "bottleneck", overrides: dict | None = None, **peft_overrides):
    """Builds `model_or_type` (a model_type such as "hm_vilbert" or a saved folder) on the meta device,
    applies `method` ("full", "head", "lora", "ia3" or "bottleneck") and returns `describe_trainable`.

    Nothing is allocated, so base-size models are counted in a fraction of a second.
    """
    import os

    import torch
    from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification

    from ..models.auto import register_auto_classes

    register_auto_classes()
    overrides = dict(overrides or {})
    from ..models.auto import ARCHITECTURES

    if not os.path.isdir(model_or_type) and f"hm_{model_or_type}" in ARCHITECTURES:
        model_or_type = f"hm_{model_or_type}"  # a recipe's model_type (visual_bert), not transformers' own model

    def make_config(**settings):
        if os.path.isdir(model_or_type):
            return AutoConfig.from_pretrained(model_or_type, **settings)
        try:
            return AutoConfig.for_model(model_or_type, **settings)
        except ValueError:  # (transformers' message lists its ~1,000 model types)
            raise ValueError(f"{model_or_type!r} is neither a saved model folder nor a model type (hm_hf's: "
                             f"{', '.join(ARCHITECTURES)})") from None

    default = make_config()
    unknown = sorted(key for key in overrides if not hasattr(default, key))
    if unknown:  # AutoConfig would keep a misspelt key as a new attribute, and count the model without it
        raise ValueError(f"{default.model_type} has no setting {', '.join(unknown)}")
    config = make_config(**overrides) if overrides else default
    with torch.device("meta"):
        try:
            model = AutoModelForSequenceClassification.from_config(config)
        except ValueError:  # e.g. transformers' visual_bert has no sequence-classification mapping
            model = AutoModel.from_config(config)
    if method == "full":
        return describe_trainable(model)
    from .defaults import build_peft_config, freeze_all_but_head

    if method == "head":  # exactly what training with peft_method: head_only trains
        freeze_all_but_head(model)
        return describe_trainable(model)
    from peft import get_peft_model

    return describe_trainable(get_peft_model(model, build_peft_config(model, method, **peft_overrides)))


def cli(argv: list[str]) -> int:
    """`hm-hf peft-params MODEL [--method ...] [--set key=value ...]`: trainable / total parameters."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(
        prog="hm-hf peft-params",
        description="Count trainable / total parameters of an hm_hf model under a PEFT method, on the meta "
        "device (no weights allocated). Example: hm-hf peft-params hm_vilbert --method bottleneck",
    )
    parser.add_argument("model", help="a model_type (hm_vilbert, hm_visual_bert, hm_uniter, ...; a recipe's "
                        "vilbert, visual_bert, ... name the same) or a saved folder")
    parser.add_argument("--method", choices=["full", "head", "lora", "ia3", "bottleneck"], default="bottleneck")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="model config override, JSON-typed (e.g. --set num_hidden_layers=6)")
    parser.add_argument("--peft", action="append", default=[], metavar="KEY=VALUE",
                        help="PEFT config override, JSON-typed (e.g. --peft r=16 or --peft reduction_factor=8)")
    args = parser.parse_args(argv)

    def pairs(items, flag):
        out = {}
        for item in items:
            key, sep, value = item.partition("=")
            if not sep:
                parser.error(f"{flag} expects KEY=VALUE, got {item!r}")
            out[key] = _parse_value(value)
        return out

    from peft.utils.error import NoMatchingPeftModuleError

    try:
        trainable, total, pct = count_for(args.model, args.method, pairs(args.set, "--set"),
                                          **pairs(args.peft, "--peft"))
    except (ValueError, TypeError, OSError, RuntimeError, NoMatchingPeftModuleError) as err:  # a setting that
        print(f"hm-hf peft-params: error: {err}", file=sys.stderr)  # does not fit, a folder that is no model
        return 2
    print(f"{args.model} [{args.method}] trainable params: {trainable:,d} || all params: {total:,d} || "
          f"trainable%: {pct:.4f}")
    return 0

__all__ = ["cli", "count_for", "describe_trainable", "format_trainable", "print_trainable"]
