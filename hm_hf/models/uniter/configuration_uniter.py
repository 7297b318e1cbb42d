"""Configuration of hm_hf's UNITER (single-stream text + region features with 7-d box geometry)."""

from __future__ import annotations

from transformers import PreTrainedConfig

from hm_hf.models.auto import register_architecture

__all__ = ["HmUniterConfig"]


class HmUniterConfig(PreTrainedConfig):
    r"""Configuration for :class:`HmUniterModel` / :class:`HmUniterForHatefulMemes`.

    BERT's fields (defaults: UNITER-base = bert-base-cased sizes, vocabulary 28996) plus:

    Args:
        img_dim: size of one region feature (2048).
        pos_dim: size of the box-geometry vector, 7 = (x1, y1, x2, y2, w, h, w*h) normalised by the image
            width (x) and height (y).
        classifier_transform: MMF-style head (dense + act + LayerNorm, then Linear) when True; a single Linear
            on the pooled output when False (the seed's UNITER head, the default).
        classifier_dropout: dropout before the head (None: ``hidden_dropout_prob``).
        skip_padding: run the position-wise parts of each layer on the real tokens only (see
            ``hm_hf.models.bert_layers.TokenPacking``); False computes every position. Read when the model is built
            (``from_pretrained(folder, skip_padding=False)``).

    Example:
        >>> from hm_hf.models.uniter import HmUniterConfig, HmUniterForHatefulMemes
        >>> config = HmUniterConfig(vocab_size=200, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        ...                         intermediate_size=64, img_dim=16)
        >>> model = HmUniterForHatefulMemes(config)
    """

    model_type = "hm_uniter"
    #: what the model reads (hm_hf.processing.INPUT_KINDS): BERT tokens (+ a text pair) and region features
    model_inputs = ("text", "regions")

    vocab_size: int = 28996
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
    img_dim: int = 2048
    pos_dim: int = 7
    classifier_transform: bool = False
    classifier_dropout: float | None = None
    skip_padding: bool = True
    pad_token_id: int | None = 0
    tie_word_embeddings: bool = False


register_architecture(HmUniterConfig)  # with the Auto classes: see hm_hf.models.auto
