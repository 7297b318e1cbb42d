"""Training-step throughput: hm_hf VisualBERT vs transformers' VisualBertModel (+ the same head), side by side.

Both models are the same network with the same weights (hm_hf's is loaded from the transformers model's
state dict, and their eval-mode logits are compared before timing); only the implementation differs
(hm_hf: SDPA attention, no mask at all when nothing is padded, and padded positions skipped in every
position-wise part of a layer, see `hm_hf.models.bert_layers.TokenPacking`; transformers: eager attention
with an additive mask, every padded position computed). Each (method, batch mode) pair times the two
models in alternating rounds in one process, so a busy machine slows both alike, and prints the ratio.

Methods: full fine-tuning, LoRA (r=8 on query/value) and the PE paper's bottleneck adapters, both through
peft with hm_hf's default targets (`hm_hf.peft.build_peft_config`) and the head trained in full.

Batch modes:
  fixed    every row has all its text tokens and regions (48 + 100 at base size): the dense upper bound;
  padded   rows with random text lengths (8..48) and region counts (10..100), padded to the longest row of
           the batch, as `MemeCollator` does; random batches;
  grouped  the same rows sorted by length before batching (what `group_by_length` does), so batches
           carry less padding.
"Useful" TFLOP/s count only the real (unpadded) tokens, and "% of peak" is taken from them; "padded"
TFLOP/s count the padded shapes, i.e. what an implementation that computes every position executes
(transformers does; hm_hf skips most of it, so its padded figure is not work it did).

Precision: fp16 autocast + GradScaler on CUDA (as the recipes' `fp16: true`), fp32 on CPU.
TFLOP/s are estimates from the matmul shapes: forward = 2 x multiply-adds of every Linear and of
attention (QK^T and PV); full fine-tuning = 3 x forward; PEFT = 2 x forward (no weight gradients of the
frozen base, whose visual projection also needs no input gradient) + the adapters' own weight gradients.

    python benchmarks/train_step.py --device cuda --matmul-peak          # base size, batch 128 (GPU)
    python benchmarks/train_step.py --device cpu                         # 2 layers, batch 8 (CPU)
    python benchmarks/train_step.py --tiny                               # smoke test, seconds
"""

from __future__ import annotations

import argparse
import copy
import sys
import time

import torch
from torch import nn

from _common import (
    add_common_arguments,
    default_output,
    environment,
    format_table,
    median,
    resolve_device,
    set_threads,
    synchronize,
    write_json,
)

BASE = dict(layers=12, hidden=768, heads=12, intermediate=3072, visual_dim=2048, batch=128, text_len=48,
            regions=100, vocab=30522)
CPU = dict(BASE, layers=2, batch=8)  # base width, fewer layers and a small batch so a 2-core CPU finishes
TINY = dict(layers=1, hidden=64, heads=4, intermediate=128, visual_dim=64, batch=4, text_len=8, regions=6,
            vocab=200)
MIN_TEXT, MIN_REGIONS = 8, 10  # the padded modes draw lengths in [MIN, max]


# ----------------------------------------------------------------------------------------------- models


class TransformersVisualBertClassifier(nn.Module):
    """transformers' `VisualBertModel` + hm_hf's classification head (MMF's: dense+act+LayerNorm, Linear)."""

    def __init__(self, config):
        super().__init__()
        from hm_hf.models.heads import BertClassificationHead

        self.config = config  # read by hm_hf.peft.build_peft_config (model_type "visual_bert")
        self.visual_bert = _transformers_visual_bert(config)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.classifier = BertClassificationHead(config.hidden_size, 2, True, config.hidden_act, config.layer_norm_eps)

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, visual_embeds=None,
                visual_attention_mask=None, labels=None, **kwargs):
        from transformers.modeling_outputs import SequenceClassifierOutput

        from hm_hf.models.heads import classification_loss

        out = self.visual_bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                               visual_embeds=visual_embeds, visual_attention_mask=visual_attention_mask)
        logits = self.classifier(self.dropout(out.pooler_output))
        return SequenceClassifierOutput(loss=classification_loss(logits, labels, 2), logits=logits)


def _transformers_visual_bert(config):
    from transformers import VisualBertModel

    return VisualBertModel(config)


