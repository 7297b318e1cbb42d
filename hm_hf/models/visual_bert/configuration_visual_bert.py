"""Configuration of hm_hf's VisualBERT (single-stream text + region features)."""

from __future__ import annotations

from transformers import PreTrainedConfig

from hm_hf.models.auto import register_architecture

__all__ = ["HmVisualBertConfig"]


class HmVisualBertConfig(PreTrainedConfig):
    r"""Configuration for :class:`HmVisualBertModel` / :class:`HmVisualBertForHatefulMemes`.

    The fields are those of transformers' ``VisualBertConfig`` (so a ``config.json`` saved by
    ``VisualBertModel``, e.g. ``uclanlp/visualbert-nlvr2-coco-pre``, loads as it is), with defaults for
    bert-base-uncased text and 2048-d Faster R-CNN region features, plus the classifier's settings.

    Args:
        visual_embedding_dim: size of one region feature (2048 for the Visual Genome Faster R-CNN).
        bypass_transformer: VisualBERT's variant that skips the encoder for visual tokens (not supported;
            kept so foreign configs load; True raises).
        special_visual_initialize: initialise the visual token-type / position embeddings as copies of the
            text ones (at random init and in ``from_text_pretrained``).
        classifier_transform: MMF's head (dense + act + LayerNorm, then Linear) when True, one Linear otherwise.
        classifier_dropout: dropout before the head (None: ``hidden_dropout_prob``).
        skip_padding: run the position-wise parts of each layer on the real tokens only (see
            ``hm_hf.models.bert_layers.TokenPacking``); False computes every position. Read when the model is built
            (``from_pretrained(folder, skip_padding=False)``).
        Other fields: as ``BertConfig``.

    Example:
        >>> from hm_hf.models.visual_bert import HmVisualBertConfig, HmVisualBertForHatefulMemes
        >>> config = HmVisualBertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        ...                             intermediate_size=64, visual_embedding_dim=16)
        >>> model = HmVisualBertForHatefulMemes(config)
    """

    model_type = "hm_visual_bert"
    #: what the model reads (hm_hf.processing.INPUT_KINDS): BERT tokens (+ a text pair) and region features
    model_inputs = ("text", "regions")

    vocab_size: int = 30522
    hidden_size: int = 768
    visual_embedding_dim: int = 2048
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
    bypass_transformer: bool = False
    special_visual_initialize: bool = True
    classifier_transform: bool = True
    classifier_dropout: float | None = None
    skip_padding: bool = True
    pad_token_id: int | None = 0
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    tie_word_embeddings: bool = False


register_architecture(HmVisualBertConfig)  # with the Auto classes: see hm_hf.models.auto
