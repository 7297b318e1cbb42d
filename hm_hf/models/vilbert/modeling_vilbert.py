"""ViLBERT: a text BERT stream and a visual stream joined by co-attention layers (Lu et al. 2019).

Reimplemented after vilbert-multi-task and MMF with transformers conventions: SDPA (or eager) attention with
padding masks for both streams, gradient checkpointing, `_init_weights`, Auto registration. The stream
layers are hm_hf's shared `bert_layers.BertLayer` (visual stream sized by the `v_*` fields). Module names
follow transformers' BERT (`encoder.layer.N.attention.self.query`, `...output.{dense,dropout,LayerNorm}`)
in both streams (`encoder.layer` / `encoder.v_layer`), so a `bert-base-uncased` checkpoint initialises the
text stream through `from_pretrained`, and the PEFT bottleneck adapter targets the `output` blocks.
Co-attention layers keep the original names (`encoder.c_layer.N.biattention.query1`, `biOutput.dense1`,
`t_output`, `v_output`, ...) so vilbert-multi-task / MMF checkpoints convert by renaming prefixes only
(see `convert_vilbert_checkpoint.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import ModelOutput, SequenceClassifierOutput

from transformers.modeling_layers import GradientCheckpointingLayer

from ..bert_layers import (
    BertIntermediate,
    BertLayer,
    BertOutput,
    TokenPacking,
    attend,
    attention_implementation,
    make_attention_mask,
    run_layers,
)
from ..heads import BertClassificationHead, classification_loss
from .configuration_vilbert import HmVilbertConfig


def _attend(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    key_mask: torch.Tensor | None,
    num_heads: int,
    dropout_p: float,
    implementation: str = "sdpa",
) -> torch.Tensor:
    """Multi-head attention (`bert_layers.attend`: SDPA or eager) of (B, Lq, D) queries over (B, Lk, D) keys/values.

    `key_mask` is `make_attention_mask`'s boolean (B, 1, 1, Lk) mask (True = attend) or None.
    """
    bsz, q_len, width = query.shape
    head = width // num_heads
    q = query.view(bsz, q_len, num_heads, head).transpose(1, 2)
    k = key.view(bsz, key.shape[1], num_heads, head).transpose(1, 2)
    v = value.view(bsz, value.shape[1], num_heads, head).transpose(1, 2)
    context = attend(q, k, v, key_mask, dropout_p, implementation)
    return context.transpose(1, 2).reshape(bsz, q_len, width)


class HmVilbertEmbeddings(nn.Module):
    """Text embeddings, named and computed exactly as transformers' `BertEmbeddings`."""

    def __init__(self, config: HmVilbertConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        seq_len = input_ids.shape[1]
        position_ids = torch.arange(seq_len, device=input_ids.device)[None, :]
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        embeddings = (
            self.word_embeddings(input_ids)
            + self.position_embeddings(position_ids)
            + self.token_type_embeddings(token_type_ids)
        )
        return self.dropout(self.LayerNorm(embeddings))


class HmVilbertImageEmbeddings(nn.Module):
    """Region features (2048-d) and 5-d box locations projected to the visual width, summed, normalised."""

    def __init__(self, config: HmVilbertConfig):
        super().__init__()
        self.image_embeddings = nn.Linear(config.v_feature_size, config.v_hidden_size)
        self.image_location_embeddings = nn.Linear(config.v_loc_size, config.v_hidden_size)
        self.LayerNorm = nn.LayerNorm(config.v_hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.v_hidden_dropout_prob)

    def forward(self, features: torch.Tensor, locations: torch.Tensor) -> torch.Tensor:
        embeddings = self.image_embeddings(features) + self.image_location_embeddings(locations)
        return self.dropout(self.LayerNorm(embeddings))


class HmVilbertBiAttention(nn.Module):
    """Co-attention: text queries attend to regions (values 1) and region queries attend to text (values 2)."""

    def __init__(self, config: HmVilbertConfig):
        super().__init__()
        self.config = config
        self.num_attention_heads = config.bi_num_attention_heads
        bi = config.bi_hidden_size
        self.query1 = nn.Linear(config.v_hidden_size, bi)
        self.key1 = nn.Linear(config.v_hidden_size, bi)
        self.value1 = nn.Linear(config.v_hidden_size, bi)
        self.query2 = nn.Linear(config.hidden_size, bi)
        self.key2 = nn.Linear(config.hidden_size, bi)
        self.value2 = nn.Linear(config.hidden_size, bi)

    def forward(self, visual, visual_mask, text, text_mask) -> tuple[torch.Tensor, torch.Tensor]:
        p_v = self.config.v_attention_probs_dropout_prob if self.training else 0.0
        p_t = self.config.attention_probs_dropout_prob if self.training else 0.0
        implementation = attention_implementation(self.config)
        # text positions, regions as keys (masked by the region mask)
        text_context = _attend(self.query2(text), self.key1(visual), self.value1(visual), visual_mask,
                               self.num_attention_heads, p_v, implementation)
        # region positions, words as keys (masked by the text mask)
        visual_context = _attend(self.query1(visual), self.key2(text), self.value2(text), text_mask,
                                 self.num_attention_heads, p_t, implementation)
        return visual_context, text_context


class HmVilbertBiOutput(nn.Module):
    """Projects each co-attention context back to its stream's width; residual + LayerNorm per stream."""

    def __init__(self, config: HmVilbertConfig):
        super().__init__()
        eps = config.layer_norm_eps
        self.dense1 = nn.Linear(config.bi_hidden_size, config.v_hidden_size)
        self.LayerNorm1 = nn.LayerNorm(config.v_hidden_size, eps=eps)
        self.dropout1 = nn.Dropout(config.v_hidden_dropout_prob)
        self.dense2 = nn.Linear(config.bi_hidden_size, config.hidden_size)
        self.LayerNorm2 = nn.LayerNorm(config.hidden_size, eps=eps)
        self.dropout2 = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, visual_context, visual_input, text_context, text_input):
        visual = self.LayerNorm1(self.dropout1(self.dense1(visual_context)) + visual_input)
        text = self.LayerNorm2(self.dropout2(self.dense2(text_context)) + text_input)
        return visual, text


