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

The two sources fed the model differently, and a converted model must see what it was trained on:
vilbert-multi-task's feature reader prepends a global image token (the mean region, box 0,0,1,1,1), MMF's
ViLBERT (its hateful-memes and other classification configs) feeds the regions alone. The converter sets
`add_global_image_token` from the checkpoint's origin: files wrapped as `{"model_state_dict": ...}`
(vilbert-multi-task's training checkpoints) or holding its task heads are vilbert-multi-task; keys under
MMF's `model.` prefix are MMF. A file that shows neither (e.g. a bare pre-trained `bert.*` state dict), or
both, is refused until `--origin mmf|vilbert-multi-task` says which it is.

Usage:
    hm-hf convert-vilbert pretrained_model.bin out_dir [--origin mmf] [--config config.json] [--num-labels 2]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from hm_hf.cli import positive_int
from hm_hf.fileio import atomic_folder, read_json_object

from .configuration_vilbert import HmVilbertConfig

logger = logging.getLogger(__name__)

_WRAPPER_PREFIXES = ("module.", "model.")
# Older MMF checkpoints nest the model one level deeper; MMF's own ViLBERT.format_state_key renames them so.
_MMF_LEGACY_PREFIXES = (("bert.bert.", "bert."), ("bert.classifier.", "classifier."), ("bert.cls.", "cls."))
# Heads of other tasks or of pre-training: no counterpart in a hateful-memes classifier.
_DROPPED_HEADS = re.compile(
    r"^(cls|vil_prediction|vil_prediction_gqa|vil_logit|vil_binary_prediction|vil_tri_prediction|vision_logit|"
    r"linguisic_logit|linguistic_logit)\."
)
#: Whether each origin's reader prepends the global image token (vilbert-multi-task's `_image_features_reader`
#: does; MMF's ViLBERT reads `image_feature_0` as extracted).
GLOBAL_IMAGE_TOKEN = {"mmf": False, "vilbert-multi-task": True}
_MULTI_TASK_KEYS = re.compile(r"^(vil_prediction|vil_prediction_gqa|vil_logit|vil_binary_prediction|vil_tri_prediction|"
                              r"vision_logit|linguisic_logit|linguistic_logit)\.|^bert\.embeddings\.task_embeddings\.")
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
    for old, new in _MMF_LEGACY_PREFIXES:
        if key.startswith(old):
            return new + key[len(old):]
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
        if key not in state_dict:
            raise ValueError(f"the checkpoint has no {key} (after conversion): it is not a ViLBERT checkpoint of "
                             "vilbert-multi-task or MMF")
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


class VilbertOriginError(ValueError):
    """The converter cannot tell which code base a checkpoint comes from; the message says how to say it."""


def read_checkpoint(path: str) -> tuple[dict[str, torch.Tensor], str | None]:
    """The state dict in `path` and the wrapper key it was found under (`"model_state_dict"` for
    vilbert-multi-task's training files, `"model"` for MMF's, None for a bare state dict).

    Loads safetensors, or a plain PyTorch file with `weights_only=True` (never arbitrary pickles).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such checkpoint file.")
    if path.endswith(".safetensors"):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(path), None
        except SafetensorError as err:
            raise ValueError(f"{path}: not a readable safetensors file ({err}): damaged or truncated; download "
                             "it again") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # training checkpoints pickle their configuration or logger next to the weights
        raise ValueError(
            f"{path}: cannot be read as a plain tensor state dict ({err.__class__.__name__}). MMF training "
            "checkpoints (.ckpt) pickle their configuration and vilbert-multi-task's pytorch_ckpt_*.tar its task "
            "controller and logger: use the pytorch_model_*.bin saved beside the latter, or load the file once in "
            "its own environment and save `ckpt['model']` / `ckpt['model_state_dict']` with torch.save (or "
            "safetensors), then convert that file."
        ) from err
    wrapper = None
    for key in ("model_state_dict", "model"):
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj, wrapper = obj[key], key
            break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path}: expected a mapping of parameter names to tensors.")
    return dict(obj), wrapper


def read_state_dict(path: str) -> dict[str, torch.Tensor]:
    """The state dict of a checkpoint file (see `read_checkpoint`)."""
    return read_checkpoint(path)[0]


def checkpoint_origin(state_dict: Mapping[str, torch.Tensor], wrapper: str | None = None) -> str | None:
    """"mmf" or "vilbert-multi-task" when the file says which code base wrote it, else None."""
    signs = set()
    if wrapper == "model_state_dict":
        signs.add("vilbert-multi-task")
    keys = [k[len("module."):] if k.startswith("module.") else k for k in state_dict]
    if any(k.startswith("model.") for k in keys):  # MMF's BaseModel keeps the network under `model`
        signs.add("mmf")
    if any(_MULTI_TASK_KEYS.match(_strip_wrappers(k)) for k in keys):
        signs.add("vilbert-multi-task")
    return signs.pop() if len(signs) == 1 else None


def convert_vilbert_checkpoint(
    checkpoint_path: str, output_dir: str, config: HmVilbertConfig | None = None, origin: str | None = None,
    overwrite: bool = False, **config_overrides
):
    """Converts a checkpoint file and writes an `HmVilbertForHatefulMemes` folder (safetensors + config +
    `conversion.json`: source, origin, what was dropped).

    `origin` ("mmf" or "vilbert-multi-task") sets `add_global_image_token` (see the module docstring); None
    reads it from the file, and a file that does not say raises `VilbertOriginError` (unless the config or
    `config_overrides` set `add_global_image_token` themselves). Returns the loaded model. Raises if any
    hm_hf weight other than the classification head is missing. The folder is written whole or not at all
    (`atomic_folder`); an existing non-empty one only with `overwrite`.
    """
    with atomic_folder(output_dir, overwrite) as staging:
        model, report, origin = _convert(checkpoint_path, staging, config, origin, config_overrides)
    logger.info("converted %d tensors (%s origin, global image token %s), dropped %d, wrote %s", report.converted,
                origin or "given", model.config.add_global_image_token, len(report.dropped), output_dir)
    return model


def _convert(checkpoint_path, output_dir: Path, config, origin, config_overrides):
    from .modeling_vilbert import HmVilbertForHatefulMemes

    if origin is not None and origin not in GLOBAL_IMAGE_TOKEN:
        raise ValueError(f"origin must be one of {sorted(GLOBAL_IMAGE_TOKEN)}, got {origin!r}")
    raw, wrapper = read_checkpoint(checkpoint_path)
    detected = checkpoint_origin(raw, wrapper)
    if origin is not None and detected is not None and origin != detected:
        logger.warning("%s looks like a %s checkpoint; converting it as %s, as asked", checkpoint_path, detected,
                       origin)
    origin = origin or detected
    explicit = "add_global_image_token" in config_overrides or config is not None
    if origin is None and not explicit:
        raise VilbertOriginError(
            f"{checkpoint_path}: cannot tell whether this ViLBERT checkpoint comes from MMF or from "
            "vilbert-multi-task, and the two feed the model differently (vilbert-multi-task prepends a global "
            "image token, MMF's hateful-memes ViLBERT does not). Say which: --origin mmf (MMF's model zoo and "
            "MMF training runs, the PE paper's setting) or --origin vilbert-multi-task."
        )
    if origin is not None and "add_global_image_token" not in config_overrides and config is None:
        config_overrides["add_global_image_token"] = GLOBAL_IMAGE_TOKEN[origin]
    converted, report = convert_vilbert_state_dict(raw)
    for key, why in sorted(report.dropped.items()):
        logger.info("dropped %s (%s)", key, why)
    if config is None:
        try:
            config = config_from_state_dict(converted, **config_overrides)
        except TypeError as err:  # a value of the wrong type in --config
            raise ValueError(f"{checkpoint_path}: the config does not fit HmVilbertConfig ({err})") from None
    model = HmVilbertForHatefulMemes(config)
    head = {k: v for k, v in converted.items() if k.startswith("classifier.")}
    if head and any(model.state_dict()[k].shape != v.shape for k, v in head.items() if k in model.state_dict()):
        logger.warning("classification head shapes differ from num_labels=%d: the head stays freshly initialised",
                       config.num_labels)
        converted = {k: v for k, v in converted.items() if not k.startswith("classifier.")}
    try:
        result = model.load_state_dict(converted, strict=False)
    except RuntimeError as err:  # a tensor of another shape than the config says
        raise ValueError(f"{checkpoint_path}: does not match the ViLBERT layout "
                         f"({str(err).strip().splitlines()[-1].strip()})") from None
    missing = [k for k in result.missing_keys if not k.startswith("classifier.")]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"{checkpoint_path}: does not match the ViLBERT layout; missing {missing[:10]}, unexpected "
            f"{result.unexpected_keys[:10]} (check widths, layer counts and co-attention ids in the config)."
        )
    model.save_pretrained(output_dir)
    note = {"source": str(checkpoint_path), "origin": origin, "add_global_image_token": config.add_global_image_token,
            "dropped_keys": dict(sorted(report.dropped.items()))}
    (Path(output_dir) / "conversion.json").write_text(json.dumps(note, indent=1), encoding="utf-8")
    return model, report, origin


def cli(argv: list[str]) -> int:
    """`hm-hf convert-vilbert CHECKPOINT OUTPUT_DIR`: vilbert-multi-task / MMF weights -> hm_hf folder."""
    parser = argparse.ArgumentParser(prog="hm-hf convert-vilbert", description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="pretrained_model.bin / model.pth / .safetensors state dict")
    parser.add_argument("output_dir")
    parser.add_argument("--origin", choices=sorted(GLOBAL_IMAGE_TOKEN), default=None,
                        help="the code base the checkpoint comes from, which decides the global image token (mmf: "
                        "none; vilbert-multi-task: prepended). Default: read from the file; refused when it does "
                        "not say")
    parser.add_argument("--config", help="JSON with HmVilbertConfig fields (vilbert-multi-task's bert_base_6layer_"
                        "6conect.json works: unknown keys are kept as attributes)")
    parser.add_argument("--num-labels", type=positive_int, default=None)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output_dir (whole)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    overrides = {}
    try:
        if args.config:
            overrides = read_json_object(args.config, "ViLBERT config", "give a JSON object of HmVilbertConfig "
                                         "fields, e.g. vilbert-multi-task's bert_base_6layer_6conect.json")
        if args.num_labels is not None:
            overrides["num_labels"] = args.num_labels
        convert_vilbert_checkpoint(args.checkpoint, args.output_dir, origin=args.origin, overwrite=args.overwrite,
                                   **overrides)
    except (OSError, ValueError) as err:  # missing file, unreadable or unrecognised checkpoint, origin unknown
        print(f"convert-vilbert: error: {err}", file=sys.stderr)
        return 2
    return 0


__all__ = [
    "ConversionReport",
    "GLOBAL_IMAGE_TOKEN",
    "VilbertOriginError",
    "checkpoint_origin",
    "cli",
    "config_from_state_dict",
    "convert_vilbert_checkpoint",
    "convert_vilbert_state_dict",
    "read_checkpoint",
    "read_state_dict",
]
