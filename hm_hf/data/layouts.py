"""Where the files of Hateful Memes and MMHS150K are, and the rules every reader of them follows.

The builders, `hm-hf extract-features`, `hm-hf import-features --ids-from-dataset`, `hm-hf export-dataset`
(through the builders) and fastText training read the raw files only through this module, so they agree on:

- layouts: HMD as distributed (`<split>.jsonl` beside `img/`), MMF's copy (`defaults/annotations/*.jsonl`,
  `defaults/images/img/`) or MMF's `defaults/` folder itself (`annotations/`, `images/img/`); MMHS150K's
  `MMHS150K_GT.json`, `splits/<split>_ids.txt`, `img_resized/<id>.jpg` and `img_txt/<id>.json`;
- containment: a file is opened only when its real path (every symlink resolved) lies inside the data
  folder. An `img` field of `../../x.png` or `/etc/passwd`, or a symlink that leads out of the folder, is
  refused before it is opened (`outside_data_dir`);
- ids: plain ASCII decimal integers that fit int64 (`"4²"`, `"٣"` and 2**63 are not ids);
- JSON: `hm_hf.fileio.parse_json` (invalid, nested 100,000 levels deep, over-long numbers: a reason,
  never a traceback); text must be UTF-8;
- images: decoded in full, and refused before decoding when they have more pixels than Pillow's
  decompression-bomb limit (`PIL.Image.MAX_IMAGE_PIXELS`).

What does not pass goes to a `BuildReport`: skipped and counted, raised in strict mode, and raised for the
kinds a caller makes fatal (the commands refuse `outside_data_dir`: `command_report`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from hm_hf.data.report import (
    BAD_FIELD,
    BAD_LABEL,
    BLANK_LINE,
    CORRUPT_IMAGE,
    DUPLICATE_ID,
    IMAGE_TOO_LARGE,
    INVALID_JSON,
    MISSING_IMAGE,
    NOT_UTF8,
    OUTSIDE_DATA_DIR,
    UNKNOWN_ID,
    BuildReport,
)
from hm_hf.fileio import JsonInputError, parse_json, parse_json_prefix
from hm_hf.images import to_rgb

HMD_SPLITS = ("train", "dev_seen", "dev_unseen", "test_seen", "test_unseen", "dev", "test")
# (name, annotation folder, folder the `img` fields are relative to), relative to the data folder
HMD_LAYOUTS = (
    ("official", ".", "."),
    ("mmf", "defaults/annotations", "defaults/images"),
    ("mmf-defaults", "annotations", "images"),  # data_dir is MMF's defaults/ folder itself
)
MMHS_SPLITS = ("train", "val", "test")
MMHS_GT_FILE = "MMHS150K_GT.json"
INT64_MAX = 2**63 - 1
_DECIMAL = re.compile(r"[0-9]+")  # ASCII only: str.isdigit() also accepts "4²" and "٣", which int() refuses


class DataFilesError(FileNotFoundError):
    """The data folder does not hold the data set's files where they should be; the message says which."""


# ------------------------------------------------------------------------------------------------ ids


