from hm_hf.text.tokenizer import SPECIAL_TOKENS, train_wordpiece_tokenizer


def test_vocabulary_is_deterministic_and_covers_every_seen_character(tmp_path):
    texts = ["The cat sat on the mat", "a dog, a cat and THE meme", "zebra"] * 3
    first = train_wordpiece_tokenizer(texts, tmp_path / "a")
    second = train_wordpiece_tokenizer(list(reversed(texts)), tmp_path / "b")
    assert first.get_vocab() == second.get_vocab()
    assert first.convert_ids_to_tokens(list(range(5))) == SPECIAL_TOKENS
    assert first.tokenize("The CAT") == ["the", "cat"]
    assert "[UNK]" not in first.tokenize("tabzem")  # unseen word, seen characters: split, not unknown
    reloaded = train_wordpiece_tokenizer(["other text"], tmp_path / "a")  # an existing folder is loaded
    assert reloaded.get_vocab() == first.get_vocab()