class HmVilbertConnectionLayer(GradientCheckpointingLayer):
    """A co-attention layer: bi-attention, then each stream's own feed-forward block."""

    def __init__(self, config: HmVilbertConfig):
        super().__init__()
        c = config
        self.biattention = HmVilbertBiAttention(config)
        self.biOutput = HmVilbertBiOutput(config)
        self.v_intermediate = BertIntermediate(c.v_hidden_size, c.v_intermediate_size, c.v_hidden_act)
        self.v_output = BertOutput(c.v_intermediate_size, c.v_hidden_size, c.v_hidden_dropout_prob, c.layer_norm_eps)
        self.t_intermediate = BertIntermediate(c.hidden_size, c.intermediate_size, c.hidden_act)
        self.t_output = BertOutput(c.intermediate_size, c.hidden_size, c.hidden_dropout_prob, c.layer_norm_eps)

    def forward(self, visual, visual_mask, text, text_mask) -> tuple[torch.Tensor, torch.Tensor]:
        visual_context, text_context = self.biattention(visual, visual_mask, text, text_mask)
        visual_att, text_att = self.biOutput(visual_context, visual, text_context, text)
        visual = self.v_output(self.v_intermediate(visual_att), visual_att)
        text = self.t_output(self.t_intermediate(text_att), text_att)
        return visual, text


