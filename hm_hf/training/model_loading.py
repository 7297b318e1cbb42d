"""Building the model a recipe names, with its PEFT method.

A training run saves either a whole model (no PEFT, head-only) or PEFT adapters. When the base model
was randomly initialised (nothing on the Hub to point at), it is saved beside the adapters in
`base_model/`, so the folder (or its Hub repo) is self-contained; `hm_hf.inference.model_loading` loads it.
A base model from a local folder (`model_name_or_path: data/uniter-base-converted`) is recorded by its
absolute path, so the adapters load from any working directory on that machine.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from transformers import AutoConfig

from hm_hf.hub import local_reference
from hm_hf.inference.model_loading import BASE_MODEL_DIR
from hm_hf.training.arguments import ModelArguments, PeftArguments, RecipeError, parse_overrides

logger = logging.getLogger(__name__)

HF_MODEL_TYPES = {"concat": "hm_concat", "visual_bert": "hm_visual_bert", "uniter": "hm_uniter", "vilbert": "hm_vilbert",
                  "clip": "hm_clip", "rgcl": "hm_rgcl"}
CLIP_MODEL_TYPES = ("clip", "rgcl")  # built on a CLIP checkpoint named by vision_model_name_or_path


def model_class(model_type: str):
    """The `<Name>ForHatefulMemes` class of a recipe's model_type."""
    from hm_hf.models.auto import model_class as hm_model_class

    return hm_model_class(HF_MODEL_TYPES[model_type])


def _overrides(model_args: ModelArguments, vocab_size: int | None = None) -> dict:
    overrides = parse_overrides(model_args.config_overrides)
    overrides["num_labels"] = model_args.num_labels
    if model_args.problem_type:  # a fine-grained task: a multi-label head named by the task's vocabulary
        overrides["problem_type"] = model_args.problem_type
    if model_args.label_names:
        overrides["id2label"] = dict(enumerate(model_args.label_names))
        overrides["label2id"] = {name: i for i, name in enumerate(model_args.label_names)}
    if vocab_size is not None and model_args.model_type != "concat" and not model_args.model_name_or_path:
        overrides.setdefault("vocab_size", vocab_size)  # a tokenizer trained here: size the embeddings to it
    return overrides


def build_config(model_args: ModelArguments, vocab_size: int | None = None):
    """The recipe's model config (from the checkpoint when one is named), with its overrides applied."""
    if model_args.model_type in CLIP_MODEL_TYPES and not model_args.model_name_or_path:
        return _clip_config(model_args)
    overrides = _overrides(model_args, vocab_size)
    if model_args.model_name_or_path:
        config_class = model_class(model_args.model_type).config_class
        return config_class.from_pretrained(local_reference(model_args.model_name_or_path), **overrides)
    if model_args.model_type == "concat":  # encoders named by checkpoint: their configs go into ours
        if model_args.text_model_name_or_path:
            overrides.setdefault("text_config", AutoConfig.from_pretrained(model_args.text_model_name_or_path).to_dict())
        if model_args.vision_model_name_or_path:
            overrides.setdefault(
                "vision_config", AutoConfig.from_pretrained(model_args.vision_model_name_or_path).to_dict()
            )
    config = AutoConfig.for_model(HF_MODEL_TYPES[model_args.model_type], **overrides)
    text_config = getattr(config, "text_config", None)
    if vocab_size is not None and text_config is not None and not model_args.text_model_name_or_path:
        text_config.vocab_size = vocab_size  # a random-init text encoder sized to the tokenizer trained here
    return config


