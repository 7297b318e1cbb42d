"""hm_hf's RGCL model: retrieval-guided contrastive learning (Mei et al., ACL 2024) on frozen CLIP features.

The network is the Hate-CLIPper one of `hm_hf.models.clip` (reused, not copied: CLIP encoders, or the
cached CLIP vectors, the image / text maps, the fusion and the pre-output MLP); its embedding ``g`` is
the last pre-output ``Linear``'s output, and the logistic head reads ReLU + dropout of it:

image / text -> CLIP -> maps -> fusion -> MLP -> g --ReLU, dropout--> classifier -> head logits
                                                 \\--> retrieval index (kNN vote) -> kNN probability

Training (``model.train()``, labels given, an index attached) adds the RGCL contrastive loss on ``g``
against the index of the training set's embeddings (`hm_hf.training.rgcl` refreshes it every epoch): the
pseudo-gold positive and hard negatives are retrieved from it (their vectors are constants; the gradient
flows through the batch's own ``g``), the in-batch negatives come from the batch. At inference the
``logits`` follow ``config.decision_rule``: the head, the kNN vote of the index, or the mean of both
probabilities, so evaluation, calibration, the decision policy and the pipeline need nothing new.

The index (``model.retrieval_index``, a `hm_hf.retrieval.RetrievalIndex`) is saved beside the weights by
``save_pretrained`` and read back by ``from_pretrained`` (a local folder or a Hub repo).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F
from transformers.modeling_outputs import BaseModelOutputWithPooling, SequenceClassifierOutput

from hm_hf.retrieval.index import (INDEX_FILE, REBUILD_HINT, IndexError_, RetrievalIndex, knn_probability,
                                  probability_to_logits, read_index_settings)

from ..clip.modeling_clip import HmClipForHatefulMemes, HmClipModel, HmClipPreTrainedModel
from ..heads import classification_loss, refuse_output_attentions
from .configuration_rgcl import HmRgclConfig

__all__ = ["HmRgclForHatefulMemes", "HmRgclModel", "RgclOutput", "load_retrieval_index", "rgcl_contrastive_loss",
           "rgcl_model"]

logger = logging.getLogger(__name__)


@dataclass
class RgclOutput(SequenceClassifierOutput):
    """`SequenceClassifierOutput` plus, with ``return_neighbours=True``, how the score was made: the head's
    logits, the kNN probability and the neighbours (ids, labels, cosine similarities; -1 where missing)."""

    head_logits: torch.Tensor | None = None
    knn_probability: torch.Tensor | None = None
    embeddings: torch.Tensor | None = None
    neighbour_ids: torch.Tensor | None = None
    neighbour_labels: torch.Tensor | None = None
    neighbour_scores: torch.Tensor | None = None


def _init_new_linear(model, module, fallback) -> None:
    """PyTorch's own ``nn.Linear`` initialisation for the layers RGCL adds (as the paper's code builds them),
    transformers' for the rest (CLIP's). With transformers' N(0, 0.02) the embedding ``g`` starts with a norm
    of about 1e-3 after two layers, and the cosine losses' gradients (which scale as 1 / |g|) then swamp the
    cross-entropy's: measured on the tiny synthetic recipe, the head never left chance."""
    if isinstance(module, nn.Linear) and not any(module is m for m in model.clip_model().modules()):
        module.reset_parameters()
    else:
        fallback(module)


