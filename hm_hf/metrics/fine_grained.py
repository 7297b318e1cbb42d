"""Scorer of the fine-grained Hateful Memes shared task (WOAH 2021), with per-category error rates.

The task (facebookresearch/fine_grained_hateful_memes) labels every meme with a set of protected
categories (task A, "pc") and a set of attack types (task B, "attack"); not-hateful memes carry the
explicit labels "pc_empty" / "attack_empty". The organisers score each task, and the binary "hate" task,
with scikit-learn's micro-averaged ROC-AUC and micro-F1 over the one-hot label matrix, the empty class
being one of the columns, and a label predicted when its score is > 0.5. This module scores them the same
way, correctly.

What is broken in the organisers' `scripts/scorer.py` (the repository's last commit, 845c5f8):
1. It does not run: it uses `np` and `pd` but imports neither numpy nor pandas (NameError on the
   first `pd.read_json`).
2. It passes `np.matrix(scores)` to `roc_auc_score`, which current scikit-learn refuses (TypeError
   "np.matrix is not supported", checked with 1.9.1; deprecated since 1.0).
3. The label vocabulary comes from the data, not the task: the classes of a task are the distinct
   *first* gold labels of the evaluated memes (`gold.apply(lambda x: x[0]).unique()`). A class that
   occurs only as a second or third label of multi-label memes, or not at all in the evaluated memes,
   is not a column: its gold labels are dropped by `MultiLabelBinarizer` (only a UserWarning says
   "unknown class(es) ... will be ignored") and its predictions are never scored, so the same
   predictions score differently on different subsets. (On the released train / dev splits every class
   happens to occur first somewhere, so their numbers are not affected by this one.)
4. Predictions are inner-joined with the gold file on id (`predictions.merge(reference, on="id")`):
   a gold meme without a prediction silently leaves the score, and an id predicted twice is scored
   twice. The organisers' own baseline predictions show both: `dev_seen.json` has 504 rows for the 500
   dev_seen memes (ids 10285, 12045, 96250 and 17908 twice), and `dev_unseen.json` has 404 rows for
   only 400 of the 540 dev_unseen memes, which the scorer reports as a dev_unseen score without a word.
   The README's sample numbers are those of the patched script with the 4 duplicates counted twice.
5. A prediction missing one class's score fails with a bare KeyError that names neither the meme
   nor the line.
Here the vocabularies are the task's (`TASK_CLASSES`), every gold meme must have exactly one prediction
(identical repeated lines are dropped with a count, conflicting ones are an error; `allow_missing=True`
scores the predicted subset and says how many were missing), and bad input names the file and line.

On the binary task the organisers' "hate" micro ROC-AUC is over both columns (not_hateful, hateful), so
it is not the Hateful Memes AUROC of P(hateful) (`hm_hf.metrics.load_metric()` computes that one).

Per-category error rates (`per_class_error_rates`): for each class, among memes whose gold labels contain
it, the miss rate FN / (TP + FN); among the others, the false-alarm rate FP / (FP + TN), with a label
predicted when its score > `threshold`, as for micro-F1. For a binary detector (no fine-grained head),
`miss_rate_by_category` gives the share of each protected category's hateful memes that P(hateful) >=
threshold misses (false alarms cannot be split by category: not-hateful memes have none).

```python
>>> from hm_hf.metrics.fine_grained import score_files
>>> score_files("fine_grained/dev_seen.json", "predictions/dev_seen.json")["pc"]
{'roc_auc_micro': 0.85, 'f1_micro': 0.62, 'per_class': {'race': {'miss_rate': ..., ...}, ...}}
```

`python -m hm_hf.metrics.fine_grained -g <gold.json> -p <predictions.json>` prints one JSON line per task.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

__all__ = [
    "HATE_CLASSES",
    "PC_CLASSES",
    "ATTACK_CLASSES",
    "TASK_CLASSES",
    "PROTECTED_CATEGORIES",
    "binarize",
    "micro_scores",
    "per_class_error_rates",
    "miss_rate_by_category",
    "read_gold",
    "read_predictions",
    "score",
    "score_files",
    "cli",
]

logger = logging.getLogger(__name__)

# The task's label vocabularies (the shared task's README), the "empty" label first.
HATE_CLASSES = ("not_hateful", "hateful")
PC_CLASSES = ("pc_empty", "disability", "nationality", "race", "religion", "sex")
ATTACK_CLASSES = ("attack_empty", "contempt", "dehumanizing", "exclusion", "inciting_violence", "inferiority",
                  "mocking", "slurs")
TASK_CLASSES = {"hate": HATE_CLASSES, "pc": PC_CLASSES, "attack": ATTACK_CLASSES}
PROTECTED_CATEGORIES = PC_CLASSES[1:]
F1_THRESHOLD = 0.5  # a label is predicted when its score is > 0.5 (the shared task's rule)


def binarize(label_lists: Iterable[Sequence[str]], classes: Sequence[str]) -> np.ndarray:
    """(N, C) 0/1 matrix of label sets over `classes`; a label outside `classes` raises naming the row."""
    index = {name: i for i, name in enumerate(classes)}
    rows = []
    for row, labels in enumerate(label_lists):
        one_hot = np.zeros(len(classes), dtype=np.int64)
        for label in labels:
            if label not in index:
                raise ValueError(f"row {row}: label {label!r} is not one of {list(classes)}")
            one_hot[index[label]] = 1
        rows.append(one_hot)
    return np.stack(rows) if rows else np.zeros((0, len(classes)), dtype=np.int64)


def _matrices(gold, scores) -> tuple[np.ndarray, np.ndarray]:
    gold = np.asarray(gold)
    scores = np.asarray(scores, dtype=np.float64)
    if gold.ndim != 2 or gold.shape != scores.shape:
        raise ValueError(f"gold and scores must be (N, C) matrices of one shape, got {gold.shape} and {scores.shape}")
    if not np.isin(gold, (0, 1)).all():
        raise ValueError("gold must be a 0/1 label matrix (see binarize)")
    if not np.isfinite(scores).all():
        raise ValueError("scores contain NaN or infinite values")
    return gold.astype(np.int64), scores


def micro_scores(gold, scores, threshold: float = F1_THRESHOLD) -> dict[str, float]:
    """Micro ROC-AUC and micro-F1 of a multi-label task, as the shared task scores them.

    Micro ROC-AUC is scikit-learn's `roc_auc_score(average="micro")`: the AUROC of all (meme, class)
    cells pooled; NaN when the pooled cells hold a single value. Micro-F1 is `f1_score(average="micro")` of
    the cells predicted when score > threshold: 2 TP / (2 TP + FP + FN) over all cells.
    """
    from sklearn.metrics import f1_score, roc_auc_score

    gold, scores = _matrices(gold, scores)
    if gold.size == 0:
        raise ValueError("nothing to score: no memes")
    pooled = gold.ravel()
    auc = float(roc_auc_score(gold, scores, average="micro")) if 0 < pooled.sum() < pooled.size else math.nan
    f1 = float(f1_score(gold, (scores > threshold).astype(np.int64), average="micro", zero_division=0))
    return {"roc_auc_micro": auc, "f1_micro": f1}


def per_class_error_rates(gold, scores, classes: Sequence[str],
                          threshold: float = F1_THRESHOLD) -> dict[str, dict[str, float]]:
    """Per class: miss rate, false-alarm rate, and the positive / negative meme counts they are over.

    A class is predicted when its score > threshold. A rate over no memes is NaN.
    """
    gold, scores = _matrices(gold, scores)
    if gold.shape[1] != len(classes):
        raise ValueError(f"{gold.shape[1]} columns but {len(classes)} class names")
    predicted = scores > threshold
    result = {}
    for column, name in enumerate(classes):
        positive = gold[:, column] == 1
        positives, negatives = int(positive.sum()), int((~positive).sum())
        misses = int((positive & ~predicted[:, column]).sum())
        false_alarms = int((~positive & predicted[:, column]).sum())
        result[name] = {
            "miss_rate": misses / positives if positives else math.nan,
            "false_alarm_rate": false_alarms / negatives if negatives else math.nan,
            "positives": positives,
            "negatives": negatives,
        }
    return result


def miss_rate_by_category(hate_scores, gold_pc: Iterable[Sequence[str]], threshold: float = 0.5,
                          categories: Sequence[str] = PROTECTED_CATEGORIES) -> dict[str, dict[str, float]]:
    """For a binary detector: per protected category, the share of memes attacking it that are not flagged.

    `hate_scores` is P(hateful) per meme, flagged when >= threshold (hm_hf's `DecisionPolicy` rule);
    `gold_pc` the memes' gold protected categories. A meme attacking two categories counts for both.
    Returns {category: {"miss_rate", "memes"}}; NaN where a category has no meme.
    """
    scores = np.asarray(hate_scores, dtype=np.float64).reshape(-1)
    gold = binarize(gold_pc, PC_CLASSES)
    if gold.shape[0] != scores.shape[0]:
        raise ValueError(f"{scores.shape[0]} scores but {gold.shape[0]} gold label sets")
    missed = scores < threshold
    result = {}
    for name in categories:
        attacked = gold[:, PC_CLASSES.index(name)] == 1
        count = int(attacked.sum())
        result[name] = {"miss_rate": float(missed[attacked].mean()) if count else math.nan, "memes": count}
    return result


# -- files in the shared task's format ----------------------------------------------------------
def _json_lines(path: Path):
    """(line number, object) per non-blank line of a JSON-lines file (the task's .json files are JSON lines)."""
    from hm_hf.fileio import JsonInputError, parse_json

    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path} is not UTF-8 text: {err}") from err
    # "\n" only, as the data builders split (str.splitlines also breaks at U+2028, U+0085, ... inside strings)
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            obj = parse_json(line)  # also too deep nesting and over-long integers, as a JsonInputError
        except JsonInputError as err:
            raise ValueError(f"{path}, line {number}: {err}") from None
        if not isinstance(obj, dict):
            raise ValueError(f"{path}, line {number}: expected a JSON object, got {type(obj).__name__}")
        yield number, obj


def _meme_id(obj: dict, where: str) -> int:
    """The data builders' rule (`hm_hf.data.layouts.parse_id`): an int, or ASCII digits, in 0..2**63-1."""
    from hm_hf.data.layouts import id_problem, parse_id

    value = parse_id(obj.get("id"))
    if value is None:
        raise ValueError(f"{where}: {id_problem(obj.get('id'))}")
    return value


def read_gold(path) -> dict[int, dict[str, list[str]]]:
    """{id: {"hate": [...], "pc": [...], "attack": [...]}} from a gold file (train.json, dev_seen.json, ...)."""
    path = Path(path)
    gold: dict[int, dict[str, list[str]]] = {}
    for number, obj in _json_lines(path):
        where = f"{path}, line {number}"
        meme = _meme_id(obj, where)
        if meme in gold:
            raise ValueError(f"{where}: id {meme} is listed twice in the gold file")
        labels = {}
        for task, classes in TASK_CLASSES.items():
            value = obj.get(f"gold_{task}")
            if value is None:
                raise ValueError(f"{where} (id {meme}): no gold_{task}; this file has no fine-grained labels "
                                 "(test.jsonl is unlabelled)")
            if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
                raise ValueError(f"{where} (id {meme}): gold_{task} must be a non-empty list of labels, got {value!r}")
            unknown = sorted(set(value) - set(classes))
            if unknown:
                raise ValueError(f"{where} (id {meme}): gold_{task} label(s) {unknown} are not in {list(classes)}")
            labels[task] = list(value)
        gold[meme] = labels
    if not gold:
        raise ValueError(f"{path} holds no memes")
    return gold


def read_predictions(path, tasks: Sequence[str] = tuple(TASK_CLASSES)) -> tuple[dict[int, dict], int]:
    """({id: {task: scores in TASK_CLASSES order}}, number of identical repeated lines dropped).

    A line's `pred_<task>` is a {label: score} object with exactly the task's labels. An id listed again
    with the same scores is dropped (and counted); with different scores it is an error.
    """
    path = Path(path)
    predictions: dict[int, dict] = {}
    first_line: dict[int, int] = {}
    dropped = 0
    for number, obj in _json_lines(path):
        where = f"{path}, line {number}"
        meme = _meme_id(obj, where)
        scores = {}
        for task in tasks:
            classes = TASK_CLASSES[task]
            value = obj.get(f"pred_{task}")
            if value is None and (present := [t for t in TASK_CLASSES if isinstance(obj.get(f"pred_{t}"), dict)]):
                raise ValueError(f"{where} (id {meme}): no pred_{task}; this file predicts {', '.join(present)} "
                                 f"(hm_hf trains one task per run): score it with --tasks {' '.join(present)}")
            if not isinstance(value, dict):
                raise ValueError(f"{where} (id {meme}): pred_{task} must be a {{label: score}} object, got {value!r}")
            missing, extra = sorted(set(classes) - set(value)), sorted(set(value) - set(classes))
            if missing or extra:
                raise ValueError(f"{where} (id {meme}): pred_{task} must score exactly {list(classes)}; "
                                 f"missing {missing}, unknown {extra}")
            row = [value[name] for name in classes]
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and -1e300 < v < 1e300 for v in row):
                raise ValueError(f"{where} (id {meme}): pred_{task} scores must be finite numbers, got {value!r}")
            scores[task] = row
        if meme in predictions:
            if predictions[meme] != scores:
                raise ValueError(f"{where}: id {meme} is predicted again with different scores (first at line "
                                 f"{first_line[meme]}); keep one prediction per meme")
            dropped += 1
            continue
        predictions[meme], first_line[meme] = scores, number
    return predictions, dropped


