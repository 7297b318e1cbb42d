"""A tiny CLIP pre-trained the way CLIP was, on synthetic image / caption pairs: the stand-in for a web-pretrained
CLIP (OpenAI's ViT-L/14) that frozen-CLIP recipes need and that cannot be downloaded here.

A *random* tiny CLIP (`hm_hf.models.clip.make_tiny_clip`) gives uninformative frozen vectors, so a frozen-CLIP
method such as RGCL could only be shown by training the encoders too. Here the tiny CLIP is first trained with
CLIP's own contrastive loss (``CLIPModel(..., return_loss=True)``) on freshly drawn synthetic pictures, each
captioned by its regions and one keyword ("friends with a red square and a grey box and a black triangle").
The keyword's kind is drawn as a sign (a black triangle or an orange cross, `KEYWORD_SIGNS`) that memes never
show, and it is independent of the object's kind: the pictures teach CLIP the objects' names and the keywords'
two kinds as separate concepts, as the web teaches CLIP words and things, and never the memes' label (the XOR
of the two kinds), nor any pairing of keyword and object. No meme image, label or split is used; the memes'
captions only join the tokenizer's corpus, so that their words are whole tokens.

Example:
    >>> path = pretrain_tiny_clip("data/tiny_clip_pretrained", meme_texts)  # doctest: +SKIP
    >>> zero_shot_accuracy(path)  # doctest: +SKIP
    {'objects': 1.0, 'keyword_signs': 1.0}
"""

from __future__ import annotations

import json
import logging
import random
import shutil
from pathlib import Path
from typing import Iterable

from hm_hf.synthetic.data import SyntheticMeme, _caption, _draw, _vocabulary
from hm_hf.synthetic.world import KEYWORDS, REGION_KINDS, keyword_texts

__all__ = ["KEYWORD_SIGNS", "PRETRAINING_FILE", "describe", "pretrain_tiny_clip", "synthetic_pairs",
           "zero_shot_accuracy"]

logger = logging.getLogger(__name__)

PRETRAINING_FILE = "synthetic_pretraining.json"  # written beside the weights: how they were trained
IMAGE_SIZE = (320, 240)  # as the synthetic memes are drawn


#: what stands for each kind of keyword in the pre-training pictures (memes never show it)
KEYWORD_SIGNS = ("black triangle", "orange cross")


