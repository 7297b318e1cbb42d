"""The model card written at the end of training: YAML header, results, decision policy, figures, intended use.

Figures (ROC curve, confusion matrix at the chosen threshold, reliability diagram) are PNGs next to the
card, because people would rather see them than read them; the card links them with relative paths so
they render on the Hub and locally. The decision-policy section says how the pipeline decides (the
temperature, the threshold and the rule that chose it, on which split), what calibration changed and the
operating points on every labelled split; the protected-category section gives the miss (and, for a
fine-grained model, false-alarm) rate per category when fine-grained labels were available.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np

from hm_hf.metrics import MULTI_LABEL

logger = logging.getLogger(__name__)

DATASET_IDS = {"hmd": "facebook/hateful_memes", "mmhs": "MMHS150K", "hmd_fine_grained": "facebook/hateful_memes"}
DATASET_NAMES = {"hmd": "Hateful Memes", "mmhs": "MMHS150K",
                 "hmd_fine_grained": "Hateful Memes with the WOAH 2021 fine-grained labels"}
FORMAT_NAMES = {"hmd": "Hateful-Memes", "mmhs": "MMHS150K", "hmd_fine_grained": "fine-grained Hateful-Memes"}
RELIABILITY_PREFIX = "reliability_diagram_"
#: hm_hf's metric names -> the Hub's metric ids (https://hf.co/metrics), as model-index `type` wants them
HUB_METRIC_IDS = {"auroc": "roc_auc", "roc_auc_micro": "roc_auc", "f1_micro": "f1"}
SYNTHETIC_TAG = "synthetic-data"  # in the card's tags of every model trained on hm_hf.synthetic

CONTENT_WARNING = (
    "> **Content warning.** This model was built to detect hateful content; its training data and its "
    "inputs contain hateful images and text."
)
SYNTHETIC_WARNING = (
    "> **Trained on synthetic data.** This model never saw a real meme: it was trained on hm_hf's synthetic "
    "data set (coloured shapes and made-up words in the {format} format), so its output on real memes means "
    "nothing. It exists to test the training, inference and demo code end to end."
)


_SECRET_FLAG = re.compile(r"(--hub_token(?:=|\s+))(?:'[^']*'|\"[^\"]*\"|\S+)")
_SECRET_KEY = re.compile(r"^(\s*hub_token\s*:\s*)\S.*$", re.M)
_TOKEN = re.compile(r"hf_[A-Za-z0-9]{20,}")


def redact(text: str | None) -> str | None:
    """`text` (the training command, the recipe) with every access token masked: the card is pushed with the
    model, and ``--hub_token`` / ``hub_token:`` take one."""
    if text is None:
        return None
    text = _SECRET_KEY.sub(r"\1***", _SECRET_FLAG.sub(r"\1***", text))
    return _TOKEN.sub("hf_***", text)


def dataset_name(dataset: str, synthetic: bool = False) -> str:
    """The data set a model was trained on, as the card and the Space name it."""
    if synthetic:
        return f"synthetic {FORMAT_NAMES.get(dataset, dataset)}-format data (hm_hf.synthetic)"
    return DATASET_NAMES.get(dataset, dataset)


def save_figures(probabilities: np.ndarray, labels: np.ndarray, output_dir, split: str, threshold: float = 0.5,
                 rule: str | None = None) -> list[str]:
    """ROC curve and confusion matrix (flagging probability >= `threshold`, chosen by `rule`) PNGs for a binary
    split; returns the file names written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay, RocCurveDisplay

    output_dir = Path(output_dir)
    written = []
    if len(set(labels.tolist())) == 2:
        fig, ax = plt.subplots(figsize=(4.5, 4.5))
        RocCurveDisplay.from_predictions(labels, probabilities, ax=ax, name=split)
        ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1)
        ax.set_title(f"ROC curve ({split})")
        fig.tight_layout()
        fig.savefig(output_dir / f"roc_curve_{split}.png", dpi=100)
        plt.close(fig)
        written.append(f"roc_curve_{split}.png")
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ConfusionMatrixDisplay.from_predictions(
        labels, (probabilities >= threshold).astype(int), labels=[0, 1], display_labels=["not hateful", "hateful"],
        ax=ax, colorbar=False
    )
    chosen = f", {rule}" if rule else ""
    ax.set_title(f"Confusion matrix ({split})\nthreshold {threshold:.3g}{chosen}")
    fig.tight_layout()
    fig.savefig(output_dir / f"confusion_matrix_{split}.png", dpi=100)
    plt.close(fig)
    written.append(f"confusion_matrix_{split}.png")
    return written


