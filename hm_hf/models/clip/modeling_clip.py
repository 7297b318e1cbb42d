"""hm_hf's CLIP model: Hate-CLIPper (Kumar & Nandakumar, 2022) as a transformers PreTrainedModel.

image -> CLIP vision encoder -> pooled vector -> projection ``image_map`` -> L2 norm  \\
                                                                                       fusion -> ``pre_output``
text  -> CLIP text encoder   -> pooled vector -> projection ``text_map``  -> L2 norm  /       MLP -> classifier

The fusion is ``concat``, ``align`` (element-wise product) or ``cross`` (the flattened outer product,
Hate-CLIPper's feature interaction matrix). The CLIP encoders are a plain ``transformers.CLIPModel`` (any
checkpoint), frozen by default; LoRA on their ``q_proj`` / ``v_proj`` goes through ``hm_hf.peft``.

When the encoders stay frozen and the model knows which checkpoint they came from
(``config.clip_model_name_or_path``), ``save_pretrained`` writes only the trained layers and
``from_pretrained`` reloads the frozen CLIP from that reference: a saved Hate-CLIPper head on ViT-L/14 is
a few MB, not 1.7 GB. A reference to a folder of the training machine travels with a pushed model as its
``clip_model/`` folder (`local_clip_to_push`), which loading uses where that folder does not exist
(`frozen_clip_location`).

The new layers are named ``image_map`` / ``text_map`` / ``pre_output`` (not ``*_projection``) so that
they never collide with CLIP's own ``visual_projection`` / ``text_projection`` in peft's suffix matching.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from transformers import CLIPModel, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPooling, SequenceClassifierOutput

from hm_hf.hub import local_reference

from ..heads import classification_output, refuse_output_attentions
from .configuration_clip import HmClipConfig

__all__ = ["CLIP_MODEL_DIR", "HmClipForHatefulMemes", "HmClipModel", "HmClipPreTrainedModel", "frozen_clip_location",
           "local_clip_to_push"]

logger = logging.getLogger(__name__)

# Missing CLIP weights are expected when loading a model that references its frozen CLIP.
_CLIP_KEYS = r"(^|\.)clip\."


def _projection(in_dim: int, out_dim: int, num_layers: int, dropout: float) -> nn.Sequential:
    """Hate-CLIPper's mapping: Linear + Dropout, then (ReLU + Linear + Dropout) per extra layer."""
    layers: list[nn.Module] = [nn.Linear(in_dim, out_dim), nn.Dropout(dropout)]
    for _ in range(1, num_layers):
        layers += [nn.ReLU(), nn.Linear(out_dim, out_dim), nn.Dropout(dropout)]
    return nn.Sequential(*layers)


CLIP_MODEL_DIR = "clip_model"  # in a model folder / repo: the referenced frozen CLIP, when it travelled with it


def _names_a_folder(reference: str) -> bool:
    """Whether a recorded reference is a folder path (of this machine or another, POSIX or Windows), not a Hub id."""
    return PurePosixPath(reference).is_absolute() or PureWindowsPath(reference).is_absolute()


def frozen_clip_location(model_name_or_path, reference: str, subfolder: str | None = None, **hub) -> str:
    """Where the frozen CLIP a saved model references is: the reference itself when it is a folder here or a Hub
    id; a folder of another machine is looked for as the model's own ``clip_model/`` (in its folder or Hub repo,
    at the model's revision: `hub`), where a push put it. Else the reference, whose loading error names it."""
    if Path(reference).expanduser().is_dir() or not _names_a_folder(reference):
        return reference
    from hm_hf.hub import model_path

    name = f"{subfolder}/{CLIP_MODEL_DIR}" if subfolder else CLIP_MODEL_DIR
    travelled = model_path(str(model_name_or_path), name, **hub)
    return str(travelled) if travelled is not None and travelled.is_dir() else reference


