"""`hm-hf <command>`: one sub-command per user task.

Each command lives in the module that owns the work, as a `cli(argv) -> int` with its own argparse;
this file only dispatches, and imports a command's module only when that command runs (so
`hm-hf --help` stays fast and a missing optional extra only affects the command that needs it).
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "make-synthetic": ("hm_hf.synthetic.data:cli", "write a tiny synthetic HMD / MMHS150K data set"),
    "export-dataset": ("hm_hf.data.export:cli", "export a prepared data set as Parquet + card (and push)"),
    "extract-features": ("hm_hf.extract.runner:cli", "extract bottom-up-attention region features"),
    "import-features": ("hm_hf.extract.importers:cli", "convert MMF / BUA / UNITER features into the cache"),
    "train-fasttext": ("hm_hf.text.fasttext_embeddings:cli", "train fastText on a split's text"),
    "convert-uniter": ("hm_hf.models.uniter.convert_uniter_checkpoint:cli", "convert uniter-base.pt to hm_hf"),
    "convert-vilbert": ("hm_hf.models.vilbert.convert_vilbert_checkpoint:cli", "convert MMF / vilbert-multi-task weights"),
    "peft-params": ("hm_hf.peft.params:cli", "trainable / total parameters of a model + PEFT method"),
    "multi-seed": ("hm_hf.training.multi_seed:cli", "train a recipe with several seeds; mean and std of its metrics"),
    "predict": ("hm_hf.inference.cli:cli", "classify memes with a trained model (JSON lines)"),
    "index": ("hm_hf.retrieval.cli:cli", "add labelled memes to an RGCL model's retrieval index / show it"),
    "ocr": ("hm_hf.ocr.cli:cli", "read the text of meme images into a Hateful Memes jsonl file"),
    "push-space": ("hm_hf.space:cli", "upload the Gradio Space for a model"),
}


def positive_int(text: str) -> int:
    """An argparse ``type`` for counts and sizes (batch size, epochs, dimensions): 0 or less is refused with
    the option named, instead of a loop that silently does nothing or a ``range()`` error."""
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive whole number (1 or more)")
    return value


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: hm-hf <command> [options]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "`hm-hf <command> --help` describes a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"hm-hf: unknown command {command!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name, function_name = COMMANDS[command][0].split(":")
    function = getattr(importlib.import_module(module_name), function_name)
    return int(function(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
