"""MMHS150K (Gomez et al., 2020) as a `datasets` builder.

Reads the folder as distributed: `MMHS150K_GT.json` (tweet id -> tweet_url, labels (3 annotator codes),
img_url, tweet_text, labels_str), `img_resized/<id>.jpg`, `img_txt/<id>.json` (only where OCR found
text) and `splits/{train,val,test}_ids.txt`.

>>> from hm_hf.data.mmhs150k import MMHS150K
>>> builder = MMHS150K(data_dir="MMHS150K")  # doctest: +SKIP
>>> builder.download_and_prepare()  # doctest: +SKIP

Columns: id (str tweet id), image, tweet_text, img_text ("" when there is no img_txt file),
annotator_labels (the 3 codes: 0 NotHate, 1 Racist, 2 Sexist, 3 Homophobe, 4 Religion, 5 OtherHate),
label (1 = hate iff at least 2 of the 3 annotators chose a hate class, as the authors did) and
fine_label (see `fine_label`). Config "regions" adds the region features of a cache keyed by the id.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import datasets

from hm_hf.data.builder_base import MemeBuilder
from hm_hf.data.report import (
    BAD_FIELD,
    BAD_LABEL,
    BLANK_LINE,
    DUPLICATE_ID,
    INVALID_JSON,
    NOT_UTF8,
    UNKNOWN_ID,
    BuildReport,
    check_image,
    decode_utf8,
    has_surrogates,
    utf8_error,
)

SPLITS = ("train", "val", "test")
CLASS_NAMES = ["NotHate", "Racist", "Sexist", "Homophobe", "Religion", "OtherHate"]
GT_FILE = "MMHS150K_GT.json"
_CITATION = """@inproceedings{gomez2020exploring,
  title={Exploring Hate Speech Detection in Multimodal Publications},
  author={Gomez, Raul and Gibert, Jaume and Gomez, Lluis and Karatzas, Dimosthenis},
  booktitle={Proceedings of the IEEE/CVF Winter Conference on Applications of Computer Vision},
  year={2020}
}"""


def binary_label(codes) -> int:
    """1 (hate) when at least 2 of the 3 annotators chose a hate class (> 0), as MMHS150K's authors did."""
    return int(sum(1 for code in codes if code > 0) >= 2)


def fine_label(codes) -> int:
    """The majority class, consistent with `binary_label`: 0 for not-hate tweets, else a hate class.

    For a hate tweet it is the hate class chosen most often among the hate votes; a tie ([1, 3, 0] or
    [1, 2, 3]) goes to the smallest class code, so the result is deterministic and documented.
    """
    if not binary_label(codes):
        return 0
    votes = Counter(code for code in codes if code > 0)
    best = max(votes.values())
    return min(code for code, count in votes.items() if count == best)


