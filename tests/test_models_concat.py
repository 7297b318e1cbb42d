"""HmConcat: fastText/BERT x regions/ResNet/CLIP variants, unimodal configs, save/load, Auto, encoders init."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from torch.nn import functional as F
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForSequenceClassification,
    BertConfig,
    BertModel,
    CLIPVisionConfig,
    ResNetConfig,
)

from hm_hf.models.auto import register_auto_classes
from hm_hf.models.concat import HmConcatConfig, HmConcatForHatefulMemes, HmConcatModel

VOCAB, TDIM, VDIM = 80, 100, 24


def tiny_bert_config(**kwargs) -> BertConfig:
    fields = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=37, max_position_embeddings=64)
    fields.update(kwargs)
    return BertConfig(**fields)


def tiny_clip_config() -> CLIPVisionConfig:
    return CLIPVisionConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=4,
                            image_size=32, patch_size=8)


def tiny_resnet_config() -> ResNetConfig:
    return ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic")


def make_batch(batch_size: int = 3, regions: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(1, VOCAB, (batch_size, 6), generator=g)
    attention_mask = torch.ones(batch_size, 6, dtype=torch.long)
    attention_mask[1, 3:] = 0
    visual_attention_mask = torch.ones(batch_size, regions, dtype=torch.long)
    visual_attention_mask[0, 2:] = 0
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "token_type_ids": torch.zeros_like(input_ids),
        "text_embedding": torch.randn(batch_size, TDIM, generator=g),
        "pixel_values": torch.randn(batch_size, 3, 32, 32, generator=g),
        "visual_embeds": torch.randn(batch_size, regions, VDIM, generator=g),
        "visual_attention_mask": visual_attention_mask,
        "visual_boxes": torch.rand(batch_size, regions, 4, generator=g),
        "labels": torch.tensor([0, 1, 1][:batch_size]),
    }


@pytest.fixture(scope="module")
def seed_model() -> HmConcatForHatefulMemes:
    """The seed's fastText + image-vector Concat (here with pooled region features)."""
    torch.manual_seed(0)
    return HmConcatForHatefulMemes(HmConcatConfig(text_embedding_dim=TDIM, visual_embedding_dim=VDIM)).eval()


def test_seed_sizes_and_forward_backward(seed_model):
    concat = seed_model.concat
    assert concat.text_projection[0].out_features == 256 and concat.image_projection[0].out_features == 256
    assert isinstance(concat.text_projection[1], torch.nn.ReLU) and concat.text_projection[2].p == 0.1
    m = copy.deepcopy(seed_model).train()
    out = m(**make_batch())
    assert out.logits.shape == (3, 2) and torch.isfinite(out.loss)
    out.loss.backward()
    for p in (m.concat.text_projection[0].weight, m.concat.image_projection[0].weight, m.classifier.weight):
        assert p.grad is not None and p.grad.abs().sum() > 0
    m.eval()
    batch = make_batch()
    with torch.no_grad():
        out = m(**batch)
    assert torch.allclose(out.loss, F.cross_entropy(out.logits, batch["labels"]), atol=1e-6)


def test_six_way_and_ignored_labels():
    m = HmConcatForHatefulMemes(HmConcatConfig(visual_embedding_dim=VDIM, num_labels=6)).eval()
    batch = make_batch()
    batch["labels"] = torch.tensor([3, -100, -100])
    with torch.no_grad():
        out = m(**batch)
    assert out.logits.shape == (3, 6)
    assert torch.allclose(out.loss, F.cross_entropy(out.logits[:1], torch.tensor([3])), atol=1e-6)


