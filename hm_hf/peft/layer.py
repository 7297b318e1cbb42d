"""`BottleneckLayer`: a transformer output block with bottleneck adapters between its projection and LayerNorm."""

from __future__ import annotations

import warnings
from typing import Any, Optional

import torch
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn
from transformers.activations import ACT2FN

from .config import BottleneckConfig

MERGE_ERROR = (
    "Bottleneck adapters cannot be merged into the base weights: the adapter is non-linear "
    "(down -> activation -> up) and sits between the output projection and the LayerNorm, so no change of "
    "the dense/LayerNorm weights reproduces it. Keep the PeftModel for inference, or call `unload()` to get "
    "the base model back without the adapters."
)


def check_output_block(module: nn.Module, name: str = "") -> int:
    """Validates the BertOutput layout the adapter relies on and returns the block's hidden size."""
    missing = [a for a in ("dense", "dropout", "LayerNorm") if not hasattr(module, a)]
    dense = getattr(module, "dense", None)
    if missing or not isinstance(dense, nn.Linear):
        raise ValueError(
            f"Bottleneck adapters target output blocks computing LayerNorm(dropout(dense(h)) + input_tensor) "
            f"(attributes dense: nn.Linear, dropout, LayerNorm); module {name or type(module).__name__!r} "
            f"({type(module).__name__}) lacks {missing or ['an nn.Linear dense']}. Fix `target_modules`."
        )
    return dense.out_features


class BottleneckLayer(nn.Module, BaseTunerLayer):
    """Wraps an output block; `forward(hidden_states, input_tensor)` keeps the block's signature.

    Active adapters are applied one after the other on the projected hidden states:
    `h = h + up(act(down(LayerNorm(h))))`, then the block's own residual and LayerNorm.
    """

    adapter_layer_names = ("bottleneck_down", "bottleneck_up")
    other_param_names = ("bottleneck_size", "bottleneck_act", "bottleneck_dropout", "bottleneck_use_layer_norm")

    def __init__(self, base_layer: nn.Module, adapter_name: str, config: BottleneckConfig, **kwargs: Any):
        super().__init__()
        self.base_layer = base_layer
        self.hidden_size = check_output_block(base_layer)
        self.bottleneck_down = nn.ModuleDict()
        self.bottleneck_up = nn.ModuleDict()
        self.bottleneck_dropout = nn.ModuleDict()
        self.bottleneck_size: dict[str, int] = {}
        self.bottleneck_act: dict[str, str] = {}
        self.bottleneck_use_layer_norm: dict[str, bool] = {}
        self._disable_adapters = False
        self.merged_adapters = []
        self._active_adapter = adapter_name
        self.update_layer(adapter_name, config)

    def update_layer(self, adapter_name: str, config: BottleneckConfig, **kwargs: Any) -> None:
        width = config.width_for(self.hidden_size)
        weight = self.base_layer.dense.weight
        factory = {"device": weight.device, "dtype": weight.dtype if weight.is_floating_point() else None}
        self.bottleneck_down[adapter_name] = nn.Linear(self.hidden_size, width, **factory)
        self.bottleneck_up[adapter_name] = nn.Linear(width, self.hidden_size, **factory)
        self.bottleneck_dropout[adapter_name] = (
            nn.Dropout(config.adapter_dropout) if config.adapter_dropout > 0 else nn.Identity()
        )
        self.bottleneck_size[adapter_name] = width
        self.bottleneck_act[adapter_name] = config.non_linearity
        self.bottleneck_use_layer_norm[adapter_name] = config.use_layer_norm
        if weight.device.type != "meta":
            self.reset_bottleneck_parameters(adapter_name, config.init_weights)
        self.set_adapter(self.active_adapters, inference_mode=config.inference_mode)

    @torch.no_grad()
    def reset_bottleneck_parameters(self, adapter_name: str, init_weights: bool = True) -> None:
        """Down: Kaiming-uniform (nn.Linear's default); up: zeros, so the adapter starts as the identity."""
        down, up = self.bottleneck_down[adapter_name], self.bottleneck_up[adapter_name]
        down.reset_parameters()
        nn.init.zeros_(down.bias)
        if init_weights:
            nn.init.zeros_(up.weight)
            nn.init.zeros_(up.bias)
        else:
            nn.init.normal_(up.weight, std=0.02)
            nn.init.normal_(up.bias, std=0.02)

    def merge(self, safe_merge: bool = False, adapter_names: Optional[list[str]] = None) -> None:
        raise NotImplementedError(MERGE_ERROR)

    def unmerge(self) -> None:
        if self.merged:  # unreachable: nothing can be merged
            raise NotImplementedError(MERGE_ERROR)
        warnings.warn("Bottleneck adapters are never merged; nothing to unmerge.")

    def forward(self, hidden_states: torch.Tensor, input_tensor: torch.Tensor, *args: Any, **kwargs: Any):
        base = self.base_layer
        if self.disable_adapters or not any(a in self.bottleneck_down for a in self.active_adapters):
            return base(hidden_states, input_tensor, *args, **kwargs)
        h = base.dropout(base.dense(hidden_states))
        for name in self.active_adapters:
            if name not in self.bottleneck_down:
                continue
            down = self.bottleneck_down[name]
            z = base.LayerNorm(h) if self.bottleneck_use_layer_norm[name] else h
            z = ACT2FN[self.bottleneck_act[name]](down(self._cast_input_dtype(z, down.weight.dtype)))
            z = self.bottleneck_up[name](self.bottleneck_dropout[name](z))
            h = h + z.to(h.dtype)
        return base.LayerNorm(h + input_tensor)

    def __repr__(self) -> str:
        return "bottleneck." + super().__repr__()
