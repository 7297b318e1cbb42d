"""`attn_implementation` is honoured: eager and SDPA attention give the same outputs, and eager really runs
without `scaled_dot_product_attention` (hm_hf's own attention and the transformers encoders inside Concat / CLIP)."""

from __future__ import annotations

import pytest
import torch

from test_skip_padding import SIZES, build, padded_batch  # the tiny region models and their padded batch


def no_sdpa(*args, **kwargs):
    raise AssertionError("scaled_dot_product_attention ran under attn_implementation='eager'")


def outputs(model, batch) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(**batch).logits


def tiny_concat():
    from transformers import BertConfig

    from hm_hf.models.concat import HmConcatConfig, HmConcatForHatefulMemes

    torch.manual_seed(0)
    bert = BertConfig(vocab_size=SIZES["vocab_size"], hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      intermediate_size=37, max_position_embeddings=32)
    return HmConcatForHatefulMemes(HmConcatConfig(text_source="encoder", text_pooling="mean", text_config=bert,
                                                  visual_embedding_dim=16))


@pytest.mark.parametrize("name", ["visual_bert", "uniter", "vilbert", "concat"])
def test_eager_and_sdpa_agree(name, tmp_path, monkeypatch):
    model = tiny_concat() if name == "concat" else build(name, skip_padding=True)
    assert model.config._attn_implementation == "sdpa"
    model.save_pretrained(tmp_path)
    batch = padded_batch()
    batch.pop("labels")
    sdpa = outputs(type(model).from_pretrained(tmp_path, attn_implementation="sdpa"), batch)
    eager_model = type(model).from_pretrained(tmp_path, attn_implementation="eager")
    assert eager_model.config._attn_implementation == "eager"
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", no_sdpa)
    eager = outputs(eager_model, batch)
    torch.testing.assert_close(eager, sdpa, atol=1e-5, rtol=1e-5)
    monkeypatch.undo()
    # switched at run time, as transformers' set_attn_implementation does
    model.set_attn_implementation("eager")
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", no_sdpa)
    torch.testing.assert_close(outputs(model, batch), sdpa, atol=1e-5, rtol=1e-5)


def test_eager_and_sdpa_agree_for_clip(tmp_path, monkeypatch):
    from hm_hf.models.clip import HmClipForHatefulMemes, make_tiny_clip

    clip = make_tiny_clip(tmp_path / "clip", ["a red square", "a blue disc"])
    torch.manual_seed(0)
    model = HmClipForHatefulMemes.from_clip_pretrained(clip, projection_dim=8, freeze_clip=False)
    model.save_pretrained(tmp_path / "model")
    g = torch.Generator().manual_seed(0)
    batch = {"input_ids": torch.randint(2, 40, (2, 6), generator=g),
             "attention_mask": torch.tensor([[1] * 6, [1] * 3 + [0] * 3]),
             "pixel_values": torch.randn(2, 3, 32, 32, generator=g)}
    sdpa = outputs(HmClipForHatefulMemes.from_pretrained(tmp_path / "model", attn_implementation="sdpa"), batch)
    eager_model = HmClipForHatefulMemes.from_pretrained(tmp_path / "model", attn_implementation="eager")
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", no_sdpa)
    torch.testing.assert_close(outputs(eager_model, batch), sdpa, atol=1e-5, rtol=1e-5)


def test_unknown_implementations_are_refused(tmp_path):
    model = build("visual_bert", skip_padding=True)
    model.save_pretrained(tmp_path)
    with pytest.raises((ValueError, ImportError)):
        type(model).from_pretrained(tmp_path, attn_implementation="flash_attention_2")
