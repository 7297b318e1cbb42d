"""Smoke tests of the benchmark scripts at their --tiny sizes on the CPU (no timing assertions).

Each script runs in-process through its `main(argv)` (imports are shared, which keeps this file fast) and
must print its table, write its JSON where --output says, and report results whose structure and
invariants hold (both implementations timed, ratios against the baseline, same regions from both
loaders, derived dataset times, every pipeline stage).
"""

from __future__ import annotations

import importlib
import json
import math
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        yield lambda name: importlib.import_module(name)
    finally:
        sys.path.remove(str(BENCHMARKS))


def run(module, tmp_path, *argv):
    out = tmp_path / f"{module.__name__}.json"
    payload = module.main(["--tiny", "--threads", "1", "--device", "cpu", "--output", str(out), *argv])
    assert json.loads(out.read_text()) == json.loads(json.dumps(payload))
    assert payload["environment"]["torch"] and payload["environment"]["date"]
    table = importlib.import_module("summarize").summarize(out)  # the README's markdown from the JSON
    assert table.count("\n|") >= 1 + len(payload["results"])
    return payload


def test_train_step(bench, tmp_path, capsys):
    train_step = bench("train_step")
    payload = run(train_step, tmp_path, "--methods", "full,bottleneck", "--modes", "fixed,padded", "--matmul-peak")
    assert "x transformers" in capsys.readouterr().out
    assert payload["max_logit_diff_eval_fp32"] < 1e-4  # the two models compute the same function
    rows = payload["results"]
    assert {(r["impl"], r["method"], r["mode"]) for r in rows} == {
        (impl, method, mode) for impl in ("transformers", "hm_hf") for method in ("full", "bottleneck")
        for mode in ("fixed", "padded")
    }
    for row in rows:
        assert row["samples_per_s"] > 0 and row["useful_tflops"] > 0 and row["pct_of_matmul_peak"] > 0
        assert row["useful_tflops"] <= row["padded_tflops"] * (1 + 1e-9)
    for r in rows:
        if r["impl"] == "transformers":
            assert r["speedup_vs_transformers"] == 1.0
        assert (r["real_token_fraction"] == 1.0) == (r["mode"] == "fixed")
    full = {r["trainable_params"] for r in rows if r["method"] == "full"}
    adapters = {r["trainable_params"] for r in rows if r["method"] == "bottleneck"}
    assert len(full) == 1 and len(adapters) == 1 and adapters.pop() < full.pop()  # same counts in both


def test_train_step_flops_formula(bench):
    """Full fine-tuning of the base config: 3 x forward, about 6 x params x tokens for the encoder."""
    train_step = bench("train_step")
    size = train_step.BASE
    flops = train_step.train_flops(size, "full", [(48, 100)])
    encoder_params = size["layers"] * (4 * 768 * 768 + 2 * 768 * 3072)
    approx = 6 * encoder_params * 148 + 6 * 2048 * 768 * 100
    assert approx < flops < 1.1 * approx  # the rest is attention scores and the head
    assert train_step.train_flops(size, "lora", [(48, 100)]) < flops


def test_data_loading(bench, tmp_path, capsys):
    data_loading = bench("data_loading")
    payload = run(data_loading, tmp_path, "--workers", "0,1", "--work-dir", str(tmp_path / "work"))
    assert "x npy" in capsys.readouterr().out
    rows = payload["results"]
    loaders = ("hm_hf", "npy", "hm_hf-fp16")
    assert {(r["loader"], r["workers"]) for r in rows} == {(name, w) for name in loaders for w in (0, 1)}
    for row in rows:
        assert row["rows"] == payload["settings"]["num_images"] and row["samples_per_s"] > 0
        assert row["peak_rss_mib"] > 0
    assert len({r["regions_seen"] for r in rows}) == 1  # every loader delivered the same regions
    assert (tmp_path / "work" / "data" / "prepared.json").is_file()  # --work-dir is kept for reuse


def test_extraction(bench, tmp_path):
    extraction = bench("extraction")
    payload = run(extraction, tmp_path, "--batch-sizes", "1,2")
    rows = payload["results"]
    assert [r["batch"] for r in rows] == [1, 2]
    assert all(r["images_per_s"] > 0 and r["boxes_per_image"] >= 1 for r in rows)
    hmd, mmhs = payload["estimates"]
    assert hmd["images"] == 12_140 and mmhs["images"] == 150_000
    assert math.isclose(hmd["hours_1_device"], 8 * hmd["hours_8_devices"])
    assert math.isclose(mmhs["hours_1_device"] / hmd["hours_1_device"], 150_000 / 12_140)


