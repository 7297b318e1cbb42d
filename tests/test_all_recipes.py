"""Every recipe in recipes/ parses and builds its model and PEFT method, with the Hub checkpoints it names
replaced by tiny local ones of the same architecture (the Hub cannot be reached in tests)."""

from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertModel, BertTokenizerFast, ConvNextImageProcessor, ResNetConfig, ResNetModel

import hm_hf  # noqa: F401
from hm_hf.models.uniter import HmUniterConfig, HmUniterForHatefulMemes
from hm_hf.models.vilbert import HmVilbertConfig, HmVilbertForHatefulMemes
from hm_hf.models.visual_bert import HmVisualBertConfig, HmVisualBertForHatefulMemes
from hm_hf.peft import freeze_all_but_head
from hm_hf.peft.params import describe_trainable
from hm_hf.training import model_loading
from hm_hf.training.arguments import parse_recipe
from hm_hf.processing import model_inputs

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted(p for p in (ROOT / "recipes").rglob("config_*.yaml"))
BERT = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37, max_position_embeddings=64)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_checkpoints")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list("abcdefghijklmnopqrstuvwxyz")
    (root / "vocab.txt").write_text("\n".join(vocab))
    tokenizer = BertTokenizerFast(str(root / "vocab.txt"))
    BertModel(BertConfig(vocab_size=len(vocab), **BERT)).save_pretrained(root / "bert")
    tokenizer.save_pretrained(root / "bert")
    ResNetModel(ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1])).save_pretrained(root / "resnet")
    ConvNextImageProcessor(size={"shortest_edge": 32}).save_pretrained(root / "resnet")
    HmVisualBertForHatefulMemes(HmVisualBertConfig(vocab_size=len(vocab), visual_embedding_dim=2048, **BERT)
                                ).save_pretrained(root / "visual_bert")
    HmUniterForHatefulMemes(HmUniterConfig(vocab_size=len(vocab), img_dim=2048, **BERT)).save_pretrained(root / "uniter")
    HmVilbertForHatefulMemes(HmVilbertConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
        max_position_embeddings=64, v_feature_size=2048, v_hidden_size=24, v_num_hidden_layers=2,
        v_num_attention_heads=2, v_intermediate_size=20, bi_hidden_size=24, bi_num_attention_heads=2,
        v_biattention_id=[0, 1], t_biattention_id=[0, 1])).save_pretrained(root / "vilbert")
    from hm_hf.models.clip import make_tiny_clip

    make_tiny_clip(root / "clip", ["a tiny clip tokenizer vocabulary", "memes and more memes"])
    return root


def _tiny_overrides(recipe_values, checkpoints, tmp_path):
    args = ["--output_dir", str(tmp_path / "out")]
    model_type = recipe_values.model_type
    if recipe_values.model_name_or_path:
        args += ["--model_name_or_path", str(checkpoints / model_type)]
    if recipe_values.text_model_name_or_path:
        args += ["--text_model_name_or_path", str(checkpoints / "bert")]
    if recipe_values.vision_model_name_or_path:
        vision = "clip" if model_type in ("clip", "rgcl") else "resnet"
        args += ["--vision_model_name_or_path", str(checkpoints / vision)]
    if recipe_values.tokenizer_name_or_path:
        args += ["--tokenizer_name_or_path", str(checkpoints / "bert")]
    return args


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: str(p.relative_to(ROOT / "recipes")))
def test_recipe_builds_its_model_and_peft_method(recipe, checkpoints, tmp_path):
    model_args, *_ = parse_recipe([str(recipe), "--output_dir", str(tmp_path / "out")])
    args = _tiny_overrides(model_args, checkpoints, tmp_path)
    model_args, data_args, peft_args, extra_args, training_args = parse_recipe([str(recipe), *args])
    assert data_args.data_dir and training_args.seed is not None
    vocab_size = None if model_args.tokenizer_name_or_path or model_args.text_model_name_or_path else 31
    config = model_loading.build_config(model_args, vocab_size)
    assert model_inputs(config)
    model = model_loading.build_model(model_args, config)
    total = sum(p.numel() for p in model.parameters())
    peft_config = model_loading.build_peft_config(model, model_args.model_type, peft_args)
    if peft_config is not None:
        from peft import get_peft_model

        model = get_peft_model(model, peft_config)
    elif peft_args.peft_method == "head_only":
        freeze_all_but_head(model)
    trainable, _, _ = describe_trainable(model)
    if peft_args.peft_method == "none" and getattr(config, "freeze_clip", False):
        assert 0 < trainable < total  # frozen CLIP encoders: only the projections, fusion and head train
    elif peft_args.peft_method == "none":
        assert trainable == total
    else:
        assert 0 < trainable < total, peft_args.peft_method
        head = [n for n, p in model.named_parameters() if p.requires_grad and "classifier" in n]
        assert head, "the classification head must be trained"
    assert isinstance(model, torch.nn.Module)
