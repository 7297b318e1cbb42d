"""What a dataset build skipped and why: the build report, and the input checks both builders share.

Bad input never crashes a build and never silently vanishes. Every line, entry or image that cannot be
used is skipped and recorded here with its file, line (or id) and reason; the report is logged and saved
as `build_report.json` next to the prepared Arrow files. With `strict=True` the first problem raises a
`BadInputError` that names the file and line instead.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

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
BAD_FEATURES = "bad_features"  # an entry that breaks the rules of hm_hf.extract.validation
OUTSIDE_DATA_DIR = "outside_data_dir"  # a path whose real path is outside the data folder: never opened


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
    """Collects what a build skipped; `strict=True` turns the first problem into a `BadInputError`, and
    so does a problem of one of the `fatal` kinds in any mode (the commands make `outside_data_dir` fatal)."""

    dataset: str
    data_dir: str
    strict: bool = False
    fatal: tuple[str, ...] = ()
    strict_hint: str = ("strict mode: fix or remove this input, or build with strict=False to skip it and have "
                        "it counted in the build report")
    issues: list[Issue] = field(default_factory=list)
    splits: dict[str, dict] = field(default_factory=dict)  # split -> {"rows": n, ...}
    notes: list[str] = field(default_factory=list)  # things worth knowing that are not skips

    def add(self, kind: str, reason: str, *, file=None, line=None, id=None, split=None) -> None:
        issue = Issue(kind, reason, file=None if file is None else str(file), line=line,
                      id=None if id is None else str(id), split=split)
        if self.strict:
            raise BadInputError(f"{issue.message()} [{self.strict_hint}]")
        if kind in self.fatal:
            raise BadInputError(issue.message())
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
