"""Facebook's Hateful Memes (HMD) as a `datasets` builder.

Reads the folder as distributed (`img/NNNNN.png` and `<split>.jsonl`) or MMF's copy
(`defaults/images/img/`, `defaults/annotations/<split>.jsonl`). Splits are the files present among
train, dev_seen, dev_unseen, test_seen, test_unseen and phase 1's dev, test; each keeps its file's name.

>>> from hm_hf.data.hateful_memes import HatefulMemes
>>> builder = HatefulMemes(data_dir="hateful_memes")  # doctest: +SKIP
>>> builder.download_and_prepare()  # doctest: +SKIP
>>> builder.as_dataset()["dev_seen"][0]["label"]  # doctest: +SKIP
1

Columns: id (int64), image, text, label (0 not hateful, 1 hateful, -1 when the file has no label);
config "regions" adds region_features, boxes, image_width, image_height, num_boxes from a feature cache
keyed by str(id). Lines without a `label` (or with null or -1) are unlabelled; any other label value is
bad input. Extra fields are ignored. What is skipped is listed in the build report.
"""

from __future__ import annotations

from pathlib import Path

import datasets

from hm_hf.data.builder_base import MemeBuilder
from hm_hf.data.report import BAD_FIELD, BAD_LABEL, NOT_UTF8, BuildReport, has_surrogates, read_jsonl

SPLITS = ("train", "dev_seen", "dev_unseen", "test_seen", "test_unseen", "dev", "test")
LABEL_NAMES = ["not_hateful", "hateful"]
_CITATION = """@inproceedings{kiela2020hateful,
  title={The Hateful Memes Challenge: Detecting Hate Speech in Multimodal Memes},
  author={Kiela, Douwe and Firooz, Hamed and Mohan, Aravind and Goswami, Vedanuj and Singh, Amanpreet
          and Ringshia, Pratik and Testuggine, Davide},
  booktitle={Advances in Neural Information Processing Systems},
  year={2020}
}"""


def locate(data_dir: Path) -> tuple[Path, Path, str]:
    """(annotation folder, folder that `img` paths are relative to, layout name) of an HMD folder."""
    data_dir = Path(data_dir)
    if any((data_dir / f"{split}.jsonl").is_file() for split in SPLITS):
        return data_dir, data_dir, "official"
    mmf = data_dir / "defaults" / "annotations"
    if any((mmf / f"{split}.jsonl").is_file() for split in SPLITS):
        return mmf, data_dir / "defaults" / "images", "mmf"
    raise FileNotFoundError(
        f"no Hateful Memes annotation file ({', '.join(s + '.jsonl' for s in SPLITS)}) in {data_dir} or "
        f"{mmf}; point data_dir at the folder holding img/ and the .jsonl files"
    )


def _parse_id(value):
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and value >= 0:
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


class HatefulMemes(MemeBuilder):
    """Hateful Memes (Kiela et al., 2020): meme image + its text, binary hatefulness label."""

    DATASET_LABEL = "hateful_memes"
    BUILDER_CONFIGS = [
        MemeBuilder.BUILDER_CONFIG_CLASS(name="default", version=MemeBuilder.VERSION,
                                         description="image, text, label"),
        MemeBuilder.BUILDER_CONFIG_CLASS(name="regions", version=MemeBuilder.VERSION,
                                         description="image, text, label and region features from a cache"),
    ]
    SPLIT_PRIORITY = {"train": 0}  # every other split: 1 (evaluation)
    ALLOW_EVAL_OVERLAP = True  # dev/test (phase 1) are dev_seen/test_seen; dev_unseen shares memes too

    @staticmethod
    def _annotation_files(data_dir: Path) -> list[Path]:
        try:
            annotations, _, _ = locate(data_dir)
        except FileNotFoundError:
            return []
        return [annotations / f"{split}.jsonl" for split in SPLITS]

    def _base_features(self) -> dict:
        return {
            "id": datasets.Value("int64"),
            "image": datasets.Image(),
            "text": datasets.Value("string"),
            "label": datasets.ClassLabel(names=LABEL_NAMES),
        }

    def _info(self) -> datasets.DatasetInfo:
        info = super()._info()
        info.citation = _CITATION
        info.homepage = "https://ai.meta.com/tools/hatefulmemes/"
        info.license = "see the Hateful Memes dataset licence agreement; images may not be redistributed"
        return info

    def _read_annotations(self, data_dir: Path, report: BuildReport) -> dict[str, list[dict]]:
        annotations, image_base, layout = locate(data_dir)
        other = sorted(p.name for p in annotations.glob("*.jsonl") if p.stem not in SPLITS)
        if other:
            report.notes.append(f"ignored annotation files with unknown split names: {other}")
        report.notes.append(f"layout: {layout}")
        splits: dict[str, list[dict]] = {}
        for split in SPLITS:
            path = annotations / f"{split}.jsonl"
            if not path.is_file():
                continue
            rel = self._relative(path)
            items = splits[split] = []
            for line, obj in read_jsonl(path, report, rel, split):
                where = dict(file=rel, line=line, split=split)
                example_id = _parse_id(obj.get("id"))
                if example_id is None:
                    report.add(BAD_FIELD, f"id must be a non-negative integer, got {obj.get('id')!r}", **where)
                    continue
                where["id"] = example_id
                text = obj.get("text")
                if not isinstance(text, str):
                    report.add(BAD_FIELD, f"text must be a string, got {text!r}", **where)
                    continue
                if has_surrogates(text):
                    report.add(NOT_UTF8, "text holds unpaired surrogates (not valid UTF-8)", **where)
                    continue
                label = obj.get("label")
                if label is None:
                    label = -1
                elif isinstance(label, bool) or not isinstance(label, int) or label not in (0, 1, -1):
                    report.add(BAD_LABEL, f"label must be 0 or 1 (or absent when unknown), got {label!r}", **where)
                    continue
                img = obj.get("img")
                if not isinstance(img, str) or not img.strip():
                    img = f"img/{example_id:05d}.png"
                image = (image_base / img).resolve()
                items.append({"id": example_id, "split": split, "file": rel, "line": line, "text": text,
                              "label": label, "image": str(image), "image_rel": self._relative(image)})
        return splits

    def _example(self, item: dict) -> dict:
        return {"id": item["id"], "image": {"path": item["image"], "bytes": None}, "text": item["text"],
                "label": item["label"]}