def test_padding_regions_never_changes_logits(seed_model):
    batch = make_batch()
    padded = dict(batch)
    padded["visual_embeds"] = torch.cat([batch["visual_embeds"], 100 * torch.randn(3, 3, VDIM)], 1)
    padded["visual_attention_mask"] = torch.cat([batch["visual_attention_mask"], torch.zeros(3, 3, dtype=torch.long)], 1)
    padded["visual_boxes"] = torch.cat([batch["visual_boxes"], torch.rand(3, 3, 4)], 1)
    with torch.no_grad():
        ref = seed_model(**batch).logits
        assert torch.allclose(seed_model(**padded).logits, ref, atol=1e-6)
        padded["visual_attention_mask"] = torch.ones_like(padded["visual_attention_mask"])
        assert not torch.allclose(seed_model(**padded).logits, ref, atol=1e-4)


def test_unimodal_variants_by_config():
    text_only = HmConcatForHatefulMemes(HmConcatConfig(modalities=["text"])).eval()
    image_only = HmConcatForHatefulMemes(HmConcatConfig(modalities=["image"], visual_embedding_dim=VDIM)).eval()
    assert text_only.concat.image_projection is None and image_only.concat.text_projection is None
    batch = make_batch()
    with torch.no_grad():
        assert text_only(text_embedding=batch["text_embedding"]).logits.shape == (3, 2)
        assert image_only(visual_embeds=batch["visual_embeds"]).logits.shape == (3, 2)
        # the ignored modality really is ignored
        a = text_only(**batch).logits
        b = text_only(**{**batch, "visual_embeds": torch.randn_like(batch["visual_embeds"])}).logits
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="text_embedding"):
        text_only(visual_embeds=batch["visual_embeds"])
    with pytest.raises(ValueError, match="modalities"):
        HmConcatConfig(modalities=["audio"])
    with pytest.raises(ValueError, match="text_config"):
        HmConcatConfig(text_source="encoder")


def test_bert_and_clip_encoders_serialise_and_round_trip(tmp_path):
    torch.manual_seed(0)
    config = HmConcatConfig(text_source="encoder", text_config=tiny_bert_config().to_dict(),
                            image_source="encoder", vision_config=tiny_clip_config())
    assert config.text_projection_dim == 128  # the seed's BERT projection size
    model = HmConcatForHatefulMemes(config).train()
    out = model(**make_batch())
    out.loss.backward()
    assert model.concat.text_encoder.encoder.layer[0].attention.self.query.weight.grad is not None
    assert model.concat.vision_encoder.embeddings.patch_embedding.weight.grad is not None
    model.eval()
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["text_config"]["model_type"] == "bert" and saved["vision_config"]["model_type"] == "clip_vision_model"
    loaded = HmConcatForHatefulMemes.from_pretrained(tmp_path).eval()
    assert type(loaded.concat.vision_encoder).__name__ == "CLIPVisionModel"
    batch = make_batch()
    with torch.no_grad():
        assert torch.equal(loaded(**batch).logits, model(**batch).logits)


def test_resnet_vision_backbone_and_mean_text_pooling():
    config = HmConcatConfig(text_source="encoder", text_config=tiny_bert_config(), text_pooling="mean",
                            image_source="encoder", vision_config=tiny_resnet_config())
    model = HmConcatForHatefulMemes(config).eval()
    assert model.concat.image_projection[0].in_features == 16
    with torch.no_grad():
        assert model(**make_batch()).logits.shape == (3, 2)


def test_text_side_from_pretrained_bert(tmp_path):
    torch.manual_seed(0)
    bert = BertModel(tiny_bert_config())
    bert.save_pretrained(tmp_path / "bert")
    model = HmConcatForHatefulMemes.from_text_pretrained(tmp_path / "bert", visual_embedding_dim=VDIM)
    assert model.config.text_source == "encoder" and model.config.image_source == "regions"
    ours = model.concat.text_encoder.state_dict()
    for key, value in bert.state_dict().items():
        assert torch.equal(ours[key], value), key
    with torch.no_grad():
        assert model.eval()(**make_batch()).logits.shape == (3, 2)
    # and the whole multimodal model saves / reloads with the BERT weights inside
    model.save_pretrained(tmp_path / "concat")
    loaded = HmConcatForHatefulMemes.from_pretrained(tmp_path / "concat")
    assert torch.equal(loaded.concat.text_encoder.embeddings.word_embeddings.weight,
                       bert.embeddings.word_embeddings.weight)


