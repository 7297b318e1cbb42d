"""VisualBERT: one BERT encoder over text tokens followed by projected region features.

Same module names and arithmetic as transformers' ``VisualBertModel`` (so its checkpoints load with
``from_pretrained``, including ``VisualBertForPreTraining`` ones whose keys start with ``visual_bert.``),
but attention runs through ``scaled_dot_product_attention`` (or eager, as ``attn_implementation`` says) and masks
text and region padding.
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
from .configuration_visual_bert import HmVisualBertConfig

__all__ = [
    "HmVisualBertEmbeddings",
    "HmVisualBertForHatefulMemes",
    "HmVisualBertModel",
    "HmVisualBertPreTrainedModel",
]


class HmVisualBertEmbeddings(BertEmbeddings):
    """BERT text embeddings, plus visual tokens = projection(region) + visual position + visual token type.

    All visual tokens get visual position 0 and visual token type 1 by default, as in VisualBERT.
    """

    def __init__(self, config: HmVisualBertConfig):
        super().__init__(config.vocab_size, config.hidden_size, config.max_position_embeddings,
                         config.type_vocab_size, config.pad_token_id, config.layer_norm_eps,
                         config.hidden_dropout_prob)
        self.visual_token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.visual_position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.visual_projection = nn.Linear(config.visual_embedding_dim, config.hidden_size)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        visual_embeds: torch.Tensor | None = None,
        visual_token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        embeddings = self.embed_text(input_ids, token_type_ids, position_ids, inputs_embeds)
        if visual_embeds is not None:
            shape = visual_embeds.shape[:-1]
            if visual_token_type_ids is None:
                visual_token_type_ids = torch.ones(shape, dtype=torch.long, device=visual_embeds.device)
            visual_position_ids = torch.zeros(shape, dtype=torch.long, device=visual_embeds.device)
            visual = (
                self.visual_projection(visual_embeds.to(self.word_embeddings.weight.dtype))
                + self.visual_position_embeddings(visual_position_ids)
                + self.visual_token_type_embeddings(visual_token_type_ids)
            )
            embeddings = torch.cat((embeddings, visual), dim=1)
        return self.dropout(self.LayerNorm(embeddings))


class HmVisualBertPreTrainedModel(TextPretrainedMixin, PreTrainedModel):
    """Weight initialisation, loading rules and ``from_text_pretrained`` for the VisualBERT classes."""

    config_class = HmVisualBertConfig
    config: HmVisualBertConfig
    base_model_prefix = "visual_bert"
    input_modalities = ("image", "text")
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _no_split_modules = ["BertLayer"]
    # pre-training heads of VisualBertForPreTraining checkpoints, and old checkpoints that saved position_ids
    _keys_to_ignore_on_load_unexpected = [r"(^|\.)cls\.", r"position_ids$"]

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, HmVisualBertEmbeddings):
            init.copy_(module.position_ids, torch.arange(module.position_ids.shape[-1]).expand((1, -1)))
            if self.config.special_visual_initialize:
                init.copy_(module.visual_token_type_embeddings.weight, module.token_type_embeddings.weight)
                init.copy_(module.visual_position_embeddings.weight, module.position_embeddings.weight)

    def _after_text_init(self) -> None:
        if self.config.special_visual_initialize:
            emb = self.base_model.embeddings
            with torch.no_grad():
                emb.visual_token_type_embeddings.weight.copy_(emb.token_type_embeddings.weight)
                emb.visual_position_embeddings.weight.copy_(emb.position_embeddings.weight)


class HmVisualBertModel(HmVisualBertPreTrainedModel):
    """VisualBERT encoder: returns the hidden states of [text tokens; regions] and the pooled [CLS] state.

    Example:
        >>> import torch
        >>> from hm_hf.models.visual_bert import HmVisualBertConfig, HmVisualBertModel
        >>> config = HmVisualBertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        ...                             intermediate_size=64, visual_embedding_dim=16)
        >>> out = HmVisualBertModel(config)(input_ids=torch.tensor([[101, 7, 102]]),
        ...                                 visual_embeds=torch.randn(1, 5, 16))
        >>> out.last_hidden_state.shape, out.pooler_output.shape
        (torch.Size([1, 8, 32]), torch.Size([1, 32]))
    """

    def __init__(self, config: HmVisualBertConfig, add_pooling_layer: bool = True):
        super().__init__(config)
        if config.bypass_transformer:
            raise NotImplementedError(
                "bypass_transformer=True (VisualBERT's encoder-skipping variant) is not supported by hm_hf; "
                "set it to False in the config"
            )
        self.embeddings = HmVisualBertEmbeddings(config)
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
        """Encode text (B, T) and regions (B, R, visual_embedding_dim).

        ``attention_mask`` / ``visual_attention_mask``: 1 for real tokens / regions, 0 for padding (default
        all ones). ``visual_boxes`` is accepted because hm_hf's region collator always emits it, and ignored:
        VisualBERT has no box input.
        """
        del visual_boxes  # VisualBERT does not use box geometry
        refuse_output_attentions(output_attentions)
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        text_shape = input_ids.shape if input_ids is not None else inputs_embeds.shape[:-1]
        device = input_ids.device if input_ids is not None else inputs_embeds.device
        if attention_mask is None:
            attention_mask = torch.ones(text_shape, dtype=torch.long, device=device)
        mask = attention_mask
        if visual_embeds is not None:
            if visual_attention_mask is None:
                visual_attention_mask = torch.ones(visual_embeds.shape[:-1], dtype=torch.long, device=device)
            mask = torch.cat((attention_mask.to(torch.long), visual_attention_mask.to(torch.long)), dim=-1)

        embedding_output = self.embeddings(
            input_ids=input_ids,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            visual_embeds=visual_embeds,
            visual_token_type_ids=visual_token_type_ids,
        )
        encoded = self.encoder(embedding_output, mask, output_hidden_states=output_hidden_states)
        sequence_output = encoded.last_hidden_state
        pooled_output = self.pooler(sequence_output) if self.pooler is not None else None
        if not return_dict:
            return tuple(v for v in (sequence_output, pooled_output, encoded.hidden_states) if v is not None)
        return BaseModelOutputWithPooling(
            last_hidden_state=sequence_output, pooler_output=pooled_output, hidden_states=encoded.hidden_states
        )


class HmVisualBertForHatefulMemes(HmVisualBertPreTrainedModel):
    """VisualBERT + classifier on the pooled output (MMF's head: dropout, dense+act+LayerNorm, Linear).

    Binary by default; ``num_labels=6`` for MMHS150K's fine-grained classes. The loss is cross-entropy on
    the logits, ignoring labels of -100 (BCE with logits on multi-hot labels with
    ``problem_type="multi_label_classification"``, see `hm_hf.models.heads`).

    Example:
        >>> import torch
        >>> from hm_hf.models.visual_bert import HmVisualBertConfig, HmVisualBertForHatefulMemes
        >>> config = HmVisualBertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        ...                             intermediate_size=64, visual_embedding_dim=16)
        >>> out = HmVisualBertForHatefulMemes(config)(input_ids=torch.tensor([[101, 7, 102]]),
        ...     visual_embeds=torch.randn(1, 5, 16), labels=torch.tensor([1]))
        >>> out.logits.shape
        torch.Size([1, 2])
    """

    def __init__(self, config: HmVisualBertConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.visual_bert = HmVisualBertModel(config)
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
        """Inputs as :meth:`HmVisualBertModel.forward`; ``labels`` (B,) with -100 for unlabelled rows."""
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        outputs = self.visual_bert(
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
