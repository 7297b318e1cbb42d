"""Starting hm_hf's BERT-style models from a BERT checkpoint: its sizes into the config, its embeddings /
encoder / pooler weights into the model (the key names are transformers' BERT names, see `bert_layers`)."""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

__all__ = ["BERT_TEXT_FIELDS", "TextPretrainedMixin", "bert_config_fields", "load_bert_text_weights"]


#: BertConfig fields copied into a multimodal config by from_text_pretrained
BERT_TEXT_FIELDS = (
    "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "hidden_act",
    "hidden_dropout_prob", "attention_probs_dropout_prob", "max_position_embeddings", "type_vocab_size",
    "initializer_range", "layer_norm_eps", "pad_token_id",
)


def load_bert_text_weights(
    target: nn.Module,
    bert: str | os.PathLike | nn.Module,
    key_map: dict[str, str] | None = None,
    modules: tuple[str, ...] = ("embeddings.", "encoder.", "pooler."),
) -> list[str]:
    """Copy a BERT checkpoint's embeddings / encoder / pooler weights into ``target`` (in place).

    ``bert``: a folder saved by ``BertModel`` (or any BertFor*; AutoModel strips the ``bert.`` prefix) or a
    loaded BertModel. ``key_map`` maps a BERT key prefix to the target's prefix (e.g.
    ``{"embeddings.": "embeddings."}``; default identity). Returns the target keys that were copied; raises
    if a BERT weight has no counterpart or a different shape, so a wrong config is caught, not ignored.
    """
    if not isinstance(bert, nn.Module):
        from transformers import AutoModel

        bert = AutoModel.from_pretrained(bert)
    source = {k: v for k, v in bert.state_dict().items() if k.startswith(modules)}
    if not source:
        raise ValueError(f"{type(bert).__name__} has no {modules} weights: is it a BERT-style text model?")
    target_state = target.state_dict()
    copied, problems = [], []
    for key, value in source.items():
        new_key = key
        for old, new in (key_map or {}).items():
            if key.startswith(old):
                new_key = new + key[len(old):]
                break
        if new_key not in target_state:
            problems.append(f"{key} -> {new_key}: no such weight in {type(target).__name__}")
        elif target_state[new_key].shape != value.shape:
            problems.append(f"{key}: shape {tuple(value.shape)} != {tuple(target_state[new_key].shape)}")
        else:
            copied.append(new_key)
    if problems:
        raise ValueError("BERT weights do not fit the model (build its config from the BERT config):\n  "
                         + "\n  ".join(problems))
    with torch.no_grad():
        for key, new_key in zip(source, copied):
            target_state[new_key].copy_(source[key])
    return copied


def bert_config_fields(bert: str | os.PathLike | Any) -> dict[str, Any]:
    """The text-encoder fields (:data:`BERT_TEXT_FIELDS`) of a BERT config or checkpoint folder.

    Used by ``from_text_pretrained`` so a multimodal config gets the sizes of the BERT it starts from.
    """
    if isinstance(bert, (str, os.PathLike)):
        from transformers import AutoConfig

        bert = AutoConfig.from_pretrained(bert)
    return {name: getattr(bert, name) for name in BERT_TEXT_FIELDS if getattr(bert, name, None) is not None}


class TextPretrainedMixin:
    """Adds ``from_text_pretrained(bert, **config_overrides)`` to a single-stream model class.

    The config takes the BERT's sizes (plus the overrides), the model is randomly initialised, then the
    BERT's embeddings / encoder / pooler are copied into the base model (same key names). Subclasses may
    extend :meth:`_after_text_init` (VisualBERT copies the position / token-type embeddings to its visual ones).
    """

    @classmethod
    def from_text_pretrained(cls, bert: str | os.PathLike, **config_overrides: Any):
        """Build the model with its text side initialised from a BERT checkpoint folder (e.g. bert-base-uncased).

        >>> model = HmVisualBertForHatefulMemes.from_text_pretrained("bert-base-uncased")  # doctest: +SKIP
        """
        fields = bert_config_fields(bert)
        fields.update(config_overrides)
        model = cls(cls.config_class(**fields))
        load_bert_text_weights(model.base_model, bert)
        model._after_text_init()
        return model

    def _after_text_init(self) -> None:
        """Hook run after the BERT weights are copied."""
