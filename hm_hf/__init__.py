"""hm_hf: hateful-meme detection with Hugging Face datasets, transformers, peft and accelerate.

Importing hm_hf registers its model classes with the transformers Auto classes and its bottleneck
adapter with peft, so `AutoModelForSequenceClassification.from_pretrained(folder)` and
`PeftModel.from_pretrained(...)` work on what hm_hf saved.

>>> import hm_hf
>>> splits = hm_hf.load_hmd("path/to/hateful_memes")  # doctest: +SKIP
"""

__version__ = "0.1.0"

from hm_hf.models.auto import register_auto_classes as _register_auto_classes

_register_auto_classes()

import hm_hf.peft  # noqa: E402,F401  (registers PeftType.BOTTLENECK with peft)
from hm_hf.data.collator import MemeCollator  # noqa: E402
from hm_hf.data.hateful_memes import HatefulMemes  # noqa: E402
from hm_hf.data.loading import load_hmd, load_mmhs  # noqa: E402
from hm_hf.data.mmhs150k import MMHS150K  # noqa: E402
from hm_hf.peft import BottleneckConfig, build_peft_config, describe_trainable  # noqa: E402

__all__ = [
    "BottleneckConfig",
    "HatefulMemes",
    "MMHS150K",
    "MemeCollator",
    "build_peft_config",
    "describe_trainable",
    "load_hmd",
    "load_mmhs",
]
