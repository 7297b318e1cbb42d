"""Configuration of the bottom-up-attention Faster R-CNN (ResNet-101 C4, Visual Genome).

The defaults are the public checkpoint `unc-nlp/frcnn-vg-finetuned` as transformers' LXMERT / VisualBERT
research demo runs it (its `config.yaml`; the model is a port of py-bottom-up-attention's
`faster_rcnn_R_101_C4_attr_caffemaxpool`): with them the model's state dict has exactly that checkpoint's
parameter names and shapes (R101-C4, 12 anchors = sizes 64-512 x 3 ratios, 1600 classes, 400 attributes),
images are resized to shortest side 800 / longest at most 1333, and every image gets exactly 36 regions
(NMS over each region's best-class box at 0.5, retried at 0.6 and 0.7 while fewer than 36 survive).

`DETECTOR_PRESETS` names the two settings downstream models were trained with (see there);
`FrcnnConfig.update_inference` applies a preset and/or single settings. Only the tests change the
architecture fields (`num_blocks_per_stage`, channel widths, class counts) to get a detector small
enough to run on a CPU in milliseconds.
"""

from __future__ import annotations

import math

from transformers import PreTrainedConfig

# Blocks in res2, res3, res4 for the standard depths; res5 (3 blocks) lives in the RoI head (C4 design).
RESNET_BLOCKS = {50: (3, 4, 6), 101: (3, 4, 23), 152: (3, 8, 36)}

#: The region selections downstream models were trained on, by name (`hm-hf extract-features --preset`).
DETECTOR_PRESETS: dict[str, dict] = {
    # transformers' LXMERT / VisualBERT research demos: this checkpoint with its own config.yaml, shortest
    # side 800 / longest 1333, 36 regions per image; the demo reads a score threshold but never applies
    # it. LXMERT itself was pre-trained on 36-region bottom-up-attention features.
    "lxmert-demo": dict(min_size_test=800, max_size_test=1333, nms_thresh_test=[0.5, 0.6, 0.7],
                        score_threshold=0.0, min_boxes=36, max_boxes=36),
    # py-bottom-up-attention's extraction with bottom-up-attention's adaptive box count, the settings of the
    # features UNITER was trained on (and of the seed's py-bottom-up-attention JSON files): shortest side
    # 600 / longest 1000, NMS 0.3 retried up to 0.9 while fewer than 10 survive, then the regions whose
    # best class scores >= 0.2, at least 10 and at most 100.
    "bottom-up-attention": dict(min_size_test=600, max_size_test=1000,
                                nms_thresh_test=[0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9],
                                score_threshold=0.2, min_boxes=10, max_boxes=100),
}
INFERENCE_SETTINGS = ("min_size_test", "max_size_test", "nms_thresh_test", "score_threshold", "min_boxes",
                      "max_boxes")


#: How `FrcnnConfig.from_reference_yaml` reads the checkpoint's config.yaml: (field, section, key); section None
#: is the top level or MODEL. Keys are lower-case, as the demo's `Config` also answers to.
REFERENCE_YAML_KEYS = (
    ("depth", "resnets", "depth"), ("stem_out_channels", "resnets", "stem_out_channels"),
    ("res2_out_channels", "resnets", "res2_out_channels"), ("num_groups", "resnets", "num_groups"),
    ("width_per_group", "resnets", "width_per_group"), ("stride_in_1x1", "resnets", "stride_in_1x1"),
    ("caffe_maxpool", None, "max_pool"), ("pixel_mean", None, "pixel_mean"), ("pixel_std", None, "pixel_std"),
    ("rpn_hidden_channels", "proposal_generator", "hidden_channels"),
    ("rpn_min_size", "proposal_generator", "min_size"),
    ("anchor_sizes", "anchor_generator", "sizes"), ("anchor_aspect_ratios", "anchor_generator", "aspect_ratios"),
    ("anchor_offset", "anchor_generator", "offset"),
    ("rpn_pre_nms_topk_test", "rpn", "pre_nms_topk_test"), ("rpn_post_nms_topk_test", "rpn", "post_nms_topk_test"),
    ("rpn_nms_thresh", "rpn", "nms_thresh"), ("rpn_bbox_reg_weights", "rpn", "bbox_reg_weights"),
    ("num_classes", "roi_heads", "num_classes"), ("nms_thresh_test", "roi_heads", "nms_thresh_test"),
    ("num_attributes", "roi_box_head", "num_attrs"), ("res5_halve", "roi_box_head", "res5halve"),
    ("pooler_resolution", "roi_box_head", "pooler_resolution"),
    ("cls_agnostic_bbox_reg", "roi_box_head", "cls_agnostic_bbox_reg"),
    ("roi_bbox_reg_weights", "roi_box_head", "bbox_reg_weights"),
    ("input_format", "input", "format"), ("min_size_test", "input", "min_size_test"),
    ("max_size_test", "input", "max_size_test"), ("pad_value", None, "pad_value"),
    ("min_boxes", None, "min_detections"), ("max_boxes", None, "max_detections"),
)  # fmt: skip


