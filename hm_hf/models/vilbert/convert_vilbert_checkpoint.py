"""Convert vilbert-multi-task / MMF ViLBERT checkpoints to `HmVilbertForHatefulMemes` (safetensors).

Source naming (vilbert-multi-task `pretrained_model.bin`, MMF `vilbert` state dicts):
`bert.embeddings.*`, `bert.v_embeddings.image_embeddings / image_location_embeddings / LayerNorm`,
`bert.encoder.layer.N.*`, `bert.encoder.v_layer.N.*`, `bert.encoder.c_layer.N.{biattention,biOutput,
v_intermediate,v_output,t_intermediate,t_output}.*`, `bert.t_pooler.dense`, `bert.v_pooler.dense`, MMF's
`classifier.0.{dense,LayerNorm}` / `classifier.1`; MMF prefixes everything with `model.`, DataParallel with
`module.`. hm_hf kept those module names, so conversion is a prefix rename plus dropping what has no
counterpart: pre-training heads (`cls.*`), vilbert-multi-task task heads (`vil_prediction`, `vil_logit`, ...),
the task-token embedding, and the `biOutput.q_dense*` layers that the original defines but never calls
(6 x 1,836,800 parameters in the base model, which is why the PE paper counts 247,780,354 parameters
where hm_hf's ViLBERT has 236,759,554). Old `LayerNorm.gamma/beta` names become `weight/bias`.

Usage:
    hm-hf convert-vilbert pretrained_model.bin out_dir [--config config.json] [--num-labels 2]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from .configuration_vilbert import HmVilbertConfig

logger = logging.getLogger(__name__)

_WRAPPER_PREFIXES = ("module.", "model.")
# Heads of other tasks or of pre-training: no counterpart in a hateful-memes classifier.
_DROPPED_HEADS = re.compile(
    r"^(cls|vil_prediction|vil_prediction_gqa|vil_logit|vil_binary_prediction|vil_tri_prediction|vision_logit|"
    r"linguisic_logit|linguistic_logit)\."
)
_DROPPED_INSIDE = re.compile(r"(\.biOutput\.q_dense[12]\.|\.biOutput\.q_dropout|^embeddings\.task_embeddings\.|"
                             r"^embeddings\.position_ids$)")


@dataclass
class ConversionReport:
    """What the conversion kept, renamed and dropped (and why), for the log and for tests."""

    converted: int = 0
    dropped: dict[str, str] = field(default_factory=dict)


def _strip_wrappers(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in _WRAPPER_PREFIXES:
            if key.startswith(prefix):
                key, changed = key[len(prefix):], True
    return key


def convert_vilbert_state_dict(
    state_dict: Mapping[str, torch.Tensor], base_model: bool = False
) -> tuple[dict[str, torch.Tensor], ConversionReport]:
    """Rename a vilbert-multi-task / MMF state dict to hm_hf's names.

    Returns keys for `HmVilbertForHatefulMemes` (`bert.*`, `classifier.*`) or, with `base_model=True`,
    for `HmVilbertModel` (no `bert.` prefix, no head).
    """
    report = ConversionReport()
    out: dict[str, torch.Tensor] = {}
    for raw_key, tensor in state_dict.items():
        key = _strip_wrappers(raw_key)
        if _DROPPED_HEADS.match(key):
            report.dropped[raw_key] = "pre-training or other-task head"
            continue
        if key.startswith("bert."):
            inner = key[len("bert."):]
        elif key.startswith("classifier."):
            inner = None
        elif key.split(".", 1)[0] in {"embeddings", "v_embeddings", "encoder", "t_pooler", "v_pooler"}:
            inner = key  # a bare ViLBERTBase state dict
        else:
            report.dropped[raw_key] = "not part of ViLBERT"
            continue
        if inner is not None:
            if _DROPPED_INSIDE.search(inner):
                report.dropped[raw_key] = (
                    "task-token embedding (hm_hf uses no task tokens)" if "task_embeddings" in inner
                    else "buffer" if inner.endswith("position_ids")
                    else "unused in the original forward"
                )
                continue
            key = inner if base_model else "bert." + inner
        elif base_model:
            report.dropped[raw_key] = "classification head (base model requested)"
            continue
        key = re.sub(r"\.gamma$", ".weight", re.sub(r"\.beta$", ".bias", key))
        out[key] = tensor
        report.converted += 1
    return out, report


def config_from_state_dict(state_dict: Mapping[str, torch.Tensor], **overrides) -> HmVilbertConfig:
    """Infers widths and layer counts from a converted (`bert.`-prefixed) state dict.

    Head counts and the co-attention placement cannot be read from weights: they default to ViLBERT base
    (12 / 8 / 8 heads; co-attention after text layers 6..11 and visual layers 0..5) unless overridden.
    """
    def shape(key):
        return tuple(state_dict[key].shape)

    def count(pattern):
        rx = re.compile(pattern)
        return len({m.group(1) for k in state_dict if (m := rx.match(k))})

    vocab, hidden = shape("bert.embeddings.word_embeddings.weight")
    v_hidden, v_feat = shape("bert.v_embeddings.image_embeddings.weight")
    kwargs = dict(
        vocab_size=vocab,
        hidden_size=hidden,
        max_position_embeddings=shape("bert.embeddings.position_embeddings.weight")[0],
        type_vocab_size=shape("bert.embeddings.token_type_embeddings.weight")[0],
        num_hidden_layers=count(r"^bert\.encoder\.layer\.(\d+)\."),
        intermediate_size=shape("bert.encoder.layer.0.intermediate.dense.weight")[0],
        v_feature_size=v_feat,
        v_loc_size=shape("bert.v_embeddings.image_location_embeddings.weight")[1],
        v_hidden_size=v_hidden,
        v_num_hidden_layers=count(r"^bert\.encoder\.v_layer\.(\d+)\."),
        v_intermediate_size=shape("bert.encoder.v_layer.0.intermediate.dense.weight")[0]
        if "bert.encoder.v_layer.0.intermediate.dense.weight" in state_dict else v_hidden,
        bi_hidden_size=shape("bert.t_pooler.dense.weight")[0],
    )
    if "classifier.1.weight" in state_dict:
        kwargs["num_labels"] = shape("classifier.1.weight")[0]
    kwargs.update(overrides)
    n_coatt = count(r"^bert\.encoder\.c_layer\.(\d+)\.")
    if "v_biattention_id" not in kwargs:
        if n_coatt == 6 and kwargs["num_hidden_layers"] == 12 and kwargs["v_num_hidden_layers"] == 6:
            kwargs.update(v_biattention_id=[0, 1, 2, 3, 4, 5], t_biattention_id=[6, 7, 8, 9, 10, 11])
        else:
            raise ValueError(
                f"The checkpoint has {n_coatt} co-attention layers in a non-base layout: pass v_biattention_id "
                "and t_biattention_id (e.g. with --config, from the original model's JSON config)."
            )
    return HmVilbertConfig(**kwargs)


def read_state_dict(path: str) -> dict[str, torch.Tensor]:
    """Loads safetensors, or a plain PyTorch state dict with `weights_only=True` (never arbitrary pickles)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such checkpoint file.")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # an MMF training .ckpt pickles its OmegaConf config next to the weights
        raise ValueError(
            f"{path}: cannot be read as a plain tensor state dict ({err.__class__.__name__}). MMF training "
            "checkpoints (.ckpt) pickle their configuration; load it once in MMF's own environment and save "
            "`ckpt['model']` with torch.save (or safetensors), then convert that file."
        ) from err
    if isinstance(obj, Mapping) and "model" in obj and isinstance(obj["model"], Mapping):
        obj = obj["model"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path}: expected a mapping of parameter names to tensors.")
    return dict(obj)


