"""Data for a training run: the splits (from the builders), the tokenizer and the processor (the collator).

What a model reads is declared by its config (`model_inputs`), so a recipe only names the data set.
`hmd_fine_grained` is Hateful Memes joined with the WOAH 2021 fine-grained labels
(`hm_hf.data.fine_grained.load_fine_grained`); its `pc` / `attack` columns (lists of class ids) are
collated as multi-hot label vectors.
"""

from __future__ import annotations

import logging
from pathlib import Path

from accelerate import PartialState

from hm_hf.processing.processor import BINARY_LABEL_NAMES, FASTTEXT_MODEL, MemeProcessor, detector_for_features
from hm_hf.training.arguments import DataArguments, ModelArguments, RecipeError

logger = logging.getLogger(__name__)

TEXT_COLUMNS = {"hmd": "text", "mmhs": "tweet_text", "hmd_fine_grained": "text"}
SYNTHETIC_FORMATS = {"hmd": "hmd", "mmhs": "mmhs", "hmd_fine_grained": "hmd"}  # what the synthetic writer writes


def default_feature_cache(data_args: DataArguments) -> str:
    return data_args.feature_cache or str(Path(data_args.data_dir) / "region_features")


def ensure_synthetic_data(data_args: DataArguments) -> None:
    """Write the synthetic data set (and its region features, and for hmd_fine_grained its fine-grained
    annotations) when asked to and it is not there yet."""
    data_dir = Path(data_args.data_dir)
    dataset = SYNTHETIC_FORMATS[data_args.dataset]
    marker = data_dir / ("train.jsonl" if dataset == "hmd" else "MMHS150K_GT.json")
    fine_grained_missing = data_args.dataset == "hmd_fine_grained" and not any(
        (Path(data_args.fine_grained_annotations_dir) / folder / "train.json").is_file()
        for folder in (".", "data/annotations"))
    if not data_args.synthetic_if_missing or (marker.is_file() and not fine_grained_missing):
        return
    from hm_hf import synthetic

    state = PartialState()
    with state.main_process_first():
        if state.is_main_process and not marker.is_file():
            logger.info("writing the synthetic %s data set to %s", dataset, data_dir)
            try:
                synthetic.make_dataset(dataset, data_dir, scale=data_args.synthetic_scale,
                                       features_dir=default_feature_cache(data_args))
            except synthetic.SyntheticOutputError as err:  # data_dir holds other files (a real data set?)
                raise RecipeError(f"synthetic_if_missing: {err}") from None
        if state.is_main_process and fine_grained_missing and synthetic.is_synthetic(data_dir):
            logger.info("writing the synthetic fine-grained annotations of %s to %s", data_dir,
                        data_args.fine_grained_annotations_dir)
            synthetic.make_fine_grained(data_dir, data_args.fine_grained_annotations_dir)


def ensure_data_dir(data_args: DataArguments) -> None:
    """The data folder is there (made, for a synthetic recipe): checked before any model is looked up, so a
    missing folder is named at once, not after the Hub has been tried for the model's config."""
    if not data_args.data_dir:
        raise RecipeError("data_dir is not set: point it at the data set's folder (or a new one for synthetic)")
    ensure_synthetic_data(data_args)
    if not Path(data_args.data_dir).is_dir():
        raise RecipeError(f"data_dir {data_args.data_dir} does not exist")


