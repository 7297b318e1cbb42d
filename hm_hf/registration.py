"""When hm_hf registers itself with transformers and peft: as soon as each of them is imported.

`import hm_hf` imports neither (it would cost ~1 GB and many seconds, see the README), yet
`AutoConfig.for_model("hm_visual_bert")`, `AutoModelForSequenceClassification.from_pretrained(folder)` and
`PeftModel.from_pretrained(model, folder)` with the bottleneck adapter must work after it. So `install()`
(run by ``hm_hf/__init__.py``) sets post-import hooks (`wrapt`, the library monitoring agents use for the
same job): when transformers' ``configuration_auto`` is imported, AutoConfig gets stand-ins for the hm_hf
configs (`hm_hf.models.auto` says how the rest follows), when ``processing_auto`` is, AutoProcessor gets
`MemeProcessor`, and when ``peft`` is imported, ``hm_hf.peft`` registers the bottleneck method. A module imported before hm_hf gets its hook at once.

A hook runs while its module's importer may still be half-way through its own import: the hooks import
nothing that could need that importer (the stand-ins are made without imports, ``hm_hf.processing`` imports
no transformers module, ``hm_hf.peft`` only peft, torch and ``transformers.activations``). A hook that fails warns instead of breaking the user's import.
"""

from __future__ import annotations

import importlib
import sys
import warnings

import wrapt

__all__ = ["install"]

_HOOKS = {
    "transformers.models.auto.configuration_auto": "hm_hf.models.auto:register_config_stand_ins",
    "transformers.models.auto.processing_auto": "hm_hf.models.auto:register_processor",
    "peft": "hm_hf.registration:register_peft",
}
_installed = False


def register_peft() -> None:
    """Import ``hm_hf.peft`` (which registers the bottleneck method); nothing to do when it is already
    imported or being imported (it is what imports peft, and registers when it is done)."""
    if "hm_hf.peft" not in sys.modules:
        importlib.import_module("hm_hf.peft")


def _call(hook: str) -> None:
    module_name, function = hook.split(":")
    try:
        getattr(importlib.import_module(module_name), function)()
    except Exception as err:  # noqa: BLE001 - the user's import must go on; say what will not work
        warnings.warn(f"hm_hf could not register itself ({hook}: {type(err).__name__}: {err}); hm_hf models or "
                      "the bottleneck adapter may not load through transformers' Auto classes or peft", stacklevel=2)


def install() -> None:
    """Set the hooks (idempotent)."""
    global _installed
    if _installed:
        return
    _installed = True
    for module, hook in _HOOKS.items():
        wrapt.register_post_import_hook(lambda _module, hook=hook: _call(hook), module)
