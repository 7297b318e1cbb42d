"""One-call loaders: build (or reuse) the prepared data set and return a DatasetDict.

>>> import hm_hf
>>> hmd = hm_hf.load_hmd("hateful_memes")  # doctest: +SKIP
>>> list(hmd)  # doctest: +SKIP
['train', 'dev_seen', 'dev_unseen', 'test_seen', 'test_unseen']
"""

from __future__ import annotations

import datasets

from hm_hf.data.hateful_memes import HatefulMemes
from hm_hf.data.mmhs150k import MMHS150K

# options of download_and_prepare; every other option goes to the builder
_PREPARE_OPTIONS = ("download_mode", "verification_mode", "num_proc", "file_format", "max_shard_size")


def _load(builder_class, data_dir, cache_dir, options) -> datasets.DatasetDict:
    prepare = {key: options.pop(key) for key in _PREPARE_OPTIONS if key in options}
    builder = builder_class(data_dir=data_dir, cache_dir=cache_dir, **options)
    builder.download_and_prepare(**prepare)
    return builder.as_dataset()


def load_hmd(data_dir, cache_dir=None, **options) -> datasets.DatasetDict:
    """Hateful Memes from `data_dir` (official or MMF layout) as a DatasetDict keyed by the files' split names.

    Options: config_name ("default" | "regions"), feature_cache (folder, for "regions"), strict (raise on
    the first bad input instead of skipping it), num_workers (image-decoding threads) and
    download_and_prepare's download_mode, verification_mode. What was skipped is logged and saved as
    build_report.json in the builder's cache folder.
    """
    return _load(HatefulMemes, data_dir, cache_dir, dict(options))


def load_mmhs(data_dir, cache_dir=None, **options) -> datasets.DatasetDict:
    """MMHS150K from `data_dir` as a DatasetDict with splits train, val, test (those present).

    Same options as `load_hmd`.
    """
    return _load(MMHS150K, data_dir, cache_dir, dict(options))