def hub_base_model(*names: str | None) -> str | None:
    """The first of `names` (the checkpoints a run started from) that is a Hub model id, for the card's
    ``base_model``, which the Hub accepts only as a model id: a snapshot in the Hub cache
    (``.../models--openai--clip-vit-large-patch14-336/snapshots/<commit>``, where an offline run finds it) gives
    its repo's id; any other local folder (``data/tiny_clip``, a converted UNITER) is skipped, as is anything
    not of the id's form."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    for name in names:
        if name and Path(name).expanduser().exists():
            name = _hub_cache_repo_id(Path(name).expanduser())
        if not name:
            continue
        try:
            validate_repo_id(name)
        except HFValidationError:
            continue
        return name
    return None


def _hub_cache_repo_id(folder: Path) -> str | None:
    """The model id of a snapshot folder of the Hub cache (``models--{owner}--{name}/snapshots/{commit}``), else
    None. The cache spells the id's ``/`` as ``--``, which no id holds itself."""
    folder = folder.resolve()
    if folder.parent.name != "snapshots" or not folder.parent.parent.name.startswith("models--"):
        return None
    parts = folder.parent.parent.name[len("models--"):].split("--")
    return "/".join(parts) if len(parts) in (1, 2) and all(parts) else None


def write_model_card(
    output_dir,
    *,
    model_name: str,
    model_type: str,
    base_model: str | None,
    dataset: str,
    peft_method: str,
    results: dict[str, dict[str, float]],
    figures: list[str],
    trainable: int,
    total: int,
    recipe_text: str | None,
    command: str,
    synthetic: bool = False,
    policy=None,
    problem_type: str | None = None,
    task: str | None = None,
    text_pair: bool = False,
    load_name: str | None = None,
    retrieval_index: dict | None = None,
    label_names: list[str] | None = None,
) -> Path:
    """Write README.md (the model card) into `output_dir` and return its path.

    `results`: the metrics of every labelled split (`hm_hf.training.evaluation`); `policy`: the
    `DecisionPolicy` saved with the model (its section; None for multi-label models); `problem_type`
    "multi_label_classification" with `task` (pc / attack): a fine-grained model, scored by micro ROC-AUC
    and micro-F1. `synthetic`: the training data came from `hm_hf.synthetic` (its folder holds the marker):
    the card names it, links no Hub data set, is tagged `synthetic-data` and says its output on real memes
    means nothing. `text_pair`: the model reads a text pair (MMHS150K: the tweet's text + the image's text),
    which the card's example passes. `load_name`: what the example loads (the Hub id, or the output folder of a
    run that pushes nothing; default `model_name`).
    `retrieval_index` (RGCL models): the index saved beside the model (``size``, ``sources``,
    ``decision_rule``, ``knn_k``, ``knn_vote``, ``contrastive_loss``), described in its own section.
    `label_names`: the classes of a single-label head of more than two (MMHS150K's fine labels), which the card
    names.
    """
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    multi_label = problem_type == MULTI_LABEL
    headline = {"roc_auc_micro": "micro ROC-AUC", "f1_micro": "micro-F1"} if multi_label else \
        {"auroc": "AUROC", "accuracy": "accuracy", "f1": "F1"}

    eval_results = [
        EvalResult(
            task_type="image-text-classification",
            task_name="Hateful meme detection",
            dataset_type=f"hm_hf-synthetic-{dataset}" if synthetic else DATASET_IDS.get(dataset, dataset),
            dataset_name=dataset_name(dataset, synthetic),
            dataset_split=split,
            metric_type=HUB_METRIC_IDS.get(metric, metric),
            metric_name=headline[metric] if multi_label or metric == "auroc" else metric.capitalize(),
            metric_value=float(value),
            metric_args={"average": "micro"} if metric.endswith("_micro") else None,
        )
        for split, metrics in results.items()
        for metric, value in metrics.items()
        if metric in headline and np.isfinite(value)
    ]
    tags = ["hm_hf", "hateful-memes", "multimodal", model_type] + ([peft_method] if peft_method != "none" else [])
    tags += [SYNTHETIC_TAG] if synthetic else []
    data = ModelCardData(
        language="en",
        license="apache-2.0",
        library_name="peft" if peft_method in ("lora", "ia3", "bottleneck") else "transformers",
        base_model=base_model,
        datasets=None if synthetic else [DATASET_IDS.get(dataset, dataset)],
        tags=tags,
        metrics=["roc_auc", "f1"] if multi_label else ["roc_auc", "accuracy", "f1"],
        model_name=model_name,
        eval_results=eval_results or None,
    )
    fitted_on = policy.fitted_on if policy is not None else None
    rows = [[_split_name(split, fitted_on), *(_number(m.get(key)) for key in headline)] for split, m in results.items()]
    table = _table(["split", *headline.values()], rows)
    figure_lines = [_figure(name) for name in figures if not name.startswith(RELIABILITY_PREFIX)]
    scored = (f"Scored as the WOAH 2021 shared task scores its {task} task (micro-averaged over the "
              "labels, a label predicted when its score is > 0.5; `hm_hf.metrics.fine_grained`).\n\n"
              if multi_label else "")
    decisions = _policy_section(policy, results, figures) if policy is not None else ""
    decisions += _index_section(retrieval_index) if retrieval_index else ""
    categories = _category_section(results, multi_label, fitted_on, task)
    if multi_label:
        returns = "Each result holds the predicted `labels` (score > 0.5) and every label's `scores`."
    elif label_names and len(label_names) > 2:  # one class of several: named by the data set's classes
        classes = ", ".join(f"`{name}`" for name in label_names)
        returns = (f"Each result holds the most probable class as `label` and `label_name` (one of {classes}), every "
                   f"class's probability in `scores` (in that order) and the `probability` of hateful (1 - the "
                   f"probability of `{label_names[0]}`).")
    else:
        returns = ("Each result holds the calibrated `probability` of hateful, the `label` at the saved threshold and "
                   "how it was decided (`threshold`, `threshold_rule`, `calibrated`).")
    if text_pair:  # the first text is the post's, the pair the image's own (read by OCR when not given)
        usage = ('pipe("meme.jpg", texts="the tweet\'s text")  # the text on the image is read by OCR\n'
                 'pipe("meme.jpg", texts="the tweet\'s text", text_pairs="the text on the image")\n'
                 '# hm-hf predict --model ... meme.jpg --text "the tweet\'s text" --text-pair "the text on the image"')
    else:
        usage = 'pipe("meme.png")  # or pipe("meme.png", texts="the text on it")'
    warning = SYNTHETIC_WARNING.format(format=FORMAT_NAMES.get(dataset, dataset)) if synthetic else CONTENT_WARNING
    limitations = (
        "Testing hm_hf itself: training, saving, loading, the pipeline and the demo. Not for use on real memes: "
        "the model learnt only which drawn shape and which made-up keyword go together."
        if synthetic else
        """Research on, and assisted moderation of, hateful memes. Not for automated decisions about people
without human review: published models on these benchmarks stay far below human accuracy, are sensitive to
the OCR text and to image content unlike their training data, and inherit the biases of their annotators.
Labels of the Hateful Memes data set follow its authors' definition of hate speech; MMHS150K's labels are
noisy crowd votes."""
    )
    body = f"""
# {model_name}

{warning}

A {model_type} hateful-meme classifier trained with hm_hf on {dataset_name(dataset, synthetic)}
(PEFT method: `{peft_method}`). Trainable parameters: {trainable:,} of {total:,} ({100 * trainable / max(total, 1):.2f}%).

## Results

{scored}{table if rows else "No labelled evaluation split."}

{chr(10).join(figure_lines)}
{decisions}{categories}
## How to use

```python
from hm_hf.pipeline import HatefulMemePipeline

pipe = HatefulMemePipeline.from_pretrained("{load_name or model_name}")  # the model, its processor and its detector
{usage}
```

{returns}

## Training

Command: `{redact(command)}`

Recipe:

```yaml
{(redact(recipe_text) or "(given on the command line)").strip()}
```

## Intended use and limitations

{limitations}
"""
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n{body}")
    path = Path(output_dir) / "README.md"
    card.save(path)
    return path