def convert_vilbert_checkpoint(
    checkpoint_path: str, output_dir: str, config: HmVilbertConfig | None = None, **config_overrides
):
    """Converts a checkpoint file and writes an `HmVilbertForHatefulMemes` folder (safetensors + config).

    Returns the loaded model. Raises if any hm_hf weight other than the classification head is missing.
    """
    from .modeling_vilbert import HmVilbertForHatefulMemes

    converted, report = convert_vilbert_state_dict(read_state_dict(checkpoint_path))
    for key, why in sorted(report.dropped.items()):
        logger.info("dropped %s (%s)", key, why)
    if config is None:
        config = config_from_state_dict(converted, **config_overrides)
    model = HmVilbertForHatefulMemes(config)
    head = {k: v for k, v in converted.items() if k.startswith("classifier.")}
    if head and any(model.state_dict()[k].shape != v.shape for k, v in head.items() if k in model.state_dict()):
        logger.warning("classification head shapes differ from num_labels=%d: the head stays freshly initialised",
                       config.num_labels)
        converted = {k: v for k, v in converted.items() if not k.startswith("classifier.")}
    result = model.load_state_dict(converted, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith("classifier.")]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"{checkpoint_path}: does not match the ViLBERT layout; missing {missing[:10]}, unexpected "
            f"{result.unexpected_keys[:10]} (check widths, layer counts and co-attention ids in the config)."
        )
    model.save_pretrained(output_dir)
    logger.info("converted %d tensors, dropped %d, wrote %s", report.converted, len(report.dropped), output_dir)
    return model


def cli(argv: list[str]) -> int:
    """`hm-hf convert-vilbert CHECKPOINT OUTPUT_DIR`: vilbert-multi-task / MMF weights -> hm_hf folder."""
    parser = argparse.ArgumentParser(prog="hm-hf convert-vilbert", description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="pretrained_model.bin / model.pth / .safetensors state dict")
    parser.add_argument("output_dir")
    parser.add_argument("--config", help="JSON with HmVilbertConfig fields (vilbert-multi-task's bert_base_6layer_"
                        "6conect.json works: unknown keys are kept as attributes)")
    parser.add_argument("--num-labels", type=int, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    overrides = {}
    if args.config:
        with open(args.config, encoding="utf-8") as fh:
            overrides = json.load(fh)
    if args.num_labels is not None:
        overrides["num_labels"] = args.num_labels
    convert_vilbert_checkpoint(args.checkpoint, args.output_dir, **overrides)
    return 0


__all__ = [
    "ConversionReport",
    "cli",
    "config_from_state_dict",
    "convert_vilbert_checkpoint",
    "convert_vilbert_state_dict",
    "read_state_dict",
]
