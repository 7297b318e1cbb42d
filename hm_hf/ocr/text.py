"""OCR output -> text in the form the data sets store it, and the error rates that compare the two.

Hateful Memes stores a meme's `text` in lower case with single spaces and keeps its punctuation
("look! it says it right here!"); `normalise_text` brings any engine's output to that form.

`character_error_rate` and `word_error_rate` are the benchmark's scores (issue 13): CER counts edits
over letters and digits only, spaces ignored, so a merged or split word costs nothing there; WER
counts edits over lower-cased words (runs of letters and digits, apostrophes dropped), so a merged word
costs two. Both are totals over a set (sum of edits / sum of reference lengths), as usual.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence

__all__ = ["normalise_text", "character_error_rate", "word_error_rate", "edit_distance"]

_WHITESPACE = re.compile(r"\s+")
# Glyphs recognisers put where a word gap is: middle dots, bullets, no-break and zero-width spaces.
_GAP_LIKE = re.compile("[\u00b7\u2022\u2219\u30fb\u00a0\u2009\u200b]")
ENGLISH = {"eng", "en", "english"}


def _strip_accents(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def normalise_text(text: str, lang: str = "eng") -> str:
    """Lower case, single spaces, no leading or trailing space; for English also no accents (a
    multilingual recogniser reads an outlined O as "Ó" now and then; English memes carry none)."""
    text = unicodedata.normalize("NFKC", text)
    if lang.lower() in ENGLISH:
        text = _strip_accents(text)
    text = _GAP_LIKE.sub(" ", text)
    return _WHITESPACE.sub(" ", text.lower()).strip()


def _characters(text: str) -> str:
    return re.sub(r"[^0-9a-z]", "", _strip_accents(text.lower()))


def _words(text: str) -> list[str]:
    return re.findall(r"[0-9a-z]+", _strip_accents(text.lower()).replace("'", "").replace("\u2019", ""))


def edit_distance(a: Sequence, b: Sequence) -> int:
    """Levenshtein distance between two sequences (insertions, deletions, substitutions cost 1)."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        current = [i]
        for j, y in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1]


def _rate(pairs: Iterable[tuple[str, str]], split) -> float:
    edits = total = 0
    for predicted, reference in pairs:
        ref = split(reference)
        edits += edit_distance(split(predicted), ref)
        total += len(ref)
    return edits / max(total, 1)


def character_error_rate(pairs: Iterable[tuple[str, str]]) -> float:
    """CER of (predicted, reference) pairs over letters and digits, spaces and punctuation ignored."""
    return _rate(pairs, _characters)


def word_error_rate(pairs: Iterable[tuple[str, str]]) -> float:
    """WER of (predicted, reference) pairs over lower-cased words of letters and digits."""
    return _rate(pairs, _words)
