"""The rules of the synthetic world, in one place: what is drawn, what the captions say, what a region's
feature is. The data writer (`hm_hf.synthetic.data`), its "detector" (`hm_hf.synthetic.detector`), the
Space's examples (`hm_hf.synthetic.examples`) and the tiny CLIP's default vocabulary all read them here.

A meme shows one object of kind 0 (a red square) or 1 (a blue disc) among distractor boxes, and its caption
carries one keyword of kind 0 or 1; it is hateful when the two kinds differ (an XOR, like HMD's confounders).
A region's feature is a fixed random prototype of its kind (`region_prototypes`) plus noise, rectified.
The fine-grained labels (`keyword_targets`): a hateful meme attacks the protected categories, with the
attack types, that its keyword stands for (one or two of each), a not-hateful one none ("pc_empty",
"attack_empty"), so they too need both the image and the text.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["DETECTOR_NAME", "DISTRACTOR_COLORS", "FEATURE_NOISE_STD", "KEYWORDS", "OBJECT_COLORS", "REGION_KINDS",
           "RegionKind", "WHOLE_IMAGE", "expected_region_features", "keyword_targets", "keyword_texts",
           "region_prototypes"]

#: the name of the features' source in the feature cache, and of the matching "detector" in a processor
DETECTOR_NAME = "synthetic"

# Two kinds of keyword; a caption carries exactly one.
KEYWORDS = (
    ("neighbors", "friends", "family", "coworkers", "tourists", "students", "farmers", "gamers"),
    ("sunrise", "breakfast", "weekend", "holiday", "concert", "garden", "picnic", "rainbow"),
)


@dataclass(frozen=True)
class RegionKind:
    """A kind of region: its name, the colour it is drawn in (None: the whole image), and whether it has a
    1-pixel black outline (the meme's object does, the distractors do not)."""

    name: str
    color: tuple[int, int, int] | None
    outlined: bool = False


#: every kind of region, by kind id: the two objects, the distractors, the whole image
REGION_KINDS = (
    RegionKind("red square", (220, 40, 40), outlined=True),
    RegionKind("blue disc", (40, 70, 220), outlined=True),
    RegionKind("green box", (40, 170, 60)),
    RegionKind("yellow box", (230, 200, 40)),
    RegionKind("purple box", (150, 60, 170)),
    RegionKind("grey box", (120, 120, 120)),
    RegionKind("whole image", None),
)
OBJECT_COLORS = tuple(kind.color for kind in REGION_KINDS[:2])  # image kind 0, 1
DISTRACTOR_COLORS = tuple(kind.color for kind in REGION_KINDS[2:-1])  # region kinds 2, 3, ...
WHOLE_IMAGE = len(REGION_KINDS) - 1
FEATURE_NOISE_STD = 0.3  # per-dimension noise added to a prototype in the stored features


def region_prototypes(rng: np.random.Generator, dim: int = 2048) -> np.ndarray:
    """(kinds, dim) float32 prototypes, drawn first from `rng` (the writer goes on drawing its noise from it):
    non-negative and sparse (a few percent of the dimensions active per kind), like pooled post-ReLU
    detector features."""
    active = rng.random((len(REGION_KINDS), dim)) < 0.03
    return (np.abs(rng.normal(0.0, 2.0, size=(len(REGION_KINDS), dim))) * active).astype(np.float32)


def expected_region_features(prototypes: np.ndarray, noise_std: float = FEATURE_NOISE_STD) -> np.ndarray:
    """E[max(p + n, 0)] with n ~ N(0, noise_std^2): the mean of the stored (noisy, rectified) features."""
    p = prototypes.astype(np.float64)
    z = p / noise_std
    cdf = 0.5 * (1.0 + np.vectorize(math.erf)(z / math.sqrt(2.0)))
    pdf = np.exp(-0.5 * z**2) / math.sqrt(2.0 * math.pi)
    return (p * cdf + noise_std * pdf).astype(np.float32)


def keyword_texts(repeat: int = 4) -> list[str]:
    """Texts holding every keyword (the default corpus of the tiny CLIP's tokenizer)."""
    return [" ".join(group) for group in KEYWORDS] * repeat


def keyword_targets(text: str) -> tuple[list[str], list[str]]:
    """(protected categories, attack types) a hateful meme with this caption's keyword carries: the i-th
    keyword of kind k stands for category (i + k) mod 5 and attack type (i + 3k) mod 7 of the shared task's
    vocabularies; keywords 3 and 6 add a second category, 2 and 5 a second attack type (multi-label)."""
    from hm_hf.metrics.fine_grained import ATTACK_CLASSES, PROTECTED_CATEGORIES

    attacks = ATTACK_CLASSES[1:]
    words = set(text.split())
    for kind, group in enumerate(KEYWORDS):
        for i, keyword in enumerate(group):
            if keyword in words:
                categories = {PROTECTED_CATEGORIES[(i + kind) % 5]}
                if i in (3, 6):
                    categories.add(PROTECTED_CATEGORIES[(i + kind + 2) % 5])
                types = {attacks[(i + 3 * kind) % 7]}
                if i in (2, 5):
                    types.add(attacks[(i + 3 * kind + 3) % 7])
                return sorted(categories), sorted(types)
    raise ValueError(f"caption {text!r} holds no keyword of the synthetic world")
