"""ViLBERT configuration (two-stream vision-and-language BERT, Lu et al. 2019).

The field names follow vilbert-multi-task / MMF (`v_hidden_size`, `v_biattention_id`, ...), so a config
written by those code bases maps onto this one key for key.
"""

from __future__ import annotations

from transformers import PreTrainedConfig

from hm_hf.models.auto import register_architecture

#: ViLBERT base: co-attention layer i follows visual layer V[i] and text layer T[i]
V_BIATTENTION_ID = (0, 1, 2, 3, 4, 5)
T_BIATTENTION_ID = (6, 7, 8, 9, 10, 11)


class HmVilbertConfig(PreTrainedConfig):
    r"""Configuration of [`HmVilbertModel`] / [`HmVilbertForHatefulMemes`].

    The defaults are the ViLBERT base model used by MMF and vilbert-multi-task: a 12-layer BERT-base text
    stream, a 6-layer visual stream of width 1024 fed with 2048-d region features and 5-d box locations,
    and 6 co-attention layers. `t_biattention_id[i]` / `v_biattention_id[i]` are the number of text / visual
    layers run before co-attention layer `i` (so `t=[6..11]`, `v=[0..5]` interleaves them as the original).

    Args:
        vocab_size, hidden_size, num_hidden_layers, num_attention_heads, intermediate_size, hidden_act,
        hidden_dropout_prob, attention_probs_dropout_prob, max_position_embeddings, type_vocab_size,
        initializer_range, layer_norm_eps, pad_token_id: the text stream, exactly as in `BertConfig`.
        v_feature_size: region feature size (2048 for bottom-up-attention features).
        v_loc_size: box location size: 5 = x1, y1, x2, y2, area, all normalised by the image size.
        v_hidden_size, v_num_hidden_layers, v_num_attention_heads, v_intermediate_size, v_hidden_act,
        v_hidden_dropout_prob, v_attention_probs_dropout_prob: the visual stream.
        bi_hidden_size, bi_num_attention_heads: width and heads of the co-attention (and of the poolers).
        v_biattention_id, t_biattention_id: where the co-attention layers sit (see above).
        fusion_method: "mul" (ViLBERT's product of the pooled streams) or "sum".
        add_global_image_token: prepend the mean of the real regions with box (0, 0, 1, 1, 1) as the first
            visual token, as vilbert-multi-task's feature reader does (the visual pooler then reads it). MMF's
            ViLBERT (its hateful-memes / classification configs, the PE paper's) feeds the regions alone:
            False. `hm-hf convert-vilbert` sets it from the checkpoint's origin; the ViLBERT recipes set False.
        classifier_dropout: dropout on the fused pooled vector (defaults to `hidden_dropout_prob`).
        skip_padding: run the position-wise parts of the text and visual layers on the real tokens only
            (see `hm_hf.models.bert_layers.TokenPacking`); False computes every position. Read when the model is built
            (``from_pretrained(folder, skip_padding=False)``).

    Example:

    ```python
    >>> from hm_hf.models.vilbert import HmVilbertConfig, HmVilbertForHatefulMemes
    >>> config = HmVilbertConfig(num_hidden_layers=2, v_num_hidden_layers=1, v_biattention_id=[0],
    ...                          t_biattention_id=[1])
    >>> model = HmVilbertForHatefulMemes(config)
    ```
    """

    model_type = "hm_vilbert"
    #: what the model reads (hm_hf.processing.INPUT_KINDS): BERT tokens (+ a text pair) and region features
    model_inputs = ("text", "regions")

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float | int = 0.1
    attention_probs_dropout_prob: float | int = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    pad_token_id: int | None = 0
    v_feature_size: int = 2048
    v_loc_size: int = 5
    v_hidden_size: int = 1024
    v_num_hidden_layers: int = 6
    v_num_attention_heads: int = 8
    v_intermediate_size: int = 1024
    v_hidden_act: str = "gelu"
    v_hidden_dropout_prob: float | int = 0.1
    v_attention_probs_dropout_prob: float | int = 0.1
    bi_hidden_size: int = 1024
    bi_num_attention_heads: int = 8
    v_biattention_id: list[int] | None = None  # None: V_BIATTENTION_ID
    t_biattention_id: list[int] | None = None  # None: T_BIATTENTION_ID
    fusion_method: str = "mul"
    add_global_image_token: bool = True
    classifier_dropout: float | None = None
    skip_padding: bool = True

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        # None means the ViLBERT-base layout; tuples from Python callers become JSON lists
        self.v_biattention_id = list(V_BIATTENTION_ID if self.v_biattention_id is None else self.v_biattention_id)
        self.t_biattention_id = list(T_BIATTENTION_ID if self.t_biattention_id is None else self.t_biattention_id)
        self._validate_vilbert()

    def _validate_vilbert(self) -> None:
        """Fail at construction, with the offending field named, rather than deep inside forward."""
        for width, heads, name in (
            (self.hidden_size, self.num_attention_heads, "hidden_size/num_attention_heads"),
            (self.v_hidden_size, self.v_num_attention_heads, "v_hidden_size/v_num_attention_heads"),
            (self.bi_hidden_size, self.bi_num_attention_heads, "bi_hidden_size/bi_num_attention_heads"),
        ):
            if width % heads:
                raise ValueError(f"HmVilbertConfig: {name} = {width}/{heads} is not a whole number of heads.")
        if len(self.v_biattention_id) != len(self.t_biattention_id):
            raise ValueError(
                "HmVilbertConfig: v_biattention_id and t_biattention_id must have the same length (one entry "
                f"per co-attention layer), got {self.v_biattention_id} and {self.t_biattention_id}."
            )
        for ids, limit, name in (
            (self.v_biattention_id, self.v_num_hidden_layers, "v_biattention_id"),
            (self.t_biattention_id, self.num_hidden_layers, "t_biattention_id"),
        ):
            if any(b < a for a, b in zip(ids, ids[1:])) or any(i < 0 or i > limit for i in ids):
                raise ValueError(
                    f"HmVilbertConfig: {name}={ids} must be non-decreasing layer counts in [0, {limit}]."
                )
        if self.fusion_method not in ("mul", "sum"):
            raise ValueError(f"HmVilbertConfig: fusion_method must be 'mul' or 'sum', got {self.fusion_method!r}.")
        if self.v_loc_size not in (4, 5):
            raise ValueError(f"HmVilbertConfig: v_loc_size must be 4 or 5, got {self.v_loc_size}.")


__all__ = ["HmVilbertConfig"]


register_architecture(HmVilbertConfig)  # with the Auto classes: see hm_hf.models.auto
