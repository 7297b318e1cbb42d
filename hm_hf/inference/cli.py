"""`hm-hf predict`: classify meme images with a trained model, one JSON line per image."""

from __future__ import annotations

import argparse
import json
import sys

from hm_hf.cli import positive_int

__all__ = ["cli"]


def cli(argv: list[str] | None = None) -> int:
    """`hm-hf predict`: classify meme images with a trained model; one JSON line per image."""
    parser = argparse.ArgumentParser(prog="hm-hf predict", description=cli.__doc__)
    parser.add_argument("images", nargs="+", help="image files")
    parser.add_argument("--model", required=True, help="model folder saved by recipes/train_peft.py, or a Hub id")
    parser.add_argument("--text", action="append", default=None,
                        help="the meme's text, once per image in order (default: read by OCR)")
    parser.add_argument("--text-pair", action="append", default=None,
                        help="for models trained on a text pair (MMHS150K: --text is the tweet, this the image's own "
                        "text): the second text, once per image in order ('' for an image without text; default: read by OCR)")
    parser.add_argument("--revision", default=None,
                        help="the Hub repo's branch, tag or commit to read everything from (default: main)")
    parser.add_argument("--detector", default=None, help="detector folder / Hub id for region models, or 'synthetic'")
    parser.add_argument("--base-model", default=None,
                        help="for saved adapters: their base model's folder or Hub id, when the one their "
                        "adapter_config.json names cannot be found from here")
    parser.add_argument("--ocr-engine", choices=["ppocr", "tesseract", "auto"], default=None,
                        help="how text not given is read (default: the model's processor's ocr_engine; ppocr for "
                        "folders that name none)")
    parser.add_argument("--batch-size", type=positive_int, default=8)
    parser.add_argument("--device", default=None)
    parser.add_argument("--no-regions", action="store_true", help="leave the detected regions out of the output")
    args = parser.parse_args(argv)
    if args.text is not None and len(args.text) != len(args.images):
        parser.error(f"give --text once per image ({len(args.images)}), or not at all")
    if args.text_pair is not None and len(args.text_pair) != len(args.images):
        parser.error(f"give --text-pair once per image ({len(args.images)}), or not at all")
    from hm_hf.pipeline import HatefulMemePipeline  # (after parsing: `--help` needs no torch)

    try:
        pipe = HatefulMemePipeline.from_pretrained(args.model, detector=args.detector, device=args.device,
                                                   ocr_engine=args.ocr_engine, base_model=args.base_model,
                                                   revision=args.revision)
        results = pipe(list(args.images), texts=args.text, text_pairs=args.text_pair, batch_size=args.batch_size,
                       return_regions=not args.no_regions)
    except (OSError, ValueError, RuntimeError) as err:  # bad image, missing model / detector / tesseract
        print(f"predict: error: {err}", file=sys.stderr)
        return 2
    for path, result in zip(args.images, results):
        print(json.dumps({"image": path, **result}))
    return 0