class HmRgclModel(HmClipModel):
    """The CLIP network of `HmClipModel`; ``pooler_output`` is RGCL's embedding ``g`` (see the module doc)."""

    config_class = HmRgclConfig
    base_model_prefix = "hm_rgcl"

    def _init_weights(self, module):
        _init_new_linear(self, module, super()._init_weights)

    def _pre_output_parts(self) -> tuple[list[nn.Module], list[nn.Module]]:
        """The pre-output MLP's layers split at ``g``: (up to and with the last ``Linear``, its ReLU + dropout).

        Looked up by name, not by slicing ``pre_output``: trained beside peft adapters it is wrapped in peft's
        ``ModulesToSaveWrapper``, which cannot be sliced but hands attribute lookups to the copy it runs now."""
        layers = [getattr(self.pre_output, str(i)) for i in range(1 + 3 * self.config.num_pre_output_layers)]
        split = len(layers) - 2 if self.config.num_pre_output_layers else len(layers)
        return layers[:split], layers[split:]

    def head_input(self, embedding: torch.Tensor) -> torch.Tensor:
        """What the classifier reads: the last pre-output layer's ReLU + dropout of ``g``."""
        for layer in self._pre_output_parts()[1]:
            embedding = layer(embedding)
        return embedding

    def forward(self, input_ids=None, attention_mask=None, pixel_values=None, image_embeds=None, text_embeds=None,
                token_type_ids=None, inputs_embeds=None) -> BaseModelOutputWithPooling:
        """Inputs as `HmClipModel.forward`; returns ``g`` as ``pooler_output``."""
        del token_type_ids
        if inputs_embeds is not None:
            raise ValueError("the RGCL model reads `input_ids` or `text_embeds`, not `inputs_embeds`")
        if image_embeds is None:
            if pixel_values is None:
                raise ValueError("the RGCL model needs `pixel_values` or `image_embeds`")
            image_embeds = self.encode_image(pixel_values)
        if text_embeds is None:
            if input_ids is None:
                raise ValueError("the RGCL model needs `input_ids` or `text_embeds`")
            text_embeds = self.encode_text(input_ids, attention_mask)
        dtype = next(self.image_map.parameters()).dtype
        embedding = self.fuse(self.image_map(image_embeds.to(dtype)), self.text_map(text_embeds.to(dtype)))
        for layer in self._pre_output_parts()[0]:
            embedding = layer(embedding)
        return BaseModelOutputWithPooling(pooler_output=embedding)


def rgcl_contrastive_loss(embeddings: torch.Tensor, labels: torch.Tensor, index: RetrievalIndex,
                          config: HmRgclConfig, meme_ids: torch.Tensor | None = None) -> torch.Tensor:
    """The RGCL loss of a batch against the training set's `index` (rows labelled -100 are left out).

    For each meme: the pseudo-gold positives (most similar same-label index rows, its own id excluded),
    the hard negatives (most similar opposite-label rows) and, with ``in_batch_negatives``, the batch's
    opposite-label memes; cosine similarities. ``triplet`` and ``infonce`` as `HmRgclConfig` describes.
    A meme with no retrievable positive contributes nothing; a batch with none gives 0.
    """
    labels = labels.view(-1).long().to(embeddings.device)
    labelled = labels != -100
    g = F.normalize(embeddings.float(), dim=-1)
    memory = index.vectors.to(g.device)
    memory_labels = index.label_tensor.to(g.device)
    same = memory_labels.view(1, -1) == labels.view(-1, 1)
    ids = meme_ids.to(g.device) if meme_ids is not None else None

    def retrieved(mask: torch.Tensor, k: int):
        _, rows = index.search(g.detach(), k, exclude_ids=ids, mask=mask)
        valid = rows >= 0
        vectors = memory[rows.clamp(min=0)]  # (B, k, d), constants
        return (g.unsqueeze(1) * vectors).sum(-1), valid

    pos, pos_valid = retrieved(same, config.num_pseudo_gold)
    hard, hard_valid = retrieved(~same, config.num_hard_negatives)
    batch_sim = g @ g.T
    opposite = (labels.view(-1, 1) != labels.view(1, -1)) & labelled.view(1, -1) & labelled.view(-1, 1)
    if not config.in_batch_negatives:
        opposite = torch.zeros_like(opposite)
    rows = labelled & pos_valid.any(-1)

    if config.contrastive_loss == "triplet":
        def masked_mean(values, mask):
            mask = mask.float()
            return (values * mask).sum(-1) / mask.sum(-1).clamp(min=1)

        per_row = F.relu(masked_mean(batch_sim, opposite) + masked_mean(hard, hard_valid)
                         - masked_mean(pos, pos_valid) + config.triplet_margin)
    else:  # infonce: -log(sum_pos e^{s+/t} / (sum_pos e^{s+/t} + sum_neg e^{s-/t}))
        t = config.temperature
        neg_inf = torch.finfo(torch.float32).min
        pos_logits = (pos / t).masked_fill(~pos_valid, neg_inf)
        all_logits = torch.cat([pos_logits, (hard / t).masked_fill(~hard_valid, neg_inf),
                                (batch_sim / t).masked_fill(~opposite, neg_inf)], dim=-1)
        per_row = torch.logsumexp(all_logits, -1) - torch.logsumexp(pos_logits, -1)
    weights = rows.float()
    return (per_row * weights).sum() / weights.sum().clamp(min=1)


