"""Skipping padding (bert_layers.TokenPacking): same results as computing every position, less work done."""

from __future__ import annotations

import copy

import pytest
import torch

from hm_hf.models.bert_layers import BertEncoder, TokenPacking
from hm_hf.models.uniter import HmUniterConfig, HmUniterForHatefulMemes
from hm_hf.models.vilbert import HmVilbertConfig, HmVilbertForHatefulMemes
from hm_hf.models.visual_bert import HmVisualBertConfig, HmVisualBertForHatefulMemes

from region_batches import region_batch  # tests/region_batches.py

SIZES = dict(vocab_size=50, hidden_size=32, num_attention_heads=4, intermediate_size=40, max_position_embeddings=32)


def padded_batch():
    """Rows with different text lengths and region counts, padded to the longest as MemeCollator does."""
    return region_batch([9, 3, 5, 2], [2, 7, 4, 1], [0, 1, 1, 0], vocab_size=SIZES["vocab_size"], feature_dim=16)


def build(name: str, skip_padding: bool):
    torch.manual_seed(0)
    if name == "visual_bert":
        config = HmVisualBertConfig(num_hidden_layers=2, visual_embedding_dim=16, skip_padding=skip_padding, **SIZES)
        return HmVisualBertForHatefulMemes(config)
    if name == "uniter":
        return HmUniterForHatefulMemes(HmUniterConfig(num_hidden_layers=2, img_dim=16, skip_padding=skip_padding,
                                                      **SIZES))
    config = HmVilbertConfig(num_hidden_layers=3, v_num_hidden_layers=2, v_biattention_id=[1], t_biattention_id=[2],
                             v_feature_size=16, v_hidden_size=24, v_num_attention_heads=4, v_intermediate_size=30,
                             bi_hidden_size=24, bi_num_attention_heads=4, skip_padding=skip_padding, **SIZES)
    return HmVilbertForHatefulMemes(config)


def train_without_dropout(model):
    """Training mode (so checkpointing and the training code paths run) with every dropout at 0."""
    model.train()
    config = model.config
    for name in list(vars(config)):
        if name.endswith("dropout_prob"):  # ViLBERT's co-attention reads its dropout from the config
            setattr(config, name, 0.0)
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        if hasattr(module, "dropout_prob"):  # attention dropout inside SDPA
            module.dropout_prob = 0.0


def test_pack_unpack_round_trip_and_when_to_pack():
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]])
    packing = TokenPacking(mask)
    x = torch.randn(2, 4, 3)
    packed = packing.pack(x)
    assert packed.shape == (4, 3) and packing.num_tokens == 4
    assert torch.equal(packed, x[mask.bool()])
    restored = packing.unpack(packed)
    assert torch.equal(restored[mask.bool()], x[mask.bool()]) and not restored[~mask.bool()].any()
    assert TokenPacking.for_mask(None) is None
    assert TokenPacking.for_mask(torch.ones(2, 4)) is None  # nothing to skip
    assert TokenPacking.for_mask(mask, enabled=False) is None
    assert TokenPacking.for_mask(torch.ones(1, 100).index_fill_(1, torch.tensor([99]), 0)) is None  # 1% padding
    assert TokenPacking.for_mask(mask) is not None
    with pytest.raises(ValueError, match="batch, seq_len"):
        TokenPacking(torch.ones(2, 1, 1, 4))


def test_encoder_layers_see_only_real_tokens():
    """The position-wise layers receive exactly the real tokens: the padding is not computed."""
    encoder = BertEncoder(num_hidden_layers=2, hidden_size=32, num_attention_heads=4, intermediate_size=40)
    rows_seen = []
    for layer in encoder.layer:
        for module in (layer.attention.self.query, layer.intermediate.dense, layer.output.dense):
            module.register_forward_hook(lambda m, inputs, out: rows_seen.append(inputs[0].shape[:-1].numel()))
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 0, 0, 0, 0]])
    out = encoder.eval()(torch.randn(2, 6, 32), mask, output_hidden_states=True)
    assert rows_seen == [6] * 6  # 6 real tokens of 12 positions, in every Linear of both layers
    assert out.last_hidden_state.shape == (2, 6, 32) and len(out.hidden_states) == 3
    assert not out.last_hidden_state[~mask.bool()].any()  # padded positions come back as zeros
    rows_seen.clear()
    encoder(torch.randn(2, 6, 32), torch.ones(2, 6))
    assert rows_seen == [12] * 6  # nothing padded: the plain (B, S, H) path


