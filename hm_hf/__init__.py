"""hm_hf: hateful-meme detection with Hugging Face datasets, transformers, peft and accelerate.

Importing hm_hf is cheap: its names are imported on first use (`hm_hf.lazy`), and its model classes are
registered with the transformers Auto classes, and its bottleneck adapter with peft, as soon as those are
imported (`hm_hf.registration`), so `AutoModelForSequenceClassification.from_pretrained(folder)` and
`PeftModel.from_pretrained(...)` work on what hm_hf saved.

>>> import hm_hf
>>> splits = hm_hf.load_hmd("path/to/hateful_memes")  # doctest: +SKIP
"""

__version__ = "0.1.0"

from hm_hf import registration as _registration
from hm_hf.lazy import lazy_exports

_registration.install()

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "data.collator": ["MemeCollator"],
    "data.hateful_memes": ["HatefulMemes"],
    "data.loading": ["load_hmd", "load_mmhs"],
    "data.mmhs150k": ["MMHS150K"],
    "peft": ["BottleneckConfig", "build_peft_config", "describe_trainable"],
})
