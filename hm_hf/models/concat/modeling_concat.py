"""Concat: the DrivenData / seed late-fusion baseline as a transformers PreTrainedModel.

text vector (fastText sentence vector, or a BERT-like encoder's pooled output)
image vector (masked mean of region features, or a vision backbone's pooled output: ResNet, CLIP vision, ViT)
-> each ``Linear + ReLU + Dropout`` -> concatenated -> fusion MLP -> Linear(num_labels).
The seed applied cross-entropy to softmax outputs; here the loss is cross-entropy on the logits.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPooling, SequenceClassifierOutput

from ..heads import classification_output, refuse_output_attentions
from .configuration_concat import HmConcatConfig

__all__ = ["HmConcatForHatefulMemes", "HmConcatModel", "HmConcatPreTrainedModel"]


def _projection(in_dim: int, out_dim: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, out_dim), nn.ReLU(), nn.Dropout(dropout))


def _vision_feature_dim(config: Any) -> int:
    """Size of a vision backbone's pooled output (ResNet/ConvNext: hidden_sizes[-1]; CLIP/ViT: hidden_size)."""
    if getattr(config, "hidden_sizes", None):
        return config.hidden_sizes[-1]
    if getattr(config, "hidden_size", None):
        return config.hidden_size
    raise ValueError(f"cannot tell the pooled-output size of a {type(config).__name__}; it has no hidden_size(s)")


class HmConcatPreTrainedModel(PreTrainedModel):
    """Weight initialisation and loading rules for the Concat classes."""

    config_class = HmConcatConfig
    config: HmConcatConfig
    base_model_prefix = "concat"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _supports_sdpa = True


class HmConcatModel(HmConcatPreTrainedModel):
    """Returns the fused representation (B, fusion_hidden_sizes[-1]) as ``pooler_output``.

    Example:
        >>> import torch
        >>> from hm_hf.models.concat import HmConcatConfig, HmConcatModel
        >>> model = HmConcatModel(HmConcatConfig(text_embedding_dim=100, visual_embedding_dim=16))
        >>> model(text_embedding=torch.randn(2, 100), visual_embeds=torch.randn(2, 3, 16)).pooler_output.shape
        torch.Size([2, 512])
    """

    def __init__(self, config: HmConcatConfig):
        super().__init__(config)
        # Gradient checkpointing applies to the encoders' layers; this flag keeps
        # gradient_checkpointing_enable() a harmless no-op for the encoder-free variants.
        self.gradient_checkpointing = False
        fused_dim = 0
        self.text_encoder = self.vision_encoder = None
        self.text_projection = self.image_projection = None
        if "text" in config.modalities:
            if config.text_source == "encoder":
                self.text_encoder = AutoModel.from_config(config.text_config)
                text_dim = config.text_config.hidden_size
            else:
                text_dim = config.text_embedding_dim
            self.text_projection = _projection(text_dim, config.text_projection_dim, config.dropout)
            fused_dim += config.text_projection_dim
        if "image" in config.modalities:
            if config.image_source == "encoder":
                self.vision_encoder = AutoModel.from_config(config.vision_config)
                image_dim = _vision_feature_dim(config.vision_config)
            else:
                image_dim = config.visual_embedding_dim
            self.image_projection = _projection(image_dim, config.image_projection_dim, config.dropout)
            fused_dim += config.image_projection_dim
        layers: list[nn.Module] = []
        for size in config.fusion_hidden_sizes:
            layers.append(_projection(fused_dim, size, config.dropout))
            fused_dim = size
        self.fusion = nn.Sequential(*layers)
        self.output_dim = fused_dim
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        """The text encoder's token embeddings (used by peft / gradient checkpointing helpers)."""
        if self.text_encoder is None:
            raise NotImplementedError(
                "this Concat model has no token embeddings: its text arrives as precomputed sentence vectors"
            )
        return self.text_encoder.get_input_embeddings()

    def encode_text(self, input_ids=None, attention_mask=None, token_type_ids=None, text_embedding=None,
                    inputs_embeds=None) -> torch.Tensor:
        """The text vector before projection."""
        if self.text_encoder is None:
            if text_embedding is None:
                raise ValueError("this Concat model reads `text_embedding` (fastText sentence vectors); the batch has none")
            return text_embedding.to(self.dtype)
        if input_ids is None and inputs_embeds is None:
            raise ValueError("this Concat model encodes text with its text encoder: the batch needs `input_ids`")
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask, "inputs_embeds": inputs_embeds}
        if token_type_ids is not None and getattr(self.config.text_config, "type_vocab_size", 0):
            kwargs["token_type_ids"] = token_type_ids
        out = self.text_encoder(**kwargs)
        pooled = getattr(out, "pooler_output", None)
        if self.config.text_pooling == "pooler" and pooled is not None:
            return pooled
        hidden = out.last_hidden_state
        if self.config.text_pooling == "mean":
            mask = (hidden.new_ones(hidden.shape[:2]) if attention_mask is None else attention_mask).to(hidden.dtype)
            return (hidden * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True).clamp(min=1.0)
        return hidden[:, 0]

    def encode_image(self, pixel_values=None, visual_embeds=None, visual_attention_mask=None) -> torch.Tensor:
        """The image vector before projection."""
        if self.vision_encoder is None:
            if visual_embeds is None:
                raise ValueError("this Concat model pools region features: the batch needs `visual_embeds`")
            feats = visual_embeds.to(self.dtype)
            if visual_attention_mask is None:
                return feats.mean(1)
            mask = visual_attention_mask.to(feats.dtype).unsqueeze(-1)
            return (feats * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        if pixel_values is None:
            raise ValueError("this Concat model encodes images with its vision encoder: the batch needs `pixel_values`")
        out = self.vision_encoder(pixel_values=pixel_values)
        pooled = getattr(out, "pooler_output", None)
        if pooled is None:  # backbones without a pooler: mean over positions
            hidden = out.last_hidden_state
            pooled = hidden.flatten(2).mean(-1) if hidden.dim() == 4 else hidden.mean(1)
        return pooled.flatten(1)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        text_embedding: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        visual_embeds: torch.Tensor | None = None,
        visual_attention_mask: torch.Tensor | None = None,
        visual_boxes: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
    ) -> BaseModelOutputWithPooling:
        """Fuse the configured modalities. Inputs a modality does not use are ignored (``visual_boxes`` always).

        ``inputs_embeds`` goes to the text encoder in place of ``input_ids``.
        """
        del visual_boxes  # region geometry is not used by mean pooling
        parts = []
        if self.text_projection is not None:
            text = self.encode_text(input_ids, attention_mask, token_type_ids, text_embedding, inputs_embeds)
            parts.append(self.text_projection(text))
        if self.image_projection is not None:
            parts.append(self.image_projection(self.encode_image(pixel_values, visual_embeds, visual_attention_mask)))
        return BaseModelOutputWithPooling(pooler_output=self.fusion(torch.cat(parts, dim=-1)))


