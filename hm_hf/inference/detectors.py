"""The detector a region model needs at inference: the one that made its training features.

A processor names it (``detector``: a folder, a Hub id, or "synthetic") and says how it was run
(``detector_settings``: the detector config's fields recorded with the features, such as the box selection,
NMS thresholds and test-time resize), so the pipeline's regions are selected as the training regions were.
"""

from __future__ import annotations

from pathlib import Path

from hm_hf.processing.processor import SYNTHETIC_DETECTOR

__all__ = ["load_detector"]


def _looks_like_hub_id(name: str) -> bool:
    """"org/name" (what training records for the Visual Genome detector), not a path such as "detector"."""
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "~"))


def load_detector(name: str | None, settings: dict | None = None, folder: str | None = None, feature_dim: int = 2048,
                  hub: dict | None = None):
    """The detector `name`, with `settings` set on its config. A relative `name` is read inside the model
    `folder` (or its Hub repo, with the Hub options `hub`: ``revision``, ``token``, ...), never the working
    directory: one missing there is an error unless it is a Hub id (read with `hub` less the model's revision);
    "synthetic" is the synthetic world's shape finder (giving `feature_dim`-d features)."""
    if not name:
        raise ValueError("this model reads region features: give a detector (folder, Hub id or 'synthetic')")
    if name == SYNTHETIC_DETECTOR:
        from hm_hf.synthetic.detector import SyntheticShapeDetector

        return SyntheticShapeDetector(dim=feature_dim)
    from hm_hf.extract.modeling_frcnn import FrcnnForRegionFeatures
    from hm_hf.hub import model_path, other_repo_options

    location = name
    if folder and not Path(name).is_absolute():
        inside = model_path(folder, name, **(hub or {}))
        if inside is not None and inside.is_dir():
            location = str(inside)
        elif not _looks_like_hub_id(name):  # a part of the model folder that is missing: not the cwd's namesake
            raise OSError(
                f"this model reads region features, and its detector {name!r} is not in the model folder {folder}: "
                "copy the Faster R-CNN that made the training features there, or give detector=<folder or Hub id>"
            )
    try:
        detector = FrcnnForRegionFeatures.from_pretrained(
            location, **({} if location != name else other_repo_options(hub or {})))
    except (OSError, ValueError) as err:
        raise OSError(
            f"this model reads region features, and the detector {location!r} could not be loaded ({err}). Give "
            "detector=<folder or Hub id> of the Faster R-CNN that made the training features (unc-nlp/frcnn-vg-"
            "finetuned for real data; 'synthetic' for models trained on the synthetic data set)"
        ) from None
    from hm_hf.extract.configuration_frcnn import INFERENCE_SETTINGS

    config, settings = detector.config, dict(settings or {})
    unknown = sorted(key for key in settings if not hasattr(config, key))
    if unknown:
        raise ValueError(f"detector settings {unknown} are not fields of {type(config).__name__} (the features were "
                         "made by another version of the detector?): remove them from the processor's "
                         "detector_settings")
    for key in [k for k in settings if k not in INFERENCE_SETTINGS]:  # e.g. the RPN's proposal counts
        setattr(config, key, settings.pop(key))
    config.update_inference(**settings)  # box selection, NMS sweep, resize: checked as a whole
    return detector