def score(gold: dict[int, dict], predictions: dict[int, dict], tasks: Sequence[str] = tuple(TASK_CLASSES),
          threshold: float = F1_THRESHOLD, allow_missing: bool = False) -> dict:
    """Micro ROC-AUC, micro-F1 and per-class error rates per task, over the gold memes.

    Every gold meme needs a prediction unless `allow_missing` (then the predicted ones are scored and
    `num_missing` says how many were not); a prediction for a meme not in the gold file is an error.
    """
    unknown = sorted(set(predictions) - set(gold))
    if unknown:
        raise ValueError(f"{len(unknown)} predicted id(s) are not in the gold file (first: {unknown[:5]}); "
                         "score each split's predictions against that split's gold file")
    missing = [meme for meme in gold if meme not in predictions]
    if missing and not allow_missing:
        raise ValueError(f"{len(missing)} of {len(gold)} gold memes have no prediction (first: {missing[:5]}); "
                         "predict every meme, or pass allow_missing=True (--allow-missing) to score the subset")
    if missing:
        logger.warning("%d of %d gold memes have no prediction; scoring the %d predicted ones", len(missing),
                       len(gold), len(gold) - len(missing))
    memes = [meme for meme in gold if meme in predictions]
    if not memes:
        raise ValueError("no gold meme has a prediction")
    result: dict = {"num_memes": len(memes), "num_missing": len(missing)}
    for task in tasks:
        classes = TASK_CLASSES[task]
        gold_matrix = binarize((gold[meme][task] for meme in memes), classes)
        score_matrix = np.asarray([predictions[meme][task] for meme in memes], dtype=np.float64)
        result[task] = micro_scores(gold_matrix, score_matrix, threshold)
        result[task]["per_class"] = per_class_error_rates(gold_matrix, score_matrix, classes, threshold)
    return result