def parse_id(value) -> int | None:
    """An example id: an int, or a string of ASCII digits, in 0..2**63-1; None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 0 <= value <= INT64_MAX else None
    if isinstance(value, str):
        value = value.strip()
        digits = value.lstrip("0") or "0"  # leading zeros (MMHS150K's and MMF's names) do not count ...
        if _DECIMAL.fullmatch(value) and len(digits) <= 19 and int(digits) <= INT64_MAX:  # ... towards int64's 19
            return int(digits)
    return None


def id_problem(value) -> str:
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return f"id must be a whole number in 0..2**63-1 written in ASCII digits, got {shown}"


def canonical_id(raw) -> str:
    """The cache key of a feature file's id: decimal ids lose leading zeros (MMF names HMD's image 1235
    `01235`, the builders key it `1235`); any other name is kept as it is."""
    raw = str(raw).strip()
    parsed = parse_id(raw)
    return raw if parsed is None else str(parsed)


def id_sort_key(example_id: str):
    """Numeric ids in numeric order, then the others by name."""
    parsed = parse_id(example_id)
    return (0, parsed, "") if parsed is not None else (1, 0, example_id)


# -------------------------------------------------------------------------------------------- containment


class DataFolder:
    """A data folder and its containment rule: a path may be opened only when its real path is inside.

    `real_path` resolves the parent folder once (cached) and the file itself only when it is a symlink,
    so 150,000 image paths cost one `lstat` each rather than a full `realpath` each (3-6x faster).
    """

    def __init__(self, path):
        self.path = os.path.abspath(os.path.expanduser(os.fspath(path)))
        self.real = os.path.realpath(self.path)
        self._real_dirs: dict[str, str] = {}

    def real_path(self, path) -> str:
        path = os.path.join(self.path, os.fspath(path))  # an absolute `path` stays as it is
        parent, name = os.path.split(path)
        if name in ("", ".", ".."):
            return os.path.realpath(path)
        real_parent = self._real_dirs.get(parent)
        if real_parent is None:
            real_parent = self._real_dirs[parent] = os.path.realpath(parent)
        candidate = os.path.join(real_parent, name)
        return os.path.realpath(candidate) if os.path.islink(candidate) else candidate

    def contains(self, real: str) -> bool:
        return real == self.real or real.startswith(self.real.rstrip(os.sep) + os.sep)

    def relative(self, path) -> str:
        """`path` for messages: relative to the folder when it is inside, else as it is."""
        path = os.path.join(self.path, os.fspath(path))
        for root in (self.path, self.real):
            if path == root or path.startswith(root.rstrip(os.sep) + os.sep):
                return os.path.relpath(path, root)
        return path

    def outside_reason(self, shown, real: str) -> str:
        return (f"{shown} resolves to {real}, outside the data folder {self.real}; hm_hf opens only files "
                "inside the data folder (put the file there, or fix the path or symlink)")

    def resolve(self, path, report: BuildReport, shown=None, **where) -> Path | None:
        """The real path of `path`, or None (reported as `outside_data_dir`) when it leads outside."""
        real = self.real_path(path)
        if self.contains(real):
            return Path(real)
        shown = shown or path
        report.add(OUTSIDE_DATA_DIR, self.outside_reason(shown, real), **{"file": str(shown), **where})
        return None


def command_report(dataset: str, data_dir, strict: bool = False) -> BuildReport:
    """The report a command (not a build) reads raw files with: bad lines are skipped and counted as a
    build would skip them (`strict`: refused), and a path that leads out of the data folder stops it."""
    return BuildReport(dataset=dataset, data_dir=os.fspath(data_dir), strict=strict, fatal=(OUTSIDE_DATA_DIR,),
                       strict_hint="fix or remove this input, then run the command again")


# ------------------------------------------------------------------------------------------ text and JSON


def decode_utf8(raw: bytes) -> str | None:
    """The text of `raw` or None when it is not valid UTF-8 (a BOM is accepted and dropped)."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None


def utf8_error(raw: bytes) -> str:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as err:
        return f"not valid UTF-8 (byte 0x{raw[err.start]:02x} at offset {err.start})"
    return "not valid UTF-8"