def _number(value, digits: int = 4) -> str:
    if value is None:
        return "–"
    return "–" if not np.isfinite(value) else f"{value:.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    return "\n".join(lines + ["| " + " | ".join(map(str, row)) + " |" for row in rows])


def _split_name(split: str, fitted_on: str | None) -> str:
    return f"{split} (fitting split)" if split == fitted_on else split


def _figure(name: str) -> str:
    return f"![{name[:-4].replace('_', ' ')}]({name})"


def _policy_section(policy, results: dict, figures: list[str]) -> str:
    """How the pipeline decides, what calibration changed, and the operating points per labelled split."""
    fitted = policy.fitted_on or "no split"
    if policy.threshold is None:
        threshold = "none: the most probable class"
    else:
        threshold = f"{policy.threshold:.4f} (a meme is flagged when its calibrated probability is >= this)"
    rows = [["temperature", f"{policy.temperature:.4f}" + (" (temperature scaling: the NLL minimised on "
                                                          f"{fitted})" if policy.calibrated else " (not fitted)")],
            ["threshold rule", f"`{policy.rule}`"], ["threshold", threshold], ["fitted on", fitted]]
    calibration = [[_split_name(split, policy.fitted_on), *(_number(m.get(f"{name}_{when}"))
                                                            for name in ("ece", "brier", "nll")
                                                            for when in ("before", "after"))]
                   for split, m in results.items()]
    lines = [
        "", "## Decision policy", "",
        "The pipeline (`HatefulMemePipeline`, the Space, `hm-hf predict`) divides the model's logits by the "
        "temperature and flags a meme at the threshold; both are saved beside the model in "
        "`decision_policy.json`.", "",
        _table(["setting", "value"], rows), "",
        f"> The numbers of {fitted}, the split the temperature and the threshold were fitted on, are optimistic; "
        "the other splits show what to expect on new memes.", "",
        "### Calibration", "",
        "Expected calibration error (15 equal-width confidence bins), Brier score and negative log-likelihood, "
        "before and after temperature scaling (AUROC and the ranking do not change):", "",
        _table(["split", "ECE before", "ECE after", "Brier before", "Brier after", "NLL before", "NLL after"],
               calibration), "",
    ]
    lines += [_figure(name) for name in figures if name.startswith(RELIABILITY_PREFIX)]
    if policy.binary:
        points = [[_split_name(split, policy.fitted_on),
                   *(_number(m.get(key)) for key in ("recall_at_fpr_1pct", "recall_at_fpr_5pct",
                                                     "precision_at_recall_90pct", "at_threshold_precision",
                                                     "at_threshold_recall", "at_threshold_f1", "at_threshold_fpr",
                                                     "at_threshold_flag_rate"))]
                  for split, m in results.items()]
        lines += ["", "### Operating points", "",
                  "Recall at a false-positive rate of at most 1% / 5%, precision at a recall of at least 90% (real "
                  "thresholds on each split, no interpolation), and what the chosen threshold does:", "",
                  _table(["split", "recall @ 1% FPR", "recall @ 5% FPR", "precision @ 90% recall",
                          "precision", "recall", "F1", "FPR", "flagged"], points), "",
                  "The confusion matrices above are at the chosen threshold."]
    return "\n".join(lines) + "\n"