def load_retrieval_index(path, dim: int | None = None, **kwargs) -> RetrievalIndex | None:
    """The index saved beside a model or its adapters (a local folder or a Hub repo), or None when it has none.
    `dim`: the model's embedding size, which the index must have; `kwargs`: ``from_pretrained``'s Hub options
    (``subfolder``, ``revision``, ``cache_dir``, ``token``, ...)."""
    local = Path(str(path)).expanduser()
    subfolder = kwargs.get("subfolder") or ""
    if local.is_dir():
        folder = local / subfolder
        return RetrievalIndex.load(folder, dim=dim) if RetrievalIndex.files_in(folder) else None
    from transformers.utils import cached_file

    from hm_hf.hub import hub_options

    options = {**hub_options(kwargs), **({"subfolder": subfolder} if subfolder else {})}
    json_file = cached_file(str(path), INDEX_FILE, _raise_exceptions_for_missing_entries=False, **options)
    if json_file is None:
        return None
    name = read_index_settings(json_file).get("vectors_file")
    if not isinstance(name, str) or not name:
        raise IndexError_(f"{json_file}: no vectors_file named; the retrieval index is damaged: {REBUILD_HINT}")
    vectors_file = cached_file(str(path), name, **options)
    return RetrievalIndex.load(None, json_path=json_file, vectors_path=vectors_file, dim=dim)


