"""Packages whose names are imported on first use (PEP 562), as transformers' packages are.

`import hm_hf` (and `import hm_hf.models.visual_bert`) must not import torch, transformers' modeling code,
datasets or peft: a package lists where each of its names lives, and the module is imported when the name is
first read. Subpackages and submodules are reachable as attributes the same way (`hm_hf.models.clip`).

Example (a package's ``__init__.py``):

```python
from hm_hf.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "configuration_uniter": ["HmUniterConfig"],
    "modeling_uniter": ["HmUniterForHatefulMemes", "HmUniterModel"],
})
```
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from typing import Callable

__all__ = ["lazy_exports"]


def lazy_exports(package: str, exports: dict[str, list[str]]) -> tuple[Callable, Callable, list[str]]:
    """`(__getattr__, __dir__, __all__)` for `package`: each name in ``exports[submodule]`` is read from
    ``package.submodule`` when first used (then cached in the package); any other submodule is imported when
    read as an attribute."""
    where = {name: submodule for submodule, names in exports.items() for name in names}
    names = sorted(where)

    def __getattr__(name: str):
        module = sys.modules[package]
        if name in where:
            value = getattr(importlib.import_module(f"{package}.{where[name]}"), name)
        elif not name.startswith("_") and importlib.util.find_spec(f"{package}.{name}") is not None:
            value = importlib.import_module(f"{package}.{name}")
        else:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        setattr(module, name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(names))

    return __getattr__, __dir__, names
