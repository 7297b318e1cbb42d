"""HmUniter: box geometry, forward/backward, masking, save/load, Auto classes, converter, BERT init."""

from __future__ import annotations

import copy
import json
import os

import pytest
import torch
from torch.nn import functional as F
from transformers import AutoConfig, AutoModelForSequenceClassification, BertConfig, BertModel

from hm_hf.models.auto import register_auto_classes
from hm_hf.models.uniter import HmUniterConfig, HmUniterForHatefulMemes, HmUniterModel, uniter_box_features
from hm_hf.models.uniter.convert_uniter_checkpoint import (
    cli,
    convert_uniter_checkpoint,
    convert_uniter_state_dict,
    infer_uniter_config,
)

from region_batches import region_batch  # tests/region_batches.py

VOCAB, HIDDEN, IMG = 90, 32, 24


def tiny_config(**kwargs) -> HmUniterConfig:
    fields = dict(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=37, img_dim=IMG, max_position_embeddings=64)
    fields.update(kwargs)
    return HmUniterConfig(**fields)


def make_batch() -> dict[str, torch.Tensor]:
    """Text padding in row 1, region padding in rows 0 and 2."""
    return region_batch([6, 3, 6], [2, 5, 4], [1, 0, 1], vocab_size=VOCAB, feature_dim=IMG)


@pytest.fixture(scope="module")
def model() -> HmUniterForHatefulMemes:
    torch.manual_seed(0)
    return HmUniterForHatefulMemes(tiny_config()).eval()


def test_box_features_are_normalised_the_right_way_round():
    # a 200 x 100 (W x H) box at (100, 50) in a 1000 x 500 image, normalised as the collator does: x/W, y/H
    width, height = 1000.0, 500.0
    box = torch.tensor([[100 / width, 50 / height, 300 / width, 150 / height]])
    feats = uniter_box_features(box)[0]
    expected = torch.tensor([0.1, 0.1, 0.3, 0.3, 0.2, 0.2, 0.04])
    assert torch.allclose(feats, expected)
    with pytest.raises(ValueError, match="4 coordinates"):
        uniter_box_features(torch.zeros(2, 6))


def test_image_embeddings_follow_uniter(model):
    """img = LN(LN_img(W_img f) + LN_pos(W_pos p7) + type[1]): computed by hand from the weights."""
    emb = model.uniter.img_embeddings
    sd = {k: v for k, v in emb.state_dict().items()}
    f, boxes = torch.randn(2, 3, IMG), torch.rand(2, 3, 4)
    p7 = uniter_box_features(boxes)
    type1 = model.uniter.embeddings.token_type_embeddings.weight[1]
    eps = model.config.layer_norm_eps

    def ln(x, name):
        return F.layer_norm(x, (HIDDEN,), sd[f"{name}.weight"], sd[f"{name}.bias"], eps)

    expected = ln(ln(f @ sd["img_linear.weight"].T + sd["img_linear.bias"], "img_layer_norm")
                  + ln(p7 @ sd["pos_linear.weight"].T + sd["pos_linear.bias"], "pos_layer_norm") + type1, "LayerNorm")
    with torch.no_grad():
        got = emb(f, p7, model.uniter.embeddings.token_type_embeddings(torch.ones(2, 3, dtype=torch.long)))
    assert torch.allclose(got, expected, atol=1e-5)


def test_forward_backward_ignored_labels_and_six_way():
    torch.manual_seed(0)
    m = HmUniterForHatefulMemes(tiny_config()).train()
    out = m(**make_batch())
    assert out.logits.shape == (3, 2) and torch.isfinite(out.loss)
    out.loss.backward()
    params = dict(m.named_parameters())
    for name in ("uniter.img_embeddings.img_linear.weight", "uniter.img_embeddings.pos_linear.weight",
                 "uniter.encoder.layer.0.attention.self.query.weight", "classifier.0.weight"):
        assert params[name].grad is not None and params[name].grad.abs().sum() > 0, name
    six = HmUniterForHatefulMemes(tiny_config(num_labels=6)).eval()
    batch = make_batch()
    batch["labels"] = torch.tensor([-100, 4, 5])
    with torch.no_grad():
        out = six(**batch)
    assert out.logits.shape == (3, 6)
    assert torch.allclose(out.loss, F.cross_entropy(out.logits[1:], torch.tensor([4, 5])), atol=1e-6)