def build_pair(size: dict, seed: int = 0):
    """(transformers model, hm_hf model) with identical weights, on the CPU, in train mode."""
    from transformers import VisualBertConfig

    from hm_hf.models.visual_bert import HmVisualBertConfig, HmVisualBertForHatefulMemes

    fields = dict(vocab_size=size["vocab"], hidden_size=size["hidden"], num_hidden_layers=size["layers"],
                  num_attention_heads=size["heads"], intermediate_size=size["intermediate"],
                  visual_embedding_dim=size["visual_dim"], max_position_embeddings=512)
    torch.manual_seed(seed)
    reference = TransformersVisualBertClassifier(VisualBertConfig(**fields))
    ours = HmVisualBertForHatefulMemes(HmVisualBertConfig(num_labels=2, classifier_transform=True, **fields))
    state = {f"visual_bert.{k}": v for k, v in reference.visual_bert.state_dict().items()}
    state.update({f"classifier.{k}": v for k, v in reference.classifier.state_dict().items()})
    result = ours.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith("position_ids")]
    if missing or result.unexpected_keys:
        raise RuntimeError(f"weights do not map one to one: missing {missing}, unexpected {result.unexpected_keys}")
    return reference.train(), ours.train()


def check_same_outputs(reference, ours, batch) -> float:
    """Max |logit difference| of the two models in eval mode, fp32 (they must compute the same function)."""
    was = reference.training, ours.training
    reference.eval(), ours.eval()
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        diff = (reference(**inputs).logits - ours(**inputs).logits).abs().max().item()
    reference.train(was[0]), ours.train(was[1])
    return diff


def apply_method(model: nn.Module, method: str) -> nn.Module:
    """full: every weight; lora / bottleneck: peft with hm_hf's default targets, the head in modules_to_save."""
    if method == "full":
        return model
    from peft import get_peft_model

    import hm_hf.peft  # noqa: F401  (registers the bottleneck method)
    from hm_hf.peft import build_peft_config

    return get_peft_model(model, build_peft_config(model, method))


# ----------------------------------------------------------------------------------------------- batches


