"""UNITER: one BERT encoder over [text tokens; regions], regions embedded with their box geometry.

Module names follow the original UNITER (``embeddings``, ``img_embeddings.{img_linear, img_layer_norm,
pos_linear, pos_layer_norm, LayerNorm}``, ``encoder.layer.N``, ``pooler``) under the prefix ``uniter.``, so
``convert_uniter_checkpoint.py`` only drops the pre-training heads. Where UNITER packs text and regions
without padding (``gather_index``), this model pads both and masks the padding in attention, which gives
the same result for the real tokens.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutputWithPooling, SequenceClassifierOutput

from ..bert_layers import BertEmbeddings, BertEncoder, BertPooler
from ..bert_weights import TextPretrainedMixin
from ..heads import BertClassificationHead, classification_output, refuse_output_attentions
from .configuration_uniter import HmUniterConfig

__all__ = [
    "HmUniterForHatefulMemes",
    "HmUniterImageEmbeddings",
    "HmUniterModel",
    "HmUniterPreTrainedModel",
    "uniter_box_features",
]


def uniter_box_features(boxes: torch.Tensor) -> torch.Tensor:
    """(..., 4) boxes ``x1/W, y1/H, x2/W, y2/H`` -> UNITER's 7-d ``(x1, y1, x2, y2, w, h, w*h)``.

    The boxes must already be normalised, x by the image width and y by the image height (hm_hf's collator
    does this; the seed swapped the two). Width and height come from the normalised corners, so they are
    fractions of the image width and height too.
    """
    if boxes.shape[-1] != 4:
        raise ValueError(f"visual_boxes must end in 4 coordinates (x1, y1, x2, y2), got shape {tuple(boxes.shape)}")
    x1, y1, x2, y2 = boxes.unbind(-1)
    w = x2 - x1
    h = y2 - y1
    return torch.stack((x1, y1, x2, y2, w, h, w * h), dim=-1)


class HmUniterImageEmbeddings(nn.Module):
    """``LayerNorm(LN_img(img_linear(f)) + LN_pos(pos_linear(p7)) + token_type[1])``, then dropout."""

    def __init__(self, config: HmUniterConfig):
        super().__init__()
        self.img_linear = nn.Linear(config.img_dim, config.hidden_size)
        self.img_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.pos_linear = nn.Linear(config.pos_dim, config.hidden_size)
        self.pos_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, img_feat: torch.Tensor, img_pos_feat: torch.Tensor, type_embeddings: torch.Tensor) -> torch.Tensor:
        dtype = self.LayerNorm.weight.dtype
        transformed_im = self.img_layer_norm(self.img_linear(img_feat.to(dtype)))
        transformed_pos = self.pos_layer_norm(self.pos_linear(img_pos_feat.to(dtype)))
        return self.dropout(self.LayerNorm(transformed_im + transformed_pos + type_embeddings))


class HmUniterPreTrainedModel(TextPretrainedMixin, PreTrainedModel):
    """Weight initialisation, loading rules and ``from_text_pretrained`` for the UNITER classes."""

    config_class = HmUniterConfig
    config: HmUniterConfig
    base_model_prefix = "uniter"
    input_modalities = ("image", "text")
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _no_split_modules = ["BertLayer"]
    _keys_to_ignore_on_load_unexpected = [r"position_ids$"]

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, BertEmbeddings):
            init.copy_(module.position_ids, torch.arange(module.position_ids.shape[-1]).expand((1, -1)))


class HmUniterModel(HmUniterPreTrainedModel):
    """UNITER encoder: hidden states of [text tokens; regions] and the pooled first-token state.

    Example:
        >>> import torch
        >>> from hm_hf.models.uniter import HmUniterConfig, HmUniterModel
        >>> config = HmUniterConfig(vocab_size=200, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        ...                         intermediate_size=64, img_dim=16)
        >>> boxes = torch.tensor([[[0.1, 0.2, 0.5, 0.9]] * 5])
        >>> out = HmUniterModel(config)(input_ids=torch.tensor([[101, 7, 102]]),
        ...                             visual_embeds=torch.randn(1, 5, 16), visual_boxes=boxes)
        >>> out.last_hidden_state.shape
        torch.Size([1, 8, 32])
    """

    def __init__(self, config: HmUniterConfig, add_pooling_layer: bool = True):
        super().__init__(config)
        self.embeddings = BertEmbeddings.from_config(config)
        self.img_embeddings = HmUniterImageEmbeddings(config)
        self.encoder = BertEncoder.from_config(config)
        self.pooler = BertPooler(config.hidden_size) if add_pooling_layer else None
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embeddings.word_embeddings = value

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        visual_embeds: torch.Tensor | None = None,
        visual_attention_mask: torch.Tensor | None = None,
        visual_boxes: torch.Tensor | None = None,
        visual_token_type_ids: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> BaseModelOutputWithPooling | tuple:
        """Encode text (B, T) and regions (B, R, img_dim) with boxes (B, R, 4) normalised x1/W, y1/H, x2/W, y2/H.

        Either side may be absent (text-only or image-only input). Masks: 1 = real, 0 = padding.
        ``inputs_embeds`` (B, T, H) replaces ``input_ids`` (word embeddings only, as in BERT).
        ``token_type_ids`` is accepted (a BERT tokenizer returns it) and not used: as in the original UNITER,
        every text token has type 0, the second segment of a text pair too, and type 1 is the regions'.
        """
        refuse_output_attentions(output_attentions)
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if input_ids is not None and inputs_embeds is not None:
            raise ValueError("pass input_ids or inputs_embeds, not both")
        if input_ids is None and inputs_embeds is None and visual_embeds is None:
            raise ValueError("pass input_ids (or inputs_embeds), visual_embeds or both")
        parts, masks = [], []
        if input_ids is not None or inputs_embeds is not None:
            parts.append(self.embeddings(input_ids=input_ids, token_type_ids=None, position_ids=position_ids,
                                         inputs_embeds=inputs_embeds))  # text: type 0 throughout (see above)
            text_shape = parts[-1].shape[:2]
            masks.append(
                torch.ones(text_shape, dtype=torch.long, device=parts[-1].device)
                if attention_mask is None
                else attention_mask.to(torch.long)
            )
        if visual_embeds is not None:
            if visual_boxes is None:
                raise ValueError("UNITER needs visual_boxes (B, R, 4) with visual_embeds: the region geometry")
            shape = visual_embeds.shape[:-1]
            if visual_token_type_ids is None:
                visual_token_type_ids = torch.ones(shape, dtype=torch.long, device=visual_embeds.device)
            type_embeddings = self.embeddings.token_type_embeddings(visual_token_type_ids)
            parts.append(self.img_embeddings(visual_embeds, uniter_box_features(visual_boxes), type_embeddings))
            masks.append(
                torch.ones(shape, dtype=torch.long, device=visual_embeds.device)
                if visual_attention_mask is None
                else visual_attention_mask.to(torch.long)
            )
        embedding_output = torch.cat(parts, dim=1)
        mask = torch.cat(masks, dim=1)
        encoded = self.encoder(embedding_output, mask, output_hidden_states=output_hidden_states)
        sequence_output = encoded.last_hidden_state
        pooled_output = self.pooler(sequence_output) if self.pooler is not None else None
        if not return_dict:
            return tuple(v for v in (sequence_output, pooled_output, encoded.hidden_states) if v is not None)
        return BaseModelOutputWithPooling(
            last_hidden_state=sequence_output, pooler_output=pooled_output, hidden_states=encoded.hidden_states
        )


class HmUniterForHatefulMemes(HmUniterPreTrainedModel):
    """UNITER + classifier on the pooled output (default one Linear, as the seed's UNITER).

    The text input is the meme text, optionally paired with the detected object names or the image's text
    (the collator's ``text_pair_column``), all of it token type 0 as UNITER was trained. Its vocabulary is
    bert-base-cased's (28,996 tokens). Loss: cross-entropy on the logits, ignoring labels of -100 (or the
    multi-label loss of `hm_hf.models.heads`, by ``problem_type``).

    Example:
        >>> import torch
        >>> from hm_hf.models.uniter import HmUniterConfig, HmUniterForHatefulMemes
        >>> config = HmUniterConfig(vocab_size=200, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        ...                         intermediate_size=64, img_dim=16)
        >>> out = HmUniterForHatefulMemes(config)(input_ids=torch.tensor([[101, 7, 102]]),
        ...     visual_embeds=torch.randn(1, 5, 16), visual_boxes=torch.rand(1, 5, 4).sort(-1).values)
        >>> out.logits.shape
        torch.Size([1, 2])
    """

    def __init__(self, config: HmUniterConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.uniter = HmUniterModel(config)
        dropout = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = nn.Dropout(dropout)
        self.classifier = BertClassificationHead(config.hidden_size, config.num_labels, config.classifier_transform,
                                                 config.hidden_act, config.layer_norm_eps)
        self.post_init()

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        visual_embeds: torch.Tensor | None = None,
        visual_attention_mask: torch.Tensor | None = None,
        visual_boxes: torch.Tensor | None = None,
        visual_token_type_ids: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> SequenceClassifierOutput | tuple:
        """Inputs as :meth:`HmUniterModel.forward`; ``labels`` (B,) with -100 for unlabelled rows."""
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        outputs = self.uniter(
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            visual_embeds=visual_embeds,
            visual_attention_mask=visual_attention_mask,
            visual_boxes=visual_boxes,
            visual_token_type_ids=visual_token_type_ids,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        logits = self.classifier(self.dropout(outputs.pooler_output))
        return classification_output(logits, labels, self.num_labels, return_dict, outputs.hidden_states,
                                     problem_type=self.config.problem_type)