def has_surrogates(text: str) -> bool:
    """True for text decoded with errors='surrogateescape' from bytes that were not UTF-8."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def text_field(obj: dict, name: str, report: BuildReport, **where) -> str | None:
    """`obj[name]` when it is a string of valid UTF-8; else None, reported (bad_field / not_utf8) at `where`."""
    text = obj.get(name)
    if not isinstance(text, str):
        report.add(BAD_FIELD, f"{name} must be a string, got {text!r:.60}", **where)
        return None
    if has_surrogates(text):
        report.add(NOT_UTF8, f"{name} holds unpaired surrogates (not valid UTF-8)", **where)
        return None
    return text


def text_lines(path, report: BuildReport, rel: str, split: str | None = None):
    """Yield (line_number, text) for each non-blank UTF-8 line of a text file; report blank and non-UTF-8
    lines. The newline that ends the last line does not make a blank line."""
    lines = Path(path).read_bytes().split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    for number, raw in enumerate(lines, start=1):
        raw = raw.rstrip(b"\r")
        where = dict(file=rel, line=number, split=split)
        if not raw.strip():
            report.add(BLANK_LINE, "blank line", **where)
            continue
        text = decode_utf8(raw)
        if text is None:
            report.add(NOT_UTF8, f"line is {utf8_error(raw)}", **where)
            continue
        yield number, text


def read_jsonl(path, report: BuildReport, rel: str, split: str):
    """Yield (line_number, object) for each good line of a jsonl file; report the bad ones.

    Blank lines, invalid, truncated or too deeply nested JSON, non-UTF-8 bytes and lines that are not
    JSON objects are skipped and counted.
    """
    for number, text in text_lines(path, report, rel, split):
        where = dict(file=rel, line=number, split=split)
        try:
            obj = parse_json(text)
        except JsonInputError as err:
            report.add(INVALID_JSON, f"{err} (truncated line?)", **where)
            continue
        if not isinstance(obj, dict):
            report.add(INVALID_JSON, f"expected a JSON object, got {type(obj).__name__}", **where)
            continue
        yield number, obj


# ---------------------------------------------------------------------------------------------- images


def _over_limit(width: int, height: int) -> tuple[str, str] | None:
    limit = Image.MAX_IMAGE_PIXELS
    if limit and width * height > limit:
        return IMAGE_TOO_LARGE, (f"image is {width}x{height} = {width * height} pixels, over Pillow's "
                                 f"decompression-bomb limit of {limit} (PIL.Image.MAX_IMAGE_PIXELS)")
    return None


def _read_image(path, decode: bool, rgb: bool = False):
    """(size, image or None, None) or (None, None, (kind, reason)); the pixel limit is applied to the
    header's size, before anything is decoded."""
    path = Path(path)
    if not path.is_file():
        return None, None, (MISSING_IMAGE, f"image file {path.name} not found")
    try:
        with Image.open(path) as image:
            size = image.size
            problem = _over_limit(*size)
            if problem or not decode:
                return (None if problem else size), None, problem
            image.load()
            if not rgb:
                return size, None, None
            return size, to_rgb(image), None  # as the models see it everywhere (upright by its EXIF)
    except Image.DecompressionBombError as err:
        return None, None, (IMAGE_TOO_LARGE, f"image over Pillow's decompression-bomb limit: {err}")
    except UnidentifiedImageError:
        return None, None, (CORRUPT_IMAGE, "not a readable image file (Pillow cannot identify it)")
    except Exception as err:  # truncated data, broken chunks, bad headers: all mean "cannot decode"
        return None, None, (CORRUPT_IMAGE, f"image cannot be decoded: {type(err).__name__}: {err}")


def check_image(path) -> tuple[str, str] | None:
    """Decode the image at `path` fully; None when it is usable, else (kind, reason).

    Decoding (not just opening) catches truncated files. Images with more pixels than
    `PIL.Image.MAX_IMAGE_PIXELS` are refused before decoding, as Pillow's decompression-bomb guard
    would refuse them (Pillow itself only warns below twice the limit). Thread-safe. Call it only on a
    path `DataFolder.resolve` returned.
    """
    return _read_image(path, decode=True)[2]


def open_image(path):
    """(RGB image as the models see it, `hm_hf.images.to_rgb`: turned upright by its EXIF orientation, None)
    after the same checks as `check_image`, or (None, (kind, reason))."""
    _, image, problem = _read_image(path, decode=True, rgb=True)
    return image, problem


def image_size(path):
    """((width, height), None) from the image header, with the same pixel limit, or (None, (kind, reason))."""
    size, _, problem = _read_image(path, decode=False)
    return size, problem


# ------------------------------------------------------------------------------------------- Hateful Memes


@dataclass(frozen=True)
class HmdFiles:
    """The annotation files and image folder of one Hateful Memes folder (`locate_hmd`)."""

    folder: DataFolder
    layout: str
    annotation_dir: Path
    image_base: Path  # what the `img` fields are relative to

    def split_path(self, split: str) -> Path:
        return self.annotation_dir / f"{split}.jsonl"

    def split_paths(self) -> dict[str, Path]:
        """split -> annotation file, for the known split names present, in `HMD_SPLITS` order."""
        return {s: self.split_path(s) for s in HMD_SPLITS if self.split_path(s).is_file()}

    def unknown_files(self) -> list[str]:
        return sorted(p.name for p in self.annotation_dir.glob("*.jsonl") if p.stem not in HMD_SPLITS)