def local_clip_to_push(model_folder) -> Path | None:
    """The local CLIP folder that must travel with the model saved in `model_folder` when it is pushed: the one
    its config references for its frozen encoders (not saved with it), when that is a folder on this machine and
    the model has no ``clip_model/`` of its own; else None. Without it the pushed model would name a path of
    this machine and load nowhere else. A referenced folder that is missing here, or holds no safetensors
    weights (only those travel: `hm_hf.hub.push_folder`), is warned about: the pushed model would not load."""
    from hm_hf.fileio import read_json_object

    model_folder = Path(model_folder)
    config_file = model_folder / "config.json"
    if not config_file.is_file() or (model_folder / CLIP_MODEL_DIR).is_dir():
        return None
    config = read_json_object(config_file, "model config", "save the model again (model.save_pretrained)")
    reference = config.get("clip_model_name_or_path")
    if not (config.get("freeze_clip") and isinstance(reference, str) and _names_a_folder(reference)):
        return None
    if not Path(reference).is_dir():
        logger.warning("%s references its frozen CLIP at %s, which is not on this machine: pushed, it will not load "
                       "anywhere; point config.clip_model_name_or_path at the checkpoint and save it again",
                       config_file, reference)
        return None
    from hm_hf.hub import warn_without_safetensors

    warn_without_safetensors(Path(reference), "the frozen CLIP")
    return Path(reference)


