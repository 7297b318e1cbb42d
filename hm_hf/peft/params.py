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


__all__ = ["describe_trainable", "format_trainable", "print_trainable"]
