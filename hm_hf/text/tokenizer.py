"""A BERT-style tokenizer whose vocabulary is built from the memes' own text.

For models trained from random initialisation (the tiny default recipe, or when no BERT checkpoint can
be reached) there is no pretrained vocabulary to load. The vocabulary here is deterministic (the same
text gives the same token ids, so a seeded run is reproducible, which `tokenizers`' WordPiece trainer is
not): special tokens, then every character seen (alone and as a `##` continuation, so no word is ever
unknown), then the most frequent words.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Iterable

from tokenizers.normalizers import BertNormalizer
from tokenizers.pre_tokenizers import BertPreTokenizer
from transformers import BertTokenizerFast

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def build_vocabulary(texts: Iterable[str], vocab_size: int = 4000) -> list[str]:
    normalizer, pre_tokenizer = BertNormalizer(lowercase=True), BertPreTokenizer()
    words: Counter = Counter()
    for text in texts:
        words.update(word for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text or "")))
    characters = sorted({c for word in words for c in word})
    pieces = SPECIAL_TOKENS + characters + [f"##{c}" for c in characters]
    budget = max(vocab_size - len(pieces), 0)
    frequent = sorted((w for w in words if len(w) > 1), key=lambda w: (-words[w], w))[:budget]
    return pieces + sorted(frequent)


def train_wordpiece_tokenizer(texts: Iterable[str], output_dir, vocab_size: int = 4000) -> BertTokenizerFast:
    """Build (or, when `output_dir` already holds one, load) an uncased BERT tokenizer for `texts`."""
    output_dir = Path(output_dir)
    if (output_dir / "tokenizer.json").is_file():
        return BertTokenizerFast.from_pretrained(str(output_dir))
    output_dir.mkdir(parents=True, exist_ok=True)
    vocab_file = output_dir / "vocab.txt"
    vocab_file.write_text("".join(f"{token}\n" for token in build_vocabulary(texts, vocab_size)), encoding="utf-8")
    tokenizer = BertTokenizerFast(str(vocab_file), do_lower_case=True)
    tokenizer.save_pretrained(str(output_dir))
    return tokenizer
