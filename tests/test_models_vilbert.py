"""ViLBERT: forward/backward, masking, save/load, gradient checkpointing, SDPA vs eager, converter."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from hm_hf.models.vilbert import HmVilbertConfig, HmVilbertForHatefulMemes, HmVilbertModel, region_locations
from hm_hf.models.vilbert.convert_vilbert_checkpoint import (
    cli as convert_cli,
    config_from_state_dict,
    convert_vilbert_state_dict,
)

from region_batches import region_batch  # tests/region_batches.py

TINY = dict(
    vocab_size=99, hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=37,
    max_position_embeddings=40, v_feature_size=16, v_hidden_size=24, v_num_hidden_layers=2,
    v_num_attention_heads=2, v_intermediate_size=20, bi_hidden_size=24, bi_num_attention_heads=2,
    v_biattention_id=[0, 1], t_biattention_id=[1, 2],
)


def register_auto():
    """hm_hf.models.auto registers every model; until it lists ViLBERT, register it here (idempotent)."""
    from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification

    try:
        from hm_hf.models.auto import register_auto_classes

        register_auto_classes()
    except ImportError:
        pass
    AutoConfig.register("hm_vilbert", HmVilbertConfig, exist_ok=True)
    AutoModel.register(HmVilbertConfig, HmVilbertModel, exist_ok=True)
    AutoModelForSequenceClassification.register(HmVilbertConfig, HmVilbertForHatefulMemes, exist_ok=True)


def tiny_config(**kw) -> HmVilbertConfig:
    return HmVilbertConfig(**{**TINY, **kw})


def batch():
    """Text padding in row 0, region padding in row 1, row 2 unlabelled."""
    return region_batch([5, 7, 7], [5, 3, 5], [0, 1, -100], vocab_size=99, feature_dim=16)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return HmVilbertForHatefulMemes(tiny_config()).eval()


def test_forward_backward_all_parameters_get_gradients(model):
    model.train()
    out = model(**batch())
    assert out.logits.shape == (3, 2) and torch.isfinite(out.loss)
    out.loss.backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    # only the padding row of word embeddings may be untouched; every layer of both streams is used
    assert no_grad == [], no_grad
    model.zero_grad()
    model.eval()


def test_loss_is_cross_entropy_on_logits_ignoring_unlabelled(model):
    b = batch()
    out = model(**b)
    expected = torch.nn.functional.cross_entropy(out.logits[:2], b["labels"][:2])
    torch.testing.assert_close(out.loss, expected)
    b["labels"] = torch.full((3,), -100)
    assert model(**b).loss.item() == 0.0


def test_padding_regions_and_tokens_never_change_output(model):
    b = batch()
    ref = model(**b).logits
    # append 4 padding regions of garbage and 3 padding tokens; same logits
    b2 = dict(b)
    b2["visual_embeds"] = torch.cat([b["visual_embeds"], 100 * torch.randn(3, 4, 16)], 1)
    b2["visual_boxes"] = torch.cat([b["visual_boxes"], torch.rand(3, 4, 4)], 1)
    b2["visual_attention_mask"] = torch.cat([b["visual_attention_mask"], torch.zeros(3, 4, dtype=torch.long)], 1)
    b2["input_ids"] = torch.cat([b["input_ids"], torch.randint(1, 99, (3, 3))], 1)
    b2["attention_mask"] = torch.cat([b["attention_mask"], torch.zeros(3, 3, dtype=torch.long)], 1)
    b2["token_type_ids"] = torch.zeros_like(b2["input_ids"])
    torch.testing.assert_close(model(**b2).logits, ref, rtol=1e-5, atol=1e-5)
    # and changing what a masked region holds does not matter either
    b3 = dict(b)
    b3["visual_embeds"] = b["visual_embeds"].clone()
    b3["visual_embeds"][1, 3:] = 1e3
    torch.testing.assert_close(model(**b3).logits, ref, rtol=1e-5, atol=1e-5)
    # while a real region does
    b3["visual_embeds"][1, 0] += 5
    assert not torch.allclose(model(**b3).logits[1], ref[1], atol=1e-4)


def test_regions_and_text_both_matter(model):
    b = batch()
    ref = model(**b).logits
    b2 = dict(b, visual_boxes=torch.rand(3, 5, 4))
    assert not torch.allclose(model(**b2).logits, ref)
    b3 = dict(b, input_ids=torch.randint(1, 99, (3, 7)))
    assert not torch.allclose(model(**b3).logits, ref)


def test_region_locations_appends_normalised_area():
    boxes = torch.tensor([[[0.1, 0.2, 0.5, 0.6]]])
    loc = region_locations(boxes)
    torch.testing.assert_close(loc, torch.tensor([[[0.1, 0.2, 0.5, 0.6, 0.16]]]))
    with pytest.raises(ValueError, match="visual_boxes"):
        region_locations(torch.rand(1, 2, 3))


def test_coattention_attends_over_real_keys_only():
    from hm_hf.models.bert_layers import make_attention_mask
    from hm_hf.models.vilbert.modeling_vilbert import _attend

    torch.manual_seed(1)
    q, k, v = torch.randn(2, 3, 8), torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    out = _attend(q, k, v, make_attention_mask(mask), num_heads=2, dropout_p=0.0)
    # reference: per head softmax over the real keys only
    ref = []
    for b in range(2):
        n = int(mask[b].sum())
        heads = []
        for h in range(2):
            sl = slice(4 * h, 4 * h + 4)
            w = (q[b, :, sl] @ k[b, :n, sl].T / 2.0).softmax(-1)
            heads.append(w @ v[b, :n, sl])
        ref.append(torch.cat(heads, -1))
    torch.testing.assert_close(out, torch.stack(ref), rtol=1e-5, atol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_fp16_autocast_forward_on_gpu():
    torch.manual_seed(4)
    model = HmVilbertForHatefulMemes(tiny_config()).cuda().eval()
    b = {k: v.cuda() for k, v in batch().items()}
    with torch.no_grad():
        ref = model(**b).logits
        with torch.autocast("cuda", dtype=torch.float16):
            out = model(**b)
    assert torch.isfinite(out.logits).all() and torch.isfinite(out.loss)
    torch.testing.assert_close(out.logits.float(), ref, rtol=2e-2, atol=2e-2)


def test_gradient_checkpointing_same_gradients():
    torch.manual_seed(2)
    cfg = tiny_config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, v_hidden_dropout_prob=0.0,
                      v_attention_probs_dropout_prob=0.0)
    m = HmVilbertForHatefulMemes(cfg).train()
    m(**batch()).loss.backward()
    ref = {n: p.grad.clone() for n, p in m.named_parameters()}
    m.zero_grad()
    if hasattr(m, "activation_checkpointing_enable"):  # transformers >= 5.x name
        m.activation_checkpointing_enable({"use_reentrant": False})
    else:
        m.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    assert all(layer.gradient_checkpointing for layer in m.bert.encoder.c_layer)
    m(**batch()).loss.backward()
    for n, p in m.named_parameters():
        torch.testing.assert_close(p.grad, ref[n], rtol=1e-4, atol=1e-6, msg=n)


def test_save_load_round_trip_and_auto(model, tmp_path):
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    loaded = HmVilbertForHatefulMemes.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(loaded(**batch()).logits, model(**batch()).logits, rtol=0, atol=0)
    from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification

    register_auto()

    assert type(AutoConfig.from_pretrained(tmp_path)) is HmVilbertConfig
    seq = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert type(seq) is HmVilbertForHatefulMemes
    torch.testing.assert_close(seq(**batch()).logits, model(**batch()).logits, rtol=0, atol=0)
    assert type(AutoModel.from_config(model.config)) is HmVilbertModel


def test_text_stream_initialises_from_a_bert_checkpoint(tmp_path):
    from transformers import BertConfig, BertModel

    torch.manual_seed(3)
    bert = BertModel(BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
                                intermediate_size=37, max_position_embeddings=40), add_pooling_layer=False)
    # BertForPreTraining-style names ("bert." prefix) are what bert-base-uncased holds
    from safetensors.torch import save_file

    save_file({"bert." + k: v.contiguous() for k, v in bert.state_dict().items()}, str(tmp_path / "model.safetensors"))
    tiny_config().save_pretrained(tmp_path)
    m = HmVilbertForHatefulMemes.from_pretrained(tmp_path)
    torch.testing.assert_close(m.bert.encoder.layer[2].output.dense.weight, bert.encoder.layer[2].output.dense.weight)
    torch.testing.assert_close(m.bert.embeddings.word_embeddings.weight, bert.embeddings.word_embeddings.weight)


def test_from_text_pretrained_copies_bert_embeddings_and_layers(tmp_path):
    from transformers import BertConfig, BertModel

    torch.manual_seed(5)
    bert = BertModel(BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
                                intermediate_size=37, max_position_embeddings=40))
    bert.save_pretrained(tmp_path)
    overrides = {k: v for k, v in TINY.items() if k.startswith(("v_", "bi_", "t_"))}
    m = HmVilbertForHatefulMemes.from_text_pretrained(str(tmp_path), **overrides)
    assert m.config.hidden_size == 32 and m.config.num_hidden_layers == 3
    torch.testing.assert_close(m.bert.encoder.layer[1].attention.self.query.weight,
                               bert.encoder.layer[1].attention.self.query.weight)
    torch.testing.assert_close(m.bert.embeddings.position_embeddings.weight, bert.embeddings.position_embeddings.weight)
    assert torch.isfinite(m(**batch()).loss)


def test_meta_device_base_size_parameter_counts():
    with torch.device("meta"):
        big = HmVilbertForHatefulMemes(HmVilbertConfig())
    total = sum(p.numel() for p in big.parameters())
    # PE paper: 247,780,354 with MMF's 6 x 1,836,800 never-called biOutput.q_dense weights, which hm_hf omits
    assert total == 247_780_354 - 6 * (1024 * 1024 + 1024 + 1024 * 768 + 768)
    assert sum(p.numel() for p in big.classifier.parameters()) == 1_053_698  # paper's head-only count


def test_config_validation():
    with pytest.raises(ValueError, match="same length"):
        tiny_config(v_biattention_id=[0], t_biattention_id=[1, 2])
    with pytest.raises(ValueError, match="t_biattention_id"):
        tiny_config(t_biattention_id=[2, 9])
    with pytest.raises(ValueError, match="heads"):
        tiny_config(v_hidden_size=25)


# ----------------------------------------------------------------------------------------------- converter
def mmf_state_dict(cfg: HmVilbertConfig, prefix="model.") -> dict[str, torch.Tensor]:
    """A random state dict with MMF ViLBERT's names and shapes, written from MMF's module tree (not ours)."""
    H, V, B = cfg.hidden_size, cfg.v_hidden_size, cfg.bi_hidden_size
    I, VI = cfg.intermediate_size, cfg.v_intermediate_size
    sd = {}

    def lin(name, i, o):
        sd[f"{name}.weight"] = torch.randn(o, i)
        sd[f"{name}.bias"] = torch.randn(o)

    def ln(name, n, old=False):
        sd[f"{name}.{'gamma' if old else 'weight'}"] = torch.randn(n)
        sd[f"{name}.{'beta' if old else 'bias'}"] = torch.randn(n)

    e = "bert.embeddings"
    sd[f"{e}.word_embeddings.weight"] = torch.randn(cfg.vocab_size, H)
    sd[f"{e}.position_embeddings.weight"] = torch.randn(cfg.max_position_embeddings, H)
    sd[f"{e}.token_type_embeddings.weight"] = torch.randn(cfg.type_vocab_size, H)
    sd[f"{e}.task_embeddings.weight"] = torch.randn(20, H)
    ln(f"{e}.LayerNorm", H, old=True)
    lin("bert.v_embeddings.image_embeddings", cfg.v_feature_size, V)
    lin("bert.v_embeddings.image_location_embeddings", 5, V)
    ln("bert.v_embeddings.LayerNorm", V)

    def bert_layer(p, h, i):
        for n in ("query", "key", "value"):
            lin(f"{p}.attention.self.{n}", h, h)
        lin(f"{p}.attention.output.dense", h, h)
        ln(f"{p}.attention.output.LayerNorm", h)
        lin(f"{p}.intermediate.dense", h, i)
        lin(f"{p}.output.dense", i, h)
        ln(f"{p}.output.LayerNorm", h)

    for n in range(cfg.num_hidden_layers):
        bert_layer(f"bert.encoder.layer.{n}", H, I)
    for n in range(cfg.v_num_hidden_layers):
        bert_layer(f"bert.encoder.v_layer.{n}", V, VI)
    for n in range(len(cfg.v_biattention_id)):
        p = f"bert.encoder.c_layer.{n}"
        for k in ("query1", "key1", "value1"):
            lin(f"{p}.biattention.{k}", V, B)
        for k in ("query2", "key2", "value2"):
            lin(f"{p}.biattention.{k}", H, B)
        lin(f"{p}.biOutput.dense1", B, V)
        ln(f"{p}.biOutput.LayerNorm1", V)
        lin(f"{p}.biOutput.q_dense1", B, V)
        lin(f"{p}.biOutput.dense2", B, H)
        ln(f"{p}.biOutput.LayerNorm2", H)
        lin(f"{p}.biOutput.q_dense2", B, H)
        lin(f"{p}.v_intermediate.dense", V, VI)
        lin(f"{p}.v_output.dense", VI, V)
        ln(f"{p}.v_output.LayerNorm", V)
        lin(f"{p}.t_intermediate.dense", H, I)
        lin(f"{p}.t_output.dense", I, H)
        ln(f"{p}.t_output.LayerNorm", H)
    lin("bert.t_pooler.dense", H, B)
    lin("bert.v_pooler.dense", V, B)
    lin("classifier.0.dense", B, B)
    ln("classifier.0.LayerNorm", B)
    lin("classifier.1", B, cfg.num_labels)
    lin("cls.predictions.transform.dense", H, H)  # a pre-training head
    lin("vil_prediction.logit_fc.0", B, 7)  # a vilbert-multi-task task head
    return {prefix + k: v for k, v in sd.items()}


@pytest.mark.parametrize("prefix", ["model.", "", "module."])
def test_converter_loads_without_missing_or_unexpected(prefix):
    cfg = tiny_config()
    foreign = mmf_state_dict(cfg, prefix)
    converted, report = convert_vilbert_state_dict(foreign)
    model = HmVilbertForHatefulMemes(cfg)
    result = model.load_state_dict(converted, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert report.converted == len(model.state_dict())
    dropped = set(report.dropped)
    assert prefix + "bert.encoder.c_layer.1.biOutput.q_dense2.weight" in dropped
    assert prefix + "bert.embeddings.task_embeddings.weight" in dropped
    assert prefix + "cls.predictions.transform.dense.weight" in dropped
    # values land where they belong, gamma/beta renamed
    torch.testing.assert_close(model.bert.encoder.c_layer[1].biattention.query2.weight,
                               foreign[prefix + "bert.encoder.c_layer.1.biattention.query2.weight"])
    torch.testing.assert_close(model.bert.embeddings.LayerNorm.weight,
                               foreign[prefix + "bert.embeddings.LayerNorm.gamma"])
    torch.testing.assert_close(model.classifier[1].bias, foreign[prefix + "classifier.1.bias"])
    # base model conversion
    base, _ = convert_vilbert_state_dict(foreign, base_model=True)
    HmVilbertModel(cfg).load_state_dict(base, strict=True)


def test_older_mmf_keys_are_renamed_as_mmf_renames_them():
    """Older MMF checkpoints keep the model one level deeper (bert.bert.*, bert.classifier.*, bert.cls.*); MMF's
    ViLBERT.format_state_key renames them, and so does the converter (it raised a bare KeyError before)."""
    cfg = tiny_config()
    current = mmf_state_dict(cfg, "model.")
    legacy = {("bert." + k[len("model."):] if k.startswith(("model.bert.", "model.classifier.", "model.cls."))
               else k): v for k, v in current.items()}
    assert "bert.bert.embeddings.word_embeddings.weight" in legacy and "bert.classifier.1.bias" in legacy
    converted, _ = convert_vilbert_state_dict(legacy)
    expected, _ = convert_vilbert_state_dict(current)
    assert converted.keys() == expected.keys()
    HmVilbertForHatefulMemes(cfg).load_state_dict(converted, strict=True)
    with pytest.raises(ValueError, match="has no bert.embeddings.word_embeddings.weight .* not a ViLBERT"):
        config_from_state_dict({"bert.pooler.dense.weight": torch.zeros(2, 2)})


def test_converter_cli_writes_a_loadable_folder(tmp_path):
    from safetensors.torch import save_file

    cfg = tiny_config()
    foreign = mmf_state_dict(cfg)
    save_file(foreign, str(tmp_path / "vilbert.safetensors"))
    torch.save(foreign, tmp_path / "vilbert.bin")
    (tmp_path / "cfg.json").write_text('{"num_attention_heads": 2, "v_num_attention_heads": 2, '
                                       '"bi_num_attention_heads": 2, "v_biattention_id": [0, 1], '
                                       '"t_biattention_id": [1, 2]}')
    for src in ("vilbert.safetensors", "vilbert.bin"):
        out = tmp_path / ("out_" + src)
        # MMF's `model.` names and vilbert-multi-task's task heads both: the origin must be said
        assert convert_cli([str(tmp_path / src), str(out), "--config", str(tmp_path / "cfg.json"),
                            "--origin", "mmf"]) == 0
        m = HmVilbertForHatefulMemes.from_pretrained(out)
        torch.testing.assert_close(m.bert.v_pooler.dense.weight, foreign["model.bert.v_pooler.dense.weight"])
        assert m.config.v_hidden_size == 24 and m.config.num_hidden_layers == 3
    again = [str(tmp_path / "vilbert.bin"), str(tmp_path / "out_vilbert.bin"), "--config", str(tmp_path / "cfg.json"),
             "--origin", "mmf"]
    assert convert_cli(again) == 2  # an existing model folder is replaced only when asked, and then whole
    assert convert_cli([*again, "--overwrite"]) == 0
    assert sorted(p.name for p in (tmp_path / "out_vilbert.bin").iterdir()) == ["config.json", "conversion.json",
                                                                               "model.safetensors"]
    (tmp_path / "cfg_list.json").write_text("[1, 2]")
    assert convert_cli([str(tmp_path / "vilbert.bin"), str(tmp_path / "o3"), "--origin", "mmf",
                        "--config", str(tmp_path / "cfg_list.json")]) == 2 and not (tmp_path / "o3").exists()
    # inferred base layout needs no co-attention ids; non-base without them is a clear error
    converted, _ = convert_vilbert_state_dict(foreign)
    with pytest.raises(ValueError, match="co-attention"):
        config_from_state_dict(converted)


def _only(origin: str, cfg: HmVilbertConfig) -> dict[str, torch.Tensor]:
    """The test state dict as one code base writes it: MMF's `model.` names without vilbert-multi-task's task
    heads and task-token embedding, or vilbert-multi-task's bare names with them."""
    from hm_hf.models.vilbert.convert_vilbert_checkpoint import _MULTI_TASK_KEYS

    if origin == "mmf":
        return {k: v for k, v in mmf_state_dict(cfg).items() if not _MULTI_TASK_KEYS.match(k[len("model."):])}
    return mmf_state_dict(cfg, prefix="")


