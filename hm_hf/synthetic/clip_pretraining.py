"""A tiny CLIP pre-trained the way CLIP was, on synthetic image / caption pairs: the stand-in for a web-pretrained
CLIP (OpenAI's ViT-L/14) that frozen-CLIP recipes need and that cannot be downloaded here.

A *random* tiny CLIP (`hm_hf.models.clip.make_tiny_clip`) gives uninformative frozen vectors (cross-entropy on
them reaches ~0.6 dev AUROC on the synthetic memes), so a frozen-CLIP method such as RGCL could only be shown
by training the encoders too. Here the tiny CLIP is first trained with CLIP's own contrastive loss
(``CLIPModel(..., return_loss=True)``) on freshly drawn synthetic images, each captioned by its regions and a
keyword of its object's kind ("friends with a red square and a grey box"), as web captions pair a concept's
words with pictures of it. Its frozen image and text vectors then share the world's two concepts, and the
meme labels (the XOR of the two kinds) are never seen: no meme, split or label of a data set is used.

Example:
    >>> path = pretrain_tiny_clip("data/tiny_clip_pretrained", meme_texts)  # doctest: +SKIP
    >>> zero_shot_accuracy(path)  # doctest: +SKIP
    0.99
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Iterable

from hm_hf.synthetic.data import SyntheticMeme, _caption, _draw, _vocabulary
from hm_hf.synthetic.world import KEYWORDS, REGION_KINDS, keyword_texts

__all__ = ["PRETRAINING_FILE", "describe", "pretrain_tiny_clip", "synthetic_pairs", "zero_shot_accuracy"]

logger = logging.getLogger(__name__)

PRETRAINING_FILE = "synthetic_pretraining.json"  # written beside the weights: how they were trained
IMAGE_SIZE = (320, 240)  # as the synthetic memes are drawn


def describe(meme: SyntheticMeme, rng: random.Random) -> str:
    """A drawn meme's caption for pre-training: a keyword of its object's kind and its regions, shuffled."""
    names = [REGION_KINDS[box[4]].name for box in meme.boxes]
    rng.shuffle(names)
    return f"{rng.choice(KEYWORDS[meme.image_kind])} with a " + " and a ".join(names)


def synthetic_pairs(n: int, seed: int = 0):
    """n (image, caption) pairs: new synthetic images (each object kind equally often, a meme caption drawn on
    them as on every synthetic meme) and their `describe` captions."""
    rng = random.Random(seed)
    vocab = _vocabulary(random.Random(seed + 1))
    images, captions = [], []
    for i in range(n):
        meme = SyntheticMeme(i, _caption(rng, vocab, rng.randrange(2)), image_kind=i % 2, text_kind=0)
        images.append(_draw(meme, rng, IMAGE_SIZE))
        captions.append(describe(meme, rng))
    return images, captions


def pretrain_tiny_clip(folder, texts: Iterable[str] = (), *, num_pairs: int = 3000, epochs: int = 30,
                       batch_size: int = 128, learning_rate: float = 1e-3, seed: int = 0,
                       progress: bool = True, **tiny_clip_sizes) -> str:
    """Write a tiny CLIP pre-trained on `num_pairs` synthetic pairs to `folder` (once: an existing checkpoint is
    kept); return its path. `texts` (the memes' captions) join the pre-training captions in training the
    tokenizer's merges, so the memes' words are whole tokens. The folder appears atomically, with
    ``synthetic_pretraining.json`` saying how it was made. CPU: about a minute for the defaults."""
    import torch
    from tqdm.auto import tqdm
    from transformers import CLIPModel, CLIPProcessor

    from hm_hf.models.clip import make_tiny_clip

    folder = Path(folder)
    if (folder / "config.json").is_file() and (folder / "processor_config.json").is_file():
        return str(folder)
    if num_pairs < 2 or epochs < 1:
        raise ValueError(f"pre-training needs at least 2 pairs and 1 epoch, got {num_pairs} pairs, {epochs} epochs")
    images, captions = synthetic_pairs(num_pairs, seed)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        make_tiny_clip(tmp / "random", [*texts, *keyword_texts(), *captions], seed=seed, **tiny_clip_sizes)
        model = CLIPModel.from_pretrained(tmp / "random")
        processor = CLIPProcessor.from_pretrained(tmp / "random")
        pixels = processor(images=images, return_tensors="pt")["pixel_values"]
        tokens = processor.tokenizer(captions, padding=True, return_tensors="pt")
        optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.01)
        generator = torch.Generator().manual_seed(seed)
        model.train()
        losses = []
        for _ in tqdm(range(epochs), desc="pre-train tiny CLIP", unit="epoch", disable=not progress):
            total = 0.0
            for rows in torch.randperm(num_pairs, generator=generator).split(batch_size):
                loss = model(input_ids=tokens["input_ids"][rows], attention_mask=tokens["attention_mask"][rows],
                             pixel_values=pixels[rows], return_loss=True).loss
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += loss.item() * len(rows)
            losses.append(round(total / num_pairs, 4))
        logger.info("tiny CLIP pre-trained on %d synthetic pairs: CLIP loss %.3f -> %.3f", num_pairs, losses[0],
                    losses[-1])
        out = tmp / "pretrained"
        model.save_pretrained(out)
        processor.save_pretrained(out)
        (out / PRETRAINING_FILE).write_text(json.dumps({
            "what": "tiny CLIP pre-trained with the CLIP loss on synthetic image / caption pairs "
                    "(hm_hf.synthetic.clip_pretraining); synthetic, not a real CLIP",
            "num_pairs": num_pairs, "epochs": epochs, "batch_size": batch_size, "learning_rate": learning_rate,
            "seed": seed, "clip_loss_per_epoch": losses}, indent=1) + "\n")
        os.replace(out, folder)
    except OSError:
        if not (folder / "config.json").is_file():  # not someone else's finished copy: a real failure
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return str(folder)


def zero_shot_accuracy(path, num_images: int = 200, seed: int = 1234) -> float:
    """The share of new synthetic images whose object kind a CLIP checkpoint names zero-shot (image vector
    nearest the mean text vector of the kind's keywords): ~0.5 for a random CLIP, near 1 once pre-trained."""
    import torch
    from transformers import CLIPModel, CLIPProcessor

    model, processor = CLIPModel.from_pretrained(path).eval(), CLIPProcessor.from_pretrained(path)
    images, _ = synthetic_pairs(num_images, seed)
    kinds = torch.arange(num_images) % 2
    with torch.no_grad():
        image_vectors = model.get_image_features(**processor(images=images, return_tensors="pt")).pooler_output
        prototypes = []
        for group in KEYWORDS:
            tokens = processor.tokenizer(list(group), padding=True, return_tensors="pt")
            text_vectors = model.get_text_features(**tokens).pooler_output
            prototypes.append(torch.nn.functional.normalize(text_vectors, dim=-1).mean(0))
    scores = torch.nn.functional.normalize(image_vectors, dim=-1) @ torch.stack(prototypes).T
    return float((scores.argmax(-1) == kinds).float().mean())
