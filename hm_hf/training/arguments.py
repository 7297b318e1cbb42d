"""The dataclasses a recipe's keys belong to, and the YAML + command-line parser.

A recipe is flat YAML whose keys are fields of `ModelArguments`, `DataArguments`, `PeftArguments`,
`ExtraArguments` or `transformers.TrainingArguments`. The YAML supplies defaults, flags on the command
line override them (typed by argparse, as `HfArgumentParser` types them), and a key no dataclass has is
an error that names it. So is a value of the wrong type (`learning_rate: [1, 2]`, `max_regions: 1.5`):
each YAML value must fit its field's annotation, strings are typed as the command line types them, and
our own fields check their ranges (`max_regions: -1`); an `output_dir` that is a file is refused too.

The data set and its label column say what the model learns: `dataset: hmd_fine_grained` with
`label_column: pc` or `attack` is one WOAH 2021 fine-grained task (multi-label: the parser sets the
model's `problem_type`, `num_labels` and label names from the task's vocabulary); `label_column: label`
there is the binary task on the fine-grained data.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from transformers import HfArgumentParser, TrainingArguments

from hm_hf.fileio import file_in_the_way
from hm_hf.metrics import MULTI_LABEL

MODEL_TYPES = ("concat", "visual_bert", "uniter", "vilbert", "clip", "rgcl")
PEFT_METHODS = ("none", "head_only", "lora", "ia3", "bottleneck")
DATASETS = ("hmd", "mmhs", "hmd_fine_grained")


@dataclass
class ModelArguments:
    model_type: str = field(default="visual_bert", metadata={"help": f"one of {', '.join(MODEL_TYPES)}"})
    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "a pretrained multimodal checkpoint (Hub id or local folder); none: random init"},
    )
    text_model_name_or_path: str | None = field(
        default=None, metadata={"help": "a BERT checkpoint to initialise the text side (and the tokenizer) from"}
    )
    vision_model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "concat: a vision backbone checkpoint (e.g. microsoft/resnet-101) and its image processor; "
                 "clip: the CLIP checkpoint (both encoders, tokenizer and image processor)"},
    )
    tokenizer_name_or_path: str | None = field(
        default=None,
        metadata={"help": "tokenizer (Hub id or folder); default: the text or multimodal checkpoint's"},
    )
    config_overrides: str | None = field(
        default=None,
        metadata={"help": "comma-separated key=value pairs applied to the model config, e.g. hidden_size=64"},
    )
    num_labels: int = field(
        default=2, metadata={"help": "2 for hateful / not; a label column of more classes (MMHS's fine_label: 6) "
                                     "and the fine-grained tasks (pc 6, attack 8): set from the data set's classes"})
    # Not recipe keys: set by the parser for the fine-grained tasks' multi-label head, and by the run from the
    # label column's ClassLabel for a head of more than two classes (`hm_hf.training.data.apply_class_names`).
    problem_type: str | None = field(default=None, init=False)
    label_names: list[str] | None = field(default=None, init=False)

    def __post_init__(self):
        _at_least(self, num_labels=2)


@dataclass
class DataArguments:
    dataset: str = field(
        default="hmd", metadata={"help": "hmd, mmhs, or hmd_fine_grained (Hateful Memes with the WOAH 2021 "
                                         "fine-grained labels; label_column pc or attack)"})
    data_dir: str | None = field(default=None, metadata={"help": "the data set's folder, as distributed"})
    fine_grained_annotations_dir: str | None = field(
        default=None,
        metadata={"help": "the fine-grained annotation files (facebookresearch/fine_grained_hateful_memes or its "
                          "data/annotations): needed by hmd_fine_grained; with hmd, the binary model's miss rate per "
                          "protected category is reported on dev_seen / dev_unseen"})
    feature_cache: str | None = field(
        default=None, metadata={"help": "region-feature cache folder (region models and region concat)"}
    )
    synthetic_if_missing: bool = field(
        default=False,
        metadata={"help": "write the synthetic data set (and its features) to data_dir when it is missing (never "
                          "into a folder of other files)"},
    )
    synthetic_scale: float = field(default=1.0, metadata={"help": "size of the synthetic data set"})
    synthetic_clip_pretraining_pairs: int = field(
        default=0,
        metadata={"help": "clip / rgcl with synthetic_if_missing: a missing CLIP folder gets a tiny CLIP pre-trained "
                          "with the CLIP loss on this many synthetic image / caption pairs "
                          "(hm_hf.synthetic.clip_pretraining), the frozen-CLIP stand-in; 0: a random tiny CLIP"},
    )
    dataset_cache_dir: str | None = field(default=None, metadata={"help": "where datasets caches the build"})
    train_split: str = field(default="train", metadata={"help": "the split trained on"})
    eval_split: str = field(
        default="dev_seen", metadata={"help": "the split for model selection (MMHS: val)"}
    )
    label_column: str = field(
        default="label", metadata={"help": "label (binary), fine_label (MMHS 6-way), or for hmd_fine_grained pc / "
                                           "attack (a fine-grained task, multi-label)"})
    text_pair_column: str | None = field(
        default=None, metadata={"help": "a second text column paired with the first (MMHS: img_text)"}
    )
    max_text_length: int = field(default=128, metadata={"help": "tokens per meme text"})
    max_regions: int = field(default=100, metadata={"help": "regions per image"})
    fasttext_model: str | None = field(
        default=None, metadata={"help": "fastText .bin for text_embedding (concat/fasttext); trained if missing"}
    )
    clip_embedding_cache: bool = field(
        default=False,
        metadata={"help": "clip with frozen encoders: compute the CLIP vectors once, cached as datasets columns "
                          "(fingerprinted by checkpoint), so an epoch is only the head's work"},
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "truncate the training split"})

    def __post_init__(self):
        _at_least(self, max_text_length=1, max_regions=1, max_train_samples=1)
        if self.synthetic_clip_pretraining_pairs < 0:
            raise RecipeError("synthetic_clip_pretraining_pairs must be >= 0, got "
                              f"{self.synthetic_clip_pretraining_pairs}")
        if not self.synthetic_scale > 0:
            raise RecipeError(f"synthetic_scale must be > 0, got {self.synthetic_scale}")


@dataclass
class PeftArguments:
    peft_method: str = field(default="none", metadata={"help": f"one of {', '.join(PEFT_METHODS)}"})
    target_modules: list[str] | None = field(
        default=None, metadata={"help": "modules to adapt; default: the model type's standard choice"}
    )
    lora_r: int = field(default=8, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA scaling numerator"})
    lora_dropout: float = field(default=0.1, metadata={"help": "dropout on the LoRA input"})
    bottleneck_reduction_factor: int = field(
        default=10, metadata={"help": "adapter bottleneck = hidden size / this (the paper: 10, 768 -> 76)"}
    )

    def __post_init__(self):
        _at_least(self, lora_r=1, bottleneck_reduction_factor=1)
        if not 0 <= self.lora_dropout < 1:
            raise RecipeError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")


@dataclass
class ExtraArguments:
    early_stopping_patience: int | None = field(
        default=None, metadata={"help": "stop after this many evaluations without a better metric"}
    )
    resume: bool = field(
        default=True, metadata={"help": "resume this run's last complete checkpoint in output_dir when there is one "
                                        "(another run's are refused); false: start over, deleting its checkpoints"}
    )
    card_title: str | None = field(default=None, metadata={"help": "title of the model card"})
    threshold_rule: str = field(
        default="max_f1",
        metadata={"help": "how the decision threshold is chosen on eval_split (after temperature scaling, saved as "
                          "decision_policy.json): max_f1, fpr@<x> (highest recall at a false-positive rate <= x, "
                          "e.g. fpr@0.01), recall@<r> (highest precision at recall >= r), fixed@<t>"})
    recipe: str | None = field(default=None, init=False)  # set by the parser: the recipe file used ...
    recipe_text: str | None = field(default=None, init=False)  # ... and its text, read then (for the model card)

    def __post_init__(self):
        _at_least(self, early_stopping_patience=1)
        from hm_hf.metrics.thresholds import parse_rule

        try:
            parse_rule(self.threshold_rule)
        except ValueError as err:
            raise RecipeError(f"threshold_rule: {err}") from None


RECIPE_DATACLASSES = (ModelArguments, DataArguments, PeftArguments, ExtraArguments, TrainingArguments)


class RecipeError(ValueError):
    """A recipe that cannot be used; the message names the file and the key."""


def _at_least(arguments, **minimums) -> None:
    for name, minimum in minimums.items():
        value = getattr(arguments, name)
        if value is not None and value < minimum:
            raise RecipeError(f"{name} must be at least {minimum}, got {value}")


def _fits(annotation, value):
    """(True, value as the field wants it) when `value` (from YAML) fits `annotation`, else (False, None)."""
    origin = typing.get_origin(annotation)
    if annotation is typing.Any or isinstance(annotation, (str, typing.TypeVar)):
        return True, value
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(annotation):
            ok, typed = _fits(option, value)
            if ok:
                return True, typed
        return False, None
    if annotation is type(None):
        return value is None, value
    if origin is typing.Literal:
        return value in typing.get_args(annotation), value
    if origin in (list, tuple) or annotation in (list, tuple):
        args = typing.get_args(annotation)
        if not isinstance(value, list):
            return False, None
        typed = [_fits(args[0], v) if args else (True, v) for v in value]
        return all(ok for ok, _ in typed), [v for _, v in typed]
    if origin is dict or annotation is dict:
        return isinstance(value, dict), value
    if annotation is bool:
        return isinstance(value, bool), value
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool), float(value) if isinstance(
            value, (int, float)) else None
    if annotation is str:  # YAML reads `run_name: 2024` as a number: a scalar is fine as a string
        ok = isinstance(value, (str, int, float)) and not isinstance(value, bool)
        return ok, str(value) if ok else None
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        values = {member.value for member in annotation}
        return (isinstance(value, annotation) or value in values), value
    return True, value  # an annotation this check does not know: left to the dataclass


def _typed_recipe_values(parser, values: dict, recipe_path: Path) -> dict:
    """The recipe's values checked against the fields' annotations; strings typed as on the command line."""
    actions = {}
    for action in parser._actions:
        actions.setdefault(action.dest, action)
    hints = {}
    for cls in RECIPE_DATACLASSES:
        hints.update(typing.get_type_hints(cls))
    typed = {}
    for key, value in values.items():
        action, annotation = actions.get(key), hints.get(key, typing.Any)
        ok, converted = _fits(annotation, value)
        if not ok and isinstance(value, str) and action is not None and action.type is not None:
            try:
                ok, converted = True, action.type(value)
            except (TypeError, ValueError, argparse.ArgumentTypeError):
                ok = False
        if ok and action is not None and action.choices and converted is not None and not isinstance(converted, list):
            ok = converted in action.choices or getattr(converted, "value", None) in action.choices
        if not ok:
            expected = getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")
            raise RecipeError(f"{recipe_path}: {key}: {value!r:.80} is not a valid value (expected {expected}"
                              + (f", one of {list(action.choices)}" if action is not None and action.choices else "")
                              + ")")
        typed[key] = converted
    return typed


def _check_training_values(training_args) -> None:
    """TrainingArguments values transformers takes but that fail only later (numpy's seed error after the data
    is loaded, a zero batch size or a NaN learning rate when the loader or optimizer is made): said now."""
    if not 0 <= training_args.seed < 2**32:
        raise RecipeError(f"seed must be a whole number from 0 to 2**32 - 1, got {training_args.seed}")
    _at_least(training_args, per_device_train_batch_size=1, per_device_eval_batch_size=1,
              gradient_accumulation_steps=1)
    if not 0 <= training_args.learning_rate < float("inf"):
        raise RecipeError(f"learning_rate must be a number of 0 or more, got {training_args.learning_rate}")
    if training_args.push_to_hub:  # the repo is named after output_dir unless hub_model_id says
        from hm_hf.hub import repo_id_problem

        repo_id = training_args.hub_model_id or Path(training_args.output_dir).name
        problem = repo_id_problem(repo_id)
        if problem is None and "/" not in repo_id:
            problem = "no org/: the model card's example loads the model by this id"
        if problem:
            raise RecipeError(f"push_to_hub: {repo_id!r} is not a Hub repo id ({problem}); set hub_model_id to "
                              "org/name")


def _check_output_dir(output_dir) -> None:
    """An output_dir that is a file, or sits under one, cannot hold checkpoints: say so before training."""
    if not output_dir:
        return
    path = Path(output_dir)
    blocker = path if path.exists() and not path.is_dir() else file_in_the_way(path)
    if blocker is not None:
        raise RecipeError(f"output_dir {output_dir}: {blocker} is a file, not a folder; choose another "
                          "output_dir (or move the file away)")


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice (PyYAML itself keeps the last one without a word) and a
    key that is not text."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if not isinstance(key, str):
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} on line {line} is not a name",
                                                        key_node.start_mark)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} is given twice, on lines "
                                                        f"{seen[key]} and {line}", key_node.start_mark)
            seen[key] = line
        return super().construct_mapping(node, deep)


def _read_recipe(path: Path) -> tuple[dict, str]:
    """(values, text) of the recipe file at `path`."""
    if not path.is_file():
        raise RecipeError(f"recipe {path} not found")
    try:
        text = path.read_text(encoding="utf-8")
        values = yaml.load(text, Loader=_UniqueKeyLoader) or {}
    except yaml.YAMLError as err:
        raise RecipeError(f"{path} is not valid YAML: {err}") from err
    except RecursionError:
        raise RecipeError(f"{path}: YAML nested too deeply; a recipe is a flat mapping of keys to values") from None
    except UnicodeDecodeError as err:
        raise RecipeError(f"{path} is not UTF-8 text ({err.reason} at byte {err.start})") from None
    if not isinstance(values, dict):
        raise RecipeError(f"{path} must be a flat mapping of keys to values, not {type(values).__name__}")
    return values, text


def _values_from(recipe_path: Path | None, argv: list[str]) -> str:
    """Where a recipe's values came from, to start an error: the recipe file, and the command-line flags that
    override it (names only: a value may be a token)."""
    flags = [arg.split("=", 1)[0] for arg in argv if arg.startswith("--")]
    if not flags:
        return str(recipe_path) if recipe_path else "command line"
    overridden = f"command line {', '.join(flags)}"
    return f"{recipe_path} with {overridden}" if recipe_path else overridden


def parse_recipe(argv: list[str] | None = None):
    """`[recipe.yaml] [--key value ...]` -> (model, data, peft, extra, training) argument dataclasses."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = HfArgumentParser(RECIPE_DATACLASSES)
    recipe_values: dict = {}
    recipe_path = recipe_text = None
    if argv and argv[0].endswith((".yaml", ".yml")):
        recipe_path = Path(argv.pop(0))
        recipe_values, recipe_text = _read_recipe(recipe_path)
        known = {f.name for cls in RECIPE_DATACLASSES for f in dataclasses.fields(cls) if f.init}
        unknown = sorted(set(recipe_values) - known)
        if unknown:
            raise RecipeError(
                f"{recipe_path}: unknown key(s) {', '.join(unknown)}; every key must be a field of "
                f"{', '.join(cls.__name__ for cls in RECIPE_DATACLASSES)}"
            )
        recipe_values = _typed_recipe_values(parser, recipe_values, recipe_path)
        parser.set_defaults(**recipe_values)
        for action in parser._actions:  # a key the recipe gives is no longer required on the command line
            if action.dest in recipe_values:
                action.required = False
    where = _values_from(recipe_path, argv)
    try:
        parsed = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
    except SystemExit as err:
        if err.code:
            raise RecipeError(f"bad command-line arguments {argv} (see the message above)") from err
        raise
    except RecipeError as err:  # a range check of our dataclasses
        raise RecipeError(f"{where}: {err}") from None
    *dataclass_values, remaining = parsed
    if remaining:
        raise RecipeError(f"unknown command-line argument(s): {' '.join(remaining)}")
    model_args, data_args, peft_args, extra_args, training_args = dataclass_values
    extra_args.recipe = str(recipe_path) if recipe_path else None
    extra_args.recipe_text = recipe_text
    if model_args.model_type not in MODEL_TYPES:
        raise RecipeError(f"model_type {model_args.model_type!r} is not one of {', '.join(MODEL_TYPES)}")
    if peft_args.peft_method not in PEFT_METHODS:
        raise RecipeError(f"peft_method {peft_args.peft_method!r} is not one of {', '.join(PEFT_METHODS)}")
    _apply_task(model_args, data_args, where)
    try:
        _check_training_values(training_args)
    except RecipeError as err:
        raise RecipeError(f"{where}: {err}") from None
    _check_output_dir(training_args.output_dir)
    return model_args, data_args, peft_args, extra_args, training_args


