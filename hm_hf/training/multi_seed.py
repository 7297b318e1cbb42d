"""`hm-hf multi-seed <recipe.yaml> --seeds 3 [--key value ...]`: one recipe, several seeds, mean and std.

The field compares models by their mean and standard deviation over seeds, not by one lucky run. This
runs the training recipe once per seed, each in `<output_dir>/seed-<n>/` (`output_dir` being the recipe's,
or the one given on the command line), then writes `<output_dir>/multi_seed_results.json` with the mean
and the sample standard deviation (ddof=1, as papers report it; NaN with one seed) of every numeric entry
of the seeds' `all_results.json`, and prints them as a table.

    hm-hf multi-seed recipes/synthetic/config_tiny.yaml --seeds 3             # the recipe's seed, +1, +2
    hm-hf multi-seed recipes/visual_bert/adapter/config_hmd.yaml --seed-list 1 2 3 --data_dir /data/hmd
    hm-hf multi-seed <recipe> --seeds 5 --launcher "accelerate launch --config_file \
        recipes/accelerate_configs/multi_gpu.yaml recipes/train_peft.py"

Every metric training reports is aggregated: AUROC / accuracy / F1, calibration (ECE, Brier, NLL before and
after temperature scaling), the operating points and the metrics at the chosen threshold, the fitted
temperature and threshold themselves (`decision_temperature`, `decision_threshold`), per-category miss
rates and the fine-grained micro scores. Seeds trained before the training metrics lost their doubled
prefix (`train_train_loss`) are read under the current names (`train_loss`).

Resumable: a seed whose `all_results.json` exists (training writes it once every split is evaluated) is
not run again, and an unfinished seed resumes from its last complete checkpoint, as any training run
does. By default each seed runs in this process (`hm_hf.training.run.main`); `--launcher` runs each as
`<launcher> <recipe> [--key value ...] --seed <n> --output_dir <output_dir>/seed-<n>` instead (for
`accelerate launch` on several GPUs, or to isolate the runs). Pushing to the Hub is refused: choose the
seed to publish afterwards.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np

from hm_hf.cli import positive_int
from hm_hf.fileio import atomic_write_text
from hm_hf.training.checkpoints import check_same_run, run_settings

__all__ = ["RESULTS_FILE", "seed_output_dir", "finished_results", "aggregate", "format_table", "run_seeds", "cli"]

RESULTS_FILE = "multi_seed_results.json"
SEED_RESULTS_FILE = "all_results.json"
LEGACY_TRAIN_PREFIX = "train_train_"  # how all_results.json named Trainer's train_* metrics before
STD_DEFINITION = "sample standard deviation (ddof=1) over seeds; NaN with fewer than 2 values"
logger = logging.getLogger(__name__)


def seed_output_dir(output_dir, seed: int) -> Path:
    return Path(output_dir) / f"seed-{seed}"


def finished_results(seed_dir) -> dict | None:
    """The seed's `all_results.json` when the run finished (the file exists and is a JSON object), else None;
    older runs' `train_train_<x>` keys read as `train_<x>`."""
    path = Path(seed_dir) / SEED_RESULTS_FILE
    if not path.is_file():
        return None
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        logger.warning("%s is not valid JSON (a run killed while writing it?): running that seed again", path)
        return None
    if not isinstance(results, dict):
        return None
    return {f"train_{key[len(LEGACY_TRAIN_PREFIX):]}" if key.startswith(LEGACY_TRAIN_PREFIX) else key: value
            for key, value in results.items()}


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def aggregate(results_by_seed: dict[int, dict]) -> dict[str, dict]:
    """{metric: {"mean", "std", "n", "values": {seed: value}}} over every numeric metric of any seed.

    A metric missing from some seeds is aggregated over the seeds that have it (`n` says how many); a NaN
    value makes the mean and std NaN (a NaN is reported, not hidden). Metric order: first seen.
    """
    names: list[str] = []
    for results in results_by_seed.values():
        names += [name for name, value in results.items() if _is_number(value) and name not in names]
    summary = {}
    for name in names:
        values = {seed: float(results[name]) for seed, results in results_by_seed.items()
                  if _is_number(results.get(name))}
        array = np.asarray(list(values.values()), dtype=np.float64)
        summary[name] = {
            "mean": float(array.mean()),
            "std": float(array.std(ddof=1)) if array.size >= 2 else math.nan,
            "n": int(array.size),
            "values": {str(seed): value for seed, value in values.items()},
        }
    return summary


def format_table(metrics: dict[str, dict]) -> str:
    """A plain-text table: metric, mean ± std, n."""
    rows = [(name, f"{m['mean']:.4f} ± {m['std']:.4f}", str(m["n"])) for name, m in metrics.items()]
    header = ("metric", "mean ± std", "n")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(3)]
    lines = [f"{header[0]:<{widths[0]}}  {header[1]:>{widths[1]}}  {header[2]:>{widths[2]}}",
             "  ".join("-" * width for width in widths)]
    lines += [f"{name:<{widths[0]}}  {stats:>{widths[1]}}  {n:>{widths[2]}}" for name, stats, n in rows]
    return "\n".join(lines)


