"""Markdown tables of benchmark result files, for benchmarks/README.md.

    python benchmarks/summarize.py benchmarks/results/*.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    lines = ["| " + " | ".join(header for _, header, _ in columns) + " |",
             "|" + "|".join("---:" if spec else "---" for _, _, spec in columns) + "|"]
    for row in rows:
        cells = []
        for key, _, spec in columns:
            value = row.get(key)
            cells.append("-" if value is None else format(value, spec) if spec else str(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _machine(env: dict) -> str:
    where = env.get("gpu") or f"{env['cpu']} ({env['cpu_cores']} cores, {env['torch_threads']} torch threads)"
    versions = ", ".join(f"{k} {env[k]}" for k in ("torch", "transformers", "datasets", "peft") if k in env)
    return f"{where}; {versions}; {env['date']}; commit {env.get('git_commit')}"


def summarize(path: Path) -> str:
    payload = json.loads(path.read_text())
    env, kind = payload["environment"], payload["benchmark"]
    out = [f"**{path.name}** ({_machine(env)})", ""]
    if kind == "train_step":
        s = payload["settings"]
        gpu = "gpu" in env
        out[0] += (f": {s['layers']} layers, hidden {s['hidden']}, batch {s['batch']}, "
                   f"{s['text_len']} text + {s['regions']} regions max, {s['dtype']}")
        tflops = ".1f" if gpu else ".4f"
        columns = [("impl", "impl", ""), ("method", "method", ""), ("mode", "batches", ""),
                   ("samples_per_s", "samples/s", ".1f"), ("speedup_vs_transformers", "x transformers", ".2f"),
                   ("useful_tflops", "useful TFLOP/s", tflops), ("padded_tflops", "padded TFLOP/s", tflops),
                   ("real_token_fraction", "real tokens", ".0%")]
        if payload.get("matmul_peak_tflops"):
            columns.append(("pct_of_matmul_peak", "% matmul peak", ".0f"))
        if gpu:
            columns += [("peak_mem_gib", "peak GiB", ".1f"), ("peak_mem_per_sample_mib", "MiB/sample", ".1f")]
        out.append(_table(payload["results"], columns))
        if payload.get("matmul_peak_tflops"):
            peaks = ", ".join(f"{k} {v:.3g}" for k, v in payload["matmul_peak_tflops"].items())
            out += ["", f"Measured matmul peak (TFLOP/s): {peaks}."]
    elif kind == "data_loading":
        s = payload["settings"]
        out[0] += f": {s['num_images']} images x {s['regions']} regions, batch {s['batch_size']}"
        columns = [("loader", "loader", ""), ("workers", "workers", ""), ("samples_per_s", "samples/s", ".0f"),
                   ("speedup_vs_npy", "x npy", ".2f"), ("peak_rss_mib", "peak RSS MiB", ".0f"),
                   ("peak_pss_mib", "peak PSS MiB", ".0f")]
        if payload.get("gpu_step"):
            columns.append(("vs_gpu_step_fixed", "x GPU step", ".2f"))
        out.append(_table(payload["results"], columns))
    elif kind == "extraction":
        s = payload["settings"]
        out[0] += f": test size {s['min_size_test']}/{s['max_size_test']}"
        out.append(_table(payload["results"], [("precision", "precision", ""), ("batch", "batch", ""),
                                               ("images_per_s", "images/s", ".3g"),
                                               ("boxes_per_image", "boxes/image", ".0f")]))
        out += ["", _table(payload["estimates"], [("dataset", "data set", ""),
                                                  ("hours_1_device", "hours, 1 device", ".1f"),
                                                  ("hours_8_devices", "hours, 8 devices", ".1f")])]
    elif kind == "cache_fingerprint":
        s = payload["settings"]
        out[0] += (f": {s['images']} images x {s['regions']} regions, {s['shards']} shards, {s['gib']:.2f} GiB, "
                   "page cache warm")
        out.append(_table(payload["results"], [("method", "method", ""), ("seconds", "seconds", ".4f"),
                                               ("x_sha256_every_byte", "x sha256 of every byte", ".4f"),
                                               ("mmhs_seconds", "MMHS150K s (x12.4)", ".2f"),
                                               ("x_write", "share of the write", ".2f")]))
    elif kind == "inference_latency":
        s = payload["settings"]
        out[0] += f": {s['model']}, detector {s['detector']}, OCR {s['ocr']}, {s['repeats']} memes"
        out.append(_table(payload["results"], [("stage", "stage", ""), ("p50_ms", "p50 ms", ".0f"),
                                               ("p95_ms", "p95 ms", ".0f")]))
    elif kind == "meme_ocr":
        s = payload["settings"]
        out[0] += (f": {s['memes']} memes ({s['styles']['caption']} captions over photographs, "
                   f"{s['styles']['card']} text cards), seed {s['seed']}, {s['threads']} threads")
        out.append(_table(payload["results"], [("engine", "engine", ""), ("cer", "CER", ".2%"), ("wer", "WER", ".2%"),
                                               ("cer_caption", "CER captions", ".2%"),
                                               ("wer_caption", "WER captions", ".2%"),
                                               ("cer_card", "CER cards", ".2%"), ("wer_card", "WER cards", ".2%"),
                                               ("p50_s", "p50 s", ".2f"), ("p95_s", "p95 s", ".2f"),
                                               ("meets_targets", "targets met", "")]))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    paths = [Path(p) for p in (sys.argv[1:] if argv is None else argv)]
    print("\n\n".join(summarize(p) for p in paths if p.suffix == ".json"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