class HmClipPreTrainedModel(PreTrainedModel):
    """Weight initialisation, the frozen-CLIP save filter and the load path that rebuilds CLIP."""

    config_class = HmClipConfig
    config: HmClipConfig
    base_model_prefix = "hm_clip"
    input_modalities = ("image", "text")
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _no_split_modules = ["CLIPEncoderLayer"]

    def clip_model(self) -> CLIPModel:
        """The wrapped ``transformers.CLIPModel``."""
        for module in self.modules():
            if isinstance(module, CLIPModel):
                return module
        raise RuntimeError(f"{type(self).__name__} holds no CLIPModel")

    def _clip_prefixes(self) -> tuple[str, ...]:
        return tuple(f"{name}." for name, module in self.named_modules() if isinstance(module, CLIPModel))

    def save_pretrained(self, save_directory, *args, state_dict: dict | None = None, **kwargs):
        """As ``PreTrainedModel.save_pretrained``; with a referenced frozen CLIP, its weights are left out.

        (After merging LoRA into the CLIP weights, set ``config.freeze_clip = False`` first, so they are saved.)
        """
        if self.config.references_frozen_clip:
            state_dict = self.state_dict() if state_dict is None else state_dict
            prefixes = self._clip_prefixes()
            trained = [n for n, p in self.clip_model().named_parameters() if p.requires_grad and "lora_" not in n]
            if trained:
                logger.warning(
                    "%d CLIP parameters are trainable but config.freeze_clip is True: they are not saved (the CLIP "
                    "weights are reloaded from %s). Set config.freeze_clip = False to save them.",
                    len(trained), self.config.clip_model_name_or_path,
                )
            state_dict = {k: v for k, v in state_dict.items() if not k.startswith(prefixes)}
        return super().save_pretrained(save_directory, *args, state_dict=state_dict, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """As ``PreTrainedModel.from_pretrained``; a model saved with a referenced frozen CLIP gets its CLIP
        weights from ``config.clip_model_name_or_path``."""
        model = super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
        loaded = model[0] if isinstance(model, tuple) else model
        if loaded.config.references_frozen_clip:
            from hm_hf.hub import hub_options, other_repo_options

            hub = hub_options(kwargs)
            reference = loaded.config.clip_model_name_or_path
            location = frozen_clip_location(pretrained_model_name_or_path, reference, kwargs.get("subfolder"), **hub)
            if location == reference:
                loaded.load_clip_weights(location, **other_repo_options(hub))
            else:  # the copy that travelled with the model (from a repo: never a pickle), referenced from now on,
                loaded.load_clip_weights(location, use_safetensors=True)  # so a re-save / re-push carries it on
                loaded.config.clip_model_name_or_path = local_reference(location)
        return model

    def load_clip_weights(self, clip_name_or_path: str | os.PathLike, **kwargs: Any) -> None:
        """Copy the weights of a ``CLIPModel`` checkpoint into the wrapped CLIP (same architecture required)."""
        clip = self.clip_model()
        try:
            source = CLIPModel.from_pretrained(str(clip_name_or_path), **kwargs)
        except OSError as err:
            raise OSError(
                f"cannot load the frozen CLIP referenced by this model ({clip_name_or_path}): {err}. Make the "
                "checkpoint reachable (Hub access or a local copy), or point config.clip_model_name_or_path at it."
            ) from err
        result = clip.load_state_dict(source.state_dict(), strict=False)
        if result.missing_keys or result.unexpected_keys:
            raise ValueError(f"{clip_name_or_path} does not fit this model's CLIP: missing {result.missing_keys}, "
                             f"unexpected {result.unexpected_keys}")
        clip.to(device=next(clip.parameters()).device)
        if self.config.freeze_clip:
            clip.requires_grad_(False)


class HmClipModel(HmClipPreTrainedModel):
    """CLIP features, projected and fused; returns the pre-output vector as ``pooler_output``.

    Inputs: ``pixel_values`` and ``input_ids`` / ``attention_mask`` (a CLIP processor's output), or the
    precomputed CLIP vectors ``image_embeds`` / ``text_embeds`` (see :mod:`hm_hf.models.clip.embedding_cache`).

    Example:
        >>> import torch
        >>> from transformers import CLIPConfig
        >>> from hm_hf.models.clip import HmClipConfig, HmClipModel
        >>> tiny = CLIPConfig(text_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        ...                                    num_attention_heads=2, vocab_size=50, max_position_embeddings=16),
        ...                   vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        ...                                      num_attention_heads=2, image_size=16, patch_size=8),
        ...                   projection_dim=8)
        >>> model = HmClipModel(HmClipConfig(clip_config=tiny, fusion="cross", projection_dim=4)).eval()
        >>> out = model(input_ids=torch.tensor([[0, 5, 1]]), pixel_values=torch.randn(1, 3, 16, 16))
        >>> out.pooler_output.shape
        torch.Size([1, 4])
    """

    def __init__(self, config: HmClipConfig):
        if config.references_frozen_clip:  # reloaded from the reference, not from the saved file
            self._keys_to_ignore_on_load_missing = [_CLIP_KEYS]
        super().__init__(config)
        self.gradient_checkpointing = False
        self.clip = CLIPModel(config.clip_config)
        self.image_map = _projection(config.image_feature_dim, config.projection_dim, config.num_projection_layers,
                                     config.projection_dropout)
        self.text_map = _projection(config.text_feature_dim, config.projection_dim, config.num_projection_layers,
                                    config.projection_dropout)
        layers: list[nn.Module] = [nn.Dropout(config.fusion_dropout)]
        dim = config.fused_dim
        for _ in range(config.num_pre_output_layers):
            layers += [nn.Linear(dim, config.pre_output_dim), nn.ReLU(), nn.Dropout(config.pre_output_dropout)]
            dim = config.pre_output_dim
        self.pre_output = nn.Sequential(*layers)
        self.output_dim = dim
        self.post_init()
        if config.freeze_clip:
            self.clip.requires_grad_(False)

    def get_input_embeddings(self) -> nn.Module:
        return self.clip.text_model.embeddings.token_embedding

    def encode_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The CLIP image vector (pooled, or after CLIP's visual projection; see ``config.clip_features``)."""
        pooled = self.clip.vision_model(pixel_values=pixel_values.to(self.clip.dtype)).pooler_output
        return self.clip.visual_projection(pooled) if self.config.clip_features == "projected" else pooled

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The CLIP text vector (pooled at the end-of-text token, or after CLIP's text projection)."""
        pooled = self.clip.text_model(input_ids=input_ids, attention_mask=attention_mask).pooler_output
        return self.clip.text_projection(pooled) if self.config.clip_features == "projected" else pooled

    def fuse(self, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """Fuse the projected vectors as ``config.fusion`` says."""
        if self.config.normalize:
            image, text = F.normalize(image, p=2, dim=-1), F.normalize(text, p=2, dim=-1)
        if self.config.fusion == "concat":
            return torch.cat([image, text], dim=-1)
        if self.config.fusion == "align":
            return image * text
        return torch.bmm(image.unsqueeze(2), text.unsqueeze(1)).flatten(1)  # feature interaction matrix

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        image_embeds: torch.Tensor | None = None,
        text_embeds: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
    ) -> BaseModelOutputWithPooling:
        """``image_embeds`` / ``text_embeds`` (precomputed CLIP vectors) replace ``pixel_values`` / ``input_ids``.

        ``token_type_ids`` (the shared collator's) is ignored: CLIP has no segment embeddings.
        """
        del token_type_ids
        if inputs_embeds is not None:
            raise ValueError("the CLIP model reads `input_ids` (its text encoder pools at the end-of-text token), "
                             "not `inputs_embeds`")
        if image_embeds is None:
            if pixel_values is None:
                raise ValueError("the CLIP model needs `pixel_values` (a CLIP image processor's) or `image_embeds`")
            image_embeds = self.encode_image(pixel_values)
        if text_embeds is None:
            if input_ids is None:
                raise ValueError("the CLIP model needs `input_ids` (a CLIP tokenizer's) or `text_embeds`")
            text_embeds = self.encode_text(input_ids, attention_mask)
        dtype = next(self.image_map.parameters()).dtype
        fused = self.fuse(self.image_map(image_embeds.to(dtype)), self.text_map(text_embeds.to(dtype)))
        return BaseModelOutputWithPooling(pooler_output=self.pre_output(fused))


class HmClipForHatefulMemes(HmClipPreTrainedModel):
    """Hate-CLIPper: :class:`HmClipModel` + ``Linear(num_labels)``; cross-entropy on logits, -100 ignored
    (or the multi-label loss of `hm_hf.models.heads`, by ``problem_type``).

    Build it from a CLIP checkpoint with :meth:`from_clip_pretrained`; a saved model loads with
    ``AutoModelForSequenceClassification.from_pretrained(folder)`` (the frozen CLIP comes from its reference).

    Example:
        >>> model = HmClipForHatefulMemes.from_clip_pretrained(  # doctest: +SKIP
        ...     "openai/clip-vit-large-patch14", fusion="cross", projection_dim=1024, num_pre_output_layers=0)
        >>> processor = CLIPProcessor.from_pretrained("openai/clip-vit-large-patch14")  # doctest: +SKIP
        >>> batch = processor(text=["a meme"], images=[image], return_tensors="pt", padding=True)  # doctest: +SKIP
        >>> model(**batch).logits.softmax(-1)[:, 1]  # probability of hateful  # doctest: +SKIP
    """

    def __init__(self, config: HmClipConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.hm_clip = HmClipModel(config)
        self.classifier = nn.Linear(self.hm_clip.output_dim, config.num_labels)
        self.post_init()

    @classmethod
    def from_clip_pretrained(cls, clip_name_or_path: str | os.PathLike, **config_overrides: Any):
        """The model with its CLIP encoders loaded from a ``CLIPModel`` checkpoint (the rest randomly initialised).

        The checkpoint is recorded as ``config.clip_model_name_or_path`` (a local folder by its absolute path),
        so with ``freeze_clip=True`` saved models reference it instead of copying it.
        """
        if "clip_config" in config_overrides:
            raise ValueError("clip_config cannot be overridden when the CLIP weights come from a checkpoint "
                             f"({clip_name_or_path}); override the hm_clip fields only")
        clip = CLIPModel.from_pretrained(str(clip_name_or_path))
        config = cls.config_class(clip_config=clip.config.to_dict(),
                                  clip_model_name_or_path=local_reference(clip_name_or_path), **config_overrides)
        model = cls(config)
        model.clip_model().load_state_dict(clip.state_dict())
        if config.freeze_clip:
            model.clip_model().requires_grad_(False)
        return model

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        image_embeds: torch.Tensor | None = None,
        text_embeds: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> SequenceClassifierOutput | tuple:
        """Inputs as :meth:`HmClipModel.forward`; ``labels`` (B,) with -100 for unlabelled rows."""
        refuse_output_attentions(output_attentions)
        if output_hidden_states:
            raise ValueError("output_hidden_states=True is not supported by the CLIP model")
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        pooled = self.hm_clip(input_ids, attention_mask, pixel_values, image_embeds, text_embeds, token_type_ids,
                              inputs_embeds).pooler_output
        return classification_output(self.classifier(pooled), labels, self.num_labels, return_dict,
                                     problem_type=self.config.problem_type)