class HmConcatForHatefulMemes(HmConcatPreTrainedModel):
    """Concat baseline + ``Linear(num_labels)`` head; cross-entropy on logits, labels of -100 ignored (or the
    multi-label loss of `hm_hf.models.heads`, by ``problem_type``).

    Example:
        >>> import torch
        >>> from hm_hf.models.concat import HmConcatConfig, HmConcatForHatefulMemes
        >>> model = HmConcatForHatefulMemes(HmConcatConfig(visual_embedding_dim=16))
        >>> out = model(text_embedding=torch.randn(2, 100), visual_embeds=torch.randn(2, 3, 16),
        ...             labels=torch.tensor([0, 1]))
        >>> out.logits.shape
        torch.Size([2, 2])
    """

    def __init__(self, config: HmConcatConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.concat = HmConcatModel(config)
        self.classifier = nn.Linear(self.concat.output_dim, config.num_labels)
        self.post_init()

    @classmethod
    def from_pretrained_encoders(
        cls,
        text_model: str | os.PathLike | None = None,
        vision_model: str | os.PathLike | None = None,
        **config_overrides: Any,
    ) -> HmConcatForHatefulMemes:
        """Build the model with its text and/or vision encoder loaded from transformers checkpoint folders.

        >>> model = HmConcatForHatefulMemes.from_pretrained_encoders(  # doctest: +SKIP
        ...     text_model="bert-base-uncased", vision_model="microsoft/resnet-101")
        """
        fields = dict(config_overrides)
        if text_model is not None:
            fields.update(text_source="encoder", text_config=AutoConfig.from_pretrained(text_model))
        if vision_model is not None:
            fields.update(image_source="encoder", vision_config=AutoConfig.from_pretrained(vision_model))
        model = cls(cls.config_class(**fields))
        for path, module in ((text_model, model.concat.text_encoder), (vision_model, model.concat.vision_encoder)):
            if path is not None and module is not None:
                result = module.load_state_dict(AutoModel.from_pretrained(path).state_dict(), strict=False)
                if result.missing_keys or result.unexpected_keys:
                    raise ValueError(f"{path} does not fit the encoder: missing {result.missing_keys}, "
                                     f"unexpected {result.unexpected_keys}")
        return model

    @classmethod
    def from_text_pretrained(cls, bert: str | os.PathLike, **config_overrides: Any) -> HmConcatForHatefulMemes:
        """Same entry point as the VisualBERT / UNITER classes: text encoder from a BERT folder."""
        return cls.from_pretrained_encoders(text_model=bert, **config_overrides)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        text_embedding: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        visual_embeds: torch.Tensor | None = None,
        visual_attention_mask: torch.Tensor | None = None,
        visual_boxes: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> SequenceClassifierOutput | tuple:
        """Inputs as :meth:`HmConcatModel.forward`; ``labels`` (B,) with -100 for unlabelled rows.

        ``output_attentions`` / ``output_hidden_states`` are accepted for peft's wrappers; True is refused
        (a late-fusion model has no sequence of hidden states of its own).
        """
        refuse_output_attentions(output_attentions)
        if output_hidden_states:
            raise ValueError("output_hidden_states=True is not supported by the Concat model")
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        fused = self.concat(input_ids, attention_mask, token_type_ids, text_embedding, pixel_values, visual_embeds,
                            visual_attention_mask, visual_boxes, inputs_embeds).pooler_output
        return classification_output(self.classifier(fused), labels, self.num_labels, return_dict,
                                     problem_type=self.config.problem_type)