def test_cache_fingerprint(bench, tmp_path):
    fingerprint = bench("cache_fingerprint")
    payload = run(fingerprint, tmp_path)
    rows = {r["method"]: r for r in payload["results"]}
    assert {"hm_hf", "headers only", "sha256 of every byte", "xxh3-128 of every byte", "index"} <= set(rows)
    assert rows["sha256 of every byte"]["x_sha256_every_byte"] == 1.0
    assert all(r["seconds"] > 0 for r in rows.values())
    assert payload["settings"]["shards"] == 3  # 40 images in shards of 16


def test_inference_latency(bench, tmp_path):
    latency = bench("inference_latency")
    payload = run(latency, tmp_path, "--repeats", "1")
    stages = {r["stage"]: r for r in payload["results"]}
    assert {"decode", "features", "model", "end to end (pipe(image))"} <= set(stages)
    from hm_hf.ocr import ENGINES

    assert ("ocr" in stages) == (payload["settings"]["ocr"] in ENGINES)
    assert all(r["p50_ms"] > 0 and r["p95_ms"] >= r["p50_ms"] for r in stages.values())


def test_meme_ocr(bench, tmp_path, capsys):
    pytest.importorskip("rapidocr", reason="needs the hm_hf[ocr] extra")
    meme_ocr = bench("meme_ocr")
    payload = run(meme_ocr, tmp_path, "--engines", "ppocr,ppocr-no-gaps")
    assert "targets met" in capsys.readouterr().out
    rows = {r["engine"]: r for r in payload["results"]}
    assert set(rows) == {"ppocr", "ppocr-no-gaps"} and payload["settings"]["memes"] == 3
    for row in rows.values():
        assert 0 <= row["cer"] <= 1 and 0 <= row["wer"] and 0 < row["p50_s"] <= row["p95_s"]
        assert row["meets_targets"] == (row["cer"] <= 0.02 and row["wer"] <= 0.05 and row["p50_s"] <= 1.0)
        assert len(row["examples"]) == 3 and "PP-OCRv6" in row["version"]
    assert rows["ppocr"]["cer"] <= 0.02  # three memes read almost without error


def test_run_gpu_script_runs_every_step_at_smoke_size(tmp_path):
    """benchmarks/run_gpu.sh, the one command a GPU session runs, works end to end (CPU, --tiny sizes)."""
    import os
    import subprocess

    env = dict(os.environ, BENCH_DEVICE="cpu", BENCH_ARGS="--tiny --threads 1", PYTHON=sys.executable)
    result = subprocess.run(["bash", str(BENCHMARKS / "run_gpu.sh"), str(tmp_path)], env=env, capture_output=True,
                            text=True, timeout=600)
    log = (tmp_path / "run_gpu.log").read_text()
    assert result.returncode == 0, log[-3000:]
    assert "failed steps: none" in log
    for name in ("train_step_cpu", "extraction_cpu", "data_loading_cpu"):
        payload = json.loads((tmp_path / f"{name}.json").read_text())
        assert payload["results"], name
    loading = json.loads((tmp_path / "data_loading_cpu.json").read_text())
    assert loading["gpu_step"]["samples_per_s"]["fixed"] > 0  # compared with the step it just measured