def score_files(gold_path, predictions_path, tasks: Sequence[str] = tuple(TASK_CLASSES),
                threshold: float = F1_THRESHOLD, allow_missing: bool = False) -> dict:
    """`score` on a gold file and a predictions file in the shared task's formats."""
    predictions, dropped = read_predictions(predictions_path, tasks)
    if dropped:
        logger.warning("%s: %d repeated prediction line(s) with identical scores were dropped",
                       predictions_path, dropped)
    result = score(read_gold(gold_path), predictions, tasks, threshold, allow_missing)
    result["duplicates_dropped"] = dropped
    return result


def cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hm_hf.metrics.fine_grained", description=__doc__.split("\n")[0])
    parser.add_argument("-g", "--gold", required=True, help="gold file (dev_seen.json, dev_unseen.json, train.json)")
    parser.add_argument("-p", "--predictions", required=True, help="predictions file in the shared task's format")
    parser.add_argument("--tasks", nargs="+", choices=list(TASK_CLASSES), default=list(TASK_CLASSES))
    parser.add_argument("--threshold", type=float, default=F1_THRESHOLD, help="a label is predicted when score > this")
    parser.add_argument("--allow-missing", action="store_true", help="score the predicted subset of the gold memes")
    parser.add_argument("--per-class", action="store_true", help="also print per-class miss / false-alarm rates")
    args = parser.parse_args(argv)
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", level=logging.INFO)
    try:
        result = score_files(args.gold, args.predictions, args.tasks, args.threshold, args.allow_missing)
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for task in args.tasks:
        line = {"task": task, "memes": result["num_memes"], **{k: v for k, v in result[task].items() if k != "per_class"}}
        if args.per_class:
            line["per_class"] = result[task]["per_class"]
        print(json.dumps(line))
    return 0


if __name__ == "__main__":
    sys.exit(cli())
