"""Loading what `recipes/train_peft.py` saved: a whole model, or PEFT adapters with their base model.

A folder (or Hub repo) holds either a model (``config.json`` + weights) or adapters (``adapter_config.json``);
adapters on a randomly initialised base model have it beside them in ``base_model/`` (saved by training),
otherwise ``base_model_name_or_path`` names it. An RGCL model's retrieval index lies beside its adapters.
"""

from __future__ import annotations

from pathlib import Path

from hm_hf.fileio import read_json_object
from hm_hf.hub import model_file

__all__ = ["BASE_MODEL_DIR", "base_config", "load_trained_model"]

BASE_MODEL_DIR = "base_model"


def load_trained_model(path: str, **kwargs):
    """Load what `recipes/train_peft.py` saved (a folder or Hub repo): a model, or base model + adapters."""
    from transformers import AutoModelForSequenceClassification

    local = Path(path)
    adapter_file = model_file(path, "adapter_config.json")
    if adapter_file is None:
        return AutoModelForSequenceClassification.from_pretrained(path, **kwargs)
    from peft import PeftModel

    base = read_json_object(adapter_file, "PEFT adapter settings",
                            "save the adapters again (model.save_pretrained)").get("base_model_name_or_path")
    if local.is_dir() and (local / BASE_MODEL_DIR).is_dir():
        base_model = AutoModelForSequenceClassification.from_pretrained(str(local / BASE_MODEL_DIR), **kwargs)
    elif base:
        base_model = AutoModelForSequenceClassification.from_pretrained(base, **kwargs)
    else:  # a Hub repo whose base model travelled with it
        base_model = AutoModelForSequenceClassification.from_pretrained(path, subfolder=BASE_MODEL_DIR, **kwargs)
    model = PeftModel.from_pretrained(base_model, path)
    _attach_retrieval_index(base_model, path)
    return model


def _attach_retrieval_index(base_model, path: str) -> None:
    """An RGCL model's index lies beside its adapters (peft saves only those, training writes the index there):
    attach it, as `HmRgclForHatefulMemes.from_pretrained` does for a whole model."""
    from hm_hf.models.rgcl.modeling_rgcl import HmRgclForHatefulMemes, load_retrieval_index

    if isinstance(base_model, HmRgclForHatefulMemes):
        base_model.retrieval_index = load_retrieval_index(path) or base_model.retrieval_index


def base_config(model):
    """The config of the hm_hf model inside `model` (itself, or the base model of a PEFT wrapper)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.config
