"""The model card written at the end of training: YAML header, results, figures, intended use.

Figures (ROC curve, confusion matrix) are PNGs next to the card, because people would rather see them
than read them; the card links them with relative paths so they render on the Hub and locally.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

DATASET_IDS = {"hmd": "facebook/hateful_memes", "mmhs": "MMHS150K"}
DATASET_NAMES = {"hmd": "Hateful Memes", "mmhs": "MMHS150K"}
FORMAT_NAMES = {"hmd": "Hateful-Memes", "mmhs": "MMHS150K"}
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


def dataset_name(dataset: str, synthetic: bool = False) -> str:
    """The data set a model was trained on, as the card and the Space name it."""
    if synthetic:
        return f"synthetic {FORMAT_NAMES.get(dataset, dataset)}-format data (hm_hf.synthetic)"
    return DATASET_NAMES.get(dataset, dataset)


def save_figures(probabilities: np.ndarray, labels: np.ndarray, output_dir, split: str) -> list[str]:
    """ROC curve and confusion matrix PNGs for a binary split; returns the file names written."""
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
        labels, (probabilities >= 0.5).astype(int), display_labels=["not hateful", "hateful"], ax=ax, colorbar=False
    )
    ax.set_title(f"Confusion matrix ({split})")
    fig.tight_layout()
    fig.savefig(output_dir / f"confusion_matrix_{split}.png", dpi=100)
    plt.close(fig)
    written.append(f"confusion_matrix_{split}.png")
    return written


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
) -> Path:
    """Write README.md (the model card) into `output_dir` and return its path.

    `synthetic`: the training data came from `hm_hf.synthetic` (its folder holds the marker): the card
    names it, links no Hub data set, is tagged `synthetic-data` and says its output on real memes means nothing.
    """
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    eval_results = [
        EvalResult(
            task_type="image-text-classification",
            task_name="Hateful meme detection",
            dataset_type=f"hm_hf-synthetic-{dataset}" if synthetic else DATASET_IDS.get(dataset, dataset),
            dataset_name=dataset_name(dataset, synthetic),
            dataset_split=split,
            metric_type=metric,
            metric_name=metric.upper() if metric == "auroc" else metric.capitalize(),
            metric_value=float(value),
        )
        for split, metrics in results.items()
        for metric, value in metrics.items()
        if metric in ("auroc", "accuracy", "f1") and np.isfinite(value)
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
        metrics=["roc_auc", "accuracy", "f1"],
        model_name=model_name,
        eval_results=eval_results or None,
    )
    header = ["| split | " + " | ".join(["AUROC", "accuracy", "F1"]) + " |", "| --- | --- | --- | --- |"]
    rows = [
        f"| {split} | " + " | ".join(f"{m.get(k, float('nan')):.4f}" for k in ("auroc", "accuracy", "f1")) + " |"
        for split, m in results.items()
    ]
    figure_lines = [f"![{name[:-4].replace('_', ' ')}]({name})" for name in figures]
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

{chr(10).join(header + rows) if rows else "No labelled evaluation split."}

{chr(10).join(figure_lines)}

## How to use

```python
from hm_hf.pipeline import HatefulMemePipeline

pipe = HatefulMemePipeline.from_pretrained("{model_name}")  # the model, its processor and its detector
pipe("meme.png")  # or pipe("meme.png", texts="the text on it")
```

## Training

Command: `{command}`

Recipe:

```yaml
{(recipe_text or "(given on the command line)").strip()}
```

## Intended use and limitations

{limitations}
"""
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n{body}")
    path = Path(output_dir) / "README.md"
    card.save(path)
    return path
