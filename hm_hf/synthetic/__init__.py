"""The synthetic world: tiny data sets in the exact on-disk formats of Hateful Memes and MMHS150K.

They are the embedded default for the README's main job, the tests and the benchmarks, since the real data
cannot be downloaded here (and HMD's images may not be redistributed). `hm_hf.synthetic.data` writes them.
"""

from hm_hf.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "data": [
        "DISTRACTOR_COLORS", "HMD_SPLITS", "HMD_UNLABELED", "KEYWORDS", "MMHS_CLASSES", "MMHS_SPLITS",
        "OBJECT_COLORS", "SyntheticMeme", "make_dataset", "make_hmd", "make_mmhs", "summarize",
        "write_region_features",
    ],
})