class HmVilbertEncoder(nn.Module):
    """Runs text layers, visual layers and co-attention layers in vilbert-multi-task's interleaved order."""

    def __init__(self, config: HmVilbertConfig):
        super().__init__()
        self.config = config
        # hm_hf's shared BERT layers (transformers-BERT names, SDPA); the visual stream reads the v_* sizes
        self.layer = nn.ModuleList(BertLayer.from_config(config) for _ in range(config.num_hidden_layers))
        self.v_layer = nn.ModuleList(BertLayer.from_config(config, "v_") for _ in range(config.v_num_hidden_layers))
        self.c_layer = nn.ModuleList(HmVilbertConnectionLayer(config) for _ in config.v_biattention_id)
        self.skip_padding = config.skip_padding  # read once, as bert_layers.BertEncoder does
        self.gradient_checkpointing = False

    def forward(self, text, text_mask, visual, visual_mask, output_hidden_states: bool = False):
        """`text_mask` / `visual_mask`: (B, T) / (B, R) 1/0 padding masks. The runs of text and visual layers
        between co-attention layers skip the padding (`bert_layers.run_layers`); co-attention runs padded."""
        t_start = v_start = 0
        t_states, v_states = [], []
        text_key_mask, visual_key_mask = make_attention_mask(text_mask), make_attention_mask(visual_mask)
        # one packing per stream, shared by all its runs of layers
        text_packing = TokenPacking.for_mask(text_mask, self.skip_padding)
        visual_packing = TokenPacking.for_mask(visual_mask, self.skip_padding)

        def run(layers, states, mask, packing, collected):
            if not len(layers):
                return states
            states, hidden = run_layers(layers, states, mask, packing, output_hidden_states)
            if output_hidden_states:
                collected.extend(hidden[1:])
            return states

        for c_idx, (v_end, t_end) in enumerate(zip(self.config.v_biattention_id, self.config.t_biattention_id)):
            text = run(self.layer[t_start:t_end], text, text_mask, text_packing, t_states)
            visual = run(self.v_layer[v_start:v_end], visual, visual_mask, visual_packing, v_states)
            visual, text = self.c_layer[c_idx](visual, visual_key_mask, text, text_key_mask)
            if output_hidden_states:
                t_states.append(text)
                v_states.append(visual)
            t_start, v_start = t_end, v_end
        visual = run(self.v_layer[v_start:], visual, visual_mask, visual_packing, v_states)
        text = run(self.layer[t_start:], text, text_mask, text_packing, t_states)
        return text, visual, (tuple(t_states) if output_hidden_states else None), (
            tuple(v_states) if output_hidden_states else None
        )


class HmVilbertPooler(nn.Module):
    """First token of a stream -> Linear(width, bi_hidden_size) -> ReLU (ViLBERT's t_pooler / v_pooler)."""

    def __init__(self, in_size: int, out_size: int):
        super().__init__()
        self.dense = nn.Linear(in_size, out_size)
        self.activation = nn.ReLU()

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.activation(self.dense(hidden_states[:, 0]))


@dataclass
class HmVilbertModelOutput(ModelOutput):
    """Outputs of [`HmVilbertModel`]; `pooler_output` is the fused (product or sum) pooled vector."""

    last_hidden_state: torch.FloatTensor | None = None
    visual_last_hidden_state: torch.FloatTensor | None = None
    pooler_output: torch.FloatTensor | None = None
    text_pooler_output: torch.FloatTensor | None = None
    visual_pooler_output: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    visual_hidden_states: tuple[torch.FloatTensor, ...] | None = None


class HmVilbertPreTrainedModel(PreTrainedModel):
    config_class = HmVilbertConfig
    base_model_prefix = "bert"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _no_split_modules = ["BertLayer", "HmVilbertConnectionLayer"]
    main_input_name = "input_ids"

    @classmethod
    def _can_set_attn_implementation(cls) -> bool:
        """Yes: the attention reads ``config._attn_implementation`` at every forward (`attention_implementation`).
        (transformers guesses from the module's source, and takes an ``*Attention(nn.Module)`` class that does
        not use its AttentionInterface for one that cannot be switched.)"""
        return True

    def _init_weights(self, module: nn.Module) -> None:
        """BERT init: Linear/Embedding ~ N(0, initializer_range), zero biases and padding row, LayerNorm 1/0.

        transformers' generic initialiser does exactly this through `transformers.initialization`, which
        skips tensors already loaded from a checkpoint; nothing in ViLBERT needs a special case.
        """
        super()._init_weights(module)

    @classmethod
    def from_text_pretrained(cls, bert, **config_overrides):
        """Builds the model with its text stream initialised from a BERT checkpoint (e.g. bert-base-uncased).

        The config takes the BERT's text sizes plus `config_overrides`; BERT's embeddings and encoder layers
        are copied into `embeddings.*` / `encoder.layer.N.*` (same names). BERT's pooler is not copied:
        ViLBERT's `t_pooler` projects to `bi_hidden_size`. The visual stream, co-attention layers and head
        stay randomly initialised, as when ViLBERT pre-training starts from BERT.

        >>> model = HmVilbertForHatefulMemes.from_text_pretrained("bert-base-uncased")  # doctest: +SKIP
        """
        from ..bert_weights import bert_config_fields, load_bert_text_weights

        fields = bert_config_fields(bert)
        fields.update(config_overrides)
        model = cls(cls.config_class(**fields))
        load_bert_text_weights(model.base_model, bert, modules=("embeddings.", "encoder."))
        return model