def test_text_only_and_image_only_inputs(model):
    batch = make_batch()
    with torch.no_grad():
        text_only = model.uniter(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        image_only = model.uniter(visual_embeds=batch["visual_embeds"], visual_boxes=batch["visual_boxes"],
                                  visual_attention_mask=batch["visual_attention_mask"])
    assert text_only.last_hidden_state.shape == (3, 6, HIDDEN)
    assert image_only.last_hidden_state.shape == (3, 5, HIDDEN)
    with pytest.raises(ValueError, match="visual_boxes"):
        model.uniter(input_ids=batch["input_ids"], visual_embeds=batch["visual_embeds"])


def test_padding_text_and_regions_never_changes_logits(model):
    batch = make_batch()
    with torch.no_grad():
        ref = model(**batch).logits
        padded = dict(batch)
        padded["visual_embeds"] = torch.cat([batch["visual_embeds"], 50 * torch.randn(3, 3, IMG)], 1)
        padded["visual_boxes"] = torch.cat([batch["visual_boxes"], torch.rand(3, 3, 4)], 1)
        padded["visual_attention_mask"] = torch.cat([batch["visual_attention_mask"], torch.zeros(3, 3, dtype=torch.long)], 1)
        padded["input_ids"] = torch.cat([batch["input_ids"], torch.randint(1, VOCAB, (3, 2))], 1)
        padded["attention_mask"] = torch.cat([batch["attention_mask"], torch.zeros(3, 2, dtype=torch.long)], 1)
        padded["token_type_ids"] = torch.cat([batch["token_type_ids"], torch.zeros(3, 2, dtype=torch.long)], 1)
        assert torch.allclose(model(**padded).logits, ref, atol=1e-5)
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        padded_inputs = {k: v for k, v in padded.items() if k != "labels"}
        ref_pooled = model.uniter(**inputs).pooler_output
        assert torch.allclose(model.uniter(**padded_inputs).pooler_output, ref_pooled, atol=1e-5)
        padded_inputs["visual_attention_mask"] = torch.ones_like(padded["visual_attention_mask"])
        assert not torch.allclose(model.uniter(**padded_inputs).pooler_output, ref_pooled, atol=1e-3)


def test_save_load_round_trip_and_auto_classes(model, tmp_path):
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file() and not list(tmp_path.glob("*.bin"))
    register_auto_classes()
    assert isinstance(AutoConfig.for_model("hm_uniter"), HmUniterConfig)
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, HmUniterForHatefulMemes)
    batch = make_batch()
    with torch.no_grad():
        assert torch.equal(loaded(**batch).logits, model(**batch).logits)
    config = AutoConfig.for_model("hm_uniter", vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=1,
                                  num_attention_heads=4, intermediate_size=37, img_dim=IMG)
    assert isinstance(AutoModelForSequenceClassification.from_config(config), HmUniterForHatefulMemes)


def test_gradient_checkpointing_gives_same_gradients():
    torch.manual_seed(0)
    plain = HmUniterForHatefulMemes(tiny_config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)).train()
    ckpt = copy.deepcopy(plain)
    ckpt.activation_checkpointing_enable()
    assert all(layer.gradient_checkpointing for layer in ckpt.uniter.encoder.layer)
    batch = make_batch()
    plain(**batch).loss.backward()
    ckpt(**batch).loss.backward()
    for (name, p1), (_, p2) in zip(plain.named_parameters(), ckpt.named_parameters()):
        assert torch.allclose(p1.grad, p2.grad, atol=1e-6), name


