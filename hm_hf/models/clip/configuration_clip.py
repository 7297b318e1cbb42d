"""Configuration of hm_hf's CLIP model (Hate-CLIPper style: CLIP features, projected, fused, classified)."""

from __future__ import annotations

from transformers import CLIPConfig, PreTrainedConfig

from hm_hf.models.auto import register_architecture

__all__ = ["FUSIONS", "HmClipConfig"]

FUSIONS = ("concat", "align", "cross")
CLIP_FEATURES = ("pooled", "projected")


class HmClipConfig(PreTrainedConfig):
    r"""Configuration for :class:`HmClipForHatefulMemes`.

    The image and the text go through a ``transformers`` CLIP model; each modality's vector is projected
    (``num_projection_layers`` x ``Linear`` to ``projection_dim``, with dropout), L2-normalised, and fused:

    * ``"concat"``: ``[p_i; p_t]`` (2 x projection_dim);
    * ``"align"``: ``p_i * p_t`` element-wise (projection_dim);
    * ``"cross"``: the outer product ``p_i p_t^T`` flattened, Hate-CLIPper's feature interaction matrix
      (projection_dim ** 2).

    The fused vector goes through ``num_pre_output_layers`` x (``Linear`` + ReLU + dropout) of width
    ``pre_output_dim`` and a ``Linear(num_labels)`` classifier.

    Args:
        clip_config: a ``CLIPConfig`` (or its dict); random weights unless the model is built with
            :meth:`HmClipForHatefulMemes.from_clip_pretrained` or loaded from ``clip_model_name_or_path``.
        clip_model_name_or_path: the CLIP checkpoint the encoders came from (Hub id or folder). When set and
            ``freeze_clip`` is true, ``save_pretrained`` stores only the trained layers and ``from_pretrained``
            reloads the frozen CLIP from this reference.
        freeze_clip: keep the CLIP encoders frozen (Hate-CLIPper's setting). False: they are trained (and saved).
        clip_features: ``"pooled"``: the encoders' pooled outputs (hidden size; what Hate-CLIPper projects) or
            ``"projected"``: CLIP's own image/text embeddings (after its visual/text projections).
        fusion: ``"concat"``, ``"align"`` or ``"cross"``.
        projection_dim: width of each modality's projection (Hate-CLIPper's ``map_dim``).
        num_projection_layers: Linear layers per projection (ReLU between them).
        num_pre_output_layers: hidden layers between the fusion and the classifier (0: linear classifier).
        pre_output_dim: width of those layers (None: ``projection_dim``).
        projection_dropout / fusion_dropout / pre_output_dropout: Hate-CLIPper's three dropout rates
            (after the projections, on the fused vector, after each pre-output layer).
        normalize: L2-normalise the projected vectors before fusion (as Hate-CLIPper does).

    Example:
        >>> from transformers import CLIPConfig
        >>> from hm_hf.models.clip import HmClipConfig
        >>> config = HmClipConfig(fusion="cross", projection_dim=16, num_pre_output_layers=1,
        ...                       clip_config=CLIPConfig(text_config={"hidden_size": 32}, projection_dim=8))
        >>> config.fused_dim
        256
    """

    model_type = "hm_clip"
    #: what the model reads (hm_hf.processing.INPUT_KINDS): CLIP tokens of one string per meme, and pixels
    model_inputs = ("clip_text", "pixels")
    sub_configs_defaults = {"clip_config": CLIPConfig}

    clip_config: dict | CLIPConfig | None = None
    clip_model_name_or_path: str | None = None
    freeze_clip: bool = True
    clip_features: str = "pooled"
    fusion: str = "cross"
    projection_dim: int = 1024
    num_projection_layers: int = 1
    num_pre_output_layers: int = 1
    pre_output_dim: int | None = None
    projection_dropout: float = 0.1
    fusion_dropout: float = 0.4
    pre_output_dropout: float = 0.2
    normalize: bool = True
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {self.fusion!r}")
        if self.clip_features not in CLIP_FEATURES:
            raise ValueError(f"clip_features must be one of {CLIP_FEATURES}, got {self.clip_features!r}")
        for name in ("projection_dim", "num_projection_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.num_pre_output_layers < 0:
            raise ValueError(f"num_pre_output_layers must be >= 0, got {self.num_pre_output_layers}")
        if self.pre_output_dim is None:
            self.pre_output_dim = self.projection_dim

    @property
    def image_feature_dim(self) -> int:
        """Size of the CLIP image vector the image projection reads."""
        if self.clip_features == "projected":
            return self.clip_config.projection_dim
        return self.clip_config.vision_config.hidden_size

    @property
    def text_feature_dim(self) -> int:
        """Size of the CLIP text vector the text projection reads."""
        if self.clip_features == "projected":
            return self.clip_config.projection_dim
        return self.clip_config.text_config.hidden_size

    @property
    def fused_dim(self) -> int:
        """Size of the fused vector: 2d (concat), d (align) or d**2 (cross)."""
        d = self.projection_dim
        return {"concat": 2 * d, "align": d, "cross": d * d}[self.fusion]

    @property
    def references_frozen_clip(self) -> bool:
        """True when the CLIP weights are not saved with the model but reloaded from clip_model_name_or_path."""
        return bool(self.freeze_clip and self.clip_model_name_or_path)


register_architecture(HmClipConfig)  # with the Auto classes: see hm_hf.models.auto
