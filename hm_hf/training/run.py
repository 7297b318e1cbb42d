"""The training job behind `accelerate launch recipes/train_peft.py <recipe.yaml> [--key value ...]`.

One function, `main(argv)`, so the whole job is testable in-process: parse the recipe, build data,
model and PEFT method, train with `transformers.Trainer` (resuming its own last complete checkpoint by
itself: `checkpoints`), evaluate every split and fit the decision policy on the evaluation split (`evaluation`), then
save the model or adapters with its processor and policy, `all_results.json`, a model card and figures,
and push them to the Hub from the main process when asked.

`all_results.json`: the training metrics as `train_<name>` (`train_loss`, `train_runtime`, `train_epoch`,
...; runs before this layout wrote `train_train_loss` and the like, which `multi_seed` still reads), every
labelled split's metrics as `<split>_<metric>` and the decision policy as `decision_<field>`.
"""

from __future__ import annotations

import json
import logging
import shlex
import sys
from pathlib import Path

import numpy as np
import torch
from transformers import EarlyStoppingCallback, Trainer, set_seed

from hm_hf.data.torch_dataset import RegionRowsDataset
from hm_hf.fileio import atomic_write_text
from hm_hf.metrics import MULTI_LABEL
from hm_hf.peft.params import describe_trainable
from hm_hf.processing.processor import TOKEN_INPUTS, model_inputs
from hm_hf.synthetic.data import is_synthetic
from hm_hf.training.arguments import RecipeError, parse_recipe
from hm_hf.training import checkpoints
from hm_hf.training.checkpoints import last_complete_checkpoint

logger = logging.getLogger("hm_hf.training")


def _resolve_precision(training_args) -> None:
    """fp16 on a GPU keeps fp32 master weights (Trainer's AMP); without a GPU it falls back to fp32, loudly."""
    if training_args.fp16 and not torch.cuda.is_available():
        logger.warning("fp16 was asked for but no CUDA GPU is present: training in fp32 on the CPU instead")
        training_args.fp16 = False
        training_args.fp16_full_eval = False


def _predict_logits(trainer: Trainer, dataset) -> np.ndarray:
    output = trainer.predict(dataset, metric_key_prefix="predict")
    return output.predictions[0] if isinstance(output.predictions, tuple) else output.predictions


def train_metrics(metrics: dict) -> dict:
    """Trainer's training metrics under one `train_` prefix (`train_loss`, `train_epoch`, not `train_train_loss`)."""
    return {key if key.startswith("train_") else f"train_{key}": value for key, value in metrics.items()}


