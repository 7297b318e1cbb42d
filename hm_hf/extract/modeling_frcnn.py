"""Bottom-up-attention region features: a Faster R-CNN (ResNet-101 C4, Visual Genome) in plain PyTorch.

The usual tools (detectron2 + py-bottom-up-attention, vqa-maskrcnn-benchmark) are not on PyPI and are hard
to install; this module needs only torch and torchvision.ops (nms, RoIPool/RoIAlign). Its parameter names
and shapes are those of the public checkpoint `unc-nlp/frcnn-vg-finetuned`, so that checkpoint loads with
no missing or unexpected keys (see `FrcnnForRegionFeatures.from_pretrained`, which also reads the
checkpoint's original `config.yaml` + `pytorch_model.bin` layout), and with that folder it gives the regions
of transformers' LXMERT demo (`examples/research_projects/lxmert`, the reference it is tested against).

Pipeline (inference only), with the checkpoint's settings: resize the float pixels (shortest side 800,
longest at most 1333; `F.interpolate`, bilinear, no antialiasing, as the reference) -> ResNet res2-res4
(stride 16) -> RPN (12 anchors on res4, top 6000 -> NMS 0.7 -> 300 proposals) -> RoIPool 14x14 -> res5
(stride 1, dilation 2) -> mean-pool = the 2048-d region feature -> class (1600 + background), class-specific
box deltas and attribute (400 + none) heads. Region selection: each proposal's best class gives its box and
score, NMS over those boxes at the first threshold of `nms_thresh_test` that leaves at least `min_boxes`
regions, then the regions scoring >= `score_threshold`, at least `min_boxes` and at most `max_boxes` of them
(36 fixed for the checkpoint; `DETECTOR_PRESETS` has the 10-100 adaptive setting). Where even the last NMS
threshold leaves fewer than `min_boxes`, all survivors are kept (the reference has no answer there: it
fails on such an image). An image with no region at all gets the whole image as its single region (marked
`fallback`), so every image has a well-defined entry.

Images: `read_image` opens a file as the reference's reader (OpenCV's `imread`) sees it: EXIF orientation
applied, alpha dropped. Pixels go to the network in the checkpoint's BGR order (the demo, given a local
file, feeds RGB: transformers issue #19601; given a URL it feeds BGR, as here).
"""

from __future__ import annotations

import math
import os
import pickle
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F
from torchvision.ops import RoIAlign, RoIPool, nms
from transformers import PreTrainedModel
from transformers import initialization as init

from hm_hf.hub import unusable_location
from hm_hf.images import to_rgb

from .configuration_frcnn import DetectorFileError, FrcnnConfig

REFERENCE_CONFIG_NAME = "config.yaml"
REFERENCE_WEIGHTS_NAME = "pytorch_model.bin"


# --------------------------------------------------------------------------------------------- layers


class FrozenBatchNorm2d(nn.Module):
    """Batch norm with fixed statistics (detection backbones never update them).

    Keys `weight`, `bias`, `running_mean`, `running_var`, as `nn.BatchNorm2d`; a `num_batches_tracked`
    entry in a checkpoint is ignored.
    """

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The fused inference kernel the reference's BatchNorm2d (eval mode) runs: same numbers, one pass.
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, training=False,
                            eps=self.eps)


