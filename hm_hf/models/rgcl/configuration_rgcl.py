"""Configuration of hm_hf's RGCL model (retrieval-guided contrastive learning on frozen CLIP features)."""

from __future__ import annotations

from hm_hf.models.auto import register_architecture
from hm_hf.models.clip.configuration_clip import HmClipConfig

__all__ = ["CONTRASTIVE_LOSSES", "DECISION_RULES", "HmRgclConfig"]

CONTRASTIVE_LOSSES = ("triplet", "infonce", "none")
DECISION_RULES = ("head", "knn", "combined")


class HmRgclConfig(HmClipConfig):
    r"""Configuration for :class:`HmRgclForHatefulMemes`: every :class:`HmClipConfig` field (the CLIP
    encoders, the Hate-CLIPper projections and fusion, the pre-output MLP), plus RGCL's.

    The meme's embedding ``g`` is the output of the last pre-output ``Linear`` (before its ReLU and
    dropout, as in the paper's code); the logistic head reads ReLU + dropout of it. Training adds a
    contrastive loss on ``g`` (Mei et al., ACL 2024):

    * positive: the pseudo-gold positive, the most similar *same-label* training meme (``num_pseudo_gold``);
    * negatives: the hard negatives, the most similar *opposite-label* training memes (``num_hard_negatives``),
      and the opposite-label memes of the batch (``in_batch_negatives``),

    retrieved from the training set's embeddings, refreshed once per epoch (`hm_hf.training.rgcl`).

    Args:
        contrastive_loss: ``"triplet"``: ``relu(mean sim(g, in-batch neg) + mean sim(g, hard neg) - sim(g, g+)
            + triplet_margin)`` (the official code's ``--loss triplet``, its released run); ``"infonce"``: the
            paper's equation (arXiv 2311.08110 v1, Eq. 6), ``-log(e^{s+/t} / (e^{s+/t} + sum_neg e^{s-/t}))`` with
            the negatives summed; ``"none"``: cross-entropy only (the no-retrieval ablation).
        contrastive_weight: the loss is ``(1 - w) * cross-entropy + w * contrastive`` (the code's
            ``ce_weight`` 0.5 gives w = 0.5: the paper's 1:1 sum, Eq. 7, halved).
        temperature: ``t`` of the InfoNCE form (cosine similarities). The paper's Eq. 6 has none and the code no
            such option, so 1.0 (the default) is the paper's.
        triplet_margin: the triplet form's margin (0.1 in the code).
        num_hard_negatives / num_pseudo_gold: retrieved per meme (1 and 1 in the paper's run).
        in_batch_negatives: also contrast against the batch's opposite-label memes.
        decision_rule: what ``logits`` are at inference: ``"head"`` (the logistic classifier), ``"knn"``
            (the retrieval-based vote over the index), ``"combined"`` (the mean of the two probabilities).
            Without an index, ``"head"`` is used.
        knn_k: neighbours that vote (10 in the paper's settings table, ``--topk 20`` in the released run).
        knn_vote: ``"signed_rank"`` (the official code's "arithmetic" vote, its released run), ``"signed_mean"``
            (its default "mean"), or a share of hateful neighbours weighted by ``"similarity"``, ``"rank"`` or
            equally (``"mean"``); the formulas are in `hm_hf.retrieval.knn_probability`.
        combine_weight: weight of the kNN probability in ``"combined"`` (0.5: the mean).

    Example:
        >>> from transformers import CLIPConfig
        >>> from hm_hf.models.rgcl import HmRgclConfig
        >>> config = HmRgclConfig(projection_dim=8, pre_output_dim=16, num_pre_output_layers=2,
        ...                       clip_config=CLIPConfig(text_config={"hidden_size": 32}, projection_dim=8))
        >>> config.embedding_dim, config.decision_rule
        (16, 'combined')
    """

    model_type = "hm_rgcl"

    fusion: str = "align"
    num_pre_output_layers: int = 3
    projection_dropout: float = 0.2
    fusion_dropout: float = 0.4
    pre_output_dropout: float = 0.1
    contrastive_loss: str = "triplet"
    contrastive_weight: float = 0.5
    temperature: float = 1.0
    triplet_margin: float = 0.1
    num_hard_negatives: int = 1
    num_pseudo_gold: int = 1
    in_batch_negatives: bool = True
    decision_rule: str = "combined"
    knn_k: int = 20
    knn_vote: str = "similarity"
    combine_weight: float = 0.5

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.contrastive_loss not in CONTRASTIVE_LOSSES:
            raise ValueError(f"contrastive_loss must be one of {CONTRASTIVE_LOSSES}, got {self.contrastive_loss!r}")
        if self.decision_rule not in DECISION_RULES:
            raise ValueError(f"decision_rule must be one of {DECISION_RULES}, got {self.decision_rule!r}")
        from hm_hf.retrieval.index import KNN_VOTES

        if self.knn_vote not in KNN_VOTES:
            raise ValueError(f"knn_vote must be one of {KNN_VOTES}, got {self.knn_vote!r}")
        if not 0.0 <= self.contrastive_weight <= 1.0 or not 0.0 <= self.combine_weight <= 1.0:
            raise ValueError("contrastive_weight and combine_weight must lie in [0, 1]")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        for name in ("knn_k", "num_hard_negatives", "num_pseudo_gold"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    @property
    def embedding_dim(self) -> int:
        """Size of the embedding ``g`` that is indexed and contrasted."""
        return self.pre_output_dim if self.num_pre_output_layers else self.fused_dim

    @property
    def uses_contrastive_loss(self) -> bool:
        return self.contrastive_loss != "none" and self.contrastive_weight > 0


register_architecture(HmRgclConfig)  # with the Auto classes: see hm_hf.models.auto