def _run_one(train_argv: list[str], launcher: str | None) -> int:
    if launcher is None:
        from hm_hf.training.run import main

        return int(main(train_argv) or 0)
    command = shlex.split(launcher) + train_argv
    logger.info("running %s", shlex.join(command))
    try:
        return subprocess.run(command, check=False).returncode
    except OSError as err:  # no such program, not executable
        raise RuntimeError(f"--launcher {launcher!r} cannot be run ({err.strerror}: {command[0]}); give a command "
                           "such as 'accelerate launch recipes/train_peft.py'") from None


def _seed_args(train_argv: list[str], seed: int, seed_dir: Path):
    """The (model, data, peft, training) arguments of one seed's run, for its run record."""
    from hm_hf.training.arguments import parse_recipe

    model, data, peft, _, training = parse_recipe([*train_argv, "--seed", str(seed), "--output_dir", str(seed_dir)])
    return model, data, peft, training


def run_seeds(train_argv: list[str], seeds: list[int], launcher: str | None = None) -> dict:
    """Train `train_argv` (a recipe and its overrides) once per seed, then write and return the summary."""
    from hm_hf.training.arguments import RecipeError, parse_recipe

    if any(arg == "--seed" or arg.startswith("--seed=") for arg in train_argv):
        raise RecipeError("multi-seed sets --seed for each run; give the seeds with --seeds N or --seed-list")
    if len(set(seeds)) != len(seeds):
        raise RecipeError(f"the seeds must differ, got {seeds}")
    training_args = parse_recipe(train_argv)[-1]  # checks every key before anything runs
    if training_args.push_to_hub:
        raise RecipeError("multi-seed does not push to the Hub (every seed would overwrite the same repo); "
                          "set push_to_hub false and publish the seed folder you choose afterwards")
    output_dir = Path(training_args.output_dir)
    results_by_seed: dict[int, dict] = {}
    for number, seed in enumerate(seeds, start=1):
        seed_dir = seed_output_dir(output_dir, seed)
        results = finished_results(seed_dir)
        if results is not None:  # kept only when it is this recipe's run (its hm_hf_run.json)
            check_same_run(seed_dir, run_settings(*_seed_args(train_argv, seed, seed_dir)))
            logger.info("seed %d (%d of %d): finished earlier in %s, not run again", seed, number, len(seeds),
                        seed_dir)
        else:
            logger.info("seed %d (%d of %d): training into %s", seed, number, len(seeds), seed_dir)
            code = _run_one([*train_argv, "--seed", str(seed), "--output_dir", str(seed_dir)], launcher)
            results = finished_results(seed_dir)
            again = "; fix the cause and run the same command again: finished seeds are kept"
            if code != 0:
                raise RuntimeError(f"seed {seed}: training exited with status {code}{again}")
            if results is None:
                raise RuntimeError(f"seed {seed}: training wrote no {SEED_RESULTS_FILE} in {seed_dir}{again}")
        results_by_seed[seed] = results
    summary = {
        "train_args": train_argv,
        "output_dir": str(output_dir),
        "seeds": seeds,
        "seed_dirs": {str(seed): str(seed_output_dir(output_dir, seed)) for seed in seeds},
        "std": STD_DEFINITION,
        "metrics": aggregate(results_by_seed),
    }
    atomic_write_text(output_dir / RESULTS_FILE, json.dumps(summary, indent=2) + "\n")
    return summary


def cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="hm-hf multi-seed", allow_abbrev=False,  # no abbreviation: --seed must not mean --seeds
        description="Run a training recipe with several seeds and report the mean and sample std of its metrics.",
        epilog="Any other --key value is a recipe override passed to every run (e.g. --data_dir /data/hmd).",
    )
    parser.add_argument("recipe", help="the recipe YAML (recipes/<model>/<method>/config_<data>.yaml)")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--seeds", type=positive_int, metavar="N", help="N seeds: the recipe's seed, seed + 1, ...")
    which.add_argument("--seed-list", type=int, nargs="+", metavar="SEED", help="exactly these seeds")
    parser.add_argument("--launcher", default=None,
                        help="run each seed as '<launcher> <recipe> ...' in a new process (e.g. 'accelerate launch "
                             "recipes/train_peft.py'); default: in this process")
    args, overrides = parser.parse_known_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    from hm_hf.training.arguments import RecipeError, parse_recipe

    train_argv = [args.recipe, *overrides]
    try:
        if args.launcher is not None and not args.launcher.strip():
            parser.error("--launcher is empty; give a command such as 'accelerate launch recipes/train_peft.py'")
        if args.seed_list:
            seeds = list(args.seed_list)
        else:
            base = parse_recipe(train_argv)[-1].seed
            seeds = [base + i for i in range(args.seeds)]
        summary = run_seeds(train_argv, seeds, args.launcher)
    except (RecipeError, RuntimeError) as err:
        print(f"hm-hf multi-seed: {err}", file=sys.stderr)
        return 2 if isinstance(err, RecipeError) else 1
    print(format_table(summary["metrics"]))
    print(f"\n{len(seeds)} seeds {seeds}; std: {STD_DEFINITION}; written to "
          f"{Path(summary['output_dir']) / RESULTS_FILE}")
    return 0