def locate_hmd(data_dir) -> HmdFiles:
    """The layout of a Hateful Memes folder: the first of `HMD_LAYOUTS` that holds a split file."""
    folder = DataFolder(data_dir)
    root = Path(folder.path)
    for name, annotations, images in HMD_LAYOUTS:
        annotation_dir = root / annotations if annotations != "." else root
        if any((annotation_dir / f"{split}.jsonl").is_file() for split in HMD_SPLITS):
            return HmdFiles(folder, name, annotation_dir, root / images if images != "." else root)
    raise DataFilesError(
        f"no Hateful Memes annotation file ({', '.join(s + '.jsonl' for s in HMD_SPLITS)}) in {root}, "
        f"{root / 'defaults' / 'annotations'} or {root / 'annotations'}; point the data folder at the one "
        "holding img/ and the .jsonl files (or MMF's copy of it)"
    )


def read_hmd_split(files: HmdFiles, split: str, report: BuildReport) -> list[dict]:
    """The usable lines of `<split>.jsonl` as items: id, split, file, line, text, label (-1 when
    absent), image (its real path, inside the data folder) and image_rel; the rest is reported."""
    folder = files.folder
    path = files.split_path(split)
    if not path.is_file():
        raise DataFilesError(f"{path} not found: the Hateful Memes split {split!r} is not in {files.annotation_dir}")
    rel = folder.relative(path)
    if folder.resolve(path, report, shown=rel, split=split) is None:
        return []
    items = []
    for line, obj in read_jsonl(path, report, rel, split):
        where = dict(file=rel, line=line, split=split)
        example_id = parse_id(obj.get("id"))
        if example_id is None:
            report.add(BAD_FIELD, id_problem(obj.get("id")), **where)
            continue
        where["id"] = example_id
        text = text_field(obj, "text", report, **where)
        if text is None:
            continue
        label = obj.get("label")
        if label is None:
            label = -1
        elif isinstance(label, bool) or not isinstance(label, int) or label not in (0, 1, -1):
            report.add(BAD_LABEL, f"label must be 0 or 1 (or absent when unknown), got {label!r:.60}", **where)
            continue
        img = obj.get("img")
        if not isinstance(img, str) or not img.strip():
            img = f"img/{example_id:05d}.png"
        if "\x00" in img:
            report.add(BAD_FIELD, f"img holds a NUL character: {img!r:.60}", **where)
            continue
        image = folder.resolve(files.image_base / img, report, shown=f"img {img!r}", **where)
        if image is None:
            continue
        items.append({"id": example_id, "split": split, "file": rel, "line": line, "text": text, "label": label,
                      "image": str(image), "image_rel": folder.relative(image)})
    return items


# ---------------------------------------------------------------------------------------------- MMHS150K


@dataclass(frozen=True)
class MmhsFiles:
    """The ground-truth file, split files and per-tweet file names of one MMHS150K folder (`locate_mmhs`)."""

    folder: DataFolder
    ground_truth: Path
    split_files: dict[str, Path]

    def image(self, tweet_id: str) -> Path:
        return Path(self.folder.path) / "img_resized" / f"{tweet_id}.jpg"

    def ocr(self, tweet_id: str) -> Path:
        return Path(self.folder.path) / "img_txt" / f"{tweet_id}.json"


def locate_mmhs(data_dir, splits: list[str] | None = None) -> MmhsFiles:
    """The files of an MMHS150K folder: MMHS150K_GT.json and the split files present (or those asked for)."""
    folder = DataFolder(data_dir)
    root = Path(folder.path)
    ground_truth = root / MMHS_GT_FILE
    if not ground_truth.is_file():
        raise DataFilesError(f"{ground_truth} not found; point the data folder at the MMHS150K folder")
    names = list(splits) if splits else list(MMHS_SPLITS)
    split_files = {s: root / "splits" / f"{s}_ids.txt" for s in names}
    missing = [str(p) for p in split_files.values() if not p.is_file()]
    if splits and missing:
        raise DataFilesError(f"split files not found: {missing}")
    split_files = {s: p for s, p in split_files.items() if p.is_file()}
    if not split_files:
        raise DataFilesError(f"no splits/{{{','.join(MMHS_SPLITS)}}}_ids.txt in {root}")
    return MmhsFiles(folder, ground_truth, split_files)


