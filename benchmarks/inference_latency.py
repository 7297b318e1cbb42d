"""Inference latency for one meme on the CPU: p50/p95 of OCR, feature extraction, model, and end to end.

Runs `hm_hf.pipeline.HatefulMemePipeline` on one meme at a time (batch 1), the way the Space serves a
request. The pipeline is the tiny default: the README's model (`recipes/synthetic/config_tiny.yaml`: a
1-layer, 64-wide BERT-style text encoder + mean-pooled regions, Concat fusion) with its matching
"detector" (`SyntheticShapeDetector`, which finds the generator's shapes) and the default OCR engine
(`hm_hf.ocr`, "auto": ppocr when installed, else Tesseract) reading the caption, on synthetic memes
rendered at an HMD-like size (default 640 x 480). The model weights are random unless --model points at
a trained folder (speed does not depend on them).

Stages are timed on the pipeline's own parts (`pipe.processor.read_text`, `pipe.detector.extract`, processor +
model forward), and the end-to-end call `pipe(image)` (image decode + OCR + detector + model) separately.
`--detector frcnn` times the base-size Faster R-CNN R101-C4 at its test size instead (random weights,
box regression zeroed): the real-data extractor, outside the tiny default and far from 1 s on a CPU.

    python benchmarks/inference_latency.py --threads 2                  # 2 CPU cores, 30 memes
    python benchmarks/inference_latency.py --detector frcnn --repeats 3 # the base-size detector instead
    python benchmarks/inference_latency.py --tiny                       # smoke test
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from _common import (
    add_common_arguments,
    default_output,
    environment,
    format_table,
    percentile,
    resolve_device,
    set_threads,
    write_json,
)

TINY_RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "synthetic" / "config_tiny.yaml"


def memes(folder: Path, count: int, image_size: tuple[int, int]) -> list[tuple[bytes, str]]:
    """(PNG bytes, caption) of synthetic memes: what an upload to the Space is."""
    from hm_hf.synthetic import make_hmd

    made = make_hmd(folder, splits={"train": count}, image_size=image_size)["train"]
    return [((folder / "img" / f"{m.id:05d}.png").read_bytes(), m.text) for m in made]


def tiny_default_pipeline(work: Path, texts: list[str], detector: str, tiny_detector: bool, device):
    """The tiny default model (random weights) + a tokenizer trained on the captions + the detector."""
    from hm_hf.pipeline import HatefulMemePipeline
    from hm_hf.processing import MemeProcessor
    from hm_hf.synthetic.detector import SyntheticShapeDetector
    from hm_hf.text.tokenizer import train_wordpiece_tokenizer
    from hm_hf.training.arguments import parse_recipe
    from hm_hf.training.model_loading import build_config, build_model

    model_args, data_args, *_ = parse_recipe([str(TINY_RECIPE), "--output_dir", str(work / "out")])
    tokenizer = train_wordpiece_tokenizer(texts * 20, work / "tokenizer")
    torch.manual_seed(0)
    model = build_model(model_args, build_config(model_args, vocab_size=len(tokenizer)))
    processor = MemeProcessor.for_model(model.config, tokenizer=tokenizer, detector=detector,
                                        max_text_length=data_args.max_text_length, max_regions=data_args.max_regions)
    if detector == "synthetic":
        det = SyntheticShapeDetector(dim=getattr(model.config, "visual_embedding_dim", 2048))
    else:
        from extraction import build_detector

        det = build_detector(tiny_detector, device)
    return HatefulMemePipeline(model, processor, detector=det, device=device)


def stage_times(pipe, data: bytes, ocr: bool) -> dict[str, float]:
    """Seconds per stage for one meme, on the pipeline's own parts."""
    from hm_hf.images import load_image

    times = {}
    start = time.perf_counter()
    image = load_image(data)  # the upload's bytes, checked and decoded as the pipeline does
    times["decode"] = time.perf_counter() - start
    if ocr:
        start = time.perf_counter()
        text = pipe.processor.read_text(image)
        times["ocr"] = time.perf_counter() - start
    else:
        text = "a given caption"
    start = time.perf_counter()
    with torch.inference_mode():
        regions = pipe.detector.extract([image])[0]
    times["features"] = time.perf_counter() - start
    start = time.perf_counter()
    row = {pipe.processor.text_column: text, **pipe.processor.region_fields(regions)}
    batch = {k: v.to(pipe.device) for k, v in pipe.processor([row]).items()}
    with torch.inference_mode():
        pipe.model(**batch).logits.float().softmax(-1).cpu()
    times["model"] = time.perf_counter() - start
    return times


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    add_common_arguments(parser, "inference_latency")
    parser.add_argument("--repeats", type=int, default=30, help="memes timed (each a different image)")
    parser.add_argument("--image-size", default="640x480", help="WIDTHxHEIGHT of the synthetic memes")
    parser.add_argument("--detector", choices=["synthetic", "frcnn"], default="synthetic",
                        help="synthetic: the tiny default's; frcnn: the base-size R101-C4 (random weights)")
    parser.add_argument("--model", help="a trained model folder (pipeline from_pretrained) instead of random weights")
    parser.add_argument("--no-ocr", action="store_true", help="give the text, skip OCR")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    set_threads(args.threads)
    device = resolve_device(args.device)
    from hm_hf.ocr import available_engines, resolve_engine

    ocr = not args.no_ocr and bool(available_engines())
    ocr_note = "given text" if args.no_ocr else (resolve_engine() if ocr else "no OCR engine installed: OCR not timed")
    if args.tiny:
        args.repeats, args.image_size = min(args.repeats, 2), "160x120"
    width, height = (int(v) for v in args.image_size.lower().split("x"))
    with tempfile.TemporaryDirectory(prefix="hm_hf_bench_latency_") as temp:
        work = Path(temp)
        samples = memes(work / "memes", args.repeats + 1, (width, height))
        if args.model:
            from hm_hf.pipeline import HatefulMemePipeline

            pipe = HatefulMemePipeline.from_pretrained(args.model, detector=args.detector, device=device)
        else:
            pipe = tiny_default_pipeline(work, [t for _, t in samples], args.detector, args.tiny, device)
        stage_times(pipe, samples[0][0], ocr)  # warm-up: first-call allocations, Tesseract start-up files
        stages: dict[str, list[float]] = {}
        end_to_end = []
        for data, text in samples[1:]:
            for name, seconds in stage_times(pipe, data, ocr).items():
                stages.setdefault(name, []).append(seconds)
            start = time.perf_counter()
            result = pipe(data, texts=None if ocr else text, return_regions=False)
            end_to_end.append(time.perf_counter() - start)
            if not 0.0 <= result["probability"] <= 1.0:
                raise RuntimeError(f"the pipeline returned a probability of {result['probability']}")
    rows = [{"stage": name, "p50_ms": 1e3 * percentile(v, 50), "p95_ms": 1e3 * percentile(v, 95),
             "mean_ms": 1e3 * sum(v) / len(v)} for name, v in stages.items()]
    rows.append({"stage": "end to end (pipe(image))", "p50_ms": 1e3 * percentile(end_to_end, 50),
                 "p95_ms": 1e3 * percentile(end_to_end, 95), "mean_ms": 1e3 * sum(end_to_end) / len(end_to_end)})
    env = environment(device)
    model_name = args.model or f"tiny default ({TINY_RECIPE.name}, random weights)"
    print(f"inference latency, one meme ({width}x{height}) per call, {len(end_to_end)} memes, model {model_name}, "
          f"detector {args.detector}{' (tiny test config)' if args.tiny and args.detector == 'frcnn' else ''}, "
          f"OCR: {ocr_note}, {env['torch_threads']} torch threads on {env['cpu']} ({env['cpu_cores']} cores)")
    print(format_table(rows, [("stage", "stage", ""), ("p50_ms", "p50 ms", ".1f"), ("p95_ms", "p95 ms", ".1f"),
                              ("mean_ms", "mean ms", ".1f")]))
    payload = {
        "benchmark": "inference_latency",
        "environment": env,
        "settings": {"repeats": len(end_to_end), "image_size": [width, height], "detector": args.detector,
                     "model": model_name, "ocr": ocr_note, "tiny": args.tiny},
        "results": rows,
    }
    suffix = "" if args.detector == "synthetic" else f"_{args.detector}"
    write_json(default_output(f"inference_latency{suffix}", device, args.tiny, args.output), payload)
    return payload


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
