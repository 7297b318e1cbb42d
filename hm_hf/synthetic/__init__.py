"""The synthetic world, in one package: memes whose label is the XOR of an image kind and a text kind.

- `world`: its rules (keywords, region kinds and colours, region-feature prototypes), read by all of these;
- `data`: tiny data sets in the exact on-disk formats of Hateful Memes (with its fine-grained WOAH 2021
  annotations) and MMHS150K, and their region features in a real feature cache (the embedded default of the README's main job, the tests and the
  benchmarks: the real data cannot be downloaded here, and HMD's images may not be redistributed);
- `detector`: its "detector", which finds the drawn shapes and gives the features `data` stores;
- `examples`: the Space's example memes;
- `clip_pretraining`: a tiny CLIP pre-trained with the CLIP loss on synthetic image / caption pairs, the
  stand-in for a web-pretrained CLIP that frozen-CLIP recipes (RGCL's) need.
The tiny random CLIP checkpoint (`hm_hf.models.clip.make_tiny_clip`) takes its default vocabulary from `world`.
"""

from hm_hf.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "world": ["DISTRACTOR_COLORS", "KEYWORDS", "OBJECT_COLORS", "REGION_KINDS", "region_prototypes"],
    "data": [
        "HMD_SPLITS", "HMD_UNLABELED", "MMHS_CLASSES", "MMHS_SPLITS", "SyntheticMeme", "SyntheticOutputError",
        "is_synthetic", "make_dataset", "make_fine_grained", "make_hmd", "make_mmhs", "summarize",
        "write_region_features",
    ],
    "detector": ["SyntheticShapeDetector"],
    "examples": ["make_examples"],
    "clip_pretraining": ["pretrain_tiny_clip", "zero_shot_accuracy"],
})
