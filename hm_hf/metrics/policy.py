"""The decision policy saved beside a trained model: a temperature and a threshold, and where they came from.

Training fits it on the evaluation split (`DecisionPolicy.fit`) and saves `decision_policy.json` next to
the weights (`save_pretrained`); the pipeline reads it (`from_pretrained`) and turns logits into a
calibrated probability and a flag. A model folder without the file gets the neutral policy (T = 1,
"fixed@0.5"), which is what hm_hf did before policies existed.

The threshold applies to the calibrated probability of class 1 (hateful), after dividing the logits by
the temperature; temperature scaling is monotone, so fitting the temperature first changes the threshold's
value but not which rows a rule flags on the fitting split. Multi-class models get a temperature and
arg-max decisions (threshold None, rule "argmax").

```python
>>> from hm_hf.metrics.policy import DecisionPolicy
>>> policy = DecisionPolicy.fit(eval_logits, eval_labels, rule="fpr@0.05", fitted_on="dev_seen")
>>> policy.save_pretrained("outputs/model")        # writes outputs/model/decision_policy.json
>>> policy = DecisionPolicy.from_pretrained("outputs/model")
>>> probability, flagged = policy.positive_probability(logits), policy.decide(logits)
```
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from hm_hf.metrics import calibration, thresholds

__all__ = ["POLICY_FILE", "DEFAULT_RULE", "DecisionPolicy"]

POLICY_FILE = "decision_policy.json"
DEFAULT_RULE = "max_f1"
FORMAT_VERSION = 1
logger = logging.getLogger(__name__)


@dataclass
class DecisionPolicy:
    """How logits become a decision: divide by `temperature`, flag P(class 1) >= `threshold`.

    `rule` says how the threshold was chosen ("max_f1", "fpr@0.01", "recall@0.9", "fixed@0.5"; "argmax" for
    multi-class), `fitted_on` on which split, and `metrics` holds what was measured there: the calibration
    report (NLL / ECE / Brier before and after) and the metrics at the threshold.
    """

    temperature: float = 1.0
    threshold: float | None = 0.5
    rule: str = "fixed@0.5"
    fitted_on: str | None = None
    num_labels: int = 2
    metrics: dict[str, float] = field(default_factory=dict)
    version: int = FORMAT_VERSION

    def __post_init__(self):
        calibration._check_temperature(self.temperature)
        if self.num_labels < 1:
            raise ValueError(f"num_labels must be >= 1, got {self.num_labels}")
        if self.binary:
            if self.threshold is None or not isinstance(self.threshold, (int, float)) or math.isnan(self.threshold):
                raise ValueError(f"a binary policy needs a numeric threshold, got {self.threshold!r}")
            thresholds.parse_rule(self.rule)
        elif self.threshold is not None or self.rule != "argmax":
            raise ValueError("a multi-class policy decides by arg-max: threshold must be None and rule 'argmax'")

    @property
    def binary(self) -> bool:
        return self.num_labels <= 2

    # -- fitting ---------------------------------------------------------------------------------
    @classmethod
    def fit(cls, logits, labels, *, rule: str = DEFAULT_RULE, fitted_on: str | None = None,
            calibrate: bool = True, n_bins: int = calibration.DEFAULT_BINS) -> "DecisionPolicy":
        """Fit the temperature (unless `calibrate=False`), then choose the threshold by `rule` on the
        calibrated probabilities of the same labelled rows; `metrics` records both."""
        class_logits = calibration.as_class_logits(logits)
        num_labels = class_logits.shape[1]  # a single binary logit column is already [0, z] here
        temperature = calibration.fit_temperature(class_logits, labels) if calibrate else 1.0
        metrics = calibration.calibration_report(class_logits, labels, temperature, n_bins)
        if num_labels > 2:
            return cls(temperature=temperature, threshold=None, rule="argmax", fitted_on=fitted_on,
                       num_labels=num_labels, metrics=metrics)
        probability = calibration.scaled_probabilities(class_logits, temperature)[:, 1]
        choice = thresholds.choose_threshold(labels, probability, rule)
        metrics.update({f"at_threshold_{k}": v for k, v in choice.metrics.items() if k != "threshold"})
        return cls(temperature=temperature, threshold=choice.threshold, rule=choice.rule, fitted_on=fitted_on,
                   num_labels=num_labels, metrics=metrics)

    # -- applying --------------------------------------------------------------------------------
    def probabilities(self, logits) -> np.ndarray:
        """(N, C) calibrated class probabilities (a 1-column binary logit gives [1 - p, p])."""
        return calibration.scaled_probabilities(logits, self.temperature)

    def positive_probability(self, logits) -> np.ndarray:
        """(N,) calibrated P(class 1) of a binary model."""
        if not self.binary:
            raise ValueError(f"positive_probability is for binary policies; this one has {self.num_labels} labels")
        return self.probabilities(logits)[:, 1]

    def decide(self, logits) -> np.ndarray:
        """(N,) int64 decisions: P(class 1) >= threshold for binary policies, the arg-max class otherwise."""
        probabilities = self.probabilities(logits)
        if self.binary:
            return (probabilities[:, 1] >= self.threshold).astype(np.int64)
        return probabilities.argmax(axis=1).astype(np.int64)

    # -- serialisation ---------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict, source: str = "policy") -> "DecisionPolicy":
        """The policy in `data` (as `to_dict` wrote it); unknown keys or bad values raise naming `source`."""
        if not isinstance(data, dict):
            raise ValueError(f"{source}: a decision policy is a JSON object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{source}: unknown decision-policy key(s) {', '.join(unknown)}; known: {sorted(known)}")
        version = data.get("version", FORMAT_VERSION)
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise ValueError(f"{source}: version must be a positive integer, got {version!r}")
        if version > FORMAT_VERSION:
            raise ValueError(f"{source}: decision-policy format version {version} is newer than this "
                             f"hm_hf reads ({FORMAT_VERSION}); upgrade hm_hf")
        try:
            return cls(**data)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{source}: {err}") from err

    def save_pretrained(self, folder) -> Path:
        """Write `decision_policy.json` into `folder` (atomically) and return its path."""
        from hm_hf.fileio import atomic_write_text

        path = Path(folder) / POLICY_FILE
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def from_pretrained(cls, folder) -> "DecisionPolicy":
        """The policy saved in `folder`, or the neutral one (T = 1, fixed@0.5) when there is none."""
        path = Path(folder) / POLICY_FILE
        if not path.is_file():
            logger.info("%s has no %s: using temperature 1 and threshold 0.5", folder, POLICY_FILE)
            return cls()
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"{path} is not valid JSON ({err}); delete it to fall back to threshold 0.5, or "
                             "re-run training to write it again") from err
        return cls.from_dict(data, source=str(path))
