"""What the Hateful Memes and MMHS150K builders share: configs, cache key, build report, region join.

Both are plain `datasets.GeneratorBasedBuilder` subclasses (datasets >= 4 no longer runs loading
scripts), instantiated directly::

    builder = HatefulMemes(data_dir="hateful_memes", config_name="regions", feature_cache="feats/")
    builder.download_and_prepare()
    dataset = builder.as_dataset()

How a build goes: `_split_generators` reads every annotation file up front (so an id duplicated across
splits can be seen at all), `_generate_examples` decodes each image in a thread pool and joins the
region features by id (an entry that records its image file's checksum must match the row's image, or it
is counted as bad features), and everything skipped lands in the build report (`build_report.json` next
to the prepared Arrow files). The cache directory's hash covers the builder source, the annotation files'
contents and, for config "regions", `FeatureCache.fingerprint()`; nothing else, so an unchanged input
reuses the prepared data and any real change rebuilds it.

The raw files are read through `hm_hf.data.layouts` (containment, ids, JSON and image rules). The state
(size, mtime) of every image and OCR file a build read is saved beside the report (`input_files.json`);
reusing the prepared data first compares it with the disk, and a file changed or deleted since the build
rebuilds the data (then skipped and counted like any bad input) instead of failing later, when a row's
image is read from the cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
from datasets.exceptions import DatasetGenerationError
from PIL import Image

from hm_hf.data import layouts
from hm_hf.data import report as report_module
from hm_hf.data.layouts import DataFolder, check_image
from hm_hf.data.report import (
    BAD_FEATURES,
    DUPLICATE_ACROSS_SPLITS,
    DUPLICATE_ID,
    MISSING_FEATURES,
    REPORT_FILE,
    BadInputError,
    BuildReport,
    file_digest,
    source_digest,
)
from hm_hf.extract import validation
from hm_hf.extract.cache import FEATURE_DIM, FeatureCache, FeatureCacheError, file_checksum
from hm_hf.fileio import JsonInputError, atomic_write_bytes, parse_json

logger = logging.getLogger(__name__)

REGION_FEATURES = {
    "region_features": datasets.Array2D(shape=(None, FEATURE_DIM), dtype="float16"),
    "boxes": datasets.Array2D(shape=(None, 4), dtype="float32"),  # x1 y1 x2 y2, pixels of the image
    "image_width": datasets.Value("int32"),
    "image_height": datasets.Value("int32"),
    "num_boxes": datasets.Value("int32"),
}
CONFIG_NAMES = ("default", "regions")
INPUTS_FILE = "input_files.json"  # rel path -> [size, mtime_ns] (None: absent) of the files a build read


@dataclass
class MemeBuilderConfig(datasets.BuilderConfig):
    """`feature_cache`: the FeatureCache folder joined by config "regions" (ignored by "default")."""

    feature_cache: str | None = None


class MemeBuilder(datasets.GeneratorBasedBuilder):
    """Base of HatefulMemes and MMHS150K; subclasses read the annotations and describe one example."""

    BUILDER_CONFIG_CLASS = MemeBuilderConfig
    VERSION = datasets.Version("1.0.0")
    DEFAULT_CONFIG_NAME = "default"
    DEFAULT_WRITER_BATCH_SIZE = 256
    DATASET_LABEL = "?"
    # split -> priority: an id found in several splits is kept in the highest-priority one(s) only.
    SPLIT_PRIORITY: dict[str, int] = {}
    ALLOW_EVAL_OVERLAP = False  # True: ids shared by splits of equal (evaluation) priority are kept
    CITATION = HOMEPAGE = LICENSE = ""  # the data set's, for its DatasetInfo (and so its card)

    def __init__(self, data_dir=None, config_name: str | None = None, feature_cache=None,
                 strict: bool = False, cache_dir=None, num_workers: int | None = None, **kwargs):
        if data_dir is None:
            raise ValueError(f"{type(self).__name__} needs data_dir=<folder with the {self.DATASET_LABEL} files>")
        data_dir = os.path.abspath(os.path.expanduser(os.fspath(data_dir)))
        if not os.path.isdir(data_dir):
            raise FileNotFoundError(f"data_dir {data_dir} is not a folder; point it at the {self.DATASET_LABEL} files")
        config_name = config_name or self.DEFAULT_CONFIG_NAME
        if config_name not in CONFIG_NAMES:
            raise ValueError(f"config_name must be one of {CONFIG_NAMES}, not {config_name!r}")
        self.strict = bool(strict)
        self.num_workers = num_workers or min(8, (os.cpu_count() or 1) + 2)
        self.feature_cache: FeatureCache | None = None
        import sys

        self.folder = DataFolder(data_dir)
        code = source_digest(report_module, layouts, validation, sys.modules[__name__], type(self)._builder_module())
        annotation_files = [p for p in self._annotation_files(Path(data_dir))
                            if self.folder.contains(self.folder.real_path(p))]  # outside: never opened
        key_parts = [self.DATASET_LABEL, code, file_digest(annotation_files)]
        if config_name == "regions":
            if feature_cache is None:
                raise ValueError('config "regions" needs feature_cache=<folder written by hm-hf extract-features '
                                 'or import-features>')
            feature_cache = os.path.abspath(os.path.expanduser(os.fspath(feature_cache)))
            self.feature_cache = FeatureCache(feature_cache)
            kwargs["feature_cache"] = feature_cache
            key_parts.append(self.feature_cache.fingerprint())
        elif feature_cache is not None:
            logger.warning('feature_cache is only used by config_name="regions"; ignoring it')
        cache_key = hashlib.sha256("\n".join(key_parts).encode()).hexdigest()[:16]
        self._report: BuildReport | None = None
        self._items: dict[str, list[dict]] = {}
        self._inputs: dict[str, list[int] | None] = {}
        super().__init__(cache_dir=cache_dir, config_name=config_name, data_dir=data_dir, hash=cache_key,
                         **kwargs)

    # -- what subclasses provide -----------------------------------------------------------------
    @classmethod
    def _builder_module(cls):
        import sys

        return sys.modules[cls.__module__]

    @staticmethod
    def _annotation_files(data_dir: Path) -> list[Path]:
        """The annotation files whose contents key the cache (those outside the data folder are left out)."""
        raise NotImplementedError

    def _base_features(self) -> dict:
        raise NotImplementedError

    def _read_annotations(self, data_dir: Path, report: BuildReport) -> dict[str, list[dict]]:
        """Split -> items; an item has at least id, split, file, line, image (absolute path)."""
        raise NotImplementedError

    def _check_item(self, item: dict):
        """Runs in a worker thread: None when the item is usable, else (kind, reason, file)."""
        self._record_input(item["image"])
        problem = check_image(item["image"])
        if problem:
            return problem[0], f"{problem[1]} (listed in {item['file']}, line {item['line']})", item["image_rel"]
        if self.feature_cache is not None and self.feature_cache.has_image_checksum(item["id"]):
            # for `_join_regions`; hashed here, in the pool, just after check_image read the file (page cache)
            item["image_xxh3"] = file_checksum(item["image"])
        return None

    def _record_input(self, path) -> None:
        """Note the state of a file the build reads (thread-safe: one dict item per file)."""
        try:
            stat = os.stat(path)
            state = [stat.st_size, stat.st_mtime_ns]
        except OSError:
            state = None
        self._inputs[self.folder.relative(path)] = state

    def _changed_inputs(self, output_dir) -> list[str]:
        """The files a prepared build read that have changed or appeared or gone since, as 'path (what)'."""
        path = Path(output_dir) / INPUTS_FILE
        try:
            recorded = parse_json(path.read_bytes()).get("files", {})
        except (OSError, JsonInputError, AttributeError):
            return [f"{INPUTS_FILE} (missing or unreadable)"]
        changed = []
        for rel, state in recorded.items():
            try:
                stat = os.stat(os.path.join(self.folder.path, rel))
                now = [stat.st_size, stat.st_mtime_ns]
            except OSError:
                now = None
            if now != state:
                changed.append(f"{rel} ({'deleted' if now is None else 'added' if state is None else 'changed'})")
        return changed

    def _example(self, item: dict) -> dict:
        raise NotImplementedError

    # -- datasets.GeneratorBasedBuilder ----------------------------------------------------------
    def _info(self) -> datasets.DatasetInfo:
        features = dict(self._base_features())
        if self.config.name == "regions":
            features.update(REGION_FEATURES)
            if self.feature_cache is not None:  # stored as the cache stores them (float16, or float32)
                features["region_features"] = datasets.Array2D(shape=(None, FEATURE_DIM),
                                                               dtype=self.feature_cache.feature_dtype)
        return datasets.DatasetInfo(description=(self.__doc__ or "").strip().split("\n")[0],
                                    features=datasets.Features(features), citation=self.CITATION,
                                    homepage=self.HOMEPAGE, license=self.LICENSE)

    def _split_generators(self, dl_manager):
        if self.feature_cache is not None:
            self.feature_cache.ids()  # reads every shard's header: a damaged shard is named before any row is made
        self._report = BuildReport(dataset=self.DATASET_LABEL, data_dir=self.config.data_dir, strict=self.strict)
        items = self._read_annotations(Path(self.config.data_dir), self._report)
        self._items = self._resolve_duplicates(items, self._report)
        return [datasets.SplitGenerator(name=split, gen_kwargs={"split": split}) for split in self._items]

    def _generate_examples(self, split: str):
        report = self._report
        items = self._items[split]
        rows = Counter()
        with warnings.catch_warnings():
            # over-limit images are refused by check_image; Pillow's own warning would only be noise
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            pool = ThreadPoolExecutor(self.num_workers)
            try:
                for index, (item, problem) in enumerate(zip(items, pool.map(self._check_item, items))):
                    if problem is not None:
                        kind, reason, file = problem
                        report.add(kind, reason, file=file, line=item["line"] if file == item["file"] else None,
                                   id=item["id"], split=split)
                        continue
                    example = self._example(item)
                    if self.feature_cache is not None and not self._join_regions(example, item, report):
                        continue
                    rows["rows"] += 1
                    label = example.get("label", -1)
                    rows["labelled" if label is not None and label >= 0 else "unlabelled"] += 1
                    yield index, example
            finally:  # on a strict-mode error, don't decode the images still queued
                pool.shutdown(wait=True, cancel_futures=True)
        report.splits[split] = {"rows": rows["rows"], "labelled": rows["labelled"],
                                "unlabelled": rows["unlabelled"], "listed": len(items)}

    def _join_regions(self, example: dict, item: dict, report: BuildReport) -> bool:
        where = dict(file=item["file"], line=item["line"], id=item["id"], split=item["split"])
        try:
            regions = self.feature_cache.get(str(item["id"]))  # validated as it is read
        except FeatureCacheError as err:
            report.add(BAD_FEATURES, f"{err} (left out)", **where)
            return False
        if regions is None:
            report.add(MISSING_FEATURES, f"no region features for id {item['id']} in the feature cache "
                       f"{self.feature_cache.path} (extract them, or build config 'default')", **where)
            return False
        problem = validation.storage_problem(regions, feature_dim=FEATURE_DIM, dtype=np.float16)
        if problem:  # this build's columns: 2048-d float16 (REGION_FEATURES)
            report.add(BAD_FEATURES, f"region features of id {item['id']} in {self.feature_cache.path}: {problem}",
                       **where)
            return False
        if regions.image_xxh3 is not None:  # features are joined by id: make sure they are this image's
            current = item["image_xxh3"]  # hashed in `_check_item`, as the entry records one
            if current != regions.image_xxh3:
                report.add(BAD_FEATURES, f"region features of id {item['id']} in {self.feature_cache.path} were "
                           f"extracted from another image than {item['image_rel']} (xxh3-128 {regions.image_xxh3} "
                           f"recorded, {current} now): the cache was made from another data folder, or the image "
                           "changed since; extract features into a new folder (hm-hf extract-features --output) "
                           "or build config 'default'", **where)
                return False
        # N == 0 is kept: an explicit empty region set (`import-features --missing empty`); the collator
        # masks it and region models then read the text alone.
        example.update(region_features=regions.features, boxes=regions.boxes, image_width=regions.image_width,
                       image_height=regions.image_height, num_boxes=regions.num_boxes)
        return True

    def _resolve_duplicates(self, splits: dict[str, list[dict]], report: BuildReport) -> dict[str, list[dict]]:
        """Drop repeated ids: within a split the first line wins; across splits the higher priority wins.

        Training has the lowest priority, so a train/evaluation overlap is removed from train and the
        evaluation splits stay as published. Splits of equal priority keep shared ids when
        ALLOW_EVAL_OVERLAP (HMD's evaluation splits overlap as released); this is noted, not skipped.
        """
        unique: dict[str, list[dict]] = {}
        for split, items in splits.items():
            first: dict = {}
            kept = []
            for item in items:
                if item["id"] in first:
                    report.add(DUPLICATE_ID, f"id {item['id']} is listed again (first at line {first[item['id']]}); "
                               "the first is kept", file=item["file"], line=item["line"], id=item["id"], split=split)
                    continue
                first[item["id"]] = item["line"]
                kept.append(item)
            unique[split] = kept
        homes: dict = defaultdict(list)
        for split, items in unique.items():
            for item in items:
                homes[item["id"]].append(split)
        drop: set = set()
        overlaps: Counter = Counter()
        for example_id, where in homes.items():
            if len(where) < 2:
                continue
            top = max(self.SPLIT_PRIORITY.get(s, 1) for s in where)
            keep = [s for s in where if self.SPLIT_PRIORITY.get(s, 1) == top]
            if len(keep) > 1 and not self.ALLOW_EVAL_OVERLAP:
                keep = keep[:1]
            elif len(keep) > 1:
                overlaps[tuple(keep)] += 1
            drop.update((s, example_id) for s in where if s not in keep)
        result = {}
        for split, items in unique.items():
            result[split] = []
            for item in items:
                if (split, item["id"]) in drop:
                    others = [s for s in homes[item["id"]] if s != split]
                    report.add(DUPLICATE_ACROSS_SPLITS,
                               f"id {item['id']} is also in split(s) {', '.join(others)}; it is kept there and "
                               f"dropped from {split} so that no example is in two splits",
                               file=item["file"], line=item["line"], id=item["id"], split=split)
                else:
                    result[split].append(item)
        for shared, count in overlaps.items():
            report.notes.append(f"{count} id(s) are in each of {', '.join(shared)}: these evaluation splits overlap "
                                "as released, so the ids are kept in each")
        return result

    def _download_and_prepare(self, dl_manager, verification_mode, **prepare_split_kwargs):
        self._inputs = {}
        super()._download_and_prepare(dl_manager, verification_mode, **prepare_split_kwargs)
        # both beside the Arrow files in the .incomplete folder, renamed with the data on success
        payload = {"version": 1, "data_dir": self.folder.path, "files": dict(sorted(self._inputs.items()))}
        atomic_write_bytes(Path(self._output_dir) / INPUTS_FILE, json.dumps(payload).encode())
        self._report.save(self._output_dir)
        self._report.log()

    def download_and_prepare(self, output_dir=None, download_config=None, download_mode=None, **kwargs):
        """datasets' download_and_prepare, with strict-mode errors raised as they are (not wrapped), and
        prepared data whose images or OCR files changed since it was built made again."""
        prepared = Path(output_dir or self._cache_dir)
        reuse = download_mode is None or datasets.DownloadMode(download_mode) == datasets.DownloadMode.REUSE_DATASET_IF_EXISTS
        if reuse and (prepared / datasets.config.DATASET_INFO_FILENAME).is_file():
            changed = self._changed_inputs(prepared)
            if changed:
                logger.warning("%d input file(s) changed since %s was prepared (first: %s); building it again",
                               len(changed), prepared, ", ".join(changed[:3]))
                download_mode = datasets.DownloadMode.FORCE_REDOWNLOAD
                self.info.splits = None  # the old build's split sizes are no longer what to expect
        try:
            super().download_and_prepare(output_dir, download_config, download_mode, **kwargs)
        except DatasetGenerationError as err:
            if isinstance(err.__cause__, BadInputError):
                raise err.__cause__ from None
            raise
        report = self.report
        if report is not None and self.strict:
            report.raise_first()  # a cached lenient build must not pass a strict request

    def _as_dataset(self, split=datasets.Split.TRAIN, in_memory: bool = False) -> datasets.Dataset:
        # A split whose every example was skipped still exists (empty, with the right columns):
        # datasets' reader refuses splits with no data.
        info = self.info.splits.get(str(split)) if self.info.splits else None
        if info is not None and info.num_examples == 0:
            return datasets.Dataset.from_dict({name: [] for name in self.info.features},
                                              features=self.info.features, split=split)
        return super()._as_dataset(split=split, in_memory=in_memory)

    @property
    def report(self) -> BuildReport | None:
        """The build report saved with the prepared data (None before download_and_prepare)."""
        path = Path(self._output_dir) / REPORT_FILE
        return BuildReport.load(path) if path.is_file() else None

    def _relative(self, path) -> str:
        return self.folder.relative(path)