def load_splits(data_args: DataArguments, needs: set[str]):
    """The data set's DatasetDict (from the folder `ensure_data_dir` checked), with region features joined when
    the model reads them."""
    from hm_hf.data.loading import load_hmd, load_mmhs

    options = {}
    if "regions" in needs:
        cache = default_feature_cache(data_args)
        if not Path(cache).is_dir():
            raise RecipeError(
                f"feature cache {cache} not found: run `hm-hf extract-features --dataset {data_args.dataset} "
                f"--data-dir {data_args.data_dir} --output {cache}` (or set feature_cache)"
            )
        options = {"config_name": "regions", "feature_cache": cache}
    if data_args.dataset == "hmd_fine_grained":
        options["annotations_dir"] = data_args.fine_grained_annotations_dir
    loader = {"hmd": load_hmd, "mmhs": load_mmhs, "hmd_fine_grained": _load_fine_grained}.get(data_args.dataset)
    if loader is None:
        raise RecipeError(f"dataset {data_args.dataset!r} is not one of hmd, mmhs, hmd_fine_grained")
    splits = loader(data_args.data_dir, cache_dir=data_args.dataset_cache_dir, **options)
    for name in (data_args.train_split, data_args.eval_split):
        if name not in splits:
            raise RecipeError(f"split {name!r} not in {data_args.data_dir} (it has {', '.join(splits)})")
    if "pixels" not in needs:  # nothing reads the pixels: don't decode images in the training loop
        splits = splits.remove_columns("image")
    if data_args.max_train_samples:
        train = splits[data_args.train_split]
        splits[data_args.train_split] = train.select(range(min(len(train), data_args.max_train_samples)))
    return splits


def apply_class_names(model_args: ModelArguments, splits, data_args: DataArguments) -> None:
    """Names for the head's classes in the config's `id2label` (what transformers users read), the processor
    (so the pipeline), the card and the Space, instead of LABEL_0, LABEL_1, ...: a single-label column of more
    than two classes (MMHS150K's `fine_label`) gets one output per class, named by the data set's `ClassLabel`;
    a binary head the processor's "not hateful" / "hateful"; the fine-grained tasks are named by the parser
    (`_apply_task`)."""
    from datasets import ClassLabel

    if model_args.problem_type or model_args.label_names:
        return
    feature = splits[data_args.train_split].features.get(data_args.label_column)
    if not isinstance(feature, ClassLabel) or feature.num_classes <= 2:
        if model_args.num_labels != 2:
            raise RecipeError(f"num_labels {model_args.num_labels} does not fit label_column "
                              f"{data_args.label_column!r}, a binary label (0 / 1); leave num_labels out (or set 2)")
        model_args.label_names = list(BINARY_LABEL_NAMES)
        return
    names = list(feature.names)
    if model_args.num_labels not in (2, len(names)):  # 2: the default, not given
        raise RecipeError(f"num_labels {model_args.num_labels} does not fit label_column {data_args.label_column!r}, "
                          f"whose {len(names)} classes are {names}; leave num_labels out (or set {len(names)})")
    model_args.num_labels = len(names)
    model_args.label_names = names


def check_labelled_splits(splits, data_args: DataArguments) -> None:
    """Refuse, before any training, a label column the data set does not have and a train or eval split without
    a single label (Hateful Memes' test splits come without): Trainer would fail later, saying only that the
    model returned no loss, or at the first evaluation."""
    for split in dict.fromkeys((data_args.train_split, data_args.eval_split)):
        columns = splits[split].column_names
        if data_args.label_column not in columns:
            raise RecipeError(f"label_column {data_args.label_column!r} is not a column of the {split} split (it has "
                              f"{', '.join(columns)})")
        labels = splits[split][data_args.label_column]
        if labels and not isinstance(labels[0], list) and all(label is None or label < 0 for label in labels):
            raise RecipeError(f"the {split} split has no labels ({data_args.label_column!r} is missing or -1 in all "
                              f"{len(labels)} rows, as in Hateful Memes' test splits): train and evaluate on labelled "
                              "splits (train_split, eval_split)")


def _load_fine_grained(data_dir, cache_dir=None, annotations_dir=None, **options):
    from hm_hf.data.fine_grained import load_fine_grained

    return load_fine_grained(data_dir, annotations_dir, cache_dir=cache_dir, **options)