def fine_grained_tasks() -> dict[str, tuple[str, ...]]:
    """The fine-grained label columns (the shared task's tasks) and their vocabularies."""
    from hm_hf.metrics.fine_grained import ATTACK_CLASSES, PC_CLASSES

    return {"pc": PC_CLASSES, "attack": ATTACK_CLASSES}


def _apply_task(model_args: ModelArguments, data_args: DataArguments, where) -> None:
    """Check the data set and label column, and set the model's head for a fine-grained task: multi-label over
    the task's vocabulary (one task per run, as the organisers' baselines train them)."""
    tasks = fine_grained_tasks()
    if data_args.dataset not in DATASETS:
        raise RecipeError(f"{where}: dataset {data_args.dataset!r} is not one of {', '.join(DATASETS)}")
    if data_args.dataset == "mmhs" and data_args.fine_grained_annotations_dir:
        raise RecipeError(f"{where}: fine_grained_annotations_dir labels Hateful Memes; it does not apply to mmhs")
    if data_args.dataset != "hmd_fine_grained":
        if data_args.label_column in tasks:
            raise RecipeError(f"{where}: label_column {data_args.label_column!r} is a fine-grained task: set "
                              "dataset: hmd_fine_grained and fine_grained_annotations_dir")
        return
    if not data_args.fine_grained_annotations_dir:
        raise RecipeError(f"{where}: dataset hmd_fine_grained needs fine_grained_annotations_dir (the "
                          "facebookresearch/fine_grained_hateful_memes repository or its data/annotations folder)")
    if data_args.label_column == "label":
        return  # the binary task, on the fine-grained data (its per-category miss rates come with it)
    if data_args.label_column not in tasks:
        raise RecipeError(f"{where}: label_column for hmd_fine_grained is pc or attack (a fine-grained task, "
                          f"multi-label) or label (binary), got {data_args.label_column!r}")
    classes = tasks[data_args.label_column]
    if model_args.num_labels not in (2, len(classes)):  # 2: the default, not given
        raise RecipeError(f"{where}: num_labels {model_args.num_labels} does not fit the {data_args.label_column} "
                          f"task's {len(classes)} labels {list(classes)}; leave num_labels out")
    model_args.num_labels = len(classes)
    model_args.problem_type = MULTI_LABEL
    model_args.label_names = list(classes)


def parse_overrides(text: str | None) -> dict:
    """`"hidden_size=64,text_config.num_hidden_layers=2"` -> {"hidden_size": 64, "text_config":
    {"num_hidden_layers": 2}}: values typed as YAML, dotted keys for sub-configs."""
    overrides: dict = {}
    for item in filter(None, (part.strip() for part in (text or "").split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise RecipeError(f"config_overrides: {item!r} is not key=value")
        *parents, leaf = key.strip().split(".")
        target = overrides
        for parent in parents:
            target = target.setdefault(parent, {})
            if not isinstance(target, dict):
                raise RecipeError(f"config_overrides: {key!r} sets a field inside a value that is not a config")
        target[leaf] = yaml.safe_load(value)
    return overrides


__all__ = [
    "ModelArguments",
    "DataArguments",
    "PeftArguments",
    "ExtraArguments",
    "RecipeError",
    "fine_grained_tasks",
    "parse_recipe",
    "parse_overrides",
]
