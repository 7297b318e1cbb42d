"""hm_hf: hateful-meme detection with Hugging Face datasets, transformers, peft and accelerate.

Importing hm_hf registers its model classes with the transformers Auto classes and its bottleneck
adapter with peft, so `AutoModelForSequenceClassification.from_pretrained(folder)` and
`PeftModel.from_pretrained(...)` work on what hm_hf saved.
"""

__version__ = "0.1.0"
