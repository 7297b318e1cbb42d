"""A tiny random CLIP checkpoint (model + CLIP tokenizer + CLIP image processor) written locally, no Hub.

The tiny synthetic recipe and the tests need "a CLIP checkpoint" without network access. `make_tiny_clip`
writes one in the exact layout of a Hub CLIP repo (``config.json``, ``model.safetensors``, ``tokenizer.json``,
``processor_config.json``), so everything downstream (``CLIPModel.from_pretrained``, ``AutoTokenizer``,
``AutoImageProcessor``, ``AutoProcessor``) is exercised as with ``openai/clip-vit-large-patch14``.

The tokenizer is a real ``CLIPTokenizer`` (CLIP's normaliser, pre-tokeniser and byte-level BPE with
``</w>`` word ends) whose merges are trained on the given texts (the training captions), so frequent words
are single tokens. The weights are random: a frozen tiny CLIP gives random features; train its encoders
(``freeze_clip: false``) or LoRA-adapt them for the model to learn.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

__all__ = ["checkpoint_staging", "is_clip_checkpoint", "make_tiny_clip", "train_clip_tokenizer"]

# CLIP's pre-tokenisation pattern (as in transformers' CLIPTokenizer).
_CLIP_PATTERN = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def train_clip_tokenizer(texts: Iterable[str], vocab_size: int = 1000):
    """A ``CLIPTokenizer`` whose byte-level BPE merges are learnt from `texts` (any string still tokenises)."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import CLIPTokenizer

    bpe = Tokenizer(models.BPE(end_of_word_suffix="</w>", continuing_subword_prefix="", unk_token=EOS))
    bpe.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    bpe.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(_CLIP_PATTERN), behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False),
    ])
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    texts = [t for t in texts if t]
    # The trainer numbers each word-end symbol ("e</w>") as it meets it in a hash map's order, and breaks ties
    # between equally frequent merges by those numbers, so the same texts gave other merges in each process
    # (huggingface/tokenizers#1794). Numbered beforehand, in sorted order, the merges are reproducible.
    word_ends = sorted({word[-1] + "</w>" for text in texts
                        for word, _ in bpe.pre_tokenizer.pre_tokenize_str(bpe.normalizer.normalize_str(text))})
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=1, special_tokens=[BOS, EOS, *word_ends],
                                  initial_alphabet=alphabet, end_of_word_suffix="</w>", show_progress=False)
    bpe.train_from_iterator(texts, trainer)
    model = json.loads(bpe.to_str())["model"]
    vocab, merges = dict(model["vocab"]), [tuple(m) for m in model["merges"]]
    for char in sorted(alphabet):  # every byte also as a word end, as CLIP's vocabulary has
        vocab.setdefault(char + "</w>", len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=merges, bos_token=BOS, eos_token=EOS, pad_token=EOS, unk_token=EOS)


def make_tiny_clip(
    folder,
    texts: Iterable[str] | None = None,
    *,
    hidden_size: int = 32,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 4,
    intermediate_size: int = 64,
    projection_dim: int = 16,
    image_size: int = 32,
    patch_size: int = 8,
    max_text_length: int = 77,
    vocab_size: int = 1000,
    seed: int = 0,
) -> str:
    """Write a tiny random CLIP checkpoint to `folder` (once: an existing one is left as it is); return its path.

    `texts` trains the tokenizer's merges (default: the synthetic data's keywords). Images are resized to
    ``image_size`` x ``image_size`` without a centre crop (a crop could cut off the synthetic objects).
    The folder appears atomically (written beside it, then renamed), so concurrent runs cannot see half of it.

    Example:
        >>> from transformers import CLIPModel, CLIPProcessor
        >>> path = make_tiny_clip(tmp_path / "tiny_clip", ["a red square", "a blue disc"])  # doctest: +SKIP
        >>> CLIPModel.from_pretrained(path), CLIPProcessor.from_pretrained(path)  # doctest: +SKIP
    """
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    folder = Path(folder)
    if is_clip_checkpoint(folder):
        return str(folder)
    if texts is None:
        from hm_hf.synthetic.world import keyword_texts

        texts = keyword_texts()
    tokenizer = train_clip_tokenizer(texts, vocab_size=vocab_size)
    layer = dict(hidden_size=hidden_size, num_hidden_layers=num_hidden_layers, num_attention_heads=num_attention_heads,
                 intermediate_size=intermediate_size)
    config = CLIPConfig(
        text_config=dict(layer, vocab_size=len(tokenizer), max_position_embeddings=max_text_length,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id),
        vision_config=dict(layer, image_size=image_size, patch_size=patch_size),
        projection_dim=projection_dim,
    )
    torch.manual_seed(seed)
    model = CLIPModel(config)
    image_processor = CLIPImageProcessor(size={"height": image_size, "width": image_size}, do_center_crop=False)
    processor = CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)
    tokenizer.model_max_length = max_text_length
    with checkpoint_staging(folder) as staging:
        model.save_pretrained(staging)
        processor.save_pretrained(staging)
    return str(folder)


def is_clip_checkpoint(folder) -> bool:
    """A finished CLIP checkpoint folder: the model's config and the processor's settings are both there."""
    folder = Path(folder)
    return (folder / "config.json").is_file() and (folder / "processor_config.json").is_file()


@contextmanager
def checkpoint_staging(folder) -> Iterator[Path]:
    """Yield an empty folder beside `folder` to write a checkpoint into; when the block succeeds it becomes
    `folder` in one rename, so no reader sees half of it (a finished copy another process renamed there first is
    kept), and the staging folder never stays behind."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        yield staging
        try:
            os.replace(staging, folder)
        except OSError:
            if not is_clip_checkpoint(folder):  # not someone else's finished copy: a real failure
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
