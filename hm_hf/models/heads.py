"""What every hm_hf classifier ends with: the classification head of the BERT-style models, the loss, the
output, and the refusal of ``output_attentions``.

Shared by Concat, VisualBERT, UNITER, ViLBERT and CLIP, so that every model computes its loss the same way
(over the labelled rows, compiled without a host sync) and returns transformers' `SequenceClassifierOutput`
or its tuple. The config's `problem_type` selects the loss, as in transformers: cross-entropy over
`num_labels` classes by default, or, with ``problem_type="multi_label_classification"``, binary
cross-entropy with logits on each of `num_labels` independent labels (the fine-grained Hateful Memes tasks:
a meme's protected categories or attack types, a multi-hot label vector). The head itself is the same
layer either way (`num_labels` outputs); only the loss and how the outputs are read (softmax or sigmoid)
differ.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from transformers.activations import ACT2FN
from transformers.modeling_outputs import SequenceClassifierOutput

from hm_hf.metrics import MULTI_LABEL

__all__ = [
    "BertClassificationHead",
    "BertPredictionHeadTransform",
    "classification_loss",
    "classification_output",
    "multi_label_loss",
    "refuse_output_attentions",
]


class BertPredictionHeadTransform(nn.Module):
    """dense + activation + LayerNorm (BERT's head transform, the first half of MMF's VisualBERT classifier)."""

    def __init__(self, hidden_size: int, hidden_act: str = "gelu", layer_norm_eps: float = 1e-12):
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.transform_act_fn = ACT2FN[hidden_act] if isinstance(hidden_act, str) else hidden_act
        self.LayerNorm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.transform_act_fn(self.dense(hidden_states)))


class BertClassificationHead(nn.Sequential):
    """Classifier on the pooled output, with MMF's key naming (``classifier.0.dense``, ``classifier.1``).

    ``transform=True``: dropout-free ``[BertPredictionHeadTransform, Linear]`` as MMF's VisualBERT
    (593,666 parameters at hidden 768, 2 labels: the "head only" count of the PE paper);
    ``transform=False``: a single ``Linear`` (``classifier.0``), as the seed's UNITER.
    """

    def __init__(self, hidden_size: int, num_labels: int, transform: bool = True, hidden_act: str = "gelu",
                 layer_norm_eps: float = 1e-12):
        layers: list[nn.Module] = []
        if transform:
            layers.append(BertPredictionHeadTransform(hidden_size, hidden_act, layer_norm_eps))
        layers.append(nn.Linear(hidden_size, num_labels))
        super().__init__(*layers)


def classification_output(logits: torch.Tensor, labels: torch.Tensor | None, num_labels: int, return_dict: bool,
                          hidden_states=None, problem_type: str | None = None):
    """The `<Name>ForHatefulMemes` heads' common ending: the loss, then a `SequenceClassifierOutput` or,
    with `return_dict=False`, transformers' tuple `(loss?, logits, hidden_states?)`."""
    loss = classification_loss(logits, labels, num_labels, problem_type)
    if not return_dict:
        out = (logits,) + ((hidden_states,) if hidden_states is not None else ())
        return ((loss,) + out) if loss is not None else out
    return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=hidden_states)


def classification_loss(logits: torch.Tensor, labels: torch.Tensor | None, num_labels: int,
                        problem_type: str | None = None) -> torch.Tensor | None:
    """Mean cross-entropy on logits over the labelled rows; rows labelled -100 are ignored, and a batch with
    no labelled row gives 0 (not NaN). ``problem_type="multi_label_classification"``: `multi_label_loss`.

    Written without a data-dependent branch (sum / count), so it costs no host sync and compiles into one
    graph. (The seed applied cross-entropy to softmax outputs and crashed on unlabelled splits.)
    """
    if labels is None:
        return None
    if problem_type == MULTI_LABEL:
        return multi_label_loss(logits, labels, num_labels)
    labels = labels.view(-1).long().to(logits.device)
    total = F.cross_entropy(logits.view(-1, num_labels).float(), labels, ignore_index=-100, reduction="sum")
    return total / (labels != -100).sum().clamp(min=1)


def multi_label_loss(logits: torch.Tensor, labels: torch.Tensor, num_labels: int) -> torch.Tensor:
    """Binary cross-entropy with logits, averaged over the labels of the labelled rows.

    `labels` (B, num_labels) is multi-hot (0 / 1, as floats or ints); an unlabelled row is all -100 (the
    collator's marking) and is left out. A batch without a labelled row gives 0. No data-dependent branch,
    as `classification_loss`.
    """
    logits = logits.view(-1, num_labels).float()
    labels = labels.view(-1, num_labels).to(device=logits.device, dtype=torch.float32)
    labelled = (labels != -100).all(dim=-1, keepdim=True).float()
    targets = labels.clamp(0.0, 1.0) * labelled  # -100 rows become 0 targets, then weighted out
    total = (F.binary_cross_entropy_with_logits(logits, targets, reduction="none") * labelled).sum()
    return total / (labelled.sum() * num_labels).clamp(min=1)


def refuse_output_attentions(output_attentions: bool | None) -> None:
    """hm_hf models accept ``output_attentions`` (peft's sequence-classification wrapper always passes it) but
    do not return attention weights (SDPA never materialises them)."""
    if output_attentions:
        raise ValueError("output_attentions=True is not supported: hm_hf models do not return attention weights")
