"""MMHS150K (Gomez et al., 2020) as a `datasets` builder.

Reads the folder as distributed: `MMHS150K_GT.json` (tweet id -> tweet_url, labels (3 annotator codes),
img_url, tweet_text, labels_str), `img_resized/<id>.jpg`, `img_txt/<id>.json` (only where OCR found
text) and `splits/{train,val,test}_ids.txt`, through `hm_hf.data.layouts`.

>>> from hm_hf.data.mmhs150k import MMHS150K
>>> builder = MMHS150K(data_dir="MMHS150K")  # doctest: +SKIP
>>> builder.download_and_prepare()  # doctest: +SKIP

Columns: id (str tweet id), image, tweet_text, img_text ("" when there is no img_txt file),
annotator_labels (the 3 codes: 0 NotHate, 1 Racist, 2 Sexist, 3 Homophobe, 4 Religion, 5 OtherHate),
label (1 = hate iff at least 2 of the 3 annotators chose a hate class, as the authors did) and
fine_label (see `fine_label`). Config "regions" adds the region features of a cache keyed by the id.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import datasets

from hm_hf.data.builder_base import MemeBuilder
from hm_hf.data.layouts import MMHS_GT_FILE, MMHS_SPLITS, locate_mmhs, read_mmhs, read_ocr
from hm_hf.data.report import BuildReport

CLASS_NAMES = ["NotHate", "Racist", "Sexist", "Homophobe", "Religion", "OtherHate"]
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
    CITATION = _CITATION
    HOMEPAGE = "https://gombru.github.io/2019/10/09/MMHS/"

    @staticmethod
    def _annotation_files(data_dir: Path) -> list[Path]:
        return [data_dir / MMHS_GT_FILE] + [data_dir / "splits" / f"{split}_ids.txt" for split in MMHS_SPLITS]

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


    def _read_annotations(self, data_dir: Path, report: BuildReport) -> dict[str, list[dict]]:
        return read_mmhs(locate_mmhs(data_dir), report)

    def _check_item(self, item: dict):
        problem = super()._check_item(item)
        if problem:
            return problem
        self._record_input(item["ocr"])
        item["img_text"], problem = read_ocr(item["ocr"])
        return problem and (*problem, self._relative(item["ocr"]))

    def _example(self, item: dict) -> dict:
        codes = item["codes"]
        return {"id": item["id"], "image": {"path": item["image"], "bytes": None},
                "tweet_text": item["tweet_text"], "img_text": item["img_text"], "annotator_labels": codes,
                "label": binary_label(codes), "fine_label": fine_label(codes)}

