"""Convert an original UNITER checkpoint (``uniter-base.pt`` / ``uniter-large.pt``) into an hm_hf model folder.

The original keys (``uniter.embeddings.*``, ``uniter.img_embeddings.{img_linear, img_layer_norm, pos_linear,
pos_layer_norm, LayerNorm}.*``, ``uniter.encoder.layer.N.*``, ``uniter.pooler.dense.*``) are kept as they are:
:class:`HmUniterForHatefulMemes` uses the same names. Dropped, and listed: the region-masking embedding
``uniter.img_embeddings.mask_embedding`` (pre-training only) and the pre-training heads (``cls.*``,
``feat_regress.*``, ``region_classifier.*``, ``itm_output.*`` ...). Old ``gamma``/``beta`` LayerNorm names
become ``weight``/``bias``. The folder holds the bare :class:`HmUniterModel` (config with ``num_labels``);
the classifier is created, randomly initialised, when the folder is loaded into HmUniterForHatefulMemes.

Usage::

    hm-hf convert-uniter --checkpoint uniter-base.pt --output uniter-base-hm [--config uniter-base.json]
    python -m hm_hf.models.uniter.convert_uniter_checkpoint --checkpoint uniter-base.pt --output uniter-base-hm

The ``.pt`` file is read with ``torch.load(weights_only=True)``: no pickled code is ever run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from hm_hf.cli import positive_int
from hm_hf.fileio import atomic_folder, read_json_object

from .configuration_uniter import HmUniterConfig
from .modeling_uniter import HmUniterModel

__all__ = ["cli", "convert_uniter_checkpoint", "convert_uniter_state_dict", "infer_uniter_config", "load_uniter_pt"]

_KEEP = re.compile(r"^uniter\.(embeddings|img_embeddings|encoder|pooler)\.")
_DROP_IN_BODY = re.compile(r"^uniter\.img_embeddings\.mask_embedding\.|position_ids$")


def load_uniter_pt(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a UNITER ``.pt`` state dict safely (``weights_only=True``); unwraps ``{"model": ...}`` wrappers."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"UNITER checkpoint {path} does not exist; download uniter-base.pt first")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises UnpicklingError (or RuntimeError for a bad archive)
        raise ValueError(f"{path} is not a plain PyTorch state dict readable with weights_only=True "
                         f"({type(err).__name__}; hm_hf never unpickles code): download uniter-base.pt again, or "
                         "re-save your weights with torch.save(model.state_dict())") from None
    for wrapper in ("model", "state_dict", "model_state_dict"):
        if isinstance(state, Mapping) and wrapper in state and isinstance(state[wrapper], Mapping):
            state = state[wrapper]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} does not hold a state dict of tensors")
    return dict(state)


def convert_uniter_state_dict(state_dict: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Original UNITER keys -> :class:`HmUniterForHatefulMemes` keys. Returns (converted, dropped keys).

    Keys without the ``uniter.`` prefix (a checkpoint of the bare ``UniterModel``) get it added.
    """
    has_prefix = any(k.startswith("uniter.") for k in state_dict)
    converted, dropped = {}, []
    for key, value in state_dict.items():
        new_key = key if has_prefix else f"uniter.{key}"
        new_key = re.sub(r"\.gamma$", ".weight", re.sub(r"\.beta$", ".bias", new_key))
        if _KEEP.match(new_key) and not _DROP_IN_BODY.search(new_key):
            converted[new_key] = value
        else:
            dropped.append(key)
    if not converted:
        raise ValueError("no UNITER weights found: expected keys like 'uniter.encoder.layer.0.attention.self.query.weight'")
    return converted, dropped


