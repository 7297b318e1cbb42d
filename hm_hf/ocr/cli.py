"""`hm-hf ocr`: read the text of memes that come without it and write Hateful Memes annotation lines.

A user's own memes are usually just images. This writes one JSON line per image, `{"id", "img", "text"}`
in Hateful Memes' jsonl shape (`id` an int when the file name is a number, as HMD's `08291.png` -> 8291;
`img` relative to the output file's folder), so the output is a data set's annotation file: named after a
split (`test_unseen.jsonl`, ...) beside `img/`, `hm_hf.load_hmd` reads it, when the images are named by
number as HMD's are (there is no `label`, as in HMD's test files):

    hm-hf ocr data/my_memes/img --output data/my_memes/test_unseen.jsonl
    hm-hf ocr a.png b.jpg --output texts.jsonl --engine tesseract
    hm-hf ocr --files-from list.txt --output texts.jsonl

It resumes: images already in the output are skipped, and each line is appended whole and flushed, so a
kill loses at most the line being written (a cut-off last line this command began is dropped on the next run; a
whole one without its newline is kept, and a file of other lines is refused unchanged). Images that
cannot be read are skipped and counted, and listed at the end; the next run tries them again.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from hm_hf.data.layouts import parse_id
from hm_hf.fileio import file_in_the_way, parse_json
from hm_hf.ocr import ENGINES

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


class AnnotationFileError(ValueError):
    """The output file exists but is not a jsonl file this command can add to."""


def find_images(inputs: list[str], recursive: bool = False) -> list[Path]:
    """Image files named in `inputs` (files, or folders whose image files are taken in name order)."""
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            pattern = path.rglob("*") if recursive else path.iterdir()
            found += sorted(p for p in pattern if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such file or folder")
    return list(dict.fromkeys(p.resolve() for p in found))


def meme_id(path: Path) -> int | str:
    """HMD's id for an image file: the number of `08291.png` (8291) as the builders read ids (`parse_id`: ASCII
    digits within int64), else the file name's stem (`²³.png`, a 20-digit name)."""
    number = parse_id(path.stem)
    return path.stem if number is None else number


def relative_img(path: Path, root: Path) -> str:
    """`path` relative to `root` (the annotation file's folder) when inside it, else absolute."""
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def read_done(output: Path) -> tuple[set[str], set]:
    """(`img` values, ids) of the lines already in `output`, made ready to append to.

    Every line is checked before anything is changed, so a file that is not an annotation file is refused as
    it is. A last line without a newline is kept when it is a whole annotation line (a newline is added) and
    cut only when it is the start of a line this command writes (`{"id": ...`, a kill mid-write).
    """
    if output.is_dir():
        raise AnnotationFileError(f"--output {output} is a folder; give the path of a jsonl file, "
                                  f"e.g. {output / 'test_unseen.jsonl'}")
    if not output.is_file():
        blocker = file_in_the_way(output)
        if blocker is not None:
            raise AnnotationFileError(f"--output {output}: {blocker} exists and is not a folder, so nothing can be "
                                      "written inside it; give a jsonl path in a folder")
        return set(), set()
    data = output.read_bytes()
    lines = data.split(b"\n")
    last = lines.pop()  # b"" when the file ends with a newline
    partial = _is_partial_line(last)
    if not partial:
        lines.append(last)
    images, ids = set(), set()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = parse_json(line)
            images.add(row["img"])
            ids.add(row["id"])
        except (ValueError, KeyError, TypeError) as err:
            raise AnnotationFileError(f"{output}:{number}: not an annotation line ({err!r}); "
                                      "write to a new --output file or fix this line") from err
    if partial:
        print(f"ocr: {output}:{len(lines) + 1}: dropping an incomplete last line (the previous run was stopped "
              "while writing it)", file=sys.stderr)
        with open(output, "r+b") as f:
            f.truncate(len(data) - len(last))
    elif last:
        with open(output, "ab") as f:
            f.write(b"\n")
    return images, ids