@pytest.mark.parametrize("name", ["visual_bert", "uniter", "vilbert"])
def test_skipping_padding_gives_the_same_outputs_and_gradients(name):
    skipping, padded = build(name, True), build(name, False)
    padded.load_state_dict(skipping.state_dict())
    batch = padded_batch()
    skipping.eval(), padded.eval()
    with torch.no_grad():
        a, b = skipping(**batch, output_hidden_states=True), padded(**batch, output_hidden_states=True)
    torch.testing.assert_close(a.logits, b.logits, atol=1e-5, rtol=1e-5)
    # every layer's hidden states agree at the real positions
    real = batch["attention_mask"].bool()  # text positions come first in every model's hidden states
    assert len(a.hidden_states) == len(b.hidden_states) >= 2
    for x, y in zip(a.hidden_states, b.hidden_states):
        torch.testing.assert_close(x[:, :real.shape[1]][real], y[:, :real.shape[1]][real], atol=1e-5, rtol=1e-5)

    for model in (skipping, padded):
        train_without_dropout(model)
        model.zero_grad()
        model(**batch).loss.backward()
    grads_a = dict((n, p.grad) for n, p in skipping.named_parameters() if p.grad is not None)
    grads_b = dict((n, p.grad) for n, p in padded.named_parameters() if p.grad is not None)
    assert grads_a.keys() == grads_b.keys() and len(grads_a) > 10
    for n in grads_a:
        torch.testing.assert_close(grads_a[n], grads_b[n], atol=1e-5, rtol=1e-4, msg=n)


@pytest.mark.parametrize("method", ["lora", "bottleneck"])
def test_peft_adapters_and_gradient_checkpointing_on_packed_tokens(method):
    """Adapters (LoRA on Linear, bottleneck on BertOutput) and checkpointing run on the packed (N, H) tokens."""
    from peft import get_peft_model

    from hm_hf.peft import build_peft_config

    base = build("visual_bert", True)
    reference = copy.deepcopy(base)
    reference.config.skip_padding = False
    reference.visual_bert.encoder.skip_padding = False
    peft_a = get_peft_model(base, build_peft_config(base, method))
    peft_b = get_peft_model(reference, build_peft_config(reference, method))
    peft_b.load_state_dict(peft_a.state_dict())
    with torch.no_grad():  # make the adapters non-trivial (LoRA B and bottleneck up start at zero)
        for (n, p), (_, q) in zip(peft_a.named_parameters(), peft_b.named_parameters()):
            if p.requires_grad:
                p.normal_(0, 0.05, generator=torch.Generator().manual_seed(len(n)))
                q.copy_(p)
    peft_a.base_model.model.gradient_checkpointing_enable()
    batch = padded_batch()
    for model in (peft_a, peft_b):
        train_without_dropout(model)  # checkpointing only recomputes in training mode
        model(**batch).loss.backward()
    assert peft_a.base_model.model.visual_bert.encoder.layer[0].gradient_checkpointing
    with torch.no_grad():
        logits_a, logits_b = peft_a(**batch).logits, peft_b(**batch).logits
    torch.testing.assert_close(logits_a, logits_b, atol=1e-5, rtol=1e-5)
    grads_a = {n: p.grad for n, p in peft_a.named_parameters() if p.requires_grad}
    grads_b = {n: p.grad for n, p in peft_b.named_parameters() if p.requires_grad}
    assert all(g is not None for g in grads_a.values())
    for n in grads_a:
        torch.testing.assert_close(grads_a[n], grads_b[n], atol=1e-5, rtol=1e-4, msg=n)