def protected_categories(splits, data_args: DataArguments, names) -> dict[str, dict[int, list[str]]]:
    """{split: {meme id: its gold protected categories}} of the evaluated splits, for the per-category miss
    rates of a binary model: from the splits' own `pc` column (hmd_fine_grained), else from the fine-grained
    annotations joined by id (hmd with fine_grained_annotations_dir; their dev_seen / dev_unseen are Hateful
    Memes' own splits, by the same name). Memes without fine-grained labels are left out; {} without them."""
    from hm_hf.metrics.fine_grained import PC_CLASSES

    if data_args.dataset == "hmd_fine_grained":
        source = {name: splits[name] for name in names}
    elif data_args.dataset == "hmd" and data_args.fine_grained_annotations_dir:
        fine = _load_fine_grained(data_args.data_dir, data_args.dataset_cache_dir,
                                  data_args.fine_grained_annotations_dir)
        source = {name: fine[name] for name in names if name in fine}
    else:
        return {}
    categories = {}
    for name, split in source.items():
        rows = split.select_columns(["id", "pc"])
        labelled = {meme: [PC_CLASSES[i] for i in pc] for meme, pc in zip(rows["id"], rows["pc"]) if pc}
        if labelled:
            categories[name] = labelled
    return categories


def load_tokenizer(model_args: ModelArguments, splits, data_args: DataArguments, output_dir: str):
    """The tokenizer named by the recipe, else the text / multimodal checkpoint's, else one trained here."""
    from transformers import AutoTokenizer

    name = model_args.tokenizer_name_or_path or model_args.text_model_name_or_path or model_args.model_name_or_path
    if model_args.model_type in ("clip", "rgcl") and not name:  # the CLIP checkpoint's own tokenizer
        name = ensure_tiny_clip(model_args, splits, data_args)
    if name:
        return AutoTokenizer.from_pretrained(name)
    from hm_hf.text.tokenizer import train_wordpiece_tokenizer

    train = splits[data_args.train_split]
    text_column = TEXT_COLUMNS[data_args.dataset]
    texts = list(train[text_column])
    if data_args.text_pair_column:
        texts += list(train[data_args.text_pair_column])
    logger.info("no tokenizer named: training a WordPiece vocabulary on the %s split", data_args.train_split)
    return train_wordpiece_tokenizer(texts, Path(output_dir) / "tokenizer")


def ensure_tiny_clip(model_args: ModelArguments, splits, data_args: DataArguments) -> str:
    """clip: the CLIP checkpoint folder; with `synthetic_if_missing`, a tiny CLIP (its tokenizer's merges
    learnt from the training texts) is written there when it does not exist yet: random, or with
    `synthetic_clip_pretraining_pairs` pre-trained on synthetic image / caption pairs."""
    name = model_args.vision_model_name_or_path
    if not name or not data_args.synthetic_if_missing:
        return name
    if (Path(name) / "config.json").is_file():
        from hm_hf.synthetic.clip_pretraining import PRETRAINING_FILE

        if data_args.synthetic_clip_pretraining_pairs and not (Path(name) / PRETRAINING_FILE).is_file():
            logger.warning("%s exists and was not pre-trained here (no %s): it is used as it is, not replaced by a "
                           "tiny CLIP pre-trained on %d synthetic pairs; remove it, or name another folder, to get "
                           "one", name, PRETRAINING_FILE, data_args.synthetic_clip_pretraining_pairs)
        return name
    from hm_hf.models.clip import make_tiny_clip

    state = PartialState()
    with state.main_process_first():
        if state.is_main_process and not (Path(name) / "config.json").is_file():
            train = splits[data_args.train_split]
            texts = list(train[TEXT_COLUMNS[data_args.dataset]])
            pairs = data_args.synthetic_clip_pretraining_pairs
            if pairs:
                from hm_hf.synthetic.clip_pretraining import pretrain_tiny_clip

                logger.info("writing a tiny CLIP pre-trained on %d synthetic image / caption pairs to %s", pairs, name)
                pretrain_tiny_clip(name, texts, num_pairs=pairs)
            else:
                logger.info("writing a tiny random CLIP (tokenizer from the %s split) to %s", data_args.train_split,
                            name)
                make_tiny_clip(name, texts)
    return name