def test_auto_classes(seed_model, tmp_path):
    register_auto_classes()
    config = AutoConfig.for_model("hm_concat", visual_embedding_dim=VDIM)
    assert isinstance(config, HmConcatConfig)
    assert isinstance(AutoModelForSequenceClassification.from_config(config), HmConcatForHatefulMemes)
    assert isinstance(AutoModel.from_config(config), HmConcatModel)
    seed_model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    batch = make_batch()
    with torch.no_grad():
        assert torch.equal(loaded(**batch).logits, seed_model(**batch).logits)


def test_gradient_checkpointing_reaches_the_text_encoder():
    torch.manual_seed(0)
    config = HmConcatConfig(text_source="encoder", dropout=0.0, visual_embedding_dim=VDIM,
                            text_config=tiny_bert_config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))
    plain = HmConcatForHatefulMemes(config).train()
    ckpt = copy.deepcopy(plain)
    ckpt.activation_checkpointing_enable()
    assert all(layer.gradient_checkpointing for layer in ckpt.concat.text_encoder.encoder.layer)
    batch = make_batch()
    plain(**batch).loss.backward()
    ckpt(**batch).loss.backward()
    for (name, p1), (_, p2) in zip(plain.named_parameters(), ckpt.named_parameters()):
        assert torch.allclose(p1.grad, p2.grad, atol=1e-6), name
    # encoder-free variant: enabling is a harmless no-op
    HmConcatForHatefulMemes(HmConcatConfig()).activation_checkpointing_enable()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_fp16_autocast_forward_on_gpu():
    config = HmConcatConfig(text_source="encoder", text_config=tiny_bert_config(),
                            image_source="encoder", vision_config=tiny_clip_config())
    model = HmConcatForHatefulMemes(config).eval().cuda()
    batch = {k: v.cuda() for k, v in make_batch().items()}
    with torch.no_grad():
        ref = model(**batch).logits
        with torch.autocast("cuda", dtype=torch.float16):
            out = model(**batch)
    assert out.logits.dtype == torch.float16 and torch.isfinite(out.loss)
    assert torch.allclose(out.logits.float(), ref, atol=2e-2)


def test_lora_seq_cls_wrapper_runs_on_the_bert_text_encoder():
    """peft's SEQ_CLS wrapper passes inputs_embeds / output_attentions / return_dict: the forward accepts them."""
    from peft import LoraConfig, get_peft_model

    model = HmConcatForHatefulMemes(HmConcatConfig(text_source="encoder", text_config=tiny_bert_config(),
                                                   visual_embedding_dim=VDIM))
    peft_model = get_peft_model(model, LoraConfig(task_type="SEQ_CLS", r=4, target_modules=["query", "value"],
                                                  modules_to_save=["classifier", "text_projection", "image_projection",
                                                                   "fusion"]))
    out = peft_model(**make_batch())
    out.loss.backward()
    lora = [p for n, p in peft_model.named_parameters() if "lora_B" in n]
    assert lora and all(p.grad is not None for p in lora)


def test_bfloat16_weights_take_float32_batches():
    """A model loaded in bf16 (e.g. for inference) takes the collator's float32 features as they are."""
    torch.manual_seed(0)
    config = HmConcatConfig(text_source="encoder", text_config=tiny_bert_config(), visual_embedding_dim=VDIM)
    m = HmConcatForHatefulMemes(config).to(torch.bfloat16).eval()
    assert m.get_input_embeddings() is m.concat.text_encoder.embeddings.word_embeddings
    with torch.no_grad():
        out = m(**make_batch())
    assert out.logits.dtype == torch.bfloat16 and torch.isfinite(out.logits.float()).all()
