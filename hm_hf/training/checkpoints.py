"""Finding the checkpoint to resume from, skipping ones a kill left half-written, and only of the same run.

`Trainer` writes `checkpoint-N/` piece by piece and `trainer_state.json` last, so a checkpoint is complete
only when that file parses and the weights and optimizer state are beside it. A run records what it learns
from (`RUN_RECORD`: the model, data and PEFT settings and the training settings that change the result), so
an `output_dir` reused for another run is refused instead of silently resuming, or finishing, the old one.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

logger = logging.getLogger(__name__)
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
WEIGHT_FILES = ("model.safetensors", "adapter_model.safetensors", "model.safetensors.index.json")
RUN_RECORD = "hm_hf_run.json"
#: the TrainingArguments that change what a run learns (where it logs or saves, or its loader workers, do not)
RESULT_SETTINGS = ("seed", "data_seed", "learning_rate", "weight_decay", "adam_beta1", "adam_beta2", "adam_epsilon",
                   "max_grad_norm", "num_train_epochs", "max_steps", "lr_scheduler_type", "warmup_ratio",
                   "warmup_steps", "per_device_train_batch_size", "gradient_accumulation_steps", "optim",
                   "label_smoothing_factor", "fp16", "bf16")
#: data settings that say where things are, not what they are: a resumed run may find them elsewhere
LOCATIONS = ("data_dir", "fine_grained_annotations_dir", "feature_cache", "dataset_cache_dir", "fasttext_model")


def run_settings(model_args, data_args, peft_args, training_args) -> dict:
    """What a run learns from, as JSON values: {"model.<name>": ..., "data.<name>": ..., ...}."""
    from dataclasses import asdict

    settings = {f"model.{k}": v for k, v in asdict(model_args).items()}
    settings |= {f"data.{k}": v for k, v in asdict(data_args).items() if k not in LOCATIONS}
    settings |= {f"peft.{k}": v for k, v in asdict(peft_args).items()}
    settings |= {f"training.{k}": getattr(training_args, k) for k in RESULT_SETTINGS if hasattr(training_args, k)}
    return json.loads(json.dumps(settings, default=lambda v: getattr(v, "value", str(v))))  # enums: their value


def check_same_run(output_dir, settings: dict) -> None:
    """Refuse to resume the checkpoints in `output_dir` when its run record shows another run (a reused folder:
    another recipe, seed or learning rate); a folder from before run records is resumed as it is."""
    from hm_hf.training.arguments import RecipeError

    record = Path(output_dir) / RUN_RECORD
    if not record.is_file():
        logger.warning("%s has checkpoints but no %s (written by hm_hf since this check): resuming them without "
                       "checking that they are of this run", output_dir, RUN_RECORD)
        return
    try:
        saved = json.loads(record.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise RecipeError(f"{record}: unreadable ({err}); if the checkpoints beside it are of this run, delete it; "
                          "else choose another output_dir") from None
    changed = {k: f"{k}: {saved.get(k)!r} then, {v!r} now" for k, v in settings.items() if saved.get(k, v) != v}
    if changed:
        moved = [k for k in changed if k.endswith("_name_or_path")]  # a model is named by where it is
        raise RecipeError(f"{output_dir} holds the checkpoints of another run ({'; '.join(list(changed.values())[:6])}"
                          f"{'; ...' if len(changed) > 6 else ''}): choose another output_dir, or pass --resume false "
                          "to start this run over in it (its checkpoint-* folders are then deleted)"
                          + (f". If the same model files only moved, write the new location for {', '.join(moved)} "
                             f"into {record} and run again" if moved else ""))


def remove_checkpoints(output_dir) -> list[str]:
    """Delete the `checkpoint-N` folders in `output_dir`, for a run told to start over there (`resume: false`):
    left in place, a later resume would take the newest of them, and Trainer's rotation (by step number) could
    delete this run's own checkpoints instead of them."""
    import shutil

    output_dir = Path(output_dir)
    removed = sorted(p.name for p in output_dir.iterdir() if p.is_dir() and _CHECKPOINT.match(p.name)) \
        if output_dir.is_dir() else []
    for name in removed:
        shutil.rmtree(output_dir / name)
    if removed:
        logger.warning("resume is false: deleted the checkpoints in %s (%s) to start this run over there", output_dir,
                       ", ".join(removed))
    return removed


def write_run_record(output_dir, settings: dict) -> None:
    """Record what this run learns from beside its checkpoints (atomically)."""
    from hm_hf.fileio import atomic_write_text

    atomic_write_text(Path(output_dir) / RUN_RECORD, json.dumps(settings, indent=1, sort_keys=True) + "\n")


def is_complete(checkpoint: Path) -> bool:
    """Whether `checkpoint` can be resumed: its state parses, its weights' safetensors header reads and its
    optimizer state is a whole zip (torch's format; a truncated one has no central directory)."""
    import zipfile

    from safetensors import SafetensorError, safe_open

    try:
        json.loads((checkpoint / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return False
    weights = [checkpoint / name for name in WEIGHT_FILES if (checkpoint / name).is_file()]
    for path in weights:
        if path.suffix == ".safetensors":
            try:
                with safe_open(str(path), framework="pt"):
                    pass
            except (SafetensorError, OSError):
                return False
    return bool(weights) and zipfile.is_zipfile(checkpoint / "optimizer.pt")


def last_complete_checkpoint(output_dir) -> str | None:
    """The newest complete `checkpoint-N` in `output_dir`, or None."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return None
    candidates = sorted(
        (int(m.group(1)), path)
        for path in output_dir.iterdir()
        if path.is_dir() and (m := _CHECKPOINT.match(path.name))
    )
    for _, path in reversed(candidates):
        if is_complete(path):
            return str(path)
        logger.warning("skipping %s: it is incomplete (the run was probably killed while saving it)", path)
    return None
