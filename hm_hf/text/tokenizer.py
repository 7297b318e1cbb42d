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


#: Vocabularies of the pretrained checkpoints the recipes start from, by size: which tokenizer to name when a
#: checkpoint's word embeddings have that many rows (UNITER-base: bert-base-cased; VisualBERT, ViLBERT,
#: BERT: bert-base-uncased; CLIP's byte-level BPE).
KNOWN_VOCABULARIES = {
    28996: "bert-base-cased",
    30522: "bert-base-uncased",
    49408: "the CLIP checkpoint's own tokenizer (e.g. openai/clip-vit-large-patch14)",
}


class TokenizerMismatchError(ValueError):
    """A tokenizer whose token ids do not index the model's word embeddings; the message names the tokenizer
    to use."""


def check_tokenizer_fits(tokenizer, model, tokenizer_name: str | None = None) -> None:
    """Refuse a tokenizer whose vocabulary is not the one the model's word embeddings were trained with.

    Any model with word embeddings (`get_input_embeddings()`) is checked; its row count must equal the
    tokenizer's size. With more tokens than rows, ids past the end fail inside the model (IndexError); with
    fewer, or another vocabulary of the same origin, every id reads the embedding of another word. Models
    without a token embedding (Concat over fastText vectors) pass.
    """
    try:
        embeddings = model.get_input_embeddings()
    except (NotImplementedError, AttributeError):
        return
    rows = getattr(embeddings, "num_embeddings", None)
    if rows is None or len(tokenizer) == rows:
        return
    name = tokenizer_name or getattr(tokenizer, "name_or_path", None) or type(tokenizer).__name__
    size = len(tokenizer)
    effect = (f"ids {rows:,} and above would fail inside the model (IndexError) and the others would read other "
              "words' embeddings" if size > rows else "its ids would read the embeddings of other words")
    known = KNOWN_VOCABULARIES.get(rows)
    fix = (f"use {known}, whose {rows:,} tokens are the checkpoint's vocabulary (tokenizer_name_or_path: {known})"
           if known and not known.startswith("the ") else
           f"use {known}" if known else "use the tokenizer the checkpoint was trained with (saved beside it)")
    raise TokenizerMismatchError(
        f"tokenizer {name} has {size:,} tokens but the model's word embeddings have {rows:,} rows: {effect}. To fix "
        f"it, {fix}."
    )
