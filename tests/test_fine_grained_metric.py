"""The fine-grained Hateful Memes scorer: micro ROC-AUC / micro-F1 by hand and against scikit-learn, the
organisers' scorer's defects not repeated, per-category error rates, and files in the shared task's format."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from sklearn.metrics import f1_score, roc_auc_score

from hm_hf.metrics.fine_grained import (
    ATTACK_CLASSES,
    PC_CLASSES,
    binarize,
    cli,
    micro_scores,
    miss_rate_by_category,
    per_class_error_rates,
    score,
    score_files,
)


def gold_line(meme_id, split, hate, pc, attack, annotators=None):
    """One line of train.json / dev_seen.json as distributed (compact JSON, the files' key order)."""
    row = {"id": meme_id, "set_name": split, "img": f"img/{meme_id:05d}.png", "text": f"meme {meme_id}",
           "gold_hate": [hate], "gold_pc": pc, "gold_attack": attack,
           "pc": annotators or "None", "attack": [attack] * len(annotators) if annotators else "None"}
    return json.dumps(row, separators=(",", ":"))


def prediction_line(meme_id, split, hateful, pc, attack):
    """One line of the shared task's predictions format: {label: score} per task."""
    row = {"id": meme_id, "set_name": split,
           "pred_hate": {"not_hateful": 1 - hateful, "hateful": hateful},
           "pred_pc": dict(zip(PC_CLASSES, pc)), "pred_attack": dict(zip(ATTACK_CLASSES, attack))}
    return json.dumps(row, separators=(",", ":"))


def test_micro_scores_by_hand():
    gold = np.array([[1, 0], [0, 1]])
    # pooled cells: gold 1, 0, 0, 1 with scores .8, .5, .5, .3; positive/negative pairs:
    # (.8 > .5) (.8 > .5) (.3 < .5) (.3 < .5) -> AUROC 2/4
    assert micro_scores(gold, [[0.8, 0.5], [0.5, 0.3]])["roc_auc_micro"] == pytest.approx(0.5)
    # a tie between a positive and a negative counts one half: (.8 > .4) (.8 > .4)... with .4 tied
    assert micro_scores(gold, [[0.8, 0.4], [0.3, 0.4]])["roc_auc_micro"] == pytest.approx(3.5 / 4)
    # F1: predicted when score > .5 (strictly): cells .8 (TP), .5 (not predicted), .6 (FP), .3 (FN)
    got = micro_scores(gold, [[0.8, 0.5], [0.6, 0.3]])
    assert got["f1_micro"] == pytest.approx(2 * 1 / (2 * 1 + 1 + 1))


def test_micro_scores_match_sklearn():
    rng = np.random.default_rng(0)
    gold = (rng.random((200, 6)) < 0.3).astype(int)
    scores = np.clip(0.4 * gold + rng.random((200, 6)) * 0.7, 0, 1)
    got = micro_scores(gold, scores)
    assert got["roc_auc_micro"] == pytest.approx(roc_auc_score(gold, scores, average="micro"))
    assert got["roc_auc_micro"] == pytest.approx(roc_auc_score(gold.ravel(), scores.ravel()))  # pooled cells
    assert got["f1_micro"] == pytest.approx(f1_score(gold, (scores > 0.5).astype(int), average="micro"))
    assert got["roc_auc_micro"] != pytest.approx(roc_auc_score(gold, scores, average="macro"))
    assert math.isnan(micro_scores(np.zeros((2, 3)), np.ones((2, 3)) * 0.2)["roc_auc_micro"])


def test_a_class_that_is_never_a_first_label_is_still_scored():
    """The organisers' scorer takes its vocabulary from each meme's first gold label, so "disability" (here
    only a second label) would not be a column: its missed gold label would vanish and micro-F1 be 1.0."""
    gold = binarize([["race"], ["race", "disability"], ["pc_empty"]], PC_CLASSES)
    scores = np.full((3, len(PC_CLASSES)), 0.1)
    scores[0, PC_CLASSES.index("race")] = 0.9
    scores[1, PC_CLASSES.index("race")] = 0.8
    scores[2, PC_CLASSES.index("pc_empty")] = 0.9
    # cells: TP race, race, pc_empty = 3; FN disability = 1; FP 0 -> 2*3 / (2*3 + 0 + 1)
    assert micro_scores(gold, scores)["f1_micro"] == pytest.approx(6 / 7)


def test_per_class_error_rates_by_hand():
    classes = ("pc_empty", "race", "sex")
    gold = binarize([["race"], ["race", "sex"], ["pc_empty"], ["sex"]], classes)
    scores = np.array([[0.1, 0.9, 0.1],   # race caught
                       [0.1, 0.2, 0.7],   # race missed, sex caught
                       [0.8, 0.6, 0.1],   # pc_empty caught, race false alarm
                       [0.1, 0.1, 0.5]])  # sex missed (0.5 is not > 0.5)
    rates = per_class_error_rates(gold, scores, classes)
    assert rates["race"] == {"miss_rate": 0.5, "false_alarm_rate": 0.5, "positives": 2, "negatives": 2}
    assert rates["sex"] == {"miss_rate": 0.5, "false_alarm_rate": 0.0, "positives": 2, "negatives": 2}
    assert rates["pc_empty"]["miss_rate"] == 0.0 and rates["pc_empty"]["false_alarm_rate"] == 0.0
    assert math.isnan(per_class_error_rates(gold[:1], scores[:1], classes)["sex"]["miss_rate"])


def test_miss_rate_by_category_for_a_binary_detector():
    gold_pc = [["race"], ["race", "religion"], ["religion"], ["pc_empty"]]
    got = miss_rate_by_category([0.9, 0.3, 0.5, 0.99], gold_pc, threshold=0.5)
    assert got["race"] == {"miss_rate": 0.5, "memes": 2}  # the second meme is missed
    assert got["religion"] == {"miss_rate": 0.5, "memes": 2}  # 0.5 >= 0.5 is flagged
    assert math.isnan(got["sex"]["miss_rate"]) and got["sex"]["memes"] == 0
    assert "pc_empty" not in got
    with pytest.raises(ValueError, match="not one of"):
        miss_rate_by_category([0.2], [["gender"]])


@pytest.fixture
def files(tmp_path):
    gold = [
        gold_line(101, "dev_seen", "hateful", ["race"], ["dehumanizing"], [["race"], ["race"], ["race", "sex"]]),
        gold_line(102, "dev_seen", "hateful", ["religion", "sex"], ["mocking", "slurs"], [["religion", "sex"]]),
        gold_line(103, "dev_seen", "not_hateful", ["pc_empty"], ["attack_empty"]),
        gold_line(104, "dev_seen", "not_hateful", ["pc_empty"], ["attack_empty"]),
    ]
    (tmp_path / "dev_seen.json").write_text("\n".join(gold) + "\n")
    pc = {101: [0.1, 0, 0, 0.9, 0, 0], 102: [0.2, 0, 0, 0, 0.7, 0.3], 103: [0.8, 0, 0, 0.6, 0, 0],
          104: [0.9, 0, 0, 0, 0, 0]}
    attack = {101: [0.1, 0, 0.9, 0, 0, 0, 0, 0], 102: [0, 0, 0, 0, 0, 0, 0.8, 0.6], 103: [0.7] + [0.1] * 7,
              104: [0.6] + [0.0] * 7}
    hate = {101: 0.9, 102: 0.4, 103: 0.6, 104: 0.1}
    predictions = [prediction_line(i, "dev_seen", hate[i], pc[i], attack[i]) for i in (104, 103, 102, 101)]
    (tmp_path / "predictions.json").write_text("\n".join(predictions) + "\n")
    return tmp_path, gold, predictions


def test_score_files_by_hand(files):
    folder, _, _ = files
    result = score_files(folder / "dev_seen.json", folder / "predictions.json")
    assert result["num_memes"] == 4 and result["num_missing"] == 0 and result["duplicates_dropped"] == 0
    # pc cells > .5: 101 race (TP), 102 religion (TP), 102 sex .3 (FN), 103 pc_empty (TP), 103 race .6 (FP),
    # 104 pc_empty (TP) -> TP 4, FP 1, FN 1
    assert result["pc"]["f1_micro"] == pytest.approx(8 / 10)
    # attack: 101 dehumanizing TP, 102 mocking TP, slurs TP, 103 attack_empty TP, 104 attack_empty TP -> 1.0
    assert result["attack"]["f1_micro"] == pytest.approx(1.0)
    # hate: columns (not_hateful, hateful), cells > .5: 101 hateful TP; 102 not_hateful .6 FP, hateful .4 FN;
    # 103 hateful .6 FP, not_hateful .4 FN; 104 not_hateful TP -> TP 2, FP 2, FN 2
    assert result["hate"]["f1_micro"] == pytest.approx(0.5)
    gold_pc = binarize([["race"], ["religion", "sex"], ["pc_empty"], ["pc_empty"]], PC_CLASSES)
    scores = np.array([[0.1, 0, 0, 0.9, 0, 0], [0.2, 0, 0, 0, 0.7, 0.3], [0.8, 0, 0, 0.6, 0, 0],
                       [0.9, 0, 0, 0, 0, 0]])
    assert result["pc"]["roc_auc_micro"] == pytest.approx(roc_auc_score(gold_pc, scores, average="micro"))
    assert result["pc"]["per_class"]["sex"]["miss_rate"] == 1.0
    assert result["pc"]["per_class"]["race"]["false_alarm_rate"] == pytest.approx(1 / 3)


def test_repeated_and_missing_predictions(files, caplog):
    folder, _, predictions = files
    repeated = folder / "repeated.json"
    repeated.write_text("\n".join(predictions + [predictions[0]]) + "\n")
    result = score_files(folder / "dev_seen.json", repeated)
    assert result["duplicates_dropped"] == 1 and result["num_memes"] == 4  # counted once, not twice
    conflicting = folder / "conflicting.json"
    conflicting.write_text("\n".join(predictions + [prediction_line(104, "dev_seen", 0.5, [0.5] * 6, [0.5] * 8)]))
    with pytest.raises(ValueError, match=r"conflicting.json, line 5: id 104 is predicted again"):
        score_files(folder / "dev_seen.json", conflicting)
    partial = folder / "partial.json"
    partial.write_text("\n".join(predictions[:3]))
    with pytest.raises(ValueError, match="1 of 4 gold memes have no prediction"):
        score_files(folder / "dev_seen.json", partial)
    subset = score_files(folder / "dev_seen.json", partial, allow_missing=True)
    assert subset["num_memes"] == 3 and subset["num_missing"] == 1
    stranger = folder / "stranger.json"
    stranger.write_text("\n".join(predictions + [prediction_line(999, "dev_seen", 0.5, [0.5] * 6, [0.5] * 8)]))
    with pytest.raises(ValueError, match="not in the gold file"):
        score_files(folder / "dev_seen.json", stranger)


def test_bad_files_name_the_line(files):
    folder, gold, predictions = files
    row = json.loads(predictions[1])
    del row["pred_pc"]["race"]
    bad = folder / "bad.json"
    bad.write_text("\n".join([predictions[0], json.dumps(row)]))
    with pytest.raises(ValueError, match=r"bad.json, line 2 \(id 103\): pred_pc must score exactly .* missing \['race'\]"):
        score_files(folder / "dev_seen.json", bad)
    bad.write_text(predictions[0] + "\n{truncated")
    with pytest.raises(ValueError, match="line 2: invalid JSON"):
        score_files(folder / "dev_seen.json", bad)
    gold_bad = folder / "gold_bad.json"
    gold_bad.write_text(gold[0].replace('"race"]', '"gender"]', 1))
    with pytest.raises(ValueError, match=r"line 1 \(id 101\): gold_pc label\(s\) \['gender'\]"):
        score_files(gold_bad, folder / "predictions.json", allow_missing=True)
    test_file = folder / "test.jsonl"
    test_file.write_text('{"id":16395,"img":"img\\/16395.png","text":"a meme"}')
    with pytest.raises(ValueError, match="no gold_hate; this file has no fine-grained labels"):
        score_files(test_file, folder / "predictions.json")


@pytest.mark.parametrize("line, message", [
    ("[" * 100_000 + "]" * 100_000, "line 2: .*nest"),
    ('{"id": "1\u00b2"}', r"line 2: .*id"),
    ('{"id": "\u0661"}', r"line 2: .*id"),  # an Arabic-Indic one: not meme 1
    ('{"id": ' + "9" * 5000 + "}", r"line 2: .*"),
])
def test_hostile_prediction_lines_are_named_errors(files, line, message):
    """Each was a traceback (RecursionError, int conversion) or, for the Arabic-Indic digit, scored as meme 1."""
    folder, _, predictions = files
    bad = folder / "bad.json"
    bad.write_text(predictions[0] + "\n" + line + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=rf"bad.json, {message}"):
        score_files(folder / "dev_seen.json", bad)


def test_a_huge_score_and_a_line_separator_inside_a_string(files):
    folder, _, predictions = files
    row = json.loads(predictions[0])
    bad = folder / "bad.json"
    huge = dict(row, pred_hate={name: 123.25 for name in row["pred_hate"]})
    bad.write_text(predictions[1] + "\n" + json.dumps(huge).replace("123.25", "1" + "0" * 400, 1))
    with pytest.raises(ValueError, match=r"bad.json, line 2 \(id 104\): pred_hate"):  # an OverflowError before
        score_files(folder / "dev_seen.json", bad)
    row["note"] = "one\u2028line"  # U+2028 inside a string: one JSON line, as the data builders read it
    ok = folder / "ok.json"
    ok.write_text("\n".join([json.dumps(row, ensure_ascii=False), *predictions[1:]]) + "\n", encoding="utf-8")
    assert score_files(folder / "dev_seen.json", ok)["num_memes"] == 4


def test_cli_prints_one_line_per_task(files, capsys):
    folder, _, predictions = files
    one_task = folder / "pc_only.json"  # what one hm_hf run (one task) writes
    one_task.write_text("\n".join(json.dumps({k: v for k, v in json.loads(line).items() if k in ("id", "pred_pc")})
                                  for line in predictions))
    assert cli(["-g", str(folder / "dev_seen.json"), "-p", str(one_task)]) == 1
    assert "no pred_hate; this file predicts pc (hm_hf trains one task per run): score it with --tasks pc" in \
        capsys.readouterr().err
    assert cli(["-g", str(folder / "dev_seen.json"), "-p", str(one_task), "--tasks", "pc"]) == 0
    capsys.readouterr()
    assert cli(["-g", str(folder / "dev_seen.json"), "-p", str(folder / "predictions.json"), "--tasks", "pc"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == 1 and lines[0]["task"] == "pc" and lines[0]["f1_micro"] == pytest.approx(0.8)
    assert cli(["-g", str(folder / "dev_seen.json"), "-p", str(folder / "missing.json")]) == 1


def test_score_accepts_in_memory_inputs():
    gold = {1: {"hate": ["hateful"], "pc": ["race"], "attack": ["slurs"]}}
    predictions = {1: {"pc": [0.1, 0, 0, 0.9, 0, 0]}}
    assert score(gold, predictions, tasks=("pc",))["pc"]["f1_micro"] == 1.0