def _clip_config(model_args: ModelArguments):
    """clip: `vision_model_name_or_path` names the CLIP checkpoint (Hub id or folder: encoders, tokenizer and
    image processor); `config_overrides` set the hm_clip fields (fusion, projection_dim, freeze_clip, ...).

    The checkpoint's own CLIPConfig is read here only when it is a local folder already; otherwise (a Hub
    id, or the tiny synthetic CLIP that `synthetic_if_missing` writes once the data exist) `build_model`
    reads it: this config only has to say what the model reads.
    """
    from pathlib import Path

    name = model_args.vision_model_name_or_path
    if not name:
        raise RecipeError(f"model_type {model_args.model_type} needs vision_model_name_or_path: the CLIP checkpoint, e.g. "
                          "openai/clip-vit-large-patch14 (or a saved hm_clip model as model_name_or_path)")
    overrides = _overrides(model_args)
    if (Path(name) / "config.json").is_file():
        from transformers import CLIPConfig

        overrides["clip_config"] = CLIPConfig.from_pretrained(name).to_dict()
    return model_class(model_args.model_type).config_class(clip_model_name_or_path=name, **overrides)


def build_model(model_args: ModelArguments, config):
    """The recipe's model: from a pretrained multimodal checkpoint, else random init (+ BERT text side).

    A local checkpoint is loaded by its absolute path, which PEFT records as the adapters'
    `base_model_name_or_path`: the saved adapters then load from any working directory."""
    cls = model_class(model_args.model_type)
    if model_args.model_name_or_path:
        return cls.from_pretrained(local_reference(model_args.model_name_or_path), config=config)
    if model_args.model_type in CLIP_MODEL_TYPES:  # CLIP encoders from the checkpoint, the rest (projections, head) new
        return cls.from_clip_pretrained(model_args.vision_model_name_or_path, **_overrides(model_args))
    if model_args.model_type == "concat" and (model_args.text_model_name_or_path or model_args.vision_model_name_or_path):
        return cls.from_pretrained_encoders(
            text_model=model_args.text_model_name_or_path,
            vision_model=model_args.vision_model_name_or_path,
            **_overrides(model_args),
        )
    if model_args.text_model_name_or_path:
        if not hasattr(cls, "from_text_pretrained"):
            raise RecipeError(f"{cls.__name__} cannot initialise its text side from a text checkpoint")
        return cls.from_text_pretrained(model_args.text_model_name_or_path, **_overrides(model_args))
    return cls(config)


def load_image_processor(model_args: ModelArguments):
    """The image processor of the concat model's vision backbone."""
    from transformers import AutoImageProcessor

    name = model_args.vision_model_name_or_path or model_args.model_name_or_path
    if not name:
        raise RecipeError("a vision-backbone model needs vision_model_name_or_path (its image processor is read from it)")
    return AutoImageProcessor.from_pretrained(name)


def save_base_model(model, output_dir) -> None:
    """Save the (randomly initialised) base model beside the adapters, so the folder loads on its own.

    Call it before `get_peft_model`: afterwards the modules carry the adapters' wrappers."""
    model.save_pretrained(str(Path(output_dir) / BASE_MODEL_DIR))


def remove_stale_base_model(output_dir, base_name_or_path: str) -> None:
    """Remove a ``base_model/`` an earlier run left in a reused `output_dir`: these adapters sit on
    `base_name_or_path`, and the loaders read ``base_model/`` first, so it would put them on the wrong base."""
    stale = Path(output_dir) / BASE_MODEL_DIR
    if stale.is_dir():
        logger.warning("removing %s, an earlier run's base model: these adapters' base model is %s", stale,
                       base_name_or_path)
        shutil.rmtree(stale)


def build_peft_config(model, model_type: str, peft_args: PeftArguments):
    """The peft config for `peft_args.peft_method`, or None for full fine-tuning / head only."""
    from hm_hf.peft.defaults import build_peft_config as peft_config_for

    if peft_args.peft_method in ("none", "head_only"):
        return None
    options = {"target_modules": peft_args.target_modules}
    if peft_args.peft_method == "lora":
        options.update(r=peft_args.lora_r, lora_alpha=peft_args.lora_alpha, lora_dropout=peft_args.lora_dropout)
    elif peft_args.peft_method == "bottleneck":
        options.update(reduction_factor=peft_args.bottleneck_reduction_factor)
    return peft_config_for(model, peft_args.peft_method, **{k: v for k, v in options.items() if v is not None})


