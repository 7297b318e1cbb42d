"""Finding the checkpoint to resume from, skipping ones a kill left half-written.

`Trainer` writes `checkpoint-N/` piece by piece and `trainer_state.json` last, so a checkpoint is complete
only when that file parses and the weights and optimizer state are beside it.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

logger = logging.getLogger(__name__)
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
WEIGHT_FILES = ("model.safetensors", "adapter_model.safetensors", "model.safetensors.index.json")


def is_complete(checkpoint: Path) -> bool:
    try:
        json.loads((checkpoint / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return False
    has_weights = any((checkpoint / name).is_file() for name in WEIGHT_FILES)
    return has_weights and (checkpoint / "optimizer.pt").is_file()


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