def _is_partial_line(line: bytes) -> bool:
    """Whether `line` is the start of a line this command writes, cut short by a kill (not whole JSON)."""
    if not line.startswith(b'{"id": '):
        return False
    try:
        parse_json(line)
    except ValueError:
        return True
    return False


def read_file_list(path: Path) -> list[str]:
    """The image paths in a `--files-from` list: one a line, relative to the list's folder."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ValueError(f"--files-from {path}: cannot read it ({err.strerror}); give a text file with one "
                         "image path a line") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        raise ValueError(f"--files-from {path}:{line}: not UTF-8 text; save the list as UTF-8") from None
    return [str(path.parent / line.strip()) for line in text.splitlines() if line.strip()]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hm-hf ocr", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("inputs", nargs="*", help="image files and/or folders of images")
    parser.add_argument("--output", required=True, help="jsonl file to write (appended to when it is an annotation "
                        "file; any other file is refused unchanged)")
    parser.add_argument("--files-from", help="a text file with one image path per line")
    parser.add_argument("--recursive", action="store_true", help="also take images in sub-folders of a folder")
    parser.add_argument("--engine", default="auto", choices=["auto", *ENGINES],
                        help="OCR engine (default auto: ppocr when installed, else tesseract)")
    parser.add_argument("--lang", default="eng", help="language (Tesseract code, default eng)")
    return parser


def cli(argv: list[str] | None = None) -> int:
    from tqdm.auto import tqdm

    from hm_hf.ocr import OcrUnavailableError, get_ocr_engine
    from hm_hf.images import BadImageError, load_image

    parser = _parser()
    args = parser.parse_args(argv)
    inputs = list(args.inputs)
    if args.files_from:
        try:
            inputs += read_file_list(Path(args.files_from))
        except ValueError as err:
            print(f"ocr: error: {err}", file=sys.stderr)
            return 2
    if not inputs:
        parser.error("give image files or folders, or --files-from")
    output = Path(args.output).resolve()
    root = output.parent
    try:
        images = find_images(inputs, args.recursive)
        done_images, done_ids = read_done(output)
        output.parent.mkdir(parents=True, exist_ok=True)
        engine = get_ocr_engine(args.engine, args.lang)
    except (OSError, ValueError, OcrUnavailableError) as err:
        print(f"ocr: error: {err}", file=sys.stderr)
        return 2
    pending, seen = [], {}
    for path in images:
        img = relative_img(path, root)
        if img in done_images:
            continue
        example_id = meme_id(path)
        if example_id in done_ids or example_id in seen:
            other = seen.get(example_id, f"a line already in {output}")
            print(f"ocr: error: {path} and {other} would both get id {example_id!r}; rename one, or write them "
                  "to separate --output files", file=sys.stderr)
            return 2
        seen[example_id] = path
        pending.append((example_id, img, path))
    print(f"ocr: {len(images)} images, {len(images) - len(pending)} already in {output}, {len(pending)} to read "
          f"with {engine.name} ({engine.version})", file=sys.stderr)
    skipped: list[str] = []
    with open(output, "a", encoding="utf-8") as out:
        bar = tqdm(pending, desc="ocr", unit="image")
        for example_id, img, path in bar:
            try:
                text = engine.read(load_image(path))
            except (BadImageError, OSError, RuntimeError) as err:  # unreadable file, Tesseract time-out
                skipped.append(f"{path}: {err}")
                bar.set_postfix(skipped=len(skipped))
                continue
            out.write(json.dumps({"id": example_id, "img": img, "text": text}, ensure_ascii=False) + "\n")
            out.flush()
        out.flush()
        os.fsync(out.fileno())
    written = len(pending) - len(skipped)
    print(f"ocr: wrote {written} lines to {output}", file=sys.stderr)
    if skipped:
        print(f"ocr: skipped {len(skipped)} images that could not be read (the next run tries them again):",
              file=sys.stderr)
        for line in skipped:
            print(f"  {line}", file=sys.stderr)
    return 0
