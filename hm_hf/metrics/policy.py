"""The decision policy saved beside a trained model: a temperature and a threshold, and where they came from.

Training fits it on the evaluation split (`DecisionPolicy.fit`), reports what it does on every labelled
split (`evaluate`) and saves `decision_policy.json` next to the weights (through the model's
`MemeProcessor`, whose threshold is this policy's); the pipeline reads it (`from_pretrained`, a folder or
a Hub repo) and turns logits into a calibrated probability and a flag. A model folder without the file
gets the neutral policy (T = 1, "fixed@0.5"), which is what hm_hf did before policies existed.

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
import numbers
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np

from hm_hf.metrics import calibration, thresholds

__all__ = ["POLICY_FILE", "DEFAULT_RULE", "DecisionPolicy"]

POLICY_FILE = "decision_policy.json"
DEFAULT_RULE = "max_f1"
FORMAT_VERSION = 2  # 2: `calibrated` (version 1 files read as calibrated=False)
logger = logging.getLogger(__name__)


def _check_threshold(threshold) -> None:
    """A probability threshold: a number in [0, 1], or +inf ("flag nothing", what a rule met only by flagging
    nothing chooses; `thresholds.choose_threshold` warns when it does)."""
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real) or math.isnan(threshold):
        raise ValueError(f"a binary policy needs a numeric threshold, got {threshold!r}")
    if not (0.0 <= threshold <= 1.0 or threshold == math.inf):
        raise ValueError(f"threshold must be a probability between 0 and 1 (or Infinity: flag nothing), "
                         f"got {threshold!r}")


@dataclass
class DecisionPolicy:
    """How logits become a decision: divide by `temperature`, flag P(class 1) >= `threshold`.

    `rule` says how the threshold was chosen ("max_f1", "fpr@0.01", "recall@0.9", "fixed@0.5"; "argmax" for
    multi-class), `fitted_on` on which split, `calibrated` whether the temperature was fitted there (False:
    T = 1, the model's own probabilities), and `metrics` holds what was measured on that split
    (`evaluate`: the calibration report, the operating points and the metrics at the threshold).
    """

    temperature: float = 1.0
    threshold: float | None = 0.5
    rule: str = "fixed@0.5"
    fitted_on: str | None = None
    num_labels: int = 2
    calibrated: bool = False
    metrics: dict[str, float] = field(default_factory=dict)
    version: int = FORMAT_VERSION

    def __post_init__(self):
        """Every value checked, so a damaged or hand-edited file is refused when loaded, not applied."""
        calibration._check_temperature(self.temperature)
        if not isinstance(self.calibrated, bool):
            raise ValueError(f"calibrated must be true or false, got {self.calibrated!r}")
        if isinstance(self.num_labels, bool) or not isinstance(self.num_labels, int) or self.num_labels < 1:
            raise ValueError(f"num_labels must be an integer >= 1, got {self.num_labels!r}")
        if not isinstance(self.rule, str):
            raise ValueError(f"rule must be a string such as 'max_f1', got {self.rule!r}")
        if self.fitted_on is not None and not isinstance(self.fitted_on, str):
            raise ValueError(f"fitted_on must be a split name or null, got {self.fitted_on!r}")
        if not isinstance(self.metrics, dict) or not all(
            isinstance(k, str) and isinstance(v, numbers.Real) and not isinstance(v, bool)
            for k, v in self.metrics.items()
        ):
            raise ValueError("metrics must be an object of metric names and numbers")
        if self.binary:
            _check_threshold(self.threshold)
            kind, value = thresholds.parse_rule(self.rule)
            if kind == "fixed" and value != self.threshold:
                raise ValueError(f"rule {self.rule!r} fixes the threshold at {value} but threshold is "
                                 f"{self.threshold!r}; make them agree")
        elif self.threshold is not None or self.rule != "argmax":
            raise ValueError("a multi-class policy decides by arg-max: threshold must be None and rule 'argmax'")

    @property
    def binary(self) -> bool:
        return self.num_labels <= 2

    @classmethod
    def neutral(cls, num_labels: int = 2) -> "DecisionPolicy":
        """T = 1 and the fixed 0.5 threshold (binary) or arg-max (more classes): the model's own decisions."""
        if num_labels <= 2:
            return cls()
        return cls(threshold=None, rule="argmax", num_labels=num_labels)

    def with_threshold(self, threshold: float) -> "DecisionPolicy":
        """This policy with a threshold chosen by hand (rule "fixed@<t>"); the temperature stays. The metrics
        measured at the old threshold no longer apply and are dropped."""
        if not self.binary:
            raise ValueError(f"a threshold applies to binary models; this policy decides {self.num_labels} classes "
                             "by arg-max")
        if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real) or not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be a probability between 0 and 1, got {threshold!r}")
        metrics = {k: v for k, v in self.metrics.items() if not k.startswith("at_threshold_")}
        return replace(self, threshold=float(threshold), rule=f"fixed@{float(threshold)!r}", metrics=metrics)

    # -- fitting ---------------------------------------------------------------------------------
    @classmethod
    def fit(cls, logits, labels, *, rule: str = DEFAULT_RULE, fitted_on: str | None = None,
            calibrate: bool = True, n_bins: int = calibration.DEFAULT_BINS) -> "DecisionPolicy":
        """Fit the temperature (unless `calibrate=False`), then choose the threshold by `rule` on the
        calibrated probabilities of the same labelled rows; `metrics` records `evaluate` on those rows."""
        class_logits = calibration.as_class_logits(logits)
        num_labels = class_logits.shape[1]  # a single binary logit column is already [0, z] here
        temperature = calibration.fit_temperature(class_logits, labels) if calibrate else 1.0
        if num_labels > 2:
            policy = cls(temperature=temperature, threshold=None, rule="argmax", fitted_on=fitted_on,
                         num_labels=num_labels, calibrated=calibrate)
        else:
            probability = calibration.scaled_probabilities(class_logits, temperature)[:, 1]
            choice = thresholds.choose_threshold(labels, probability, rule)
            policy = cls(temperature=temperature, threshold=choice.threshold, rule=choice.rule, fitted_on=fitted_on,
                         num_labels=num_labels, calibrated=calibrate)
        policy.metrics = {"temperature": temperature, **policy.evaluate(class_logits, labels, n_bins)}
        return policy

    def evaluate(self, logits, labels, n_bins: int = calibration.DEFAULT_BINS) -> dict[str, float]:
        """What this policy does on a labelled split, as flat keys for `all_results.json`.

        nll / ece / brier `_before` (T = 1) and `_after` (this temperature); binary policies also the
        operating points of the calibrated probability (recall_at_fpr_1pct, recall_at_fpr_5pct,
        precision_at_recall_90pct: `thresholds.operating_point_metrics`) and `at_threshold_<metric>` at this
        policy's threshold (precision, recall, f1, fpr, accuracy, flag_rate and the tp / fp / tn / fn counts).
        """
        class_logits = self._checked(logits)
        report = calibration.calibration_report(class_logits, labels, self.temperature, n_bins)
        del report["temperature"]
        if self.binary:
            probability = self.positive_probability(class_logits)
            report.update(thresholds.operating_point_metrics(labels, probability))
            at_threshold = thresholds.metrics_at_threshold(labels, probability, self.threshold)
            report.update({f"at_threshold_{k}": v for k, v in at_threshold.items() if k != "threshold"})
        return report

    def _checked(self, logits) -> np.ndarray:
        class_logits = calibration.as_class_logits(logits)
        if class_logits.shape[1] != max(self.num_labels, 2):
            raise ValueError(f"this decision policy is for {self.num_labels} labels but the logits have "
                             f"{class_logits.shape[1]} columns: it belongs to another model")
        return class_logits

    # -- applying --------------------------------------------------------------------------------
    def probabilities(self, logits) -> np.ndarray:
        """(N, C) calibrated class probabilities (a 1-column binary logit gives [1 - p, p])."""
        return calibration.scaled_probabilities(self._checked(logits), self.temperature)

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
    def from_pretrained(cls, path, revision: str | None = None, num_labels: int = 2, **hub) -> "DecisionPolicy":
        """The policy saved in a model folder or Hub repo (`hm_hf.hub.model_file`; `hub`: its other options,
        ``token``, ``cache_dir``, ...), or the neutral one for `num_labels` (T = 1, fixed@0.5 or arg-max) when
        there is none."""
        from hm_hf.hub import model_file

        path = model_file(str(path), POLICY_FILE, revision=revision, **hub)
        if path is None:
            logger.info("no %s with the model: temperature 1, the model's own decisions", POLICY_FILE)
            return cls.neutral(num_labels)
        from hm_hf.fileio import read_json_object

        data = read_json_object(path, "decision-policy settings", "delete it to fall back to threshold 0.5, or "
                                "re-run training to write it again")
        return cls.from_dict(data, source=str(path))