ORIGIN_CONFIG = '{"num_attention_heads": 2, "v_num_attention_heads": 2, "bi_num_attention_heads": 2, ' \
                '"v_biattention_id": [0, 1], "t_biattention_id": [1, 2]}'


def test_converted_checkpoints_see_the_visual_input_of_their_origin(tmp_path, capsys):
    """MMF's ViLBERT (hateful memes, classification) feeds the regions alone; vilbert-multi-task's reader
    prepends the mean region with box (0, 0, 1, 1, 1). The converter reads which one from the file."""
    cfg = tiny_config()
    (tmp_path / "cfg.json").write_text(ORIGIN_CONFIG)
    files = {
        "mmf": (_only("mmf", cfg), False),  # MMF model zoo / training: model.bert.*, model.classifier.*
        "multi_task_bin": (_only("vilbert-multi-task", cfg), True),  # pytorch_model_N.bin with task heads
        "multi_task_tar": ({"model_state_dict": _only("vilbert-multi-task", cfg), "global_step": 3}, True),
    }
    for name, (content, global_token) in files.items():
        torch.save(content, tmp_path / f"{name}.bin")
        out = tmp_path / f"out_{name}"
        assert convert_cli([str(tmp_path / f"{name}.bin"), str(out), "--config", str(tmp_path / "cfg.json")]) == 0
        model = HmVilbertForHatefulMemes.from_pretrained(out).eval()
        assert model.config.add_global_image_token is global_token, name
        note = json.loads((out / "conversion.json").read_text())
        assert note["origin"] == ("mmf" if name == "mmf" else "vilbert-multi-task")
        b = batch()
        embeds, locations, mask = model.bert._visual_inputs(b["visual_embeds"], b["visual_boxes"],
                                                             b["visual_attention_mask"])
        assert embeds.shape[1] == b["visual_embeds"].shape[1] + int(global_token)
        if not global_token:  # exactly the regions, as MMF's ViLBERT reads image_feature_0
            torch.testing.assert_close(embeds, b["visual_embeds"])
    # A bare pre-trained state dict (bert.* + cls.*) does not say: refused, with the flag to use.
    bare = {k: v for k, v in _only("vilbert-multi-task", cfg).items() if not k.startswith(("vil_", "bert.embeddings.task"))}
    torch.save(bare, tmp_path / "bare.bin")
    assert convert_cli([str(tmp_path / "bare.bin"), str(tmp_path / "out_bare"), "--config",
                        str(tmp_path / "cfg.json")]) == 2
    err = capsys.readouterr().err
    assert "--origin mmf" in err and "Traceback" not in err and not (tmp_path / "out_bare").exists()
    assert convert_cli([str(tmp_path / "bare.bin"), str(tmp_path / "out_bare"), "--config",
                        str(tmp_path / "cfg.json"), "--origin", "mmf"]) == 0
    assert HmVilbertForHatefulMemes.from_pretrained(tmp_path / "out_bare").config.add_global_image_token is False


def test_the_vilbert_recipes_use_mmfs_visual_input():
    from hm_hf.training.arguments import parse_overrides, parse_recipe

    recipes = sorted((Path(__file__).resolve().parents[1] / "recipes" / "vilbert").rglob("config_*.yaml"))
    assert len(recipes) == 6
    for recipe in recipes:
        model_args, *_ = parse_recipe([str(recipe)])
        assert parse_overrides(model_args.config_overrides).get("add_global_image_token") is False, recipe