def original_uniter_state_dict(cfg: dict, device: str = "cpu") -> dict[str, torch.Tensor]:
    """A state dict with the key names and shapes of the original uniter-base.pt (pre-training heads included)."""
    H, I, V, P, L, D = cfg["hidden"], cfg["inter"], cfg["vocab"], cfg["pos"], cfg["layers"], cfg["img_dim"]
    shapes = {
        "uniter.embeddings.word_embeddings.weight": (V, H),
        "uniter.embeddings.position_embeddings.weight": (P, H),
        "uniter.embeddings.token_type_embeddings.weight": (2, H),
        "uniter.embeddings.LayerNorm.weight": (H,), "uniter.embeddings.LayerNorm.bias": (H,),
        "uniter.img_embeddings.img_linear.weight": (H, D), "uniter.img_embeddings.img_linear.bias": (H,),
        "uniter.img_embeddings.img_layer_norm.weight": (H,), "uniter.img_embeddings.img_layer_norm.bias": (H,),
        "uniter.img_embeddings.pos_layer_norm.weight": (H,), "uniter.img_embeddings.pos_layer_norm.bias": (H,),
        "uniter.img_embeddings.pos_linear.weight": (H, 7), "uniter.img_embeddings.pos_linear.bias": (H,),
        "uniter.img_embeddings.mask_embedding.weight": (2, D),
        "uniter.img_embeddings.LayerNorm.weight": (H,), "uniter.img_embeddings.LayerNorm.bias": (H,),
        "uniter.pooler.dense.weight": (H, H), "uniter.pooler.dense.bias": (H,),
        "cls.predictions.bias": (V,), "cls.predictions.transform.dense.weight": (H, H),
        "cls.predictions.transform.dense.bias": (H,), "cls.predictions.transform.LayerNorm.weight": (H,),
        "cls.predictions.transform.LayerNorm.bias": (H,), "cls.predictions.decoder.weight": (V, H),
        "feat_regress.net.0.weight": (H, H), "region_classifier.net.3.weight": (1601, H),
        "itm_output.weight": (2, H), "itm_output.bias": (2,),
    }
    for n in range(L):
        p = f"uniter.encoder.layer.{n}."
        for name in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"):
            shapes[p + name + ".weight"], shapes[p + name + ".bias"] = (H, H), (H,)
        for name in ("attention.output.LayerNorm", "output.LayerNorm"):
            shapes[p + name + ".weight"], shapes[p + name + ".bias"] = (H,), (H,)
        shapes[p + "intermediate.dense.weight"], shapes[p + "intermediate.dense.bias"] = (I, H), (I,)
        shapes[p + "output.dense.weight"], shapes[p + "output.dense.bias"] = (H, I), (H,)
    return {k: torch.randn(s, device=device) for k, s in shapes.items()}


BASE = dict(hidden=768, inter=3072, vocab=28996, pos=512, layers=12, img_dim=2048)
TINY = dict(hidden=HIDDEN, inter=37, vocab=VOCAB, pos=64, layers=2, img_dim=IMG)


def test_converter_fits_base_shapes_on_meta_device():
    converted, dropped = convert_uniter_state_dict(original_uniter_state_dict(BASE, device="meta"))
    assert "uniter.img_embeddings.mask_embedding.weight" in dropped and "itm_output.weight" in dropped
    config = infer_uniter_config(converted)
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads, config.vocab_size,
            config.img_dim, config.intermediate_size) == (768, 12, 12, 28996, 2048, 3072)
    with torch.device("meta"):
        model = HmUniterForHatefulMemes(config)
    expected = {k: v.shape for k, v in model.state_dict().items() if not k.startswith("classifier.")}
    assert {k: v.shape for k, v in converted.items()} == expected


