"""`hm-hf multi-seed`: mean and sample std by hand, per-seed folders, resuming without re-running finished
seeds, a subprocess launcher, older seeds' train_train_* keys, and the tiny synthetic recipe trained
in-process with 2 seeds (every numeric metric aggregated: calibration, operating points, the policy)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from hm_hf.cli import main as hm_hf_main
from hm_hf.training.arguments import RecipeError
from hm_hf.training.multi_seed import RESULTS_FILE, aggregate, format_table, run_seeds

ROOT = Path(__file__).resolve().parents[1]
RECIPE = str(ROOT / "recipes/synthetic/config_tiny.yaml")

# Stands in for `accelerate launch recipes/train_peft.py`: records its command line, writes all_results.json.
FAKE_TRAINER = """
import json, sys
from pathlib import Path
args = sys.argv[1:]
last = lambda flag: args[len(args) - args[::-1].index(flag)]  # the last occurrence wins, as in argparse
seed, out = int(last("--seed")), Path(last("--output_dir"))
with open(sys.argv[0] + ".calls", "a") as calls:
    calls.write(json.dumps(args) + "\\n")
if seed == 13:
    sys.exit(3)
out.mkdir(parents=True, exist_ok=True)
(out / "all_results.json").write_text(json.dumps({"dev_seen_auroc": 0.5 + seed / 100, "epoch": 1.0, "note": "x"}))
"""


def test_aggregate_by_hand():
    summary = aggregate({1: {"a": 1.0, "b": 2, "flag": True, "name": "x"}, 2: {"a": 3.0, "b": 4}, 3: {"a": 5.0}})
    assert list(summary) == ["a", "b"]  # numbers only, in first-seen order
    assert summary["a"]["mean"] == 3.0 and summary["a"]["std"] == pytest.approx(2.0)  # sqrt((4 + 0 + 4) / 2)
    assert summary["a"]["n"] == 3 and summary["a"]["values"] == {"1": 1.0, "2": 3.0, "3": 5.0}
    assert summary["b"]["std"] == pytest.approx(math.sqrt(2)) and summary["b"]["n"] == 2
    assert math.isnan(aggregate({1: {"a": 1.0}})["a"]["std"])  # one seed: no sample std
    assert math.isnan(aggregate({1: {"a": float("nan")}, 2: {"a": 1.0}})["a"]["mean"])
    table = format_table(summary)
    assert "3.0000 ± 2.0000" in table and table.splitlines()[0].startswith("metric")


def test_launcher_runs_each_seed_once_and_resumes(tmp_path):
    trainer = tmp_path / "fake_trainer.py"
    trainer.write_text(FAKE_TRAINER)
    calls = tmp_path / "fake_trainer.py.calls"
    out = tmp_path / "out"
    launcher = f"{sys.executable} {trainer}"
    argv = [RECIPE, "--output_dir", str(out), "--learning_rate", "1e-3"]
    summary = run_seeds(argv, [1, 2], launcher=launcher)
    recorded = [json.loads(line) for line in calls.read_text().splitlines()]
    assert recorded == [[*argv, "--seed", "1", "--output_dir", str(out / "seed-1")],
                        [*argv, "--seed", "2", "--output_dir", str(out / "seed-2")]]
    auroc = summary["metrics"]["dev_seen_auroc"]
    assert auroc["mean"] == pytest.approx(0.515) and auroc["std"] == pytest.approx(np.std([0.51, 0.52], ddof=1))
    assert "note" not in summary["metrics"]
    written = json.loads((out / RESULTS_FILE).read_text())
    assert written["seeds"] == [1, 2] and "ddof=1" in written["std"]
    assert written["metrics"]["dev_seen_auroc"]["mean"] == pytest.approx(0.515)
    # a finished seed of other settings (its run record) is not averaged in with this recipe's seeds
    from hm_hf.training.checkpoints import run_settings, write_run_record
    from hm_hf.training.multi_seed import _seed_args

    write_run_record(out / "seed-1", run_settings(*_seed_args(argv, 1, out / "seed-1")))
    with pytest.raises(RecipeError, match=r"seed-1 holds the checkpoints of another run \(training.learning_rate: "
                                          r"0.001 then, 0.002 now\)"):
        run_seeds([RECIPE, "--output_dir", str(out), "--learning_rate", "2e-3"], [1, 2], launcher=launcher)
    # again with one more seed: only the new seed runs
    summary = run_seeds(argv, [1, 2, 3], launcher=launcher)
    assert len(calls.read_text().splitlines()) == 3 and summary["metrics"]["dev_seen_auroc"]["n"] == 3
    # a failing seed stops the run with a message; the finished ones stay
    with pytest.raises(RuntimeError, match="seed 13: training exited with status 3"):
        run_seeds(argv, [1, 13], launcher=launcher)
    assert (out / "seed-1" / "all_results.json").is_file()
    # a half-written all_results.json (a kill while writing) runs that seed again
    (out / "seed-2" / "all_results.json").write_text('{"dev_seen_auroc": 0.')
    run_seeds(argv, [1, 2], launcher=launcher)
    assert len(calls.read_text().splitlines()) == 5


def test_older_seeds_train_keys_read_under_the_current_names(tmp_path):
    """Runs before the fix wrote Trainer's `train_loss` as `train_train_loss`; a mix of old and new seeds
    aggregates under one name."""
    from hm_hf.training.multi_seed import finished_results

    old, new = tmp_path / "seed-1", tmp_path / "seed-2"
    for folder, results in ((old, {"train_train_loss": 0.5, "train_epoch": 1.0, "dev_seen_auroc": 0.6}),
                            (new, {"train_loss": 0.7, "train_epoch": 1.0, "dev_seen_auroc": 0.8})):
        folder.mkdir()
        (folder / "all_results.json").write_text(json.dumps(results))
    assert finished_results(old) == {"train_loss": 0.5, "train_epoch": 1.0, "dev_seen_auroc": 0.6}
    summary = aggregate({1: finished_results(old), 2: finished_results(new)})
    assert summary["train_loss"]["n"] == 2 and summary["train_loss"]["mean"] == pytest.approx(0.6)
    assert "train_train_loss" not in summary


def test_refusals_are_clear(tmp_path, capsys):
    with pytest.raises(RecipeError, match="--seeds N or --seed-list"):
        run_seeds([RECIPE, "--seed", "3"], [1, 2])
    with pytest.raises(RecipeError, match="does not push"):
        run_seeds([RECIPE, "--output_dir", str(tmp_path), "--push_to_hub", "true", "--hub_model_id", "org/m"], [1, 2])
    with pytest.raises(RecipeError, match="must differ"):
        run_seeds([RECIPE], [1, 1])
    assert hm_hf_main(["multi-seed", RECIPE, "--seeds", "2", "--not_a_key", "1"]) == 2
    assert "--not_a_key" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        hm_hf_main(["multi-seed", RECIPE])  # --seeds or --seed-list is required
    assert hm_hf_main(["multi-seed", RECIPE, "--seed-list", "1", "--output_dir", str(tmp_path / "l"),
                       "--launcher", "no-such-launcher recipes/train_peft.py"]) == 1
    assert "--launcher 'no-such-launcher recipes/train_peft.py' cannot be run" in capsys.readouterr().err


@pytest.mark.slow
def test_tiny_recipe_with_two_seeds_in_process(tmp_path, capsys):
    from hm_hf.synthetic.data import make_hmd, write_region_features

    splits = {"train": 24, "dev_seen": 8, "dev_unseen": 8}
    write_region_features(make_hmd(tmp_path / "data", splits=splits, image_size=(64, 48)), tmp_path / "features")
    out = tmp_path / "multi"
    argv = ["multi-seed", RECIPE, "--seeds", "2", "--data_dir", str(tmp_path / "data"),
            "--feature_cache", str(tmp_path / "features"), "--dataset_cache_dir", str(tmp_path / "cache"),
            "--output_dir", str(out), "--max_steps", "3", "--per_device_train_batch_size", "8",
            "--eval_strategy", "no", "--save_strategy", "no", "--load_best_model_at_end", "false",
            "--logging_steps", "1"]
    assert hm_hf_main(argv) == 0
    per_seed = {seed: json.loads((out / f"seed-{seed}" / "all_results.json").read_text()) for seed in (12345, 12346)}
    assert per_seed[12345]["train_loss"] != per_seed[12346]["train_loss"]  # the seeds really differ
    summary = json.loads((out / RESULTS_FILE).read_text())
    assert summary["seeds"] == [12345, 12346]
    auroc = summary["metrics"]["dev_unseen_auroc"]
    values = [per_seed[s]["dev_unseen_auroc"] for s in (12345, 12346)]
    assert auroc["n"] == 2 and auroc["mean"] == pytest.approx(np.mean(values))
    assert auroc["std"] == pytest.approx(np.std(values, ddof=1))
    numeric = {key for key, value in per_seed[12345].items() if isinstance(value, (int, float)) and
               not isinstance(value, bool)}
    assert numeric == set(summary["metrics"])  # every numeric metric of all_results.json
    for key in ("dev_unseen_ece_before", "dev_unseen_ece_after", "dev_unseen_brier_after", "dev_unseen_nll_after",
                "dev_unseen_recall_at_fpr_1pct", "dev_unseen_recall_at_fpr_5pct",
                "dev_unseen_precision_at_recall_90pct", "dev_unseen_at_threshold_f1", "decision_temperature",
                "decision_threshold"):
        values = [per_seed[s][key] for s in (12345, 12346)]
        assert summary["metrics"][key]["n"] == 2 and summary["metrics"][key]["mean"] == pytest.approx(
            np.mean(values), nan_ok=True), key
    assert "decision_rule" not in summary["metrics"]  # a string: reported per seed, not averaged
    printed = capsys.readouterr().out
    assert "dev_unseen_auroc" in printed and "ddof=1" in printed
    # run again: both seeds are finished, nothing is trained, the summary is rewritten the same
    stamp = (out / "seed-12345" / "all_results.json").stat().st_mtime_ns
    assert hm_hf_main(argv) == 0
    assert (out / "seed-12345" / "all_results.json").stat().st_mtime_ns == stamp
    assert json.loads((out / RESULTS_FILE).read_text())["metrics"] == summary["metrics"]