class DetectorFileError(ValueError):
    """A detector folder or file that cannot be used; the message names the file and what to do."""


class FrcnnConfig(PreTrainedConfig):
    r"""Settings of [`FrcnnForRegionFeatures`].

    Architecture (these decide the state-dict layout; the defaults equal `unc-nlp/frcnn-vg-finetuned`):
        depth (`int`, 101): ResNet depth (50, 101 or 152) of the res2-res4 backbone.
        num_blocks_per_stage (`list[int]`, *optional*): blocks of res2, res3, res4; overrides `depth`
            (tests only: a tiny backbone).
        stem_out_channels, res2_out_channels, num_groups, width_per_group: ResNet widths; res5 gives
            `res2_out_channels * 8` channels, the region-feature size (2048).
        stride_in_1x1 (`bool`, True): MSRA/Caffe ResNets put the stride in the first 1x1 conv.
        caffe_maxpool (`bool`, True): Caffe-style stem max-pool (no padding, ceil mode).
        norm_eps (`float`, 1e-5): epsilon of the frozen batch norms (the reference runs BatchNorm2d in eval mode).
        rpn_hidden_channels (`int`, 512): hidden width of the RPN head (VG modification).
        anchor_sizes (64, 128, 256, 512), anchor_aspect_ratios (0.5, 1, 2), anchor_offset (0): the 12 anchors
            on the stride-16 res4 map.
        num_classes (`int`, 1600) / num_attributes (`int`, 400): Visual Genome vocabularies (+1 each for
            background / no-attribute, which come last as in detectron2).
        res5_halve (`bool`, False): False = VG modification (res5 keeps stride 1 with dilation 2).
        pooler_resolution (`int`, 14): RoIPool output size before res5.
        pooler_type (`str`, "ROIPool"): "ROIPool" (the reference) or "ROIAlign".
        cls_agnostic_bbox_reg (`bool`, False).

    Inference (the defaults: the LXMERT demo's, `DETECTOR_PRESETS["lxmert-demo"]`):
        input_format (`str`, "BGR"): channel order the weights expect; pixel_mean / pixel_std are in that
            order, 0-255 scale (Caffe convention).
        min_size_test / max_size_test (800 / 1333): test-time resize of the shortest / longest side, done on
            float pixels with `torch.nn.functional.interpolate(mode="bilinear", align_corners=False)` and no
            antialiasing, as the reference does.
        pad_value (`float`, 0): value of the batch padding (after normalisation).
        rpn_pre_nms_topk_test (6000), rpn_post_nms_topk_test (300), rpn_nms_thresh (0.7), rpn_min_size (0).
        rpn_bbox_reg_weights (1, 1, 1, 1), roi_bbox_reg_weights (10, 10, 5, 5).
        nms_thresh_test (`list[float]`, [0.5, 0.6, 0.7]): NMS over each region's best-class box, tried in
            order until at least `min_boxes` regions survive (a single number is a one-step list).
        score_threshold (0.0), min_boxes (36), max_boxes (36): keep the regions whose best class score
            reaches the threshold, at least `min_boxes`, at most `max_boxes` (a fixed count is
            `min_boxes == max_boxes`, where the threshold plays no part).

    Example:

    ```python
    >>> from hm_hf.extract.configuration_frcnn import FrcnnConfig
    >>> config = FrcnnConfig()  # the unc-nlp/frcnn-vg-finetuned layout, as the LXMERT demo runs it
    >>> config.region_feature_dim, config.num_anchors, config.max_boxes
    (2048, 12, 36)
    >>> config.update_inference("bottom-up-attention", max_boxes=50)  # UNITER's settings, up to 50 regions
    >>> config.min_size_test, config.min_boxes, config.max_boxes
    (600, 10, 50)
    ```
    """

    model_type = "hm_hf_frcnn"

    depth: int = 101
    num_blocks_per_stage: list[int] | None = None
    stem_out_channels: int = 64
    res2_out_channels: int = 256
    num_groups: int = 1
    width_per_group: int = 64
    stride_in_1x1: bool = True
    caffe_maxpool: bool = True
    norm_eps: float = 1e-5
    rpn_hidden_channels: int = 512
    anchor_sizes: list[float] = (64, 128, 256, 512)
    anchor_aspect_ratios: list[float] = (0.5, 1.0, 2.0)
    anchor_offset: float = 0.0
    num_classes: int = 1600
    num_attributes: int = 400
    res5_halve: bool = False
    pooler_resolution: int = 14
    pooler_type: str = "ROIPool"
    cls_agnostic_bbox_reg: bool = False
    pixel_mean: list[float] = (102.9801, 115.9465, 122.7717)
    pixel_std: list[float] = (1.0, 1.0, 1.0)
    input_format: str = "BGR"
    min_size_test: int = 800
    max_size_test: int = 1333
    pad_value: float = 0.0
    rpn_pre_nms_topk_test: int = 6000
    rpn_post_nms_topk_test: int = 300
    rpn_nms_thresh: float = 0.7
    rpn_min_size: float = 0.0
    rpn_bbox_reg_weights: list[float] = (1.0, 1.0, 1.0, 1.0)
    roi_bbox_reg_weights: list[float] = (10.0, 10.0, 5.0, 5.0)
    bbox_scale_clamp: float = math.log(1000.0 / 16)
    nms_thresh_test: list[float] = (0.5, 0.6, 0.7)
    score_threshold: float = 0.0
    min_boxes: int = 36
    max_boxes: int = 36

    def __post_init__(self, **kwargs):
        if self.num_blocks_per_stage is None and self.depth not in RESNET_BLOCKS:
            raise ValueError(f"depth must be one of {sorted(RESNET_BLOCKS)}, got {self.depth}")
        if self.pooler_type not in ("ROIPool", "ROIAlign"):
            raise ValueError(f"pooler_type must be 'ROIPool' or 'ROIAlign', got {self.pooler_type!r}")
        if self.input_format not in ("BGR", "RGB"):
            raise ValueError(f"input_format must be 'BGR' or 'RGB', got {self.input_format!r}")
        if self.num_blocks_per_stage is not None:
            self.num_blocks_per_stage = list(self.num_blocks_per_stage)
        if isinstance(self.nms_thresh_test, (int, float)):  # the reference's yaml allows one number
            self.nms_thresh_test = [self.nms_thresh_test]
        for name in ("anchor_sizes", "anchor_aspect_ratios", "pixel_mean", "pixel_std", "rpn_bbox_reg_weights",
                     "roi_bbox_reg_weights", "nms_thresh_test"):  # JSON lists of floats, whatever sequence was given
            setattr(self, name, [float(v) for v in getattr(self, name)])
        self._validate_inference()
        super().__post_init__(**kwargs)

    def _validate_inference(self) -> None:
        if not 0 <= self.min_boxes <= self.max_boxes or self.max_boxes < 1:
            raise ValueError(f"need 0 <= min_boxes <= max_boxes and max_boxes >= 1; got {self.min_boxes}, "
                             f"{self.max_boxes}")
        if not self.nms_thresh_test or not all(0 < t <= 1 for t in self.nms_thresh_test):
            raise ValueError(f"nms_thresh_test must be IoU thresholds in (0, 1], got {self.nms_thresh_test}")
        if not 0 < self.min_size_test <= self.max_size_test:
            raise ValueError(f"need 0 < min_size_test <= max_size_test; got {self.min_size_test}, {self.max_size_test}")

    def update_inference(self, preset: str | None = None, **settings) -> None:
        """Apply a named preset (`DETECTOR_PRESETS`), then the given settings; None values are left alone.

        Settings are `INFERENCE_SETTINGS` (`min_size_test`, `max_size_test`, `nms_thresh_test`,
        `score_threshold`, `min_boxes`, `max_boxes`); the result is checked as a whole.
        """
        unknown = sorted(set(settings) - set(INFERENCE_SETTINGS))
        if unknown:
            raise ValueError(f"unknown detector setting(s) {unknown}; known: {list(INFERENCE_SETTINGS)}")
        values = {}
        if preset is not None:
            if preset not in DETECTOR_PRESETS:
                raise ValueError(f"unknown detector preset {preset!r}; known: {sorted(DETECTOR_PRESETS)}")
            values.update(DETECTOR_PRESETS[preset])
        values.update({k: v for k, v in settings.items() if v is not None})
        if "nms_thresh_test" in values:
            thresholds = values["nms_thresh_test"]
            values["nms_thresh_test"] = [float(t) for t in ([thresholds] if isinstance(thresholds, (int, float))
                                                            else thresholds)]
        previous = {k: getattr(self, k) for k in values}
        for key, value in values.items():
            setattr(self, key, value)
        try:
            self._validate_inference()
        except ValueError:
            for key, value in previous.items():
                setattr(self, key, value)
            raise

    def inference_settings(self) -> dict:
        """The settings `update_inference` takes, as they are now (what made a feature cache)."""
        return {k: getattr(self, k) for k in INFERENCE_SETTINGS}

    @property
    def blocks_per_stage(self) -> list[int]:
        return list(self.num_blocks_per_stage or RESNET_BLOCKS[self.depth])

    @property
    def region_feature_dim(self) -> int:
        return self.res2_out_channels * 8

    @property
    def num_anchors(self) -> int:
        return len(self.anchor_sizes) * len(self.anchor_aspect_ratios)

    @classmethod
    def tiny(cls, **overrides) -> "FrcnnConfig":
        """A detector of the same architecture a few thousand parameters big, at 64-96 px, 3-8 boxes: what
        the tests and the benchmarks' smoke runs build (random weights), so that it runs in milliseconds."""
        settings = dict(
            num_blocks_per_stage=[1, 1, 1], stem_out_channels=8, res2_out_channels=16, width_per_group=4,
            rpn_hidden_channels=16, num_classes=20, num_attributes=7, pooler_resolution=4, min_size_test=64,
            max_size_test=96, rpn_pre_nms_topk_test=200, rpn_post_nms_topk_test=24, min_boxes=3, max_boxes=8,
        )  # fmt: skip
        settings.update(overrides)
        return cls(**settings)

    @classmethod
    def from_reference_yaml(cls, path, **overrides) -> "FrcnnConfig":
        """Read the `config.yaml` that ships with `unc-nlp/frcnn-vg-finetuned` (the demo's nested format).

        Keys are matched case-insensitively, at the top level or under MODEL, as the demo's `Config` does.
        Read as the demo uses them: `roi_heads.nms_thresh_test` (the NMS sweep), `min_detections` /
        `max_detections`, `input.min_size_test` / `max_size_test`, `pad_value`. Two settings the demo reads
        but never applies are not taken over: `roi_heads.score_thresh_test` (its region selection has no score
        threshold, so `score_threshold` is 0) and `roi_box_head.pooler_type` (its pooler is always RoIPool).
        A file that is not such a config raises `DetectorFileError` naming it.
        """
        import yaml

        try:
            with open(path, encoding="utf-8") as f:
                raw = yaml.safe_load(f) or {}
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
            raise DetectorFileError(
                f"{path} cannot be read as YAML ({err}); it should be the config.yaml of unc-nlp/frcnn-vg-finetuned: "
                "download it again, or give --model a folder saved by FrcnnForRegionFeatures.save_pretrained"
            ) from None
        if not isinstance(raw, dict):
            raise DetectorFileError(f"{path} holds a {type(raw).__name__}, not the nested settings of the "
                                    "unc-nlp/frcnn-vg-finetuned config.yaml; download it again")

        def lower(d):
            return {str(k).lower(): (lower(v) if isinstance(v, dict) else v) for k, v in d.items()}

        raw = lower(raw)
        model = raw.get("model") if isinstance(raw.get("model"), dict) else {}

        def get(section, key, default):  # section None: MODEL, then the top level
            for scope in ((model, raw) if section is None else (raw.get(section), model.get(section))):
                if isinstance(scope, dict) and key in scope:
                    return scope[key]
            return default

        def flat(v):  # [[64, 128, ...]] -> [64, 128, ...]
            return list(v[0]) if v and isinstance(v[0], (list, tuple)) else list(v)

        defaults = cls()
        try:
            kwargs = {field: get(section, key, getattr(defaults, field)) for field, section, key in REFERENCE_YAML_KEYS}
            for field in ("anchor_sizes", "anchor_aspect_ratios"):
                kwargs[field] = flat(kwargs[field])
            kwargs.update(pooler_type="ROIPool", score_threshold=0.0)  # what the demo uses (see above)
            kwargs.update(overrides)
            return cls(**kwargs)
        except (TypeError, ValueError, IndexError, KeyError) as err:
            raise DetectorFileError(
                f"{path} is not a usable unc-nlp/frcnn-vg-finetuned config.yaml ({err}); download it again, or give "
                "--model a folder saved by FrcnnForRegionFeatures.save_pretrained"
            ) from None