def test_converter_end_to_end_on_tiny_checkpoint(tmp_path):
    original = original_uniter_state_dict(TINY)
    original["uniter.embeddings.LayerNorm.gamma"] = original.pop("uniter.embeddings.LayerNorm.weight")  # old naming
    checkpoint = tmp_path / "uniter-tiny.pt"
    torch.save(original, checkpoint)
    uniter_json = tmp_path / "uniter-tiny.json"
    uniter_json.write_text(json.dumps({"hidden_size": HIDDEN, "num_attention_heads": 4, "hidden_dropout_prob": 0.0}))
    out = tmp_path / "converted"
    assert cli(["--checkpoint", str(checkpoint), "--output", str(out), "--config", str(uniter_json),
                "--num-labels", "6"]) == 0
    dropped = json.loads((out / "conversion.json").read_text())["dropped_keys"]
    assert "cls.predictions.decoder.weight" in dropped

    body, info = HmUniterModel.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    head, info = HmUniterForHatefulMemes.from_pretrained(out, output_loading_info=True)
    assert info["missing_keys"] and all(k.startswith("classifier.") for k in info["missing_keys"])
    assert not info["unexpected_keys"] and not info["mismatched_keys"]
    assert head.config.num_labels == 6 and head.config.num_attention_heads == 4
    assert head.config.hidden_dropout_prob == 0.0
    state = head.state_dict()
    assert torch.equal(state["uniter.embeddings.LayerNorm.weight"], original["uniter.embeddings.LayerNorm.gamma"])
    for key in ("uniter.img_embeddings.pos_linear.weight", "uniter.encoder.layer.1.output.dense.weight",
                "uniter.pooler.dense.bias"):
        assert torch.equal(state[key], original[key]), key
    with torch.no_grad():
        assert head.eval()(**make_batch()).logits.shape == (3, 6)


def test_converter_errors_are_clear(tmp_path):
    assert cli(["--checkpoint", str(tmp_path / "missing.pt"), "--output", str(tmp_path / "o")]) == 1
    bad = tmp_path / "bad.pt"
    torch.save({"foo.weight": torch.zeros(2)}, bad)
    with pytest.raises(ValueError, match="no UNITER weights"):
        convert_uniter_checkpoint(bad, tmp_path / "o")


def test_conversion_writes_its_folder_whole_and_replaces_one_only_when_asked(tmp_path, monkeypatch, capsys):
    """The converters once wrote config.json, then the weights, into an existing folder: Ctrl-C between left a
    folder that loaded as the wrong model, and a folder of another model was overwritten without a word."""
    checkpoint = tmp_path / "uniter-tiny.pt"
    torch.save(original_uniter_state_dict(TINY), checkpoint)
    out = tmp_path / "converted"
    out.mkdir()
    (out / "processor_config.json").write_text("{}")  # another model's folder
    assert cli(["--checkpoint", str(checkpoint), "--output", str(out)]) == 1
    assert "already holds files" in capsys.readouterr().err and sorted(os.listdir(out)) == ["processor_config.json"]

    def interrupted(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(HmUniterModel, "save_pretrained", interrupted)
    with pytest.raises(KeyboardInterrupt):
        cli(["--checkpoint", str(checkpoint), "--output", str(out), "--overwrite"])
    monkeypatch.undo()
    assert sorted(os.listdir(out)) == ["processor_config.json"]  # as it was
    assert cli(["--checkpoint", str(checkpoint), "--output", str(out), "--overwrite", "--num-labels", "6"]) == 0
    assert sorted(os.listdir(out)) == ["config.json", "conversion.json", "model.safetensors"]  # replaced whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["converted", "uniter-tiny.pt"]  # nothing left beside
    misshapen = original_uniter_state_dict(TINY)
    misshapen["uniter.encoder.layer.1.output.dense.weight"] = torch.zeros(5, 3)
    torch.save(misshapen, tmp_path / "misshapen.pt")
    with pytest.raises(ValueError, match="misshapen.pt: converted weights do not fit HmUniterModel .*size mismatch"):
        convert_uniter_checkpoint(tmp_path / "misshapen.pt", tmp_path / "o2")
    assert not (tmp_path / "o2").exists()


def test_from_text_pretrained_copies_bert_weights(tmp_path):
    torch.manual_seed(0)
    bert = BertModel(BertConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=4,
                                intermediate_size=37, max_position_embeddings=64))
    bert.save_pretrained(tmp_path)
    model = HmUniterForHatefulMemes.from_text_pretrained(tmp_path, img_dim=IMG)
    ours = model.uniter.state_dict()
    for key, value in bert.state_dict().items():
        assert torch.equal(ours[key], value), key
    with torch.no_grad():
        assert model.eval()(**make_batch()).logits.shape == (3, 2)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_fp16_autocast_forward_on_gpu(model):
    m = copy.deepcopy(model).cuda()
    batch = {k: v.cuda() for k, v in make_batch().items()}
    with torch.no_grad():
        ref = m(**batch).logits
        with torch.autocast("cuda", dtype=torch.float16):
            out = m(**batch)
    assert out.logits.dtype == torch.float16 and torch.isfinite(out.loss)
    assert torch.allclose(out.logits.float(), ref, atol=2e-2)