def test_config_field_round_trips(tmp_path):
    model = build("visual_bert", False)
    model.save_pretrained(tmp_path)
    loaded = HmVisualBertForHatefulMemes.from_pretrained(tmp_path)
    assert loaded.config.skip_padding is False and loaded.visual_bert.encoder.skip_padding is False
    assert HmVisualBertConfig().skip_padding is True


def test_packed_tokens_under_mixed_precision_autocast():
    """The fp16/bf16 training path: autocast Linear outputs are scattered into half-precision buffers.

    Runs bfloat16 autocast on the CPU (the same code path as fp16 autocast on a GPU) and compares with the
    padded computation under the same autocast.
    """
    skipping, padded = build("visual_bert", True), build("visual_bert", False)
    padded.load_state_dict(skipping.state_dict())
    batch = padded_batch()
    outputs = []
    for model in (skipping, padded):
        train_without_dropout(model)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(**batch)
        out.loss.backward()
        outputs.append(out)
    assert outputs[0].logits.dtype == torch.bfloat16
    torch.testing.assert_close(outputs[0].logits.float(), outputs[1].logits.float(), atol=3e-2, rtol=3e-2)
    grad = skipping.visual_bert.encoder.layer[0].intermediate.dense.weight.grad
    assert grad is not None and grad.dtype == torch.float32 and torch.isfinite(grad).all()


def test_compiled_encoder_is_one_graph_without_data_dependent_packing():
    """Under torch.compile neither the packing (nonzero) nor the "is anything padded?" check runs: the
    encoder compiles to one graph (fullgraph=True fails on any graph break) with the same results."""
    import torch._dynamo

    encoder = BertEncoder(num_hidden_layers=2, hidden_size=32, num_attention_heads=4, intermediate_size=40).eval()
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 0, 0, 0, 0]])
    x = torch.randn(2, 6, 32)
    torch._dynamo.reset()
    compiled = torch.compile(encoder, backend="eager", fullgraph=True)
    for m in (mask, torch.ones_like(mask)):
        expected = encoder(x, m).last_hidden_state
        got = compiled(x, m).last_hidden_state
        torch.testing.assert_close(got[m.bool()], expected[m.bool()])


def test_one_packing_per_stream_and_clear_error_for_additive_masks(monkeypatch):
    """ViLBERT builds one packing (one host sync) per stream, however many runs of layers it has; a float
    mask that is not 1/0 (an additive mask) is refused instead of being read as all real."""
    model = build("vilbert", True).eval()
    built = []
    original = TokenPacking.__init__

    def counting_init(self, mask):
        built.append(tuple(mask.shape))
        original(self, mask)

    monkeypatch.setattr(TokenPacking, "__init__", counting_init)
    batch = padded_batch()
    with torch.no_grad():
        model(**{k: v for k, v in batch.items() if k != "labels"})
    assert len(built) == 2  # text and visual stream, although each has two runs of layers here
    encoder = BertEncoder(num_hidden_layers=1, hidden_size=32, num_attention_heads=4, intermediate_size=40)
    additive = torch.tensor([[0.0, 0.0, -10000.0]])
    with pytest.raises(ValueError, match="additive mask"):
        encoder(torch.randn(1, 3, 32), additive)


@pytest.mark.parametrize("name", ["visual_bert", "uniter", "vilbert"])
def test_models_with_loss_compile_to_one_graph(name):
    """`torch_compile: true` in a recipe compiles each region model, loss included, without a graph break
    (no data-dependent branch or host sync anywhere in forward), with the eager results."""
    import torch._dynamo

    model = build(name, True).eval()
    batch = padded_batch()
    expected = model(**batch)
    torch._dynamo.reset()
    got = torch.compile(model, backend="eager", fullgraph=True)(**batch)
    torch.testing.assert_close(got.logits, expected.logits)
    torch.testing.assert_close(got.loss, expected.loss)