TASK_LABELS = {"pc": "protected category", "attack": "attack type"}


def _category_section(results: dict, multi_label: bool, fitted_on: str | None, task: str | None = None) -> str:
    """Miss rate (and false-alarm rate) per protected category / label, per split, when measured."""
    measured = {split: m for split, m in results.items() if any(key.startswith("miss_rate_") for key in m)}
    if not measured:
        return ""
    names = list(dict.fromkeys(key[len("miss_rate_"):] for m in measured.values() for key in m
                               if key.startswith("miss_rate_")))
    rows = []
    for name in names:
        row = [name]
        for m in measured.values():
            cell = f"{_number(m.get(f'miss_rate_{name}'), 3)}"
            if multi_label:
                cell += f" / {_number(m.get(f'false_alarm_rate_{name}'), 3)}"
            row.append(f"{cell} ({int(m.get(f'memes_{name}', 0))})")
        rows.append(row)
    if multi_label:
        label = TASK_LABELS.get(task, "label")
        title, text = f"## Errors per {label}", (
            f"Per {label}, among the memes that carry it, the share whose score is not above 0.5 (miss rate), and "
            "among the others the share whose score is (false-alarm rate); in brackets the memes that carry it:")
        header = [label, *(f"{_split_name(s, fitted_on)} miss / false alarm" for s in measured)]
    else:
        title, text = "## Misses by protected category", (
            "Per protected category (WOAH 2021 fine-grained labels), the share of the hateful memes attacking it "
            "that the model does not flag at the chosen threshold; in brackets the memes it is over. False alarms "
            "cannot be split by category: not-hateful memes attack none.")
        header = ["category", *(f"{_split_name(s, fitted_on)} miss rate" for s in measured)]
    return "\n".join(["", title, "", text, "", _table(header, rows), ""])


RULE_TEXT = {"head": "the logistic head alone (the index is kept for neighbours and later use)",
             "knn": "the kNN vote of the index alone",
             "combined": "the mean of the logistic head's and the kNN vote's probabilities"}


def _index_section(info: dict) -> str:
    """The retrieval index of an RGCL model: its size, where its memes came from, the decision rule."""
    sources = ", ".join(f"`{name}` {count:,}" for name, count in info.get("sources", {}).items()) or "none"
    rule = info.get("decision_rule", "combined")
    return f"""
## Retrieval index

Trained with retrieval-guided contrastive learning (RGCL, Mei et al., ACL 2024; contrastive loss
`{info.get("contrastive_loss")}`). Saved beside the model: an index of {info.get("size", 0):,} labelled memes'
embeddings (`retrieval_index.json` + `retrieval_index-*.safetensors`; sources: {sources}). Decision rule
`{rule}`: {RULE_TEXT.get(rule, rule)}; the kNN vote weighs the labels of the {info.get("knn_k")} most similar
indexed memes by `{info.get("knn_vote")}`. `hm-hf index add <model folder> <data>` adds labelled memes to the
index, which changes the kNN vote without retraining (the decision policy above was fitted with the index as
trained).
"""