def fasttext_model_path(data_args: DataArguments, output_dir) -> Path:
    """The run's fastText model: the recipe's, else the one trained into the output folder."""
    return Path(data_args.fasttext_model or Path(output_dir) / FASTTEXT_MODEL)


def features_detector(data_args: DataArguments) -> dict:
    """The detector that made the run's region features, its settings (recorded with the features) and the
    features' storage dtype."""
    from hm_hf.extract.cache import FeatureCache

    cache = FeatureCache(default_feature_cache(data_args))
    return {**detector_for_features(cache.source), "feature_dtype": cache.feature_dtype}


def build_processor(needs, data_args: DataArguments, tokenizer=None, image_processor=None,
                    mixed_precision: bool = False, label_names=None, multi_label: bool = False,
                    **settings) -> MemeProcessor:
    """The run's `MemeProcessor`: the Trainer's data collator, saved beside the model for inference.

    With `mixed_precision` (fp16/bf16 training) region features stay float16 until the model's autocast uses
    them (see `MemeCollator.region_dtype`); `label_names`: the head's class names (`apply_class_names`, or a
    fine-grained task's vocabulary), so the pipeline names its predictions as the model's config does;
    `multi_label`: a multi-label head (a fine-grained task); `settings` are further processor fields (the
    detector, the fastText model)."""
    if label_names:
        settings["label_names"] = list(label_names)
    if multi_label:
        settings["multi_label"] = True
    return MemeProcessor(
        model_inputs=tuple(needs),
        tokenizer=tokenizer,
        image_processor=image_processor,
        text_column=TEXT_COLUMNS[data_args.dataset],
        text_pair_column=data_args.text_pair_column,
        label_column=data_args.label_column,
        max_text_length=data_args.max_text_length,
        max_regions=data_args.max_regions,
        region_dtype="float16" if mixed_precision else "float32",
        **settings,
    )


def add_fasttext_embeddings(splits, data_args: DataArguments, output_dir):
    """Add the `text_embedding` column, training fastText on the training split first if needed."""
    from hm_hf.text.fasttext_embeddings import add_text_embeddings, train_fasttext

    model_path = fasttext_model_path(data_args, output_dir)
    text_columns = [TEXT_COLUMNS[data_args.dataset]] + ([data_args.text_pair_column] if data_args.text_pair_column else [])
    state = PartialState()
    with state.main_process_first():
        if state.is_main_process and not model_path.is_file():
            train = splits[data_args.train_split]
            texts = [" ".join(row[c] or "" for c in text_columns) for row in train.select_columns(text_columns)]
            logger.info("training fastText on the %s split -> %s", data_args.train_split, model_path)
            train_fasttext(texts, model_path, bucket=200_000, thread=1)  # reproducible under the seed
    return add_text_embeddings(splits, model_path, text_column=text_columns)


def add_clip_embedding_columns(splits, model, tokenizer, image_processor, data_args: DataArguments, peft_args):
    """The frozen CLIP's image and text vectors as cached columns (then the images are no longer read)."""
    if getattr(model.config, "model_type", "") not in ("hm_clip", "hm_rgcl") or \
            peft_args.peft_method not in ("none", "head_only"):
        raise RecipeError("clip_embedding_cache needs model_type clip or rgcl with frozen encoders (freeze_clip=true) "
                          "and no PEFT method on them")
    from hm_hf.models.clip.embedding_cache import add_clip_embeddings

    splits = add_clip_embeddings(splits, model, tokenizer, image_processor, text_column=TEXT_COLUMNS[data_args.dataset],
                                 text_pair_column=data_args.text_pair_column, max_length=data_args.max_text_length)
    return splits.remove_columns("image")