def _line_of(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def parse_ground_truth(path: Path, report: BuildReport, rel: str) -> dict[str, tuple[object, int]]:
    """id -> (entry, line) from MMHS150K_GT.json, tolerating a cut or broken file.

    The file is one JSON object; it is read entry by entry so that a cut (truncated) file keeps every
    complete entry before the break, and the loss is reported. Bytes that are not UTF-8 are kept as
    surrogate escapes, so only the entries that hold them are skipped (when they are used).
    """
    raw = path.read_bytes()
    text = decode_utf8(raw)
    if text is None:
        text = raw.decode("utf-8", errors="surrogateescape")
        if text.startswith("\ufeff"):
            text = text[1:]
    decoder = json.JSONDecoder()
    entries: dict[str, tuple[object, int]] = {}
    n = len(text)

    def skip(i):
        while i < n and text[i] in " \t\r\n":
            i += 1
        return i

    i = skip(0)
    try:
        if i >= n or text[i] != "{":
            raise ValueError("the file does not start with a JSON object")
        i = skip(i + 1)
        if i < n and text[i] == "}":
            return entries
        while True:
            start = i
            key, i = decoder.raw_decode(text, i)
            if not isinstance(key, str):
                raise ValueError("expected a string key")
            i = skip(i)
            if i >= n or text[i] != ":":
                raise ValueError("expected ':' after a key")
            value, i = decoder.raw_decode(text, skip(i + 1))
            line = _line_of(text, start)
            if key in entries:
                report.add(DUPLICATE_ID, f"tweet id {key} appears twice in {GT_FILE} (first at line "
                           f"{entries[key][1]}); the first is kept", file=rel, line=line, id=key)
            else:
                entries[key] = (value, line)
            i = skip(i)
            if i < n and text[i] == ",":
                i = skip(i + 1)
                continue
            if i < n and text[i] == "}":
                break
            raise ValueError("expected ',' or '}' after an entry")
    except (ValueError, IndexError) as err:  # json.JSONDecodeError is a ValueError
        reason = getattr(err, "msg", str(err))
        report.add(INVALID_JSON, f"{GT_FILE} is cut or broken here ({reason}); the {len(entries)} complete "
                   "entries before it are used, anything after it is lost", file=rel, line=_line_of(text, i))
    return entries


class MMHS150K(MemeBuilder):
    """MMHS150K (Gomez et al., 2020): tweets with an image, three annotators' hate codes."""

    DATASET_LABEL = "mmhs150k"
    BUILDER_CONFIGS = [
        MemeBuilder.BUILDER_CONFIG_CLASS(name="default", version=MemeBuilder.VERSION,
                                         description="image, tweet text, OCR text, labels"),
        MemeBuilder.BUILDER_CONFIG_CLASS(name="regions", version=MemeBuilder.VERSION,
                                         description="the default columns and region features from a cache"),
    ]
    SPLIT_PRIORITY = {"train": 0, "val": 1, "test": 2}

    @staticmethod
    def _annotation_files(data_dir: Path) -> list[Path]:
        return [data_dir / GT_FILE] + [data_dir / "splits" / f"{split}_ids.txt" for split in SPLITS]

    def _base_features(self) -> dict:
        return {
            "id": datasets.Value("string"),
            "image": datasets.Image(),
            "tweet_text": datasets.Value("string"),
            "img_text": datasets.Value("string"),
            "annotator_labels": datasets.List(datasets.ClassLabel(names=CLASS_NAMES), length=3),
            "label": datasets.ClassLabel(names=["not_hate", "hate"]),
            "fine_label": datasets.ClassLabel(names=CLASS_NAMES),
        }

    def _info(self) -> datasets.DatasetInfo:
        info = super()._info()
        info.citation = _CITATION
        info.homepage = "https://gombru.github.io/2019/10/09/MMHS/"
        return info

    def _read_annotations(self, data_dir: Path, report: BuildReport) -> dict[str, list[dict]]:
        gt_path = data_dir / GT_FILE
        if not gt_path.is_file():
            raise FileNotFoundError(f"{gt_path} not found; point data_dir at the MMHS150K folder")
        split_paths = {s: data_dir / "splits" / f"{s}_ids.txt" for s in SPLITS}
        split_paths = {s: p for s, p in split_paths.items() if p.is_file()}
        if not split_paths:
            raise FileNotFoundError(f"no splits/{{train,val,test}}_ids.txt in {data_dir}")
        gt_rel = self._relative(gt_path)
        entries = parse_ground_truth(gt_path, report, gt_rel)
        checked: dict[str, tuple | None] = {}  # id -> parsed fields, or None when the entry is bad
        assigned: set[str] = set()
        splits: dict[str, list[dict]] = {}
        for split, path in split_paths.items():
            rel = self._relative(path)
            items = splits[split] = []
            lines = path.read_bytes().split(b"\n")
            if lines and lines[-1] == b"":
                lines.pop()
            for line, raw in enumerate(lines, start=1):
                where = dict(file=rel, line=line, split=split)
                raw = raw.strip()
                if not raw:
                    report.add(BLANK_LINE, "blank line", **where)
                    continue
                tweet_id = decode_utf8(raw)
                if tweet_id is None:
                    report.add(NOT_UTF8, f"line is {utf8_error(raw)}", **where)
                    continue
                tweet_id = tweet_id.strip()
                if not tweet_id.isdigit():
                    report.add(BAD_FIELD, f"not a tweet id: {tweet_id[:40]!r}", **where)
                    continue
                where["id"] = tweet_id
                if tweet_id not in entries:
                    report.add(UNKNOWN_ID, f"tweet id {tweet_id} is not in {GT_FILE}", **where)
                    continue
                assigned.add(tweet_id)
                if tweet_id not in checked:
                    checked[tweet_id] = self._check_entry(tweet_id, *entries[tweet_id], report, gt_rel, split)
                if checked[tweet_id] is None:
                    continue
                tweet_text, codes = checked[tweet_id]
                image = (data_dir / "img_resized" / f"{tweet_id}.jpg").resolve()
                items.append({"id": tweet_id, "split": split, "file": rel, "line": line, "tweet_text": tweet_text,
                              "codes": codes, "image": str(image), "image_rel": self._relative(image),
                              "ocr": data_dir / "img_txt" / f"{tweet_id}.json"})
        unassigned = len(entries) - len(assigned & set(entries))
        if unassigned:
            report.notes.append(f"{unassigned} tweet(s) of {GT_FILE} are in no split file (not built)")
        return splits

    @staticmethod
    def _check_entry(tweet_id, entry, line, report, rel, split):
        where = dict(file=rel, line=line, id=tweet_id, split=split)
        if not isinstance(entry, dict):
            report.add(BAD_FIELD, f"entry is a {type(entry).__name__}, not an object", **where)
            return None
        codes = entry.get("labels")
        if (not isinstance(codes, list) or len(codes) != 3
                or any(isinstance(c, bool) or not isinstance(c, int) or not 0 <= c <= 5 for c in codes)):
            report.add(BAD_LABEL, f"labels must be 3 annotator codes in 0..5, got {codes!r}", **where)
            return None
        tweet_text = entry.get("tweet_text")
        if not isinstance(tweet_text, str):
            report.add(BAD_FIELD, f"tweet_text must be a string, got {tweet_text!r}", **where)
            return None
        if has_surrogates(tweet_text):
            report.add(NOT_UTF8, "tweet_text is not valid UTF-8", **where)
            return None
        return tweet_text, codes

    def _check_item(self, item: dict):
        problem = check_image(item["image"])
        if problem:
            return problem[0], f"{problem[1]} (listed in {item['file']}, line {item['line']})", item["image_rel"]
        ocr: Path = item["ocr"]
        item["img_text"] = ""
        if not ocr.is_file():
            return None
        rel = self._relative(ocr)
        raw = ocr.read_bytes()
        text = decode_utf8(raw)
        if text is None:
            return NOT_UTF8, f"OCR file is {utf8_error(raw)}", rel
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as err:
            return INVALID_JSON, f"OCR file is not valid JSON (truncated?): {err.msg}", rel
        img_text = obj.get("img_text") if isinstance(obj, dict) else None
        if not isinstance(img_text, str):
            return BAD_FIELD, 'OCR file must be {"img_text": "<text>"}', rel
        if has_surrogates(img_text):
            return NOT_UTF8, "img_text holds unpaired surrogates (not valid UTF-8)", rel
        item["img_text"] = img_text
        return None

    def _example(self, item: dict) -> dict:
        codes = item["codes"]
        return {"id": item["id"], "image": {"path": item["image"], "bytes": None},
                "tweet_text": item["tweet_text"], "img_text": item["img_text"], "annotator_labels": codes,
                "label": binary_label(codes), "fine_label": fine_label(codes)}

