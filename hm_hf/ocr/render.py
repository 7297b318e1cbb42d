"""Memes drawn the way real ones are, with their text known: the test and benchmark set of meme OCR.

Real memes (Hateful Memes' images, for one) carry their caption in one of two styles, and both are drawn
here:

- **captions over a photograph**: white (sometimes yellow) bold condensed capitals with a black outline,
  a top and often a bottom caption, wrapped over several lines, in an Impact-like typeface (Anton, the
  free Impact look-alike; Oswald Bold; DejaVu Sans Bold);
- **text cards**: dark sentence-case text on a plain or pastel background, alone or in a band above a
  photograph (the "tweet screenshot" layout).

The photographs are the sample pictures that ship inside scikit-learn and scikit-image (no download);
the fonts come from PyPI (`fontpkg-anton`, `fontpkg-oswald`, both OFL-1.1) and Debian (`fonts-dejavu-core`).
Whatever is missing is left out of the mix, and `MemeFontsUnavailableError` says what to install when
nothing is left.

The ground truth is lower case with single spaces, as Hateful Memes stores `text`.

Example:

```python
>>> from hm_hf.ocr.render import benchmark_memes
>>> memes = benchmark_memes(4, seed=0)  # doctest: +SKIP
>>> memes[0].text, memes[0].style, memes[0].image.size  # doctest: +SKIP
('nobody: absolutely nobody: my cat at 5 in the morning', 'caption', (550, 720))
```
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from hm_hf.ocr.text import normalise_text

__all__ = ["CAPTIONS", "RenderedMeme", "MemeFontsUnavailableError", "meme_fonts", "photographs",
           "render_caption_meme", "render_text_card", "benchmark_memes"]

# Harmless meme-style captions (top, bottom); bottom may be empty. Words a real caption has: contractions,
# numbers, names, punctuation, a few long words.
CAPTIONS: tuple[tuple[str, str], ...] = (
    ("when you finally fix the bug", "and there's a new one"),
    ("me at 3 am", "thinking about that thing i said in 2012"),
    ("nobody:", "absolutely nobody: my cat at 5 in the morning"),
    ("they said it couldn't be done", "so i did it twice"),
    ("look! it says it right here!", ""),
    ("i don't always test my code", "but when i do i do it in production"),
    ("one does not simply", "walk into the kitchen without eating something"),
    ("my plans for the weekend", "sleep, eat, repeat"),
    ("when the wifi goes down", "and you have to talk to your family"),
    ("how it started", "how it's going"),
    ("keep calm and", "drink more coffee"),
    ("monday morning be like", ""),
    ("that moment when you realize", "it's only tuesday"),
    ("when someone says pineapple", "doesn't belong on pizza"),
    ("i came here to have a good time", "and honestly i'm feeling so attacked right now"),
    ("when the teacher says", "this will be on the test"),
    ("expectation vs reality", ""),
    ("the face you make when", "the printer actually works on the first try"),
    ("ten minutes of rain", "and the whole city forgets how to drive"),
    ("when mom finds the secret stash", "of cookies behind the cereal"),
    ("this is fine", "everything is totally fine"),
    ("trust me i'm an engineer", ""),
    ("when you open the fridge", "for the 7th time hoping new food appeared"),
    ("grandma learned how to use emojis", "and now every message has 40 of them"),
    ("if you can read this", "you are too close"),
    ("the baby father", "came to the party with a cake"),
    ("when the group project is due tomorrow", "and nobody has started"),
    ("remember when we were young", "and summer lasted forever"),
    ("brace yourselves", "the holidays are coming"),
    ("not sure if tired", "or just bored"),
    ("please tell me more", "about your diet"),
    ("the only thing better than pizza", "is more pizza"),
    ("when you step on a lego", "at midnight in the dark"),
    ("i have 99 problems", "and sleep is all of them"),
    ("dogs when you come home", "after five minutes"),
    ("running late again", "but at least i brought snacks"),
    ("you had one job", ""),
    ("when your favorite song comes on", "in the grocery store"),
    ("its their character not their color", "that matters"),
    ("don't be afraid to love again", "everyone is not like your ex"),
    ("when you see your neighbor", "watering the lawn in the rain"),
    ("my face when", "the delivery arrives two days early"),
    ("winter is coming", "and i still have no jacket"),
    ("every family has that one uncle", "who tells the same story every year"),
    ("when the weather app says sunny", "but it's been raining all day"),
    ("some people just want to watch", "the world learn to cook"),
    ("me trying to eat healthy", "the pizza in the freezer"),
    ("first day at the gym", "last day at the gym"),
    ("when the meeting could have been", "an email"),
    ("what if i told you", "you can read this without your glasses"),
)

# Text cards are sentence case and longer, as tweet-style memes are.
CARD_TEXTS: tuple[str, ...] = (
    "When you try to explain the plot of a movie you watched last night and forget every name.",
    "Normal people: go to sleep. Me: think about every embarrassing thing I did since 2009.",
    "My neighbor just asked if I wanted to join his book club. I haven't finished a book in 4 years.",
    "Nobody warned me that being an adult is mostly deciding what to cook for dinner every day.",
    "The best part of waking up is going back to sleep for ten more minutes.",
    "I told my dog a joke and he didn't laugh. Tough crowd.",
    "Look at this garden my grandfather planted 30 years ago. Still growing strong!",
    "Saturday plans: coffee, a long walk, and absolutely no emails.",
    "If my life had a soundtrack it would be the microwave beeping at midnight.",
    "Just found out my cat has more followers than me. Honestly deserved.",
    "When you finally understand the math homework five minutes after the exam ends.",
    "Me explaining to my mom why I need another plant for the living room.",
    "The weather forecast said light rain. The weather had other ideas.",
    "Taking a photo of my breakfast before eating it, as one does.",
    "My alarm clock and I are no longer on speaking terms.",
    "Today I learned that octopuses have three hearts. Now you know too.",
)

ANTON = ("fontpkg_anton", "Anton-Regular.ttf")
OSWALD = ("fontpkg_oswald", "Oswald[wght].ttf")
DEJAVU_DIR = Path("/usr/share/fonts/truetype/dejavu")  # Debian's fonts-dejavu-core


class MemeFontsUnavailableError(RuntimeError):
    """None of the fonts the memes are drawn with is installed."""


@dataclass
class RenderedMeme:
    """One drawn meme and the text written on it."""

    image: Image.Image
    text: str  # lower case, single spaces: the form Hateful Memes stores
    style: str  # "caption" (outlined capitals over a photograph) or "card" (dark text on a plain background)
    font: str


def _package_font(package: str, filename: str) -> Path | None:
    try:
        module = __import__(package)
    except ImportError:
        return None
    path = Path(module.__file__).parent / "files" / filename
    return path if path.is_file() else None


@functools.lru_cache(maxsize=1)
def meme_fonts() -> dict[str, dict[str, Path]]:
    """{"caption": {font name: path}, "card": {...}}: the installed fonts each style is drawn with."""
    caption: dict[str, Path] = {}
    card: dict[str, Path] = {}
    if path := _package_font(*ANTON):
        caption["Anton"] = path
    if path := _package_font(*OSWALD):
        caption["Oswald Bold"] = path
    if (DEJAVU_DIR / "DejaVuSans-Bold.ttf").is_file():
        caption["DejaVu Sans Bold"] = DEJAVU_DIR / "DejaVuSans-Bold.ttf"
        card["DejaVu Sans Bold"] = DEJAVU_DIR / "DejaVuSans-Bold.ttf"
    if (DEJAVU_DIR / "DejaVuSans.ttf").is_file():
        card["DejaVu Sans"] = DEJAVU_DIR / "DejaVuSans.ttf"
    if not caption or not card:
        raise MemeFontsUnavailableError(
            "the benchmark memes need their fonts: `pip install fontpkg-anton fontpkg-oswald` (in hm_hf's `test` "
            "extra) and `apt-get install fonts-dejavu-core`"
        )
    return {"caption": caption, "card": card}


def _font(name: str, path: Path, size: int) -> ImageFont.FreeTypeFont:
    font = ImageFont.truetype(str(path), size)
    if name == "Oswald Bold":  # a variable font: pick its bold instance
        font.set_variation_by_name("Bold")
    return font


@functools.lru_cache(maxsize=1)
def _photographs() -> tuple[np.ndarray, ...]:
    arrays = []
    from sklearn.datasets import load_sample_images

    arrays += list(load_sample_images().images)  # china.jpg, flower.jpg
    try:
        from skimage import data
    except ImportError:
        pass
    else:  # the colour photographs shipped inside scikit-image's wheel (camera is grey: made RGB below)
        for name in ("astronaut", "chelsea", "coffee", "rocket", "camera", "hubble_deep_field",
                     "grass", "brick", "retina"):
            arrays.append(getattr(data, name)())
    return tuple(arrays)


def photographs() -> list[Image.Image]:
    """The real photographs the caption memes are drawn over (2 from scikit-learn, 9 more with scikit-image)."""
    return [Image.fromarray(a).convert("RGB") for a in _photographs()]


def _wrap(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        candidate = f"{line} {word}".strip()
        if line and draw.textlength(candidate, font=font) > width:
            lines.append(line)
            candidate = word
        line = candidate
    return lines + [line] if line else lines


def _fit(draw, text: str, name: str, path: Path, size: int, width: int, max_lines: int):
    """The largest font size <= `size` at which `text` wraps into at most `max_lines` lines of `width`."""
    while True:
        font = _font(name, path, size)
        lines = _wrap(draw, text, font, width)
        if (len(lines) <= max_lines and all(draw.textlength(line, font=font) <= width for line in lines)) or size <= 12:
            return font, lines
        size = max(12, int(size * 0.9))


def _crop_to(photo: Image.Image, size: tuple[int, int], rng: random.Random) -> Image.Image:
    """A random crop of `photo` with the aspect of `size`, resized to it."""
    width, height = size
    scale = max(width / photo.width, height / photo.height) * rng.uniform(1.0, 1.4)
    photo = photo.resize((max(width, round(photo.width * scale)), max(height, round(photo.height * scale))),
                         Image.Resampling.BICUBIC)
    x, y = rng.randint(0, photo.width - width), rng.randint(0, photo.height - height)
    return photo.crop((x, y, x + width, y + height))


def render_caption_meme(photo: Image.Image, top: str, bottom: str = "", *, font: str = "Anton",
                        size: tuple[int, int] = (640, 480), fill=(255, 255, 255), font_scale: float = 0.11,
                        uppercase: bool = True, rng: random.Random | None = None) -> Image.Image:
    """Outlined captions over a photograph: `top` at the top, `bottom` at the bottom, each wrapped to at
    most 3 lines; `font_scale` is the cap size as a fraction of the image height before fitting."""
    rng = rng or random.Random(0)
    path = meme_fonts()["caption"][font]
    image = _crop_to(photo, size, rng)
    draw = ImageDraw.Draw(image)
    width, height = size
    margin = max(6, width // 40)
    for text, at_top in ((top, True), (bottom, False)):
        if not text:
            continue
        text = text.upper() if uppercase else text
        pt, lines = _fit(draw, text, font, path, max(14, int(height * font_scale)), width - 2 * margin, 3)
        stroke = max(2, pt.size // 14)
        ascent, descent = pt.getmetrics()
        line_height = ascent + descent
        y = margin if at_top else height - margin - line_height * len(lines)
        for line in lines:
            x = (width - draw.textlength(line, font=pt)) / 2
            draw.text((x, y), line, font=pt, fill=fill, stroke_width=stroke, stroke_fill=(0, 0, 0))
            y += line_height
    return image


def render_text_card(text: str, *, font: str = "DejaVu Sans", size: tuple[int, int] = (640, 480),
                     background=(255, 255, 255), fill=(20, 20, 20), photo: Image.Image | None = None,
                     font_scale: float = 0.07, rng: random.Random | None = None) -> Image.Image:
    """Dark text on a plain background, left-aligned, wrapped; with `photo`, the text sits in a band over
    the photograph's top (the tweet-screenshot layout)."""
    rng = rng or random.Random(0)
    path = meme_fonts()["card"][font]
    width, height = size
    image = Image.new("RGB", size, background)
    draw = ImageDraw.Draw(image)
    margin = max(10, width // 25)
    max_lines = 4 if photo is not None else 8
    pt, lines = _fit(draw, text, font, path, max(14, int(height * font_scale)), width - 2 * margin, max_lines)
    ascent, descent = pt.getmetrics()
    line_height = int((ascent + descent) * 1.15)
    block = line_height * len(lines)
    if photo is not None:
        band = block + 2 * margin
        image.paste(_crop_to(photo, (width, max(1, height - band)), rng), (0, band))
        y = margin
    else:
        y = max(margin, (height - block) // 2)
    for line in lines:
        draw.text((margin, y), line, font=pt, fill=fill)
        y += line_height
    return image


SIZES = ((640, 480), (500, 500), (800, 600), (550, 720), (960, 540), (400, 300))
CAPTION_FILLS = ((255, 255, 255),) * 4 + ((255, 230, 40),)  # mostly white, sometimes yellow
CARD_BACKGROUNDS = ((255, 255, 255), (255, 255, 255), (245, 240, 225), (225, 238, 250), (250, 228, 232))


def benchmark_memes(n: int = 60, seed: int = 0, card_share: float = 0.25) -> list[RenderedMeme]:
    """`n` memes: about (1 - card_share) outlined captions over photographs (top only, or top and bottom;
    capitals, sometimes mixed case; several fonts, sizes and colours) and `card_share` text cards (half
    of them above a photograph). The same `seed` gives the same memes."""
    rng = random.Random(seed)
    fonts = meme_fonts()
    photos = photographs()
    memes = []
    for i in range(n):
        size = rng.choice(SIZES)
        if rng.random() < card_share:
            font = rng.choice(sorted(fonts["card"]))
            text = rng.choice(CARD_TEXTS)
            image = render_text_card(text, font=font, size=size, background=rng.choice(CARD_BACKGROUNDS),
                                     photo=rng.choice(photos) if i % 2 else None,
                                     font_scale=rng.uniform(0.05, 0.08), rng=rng)
            memes.append(RenderedMeme(image, normalise_text(text), "card", font))
        else:
            font = rng.choice(sorted(fonts["caption"]))
            top, bottom = rng.choice(CAPTIONS)
            if bottom and rng.random() < 0.25:  # some memes put the whole caption at the top
                top, bottom = f"{top} {bottom}", ""
            image = render_caption_meme(rng.choice(photos), top, bottom, font=font, size=size,
                                        fill=rng.choice(CAPTION_FILLS), font_scale=rng.uniform(0.08, 0.13),
                                        uppercase=rng.random() < 0.85, rng=rng)
            memes.append(RenderedMeme(image, normalise_text(f"{top} {bottom}"), "caption", font))
    return memes