def _draw_sign(image, kind: int, rng: random.Random) -> None:
    """The keyword kind's sign (`KEYWORD_SIGNS`), a third of the picture's short side, somewhere below the caption."""
    from PIL import ImageDraw

    width, height = image.size
    side = min(width, height) // 3
    x, y = rng.randint(0, width - side - 1), rng.randint(height // 5, height - side - 1)
    draw = ImageDraw.Draw(image)
    if kind == 0:
        draw.polygon([(x, y + side), (x + side // 2, y), (x + side, y + side)], fill=(0, 0, 0))
    else:
        draw.line([(x, y), (x + side, y + side)], fill=(250, 140, 0), width=side // 4)
        draw.line([(x + side, y), (x, y + side)], fill=(250, 140, 0), width=side // 4)


def describe(meme: SyntheticMeme, keyword_kind: int, rng: random.Random) -> str:
    """A pre-training picture's caption: a keyword of `keyword_kind`, then its regions (its sign among them)."""
    names = [REGION_KINDS[box[4]].name for box in meme.boxes] + [KEYWORD_SIGNS[keyword_kind]]
    rng.shuffle(names)
    return f"{rng.choice(KEYWORDS[keyword_kind])} with a " + " and a ".join(names)


def synthetic_pairs(n: int, seed: int = 0):
    """n (image, caption) pairs: new synthetic pictures (a meme's object, distractors and caption, plus a keyword
    kind's sign; object kind and keyword kind independent, each combination equally often) and their
    `describe` captions."""
    rng = random.Random(seed)
    vocab = _vocabulary(random.Random(seed + 1))
    images, captions = [], []
    for i in range(n):
        image_kind, keyword_kind = i % 2, (i // 2) % 2
        meme = SyntheticMeme(i, _caption(rng, vocab, rng.randrange(2)), image_kind=image_kind, text_kind=0)
        image = _draw(meme, rng, IMAGE_SIZE)
        _draw_sign(image, keyword_kind, rng)
        images.append(image)
        captions.append(describe(meme, keyword_kind, rng))
    return images, captions


def pretrain_tiny_clip(folder, texts: Iterable[str] = (), *, num_pairs: int = 3000, epochs: int = 30,
                       batch_size: int = 128, learning_rate: float = 1e-3, seed: int = 0,
                       progress: bool = True, **tiny_clip_sizes) -> str:
    """Write a tiny CLIP pre-trained on `num_pairs` synthetic pairs to `folder` (once: an existing checkpoint is
    kept); return its path. `texts` (the memes' captions) join the pre-training captions in training the
    tokenizer's merges, so the memes' words are whole tokens. The folder appears atomically, with
    ``synthetic_pretraining.json`` saying how it was made. CPU: about 40 s for the defaults."""
    import torch
    from tqdm.auto import tqdm
    from transformers import CLIPModel, CLIPProcessor

    from hm_hf.models.clip.tiny_clip import checkpoint_staging, is_clip_checkpoint, make_tiny_clip

    folder = Path(folder)
    if is_clip_checkpoint(folder):
        return str(folder)
    if num_pairs < 2 or epochs < 1:
        raise ValueError(f"pre-training needs at least 2 pairs and 1 epoch, got {num_pairs} pairs, {epochs} epochs")
    images, captions = synthetic_pairs(num_pairs, seed)
    with checkpoint_staging(folder) as staging:
        initial = make_tiny_clip(staging / "random", [*texts, *keyword_texts(), *captions], seed=seed,
                                 **tiny_clip_sizes)
        model, processor = CLIPModel.from_pretrained(initial), CLIPProcessor.from_pretrained(initial)
        shutil.rmtree(initial)
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
        model.save_pretrained(staging)
        processor.save_pretrained(staging)
        (staging / PRETRAINING_FILE).write_text(json.dumps({
            "what": "tiny CLIP pre-trained with the CLIP loss on synthetic image / caption pairs "
                    "(hm_hf.synthetic.clip_pretraining); synthetic, not a real CLIP",
            "num_pairs": num_pairs, "epochs": epochs, "batch_size": batch_size, "learning_rate": learning_rate,
            "seed": seed, "clip_loss_per_epoch": losses}, indent=1) + "\n")
    return str(folder)


def zero_shot_accuracy(path, num_images: int = 200, seed: int = 1234) -> dict[str, float]:
    """How well a CLIP checkpoint names, zero-shot, the two concepts of the synthetic world: ``objects``, the share
    of new meme pictures whose object kind is the nearer of the prompts "red square" / "blue disc";
    ``keyword_signs``, the share of pictures of a lone sign whose keyword kind is the nearer of the two kinds'
    mean keyword vectors. ~0.5 for a random CLIP, near 1 once pre-trained."""
    import torch
    from PIL import Image
    from transformers import CLIPModel, CLIPProcessor

    model, processor = CLIPModel.from_pretrained(path).eval(), CLIPProcessor.from_pretrained(path)
    rng = random.Random(seed)
    vocab = _vocabulary(random.Random(seed + 1))
    kinds = torch.arange(num_images) % 2
    memes = [_draw(SyntheticMeme(i, _caption(rng, vocab, 0), image_kind=int(kinds[i]), text_kind=0), rng, IMAGE_SIZE)
             for i in range(num_images)]
    signs = []
    for i in range(num_images):
        sign = Image.new("RGB", IMAGE_SIZE, tuple(rng.randint(200, 255) for _ in range(3)))
        _draw_sign(sign, int(kinds[i]), rng)
        signs.append(sign)

    def normalized(vectors):
        return torch.nn.functional.normalize(vectors, dim=-1)

    def texts(batch):
        tokens = processor.tokenizer(batch, padding=True, return_tensors="pt")
        return normalized(model.get_text_features(**tokens).pooler_output)

    def accuracy(images, prototypes):
        vectors = normalized(model.get_image_features(**processor(images=images, return_tensors="pt")).pooler_output)
        return float(((vectors @ prototypes.T).argmax(-1) == kinds).float().mean())

    with torch.no_grad():
        objects = texts([REGION_KINDS[0].name, REGION_KINDS[1].name])
        keywords = torch.stack([normalized(texts(list(group)).mean(0)) for group in KEYWORDS])
        return {"objects": accuracy(memes, objects), "keyword_signs": accuracy(signs, keywords)}