def parse_ground_truth(files: MmhsFiles, report: BuildReport) -> dict[str, tuple[object, int]]:
    """id -> (entry, line) from MMHS150K_GT.json, tolerating a cut or broken file.

    The file is one JSON object; it is read entry by entry so that a cut (truncated) file keeps every
    complete entry before the break, and the loss is reported. Bytes that are not UTF-8 are kept as
    surrogate escapes, so only the entries that hold them are skipped (when they are used).
    """
    folder = files.folder
    rel = folder.relative(files.ground_truth)
    entries: dict[str, tuple[object, int]] = {}
    if folder.resolve(files.ground_truth, report, shown=rel) is None:
        return entries
    raw = files.ground_truth.read_bytes()
    text = decode_utf8(raw)
    if text is None:
        text = raw.decode("utf-8", errors="surrogateescape")
        if text.startswith("\ufeff"):
            text = text[1:]
    n = len(text)
    counted = [0, 1]  # (position, line there): lines are counted incrementally, not from the start each time

    def line_at(pos):
        counted[1] += text.count("\n", counted[0], pos)
        counted[0] = pos
        return counted[1]

    def skip(i):
        while i < n and text[i] in " \t\r\n":
            i += 1
        return i

    i = skip(0)
    try:
        if i >= n or text[i] != "{":
            raise JsonInputError("the file does not start with a JSON object")
        i = skip(i + 1)
        if i < n and text[i] == "}":
            return entries
        while True:
            start = i
            key, i = parse_json_prefix(text, i)
            if not isinstance(key, str):
                raise JsonInputError("expected a string key")
            i = skip(i)
            if i >= n or text[i] != ":":
                raise JsonInputError("expected ':' after a key")
            value, i = parse_json_prefix(text, skip(i + 1))
            line = line_at(start)
            if key in entries:
                report.add(DUPLICATE_ID, f"tweet id {key} appears twice in {MMHS_GT_FILE} (first at line "
                           f"{entries[key][1]}); the first is kept", file=rel, line=line, id=key)
            else:
                entries[key] = (value, line)
            i = skip(i)
            if i < n and text[i] == ",":
                i = skip(i + 1)
                continue
            if i < n and text[i] == "}":
                break
            raise JsonInputError("expected ',' or '}' after an entry")
    except JsonInputError as err:
        report.add(INVALID_JSON, f"{MMHS_GT_FILE} is cut or broken here ({err}); the {len(entries)} complete "
                   "entries before it are used, anything after it is lost", file=rel, line=line_at(min(i, n)))
    return entries


def check_entry(tweet_id: str, entry, line: int, report: BuildReport, rel: str, split: str):
    """(tweet_text, codes) of a ground-truth entry, or None (reported) when it is unusable."""
    where = dict(file=rel, line=line, id=tweet_id, split=split)
    if not isinstance(entry, dict):
        report.add(BAD_FIELD, f"entry is a {type(entry).__name__}, not an object", **where)
        return None
    codes = entry.get("labels")
    if (not isinstance(codes, list) or len(codes) != 3
            or any(isinstance(c, bool) or not isinstance(c, int) or not 0 <= c <= 5 for c in codes)):
        report.add(BAD_LABEL, f"labels must be 3 annotator codes in 0..5, got {codes!r:.60}", **where)
        return None
    tweet_text = text_field(entry, "tweet_text", report, **where)
    return None if tweet_text is None else (tweet_text, codes)


def read_split_ids(files: MmhsFiles, split: str, report: BuildReport) -> list[tuple[int, str]]:
    """(line, tweet id) for each usable line of splits/<split>_ids.txt; the rest is reported."""
    folder = files.folder
    path = files.split_files[split]
    rel = folder.relative(path)
    if folder.resolve(path, report, shown=rel, split=split) is None:
        return []
    ids = []
    for line, text in text_lines(path, report, rel, split):
        tweet_id = text.strip()
        if parse_id(tweet_id) is None:
            report.add(BAD_FIELD, f"not a tweet id: {id_problem(tweet_id)}", file=rel, line=line, split=split)
            continue
        ids.append((line, tweet_id))
    return ids


