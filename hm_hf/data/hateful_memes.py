"""Facebook's Hateful Memes (HMD) as a `datasets` builder.

Reads the folder as distributed (`img/NNNNN.png` and `<split>.jsonl`), MMF's copy
(`defaults/images/img/`, `defaults/annotations/<split>.jsonl`) or MMF's `defaults/` folder itself, through
`hm_hf.data.layouts` (which also says what a usable line, id and image path are). Splits are the files
present among train, dev_seen, dev_unseen, test_seen, test_unseen and phase 1's dev, test; each keeps its
file's name.

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
from hm_hf.data.layouts import DataFilesError, locate_hmd, read_hmd_split
from hm_hf.data.report import BuildReport

LABEL_NAMES = ["not_hateful", "hateful"]
_CITATION = """@inproceedings{kiela2020hateful,
  title={The Hateful Memes Challenge: Detecting Hate Speech in Multimodal Memes},
  author={Kiela, Douwe and Firooz, Hamed and Mohan, Aravind and Goswami, Vedanuj and Singh, Amanpreet
          and Ringshia, Pratik and Testuggine, Davide},
  booktitle={Advances in Neural Information Processing Systems},
  year={2020}
}"""


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
    CITATION = _CITATION
    HOMEPAGE = "https://ai.meta.com/tools/hatefulmemes/"
    LICENSE = "see the Hateful Memes dataset licence agreement; images may not be redistributed"
    ALLOW_EVAL_OVERLAP = True  # dev/test (phase 1) are dev_seen/test_seen; dev_unseen shares memes too

    @staticmethod
    def _annotation_files(data_dir: Path) -> list[Path]:
        try:
            return list(locate_hmd(data_dir).split_paths().values())
        except DataFilesError:
            return []

    def _base_features(self) -> dict:
        return {
            "id": datasets.Value("int64"),
            "image": datasets.Image(),
            "text": datasets.Value("string"),
            "label": datasets.ClassLabel(names=LABEL_NAMES),
        }


    def _read_annotations(self, data_dir: Path, report: BuildReport) -> dict[str, list[dict]]:
        files = locate_hmd(data_dir)
        if files.unknown_files():
            report.notes.append(f"ignored annotation files with unknown split names: {files.unknown_files()}")
        report.notes.append(f"layout: {files.layout}")
        return {split: read_hmd_split(files, split, report) for split in files.split_paths()}

    def _example(self, item: dict) -> dict:
        return {"id": item["id"], "image": {"path": item["image"], "bytes": None}, "text": item["text"],
                "label": item["label"]}