def test_lora_seq_cls_wrapper_runs_with_the_suggested_targets(model):
    """peft's SEQ_CLS wrapper passes inputs_embeds / output_attentions / return_dict: the forward accepts them."""
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(copy.deepcopy(model), LoraConfig(task_type="SEQ_CLS", r=4, target_modules=["query", "value"],
                                                                 modules_to_save=["classifier"]))
    trainable = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or "classifier" in n for n in trainable)
    out = peft_model(**make_batch())
    out.loss.backward()
    with pytest.raises(ValueError, match="output_attentions"):
        peft_model(**make_batch(), output_attentions=True)


def test_bfloat16_weights_take_float32_batches():
    """A model loaded in bf16 (e.g. for inference) takes the collator's float32 features as they are."""
    torch.manual_seed(0)
    m = HmUniterForHatefulMemes(tiny_config()).to(torch.bfloat16).eval()
    with torch.no_grad():
        out = m(**make_batch())
    assert out.logits.dtype == torch.bfloat16 and torch.isfinite(out.logits.float()).all()


def test_text_is_token_type_0_also_for_a_text_pair(model):
    """As ChenRocks/UNITER: text embeddings use type 0 throughout (its txt_type_ids default to zeros), type 1
    is the regions'; a BERT tokenizer's pair segments (type 1 for the second text) change nothing."""
    batch = make_batch()
    pair = batch["token_type_ids"].clone()
    pair[:, 3:] = 1  # what bert-base-cased's tokenizer returns for [CLS] a [SEP] b [SEP]
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        single = model.uniter(**inputs).last_hidden_state
        paired = model.uniter(**{**inputs, "token_type_ids": pair}).last_hidden_state
        torch.testing.assert_close(paired, single, rtol=0, atol=0)
        emb = model.uniter.embeddings
        ids = batch["input_ids"]
        by_hand = emb.LayerNorm(emb.word_embeddings(ids) + emb.position_embeddings.weight[: ids.shape[1]]
                                + emb.token_type_embeddings.weight[0])
        torch.testing.assert_close(emb(input_ids=ids, token_type_ids=None), by_hand)


def test_a_tokenizer_that_does_not_fit_the_embeddings_is_refused_with_the_one_to_use(tmp_path):
    from transformers import BertTokenizerFast

    from hm_hf.text.tokenizer import TokenizerMismatchError, check_tokenizer_fits

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(95)]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab))
    tokenizer = BertTokenizerFast(str(tmp_path / "vocab.txt"))  # 100 tokens
    with torch.device("meta"):
        uniter_base = HmUniterForHatefulMemes(HmUniterConfig())  # UNITER-base: bert-base-cased's 28,996 rows
    with pytest.raises(TokenizerMismatchError, match=r"28,996 rows.*tokenizer_name_or_path: bert-base-cased"):
        check_tokenizer_fits(tokenizer, uniter_base, "bert-base-uncased")
    check_tokenizer_fits(tokenizer, HmUniterForHatefulMemes(tiny_config(vocab_size=100)))  # fits: no error
    with pytest.raises(TokenizerMismatchError, match="IndexError"):
        check_tokenizer_fits(tokenizer, HmUniterForHatefulMemes(tiny_config(vocab_size=60)))