def infer_uniter_config(state_dict: Mapping[str, torch.Tensor], **overrides: Any) -> HmUniterConfig:
    """Read the sizes of a converted state dict into an :class:`HmUniterConfig`.

    The number of attention heads is not in the weights: it defaults to hidden_size / 64 (12 for base,
    16 for large); pass ``num_attention_heads=`` (or a UNITER config json to :func:`convert_uniter_checkpoint`).
    """
    try:
        word = state_dict["uniter.embeddings.word_embeddings.weight"]
        fields = {
            "vocab_size": word.shape[0],
            "hidden_size": word.shape[1],
            "max_position_embeddings": state_dict["uniter.embeddings.position_embeddings.weight"].shape[0],
            "type_vocab_size": state_dict["uniter.embeddings.token_type_embeddings.weight"].shape[0],
            "intermediate_size": state_dict["uniter.encoder.layer.0.intermediate.dense.weight"].shape[0],
            "img_dim": state_dict["uniter.img_embeddings.img_linear.weight"].shape[1],
            "pos_dim": state_dict["uniter.img_embeddings.pos_linear.weight"].shape[1],
        }
    except KeyError as err:
        raise ValueError(f"UNITER state dict lacks {err.args[0]}: is it a UNITER checkpoint?") from None
    layers = {int(m.group(1)) for k in state_dict if (m := re.match(r"uniter\.encoder\.layer\.(\d+)\.", k))}
    fields["num_hidden_layers"] = max(layers) + 1
    fields["num_attention_heads"] = max(1, fields["hidden_size"] // 64)
    fields.update(overrides)
    return HmUniterConfig(**fields)


_UNITER_JSON_FIELDS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "hidden_act",
                       "hidden_dropout_prob", "attention_probs_dropout_prob", "max_position_embeddings",
                       "type_vocab_size", "initializer_range", "vocab_size")


def convert_uniter_checkpoint(
    checkpoint: str | os.PathLike,
    output_dir: str | os.PathLike,
    config_path: str | os.PathLike | None = None,
    overwrite: bool = False,
    **config_overrides: Any,
) -> HmUniterModel:
    """Convert ``checkpoint`` (a UNITER ``.pt``) and save an hm_hf UNITER folder (body weights + config).

    Load it with ``HmUniterForHatefulMemes.from_pretrained(folder)`` (the classifier is new) or
    ``AutoModelForSequenceClassification.from_pretrained(folder)`` after ``import hm_hf``.

    ``config_path``: UNITER's own config json (``uniter-base.json``) for the head count and dropouts;
    ``config_overrides``: e.g. ``num_labels=6``. Raises if any converted weight does not fit the model. The
    folder is written whole or not at all (`atomic_folder`); an existing non-empty one only with `overwrite`.
    """
    with atomic_folder(output_dir, overwrite) as staging:
        converted, dropped = convert_uniter_state_dict(load_uniter_pt(checkpoint))
        overrides: dict[str, Any] = {}
        if config_path is not None:
            overrides.update({k: v for k, v in read_json_object(config_path, "UNITER config", "give UNITER's own "
                                                                "config json, e.g. uniter-base.json").items()
                              if k in _UNITER_JSON_FIELDS})
        overrides.update(config_overrides)
        try:
            config = infer_uniter_config(converted, **overrides)
        except TypeError as err:  # a value of the wrong type in the config json
            raise ValueError(f"{config_path or 'the checkpoint'}: {err}") from None
        # Saved as the bare HmUniterModel: loading the folder into HmUniterForHatefulMemes then reports the
        # classifier as newly initialised (it is), and HmUniterModel loads it with no missing/unexpected key.
        model = HmUniterModel(config)
        try:
            result = model.load_state_dict({k[len("uniter."):]: v for k, v in converted.items()}, strict=False)
        except RuntimeError as err:  # a tensor of another shape than the config says
            raise ValueError(f"{checkpoint}: converted weights do not fit HmUniterModel "
                             f"({str(err).strip().splitlines()[-1].strip()})") from None
        if result.missing_keys or result.unexpected_keys:
            raise ValueError(
                f"{checkpoint}: converted weights do not fit HmUniterModel: missing {result.missing_keys}, "
                f"unexpected {result.unexpected_keys}"
            )
        model.save_pretrained(staging)
        (staging / "conversion.json").write_text(
            json.dumps({"source": str(checkpoint), "dropped_keys": sorted(dropped)}, indent=1), encoding="utf-8"
        )
    return model


def cli(argv: list[str] | None = None) -> int:
    """``hm-hf convert-uniter``: convert a UNITER checkpoint into an hm_hf model folder."""
    parser = argparse.ArgumentParser(prog="hm-hf convert-uniter", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="UNITER .pt state dict (e.g. uniter-base.pt)")
    parser.add_argument("--output", required=True, help="folder to write (config.json + model.safetensors)")
    parser.add_argument("--config", default=None, help="UNITER config json (e.g. uniter-base.json), optional")
    parser.add_argument("--num-labels", type=positive_int, default=2,
                        help="classifier size (6 for MMHS fine labels)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output folder (whole)")
    args = parser.parse_args(argv)
    try:
        convert_uniter_checkpoint(args.checkpoint, args.output, args.config, overwrite=args.overwrite,
                                  num_labels=args.num_labels)
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(cli())
