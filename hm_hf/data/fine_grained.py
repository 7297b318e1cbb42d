"""Fine-grained Hateful Memes (WOAH 2021 shared task) as a `datasets` builder: protected categories and
attack types, multi-label, joined with the Hateful Memes images by id.

>>> from hm_hf.data.fine_grained import HatefulMemesFineGrained
>>> builder = HatefulMemesFineGrained(data_dir="hateful_memes",  # doctest: +SKIP
...                                   annotations_dir="fine_grained_hateful_memes/data/annotations")
>>> builder.download_and_prepare()  # doctest: +SKIP
>>> row = builder.as_dataset()["dev_seen"][0]  # doctest: +SKIP
>>> builder.info.features["pc"].feature.int2str(row["pc"])  # doctest: +SKIP
['race']

Columns: id (int64), image, text, label (0 not_hateful, 1 hateful, -1 unlabelled), pc and attack (lists of
class ids over `PC_CLASSES` / `ATTACK_CLASSES`, the gold label sets; empty lists on the unlabelled split),
pc_annotations and attack_annotations (each annotator's raw label list, as strings; empty when none were
collected). Config "regions" adds the region features from a feature cache keyed by str(id), as for HMD.

## The data as distributed (facebookresearch/fine_grained_hateful_memes, last commit 845c5f8)

- Files, in `data/annotations/`: `train.json` (8,500 lines), `dev_seen.json` (500), `dev_unseen.json`
  (540), `test.jsonl` (1,000). Despite the extension the `.json` files are JSON lines (one object per
  line), as `test.jsonl` is; `test.jsonl` writes `"img/..."` with an escaped slash (`"img\\/16395.png"`)
  and has no newline after its last line. No images: they are Hateful Memes' `img/NNNNN.png`.
- A labelled line: `id` (int, the Hateful Memes id), `set_name` (the split's name), `img`
  (`"img/NNNNN.png"`, relative to the Hateful Memes folder, id zero-padded to 5 digits), `text` (the
  meme text), `gold_hate` (`["hateful"]` or `["not_hateful"]`), `gold_pc` and `gold_attack` (non-empty
  lists: the gold label sets, by majority vote of the annotators), `pc` and `attack` (the annotators'
  own label lists, a list of up to 3 lists, some empty; the string `"None"` on not-hateful memes, which
  were not annotated further).
- Vocabularies: gold_pc in {pc_empty, disability, nationality, race, religion, sex}; gold_attack in
  {attack_empty, contempt, dehumanizing, exclusion, inciting_violence, inferiority, mocking, slurs}.
  Not-hateful memes have exactly `["pc_empty"]` and `["attack_empty"]`; the empty label never shares a
  set with another. Annotators' `pc` lists also use "class" (16 times in train), which no gold set does.
  Multi-label share: train 389 of 8,500 memes have 2-3 categories and 327 have 2-4 attack types; dev_seen
  30 / 17 of 500; dev_unseen 23 / 13 of 540. Two hateful train memes (ids 90573, 70492) have gold_pc
  `["pc_empty"]` (their one annotator gave no category); they are kept as distributed. The gold sets are
  not always the strict majority of the annotators' lists (gold_pc differs from it in 19 / 3 / 3 memes of
  train / dev_seen / dev_unseen, gold_attack in 321 / 25 / 15); the gold sets are what is read.
- Splits with labels: train, dev_seen, dev_unseen. `test.jsonl` has only id, img and text: it is Hateful
  Memes' phase-1 test set (test_seen: the same 1,000 memes), whose fine-grained labels were not released;
  its binary labels are in Hateful Memes' `test_seen.jsonl`. test_unseen has no fine-grained file.
- Joining Hateful Memes: by id (each id's image is `img/<id:05d>.png` in the Hateful Memes folder, in
  the official or MMF layout; `hm_hf.data.layouts.locate_hmd` finds it, and only images inside that folder are opened). dev_seen and dev_unseen share
  memes (e.g. id 8291), as in Hateful Memes; both keep them.
- The shared task's predictions format and scorer: `hm_hf.metrics.fine_grained` (which also says what is
  broken in the organisers' scorer).

Skipped lines (broken JSON, a bad id, text or label, a label outside the vocabulary, an empty or
contradictory label set) and bad images are counted in the build report, as for Hateful Memes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import datasets

from hm_hf.data.builder_base import MemeBuilder, MemeBuilderConfig
from hm_hf.data.layouts import id_problem, locate_hmd, parse_id, read_jsonl, text_field
from hm_hf.data.report import BAD_FIELD, BAD_LABEL, BuildReport
from hm_hf.metrics.fine_grained import ATTACK_CLASSES, HATE_CLASSES, PC_CLASSES

SPLIT_FILES = {"train": "train.json", "dev_seen": "dev_seen.json", "dev_unseen": "dev_unseen.json",
               "test": "test.jsonl"}
LABEL_FIELDS = {"pc": PC_CLASSES, "attack": ATTACK_CLASSES}  # gold_<name> -> the <name> column
_CITATION = """@inproceedings{mathias-etal-2021-findings,
  title={Findings of the {WOAH} 5 Shared Task on Fine Grained Hateful Memes Detection},
  author={Mathias, Lambert and Nie, Shaoliang and Mostafazadeh Davani, Aida and Kiela, Douwe and
          Prabhakaran, Vinodkumar and Vidgen, Bertie and Waseem, Zeerak},
  booktitle={Proceedings of the 5th Workshop on Online Abuse and Harms (WOAH 2021)},
  year={2021}
}"""


def locate_annotations(path) -> Path:
    """The folder holding the fine-grained files: `path` itself or its `data/annotations` (the repository)."""
    path = Path(path).expanduser().resolve()
    for folder in (path, path / "data" / "annotations"):
        if any((folder / name).is_file() for name in SPLIT_FILES.values()):
            return folder
    raise FileNotFoundError(
        f"no fine-grained Hateful Memes file ({', '.join(SPLIT_FILES.values())}) in {path} or "
        f"{path / 'data' / 'annotations'}; point annotations_dir at facebookresearch/fine_grained_hateful_memes "
        "or its data/annotations folder"
    )


@dataclass
class FineGrainedConfig(MemeBuilderConfig):
    """`annotations_dir`: the fine-grained annotation files (the images come from `data_dir`, Hateful Memes)."""

    annotations_dir: str | None = None


class HatefulMemesFineGrained(MemeBuilder):
    """Fine-grained Hateful Memes (WOAH 2021): protected categories and attack types per meme, multi-label."""

    DATASET_LABEL = "hateful_memes_fine_grained"
    BUILDER_CONFIG_CLASS = FineGrainedConfig
    BUILDER_CONFIGS = [
        FineGrainedConfig(name="default", version=MemeBuilder.VERSION,
                          description="image, text, hateful label, protected categories, attack types"),
        FineGrainedConfig(name="regions", version=MemeBuilder.VERSION,
                          description="the default columns and region features from a cache"),
    ]
    SPLIT_PRIORITY = {"train": 0}
    CITATION = _CITATION
    HOMEPAGE = "https://github.com/facebookresearch/fine_grained_hateful_memes"
    LICENSE = "annotations: see the repository's licence; images: the Hateful Memes licence agreement"
    ALLOW_EVAL_OVERLAP = True  # dev_seen and dev_unseen share memes, as released

    def __init__(self, data_dir=None, annotations_dir=None, **kwargs):
        if annotations_dir is None:
            raise ValueError("HatefulMemesFineGrained needs annotations_dir=<facebookresearch/"
                             "fine_grained_hateful_memes or its data/annotations> and data_dir=<Hateful Memes folder>")
        self.annotations_dir = locate_annotations(annotations_dir)
        super().__init__(data_dir=data_dir, annotations_dir=str(self.annotations_dir), **kwargs)

    def _annotation_files(self, data_dir: Path) -> list[Path]:  # the cache key covers these files
        return [self.annotations_dir / name for name in SPLIT_FILES.values()]

    def _base_features(self) -> dict:
        return {
            "id": datasets.Value("int64"),
            "image": datasets.Image(),
            "text": datasets.Value("string"),
            "label": datasets.ClassLabel(names=list(HATE_CLASSES)),
            "pc": datasets.List(datasets.ClassLabel(names=list(PC_CLASSES))),
            "attack": datasets.List(datasets.ClassLabel(names=list(ATTACK_CLASSES))),
            "pc_annotations": datasets.List(datasets.List(datasets.Value("string"))),
            "attack_annotations": datasets.List(datasets.List(datasets.Value("string"))),
        }


    def _read_annotations(self, data_dir: Path, report: BuildReport) -> dict[str, list[dict]]:
        files = locate_hmd(data_dir)
        report.notes.append(f"images: Hateful Memes in the {files.layout} layout; annotations: {self.annotations_dir}")
        splits: dict[str, list[dict]] = {}
        for split, name in SPLIT_FILES.items():
            path = self.annotations_dir / name
            if not path.is_file():
                continue
            rel = str(path)  # outside data_dir: the report names the file in full
            items = splits[split] = []
            for line, obj in read_jsonl(path, report, rel, split):
                where = dict(file=rel, line=line, split=split)
                item = self._read_line(obj, where, report)
                if item is None:
                    continue
                img = obj.get("img")
                if not isinstance(img, str) or not img.strip() or "\x00" in img:
                    img = f"img/{item['id']:05d}.png"
                image = files.folder.resolve(files.image_base / img, report, shown=f"img {img!r}", **where)
                if image is None:  # leads outside the Hateful Memes folder: counted, never opened
                    continue
                if parse_id(Path(img).stem) != item["id"]:  # joined by id: another meme's image is not this one's
                    report.add(BAD_FIELD, f"img {img!r} is not meme {item['id']}'s image (img/{item['id']:05d}.png)",
                               **where)
                    continue
                item.update(split=split, file=rel, line=line, image=str(image), image_rel=self._relative(image))
                items.append(item)
        return splits

    @staticmethod
    def _read_line(obj: dict, where: dict, report: BuildReport) -> dict | None:
        """id, text, label, pc, attack and the annotations of one line; None (reported) when it is bad."""
        example_id = parse_id(obj.get("id"))
        if example_id is None:
            report.add(BAD_FIELD, id_problem(obj.get("id")), **where)
            return None
        where["id"] = example_id
        text = text_field(obj, "text", report, **where)
        if text is None:
            return None
        gold = {key: obj.get(f"gold_{key}") for key in ("hate", *LABEL_FIELDS)}
        item = {"id": example_id, "text": text, "label": -1, "pc": [], "attack": [],
                "pc_annotations": [], "attack_annotations": []}
        if all(value is None for value in gold.values()):
            return item  # the unlabelled split
        if gold["hate"] not in ([name] for name in HATE_CLASSES):
            report.add(BAD_LABEL, f"gold_hate must be [\"hateful\"] or [\"not_hateful\"], got {gold['hate']!r}",
                       **where)
            return None
        item["label"] = HATE_CLASSES.index(gold["hate"][0])
        for key, classes in LABEL_FIELDS.items():
            labels = gold[key]
            if not isinstance(labels, list) or not labels or any(label not in classes for label in labels):
                report.add(BAD_LABEL, f"gold_{key} must be a non-empty list of {list(classes)}, got {labels!r}",
                           **where)
                return None
            if classes[0] in labels and len(labels) > 1:
                report.add(BAD_LABEL, f"gold_{key} {labels} holds {classes[0]!r} together with other labels",
                           **where)
                return None
            if item["label"] == 0 and labels != [classes[0]]:  # not hateful: nothing attacked, no attack
                report.add(BAD_LABEL, f"gold_{key} {labels} on a not-hateful meme (gold_hate [\"not_hateful\"]), "
                           f"which has exactly [{classes[0]!r}]", **where)
                return None
            item[key] = sorted({classes.index(label) for label in labels})
            annotations = obj.get(key)
            if annotations in (None, "None"):
                annotations = []
            if not isinstance(annotations, list) or not all(
                isinstance(a, list) and all(isinstance(x, str) for x in a) for a in annotations
            ):
                report.add(BAD_FIELD, f"{key} must be a list of annotators' label lists or \"None\", "
                           f"got {annotations!r}", **where)
                return None
            item[f"{key}_annotations"] = annotations
        return item

    def _example(self, item: dict) -> dict:
        example = {key: item[key] for key in ("id", "text", "label", "pc", "attack", "pc_annotations",
                                              "attack_annotations")}
        example["image"] = {"path": item["image"], "bytes": None}
        return example


def load_fine_grained(data_dir, annotations_dir, cache_dir=None, **options) -> datasets.DatasetDict:
    """Fine-grained Hateful Memes as a DatasetDict (train, dev_seen, dev_unseen, test: those present).

    `data_dir`: the Hateful Memes folder (its images); `annotations_dir`: the fine-grained files. Same
    options as `hm_hf.load_hmd` (config_name, feature_cache, strict, num_workers).
    """
    from hm_hf.data.loading import _PREPARE_OPTIONS

    options = dict(options)
    prepare = {key: options.pop(key) for key in _PREPARE_OPTIONS if key in options}
    builder = HatefulMemesFineGrained(data_dir=data_dir, annotations_dir=annotations_dir, cache_dir=cache_dir,
                                      **options)
    builder.download_and_prepare(**prepare)
    return builder.as_dataset()