def region_locations(visual_boxes: torch.Tensor, loc_size: int = 5) -> torch.Tensor:
    """(B, R, 4) normalised x1, y1, x2, y2 -> (B, R, 5) with the normalised area appended (ViLBERT's input)."""
    if visual_boxes.shape[-1] == loc_size:
        return visual_boxes
    if visual_boxes.shape[-1] != 4 or loc_size != 5:
        raise ValueError(f"visual_boxes must have 4 (x1, y1, x2, y2) or {loc_size} values per region, got shape "
                         f"{tuple(visual_boxes.shape)}.")
    area = (visual_boxes[..., 2] - visual_boxes[..., 0]) * (visual_boxes[..., 3] - visual_boxes[..., 1])
    return torch.cat([visual_boxes, area.unsqueeze(-1)], dim=-1)


class HmVilbertModel(HmVilbertPreTrainedModel):
    """The two-stream ViLBERT encoder with both poolers.

    Example:

    ```python
    >>> import torch
    >>> from hm_hf.models.vilbert import HmVilbertConfig, HmVilbertModel
    >>> config = HmVilbertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
    ...     v_feature_size=16, v_hidden_size=24, v_num_hidden_layers=1, v_num_attention_heads=2,
    ...     v_intermediate_size=24, bi_hidden_size=24, bi_num_attention_heads=2, v_biattention_id=[1],
    ...     t_biattention_id=[1], vocab_size=99)
    >>> model = HmVilbertModel(config).eval()
    >>> out = model(input_ids=torch.tensor([[2, 5, 3]]), visual_embeds=torch.randn(1, 4, 16),
    ...             visual_boxes=torch.rand(1, 4, 4))
    >>> out.pooler_output.shape
    torch.Size([1, 24])
    ```
    """

    def __init__(self, config: HmVilbertConfig):
        super().__init__(config)
        self.embeddings = HmVilbertEmbeddings(config)
        self.v_embeddings = HmVilbertImageEmbeddings(config)
        self.encoder = HmVilbertEncoder(config)
        self.t_pooler = HmVilbertPooler(config.hidden_size, config.bi_hidden_size)
        self.v_pooler = HmVilbertPooler(config.v_hidden_size, config.bi_hidden_size)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embeddings.word_embeddings = value

    def _visual_inputs(self, visual_embeds, visual_boxes, visual_attention_mask):
        """Adds the global image token (mean of the real regions, box 0,0,1,1,1) and builds the masks."""
        visual_embeds = visual_embeds.to(self.dtype)  # the collator may hand over float16 features
        bsz, num_regions, _ = visual_embeds.shape
        if visual_attention_mask is None:
            visual_attention_mask = torch.ones(bsz, num_regions, dtype=torch.long, device=visual_embeds.device)
        if visual_boxes is None:
            raise ValueError("HmVilbertModel needs visual_boxes (B, R, 4) normalised x1, y1, x2, y2 per region.")
        locations = region_locations(visual_boxes.to(visual_embeds.dtype), self.config.v_loc_size)
        if self.config.add_global_image_token:
            weights = visual_attention_mask.to(visual_embeds.dtype).unsqueeze(-1)
            global_feat = (visual_embeds * weights).sum(1, keepdim=True) / weights.sum(1, keepdim=True).clamp(min=1.0)
            global_loc = locations.new_tensor([0.0, 0.0, 1.0, 1.0, 1.0][: self.config.v_loc_size]).expand(bsz, 1, -1)
            visual_embeds = torch.cat([global_feat, visual_embeds], dim=1)
            locations = torch.cat([global_loc, locations], dim=1)
            visual_attention_mask = torch.cat([visual_attention_mask.new_ones(bsz, 1), visual_attention_mask], dim=1)
        return visual_embeds, locations, visual_attention_mask

    def forward(
        self,
        input_ids: torch.Tensor,
        visual_embeds: torch.Tensor,
        visual_boxes: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        visual_attention_mask: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> HmVilbertModelOutput:
        """Encodes a batch from hm_hf's collator (extra collator keys such as `pixel_values` are ignored)."""
        output_hidden_states = bool(output_hidden_states)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        visual_embeds, locations, visual_attention_mask = self._visual_inputs(
            visual_embeds, visual_boxes, visual_attention_mask
        )
        text = self.embeddings(input_ids, token_type_ids)
        visual = self.v_embeddings(visual_embeds, locations)
        text, visual, t_states, v_states = self.encoder(
            text, attention_mask, visual, visual_attention_mask, output_hidden_states,
        )
        pooled_t = self.t_pooler(text)
        pooled_v = self.v_pooler(visual)
        fused = pooled_t * pooled_v if self.config.fusion_method == "mul" else pooled_t + pooled_v
        return HmVilbertModelOutput(
            last_hidden_state=text,
            visual_last_hidden_state=visual,
            pooler_output=fused,
            text_pooler_output=pooled_t,
            visual_pooler_output=pooled_v,
            hidden_states=t_states,
            visual_hidden_states=v_states,
        )


class HmVilbertForHatefulMemes(HmVilbertPreTrainedModel):
    """ViLBERT with MMF's classification head on the fused pooled vector; cross-entropy on the logits
    (or the multi-label loss of `hm_hf.models.heads`, by ``problem_type``).

    `classifier` = Sequential(dense -> GELU -> LayerNorm, Linear(bi_hidden_size, num_labels)), the head
    whose 1,053,698 parameters the PE paper trains in its head-only setting. Labels of -100 are ignored.

    Example:

    ```python
    >>> import torch
    >>> from hm_hf.models.vilbert import HmVilbertConfig, HmVilbertForHatefulMemes
    >>> config = HmVilbertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
    ...     v_feature_size=16, v_hidden_size=24, v_num_hidden_layers=1, v_num_attention_heads=2,
    ...     v_intermediate_size=24, bi_hidden_size=24, bi_num_attention_heads=2, v_biattention_id=[1],
    ...     t_biattention_id=[1], vocab_size=99)
    >>> model = HmVilbertForHatefulMemes(config)
    >>> out = model(input_ids=torch.tensor([[2, 5, 3]]), visual_embeds=torch.randn(1, 4, 16),
    ...             visual_boxes=torch.rand(1, 4, 4), labels=torch.tensor([1]))
    >>> out.logits.shape
    torch.Size([1, 2])
    ```
    """

    def __init__(self, config: HmVilbertConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.bert = HmVilbertModel(config)
        dropout = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = nn.Dropout(dropout)
        self.classifier = BertClassificationHead(config.bi_hidden_size, config.num_labels, True, config.hidden_act,
                                                 config.layer_norm_eps)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor,
        visual_embeds: torch.Tensor,
        visual_boxes: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        visual_attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> SequenceClassifierOutput:
        outputs = self.bert(
            input_ids=input_ids,
            visual_embeds=visual_embeds,
            visual_boxes=visual_boxes,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            visual_attention_mask=visual_attention_mask,
            output_hidden_states=output_hidden_states,
        )
        logits = self.classifier(self.dropout(outputs.pooler_output))
        loss = classification_loss(logits, labels, self.num_labels, self.config.problem_type)
        return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states)


__all__ = [
    "HmVilbertForHatefulMemes",
    "HmVilbertModel",
    "HmVilbertModelOutput",
    "HmVilbertPreTrainedModel",
    "region_locations",
]