def cli(argv: list[str] | None = None) -> int:
    """`recipes/train_peft.py`: `main`, with a recipe or data mistake (`RecipeError`: the message names the file,
    key or split and what to do) printed as one line and exit status 2 instead of a traceback."""
    try:
        return main(argv)
    except RecipeError as err:
        print(f"train_peft: error: {err}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    from accelerate import PartialState

    from hm_hf.metrics import make_compute_metrics
    from hm_hf.training import card, data, evaluation, model_loading

    model_args, data_args, peft_args, extra_args, training_args = parse_recipe(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    state = PartialState()
    _resolve_precision(training_args)
    # We push ourselves after training, so that a push failure never costs the trained model.
    push_to_hub, training_args.push_to_hub = training_args.push_to_hub, False
    training_args.remove_unused_columns = False  # the collator reads region features and ids
    if training_args.metric_for_best_model and training_args.metric_for_best_model.startswith("eval_"):
        training_args.metric_for_best_model = training_args.metric_for_best_model[len("eval_"):]
    set_seed(training_args.seed)
    output_dir = Path(training_args.output_dir)
    # Another run's checkpoints are refused before this one writes anything into output_dir (tokenizer,
    # base model, fastText) or spends minutes loading.
    resume_from = last_complete_checkpoint(output_dir) if extra_args.resume else None
    run_record = checkpoints.run_settings(model_args, data_args, peft_args, training_args)
    if resume_from:
        checkpoints.check_same_run(output_dir, run_record)
    elif not extra_args.resume and state.is_main_process:
        checkpoints.remove_checkpoints(output_dir)

    # Model first (its config says what data it reads), then data, then the tokenizer-dependent parts.
    data.ensure_data_dir(data_args)
    inputs = model_inputs(model_loading.build_config(model_args))
    needs = set(inputs)
    splits = data.load_splits(data_args, needs)
    data.check_labelled_splits(splits, data_args)
    data.apply_class_names(model_args, splits, data_args)  # a head of more classes, named as the data set names them
    tokenizer = data.load_tokenizer(model_args, splits, data_args, output_dir) if needs & TOKEN_INPUTS else None
    if "text_embedding" in needs:
        splits = data.add_fasttext_embeddings(splits, data_args, output_dir)
    vocab_size = len(tokenizer) if tokenizer is not None else None
    model = model_loading.build_model(model_args, model_loading.build_config(model_args, vocab_size))
    if tokenizer is not None:  # a vocabulary that does not fit the checkpoint is refused before any training
        from hm_hf.text.tokenizer import check_tokenizer_fits

        check_tokenizer_fits(tokenizer, model, model_args.tokenizer_name_or_path)
    image_processor = model_loading.load_image_processor(model_args) if "pixels" in needs else None

    decode_images = "pixels" in needs
    if data_args.clip_embedding_cache:
        splits = data.add_clip_embedding_columns(splits, model, tokenizer, image_processor, data_args, peft_args)
        decode_images = False  # the rows now carry the frozen CLIP's vectors instead
    # The collator, and what inference needs to feed the model as training did (saved beside it at the end).
    settings = data.features_detector(data_args) if "regions" in needs else {}
    synthetic = is_synthetic(data_args.data_dir)  # the card and the processor (so the Space) say so
    settings["trained_on_synthetic_data"] = synthetic
    if "text_embedding" in needs:
        settings["fasttext_model"] = str(data.fasttext_model_path(data_args, output_dir))
    processor = data.build_processor(inputs, data_args, tokenizer, image_processor,
                                     mixed_precision=training_args.fp16 or training_args.bf16,
                                     label_names=model_args.label_names,
                                     multi_label=model_args.problem_type == MULTI_LABEL, **settings)
    peft_config = model_loading.build_peft_config(model, model_args.model_type, peft_args)
    if peft_config is not None:
        from peft import get_peft_model

        if state.is_main_process and not model_args.model_name_or_path:
            # A base model that exists nowhere else travels with its adapters (saved before peft wraps it).
            model_loading.save_base_model(model, output_dir)
        elif state.is_main_process:
            model_loading.remove_stale_base_model(output_dir, model_args.model_name_or_path)
        model = get_peft_model(model, peft_config)
    elif peft_args.peft_method == "head_only":
        from hm_hf.peft import freeze_all_but_head

        freeze_all_but_head(model)
    trainable, total, percent = describe_trainable(model)
    logger.info("trainable parameters: %s of %s (%.2f%%)", f"{trainable:,}", f"{total:,}", percent)

    def rows(split):  # fast batched access (region features as zero-copy numpy views)
        return RegionRowsDataset(splits[split], decode_images=decode_images)

    compute_metrics = make_compute_metrics(model_args.num_labels, problem_type=model_args.problem_type)
    callbacks = []
    collator = processor
    rgcl = model_args.model_type == "rgcl"
    if rgcl:  # retrieval-guided training: the train split re-embedded into the index every epoch
        from hm_hf.training.rgcl import MemeIdCollator, RetrievalRefreshCallback

        collator = MemeIdCollator(processor)
        callbacks.append(RetrievalRefreshCallback(rows(data_args.train_split), processor, source=data_args.train_split,
                                                  label_column=data_args.label_column))
    if extra_args.early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=extra_args.early_stopping_patience))
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=rows(data_args.train_split),
        eval_dataset=rows(data_args.eval_split),
        data_collator=collator,
        processing_class=tokenizer,
        compute_metrics=compute_metrics,
        callbacks=callbacks,
    )
    if resume_from:
        logger.info("resuming from %s", resume_from)
    if state.is_main_process:
        checkpoints.write_run_record(output_dir, run_record)
    train_result = trainer.train(resume_from_checkpoint=resume_from)
    index_info = None
    if rgcl:  # the index the saved model decides with: the train split under the final (best) weights
        from hm_hf.training.rgcl import build_index, rgcl_model

        inner = rgcl_model(trainer.model)
        inner.retrieval_index = build_index(inner, rows(data_args.train_split), processor, data_args.train_split,
                                            data_args.label_column)
        index_info = {"size": len(inner.retrieval_index), "sources": inner.retrieval_index.source_counts(),
                      "decision_rule": inner.config.decision_rule, "knn_k": inner.config.knn_k,
                      "knn_vote": inner.config.knn_vote, "contrastive_loss": inner.config.contrastive_loss}
    trainer.save_model(str(output_dir))
    if state.is_main_process:
        processor.save_pretrained(output_dir)
        if rgcl and inner is not trainer.model:  # a peft model saved only its adapters: the index goes beside them
            inner.retrieval_index.save(output_dir)
    trainer.log_metrics("train", train_result.metrics)

    # Every split predicted, the decision policy fitted on the evaluation split, the labelled splits scored.
    binary = model_args.num_labels == 2 and model_args.problem_type is None
    categories = data.protected_categories(splits, data_args, [n for n in splits if n != data_args.train_split]) \
        if binary else None  # for the per-category miss rates
    evaluated = evaluation.evaluate_splits(
        lambda name: _predict_logits(trainer, rows(name)), splits, train_split=data_args.train_split,
        eval_split=data_args.eval_split, label_column=data_args.label_column, compute_metrics=compute_metrics,
        threshold_rule=extra_args.threshold_rule, problem_type=model_args.problem_type,
        label_names=model_args.label_names, categories=categories, output_dir=output_dir,
        main_process=state.is_main_process)
    processor.decision_policy = evaluated.policy
    results = evaluated.results
    all_results = {**train_metrics(train_result.metrics), **evaluated.flat()}
    if state.is_main_process:
        if evaluated.policy is not None:  # the processor's part: its threshold is the policy's
            evaluated.policy.save_pretrained(output_dir)
        atomic_write_text(output_dir / "all_results.json", json.dumps(all_results, indent=2, default=float) + "\n")
        card.write_model_card(
            output_dir,
            model_name=training_args.hub_model_id or output_dir.name,
            model_type=model_args.model_type,
            base_model=card.hub_base_model(  # a CLIP model's checkpoint is its vision_model_name_or_path
                model_args.model_name_or_path,
                model_args.vision_model_name_or_path if model_args.model_type in model_loading.CLIP_MODEL_TYPES else None,
                model_args.text_model_name_or_path),
            dataset=data_args.dataset,
            peft_method=peft_args.peft_method,
            results=results,
            figures=evaluated.figures,
            trainable=trainable,
            total=total,
            recipe_text=extra_args.recipe_text,
            command="accelerate launch recipes/train_peft.py " + " ".join(map(shlex.quote, argv or sys.argv[1:])),
            synthetic=synthetic,
            policy=evaluated.policy,
            problem_type=model_args.problem_type,
            task=data_args.label_column,
            text_pair=bool(data_args.text_pair_column),
            load_name=training_args.hub_model_id or training_args.output_dir,
            retrieval_index=index_info,
            label_names=model_args.label_names,
        )
        logger.info("results: %s", json.dumps(results, default=float))
    state.wait_for_everyone()
    if push_to_hub and state.is_main_process:
        from hm_hf.hub import PushError, push_folder
        from hm_hf.inference.model_loading import folders_to_push

        repo_id = training_args.hub_model_id or output_dir.name
        extra, delete = folders_to_push(output_dir)
        for path_in_repo, local in extra.items():
            logger.info("%s is a local folder the model needs: pushing it too, as %s/, so that %s loads on any "
                        "machine", local, path_in_repo, repo_id)
        try:
            push_folder(output_dir, repo_id, private=training_args.hub_private_repo is not False,
                        token=training_args.hub_token, extra_folders=extra, delete_patterns=delete or None)
        except PushError as err:
            logger.error("%s", err)
            return 1
    return 0
