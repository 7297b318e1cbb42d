"""`BottleneckConfig`: the PE paper's bottleneck adapter as a PEFT config (peft tuner layout)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Union

from peft.config import PeftConfig

from .enum_patch import ensure_peft_type


@dataclass
class BottleneckConfig(PeftConfig):
    """Configuration of [`BottleneckModel`]: bottleneck adapters inside transformer output blocks.

    Each targeted block must compute `LayerNorm(dropout(dense(h)) + input_tensor)` (transformers'
    `BertOutput` layout: attributes `dense`, `dropout`, `LayerNorm`). The adapter turns it into
    `h = dropout(dense(x)); h = h + up(act(down(LayerNorm(h)))); out = LayerNorm(h + input)`, reusing the
    block's own frozen LayerNorm, as in "Parameter-Efficient Fine Tuning for Multimodal Hate Speech Detection
    in Memes" (bottleneck = hidden / 10: 768 -> 76, 1024 -> 102).

    Example:

    ```python
    >>> from peft import get_peft_model
    >>> from hm_hf.peft import BottleneckConfig
    >>> config = BottleneckConfig(target_modules=r".*\\.layer\\.\\d+\\.output", modules_to_save=["classifier"])
    >>> peft_model = get_peft_model(model, config)  # model: any hm_hf / transformers BERT-style model
    ```
    """

    bottleneck_size: Optional[int] = field(
        default=None,
        metadata={"help": "Width of the bottleneck. When None it is int(hidden_size / reduction_factor)."},
    )
    reduction_factor: float = field(
        default=10.0,
        metadata={"help": "hidden_size / bottleneck width when bottleneck_size is None (10 in the PE paper)."},
    )
    non_linearity: str = field(
        default="relu",
        metadata={"help": "Activation between the down and up projections, any key of transformers' ACT2FN."},
    )
    adapter_dropout: float = field(
        default=0.0, metadata={"help": "Dropout on the bottleneck activations (0 in the PE paper)."}
    )
    use_layer_norm: bool = field(
        default=True,
        metadata={
            "help": "Normalise the adapter input with the block's own (frozen) LayerNorm before the down "
            "projection, as the PE paper does. False feeds the adapter the raw dense+dropout output."
        },
    )
    init_weights: bool = field(
        default=True,
        metadata={
            "help": "True: up projection zero-initialised, so the adapted model starts equal to the base model. "
            "False: small random up projection (for tests that need the adapter to change the output)."
        },
    )
    target_modules: Optional[Union[list[str], str]] = field(
        default=None,
        metadata={
            "help": "Output blocks to adapt: module names (suffix match) or one regex (full match). When None, "
            "hm_hf's default for the model type is used (every layer's feed-forward `output` block)."
        },
    )
    exclude_modules: Optional[Union[list[str], str]] = field(
        default=None, metadata={"help": "Module names or a regex of modules never to adapt."}
    )
    modules_to_save: Optional[list[str]] = field(
        default=None,
        metadata={
            "help": "Modules besides the adapters to train and save, e.g. ['classifier'] for the new "
            "classification head."
        },
    )

    def __post_init__(self):
        super().__post_init__()
        self.peft_type = ensure_peft_type()
        if self.bottleneck_size is not None and self.bottleneck_size < 1:
            raise ValueError(f"BottleneckConfig: bottleneck_size must be >= 1, got {self.bottleneck_size}.")
        if self.reduction_factor <= 0:
            raise ValueError(f"BottleneckConfig: reduction_factor must be > 0, got {self.reduction_factor}.")
        if isinstance(self.target_modules, list):
            self.target_modules = set(self.target_modules)
        if isinstance(self.exclude_modules, list):
            self.exclude_modules = set(self.exclude_modules)

    def width_for(self, hidden_size: int) -> int:
        """The bottleneck width for a block of `hidden_size` (768 -> 76, 1024 -> 102 at factor 10)."""
        if self.bottleneck_size is not None:
            return self.bottleneck_size
        return max(1, int(hidden_size / self.reduction_factor))