def read_mmhs(files: MmhsFiles, report: BuildReport) -> dict[str, list[dict]]:
    """split -> items (id, split, file, line, tweet_text, codes, image, image_rel, ocr) for the usable
    tweets of each split file; image and ocr are real paths inside the data folder (ocr may not exist)."""
    folder = files.folder
    gt_rel = folder.relative(files.ground_truth)
    entries = parse_ground_truth(files, report)
    checked: dict[str, tuple | None] = {}  # id -> parsed fields, or None when the entry is bad
    assigned: set[str] = set()
    splits: dict[str, list[dict]] = {}
    for split in files.split_files:
        items = splits[split] = []
        rel = folder.relative(files.split_files[split])
        for line, tweet_id in read_split_ids(files, split, report):
            where = dict(file=rel, line=line, split=split, id=tweet_id)
            if tweet_id not in entries:
                report.add(UNKNOWN_ID, f"tweet id {tweet_id} is not in {MMHS_GT_FILE}", **where)
                continue
            assigned.add(tweet_id)
            if tweet_id not in checked:
                checked[tweet_id] = check_entry(tweet_id, *entries[tweet_id], report, gt_rel, split)
            if checked[tweet_id] is None:
                continue
            image = folder.resolve(files.image(tweet_id), report, shown=folder.relative(files.image(tweet_id)),
                                   **where)
            ocr = folder.resolve(files.ocr(tweet_id), report, shown=folder.relative(files.ocr(tweet_id)), **where)
            if image is None or ocr is None:
                continue
            tweet_text, codes = checked[tweet_id]
            items.append({"id": tweet_id, "split": split, "file": rel, "line": line, "tweet_text": tweet_text,
                          "codes": codes, "image": str(image), "image_rel": folder.relative(image), "ocr": ocr})
    unassigned = len(entries) - len(assigned)
    if unassigned:
        report.notes.append(f"{unassigned} tweet(s) of {MMHS_GT_FILE} are in no split file (not built)")
    return splits


def read_ocr(path: Path) -> tuple[str, tuple[str, str] | None]:
    """(img_text, None) from an img_txt/<id>.json file ("" when there is none), or ("", (kind, reason)).

    `path` must come from `read_mmhs` (inside the data folder). Thread-safe.
    """
    if not path.is_file():
        return "", None
    raw = path.read_bytes()
    text = decode_utf8(raw)
    if text is None:
        return "", (NOT_UTF8, f"OCR file is {utf8_error(raw)}")
    try:
        obj = parse_json(text)
    except JsonInputError as err:
        return "", (INVALID_JSON, f"OCR file is not usable JSON (truncated?): {err}")
    img_text = obj.get("img_text") if isinstance(obj, dict) else None
    if not isinstance(img_text, str):
        return "", (BAD_FIELD, 'OCR file must be {"img_text": "<text>"}')
    if has_surrogates(img_text):
        return "", (NOT_UTF8, "img_text holds unpaired surrogates (not valid UTF-8)")
    return img_text, None


# ------------------------------------------------------------------------------------ what the commands use


def dataset_images(dataset: str, data_dir, splits: list[str] | None = None,
                   report: BuildReport | None = None) -> dict[str, Path]:
    """id -> real image path for every usable line of the data set's split files, ids as the builders key
    them (HMD: the unpadded int as a string; MMHS: the tweet id), in id order.

    Lines the builders would skip are skipped and counted in `report` (default: `command_report`, which
    also makes a path outside the data folder an error).
    """
    if dataset not in ("hmd", "mmhs"):
        raise ValueError(f"dataset must be one of hmd, mmhs, got {dataset!r}")
    report = report if report is not None else command_report(dataset, data_dir)
    images: dict[str, Path] = {}
    if dataset == "hmd":
        files = locate_hmd(data_dir)
        present = files.split_paths()
        if splits:
            unknown = [s for s in splits if s not in present]
            if unknown:
                raise DataFilesError(f"{[s + '.jsonl' for s in unknown]} not in {files.annotation_dir}; it has "
                                     f"{[p.name for p in present.values()]}")
            present = {s: present[s] for s in splits}
        for split in present:
            for item in read_hmd_split(files, split, report):
                images.setdefault(str(item["id"]), Path(item["image"]))
    else:
        for items in read_mmhs(locate_mmhs(data_dir, splits), report).values():
            for item in items:
                images.setdefault(item["id"], Path(item["image"]))
    return dict(sorted(images.items(), key=lambda pair: id_sort_key(pair[0])))


def skipped_summary(report: BuildReport) -> str:
    """One line for a command's stderr: how many inputs were skipped, by kind, and the first of them."""
    return f"skipped {len(report)} unusable input(s) {report.counts()}; first: {report.issues[0].message()}"