class HmRgclForHatefulMemes(HmClipForHatefulMemes):
    """RGCL: :class:`HmRgclModel` + a logistic head + a retrieval index; loss ``(1 - w) CE + w RGCL``.

    Build it from a CLIP checkpoint with ``from_clip_pretrained`` (as the CLIP model); a saved folder loads
    with ``AutoModelForSequenceClassification.from_pretrained(folder)``, its index with it.

    Example:
        >>> model = HmRgclForHatefulMemes.from_clip_pretrained("openai/clip-vit-large-patch14-336")  # doctest: +SKIP
        >>> model.retrieval_index = index  # a RetrievalIndex of training-set embeddings  # doctest: +SKIP
        >>> out = model.eval()(**batch, return_neighbours=True)  # doctest: +SKIP
        >>> out.neighbour_ids, out.neighbour_scores  # doctest: +SKIP
    """

    config_class = HmRgclConfig
    base_model_prefix = "hm_rgcl"

    def _init_weights(self, module):
        _init_new_linear(self, module, super()._init_weights)

    def __init__(self, config: HmRgclConfig):
        if config.num_labels != 2 or config.problem_type == "multi_label_classification":
            raise ValueError("the RGCL model is a binary classifier (num_labels=2, single label): its index "
                             "holds labels 0 (benign) / 1 (hateful)")
        HmClipPreTrainedModel.__init__(self, config)  # (not HmClipForHatefulMemes': its base model differs)
        self.num_labels = config.num_labels
        self.hm_rgcl = HmRgclModel(config)
        self.classifier = nn.Linear(self.hm_rgcl.output_dim, config.num_labels)
        self.retrieval_index: RetrievalIndex | None = None
        self.post_init()

    def decision_rule(self) -> str:
        """The rule the logits follow now: the config's, or ``"head"`` while there is no (non-empty) index."""
        index = self.retrieval_index
        return self.config.decision_rule if index is not None and len(index) else "head"

    def save_pretrained(self, save_directory, *args, is_main_process: bool = True, **kwargs):
        """As ``PreTrainedModel.save_pretrained``; the retrieval index is written beside the weights."""
        result = super().save_pretrained(save_directory, *args, is_main_process=is_main_process, **kwargs)
        if is_main_process and self.retrieval_index is not None:
            self.retrieval_index.save(save_directory)
        return result

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """As ``PreTrainedModel.from_pretrained``; the index saved beside the model is attached."""
        model = super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
        loaded = model[0] if isinstance(model, tuple) else model
        loaded.retrieval_index = load_retrieval_index(pretrained_model_name_or_path, loaded.config.embedding_dim,
                                                      **kwargs)
        return model

    def describe(self, output: RgclOutput, row: int) -> dict:
        """How row `row` of a ``return_neighbours=True`` output was scored, for people: the decision rule, the
        head's and the kNN vote's (uncalibrated) probabilities, and the neighbours (id, label, similarity)."""
        result = {"decision_rule": self.decision_rule(),
                  "head_probability": float(output.head_logits[row].detach().float().softmax(-1)[1])}
        if output.knn_probability is not None:
            result["knn_probability"] = float(output.knn_probability[row])
            result["neighbours"] = [
                {"id": int(i), "label": int(label), "similarity": round(float(s), 4)}
                for i, label, s in zip(output.neighbour_ids[row].tolist(), output.neighbour_labels[row].tolist(),
                                       output.neighbour_scores[row].tolist()) if i >= 0
            ]
        return result

    @torch.no_grad()
    def embed(self, **inputs) -> torch.Tensor:
        """The embedding ``g`` of a batch (eval mode is the caller's choice), float32 on the CPU."""
        keys = ("input_ids", "attention_mask", "pixel_values", "image_embeds", "text_embeds")
        return self.hm_rgcl(**{k: inputs[k] for k in keys if k in inputs}).pooler_output.float().cpu()

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
        meme_ids: torch.LongTensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        return_neighbours: bool = False,
    ) -> RgclOutput | tuple:
        """Inputs as `HmClipForHatefulMemes.forward`; ``meme_ids`` (B,): the rows' ids, so that a meme is never
        its own neighbour (training, and scoring the index's own memes); ``return_neighbours``: also return
        the head logits, the kNN probability and the neighbours."""
        refuse_output_attentions(output_attentions)
        if output_hidden_states:
            raise ValueError("output_hidden_states=True is not supported by the RGCL model")
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        config = self.config
        g = self.hm_rgcl(input_ids, attention_mask, pixel_values, image_embeds, text_embeds, token_type_ids,
                         inputs_embeds).pooler_output
        head_logits = self.classifier(self.hm_rgcl.head_input(g))
        index = self.retrieval_index
        has_index = index is not None and len(index) > 0
        loss = None
        if labels is not None:
            loss = classification_loss(head_logits, labels, self.num_labels)
            if self.training and has_index and config.uses_contrastive_loss:
                w = config.contrastive_weight
                loss = (1 - w) * loss + w * rgcl_contrastive_loss(g, labels, index, config, meme_ids)
        logits, p_knn, neighbours = head_logits, None, None
        rule = self.decision_rule()
        if not self.training and has_index and (rule != "head" or return_neighbours):
            neighbours = index.neighbours(g.detach().float(), config.knn_k, exclude_ids=meme_ids)
            p_knn = knn_probability(neighbours["scores"], neighbours["labels"], config.knn_vote)
            if rule == "knn":
                logits = probability_to_logits(p_knn).to(head_logits.dtype)
            elif rule == "combined":
                p_head = head_logits.float().softmax(-1)[:, 1]
                mixed = (1 - config.combine_weight) * p_head + config.combine_weight * p_knn
                logits = probability_to_logits(mixed).to(head_logits.dtype)
        extra = {}
        if return_neighbours:
            extra = {"head_logits": head_logits, "knn_probability": p_knn, "embeddings": g}
            if neighbours is not None:
                extra.update(neighbour_ids=neighbours["ids"], neighbour_labels=neighbours["labels"],
                             neighbour_scores=neighbours["scores"])
        if not return_dict:
            out = (logits,) + tuple(v for v in extra.values() if v is not None)
            return ((loss,) + out) if loss is not None else out
        return RgclOutput(loss=loss, logits=logits, **extra)


def rgcl_model(model) -> HmRgclForHatefulMemes:
    """The `HmRgclForHatefulMemes` inside `model` (itself, or wrapped by peft / accelerate)."""
    for module in model.modules():
        if isinstance(module, HmRgclForHatefulMemes):
            return module
    raise TypeError(f"{type(model).__name__} is not an hm_hf RGCL model")
