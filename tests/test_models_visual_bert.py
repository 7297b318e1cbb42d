"""HmVisualBert: forward/backward, Auto classes, save/load, masking, checkpointing, transformers equivalence."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.nn import functional as F
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForSequenceClassification,
    BertConfig,
    BertModel,
    VisualBertConfig,
    VisualBertForPreTraining,
    VisualBertModel,
)

from hm_hf.models.auto import register_auto_classes
from hm_hf.models.visual_bert import HmVisualBertConfig, HmVisualBertForHatefulMemes, HmVisualBertModel

from region_batches import region_batch  # tests/region_batches.py

VOCAB, HIDDEN, VDIM = 99, 32, 24


def tiny_config(**kwargs) -> HmVisualBertConfig:
    fields = dict(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=37, visual_embedding_dim=VDIM, max_position_embeddings=64)
    fields.update(kwargs)
    return HmVisualBertConfig(**fields)


def make_batch() -> dict[str, torch.Tensor]:
    """Text padding in rows 1 and 2, region padding in rows 0 and 2, as the collator emits it."""
    return region_batch([7, 4, 2], [3, 5, 1], [0, 1, 1], vocab_size=VOCAB, feature_dim=VDIM)


@pytest.fixture(scope="module")
def model() -> HmVisualBertForHatefulMemes:
    torch.manual_seed(0)
    return HmVisualBertForHatefulMemes(tiny_config()).eval()


def test_forward_backward_and_loss_on_logits(model):
    m = copy.deepcopy(model).train()
    batch = make_batch()
    out = m(**batch)
    assert out.logits.shape == (3, 2)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    for name in ("visual_bert.embeddings.visual_projection.weight", "visual_bert.encoder.layer.1.output.dense.weight",
                 "visual_bert.embeddings.word_embeddings.weight", "classifier.1.weight"):
        grad = dict(m.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name
    # the loss is cross-entropy on the logits (not on softmax outputs)
    m.eval()
    with torch.no_grad():
        out = m(**batch)
    assert torch.allclose(out.loss, F.cross_entropy(out.logits, batch["labels"]), atol=1e-6)


def test_ignored_labels_and_six_way_head():
    torch.manual_seed(0)
    m = HmVisualBertForHatefulMemes(tiny_config(num_labels=6)).eval()
    batch = make_batch()
    batch["labels"] = torch.tensor([5, -100, 2])
    with torch.no_grad():
        out = m(**batch)
    assert out.logits.shape == (3, 6)
    expected = F.cross_entropy(out.logits[[0, 2]], torch.tensor([5, 2]))
    assert torch.allclose(out.loss, expected, atol=1e-6)
    batch["labels"] = torch.full((3,), -100)
    with torch.no_grad():
        assert m(**batch).loss.item() == 0.0
    del batch["labels"]
    with torch.no_grad():
        assert m(**batch).loss is None


def test_padding_text_and_regions_never_changes_logits(model):
    batch = make_batch()
    with torch.no_grad():
        ref = model(**batch).logits
        padded = dict(batch)
        extra = 4
        padded["visual_embeds"] = torch.cat([batch["visual_embeds"], 100 * torch.randn(3, extra, VDIM)], 1)
        padded["visual_attention_mask"] = torch.cat([batch["visual_attention_mask"], torch.zeros(3, extra, dtype=torch.long)], 1)
        padded["visual_boxes"] = torch.cat([batch["visual_boxes"], torch.rand(3, extra, 4)], 1)
        padded["input_ids"] = torch.cat([batch["input_ids"], torch.randint(1, VOCAB, (3, 3))], 1)
        padded["attention_mask"] = torch.cat([batch["attention_mask"], torch.zeros(3, 3, dtype=torch.long)], 1)
        padded["token_type_ids"] = torch.cat([batch["token_type_ids"], torch.ones(3, 3, dtype=torch.long)], 1)
        assert torch.allclose(model(**padded).logits, ref, atol=1e-5)
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        padded_inputs = {k: v for k, v in padded.items() if k != "labels"}
        ref_pooled = model.visual_bert(**inputs).pooler_output
        assert torch.allclose(model.visual_bert(**padded_inputs).pooler_output, ref_pooled, atol=1e-5)
        # the mask is what matters: unmasking the same regions does change the output
        padded_inputs["visual_attention_mask"] = torch.ones_like(padded["visual_attention_mask"])
        assert not torch.allclose(model.visual_bert(**padded_inputs).pooler_output, ref_pooled, atol=1e-3)


def test_attention_goes_through_sdpa(model, monkeypatch):
    calls = []
    original = F.scaled_dot_product_attention

    def spy(*args, **kwargs):
        calls.append(kwargs.get("attn_mask"))
        return original(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    with torch.no_grad():
        model(**make_batch())
    assert len(calls) == model.config.num_hidden_layers
    assert calls[0].dtype == torch.bool and calls[0].shape == (3, 1, 1, 12)
    assert model.config._attn_implementation == "sdpa"


def test_save_load_round_trip_safetensors(model, tmp_path):
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    assert not list(tmp_path.glob("*.bin"))
    loaded = HmVisualBertForHatefulMemes.from_pretrained(tmp_path).eval()
    batch = make_batch()
    with torch.no_grad():
        assert torch.equal(loaded(**batch).logits, model(**batch).logits)


def test_auto_classes(model, tmp_path):
    register_auto_classes()
    config = AutoConfig.for_model("hm_visual_bert", vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=1,
                                  num_attention_heads=4, intermediate_size=37, visual_embedding_dim=VDIM)
    assert isinstance(config, HmVisualBertConfig)
    assert isinstance(AutoModelForSequenceClassification.from_config(config), HmVisualBertForHatefulMemes)
    assert isinstance(AutoModel.from_config(config), HmVisualBertModel)
    model.save_pretrained(tmp_path)
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, HmVisualBertForHatefulMemes)
    batch = make_batch()
    with torch.no_grad():
        assert torch.equal(loaded(**batch).logits, model(**batch).logits)


def test_gradient_checkpointing_gives_same_gradients():
    torch.manual_seed(0)
    config = tiny_config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    plain = HmVisualBertForHatefulMemes(config).train()
    ckpt = copy.deepcopy(plain)
    ckpt.activation_checkpointing_enable()  # the v5 name of gradient_checkpointing_enable
    assert ckpt.is_activation_checkpointing
    assert all(layer.gradient_checkpointing for layer in ckpt.visual_bert.encoder.layer)
    batch = make_batch()
    plain(**batch).loss.backward()
    ckpt(**batch).loss.backward()
    for (name, p1), (_, p2) in zip(plain.named_parameters(), ckpt.named_parameters()):
        assert torch.allclose(p1.grad, p2.grad, atol=1e-6), name


@pytest.mark.parametrize("reference_class", [VisualBertModel, VisualBertForPreTraining])
def test_equivalent_to_transformers_visual_bert(reference_class, tmp_path):
    """A checkpoint saved by transformers' VisualBERT loads and gives the same pooled output (fp32, eval)."""
    torch.manual_seed(0)
    ref_config = VisualBertConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=37, visual_embedding_dim=VDIM, max_position_embeddings=64)
    reference = reference_class(ref_config).eval()
    with torch.no_grad():  # make the visual embeddings differ from the text ones, so a mix-up would show
        for p in reference.parameters():
            p.add_(0.05 * torch.randn_like(p))
    reference.save_pretrained(tmp_path)
    ref_body = reference if reference_class is VisualBertModel else reference.visual_bert

    ours, info = HmVisualBertModel.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["mismatched_keys"]
    ours.eval()
    batch = make_batch()
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids", "visual_embeds",
                                    "visual_attention_mask")}
    with torch.no_grad():
        expected = ref_body(**inputs)
        got = ours(**inputs)
    assert torch.allclose(got.pooler_output, expected.pooler_output, atol=1e-5)
    real = torch.cat([inputs["attention_mask"], inputs["visual_attention_mask"]], 1).bool()
    assert torch.allclose(got.last_hidden_state[real], expected.last_hidden_state[real], atol=1e-5)

    head, info = HmVisualBertForHatefulMemes.from_pretrained(tmp_path, output_loading_info=True)
    assert info["missing_keys"] and all(k.startswith("classifier.") for k in info["missing_keys"])
    head.eval()
    with torch.no_grad():
        assert torch.allclose(head.visual_bert(**inputs).pooler_output, expected.pooler_output, atol=1e-5)