class ConvNorm(nn.Conv2d):
    """A bias-free convolution followed by its frozen batch norm (`<name>.weight`, `<name>.norm.*`)."""

    def __init__(self, in_channels, out_channels, kernel_size, eps: float, **kwargs):
        super().__init__(in_channels, out_channels, kernel_size, bias=False, **kwargs)
        self.norm = FrozenBatchNorm2d(out_channels, eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(super().forward(x))


class BasicStem(nn.Module):
    def __init__(self, config: FrcnnConfig):
        super().__init__()
        self.caffe_maxpool = config.caffe_maxpool
        self.conv1 = ConvNorm(3, config.stem_out_channels, 7, config.norm_eps, stride=2, padding=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu_(self.conv1(x))
        if self.caffe_maxpool:
            return F.max_pool2d(x, kernel_size=3, stride=2, padding=0, ceil_mode=True)
        return F.max_pool2d(x, kernel_size=3, stride=2, padding=1)


class BottleneckBlock(nn.Module):
    def __init__(self, in_channels, out_channels, bottleneck_channels, stride, config: FrcnnConfig, dilation=1):
        super().__init__()
        eps = config.norm_eps
        self.shortcut = (
            ConvNorm(in_channels, out_channels, 1, eps, stride=stride) if in_channels != out_channels else None
        )
        stride_1x1, stride_3x3 = (stride, 1) if config.stride_in_1x1 else (1, stride)
        self.conv1 = ConvNorm(in_channels, bottleneck_channels, 1, eps, stride=stride_1x1)
        self.conv2 = ConvNorm(
            bottleneck_channels,
            bottleneck_channels,
            3,
            eps,
            stride=stride_3x3,
            padding=dilation,
            dilation=dilation,
            groups=config.num_groups,
        )
        self.conv3 = ConvNorm(bottleneck_channels, out_channels, 1, eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu_(self.conv1(x))
        out = F.relu_(self.conv2(out))
        out = self.conv3(out)
        out = out + (self.shortcut(x) if self.shortcut is not None else x)
        return F.relu_(out)


def make_stage(num_blocks, in_channels, out_channels, bottleneck_channels, first_stride, config, dilation=1):
    blocks = []
    for i in range(num_blocks):
        stride = first_stride if i == 0 else 1
        blocks.append(BottleneckBlock(in_channels, out_channels, bottleneck_channels, stride, config, dilation))
        in_channels = out_channels
    return nn.Sequential(*blocks)


class ResNetC4Backbone(nn.Module):
    """Stem + res2, res3, res4 (stride 16); res5 belongs to the RoI head (the C4 design)."""

    def __init__(self, config: FrcnnConfig):
        super().__init__()
        self.stem = BasicStem(config)
        in_channels = config.stem_out_channels
        out_channels = config.res2_out_channels
        bottleneck = config.num_groups * config.width_per_group
        for index, num_blocks in enumerate(config.blocks_per_stage):
            stage = make_stage(num_blocks, in_channels, out_channels, bottleneck, 1 if index == 0 else 2, config)
            self.add_module(f"res{index + 2}", stage)
            in_channels, out_channels, bottleneck = out_channels, out_channels * 2, bottleneck * 2
        self.out_channels = in_channels
        self.stride = 16

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res4(self.res3(self.res2(self.stem(x))))


# ------------------------------------------------------------------------------------------ box utils


def apply_deltas(deltas: torch.Tensor, boxes: torch.Tensor, weights, scale_clamp: float) -> torch.Tensor:
    """Decode (dx, dy, dw, dh) deltas, shape (R, K*4), relative to `boxes` (R, 4) into (R, K*4) boxes."""
    deltas = deltas.float()
    boxes = boxes.float()
    widths = boxes[:, 2] - boxes[:, 0]
    heights = boxes[:, 3] - boxes[:, 1]
    ctr_x = boxes[:, 0] + 0.5 * widths
    ctr_y = boxes[:, 1] + 0.5 * heights
    wx, wy, ww, wh = weights
    dx = deltas[:, 0::4] / wx
    dy = deltas[:, 1::4] / wy
    dw = (deltas[:, 2::4] / ww).clamp(max=scale_clamp)
    dh = (deltas[:, 3::4] / wh).clamp(max=scale_clamp)
    pred_ctr_x = dx * widths[:, None] + ctr_x[:, None]
    pred_ctr_y = dy * heights[:, None] + ctr_y[:, None]
    pred_w = torch.exp(dw) * widths[:, None]
    pred_h = torch.exp(dh) * heights[:, None]
    out = torch.stack(
        (pred_ctr_x - 0.5 * pred_w, pred_ctr_y - 0.5 * pred_h, pred_ctr_x + 0.5 * pred_w, pred_ctr_y + 0.5 * pred_h),
        dim=-1,
    )
    # Non-finite values (possible only with broken weights) would poison NMS; clamp them to the image later.
    return torch.nan_to_num(out.reshape(deltas.shape), nan=0.0, posinf=1e8, neginf=-1e8)


def clip_boxes(boxes: torch.Tensor, height: float, width: float) -> torch.Tensor:
    x = boxes[..., 0::2].clamp(min=0, max=width)
    y = boxes[..., 1::2].clamp(min=0, max=height)
    return torch.stack((x[..., 0], y[..., 0], x[..., 1], y[..., 1]), dim=-1)


# --------------------------------------------------------------------------------------------- the RPN


class AnchorGenerator(nn.Module):
    """Cell anchors (sizes x aspect ratios) tiled over the res4 grid; `cell_anchors.0` is in the checkpoint."""

    def __init__(self, config: FrcnnConfig, stride: int):
        super().__init__()
        self.stride = stride
        self.offset = config.anchor_offset
        self.sizes = list(config.anchor_sizes)
        self.aspect_ratios = list(config.anchor_aspect_ratios)
        self.cell_anchors = nn.ParameterList([nn.Parameter(self.compute_cell_anchors(), requires_grad=False)])

    def compute_cell_anchors(self) -> torch.Tensor:
        anchors = []
        for size in self.sizes:
            area = size**2.0
            for ratio in self.aspect_ratios:
                w = math.sqrt(area / ratio)
                h = ratio * w
                anchors.append([-w / 2.0, -h / 2.0, w / 2.0, h / 2.0])
        return torch.tensor(anchors, dtype=torch.float32)

    def forward(self, height: int, width: int) -> torch.Tensor:
        """All anchors of an H x W map, ordered (y, x, anchor), shape (H*W*A, 4)."""
        cell = self.cell_anchors[0].float()
        device = cell.device
        shifts_x = torch.arange(width, device=device, dtype=torch.float32) * self.stride + self.offset * self.stride
        shifts_y = torch.arange(height, device=device, dtype=torch.float32) * self.stride + self.offset * self.stride
        shift_y, shift_x = torch.meshgrid(shifts_y, shifts_x, indexing="ij")
        shifts = torch.stack((shift_x, shift_y, shift_x, shift_y), dim=-1).reshape(-1, 1, 4)
        return (shifts + cell.view(1, -1, 4)).reshape(-1, 4)


class RPNHead(nn.Module):
    def __init__(self, in_channels: int, config: FrcnnConfig):
        super().__init__()
        hidden = config.rpn_hidden_channels if config.rpn_hidden_channels > 0 else in_channels
        self.conv = nn.Conv2d(in_channels, hidden, kernel_size=3, stride=1, padding=1)
        self.objectness_logits = nn.Conv2d(hidden, config.num_anchors, kernel_size=1)
        self.anchor_deltas = nn.Conv2d(hidden, config.num_anchors * 4, kernel_size=1)

    def forward(self, x: torch.Tensor):
        t = F.relu(self.conv(x))
        return self.objectness_logits(t), self.anchor_deltas(t)


class RPN(nn.Module):
    def __init__(self, in_channels: int, stride: int, config: FrcnnConfig):
        super().__init__()
        self.config = config
        self.anchor_generator = AnchorGenerator(config, stride)
        self.rpn_head = RPNHead(in_channels, config)

    def forward(self, features: torch.Tensor, image_sizes: torch.Tensor) -> list[torch.Tensor]:
        """Proposals (R_i, 4) per image, in the resized image's pixels, best objectness first."""
        cfg = self.config
        logits, deltas = self.rpn_head(features)
        batch, num_anchors, height, width = logits.shape
        logits = logits.permute(0, 2, 3, 1).reshape(batch, -1).float()
        deltas = deltas.view(batch, num_anchors, 4, height, width).permute(0, 3, 4, 1, 2).reshape(batch, -1, 4)
        anchors = self.anchor_generator(height, width)
        proposals = []
        for i in range(batch):
            k = min(cfg.rpn_pre_nms_topk_test, logits.shape[1])
            scores, index = logits[i].topk(k)
            boxes = apply_deltas(deltas[i, index], anchors[index], cfg.rpn_bbox_reg_weights, cfg.bbox_scale_clamp)
            h, w = image_sizes[i].tolist()
            boxes = clip_boxes(boxes, h, w)
            keep = ((boxes[:, 2] - boxes[:, 0]) > cfg.rpn_min_size) & ((boxes[:, 3] - boxes[:, 1]) > cfg.rpn_min_size)
            boxes, scores = boxes[keep], scores[keep]
            keep = nms(boxes, scores, cfg.rpn_nms_thresh)[: cfg.rpn_post_nms_topk_test]
            proposals.append(boxes[keep])
        return proposals


# ------------------------------------------------------------------------------------------ RoI heads


class FastRCNNOutputLayers(nn.Module):
    """Class scores (num_classes + 1, background last), box deltas and the Visual Genome attribute head."""

    def __init__(self, input_size: int, config: FrcnnConfig):
        super().__init__()
        num_classes = config.num_classes
        self.cls_score = nn.Linear(input_size, num_classes + 1)
        num_bbox_classes = 1 if config.cls_agnostic_bbox_reg else num_classes
        self.bbox_pred = nn.Linear(input_size, num_bbox_classes * 4)
        # Attribute head: the embedding of the predicted class is appended to the region feature.
        self.cls_embedding = nn.Embedding(num_classes + 1, input_size // 8)
        self.fc_attr = nn.Linear(input_size + input_size // 8, input_size // 4)
        self.attr_score = nn.Linear(input_size // 4, config.num_attributes + 1)

    def forward(self, x: torch.Tensor):
        scores = self.cls_score(x)
        deltas = self.bbox_pred(x)
        embedded = self.cls_embedding(scores.argmax(-1))
        attr = self.attr_score(F.relu(self.fc_attr(torch.cat([x, embedded.to(x.dtype)], dim=-1))))
        return scores, attr, deltas


class Res5ROIHeads(nn.Module):
    def __init__(self, in_channels: int, stride: int, config: FrcnnConfig):
        super().__init__()
        res = config.pooler_resolution
        if config.pooler_type == "ROIPool":
            self.pooler = RoIPool((res, res), spatial_scale=1.0 / stride)
        else:
            self.pooler = RoIAlign((res, res), spatial_scale=1.0 / stride, sampling_ratio=0, aligned=False)
        out_channels = config.region_feature_dim
        bottleneck = config.num_groups * config.width_per_group * 8
        if config.res5_halve:
            self.res5 = make_stage(3, in_channels, out_channels, bottleneck, 2, config)
        else:  # Visual Genome model: no down-sampling in res5, dilated 3x3 convs instead
            self.res5 = make_stage(3, in_channels, out_channels, bottleneck, 1, config, dilation=2)
        self.box_predictor = FastRCNNOutputLayers(out_channels, config)

    def pooled_features(self, features: torch.Tensor, boxes: list[torch.Tensor]) -> torch.Tensor:
        """The 2048-d feature of each box: RoIPool -> res5 -> mean over the pooled grid."""
        rois = [b.to(features.dtype) for b in boxes]
        return self.res5(self.pooler(features, rois)).mean(dim=(2, 3))


# -------------------------------------------------------------------------------------------- outputs


@dataclass
class DetectedRegions:
    """The regions of one image; boxes are x1, y1, x2, y2 in pixels of the original image."""

    boxes: torch.Tensor  # (N, 4) float32
    features: torch.Tensor  # (N, D)
    object_ids: torch.Tensor  # (N,) int64, 0..num_classes-1
    object_scores: torch.Tensor  # (N,) float32
    attribute_ids: torch.Tensor  # (N,) int64, 0..num_attributes-1
    attribute_scores: torch.Tensor  # (N,) float32
    image_width: int
    image_height: int
    fallback: bool = False  # True: nothing detected, the whole image is the only region

    @property
    def num_boxes(self) -> int:
        return int(self.boxes.shape[0])


def resized_size(height: int, width: int, short: int, long: int) -> tuple[int, int]:
    """Shortest side to `short`, longest at most `long`, rounded half up (the reference's ResizeShortestEdge)."""
    scale = short / min(height, width)
    new_h, new_w = (short, scale * width) if height < width else (scale * height, short)
    if max(new_h, new_w) > long:
        factor = long / max(new_h, new_w)
        new_h, new_w = new_h * factor, new_w * factor
    return int(new_h + 0.5), int(new_w + 0.5)


# ---------------------------------------------------------------------------------------------- model


class FrcnnPreTrainedModel(PreTrainedModel):
    config_class = FrcnnConfig
    base_model_prefix = "frcnn"
    main_input_name = "pixel_values"
    # Checkpoints saved from nn.BatchNorm2d carry a counter the frozen norms don't need.
    _keys_to_ignore_on_load_unexpected = [r"num_batches_tracked"]

    @torch.no_grad()
    def _init_weights(self, module):
        """Random weights for tests and smoke runs; real use loads the Visual Genome checkpoint.

        The last norm of each residual block starts at zero (blocks start as identities) so that random
        activations stay finite through 30+ blocks; the detection heads follow detectron2's initialisation.
        """
        if isinstance(module, FrozenBatchNorm2d):
            init.ones_(module.weight)
            init.zeros_(module.bias)
            init.zeros_(module.running_mean)
            init.ones_(module.running_var)
        elif isinstance(module, BottleneckBlock):
            init.zeros_(module.conv3.norm.weight)
        elif isinstance(module, ConvNorm):
            init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, RPNHead):
            for layer in (module.conv, module.objectness_logits, module.anchor_deltas):
                init.normal_(layer.weight, std=0.01)
                init.zeros_(layer.bias)
        elif isinstance(module, FastRCNNOutputLayers):
            init.normal_(module.cls_score.weight, std=0.01)
            init.normal_(module.bbox_pred.weight, std=0.001)
            for layer in (module.cls_score, module.bbox_pred, module.fc_attr, module.attr_score):
                init.zeros_(layer.bias)
            init.normal_(module.fc_attr.weight, std=0.01)
            init.normal_(module.attr_score.weight, std=0.01)
            init.normal_(module.cls_embedding.weight, std=0.02)
        elif isinstance(module, AnchorGenerator):
            init.copy_(module.cell_anchors[0], module.compute_cell_anchors())


class FrcnnForRegionFeatures(FrcnnPreTrainedModel):
    """Faster R-CNN R101-C4 trained on Visual Genome, returning bottom-up-attention region features.

    Example:

    ```python
    >>> from PIL import Image, ImageOps
    >>> from hm_hf.extract.modeling_frcnn import FrcnnForRegionFeatures
    >>> model = FrcnnForRegionFeatures.from_pretrained("unc-nlp/frcnn-vg-finetuned").eval()  # doctest: +SKIP
    >>> regions = model.extract([Image.open("img/08291.png")])[0]  # doctest: +SKIP
    >>> regions.features.shape, regions.boxes.shape  # (36, 2048), (36, 4): the checkpoint's 36  # doctest: +SKIP
    ```
    """

    def __init__(self, config: FrcnnConfig):
        super().__init__(config)
        self.backbone = ResNetC4Backbone(config)
        channels, stride = self.backbone.out_channels, self.backbone.stride
        self.proposal_generator = RPN(channels, stride, config)
        self.roi_heads = Res5ROIHeads(channels, stride, config)
        self.post_init()

    # ------------------------------------------------------------------ pre-processing

    def preprocess(self, images: list[Image.Image], min_size: int | None = None, max_size: int | None = None):
        """PIL images -> padded (B, 3, H, W) tensor, resized (h, w) per image, original (h, w) per image.

        As the reference: 8-bit pixels become float32, are resized with bilinear `F.interpolate`
        (`align_corners=False`, no antialiasing), put in the weights' channel order and normalised; the
        batch is padded with `pad_value` to its largest image.
        """
        cfg = self.config
        min_size = min_size or cfg.min_size_test
        max_size = max_size or cfg.max_size_test
        mean = torch.tensor(cfg.pixel_mean).view(3, 1, 1)
        std = torch.tensor(cfg.pixel_std).view(3, 1, 1)
        tensors, sizes, original = [], [], []
        for image in images:
            pixels = torch.from_numpy(np.asarray(to_rgb(image), dtype=np.uint8).copy())
            height, width = pixels.shape[:2]
            new_h, new_w = resized_size(height, width, min_size, max_size)
            tensor = pixels.permute(2, 0, 1).float()
            if cfg.input_format == "BGR":
                tensor = tensor.flip(0)
            tensor = F.interpolate(tensor[None], size=(new_h, new_w), mode="bilinear", align_corners=False)[0]
            tensors.append((tensor - mean) / std)
            sizes.append((new_h, new_w))
            original.append((height, width))
        max_h = max(s[0] for s in sizes)
        max_w = max(s[1] for s in sizes)
        batch = torch.full((len(tensors), 3, max_h, max_w), float(cfg.pad_value))
        for i, tensor in enumerate(tensors):
            batch[i, :, : tensor.shape[1], : tensor.shape[2]] = tensor
        return batch, torch.tensor(sizes), torch.tensor(original)

    # ------------------------------------------------------------------ inference

    def _select(self, proposals, scores, deltas, h, w):
        """The regions of one image (see the module docstring): indices into `proposals` and their boxes,
        classes and scores."""
        cfg = self.config
        probs = F.softmax(scores.float(), dim=-1)[:, :-1]  # background is the last column
        best_scores, best_classes = probs.max(dim=1)
        boxes = apply_deltas(deltas, proposals, cfg.roi_bbox_reg_weights, cfg.bbox_scale_clamp)
        boxes = boxes.view(len(proposals), -1, 4)
        if boxes.shape[1] > 1:
            boxes = boxes[torch.arange(len(proposals), device=boxes.device), best_classes]
        else:
            boxes = boxes[:, 0]
        boxes = clip_boxes(boxes, h, w)
        for threshold in cfg.nms_thresh_test:  # looser thresholds only while too few regions survive
            keep = nms(boxes, best_scores, threshold)
            if len(keep) >= cfg.min_boxes:
                break
        confident = int((best_scores[keep] >= cfg.score_threshold).sum())
        count = min(max(confident, cfg.min_boxes), cfg.max_boxes, len(keep))
        keep = keep[:count]
        return keep, boxes[keep], best_classes[keep], best_scores[keep]

    @torch.no_grad()
    def forward(
        self,
        pixel_values: torch.Tensor,
        image_sizes: torch.Tensor,
        original_sizes: torch.Tensor | None = None,
    ) -> list[DetectedRegions]:
        """Detect regions in a padded batch.

        Args:
            pixel_values: (B, 3, H, W), normalised as `preprocess` does.
            image_sizes: (B, 2) height, width of each resized image inside the padded batch.
            original_sizes: (B, 2) height, width of the original images; boxes are returned in their pixels
                (default: the resized sizes).
        """
        if original_sizes is None:
            original_sizes = image_sizes
        features = self.backbone(pixel_values)
        proposals = self.proposal_generator(features, image_sizes)
        heads = self.roi_heads
        empty = [i for i, p in enumerate(proposals) if len(p) == 0]
        for i in empty:  # nothing proposed (degenerate image): pool the whole image instead
            h, w = image_sizes[i].tolist()
            proposals[i] = torch.tensor([[0.0, 0.0, w, h]], device=features.device)
        pooled = heads.pooled_features(features, proposals)
        scores, attr_scores, deltas = heads.box_predictor(pooled)
        counts = [len(p) for p in proposals]
        outputs = []
        for i, (pooled_i, scores_i, attr_i, deltas_i) in enumerate(
            zip(pooled.split(counts), scores.split(counts), attr_scores.split(counts), deltas.split(counts))
        ):
            h, w = image_sizes[i].tolist()
            orig_h, orig_w = original_sizes[i].tolist()
            fallback = i in empty
            keep, boxes, classes, class_scores = self._select(proposals[i], scores_i, deltas_i, h, w)
            if len(keep) == 0 or fallback:  # nothing detected: the whole image is the one region
                fallback = True
                whole = torch.tensor([[0.0, 0.0, w, h]], device=features.device)
                pooled_i = heads.pooled_features(features[i : i + 1], [whole])
                scores_i, attr_i, _ = heads.box_predictor(pooled_i)
                keep = torch.zeros(1, dtype=torch.long, device=features.device)
                boxes = whole
                class_scores, classes = F.softmax(scores_i.float(), dim=-1)[:, :-1].max(dim=1)
            attr_probs = F.softmax(attr_i[keep].float()[:, :-1], dim=-1)  # "no attribute" is the last column
            attribute_scores, attribute_ids = attr_probs.max(dim=1)
            if fallback:
                boxes = torch.tensor([[0.0, 0.0, orig_w, orig_h]], device=boxes.device)
            else:  # float64 so that the resized border maps exactly onto the original one
                scale = torch.tensor([orig_w / w, orig_h / h, orig_w / w, orig_h / h], dtype=torch.float64)
                boxes = clip_boxes(boxes.double() * scale.to(boxes.device), orig_h, orig_w).float()
            outputs.append(
                DetectedRegions(
                    boxes=boxes.cpu(),
                    features=pooled_i[keep].float().cpu(),
                    object_ids=classes.cpu(),
                    object_scores=class_scores.float().cpu(),
                    attribute_ids=attribute_ids.cpu(),
                    attribute_scores=attribute_scores.float().cpu(),
                    image_width=int(orig_w),
                    image_height=int(orig_h),
                    fallback=fallback,
                )
            )
        return outputs

    def extract(self, images: list[Image.Image], fp16: bool = False, **resize) -> list[DetectedRegions]:
        """Regions of PIL images (fp16 autocast on CUDA when `fp16`)."""
        pixel_values, sizes, original = self.preprocess(images, **resize)
        device = self.device
        use_amp = fp16 and device.type == "cuda"
        with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
            return self(pixel_values.to(device), sizes.to(device), original.to(device))

    # ------------------------------------------------------------------ loading the reference checkpoint

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """Load a folder/Hub repo saved by `save_pretrained`, or in the reference layout.

        The reference layout (`unc-nlp/frcnn-vg-finetuned`: `config.yaml` + `pytorch_model.bin`, no
        `config.json`) is read with `FrcnnConfig.from_reference_yaml` and `torch.load(weights_only=True)`;
        convert it once with `save_pretrained` to get safetensors. Loading is strict: a folder whose weights
        do not cover the whole detector, or whose files are damaged, raises `DetectorFileError` naming the
        file instead of running a partly random detector.
        """
        path = str(pretrained_model_name_or_path)
        problem = unusable_location(path)
        if problem:  # (not tried on the Hub: a file name there is retried for a minute, then misreported)
            raise DetectorFileError(f"detector {path!r} {problem}: give a folder saved by save_pretrained, the "
                                    f"unc-nlp/frcnn-vg-finetuned folder ({REFERENCE_CONFIG_NAME} + "
                                    f"{REFERENCE_WEIGHTS_NAME}), or a Hub id like unc-nlp/frcnn-vg-finetuned")
        if os.path.isdir(path):
            if not os.path.isfile(os.path.join(path, "config.json")) and os.path.isfile(
                os.path.join(path, REFERENCE_CONFIG_NAME)
            ):
                return cls.from_reference_checkpoint(path, config=kwargs.get("config"))
            return cls._from_saved(path, *args, **kwargs)
        try:
            return cls._from_saved(path, *args, **kwargs)
        except OSError as err:  # a Hub repo in the reference layout has no config.json
            from huggingface_hub import hf_hub_download

            from hm_hf.hub import hub_options

            try:
                config_file = hf_hub_download(path, REFERENCE_CONFIG_NAME, **hub_options(kwargs))
                weights_file = hf_hub_download(path, REFERENCE_WEIGHTS_NAME, **hub_options(kwargs))
            except Exception:
                raise err from None
            return cls.from_reference_checkpoint(
                Path(config_file).parent, weights_file=weights_file, config=kwargs.get("config")
            )

    @classmethod
    def _from_saved(cls, path: str, *args, **kwargs) -> "FrcnnForRegionFeatures":
        """transformers' loading of a `save_pretrained` folder, with every failure a `DetectorFileError`."""
        from safetensors import SafetensorError

        wants_info = kwargs.pop("output_loading_info", False)
        is_local = os.path.isdir(path)
        try:
            model, info = super().from_pretrained(path, *args, output_loading_info=True, **kwargs)
        except OSError as err:
            if not is_local:  # not on the Hub, or not reachable: the caller may try the reference layout
                raise
            raise DetectorFileError(f"{path}: {err} Give --model a folder saved by save_pretrained, or the "
                                    f"unc-nlp/frcnn-vg-finetuned folder ({REFERENCE_CONFIG_NAME} + "
                                    f"{REFERENCE_WEIGHTS_NAME})") from None
        except (SafetensorError, ValueError, RuntimeError, TypeError, KeyError, EOFError,
                pickle.UnpicklingError) as err:
            weights = os.path.join(path, "model.safetensors")
            what = weights if isinstance(err, SafetensorError) and os.path.isfile(weights) else path
            raise DetectorFileError(
                f"{what} does not hold a usable detector ({type(err).__name__}: {str(err).splitlines()[0][:300]}); "
                "its config.json or weights are damaged or of another model: save it again, or download "
                "unc-nlp/frcnn-vg-finetuned again"
            ) from None
        missing = [k for k in info.get("missing_keys", []) if "num_batches_tracked" not in k]
        if missing:
            raise DetectorFileError(f"{path}: the weights leave {len(missing)} detector parameters unset (e.g. "
                                    f"{sorted(missing)[:3]}); it is not a saved FrcnnForRegionFeatures")
        return (model, info) if wants_info else model

    @classmethod
    def from_reference_checkpoint(
        cls, folder, weights_file=None, config: FrcnnConfig | None = None
    ) -> "FrcnnForRegionFeatures":
        """Build from `config.yaml` + `pytorch_model.bin` of the reference implementation; strict loading.

        The weights file must be a plain state dict of tensors (as the 2020 checkpoint is): it is read with
        `torch.load(weights_only=True)`, so no pickled code can run; anything else is a `DetectorFileError`.
        """
        folder = Path(folder)
        if config is None:
            config = FrcnnConfig.from_reference_yaml(folder / REFERENCE_CONFIG_NAME)
        weights_file = Path(weights_file or folder / REFERENCE_WEIGHTS_NAME)
        if not weights_file.is_file():
            raise DetectorFileError(f"{weights_file} not found: the reference checkpoint needs its weights file "
                                    f"beside {REFERENCE_CONFIG_NAME} (download it from unc-nlp/frcnn-vg-finetuned)")
        try:
            state_dict = torch.load(weights_file, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as err:
            raise DetectorFileError(
                f"{weights_file} is not a plain PyTorch state dict that torch.load(weights_only=True) can read "
                f"({type(err).__name__}: {str(err).splitlines()[0][:200]}); hm_hf never runs pickled code. Download "
                "unc-nlp/frcnn-vg-finetuned's pytorch_model.bin again, or re-save your own weights with "
                "torch.save(model.state_dict()) or save_pretrained"
            ) from None
        if not isinstance(state_dict, Mapping) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state_dict.items()
        ):
            raise DetectorFileError(f"{weights_file} holds a {type(state_dict).__name__}, not a state dict of tensors "
                                    "keyed by parameter name; is it the unc-nlp/frcnn-vg-finetuned checkpoint?")
        state_dict = {_rename_reference_key(k): v for k, v in state_dict.items() if "num_batches_tracked" not in k}
        model = cls(config)
        try:
            result = model.load_state_dict(state_dict, strict=False)
        except RuntimeError as err:  # a tensor of another shape: another architecture than config.yaml says
            raise DetectorFileError(f"{weights_file} does not fit {folder / REFERENCE_CONFIG_NAME}: "
                                    f"{str(err).splitlines()[-1].strip()[:300]}") from None
        if result.missing_keys or result.unexpected_keys:
            raise DetectorFileError(
                f"{weights_file} does not match the detector layout: missing {result.missing_keys[:10]}, "
                f"unexpected {result.unexpected_keys[:10]}; is it the unc-nlp/frcnn-vg-finetuned checkpoint?"
            )
        return model.eval()


def _rename_reference_key(key: str) -> str:
    # Very old checkpoints call the batch-norm affine parameters gamma / beta.
    return key.replace(".gamma", ".weight").replace(".beta", ".bias")


def read_image(path) -> Image.Image:
    """An image file as the reference's reader (OpenCV's `imread`) sees it: turned upright as its EXIF
    orientation says (phone photos, many JPEGs in MMHS150K), 16-bit scaled to 8; transparent pixels are put on
    white, as training and inference see them (`imread` drops alpha: the two differ only where pixels are not
    opaque); with the data sets' checks (`hm_hf.data.layouts.open_image`: pixel limit, truncated files)."""
    from hm_hf.data.layouts import open_image

    image, problem = open_image(path)
    if problem:
        raise OSError(f"{path}: {problem[1]}")
    return image


__all__ = [
    "DetectedRegions",
    "DetectorFileError",
    "FrcnnConfig",
    "FrcnnForRegionFeatures",
    "FrcnnPreTrainedModel",
    "read_image",
    "resized_size",
]
