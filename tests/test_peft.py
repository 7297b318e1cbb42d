"""PEFT on hm_hf models: LoRA, IA3 and the PE paper's bottleneck adapter (a registered peft method)."""

from __future__ import annotations

import json

import pytest
import torch
from peft import PeftConfig, PeftModel, get_peft_model
from peft.utils import PeftType

import hm_hf.peft as hp
from hm_hf.models.vilbert import HmVilbertConfig, HmVilbertForHatefulMemes
from hm_hf.peft import BottleneckConfig, BottleneckLayer, build_peft_config, describe_trainable

FEAT = 16


def vilbert():
    return HmVilbertForHatefulMemes(HmVilbertConfig(
        vocab_size=99, hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=37,
        max_position_embeddings=40, v_feature_size=FEAT, v_hidden_size=24, v_num_hidden_layers=2,
        v_num_attention_heads=2, v_intermediate_size=20, bi_hidden_size=24, bi_num_attention_heads=2,
        v_biattention_id=[0, 1], t_biattention_id=[1, 2]))


def hm_visual_bert():
    from hm_hf.models.visual_bert import HmVisualBertConfig, HmVisualBertForHatefulMemes

    return HmVisualBertForHatefulMemes(HmVisualBertConfig(
        vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
        max_position_embeddings=40, visual_embedding_dim=FEAT))


def tf_visual_bert():
    """transformers' own VisualBERT with a 2-way head (`cls`): the PEFT defaults must work on it too."""
    from transformers import VisualBertConfig, VisualBertForVisualReasoning

    return VisualBertForVisualReasoning(VisualBertConfig(
        vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
        max_position_embeddings=40, visual_embedding_dim=FEAT, num_labels=2))


def hm_uniter():
    from hm_hf.models.uniter import HmUniterConfig, HmUniterForHatefulMemes

    return HmUniterForHatefulMemes(HmUniterConfig(
        vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
        max_position_embeddings=40, img_dim=FEAT))


def hm_concat_bert():
    """Concat with a BERT text encoder over region features: adapters go into the encoder, the new
    projections / fusion MLP / head train in full."""
    from transformers import BertConfig

    from hm_hf.models.concat import HmConcatConfig, HmConcatForHatefulMemes

    return HmConcatForHatefulMemes(HmConcatConfig(
        text_source="encoder", visual_embedding_dim=FEAT, image_projection_dim=8, fusion_hidden_sizes=[8],
        text_config=BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                               intermediate_size=37, max_position_embeddings=40)))


MODELS = {"vilbert": vilbert, "hm_visual_bert": hm_visual_bert, "tf_visual_bert": tf_visual_bert,
          "hm_uniter": hm_uniter, "hm_concat_bert": hm_concat_bert}
MODEL_PARAMS = list(MODELS)
PREFIX = {"lora": "lora_", "ia3": "ia3_", "bottleneck": "bottleneck_"}
# non-identity adapter initialisation so that save/load and merge tests compare something non-trivial
RANDOM_INIT = {"lora": {"init_lora_weights": False}, "ia3": {"init_ia3_weights": False},
               "bottleneck": {"init_weights": False}}


