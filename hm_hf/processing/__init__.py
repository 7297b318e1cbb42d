"""The processor of an hm_hf model (`MemeProcessor`): what turns a meme into the model's inputs, saved with it.

Shared by training (which builds it and uses it as the Trainer's collator) and inference (which loads it);
`legacy` reads the settings file of older model folders.
"""

from hm_hf.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "processor": [
        "DEFAULT_DETECTOR", "INPUT_KINDS", "PROCESSOR_CONFIG_NAME", "MemeProcessor", "detector_for_features",
        "model_inputs",
    ],
})