def test_rgcl_ablation(bench, tmp_path, capsys):
    """The RGCL benchmark trains both recipes, scores with and without the twins, and measures the feature
    reference heads; `hidden_kinds` recovers the generator's own factors from a written meme."""
    from hm_hf.synthetic import make_hmd
    from hm_hf.synthetic.data import TRAIN_SINGLES

    rgcl_ablation = bench("rgcl_ablation")
    memes = make_hmd(tmp_path / "kinds", splits={"dev_unseen": 12}, seed=5)["dev_unseen"]
    rows = [json.loads(line) for line in (tmp_path / "kinds" / "dev_unseen.jsonl").read_text().splitlines()]
    assert [rgcl_ablation.hidden_kinds(row) for row in rows] == [(m.image_kind, m.text_kind) for m in memes]

    assert rgcl_ablation.main(["--tiny", "--train-sizes", "64", "--work-dir", str(tmp_path / "work")]) == 0
    out = capsys.readouterr().out
    for model in ("rgcl", "no_retrieval"):
        assert f"    64 {model:<13} train_plus_twins_index" in out
    assert "reference heads on the frozen CLIP vectors, dev_unseen" in out
    twins = (tmp_path / "work" / "twins-tiny" / "dev_unseen_twins.jsonl").read_text().splitlines()
    assert len(twins) == 16  # one labelled twin per dev_unseen meme
    # folders the benchmark writes are named by their settings and the generator's code, never reused stale
    tag = rgcl_ablation.synthetic_code_tag
    assert tag({"train": 4}, 3, 0.4) == tag({"train": 4}, 3, 0.4) != tag({"train": 4}, 3, 0.95)
    assert [p.name for p in (tmp_path / "work").glob("data-tiny-*")] == [
        f"data-tiny-{tag(rgcl_ablation.TINY_SPLITS, rgcl_ablation.BENCH_DATA_SEED, TRAIN_SINGLES)}"]


def test_rgcl_ablation_paper_recipes(bench, tmp_path, capsys):
    """`--recipes hmd` trains the paper's recipe and its ablation on a Hateful-Memes folder (here a synthetic one,
    a tiny CLIP standing in for ViT-L/14-336, one CPU epoch) and scores the training index only; bad folders
    are refused with what to do."""
    from hm_hf.models.clip import make_tiny_clip
    from hm_hf.synthetic import make_hmd

    rgcl_ablation = bench("rgcl_ablation")
    data = tmp_path / "hmd"
    make_hmd(data, seed=2)
    make_tiny_clip(tmp_path / "clip", ["a tiny clip tokenizer vocabulary"])
    out = tmp_path / "hmd.json"
    argv = ["--recipes", "hmd", "--data-dir", str(data), "--vision-model", str(tmp_path / "clip"), "--seeds", "1",
            "--work-dir", str(tmp_path / "work"), "--output", str(out)]
    fast = "--fp16 false --num_train_epochs 1 --dataloader_num_workers 0 --per_device_train_batch_size 16"
    assert rgcl_ablation.main([*argv, "--split", "dev_unseen", "--recipe-args", fast]) == 0
    result = json.loads(out.read_text())
    assert result["recipes"] == "hmd" and result["reference_heads"] is None
    assert [(r["model"], r["train_size"], sorted(r["auroc"])) for r in result["runs"]] == [
        ("rgcl", 0, ["train_index"]), ("no_retrieval", 0, ["train_index"])]
    for run in result["runs"]:
        assert all(0.0 <= v <= 1.0 for v in run["auroc"]["train_index"].values())
    (run_folder,) = (tmp_path / "work").glob("no_retrieval-hmd-full-*-n0-s12345")
    ablation = json.loads((run_folder / "config.json").read_text())
    assert (ablation["contrastive_loss"], ablation["decision_rule"]) == ("none", "head")
    assert ablation["projection_dim"] == 1024  # the paper's settings, not the tiny recipe's
    (rgcl_folder,) = (tmp_path / "work").glob("rgcl-byhead-hmd-full-*-n0-s12345")  # best epoch by head, as the ablation
    rgcl = json.loads((rgcl_folder / "config.json").read_text())
    assert (rgcl["contrastive_loss"], rgcl["decision_rule"], rgcl["knn_k"]) == ("triplet", "head", 20)

    not_synthetic = tmp_path / "not_synthetic"
    not_synthetic.mkdir()
    (not_synthetic / "dev_unseen.jsonl").write_text((data / "dev_unseen.jsonl").read_text())
    for bad, message in ((argv[:2], "needs --data-dir"),
                         ([*argv, "--split", "test_seen"], "test_seen.jsonl: its first line has no label"),
                         (["--data-dir", str(not_synthetic), "--tiny"], "is not a synthetic folder"),
                         ([*argv, "--train-singles", "0.9"], "--train-singles shapes the synthetic set"),
                         (["--train-singles", "1.5"], "--train-singles 1.5: a share, between 0 and 1")):
        with pytest.raises(SystemExit):
            rgcl_ablation.main(bad)
        assert message in capsys.readouterr().err
