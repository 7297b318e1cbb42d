"""Configuration of hm_hf's Concat baseline (late fusion of a text vector and an image vector)."""

from __future__ import annotations

from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

from hm_hf.models.auto import register_architecture

__all__ = ["HmConcatConfig"]

_TEXT_SOURCES = ("embedding", "encoder")
_IMAGE_SOURCES = ("regions", "encoder")


class HmConcatConfig(PreTrainedConfig):
    r"""Configuration for :class:`HmConcatForHatefulMemes` (the DrivenData / seed "Concat" baseline).

    Each modality gives one vector, projected by ``Linear + ReLU + Dropout``; the projections are concatenated
    and fused by an MLP, then classified.

    Args:
        modalities: ``["text", "image"]`` (multimodal), ``["text"]`` or ``["image"]`` (unimodal baselines).
        text_source: ``"embedding"``: a precomputed sentence vector (``text_embedding``, fastText, size
            ``text_embedding_dim``); ``"encoder"``: any transformers text model built from ``text_config``
            (e.g. a ``BertConfig``), pooled as ``text_pooling`` says.
        text_pooling: ``"pooler"`` (BERT's pooled output; falls back to ``"cls"`` for models without one),
            ``"cls"`` or ``"mean"`` (masked mean of the last hidden states).
        image_source: ``"regions"``: masked mean of the region features (size ``visual_embedding_dim``);
            ``"encoder"``: any transformers vision model built from ``vision_config`` (ResNet, CLIP vision, ViT),
            taking its pooled output.
        text_projection_dim: projection size of the text vector (None: 256 for a sentence vector, 128 for an
            encoder, as the seed).
        image_projection_dim: projection size of the image vector (256).
        fusion_hidden_sizes: hidden sizes of the fusion MLP (each Linear + ReLU + Dropout).
        dropout: dropout of the projections and the fusion MLP (0.1).
        text_config / vision_config: sub-configs (dicts with a ``model_type`` or configs); serialised in
            config.json, built with ``AutoModel.from_config`` (random init; use
            ``HmConcatForHatefulMemes.from_pretrained_encoders`` for pretrained weights).

    Example:
        >>> from transformers import BertConfig
        >>> from hm_hf.models.concat import HmConcatConfig
        >>> seed_fasttext = HmConcatConfig(text_embedding_dim=100)                # fastText + region features
        >>> text_only = HmConcatConfig(modalities=["text"], text_source="encoder",
        ...                            text_config=BertConfig(hidden_size=32, num_hidden_layers=1,
        ...                                                   num_attention_heads=2, intermediate_size=37))
    """

    model_type = "hm_concat"
    sub_configs_defaults = {
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="bert", optional=True),
        "vision_config": SubConfigSpec(config_class=AutoConfig, model_type="resnet", optional=True),
    }

    modalities: list[str] | tuple[str, ...] = ("text", "image")
    text_source: str = "embedding"
    text_embedding_dim: int = 100
    text_pooling: str = "pooler"
    text_config: dict | PreTrainedConfig | None = None
    image_source: str = "regions"
    visual_embedding_dim: int = 2048
    vision_config: dict | PreTrainedConfig | None = None
    text_projection_dim: int | None = None
    image_projection_dim: int = 256
    fusion_hidden_sizes: list[int] | tuple[int, ...] = (512,)
    dropout: float = 0.1
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        self.modalities = list(self.modalities)
        self.fusion_hidden_sizes = list(self.fusion_hidden_sizes)
        if not self.modalities or set(self.modalities) - {"text", "image"}:
            raise ValueError(f"modalities must be a non-empty subset of ['text', 'image'], got {self.modalities}")
        if self.text_source not in _TEXT_SOURCES:
            raise ValueError(f"text_source must be one of {_TEXT_SOURCES}, got {self.text_source!r}")
        if self.image_source not in _IMAGE_SOURCES:
            raise ValueError(f"image_source must be one of {_IMAGE_SOURCES}, got {self.image_source!r}")
        if self.text_pooling not in ("pooler", "cls", "mean"):
            raise ValueError(f"text_pooling must be 'pooler', 'cls' or 'mean', got {self.text_pooling!r}")
        if "text" in self.modalities and self.text_source == "encoder" and self.text_config is None:
            raise ValueError("text_source='encoder' needs text_config (e.g. BertConfig().to_dict())")
        if "image" in self.modalities and self.image_source == "encoder" and self.vision_config is None:
            raise ValueError("image_source='encoder' needs vision_config (e.g. ResNetConfig().to_dict())")
        if self.text_projection_dim is None:
            self.text_projection_dim = 128 if self.text_source == "encoder" else 256

    @property
    def model_inputs(self) -> tuple[str, ...]:
        """What the model reads (hm_hf.processing.INPUT_KINDS): a sentence vector or tokens, and region
        features or pixels, as its modalities and sources say."""
        inputs = []
        if "text" in self.modalities:
            inputs.append("text_embedding" if self.text_source == "embedding" else "text")
        if "image" in self.modalities:
            inputs.append("regions" if self.image_source == "regions" else "pixels")
        return tuple(inputs)

    @property
    def uses_text_encoder(self) -> bool:
        return "text" in self.modalities and self.text_source == "encoder"

    @property
    def uses_vision_encoder(self) -> bool:
        return "image" in self.modalities and self.image_source == "encoder"


register_architecture(HmConcatConfig)  # with the Auto classes: see hm_hf.models.auto
