"""The "detector" of the synthetic world: finds the drawn shapes by colour and gives their region features.

The synthetic data set's features were not made by any network (`hm_hf.synthetic.data.write_region_features`
draws them around `world.region_prototypes`); this is the matching detector, so that a model trained on them
can be run on synthetic meme images end to end, offline (the README's tiny model, the Space's examples). It
only makes sense on synthetic memes; real models use the Faster R-CNN of `hm_hf.extract`.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from hm_hf.synthetic.world import (
    FEATURE_NOISE_STD,
    REGION_KINDS,
    WHOLE_IMAGE,
    expected_region_features,
    region_prototypes,
)

__all__ = ["SyntheticShapeDetector"]


class SyntheticShapeDetector:
    """Finds each drawn region by its colour and returns the features `write_region_features` stores for its
    kind (the per-region noise replaced by its expectation), plus the whole-image region.

    ``seed`` and ``dim`` must be those the features were written with (the defaults of the data writer).
    """

    def __init__(self, seed: int = 0, dim: int = 2048, tolerance: int = 40, min_area: float = 0.002,
                 noise_std: float = FEATURE_NOISE_STD):
        self.kinds = [kind for kind in REGION_KINDS if kind.color is not None]
        self.features = expected_region_features(region_prototypes(np.random.default_rng(seed), dim), noise_std)
        self.tolerance, self.min_area = tolerance, min_area
        self.device = torch.device("cpu")

    def to(self, device):  # runs with numpy on the CPU
        return self

    def extract(self, images: list[Image.Image], **_) -> list:
        from scipy import ndimage

        from hm_hf.extract.modeling_frcnn import DetectedRegions

        out = []
        for image in images:
            array = np.asarray(image.convert("RGB"), dtype=np.int16)
            height, width = array.shape[:2]
            boxes, kinds = [], []
            for kind_id, kind in enumerate(self.kinds):
                mask = (np.abs(array - np.array(kind.color, dtype=np.int16)) <= self.tolerance).all(axis=-1)
                labels, count = ndimage.label(mask)
                for index, found in enumerate(ndimage.find_objects(labels), start=1):
                    if found is None or (labels[found] == index).sum() < self.min_area * width * height:
                        continue
                    ys, xs = found
                    pad = 1 if kind.outlined else 0  # the box includes the outline
                    boxes.append((max(xs.start - pad, 0), max(ys.start - pad, 0), min(xs.stop - 1 + pad, width - 1),
                                  min(ys.stop - 1 + pad, height - 1)))
                    kinds.append(kind_id)
            boxes.append((0, 0, width - 1, height - 1))
            kinds.append(WHOLE_IMAGE)
            n = len(kinds)
            out.append(
                DetectedRegions(
                    boxes=torch.tensor(boxes, dtype=torch.float32),
                    features=torch.from_numpy(self.features[kinds]),
                    object_ids=torch.tensor(kinds, dtype=torch.long),
                    object_scores=torch.ones(n),
                    attribute_ids=torch.zeros(n, dtype=torch.long),
                    attribute_scores=torch.zeros(n),
                    image_width=width,
                    image_height=height,
                    fallback=n == 1,
                )
            )
        return out

    def region_name(self, object_id: int) -> str:
        return REGION_KINDS[object_id].name if 0 <= object_id < len(REGION_KINDS) else str(object_id)
