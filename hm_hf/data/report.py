"""What a dataset build skipped and why: the build report, and the input checks both builders share.

Bad input never crashes a build and never silently vanishes. Every line, entry or image that cannot be
used is skipped and recorded here with its file, line (or id) and reason; the report is logged and saved
as `build_report.json` next to the prepared Arrow files. With `strict=True` the first problem raises a
`BadInputError` that names the file and line instead.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from hm_hf.fileio import atomic_write_bytes

logger = logging.getLogger(__name__)

REPORT_FILE = "build_report.json"

# Short codes for the kinds of bad input (the `kind` of a report entry).
BLANK_LINE = "blank_line"
INVALID_JSON = "invalid_json"  # a truncated line, or not JSON at all
NOT_UTF8 = "not_utf8"
BAD_FIELD = "bad_field"  # a missing or mistyped field (id, text, ...)
BAD_LABEL = "bad_label"
DUPLICATE_ID = "duplicate_id"  # twice in one split
DUPLICATE_ACROSS_SPLITS = "duplicate_across_splits"
UNKNOWN_ID = "unknown_id"  # listed in a split file but absent from the annotations
MISSING_IMAGE = "missing_image"
CORRUPT_IMAGE = "corrupt_image"  # truncated, not an image, undecodable
IMAGE_TOO_LARGE = "image_too_large"  # over Pillow's decompression-bomb limit
MISSING_FEATURES = "missing_features"  # no entry in the feature cache (config "regions")
BAD_FEATURES = "bad_features"


class BadInputError(ValueError):
    """Raised in strict mode: one bad input, with the file and line (or id) where it is."""


@dataclass
class Issue:
    """One skipped input."""

    kind: str
    reason: str
    file: str | None = None  # relative to the data folder
    line: int | None = None  # 1-based; None for inputs that are not lines (images, JSON entries)
    id: str | None = None
    split: str | None = None

    def where(self) -> str:
        place = self.file or "?"
        if self.line is not None:
            place += f", line {self.line}"
        if self.id is not None:
            place += f" (id {self.id})"
        return place

    def message(self) -> str:
        return f"{self.where()}: {self.reason}"


@dataclass
class BuildReport:
    """Collects what a build skipped; `strict=True` turns the first problem into a `BadInputError`."""

    dataset: str
    data_dir: str
    strict: bool = False
    issues: list[Issue] = field(default_factory=list)
    splits: dict[str, dict] = field(default_factory=dict)  # split -> {"rows": n, ...}
    notes: list[str] = field(default_factory=list)  # things worth knowing that are not skips

    def add(self, kind: str, reason: str, *, file=None, line=None, id=None, split=None) -> None:
        issue = Issue(kind, reason, file=None if file is None else str(file), line=line,
                      id=None if id is None else str(id), split=split)
        if self.strict:
            raise BadInputError(
                f"{issue.message()} [strict mode: fix or remove this input, or build with strict=False to "
                "skip it and have it counted in the build report]"
            )
        self.issues.append(issue)

    def counts(self) -> dict[str, int]:
        return dict(sorted(Counter(issue.kind for issue in self.issues).items()))

    def __len__(self) -> int:
        return len(self.issues)

    def to_dict(self) -> dict:
        return {
            "dataset": self.dataset,
            "data_dir": self.data_dir,
            "num_skipped": len(self.issues),
            "counts": self.counts(),
            "splits": self.splits,
            "notes": self.notes,
            "issues": [asdict(issue) for issue in self.issues],
        }

    def save(self, folder) -> Path:
        path = Path(folder) / REPORT_FILE
        atomic_write_bytes(path, json.dumps(self.to_dict(), indent=2, ensure_ascii=False).encode("utf-8"))
        return path

    @classmethod
    def load(cls, path) -> "BuildReport":
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        report = cls(dataset=data["dataset"], data_dir=data["data_dir"])
        report.issues = [Issue(**issue) for issue in data.get("issues", [])]
        report.splits = data.get("splits", {})
        report.notes = data.get("notes", [])
        return report

    def summary(self, max_issues: int = 10) -> str:
        rows = ", ".join(f"{split}={info.get('rows', '?')}" for split, info in self.splits.items())
        lines = [f"{self.dataset} build from {self.data_dir}: rows {rows or 'none'}; skipped {len(self)}"
                 + (f" {self.counts()}" if self.issues else "")]
        lines += [f"  - [{issue.kind}] {issue.message()}" for issue in self.issues[:max_issues]]
        if len(self.issues) > max_issues:
            lines.append(f"  ... and {len(self.issues) - max_issues} more (see {REPORT_FILE})")
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)

    def log(self) -> None:
        (logger.warning if self.issues else logger.info)(self.summary())

    def raise_first(self) -> None:
        """Strict mode on a cached build: fail the way the build itself would have failed."""
        if self.issues:
            issue = self.issues[0]
            raise BadInputError(
                f"{issue.message()} [strict mode; this cached build skipped {len(self.issues)} input(s), "
                f"see its {REPORT_FILE}]"
            )


def check_image(path) -> tuple[str, str] | None:
    """Decode the image at `path` fully; return None when it is usable, else (kind, reason).

    Decoding (not just opening) catches truncated files. Images with more pixels than
    `PIL.Image.MAX_IMAGE_PIXELS` are refused before decoding, as Pillow's decompression-bomb guard
    would refuse them (Pillow itself only warns below twice the limit). Thread-safe.
    """
    path = Path(path)
    if not path.is_file():
        return MISSING_IMAGE, f"image file {path.name} not found"
    try:
        with Image.open(path) as image:
            width, height = image.size
            limit = Image.MAX_IMAGE_PIXELS
            if limit and width * height > limit:
                return IMAGE_TOO_LARGE, (
                    f"image is {width}x{height} = {width * height} pixels, over Pillow's decompression-bomb "
                    f"limit of {limit} (PIL.Image.MAX_IMAGE_PIXELS)"
                )
            image.load()
    except Image.DecompressionBombError as err:
        return IMAGE_TOO_LARGE, f"image over Pillow's decompression-bomb limit: {err}"
    except UnidentifiedImageError:
        return CORRUPT_IMAGE, "not a readable image file (Pillow cannot identify it)"
    except Exception as err:  # truncated data, broken chunks, bad headers: all mean "cannot decode"
        return CORRUPT_IMAGE, f"image cannot be decoded: {type(err).__name__}: {err}"
    return None


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


def read_jsonl(path, report: BuildReport, rel: str, split: str):
    """Yield (line_number, object) for each good line of a jsonl file; report the bad ones.

    Blank lines, invalid or truncated JSON, non-UTF-8 bytes and lines that are not JSON objects are
    skipped and counted.
    """
    data = Path(path).read_bytes()
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()  # the newline that ends the last line
    for number, raw in enumerate(lines, start=1):
        raw = raw.rstrip(b"\r")
        if not raw.strip():
            report.add(BLANK_LINE, "blank line", file=rel, line=number, split=split)
            continue
        text = decode_utf8(raw)
        if text is None:
            report.add(NOT_UTF8, f"line is {utf8_error(raw)}", file=rel, line=number, split=split)
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as err:
            report.add(INVALID_JSON, f"invalid JSON (truncated line?): {err.msg} at column {err.colno}",
                       file=rel, line=number, split=split)
            continue
        if not isinstance(obj, dict):
            report.add(INVALID_JSON, f"expected a JSON object, got {type(obj).__name__}",
                       file=rel, line=number, split=split)
            continue
        yield number, obj


def has_surrogates(text: str) -> bool:
    """True for text decoded with errors='surrogateescape' from bytes that were not UTF-8."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def source_digest(*modules) -> str:
    """sha256 of the source files of `modules`: part of the cache key, so editing a builder rebuilds."""
    import hashlib

    digest = hashlib.sha256()
    for module in modules:
        path = Path(module.__file__)
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def file_digest(paths) -> str:
    """sha256 over the names and contents of annotation files (cheap: they are small)."""
    import hashlib

    digest = hashlib.sha256()
    for path in paths:
        path = Path(path)
        digest.update(path.name.encode())
        if path.is_file():
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()


def relative(path, root) -> str:
    try:
        return os.path.relpath(path, root)
    except ValueError:
        return str(path)
