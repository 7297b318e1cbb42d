import numpy as np
import torch
from transformers import BertTokenizerFast

from hm_hf.data.collator import MemeCollator


def _tokenizer(tmp_path):
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "cat", "dog", "meme"]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab))
    return BertTokenizerFast(str(tmp_path / "vocab.txt"))


def _row(n, label, text="a cat"):
    rng = np.random.default_rng(n)
    return {
        "id": n,
        "text": text,
        "label": label,
        "region_features": rng.random((n, 2048)).astype(np.float16).tolist(),
        "boxes": [[0, 0, 200, 100]] * n,
        "image_width": 400,
        "image_height": 200,
    }


def test_pads_regions_with_a_mask_and_normalises_boxes(tmp_path):
    collator = MemeCollator(tokenizer=_tokenizer(tmp_path), use_regions=True)
    batch = collator([_row(2, 1), _row(4, 0, "a dog meme cat")])
    assert batch["visual_embeds"].shape == (2, 4, 2048)
    assert batch["visual_attention_mask"].tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]
    assert torch.all(batch["visual_embeds"][0, 2:] == 0)
    assert batch["visual_boxes"][0, 0].tolist() == [0.0, 0.0, 0.5, 0.5]  # x by width, y by height
    assert batch["input_ids"].shape[0] == 2 and batch["attention_mask"][0].sum() < batch["attention_mask"][1].sum()
    assert batch["labels"].tolist() == [1, 0]


def test_unlabelled_rows(tmp_path):
    collator = MemeCollator(tokenizer=_tokenizer(tmp_path))
    assert collator([_row(1, 1), _row(1, -1)])["labels"].tolist() == [1, -100]
    assert "labels" not in collator([_row(1, -1), _row(1, -1)])


def test_max_regions_and_text_embeddings(tmp_path):
    rows = [dict(_row(5, 0), text_embedding=[0.5] * 100)]
    batch = MemeCollator(use_regions=True, max_regions=3, text_embedding_column="text_embedding")(rows)
    assert batch["visual_embeds"].shape == (1, 3, 2048)
    assert batch["text_embedding"].shape == (1, 100) and "input_ids" not in batch