def make_rows(size: dict, count: int, variable: bool, generator: torch.Generator) -> list[tuple[int, int]]:
    """(text length, region count) per row: fixed at the maxima, or uniform in [MIN, max]."""
    if not variable:
        return [(size["text_len"], size["regions"])] * count
    min_text = min(MIN_TEXT, max(1, size["text_len"] // 4))
    min_regions = min(MIN_REGIONS, max(1, size["regions"] // 4))
    texts = torch.randint(min_text, size["text_len"] + 1, (count,), generator=generator).tolist()
    regions = torch.randint(min_regions, size["regions"] + 1, (count,), generator=generator).tolist()
    return list(zip(texts, regions))


def collate(rows: list[tuple[int, int]], size: dict, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """A batch as `MemeCollator` makes it: padded to the longest text / region set, masks 1 = real."""
    batch, text_len, num_regions = len(rows), max(r[0] for r in rows), max(r[1] for r in rows)
    input_ids = torch.randint(min(1000, size["vocab"] // 2), size["vocab"], (batch, text_len), generator=generator)
    attention_mask = torch.zeros(batch, text_len, dtype=torch.long)
    visual_mask = torch.zeros(batch, num_regions, dtype=torch.long)
    visual = torch.randn(batch, num_regions, size["visual_dim"], generator=generator).relu_()
    for i, (t, r) in enumerate(rows):
        attention_mask[i, :t] = 1
        visual_mask[i, :r] = 1
    input_ids = input_ids * attention_mask  # padding id 0
    visual = visual * visual_mask[..., None]
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "token_type_ids": torch.zeros_like(input_ids),
        "visual_embeds": visual,
        "visual_attention_mask": visual_mask,
        "labels": torch.randint(0, 2, (batch,), generator=generator),
    }


def make_batches(size: dict, mode: str, num_batches: int, seed: int = 0):
    """[(batch dict, rows)] for a mode: fixed, padded (random batches) or grouped (length-sorted batches)."""
    generator = torch.Generator().manual_seed(seed)
    rows = make_rows(size, size["batch"] * num_batches, mode != "fixed", generator)
    if mode == "grouped":
        rows = sorted(rows, key=lambda r: r[0] + r[1], reverse=True)
    chunks = [rows[i * size["batch"]:(i + 1) * size["batch"]] for i in range(num_batches)]
    return [(collate(chunk, size, generator), chunk) for chunk in chunks]


# ----------------------------------------------------------------------------------------------- FLOPs


def forward_flops(size: dict, text_len: int, regions: int) -> dict[str, float]:
    """Forward FLOPs of one row of `text_len` tokens + `regions` regions, split by what backward must redo."""
    h, ff, layers, seq = size["hidden"], size["intermediate"], size["layers"], text_len + regions
    encoder = layers * (2 * seq * (4 * h * h + 2 * h * ff) + 2 * 2 * seq * seq * h)
    visual_projection = 2 * regions * size["visual_dim"] * h
    head = 2 * (h * h + h * h + 2 * h)  # pooler + head transform + classifier
    return {"encoder": encoder, "visual_projection": visual_projection, "head": head}


def adapter_flops(size: dict, method: str, seq: int) -> float:
    """Forward FLOPs of the adapters themselves for one row (their weights do get gradients)."""
    h = size["hidden"]
    if method == "lora":
        return size["layers"] * 2 * 2 * seq * (h * 8 + 8 * h)  # query and value, r=8
    if method == "bottleneck":
        return size["layers"] * 2 * seq * (h * (h // 10) * 2)
    return 0.0


def train_flops(size: dict, method: str, rows: list[tuple[int, int]]) -> float:
    total = 0.0
    for text_len, regions in rows:
        f = forward_flops(size, text_len, regions)
        fwd = f["encoder"] + f["visual_projection"] + f["head"]
        if method == "full":
            total += 3 * fwd
        else:  # no weight gradients for frozen weights; the frozen visual projection needs no input gradient
            total += 2 * (f["encoder"] + f["head"]) + f["visual_projection"] + 3 * adapter_flops(
                size, method, text_len + regions)
    return total


# ----------------------------------------------------------------------------------------------- timing


def matmul_peak(device, dtype: torch.dtype, n: int | None = None, repeats: int | None = None, trials: int = 3) -> float:
    """Measured dense matmul TFLOP/s of the device in `dtype` (the denominator of "% of peak"): the best of
    `trials` timings, so that a busy moment of a shared machine does not lower the peak."""
    if n is None:
        n = 8192 if device.type == "cuda" else 2048
    if repeats is None:
        repeats = 50 if device.type == "cuda" else 5
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    best = 0.0
    for _ in range(trials):
        synchronize(device)
        start = time.perf_counter()
        for _ in range(repeats):
            a @ b
        synchronize(device)
        best = max(best, 2 * n**3 * repeats / (time.perf_counter() - start) / 1e12)
    return best


class Runner:
    """One model on the device with its optimizer, autocast and GradScaler; times single training steps."""

    def __init__(self, model: nn.Module, device, amp_dtype: torch.dtype | None, compile_model: bool = False):
        before = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
        self.device = device
        self.model = model.to(device).train()
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.trainable = sum(p.numel() for p in self.params)
        self.optimizer = torch.optim.AdamW(self.params, lr=1e-5, foreach=True)
        self.amp_dtype = amp_dtype
        self.scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16 and device.type == "cuda")
        self.forward = torch.compile(self.model) if compile_model else self.model
        self.step_times: list[float] = []
        self.static_bytes = 0
        self.transient_peak = 0
        self._before = before

    def step(self, batch: dict) -> float:
        amp = self.amp_dtype is not None
        with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32, enabled=amp):
            loss = self.forward(**batch).loss
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return loss

    def timed_step(self, batch: dict, measure_memory: bool = False) -> None:
        cuda = self.device.type == "cuda"
        if measure_memory and cuda:
            synchronize(self.device)
            self.static_bytes = torch.cuda.memory_allocated(self.device) - self._before
            start_bytes = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        synchronize(self.device)
        start = time.perf_counter()
        self.step(batch)
        synchronize(self.device)
        self.step_times.append(time.perf_counter() - start)
        if measure_memory and cuda:
            self.transient_peak = max(self.transient_peak, torch.cuda.max_memory_allocated(self.device) - start_bytes)


def bench_pair(size, method, mode, device, amp_dtype, reference_cpu, ours_cpu, args, compile_model=False) -> list[dict]:
    batches = make_batches(size, mode, args.num_batches, seed=1)
    device_batches = [({k: v.to(device, non_blocking=True) for k, v in b.items()}, rows) for b, rows in batches]
    runners = {}
    for name, base in (("transformers", reference_cpu), ("hm_hf", ours_cpu)):
        runners[name] = Runner(apply_method(copy.deepcopy(base), method), device, amp_dtype, compile_model)
    for _ in range(args.warmup):  # kernel selection, allocator, GradScaler's first scale, compilation
        for runner in runners.values():
            for batch, _rows in device_batches[:1]:
                runner.step(batch)
    if device.type == "cuda":
        for runner in runners.values():  # memory of one step, each model measured on its own step
            runner.timed_step(device_batches[0][0], measure_memory=True)
            runner.step_times.clear()
    for r in range(args.rounds):  # alternate the two models so that machine noise hits both alike
        for runner in runners.values():
            for k in range(args.steps_per_round):  # both models see the same batches
                batch, _rows = device_batches[(r * args.steps_per_round + k) % len(device_batches)]
                runner.timed_step(batch)
    results = []
    useful = sum(train_flops(size, method, rows) for _, rows in batches) / len(batches)
    padded = sum(
        train_flops(size, method, [(b["input_ids"].shape[1], b["visual_embeds"].shape[1])] * len(rows))
        for b, rows in batches
    ) / len(batches)
    real_tokens = sum(sum(t + r for t, r in rows) for _, rows in batches)
    padded_tokens = sum(len(rows) * (b["input_ids"].shape[1] + b["visual_embeds"].shape[1]) for b, rows in batches)
    for name, runner in runners.items():
        seconds = median(runner.step_times)
        row = {
            "impl": name + ("+compile" if compile_model else ""),
            "method": method,
            "mode": mode,
            "batch": size["batch"],
            "trainable_params": runner.trainable,
            "step_ms": seconds * 1e3,
            "samples_per_s": size["batch"] / seconds,
            "useful_tflops": useful / seconds / 1e12,
            "padded_tflops": padded / seconds / 1e12,
            "real_token_fraction": real_tokens / padded_tokens,
            "timed_steps": len(runner.step_times),
        }
        if device.type == "cuda":
            total = runner.static_bytes + runner.transient_peak
            row["peak_mem_gib"] = total / 2**30
            row["peak_mem_per_sample_mib"] = total / size["batch"] / 2**20
            row["activation_mem_per_sample_mib"] = runner.transient_peak / size["batch"] / 2**20
        results.append(row)
    ref = results[0]["samples_per_s"]
    for row in results:
        row["speedup_vs_transformers"] = row["samples_per_s"] / ref
    del runners
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return results


# ----------------------------------------------------------------------------------------------- main


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    add_common_arguments(parser, "train_step")
    parser.add_argument("--layers", type=int, help="transformer layers (default: 12 on GPU, 2 on CPU)")
    parser.add_argument("--batch-size", type=int, help="rows per step (default: 128 on GPU, 8 on CPU)")
    parser.add_argument("--methods", default="full,lora,bottleneck")
    parser.add_argument("--modes", default="fixed,padded,grouped")
    parser.add_argument("--dtype", choices=["fp16", "bf16", "fp32"],
                        help="autocast dtype (default: fp16 on GPU, fp32 on CPU)")
    parser.add_argument("--warmup", type=int, help="untimed steps per model (default: 3 GPU, 1 CPU)")
    parser.add_argument("--rounds", type=int, help="alternating timing rounds (default: 3)")
    parser.add_argument("--steps-per-round", type=int, help="timed steps per model per round (default: 5 GPU, 1 CPU)")
    parser.add_argument("--num-batches", type=int, default=4, help="distinct batches cycled through (padded modes)")
    parser.add_argument("--matmul-peak", action="store_true", help="also measure the device's matmul TFLOP/s peak")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile'd models")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    set_threads(args.threads)
    device = resolve_device(args.device)
    gpu = device.type == "cuda"
    if args.tiny:
        size = dict(TINY)
    else:
        size = dict(BASE if gpu else CPU)
    if args.layers:
        size["layers"] = args.layers
    if args.batch_size:
        size["batch"] = args.batch_size
    dtype_name = args.dtype or ("fp16" if gpu else "fp32")
    amp_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": None}[dtype_name]
    args.warmup = args.warmup if args.warmup is not None else (3 if gpu else 1)
    args.rounds = args.rounds if args.rounds is not None else (3 if not args.tiny else 1)
    args.steps_per_round = args.steps_per_round or (5 if gpu else 1)
    if args.tiny:
        args.warmup, args.num_batches = min(args.warmup, 1), min(args.num_batches, 2)
    methods = [m for m in args.methods.split(",") if m]
    modes = [m for m in args.modes.split(",") if m]

    reference, ours = build_pair(size)
    check_batch = collate(make_rows(size, 2, True, torch.Generator().manual_seed(0)), size, torch.Generator())
    max_logit_diff = check_same_outputs(reference, ours, check_batch)
    if max_logit_diff > 1e-3:
        raise RuntimeError(f"hm_hf and transformers VisualBERT disagree (max logit diff {max_logit_diff:.2e})")

    peak = {}
    if args.matmul_peak:
        for name, dt in (("fp16", torch.float16), ("bf16", torch.bfloat16)) if gpu else (("fp32", torch.float32),):
            peak[name] = matmul_peak(device, dt, n=256 if args.tiny else None)
    peak_for_dtype = peak.get(dtype_name)

    rows = []
    for method in methods:
        for mode in modes:
            rows += bench_pair(size, method, mode, device, amp_dtype, reference, ours, args)
            if args.compile:
                rows += bench_pair(size, method, mode, device, amp_dtype, reference, ours, args, compile_model=True)
            print(f"  done: {method} / {mode}", file=sys.stderr, flush=True)
    if peak_for_dtype:
        for row in rows:
            row["pct_of_matmul_peak"] = 100 * row["useful_tflops"] / peak_for_dtype

    columns = [("impl", "impl", ""), ("method", "method", ""), ("mode", "mode", ""),
               ("samples_per_s", "samples/s", ".1f"), ("speedup_vs_transformers", "x transformers", ".2f"),
               ("useful_tflops", "useful TFLOP/s", ".3f" if not gpu else ".1f"),
               ("padded_tflops", "padded TFLOP/s", ".3f" if not gpu else ".1f"),
               ("real_token_fraction", "real tokens", ".0%")]
    if peak_for_dtype:
        columns.append(("pct_of_matmul_peak", "% peak", ".0f"))
    if gpu:
        columns += [("peak_mem_gib", "peak GiB", ".2f"), ("peak_mem_per_sample_mib", "MiB/sample", ".1f")]
    env = environment(device)
    print(f"training step, {size['layers']} layers x hidden {size['hidden']}, visual dim {size['visual_dim']}, "
          f"batch {size['batch']}, up to {size['text_len']} text tokens + {size['regions']} regions, "
          f"{dtype_name}{' autocast' if amp_dtype else ''}, device {env.get('gpu', env['cpu'])}")
    print(f"same weights: max |logit diff| hm_hf vs transformers (eval, fp32) = {max_logit_diff:.1e}")
    if peak:
        print("measured matmul peak: " + ", ".join(f"{k} {v:.3g} TFLOP/s" for k, v in peak.items()))
    print(format_table(rows, columns))
    payload = {
        "benchmark": "train_step",
        "environment": env,
        "settings": {**size, "dtype": dtype_name, "methods": methods, "modes": modes, "warmup": args.warmup,
                     "rounds": args.rounds, "steps_per_round": args.steps_per_round, "tiny": args.tiny,
                     "num_batches": args.num_batches, "compile": args.compile},
        "max_logit_diff_eval_fp32": max_logit_diff,
        "matmul_peak_tflops": peak,
        "results": rows,
    }
    write_json(default_output("train_step", device, args.tiny, args.output), payload)
    return payload


if __name__ == "__main__":
    main()