def batch(name: str, bsz=3, seq=6, regions=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    b = dict(
        input_ids=torch.randint(1, 99, (bsz, seq), generator=g),
        attention_mask=torch.ones(bsz, seq, dtype=torch.long),
        token_type_ids=torch.zeros(bsz, seq, dtype=torch.long),
        visual_embeds=torch.randn(bsz, regions, FEAT, generator=g),
        visual_attention_mask=torch.ones(bsz, regions, dtype=torch.long),
        labels=torch.tensor([0, 1, 1])[:bsz],
    )
    b["attention_mask"][0, 4:] = 0
    b["visual_attention_mask"][1, 3:] = 0
    if name != "tf_visual_bert":
        boxes = torch.rand(bsz, regions, 2, generator=g) * 0.5
        b["visual_boxes"] = torch.cat([boxes, boxes + 0.4], -1)
    return b


def make(name: str, seed=0):
    torch.manual_seed(seed)
    return MODELS[name]().eval()


def logits(model, name):
    with torch.no_grad():
        return model(**batch(name)).logits


# ------------------------------------------------------------------------------------------------ registration
def test_registration_is_idempotent_and_enum_member_behaves():
    hp.register_bottleneck()
    hp.register_bottleneck()
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING, PEFT_TYPE_TO_PREFIX_MAPPING, PEFT_TYPE_TO_TUNER_MAPPING

    member = PeftType.BOTTLENECK
    assert PeftType("BOTTLENECK") is member and PeftType["BOTTLENECK"] is member and member in list(PeftType)
    assert member == "BOTTLENECK" and json.dumps({"t": member}) == '{"t": "BOTTLENECK"}'
    assert PEFT_TYPE_TO_CONFIG_MAPPING[member] is BottleneckConfig
    assert PEFT_TYPE_TO_TUNER_MAPPING[member] is hp.BottleneckModel
    assert PEFT_TYPE_TO_PREFIX_MAPPING[member] == "bottleneck_"
    assert BottleneckConfig().peft_type is member


def test_bottleneck_widths_follow_the_paper():
    cfg = BottleneckConfig()
    assert cfg.width_for(768) == 76 and cfg.width_for(1024) == 102
    assert BottleneckConfig(bottleneck_size=8).width_for(768) == 8
    with pytest.raises(ValueError, match="reduction_factor"):
        BottleneckConfig(reduction_factor=0)


# ------------------------------------------------------------------------------------- every model x method
@pytest.mark.parametrize("method", ["lora", "ia3", "bottleneck"])
@pytest.mark.parametrize("name", MODEL_PARAMS)
def test_peft_train_save_load(name, method, tmp_path):
    base_logits = logits(make(name), name)
    model = make(name)
    config = build_peft_config(model, method, **RANDOM_INIT[method])
    head = config.modules_to_save[0]
    peft_model = get_peft_model(model, config)

    # only adapters and the head train, and both exist
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert trainable and all(PREFIX[method] in n or ".modules_to_save." in n for n in trainable), trainable
    assert any(f"{head}.modules_to_save" in n for n in trainable)
    assert any(PREFIX[method] in n for n in trainable) and any("modules_to_save" in n for n in trainable)
    n_train, n_total, pct = describe_trainable(peft_model)
    assert (n_train, n_total) == peft_model.get_nb_trainable_parameters() and 0 < pct < 100

    # forward / backward reach exactly the trainable parameters
    peft_model.train()
    out = peft_model(**batch(name))
    out.loss.backward()
    for n, p in peft_model.named_parameters():
        assert (p.grad is not None) == p.requires_grad, n
    peft_model.eval()
    adapted = logits(peft_model, name)
    assert not torch.allclose(adapted, base_logits)  # the adapter does something

    # adapter save / load: identical logits on a fresh base model
    peft_model.save_pretrained(tmp_path)
    assert (tmp_path / "adapter_model.safetensors").exists() and (tmp_path / "adapter_config.json").exists()
    assert type(PeftConfig.from_pretrained(tmp_path)) is type(config)
    reloaded = PeftModel.from_pretrained(make(name), tmp_path).eval()
    torch.testing.assert_close(logits(reloaded, name), adapted, rtol=0, atol=0)

    if method == "bottleneck":
        with pytest.raises(NotImplementedError, match="cannot be merged"):
            reloaded.merge_and_unload()
        # unload gives the base model back (head reverts to the original too)
        torch.testing.assert_close(logits(reloaded.unload(), name), base_logits, rtol=0, atol=0)
    else:
        # peft's own merge_and_unload for LoRA; hm_hf's wrapper where peft trips over Sequential heads (IA3)
        merged = reloaded.merge_and_unload() if method == "lora" else hp.merge_and_unload(reloaded)
        assert not any(PREFIX[method] in n for n, _ in merged.named_parameters())
        torch.testing.assert_close(logits(merged, name), adapted, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", MODEL_PARAMS)
def test_bottleneck_default_init_leaves_model_unchanged(name):
    base_logits = logits(make(name), name)
    model = make(name)
    peft_model = get_peft_model(model, build_peft_config(model, "bottleneck"))
    torch.testing.assert_close(logits(peft_model, name), base_logits, rtol=0, atol=0)
    # with adapters disabled the base model is back as well
    with peft_model.disable_adapter():
        torch.testing.assert_close(logits(peft_model, name), base_logits, rtol=0, atol=0)


def test_concat_over_features_has_nothing_to_adapt_and_says_so():
    from hm_hf.models.concat import HmConcatConfig, HmConcatForHatefulMemes

    model = HmConcatForHatefulMemes(HmConcatConfig(visual_embedding_dim=FEAT, text_embedding_dim=8))
    assert hp.head_modules(model) == ["classifier", "text_projection", "image_projection", "fusion"]
    for method in ("lora", "ia3", "bottleneck"):
        with pytest.raises(ValueError, match="nothing to adapt"):
            build_peft_config(model, method)


def test_bottleneck_layer_computes_the_papers_formula():
    from transformers.models.bert.modeling_bert import BertConfig, BertOutput

    torch.manual_seed(0)
    block = BertOutput(BertConfig(hidden_size=20, intermediate_size=30)).eval()
    layer = BottleneckLayer(block, "default", BottleneckConfig(bottleneck_size=4, init_weights=False)).eval()
    x, residual = torch.randn(2, 5, 30), torch.randn(2, 5, 20)
    down, up = layer.bottleneck_down["default"], layer.bottleneck_up["default"]
    h = block.dense(x)
    h = h + up(torch.relu(down(block.LayerNorm(h))))
    torch.testing.assert_close(layer(x, residual), block.LayerNorm(h + residual))
    assert down.out_features == 4 and up.in_features == 4


def test_bottleneck_rejects_blocks_without_the_output_layout():
    model = make("vilbert")
    with pytest.raises(ValueError, match="dense"):
        get_peft_model(model, BottleneckConfig(target_modules=["intermediate"], modules_to_save=["classifier"]))


def test_vilbert_bottleneck_adapts_both_streams_not_coattention():
    model = make("vilbert")
    peft_model = get_peft_model(model, build_peft_config(model, "bottleneck"))
    names = peft_model.base_model.targeted_module_names
    assert sorted(names) == sorted(
        [f"bert.encoder.layer.{i}.output" for i in range(3)] + [f"bert.encoder.v_layer.{i}.output" for i in range(2)]
    )


# ---------------------------------------------------------------------------------- exact base-size counts (meta)
def _adapter_params(peft_model) -> int:
    return sum(p.numel() for n, p in peft_model.named_parameters() if "bottleneck_" in n)


def test_visual_bert_base_adapter_count_on_meta_device():
    from transformers import VisualBertConfig, VisualBertModel

    from hm_hf.models.visual_bert import HmVisualBertConfig, HmVisualBertForHatefulMemes

    expected = 12 * (768 * 76 + 76 + 76 * 768 + 768)
    assert expected == 1_410_960
    with torch.device("meta"):
        tf_model = VisualBertModel(VisualBertConfig(visual_embedding_dim=2048))
        hm_model = HmVisualBertForHatefulMemes(HmVisualBertConfig())
    for model in (tf_model, hm_model):
        peft_model = get_peft_model(model, build_peft_config(model, "bottleneck"))
        assert _adapter_params(peft_model) == expected
        assert next(p for n, p in peft_model.named_parameters() if "bottleneck_" in n).device.type == "meta"


def test_vilbert_base_adapter_count_on_meta_device():
    with torch.device("meta"):
        model = HmVilbertForHatefulMemes(HmVilbertConfig())
    peft_model = get_peft_model(model, build_peft_config(model, "bottleneck"))
    # PE paper: 12 text layers (768 -> 76) + 6 visual layers (1024 -> 102) = 2,671,092
    assert _adapter_params(peft_model) == 12 * (2 * 768 * 76 + 76 + 768) + 6 * (2 * 1024 * 102 + 102 + 1024)
    assert _adapter_params(peft_model) == 2_671_092
    trainable, _, _ = describe_trainable(peft_model)
    assert trainable == 2_671_092 + 1_053_698  # adapters + the paper's ViLBERT head


def test_describe_trainable_on_plain_modules(capsys):
    lin = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    lin[0].requires_grad_(False)
    assert describe_trainable(lin) == (8, 23, pytest.approx(100 * 8 / 23))
    line = hp.print_trainable(lin)
    assert "trainable params: 8 || all params: 23" in capsys.readouterr().out and line.startswith("trainable")


# ------------------------------------------------------------------------------------------------ Trainer
class _Rows(torch.utils.data.Dataset):
    def __init__(self, n=12):
        b = batch("vilbert", bsz=3)
        self.rows = [{k: v[i % 3] for k, v in b.items()} for i in range(n)]

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i]


def test_trainer_with_bottleneck_changes_only_adapters_and_head(tmp_path):
    from transformers import Trainer, TrainingArguments, default_data_collator

    model = make("vilbert")
    peft_model = get_peft_model(model, build_peft_config(model, "bottleneck", init_weights=False))
    before = {n: p.detach().clone() for n, p in peft_model.named_parameters()}
    args = TrainingArguments(
        output_dir=str(tmp_path), max_steps=3, per_device_train_batch_size=4, learning_rate=1e-2,
        remove_unused_columns=False, label_names=["labels"], save_strategy="no", logging_strategy="no",
        report_to="none", use_cpu=True, dataloader_num_workers=0, disable_tqdm=True,
    )
    Trainer(model=peft_model, args=args, train_dataset=_Rows(), data_collator=default_data_collator).train()
    changed = {n for n, p in peft_model.named_parameters() if not torch.equal(p.detach(), before[n])}
    assert changed, "nothing trained"
    assert all("bottleneck_" in n or "classifier.modules_to_save" in n for n in changed), changed
    assert any("bottleneck_up" in n for n in changed) and any("modules_to_save" in n for n in changed)
    peft_model.save_pretrained(tmp_path / "adapter")
    reloaded = PeftModel.from_pretrained(make("vilbert"), tmp_path / "adapter").eval()
    torch.testing.assert_close(logits(reloaded, "vilbert"), logits(peft_model.eval(), "vilbert"), rtol=0, atol=0)


def test_peft_params_cli_reproduces_the_papers_visual_bert_counts(capsys):
    from hm_hf.peft.params import cli, count_for

    # PE paper (MMF VisualBERT): 112,044,290 parameters; head only 593,666; adapters + head 2,004,626
    assert count_for("hm_visual_bert", "full")[:2] == (112_044_290, 112_044_290)
    assert count_for("hm_visual_bert", "head")[0] == 593_666
    assert count_for("hm_visual_bert", "bottleneck")[0] == 2_004_626
    assert count_for("visual_bert", "head")[0] == 593_666  # a recipe's model_type: hm_hf's model, not transformers'
    assert cli(["hm_vilbert", "--method", "head"]) == 0
    assert "trainable params: 1,053,698 || all params: 236,759,554" in capsys.readouterr().out
    assert cli(["hm_visual_bert", "--method", "lora", "--set", "num_hidden_layers=2", "--peft", "r=4"]) == 0
    # LoRA r=4 on query/value of 2 layers: 2 x 2 x (768*4 + 4*768) + head
    assert f"trainable params: {2 * 2 * 2 * 768 * 4 + 593_666:,d}" in capsys.readouterr().out
    for argv, says in [(["no_such_type"], "'no_such_type' is neither a saved model folder nor a model type "
                                          "(hm_hf's: hm_visual_bert"),
                       (["hm_visual_bert", "--set", "num_hiden_layers=1"], "has no setting num_hiden_layers"),
                       (["hm_visual_bert", "--method", "lora", "--peft", "target_modules=[\"nope\"]"],
                        "No modules were targeted")]:
        assert cli(argv) == 2  # a misspelt setting once counted the full-size model without a word
        err = capsys.readouterr().err
        assert err.startswith("hm-hf peft-params: error: ") and says in err and "Traceback" not in err


# ------------------------------------------------------------------------------------------------ head
@pytest.mark.parametrize("model_type", ["hm_concat", "hm_visual_bert", "hm_uniter", "hm_vilbert", "hm_clip"])
def test_head_only_training_and_peft_params_count_the_same_head(model_type):
    """One definition of "head": `peft_method: head_only` trains what `hm-hf peft-params --method head` counts,
    i.e. every parameter of `head_modules` (the classifier; Concat's and CLIP's projections and fusion too)."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from hm_hf.peft import freeze_all_but_head, head_modules
    from hm_hf.peft.params import count_for

    with torch.device("meta"):
        model = AutoModelForSequenceClassification.from_config(AutoConfig.for_model(model_type))
    heads = freeze_all_but_head(model)
    trainable, _, _ = describe_trainable(model)
    assert heads == head_modules(model) and trainable == count_for(model_type, "head")[0]
    by_module = sum(p.numel() for n, m in model.named_modules() if n.rsplit(".", 1)[-1] in heads
                    for p in m.parameters())
    assert trainable == by_module > 0
    expected = {"hm_visual_bert": 593_666, "hm_vilbert": 1_053_698}  # the PE paper's head-only counts
    if model_type in expected:
        assert trainable == expected[model_type]


def test_an_untested_peft_version_is_a_named_error(monkeypatch):
    import peft

    from hm_hf.peft.enum_patch import TESTED_PEFT_VERSIONS, UntestedPeftVersionError, check_peft_version, ensure_peft_type

    low, high = TESTED_PEFT_VERSIONS
    assert low <= check_peft_version() < high  # the installed one is tested
    assert str(check_peft_version("0.18.0")) == "0.18.0" and str(check_peft_version("0.21.2")) == "0.21.2"
    for version in ("0.17.1", "0.22.0", "1.0.0", "0.22.0.dev0"):
        monkeypatch.setattr(peft, "__version__", version)
        with pytest.raises(UntestedPeftVersionError, match=rf"peft {version} is installed.*pip install 'peft>=0\.18\.0,<0\.22'"):
            ensure_peft_type()
