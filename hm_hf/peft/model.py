"""`BottleneckModel`: the `BaseTuner` that injects [`BottleneckLayer`]s (peft tuner layout)."""

from __future__ import annotations

from typing import Optional

from peft.config import PeftConfig
from peft.tuners.tuners_utils import BaseTuner
from torch import nn

from .config import BottleneckConfig
from .defaults import BOTTLENECK_TARGET_MODULES
from .layer import MERGE_ERROR, BottleneckLayer, check_output_block


class BottleneckModel(BaseTuner):
    """Adds bottleneck adapters (PE paper) to the transformer output blocks of a model.

    Created by `peft.get_peft_model(model, BottleneckConfig(...))` once `hm_hf.peft` is imported. Base
    weights are frozen; adapters and `modules_to_save` train. The adapters are non-linear, so
    `merge_and_unload()` raises; `unload()` returns the base model.

    Example:

    ```python
    >>> import hm_hf.peft  # registers the method with peft
    >>> from peft import get_peft_model
    >>> peft_model = get_peft_model(model, hm_hf.peft.BottleneckConfig(modules_to_save=["classifier"]))
    >>> peft_model.print_trainable_parameters()
    ```
    """

    prefix: str = "bottleneck_"
    tuner_layer_cls = BottleneckLayer
    target_module_mapping = BOTTLENECK_TARGET_MODULES

    def _create_and_replace(
        self,
        peft_config: PeftConfig,
        adapter_name: str,
        target: nn.Module,
        target_name: str,
        parent: nn.Module,
        current_key: str,
        parameter_name: Optional[str] = None,
    ) -> None:
        if isinstance(target, BottleneckLayer):
            target.update_layer(adapter_name, peft_config)
            return
        check_output_block(target, current_key)
        new_module = BottleneckLayer(target, adapter_name, peft_config)
        if adapter_name not in self.active_adapters:
            new_module.requires_grad_(False)
        self._replace_module(parent, target_name, new_module, target)

    def _prepare_adapter_config(self, peft_config: BottleneckConfig, model_config: dict) -> BottleneckConfig:
        if peft_config.target_modules is None:
            model_type = model_config.get("model_type")
            peft_config.target_modules = self.target_module_mapping.get(
                model_type, self.target_module_mapping["default"]
            )
        return peft_config

    def _check_merge_allowed(self):
        raise NotImplementedError(MERGE_ERROR)

    def _replace_module(self, parent: nn.Module, child_name: str, new_module: nn.Module, child: nn.Module) -> None:
        """Swaps modules in place. peft's version assumes Linear-like blocks (copies `.weight`); output blocks,
        and heads kept in `modules_to_save`, are arbitrary modules, so only the adapters are moved here."""
        setattr(parent, child_name, new_module)
        if isinstance(new_module, BottleneckLayer):
            weight = new_module.base_layer.dense.weight
            if weight.device.type != "meta":
                for name in new_module.adapter_layer_names:
                    getattr(new_module, name).to(weight.device)