def test_from_text_pretrained_copies_bert_weights(tmp_path):
    torch.manual_seed(0)
    bert = BertModel(BertConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=4,
                                intermediate_size=37, max_position_embeddings=64))
    bert.save_pretrained(tmp_path)
    model = HmVisualBertForHatefulMemes.from_text_pretrained(tmp_path, visual_embedding_dim=VDIM, num_labels=3)
    assert model.config.hidden_size == HIDDEN and model.config.num_labels == 3
    ours = model.visual_bert.state_dict()
    for key, value in bert.state_dict().items():
        assert torch.equal(ours[key], value), key
    emb = model.visual_bert.embeddings
    assert torch.equal(emb.visual_position_embeddings.weight, bert.embeddings.position_embeddings.weight)
    assert torch.equal(emb.visual_token_type_embeddings.weight, bert.embeddings.token_type_embeddings.weight)
    with torch.no_grad():
        assert model.eval()(**make_batch()).logits.shape == (3, 3)
    with pytest.raises(ValueError, match="do not fit"):
        HmVisualBertForHatefulMemes.from_text_pretrained(tmp_path, hidden_size=64, num_attention_heads=4)


def test_base_size_parameter_count_on_meta_device():
    """112,044,290 parameters, 593,666 in the head: the PE paper's VisualBERT figures."""
    with torch.device("meta"):
        m = HmVisualBertForHatefulMemes(HmVisualBertConfig())
    assert sum(p.numel() for p in m.parameters()) == 112_044_290
    assert sum(p.numel() for p in m.classifier.parameters()) == 593_666


def test_bypass_transformer_is_refused():
    with pytest.raises(NotImplementedError, match="bypass_transformer"):
        HmVisualBertModel(tiny_config(bypass_transformer=True))


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
    m = HmVisualBertForHatefulMemes(tiny_config()).to(torch.bfloat16).eval()
    with torch.no_grad():
        out = m(**make_batch())
    assert out.logits.dtype == torch.bfloat16 and torch.isfinite(out.logits.float()).all()
