"""A BERT-style WordPiece tokenizer trained on the memes' own text.

For models trained from random initialisation (the tiny default recipe, or when no BERT checkpoint can
be reached) there is no pretrained vocabulary to load; `tokenizers` trains one in a second.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from tokenizers import BertWordPieceTokenizer
from transformers import BertTokenizerFast


def train_wordpiece_tokenizer(texts: Iterable[str], output_dir, vocab_size: int = 2000) -> BertTokenizerFast:
    """Train (or, when `output_dir` already holds one, load) an uncased WordPiece tokenizer."""
    output_dir = Path(output_dir)
    if (output_dir / "tokenizer.json").is_file():
        return BertTokenizerFast.from_pretrained(str(output_dir))
    wordpiece = BertWordPieceTokenizer(lowercase=True)
    wordpiece.train_from_iterator(list(texts), vocab_size=vocab_size, min_frequency=1, show_progress=False)
    output_dir.mkdir(parents=True, exist_ok=True)
    vocab_file = output_dir / "vocab.txt"
    vocab = sorted(wordpiece.get_vocab().items(), key=lambda item: item[1])
    vocab_file.write_text("".join(f"{token}\n" for token, _ in vocab), encoding="utf-8")
    tokenizer = BertTokenizerFast(str(vocab_file), do_lower_case=True)
    tokenizer.save_pretrained(str(output_dir))
    return tokenizer
